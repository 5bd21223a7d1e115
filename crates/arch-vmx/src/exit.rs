//! Exit decoding: the exit reason, qualification and interruption
//! information to hv-core's vendor-neutral [`VmExit`] (SDM vol. 3,
//! appendix C and 28.2). A pure function; anything unknown becomes
//! [`VmExit::Unhandled`], never a panic.

use hv_core::arch::{Access, Gprs, IoExit, VmExit, X86_EXC_UD};

/// Basic exit reasons (SDM appendix C), bits 15:0 of the exit reason.
pub mod reason {
    /// Exception or NMI.
    pub const EXCEPTION_NMI: u32 = 0;
    /// External interrupt.
    pub const EXTERNAL_INTERRUPT: u32 = 1;
    /// Triple fault.
    pub const TRIPLE_FAULT: u32 = 2;
    /// INIT signal.
    pub const INIT: u32 = 3;
    /// Start-up IPI.
    pub const SIPI: u32 = 4;
    /// Interrupt window.
    pub const INTERRUPT_WINDOW: u32 = 7;
    /// NMI window.
    pub const NMI_WINDOW: u32 = 8;
    /// Task switch.
    pub const TASK_SWITCH: u32 = 9;
    /// CPUID.
    pub const CPUID: u32 = 10;
    /// GETSEC.
    pub const GETSEC: u32 = 11;
    /// HLT.
    pub const HLT: u32 = 12;
    /// INVD.
    pub const INVD: u32 = 13;
    /// VMCALL.
    pub const VMCALL: u32 = 18;
    /// VMCLEAR.
    pub const VMCLEAR: u32 = 19;
    /// VMLAUNCH.
    pub const VMLAUNCH: u32 = 20;
    /// VMPTRLD.
    pub const VMPTRLD: u32 = 21;
    /// VMPTRST.
    pub const VMPTRST: u32 = 22;
    /// VMREAD.
    pub const VMREAD: u32 = 23;
    /// VMRESUME.
    pub const VMRESUME: u32 = 24;
    /// VMWRITE.
    pub const VMWRITE: u32 = 25;
    /// VMXOFF.
    pub const VMXOFF: u32 = 26;
    /// VMXON.
    pub const VMXON: u32 = 27;
    /// Control-register access.
    pub const CR_ACCESS: u32 = 28;
    /// I/O instruction.
    pub const IO: u32 = 30;
    /// RDMSR.
    pub const RDMSR: u32 = 31;
    /// WRMSR.
    pub const WRMSR: u32 = 32;
    /// VM-entry failure: invalid guest state.
    pub const ENTRY_INVALID_GUEST_STATE: u32 = 33;
    /// VM-entry failure: MSR loading.
    pub const ENTRY_MSR_LOADING: u32 = 34;
    /// MWAIT.
    pub const MWAIT: u32 = 36;
    /// MONITOR.
    pub const MONITOR: u32 = 39;
    /// VM-entry failure: machine check.
    pub const ENTRY_MACHINE_CHECK: u32 = 41;
    /// EPT violation.
    pub const EPT_VIOLATION: u32 = 48;
    /// EPT misconfiguration.
    pub const EPT_MISCONFIG: u32 = 49;
    /// INVEPT.
    pub const INVEPT: u32 = 50;
    /// VMX-preemption timer expired.
    pub const PREEMPTION_TIMER: u32 = 52;
    /// INVVPID.
    pub const INVVPID: u32 = 53;
    /// XSETBV.
    pub const XSETBV: u32 = 55;
    /// VMFUNC.
    pub const VMFUNC: u32 = 59;
}

/// Exit-reason bit 31: VM-entry failure.
pub const ENTRY_FAILURE: u32 = 1 << 31;

bitfield::bitfield! {
    /// I/O exit qualification (SDM table 28-5).
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub struct IoQualification(pub u64);
    impl Debug;
    /// The access size minus one (0, 1 or 3).
    pub u8, size_minus_one, set_size_minus_one: 2, 0;
    /// IN/INS (else OUT/OUTS).
    pub is_in, set_is_in: 3;
    /// INS/OUTS.
    pub string, set_string: 4;
    /// REP prefix.
    pub rep, set_rep: 5;
    /// The port.
    pub u16, port, set_port: 31, 16;
}

bitfield::bitfield! {
    /// EPT-violation exit qualification (SDM table 28-7).
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub struct EptViolation(pub u64);
    impl Debug;
    /// A data read.
    pub read, set_read: 0;
    /// A data write.
    pub write, set_write: 1;
    /// An instruction fetch.
    pub fetch, set_fetch: 2;
    /// The translation allowed reads.
    pub readable, set_readable: 3;
    /// The translation allowed writes.
    pub writable, set_writable: 4;
    /// The translation allowed execution.
    pub executable, set_executable: 5;
}

/// Control-register access exit qualification (SDM table 28-3).
pub mod cr {
    /// Bits 3:0: the control register.
    pub const NUM_MASK: u64 = 0xF;
    /// Bits 5:4: access type.
    pub const TYPE_SHIFT: u32 = 4;
    /// Access type: MOV to CR.
    pub const MOV_TO: u64 = 0;
    /// Access type: MOV from CR.
    pub const MOV_FROM: u64 = 1;
    /// Access type: CLTS.
    pub const CLTS: u64 = 2;
    /// Access type: LMSW.
    pub const LMSW: u64 = 3;
    /// Bits 11:8: the GPR.
    pub const GPR_SHIFT: u32 = 8;
}

/// Interruption-information types (bits 10:8) of the exit, IDT-vectoring
/// and entry interruption fields.
pub mod intr_type {
    /// External interrupt.
    pub const EXTERNAL: u32 = 0;
    /// NMI.
    pub const NMI: u32 = 2;
    /// Hardware exception.
    pub const HW_EXCEPTION: u32 = 3;
    /// Software interrupt (INT n).
    pub const SW_INTERRUPT: u32 = 4;
    /// Privileged software exception (INT1).
    pub const PRIV_SW_EXCEPTION: u32 = 5;
    /// Software exception (INT3, INTO).
    pub const SW_EXCEPTION: u32 = 6;
}

/// The raw exit information read from the VMCS after an exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawExit {
    /// Exit reason (0x4402).
    pub reason: u32,
    /// Exit qualification (0x6400).
    pub qualification: u64,
    /// VM-exit interruption information (0x4404).
    pub intr_info: u32,
    /// VM-exit interruption error code (0x4406).
    pub intr_error: u32,
    /// Guest-physical address (0x2400).
    pub gpa: u64,
}

/// Decodes an exit; `gprs` supply the MSR number and the value of a
/// `WRMSR`.
pub fn decode(raw: &RawExit, gprs: &Gprs) -> VmExit {
    let q = raw.qualification;
    if raw.reason & ENTRY_FAILURE != 0 {
        return VmExit::EntryFailed {
            code: u64::from(raw.reason),
        };
    }
    let ud = VmExit::Exception {
        vector: X86_EXC_UD,
        error_code: None,
    };
    match raw.reason & 0xFFFF {
        reason::EXCEPTION_NMI => {
            let info = raw.intr_info;
            if (info >> 8) & 7 == intr_type::NMI {
                VmExit::ExternalInterrupt
            } else {
                VmExit::Exception {
                    vector: info as u8,
                    error_code: (info & (1 << 11) != 0).then_some(raw.intr_error),
                }
            }
        }
        reason::EXTERNAL_INTERRUPT => VmExit::ExternalInterrupt,
        reason::TRIPLE_FAULT => VmExit::Shutdown,
        reason::INIT => VmExit::Init,
        reason::SIPI => VmExit::Sipi { vector: q as u8 },
        reason::INTERRUPT_WINDOW => VmExit::InterruptWindow,
        reason::CPUID => VmExit::Cpuid,
        reason::HLT => VmExit::Hlt,
        reason::VMCALL => VmExit::Hypercall,
        reason::XSETBV => VmExit::Xsetbv,
        reason::PREEMPTION_TIMER => VmExit::TimerExpired,
        reason::CR_ACCESS => {
            let kind = (q >> cr::TYPE_SHIFT) & 3;
            VmExit::CrAccess {
                cr: (q & cr::NUM_MASK) as u8,
                write: kind != cr::MOV_FROM,
                gpr: (kind == cr::MOV_TO || kind == cr::MOV_FROM)
                    .then_some(((q >> cr::GPR_SHIFT) & 0xF) as u8),
            }
        }
        reason::RDMSR => VmExit::MsrRead {
            msr: gprs.rcx as u32,
        },
        reason::WRMSR => VmExit::MsrWrite {
            msr: gprs.rcx as u32,
            value: (gprs.rdx << 32) | (gprs.rax & 0xFFFF_FFFF),
        },
        reason::IO => VmExit::Io(IoExit {
            port: IoQualification(q).port(),
            size: IoQualification(q).size_minus_one() + 1,
            write: !IoQualification(q).is_in(),
            string: IoQualification(q).string(),
            rep: IoQualification(q).rep(),
        }),
        reason::EPT_VIOLATION => {
            let e = EptViolation(q);
            let (write, exec) = (e.write(), e.fetch());
            VmExit::NestedPageFault {
                gpa: raw.gpa,
                access: Access {
                    read: !write && !exec,
                    write,
                    exec,
                    present: e.readable() || e.writable() || e.executable(),
                },
            }
        }
        // VMX instructions and monitor/GETSEC the guest does not have (its
        // CPUID hides them): reported as the #UD the guest should get.
        reason::GETSEC
        | reason::VMCLEAR
        | reason::VMLAUNCH
        | reason::VMPTRLD
        | reason::VMPTRST
        | reason::VMREAD
        | reason::VMRESUME
        | reason::VMWRITE
        | reason::VMXOFF
        | reason::VMXON
        | reason::INVEPT
        | reason::INVVPID
        | reason::VMFUNC
        | reason::MONITOR
        | reason::MWAIT => ud,
        r => VmExit::Unhandled { code: u64::from(r) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(reason: u32, qualification: u64) -> VmExit {
        decode(
            &RawExit {
                reason,
                qualification,
                ..RawExit::default()
            },
            &Gprs::default(),
        )
    }

    #[test]
    fn simple_exits() {
        assert_eq!(d(10, 0), VmExit::Cpuid);
        assert_eq!(d(12, 0), VmExit::Hlt);
        assert_eq!(d(18, 0), VmExit::Hypercall);
        assert_eq!(d(1, 0), VmExit::ExternalInterrupt);
        assert_eq!(d(2, 0), VmExit::Shutdown);
        assert_eq!(d(3, 0), VmExit::Init);
        assert_eq!(d(4, 0x9A), VmExit::Sipi { vector: 0x9A });
        assert_eq!(d(7, 0), VmExit::InterruptWindow);
        assert_eq!(d(55, 0), VmExit::Xsetbv);
        assert_eq!(d(52, 0), VmExit::TimerExpired);
        assert_eq!(d(13, 0), VmExit::Unhandled { code: 13 });
        assert_eq!(d(49, 0), VmExit::Unhandled { code: 49 });
        assert_eq!(d(0xFFFF, 0), VmExit::Unhandled { code: 0xFFFF });
        let ud = VmExit::Exception {
            vector: 6,
            error_code: None,
        };
        for r in [19, 20, 24, 27, 50, 53, 36, 39] {
            assert_eq!(d(r, 0), ud, "{r}");
        }
    }

    #[test]
    fn entry_failures() {
        assert_eq!(
            d(ENTRY_FAILURE | 33, 0),
            VmExit::EntryFailed { code: 0x8000_0021 }
        );
        assert_eq!(
            d(ENTRY_FAILURE | 34, 1),
            VmExit::EntryFailed { code: 0x8000_0022 }
        );
    }

    #[test]
    fn exceptions_and_nmis() {
        let e = |info, err| {
            decode(
                &RawExit {
                    reason: 0,
                    intr_info: info,
                    intr_error: err,
                    ..RawExit::default()
                },
                &Gprs::default(),
            )
        };
        // #MC: hardware exception, no error code.
        assert_eq!(
            e(0x8000_0312, 0),
            VmExit::Exception {
                vector: 18,
                error_code: None
            }
        );
        // #GP(0x18).
        assert_eq!(
            e(0x8000_0B0D, 0x18),
            VmExit::Exception {
                vector: 13,
                error_code: Some(0x18)
            }
        );
        // NMI.
        assert_eq!(e(0x8000_0202, 0), VmExit::ExternalInterrupt);
    }

    #[test]
    fn cr_access() {
        // mov cr4, rbx (MOV to CR4 from GPR 3).
        assert_eq!(
            d(28, 4 | (3 << 8)),
            VmExit::CrAccess {
                cr: 4,
                write: true,
                gpr: Some(3)
            }
        );
        // mov r9, cr3.
        assert_eq!(
            d(28, 3 | (1 << 4) | (9 << 8)),
            VmExit::CrAccess {
                cr: 3,
                write: false,
                gpr: Some(9)
            }
        );
        // LMSW.
        assert_eq!(
            d(28, 3 << 4),
            VmExit::CrAccess {
                cr: 0,
                write: true,
                gpr: None
            }
        );
    }

    #[test]
    fn msr() {
        let g = Gprs {
            rcx: 0xFFFF_FFFF_C000_0080,
            rax: 0xAAAA_AAAA_1234_5678,
            rdx: 0x9,
            ..Gprs::default()
        };
        let r = |reason| {
            decode(
                &RawExit {
                    reason,
                    ..RawExit::default()
                },
                &g,
            )
        };
        assert_eq!(r(31), VmExit::MsrRead { msr: 0xC000_0080 });
        assert_eq!(
            r(32),
            VmExit::MsrWrite {
                msr: 0xC000_0080,
                value: 0x9_1234_5678
            }
        );
    }

    /// An I/O exit qualification.
    fn ioq(port: u16, size: u8, is_in: bool, string: bool, rep: bool) -> u64 {
        let mut q = IoQualification(0);
        q.set_port(port);
        q.set_size_minus_one(size - 1);
        q.set_is_in(is_in);
        q.set_string(string);
        q.set_rep(rep);
        q.0
    }

    #[test]
    fn io() {
        // in al, 0x71
        assert_eq!(
            d(30, ioq(0x71, 1, true, false, false) | (1 << 6)),
            VmExit::Io(IoExit {
                port: 0x71,
                size: 1,
                write: false,
                string: false,
                rep: false
            })
        );
        // rep outsw to 0x3F8
        assert_eq!(
            d(30, ioq(0x3F8, 2, false, true, true)),
            VmExit::Io(IoExit {
                port: 0x3F8,
                size: 2,
                write: true,
                string: true,
                rep: true
            })
        );
        // out dx, eax to 0xCFC
        assert_eq!(
            d(30, ioq(0xCFC, 4, false, false, false)),
            VmExit::Io(IoExit {
                port: 0xCFC,
                size: 4,
                write: true,
                string: false,
                rep: false
            })
        );
    }

    #[test]
    fn ept_violation() {
        let v = |q, gpa| {
            decode(
                &RawExit {
                    reason: 48,
                    qualification: q,
                    gpa,
                    ..RawExit::default()
                },
                &Gprs::default(),
            )
        };
        let q = |read, write, fetch, readable| {
            let mut e = EptViolation(0);
            e.set_read(read);
            e.set_write(write);
            e.set_fetch(fetch);
            e.set_readable(readable);
            e.0
        };
        assert_eq!(
            v(q(false, true, false, true), 0xFEE0_0000),
            VmExit::NestedPageFault {
                gpa: 0xFEE0_0000,
                access: Access {
                    read: false,
                    write: true,
                    exec: false,
                    present: true
                }
            }
        );
        assert_eq!(
            v(q(false, false, true, false) | (1 << 7), 0x1000),
            VmExit::NestedPageFault {
                gpa: 0x1000,
                access: Access {
                    read: false,
                    write: false,
                    exec: true,
                    present: false
                }
            }
        );
        assert_eq!(
            v(q(true, false, false, false), 0x2000),
            VmExit::NestedPageFault {
                gpa: 0x2000,
                access: Access {
                    read: true,
                    write: false,
                    exec: false,
                    present: false
                }
            }
        );
    }
}

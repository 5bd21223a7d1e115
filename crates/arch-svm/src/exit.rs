//! Exit decoding: the VMCB's exit code and information fields to hv-core's
//! vendor-neutral [`VmExit`] (APM vol. 2, appendix C, and 15.7-15.25).
//! A pure function; anything unknown becomes [`VmExit::Unhandled`], never a
//! panic.

use hv_core::arch::{Access, Gprs, IoExit, VmExit, X86_EXC_UD};

/// Exit codes (APM vol. 2, table C-1).
pub mod code {
    /// First CR read (CR0); CRn read is `CR0_READ + n`.
    pub const CR0_READ: u64 = 0x00;
    /// First CR write (CR0); CRn write is `CR0_WRITE + n`.
    pub const CR0_WRITE: u64 = 0x10;
    /// First exception (vector 0); vector n is `EXCP_BASE + n`.
    pub const EXCP_BASE: u64 = 0x40;
    /// Physical interrupt.
    pub const INTR: u64 = 0x60;
    /// Physical NMI.
    pub const NMI: u64 = 0x61;
    /// SMI.
    pub const SMI: u64 = 0x62;
    /// INIT.
    pub const INIT: u64 = 0x63;
    /// Virtual interrupt window.
    pub const VINTR: u64 = 0x64;
    /// CPUID.
    pub const CPUID: u64 = 0x72;
    /// RSM.
    pub const RSM: u64 = 0x73;
    /// INVD.
    pub const INVD: u64 = 0x76;
    /// HLT.
    pub const HLT: u64 = 0x78;
    /// INVLPGA.
    pub const INVLPGA: u64 = 0x7A;
    /// IN/OUT/INS/OUTS.
    pub const IOIO: u64 = 0x7B;
    /// RDMSR/WRMSR.
    pub const MSR: u64 = 0x7C;
    /// Task switch.
    pub const TASK_SWITCH: u64 = 0x7D;
    /// Shutdown.
    pub const SHUTDOWN: u64 = 0x7F;
    /// VMRUN.
    pub const VMRUN: u64 = 0x80;
    /// VMMCALL.
    pub const VMMCALL: u64 = 0x81;
    /// VMLOAD.
    pub const VMLOAD: u64 = 0x82;
    /// VMSAVE.
    pub const VMSAVE: u64 = 0x83;
    /// STGI.
    pub const STGI: u64 = 0x84;
    /// CLGI.
    pub const CLGI: u64 = 0x85;
    /// SKINIT.
    pub const SKINIT: u64 = 0x86;
    /// MONITOR.
    pub const MONITOR: u64 = 0x8A;
    /// MWAIT.
    pub const MWAIT: u64 = 0x8B;
    /// MWAIT with a monitor armed.
    pub const MWAIT_CONDITIONAL: u64 = 0x8C;
    /// XSETBV.
    pub const XSETBV: u64 = 0x8D;
    /// Nested page fault.
    pub const NPF: u64 = 0x400;
    /// VMRUN refused the guest state (-1).
    pub const INVALID: u64 = u64::MAX;
    /// The same as QEMU's TCG writes it: -1 as a 32-bit value, zero-
    /// extended (its exit codes are `uint32_t`).
    pub const INVALID_32: u64 = u32::MAX as u64;
}

bitfield::bitfield! {
    /// IOIO exitinfo1 (APM vol. 2, figure 15-2).
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub struct IoioInfo(pub u64);
    impl Debug;
    /// IN/INS (else OUT/OUTS).
    pub is_in, set_is_in: 0;
    /// INS/OUTS.
    pub string, set_string: 2;
    /// REP prefix.
    pub rep, set_rep: 3;
    /// 8-bit operand.
    pub sz8, set_sz8: 4;
    /// 16-bit operand.
    pub sz16, set_sz16: 5;
    /// 32-bit operand.
    pub sz32, set_sz32: 6;
    /// The port.
    pub u16, port, set_port: 31, 16;
}

bitfield::bitfield! {
    /// NPF exitinfo1: the page-fault error code of the nested walk.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub struct NpfInfo(pub u64);
    impl Debug;
    /// The translation was present (a permission fault).
    pub present, set_present: 0;
    /// A write.
    pub write, set_write: 1;
    /// A user access (always, for guest accesses).
    pub user, set_user: 2;
    /// A reserved bit was set.
    pub rsvd, set_rsvd: 3;
    /// An instruction fetch.
    pub fetch, set_fetch: 4;
}

/// The raw exit information the VMCB holds after #VMEXIT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawExit {
    /// EXITCODE (0x070).
    pub code: u64,
    /// EXITINFO1 (0x078).
    pub info1: u64,
    /// EXITINFO2 (0x080).
    pub info2: u64,
}

pub use arch_common::event::has_error_code;

/// Decodes an exit; `gprs` (with RAX already copied from the VMCB) supply
/// the MSR number and the value of a `WRMSR`.
pub fn decode(raw: &RawExit, gprs: &Gprs) -> VmExit {
    let RawExit { code, info1, info2 } = *raw;
    match code {
        code::CR0_READ..=0x1F => VmExit::CrAccess {
            cr: (code & 0xF) as u8,
            write: code >= code::CR0_WRITE,
            // With decode assists bit 63 says "MOV CRn" and 3:0 name the GPR.
            gpr: (info1 & (1 << 63) != 0).then_some((info1 & 0xF) as u8),
        },
        code::EXCP_BASE..=0x5F => {
            let vector = (code - code::EXCP_BASE) as u8;
            VmExit::Exception {
                vector,
                error_code: has_error_code(vector).then_some(info1 as u32),
            }
        }
        code::INTR | code::NMI | code::SMI => VmExit::ExternalInterrupt,
        code::INIT => VmExit::Init,
        code::VINTR => VmExit::InterruptWindow,
        code::CPUID => VmExit::Cpuid,
        code::HLT => VmExit::Hlt,
        code::VMMCALL => VmExit::Hypercall,
        code::XSETBV => VmExit::Xsetbv,
        code::SHUTDOWN => VmExit::Shutdown,
        code::MSR => {
            let msr = gprs.rcx as u32;
            if info1 & 1 == 0 {
                VmExit::MsrRead { msr }
            } else {
                let value = (gprs.rdx << 32) | (gprs.rax & 0xFFFF_FFFF);
                VmExit::MsrWrite { msr, value }
            }
        }
        code::IOIO => {
            let io = IoioInfo(info1);
            let size = if io.sz32() {
                4
            } else if io.sz16() {
                2
            } else {
                1
            };
            VmExit::Io(IoExit {
                port: io.port(),
                size,
                write: !io.is_in(),
                string: io.string(),
                rep: io.rep(),
            })
        }
        code::NPF => {
            let f = NpfInfo(info1);
            let (write, exec) = (f.write(), f.fetch());
            VmExit::NestedPageFault {
                gpa: info2,
                access: Access {
                    read: !write && !exec,
                    write,
                    exec,
                    present: f.present(),
                },
            }
        }
        // SVM and monitor instructions the guest does not have (its CPUID
        // hides them): reported as the #UD the guest should get.
        code::VMRUN
        | code::VMLOAD
        | code::VMSAVE
        | code::STGI
        | code::CLGI
        | code::SKINIT
        | code::INVLPGA
        | code::MONITOR
        | code::MWAIT
        | code::MWAIT_CONDITIONAL
        | code::RSM => VmExit::Exception {
            vector: X86_EXC_UD,
            error_code: None,
        },
        code::INVALID | code::INVALID_32 => VmExit::EntryFailed { code },
        _ => VmExit::Unhandled { code },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(code: u64, info1: u64, info2: u64) -> VmExit {
        decode(&RawExit { code, info1, info2 }, &Gprs::default())
    }

    #[test]
    fn simple_exits() {
        assert_eq!(d(0x72, 0, 0), VmExit::Cpuid);
        assert_eq!(d(0x78, 0, 0), VmExit::Hlt);
        assert_eq!(d(0x81, 0, 0), VmExit::Hypercall);
        assert_eq!(d(0x60, 0, 0), VmExit::ExternalInterrupt);
        assert_eq!(d(0x61, 0, 0), VmExit::ExternalInterrupt);
        assert_eq!(d(0x63, 0, 0), VmExit::Init);
        assert_eq!(d(0x64, 0, 0), VmExit::InterruptWindow);
        assert_eq!(d(0x7F, 0, 0), VmExit::Shutdown);
        assert_eq!(d(0x8D, 0, 0), VmExit::Xsetbv);
        assert_eq!(d(u64::MAX, 0, 0), VmExit::EntryFailed { code: u64::MAX });
        // QEMU's 32-bit -1 is a failed entry too, not an unknown exit.
        assert_eq!(
            d(0xFFFF_FFFF, 0, 0),
            VmExit::EntryFailed { code: 0xFFFF_FFFF }
        );
        assert_eq!(d(0x401, 0, 0), VmExit::Unhandled { code: 0x401 });
        assert_eq!(d(0x76, 0, 0), VmExit::Unhandled { code: 0x76 });
        let ud = VmExit::Exception {
            vector: 6,
            error_code: None,
        };
        assert_eq!(d(0x80, 0, 0), ud);
        assert_eq!(d(0x85, 0, 0), ud);
    }

    #[test]
    fn cr_access() {
        assert_eq!(
            d(0x03, 0, 0),
            VmExit::CrAccess {
                cr: 3,
                write: false,
                gpr: None
            }
        );
        assert_eq!(
            d(0x14, (1 << 63) | 5, 0),
            VmExit::CrAccess {
                cr: 4,
                write: true,
                gpr: Some(5)
            }
        );
    }

    #[test]
    fn exceptions() {
        assert_eq!(
            d(0x40 + 18, 0, 0),
            VmExit::Exception {
                vector: 18,
                error_code: None
            }
        );
        assert_eq!(
            d(0x40 + 13, 0x1234_0000_0018, 0),
            VmExit::Exception {
                vector: 13,
                error_code: Some(0x18)
            }
        );
        assert_eq!(
            d(0x40 + 14, 2, 0xdead),
            VmExit::Exception {
                vector: 14,
                error_code: Some(2)
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
        let r = |info1| {
            decode(
                &RawExit {
                    code: 0x7C,
                    info1,
                    info2: 0,
                },
                &g,
            )
        };
        assert_eq!(r(0), VmExit::MsrRead { msr: 0xC000_0080 });
        assert_eq!(
            r(1),
            VmExit::MsrWrite {
                msr: 0xC000_0080,
                value: 0x9_1234_5678
            }
        );
    }

    /// IOIO exitinfo1 for `port`, `size` bytes.
    fn io(port: u16, size: u8, is_in: bool, string: bool, rep: bool) -> u64 {
        let mut i = IoioInfo(0);
        i.set_port(port);
        i.set_sz8(size == 1);
        i.set_sz16(size == 2);
        i.set_sz32(size == 4);
        i.set_is_in(is_in);
        i.set_string(string);
        i.set_rep(rep);
        i.0
    }

    /// NPF exitinfo1 of a guest (user) access.
    fn npf(write: bool, fetch: bool, present: bool) -> u64 {
        let mut f = NpfInfo(0);
        f.set_user(true);
        f.set_write(write);
        f.set_fetch(fetch);
        f.set_present(present);
        f.0
    }

    #[test]
    fn ioio() {
        // in al, 0x71
        assert_eq!(
            d(0x7B, io(0x71, 1, true, false, false), 0x1002),
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
            d(0x7B, io(0x3F8, 2, false, true, true), 0),
            VmExit::Io(IoExit {
                port: 0x3F8,
                size: 2,
                write: true,
                string: true,
                rep: true
            })
        );
        assert_eq!(
            d(0x7B, io(0xCFC, 4, false, false, false), 0),
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
    fn nested_page_fault() {
        assert_eq!(
            d(0x400, npf(true, false, true), 0xFEE0_0000),
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
            d(0x400, npf(false, true, false) | (1 << 32), 0x1000),
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
            d(0x400, npf(false, false, false), 0x2000),
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

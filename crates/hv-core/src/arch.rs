//! The contract between hv-core and the vendor backends (`arch-svm`,
//! `arch-vmx`).
//!
//! A backend owns the hardware structures of a vCPU (VMCB or VMCS), runs it
//! until the next exit and describes that exit with the vendor-neutral
//! [`VmExit`]. hv-core decides what the exit means and talks back through
//! [`VcpuBackend`]: registers, instruction skipping, event injection. Nested
//! paging is per domain behind [`NestedPaging`].

use crate::types::{Gfn, Hfn};

/// The general-purpose registers, in the order of the x86 encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Gprs {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

impl Gprs {
    /// Register `n` by its x86 encoding number (0 = RAX ... 15 = R15).
    pub fn get(&self, n: u8) -> u64 {
        match n & 15 {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            4 => self.rsp,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            _ => self.r15,
        }
    }

    /// Sets register `n` by its x86 encoding number.
    pub fn set(&mut self, n: u8, v: u64) {
        let r = match n & 15 {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            4 => &mut self.rsp,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            _ => &mut self.r15,
        };
        *r = v;
    }
}

/// How a guest touched memory, for nested page faults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// A read (or any access when neither of the others is set).
    pub read: bool,
    /// A write.
    pub write: bool,
    /// An instruction fetch.
    pub exec: bool,
    /// The guest frame was mapped (a permission fault) rather than absent.
    pub present: bool,
}

/// Port I/O exit details.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoExit {
    /// The port.
    pub port: u16,
    /// Access width in bytes: 1, 2 or 4.
    pub size: u8,
    /// `OUT`/`OUTS` (true) or `IN`/`INS` (false).
    pub write: bool,
    /// `INS`/`OUTS`.
    pub string: bool,
    /// With a `REP` prefix.
    pub rep: bool,
}

/// A vendor-neutral VM exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// `VMCALL` or `VMMCALL`.
    Hypercall,
    /// `CPUID`: leaf in EAX, subleaf in ECX.
    Cpuid,
    /// `RDMSR` of ECX.
    MsrRead {
        /// The MSR index.
        msr: u32,
    },
    /// `WRMSR` of EDX:EAX to ECX.
    MsrWrite {
        /// The MSR index.
        msr: u32,
        /// The value.
        value: u64,
    },
    /// `IN`, `OUT`, `INS`, `OUTS`.
    Io(IoExit),
    /// A nested (EPT/NPT) page fault.
    NestedPageFault {
        /// The guest-physical address.
        gpa: u64,
        /// The kind of access.
        access: Access,
    },
    /// `HLT`.
    Hlt,
    /// A host interrupt arrived while the guest ran.
    ExternalInterrupt,
    /// The guest can now take an interrupt (requested window opened).
    InterruptWindow,
    /// An intercepted exception.
    Exception {
        /// The vector.
        vector: u8,
        /// The error code, where the vector has one.
        error_code: Option<u32>,
    },
    /// A control-register access that is intercepted.
    CrAccess {
        /// Which control register.
        cr: u8,
        /// A write (true) or read.
        write: bool,
        /// The GPR number involved, when the hardware reports it.
        gpr: Option<u8>,
    },
    /// `XSETBV`.
    Xsetbv,
    /// An INIT signal.
    Init,
    /// A Startup IPI with its vector.
    Sipi {
        /// The SIPI vector (start page number).
        vector: u8,
    },
    /// Triple fault or shutdown: the vCPU cannot continue.
    Shutdown,
    /// The backend's preemption timer expired.
    TimerExpired,
    /// The hardware refused to enter the guest (bad guest state).
    EntryFailed {
        /// The vendor's raw code.
        code: u64,
    },
    /// Anything else, with the vendor's raw exit code.
    Unhandled {
        /// The vendor's raw exit code.
        code: u64,
    },
}

/// An event to inject at the next VM entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An external interrupt with this vector.
    Interrupt(u8),
    /// An exception, with its error code where it has one.
    Exception {
        /// The vector.
        vector: u8,
        /// The error code.
        error_code: Option<u32>,
    },
    /// A non-maskable interrupt.
    Nmi,
}

/// `#GP`.
pub const X86_EXC_GP: u8 = 13;
/// `#UD`.
pub const X86_EXC_UD: u8 = 6;

/// Control registers and friends that hv-core reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlReg {
    /// CR0.
    Cr0,
    /// CR2.
    Cr2,
    /// CR3.
    Cr3,
    /// CR4.
    Cr4,
    /// EFER.
    Efer,
    /// XCR0.
    Xcr0,
}

/// One vCPU as the backend runs it.
pub trait VcpuBackend {
    /// Enters the guest and returns at its next exit.
    fn run(&mut self) -> VmExit;
    /// The host frame of its control block (VMCB or VMCS), if it has one:
    /// the owner gives it back after dropping a vCPU that no CPU runs or
    /// holds current (VMX clears its VMCS after every run).
    fn control_frame(&self) -> Option<Hfn> {
        None
    }
    /// The general-purpose registers.
    fn gprs(&self) -> &Gprs;
    /// The general-purpose registers, writable.
    fn gprs_mut(&mut self) -> &mut Gprs;
    /// RIP.
    fn rip(&self) -> u64;
    /// Sets RIP.
    fn set_rip(&mut self, rip: u64);
    /// RFLAGS.
    fn rflags(&self) -> u64;
    /// Sets RFLAGS (the instruction emulator writes the arithmetic flags).
    fn set_rflags(&mut self, rflags: u64);
    /// The current privilege level (CS.DPL / SS.DPL).
    fn cpl(&self) -> u8;
    /// Whether the vCPU runs 64-bit code (EFER.LMA and CS.L).
    fn in_64bit_mode(&self) -> bool;
    /// CS's base: code is fetched at CS.base + RIP (it matters in real
    /// mode; flat code has 0).
    fn cs_base(&self) -> u64 {
        0
    }
    /// Reads a control register.
    fn control(&self, reg: ControlReg) -> u64;
    /// Writes a control register.
    fn set_control(&mut self, reg: ControlReg, value: u64);
    /// Loads PAE paging's four page-directory-pointer entries, which hv-core
    /// read from guest memory after a CR0/CR4 write it emulated turned PAE
    /// paging on outside long mode. VMX with EPT takes them from the VMCS at
    /// VM entry instead of from memory; SVM reads memory itself (default:
    /// nothing to do).
    fn set_pdptes(&mut self, pdptes: [u64; 4]) {
        let _ = pdptes;
    }
    /// Advances RIP past the instruction that caused `exit`. Backends
    /// without a hardware instruction length decode the instruction.
    /// Returns false when the length cannot be found (the caller then
    /// injects `#GP` or crashes the domain).
    fn skip_instruction(&mut self, exit: &VmExit) -> bool;
    /// [`VcpuBackend::skip_instruction`] for backends that may have to
    /// read the instruction: `fetch(linear, buf)` copies guest code bytes
    /// at a linear address (as the guest's paging maps it) and returns how
    /// many it could read. The default ignores `fetch`.
    fn skip_instruction_fetching(
        &mut self,
        exit: &VmExit,
        fetch: &mut dyn FnMut(u64, &mut [u8]) -> usize,
    ) -> bool {
        let _ = fetch;
        self.skip_instruction(exit)
    }
    /// Queues an event for the next entry.
    fn inject(&mut self, event: Event);
    /// Whether an interrupt could be delivered now (IF set, no interrupt
    /// shadow, no event already queued).
    fn interruptible(&self) -> bool;
    /// Asks for [`VmExit::InterruptWindow`] as soon as the guest can take
    /// an interrupt (or stops asking).
    fn set_interrupt_window(&mut self, enable: bool);
}

/// Page permissions in the nested page tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct P2mPerms {
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
    /// Uncached (a device's registers): the memory type is UC whatever
    /// the guest's PAT says; otherwise write-back with the guest's PAT.
    pub uncached: bool,
}

impl P2mPerms {
    /// Read, write and execute.
    pub const RWX: P2mPerms = P2mPerms {
        write: true,
        exec: true,
        uncached: false,
    };
    /// Read only.
    pub const RO: P2mPerms = P2mPerms {
        write: false,
        exec: false,
        uncached: false,
    };
    /// Read and write, no execute.
    pub const RW: P2mPerms = P2mPerms {
        write: true,
        exec: false,
        uncached: false,
    };
    /// A device's memory: read and write, no execute, uncached.
    pub const MMIO: P2mPerms = P2mPerms {
        write: true,
        exec: false,
        uncached: true,
    };
}

/// Why a nested-paging update failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NptError {
    /// No frame for a page-table level.
    NoMemory,
    /// The guest frame number is beyond what the tables can map.
    OutOfRange,
}

/// A domain's nested page tables (NPT or EPT).
pub trait NestedPaging: Send {
    /// Maps guest frame `gfn` to host frame `hfn`, replacing any mapping.
    fn map(&mut self, gfn: Gfn, hfn: Hfn, perms: P2mPerms) -> Result<(), NptError>;
    /// Maps the 2 MiB block of guest frames from `gfn` to the host frames
    /// from `hfn` (both 512-aligned), with one large entry where the
    /// tables have them; by default 512 single mappings.
    fn map_large(&mut self, gfn: Gfn, hfn: Hfn, perms: P2mPerms) -> Result<(), NptError> {
        for i in 0..512 {
            self.map(Gfn(gfn.0 + i), Hfn(hfn.0 + i), perms)?;
        }
        Ok(())
    }
    /// Removes the mapping of `gfn`, if any.
    fn unmap(&mut self, gfn: Gfn);
    /// Whether the tables map `gfn` now (false when the tables cannot
    /// tell): a not-present fault on a mapped frame is stale, another CPU
    /// mapped it meanwhile.
    fn is_mapped(&self, _gfn: Gfn) -> bool {
        false
    }
    /// Caps the host frames the tables may take (Xen's per-domain paging
    /// pool, [`crate::p2m::table_limit`]); by default no cap (tables that
    /// take no host frames).
    fn set_table_limit(&mut self, _frames: usize) {}
    /// Makes earlier changes visible to every CPU running the domain.
    fn flush(&mut self);
    /// The root the hardware loads (nCR3 or EPTP), for the backend.
    fn root(&self) -> u64;
}

//! The emulated local APIC: one state behind the x2APIC MSRs
//! (0x800-0x8FF) and the xAPIC page at 0xFEE00000.
//!
//! PVH guests take event-channel upcalls through the callback vector and
//! their timers through VIRQ_TIMER, so the local APIC matters for what
//! remains native: starting secondary vCPUs with INIT and SIPI, the odd
//! fixed IPI or self-IPI, and the registers Linux reads while setting up.
//! The "firmware" hands it over in x2APIC mode (IA32_APIC_BASE has EN and
//! EXTD set). A guest may move between the modes as the SDM allows
//! ([`Vlapic::set_apic_base`]: xAPIC to x2APIC, either to disabled,
//! disabled to xAPIC; `#GP` for x2APIC to xAPIC, disabled to x2APIC and
//! EXTD without EN). In xAPIC mode the registers are reached by MMIO
//! ([`Vlapic::mmio_read`], [`Vlapic::mmio_write`], through the instruction
//! emulator), the x2APIC MSRs raise `#GP`; in x2APIC mode the page is
//! nothing (the null handler), as in Xen. IDs are 2 x vCPU, as in the
//! guests' MADT (xAPIC: in ID bits 31:24).

/// Vectors below this are reserved (an IPI with one is an illegal vector).
const MIN_VECTOR: u8 = 16;

/// The x2APIC registers (MSR = 0x800 + offset / 16).
pub mod reg {
    /// ID.
    pub const ID: u32 = 0x802;
    /// Version.
    pub const VERSION: u32 = 0x803;
    /// Task priority.
    pub const TPR: u32 = 0x808;
    /// Processor priority.
    pub const PPR: u32 = 0x80A;
    /// End of interrupt.
    pub const EOI: u32 = 0x80B;
    /// Logical destination.
    pub const LDR: u32 = 0x80D;
    /// Spurious vector.
    pub const SVR: u32 = 0x80F;
    /// In-service, 8 registers.
    pub const ISR0: u32 = 0x810;
    /// Trigger mode, 8 registers.
    pub const TMR0: u32 = 0x818;
    /// Interrupt request, 8 registers.
    pub const IRR0: u32 = 0x820;
    /// Error status.
    pub const ESR: u32 = 0x828;
    /// LVT CMCI.
    pub const LVT_CMCI: u32 = 0x82F;
    /// Interrupt command (64-bit in x2APIC mode).
    pub const ICR: u32 = 0x830;
    /// LVT timer.
    pub const LVT_TIMER: u32 = 0x832;
    /// LVT thermal.
    pub const LVT_THERMAL: u32 = 0x833;
    /// LVT performance counters.
    pub const LVT_PMI: u32 = 0x834;
    /// LVT LINT0.
    pub const LVT_LINT0: u32 = 0x835;
    /// LVT LINT1.
    pub const LVT_LINT1: u32 = 0x836;
    /// LVT error.
    pub const LVT_ERROR: u32 = 0x837;
    /// Timer initial count.
    pub const TIMER_INIT: u32 = 0x838;
    /// Timer current count.
    pub const TIMER_CURRENT: u32 = 0x839;
    /// Timer divide configuration.
    pub const TIMER_DIVIDE: u32 = 0x83E;
    /// Self IPI.
    pub const SELF_IPI: u32 = 0x83F;
}

/// The xAPIC page's guest-physical address (the only one: relocation is
/// refused, as in Xen).
pub const APIC_BASE_ADDR: u64 = 0xFEE0_0000;
/// IA32_APIC_BASE: this is the bootstrap processor.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE: x2APIC mode (EXTD).
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// IA32_APIC_BASE: the APIC is enabled (EN).
pub const APIC_BASE_EN: u64 = 1 << 11;

/// The APIC's mode, from IA32_APIC_BASE's EN and EXTD bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicMode {
    /// EN = 0, EXTD = 0: no interrupts, no registers.
    Disabled,
    /// EN = 1, EXTD = 0: registers in the page at [`APIC_BASE_ADDR`].
    XApic,
    /// EN = 1, EXTD = 1: registers as MSRs.
    X2Apic,
}

/// Version register: version 0x14, 6 LVT entries (max LVT index 5).
pub const VERSION_VALUE: u64 = 0x0005_0014;
const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;

/// One request to another vCPU's APIC, produced by an ICR write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipi {
    /// Fixed interrupt `vector` to the vCPU with x2APIC id `dest`.
    Fixed {
        /// Destination APIC id.
        dest: u32,
        /// The vector.
        vector: u8,
    },
    /// NMI to `dest`.
    Nmi {
        /// Destination APIC id.
        dest: u32,
    },
    /// INIT to `dest`.
    Init {
        /// Destination APIC id.
        dest: u32,
    },
    /// Startup IPI with `vector` to `dest`.
    Startup {
        /// Destination APIC id.
        dest: u32,
        /// The start page number.
        vector: u8,
    },
}

/// Destination shorthand of an ICR write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    /// Use the destination field.
    None,
    /// Only the sender.
    SelfOnly,
    /// Everyone, the sender included.
    AllIncludingSelf,
    /// Everyone else.
    AllExcludingSelf,
}

/// Decodes an ICR value into its delivery mode and destination.
pub fn decode_icr(icr: u64) -> (u8, u8, Shorthand, u32) {
    let vector = icr as u8;
    let mode = ((icr >> 8) & 7) as u8;
    let sh = match (icr >> 18) & 3 {
        0 => Shorthand::None,
        1 => Shorthand::SelfOnly,
        2 => Shorthand::AllIncludingSelf,
        _ => Shorthand::AllExcludingSelf,
    };
    (vector, mode, sh, (icr >> 32) as u32)
}

/// What a register write asks the hypervisor to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteEffect {
    /// Nothing beyond the register.
    None,
    /// Send this ICR value (the caller resolves destinations).
    SendIcr(u64),
    /// The timer was (re)programmed: arm it for this many nanoseconds from
    /// now, or stop it (`None`).
    Timer(Option<u64>),
}

/// One vCPU's local APIC.
#[derive(Clone, Debug)]
pub struct Vlapic {
    /// x2APIC id.
    pub id: u32,
    tpr: u32,
    svr: u32,
    esr: u32,
    lvt: [u32; 7],
    icr: u64,
    timer_init: u32,
    timer_divide: u32,
    /// System time at which the current count was loaded.
    timer_start: u64,
    irr: [u64; 4],
    isr: [u64; 4],
    /// An NMI waits for injection.
    pub nmi_pending: bool,
    /// INIT received: a SIPI may start the vCPU.
    pub init_received: bool,
    mode: ApicMode,
    /// xAPIC logical destination (bits 31:24).
    ldr_x: u32,
    /// xAPIC destination format (model in 31:28).
    dfr: u32,
}

/// Index in `lvt` of each LVT register.
fn lvt_index(msr: u32) -> Option<usize> {
    Some(match msr {
        reg::LVT_CMCI => 0,
        reg::LVT_TIMER => 1,
        reg::LVT_THERMAL => 2,
        reg::LVT_PMI => 3,
        reg::LVT_LINT0 => 4,
        reg::LVT_LINT1 => 5,
        reg::LVT_ERROR => 6,
        _ => return None,
    })
}

fn divide(cfg: u32) -> u64 {
    // Bits 0,1,3: 0b000 -> 2, ..., 0b111 -> 1.
    let v = (cfg & 3) | ((cfg >> 1) & 4);
    if v == 7 { 1 } else { 2 << v }
}

/// The virtual APIC timer runs at 1 GHz before division: one tick per
/// nanosecond with divide-by-1.
pub const TIMER_HZ: u64 = 1_000_000_000;

/// The shortest period of the timer in periodic mode, as Xen's
/// `create_periodic_time` has it (0.1 ms).
pub const MIN_PERIOD_NS: u64 = 100_000;

impl Vlapic {
    /// The APIC of vCPU `vcpu` after reset.
    pub fn new(vcpu: u32) -> Self {
        Vlapic {
            id: vcpu * 2,
            tpr: 0,
            svr: 0xFF,
            esr: 0,
            lvt: [LVT_MASKED; 7],
            icr: 0,
            timer_init: 0,
            timer_divide: 0,
            timer_start: 0,
            irr: [0; 4],
            isr: [0; 4],
            nmi_pending: false,
            init_received: false,
            mode: ApicMode::X2Apic,
            ldr_x: 0,
            dfr: 0xFFFF_FFFF,
        }
    }

    /// The mode IA32_APIC_BASE selects.
    pub fn mode(&self) -> ApicMode {
        self.mode
    }

    /// IA32_APIC_BASE as the guest reads it (`bsp` for vCPU 0).
    pub fn apic_base(&self, bsp: bool) -> u64 {
        let mode = match self.mode {
            ApicMode::Disabled => 0,
            ApicMode::XApic => APIC_BASE_EN,
            ApicMode::X2Apic => APIC_BASE_EN | APIC_BASE_EXTD,
        };
        APIC_BASE_ADDR | mode | if bsp { APIC_BASE_BSP } else { 0 }
    }

    /// A `WRMSR` to IA32_APIC_BASE (Xen's `guest_wrmsr_apic_base`, the
    /// SDM's x2APIC state transitions). `Err(())` is `#GP`: a reserved
    /// bit, a base other than 0xFEE00000, EXTD without EN, x2APIC to
    /// xAPIC, disabled to x2APIC. The BSP bit is the processor's and is
    /// ignored. Enabling a disabled APIC resets its registers (the ID
    /// stays).
    #[allow(clippy::result_unit_err)]
    pub fn set_apic_base(&mut self, value: u64) -> Result<(), ()> {
        let known = APIC_BASE_BSP | APIC_BASE_EXTD | APIC_BASE_EN | APIC_BASE_ADDR;
        if value & !known != 0 || value & APIC_BASE_ADDR != APIC_BASE_ADDR {
            return Err(());
        }
        let new = match (value & APIC_BASE_EN != 0, value & APIC_BASE_EXTD != 0) {
            (false, false) => ApicMode::Disabled,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
            (false, true) => return Err(()),
        };
        match (self.mode, new) {
            (ApicMode::X2Apic, ApicMode::XApic) | (ApicMode::Disabled, ApicMode::X2Apic) => {
                return Err(());
            }
            (ApicMode::Disabled, ApicMode::XApic) => {
                let keep = (self.id, self.nmi_pending, self.init_received);
                *self = Vlapic::new(self.id / 2);
                (_, self.nmi_pending, self.init_received) = keep;
            }
            _ => {}
        }
        self.mode = new;
        Ok(())
    }

    /// Whether the APIC is software-enabled (SVR bit 8).
    pub fn enabled(&self) -> bool {
        self.svr & 0x100 != 0
    }

    fn highest(bits: &[u64; 4]) -> Option<u8> {
        (0..4)
            .rev()
            .find(|&i| bits[i] != 0)
            .map(|i| (i as u32 * 64 + 63 - bits[i].leading_zeros()) as u8)
    }

    fn ppr(&self) -> u32 {
        let isr = Self::highest(&self.isr).map_or(0, |v| u32::from(v) & 0xF0);
        (self.tpr & 0xF0).max(isr)
    }

    /// Marks `vector` pending. Vectors below 16 set the illegal-vector
    /// error instead.
    pub fn accept(&mut self, vector: u8) {
        // A hardware-disabled APIC (IA32_APIC_BASE.EN clear) takes nothing.
        if self.mode == ApicMode::Disabled {
            return;
        }
        if vector < MIN_VECTOR {
            self.esr |= 1 << 6;
            return;
        }
        self.irr[vector as usize / 64] |= 1 << (vector % 64);
    }

    /// The vector to deliver now, if any (above the processor priority).
    pub fn pending_vector(&self) -> Option<u8> {
        if self.mode == ApicMode::Disabled {
            return None;
        }
        let v = Self::highest(&self.irr)?;
        ((u32::from(v) & 0xF0) > self.ppr()).then_some(v)
    }

    /// The guest took `vector`: it moves from IRR to ISR.
    pub fn acknowledge(&mut self, vector: u8) {
        let (i, b) = (vector as usize / 64, 1u64 << (vector % 64));
        self.irr[i] &= !b;
        self.isr[i] |= b;
    }

    fn timer_ns_per_tick(&self) -> u64 {
        divide(self.timer_divide) * (1_000_000_000 / TIMER_HZ)
    }

    /// The timer's current count at `now`.
    pub fn timer_current(&self, now: u64) -> u32 {
        if self.timer_init == 0 {
            return 0;
        }
        let ticks = now.saturating_sub(self.timer_start) / self.timer_ns_per_tick();
        let init = u64::from(self.timer_init);
        if self.lvt[1] & LVT_TIMER_PERIODIC != 0 {
            (init - ticks % init) as u32
        } else {
            init.saturating_sub(ticks) as u32
        }
    }

    /// The timer expired at `now`: raises its vector unless masked and
    /// says when to fire again (periodic mode).
    pub fn timer_fired(&mut self, now: u64) -> Option<u64> {
        if self.timer_init == 0 {
            return None;
        }
        let lvt = self.lvt[1];
        if lvt & LVT_MASKED == 0 {
            self.accept(lvt as u8);
        }
        if lvt & LVT_TIMER_PERIODIC != 0 {
            self.timer_start = now;
            // Xen's create_periodic_time: a period under 100 us is 100 us
            // (a 1-tick period would fire every few host cycles).
            Some((u64::from(self.timer_init) * self.timer_ns_per_tick()).max(MIN_PERIOD_NS))
        } else {
            self.timer_init = 0;
            None
        }
    }

    /// Reads register `msr`; `None` means #GP (write-only or unknown).
    pub fn read(&self, msr: u32, now: u64) -> Option<u64> {
        let v = match msr {
            reg::ID => u64::from(self.id),
            reg::VERSION => VERSION_VALUE,
            reg::TPR => u64::from(self.tpr),
            reg::PPR => u64::from(self.ppr()),
            reg::LDR => u64::from(((self.id >> 4) << 16) | (1 << (self.id & 15))),
            reg::SVR => u64::from(self.svr),
            0x810..=0x817 => self.word(&self.isr, msr - reg::ISR0),
            0x818..=0x81F => 0,
            0x820..=0x827 => self.word(&self.irr, msr - reg::IRR0),
            reg::ESR => u64::from(self.esr),
            reg::ICR => self.icr,
            reg::TIMER_INIT => u64::from(self.timer_init),
            reg::TIMER_CURRENT => u64::from(self.timer_current(now)),
            reg::TIMER_DIVIDE => u64::from(self.timer_divide),
            m => u64::from(self.lvt[lvt_index(m)?]),
        };
        Some(v)
    }

    fn word(&self, bits: &[u64; 4], n: u32) -> u64 {
        let w = bits[n as usize / 2];
        if n.is_multiple_of(2) {
            w & 0xFFFF_FFFF
        } else {
            w >> 32
        }
    }

    /// Writes register `msr`; `Err(())` means #GP (read-only, unknown or
    /// reserved bits).
    #[allow(clippy::result_unit_err)]
    pub fn write(&mut self, msr: u32, value: u64, now: u64) -> Result<WriteEffect, ()> {
        let v32 = value as u32;
        if msr != reg::ICR && value >> 32 != 0 {
            return Err(());
        }
        match msr {
            reg::TPR => self.tpr = v32 & 0xFF,
            reg::EOI => {
                if value != 0 {
                    return Err(());
                }
                if let Some(v) = Self::highest(&self.isr) {
                    self.isr[v as usize / 64] &= !(1 << (v % 64));
                }
            }
            reg::SVR => self.svr = v32 & 0x11FF,
            reg::ESR => self.esr = 0,
            reg::ICR => {
                self.icr = value & !(1 << 12);
                return Ok(WriteEffect::SendIcr(self.icr));
            }
            reg::SELF_IPI => self.accept(v32 as u8),
            reg::TIMER_INIT => {
                self.timer_init = v32;
                self.timer_start = now;
                let ns = (v32 != 0).then(|| u64::from(v32) * self.timer_ns_per_tick());
                return Ok(WriteEffect::Timer(ns));
            }
            reg::TIMER_DIVIDE => self.timer_divide = v32 & 0xB,
            m => {
                let i = lvt_index(m).ok_or(())?;
                // Masked while the APIC is software-disabled.
                let masked = if self.enabled() { 0 } else { LVT_MASKED };
                self.lvt[i] = (v32 & 0x0007_17FF) | masked;
            }
        }
        Ok(WriteEffect::None)
    }

    /// INIT: back to the reset state, keeping the id and the mode (INIT
    /// leaves IA32_APIC_BASE alone).
    pub fn reset(&mut self) {
        let (id, mode) = (self.id, self.mode);
        *self = Vlapic::new(id / 2);
        self.mode = mode;
        self.init_received = true;
    }

    /// The 32-bit xAPIC register at page offset `reg` (16-byte aligned).
    fn xapic_reg(&self, reg: u32, now: u64) -> u32 {
        match reg {
            0x20 => (self.id & 0xFF) << 24,
            0xD0 => self.ldr_x,
            0xE0 => self.dfr,
            0x300 => self.icr as u32,
            0x310 => (self.icr >> 32) as u32 & 0xFF00_0000,
            // No self-IPI register in xAPIC mode.
            0x3F0 => 0,
            _ => self.read(0x800 + reg / 16, now).map_or(0, |v| v as u32),
        }
    }

    /// An xAPIC MMIO read of `size` (1, 2 or 4) bytes at page offset
    /// `offset`. Accesses that leave the register's first 4 bytes, and
    /// write-only or unknown registers, read 0 (Xen's `vlapic_mmio_read`).
    pub fn mmio_read(&self, offset: u32, size: u32, now: u64) -> u32 {
        let (reg, at) = (offset & 0xFF0, offset & 0xF);
        if !matches!(size, 1 | 2 | 4) || at + size > 4 {
            return 0;
        }
        let v = self.xapic_reg(reg, now) >> (at * 8);
        if size == 4 {
            v
        } else {
            v & ((1 << (size * 8)) - 1)
        }
    }

    /// An xAPIC MMIO write of the low `size` bytes of `value` at page
    /// offset `offset`. Narrow writes merge into the register; accesses
    /// that leave its first 4 bytes and read-only registers are ignored.
    /// Writing ICR low sends the IPI with ICR high's destination (0xFF:
    /// broadcast).
    pub fn mmio_write(&mut self, offset: u32, size: u32, value: u32, now: u64) -> WriteEffect {
        let (reg, at) = (offset & 0xFF0, offset & 0xF);
        if !matches!(size, 1 | 2 | 4) || at + size > 4 {
            return WriteEffect::None;
        }
        let v = if size == 4 {
            value
        } else {
            let m = ((1u32 << (size * 8)) - 1) << (at * 8);
            (self.xapic_reg(reg, now) & !m) | ((value << (at * 8)) & m)
        };
        match reg {
            0xB0 => {
                let _ = self.write(reg::EOI, 0, now);
            }
            0xD0 => self.ldr_x = v & 0xFF00_0000,
            0xE0 => self.dfr = v | 0x0FFF_FFFF,
            0x310 => {
                self.icr = (self.icr & 0xFFFF_FFFF) | (u64::from(v >> 24) << 56);
            }
            0x300 => {
                let dest = (self.icr >> 56) as u32;
                let dest = if dest == 0xFF { u32::MAX } else { dest };
                let low = u64::from(v) & !(1 << 12);
                // Kept in xAPIC form for reads; sent in x2APIC form.
                self.icr = (self.icr & 0xFF00_0000_0000_0000) | low;
                return WriteEffect::SendIcr((u64::from(dest) << 32) | low);
            }
            0x20 | 0x30 | 0xA0 | 0x3F0 => {}
            _ => {
                return self
                    .write(0x800 + reg / 16, u64::from(v), now)
                    .unwrap_or(WriteEffect::None);
            }
        }
        WriteEffect::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_version_ldr() {
        let a = Vlapic::new(3);
        assert_eq!(a.read(reg::ID, 0), Some(6));
        assert_eq!(a.read(reg::VERSION, 0), Some(VERSION_VALUE));
        assert_eq!(a.read(reg::LDR, 0), Some(1 << 6));
        assert_eq!(a.read(reg::EOI, 0), None, "write-only");
        assert_eq!(a.read(0x8FF, 0), None);
    }

    #[test]
    fn priority_and_eoi() {
        let mut a = Vlapic::new(0);
        a.write(reg::SVR, 0x1FF, 0).unwrap();
        a.accept(0x31);
        a.accept(0x52);
        assert_eq!(a.pending_vector(), Some(0x52));
        a.acknowledge(0x52);
        assert_eq!(
            a.pending_vector(),
            None,
            "0x31 is below the in-service class"
        );
        assert_eq!(a.read(reg::PPR, 0), Some(0x50));
        a.write(reg::EOI, 0, 0).unwrap();
        assert_eq!(a.pending_vector(), Some(0x31));
        a.write(reg::TPR, 0x40, 0).unwrap();
        assert_eq!(a.pending_vector(), None, "masked by TPR");
        assert!(a.write(reg::EOI, 1, 0).is_err());
        a.accept(3);
        assert_eq!(a.read(reg::ESR, 0), Some(1 << 6));
    }

    #[test]
    fn timer_modes() {
        let mut a = Vlapic::new(0);
        a.write(reg::SVR, 0x1FF, 0).unwrap();
        a.write(reg::TIMER_DIVIDE, 0xB, 0).unwrap(); // divide by 1
        a.write(reg::LVT_TIMER, 0x40 | LVT_TIMER_PERIODIC as u64, 0)
            .unwrap();
        assert_eq!(
            a.write(reg::TIMER_INIT, 1000, 100).unwrap(),
            WriteEffect::Timer(Some(1000))
        );
        assert_eq!(a.timer_current(600), 500);
        // The first expiry as programmed, the period then at least Xen's
        // 100 us.
        assert_eq!(a.timer_fired(1100), Some(MIN_PERIOD_NS));
        assert_eq!(a.pending_vector(), Some(0x40));
        a.write(reg::TIMER_INIT, 1_000_000, 0).unwrap();
        assert_eq!(a.timer_fired(1_000_000), Some(1_000_000));
        a.write(reg::LVT_TIMER, 0x41, 0).unwrap();
        a.write(reg::TIMER_INIT, 10, 0).unwrap();
        assert_eq!(a.timer_fired(10), None, "one-shot");
        assert_eq!(a.timer_current(20), 0);
        assert!(a.write(reg::ID, 5, 0).is_err(), "read-only");
        assert!(a.write(reg::TPR, 1 << 40, 0).is_err());
    }

    #[test]
    fn apic_base_transitions() {
        use ApicMode::*;
        let (en, extd, base) = (APIC_BASE_EN, APIC_BASE_EXTD, APIC_BASE_ADDR);
        let mut a = Vlapic::new(1);
        assert_eq!(a.mode(), X2Apic);
        assert_eq!(a.apic_base(false), base | en | extd);
        assert_eq!(a.apic_base(true), base | en | extd | APIC_BASE_BSP);
        // x2APIC -> xAPIC, EXTD without EN, reserved bits, relocation.
        for bad in [base | en, base | extd, base | en | extd | 1, en | extd] {
            assert!(a.set_apic_base(bad).is_err(), "{bad:#x}");
            assert_eq!(a.mode(), X2Apic);
        }
        // The BSP bit is ignored.
        assert!(a.set_apic_base(base | en | extd | APIC_BASE_BSP).is_ok());
        a.write(reg::SVR, 0x1FF, 0).unwrap();
        a.accept(0x40);
        assert!(a.set_apic_base(base).is_ok());
        assert_eq!(a.mode(), Disabled);
        // Disabled: nothing pending, nothing accepted.
        assert_eq!(a.pending_vector(), None);
        a.accept(0x50);
        assert!(
            a.set_apic_base(base | en | extd).is_err(),
            "disabled -> x2APIC"
        );
        // Enabling resets the registers, not the ID.
        assert!(a.set_apic_base(base | en).is_ok());
        assert_eq!(a.mode(), XApic);
        assert_eq!(a.read(reg::SVR, 0), Some(0xFF));
        assert_eq!(a.id, 2);
        // INIT keeps the mode.
        a.reset();
        assert_eq!(a.mode(), XApic);
        assert!(a.set_apic_base(base | en | extd).is_ok(), "xAPIC -> x2APIC");
        assert!(a.set_apic_base(base | en | extd).is_ok(), "no change");
    }

    #[test]
    fn xapic_registers() {
        let mut a = Vlapic::new(3);
        assert!(a.set_apic_base(APIC_BASE_ADDR).is_ok());
        assert!(a.set_apic_base(APIC_BASE_ADDR | APIC_BASE_EN).is_ok());
        assert_eq!(a.mmio_read(0x20, 4, 0), 6 << 24);
        assert_eq!(a.mmio_read(0x23, 1, 0), 6, "the ID byte alone");
        assert_eq!(a.mmio_read(0x30, 4, 0), VERSION_VALUE as u32);
        assert_eq!(a.mmio_read(0xE0, 4, 0), u32::MAX, "DFR flat");
        // Outside a register's first 4 bytes, or 8 bytes wide: 0.
        assert_eq!(a.mmio_read(0x24, 4, 0), 0);
        assert_eq!(a.mmio_read(0x32, 4, 0), 0);
        // SVR by a 4-byte then a 1-byte write (merged).
        assert_eq!(a.mmio_write(0xF0, 4, 0x1FF, 0), WriteEffect::None);
        assert!(a.enabled());
        a.mmio_write(0xF0, 1, 0x3F, 0);
        assert_eq!(a.mmio_read(0xF0, 4, 0), 0x13F);
        // Logical destination and format are writable in xAPIC mode.
        a.mmio_write(0xD0, 4, 0x0400_0000 | 0x55, 0);
        assert_eq!(a.mmio_read(0xD0, 4, 0), 0x0400_0000);
        a.mmio_write(0xE0, 4, 0, 0);
        assert_eq!(a.mmio_read(0xE0, 4, 0), 0x0FFF_FFFF, "cluster model");
        // ICR: destination from ICR high bits 31:24; 0xFF broadcasts.
        a.mmio_write(0x310, 4, 4 << 24, 0);
        assert_eq!(
            a.mmio_write(0x300, 4, 0x4031, 0),
            WriteEffect::SendIcr((4 << 32) | 0x4031)
        );
        assert_eq!(a.mmio_read(0x310, 4, 0), 4 << 24);
        assert_eq!(a.mmio_read(0x300, 4, 0), 0x4031);
        a.mmio_write(0x310, 4, 0xFF << 24, 0);
        assert_eq!(
            a.mmio_write(0x300, 4, 0x31, 0),
            WriteEffect::SendIcr((0xFFFF_FFFF << 32) | 0x31)
        );
        // TPR, timer through the page; EOI takes any value.
        a.mmio_write(0x80, 4, 0x20, 0);
        assert_eq!(a.read(reg::TPR, 0), Some(0x20));
        a.mmio_write(0x3E0, 4, 0xB, 0);
        assert_eq!(
            a.mmio_write(0x380, 4, 100, 0),
            WriteEffect::Timer(Some(100))
        );
        a.accept(0x40);
        a.acknowledge(0x40);
        a.mmio_write(0xB0, 4, 0x1234, 0);
        assert_eq!(a.read(reg::PPR, 0), Some(0x20));
        // Read-only ID and version stay.
        a.mmio_write(0x20, 4, 0, 0);
        assert_eq!(a.mmio_read(0x20, 4, 0), 6 << 24);
    }

    #[test]
    fn icr_decoding() {
        let mut a = Vlapic::new(0);
        let icr = (6u64 << 32) | (0b110 << 8) | 0x08;
        assert_eq!(
            a.write(reg::ICR, icr, 0).unwrap(),
            WriteEffect::SendIcr(icr)
        );
        assert_eq!(decode_icr(icr), (8, 6, Shorthand::None, 6));
        assert_eq!(decode_icr(3 << 18).2, Shorthand::AllExcludingSelf);
    }
}

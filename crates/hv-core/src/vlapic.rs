//! The emulated local APIC, in x2APIC mode (MSRs 0x800-0x8FF).
//!
//! PVH guests take event-channel upcalls through the callback vector and
//! their timers through VIRQ_TIMER, so the local APIC matters for what
//! remains native: starting secondary vCPUs with INIT and SIPI, the odd
//! fixed IPI or self-IPI, and the registers Linux reads while setting up.
//! The "firmware" hands it over already in x2APIC mode (IA32_APIC_BASE has
//! EN and EXTD set) so guests never touch the xAPIC MMIO page. IDs are
//! 2 x vCPU, as in the guests' MADT.

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
        }
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
        if vector < MIN_VECTOR {
            self.esr |= 1 << 6;
            return;
        }
        self.irr[vector as usize / 64] |= 1 << (vector % 64);
    }

    /// The vector to deliver now, if any (above the processor priority).
    pub fn pending_vector(&self) -> Option<u8> {
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
            Some(u64::from(self.timer_init) * self.timer_ns_per_tick())
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

    /// INIT: back to the reset state, keeping the id.
    pub fn reset(&mut self) {
        let id = self.id;
        *self = Vlapic::new(id / 2);
        self.init_received = true;
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
        assert_eq!(a.timer_fired(1100), Some(1000));
        assert_eq!(a.pending_vector(), Some(0x40));
        a.write(reg::LVT_TIMER, 0x41, 0).unwrap();
        a.write(reg::TIMER_INIT, 10, 0).unwrap();
        assert_eq!(a.timer_fired(10), None, "one-shot");
        assert_eq!(a.timer_current(20), 0);
        assert!(a.write(reg::ID, 5, 0).is_err(), "read-only");
        assert!(a.write(reg::TPR, 1 << 40, 0).is_err());
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

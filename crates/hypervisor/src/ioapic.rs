//! The host IOAPIC, for guests' pirqs (hv-core `physdev`): the first
//! IOAPIC of the MADT and its interrupt source overrides.
//!
//! Each GSI below [`PIRQ_PINS`] has a fixed host vector,
//! [`PIRQ_VECTOR_BASE`] + GSI, delivered to the boot CPU. hv-core programs
//! a pin (masked) when a domain maps its GSI and unmasks it when the pirq
//! is bound or acknowledged. The interrupt handler ([`on_interrupt`])
//! masks a level-triggered pin before the local APIC's EOI (the line stays
//! asserted until the guest's driver quiets the device) and records the
//! GSI in [`PENDING`]; the run loop hands it to
//! `Hypervisor::gsi_fired` under the hypervisor lock ([`take_pending`]).
//!
//! The registers are reached through the identity map: its 2 MiB pages
//! are write-back in the page tables, and firmware's MTRRs make the MMIO
//! hole below 4 GiB (local APIC, IOAPIC at 0xfec00000, PCI BARs)
//! uncacheable, which wins over write-back (as for the local APIC).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

use hv_core::platform::GsiRoute;

/// The first pirq vector: GSI `g` arrives on `PIRQ_VECTOR_BASE + g`.
pub const PIRQ_VECTOR_BASE: u8 = 0x80;
/// GSIs with a vector (the 24 pins of a PC's first IOAPIC).
pub const PIRQ_PINS: u32 = 24;

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const REG_VER: u32 = 0x01;
const REDTBL: u32 = 0x10;
const MASKED: u32 = 1 << 16;
const LEVEL: u32 = 1 << 15;
const ACTIVE_LOW: u32 = 1 << 13;

/// The host's IOAPIC as the MADT describes it.
struct IoApic {
    /// Physical (identity-mapped) address of its registers.
    base: u64,
    /// Its first GSI.
    gsi_base: u32,
    /// The boot CPU's APIC id: where its interrupts go.
    dest: u32,
    /// MADT interrupt source overrides for ISA IRQs 0-15.
    overrides: [Option<GsiRoute>; 16],
}

static IOAPIC: spin::Once<IoApic> = spin::Once::new();
/// IOREGSEL then IOWIN: the two steps must not interleave between CPUs.
static REGS: spin::Mutex<()> = spin::Mutex::new(());
/// GSIs programmed level-triggered (masked by the handler).
static LEVEL_GSIS: AtomicU32 = AtomicU32::new(0);
/// GSIs that fired and wait for the run loop.
static PENDING: AtomicU32 = AtomicU32::new(0);

/// Latency statistics, printed at stop ([`latency`]): the TSC when each
/// GSI last fired (0: none outstanding), and sums of TSC ticks from the
/// interrupt to the run loop's delivery and to the owner's unmask
/// (`PHYSDEVOP_eoi` for a level pin).
static FIRED_AT: [AtomicU64; PIRQ_PINS as usize] =
    [const { AtomicU64::new(0) }; PIRQ_PINS as usize];
static DELIVERED_AT: [AtomicU64; PIRQ_PINS as usize] =
    [const { AtomicU64::new(0) }; PIRQ_PINS as usize];
static STATS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
const FIRES: usize = 0;
const TO_DELIVERY: usize = 1;
const TO_UNMASK: usize = 2;
const UNMASKS: usize = 3;
const DELIVERY_TO_UNMASK: usize = 4;

/// Bucket bounds (us) of the delivery-to-unmask histogram.
pub const HIST_US: [u64; 5] = [50, 200, 1_000, 5_000, 10_000];
/// Its counts (bucket `i`: below `HIST_US[i]`, the last: at or above all).
pub static HIST: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

/// Interrupts taken, and the mean TSC ticks from each to its delivery to
/// the owning domain and to its unmask (the owner's EOI), and from delivery
/// to unmask.
pub fn latency() -> (u64, u64, u64, u64) {
    let n = STATS[FIRES].load(SeqCst);
    let u = STATS[UNMASKS].load(SeqCst);
    (
        n,
        STATS[TO_DELIVERY].load(SeqCst) / n.max(1),
        STATS[TO_UNMASK].load(SeqCst) / u.max(1),
        STATS[DELIVERY_TO_UNMASK].load(SeqCst) / u.max(1),
    )
}

impl IoApic {
    fn read(&self, reg: u32) -> u32 {
        let _g = REGS.lock();
        // SAFETY: `base` is the IOAPIC's register window from the MADT,
        // identity-mapped (below 4 GiB) and uncached by the MTRRs;
        // IOREGSEL/IOWIN are 32-bit registers, accessed as such under REGS.
        unsafe {
            core::ptr::write_volatile((self.base + IOREGSEL) as *mut u32, reg);
            core::ptr::read_volatile((self.base + IOWIN) as *const u32)
        }
    }

    fn write(&self, reg: u32, value: u32) {
        let _g = REGS.lock();
        // SAFETY: as in `read`; only redirection entries of pins this
        // module owns are written.
        unsafe {
            core::ptr::write_volatile((self.base + IOREGSEL) as *mut u32, reg);
            core::ptr::write_volatile((self.base + IOWIN) as *mut u32, value);
        }
    }

    /// The pin of `gsi`, if this IOAPIC has it and it has a vector.
    fn pin(&self, gsi: u32) -> Option<u32> {
        let pin = gsi.checked_sub(self.gsi_base)?;
        (pin < PINS.load(SeqCst) && gsi < PIRQ_PINS).then_some(pin)
    }
}

/// Decodes an override's MPS INTI flags (bits 1:0 polarity, 3:2 trigger;
/// 0 = the ISA bus default: active high, edge).
pub fn override_route(gsi: u32, flags: u16) -> GsiRoute {
    GsiRoute {
        gsi,
        active_low: flags & 3 == 3,
        level: (flags >> 2) & 3 == 3,
    }
}

/// Takes the IOAPIC at `base` (first GSI `gsi_base`) and the overrides;
/// masks every pin (nothing of the host's is routed: its own timer is the
/// local APIC's).
pub fn init(base: u64, gsi_base: u32, overrides: &[(u8, GsiRoute)], boot_apic_id: u32) {
    let mut ov = [None; 16];
    for &(irq, r) in overrides {
        if let Some(slot) = ov.get_mut(usize::from(irq)) {
            *slot = Some(r);
        }
    }
    let io = IOAPIC.call_once(|| IoApic {
        base,
        gsi_base,
        dest: boot_apic_id,
        overrides: ov,
    });
    let pins = ((io.read(REG_VER) >> 16) & 0xFF) + 1;
    for pin in 0..pins {
        io.write(REDTBL + 2 * pin, MASKED);
    }
    PINS.store(pins, SeqCst);
    log::info!(
        "IOAPIC at {base:#x}: GSIs {gsi_base}-{}, all masked; overrides {:?}",
        gsi_base + pins - 1,
        overrides
    );
}

/// The IOAPIC's pin count (read at `init`).
static PINS: AtomicU32 = AtomicU32::new(0);

fn ioapic() -> Option<&'static IoApic> {
    IOAPIC.get()
}

/// Where interrupt line `line` reaches the IOAPIC: the MADT's override, or
/// the bus defaults (see `Platform::irq_route`).
pub fn irq_route(line: u8) -> Option<GsiRoute> {
    let io = ioapic()?;
    if let Some(Some(r)) = io.overrides.get(usize::from(line)) {
        return Some(*r);
    }
    GsiRoute::bus_default(line)
}

/// Programs `gsi`'s pin, masked, to its vector on the boot CPU.
pub fn route(gsi: u32, level: bool, active_low: bool) -> bool {
    let Some(io) = ioapic() else {
        return false;
    };
    let Some(pin) = io.pin(gsi) else {
        return false;
    };
    let mut low = MASKED | (u32::from(PIRQ_VECTOR_BASE) + gsi);
    if level {
        low |= LEVEL;
        LEVEL_GSIS.fetch_or(1 << gsi, SeqCst);
    } else {
        LEVEL_GSIS.fetch_and(!(1 << gsi), SeqCst);
    }
    if active_low {
        low |= ACTIVE_LOW;
    }
    // Physical destination mode, fixed delivery.
    io.write(REDTBL + 2 * pin + 1, io.dest << 24);
    io.write(REDTBL + 2 * pin, low);
    true
}

/// Masks or unmasks `gsi`'s pin.
pub fn mask(gsi: u32, masked: bool) {
    let Some(io) = ioapic() else {
        return;
    };
    let Some(pin) = io.pin(gsi) else {
        return;
    };
    let low = io.read(REDTBL + 2 * pin);
    let new = if masked { low | MASKED } else { low & !MASKED };
    if !masked && let Some(f) = FIRED_AT.get(gsi as usize) {
        let at = f.swap(0, SeqCst);
        if at != 0 {
            let now = crate::platform::rdtsc();
            STATS[UNMASKS].fetch_add(1, SeqCst);
            STATS[TO_UNMASK].fetch_add(now.saturating_sub(at), SeqCst);
            let d = DELIVERED_AT[gsi as usize].swap(0, SeqCst);
            let t = now.saturating_sub(d.max(at));
            STATS[DELIVERY_TO_UNMASK].fetch_add(t, SeqCst);
            let us = t.saturating_mul(1_000_000) / crate::platform::tsc_hz().max(1);
            let b = HIST_US.iter().take_while(|&&l| us >= l).count();
            HIST[b].fetch_add(1, SeqCst);
        }
    }
    if new != low {
        io.write(REDTBL + 2 * pin, new);
    }
}

/// The GSI of a pirq vector.
pub fn gsi_of_vector(vector: u64) -> Option<u32> {
    let v = u32::try_from(vector).ok()?;
    let gsi = v.checked_sub(u32::from(PIRQ_VECTOR_BASE))?;
    (gsi < PIRQ_PINS).then_some(gsi)
}

/// A pirq vector arrived (interrupt handler, before the EOI): masks a
/// level pin and records the GSI for the run loop.
pub fn on_interrupt(gsi: u32) {
    if LEVEL_GSIS.load(SeqCst) & (1 << gsi) != 0 {
        mask(gsi, true);
    }
    if let Some(f) = FIRED_AT.get(gsi as usize) {
        f.store(crate::platform::rdtsc(), SeqCst);
        STATS[FIRES].fetch_add(1, SeqCst);
    }
    PENDING.fetch_or(1 << gsi, SeqCst);
}

/// Whether a GSI waits for delivery.
pub fn pending() -> bool {
    PENDING.load(SeqCst) != 0
}

/// Takes the GSIs that fired since the last call.
pub fn take_pending() -> u32 {
    let fired = PENDING.swap(0, SeqCst);
    if fired != 0 {
        let now = crate::platform::rdtsc();
        for (g, f) in FIRED_AT.iter().enumerate() {
            if fired & (1 << g) != 0 {
                let at = f.load(SeqCst);
                STATS[TO_DELIVERY].fetch_add(now.saturating_sub(at), SeqCst);
                DELIVERED_AT[g].store(now, SeqCst);
            }
        }
    }
    fired
}

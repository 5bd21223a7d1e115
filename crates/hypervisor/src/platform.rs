//! The host platform: ACPI discovery of the CPUs, the local APIC, the TSC
//! as the clock, and the PIT used once to calibrate it.

use crate::boot::IDENTITY_MAPPED;
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping, madt::Madt, madt::MadtEntry};
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use x86::io::{inb, outb};

/// ACPI tables are read through the identity map.
#[derive(Clone, Copy, Debug)]
pub struct IdentityMapped;

impl AcpiHandler for IdentityMapped {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let end = physical_address.saturating_add(size) as u64;
        // The acpi crate only asks for tables the firmware described; an
        // address past the identity map would be a firmware bug we cannot
        // survive reading, so stop with a report instead of faulting.
        if end > IDENTITY_MAPPED {
            panic!("ACPI table at {physical_address:#x} lies beyond the identity map");
        }
        let ptr = NonNull::new(physical_address as *mut T)
            .unwrap_or_else(|| panic!("ACPI table at physical address 0"));
        // SAFETY: the region [physical_address, end) is identity-mapped
        // (checked above), so the virtual address equals the physical one and
        // stays valid while the mapping exists (forever).
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// One CPU found in the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuDesc {
    /// Its local APIC id.
    pub apic_id: u32,
}

/// What ACPI told us about the machine.
pub struct Topology {
    /// Enabled CPUs, the boot CPU included.
    pub cpus: Vec<CpuDesc>,
    /// Physical address of the local APIC registers.
    pub lapic_base: u64,
    /// The first IOAPIC: its registers' address and first GSI.
    pub ioapic: Option<(u64, u32)>,
    /// Interrupt source overrides of ISA IRQs: (IRQ, route).
    pub overrides: Vec<(u8, hv_core::platform::GsiRoute)>,
}

/// Finds the RSDP (from the loader, else by scanning the BIOS areas) and
/// reads the MADT.
pub fn discover(rsdp: Option<u64>) -> Result<Topology, &'static str> {
    // SAFETY: the RSDP address came from the boot loader, or the BIOS areas
    // are scanned, all below 1 MiB and identity-mapped; the handler maps
    // identity.
    let tables = unsafe {
        match rsdp {
            Some(addr) => AcpiTables::from_rsdp(IdentityMapped, addr as usize),
            None => AcpiTables::search_for_rsdp_bios(IdentityMapped),
        }
    }
    .map_err(|_| "no usable ACPI tables")?;
    let madt = tables.find_table::<Madt>().map_err(|_| "no MADT")?;
    let mut cpus = Vec::new();
    let mut lapic_base = u64::from(madt.get().local_apic_address);
    let mut ioapic = None;
    let mut overrides = Vec::new();
    for e in madt.get().entries() {
        match e {
            MadtEntry::LocalApic(l) if l.flags & 1 != 0 => cpus.push(CpuDesc {
                apic_id: u32::from(l.apic_id),
            }),
            MadtEntry::LocalX2Apic(l) if l.flags & 1 != 0 => cpus.push(CpuDesc {
                apic_id: l.x2apic_id,
            }),
            MadtEntry::LocalApicAddressOverride(o) => lapic_base = o.local_apic_address,
            MadtEntry::IoApic(io) if ioapic.is_none() => {
                ioapic = Some((
                    u64::from(io.io_apic_address),
                    io.global_system_interrupt_base,
                ))
            }
            MadtEntry::InterruptSourceOverride(o) if o.bus == 0 => overrides.push((
                o.irq,
                crate::ioapic::override_route(o.global_system_interrupt, o.flags),
            )),
            _ => {}
        }
    }
    Ok(Topology {
        cpus,
        lapic_base,
        ioapic,
        overrides,
    })
}

/// Masks every line of the two legacy 8259 interrupt controllers: the
/// host takes interrupts only through the local APIC, and a BIOS leaves the
/// PIC's timer (IRQ 0) on vector 8, where it would look like a double fault.
pub fn mask_legacy_pic() {
    // SAFETY: 0x21 and 0xA1 are the PICs' interrupt mask registers; masking
    // every line has no other effect.
    unsafe {
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
    }
}

// ---------------------------------------------------------------- time ----

static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads a counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Measures the TSC frequency against the PIT (channel 2, 2 ms one-shot:
/// 2386 PIT ticks, a 0.05% error, and a short boot).
///
/// Given the boot CPU's local APIC, its timer is calibrated in the same
/// window (its count read right after each TSC read), so the boot waits
/// for one window, not two. The window is 2 ms of PIT channel 2 (2,386
/// PIT ticks): the count is known to one PIT tick at each end (838 ns,
/// and a port read of about 1 us on hardware), about 0.05% of the window.
pub fn calibrate_tsc(apic: Option<&LocalApic>) -> u64 {
    const PIT_HZ: u64 = 1_193_182;
    const PER_SECOND: u64 = 500;
    const TICKS: u64 = PIT_HZ / PER_SECOND;
    // SAFETY: ports 0x42/0x43/0x61 are the PC's PIT channel 2 and its gate;
    // only this boot-time code drives them, and the speaker stays off.
    let (tsc, timer) = unsafe {
        let gate = inb(0x61);
        outb(0x61, (gate & !0x02) | 0x01);
        outb(0x43, 0xb0); // channel 2, lo/hi byte, mode 0, binary
        outb(0x42, (TICKS & 0xff) as u8);
        outb(0x42, (TICKS >> 8) as u8);
        let start = rdtsc();
        if let Some(a) = apic {
            a.start_timer_count();
        }
        let mut spins = 0u64;
        // OUT2 goes high at terminal count; bounded in case there is no PIT.
        while inb(0x61) & 0x20 == 0 && spins < 100_000_000 {
            spins += 1;
        }
        let end = rdtsc();
        let timer = apic.map(LocalApic::stop_timer_count);
        outb(0x61, gate);
        (end - start, timer)
    };
    if let Some(ticks) = timer {
        // Ticks in TICKS / PIT_HZ seconds, per millisecond.
        let per_ms = (ticks * PIT_HZ / (TICKS * 1000)).max(1);
        APIC_TICKS_PER_MS.store(per_ms, Ordering::Relaxed);
    }
    // A missing PIT ends the loop early; never leave a zero frequency.
    let hz = (tsc * PIT_HZ / TICKS).max(1_000_000);
    TSC_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// The calibrated TSC frequency in Hz.
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed).max(1)
}

/// Nanoseconds since the TSC started, from the calibrated frequency.
pub fn now_ns() -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed).max(1);
    ((u128::from(rdtsc()) * 1_000_000_000) / u128::from(hz)) as u64
}

/// Busy-waits for `us` microseconds.
pub fn delay_us(us: u64) {
    let end = now_ns().saturating_add(us * 1000);
    while now_ns() < end {
        core::hint::spin_loop();
    }
}

// ---------------------------------------------------------- local APIC ----

/// The local APIC, in x2APIC mode when the CPU has it, else xAPIC (MMIO).
#[derive(Clone, Copy, Debug)]
pub enum LocalApic {
    /// MSR access (IA32_X2APIC_*).
    X2Apic,
    /// Memory-mapped registers at this (identity-mapped) address.
    XApic(u64),
}

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;

const REG_ID: u32 = 0x20;
const REG_EOI: u32 = 0xb0;
const REG_SVR: u32 = 0xf0;
const REG_LVT_TIMER: u32 = 0x320;
const REG_TIMER_INIT: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3e0;

/// Local APIC timer ticks per millisecond (divide by 16), measured once.
static APIC_TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);

/// The boot CPU's APIC, for the interrupt handlers (same mode everywhere).
pub static HOST_APIC: spin::Once<LocalApic> = spin::Once::new();
const REG_ICR_LO: u32 = 0x300;
const REG_ICR_HI: u32 = 0x310;

impl LocalApic {
    /// Enables this CPU's local APIC (x2APIC when CPUID says so) with the
    /// spurious vector 0xff.
    pub fn enable(lapic_base: u64) -> Self {
        let x2 = core::arch::x86_64::__cpuid(1).ecx & (1 << 21) != 0;
        // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU; setting the
        // enable (and x2APIC) bits is the architected way to turn the APIC on
        // and changes nothing but the APIC's mode.
        unsafe {
            let base = x86::msr::rdmsr(IA32_APIC_BASE);
            let mut v = base | APIC_BASE_ENABLE;
            if x2 {
                v |= APIC_BASE_X2APIC;
            }
            x86::msr::wrmsr(IA32_APIC_BASE, v);
        }
        let apic = if x2 {
            LocalApic::X2Apic
        } else {
            LocalApic::XApic(lapic_base)
        };
        apic.write(REG_SVR, 0x100 | 0xff);
        apic
    }

    fn read(&self, reg: u32) -> u32 {
        match *self {
            // SAFETY: x2APIC mode is on (enable), so MSR 0x800 + reg/16 is an
            // APIC register; reading it has no side effects for ID/ICR/SVR.
            LocalApic::X2Apic => unsafe { x86::msr::rdmsr(0x800 + reg / 16) as u32 },
            // SAFETY: the xAPIC page is identity-mapped (below 4 GiB) and
            // `reg` is a register offset within it; 32-bit aligned access.
            LocalApic::XApic(base) => unsafe {
                core::ptr::read_volatile((base + u64::from(reg)) as *const u32)
            },
        }
    }

    fn write(&self, reg: u32, v: u32) {
        match *self {
            // SAFETY: as in `read`; writes go to the named APIC register.
            LocalApic::X2Apic => unsafe { x86::msr::wrmsr(0x800 + reg / 16, u64::from(v)) },
            // SAFETY: as in `read`.
            LocalApic::XApic(base) => unsafe {
                core::ptr::write_volatile((base + u64::from(reg)) as *mut u32, v)
            },
        }
    }

    /// This CPU's APIC id.
    pub fn id(&self) -> u32 {
        match self {
            LocalApic::X2Apic => self.read(REG_ID),
            LocalApic::XApic(_) => self.read(REG_ID) >> 24,
        }
    }

    /// Signals the end of the interrupt being handled.
    pub fn eoi(&self) {
        self.write(REG_EOI, 0);
    }

    /// Starts the timer counting down from its maximum, masked: the APIC
    /// half of [`calibrate_tsc`] (once, on the boot CPU).
    pub fn start_timer_count(&self) {
        self.write(REG_TIMER_DIVIDE, 0x3); // divide by 16
        self.write(REG_LVT_TIMER, 1 << 16); // masked, one-shot
        self.write(REG_TIMER_INIT, u32::MAX);
    }

    /// Stops the count [`LocalApic::start_timer_count`] started and
    /// answers the ticks since.
    pub fn stop_timer_count(&self) -> u64 {
        let left = self.read(REG_TIMER_CURRENT);
        self.write(REG_TIMER_INIT, 0);
        u64::from(u32::MAX - left)
    }

    /// Whether the one-shot timer has run out (or is stopped): its current
    /// count is zero. A vCPU resumed after that would run with no host
    /// timer to end its slice.
    pub fn timer_expired(&self) -> bool {
        self.read(REG_TIMER_CURRENT) == 0
    }

    /// The timer's calibrated rate (ticks per millisecond, divide by 16),
    /// 0 before [`calibrate_tsc`] measured it.
    pub fn timer_per_ms(&self) -> u64 {
        APIC_TICKS_PER_MS.load(Ordering::Relaxed)
    }

    /// Arms the one-shot timer to fire `vector` after `ns` nanoseconds
    /// (0 stops it).
    pub fn arm_timer(&self, vector: u8, ns: u64) {
        let per_ms = APIC_TICKS_PER_MS.load(Ordering::Relaxed).max(1);
        let ticks =
            (u128::from(ns) * u128::from(per_ms) / 1_000_000).clamp(1, u128::from(u32::MAX)) as u32;
        self.write(REG_TIMER_DIVIDE, 0x3);
        self.write(REG_LVT_TIMER, u32::from(vector));
        self.write(REG_TIMER_INIT, if ns == 0 { 0 } else { ticks });
    }

    /// Sends an IPI: `icr_lo` is the low ICR word (vector, delivery mode...).
    pub fn send_ipi(&self, apic_id: u32, icr_lo: u32) {
        match self {
            LocalApic::X2Apic => {
                // SAFETY: the x2APIC ICR is one 64-bit MSR (0x830).
                unsafe { x86::msr::wrmsr(0x830, (u64::from(apic_id) << 32) | u64::from(icr_lo)) }
            }
            LocalApic::XApic(_) => {
                self.write(REG_ICR_HI, apic_id << 24);
                self.write(REG_ICR_LO, icr_lo);
                // Wait (boundedly) for the delivery-status bit to clear.
                for _ in 0..1_000_000 {
                    if self.read(REG_ICR_LO) & (1 << 12) == 0 {
                        break;
                    }
                    core::hint::spin_loop();
                }
            }
        }
    }
}

impl LocalApic {
    /// Sends an NMI to every CPU but the caller (the fatal path's stop).
    pub fn send_nmi_all_but_self(&self) {
        // Destination shorthand "all excluding self", level assert, NMI
        // delivery: the destination field is ignored.
        self.send_ipi(0, ICR_NMI_ALL_BUT_SELF);
    }
}

/// ICR: NMI, level assert, to all CPUs excluding self.
pub const ICR_NMI_ALL_BUT_SELF: u32 = (0b11 << 18) | (1 << 14) | (0b100 << 8);
/// ICR: INIT, level assert.
pub const ICR_INIT: u32 = 0x0000_4500;
/// ICR: start-up IPI (add the vector: the page number of the trampoline).
pub const ICR_STARTUP: u32 = 0x0000_4600;

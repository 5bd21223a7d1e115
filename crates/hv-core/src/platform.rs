//! What hv-core needs from the machine it runs on: host frames and access to
//! them, time, cross-CPU kicks and the console.
//!
//! The hypervisor binary implements these over real memory (identity-mapped
//! frames, the TSC, the local APIC, the UART); the tests implement them over
//! heap buffers and a virtual clock. hv-core never holds a Rust reference
//! into guest memory: every access goes through [`FrameAccess`], whose
//! implementations must tolerate a guest changing the same bytes at the same
//! time (volatile or atomic accesses, never `&[u8]` into a live frame).

use crate::pci::Bdf;
use crate::types::{DomId, Hfn};

/// Access to host frames by number. Offsets and lengths are checked by the
/// caller (hv-core's guest-memory layer): `offset + len <= PAGE_SIZE`, and
/// atomics are naturally aligned. Implementations may still assert those
/// invariants; they are never guest-controlled.
pub trait FrameAccess {
    /// Copies `buf.len()` bytes out of frame `hfn` starting at `offset`.
    fn read(&self, hfn: Hfn, offset: usize, buf: &mut [u8]);
    /// Copies `data` into frame `hfn` at `offset`.
    fn write(&self, hfn: Hfn, offset: usize, data: &[u8]);
    /// Sets `len` bytes of frame `hfn` at `offset` to zero.
    fn zero(&self, hfn: Hfn, offset: usize, len: usize);
    /// Atomically compares the 32-bit word at `offset` with `old` and, if
    /// equal, replaces it with `new`. Returns the value found.
    fn cmpxchg_u32(&self, hfn: Hfn, offset: usize, old: u32, new: u32) -> u32;
    /// 64-bit form of [`FrameAccess::cmpxchg_u32`].
    fn cmpxchg_u64(&self, hfn: Hfn, offset: usize, old: u64, new: u64) -> u64;
    /// Atomically ORs `bits` into the 64-bit word at `offset`; returns the
    /// previous value.
    fn fetch_or_u64(&self, hfn: Hfn, offset: usize, bits: u64) -> u64;
    /// Atomically ANDs `bits` into the 64-bit word at `offset`; returns the
    /// previous value.
    fn fetch_and_u64(&self, hfn: Hfn, offset: usize, bits: u64) -> u64;
    /// Atomically ORs `bits` into the 32-bit word at `offset`; returns the
    /// previous value.
    fn fetch_or_u32(&self, hfn: Hfn, offset: usize, bits: u32) -> u32;
    /// Atomically ANDs `bits` into the 32-bit word at `offset`; returns the
    /// previous value.
    fn fetch_and_u32(&self, hfn: Hfn, offset: usize, bits: u32) -> u32;
    /// Atomically reads the 32-bit word at `offset`.
    fn load_u32(&self, hfn: Hfn, offset: usize) -> u32;
    /// Atomically reads the 64-bit word at `offset`.
    fn load_u64(&self, hfn: Hfn, offset: usize) -> u64;
    /// Atomically writes the 8-bit value at `offset`.
    fn store_u8(&self, hfn: Hfn, offset: usize, value: u8);
    /// Copies `len` bytes from (`src`, `src_off`) to (`dst`, `dst_off`);
    /// the ranges may be in the same frame and may overlap. Platforms with
    /// direct access override the bounce-buffer default.
    fn copy(&self, src: Hfn, src_off: usize, dst: Hfn, dst_off: usize, len: usize) {
        let mut buf = [0u8; crate::types::PAGE_SIZE];
        let len = len.min(buf.len());
        self.read(src, src_off, &mut buf[..len]);
        self.write(dst, dst_off, &buf[..len]);
    }
}

/// How a host interrupt line reaches the IOAPIC (MADT interrupt source
/// overrides): the GSI, its trigger mode and polarity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GsiRoute {
    /// The global system interrupt (IOAPIC pin, counting from 0).
    pub gsi: u32,
    /// Level-triggered (else edge).
    pub level: bool,
    /// Active low (else high).
    pub active_low: bool,
}

impl GsiRoute {
    /// Where interrupt line `line` goes without an override: the same GSI
    /// number with the bus defaults (ISA IRQs 0-15 edge, active high;
    /// above, PCI's level, active low). `None` for 255 (not connected).
    pub fn bus_default(line: u8) -> Option<Self> {
        match line {
            255 => None,
            0..=15 => Some(Self {
                gsi: u32::from(line),
                level: false,
                active_low: false,
            }),
            _ => Some(Self {
                gsi: u32::from(line),
                level: true,
                active_low: true,
            }),
        }
    }
}

/// The machine: frames, time, kicks and the console.
pub trait Platform: FrameAccess {
    /// Allocates one zeroed host frame, or `None` when memory is exhausted.
    fn alloc_frame(&self) -> Option<Hfn>;
    /// Returns a frame obtained from [`Platform::alloc_frame`] or
    /// [`Platform::alloc_block`].
    fn free_frame(&self, hfn: Hfn);
    /// Allocates 512 contiguous host frames, the first 512-aligned (2 MiB),
    /// **not zeroed**: they hold whatever they held before (another
    /// domain's data), so nothing may expose them before zeroing each
    /// (the p2m's lazy blocks). Freed one frame at a time. `None` when no
    /// such run is free (the caller falls back to single frames), and by
    /// default.
    fn alloc_block(&self) -> Option<Hfn> {
        None
    }
    /// Allocates `blocks` 2 MiB blocks of contiguous host frames, the
    /// first 512-aligned, all below 4 GiB, **not zeroed** (the caller
    /// zeroes them), for a direct-mapped region (guest-physical =
    /// host-physical). Freed one frame at a time. `None` when no such run
    /// is free, and by default.
    fn alloc_contiguous(&self, blocks: u64) -> Option<Hfn> {
        let _ = blocks;
        None
    }
    /// System time: nanoseconds since boot, monotonic, the same on every CPU.
    fn now_ns(&self) -> u64;
    /// Makes physical CPU `pcpu` leave guest mode (or wake from idle) and
    /// look at its work again (an IPI on hardware).
    fn kick_cpu(&self, pcpu: u32);
    /// Writes guest console output, already attributed to `domid`.
    fn console_write(&self, domid: DomId, text: &[u8]);
    /// The host's `CPUID` result for `leaf`/`subleaf` (EAX, EBX, ECX, EDX),
    /// the base of the guest's CPUID policy.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// The counter guests read with `RDTSC` (invariant, the same on every
    /// CPU). Platforms without one count nanoseconds.
    fn tsc(&self) -> u64 {
        self.now_ns()
    }
    /// The frequency of [`Platform::tsc`] in Hz.
    fn tsc_hz(&self) -> u64 {
        1_000_000_000
    }
    /// Wall-clock time (seconds, nanoseconds since the Unix epoch) at
    /// system time 0, for the guests' `shared_info` wallclock.
    fn wallclock_at_boot(&self) -> (u64, u32) {
        (0, 0)
    }
    /// Reads `size` bytes (1, 2 or 4) at register `reg` of host PCI
    /// function `bdf`'s configuration space; all-ones where the host has
    /// no such function. hv-core calls it only for functions assigned to a
    /// domain (and to probe them), with `reg` a multiple of `size`, under
    /// the hypervisor lock. The default is a machine without PCI.
    fn pci_config_read(&self, bdf: Bdf, reg: u8, size: u8) -> u32 {
        let _ = (bdf, reg);
        if size >= 4 {
            u32::MAX
        } else {
            (1 << (8 * u32::from(size))) - 1
        }
    }
    /// Writes the low `size` bytes of `value` at register `reg` of host
    /// PCI function `bdf` (same contract as
    /// [`Platform::pci_config_read`]).
    fn pci_config_write(&self, bdf: Bdf, reg: u8, size: u8, value: u32) {
        let _ = (bdf, reg, size, value);
    }
    /// Reads `size` bytes (1, 2 or 4) from host I/O port `port`. hv-core
    /// calls it only for ports inside an I/O BAR of a function assigned to
    /// the domain that asks. The default reads all-ones.
    fn io_port_read(&self, port: u16, size: u8) -> u32 {
        let _ = port;
        if size >= 4 {
            u32::MAX
        } else {
            (1 << (8 * u32::from(size))) - 1
        }
    }
    /// Writes the low `size` bytes of `value` to host I/O port `port`
    /// (same contract as [`Platform::io_port_read`]).
    fn io_port_write(&self, port: u16, size: u8, value: u32) {
        let _ = (port, size, value);
    }
    /// Where host interrupt line `line` (a PCI function's interrupt line
    /// register, an ISA IRQ number as firmware writes it) reaches the
    /// IOAPIC: the MADT's interrupt source override for that IRQ if it has
    /// one, else the same GSI number with the bus defaults (ISA IRQs 0-15
    /// edge, active high; above, PCI's level, active low). `None` for 255
    /// (not connected).
    fn irq_route(&self, line: u8) -> Option<GsiRoute> {
        GsiRoute::bus_default(line)
    }
    /// Programs the host IOAPIC pin of `gsi` for a guest's pirq: the
    /// hypervisor's fixed vector for that GSI, trigger and polarity as
    /// given, to one host CPU, **masked**. False if the host has no such
    /// pin (and by default: no IOAPIC).
    fn ioapic_route(&self, gsi: u32, level: bool, active_low: bool) -> bool {
        let _ = (gsi, level, active_low);
        false
    }
    /// Masks or unmasks the host IOAPIC pin of `gsi` (routed before).
    fn ioapic_mask(&self, gsi: u32, masked: bool) {
        let _ = (gsi, masked);
    }
}

#[cfg(test)]
mod route_tests {
    use super::GsiRoute;

    #[test]
    fn bus_defaults_without_an_override() {
        let isa = GsiRoute::bus_default(11).unwrap();
        assert_eq!((isa.gsi, isa.level, isa.active_low), (11, false, false));
        let pci = GsiRoute::bus_default(16).unwrap();
        assert_eq!((pci.gsi, pci.level, pci.active_low), (16, true, true));
        assert_eq!(GsiRoute::bus_default(255), None);
    }
}

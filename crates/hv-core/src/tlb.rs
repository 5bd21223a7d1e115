//! TLB shootdown: a frame taken from a guest, or a domain's nested tables,
//! go back to the allocator only after every CPU that may still cache a
//! translation to them has left guest mode.
//!
//! A CPU caches a domain's guest-physical translations (tagged by ASID on
//! SVM, by EPTP/VPID on VMX) while it runs one of its vCPUs, and keeps them
//! after the VM exit. They are dropped at the vCPU's next entry when the
//! domain's [`TlbEpoch`](crate::pagetable::TlbEpoch) moved (a fresh ASID,
//! INVEPT); a CPU that runs something else meanwhile never uses them (other
//! tags; an ASID handed out again is flushed first). So a frame unmapped
//! from a domain is safe to reuse once (a) the nested tables no longer map
//! it, (b) the domain's epoch moved, and (c) every CPU that was *in guest
//! mode* at (b) has left it once. Xen gets the same guarantee from its TLB
//! flush clock and each domain's dirty CPU mask, with a flush IPI and a
//! wait; here nothing waits: the frames queue with a [`Stamp`] and are
//! freed by whichever CPU next finds the stamp passed
//! ([`Hypervisor::settle`](crate::Hypervisor::settle)).
//!
//! # The protocol
//!
//! - A CPU about to run a vCPU calls [`GuestModeClock::enter`] *before* the
//!   vCPU backend reads the epoch to decide on a flush, and
//!   [`GuestModeClock::exit`] after the VM exit.
//! - Whoever frees first unmaps and flushes (the epoch moves), *then* takes
//!   [`GuestModeClock::stamp`]: the CPUs in guest mode, with their exit
//!   counts. It kicks them (an IPI ends a guest run) and queues the frames.
//!   They go back once [`GuestModeClock::passed`]: every count moved.
//!
//! Why a CPU missed by the stamp is safe: `enter` stores, then a `SeqCst`
//! fence, then the backend loads the epoch; the freer bumps the epoch, then
//! `stamp` runs a `SeqCst` fence and loads. Of two such store-fence-load
//! sequences at least one load sees the other's store: if the stamp saw the
//! CPU in host mode, the CPU's epoch read sees the bump and it flushes. A CPU seen in guest mode is waited for.
//! A CPU that left between the stamp's two loads is then found in host
//! mode, or waited for once more if it already came back (harmless). The loom model in `tests/loom_tlb.rs` checks
//! this for every interleaving of a small case.

#[cfg(not(loom))]
use core::sync::atomic::{AtomicU32, AtomicU64, fence};
#[cfg(loom)]
use loom::sync::atomic::{AtomicU32, AtomicU64, fence};

use core::sync::atomic::Ordering::SeqCst;

use alloc::vec::Vec;

use crate::types::DomId;

/// The most physical CPUs the clock tracks.
pub const MAX_PCPUS: usize = 64;

/// `running` of a CPU in host mode.
const HOST: u32 = 0;

/// One CPU's record, on cache lines of its own: each CPU writes its own on
/// every guest entry and exit, and neighbours must not share the line.
#[repr(align(128))]
struct CpuSlot {
    /// The domain whose vCPU runs (domain id + 1), or [`HOST`].
    running: AtomicU32,
    /// VM exits so far.
    exits: AtomicU64,
}

/// Which CPUs are in guest mode, and how often each has left it.
pub struct GuestModeClock {
    slots: Vec<CpuSlot>,
}

impl Default for GuestModeClock {
    fn default() -> Self {
        Self::new(MAX_PCPUS)
    }
}

impl GuestModeClock {
    /// A clock for `cpus` CPUs (at most [`MAX_PCPUS`]), all in host mode.
    pub fn new(cpus: usize) -> Self {
        let slots = (0..cpus.clamp(1, MAX_PCPUS))
            .map(|_| CpuSlot {
                running: AtomicU32::new(HOST),
                exits: AtomicU64::new(0),
            })
            .collect();
        Self { slots }
    }

    /// CPU `cpu` is about to run a vCPU of `d` (call before the backend
    /// reads the domain's epoch). An unknown CPU is ignored.
    pub fn enter(&self, cpu: u32, d: DomId) {
        if let Some(s) = self.slots.get(cpu as usize) {
            s.running.store(u32::from(d.0) + 1, SeqCst);
            // The store before any later load (the epoch): the Dekker
            // half of the hand-shake (see the module doc).
            fence(SeqCst);
        }
    }

    /// CPU `cpu` is back in host mode after a VM exit.
    pub fn exit(&self, cpu: u32) {
        if let Some(s) = self.slots.get(cpu as usize) {
            s.exits.fetch_add(1, SeqCst);
            s.running.store(HOST, SeqCst);
        }
    }

    /// The domain CPU `cpu` is running a vCPU of, if it is in guest mode.
    pub fn running(&self, cpu: u32) -> Option<DomId> {
        let r = self.slots.get(cpu as usize)?.running.load(SeqCst);
        (r != HOST).then(|| DomId((r - 1) as u16))
    }

    /// The CPUs in guest mode now, with their exit counts (take it after
    /// the flush that made the frames unreachable).
    pub fn stamp(&self) -> Stamp {
        self.stamp_where(|r| r != HOST)
    }

    /// The CPUs running a vCPU of `d` now (what an unmap from `d`'s own
    /// tables must wait for), with their exit counts.
    pub fn stamp_domain(&self, d: DomId) -> Stamp {
        let want = u32::from(d.0) + 1;
        self.stamp_where(|r| r == want)
    }

    fn stamp_where(&self, pick: impl Fn(u32) -> bool) -> Stamp {
        // The caller's epoch bump before these loads: the other half.
        fence(SeqCst);
        let cpus = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| pick(s.running.load(SeqCst)))
            .map(|(i, s)| (i as u32, s.exits.load(SeqCst)))
            .collect();
        Stamp { cpus }
    }

    /// Whether every CPU of `stamp` has left guest mode since, or is in
    /// host mode now (its next entry sees the epoch that the freer bumped
    /// before the stamp; without this a CPU seen between leaving and
    /// idling would be waited for for ever).
    pub fn passed(&self, stamp: &Stamp) -> bool {
        fence(SeqCst);
        stamp.cpus.iter().all(|&(c, n)| {
            let s = &self.slots[c as usize];
            s.exits.load(SeqCst) != n || s.running.load(SeqCst) == HOST
        })
    }
}

/// The CPUs that were in guest mode when something was freed, with their
/// exit counts then.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    cpus: Vec<(u32, u64)>,
}

impl Stamp {
    /// The CPUs to kick so that the stamp passes soon.
    pub fn cpus(&self) -> impl Iterator<Item = u32> + '_ {
        self.cpus.iter().map(|&(c, _)| c)
    }

    /// Nobody to wait for.
    pub fn is_empty(&self) -> bool {
        self.cpus.is_empty()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_waits_for_the_cpus_in_guest_mode_only() {
        let c = GuestModeClock::new(4);
        c.enter(1, DomId(3));
        c.enter(2, DomId(4));
        c.enter(2, DomId(4));
        let s = c.stamp();
        assert_eq!(s.cpus().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(c.stamp_domain(DomId(4)).cpus().collect::<Vec<_>>(), [2]);
        assert!(c.stamp_domain(DomId(5)).is_empty());
        assert!(!c.passed(&s));
        // CPU 0 (host mode) coming and going changes nothing.
        c.enter(0, DomId(3));
        c.exit(0);
        assert!(!c.passed(&s));
        c.exit(1);
        assert!(!c.passed(&s));
        c.exit(2);
        assert!(c.passed(&s));
        assert_eq!(c.running(1), None);
        // Nobody in guest mode: passed at once.
        assert!(c.stamp().is_empty());
        assert!(c.passed(&c.stamp()));
    }

    #[test]
    fn a_vcpu_that_migrates_is_waited_for_where_it_was() {
        let c = GuestModeClock::new(2);
        // A vCPU of d1 runs on CPU 1 when its frame is freed.
        c.enter(1, DomId(1));
        let s = c.stamp();
        // Until CPU 1 leaves guest mode the vCPU cannot move (its backend
        // is out), and other CPUs' runs of the domain do not count.
        for _ in 0..3 {
            c.enter(0, DomId(1));
            c.exit(0);
        }
        assert!(!c.passed(&s));
        c.exit(1);
        c.enter(0, DomId(1));
        assert!(c.passed(&s));
        assert_eq!(c.running(0), Some(DomId(1)));
    }

    #[test]
    fn unknown_cpus_are_ignored() {
        let c = GuestModeClock::new(1);
        c.enter(7, DomId(1));
        c.exit(7);
        assert_eq!(c.running(7), None);
        assert!(c.stamp().is_empty());
    }
}

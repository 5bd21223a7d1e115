//! Time: the pvclock scale published to guests, and the timer heap that
//! drives singleshot and periodic vCPU timers and poll timeouts.
//!
//! System time is nanoseconds since boot from the platform. Guests read it
//! without exits through `vcpu_time_info` (pvclock): `system_time +
//! scale(tsc - tsc_timestamp)`, published with the odd/even version
//! protocol. Timers live in one binary heap ordered by deadline: inserting
//! and expiring are O(log n) whatever the number of vCPUs. An entry that
//! no longer matches its vCPU's settings (the timer was changed or
//! stopped) is dropped when it surfaces, or earlier when stale entries
//! outnumber live ones ([`TimerHeap`]), so re-arming cannot grow it.

use alloc::collections::BinaryHeap;
use alloc::sync::Arc;
use core::cmp::Reverse;
use core::sync::atomic::{AtomicU64, Ordering};
use hashbrown::HashMap;

use crate::types::DomId;

/// Nanoseconds in a second.
pub const NS_PER_SEC: u64 = 1_000_000_000;
/// The shortest periodic timer Xen accepts (1 ms).
pub const MIN_PERIOD_NS: u64 = 1_000_000;

/// The pvclock scale: `ns = ((ticks << shift) * mul) >> 32` (a negative
/// shift shifts right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeScale {
    /// `tsc_to_system_mul`.
    pub mul: u32,
    /// `tsc_shift`.
    pub shift: i8,
}

impl TimeScale {
    /// The scale for a counter running at `hz` (at least 1).
    pub fn for_hz(hz: u64) -> Self {
        let mut f = hz.max(1);
        let mut shift: i8 = 0;
        // Bring the frequency into (1e9 / 2, 1e9] ... (1e9, 2e9] so that the
        // 32-bit fraction 1e9 / f lies in [0.5, 1).
        while f > 2 * NS_PER_SEC {
            f >>= 1;
            shift -= 1;
        }
        while f <= NS_PER_SEC {
            f <<= 1;
            shift += 1;
        }
        let mul = ((u128::from(NS_PER_SEC) << 32) / u128::from(f)) as u32;
        TimeScale { mul, shift }
    }

    /// Applies the scale to a tick delta, as a guest does.
    pub fn apply(&self, delta: u64) -> u64 {
        let d = if self.shift >= 0 {
            delta << self.shift
        } else {
            delta >> (-self.shift)
        };
        ((u128::from(d) * u128::from(self.mul)) >> 32) as u64
    }
}

/// What a timer does when it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// `VCPUOP_set_singleshot_timer` / `set_timer_op`: VIRQ_TIMER once.
    Singleshot,
    /// `VCPUOP_set_periodic_timer`: VIRQ_TIMER every period.
    Periodic,
    /// A `SCHEDOP_poll` timeout: wake the vCPU.
    PollTimeout,
    /// The emulated local APIC timer.
    Lapic,
}

/// One pending expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerEntry {
    /// Absolute system time.
    pub deadline: u64,
    /// The domain.
    pub dom: DomId,
    /// The vCPU.
    pub vcpu: u32,
    /// What to do.
    pub kind: TimerKind,
}

/// Every pending timer of the machine, earliest first.
///
/// A changed or stopped timer leaves its old entry in the heap (dropped
/// when it surfaces), so a guest that re-arms a far-off timer over and
/// over would grow the heap without end. `live` keeps the latest deadline
/// armed for each (domain, vCPU, kind): an entry that is not it is stale,
/// the same deadline armed again adds nothing, and the heap is cleared of
/// stale entries whenever they outnumber the live ones (plus a margin), so
/// it holds at most about twice one entry per live timer.
#[derive(Debug)]
pub struct TimerHeap {
    heap: BinaryHeap<Reverse<TimerEntry>>,
    live: HashMap<(DomId, u32, TimerKind), u64>,
    /// The earliest deadline ([`NO_TIMER`] when there is none), kept with
    /// every change, for run loops to read without the heap's lock: a CPU
    /// running a vCPU arms its host timer for it, and re-arms when a
    /// domain-local exit sets an earlier one.
    earliest: Arc<AtomicU64>,
}

/// [`TimerHeap::earliest`] with no timer pending.
pub const NO_TIMER: u64 = u64::MAX;

/// Stale entries a [`TimerHeap`] tolerates beyond one per live timer
/// before it clears them out.
const STALE_MARGIN: usize = 64;

impl Default for TimerHeap {
    fn default() -> Self {
        TimerHeap {
            heap: BinaryHeap::new(),
            live: HashMap::new(),
            earliest: Arc::new(AtomicU64::new(NO_TIMER)),
        }
    }
}

impl TimerHeap {
    /// Adds an expiry; it replaces the one armed before for the same
    /// vCPU and kind.
    pub fn insert(&mut self, e: TimerEntry) {
        if self.live.insert(Self::key(&e), e.deadline) == Some(e.deadline) {
            // Already in the heap.
            return;
        }
        self.heap.push(Reverse(e));
        if self.heap.len() > 2 * self.live.len() + STALE_MARGIN {
            let live = &self.live;
            self.heap
                .retain(|Reverse(x)| live.get(&Self::key(x)) == Some(&x.deadline));
        }
        self.publish();
    }

    /// Removes and returns the earliest entry due at `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<TimerEntry> {
        if self.heap.peek().is_some_and(|Reverse(e)| e.deadline <= now) {
            let e = self.heap.pop().map(|Reverse(e)| e);
            if let Some(e) = &e
                && self.live.get(&Self::key(e)) == Some(&e.deadline)
            {
                self.live.remove(&Self::key(e));
            }
            self.publish();
            e
        } else {
            None
        }
    }

    fn key(e: &TimerEntry) -> (DomId, u32, TimerKind) {
        (e.dom, e.vcpu, e.kind)
    }

    /// The earliest deadline as last published, shared: what a run loop
    /// reads without the heap's lock ([`NO_TIMER`] when there is none).
    pub fn earliest(&self) -> Arc<AtomicU64> {
        self.earliest.clone()
    }

    fn publish(&self) {
        self.earliest
            .store(self.next_deadline().unwrap_or(NO_TIMER), Ordering::Release);
    }

    /// The earliest deadline (possibly of an entry that is no longer valid:
    /// waking early for it is harmless).
    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(e)| e.deadline)
    }

    /// Entries held (valid or not).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drops every entry of domain `d` (teardown).
    pub fn remove_domain(&mut self, d: DomId) {
        self.heap.retain(|Reverse(e)| e.dom != d);
        self.live.retain(|k, _| k.0 != d);
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_matches_division() {
        for hz in [
            1_000_000u64,
            999_999_999,
            1_000_000_000,
            1_000_000_001,
            2_810_177_000,
            3_407_568_000,
            25_000_000_000,
        ] {
            let s = TimeScale::for_hz(hz);
            for ticks in [0u64, 1, 1000, hz, hz * 3600] {
                let exact = (u128::from(ticks) * u128::from(NS_PER_SEC) / u128::from(hz)) as u64;
                let got = s.apply(ticks);
                // Within 1 ns per second of elapsed time (plus rounding).
                let tol = exact / NS_PER_SEC + 2;
                assert!(
                    got.abs_diff(exact) <= tol,
                    "hz {hz} ticks {ticks}: {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn heap_orders_and_filters() {
        let mut h = TimerHeap::default();
        let e = |deadline, vcpu| TimerEntry {
            deadline,
            dom: DomId(1),
            vcpu,
            kind: TimerKind::Singleshot,
        };
        h.insert(e(30, 3));
        h.insert(e(10, 1));
        h.insert(e(20, 2));
        assert_eq!(h.next_deadline(), Some(10));
        assert_eq!(h.pop_due(5), None);
        assert_eq!(h.pop_due(25).map(|x| x.vcpu), Some(1));
        assert_eq!(h.pop_due(25).map(|x| x.vcpu), Some(2));
        assert_eq!(h.pop_due(25), None);
        h.remove_domain(DomId(1));
        assert!(h.is_empty());
    }

    #[test]
    fn rearming_keeps_the_heap_bounded() {
        let mut h = TimerHeap::default();
        let e = |deadline, vcpu, kind| TimerEntry {
            deadline,
            dom: DomId(1),
            vcpu,
            kind,
        };
        // A hostile vCPU re-arms a far-off timer 100,000 times, with new
        // deadlines and with the same one; another vCPU keeps one timer.
        h.insert(e(500, 1, TimerKind::Singleshot));
        for i in 0..100_000u64 {
            h.insert(e((1 << 40) | (i % 1000), 0, TimerKind::Singleshot));
            h.insert(e(1 << 41, 0, TimerKind::PollTimeout));
            assert!(h.len() <= 2 * 3 + STALE_MARGIN + 1, "{} entries", h.len());
        }
        // Only the live ones fire: the other vCPU's, then the last of each.
        assert_eq!(h.pop_due(1000).map(|x| x.vcpu), Some(1));
        let mut left = Vec::new();
        while let Some(x) = h.pop_due(u64::MAX) {
            left.push((x.deadline, x.kind));
        }
        assert!(left.contains(&((1 << 40) | 999, TimerKind::Singleshot)));
        assert!(left.contains(&(1 << 41, TimerKind::PollTimeout)));
        // A stale entry may still surface (tick drops it), never more
        // than the bound.
        assert!(left.len() <= 2 * 3 + STALE_MARGIN + 1);
        assert!(h.live.is_empty());
        assert_eq!(h.earliest().load(Ordering::Acquire), NO_TIMER);
    }

    #[test]
    fn earliest_follows_every_change() {
        let mut h = TimerHeap::default();
        let seen = h.earliest();
        let at = || seen.load(Ordering::Acquire);
        assert_eq!(at(), NO_TIMER);
        let e = |deadline, dom| TimerEntry {
            deadline,
            dom: DomId(dom),
            vcpu: 0,
            kind: TimerKind::Singleshot,
        };
        h.insert(e(50, 1));
        assert_eq!(at(), 50);
        // An earlier one lowers it, a later one leaves it.
        h.insert(e(20, 2));
        h.insert(e(90, 1));
        assert_eq!(at(), 20);
        assert_eq!(h.pop_due(10), None);
        assert_eq!(at(), 20);
        assert_eq!(h.pop_due(30).map(|x| x.deadline), Some(20));
        assert_eq!(at(), 50);
        h.remove_domain(DomId(1));
        assert_eq!(at(), NO_TIMER);
    }
}

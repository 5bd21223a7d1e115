//! The lock order, written down and checked in debug builds.
//!
//! Every lock of the hypervisor belongs to a [`LockClass`]; a CPU may take
//! a lock only while it holds nothing of a later class. The order
//! (docs/architecture.md §10 has the map with the data each lock guards):
//!
//! 1. [`LockClass::Global`]: the image's `HV` lock around [`Hypervisor`]
//!    (the registries, the timers' firing, domain life cycles). Holding it,
//!    [`Hypervisor::hold`] checks every domain out.
//! 2. [`LockClass::Registry`]: the registry of domain cells (read-mostly;
//!    written only with every domain checked out).
//! 3. [`LockClass::Domain`]: one domain's [`DomainCell`]. The global path
//!    takes them one at a time, in ascending id order, and lets go before
//!    the next; the domain-local path holds its own and may only *try* a
//!    peer's (`try_lock`), never wait for it.
//! 4. [`LockClass::Scheduler`]: the image's credit scheduler.
//! 5. [`LockClass::Leaf`]: the timer heap, the queue of woken vCPUs, the
//!    platform's frame allocator, PCI configuration and console queue.
//!    Nothing is taken while a leaf is held.
//!
//! A CPU never waits for a lock of an earlier class than one it holds, so
//! no two CPUs can wait for each other. The check is per CPU (the machine
//! names the calling CPU through [`set_cpu_source`]: the image its CPU
//! index, the mock machine one per host thread) and runs only with
//! `debug_assertions` (host tests, debug images); a violation panics with
//! both classes named. Locks are taken through [`OrderedMutex`], or
//! reported with [`Held`].
//!
//! [`Hypervisor`]: crate::hv::Hypervisor
//! [`Hypervisor::hold`]: crate::hv::Hypervisor::hold
//! [`DomainCell`]: crate::hv::DomainCell

use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// The classes, in the order they may be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LockClass {
    /// The image's lock around the hypervisor.
    Global = 0,
    /// The registry of domain cells.
    Registry = 1,
    /// One domain's cell.
    Domain = 2,
    /// The scheduler.
    Scheduler = 3,
    /// A lock under which nothing else is taken.
    Leaf = 4,
}

const CLASSES: usize = 5;
/// CPUs tracked (others are not checked).
pub const MAX_CPUS: usize = 64;

/// What each CPU holds: a count per class.
pub struct LockOrder {
    held: [[AtomicU8; CLASSES]; MAX_CPUS],
}

impl Default for LockOrder {
    fn default() -> Self {
        LockOrder {
            held: [const { [const { AtomicU8::new(0) }; CLASSES] }; MAX_CPUS],
        }
    }
}

impl LockOrder {
    /// The machine-wide checker.
    pub const fn new() -> Self {
        LockOrder {
            held: [const { [const { AtomicU8::new(0) }; CLASSES] }; MAX_CPUS],
        }
    }

    /// CPU `cpu` is about to take a lock of `class`: panics if it holds one
    /// of a later class (or a second domain it did not only try, see
    /// [`LockOrder::acquire_try`]).
    pub fn acquire(&self, cpu: usize, class: LockClass) {
        self.check(cpu, class, false);
    }

    /// As [`LockOrder::acquire`] for a lock taken with `try_lock` (a second
    /// domain's cell): a try never waits, so it may break the order.
    pub fn acquire_try(&self, cpu: usize, class: LockClass) {
        self.check(cpu, class, true);
    }

    fn check(&self, cpu: usize, class: LockClass, tried: bool) {
        if !cfg!(debug_assertions) {
            return;
        }
        let Some(held) = self.held.get(cpu) else {
            return;
        };
        if !tried {
            for later in (class as usize)..CLASSES {
                let n = held[later].load(Relaxed);
                // Taking a class it already holds waits too (a second
                // domain's cell by `lock`): only tries may nest.
                if n != 0 {
                    panic!(
                        "lock order: CPU {cpu} takes {class:?} while holding {:?}",
                        CLASS_NAMES[later]
                    );
                }
            }
        }
        held[class as usize].fetch_add(1, Relaxed);
    }

    /// CPU `cpu` let go of a lock of `class`.
    pub fn release(&self, cpu: usize, class: LockClass) {
        if !cfg!(debug_assertions) {
            return;
        }
        if let Some(held) = self.held.get(cpu) {
            let n = &held[class as usize];
            debug_assert!(n.load(Relaxed) > 0, "lock order: {class:?} released twice");
            n.fetch_sub(1, Relaxed);
        }
    }

    /// Whether CPU `cpu` holds a lock of `class` (for assertions).
    pub fn holds(&self, cpu: usize, class: LockClass) -> bool {
        self.held
            .get(cpu)
            .is_some_and(|h| h[class as usize].load(Relaxed) != 0)
    }
}

const CLASS_NAMES: [LockClass; CLASSES] = [
    LockClass::Global,
    LockClass::Registry,
    LockClass::Domain,
    LockClass::Scheduler,
    LockClass::Leaf,
];

/// The checker every lock of this machine reports to.
pub static LOCK_ORDER: LockOrder = LockOrder::new();

static CPU_SOURCE: spin::Once<fn() -> usize> = spin::Once::new();

/// Tells the checker how to name the calling CPU (the first call wins).
pub fn set_cpu_source(f: fn() -> usize) {
    CPU_SOURCE.call_once(|| f);
}

/// The calling CPU, or one past the tracked ones (unchecked) when the
/// machine did not say.
fn this_cpu() -> usize {
    CPU_SOURCE.get().map_or(MAX_CPUS, |f| f())
}

/// A held lock of `class`, reported to [`LOCK_ORDER`] until dropped.
pub struct Held {
    cpu: usize,
    class: LockClass,
}

impl Held {
    /// Reports taking a lock of `class` (call before taking it).
    pub fn take(class: LockClass) -> Self {
        let cpu = this_cpu();
        LOCK_ORDER.acquire(cpu, class);
        Held { cpu, class }
    }

    /// Reports a lock of `class` taken by `try_lock` (call once it
    /// succeeded).
    pub fn tried(class: LockClass) -> Self {
        let cpu = this_cpu();
        LOCK_ORDER.acquire_try(cpu, class);
        Held { cpu, class }
    }
}

/// A spin lock of a [`LockClass`], checked against the order.
pub struct OrderedMutex<T> {
    class: LockClass,
    inner: spin::Mutex<T>,
}

/// An [`OrderedMutex`], held.
pub struct OrderedGuard<'a, T> {
    // Dropped first: the lock, then the record.
    guard: spin::MutexGuard<'a, T>,
    _held: Held,
}

impl<T> OrderedMutex<T> {
    /// A lock of `class` around `value`.
    pub const fn new(class: LockClass, value: T) -> Self {
        OrderedMutex {
            class,
            inner: spin::Mutex::new(value),
        }
    }

    /// Takes the lock, waiting for it.
    pub fn lock(&self) -> OrderedGuard<'_, T> {
        let held = Held::take(self.class);
        OrderedGuard {
            guard: self.inner.lock(),
            _held: held,
        }
    }

    /// Takes the lock if it is free; never waits, so it may be taken out
    /// of order.
    pub fn try_lock(&self) -> Option<OrderedGuard<'_, T>> {
        let guard = self.inner.try_lock()?;
        Some(OrderedGuard {
            guard,
            _held: Held::tried(self.class),
        })
    }
}

impl<T> core::ops::Deref for OrderedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> core::ops::DerefMut for OrderedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        LOCK_ORDER.release(self.cpu, self.class);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_is_allowed() {
        let o = LockOrder::new();
        for c in CLASS_NAMES {
            o.acquire(3, c);
        }
        for c in CLASS_NAMES {
            o.release(3, c);
        }
        // A second domain by try, under the first.
        o.acquire(3, LockClass::Domain);
        o.acquire_try(3, LockClass::Domain);
        o.acquire(3, LockClass::Leaf);
        o.release(3, LockClass::Leaf);
        o.release(3, LockClass::Domain);
        o.release(3, LockClass::Domain);
        assert!(!o.holds(3, LockClass::Domain));
    }

    #[test]
    #[should_panic(expected = "takes Global while holding Scheduler")]
    fn global_after_the_scheduler_panics() {
        let o = LockOrder::new();
        o.acquire(1, LockClass::Scheduler);
        o.acquire(1, LockClass::Global);
    }

    #[test]
    #[should_panic(expected = "takes Domain while holding Domain")]
    fn waiting_for_a_second_domain_panics() {
        let o = LockOrder::new();
        o.acquire(0, LockClass::Domain);
        o.acquire(0, LockClass::Domain);
    }

    #[test]
    #[should_panic(expected = "takes Domain while holding Leaf")]
    fn anything_under_a_leaf_panics() {
        let o = LockOrder::new();
        o.acquire(2, LockClass::Leaf);
        o.acquire(2, LockClass::Domain);
    }

    #[test]
    fn cpus_are_independent() {
        let o = LockOrder::new();
        o.acquire(0, LockClass::Leaf);
        o.acquire(1, LockClass::Global);
        assert!(o.holds(0, LockClass::Leaf) && o.holds(1, LockClass::Global));
    }
}

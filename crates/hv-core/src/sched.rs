//! The vCPU scheduler: a credit-based fair scheduler in the spirit of Xen's
//! credit2, as a pure data structure (no clock, no IPIs, no locks: the
//! caller drives it with times in nanoseconds and acts on its answers).
//!
//! # Model
//!
//! - Every vCPU has a **weight** (1..=65535, Xen's default 256) and an
//!   optional **cap** (percent of one physical CPU).
//! - Every physical CPU (pCPU) has a **run queue** of runnable vCPUs ordered
//!   by **credit** (highest first, ties by order of addition): a binary heap with
//!   lazy deletion (an entry whose vCPU left the queue is dropped when it
//!   reaches the top, and the heap is compacted when such entries outnumber
//!   the live ones), so [`Scheduler::pick`] is O(log n) and requeuing a vCPU
//!   that just burnt its credit is O(1) on average.
//! - A running vCPU **burns credit** at a rate inversely proportional to its
//!   weight: `ran_ns * max_weight / weight`, where `max_weight` is the
//!   largest weight among the vCPUs of that run queue (so the heaviest burns
//!   1:1). Over time every vCPU of a queue gets CPU time in proportion to its
//!   weight.
//! - When the best candidate of a queue has negative credit, a **credit
//!   reset** adds a multiple of [`CREDIT_INIT`] to every vCPU of that queue
//!   (O(1): the queue keeps a bias), enough to make the best one positive.
//!   Negative balances carry over, bounded below by [`CREDIT_FLOOR`] (applied
//!   when a vCPU is queued); vCPUs
//!   that were blocked catch up with the resets they missed when they wake,
//!   bounded above by [`CREDIT_INIT`].
//! - **Time slices** last until the picked vCPU's credit would drop to that
//!   of the next candidate, clamped to [`MIN_SLICE`]..=[`MAX_SLICE`] (and to
//!   the remaining cap budget). A woken vCPU with clearly more credit than
//!   the one running on its queue's pCPU asks for that pCPU to be kicked
//!   (preemption).
//! - **Caps**: a capped vCPU has a budget of `cap% * CAP_PERIOD` per period
//!   of [`CAP_PERIOD`] (periods aligned on multiples of it). Once exhausted
//!   it is *parked* (runnable, but on no run queue) until the next period;
//!   [`Scheduler::next_event`] tells idle pCPUs when to look again.
//! - **Load balancing**: the load of a queue is the sum of the weights of
//!   its runnable vCPUs (queued or running). A pCPU whose queue is empty
//!   steals the best candidate of the most loaded other queue; every
//!   [`BALANCE_INTERVAL`] each pCPU also pulls from the most loaded queue
//!   the vCPU whose weight best evens the two loads. A woken vCPU goes to
//!   the queue of the pCPU it last ran on (cache affinity) unless that pCPU
//!   is busy and another one is idle.
//! - **Determinism**: every decision depends only on the sequence of calls
//!   (ordered sets and vectors; the key-to-slot hash map is only looked up,
//!   never iterated).
//!
//! # Protocol for the caller
//!
//! A pCPU calls [`Scheduler::pick`]; if it gets `(vcpu, slice)` it runs the
//! vCPU for at most `slice` ns, then calls [`Scheduler::descheduled`] (with
//! `runnable = true` when the slice ended or it was preempted, `false` when
//! the vCPU blocked) and picks again. If `pick` returns `None` the pCPU is
//! idle: it sleeps until an IPI (a kick returned by [`Scheduler::wake`]) or
//! its timer, which it arms for [`Scheduler::next_event`] if that is `Some`.
//! A vCPU that blocks must re-check for pending events after
//! `descheduled(.., false)` and call [`Scheduler::wake`] if there are any (as
//! Xen's `vcpu_block` does): a `wake` of a running vCPU is a no-op.
//!
//! All methods ignore unknown keys and out-of-range pCPUs instead of
//! panicking.

use alloc::collections::{BTreeMap, BTreeSet, BinaryHeap};
use alloc::vec::Vec;
use core::cmp::Reverse;

use hashbrown::HashMap;

use crate::types::DomId;

/// Credit given to every vCPU of a run queue at a credit reset (and to a new
/// vCPU): 10 ms of run time for the heaviest vCPU of the queue.
pub const CREDIT_INIT: i64 = 10_000_000;
/// Lowest credit carried over a credit reset (and into a woken vCPU).
pub const CREDIT_FLOOR: i64 = -CREDIT_INIT;
/// Hard lower bound of a credit, so no arithmetic can overflow.
const CREDIT_MIN: i64 = -(1 << 60);
/// Longest time slice (ns).
pub const MAX_SLICE: u64 = 10_000_000;
/// Shortest time slice (ns), except for a capped vCPU with less budget left.
pub const MIN_SLICE: u64 = 500_000;
/// Period (ns) over which caps are enforced: a vCPU capped at `c` percent
/// runs at most `c% * CAP_PERIOD` ns in each period `[k*P, (k+1)*P)`.
pub const CAP_PERIOD: u64 = 10_000_000;
/// How often (ns) each pCPU tries to even its load with the most loaded one.
pub const BALANCE_INTERVAL: u64 = 2_000_000;
/// A vCPU moved by load balancing is not moved again for this long (ns).
pub const MIGRATE_RESIST: u64 = 20_000_000;
/// How many entries (best candidates first) a balancing pass looks at.
const BALANCE_SCAN: usize = 32;
/// Xen's default vCPU weight.
pub const DEFAULT_WEIGHT: u16 = 256;
/// A queue's bias is folded back into its entries beyond this.
const BIAS_RENORMALIZE: i64 = 1 << 61;

/// Identifies a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VcpuKey {
    /// The domain.
    pub dom: DomId,
    /// The vCPU number within the domain.
    pub vcpu: u32,
}

/// Where a vCPU is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// On no run queue: blocked, offline, or not yet woken.
    Blocked,
    /// On the run queue of this pCPU.
    Queued(u32),
    /// Running on this pCPU.
    Running(u32),
    /// Runnable but out of cap budget until `park_until`.
    Parked,
}

/// A run-queue entry, packed in one integer so the heap compares cheaply:
/// stored credit (sign-flipped, bits 64..128), inverted slot (bits 32..64),
/// stamp (bits 0..32). The greatest is the best candidate: highest credit,
/// then lowest slot (slots are allocated deterministically: in order of
/// `add_vcpu`, freed slots reused last-freed first). It is live while the
/// slot is queued there with the same stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry(u128);

impl Entry {
    fn new(stored: i64, slot: u32, stamp: u32) -> Self {
        let credit = (stored as u64) ^ (1 << 63);
        let low = (u64::from(u32::MAX - slot) << 32) | u64::from(stamp);
        Entry((u128::from(credit) << 64) | u128::from(low))
    }
    fn stored(self) -> i64 {
        (((self.0 >> 64) as u64) ^ (1 << 63)) as i64
    }
    fn slot(self) -> u32 {
        u32::MAX - (self.0 >> 32) as u32
    }
    fn stamp(self) -> u32 {
        self.0 as u32
    }
}

#[derive(Debug)]
struct Vcpu {
    key: VcpuKey,
    /// Slot in use (a removed vCPU stays in use while still running).
    live: bool,
    weight: u16,
    /// Cap budget per [`CAP_PERIOD`] (ns), `None` when uncapped.
    quantum: Option<i64>,
    state: State,
    /// Runnable as far as the guest is concerned (woken and not put to
    /// sleep); a running vCPU put to sleep leaves when descheduled.
    wants: bool,
    /// Removed while running: freed when descheduled.
    removed: bool,
    /// The queue it belongs to (last ran on / queued on).
    home: Option<u32>,
    /// Credit; while queued, relative to the queue's bias (the stored value).
    credit: i64,
    /// `added` of the home queue when it left it (blocked / parked).
    snap: u64,
    /// When it started running.
    start: u64,
    /// Remaining cap budget in period `bperiod`.
    budget: i64,
    bperiod: u64,
    /// When parked: the start of the period that replenishes it.
    park_until: u64,
    /// When it was last moved by load balancing.
    moved_at: Option<u64>,
    /// Bumped whenever it is queued or leaves a queue: tells live run-queue
    /// entries from stale ones.
    stamp: u32,
}

#[derive(Debug, Default)]
struct RunQueue {
    heap: BinaryHeap<Entry>,
    /// One more entry, outside the heap: the vCPU that just left this pCPU.
    /// The next `pick` either takes it back without touching the heap or
    /// swaps it for the heap's top (one sift-down instead of a push and a
    /// pop).
    staged: Option<Entry>,
    /// Live entries (vCPUs queued here, in `heap` or `staged`).
    len: usize,
    /// Stale entries in `heap` and `staged`.
    stale: usize,
    /// Added to the stored credits of the entries (credit resets in O(1)).
    bias: i64,
    /// Total credit ever added by resets (wrapping), for vCPUs that missed
    /// resets while blocked.
    added: u64,
    /// Sum of the weights of the member vCPUs (queued or running here).
    load: u64,
    /// Weight -> number of members with it.
    weights: BTreeMap<u16, u32>,
    /// Largest member weight (1 when none).
    max_weight: u16,
    /// The slot running on this pCPU.
    current: Option<u32>,
    next_balance: u64,
}

/// The credit scheduler for all pCPUs of the machine. See the module
/// documentation.
#[derive(Debug)]
pub struct Scheduler {
    rqs: Vec<RunQueue>,
    slots: Vec<Vcpu>,
    free: Vec<u32>,
    index: HashMap<VcpuKey, u32>,
    /// Parked capped vCPUs by (replenish time, slot).
    parked: BTreeSet<(u64, u32)>,
}

/// Whether run-queue entry `e` of queue `q` is live.
fn live(slots: &[Vcpu], q: u32, e: &Entry) -> bool {
    let v = &slots[e.slot() as usize];
    v.stamp == e.stamp() && v.state == State::Queued(q)
}

/// Credit burnt by running `dt` ns.
fn burn(dt: u64, weight: u16, max_weight: u16) -> i64 {
    let (w, m) = (u64::from(weight.max(1)), u64::from(max_weight.max(weight)));
    let b = match dt.checked_mul(m) {
        Some(x) => u128::from(x / w),
        None => u128::from(dt) * u128::from(m) / u128::from(w),
    };
    i64::try_from(b).unwrap_or(i64::MAX)
}

/// Run time that burns `credit`.
fn credit_time(credit: u64, weight: u16, max_weight: u16) -> u64 {
    let (w, m) = (u64::from(weight.max(1)), u64::from(max_weight.max(weight)));
    match credit.checked_mul(w) {
        Some(x) => x / m,
        None => {
            u64::try_from(u128::from(credit) * u128::from(w) / u128::from(m)).unwrap_or(u64::MAX)
        }
    }
}

impl Scheduler {
    /// A scheduler for `nr_pcpus` physical CPUs, numbered `0..nr_pcpus`
    /// (at least one).
    pub fn new(nr_pcpus: u32) -> Self {
        let rqs = (0..nr_pcpus.max(1))
            .map(|_| RunQueue {
                max_weight: 1,
                ..RunQueue::default()
            })
            .collect();
        Scheduler {
            rqs,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            parked: BTreeSet::new(),
        }
    }

    /// The number of physical CPUs.
    pub fn nr_pcpus(&self) -> u32 {
        self.rqs.len() as u32
    }

    /// Adds a vCPU, initially blocked/offline (not runnable). weight
    /// 1..=65535 (Xen default 256; 0 counts as 1), cap in percent of one
    /// pCPU (None = uncapped; 0 and 100 or more also mean uncapped). Adding
    /// a key that exists updates its weight and cap.
    pub fn add_vcpu(&mut self, key: VcpuKey, weight: u16, cap: Option<u32>) {
        let quantum = cap
            .filter(|&c| c > 0 && c < 100)
            .map(|c| (u64::from(c) * CAP_PERIOD / 100) as i64);
        if let Some(&i) = self.index.get(&key) {
            self.set_weight(key, weight);
            let v = &mut self.slots[i as usize];
            v.quantum = quantum;
            v.budget = v.budget.min(quantum.unwrap_or(0));
            return;
        }
        let v = Vcpu {
            key,
            live: true,
            weight: weight.max(1),
            quantum,
            state: State::Blocked,
            wants: false,
            removed: false,
            home: None,
            credit: CREDIT_INIT,
            snap: 0,
            start: 0,
            budget: quantum.unwrap_or(0),
            bperiod: 0,
            park_until: 0,
            moved_at: None,
            stamp: 0,
        };
        let i = match self.free.pop() {
            Some(i) => {
                // Keep the stamp going: stale entries may name this slot.
                let stamp = self.slots[i as usize].stamp.wrapping_add(1);
                self.slots[i as usize] = Vcpu { stamp, ..v };
                i
            }
            None => {
                self.slots.push(v);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key, i);
    }

    /// Removes a vCPU. Also when running: it stays on its pCPU until
    /// [`Scheduler::descheduled`] and never comes back.
    pub fn remove_vcpu(&mut self, key: VcpuKey) {
        let Some(i) = self.index.remove(&key) else {
            return;
        };
        match self.slots[i as usize].state {
            State::Running(p) => {
                self.leave(p, i);
                let v = &mut self.slots[i as usize];
                v.removed = true;
                v.wants = false;
            }
            State::Queued(q) => {
                self.dequeue(i);
                self.leave(q, i);
                self.free_slot(i);
            }
            State::Parked => {
                let until = self.slots[i as usize].park_until;
                self.parked.remove(&(until, i));
                self.free_slot(i);
            }
            State::Blocked => self.free_slot(i),
        }
    }

    /// Changes the weight of a vCPU (0 counts as 1).
    pub fn set_weight(&mut self, key: VcpuKey, weight: u16) {
        let Some(&i) = self.index.get(&key) else {
            return;
        };
        let weight = weight.max(1);
        match self.slots[i as usize].state {
            State::Queued(q) | State::Running(q) => {
                self.leave(q, i);
                self.slots[i as usize].weight = weight;
                self.join(q, i);
            }
            State::Blocked | State::Parked => self.slots[i as usize].weight = weight,
        }
    }

    /// The vCPU became runnable (woken by an event or timer, brought
    /// online). Returns the pCPU that should be kicked to consider it (an
    /// idle one, or the one whose current vCPU it should preempt), if any.
    /// Waking a runnable (queued, running or parked) or unknown vCPU does
    /// nothing and returns `None`.
    pub fn wake(&mut self, key: VcpuKey, now: u64) -> Option<u32> {
        let &i = self.index.get(&key)?;
        let v = &mut self.slots[i as usize];
        match v.state {
            State::Running(_) => {
                v.wants = true;
                return None;
            }
            State::Queued(_) | State::Parked => return None,
            State::Blocked => {}
        }
        v.wants = true;
        self.catch_up(i);
        self.replenish(i, now);
        if self.slots[i as usize].quantum.is_some() && self.slots[i as usize].budget <= 0 {
            self.park(i, now);
            return None;
        }
        let q = self.place(i);
        let kick = self.kick_target(i, q, now);
        self.join(q, i);
        self.enqueue(i, q);
        kick
    }

    /// The vCPU blocked or went offline (removed from run queues; if
    /// running, it leaves when descheduled, whatever `runnable` says then).
    pub fn sleep(&mut self, key: VcpuKey) {
        let Some(&i) = self.index.get(&key) else {
            return;
        };
        match self.slots[i as usize].state {
            State::Running(_) | State::Blocked => self.slots[i as usize].wants = false,
            State::Queued(q) => {
                self.dequeue(i);
                self.leave(q, i);
                self.make_blocked(i);
            }
            State::Parked => {
                let until = self.slots[i as usize].park_until;
                self.parked.remove(&(until, i));
                let v = &mut self.slots[i as usize];
                v.state = State::Blocked;
                v.wants = false;
            }
        }
    }

    /// Physical CPU `pcpu` asks what to run at time `now` (ns). Returns the
    /// vCPU and the length of its time slice (ns), or None: idle (the caller
    /// sleeps until an IPI or a timer, armed for [`Scheduler::next_event`]
    /// if that is `Some`). The returned vCPU is marked running on `pcpu` and
    /// is not handed to any other pCPU until `descheduled`. A vCPU still
    /// running on `pcpu` is first descheduled as runnable.
    pub fn pick(&mut self, pcpu: u32, now: u64) -> Option<(VcpuKey, u64)> {
        let p = pcpu as usize;
        if p >= self.rqs.len() {
            return None;
        }
        if let Some(c) = self.rqs[p].current {
            self.stop_running(c, pcpu, now, true);
        }
        self.unpark_due(pcpu, now);
        if now >= self.rqs[p].next_balance {
            self.rqs[p].next_balance = now.saturating_add(BALANCE_INTERVAL);
            self.balance(pcpu, now);
        }
        if self.rqs[p].len == 0 {
            self.steal(pcpu, now);
        }
        let (best, i) = self.peek_best(pcpu)?;
        if best < 0 {
            self.reset(pcpu, best);
        }
        self.take_best(i, pcpu);
        let next = self.peek_best(pcpu).map(|(c, _)| c);
        let rq = &mut self.rqs[p];
        rq.current = Some(i);
        let max_weight = rq.max_weight;
        self.replenish(i, now);
        let v = &mut self.slots[i as usize];
        let (key, credit) = (v.key, v.credit);
        v.state = State::Running(pcpu);
        v.start = now;
        let slice = match next {
            None => MAX_SLICE,
            Some(next) => {
                let diff = u64::try_from(credit.saturating_sub(next)).unwrap_or(0);
                credit_time(diff, v.weight, max_weight).clamp(MIN_SLICE, MAX_SLICE)
            }
        };
        let slice = match v.quantum {
            Some(_) => slice.min(u64::try_from(v.budget).unwrap_or(0).max(1)),
            None => slice,
        };
        Some((key, slice))
    }

    /// The vCPU stopped running on `pcpu` at `now`; `runnable` says whether
    /// it goes back to a run queue (yield / preempted) or not (blocked,
    /// domain dead). Ignored unless `key` is running on `pcpu`.
    pub fn descheduled(&mut self, key: VcpuKey, pcpu: u32, now: u64, runnable: bool) {
        let Some(rq) = self.rqs.get(pcpu as usize) else {
            return;
        };
        let Some(i) = rq.current else {
            return;
        };
        let v = &self.slots[i as usize];
        if v.key != key || v.state != State::Running(pcpu) {
            return;
        }
        self.stop_running(i, pcpu, now, runnable);
    }

    /// Whether `key` is currently running somewhere, and where.
    pub fn running_on(&self, key: VcpuKey) -> Option<u32> {
        let &i = self.index.get(&key)?;
        match self.slots[i as usize].state {
            State::Running(p) => Some(p),
            _ => None,
        }
    }

    /// Whether `key` is runnable: woken and not put to sleep (it may be
    /// queued, running, or parked by its cap).
    pub fn is_runnable(&self, key: VcpuKey) -> bool {
        self.index
            .get(&key)
            .is_some_and(|&i| self.slots[i as usize].wants)
    }

    /// The earliest time at which a capped vCPU gets budget again, if one
    /// is waiting for it: idle pCPUs should not sleep past it.
    pub fn next_event(&self) -> Option<u64> {
        self.parked.first().map(|&(t, _)| t)
    }

    /// The pCPU whose run queue `key` belongs to (where it is queued or
    /// running, or last was), if any.
    pub fn home(&self, key: VcpuKey) -> Option<u32> {
        let &i = self.index.get(&key)?;
        self.slots[i as usize].home
    }

    /// The number of vCPUs waiting on the run queue of `pcpu`.
    pub fn queue_len(&self, pcpu: u32) -> usize {
        self.rqs.get(pcpu as usize).map_or(0, |rq| rq.len)
    }

    /// The load of `pcpu`'s run queue: the sum of the weights of its queued
    /// and running vCPUs.
    pub fn load(&self, pcpu: u32) -> u64 {
        self.rqs.get(pcpu as usize).map_or(0, |rq| rq.load)
    }

    // ---- internals ----

    fn free_slot(&mut self, i: u32) {
        let v = &mut self.slots[i as usize];
        v.live = false;
        v.state = State::Blocked;
        v.wants = false;
        self.free.push(i);
    }

    /// Makes slot `i` a member of queue `q` (load, max weight).
    fn join(&mut self, q: u32, i: u32) {
        let w = self.slots[i as usize].weight;
        let rq = &mut self.rqs[q as usize];
        rq.load += u64::from(w);
        *rq.weights.entry(w).or_insert(0) += 1;
        rq.max_weight = rq.max_weight.max(w);
    }

    fn leave(&mut self, q: u32, i: u32) {
        let w = self.slots[i as usize].weight;
        let rq = &mut self.rqs[q as usize];
        rq.load = rq.load.saturating_sub(u64::from(w));
        if let Some(n) = rq.weights.get_mut(&w) {
            *n -= 1;
            if *n == 0 {
                rq.weights.remove(&w);
            }
        }
        rq.max_weight = rq.weights.last_key_value().map_or(1, |(&w, _)| w);
    }

    /// Puts slot `i` (credit absolute) on queue `q`, its debt bounded by
    /// [`CREDIT_FLOOR`].
    fn enqueue(&mut self, i: u32, q: u32) {
        self.enqueue_as(i, q, false);
    }

    /// [`Self::enqueue`], as the staged entry if `staged`.
    fn enqueue_as(&mut self, i: u32, q: u32, staged: bool) {
        let rq = &mut self.rqs[q as usize];
        let v = &mut self.slots[i as usize];
        let stored = v.credit.max(CREDIT_FLOOR).saturating_sub(rq.bias);
        v.credit = stored;
        v.home = Some(q);
        v.state = State::Queued(q);
        v.stamp = v.stamp.wrapping_add(1);
        let e = Entry::new(stored, i, v.stamp);
        if staged {
            if let Some(old) = rq.staged.replace(e) {
                rq.heap.push(old);
            }
        } else {
            rq.heap.push(e);
        }
        rq.len += 1;
    }

    /// Takes queued slot `i` off its queue (its entry goes stale); its
    /// credit becomes absolute.
    fn dequeue(&mut self, i: u32) {
        let v = &mut self.slots[i as usize];
        let State::Queued(q) = v.state else {
            return;
        };
        let rq = &mut self.rqs[q as usize];
        v.credit = v.credit.saturating_add(rq.bias);
        v.state = State::Blocked;
        v.stamp = v.stamp.wrapping_add(1);
        rq.len -= 1;
        rq.stale += 1;
        if rq.stale > rq.len + 64 {
            let slots = &self.slots;
            rq.heap.retain(|e| live(slots, q, e));
            rq.stale = usize::from(rq.staged.is_some_and(|e| !live(slots, q, &e)));
        }
    }

    /// Takes the best candidate `i` (just found by `peek_best`) off queue
    /// `q`, like `dequeue` but without leaving a stale entry.
    fn take_best(&mut self, i: u32, q: u32) {
        let rq = &mut self.rqs[q as usize];
        let slots = &self.slots;
        let staged = rq.staged.filter(|e| live(slots, q, e));
        let from_staged = staged.is_some_and(|e| e.slot() == i);
        let from_top = !from_staged
            && rq
                .heap
                .peek()
                .is_some_and(|e| e.slot() == i && live(slots, q, e));
        if from_staged {
            rq.staged = None;
        } else if from_top {
            if let Some(st) = staged
                && let Some(mut top) = rq.heap.peek_mut()
            {
                *top = st;
                rq.staged = None;
            } else {
                rq.heap.pop();
            }
        } else {
            // Not where expected: leave a stale entry.
            self.dequeue(i);
            return;
        }
        let v = &mut self.slots[i as usize];
        v.credit = v.credit.saturating_add(rq.bias);
        v.state = State::Blocked;
        v.stamp = v.stamp.wrapping_add(1);
        rq.len -= 1;
    }

    /// The best candidate queued on `q` (effective credit, slot), dropping
    /// stale entries from the top.
    fn peek_best(&mut self, q: u32) -> Option<(i64, u32)> {
        let rq = &mut self.rqs[q as usize];
        if rq.staged.is_some_and(|e| !live(&self.slots, q, &e)) {
            rq.staged = None;
            rq.stale -= 1;
        }
        let mut top = None;
        while let Some(&e) = rq.heap.peek() {
            if live(&self.slots, q, &e) {
                top = Some(e);
                break;
            }
            rq.heap.pop();
            rq.stale -= 1;
        }
        let best = match (top, rq.staged) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b)?,
        };
        Some((best.stored().saturating_add(rq.bias), best.slot()))
    }

    /// The credit of the best candidate queued on `q`.
    fn best_credit(&mut self, q: u32) -> Option<i64> {
        self.peek_best(q).map(|(c, _)| c)
    }

    /// Moves queued slot `i` from queue `from` to queue `to`. Credits of
    /// different queues are not comparable (their resets are independent),
    /// so the vCPU keeps its lag behind the best candidate: it waits on the
    /// new queue about as long as it would have on the old one.
    fn migrate(&mut self, i: u32, from: u32, to: u32, now: u64) {
        let src_best = self.best_credit(from);
        self.dequeue(i);
        if let (Some(src), Some(dst)) = (src_best, self.best_credit(to)) {
            let v = &mut self.slots[i as usize];
            let lag = src.saturating_sub(v.credit).max(0);
            v.credit = dst.saturating_sub(lag).clamp(CREDIT_FLOOR, CREDIT_INIT);
        }
        self.slots[i as usize].moved_at = Some(now);
        self.leave(from, i);
        self.join(to, i);
        self.enqueue(i, to);
    }

    fn make_blocked(&mut self, i: u32) {
        let v = &mut self.slots[i as usize];
        v.state = State::Blocked;
        v.wants = false;
        v.snap = v.home.map_or(0, |h| self.rqs[h as usize].added);
    }

    /// Credits the resets a blocked or parked vCPU missed.
    fn catch_up(&mut self, i: u32) {
        let v = &mut self.slots[i as usize];
        if let Some(h) = v.home {
            let missed = self.rqs[h as usize].added.wrapping_sub(v.snap);
            if missed > 0 {
                let missed = i64::try_from(missed).unwrap_or(i64::MAX);
                v.credit = v
                    .credit
                    .saturating_add(missed)
                    .clamp(CREDIT_FLOOR, CREDIT_INIT);
            }
        }
    }

    /// Brings the cap budget of slot `i` to the period of `now`.
    fn replenish(&mut self, i: u32, now: u64) {
        let v = &mut self.slots[i as usize];
        let Some(q) = v.quantum else {
            return;
        };
        let period = now / CAP_PERIOD;
        if period > v.bperiod {
            let n = i64::try_from(period - v.bperiod).unwrap_or(i64::MAX);
            v.budget = v.budget.saturating_add(q.saturating_mul(n)).min(q);
            v.bperiod = period;
        }
    }

    /// Parks runnable slot `i` (not a member of any queue) until the next
    /// cap period.
    fn park(&mut self, i: u32, now: u64) {
        let v = &mut self.slots[i as usize];
        v.state = State::Parked;
        v.park_until = (now / CAP_PERIOD)
            .saturating_add(1)
            .saturating_mul(CAP_PERIOD);
        v.snap = v.home.map_or(0, |h| self.rqs[h as usize].added);
        self.parked.insert((v.park_until, i));
    }

    /// Puts the parked vCPUs whose period has come back on run queues: the
    /// asking pCPU's if it has nothing, else their own.
    fn unpark_due(&mut self, pcpu: u32, now: u64) {
        while let Some(&(t, i)) = self.parked.first() {
            if t > now {
                break;
            }
            self.parked.pop_first();
            self.slots[i as usize].state = State::Blocked;
            self.catch_up(i);
            self.replenish(i, now);
            if self.slots[i as usize].budget <= 0 {
                self.park(i, now);
                continue;
            }
            let q = if self.rqs[pcpu as usize].len == 0 {
                pcpu
            } else {
                self.slots[i as usize].home.unwrap_or(pcpu)
            };
            self.join(q, i);
            self.enqueue(i, q);
        }
    }

    fn is_idle(&self, p: u32) -> bool {
        let rq = &self.rqs[p as usize];
        rq.current.is_none() && rq.len == 0
    }

    /// The queue for a woken vCPU: its home if that pCPU is idle, else an
    /// idle pCPU (searching from the one after home), else its home, else
    /// the least loaded queue.
    fn place(&self, i: u32) -> u32 {
        let n = self.rqs.len() as u32;
        let home = self.slots[i as usize].home;
        if let Some(h) = home
            && self.is_idle(h)
        {
            return h;
        }
        let from = home.map_or(0, |h| h + 1);
        if let Some(p) = (0..n).map(|k| (from + k) % n).find(|&p| self.is_idle(p)) {
            return p;
        }
        if let Some(h) = home {
            return h;
        }
        (0..n)
            .min_by_key(|&p| (self.rqs[p as usize].load, p))
            .unwrap_or(0)
    }

    /// Whether queuing slot `i` (credit absolute) on `q` needs a kick of
    /// `q`'s pCPU: it is idle (or about to pick), or runs a vCPU with
    /// clearly less credit.
    fn kick_target(&self, i: u32, q: u32, now: u64) -> Option<u32> {
        let rq = &self.rqs[q as usize];
        let Some(c) = rq.current else {
            return Some(q);
        };
        let cur = &self.slots[c as usize];
        if cur.removed {
            return Some(q);
        }
        let ran = now.saturating_sub(cur.start);
        let cur_credit = cur
            .credit
            .saturating_sub(burn(ran, cur.weight, rq.max_weight));
        let margin = burn(MIN_SLICE, cur.weight, rq.max_weight);
        (self.slots[i as usize].credit > cur_credit.saturating_add(margin)).then_some(q)
    }

    /// Slot `i` stops running on `pcpu` at `now`.
    fn stop_running(&mut self, i: u32, pcpu: u32, now: u64, runnable: bool) {
        let rq = &mut self.rqs[pcpu as usize];
        rq.current = None;
        let max_weight = rq.max_weight;
        let v = &mut self.slots[i as usize];
        if v.removed {
            v.removed = false;
            self.free_slot(i);
            return;
        }
        let ran = now.saturating_sub(v.start);
        v.credit = v
            .credit
            .saturating_sub(burn(ran, v.weight, max_weight))
            .max(CREDIT_MIN);
        self.replenish(i, now);
        let v = &mut self.slots[i as usize];
        if v.quantum.is_some() {
            v.budget = v
                .budget
                .saturating_sub(i64::try_from(ran).unwrap_or(i64::MAX));
        }
        v.state = State::Blocked;
        if runnable && v.wants {
            if v.quantum.is_some() && v.budget <= 0 {
                self.leave(pcpu, i);
                self.park(i, now);
            } else {
                self.enqueue_as(i, pcpu, true);
            }
        } else {
            self.leave(pcpu, i);
            self.make_blocked(i);
        }
    }

    /// Credit reset of queue `p`, whose best candidate has `best` < 0.
    fn reset(&mut self, p: u32, best: i64) {
        let rq = &mut self.rqs[p as usize];
        let m = 1 + best.unsigned_abs() / CREDIT_INIT as u64;
        let add = i64::try_from(m)
            .unwrap_or(i64::MAX)
            .saturating_mul(CREDIT_INIT);
        rq.bias = rq.bias.saturating_add(add);
        rq.added = rq.added.wrapping_add(add as u64);
        if rq.bias > BIAS_RENORMALIZE {
            let bias = rq.bias;
            let slots = &mut self.slots;
            let mut entries = core::mem::take(&mut rq.heap).into_vec();
            entries.extend(rq.staged.take());
            entries.retain(|e| live(slots, p, e));
            for e in &mut entries {
                let credit = e.stored().saturating_add(bias);
                *e = Entry::new(credit, e.slot(), e.stamp());
                slots[e.slot() as usize].credit = credit;
            }
            rq.heap = BinaryHeap::from(entries);
            rq.stale = 0;
            rq.bias = 0;
        }
    }

    /// Queue `p` is empty: take the best candidate of the most loaded other
    /// queue that has one waiting.
    fn steal(&mut self, p: u32, now: u64) {
        let n = self.rqs.len() as u32;
        let from = (0..n)
            .filter(|&q| q != p && self.rqs[q as usize].len > 0)
            .max_by_key(|&q| (self.rqs[q as usize].load, Reverse(q)));
        if let Some(q) = from
            && let Some((_, i)) = self.peek_best(q)
        {
            self.migrate(i, q, p, now);
        }
    }

    /// Pulls into `p` the vCPU among the best candidates of the most loaded
    /// queue whose weight best evens the two loads, if moving one makes them
    /// more even (and it was not moved recently).
    fn balance(&mut self, p: u32, now: u64) {
        let n = self.rqs.len() as u32;
        let mine = self.rqs[p as usize].load;
        let Some(q) = (0..n)
            .filter(|&q| q != p && self.rqs[q as usize].len > 0)
            .max_by_key(|&q| (self.rqs[q as usize].load, Reverse(q)))
        else {
            return;
        };
        let theirs = self.rqs[q as usize].load;
        if theirs <= mine {
            return;
        }
        let diff = theirs - mine;
        // No single move helps unless some vCPU there weighs less than diff.
        let lightest = self.rqs[q as usize].weights.first_key_value();
        if lightest.is_none_or(|(&w, _)| u64::from(w) >= diff) {
            return;
        }
        let mut best: Option<(u64, u32)> = None;
        // The first entries of the heap array are among the best candidates.
        let candidates = self.rqs[q as usize]
            .heap
            .iter()
            .filter(|e| live(&self.slots, q, e))
            .take(BALANCE_SCAN);
        for e in candidates {
            let i = e.slot();
            let v = &self.slots[i as usize];
            let w = u64::from(v.weight);
            let recent = v
                .moved_at
                .is_some_and(|t| now < t.saturating_add(MIGRATE_RESIST));
            if w >= diff || recent {
                continue;
            }
            let score = diff.abs_diff(2 * w);
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, i));
            }
        }
        if let Some((_, i)) = best {
            self.migrate(i, q, p, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(d: u16, v: u32) -> VcpuKey {
        VcpuKey {
            dom: DomId(d),
            vcpu: v,
        }
    }

    /// Runs pCPU 0 alone for `total` ns of full slices; returns run time per
    /// key in `keys`.
    fn run_one(s: &mut Scheduler, keys: &[VcpuKey], start: u64, total: u64) -> Vec<u64> {
        let mut ran = alloc::vec![0u64; keys.len()];
        let mut now = start;
        while now < start + total {
            let Some((key, slice)) = s.pick(0, now) else {
                now += MIN_SLICE;
                continue;
            };
            now += slice;
            s.descheduled(key, 0, now, true);
            let j = keys.iter().position(|&x| x == key).unwrap();
            ran[j] += slice;
        }
        ran
    }

    #[test]
    fn extreme_weights() {
        let mut s = Scheduler::new(1);
        let (a, b) = (k(1, 0), k(2, 0));
        s.add_vcpu(a, 1, None);
        s.add_vcpu(b, 65535, None);
        s.wake(a, 0);
        s.wake(b, 0);
        let ran = run_one(&mut s, &[a, b], 0, 10_000_000_000);
        // Both run; the heavy one gets nearly everything, the light one is
        // not starved (the carried debt is bounded).
        assert!(ran[0] > 0 && ran[1] > 0, "{ran:?}");
        assert!(ran[1] > 9 * ran[0], "{ran:?}");
    }

    #[test]
    fn equal_weights_share_equally() {
        let mut s = Scheduler::new(1);
        let keys: Vec<_> = (0..3).map(|v| k(1, v)).collect();
        for &key in &keys {
            s.add_vcpu(key, DEFAULT_WEIGHT, None);
            s.wake(key, 0);
        }
        let ran = run_one(&mut s, &keys, 0, 3_000_000_000);
        for r in &ran {
            assert!(r.abs_diff(1_000_000_000) < 20_000_000, "{ran:?}");
        }
    }

    #[test]
    fn bad_input_is_ignored() {
        let mut s = Scheduler::new(2);
        let a = k(1, 0);
        let ghost = k(9, 9);
        assert_eq!(s.wake(ghost, 0), None);
        s.sleep(ghost);
        s.remove_vcpu(ghost);
        s.set_weight(ghost, 5);
        s.descheduled(ghost, 0, 0, true);
        s.descheduled(ghost, 7, 0, true);
        assert_eq!(s.pick(7, 0), None);
        assert_eq!(s.running_on(ghost), None);
        assert!(!s.is_runnable(ghost));
        assert_eq!(s.pick(0, 0), None);

        s.add_vcpu(a, 0, Some(0));
        assert!(!s.is_runnable(a));
        assert_eq!(s.pick(0, 0), None, "a blocked vCPU is never picked");
        // Double wake is idempotent.
        assert_eq!(s.wake(a, 0), Some(0));
        assert_eq!(s.wake(a, 0), None);
        assert_eq!(s.queue_len(0) + s.queue_len(1), 1);
        let (got, _) = s.pick(0, 0).unwrap();
        assert_eq!(got, a);
        assert_eq!(s.pick(1, 0), None, "not handed to two pCPUs");
        // Descheduled with the wrong pCPU or key: ignored.
        s.descheduled(a, 1, 10, true);
        s.descheduled(ghost, 0, 10, true);
        assert_eq!(s.running_on(a), Some(0));
        // Wake while running: no-op.
        assert_eq!(s.wake(a, 5), None);
        // Time going backwards does not panic.
        s.descheduled(a, 0, 0, true);
        assert_eq!(s.running_on(a), None);
        assert!(s.is_runnable(a));
        s.descheduled(a, 0, 1, true);
        s.remove_vcpu(a);
        s.remove_vcpu(a);
        assert_eq!(s.pick(0, 2), None);
        assert_eq!(s.pick(1, 2), None);
        let _ = Scheduler::new(0).pick(0, 0);
    }

    #[test]
    fn sleep_while_running_leaves_at_deschedule() {
        let mut s = Scheduler::new(1);
        let a = k(1, 0);
        s.add_vcpu(a, 256, None);
        s.wake(a, 0);
        assert_eq!(s.pick(0, 0).unwrap().0, a);
        s.sleep(a);
        assert!(!s.is_runnable(a));
        assert_eq!(s.running_on(a), Some(0));
        s.descheduled(a, 0, 100, true);
        assert_eq!(s.pick(0, 100), None);
        assert_eq!(s.wake(a, 200), Some(0));
        assert_eq!(s.pick(0, 200).unwrap().0, a);
    }

    #[test]
    fn remove_running_then_readd() {
        let mut s = Scheduler::new(1);
        let a = k(1, 0);
        s.add_vcpu(a, 256, None);
        s.wake(a, 0);
        assert_eq!(s.pick(0, 0).unwrap().0, a);
        s.remove_vcpu(a);
        assert_eq!(s.running_on(a), None);
        s.add_vcpu(a, 256, None);
        assert_eq!(s.wake(a, 1), Some(0));
        // The old incarnation leaves; the new one runs.
        s.descheduled(a, 0, 2, true);
        assert_eq!(s.pick(0, 2).unwrap().0, a);
        assert_eq!(s.pick(0, 3).unwrap().0, a);
        s.remove_vcpu(a);
        assert_eq!(s.pick(0, 4), None);
    }

    #[test]
    fn cap_alone() {
        let mut s = Scheduler::new(1);
        let a = k(1, 0);
        s.add_vcpu(a, 256, Some(25));
        s.wake(a, 0);
        let mut now = 0;
        let mut ran = 0;
        while now < 1_000_000_000 {
            match s.pick(0, now) {
                Some((key, slice)) => {
                    now += slice;
                    ran += slice;
                    s.descheduled(key, 0, now, true);
                }
                None => now = s.next_event().unwrap(),
            }
        }
        assert!((240_000_000..=251_000_000).contains(&ran), "{ran}");
    }

    #[test]
    fn credit_reset_renormalizes() {
        let mut s = Scheduler::new(1);
        let (a, b) = (k(1, 0), k(1, 1));
        s.add_vcpu(a, 1, None);
        s.add_vcpu(b, 65535, None);
        s.wake(a, 0);
        s.wake(b, 0);
        // Huge jumps of time: no overflow.
        let mut now = 0u64;
        for _ in 0..1000 {
            let (key, _) = s.pick(0, now).unwrap();
            now += 1 << 50;
            s.descheduled(key, 0, now, true);
        }
        assert_eq!(s.queue_len(0), 2);
    }
}

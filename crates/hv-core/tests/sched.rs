//! The scheduler (`hv_core::sched`) under a deterministic discrete-event
//! simulation: N pCPUs on a virtual clock; each pCPU picks, "runs" the vCPU
//! for its slice (less when an IO-like vCPU blocks early or a kick preempts
//! it) and deschedules it; IO-like vCPUs block and are woken on a schedule;
//! kicks returned by `wake` preempt or wake the named pCPU; idle pCPUs sleep
//! until a kick or `next_event`.
//!
//! The driver asserts on every step that a picked vCPU is runnable (never a
//! blocked, offline or removed one), is not running on another pCPU, and
//! that `running_on` agrees.
//!
//! Shares are checked **relatively**: a vCPU's measured share of the total
//! CPU time must be within 2% of its fair share (`|share / fair - 1| <=
//! 0.02`), where fair = weight / total weight of all vCPUs (every vCPU is
//! CPU-bound and there are more than pCPUs, so weight-proportional shares
//! are achievable). That is stricter than 2 percentage points: a weight-1
//! vCPU's fair share is 1/240 of the machine.

use std::collections::{BTreeMap, BTreeSet};

use hv_core::DomId;
use hv_core::sched::{DEFAULT_WEIGHT, Scheduler, VcpuKey};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

fn key(d: u16, v: u32) -> VcpuKey {
    VcpuKey {
        dom: DomId(d),
        vcpu: v,
    }
}

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Always runnable.
    Cpu,
    /// Runs `run` ns of CPU, blocks for `sleep` ns, is woken, and so on.
    Io { run: u64, sleep: u64 },
}

#[derive(Debug)]
struct VSim {
    key: VcpuKey,
    behaviour: Behaviour,
    capped: bool,
    /// Total run time, and run time since `measure_from`.
    ran: u64,
    ran_window: u64,
    /// CPU time left before an IO-like vCPU blocks.
    left: u64,
    /// Blocked (waiting for its wake-up) or put offline by the test.
    blocked: bool,
    offline: bool,
    removed: bool,
    /// Runnable and waiting since.
    since: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    SliceEnd { p: u32, epoch: u64 },
    Timer { p: u32, epoch: u64 },
    Kick(u32),
    Wake(usize),
}

#[derive(Debug, Default)]
struct PSim {
    /// (vcpu index, start).
    running: Option<(usize, u64)>,
    epoch: u64,
    busy: u64,
}

struct Sim {
    s: Scheduler,
    now: u64,
    seq: u64,
    events: BTreeSet<(u64, u64, Ev)>,
    v: Vec<VSim>,
    by_key: BTreeMap<VcpuKey, usize>,
    p: Vec<PSim>,
    hash: u64,
    picks: u64,
    max_wait: u64,
    max_wait_who: Option<VcpuKey>,
    measure_from: u64,
}

impl Sim {
    /// A simulation of `s` (vCPUs already added) with the vCPUs described
    /// by `v`; nothing is woken yet.
    fn new(s: Scheduler, v: Vec<(VcpuKey, Behaviour, bool)>) -> Self {
        let n = s.nr_pcpus() as usize;
        let v: Vec<VSim> = v
            .into_iter()
            .map(|(key, behaviour, capped)| VSim {
                key,
                behaviour,
                capped,
                ran: 0,
                ran_window: 0,
                left: match behaviour {
                    Behaviour::Io { run, .. } => run,
                    Behaviour::Cpu => 0,
                },
                blocked: true,
                offline: false,
                removed: false,
                since: None,
            })
            .collect();
        let by_key = v.iter().enumerate().map(|(i, x)| (x.key, i)).collect();
        Sim {
            s,
            now: 0,
            seq: 0,
            events: BTreeSet::new(),
            v,
            by_key,
            p: (0..n).map(|_| PSim::default()).collect(),
            hash: 0xcbf2_9ce4_8422_2325,
            picks: 0,
            max_wait: 0,
            max_wait_who: None,
            measure_from: 0,
        }
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.events.insert((t, self.seq, ev));
    }

    fn mix(&mut self, x: u64) {
        for b in x.to_le_bytes() {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x100_0000_01b3);
        }
    }

    /// Wakes vCPU `i` now (test or behaviour), queuing the kick.
    fn wake(&mut self, i: usize) {
        let x = &mut self.v[i];
        if x.removed || x.offline {
            return;
        }
        x.blocked = false;
        if x.since.is_none() && self.p.iter().all(|p| p.running.map(|r| r.0) != Some(i)) {
            x.since = Some(self.now);
        }
        if let Some(p) = self.s.wake(x.key, self.now) {
            self.at(self.now, Ev::Kick(p));
        }
    }

    /// All pCPUs pick (as at boot).
    fn start_all(&mut self) {
        for p in 0..self.p.len() as u32 {
            self.dispatch(p);
        }
    }

    fn dispatch(&mut self, p: u32) {
        let now = self.now;
        self.p[p as usize].epoch += 1;
        let epoch = self.p[p as usize].epoch;
        assert!(self.p[p as usize].running.is_none());
        match self.s.pick(p, now) {
            Some((k, slice)) => {
                assert!(slice > 0 && slice <= 10 * MS, "slice {slice}");
                let i = *self.by_key.get(&k).expect("unknown vCPU picked");
                let x = &self.v[i];
                assert!(!x.removed, "removed {k:?} picked");
                assert!(!x.blocked && !x.offline, "blocked {k:?} picked at {now}");
                for (q, ps) in self.p.iter().enumerate() {
                    assert_ne!(ps.running.map(|r| r.0), Some(i), "{k:?} on {q} and {p}");
                }
                assert_eq!(self.s.running_on(k), Some(p));
                if let Some(t) = x.since
                    && !x.capped
                {
                    let w = now - t;
                    if w > self.max_wait {
                        self.max_wait = w;
                        self.max_wait_who = Some(k);
                    }
                }
                let x = &mut self.v[i];
                x.since = None;
                let len = match x.behaviour {
                    Behaviour::Io { .. } => slice.min(x.left),
                    Behaviour::Cpu => slice,
                };
                self.p[p as usize].running = Some((i, now));
                self.picks += 1;
                self.mix(now);
                self.mix(u64::from(p));
                self.mix(u64::from(k.dom.0) << 32 | u64::from(k.vcpu));
                self.mix(slice);
                self.at(now + len, Ev::SliceEnd { p, epoch });
            }
            None => {
                if let Some(t) = self.s.next_event() {
                    self.at(t.max(now), Ev::Timer { p, epoch });
                }
            }
        }
    }

    /// Stops what runs on `p` (slice end, block, or preemption).
    fn stop(&mut self, p: u32) {
        let now = self.now;
        let Some((i, start)) = self.p[p as usize].running.take() else {
            return;
        };
        let dt = now - start;
        self.p[p as usize].busy += dt;
        let from = self.measure_from;
        let x = &mut self.v[i];
        x.ran += dt;
        if now > from {
            x.ran_window += now - start.max(from);
        }
        let k = x.key;
        let mut block = false;
        if let Behaviour::Io { run, sleep } = x.behaviour {
            x.left -= dt;
            if x.left == 0 {
                x.left = run;
                block = true;
                x.blocked = true;
                if !x.removed && !x.offline {
                    self.at(now + sleep, Ev::Wake(i));
                }
            }
        }
        let x = &mut self.v[i];
        if !block && !x.removed && !x.offline {
            x.since = Some(now);
        }
        self.s.descheduled(k, p, now, !block);
        assert_eq!(self.s.running_on(k), None);
        assert_eq!(
            self.s.is_runnable(k),
            !block && !x.removed && !x.offline,
            "{k:?}"
        );
    }

    fn step(&mut self) -> bool {
        let Some((t, _, ev)) = self.events.pop_first() else {
            return false;
        };
        assert!(t >= self.now);
        self.now = t;
        match ev {
            Ev::SliceEnd { p, epoch } => {
                if self.p[p as usize].epoch == epoch {
                    self.stop(p);
                    self.dispatch(p);
                }
            }
            Ev::Timer { p, epoch } => {
                if self.p[p as usize].epoch == epoch && self.p[p as usize].running.is_none() {
                    self.dispatch(p);
                }
            }
            Ev::Kick(p) => {
                self.stop(p);
                self.dispatch(p);
            }
            Ev::Wake(i) => self.wake(i),
        }
        true
    }

    fn run_until(&mut self, t: u64) {
        while self.events.first().is_some_and(|e| e.0 <= t) {
            self.step();
        }
        self.now = t;
    }

    /// Run times since `measure_from`, counting the running slices up to now.
    fn window(&self) -> Vec<u64> {
        let mut r: Vec<u64> = self.v.iter().map(|x| x.ran_window).collect();
        for ps in &self.p {
            if let Some((i, start)) = ps.running {
                r[i] += self.now - start.max(self.measure_from);
            }
        }
        r
    }

    /// Measures shares from now on.
    fn measure(&mut self) {
        self.measure_from = self.now;
        for x in &mut self.v {
            x.ran_window = 0;
        }
    }

    fn remove(&mut self, i: usize) {
        self.v[i].removed = true;
        self.v[i].since = None;
        self.s.remove_vcpu(self.v[i].key);
    }

    fn offline(&mut self, i: usize) {
        self.v[i].offline = true;
        self.v[i].since = None;
        self.s.sleep(self.v[i].key);
        assert!(!self.s.is_runnable(self.v[i].key));
    }

    fn online(&mut self, i: usize) {
        self.v[i].offline = false;
        self.wake(i);
    }
}

/// 64 CPU-bound vCPUs on 4 pCPUs, weights `[1, 2, 4, 8][i % 4] * scale`.
fn weighted(scale: u16) -> Sim {
    let mut s = Scheduler::new(4);
    let mut v = Vec::new();
    for i in 0..64u32 {
        let k = key((i / 8) as u16 + 1, i % 8);
        s.add_vcpu(k, [1, 2, 4, 8][i as usize % 4] * scale, None);
        v.push((k, Behaviour::Cpu, false));
    }
    let mut sim = Sim::new(s, v);
    for i in 0..64 {
        sim.wake(i);
    }
    sim.start_all();
    sim
}

fn check_shares(sim: &Sim, weights: &[u64], window: u64, tol: f64) -> f64 {
    let total_w: u64 = weights.iter().sum();
    let ran = sim.window();
    let capacity = window * sim.p.len() as u64;
    let mut worst: f64 = 0.0;
    for (i, (&r, &w)) in ran.iter().zip(weights).enumerate() {
        let share = r as f64 / capacity as f64;
        let fair = w as f64 / total_w as f64;
        let err = (share / fair - 1.0).abs();
        worst = worst.max(err);
        assert!(
            err <= tol,
            "vCPU {i} (weight {w}): share {share:.5}, fair {fair:.5}, error {:.2}%",
            err * 100.0
        );
    }
    worst
}

#[test]
fn weighted_shares_within_2_percent() {
    for scale in [1u16, 64] {
        let mut sim = weighted(scale);
        let weights: Vec<u64> = (0..64)
            .map(|i| u64::from([1u16, 2, 4, 8][i % 4] * scale))
            .collect();
        sim.run_until(10 * SEC);
        let worst = check_shares(&sim, &weights, 10 * SEC, 0.02);
        // Starvation-free on the way.
        assert!(sim.max_wait <= 200 * MS, "max wait {}", sim.max_wait);
        // Work-conserving: every pCPU busy all the time.
        for ps in &sim.p {
            assert!(ps.busy >= 10 * SEC - 20 * MS, "busy {}", ps.busy);
        }
        eprintln!(
            "scale {scale}: worst relative share error {:.3}% over 10 s, max wait {} us, {} picks",
            worst * 100.0,
            sim.max_wait / 1000,
            sim.picks
        );
        // And over the second half alone (after balancing settled).
        sim.measure();
        sim.run_until(20 * SEC);
        let worst = check_shares(&sim, &weights, 10 * SEC, 0.02);
        eprintln!(
            "scale {scale}: worst relative share error {:.3}% over 10..20 s",
            worst * 100.0
        );
    }
}

/// 48 CPU-bound vCPUs (weights 1:2:4:8 x 64) and 16 IO-like ones on 4
/// pCPUs.
fn mixed(seed: u64) -> Sim {
    let mut s = Scheduler::new(4);
    let mut v = Vec::new();
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..64u32 {
        let k = key((i % 5) as u16, i);
        if i % 4 == 3 {
            let run = 50_000 + next() % 450_000;
            let sleep = 2 * MS + next() % (18 * MS);
            s.add_vcpu(k, DEFAULT_WEIGHT, None);
            v.push((k, Behaviour::Io { run, sleep }, false));
        } else {
            s.add_vcpu(k, [64, 128, 256][i as usize % 3], None);
            v.push((k, Behaviour::Cpu, false));
        }
    }
    let mut sim = Sim::new(s, v);
    for i in 0..64 {
        sim.wake(i);
    }
    sim.start_all();
    sim
}

#[test]
fn no_runnable_vcpu_starves() {
    let mut sim = mixed(0x9e37_79b9_7f4a_7c15);
    sim.run_until(10 * SEC);
    eprintln!(
        "mixed: max wait {} us ({:?}), {} picks",
        sim.max_wait / 1000,
        sim.max_wait_who,
        sim.picks
    );
    assert!(sim.max_wait <= 200 * MS, "max wait {}", sim.max_wait);
    for x in &sim.v {
        assert!(x.ran > 0, "{:?} never ran", x.key);
    }
    // IO-like vCPUs get the CPU they ask for up to about their fair share
    // (weight 256 of the total, on 4 pCPUs: 9.1% of a pCPU).
    let total: u32 = (0..64u32)
        .map(|i| {
            if i % 4 == 3 {
                256
            } else {
                [64, 128, 256][i as usize % 3]
            }
        })
        .sum();
    let fair = 256.0 / f64::from(total) * 4.0;
    for x in &sim.v {
        if let Behaviour::Io { run, sleep } = x.behaviour {
            let duty = run as f64 / (run + sleep) as f64;
            let got = x.ran as f64 / (10 * SEC) as f64;
            eprintln!("{:?}: ran {got:.4} of a pCPU, asked {duty:.4}", x.key);
            assert!(
                got > 0.9 * duty.min(fair),
                "{:?}: {got} of duty {duty}",
                x.key
            );
        }
    }
}

#[test]
fn deterministic_trace() {
    let run = |seed| {
        let mut sim = mixed(seed);
        sim.run_until(3 * SEC);
        (sim.hash, sim.picks, sim.window())
    };
    let a = run(1);
    let b = run(1);
    assert_eq!(a, b);
    assert!(a.1 > 10_000);
    let c = run(2);
    assert_ne!(a.0, c.0);
}

#[test]
fn cap_alone_and_under_contention() {
    // Alone on 4 pCPUs.
    let mut s = Scheduler::new(4);
    let c = key(1, 0);
    s.add_vcpu(c, DEFAULT_WEIGHT, Some(25));
    let mut sim = Sim::new(s, vec![(c, Behaviour::Cpu, true)]);
    sim.wake(0);
    sim.start_all();
    sim.run_until(2 * SEC);
    let share = sim.window()[0] as f64 / (2 * SEC) as f64;
    eprintln!("cap 25% alone: {:.3}%", share * 100.0);
    assert!((0.24..=0.255).contains(&share), "{share}");

    // Heavy and capped among light uncapped ones on 1 pCPU.
    let mut s = Scheduler::new(1);
    let mut v = vec![(c, Behaviour::Cpu, true)];
    s.add_vcpu(c, 8 * DEFAULT_WEIGHT, Some(25));
    for i in 1..4 {
        let k = key(2, i);
        s.add_vcpu(k, DEFAULT_WEIGHT, None);
        v.push((k, Behaviour::Cpu, false));
    }
    let mut sim = Sim::new(s, v);
    for i in 0..4 {
        sim.wake(i);
    }
    sim.start_all();
    sim.run_until(2 * SEC);
    let ran = sim.window();
    let share = ran[0] as f64 / (2 * SEC) as f64;
    eprintln!("cap 25% weight 8 vs 3 x weight 1: {:.3}%", share * 100.0);
    assert!((0.24..=0.255).contains(&share), "{share}");
    for &r in &ran[1..] {
        let s = r as f64 / (2 * SEC) as f64;
        assert!((0.24..0.26).contains(&s), "{s}");
    }
    assert!(sim.max_wait <= 200 * MS);
}

#[test]
fn vcpus_woken_on_one_queue_spread_to_idle_pcpus() {
    let mut s = Scheduler::new(4);
    let hogs: Vec<VcpuKey> = (1..4).map(|i| key(9, i)).collect();
    let workers: Vec<VcpuKey> = (0..16).map(|i| key(1, i)).collect();
    // pCPUs 1..3 run hogs.
    for (n, &h) in hogs.iter().enumerate() {
        let p = n as u32 + 1;
        s.add_vcpu(h, DEFAULT_WEIGHT, None);
        s.wake(h, 0);
        assert_eq!(s.pick(p, 0).map(|x| x.0), Some(h));
    }
    // Every worker runs once on pCPU 0 and blocks: pCPU 0 is their home.
    let mut t = 0;
    for &w in &workers {
        s.add_vcpu(w, DEFAULT_WEIGHT, None);
        assert_eq!(s.wake(w, t), Some(0));
        assert_eq!(s.pick(0, t).map(|x| x.0), Some(w));
        t += 1000;
        s.descheduled(w, 0, t, false);
    }
    // They all wake while pCPUs 1..3 are busy: all on pCPU 0's queue.
    for &w in &workers {
        s.wake(w, t);
        assert_eq!(s.home(w), Some(0));
    }
    assert_eq!(s.queue_len(0), 16);
    // The hogs go away: pCPUs 1..3 become idle and steal, then balance.
    for (n, &h) in hogs.iter().enumerate() {
        s.descheduled(h, n as u32 + 1, t, false);
        s.remove_vcpu(h);
    }
    let v = workers
        .iter()
        .map(|&k| (k, Behaviour::Cpu, false))
        .collect();
    let mut sim = Sim::new(s, v);
    for x in &mut sim.v {
        x.blocked = false;
        x.since = Some(t);
    }
    sim.now = t;
    sim.start_all();
    for p in 1..4 {
        assert!(sim.p[p].running.is_some(), "pCPU {p} stole nothing");
    }
    sim.run_until(t + 100 * MS);
    let loads: Vec<u64> = (0..4).map(|p| sim.s.load(p)).collect();
    eprintln!("loads after 100 ms: {loads:?}");
    assert!(
        loads.iter().all(|&l| l == 4 * u64::from(DEFAULT_WEIGHT)),
        "{loads:?}"
    );
    sim.measure();
    let from = sim.now;
    sim.run_until(from + 2 * SEC);
    let weights = vec![1; 16];
    check_shares(&sim, &weights, 2 * SEC, 0.02);
    for ps in &sim.p {
        assert!(ps.busy > 2 * SEC - 10 * MS);
    }
}

#[test]
fn blocked_offline_and_removed_vcpus_never_run() {
    let mut sim = mixed(7);
    sim.run_until(SEC);
    // Remove some vCPUs wherever they are: running, queued, blocked.
    let running: Vec<usize> = sim
        .p
        .iter()
        .filter_map(|p| p.running.map(|r| r.0))
        .collect();
    assert!(!running.is_empty());
    let mut gone: Vec<usize> = running.clone();
    gone.extend([5, 6, 7, 11, 15]);
    gone.sort();
    gone.dedup();
    for &i in &gone {
        sim.remove(i);
        assert!(!sim.s.is_runnable(sim.v[i].key));
    }
    // Put others offline (some of them running) for a second.
    let off: Vec<usize> = (20..40).filter(|i| !gone.contains(i)).collect();
    for &i in &off {
        sim.offline(i);
    }
    sim.run_until(2 * SEC);
    for &i in &off {
        assert!(!sim.s.is_runnable(sim.v[i].key));
        assert_eq!(sim.s.running_on(sim.v[i].key), None);
        sim.online(i);
    }
    let before: Vec<u64> = sim.v.iter().map(|x| x.ran).collect();
    sim.run_until(4 * SEC);
    for (i, x) in sim.v.iter().enumerate() {
        if gone.contains(&i) {
            assert_eq!(x.ran, before[i], "removed {:?} ran", x.key);
            assert_eq!(sim.s.running_on(x.key), None);
        } else {
            assert!(x.ran > before[i], "{:?} did not run after 2 s", x.key);
        }
    }
    assert!(sim.max_wait <= 200 * MS, "max wait {}", sim.max_wait);
}

#[test]
fn weight_change_takes_effect() {
    let mut s = Scheduler::new(2);
    let mut v = Vec::new();
    for i in 0..8 {
        let k = key(1, i);
        s.add_vcpu(k, DEFAULT_WEIGHT, None);
        v.push((k, Behaviour::Cpu, false));
    }
    let mut sim = Sim::new(s, v);
    for i in 0..8 {
        sim.wake(i);
    }
    sim.start_all();
    sim.run_until(SEC);
    // vCPUs 0..4 now weigh 3x: 3/4 of the machine among them.
    for i in 0..4 {
        sim.s.set_weight(key(1, i), 3 * DEFAULT_WEIGHT);
    }
    sim.measure();
    sim.run_until(6 * SEC);
    let weights = [3, 3, 3, 3, 1, 1, 1, 1];
    let worst = check_shares(&sim, &weights, 5 * SEC, 0.03);
    eprintln!("after set_weight: worst {:.3}%", worst * 100.0);
}

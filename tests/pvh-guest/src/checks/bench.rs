//! `role=bench` and `role=bench-pong`: the guest-side figures of
//! `cargo xtask bench` (xtask/src/figures.rs), run after the checks.
//!
//! Everything is timed with RDTSC. Under QEMU's `-icount shift=0` the TSC
//! follows the virtual clock, one tick per nanosecond, and the virtual clock
//! advances one nanosecond per instruction executed (by any CPU of the
//! machine): ticks are instructions. The guest does not take that on faith:
//! it first times a loop of a known number of instructions
//! ([`CALIB_ITERS`] rounds of `dec; jnz`) and prints both counts, so every
//! figure converts to instructions (`*_insns` below).
//!
//! Lines printed (machine-readable, one `key=value` per figure):
//!
//! ```text
//! BENCH first_tsc=N now_tsc=N              (every run: the TSC at pvh_start, and now)
//! BENCH calibration insns=N tsc_ticks=N    (before and after the hypercalls)
//! BENCH hypercall n=N mean_ticks=N mean_insns=N min_ticks=N total_ticks=N
//! BENCH loopback n=N ports=A,B send_deliver_ticks=N send_deliver_insns=N
//! BENCH event n=N roundtrip_ticks=N roundtrip_insns=N send_deliver_insns=N
//! BENCH vcpu n=N roundtrip_ticks=N roundtrip_insns=N send_deliver_insns=N
//! ```
//!
//! With a second vCPU (`vcpus=2` on us, `dom0_max_vcpus=2` on Xen), the
//! checks start it with `VCPUOP_initialise` and `VCPUOP_up` (check
//! `vcpu_up`, [`start_vcpu1`]) and `role=bench` times event round trips
//! between the two vCPUs:
//! vCPU 0 sends on an IPI port bound to vCPU 1, which waits in
//! `SCHEDOP_poll`, clears it and answers on a port bound to vCPU 0. The
//! figure Xen's dom0 can give for events between two parties.
//!
//! `role=bench [peer=N] [calls=N]` measures [`HYPERCALLS`] (or `calls=`)
//! `xen_version(XENVER_version)`
//! calls and, with a peer, [`ROUNDS`] event round trips: it binds to the
//! port its peer offers (as `role=ping` does), sends, and waits with
//! `SCHEDOP_poll` until the answer is pending. `role=bench-pong [peer=N]`
//! offers the port and answers every event. Both keep the port masked, so
//! no upcall runs: the figure is the hypercall, the hypervisor's delivery
//! and the peer's wake-up.

use super::*;

/// Rounds of the calibration loop (two instructions each).
pub const CALIB_ITERS: u64 = 1_000_000;
/// `xen_version` calls timed.
pub const HYPERCALLS: u64 = 1000;
/// Event round trips timed.
pub const ROUNDS: u32 = 1000;
/// Untimed round trips first (caches, the peer's first wake-up).
const WARMUP: u32 = 10;
/// How long bench waits (virtual time) before it measures, so that the
/// peer has finished its own checks and sleeps: under icount every CPU's
/// instructions advance the clock.
const QUIET_NS: u64 = 200_000_000;
/// The longest any wait may last, in system time.
const WAIT_NS: u64 = 120_000_000_000;

/// The TSC ticks of `2 * CALIB_ITERS` instructions.
pub(super) fn calibrate() -> u64 {
    let t0 = events::rdtsc();
    // SAFETY: a register-only countdown loop.
    unsafe {
        core::arch::asm!(
            "2:",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) CALIB_ITERS => _,
            options(nomem, nostack),
        );
    }
    events::rdtsc() - t0
}

/// `ticks` as instructions, by the calibration (`calib` ticks for
/// `2 * CALIB_ITERS` instructions).
pub(super) fn insns(ticks: u64, calib: u64) -> u64 {
    (u128::from(ticks) * u128::from(2 * CALIB_ITERS) / u128::from(calib.max(1))) as u64
}

/// Sleeps `ns` of system time with `SCHEDOP_poll` on a port that stays quiet.
fn quiet(ctx: &mut Ctx, port: u32, ns: u64) {
    if let Some(now) = now_ns(ctx) {
        let _ = ctx.hc.sched_poll(&[port], now + ns);
    }
}

/// Waits until `port` is pending (clears it), polling until `deadline`.
fn await_event(ctx: &Ctx, port: u32, deadline: u64) -> Result<bool, Why> {
    loop {
        if events::is_pending(port) {
            events::clear_pending(port);
            return Ok(true);
        }
        if let Err(e) = ctx.hc.sched_poll(&[port], deadline) {
            fail!("SCHEDOP_poll: {e}");
        }
        if !events::is_pending(port) && now_ns(ctx).is_none_or(|n| n >= deadline) {
            return Ok(false);
        }
    }
}

/// `role=bench` (`calls`: `xen_version` calls timed, default
/// [`HYPERCALLS`]).
pub(super) fn bench<W: Write>(
    r: &mut Report<W>,
    ctx: &mut Ctx,
    peer: Option<u16>,
    calls: Option<u64>,
) -> Outcome {
    let calls = calls.unwrap_or(HYPERCALLS);
    if let Some(p) = ctx.ipi_port {
        events::mask(p);
        events::clear_pending(p);
        quiet(ctx, p, QUIET_NS);
    }
    let calib = calibrate();
    r.note(format_args!(
        "BENCH calibration insns={} tsc_ticks={calib}",
        2 * CALIB_ITERS
    ));
    let t0 = events::rdtsc();
    for i in 0..calls {
        if let Err(e) = ctx.hc.xen_version() {
            fail!("XENVER_version call {i}: {e}");
        }
    }
    let total = events::rdtsc() - t0;
    let mut min = u64::MAX;
    for _ in 0..HYPERCALLS {
        let a = events::rdtsc();
        let _ = ctx.hc.xen_version();
        min = min.min(events::rdtsc() - a);
    }
    let calib2 = calibrate();
    r.note(format_args!(
        "BENCH calibration insns={} tsc_ticks={calib2}",
        2 * CALIB_ITERS
    ));
    let mean = total / calls;
    r.note(format_args!(
        "BENCH hypercall n={calls} mean_ticks={mean} mean_insns={} min_ticks={min} total_ticks={total}",
        insns(total, calib) / calls
    ));
    loopback_bench(r, ctx, calib)?;
    if let Some(ports) = ctx.ap_ports {
        vcpu_bench(r, ctx, ports, calib)?;
    }
    match peer {
        Some(peer) => event_bench(r, ctx, peer, calib),
        None => Ok(()),
    }
}

/// What vCPU 1 needs: its stack, its two ports, and flags.
struct Ap {
    /// The port vCPU 1 waits on, and the one it answers on.
    ports: core::sync::atomic::AtomicU64,
    /// Set by vCPU 1 once it runs.
    ready: core::sync::atomic::AtomicBool,
    /// How to call the hypervisor (copied from the boot vCPU).
    hc: core::cell::UnsafeCell<Option<Hypercall>>,
}

// SAFETY: `hc` is written by the boot vCPU before `VCPUOP_up` and only
// read by vCPU 1 after it; the other fields are atomics.
unsafe impl Sync for Ap {}

static AP: Ap = Ap {
    ports: core::sync::atomic::AtomicU64::new(0),
    ready: core::sync::atomic::AtomicBool::new(false),
    hc: core::cell::UnsafeCell::new(None),
};

/// vCPU 1's stack.
const AP_STACK_SIZE: usize = 16 * 1024;
#[repr(C, align(16))]
struct ApStack(core::cell::UnsafeCell<[u8; AP_STACK_SIZE]>);
// SAFETY: only vCPU 1 uses it, as its stack.
unsafe impl Sync for ApStack {}
static AP_STACK: ApStack = ApStack(core::cell::UnsafeCell::new([0; AP_STACK_SIZE]));

/// vCPU 1's first instruction (RSP = the top of [`AP_STACK`] less 8, as
/// after a call): answers every event on its port, forever.
extern "C" fn ap_entry() -> ! {
    use core::sync::atomic::Ordering::SeqCst;
    cpu::init_ap();
    // SAFETY: written before VCPUOP_up, never again (see `Ap`).
    let hc = unsafe { *AP.hc.get() };
    let ports = AP.ports.load(SeqCst);
    let (wait, answer) = (ports as u32, (ports >> 32) as u32);
    AP.ready.store(true, SeqCst);
    let Some(hc) = hc else {
        loop {
            core::hint::spin_loop();
        }
    };
    loop {
        if events::is_pending(wait) {
            events::clear_pending(wait);
            let _ = hc.evtchn_send(answer);
        } else {
            let _ = hc.sched_poll(&[wait], 0);
        }
    }
}

fn read_cr(n: u8) -> u64 {
    let v: u64;
    // SAFETY: reading a control register at CPL 0 has no side effect.
    unsafe {
        match n {
            0 => core::arch::asm!("mov {}, cr0", out(reg) v, options(nomem, nostack)),
            3 => core::arch::asm!("mov {}, cr3", out(reg) v, options(nomem, nostack)),
            _ => core::arch::asm!("mov {}, cr4", out(reg) v, options(nomem, nostack)),
        }
    }
    v
}

fn read_efer() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: EFER exists on every 64-bit CPU; reading it changes nothing.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") 0xC000_0080u32, out("eax") lo, out("edx") hi,
            options(nomem, nostack));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Waits for vCPU 1's answer on `answer` after a send on `wait`.
fn ap_round(ctx: &Ctx, (wait, answer): (u32, u32), deadline: u64, i: u32) -> Outcome {
    if let Err(e) = ctx.hc.evtchn_send(wait) {
        fail!("EVTCHNOP_send({wait}) round {i}: {e}");
    }
    if !await_event(ctx, answer, deadline)? {
        fail!("no answer from vCPU 1 in round {i}");
    }
    Ok(())
}

/// Check `vcpu_up`: starts vCPU 1 in 64-bit mode on our page tables
/// (`VCPUOP_initialise` with a `vcpu_hvm_context`, then `VCPUOP_up`), sees
/// it run and `VCPUOP_is_up` change, and exchanges one event with it (an
/// IPI port bound to each vCPU, both masked; vCPU 1 waits in
/// `SCHEDOP_poll` and answers, for ever).
pub(super) fn start_vcpu1(ctx: &mut Ctx) -> Outcome {
    use core::sync::atomic::Ordering::SeqCst;
    use xen_abi::vcpu::{VCPUOP_initialise, VCPUOP_up, VcpuHvmContext, VcpuHvmX86_64};
    if ctx.hc.vcpu_is_up(1) != Ok(false) {
        fail!("vCPU 1 is up before VCPUOP_up");
    }
    let wait = match ctx.hc.evtchn_bind_ipi(1) {
        Ok(p) => p,
        Err(e) => fail!("EVTCHNOP_bind_ipi(vcpu 1): {e}"),
    };
    let answer = match ctx.hc.evtchn_bind_ipi(0) {
        Ok(p) => p,
        Err(e) => fail!("EVTCHNOP_bind_ipi(vcpu 0): {e}"),
    };
    for p in [wait, answer] {
        events::mask(p);
        events::clear_pending(p);
    }
    AP.ports
        .store(u64::from(wait) | (u64::from(answer) << 32), SeqCst);
    // SAFETY: vCPU 1 is down; it reads this only after VCPUOP_up.
    unsafe { *AP.hc.get() = Some(ctx.hc) };
    let top = AP_STACK.0.get() as u64 + AP_STACK_SIZE as u64;
    let mut c = VcpuHvmContext::new_64(VcpuHvmX86_64 {
        rip: ap_entry as *const () as u64,
        rsp: top - 8,
        rflags: 0x2,
        cr0: read_cr(0),
        cr3: read_cr(3),
        cr4: read_cr(4),
        efer: read_efer(),
        ..Default::default()
    });
    // VCPUOP_up before VCPUOP_initialise: -EINVAL on Xen and on us.
    // SAFETY: no argument structure.
    match unsafe { ctx.hc.vcpu_op(VCPUOP_up, 1, core::ptr::null_mut()) } {
        Err(e) if e.get() == xen_abi::errno::EINVAL => {}
        other => fail!("VCPUOP_up(1) before VCPUOP_initialise: {other:?}, want -EINVAL"),
    }
    // SAFETY: the context is read during the call only.
    if let Err(e) = unsafe { ctx.hc.vcpu_op(VCPUOP_initialise, 1, (&raw mut c).cast()) } {
        fail!("VCPUOP_initialise(1): {e}");
    }
    // SAFETY: no argument structure.
    if let Err(e) = unsafe { ctx.hc.vcpu_op(VCPUOP_up, 1, core::ptr::null_mut()) } {
        fail!("VCPUOP_up(1): {e}");
    }
    let Some(now) = now_ns(ctx) else {
        fail!("no system time");
    };
    let deadline = now + WAIT_NS;
    while !AP.ready.load(SeqCst) {
        if now_ns(ctx).is_none_or(|n| n >= deadline) {
            fail!("vCPU 1 did not run after VCPUOP_up");
        }
        let _ = ctx.hc.sched_yield();
    }
    if ctx.hc.vcpu_is_up(1) != Ok(true) {
        fail!("VCPUOP_is_up(1) is not 1 with vCPU 1 running");
    }
    // SAFETY: the context is read during the call only.
    match unsafe { ctx.hc.vcpu_op(VCPUOP_initialise, 1, (&raw mut c).cast()) } {
        Err(e) if e.get() == xen_abi::errno::EEXIST => {}
        other => fail!("VCPUOP_initialise(1) of a running vCPU: {other:?}, want -EEXIST"),
    }
    ap_round(ctx, (wait, answer), deadline, 0)?;
    ctx.ap_ports = Some((wait, answer));
    Ok(())
}

/// Event round trips with vCPU 1 (started by [`start_vcpu1`]).
fn vcpu_bench<W: Write>(
    r: &mut Report<W>,
    ctx: &mut Ctx,
    ports: (u32, u32),
    calib: u64,
) -> Outcome {
    let Some(now) = now_ns(ctx) else {
        fail!("no system time");
    };
    let deadline = now + WAIT_NS;
    let mut t0 = 0;
    for i in 0..WARMUP + ROUNDS {
        if i == WARMUP {
            t0 = events::rdtsc();
        }
        ap_round(ctx, ports, deadline, i)?;
    }
    let total = events::rdtsc() - t0;
    let rt = insns(total, calib) / u64::from(ROUNDS);
    r.note(format_args!(
        "BENCH vcpu n={ROUNDS} roundtrip_ticks={} roundtrip_insns={rt} send_deliver_insns={}",
        total / u64::from(ROUNDS),
        rt / 2
    ));
    Ok(())
}

/// Event send + deliver within this domain, on one vCPU: an interdomain
/// channel whose two ends are both ours (`EVTCHNOP_alloc_unbound` with
/// ourselves as the remote, then `EVTCHNOP_bind_interdomain` to it), as
/// Xen allows. Each round sends on one end and finds the other pending;
/// both stay masked, so no upcall runs. This is the event figure a domain
/// alone can measure (Xen's dom0, with no second domain to talk to): the
/// hypercall and the hypervisor's delivery, without a wake-up.
fn loopback_bench<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, calib: u64) -> Outcome {
    let a = match ctx.hc.evtchn_alloc_unbound(DOMID_SELF) {
        Ok(p) => p,
        Err(e) => fail!("EVTCHNOP_alloc_unbound(remote self): {e}"),
    };
    events::mask(a);
    let b = match ctx.hc.evtchn_bind_interdomain(DOMID_SELF, a) {
        Ok(p) => p,
        Err(e) => fail!("EVTCHNOP_bind_interdomain(self, {a}): {e}"),
    };
    events::mask(b);
    events::clear_pending(a);
    events::clear_pending(b);
    let mut t0 = 0;
    for i in 0..WARMUP + ROUNDS {
        if i == WARMUP {
            t0 = events::rdtsc();
        }
        if let Err(e) = ctx.hc.evtchn_send(a) {
            fail!("EVTCHNOP_send({a}) round {i}: {e}");
        }
        if !events::is_pending(b) {
            fail!("loopback round {i}: port {b} not pending after the send on {a}");
        }
        events::clear_pending(b);
    }
    let total = events::rdtsc() - t0;
    r.note(format_args!(
        "BENCH loopback n={ROUNDS} ports={a},{b} send_deliver_ticks={} send_deliver_insns={}",
        total / u64::from(ROUNDS),
        insns(total, calib) / u64::from(ROUNDS)
    ));
    let _ = ctx.hc.evtchn_close(b);
    let _ = ctx.hc.evtchn_close(a);
    Ok(())
}

fn event_bench<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, peer: u16, calib: u64) -> Outcome {
    let mut bound = None;
    'scan: for _ in 0..2000 {
        for p in 1..=PING_SCAN_PORTS {
            if let Ok(local) = ctx.hc.evtchn_bind_interdomain(peer, p) {
                bound = Some((local, p));
                break 'scan;
            }
        }
        let _ = ctx.hc.sched_yield();
    }
    let Some((port, remote)) = bound else {
        fail!("d{peer} offers no unbound port to us among ports 1..={PING_SCAN_PORTS}");
    };
    events::mask(port);
    events::clear_pending(port);
    r.note(format_args!(
        "bench: port {port} bound to d{peer} port {remote}"
    ));
    let Some(now) = now_ns(ctx) else {
        fail!("no system time");
    };
    let deadline = now + WAIT_NS;
    let mut t0 = 0;
    for i in 0..WARMUP + ROUNDS {
        if i == WARMUP {
            t0 = events::rdtsc();
        }
        if let Err(e) = ctx.hc.evtchn_send(port) {
            fail!("EVTCHNOP_send({port}) round {i}: {e}");
        }
        if !await_event(ctx, port, deadline)? {
            fail!("no answer from d{peer} in round {i}");
        }
    }
    let total = events::rdtsc() - t0;
    let rt = insns(total, calib) / u64::from(ROUNDS);
    r.note(format_args!(
        "BENCH event n={ROUNDS} roundtrip_ticks={} roundtrip_insns={rt} send_deliver_insns={}",
        total / u64::from(ROUNDS),
        rt / 2
    ));
    let _ = ctx.hc.evtchn_close(port);
    Ok(())
}

/// `role=bench-pong`: answers every event on the offered `port`.
pub(super) fn bench_pong<W: Write>(
    r: &mut Report<W>,
    ctx: &mut Ctx,
    peer: u16,
    port: u32,
) -> Outcome {
    r.note(format_args!("bench-pong: port {port} offered to d{peer}"));
    events::mask(port);
    let mut deadline = 0;
    for i in 0..WARMUP + ROUNDS {
        // The first event waits for the peer's checks and its quiet time;
        // the deadline is read again after it, then stays out of the loop.
        if i <= 1 {
            let Some(now) = now_ns(ctx) else {
                fail!("no system time");
            };
            deadline = now + WAIT_NS;
        }
        if !await_event(ctx, port, deadline)? {
            fail!("no event from d{peer} in round {i}");
        }
        if let Err(e) = ctx.hc.evtchn_send(port) {
            fail!("EVTCHNOP_send({port}) round {i}: {e}");
        }
    }
    r.note(format_args!(
        "bench-pong: answered {} events",
        WARMUP + ROUNDS
    ));
    Ok(())
}

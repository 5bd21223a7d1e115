//! Stopping the machine on a hypervisor fault (an exception or a panic),
//! with a report that is readable even while other CPUs were printing.
//!
//! The order:
//! 1. **Claim.** The first CPU to fault becomes the reporter (`STOPPER`,
//!    one compare-and-swap). A CPU that faults while another reports parks
//!    itself; a fault inside the reporter's own report ends the run at once
//!    without printing more.
//! 2. **Stop the others.** The reporter sends an NMI to all CPUs but
//!    itself. Each parks in the NMI handler ([`park`]: marks itself in
//!    `PARKED` and counts itself in `PARKED_COUNT`, which also counts an AP
//!    caught between claiming its start-up slot and getting its index;
//!    then `cli; hlt` forever, with NMIs blocked because the
//!    handler never returns). A CPU in a guest takes the NMI as an exit
//!    first (SVM holds it until `stgi`, then the host handler runs; VMX
//!    consumes it in the exit, so `run::cpu_loop` also parks when it sees
//!    [`stopping`]). The reporter waits for them, boundedly (100 ms).
//! 3. **Print whole lines.** The report takes the console lock normally
//!    (`console::lock_for_report`). If the holder is parked or is the
//!    reporter itself (it faulted mid-line) it will never finish its line:
//!    the lock is taken over at once and a newline ends the torn line. If
//!    the holder neither parked nor released the lock within the bounded
//!    wait (200 ms: it died holding it, or never got the NMI), the lock is
//!    taken over anyway: a torn line is better than no report.
//! 4. The report is printed under that one lock, then `machine::stop`.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

use crate::console::ReportConsole;
use crate::cpu::this_cpu;

/// Index + 1 of the CPU reporting a fault; 0 while the machine runs.
static STOPPER: AtomicU32 = AtomicU32::new(0);
/// CPUs parked by the stop (bit = CPU index), for the console rule.
static PARKED: AtomicU64 = AtomicU64::new(0);
/// How many CPUs parked, counting an AP caught by the stop before it had
/// its index (between claiming its start-up slot and `set_index`), which
/// has no bit in `PARKED`.
static PARKED_COUNT: AtomicU32 = AtomicU32::new(0);

/// How long the reporter waits for the other CPUs to park.
const PARK_WAIT_NS: u64 = 100_000_000;
/// How long it waits for a console holder that did not park.
const CONSOLE_WAIT_NS: u64 = 200_000_000;

/// Whether a CPU is stopping the machine (the others should park).
pub fn stopping() -> bool {
    STOPPER.load(SeqCst) != 0
}

/// Whether `cpu` has parked.
fn parked(cpu: u32) -> bool {
    cpu < 64 && PARKED.load(SeqCst) & (1 << cpu) != 0
}

/// TSC ticks in `ns`, assuming 1 GHz before the TSC is calibrated.
fn ticks(ns: u64) -> u64 {
    let hz = crate::platform::tsc_hz();
    let hz = if hz <= 1 { 1_000_000_000 } else { hz };
    ((u128::from(ns) * u128::from(hz)) / 1_000_000_000) as u64
}

/// Parks the calling CPU for good, telling the reporter it did.
pub fn park() -> ! {
    let me = this_cpu();
    if me < 64 {
        PARKED.fetch_or(1 << me, SeqCst);
    }
    PARKED_COUNT.fetch_add(1, SeqCst);
    crate::machine::halt_forever()
}

/// Whether an NMI is the stop request (then the caller parks).
pub fn is_stop_nmi() -> bool {
    let s = STOPPER.load(SeqCst);
    s != 0 && s != this_cpu() + 1
}

/// Starts a fatal report: claims the stop (or parks, or ends the run, see
/// the module doc), stops the other CPUs and returns the console for the
/// report's lines.
pub fn begin() -> ReportConsole {
    let me = this_cpu();
    match STOPPER.compare_exchange(0, me + 1, SeqCst, SeqCst) {
        Ok(_) => {}
        // A fault while printing our own report: the console may be in any
        // state, so stop without another word.
        Err(s) if s == me + 1 => crate::machine::exit(false),
        // Another CPU is reporting and stops us anyway.
        Err(_) => park(),
    }
    let others = crate::smp::cpus_running().saturating_sub(1);
    if others > 0
        && let Some(apic) = crate::platform::HOST_APIC.get()
    {
        apic.send_nmi_all_but_self();
        let start = crate::platform::rdtsc();
        let wait = ticks(PARK_WAIT_NS);
        while PARKED_COUNT.load(SeqCst) < others
            && crate::platform::rdtsc().wrapping_sub(start) < wait
        {
            core::hint::spin_loop();
        }
    }
    let mut c = crate::console::lock_for_report(me, parked, ticks(CONSOLE_WAIT_NS));
    c.line(format_args!(
        "(XEN) FATAL on CPU{me}: other CPUs parked: {}/{others}",
        PARKED_COUNT.load(SeqCst)
    ));
    c
}

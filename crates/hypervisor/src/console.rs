//! The hypervisor console: the serial line behind a lock, and the `log`
//! facade on top of it. Lines are prefixed with `(XEN)` as Xen's are, so
//! that guests' output (prefixed by their domain) stands apart.
//!
//! A CPU that holds hv-core's lock does not write to the UART (slow port
//! I/O that would stall every other CPU's exits): between
//! [`enter_quiet`] and [`leave_quiet`] (the run loop's lock guard) its
//! output goes into a queue, written out when it lets go of the lock.
//! Output from CPUs not holding it drains the queue first, so lines keep
//! their order. Lock order: `QUEUE` before `CONSOLE`; the fatal report
//! takes `CONSOLE` alone.

use crate::hostplat::MAX_CPUS;
use crate::serial::{COM1, Uart};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use log::{LevelFilter, Log, Metadata, Record};
use spin::{Mutex, MutexGuard};

/// The UART. Every writer holds the lock for whole lines (one `println!`
/// is one lock hold), so lines from different CPUs never interleave.
static CONSOLE: Mutex<Option<Uart>> = Mutex::new(None);
/// Index + 1 of the CPU holding `CONSOLE` (set right after taking it,
/// cleared right before releasing it), 0 otherwise: lets the fatal path see
/// whether the holder is a CPU that will never finish its line.
static HOLDER: AtomicU32 = AtomicU32::new(0);

/// Output queued while its CPU held hv-core's lock.
struct Queue {
    buf: [u8; QUEUE_BYTES],
    len: usize,
}

/// Bytes the queue holds before it is written out even under the lock.
const QUEUE_BYTES: usize = 16 * 1024;

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    buf: [0; QUEUE_BYTES],
    len: 0,
});

/// Per CPU: it holds hv-core's lock, so its output is queued.
static QUIET: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

fn quiet() -> bool {
    QUIET
        .get(crate::cpu::this_cpu() as usize)
        .is_some_and(|q| q.load(SeqCst))
}

/// This CPU now holds hv-core's lock: queue its output.
pub fn enter_quiet() {
    if let Some(q) = QUIET.get(crate::cpu::this_cpu() as usize) {
        q.store(true, SeqCst);
    }
}

/// This CPU let go of hv-core's lock: write out what is queued.
pub fn leave_quiet() {
    if let Some(q) = QUIET.get(crate::cpu::this_cpu() as usize) {
        q.store(false, SeqCst);
    }
    flush();
}

/// Writes out the queue.
pub fn flush() {
    let mut q = QUEUE.lock();
    if q.len == 0 {
        return;
    }
    let h = Held::take();
    write_queue(&mut q, h);
}

/// Writes `q` to the UART and empties it (`QUEUE` is held: order).
fn write_queue(q: &mut Queue, mut h: Held) {
    if let Some(uart) = h.0.as_mut() {
        uart.put_text(&q.buf[..q.len]);
    }
    q.len = 0;
}

impl Write for Queue {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if self.len == QUEUE_BYTES {
                // Full: out it goes, even under the lock (rare: 16 KiB of
                // output within one lock hold).
                write_queue(self, Held::take());
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// The console lock, with its holder recorded.
struct Held(MutexGuard<'static, Option<Uart>>);

impl Held {
    fn take() -> Self {
        let g = CONSOLE.lock();
        HOLDER.store(crate::cpu::this_cpu() + 1, SeqCst);
        Self(g)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HOLDER.store(0, SeqCst);
    }
}

/// Brings up COM1; before this, output is dropped.
pub fn init() {
    // SAFETY: COM1 is the PC's first UART (duty 1) and this is the only place
    // that creates a `Uart` for it, stored behind the console lock (duty 2).
    let uart = unsafe { Uart::init(COM1) };
    *Held::take().0 = Some(uart);
}

/// Writes formatted text to the console: queued while this CPU holds
/// hv-core's lock, else written at once after what is queued.
pub fn write_fmt(args: core::fmt::Arguments<'_>) {
    let mut q = QUEUE.lock();
    if quiet() {
        let _ = q.write_fmt(args);
        return;
    }
    let mut h = Held::take();
    if q.len > 0 {
        if let Some(uart) = h.0.as_mut() {
            uart.put_text(&q.buf[..q.len]);
        }
        q.len = 0;
    }
    drop(q);
    if let Some(uart) = h.0.as_mut() {
        let _ = uart.write_fmt(args);
    }
}

/// A byte typed on the serial line, if any (never waits for the lock).
pub fn read_byte() -> Option<u8> {
    CONSOLE.try_lock()?.as_mut()?.get()
}

/// Writes out the queue and waits until the console has sent everything.
pub fn drain() {
    flush();
    if let Some(uart) = Held::take().0.as_mut() {
        uart.drain();
    }
}

/// The console held for a fatal report (see `fatal.rs`): whole lines under
/// one lock hold.
pub struct ReportConsole(Held);

impl ReportConsole {
    /// Writes out what was queued before the fault, if the queue is free
    /// (`try_lock`: its holder may be the CPU that died).
    fn queued(&mut self) {
        if let Some(mut q) = QUEUE.try_lock()
            && let Some(uart) = self.0.0.as_mut()
        {
            uart.put_text(&q.buf[..q.len]);
            q.len = 0;
        }
    }

    /// Writes one line (a newline is added).
    pub fn line(&mut self, args: core::fmt::Arguments<'_>) {
        if let Some(uart) = self.0.0.as_mut() {
            let _ = uart.write_fmt(format_args!("{args}\n"));
        }
    }
}

/// Takes the console for CPU `me`'s fatal report. Waits for the holder to
/// finish its line, except when the holder will never run again: `me`
/// itself (it faulted mid-line) or a CPU for which `parked` says so. A
/// holder that neither releases nor parks within `wait_ticks` TSC ticks is
/// taken to have died holding the lock, and the lock is taken over. After
/// a take-over a newline ends the holder's torn line.
pub fn lock_for_report(me: u32, parked: impl Fn(u32) -> bool, wait_ticks: u64) -> ReportConsole {
    let start = crate::platform::rdtsc();
    loop {
        if let Some(g) = CONSOLE.try_lock() {
            HOLDER.store(me + 1, SeqCst);
            let mut c = ReportConsole(Held(g));
            c.queued();
            return c;
        }
        let h = HOLDER.load(SeqCst);
        let gone = h != 0 && (h == me + 1 || parked(h - 1));
        if gone || crate::platform::rdtsc().wrapping_sub(start) > wait_ticks {
            // SAFETY: `force_unlock` is unsafe because the holder may still
            // be inside its critical section. Here the holder never runs
            // again (it is parked with interrupts and NMIs blocked, or it is
            // this CPU, interrupted by the fault), or it did not let go
            // within the bounded wait, so it is taken to be dead: the machine
            // stops after this report, and a torn line is better than a
            // deadlocked console. The UART state behind the lock is only an
            // I/O base, so no invariant breaks.
            unsafe { CONSOLE.force_unlock() };
            if let Some(g) = CONSOLE.try_lock() {
                HOLDER.store(me + 1, SeqCst);
                let mut c = ReportConsole(Held(g));
                c.line(format_args!(""));
                return c;
            }
        }
        core::hint::spin_loop();
    }
}

struct Logger;

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record<'_>) {
        if self.enabled(r.metadata()) {
            write_fmt(format_args!("(XEN) [{}] {}\n", r.level(), r.args()));
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Installs the logger at `level`.
pub fn init_log(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// `print!` to the hypervisor console.
#[macro_export]
macro_rules! print {
    ($($t:tt)*) => { $crate::console::write_fmt(format_args!($($t)*)) };
}

/// `println!` to the hypervisor console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($t:tt)*) => { $crate::console::write_fmt(format_args!("{}\n", format_args!($($t)*))) };
}

//! The hypervisor console: the serial line behind a lock, and the `log`
//! facade on top of it. Lines are prefixed with `(XEN)` as Xen's are, so
//! that guests' output (prefixed by their domain) stands apart.

use crate::serial::{COM1, Uart};
use core::fmt::Write;
use log::{LevelFilter, Log, Metadata, Record};
use spin::Mutex;

static CONSOLE: Mutex<Option<Uart>> = Mutex::new(None);

/// Brings up COM1; before this, output is dropped.
pub fn init() {
    // SAFETY: COM1 is the PC's first UART (duty 1) and this is the only place
    // that creates a `Uart` for it, stored behind the console lock (duty 2).
    let uart = unsafe { Uart::init(COM1) };
    *CONSOLE.lock() = Some(uart);
}

/// Writes formatted text to the console.
pub fn write_fmt(args: core::fmt::Arguments<'_>) {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        let _ = uart.write_fmt(args);
    }
}

/// A byte typed on the serial line, if any (never waits for the lock).
pub fn read_byte() -> Option<u8> {
    CONSOLE.try_lock()?.as_mut()?.get()
}

/// Waits until the console has sent everything.
pub fn drain() {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        uart.drain();
    }
}

/// Takes the console lock by force: for the panic path only, where the
/// panicking CPU may have held it.
pub fn force_unlock() {
    // SAFETY: `force_unlock` is unsafe because a holder may still be inside
    // its critical section. This runs only on the panic path, after which the
    // machine stops; a torn line is better than a deadlocked console. The
    // UART state behind the lock is only an I/O base, so no invariant breaks.
    unsafe { CONSOLE.force_unlock() }
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

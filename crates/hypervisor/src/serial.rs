//! The 16550 UART console on COM1 (I/O port 0x3F8), polled, 115200 8N1.

use x86::io::{inb, outb};

/// COM1's base I/O port.
pub const COM1: u16 = 0x3f8;

const DATA: u16 = 0;
const INT_ENABLE: u16 = 1;
const FIFO_CTRL: u16 = 2;
const LINE_CTRL: u16 = 3;
const MODEM_CTRL: u16 = 4;
const LINE_STATUS: u16 = 5;
/// LSR: transmit holding register empty.
const LSR_THRE: u8 = 1 << 5;
/// LSR: transmitter empty (holding and shift registers).
const LSR_TEMT: u8 = 1 << 6;

/// A polled 16550 UART.
pub struct Uart {
    base: u16,
}

impl Uart {
    /// Programs the UART at `base`: no interrupts, 115200 baud, 8N1, FIFOs on.
    ///
    /// # Safety
    /// 1. `base` must be the I/O base of a 16550-compatible UART (or of
    ///    nothing: writes to absent ports are ignored by the chipset).
    /// 2. No other code may drive the same UART concurrently.
    pub unsafe fn init(base: u16) -> Self {
        // SAFETY: duty 1 says these ports belong to the UART; duty 2 that we
        // are its only user. Port writes have no memory effects.
        unsafe {
            outb(base + INT_ENABLE, 0x00);
            outb(base + LINE_CTRL, 0x80); // DLAB on
            outb(base + DATA, 0x01); // divisor low: 115200
            outb(base + INT_ENABLE, 0x00); // divisor high
            outb(base + LINE_CTRL, 0x03); // 8N1, DLAB off
            outb(base + FIFO_CTRL, 0xc7); // enable and clear FIFOs
            outb(base + MODEM_CTRL, 0x03); // DTR, RTS
        }
        Self { base }
    }

    fn line_status(&self) -> u8 {
        // SAFETY: `init`'s duties make these ports ours; reading LSR has no
        // side effect beyond clearing error bits we do not use.
        unsafe { inb(self.base + LINE_STATUS) }
    }

    /// A received byte, if one is waiting.
    pub fn get(&mut self) -> Option<u8> {
        let lsr = self.line_status();
        // 0xFF: no UART at all (floating bus); bit 0: data ready.
        if lsr == 0xFF || lsr & 1 == 0 {
            return None;
        }
        // SAFETY: as in `line_status`; reading DATA takes the byte.
        Some(unsafe { inb(self.base + DATA) })
    }

    /// Sends one byte, waiting (boundedly) for room.
    pub fn put(&mut self, byte: u8) {
        // An absent UART reads 0xFF, which has THRE set; a wedged one must not
        // hang the hypervisor, so the wait is bounded.
        for _ in 0..100_000 {
            if self.line_status() & LSR_THRE != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        // SAFETY: as in `line_status`; writing DATA sends the byte.
        unsafe { outb(self.base + DATA, byte) }
    }

    /// Waits (boundedly) until every byte has left the UART.
    pub fn drain(&mut self) {
        for _ in 0..1_000_000 {
            if self.line_status() & LSR_TEMT != 0 {
                return;
            }
            core::hint::spin_loop();
        }
    }
}

impl Uart {
    /// Sends text, a line feed as CR LF (what a serial terminal expects).
    pub fn put_text(&mut self, text: &[u8]) {
        for &b in text {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
    }
}

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.put_text(s.as_bytes());
        Ok(())
    }
}

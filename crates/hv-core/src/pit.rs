//! A minimal emulated PIT channel 2 and its gate at port 0x61: what a
//! guest kernel's TSC calibration reads. Without it every read of port
//! 0x42 gives all-ones and Linux's quick PIT calibration spins through
//! 100,000 reads (each a VM exit) before it gives up; with it the counter
//! moves with system time and the calibration ends in a few thousand.
//! Channels 0 and 1 stay absent (all-ones), as for Xen's PVH guests.

/// The PIT's input clock, in Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// Channel 2 and the port-0x61 gate.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pit {
    /// Reload value (0 means 65536).
    reload: u16,
    /// System time when the count was loaded (`None`: not counting).
    start: Option<u64>,
    /// Access mode: 1 low byte, 2 high byte, 3 low then high.
    access: u8,
    /// Operating mode (0-5).
    mode: u8,
    /// The next read/write of a low-then-high pair is the high byte.
    read_hi: bool,
    write_hi: bool,
    /// Low byte of a count being written.
    low: u8,
    /// A latched count.
    latch: Option<u16>,
    /// Port 0x61 bits 0 (gate) and 1 (speaker).
    gate_bits: u8,
}

impl Pit {
    fn ticks(&self, now: u64) -> Option<u64> {
        let start = self.start?;
        Some((u128::from(now.saturating_sub(start)) * u128::from(PIT_HZ) / 1_000_000_000) as u64)
    }

    fn period(&self) -> u64 {
        if self.reload == 0 {
            65536
        } else {
            u64::from(self.reload)
        }
    }

    /// The counter at `now`.
    pub fn count(&self, now: u64) -> u16 {
        let Some(t) = self.ticks(now) else {
            return self.reload;
        };
        let p = self.period();
        match self.mode {
            // Rate generator and square wave reload and keep going.
            2 | 3 => (p - t % p) as u16,
            // One-shot: counts down and wraps on past zero.
            _ => (p.wrapping_sub(t) & 0xFFFF) as u16,
        }
    }

    /// OUT2 at `now`: high once a one-shot count reached zero.
    pub fn out(&self, now: u64) -> bool {
        match (self.ticks(now), self.mode) {
            (Some(t), 0) => t >= self.period(),
            (Some(t), 2 | 3) => (t % self.period()) < self.period() / 2,
            _ => false,
        }
    }

    /// A write to port 0x43 (mode/command) for channel 2.
    pub fn command(&mut self, cmd: u8, now: u64) {
        if cmd >> 6 != 2 {
            return;
        }
        let access = (cmd >> 4) & 3;
        if access == 0 {
            self.latch = Some(self.count(now));
            return;
        }
        self.access = access;
        self.mode = (cmd >> 1) & 7;
        if self.mode > 5 {
            self.mode -= 4;
        }
        self.read_hi = false;
        self.write_hi = false;
        self.start = None;
        self.latch = None;
    }

    /// A write to port 0x42.
    pub fn write(&mut self, v: u8, now: u64) {
        match self.access {
            1 => self.load(u16::from(v), now),
            2 => self.load(u16::from(v) << 8, now),
            3 if !self.write_hi => {
                self.low = v;
                self.write_hi = true;
            }
            3 => {
                self.write_hi = false;
                self.load(u16::from(self.low) | (u16::from(v) << 8), now);
            }
            _ => {}
        }
    }

    fn load(&mut self, count: u16, now: u64) {
        self.reload = count;
        self.start = Some(now);
        self.latch = None;
    }

    /// A read of port 0x42.
    pub fn read(&mut self, now: u64) -> u8 {
        let v = match self.latch {
            Some(l) => l,
            None => self.count(now),
        };
        let (byte, done) = match self.access {
            2 => ((v >> 8) as u8, true),
            3 if !self.read_hi => (v as u8, false),
            3 => ((v >> 8) as u8, true),
            _ => (v as u8, true),
        };
        if self.access == 3 {
            self.read_hi = !self.read_hi;
        }
        if done {
            self.latch = None;
        }
        byte
    }

    /// A read of port 0x61: gate and speaker bits, OUT2 in bit 5.
    pub fn port61(&self, now: u64) -> u8 {
        self.gate_bits | if self.out(now) { 0x20 } else { 0 }
    }

    /// A write of port 0x61 (gate and speaker bits only).
    pub fn set_port61(&mut self, v: u8) {
        self.gate_bits = v & 3;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_counts_down_and_raises_out() {
        let mut p = Pit::default();
        p.command(0xB0, 0); // channel 2, lo/hi, mode 0
        p.write(0xFF, 0);
        p.write(0xFF, 0);
        assert_eq!((p.read(0), p.read(0)), (0xFF, 0xFF));
        // 1 ms later: 1193 ticks down.
        let c = u16::from(p.read(1_000_000)) | (u16::from(p.read(1_000_000)) << 8);
        assert_eq!(c, 0xFFFF - 1193);
        assert_eq!(p.port61(1_000_000) & 0x20, 0);
        assert_eq!(
            p.port61(60_000_000) & 0x20,
            0x20,
            "terminal count after 55 ms"
        );
        // Latch: the value at latch time, whatever the time of the read.
        p.command(0x80, 2_000_000);
        let l = u16::from(p.read(9_000_000)) | (u16::from(p.read(9_000_000)) << 8);
        assert_eq!(l, 0xFFFF - 2386);
        // Other channels are ignored.
        p.command(0x30, 0);
        assert_eq!(p.mode, 0);
        p.set_port61(0xFF);
        assert_eq!(p.port61(0) & 3, 3);
    }
}

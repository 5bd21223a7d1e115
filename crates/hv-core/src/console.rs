//! The PV console back end: the hypervisor serves each domain's console
//! ring (`xencons_interface` at `HVM_PARAM_CONSOLE_PFN`) and its event
//! channel (`HVM_PARAM_CONSOLE_EVTCHN`), as xenconsoled does in a Xen
//! system. Output goes to the platform console, attributed to the domain;
//! input (from the serial line, for the focused domain) goes into the
//! ring's `in` buffer.
//!
//! The ring lives in guest memory and the guest owns the producer index
//! of `out` and the consumer index of `in`: every index is read once,
//! checked against the buffer size, and a ring that claims more than fits
//! is treated as empty (its output dropped) rather than trusted.

use crate::evtchn::ChanState;
use crate::hv::Hypervisor;
use crate::platform::Platform;
use crate::types::{DomId, Errno, Gfn, XenResult};

/// The hypervisor as the remote end of console channels (xen.h
/// `DOMID_XEN`).
pub const DOMID_XEN: DomId = DomId(xen_abi::xen::DOMID_XEN);

const IN_SIZE: u32 = 1024;
const OUT_SIZE: u32 = 2048;
const OUT_OFF: u64 = 1024;
const IN_CONS: u64 = 3072;
const IN_PROD: u64 = 3076;
const OUT_CONS: u64 = 3080;
const OUT_PROD: u64 = 3084;

/// A domain's console back-end state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleBackend {
    /// The ring's guest frame.
    pub gfn: u64,
    /// The guest's end of the event channel.
    pub port: u32,
}

impl<P: Platform> Hypervisor<P> {
    /// Sets up `d`'s console: the ring at `gfn` (already populated) and an
    /// event channel bound to the hypervisor; publishes both HVM params.
    pub fn setup_console(&mut self, d: DomId, gfn: Gfn) -> XenResult<u32> {
        let dom = self.domain_mut(d).ok_or(Errno::ESRCH)?;
        dom.p2m.get(gfn).ok_or(Errno::EINVAL)?;
        let port = dom.evtchn.alloc(
            ChanState::Interdomain {
                remote: DOMID_XEN,
                rport: 0,
            },
            0,
        )?;
        dom.console = Some(ConsoleBackend { gfn: gfn.0, port });
        dom.hvm_params[xen_abi::hvm::HVM_PARAM_CONSOLE_PFN as usize] = gfn.0;
        dom.hvm_params[xen_abi::hvm::HVM_PARAM_CONSOLE_EVTCHN as usize] = u64::from(port);
        Ok(port)
    }

    /// The guest notified its console channel: drains the `out` ring to
    /// the console and tells the guest there is room again.
    pub fn console_kick(&mut self, d: DomId) {
        let Some(c) = self.domain(d).and_then(|x| x.console) else {
            return;
        };
        let base = c.gfn << 12;
        let Some(mem) = self.guest_mem(d) else {
            return;
        };
        let (Ok(cons), Ok(prod)) = (mem.load_u32(base + OUT_CONS), mem.load_u32(base + OUT_PROD))
        else {
            return;
        };
        let len = prod.wrapping_sub(cons);
        if len == 0 {
            return;
        }
        let mut out = alloc::vec::Vec::new();
        if len <= OUT_SIZE {
            out.reserve(len as usize);
            let mut buf = [0u8; OUT_SIZE as usize];
            if mem.read(base + OUT_OFF, &mut buf).is_err() {
                return;
            }
            for i in 0..len {
                out.push(buf[(cons.wrapping_add(i) % OUT_SIZE) as usize]);
            }
        }
        // Consumed (or dropped when the indices were impossible).
        let _ = mem.write(base + OUT_CONS, &prod.to_le_bytes());
        if !out.is_empty() {
            crate::hypercall::console_put(self, d, &out);
        }
        self.evtchn_set_pending(d, c.port);
    }

    /// Offers console input to `d`; returns how many bytes fit in its
    /// `in` ring (the rest is for the caller to retry or drop).
    pub fn console_input(&mut self, d: DomId, bytes: &[u8]) -> usize {
        let Some(c) = self.domain(d).and_then(|x| x.console) else {
            return 0;
        };
        let base = c.gfn << 12;
        let Some(mem) = self.guest_mem(d) else {
            return 0;
        };
        let (Ok(cons), Ok(prod)) = (mem.load_u32(base + IN_CONS), mem.load_u32(base + IN_PROD))
        else {
            return 0;
        };
        let used = prod.wrapping_sub(cons);
        if used > IN_SIZE {
            return 0;
        }
        let n = bytes.len().min((IN_SIZE - used) as usize);
        for (i, b) in bytes[..n].iter().enumerate() {
            let at = prod.wrapping_add(i as u32) % IN_SIZE;
            if mem.write(base + u64::from(at), &[*b]).is_err() {
                return 0;
            }
        }
        let _ = mem.write(base + IN_PROD, &prod.wrapping_add(n as u32).to_le_bytes());
        if n > 0 {
            self.evtchn_set_pending(d, c.port);
        }
        n
    }
}

//! Serial input for the domains' PV consoles: bytes typed on COM1 go to
//! the focused domain's console ring; Ctrl-A three times moves the focus
//! to the next live domain (see `hypervisor::focus`). Input starts on the
//! first domain that is not a service domain.

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use hv_core::domain::Caps;
use hv_core::{DomId, Hypervisor};
use hypervisor::focus::{Focus, Input, default_domain, next_domain};
use spin::Mutex;

use crate::hostplat::HostPlatform;

static FOCUS: Mutex<Focus> = Mutex::new(Focus::new());
/// The focused domain id (`u32::MAX`: none chosen yet).
static FOCUSED: AtomicU32 = AtomicU32::new(u32::MAX);

/// Moves pending serial input into the focused domain's console.
pub fn poll(hv: &mut Hypervisor<HostPlatform>) {
    let mut focus = FOCUS.lock();
    while let Some(b) = crate::console::read_byte() {
        let alive: alloc::vec::Vec<u16> = hv
            .domain_ids()
            .into_iter()
            .filter(|&d| hv.domain(d).is_some_and(|x| x.is_alive()))
            .map(|d| d.0)
            .collect();
        let service: alloc::vec::Vec<u16> = alive
            .iter()
            .copied()
            .filter(|&d| hv.domain(DomId(d)).is_some_and(|x| x.may(Caps::XENSTORE)))
            .collect();
        let first = default_domain(&alive, &service);
        let cur = match FOCUSED.load(Relaxed) {
            u32::MAX => first,
            d => Some(d as u16).filter(|d| alive.contains(d)).or(first),
        };
        match focus.feed(b) {
            Input::Pending => {}
            Input::Switch => {
                if let Some(n) = next_domain(&alive, cur) {
                    FOCUSED.store(u32::from(n), Relaxed);
                    crate::println!(
                        "(XEN) *** serial input to d{n} (type 'CTRL-a' three times to switch)"
                    );
                }
            }
            Input::Deliver { ctrl_a, byte } => {
                let Some(d) = cur else { continue };
                FOCUSED.store(u32::from(d), Relaxed);
                for _ in 0..ctrl_a {
                    hv.console_input(DomId(d), &[hypervisor::focus::CTRL_A]);
                }
                // Serial terminals send CR for Enter.
                let byte = if byte == b'\r' { b'\n' } else { byte };
                hv.console_input(DomId(d), &[byte]);
            }
        }
    }
}

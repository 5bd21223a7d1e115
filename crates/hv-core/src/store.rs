//! A domain's xenstore connection, made at build time as Xen's dom0less
//! builder makes it for "enhanced" domains (`alloc_xenstore_page`,
//! `alloc_xenstore_evtchn` and `gnttab_seed_entry` in Xen's
//! `dom0less-build.c`): the ring page, grant reference
//! `GNTTAB_RESERVED_XENSTORE` for the xenstore domain, an unbound event
//! channel toward it, and the two HVM params.
//!
//! The page's `evtchn_port` names the port (the field Xen added in 2025;
//! the xenstore domain reads it after mapping the page, as there is no
//! toolstack to send `INTRODUCE`).
//!
//! The page's `connection` is `XENSTORE_RECONNECT`, so Linux waits for the
//! xenstore domain (late init, whichever domain starts first): the server
//! maps grant 1, binds the port, sets `connection` to
//! `XENSTORE_CONNECTED` and only then signals.

use xen_abi::grant_table::{GNTTAB_RESERVED_XENSTORE, GTF_permit_access};
use xen_abi::hvm::{HVM_PARAM_STORE_EVTCHN, HVM_PARAM_STORE_PFN};
use xen_abi::io::xs_wire::XENSTORE_RECONNECT;

use crate::domain::StoreInfo;
use crate::evtchn::ChanState;
use crate::hv::Hypervisor;
use crate::platform::Platform;
use crate::types::{DomId, Errno, Gfn, PAGE_SIZE, XenResult};

/// Offset of `connection` in `struct xenstore_domain_interface`.
const CONNECTION: u64 = 2068;
/// Offset of `evtchn_port` (added to the page in 2025): how the xenstore
/// domain learns the port without a toolstack's `INTRODUCE`, as Xen's
/// xenstored does for boot domains when it is set.
const EVTCHN_PORT: u64 = 2076;

impl<P: Platform> Hypervisor<P> {
    /// Gives `d` a xenstore connection served by domain `server`: the page
    /// at `gfn` (already populated) is zeroed and marked
    /// `XENSTORE_RECONNECT`, grant 1 of `d` permits `server` to access it,
    /// a port of `d` waits unbound for `server`, and
    /// `HVM_PARAM_STORE_PFN`/`STORE_EVTCHN` name them. `server` need not
    /// exist yet (it may be built after `d`). Returns the port.
    pub fn setup_store(&mut self, d: DomId, gfn: Gfn, server: DomId) -> XenResult<u32> {
        if server == d || server.0 >= DomId::FIRST_RESERVED {
            return Err(Errno::EINVAL);
        }
        let dom = self.domain(d).ok_or(Errno::ESRCH)?;
        if dom.store.is_some() {
            return Err(Errno::EEXIST);
        }
        let frame = u32::try_from(gfn.0).map_err(|_| Errno::EINVAL)?;
        {
            let mem = self.guest_mem(d).ok_or(Errno::ESRCH)?;
            let base = gfn.0 * PAGE_SIZE as u64;
            mem.zero(base, PAGE_SIZE)?;
            mem.write(base + CONNECTION, &XENSTORE_RECONNECT.to_le_bytes())?;
        }
        crate::gnttab::seed_entry(
            self,
            d,
            GNTTAB_RESERVED_XENSTORE,
            GTF_permit_access,
            server,
            frame,
        )?;
        let dom = self.domain_mut(d).ok_or(Errno::ESRCH)?;
        let port = dom.evtchn.alloc(ChanState::Unbound { remote: server }, 0)?;
        dom.store = Some(StoreInfo { gfn, port, server });
        self.guest_mem(d)
            .ok_or(Errno::ESRCH)?
            .write(gfn.0 * PAGE_SIZE as u64 + EVTCHN_PORT, &port.to_le_bytes())?;
        let dom = self.domain_mut(d).ok_or(Errno::ESRCH)?;
        dom.hvm_params[HVM_PARAM_STORE_PFN as usize] = gfn.0;
        dom.hvm_params[HVM_PARAM_STORE_EVTCHN as usize] = u64::from(port);
        Ok(port)
    }
}

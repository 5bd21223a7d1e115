//! Grant tables: per-domain state and the logic behind `grant_table_op`.

use crate::hv::Hypervisor;
use crate::platform::Platform;
use crate::types::{DomId, Errno, Gfn, XenResult};

/// A domain's grant table (stub).
#[derive(Default)]
pub struct GrantTable {}

impl GrantTable {
    /// An empty table.
    pub fn new() -> Self {
        GrantTable {}
    }
}

/// `XENMEM_add_to_physmap` with `XENMAPSPACE_grant_table`.
pub fn add_to_physmap<P: Platform>(
    _hv: &mut Hypervisor<P>,
    _d: DomId,
    _idx: u64,
    _gfn: Gfn,
) -> XenResult<()> {
    Err(Errno::ENOSYS)
}

/// Releases everything `d` holds in grant tables (called by
/// `destroy_domain` before the domain's memory goes).
pub fn teardown<P: Platform>(_hv: &mut Hypervisor<P>, _d: DomId) {}

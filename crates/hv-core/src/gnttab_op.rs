//! `grant_table_op`: the hypercall, on top of [`crate::gnttab`].

use crate::hv::Hypervisor;
use crate::hypercall::Call;
use crate::platform::Platform;
use crate::types::{Errno, XenResult};

pub(crate) fn grant_table_op<P: Platform>(
    _hv: &mut Hypervisor<P>,
    _c: &mut Call,
) -> XenResult<u64> {
    Err(Errno::ENOSYS)
}

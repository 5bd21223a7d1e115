//! The `event_channel_op` hypercall and the FIFO event ABI:
//! `xen/include/public/event_channel.h`.

use crate::Domid;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// An event channel port (event_channel.h `evtchn_port_t`).
pub type EvtchnPort = u32;

/// Connect to a port another domain allocated, argument [`EvtchnBindInterdomain`]
/// (event_channel.h `EVTCHNOP_bind_interdomain`).
pub const EVTCHNOP_bind_interdomain: u32 = 0;
/// Bind a virtual IRQ, argument [`EvtchnBindVirq`] (event_channel.h `EVTCHNOP_bind_virq`).
pub const EVTCHNOP_bind_virq: u32 = 1;
/// Bind a physical IRQ, argument [`EvtchnBindPirq`] (event_channel.h `EVTCHNOP_bind_pirq`).
pub const EVTCHNOP_bind_pirq: u32 = 2;
/// Close a port, argument [`EvtchnClose`] (event_channel.h `EVTCHNOP_close`).
pub const EVTCHNOP_close: u32 = 3;
/// Notify the remote end, argument [`EvtchnSend`] (event_channel.h `EVTCHNOP_send`).
pub const EVTCHNOP_send: u32 = 4;
/// Query a port, argument [`EvtchnStatus`] (event_channel.h `EVTCHNOP_status`).
pub const EVTCHNOP_status: u32 = 5;
/// Allocate a port for another domain to bind, argument [`EvtchnAllocUnbound`]
/// (event_channel.h `EVTCHNOP_alloc_unbound`).
pub const EVTCHNOP_alloc_unbound: u32 = 6;
/// Bind an inter-vCPU port, argument [`EvtchnBindIpi`] (event_channel.h `EVTCHNOP_bind_ipi`).
pub const EVTCHNOP_bind_ipi: u32 = 7;
/// Move a port's notifications to a vCPU, argument [`EvtchnBindVcpu`]
/// (event_channel.h `EVTCHNOP_bind_vcpu`).
pub const EVTCHNOP_bind_vcpu: u32 = 8;
/// Unmask a port, argument [`EvtchnUnmask`] (event_channel.h `EVTCHNOP_unmask`).
pub const EVTCHNOP_unmask: u32 = 9;
/// Close all ports of a domain, argument [`EvtchnReset`] (event_channel.h `EVTCHNOP_reset`).
pub const EVTCHNOP_reset: u32 = 10;
/// Switch to FIFO events and register a vCPU's control block, argument
/// [`EvtchnInitControl`] (event_channel.h `EVTCHNOP_init_control`).
pub const EVTCHNOP_init_control: u32 = 11;
/// Add a page of FIFO event words, argument [`EvtchnExpandArray`]
/// (event_channel.h `EVTCHNOP_expand_array`).
pub const EVTCHNOP_expand_array: u32 = 12;
/// Set a port's FIFO priority, argument [`EvtchnSetPriority`]
/// (event_channel.h `EVTCHNOP_set_priority`).
pub const EVTCHNOP_set_priority: u32 = 13;
/// Continuation of `EVTCHNOP_reset`, hypervisor-internal (event_channel.h `EVTCHNOP_reset_cont`).
pub const EVTCHNOP_reset_cont: u32 = 14;

/// Port status: free (event_channel.h `EVTCHNSTAT_closed`).
pub const EVTCHNSTAT_closed: u32 = 0;
/// Port status: waiting for a remote domain (event_channel.h `EVTCHNSTAT_unbound`).
pub const EVTCHNSTAT_unbound: u32 = 1;
/// Port status: connected to a remote port (event_channel.h `EVTCHNSTAT_interdomain`).
pub const EVTCHNSTAT_interdomain: u32 = 2;
/// Port status: bound to a physical IRQ (event_channel.h `EVTCHNSTAT_pirq`).
pub const EVTCHNSTAT_pirq: u32 = 3;
/// Port status: bound to a virtual IRQ (event_channel.h `EVTCHNSTAT_virq`).
pub const EVTCHNSTAT_virq: u32 = 4;
/// Port status: inter-vCPU port (event_channel.h `EVTCHNSTAT_ipi`).
pub const EVTCHNSTAT_ipi: u32 = 5;
/// `EvtchnBindPirq::flags`: the IRQ may be shared (event_channel.h `BIND_PIRQ__WILL_SHARE`).
pub const BIND_PIRQ__WILL_SHARE: u32 = 1;

/// Argument structs of `event_channel_op`, each paired with its command.
pub trait EvtchnOpArg: FromBytes + IntoBytes + Immutable + KnownLayout {
    /// The `EVTCHNOP_*` command taking this argument.
    const CMD: u32;
}

macro_rules! evtchn_arg {
    ($(#[$doc:meta])* $name:ident = $cmd:ident, $size:expr, { $($(#[$fdoc:meta])* $field:ident : $ty:ty = $off:expr),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
        }
        crate::assert_layout!($name, $size, { $($field: $off),* });
        impl EvtchnOpArg for $name {
            const CMD: u32 = $cmd;
        }
    };
}

evtchn_arg!(
    /// Argument of `EVTCHNOP_alloc_unbound` (event_channel.h `struct evtchn_alloc_unbound`).
    EvtchnAllocUnbound = EVTCHNOP_alloc_unbound, 8, {
        /// Domain that owns the new port (`DOMID_SELF`).
        dom: Domid = 0,
        /// Domain allowed to bind to it.
        remote_dom: Domid = 2,
        /// Out: the new port.
        port: EvtchnPort = 4,
    }
);
evtchn_arg!(
    /// Argument of `EVTCHNOP_bind_interdomain` (event_channel.h `struct evtchn_bind_interdomain`).
    EvtchnBindInterdomain = EVTCHNOP_bind_interdomain, 12, {
        /// Remote domain.
        remote_dom: Domid = 0,
        /// Padding.
        pad: u16 = 2,
        /// Remote port, allocated unbound for us.
        remote_port: EvtchnPort = 4,
        /// Out: the local port.
        local_port: EvtchnPort = 8,
    }
);
evtchn_arg!(
    /// Argument of `EVTCHNOP_bind_virq` (event_channel.h `struct evtchn_bind_virq`).
    EvtchnBindVirq = EVTCHNOP_bind_virq, 12, {
        /// `VIRQ_*`.
        virq: u32 = 0,
        /// vCPU to notify.
        vcpu: u32 = 4,
        /// Out: the port.
        port: EvtchnPort = 8,
    }
);
evtchn_arg!(
    /// Argument of `EVTCHNOP_bind_pirq` (event_channel.h `struct evtchn_bind_pirq`).
    EvtchnBindPirq = EVTCHNOP_bind_pirq, 12, {
        /// Physical IRQ.
        pirq: u32 = 0,
        /// `BIND_PIRQ__*` flags.
        flags: u32 = 4,
        /// Out: the port.
        port: EvtchnPort = 8,
    }
);
evtchn_arg!(
    /// Argument of `EVTCHNOP_bind_ipi` (event_channel.h `struct evtchn_bind_ipi`).
    EvtchnBindIpi = EVTCHNOP_bind_ipi, 8, {
        /// vCPU to notify.
        vcpu: u32 = 0,
        /// Out: the port.
        port: EvtchnPort = 4,
    }
);
evtchn_arg!(
    /// Argument of `EVTCHNOP_close` (event_channel.h `struct evtchn_close`).
    EvtchnClose = EVTCHNOP_close, 4, {
        /// Port to close.
        port: EvtchnPort = 0,
    }
);
evtchn_arg!(
    /// Argument of `EVTCHNOP_send` (event_channel.h `struct evtchn_send`).
    EvtchnSend = EVTCHNOP_send, 4, {
        /// Local port whose remote end is notified.
        port: EvtchnPort = 0,
    }
);
evtchn_arg!(
    /// Argument of `EVTCHNOP_status` (event_channel.h `struct evtchn_status`,
    /// 24 bytes). The C union `u` is kept as raw words; read it with the
    /// accessors matching `status`.
    EvtchnStatus = EVTCHNOP_status, 24, {
        /// Domain owning the port.
        dom: Domid = 0,
        /// Padding.
        pad: u16 = 2,
        /// Port to query.
        port: EvtchnPort = 4,
        /// Out: `EVTCHNSTAT_*` (kept as an integer).
        status: u32 = 8,
        /// Out: vCPU notified.
        vcpu: u32 = 12,
        /// Out: the union of per-status details.
        u: [u32; 2] = 16,
    }
);
evtchn_arg!(
    /// Argument of `EVTCHNOP_bind_vcpu` (event_channel.h `struct evtchn_bind_vcpu`).
    EvtchnBindVcpu = EVTCHNOP_bind_vcpu, 8, {
        /// Port.
        port: EvtchnPort = 0,
        /// New vCPU to notify.
        vcpu: u32 = 4,
    }
);
evtchn_arg!(
    /// Argument of `EVTCHNOP_unmask` (event_channel.h `struct evtchn_unmask`).
    EvtchnUnmask = EVTCHNOP_unmask, 4, {
        /// Port to unmask.
        port: EvtchnPort = 0,
    }
);
evtchn_arg!(
    /// Argument of `EVTCHNOP_reset` (event_channel.h `struct evtchn_reset`).
    EvtchnReset = EVTCHNOP_reset, 2, {
        /// Domain whose ports are closed.
        dom: Domid = 0,
    }
);
evtchn_arg!(
    /// Argument of `EVTCHNOP_init_control` (event_channel.h `struct evtchn_init_control`).
    EvtchnInitControl = EVTCHNOP_init_control, 24, {
        /// Guest frame holding the control block.
        control_gfn: u64 = 0,
        /// Offset of the [`EvtchnFifoControlBlock`] in that frame.
        offset: u32 = 8,
        /// vCPU the block belongs to.
        vcpu: u32 = 12,
        /// Out: `EVTCHN_FIFO_LINK_BITS`.
        link_bits: u8 = 16,
        /// Padding.
        _pad: [u8; 7] = 17,
    }
);
evtchn_arg!(
    /// Argument of `EVTCHNOP_expand_array` (event_channel.h `struct evtchn_expand_array`).
    EvtchnExpandArray = EVTCHNOP_expand_array, 8, {
        /// Guest frame of the next page of event words.
        array_gfn: u64 = 0,
    }
);
evtchn_arg!(
    /// Argument of `EVTCHNOP_set_priority` (event_channel.h `struct evtchn_set_priority`).
    EvtchnSetPriority = EVTCHNOP_set_priority, 8, {
        /// Port.
        port: EvtchnPort = 0,
        /// `EVTCHN_FIFO_PRIORITY_*`: 0 is highest.
        priority: u32 = 4,
    }
);

impl EvtchnStatus {
    /// For `EVTCHNSTAT_unbound`: the domain allowed to bind.
    pub fn unbound_dom(&self) -> Domid {
        self.u[0] as u16
    }
    /// For `EVTCHNSTAT_interdomain`: the remote domain and port.
    pub fn interdomain(&self) -> (Domid, EvtchnPort) {
        (self.u[0] as u16, self.u[1])
    }
    /// For `EVTCHNSTAT_pirq`: the physical IRQ.
    pub fn pirq(&self) -> u32 {
        self.u[0]
    }
    /// For `EVTCHNSTAT_virq`: the virtual IRQ.
    pub fn virq(&self) -> u32 {
        self.u[0]
    }
}

/// The old multiplexed argument of `event_channel_op_compat`
/// (event_channel.h `struct evtchn_op`, 28 bytes): a command and the
/// union of argument structs, kept as raw words.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct EvtchnOp {
    /// `EVTCHNOP_*`.
    pub cmd: u32,
    /// The argument (the largest member, `evtchn_status`, is 24 bytes).
    pub u: [u32; 6],
}
crate::assert_layout!(EvtchnOp, 28, { cmd: 0, u: 4 });

impl EvtchnOp {
    /// Reads the argument as `T`, if `cmd` is `T`'s command.
    pub fn arg<T: EvtchnOpArg>(&self) -> Option<T> {
        if self.cmd != T::CMD {
            return None;
        }
        T::read_from_prefix(self.u.as_bytes())
            .ok()
            .map(|(arg, _)| arg)
    }
}

/// Number of ports of the 2-level ABI on x86_64 (event_channel.h `EVTCHN_2L_NR_CHANNELS`).
pub const EVTCHN_2L_NR_CHANNELS: u32 = 8 * 8 * 64;

// ---------------------------------------------------------------------------
// FIFO-based event channels.
// ---------------------------------------------------------------------------

/// One FIFO event word (event_channel.h `event_word_t`).
pub type EventWord = u32;

/// Highest FIFO priority (event_channel.h `EVTCHN_FIFO_PRIORITY_MAX`).
pub const EVTCHN_FIFO_PRIORITY_MAX: u32 = 0;
/// Default FIFO priority (event_channel.h `EVTCHN_FIFO_PRIORITY_DEFAULT`).
pub const EVTCHN_FIFO_PRIORITY_DEFAULT: u32 = 7;
/// Lowest FIFO priority (event_channel.h `EVTCHN_FIFO_PRIORITY_MIN`).
pub const EVTCHN_FIFO_PRIORITY_MIN: u32 = 15;
/// Number of FIFO queues, one per priority (event_channel.h `EVTCHN_FIFO_MAX_QUEUES`).
pub const EVTCHN_FIFO_MAX_QUEUES: usize = 16;
/// Event word bit: pending (event_channel.h `EVTCHN_FIFO_PENDING`).
pub const EVTCHN_FIFO_PENDING: u32 = 31;
/// Event word bit: masked (event_channel.h `EVTCHN_FIFO_MASKED`).
pub const EVTCHN_FIFO_MASKED: u32 = 30;
/// Event word bit: on a queue (event_channel.h `EVTCHN_FIFO_LINKED`).
pub const EVTCHN_FIFO_LINKED: u32 = 29;
/// Event word bit: being unmasked by the guest (event_channel.h `EVTCHN_FIFO_BUSY`).
pub const EVTCHN_FIFO_BUSY: u32 = 28;
/// Width of the link field (event_channel.h `EVTCHN_FIFO_LINK_BITS`).
pub const EVTCHN_FIFO_LINK_BITS: u32 = 17;
/// Mask of the link field: the next port in the queue (event_channel.h `EVTCHN_FIFO_LINK_MASK`).
pub const EVTCHN_FIFO_LINK_MASK: u32 = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
/// Number of FIFO ports (event_channel.h `EVTCHN_FIFO_NR_CHANNELS`).
pub const EVTCHN_FIFO_NR_CHANNELS: u32 = 1 << EVTCHN_FIFO_LINK_BITS;

/// A vCPU's FIFO control block (event_channel.h `struct evtchn_fifo_control_block`, 72 bytes).
///
/// # Concurrency
/// The hypervisor sets bits of `ready` and writes `head[]` when it links
/// an event onto an empty queue; the guest clears `ready` bits and
/// advances `head[]` as it consumes. Access the live block with atomics.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct EvtchnFifoControlBlock {
    /// Bit `q` set: queue `q` has events.
    pub ready: u32,
    /// Reserved.
    pub _rsvd: u32,
    /// Head port of each queue.
    pub head: [EventWord; EVTCHN_FIFO_MAX_QUEUES],
}
crate::assert_layout!(EvtchnFifoControlBlock, 72, { ready: 0, _rsvd: 4, head: 8 });

/// Whether bit `bit` (one of `EVTCHN_FIFO_PENDING`/`MASKED`/`LINKED`/`BUSY`)
/// is set in an event word. Bits above 31 are reported clear.
pub const fn evtchn_fifo_test(word: EventWord, bit: u32) -> bool {
    bit < 32 && word & (1 << bit) != 0
}

/// The link field of an event word: the next port on its queue, 0 for none.
pub const fn evtchn_fifo_link(word: EventWord) -> EvtchnPort {
    word & EVTCHN_FIFO_LINK_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_word_bits() {
        let w: EventWord = (1 << EVTCHN_FIFO_PENDING) | (1 << EVTCHN_FIFO_LINKED) | 0x1_2345;
        assert!(evtchn_fifo_test(w, EVTCHN_FIFO_PENDING));
        assert!(!evtchn_fifo_test(w, EVTCHN_FIFO_MASKED));
        assert!(evtchn_fifo_test(w, EVTCHN_FIFO_LINKED));
        assert!(!evtchn_fifo_test(w, EVTCHN_FIFO_BUSY));
        assert!(!evtchn_fifo_test(u32::MAX, 32), "out-of-range bit");
        assert_eq!(evtchn_fifo_link(w), 0x1_2345);
        assert_eq!(evtchn_fifo_link(u32::MAX), EVTCHN_FIFO_NR_CHANNELS - 1);
    }

    #[test]
    fn status_union_accessors() {
        let mut raw = [0u8; 24];
        raw[8..12].copy_from_slice(&EVTCHNSTAT_interdomain.to_le_bytes());
        raw[16..18].copy_from_slice(&7u16.to_le_bytes());
        raw[20..24].copy_from_slice(&42u32.to_le_bytes());
        let s = EvtchnStatus::read_from_bytes(&raw[..]).unwrap();
        assert_eq!(s.status, EVTCHNSTAT_interdomain);
        assert_eq!(s.interdomain(), (7, 42));
        assert_eq!(s.unbound_dom(), 7);
    }

    #[test]
    fn evtchn_op_dispatches_by_command() {
        let mut op = EvtchnOp {
            cmd: EVTCHNOP_bind_virq,
            u: [0; 6],
        };
        op.u[0] = crate::VIRQ_TIMER;
        op.u[1] = 3;
        let bind: EvtchnBindVirq = op.arg().unwrap();
        assert_eq!((bind.virq, bind.vcpu), (0, 3));
        assert_eq!(op.arg::<EvtchnSend>(), None, "wrong command");
        let op = EvtchnOp {
            cmd: 0xdead,
            u: [0; 6],
        };
        assert_eq!(op.arg::<EvtchnBindVirq>(), None);
    }

    #[test]
    fn init_control_from_bytes() {
        let mut raw = [0u8; 24];
        raw[0..8].copy_from_slice(&0x1234u64.to_le_bytes());
        raw[12..16].copy_from_slice(&1u32.to_le_bytes());
        let ic = EvtchnInitControl::read_from_bytes(&raw[..]).unwrap();
        assert_eq!((ic.control_gfn, ic.offset, ic.vcpu), (0x1234, 0, 1));
        assert!(EvtchnInitControl::read_from_bytes(&raw[..23]).is_err());
        assert!(EvtchnFifoControlBlock::read_from_bytes(&[0u8; 71][..]).is_err());
        let cb = EvtchnFifoControlBlock::read_from_bytes(&[0xffu8; 72][..]).unwrap();
        assert_eq!(cb.head[15], u32::MAX);
    }
}

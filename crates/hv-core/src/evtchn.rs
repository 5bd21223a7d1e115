//! Event channels: the port table of a domain and the two delivery ABIs.
//!
//! - **2-level**: pending and mask bitmaps in shared_info, a per-vCPU
//!   selector word and the `evtchn_upcall_pending` byte in `vcpu_info`.
//! - **FIFO**: one 32-bit event word per port in guest-provided array
//!   pages (PENDING, MASKED, LINKED, BUSY flags and a 17-bit LINK), and a
//!   per-vCPU control block with a READY bitmap and 16 priority queue heads.
//!
//! All of those words live in guest memory and the guest changes them at
//! the same time as we do, so each decision is made on the value returned by
//! one atomic operation, never on a second read. The hypervisor never
//! follows a guest-written LINK: it only writes them, so a guest that
//! scribbles on its queues hurts only itself.

use alloc::vec::Vec;

use xen_abi::event_channel as ev;

use crate::platform::FrameAccess;
use crate::types::{DomId, Errno, Hfn, PAGE_SIZE, XenResult};

/// Ports available with the 2-level ABI on 64-bit guests (64 x 64).
pub const EVTCHN_2L_NR_CHANNELS: u32 = 4096;
/// Ports available with the FIFO ABI.
pub const EVTCHN_FIFO_NR_CHANNELS: u32 = ev::EVTCHN_FIFO_NR_CHANNELS;
/// Event words per FIFO array page.
pub const EVENT_WORDS_PER_PAGE: u32 = (PAGE_SIZE / 4) as u32;
/// Ports available with the 2-level ABI when shared_info is in the 32-bit
/// layout (32 x 32).
pub const EVTCHN_2L_NR_CHANNELS_COMPAT: u32 = 1024;
/// Offset of `evtchn_pending` in shared_info (both layouts: 32 vcpu_info
/// of 64 bytes come first).
const SI_PENDING: usize = 2048;
/// Offset of `evtchn_mask` in shared_info.
const SI_MASK: usize = 2560;
/// Offset of `evtchn_mask` in the 32-bit shared_info.
const SI_MASK_COMPAT: usize = 2176;
/// Offset of `evtchn_pending_sel` in vcpu_info.
const VI_PENDING_SEL: usize = 8;
/// Offset of `evtchn_pending_sel` (4 bytes) in the 32-bit vcpu_info.
const VI_PENDING_SEL_COMPAT: usize = 4;
/// How often the hypervisor retries a LINK update against a racing guest.
const LINK_RETRIES: usize = 4;

const PENDING: u32 = 1 << ev::EVTCHN_FIFO_PENDING;
const MASKED: u32 = 1 << ev::EVTCHN_FIFO_MASKED;
const LINKED: u32 = 1 << ev::EVTCHN_FIFO_LINKED;
const LINK_MASK: u32 = ev::EVTCHN_FIFO_LINK_MASK;

/// What a port is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChanState {
    /// Not in use.
    Free,
    /// Allocated, waiting for `remote` to bind to it.
    Unbound {
        /// The domain allowed to bind.
        remote: DomId,
    },
    /// Connected to a port of another (or the same) domain.
    Interdomain {
        /// The peer domain.
        remote: DomId,
        /// The peer's port.
        rport: u32,
    },
    /// Bound to a virtual IRQ.
    Virq(u32),
    /// An IPI channel between the domain's own vCPUs.
    Ipi,
    /// Bound to a pirq (`EVTCHNOP_bind_pirq`).
    Pirq(u32),
}

/// One port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    /// The binding.
    pub state: ChanState,
    /// The vCPU notified on an event.
    pub vcpu: u32,
    /// FIFO priority (0 highest .. 15 lowest).
    pub priority: u8,
}

impl Channel {
    const FREE: Channel = Channel {
        state: ChanState::Free,
        vcpu: 0,
        priority: ev::EVTCHN_FIFO_PRIORITY_DEFAULT as u8,
    };
}

/// Where a vCPU's `vcpu_info` lives: a host frame and a byte offset.
pub type VcpuInfoLoc = Option<(Hfn, usize)>;

/// FIFO state of one vCPU.
#[derive(Clone, Debug)]
pub struct FifoVcpu {
    /// The control block: frame and offset.
    pub control: (Hfn, usize),
    /// The last port queued at each priority (0 = empty).
    tails: [u32; ev::EVTCHN_FIFO_MAX_QUEUES],
}

/// FIFO state of a domain.
#[derive(Clone, Debug, Default)]
pub struct Fifo {
    /// Event array pages, in order (port / 1024 indexes them).
    pub array: Vec<Hfn>,
    /// Per-vCPU control blocks (index = vCPU id).
    pub vcpus: Vec<Option<FifoVcpu>>,
}

/// A domain's event channels.
#[derive(Clone, Debug, Default)]
pub struct EvtchnDomain {
    ports: Vec<Channel>,
    /// No port below this one is free (a search hint; port 0 never is).
    free_hint: usize,
    /// FIFO state once `init_control` succeeded; 2-level before.
    pub fifo: Option<Fifo>,
}

/// The memory an event is delivered into.
pub struct Target<'a> {
    /// Host frame access.
    pub frames: &'a dyn FrameAccess,
    /// The domain's shared_info frame.
    pub shared_info: Hfn,
    /// Each vCPU's vcpu_info location.
    pub vcpu_info: &'a [VcpuInfoLoc],
    /// shared_info and vcpu_info are in the 32-bit layout (Xen's
    /// `has_32bit_shinfo`): 2-level words are 32 bits, 1024 ports.
    pub compat: bool,
}

impl Target<'_> {
    /// 2-level bitmap word of `port`: (byte offset of its word in the
    /// pending array, bit, selector bit), or `None` past the layout's ports.
    fn word_2l(&self, port: u32) -> Option<(usize, u64, u64)> {
        let bits = if self.compat { 32 } else { 64 };
        if port >= bits * bits {
            return None;
        }
        let word = (port / bits) as usize;
        Some((word * (bits as usize / 8), 1 << (port % bits), 1 << word))
    }

    fn load_word(&self, off: usize) -> u64 {
        if self.compat {
            self.frames.load_u32(self.shared_info, off).into()
        } else {
            self.frames.load_u64(self.shared_info, off)
        }
    }

    fn mask_base(&self) -> usize {
        if self.compat { SI_MASK_COMPAT } else { SI_MASK }
    }
}

impl EvtchnDomain {
    /// The number of ports the current ABI allows.
    pub fn max_ports(&self) -> u32 {
        if self.fifo.is_some() {
            EVTCHN_FIFO_NR_CHANNELS
        } else {
            EVTCHN_2L_NR_CHANNELS
        }
    }

    /// The channel at `port`, if the port is valid and in use.
    pub fn get(&self, port: u32) -> Option<&Channel> {
        self.ports
            .get(port as usize)
            .filter(|c| c.state != ChanState::Free)
    }

    /// Mutable access to an in-use channel.
    pub fn get_mut(&mut self, port: u32) -> Option<&mut Channel> {
        self.ports
            .get_mut(port as usize)
            .filter(|c| c.state != ChanState::Free)
    }

    /// Every in-use port with its channel.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Channel)> {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, c)| c.state != ChanState::Free)
            .map(|(p, c)| (p as u32, c))
    }

    /// Number of ports in use.
    pub fn in_use(&self) -> usize {
        self.iter().count()
    }

    /// Allocates the lowest free port (port 0 is never used) with `state`.
    pub fn alloc(&mut self, state: ChanState, vcpu: u32) -> XenResult<u32> {
        let max = self.max_ports() as usize;
        let from = self.free_hint.max(1);
        let free = self
            .ports
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, c)| c.state == ChanState::Free)
            .map(|(p, _)| p);
        let port = match free {
            Some(p) => p,
            None => {
                let p = self.ports.len().max(1);
                if p >= max {
                    return Err(Errno::ENOSPC);
                }
                self.ports.resize(p + 1, Channel::FREE);
                p
            }
        };
        self.ports[port] = Channel {
            state,
            vcpu,
            priority: ev::EVTCHN_FIFO_PRIORITY_DEFAULT as u8,
        };
        self.free_hint = port + 1;
        Ok(port as u32)
    }

    /// Frees `port`, returning what it was bound to. Clears its pending
    /// state in guest memory is left to the guest, as in Xen.
    pub fn free(&mut self, port: u32) -> Option<Channel> {
        let c = self.ports.get_mut(port as usize)?;
        if c.state == ChanState::Free {
            return None;
        }
        let old = *c;
        *c = Channel::FREE;
        self.free_hint = self.free_hint.min(port as usize);
        while self
            .ports
            .last()
            .is_some_and(|c| c.state == ChanState::Free)
        {
            self.ports.pop();
        }
        Some(old)
    }

    /// Marks `port` pending and, when the guest should look, raises the
    /// upcall of the vCPU it is bound to. Returns that vCPU when it must be
    /// woken or kicked.
    pub fn set_pending(&mut self, t: &Target<'_>, port: u32) -> Option<u32> {
        let chan = *self.get(port)?;
        let vcpu = chan.vcpu;
        if let Some(fifo) = self.fifo.as_mut() {
            fifo_set_pending(fifo, t, port, vcpu, chan.priority)
        } else {
            twolevel_set_pending(t, port, vcpu)
        }
    }

    /// Whether `port` is pending (for `SCHEDOP_poll`).
    pub fn is_pending(&self, t: &Target<'_>, port: u32) -> bool {
        if let Some(fifo) = &self.fifo {
            fifo_word(fifo, port)
                .map(|(h, o)| t.frames.load_u32(h, o) & PENDING != 0)
                .unwrap_or(false)
        } else if let Some((off, bit, _)) = t.word_2l(port) {
            t.load_word(SI_PENDING + off) & bit != 0
        } else {
            false
        }
    }

    /// `EVTCHNOP_unmask`: clears the mask and delivers an event that was
    /// left pending while masked.
    pub fn unmask(&mut self, t: &Target<'_>, port: u32) -> XenResult<Option<u32>> {
        let chan = *self.get(port).ok_or(Errno::EINVAL)?;
        if let Some(fifo) = self.fifo.as_mut() {
            let Some((h, o)) = fifo_word(fifo, port) else {
                return Ok(None);
            };
            let old = t.frames.fetch_and_u32(h, o, !MASKED);
            if old & PENDING != 0 && old & LINKED == 0 {
                return Ok(fifo_link(fifo, t, port, chan.vcpu, chan.priority));
            }
            Ok(None)
        } else {
            let Some((off, bit, sel)) = t.word_2l(port) else {
                return Ok(None);
            };
            let at = t.mask_base() + off;
            let old = if t.compat {
                t.frames
                    .fetch_and_u32(t.shared_info, at, !(bit as u32))
                    .into()
            } else {
                t.frames.fetch_and_u64(t.shared_info, at, !bit)
            };
            let pending = t.load_word(SI_PENDING + off) & bit != 0;
            if old & bit != 0 && pending {
                return Ok(raise_2l(t, sel, chan.vcpu));
            }
            Ok(None)
        }
    }

    /// `EVTCHNOP_init_control`: switches to FIFO (first call) and registers
    /// the control block of one vCPU. `control` must already be validated
    /// (inside one page, 8-byte aligned).
    pub fn init_control(
        &mut self,
        vcpu: u32,
        nr_vcpus: u32,
        control: (Hfn, usize),
    ) -> XenResult<()> {
        if vcpu >= nr_vcpus {
            return Err(Errno::ENOENT);
        }
        let fifo = self.fifo.get_or_insert_with(Fifo::default);
        if fifo.vcpus.len() < nr_vcpus as usize {
            fifo.vcpus.resize(nr_vcpus as usize, None);
        }
        let slot = &mut fifo.vcpus[vcpu as usize];
        if slot.is_some() {
            return Err(Errno::EINVAL);
        }
        *slot = Some(FifoVcpu {
            control,
            tails: [0; ev::EVTCHN_FIFO_MAX_QUEUES],
        });
        Ok(())
    }

    /// Whether `EVTCHNOP_expand_array` may add a page, checked before the
    /// page itself as Xen does: `-EOPNOTSUPP` without the FIFO ABI
    /// (`evtchn_fifo_expand_array`), `-ENOSPC` once every port has its
    /// word (`add_page_to_event_array`).
    pub fn can_expand(&self) -> XenResult<()> {
        let fifo = self.fifo.as_ref().ok_or(Errno::EOPNOTSUPP)?;
        let max_pages = (EVTCHN_FIFO_NR_CHANNELS / EVENT_WORDS_PER_PAGE) as usize;
        if fifo.array.len() >= max_pages {
            return Err(Errno::ENOSPC);
        }
        Ok(())
    }

    /// `EVTCHNOP_expand_array`: adds one event array page.
    pub fn expand_array(&mut self, page: Hfn) -> XenResult<()> {
        self.can_expand()?;
        self.fifo
            .as_mut()
            .ok_or(Errno::EOPNOTSUPP)?
            .array
            .push(page);
        Ok(())
    }

    /// `EVTCHNOP_set_priority` (FIFO only).
    pub fn set_priority(&mut self, port: u32, priority: u32) -> XenResult<()> {
        if self.fifo.is_none() {
            return Err(Errno::ENOSYS);
        }
        if priority > ev::EVTCHN_FIFO_PRIORITY_MIN {
            return Err(Errno::EINVAL);
        }
        let c = self.get_mut(port).ok_or(Errno::EINVAL)?;
        c.priority = priority as u8;
        Ok(())
    }

    /// The pinned guest frames (array pages and control blocks), to release
    /// on teardown.
    pub fn pinned_frames(&self) -> Vec<Hfn> {
        let mut v = Vec::new();
        if let Some(f) = &self.fifo {
            v.extend(f.array.iter().copied());
            v.extend(f.vcpus.iter().flatten().map(|c| c.control.0));
        }
        v
    }

    /// Drops FIFO state, returning to 2-level (`EVTCHNOP_reset`).
    pub fn reset_abi(&mut self) {
        self.fifo = None;
    }
}

fn twolevel_set_pending(t: &Target<'_>, port: u32, vcpu: u32) -> Option<u32> {
    let (off, bit, sel) = t.word_2l(port)?;
    let at = SI_PENDING + off;
    let old = if t.compat {
        t.frames.fetch_or_u32(t.shared_info, at, bit as u32).into()
    } else {
        t.frames.fetch_or_u64(t.shared_info, at, bit)
    };
    if old & bit != 0 {
        return None;
    }
    if t.load_word(t.mask_base() + off) & bit != 0 {
        return None;
    }
    raise_2l(t, sel, vcpu)
}

/// Sets selector bit `sel_bit` and the upcall flag of `vcpu`.
fn raise_2l(t: &Target<'_>, sel_bit: u64, vcpu: u32) -> Option<u32> {
    let (h, o) = (*t.vcpu_info.get(vcpu as usize)?)?;
    let old = if t.compat {
        t.frames
            .fetch_or_u32(h, o + VI_PENDING_SEL_COMPAT, sel_bit as u32)
            .into()
    } else {
        t.frames.fetch_or_u64(h, o + VI_PENDING_SEL, sel_bit)
    };
    if old & sel_bit == 0 {
        t.frames.store_u8(h, o, 1);
    }
    Some(vcpu)
}

fn fifo_word(fifo: &Fifo, port: u32) -> Option<(Hfn, usize)> {
    let page = *fifo.array.get((port / EVENT_WORDS_PER_PAGE) as usize)?;
    Some((page, (port % EVENT_WORDS_PER_PAGE) as usize * 4))
}

fn fifo_set_pending(
    fifo: &mut Fifo,
    t: &Target<'_>,
    port: u32,
    vcpu: u32,
    prio: u8,
) -> Option<u32> {
    // A port beyond the array has no word: the event is lost, as in Xen.
    let (h, o) = fifo_word(fifo, port)?;
    let old = t.frames.fetch_or_u32(h, o, PENDING);
    if old & (MASKED | LINKED) != 0 {
        return None;
    }
    fifo_link(fifo, t, port, vcpu, prio)
}

/// Links `port` at the tail of its queue and raises READY.
fn fifo_link(fifo: &mut Fifo, t: &Target<'_>, port: u32, vcpu: u32, prio: u8) -> Option<u32> {
    let (h, o) = fifo_word(fifo, port)?;
    let q = fifo.vcpus.get_mut(vcpu as usize)?.as_mut()?;
    let old = t.frames.fetch_or_u32(h, o, LINKED);
    if old & LINKED != 0 {
        return None;
    }
    let prio = prio as usize & (ev::EVTCHN_FIFO_MAX_QUEUES - 1);
    let tail = q.tails[prio];
    let mut linked = false;
    if tail != 0
        && tail != port
        && let Some(page) = fifo.array.get((tail / EVENT_WORDS_PER_PAGE) as usize)
    {
        let to = (tail % EVENT_WORDS_PER_PAGE) as usize * 4;
        linked = set_link(t.frames, *page, to, port);
    }
    let (ch, co) = q.control;
    if !linked {
        // The queue was empty (or the guest consumed the old tail): the
        // port becomes the head. `head[prio]` is at 8 + 4 * prio.
        let head = co + 8 + prio * 4;
        let cur = t.frames.load_u32(ch, head);
        t.frames.cmpxchg_u32(ch, head, cur, port);
    }
    q.tails[prio] = port;
    let bit = 1u32 << prio;
    let ready = t.frames.fetch_or_u32(ch, co, bit);
    if ready & bit == 0 {
        if let Some(Some((vh, vo))) = t.vcpu_info.get(vcpu as usize) {
            t.frames.store_u8(*vh, *vo, 1);
        }
        return Some(vcpu);
    }
    // READY was already set: the guest is (or will be) draining the queue,
    // but make sure the upcall flag is up for a guest that cleared it.
    if let Some(Some((vh, vo))) = t.vcpu_info.get(vcpu as usize) {
        t.frames.store_u8(*vh, *vo, 1);
    }
    Some(vcpu)
}

/// Points the LINK of the word at (`h`, `o`) to `port` while that word is
/// still LINKED; gives up after a few lost races.
fn set_link(frames: &dyn FrameAccess, h: Hfn, o: usize, port: u32) -> bool {
    let mut w = frames.load_u32(h, o);
    for _ in 0..LINK_RETRIES {
        if w & LINKED == 0 {
            return false;
        }
        let new = (w & !LINK_MASK) | port;
        let found = frames.cmpxchg_u32(h, o, w, new);
        if found == w {
            return true;
        }
        w = found;
    }
    false
}

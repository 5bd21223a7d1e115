//! The p2m: what each guest frame of a domain is backed by.
//!
//! Every change goes to both the software map (consulted by hypercalls that
//! touch guest memory) and the hardware nested page tables, so the two never
//! disagree.

use alloc::boxed::Box;
use hashbrown::HashMap;

use crate::arch::{NestedPaging, NptError, P2mPerms};
use crate::types::{DomId, Gfn, Hfn};

/// What a guest frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum P2mKind {
    /// Ordinary RAM owned by the domain.
    Ram,
    /// A special page owned by the domain (console ring, xenstore ring).
    Special,
    /// The domain's shared_info page, placed by `add_to_physmap`.
    SharedInfo,
    /// A grant-table frame of the domain, placed by `add_to_physmap`.
    GrantTable(u32),
    /// A frame of another domain mapped through a grant.
    Foreign {
        /// The granting domain.
        owner: DomId,
    },
}

impl P2mKind {
    /// Whether the frame belongs to this domain (and is freed with it).
    pub fn owned(self) -> bool {
        matches!(self, P2mKind::Ram | P2mKind::Special)
    }
}

/// One p2m entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct P2mEntry {
    /// The backing host frame.
    pub hfn: Hfn,
    /// What the frame is.
    pub kind: P2mKind,
    /// The guest's permissions.
    pub perms: P2mPerms,
}

/// A domain's guest-physical to host-physical map.
pub struct P2m {
    entries: HashMap<u64, P2mEntry>,
    npt: Box<dyn NestedPaging>,
    dirty: bool,
}

impl P2m {
    /// An empty map over the given nested page tables.
    pub fn new(npt: Box<dyn NestedPaging>) -> Self {
        P2m {
            entries: HashMap::new(),
            npt,
            dirty: false,
        }
    }

    /// Makes room for `additional` more entries at once (a domain build
    /// knows how many frames it will map), instead of growing and
    /// rehashing step by step.
    pub fn reserve(&mut self, additional: usize) {
        self.entries.reserve(additional);
    }

    /// Looks up a guest frame.
    #[inline]
    pub fn get(&self, gfn: Gfn) -> Option<P2mEntry> {
        self.entries.get(&gfn.0).copied()
    }

    /// Maps `gfn`, returning the entry it replaced.
    pub fn set(&mut self, gfn: Gfn, entry: P2mEntry) -> Result<Option<P2mEntry>, NptError> {
        self.npt.map(gfn, entry.hfn, entry.perms)?;
        self.dirty = true;
        Ok(self.entries.insert(gfn.0, entry))
    }

    /// Unmaps `gfn`, returning what was there.
    pub fn remove(&mut self, gfn: Gfn) -> Option<P2mEntry> {
        let old = self.entries.remove(&gfn.0);
        if old.is_some() {
            self.npt.unmap(gfn);
            self.dirty = true;
        }
        old
    }

    /// Flushes the nested TLBs if the map changed since the last flush.
    pub fn flush(&mut self) {
        if self.dirty {
            self.npt.flush();
            self.dirty = false;
        }
    }

    /// Number of mapped guest frames.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The highest mapped guest frame.
    pub fn max_gfn(&self) -> Option<Gfn> {
        self.entries.keys().max().map(|&g| Gfn(g))
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Gfn, P2mEntry)> + '_ {
        self.entries.iter().map(|(&g, &e)| (Gfn(g), e))
    }

    /// Removes every entry, returning them (for teardown).
    pub fn drain(&mut self) -> alloc::vec::Vec<(Gfn, P2mEntry)> {
        let all: alloc::vec::Vec<_> = self.entries.drain().map(|(g, e)| (Gfn(g), e)).collect();
        for (g, _) in &all {
            self.npt.unmap(*g);
        }
        self.npt.flush();
        all
    }

    /// The root of the hardware tables, for the backend.
    pub fn npt_root(&self) -> u64 {
        self.npt.root()
    }
}

//! The store: a persistent tree of nodes with shared subtrees.
//!
//! Every node sits behind an `Arc`, and a change copies only the nodes on
//! the path from the root to the change (`Arc::make_mut`), and only those
//! that someone else still holds. Taking a snapshot is cloning the root
//! `Arc`: O(1), whatever the store's size. With no snapshot alive the same
//! code changes nodes in place, so the common case (no open transaction)
//! pays no copies at all.
//!
//! Children are kept sorted by name, so finding one is a binary search
//! (`/local/domain` has a child per domain), and each remembers when it was
//! added: DIRECTORY answers in insertion order, as C xenstored's child
//! lists do.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::path::components;
use crate::perms::{Perm, Perms};

/// A node's generation when it does not exist (C's `NO_GENERATION`).
pub const NO_GENERATION: u64 = u64::MAX;

/// A child link: its name, when it was added (a global generation count,
/// for insertion order) and the node.
#[derive(Clone, Debug)]
pub struct Child {
    /// The name (one path component).
    pub name: Arc<str>,
    /// The generation count when it was added.
    pub seq: u64,
    /// The child node.
    pub node: Arc<Node>,
}

/// One node.
#[derive(Clone, Debug)]
pub struct Node {
    /// The value (any bytes).
    pub value: Vec<u8>,
    /// Its permissions (entry 0: owner and default access).
    pub perms: Perms,
    /// Children, sorted by name.
    pub children: Vec<Child>,
    /// The global generation count at the node's last change (a child added
    /// or removed counts as a change).
    pub generation: u64,
}

impl Node {
    /// A leaf.
    pub fn new(value: Vec<u8>, perms: Perms, generation: u64) -> Self {
        Self {
            value,
            perms,
            children: Vec::new(),
            generation,
        }
    }

    /// The child called `name`.
    pub fn child(&self, name: &str) -> Option<&Arc<Node>> {
        self.child_index(name).ok().map(|i| &self.children[i].node)
    }

    fn child_index(&self, name: &str) -> Result<usize, usize> {
        let name = name.as_bytes();
        self.children
            .binary_search_by(|c| name_order(c.name.as_bytes(), name))
    }

    /// The children in insertion order.
    pub fn children_in_order(&self) -> Vec<&Child> {
        let mut v: Vec<&Child> = self.children.iter().collect();
        v.sort_unstable_by_key(|c| c.seq);
        v
    }

    /// The bytes C xenstored's `node-size` quota counts: its record header
    /// (20 bytes), 8 per permission, the value and each child's name with
    /// its NUL.
    pub fn record_size(&self) -> usize {
        20 + 8 * self.perms.len()
            + self.value.len()
            + self
                .children
                .iter()
                .map(|c| c.name.len() + 1)
                .sum::<usize>()
    }

    /// The heap bytes this node's buffers and its subtree hold: value,
    /// perms and child buffers, and for each child its name's and its
    /// node's `Arc` allocation (two counters each). The allocator's own
    /// overhead is not counted; a subtree shared with a snapshot is counted
    /// here as if it were not.
    pub fn heap_bytes(&self) -> usize {
        let counters = 2 * core::mem::size_of::<usize>();
        let own = self.value.capacity()
            + self.perms.capacity() * core::mem::size_of::<Perm>()
            + self.children.capacity() * core::mem::size_of::<Child>();
        own + self
            .children
            .iter()
            .map(|c| {
                counters
                    + c.name.len()
                    + counters
                    + core::mem::size_of::<Node>()
                    + c.node.heap_bytes()
            })
            .sum::<usize>()
    }

    /// Child names, each followed by a NUL (DIRECTORY's reply).
    pub fn child_list(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for c in self.children_in_order() {
            out.extend_from_slice(c.name.as_bytes());
            out.push(0);
        }
        out
    }

    /// The owner (entry 0's domain).
    pub fn owner(&self) -> u32 {
        self.perms.first().map_or(0, |p| p.domid)
    }

    /// Visits this node and every descendant (depth first, parents first)
    /// with its absolute path.
    pub fn walk(&self, path: &str, f: &mut dyn FnMut(&str, &Node)) {
        f(path, self);
        for c in self.children_in_order() {
            let mut p = String::with_capacity(path.len() + 1 + c.name.len());
            p.push_str(path);
            if path != "/" {
                p.push('/');
            }
            p.push_str(&c.name);
            c.node.walk(&p, f);
        }
    }
}

/// The order children are kept in: by length, then bytewise. Any total
/// order would do; this one settles most comparisons on the length, and
/// short names compare inline without a `memcmp` call.
pub fn name_order(a: &[u8], b: &[u8]) -> core::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| {
        for (x, y) in a.iter().zip(b) {
            if x != y {
                return x.cmp(y);
            }
        }
        core::cmp::Ordering::Equal
    })
}

/// Finds a node by absolute path.
pub fn lookup<'a>(root: &'a Node, path: &str) -> Option<&'a Node> {
    let mut cur = root;
    for c in components(path) {
        cur = cur.child(c)?;
    }
    Some(cur)
}

/// The node at `path`, made unique (copied out of any snapshot that shares
/// it, with its ancestors). `None` if it does not exist; nothing is copied
/// then.
pub fn lookup_mut<'a>(root: &'a mut Arc<Node>, path: &str) -> Option<&'a mut Node> {
    lookup(root, path)?;
    lookup_mut_existing(root, path)
}

/// [`lookup_mut`] for a node known to exist (if it does not, the
/// ancestors found may have been copied for nothing).
pub fn lookup_mut_existing<'a>(root: &'a mut Arc<Node>, path: &str) -> Option<&'a mut Node> {
    let mut cur = Arc::make_mut(root);
    for c in components(path) {
        let i = cur.child_index(c).ok()?;
        cur = Arc::make_mut(&mut cur.children[i].node);
    }
    Some(cur)
}

/// Adds `child` as `name` under the (existing) node at `parent`, which gets
/// generation `generation`. The name must be absent.
pub fn insert_child(
    root: &mut Arc<Node>,
    parent: &str,
    name: &str,
    child: Node,
    generation: u64,
) -> bool {
    let Some(p) = lookup_mut(root, parent) else {
        return false;
    };
    let Err(i) = p.child_index(name) else {
        return false;
    };
    p.children.insert(
        i,
        Child {
            name: Arc::from(name),
            seq: generation,
            node: Arc::new(child),
        },
    );
    p.generation = generation;
    true
}

/// Unlinks the subtree at `path` (not the root) and returns it; the parent
/// gets generation `generation`.
pub fn remove(root: &mut Arc<Node>, path: &str, generation: u64) -> Option<Arc<Node>> {
    let name = components(path).last()?;
    let parent = crate::path::parent(path);
    lookup(root, path)?;
    let p = lookup_mut(root, parent)?;
    let i = p.child_index(name).ok()?;
    p.generation = generation;
    Some(p.children.remove(i).node)
}

/// The perms a new node under a parent with `parent_perms` gets: a copy,
/// owned by the creator when the creator is unprivileged.
pub fn inherit(parent_perms: &[Perm], creator: u32, creator_privileged: bool) -> Perms {
    let mut perms: Perms = parent_perms.to_vec();
    if perms.is_empty() {
        perms.push(Perm {
            domid: 0,
            access: crate::perms::XS_PERM_NONE,
        });
    }
    if !creator_privileged {
        perms[0].domid = creator;
    }
    perms
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn leaf(v: &str, g: u64) -> Node {
        Node::new(
            v.as_bytes().to_vec(),
            vec![Perm {
                domid: 0,
                access: 0,
            }],
            g,
        )
    }

    #[test]
    fn snapshots_share_and_diverge() {
        let mut root = Arc::new(leaf("", 0));
        assert!(insert_child(&mut root, "/", "a", leaf("1", 1), 1));
        assert!(insert_child(&mut root, "/a", "b", leaf("2", 2), 2));
        assert!(insert_child(&mut root, "/", "c", leaf("3", 3), 3));
        let snap = root.clone();
        lookup_mut(&mut root, "/a/b").unwrap().value = b"new".to_vec();
        assert_eq!(lookup(&snap, "/a/b").unwrap().value, b"2");
        assert_eq!(lookup(&root, "/a/b").unwrap().value, b"new");
        // The untouched subtree is still shared.
        assert!(Arc::ptr_eq(
            root.child("c").unwrap(),
            snap.child("c").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            root.child("a").unwrap(),
            snap.child("a").unwrap()
        ));
        let gone = remove(&mut root, "/a", 9).unwrap();
        assert_eq!(gone.child("b").unwrap().value, b"new");
        assert!(lookup(&root, "/a").is_none());
        assert!(lookup(&snap, "/a/b").is_some());
        assert_eq!(root.generation, 9);
        assert!(remove(&mut root, "/", 10).is_none());
        assert!(insert_child(&mut root, "/c", "x", leaf("", 0), 11));
        assert!(!insert_child(&mut root, "/c", "x", leaf("", 0), 12));
        assert!(!insert_child(&mut root, "/nope", "x", leaf("", 0), 13));
    }

    #[test]
    fn sizes_and_lists() {
        let mut root = Arc::new(leaf("", 0));
        insert_child(&mut root, "/", "c", leaf("", 1), 1);
        insert_child(&mut root, "/", "ab", leaf("xyz", 2), 2);
        // Insertion order, not name order.
        assert_eq!(root.child_list(), b"c\0ab\0");
        assert_eq!(root.record_size(), 20 + 8 + 3 + 2);
        // Root buffers: perms (1 x 8), children (capacity >= 2 x 32); each
        // child: two Arc allocations (16 counters each), name, Node, and
        // its own value and perms.
        let node = core::mem::size_of::<Node>();
        let want_min = 8 + 2 * 32 + (16 + 1 + 16 + node + 8) + (16 + 2 + 16 + node + 3 + 8);
        assert!(
            root.heap_bytes() >= want_min,
            "{} < {want_min}",
            root.heap_bytes()
        );
        assert!(root.heap_bytes() < want_min + 256);
        let mut seen = Vec::new();
        root.walk("/", &mut |p, _| seen.push(String::from(p)));
        assert_eq!(seen, ["/", "/c", "/ab"]);
    }
}

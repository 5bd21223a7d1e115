//! The server: connections, request dispatch, transactions, watches,
//! domains and quotas. Transports hand it whole messages per connection
//! and take back whole messages (replies and watch events).

use alloc::borrow::Cow;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use xen_abi::XsdSockmsg;

use crate::path::{self, INTRODUCE_DOMAIN, RELEASE_DOMAIN, atoi, canonicalize, is_child};
use crate::perms::{
    Caller, Perm, Perms, XS_PERM_NONE, XS_PERM_OWNER, XS_PERM_READ, XS_PERM_WRITE, parse_list,
};
use crate::tree::{self, NO_GENERATION, Node, lookup, lookup_mut};
use crate::wire::*;

/// A connection's number, chosen by the server.
pub type ConnId = u32;

/// Limits on what an unprivileged domain may hold (C xenstored's defaults,
/// `quotas[]` in `tools/xenstored/domain.c`), and the bounds on what the
/// server queues for any connection. Privileged callers are exempt from the
/// first group.
#[derive(Clone, Debug)]
pub struct Quotas {
    /// Nodes a domain may own (ENOSPC beyond).
    pub nodes_per_domain: usize,
    /// Watches a domain may hold (E2BIG beyond; as in C, the check is
    /// "more than this many already", so one more fits).
    pub watches_per_domain: usize,
    /// Open transactions per connection (ENOSPC beyond; same "more than"
    /// check as C).
    pub transactions_per_conn: usize,
    /// Nodes one transaction may touch (ENOSPC, and the transaction fails).
    pub nodes_per_transaction: usize,
    /// Permission entries per node (ENOSPC).
    pub perms_per_node: usize,
    /// A node's record size: header, perms, value and child names (ENOSPC
    /// at or beyond).
    pub node_size: usize,
    /// Replies an unprivileged connection may leave unread before the
    /// transport stops taking its requests.
    pub outstanding_requests: usize,
    /// The same for privileged connections (socket clients): a client that
    /// never reads still cannot grow the server without bound.
    pub outstanding_requests_privileged: usize,
    /// Watch events queued per connection; further events are dropped (and
    /// counted) until the client reads.
    pub queued_events: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            nodes_per_domain: 1000,
            watches_per_domain: 128,
            transactions_per_conn: 10,
            nodes_per_transaction: 1024,
            perms_per_node: 5,
            node_size: 2048,
            outstanding_requests: 20,
            outstanding_requests_privileged: 1024,
            queued_events: 1024,
        }
    }
}

/// What the embedder does for `INTRODUCE` and `RELEASE`: attach a domain's
/// ring page and event channel to the new connection, or detach them.
pub trait DomainOps {
    /// Attach domain `domid`'s ring (C xenstored maps grant
    /// `GNTTAB_RESERVED_XENSTORE` and ignores `gfn`) and bind its event
    /// channel `port`, for connection `conn`. An error is the reply.
    fn introduce(&mut self, domid: u32, gfn: u64, port: u32, conn: ConnId) -> Result<(), XsError>;
    /// Detach the domain's ring and event channel.
    fn release(&mut self, domid: u32, conn: ConnId);
}

/// Accepts every introduction without a transport: domains exist in the
/// store's bookkeeping only (the host daemon, tests).
#[derive(Debug, Default)]
pub struct NoTransport;

impl DomainOps for NoTransport {
    fn introduce(&mut self, _: u32, _: u64, _: u32, _: ConnId) -> Result<(), XsError> {
        Ok(())
    }
    fn release(&mut self, _: u32, _: ConnId) {}
}

#[derive(Clone, Copy, Debug)]
struct Access {
    generation: u64,
    check: bool,
}

/// An open transaction: its own root (a snapshot at START, then changed in
/// place as the transaction writes) and what it touched.
#[derive(Clone)]
struct Transaction {
    root: Arc<Node>,
    log: TxLog,
    /// Every change the transaction made, in order: replayed on the global
    /// store at commit.
    ops: Vec<TxOp>,
    /// How many of `ops` are already made in `root`. A change is checked
    /// and answered at once but made in `root` only when a later request
    /// of the transaction needs to see it, so the common pattern (read,
    /// write, commit) copies nothing.
    materialized: usize,
}

/// A change made in a transaction.
#[derive(Clone, Debug)]
enum TxOp {
    Write(String, Vec<u8>),
    Mkdir(String),
    Rm(String),
    SetPerms(String, Perms),
}

impl TxOp {
    fn run(&self, v: &mut View<'_>) -> Result<(), XsError> {
        match self {
            TxOp::Write(p, value) => v.write(p, value),
            TxOp::Mkdir(p) => v.mkdir(p),
            TxOp::Rm(p) => v.rm(p),
            TxOp::SetPerms(p, perms) => v.set_perms(p, perms.clone()),
        }
    }
}

#[derive(Clone, Default)]
struct TxLog {
    accessed: BTreeMap<String, Access>,
    entry_delta: BTreeMap<u32, i64>,
    failed: bool,
}

#[derive(Clone, Debug)]
struct Watch {
    path: String,
    token: Vec<u8>,
    relative: bool,
    depth: Option<u32>,
}

#[derive(Debug)]
enum Output {
    Reply(Vec<u8>),
    Event { path: String, token: Vec<u8> },
}

struct Connection {
    domid: u32,
    privileged: bool,
    target: Option<u32>,
    domain: bool,
    transactions: BTreeMap<u32, Transaction>,
    next_tx: u32,
    watches: Vec<Watch>,
    out: VecDeque<Output>,
    pending_replies: usize,
    queued_events: usize,
    dropped_events: u64,
    requests: u64,
}

impl Connection {
    fn caller(&self) -> Caller {
        Caller {
            domid: self.domid,
            privileged: self.privileged,
            target: self.target,
        }
    }
}

#[derive(Debug)]
struct DomainRec {
    conn: ConnId,
    shutdown: bool,
}

struct Fire {
    path: String,
    perms: Perms,
    exact: bool,
}

/// A xenstore server.
pub struct Xenstored {
    root: Arc<Node>,
    generation: u64,
    entries: BTreeMap<u32, u32>,
    conns: BTreeMap<ConnId, Connection>,
    next_conn: ConnId,
    domains: BTreeMap<u32, DomainRec>,
    privileged: Vec<u32>,
    special: [(&'static str, Perms); 2],
    quotas: Quotas,
    pending_first_event: Option<(String, Vec<u8>)>,
    /// Whether any connection holds a watch (kept by `recount_watches`
    /// after every change to the watch lists), so that changes nobody
    /// watches cost no event work.
    watching: bool,
}

impl Default for Xenstored {
    fn default() -> Self {
        Self::new()
    }
}

/// The pieces of an operation that may run in a transaction.
struct View<'a> {
    root: &'a mut Arc<Node>,
    log: Option<&'a mut TxLog>,
    generation: &'a mut u64,
    entries: &'a BTreeMap<u32, u32>,
    caller: Caller,
    quotas: &'a Quotas,
    entry_changes: Vec<(u32, i64)>,
    fires: Vec<Fire>,
    /// Whether changes should be reported (outside a transaction, with
    /// some watch anywhere).
    fires_wanted: bool,
    /// Check and account a change without making it (a transaction's
    /// change is made later: see [`TxOp`]).
    dry: bool,
    /// Replaying changes already checked: the node-count quota is not
    /// checked again (commit checked the transaction's total).
    replay: bool,
}

impl<'a> View<'a> {
    /// A view that makes already-checked changes on `root`: a
    /// transaction's own tree, or the global one at commit.
    fn replay(
        root: &'a mut Arc<Node>,
        generation: &'a mut u64,
        entries: &'a BTreeMap<u32, u32>,
        caller: Caller,
        quotas: &'a Quotas,
        fires_wanted: bool,
    ) -> Self {
        View {
            root,
            log: None,
            generation,
            entries,
            caller,
            quotas,
            entry_changes: Vec::new(),
            fires: Vec::new(),
            fires_wanted,
            dry: false,
            replay: true,
        }
    }

    fn report(&mut self, path: &str, perms: Perms, exact: bool) {
        if self.fires_wanted {
            self.fires.push(Fire {
                path: String::from(path),
                perms,
                exact,
            });
        }
    }

    fn next_gen(&mut self) -> u64 {
        let g = *self.generation;
        *self.generation += 1;
        g
    }

    fn unprivileged(&self) -> bool {
        !self.caller.privileged
    }

    /// Records a first access in the transaction (reads are checked at
    /// commit).
    fn touch(&mut self, path: &str, read: bool) -> Result<(), XsError> {
        match self.log.as_deref() {
            None => return Ok(()),
            Some(log) if log.accessed.contains_key(path) => return Ok(()),
            Some(_) => {}
        }
        let generation = lookup(self.root, path).map_or(NO_GENERATION, |n| n.generation);
        self.record(path, generation, read)
    }

    fn record(&mut self, path: &str, generation: u64, read: bool) -> Result<(), XsError> {
        let limit = self.quotas.nodes_per_transaction;
        let unpriv = self.unprivileged();
        match self.log.as_deref_mut() {
            Some(log) => record_in(log, path, generation, read, limit, unpriv),
            None => Ok(()),
        }
    }

    fn read(&mut self, path: &str) -> Result<Option<&Node>, XsError> {
        if self.log.is_some() {
            self.touch(path, true)?;
        }
        Ok(lookup(self.root, path))
    }

    /// C's `get_node`: the node if the caller has `perm` on it; for a
    /// missing node, EACCES when the nearest existing ancestor denies
    /// `perm` (not revealing what exists), else ENOENT.
    fn get_node(&mut self, path: &str, perm: u8) -> Result<&Node, XsError> {
        let caller = self.caller;
        let limit = self.quotas.nodes_per_transaction;
        let found = lookup(self.root, path);
        if let Some(log) = self.log.as_deref_mut() {
            let generation = found.map_or(NO_GENERATION, |n| n.generation);
            record_in(log, path, generation, true, limit, !caller.privileged)?;
        }
        if let Some(node) = found {
            return if caller.may(&node.perms, perm) {
                Ok(node)
            } else {
                Err(XsError::EACCES)
            };
        }
        {
            let mut p = path;
            while p != "/" {
                p = path::parent(p);
                if let Some(n) = lookup(self.root, p) {
                    if !caller.may(&n.perms, perm) {
                        return Err(XsError::EACCES);
                    }
                    break;
                }
            }
        }
        Err(XsError::ENOENT)
    }

    fn entries_of(&self, domid: u32) -> i64 {
        if self.replay {
            return 0;
        }
        let global = i64::from(self.entries.get(&domid).copied().unwrap_or(0));
        let delta = self
            .log
            .as_ref()
            .and_then(|l| l.entry_delta.get(&domid).copied())
            .unwrap_or(0);
        let pending: i64 = self
            .entry_changes
            .iter()
            .filter(|(d, _)| *d == domid)
            .map(|(_, n)| n)
            .sum();
        global + delta + pending
    }

    fn changed_entries(&mut self, domid: u32, n: i64) {
        if let Some(log) = self.log.as_deref_mut() {
            *log.entry_delta.entry(domid).or_default() += n;
        }
        self.entry_changes.push((domid, n));
    }

    /// Creates `path` and any missing ancestors (empty), the last with
    /// `value`; perms are inherited, owned by an unprivileged creator.
    fn create(&mut self, path: &str, value: &[u8]) -> Result<(), XsError> {
        let mut missing = Vec::new();
        let mut p = path;
        while lookup(self.root, p).is_none() {
            missing.push(p);
            p = path::parent(p);
        }
        let top = p;
        for m in &missing {
            self.touch(m, true)?;
        }
        self.touch(top, true)?;
        let caller = self.caller;
        let parent_perms = lookup(self.root, top).map(|n| n.perms.clone());
        let Some(mut perms) = parent_perms else {
            return Err(XsError::ENOENT);
        };
        // Quotas: the nodes the creator will own, and the record sizes.
        if self.unprivileged() {
            let owner = tree::inherit(&perms, caller.domid, false)[0].domid;
            let have = self.entries_of(owner);
            if have + missing.len() as i64 > self.quotas.nodes_per_domain as i64 {
                return Err(XsError::ENOSPC);
            }
            let leaf_size = 20 + 8 * perms.len() + value.len();
            let name_len = missing[0].len() - path::parent(missing[0]).len();
            let parent_size = lookup(self.root, top).map_or(0, |n| n.record_size())
                + missing.last().map_or(0, |m| m.len() - top.len());
            if leaf_size >= self.quotas.node_size
                || parent_size >= self.quotas.node_size
                || name_len >= self.quotas.node_size
            {
                return Err(XsError::ENOSPC);
            }
        }
        let mut parent = top;
        for (i, m) in missing.iter().enumerate().rev() {
            perms = tree::inherit(&perms, caller.domid, caller.privileged);
            if !self.dry {
                let generation = self.next_gen();
                let v = if i == 0 { value.to_vec() } else { Vec::new() };
                let name = path::components(m).last().unwrap_or("");
                let node = Node::new(v, perms.clone(), generation);
                if !tree::insert_child(self.root, parent, name, node, generation) {
                    return Err(XsError::EIO);
                }
            }
            self.touch(parent, false)?;
            self.touch(m, false)?;
            self.changed_entries(perms[0].domid, 1);
            parent = m;
        }
        self.report(path, perms, false);
        Ok(())
    }

    fn write(&mut self, path: &str, value: &[u8]) -> Result<(), XsError> {
        match self.get_node(path, XS_PERM_WRITE) {
            Ok(node) => {
                let size = node.record_size() - node.value.len() + value.len();
                if self.unprivileged() && size >= self.quotas.node_size {
                    return Err(XsError::ENOSPC);
                }
                self.touch(path, false)?;
                if self.dry {
                    return Ok(());
                }
                let generation = self.next_gen();
                let node = tree::lookup_mut_existing(self.root, path).ok_or(XsError::EIO)?;
                node.value = value.to_vec();
                node.generation = generation;
                if self.fires_wanted {
                    let perms = node.perms.clone();
                    self.report(path, perms, false);
                }
                Ok(())
            }
            Err(XsError::ENOENT) => self.create(path, value),
            Err(e) => Err(e),
        }
    }

    fn mkdir(&mut self, path: &str) -> Result<(), XsError> {
        match self.get_node(path, XS_PERM_WRITE) {
            Ok(_) => Ok(()),
            Err(XsError::ENOENT) => self.create(path, b""),
            Err(e) => Err(e),
        }
    }

    fn rm(&mut self, path: &str) -> Result<(), XsError> {
        match self.get_node(path, XS_PERM_WRITE) {
            Ok(_) => {}
            Err(XsError::ENOENT) => {
                let parent = path::parent(path);
                return match self.read(parent)? {
                    Some(_) => Ok(()),
                    None => Err(XsError::ENOENT),
                };
            }
            Err(e) => return Err(e),
        }
        if path == "/" {
            return Err(XsError::EINVAL);
        }
        let parent = path::parent(path);
        self.touch(parent, true)?;
        self.touch(parent, false)?;
        self.touch(path, false)?;
        if self.dry {
            let mut owners = Vec::new();
            if let Some(n) = lookup(self.root, path) {
                n.walk(path, &mut |_, n| owners.push(n.owner()));
            }
            for o in owners {
                self.changed_entries(o, -1);
            }
            return Ok(());
        }
        let generation = self.next_gen();
        let gone = tree::remove(self.root, path, generation).ok_or(XsError::EIO)?;
        self.removed(path, &gone);
        Ok(())
    }

    /// Accounts for and reports a removed subtree: each node's owner loses
    /// one entry; watches on each removed descendant fire exactly, and
    /// watches on the top or above fire for it.
    fn removed(&mut self, path: &str, gone: &Node) {
        let mut owners = Vec::new();
        let mut fires = Vec::new();
        let wanted = self.fires_wanted;
        gone.walk(path, &mut |p, n| {
            owners.push(n.owner());
            if wanted {
                fires.push(Fire {
                    path: String::from(p),
                    perms: n.perms.clone(),
                    exact: p != path,
                });
            }
        });
        for o in owners {
            self.changed_entries(o, -1);
        }
        // Descendants first, then the top (as C deletes children first).
        if !fires.is_empty() {
            fires.rotate_left(1);
        }
        self.fires.extend(fires);
    }

    fn set_perms(&mut self, path: &str, perms: Perms) -> Result<(), XsError> {
        let node = self.get_node(path, XS_PERM_WRITE | XS_PERM_OWNER)?;
        let old = node.perms.clone();
        let size = node.record_size() - 8 * old.len() + 8 * perms.len();
        if self.unprivileged() && perms[0].domid != old[0].domid {
            return Err(XsError::EPERM);
        }
        if self.unprivileged() && size >= self.quotas.node_size {
            return Err(XsError::ENOSPC);
        }
        if old[0].domid != perms[0].domid {
            self.changed_entries(old[0].domid, -1);
            self.changed_entries(perms[0].domid, 1);
        }
        self.touch(path, false)?;
        if self.dry {
            return Ok(());
        }
        let generation = self.next_gen();
        let node = lookup_mut(self.root, path).ok_or(XsError::EIO)?;
        node.perms = perms.clone();
        node.generation = generation;
        // Watchers that could read the node before or after hear of it.
        let mut either = perms;
        either.extend(old.iter().skip(1).copied());
        if !old.is_empty() && either[0].access == XS_PERM_NONE {
            either[0].access = old[0].access;
        }
        self.report(path, either, false);
        Ok(())
    }
}

/// Records a first access in a transaction's log (C's `access_node`).
fn record_in(
    log: &mut TxLog,
    path: &str,
    generation: u64,
    read: bool,
    limit: usize,
    unpriv: bool,
) -> Result<(), XsError> {
    if log.accessed.contains_key(path) {
        return Ok(());
    }

    if unpriv && log.accessed.len() >= limit {
        log.failed = true;
        return Err(XsError::ENOSPC);
    }
    log.accessed.insert(
        String::from(path),
        Access {
            generation,
            check: read,
        },
    );
    Ok(())
}

/// The strings of a payload: each NUL-terminated piece (a trailing piece
/// without NUL is not a string, as C's `get_strings`).
fn strings(payload: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = payload;
    while let Some(i) = rest.iter().position(|&b| b == 0) {
        out.push(&rest[..i]);
        rest = &rest[i + 1..];
    }
    out
}

/// C's `onearg`: the payload is exactly one NUL-terminated string.
fn onearg(payload: &[u8]) -> Result<&[u8], XsError> {
    match payload.iter().position(|&b| b == 0) {
        Some(i) if i + 1 == payload.len() => Ok(&payload[..i]),
        _ => Err(XsError::EINVAL),
    }
}

fn with_nul(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

const OK: &[u8] = b"OK\0";

impl Xenstored {
    /// An empty store with C xenstored's initial nodes (`/` and `/tool`,
    /// owned by domain 0, no access for others) and default quotas.
    pub fn new() -> Self {
        Self::with_quotas(Quotas::default())
    }

    /// The same with other quotas.
    pub fn with_quotas(quotas: Quotas) -> Self {
        let none0 = vec![Perm {
            domid: 0,
            access: XS_PERM_NONE,
        }];
        let mut root = Arc::new(Node::new(Vec::new(), none0.clone(), 0));
        tree::insert_child(
            &mut root,
            "/",
            "tool",
            Node::new(Vec::new(), none0.clone(), 1),
            1,
        );
        let mut entries = BTreeMap::new();
        entries.insert(0, 2);
        Self {
            root,
            generation: 2,
            entries,
            conns: BTreeMap::new(),
            next_conn: 1,
            domains: BTreeMap::new(),
            privileged: vec![0],
            special: [(INTRODUCE_DOMAIN, none0.clone()), (RELEASE_DOMAIN, none0)],
            quotas,
            pending_first_event: None,
            watching: false,
        }
    }

    /// The quotas in force.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Declares domain `domid` privileged (or not): it may then do what
    /// domain 0 does. Domain 0 is privileged from the start.
    pub fn set_privileged(&mut self, domid: u32, privileged: bool) {
        self.privileged.retain(|&d| d != domid);
        if privileged {
            self.privileged.push(domid);
        }
        for c in self.conns.values_mut() {
            if c.domid == domid && c.domain {
                c.privileged = privileged;
            }
        }
    }

    fn add_conn(&mut self, domid: u32, privileged: bool, domain: bool) -> ConnId {
        let id = self.next_conn;
        self.next_conn = self.next_conn.wrapping_add(1).max(1);
        self.conns.insert(
            id,
            Connection {
                domid,
                privileged,
                target: None,
                domain,
                transactions: BTreeMap::new(),
                next_tx: 1,
                watches: Vec::new(),
                out: VecDeque::new(),
                pending_replies: 0,
                queued_events: 0,
                dropped_events: 0,
                requests: 0,
            },
        );
        id
    }

    /// A socket client: domain 0, privileged.
    pub fn connect_socket(&mut self) -> ConnId {
        self.add_conn(0, true, false)
    }

    /// A domain's ring connection made by the embedder itself (a boot-time
    /// introduction, without an `INTRODUCE` message); fires
    /// `@introduceDomain`. An already introduced domain keeps its
    /// connection, which is returned.
    pub fn introduce_domain(&mut self, domid: u32) -> ConnId {
        if let Some(d) = self.domains.get(&domid) {
            return d.conn;
        }
        let privileged = self.privileged.contains(&domid);
        let conn = self.add_conn(domid, privileged, true);
        self.domains.insert(
            domid,
            DomainRec {
                conn,
                shutdown: false,
            },
        );
        self.fire_special(INTRODUCE_DOMAIN, domid);
        conn
    }

    /// The connection of an introduced domain.
    pub fn domain_conn(&self, domid: u32) -> Option<ConnId> {
        self.domains.get(&domid).map(|d| d.conn)
    }

    /// Whether `domid` is introduced.
    pub fn is_introduced(&self, domid: u32) -> bool {
        self.domains.contains_key(&domid)
    }

    /// A domain shut down or crashed: `@releaseDomain` fires once (until
    /// `RESUME`).
    pub fn domain_shutdown(&mut self, domid: u32) {
        if let Some(d) = self.domains.get_mut(&domid)
            && !d.shutdown
        {
            d.shutdown = true;
            self.fire_special(RELEASE_DOMAIN, domid);
        }
    }

    /// A domain is gone: its connection closes, its watches and
    /// transactions go, and `@releaseDomain` fires. Its nodes stay (the
    /// toolstack removes `/local/domain/<domid>`, as with C xenstored).
    pub fn domain_gone(&mut self, domid: u32, ops: &mut dyn DomainOps) {
        if let Some(d) = self.domains.remove(&domid) {
            ops.release(domid, d.conn);
            self.conns.remove(&d.conn);
            self.recount_watches();
            self.fire_special(RELEASE_DOMAIN, domid);
        }
    }

    /// Closes a connection (a socket client went away, or the embedder cut
    /// off a misbehaving ring): its transactions and watches go. A domain's
    /// connection closed this way leaves the domain unintroduced.
    pub fn disconnect(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn)
            && c.domain
        {
            self.domains.retain(|_, d| d.conn != conn);
        }
        self.recount_watches();
    }

    fn recount_watches(&mut self) {
        self.watching = self.conns.values().any(|c| !c.watches.is_empty());
    }

    /// Whether the connection exists.
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// Whether the transport should take another request from `conn`:
    /// false while too many replies wait to be read.
    pub fn accepts_requests(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| {
            let limit = if c.privileged {
                self.quotas.outstanding_requests_privileged
            } else {
                self.quotas.outstanding_requests
            };
            c.pending_replies < limit
        })
    }

    /// Whether messages wait for `conn`.
    pub fn has_output(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| !c.out.is_empty())
    }

    /// Requests `conn` has sent and the watches it holds.
    pub fn conn_stats(&self, conn: ConnId) -> Option<(u64, usize)> {
        self.conns.get(&conn).map(|c| (c.requests, c.watches.len()))
    }

    /// Watch events dropped for `conn` because its queue was full.
    pub fn dropped_events(&self, conn: ConnId) -> u64 {
        self.conns.get(&conn).map_or(0, |c| c.dropped_events)
    }

    /// The next message for `conn` (header and payload), in order.
    pub fn next_output(&mut self, conn: ConnId) -> Option<Vec<u8>> {
        let c = self.conns.get_mut(&conn)?;
        match c.out.pop_front()? {
            Output::Reply(bytes) => {
                c.pending_replies -= 1;
                Some(bytes)
            }
            Output::Event { path, token } => {
                c.queued_events -= 1;
                let mut p = with_nul(&path);
                p.extend_from_slice(&token);
                p.push(0);
                Some(encode(XS_WATCH_EVENT, 0, 0, &p))
            }
        }
    }

    /// Nodes in the store.
    pub fn node_count(&self) -> usize {
        let mut n = 0;
        self.root.walk("/", &mut |_, _| n += 1);
        n
    }

    /// Heap bytes the store's nodes hold ([`Node::heap_bytes`], with the
    /// root's own allocation).
    pub fn heap_bytes(&self) -> usize {
        2 * core::mem::size_of::<usize>() + core::mem::size_of::<Node>() + self.root.heap_bytes()
    }

    /// Nodes owned by `domid` (what the node quota counts).
    pub fn entries_of(&self, domid: u32) -> u32 {
        self.entries.get(&domid).copied().unwrap_or(0)
    }

    /// Handles one request from `conn`; its reply (and any watch events it
    /// causes, for any connection) are queued. A message for an unknown
    /// connection is ignored.
    pub fn handle(
        &mut self,
        conn: ConnId,
        hdr: &XsdSockmsg,
        payload: &[u8],
        ops: &mut dyn DomainOps,
    ) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.pending_first_event = None;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.requests += 1;
        }
        let (kind, reply) = match self.dispatch(conn, hdr, payload, ops) {
            Ok(r) if r.len() > XENSTORE_PAYLOAD_MAX => (XS_ERROR, Cow::Owned(with_nul("E2BIG"))),
            Ok(r) => (hdr.r#type, r),
            Err(e) => (XS_ERROR, Cow::Owned(with_nul(e.name()))),
        };
        if matches!(
            hdr.r#type,
            XS_WATCH | XS_UNWATCH | XS_RESET_WATCHES | XS_INTRODUCE | XS_RELEASE
        ) {
            self.recount_watches();
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.out
                .push_back(Output::Reply(encode(kind, hdr.req_id, hdr.tx_id, &reply)));
            c.pending_replies += 1;
        }
        if hdr.r#type == XS_WATCH
            && kind == XS_WATCH
            && let Some((path, token)) = self.pending_first_event.take()
        {
            self.queue_event(conn, path, token);
        }
    }
}

// The WATCH reply precedes its first event: dispatch leaves the event here.
impl Xenstored {
    fn dispatch(
        &mut self,
        conn: ConnId,
        hdr: &XsdSockmsg,
        payload: &[u8],
        ops: &mut dyn DomainOps,
    ) -> Result<Cow<'static, [u8]>, XsError> {
        let c = self.conns.get(&conn).ok_or(XsError::EINVAL)?;
        let caller = c.caller();
        let privileged_op = matches!(
            hdr.r#type,
            XS_INTRODUCE | XS_RELEASE | XS_IS_DOMAIN_INTRODUCED | XS_RESUME | XS_SET_TARGET
        );
        if privileged_op && !caller.privileged {
            return Err(XsError::EACCES);
        }
        // Requests that may run in a transaction name it in tx_id.
        let in_tx = matches!(
            hdr.r#type,
            XS_DIRECTORY
                | XS_DIRECTORY_PART
                | XS_READ
                | XS_GET_PERMS
                | XS_WRITE
                | XS_MKDIR
                | XS_RM
                | XS_SET_PERMS
                | XS_TRANSACTION_START
                | XS_TRANSACTION_END
        );
        if in_tx && hdr.tx_id != 0 && !c.transactions.contains_key(&hdr.tx_id) {
            return Err(XsError::ENOENT);
        }
        match hdr.r#type {
            XS_READ => self
                .op(conn, hdr.tx_id, |v| {
                    let (p, _) = canonicalize(caller.domid, onearg(payload)?)?;
                    Ok(v.get_node(&p, XS_PERM_READ)?.value.clone())
                })
                .map(Cow::Owned),
            XS_DIRECTORY => self
                .op(conn, hdr.tx_id, |v| {
                    let (p, _) = canonicalize(caller.domid, onearg(payload)?)?;
                    Ok(v.get_node(&p, XS_PERM_READ)?.child_list())
                })
                .map(Cow::Owned),
            XS_DIRECTORY_PART => self
                .op(conn, hdr.tx_id, |v| {
                    let args = strings(payload);
                    if args.len() != 2
                        || args.iter().map(|a| a.len() + 1).sum::<usize>() != payload.len()
                    {
                        return Err(XsError::EINVAL);
                    }
                    let (p, _) = canonicalize(caller.domid, args[0])?;
                    let offset = atoi(args[1]) as usize;
                    let node = v.get_node(&p, XS_PERM_READ)?;
                    Ok(directory_part(node, offset))
                })
                .map(Cow::Owned),
            XS_GET_PERMS => {
                let arg = onearg(payload)?;
                let perms = if arg.first() == Some(&b'@') {
                    self.special
                        .iter()
                        .find(|(n, _)| n.as_bytes() == arg)
                        .map(|(_, p)| p.clone())
                        .ok_or(XsError::ENOENT)?
                } else {
                    self.op(conn, hdr.tx_id, |v| {
                        let (p, _) = canonicalize(caller.domid, arg)?;
                        Ok(v.get_node(&p, XS_PERM_READ)?.perms.clone())
                    })?
                };
                let mut out = Vec::new();
                for p in &perms {
                    p.write_to(&mut out);
                }
                Ok(Cow::Owned(out))
            }
            XS_WRITE => {
                let i = payload
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(XsError::EINVAL)?;
                let (p, _) = canonicalize(caller.domid, &payload[..i])?;
                let value = &payload[i + 1..];
                self.change(conn, hdr.tx_id, TxOp::Write(p.into_owned(), value.to_vec()))?;
                Ok(Cow::Borrowed(OK))
            }
            XS_MKDIR => {
                let (p, _) = canonicalize(caller.domid, onearg(payload)?)?;
                self.change(conn, hdr.tx_id, TxOp::Mkdir(p.into_owned()))?;
                Ok(Cow::Borrowed(OK))
            }
            XS_RM => {
                let (p, _) = canonicalize(caller.domid, onearg(payload)?)?;
                self.change(conn, hdr.tx_id, TxOp::Rm(p.into_owned()))?;
                Ok(Cow::Borrowed(OK))
            }
            XS_SET_PERMS => {
                let args = strings(payload);
                if args.len() < 2 {
                    return Err(XsError::EINVAL);
                }
                if !caller.privileged && args.len() - 1 > self.quotas.perms_per_node {
                    return Err(XsError::ENOSPC);
                }
                let perms = parse_list(args[1..].iter().copied())?;
                if args[0].first() == Some(&b'@') {
                    let slot = self
                        .special
                        .iter_mut()
                        .find(|(n, _)| n.as_bytes() == args[0])
                        .ok_or(XsError::ENOENT)?;
                    if !caller.may(&slot.1, XS_PERM_WRITE | XS_PERM_OWNER) {
                        return Err(XsError::EACCES);
                    }
                    slot.1 = perms;
                    return Ok(Cow::Borrowed(OK));
                }
                let (p, _) = canonicalize(caller.domid, args[0])?;
                self.change(conn, hdr.tx_id, TxOp::SetPerms(p.into_owned(), perms))?;
                Ok(Cow::Borrowed(OK))
            }
            XS_WATCH => self.watch(conn, payload),
            XS_UNWATCH => {
                let args = strings(payload);
                if args.len() < 2 {
                    return Err(XsError::EINVAL);
                }
                let (p, _) = watch_path(caller.domid, args[0])?;
                let c = self.conns.get_mut(&conn).ok_or(XsError::EINVAL)?;
                let i = c
                    .watches
                    .iter()
                    .position(|w| w.path == p && w.token == args[1])
                    .ok_or(XsError::ENOENT)?;
                c.watches.remove(i);
                Ok(Cow::Borrowed(OK))
            }
            XS_TRANSACTION_START => {
                if hdr.tx_id != 0 {
                    return Err(XsError::EBUSY);
                }
                let root = self.root.clone();
                let limit = self.quotas.transactions_per_conn;
                let c = self.conns.get_mut(&conn).ok_or(XsError::EINVAL)?;
                if !c.privileged && c.transactions.len() > limit {
                    return Err(XsError::ENOSPC);
                }
                let mut id = c.next_tx;
                while id == 0 || c.transactions.contains_key(&id) {
                    id = id.wrapping_add(1);
                }
                c.next_tx = id.wrapping_add(1);
                c.transactions.insert(
                    id,
                    Transaction {
                        root,
                        log: TxLog::default(),
                        ops: Vec::new(),
                        materialized: 0,
                    },
                );
                Ok(Cow::Owned(with_nul(&format!("{id}"))))
            }
            XS_TRANSACTION_END => {
                let arg = onearg(payload)?;
                let commit = match arg {
                    b"T" => true,
                    b"F" => false,
                    _ => return Err(XsError::EINVAL),
                };
                let c = self.conns.get_mut(&conn).ok_or(XsError::EINVAL)?;
                let caller = c.caller();
                let t = c.transactions.remove(&hdr.tx_id).ok_or(XsError::ENOENT)?;
                if commit {
                    self.commit(caller, t)?;
                }
                Ok(Cow::Borrowed(OK))
            }
            XS_GET_DOMAIN_PATH => {
                let domid = atoi(onearg(payload)?);
                Ok(Cow::Owned(with_nul(&path::domain_path(domid))))
            }
            XS_INTRODUCE => {
                let args = strings(payload);
                if args.len() < 3 {
                    return Err(XsError::EINVAL);
                }
                let domid = atoi(args[0]);
                let gfn = args[1]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .fold(0u64, |v, &b| {
                        v.wrapping_mul(10).wrapping_add(u64::from(b - b'0'))
                    });
                let port = atoi(args[2]) as i32;
                if port <= 0 || domid >= u32::from(xen_abi::DOMID_FIRST_RESERVED) {
                    return Err(XsError::EINVAL);
                }
                if let Some(d) = self.domains.get(&domid) {
                    // Re-introduction: the ring is bound again, and the
                    // connection starts afresh.
                    let dc = d.conn;
                    ops.introduce(domid, gfn, port as u32, dc)?;
                    if let Some(c) = self.conns.get_mut(&dc) {
                        c.watches.clear();
                        c.transactions.clear();
                    }
                    return Ok(Cow::Borrowed(OK));
                }
                let privileged = self.privileged.contains(&domid);
                let dc = self.add_conn(domid, privileged, true);
                if let Err(e) = ops.introduce(domid, gfn, port as u32, dc) {
                    self.conns.remove(&dc);
                    return Err(e);
                }
                self.domains.insert(
                    domid,
                    DomainRec {
                        conn: dc,
                        shutdown: false,
                    },
                );
                self.fire_special(INTRODUCE_DOMAIN, domid);
                Ok(Cow::Borrowed(OK))
            }
            XS_RELEASE => {
                let domid = atoi(onearg(payload)?);
                if !self.domains.contains_key(&domid) {
                    return Err(XsError::ENOENT);
                }
                self.domain_gone(domid, ops);
                Ok(Cow::Borrowed(OK))
            }
            XS_IS_DOMAIN_INTRODUCED => {
                let domid = atoi(onearg(payload)?);
                let yes =
                    domid == u32::from(xen_abi::DOMID_SELF) || self.domains.contains_key(&domid);
                Ok(if yes {
                    Cow::Borrowed(b"T\0")
                } else {
                    Cow::Borrowed(b"F\0")
                })
            }
            XS_RESUME => {
                let domid = atoi(onearg(payload)?);
                let d = self.domains.get_mut(&domid).ok_or(XsError::ENOENT)?;
                d.shutdown = false;
                Ok(Cow::Borrowed(OK))
            }
            XS_SET_TARGET => {
                let args = strings(payload);
                if args.len() < 2 {
                    return Err(XsError::EINVAL);
                }
                let domid = atoi(args[0]);
                let target = atoi(args[1]);
                if !self.domains.contains_key(&target) {
                    return Err(XsError::ENOENT);
                }
                let d = self.domains.get(&domid).ok_or(XsError::ENOENT)?;
                let c = self.conns.get_mut(&d.conn).ok_or(XsError::EINVAL)?;
                c.target = Some(target);
                Ok(Cow::Borrowed(OK))
            }
            XS_RESET_WATCHES => {
                let c = self.conns.get_mut(&conn).ok_or(XsError::EINVAL)?;
                c.watches.clear();
                c.transactions.clear();
                Ok(Cow::Borrowed(OK))
            }
            _ => Err(XsError::ENOSYS),
        }
    }

    /// Runs `f` on the global store or in transaction `tx_id`; changes to
    /// the global store fire their watches at once.
    fn op<T>(
        &mut self,
        conn: ConnId,
        tx_id: u32,
        f: impl FnOnce(&mut View<'_>) -> Result<T, XsError>,
    ) -> Result<T, XsError> {
        let watching = self.watching;
        let c = self.conns.get_mut(&conn).ok_or(XsError::EINVAL)?;
        let caller = c.caller();
        let (root, log) = if tx_id == 0 {
            (&mut self.root, None)
        } else {
            let t = c.transactions.get_mut(&tx_id).ok_or(XsError::ENOENT)?;
            // Make the changes still pending, so this request sees them.
            while t.materialized < t.ops.len() {
                let mut v = View::replay(
                    &mut t.root,
                    &mut self.generation,
                    &self.entries,
                    caller,
                    &self.quotas,
                    false,
                );
                let _ = t.ops[t.materialized].run(&mut v);
                t.materialized += 1;
            }
            (&mut t.root, Some(&mut t.log))
        };
        let in_tx = log.is_some();
        let fires_wanted = !in_tx && watching;
        let mut view = View {
            root,
            log,
            generation: &mut self.generation,
            entries: &self.entries,
            caller,
            quotas: &self.quotas,
            entry_changes: Vec::new(),
            fires: Vec::new(),
            fires_wanted,
            dry: in_tx,
            replay: false,
        };
        let r = f(&mut view);
        let View {
            entry_changes,
            fires,
            ..
        } = view;
        if !in_tx {
            for (d, n) in entry_changes {
                self.add_entries(d, n);
            }
            if r.is_ok() {
                for fire in fires {
                    self.fire(&fire);
                }
            }
        }
        r
    }

    /// A change: made at once outside a transaction; inside one, checked
    /// and accounted now, and recorded to be made later.
    fn change(&mut self, conn: ConnId, tx_id: u32, op: TxOp) -> Result<(), XsError> {
        self.op(conn, tx_id, |v| op.run(v))?;
        if tx_id != 0
            && let Some(t) = self
                .conns
                .get_mut(&conn)
                .and_then(|c| c.transactions.get_mut(&tx_id))
        {
            t.ops.push(op);
        }
        Ok(())
    }

    fn add_entries(&mut self, domid: u32, n: i64) {
        let e = self.entries.entry(domid).or_default();
        *e = (i64::from(*e) + n).max(0) as u32;
        if *e == 0 {
            self.entries.remove(&domid);
        }
    }

    /// Commits a transaction: EAGAIN if any node it read has changed since
    /// (C xenstored's generation check), else its changes are made on the
    /// global store, in order. Every node the changes depend on was read
    /// (and so checked), so they give what they gave in the transaction.
    fn commit(&mut self, caller: Caller, t: Transaction) -> Result<(), XsError> {
        if t.log.failed {
            return Err(XsError::ENOMEM);
        }
        for (&domid, &delta) in &t.log.entry_delta {
            let now = i64::from(self.entries_of(domid));
            if delta > 0
                && !self.privileged.contains(&domid)
                && now + delta > self.quotas.nodes_per_domain as i64
            {
                return Err(XsError::ENOSPC);
            }
        }
        for (p, a) in &t.log.accessed {
            if a.check {
                let now = lookup(&self.root, p).map_or(NO_GENERATION, |n| n.generation);
                if now != a.generation {
                    return Err(XsError::EAGAIN);
                }
            }
        }
        // The snapshot goes first: the global nodes are then no longer
        // shared with it and change in place.
        let Transaction { root, ops, .. } = t;
        drop(root);
        let fires_wanted = self.watching;
        for op in &ops {
            let mut view = View::replay(
                &mut self.root,
                &mut self.generation,
                &self.entries,
                caller,
                &self.quotas,
                fires_wanted,
            );
            let _ = op.run(&mut view);
            let View {
                entry_changes,
                fires,
                ..
            } = view;
            for (d, n) in entry_changes {
                self.add_entries(d, n);
            }
            for f in fires {
                self.fire(&f);
            }
        }
        Ok(())
    }

    fn watch(&mut self, conn: ConnId, payload: &[u8]) -> Result<Cow<'static, [u8]>, XsError> {
        let args = strings(payload);
        if args.len() < 2 {
            return Err(XsError::EINVAL);
        }
        let c = self.conns.get(&conn).ok_or(XsError::EINVAL)?;
        let (p, relative) = watch_path(c.domid, args[0])?;
        let depth = match args.get(2) {
            Some(d) if !d.is_empty() => {
                if !d.iter().all(u8::is_ascii_digit) || d.len() > 9 {
                    return Err(XsError::EINVAL);
                }
                Some(atoi(d))
            }
            _ => None,
        };
        if c.watches.iter().any(|w| w.path == p && w.token == args[1]) {
            return Err(XsError::EEXIST);
        }
        if !c.privileged {
            let held: usize = self
                .conns
                .values()
                .filter(|o| o.domid == c.domid && !o.privileged)
                .map(|o| o.watches.len())
                .sum();
            if held > self.quotas.watches_per_domain {
                return Err(XsError::E2BIG);
            }
        }
        let token = args[1].to_vec();
        let first = String::from_utf8_lossy(args[0]).into_owned();
        let c = self.conns.get_mut(&conn).ok_or(XsError::EINVAL)?;
        c.watches.push(Watch {
            path: p,
            token: token.clone(),
            relative,
            depth,
        });
        self.pending_first_event = Some((first, token));
        Ok(Cow::Borrowed(OK))
    }

    fn queue_event(&mut self, conn: ConnId, path: String, token: Vec<u8>) {
        let limit = self.quotas.queued_events;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // An event that cannot fit one message is not sent (as C
        // xenstored); a client would take it for a protocol violation.
        if path.len() + token.len() + 2 > XENSTORE_PAYLOAD_MAX {
            c.dropped_events += 1;
            return;
        }
        let dup = c
            .out
            .iter()
            .any(|o| matches!(o, Output::Event { path: p, token: t } if *p == path && *t == token));
        if dup {
            return;
        }
        if c.queued_events >= limit {
            c.dropped_events += 1;
            return;
        }
        c.queued_events += 1;
        c.out.push_back(Output::Event { path, token });
    }

    fn fire(&mut self, fire: &Fire) {
        if !self.watching {
            return;
        }
        let mut events = Vec::new();
        for (&id, c) in &self.conns {
            let caller = c.caller();
            if !caller.may(&fire.perms, XS_PERM_READ) {
                continue;
            }
            for w in &c.watches {
                let hit = if fire.exact {
                    fire.path == w.path
                } else {
                    is_child(&fire.path, &w.path)
                };
                if !hit {
                    continue;
                }
                if let Some(d) = w.depth
                    && path::depth(&fire.path) > path::depth(&w.path) + d as usize
                {
                    continue;
                }
                let shown = if w.relative {
                    let home = path::domain_path(c.domid);
                    fire.path
                        .strip_prefix(home.as_str())
                        .and_then(|r| r.strip_prefix('/'))
                        .map_or_else(|| fire.path.clone(), String::from)
                } else {
                    fire.path.clone()
                };
                events.push((id, shown, w.token.clone()));
            }
        }
        for (id, p, t) in events {
            self.queue_event(id, p, t);
        }
    }

    fn fire_special(&mut self, name: &'static str, domid: u32) {
        let perms = self
            .special
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.clone())
            .unwrap_or_default();
        let mut events = Vec::new();
        for (&id, c) in &self.conns {
            if !c.caller().may(&perms, XS_PERM_READ) {
                continue;
            }
            for w in &c.watches {
                if w.path == name {
                    let shown = match w.depth {
                        Some(d) if d >= 1 => format!("{name}/{domid}"),
                        _ => String::from(name),
                    };
                    events.push((id, shown, w.token.clone()));
                }
            }
        }
        for (id, p, t) in events {
            self.queue_event(id, p, t);
        }
    }
}

/// A watch path: a special `@` name as it is (up to the relative path
/// limit), or a node name resolved for the caller.
fn watch_path(domid: u32, raw: &[u8]) -> Result<(String, bool), XsError> {
    if raw.first() == Some(&b'@') {
        if raw.len() > XENSTORE_REL_PATH_MAX {
            return Err(XsError::EINVAL);
        }
        let s = core::str::from_utf8(raw).map_err(|_| XsError::EINVAL)?;
        return Ok((String::from(s), false));
    }
    canonicalize(domid, raw).map(|(p, r)| (p.into_owned(), r))
}

/// DIRECTORY_PART's reply: the node's generation, then whole child names
/// from byte `offset` while they fit, then an empty name if the list ended.
fn directory_part(node: &Node, offset: usize) -> Vec<u8> {
    let list = node.child_list();
    let mut out = with_nul(&format!("{}", node.generation));
    let room = XENSTORE_PAYLOAD_MAX - out.len() - 1;
    let start = offset.min(list.len());
    let mut end = start;
    while end < list.len() {
        let len = list[end..]
            .iter()
            .position(|&b| b == 0)
            .map_or(list.len() - end, |i| i + 1);
        if end + len - start > room {
            break;
        }
        end += len;
    }
    out.extend_from_slice(&list[start..end]);
    if end == list.len() {
        out.push(0);
    }
    out
}

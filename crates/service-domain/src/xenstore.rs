//! The xenstore service: every domain's store connection, the nodes a
//! toolstack writes for it, and what happens when it shuts down or dies.
//!
//! How a domain gets connected (the hypervisor did its half at build time,
//! `crates/hv-core/src/store.rs`):
//!
//! 1. [`Platform::domain_info`] (`XEN_DOMCTL_getdomaininfo`): its memory
//!    and vCPUs.
//! 2. [`Platform::map_store`]: its grant `GNTTAB_RESERVED_XENSTORE`, which
//!    names this domain.
//! 3. The port: the page's `evtchn_port` field, then
//!    [`Platform::bind`] (`EVTCHNOP_bind_interdomain`).
//! 4. Its nodes, in one transaction, owned by the domain (what
//!    `init-dom0less` writes), then [`Xenstored::introduce_domain`].
//! 5. [`RingConnection::attach`] sets `connection` to CONNECTED, and only
//!    then the domain is signalled (Linux waits for that event when the
//!    page said RECONNECT, and does not look at `connection` again).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use pv_rings::SharedMem;
use xen_abi::XsdSockmsg;
use xenstored::ring::RingConnection;
use xenstored::wire::{self, XsError};
use xenstored::{ConnId, NoTransport, Xenstored};

/// Offset of `evtchn_port` in the xenstore page.
pub const EVTCHN_PORT_OFFSET: usize = 2076;

/// Requests a busy domain may have served per [`StoreService::pump`]
/// round before the others get their turn again.
pub const ROUNDS_PER_PUMP: usize = 16;

/// What the service needs to know of a domain (from
/// `XEN_DOMCTL_getdomaininfo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainInfo {
    /// Frames it owns.
    pub tot_pages: u64,
    /// The most frames it may own.
    pub max_pages: u64,
    /// Its vCPUs (`max_vcpu_id + 1`).
    pub vcpus: u32,
    /// It has shut down (or crashed).
    pub shutdown: bool,
    /// It shut down to reboot (`SHUTDOWN_reboot`): the toolstack (our
    /// hypervisor's run loop) will destroy it, and build it again unless
    /// its `on_reboot` says otherwise. Not down for [`StoreService::all_down`].
    pub reboot: bool,
    /// It is being destroyed.
    pub dying: bool,
    /// A number no other domain of this boot had (`unique_id` of
    /// `XEN_DOMCTL_get_domain_state`), 0 if the hypervisor has none: a
    /// domain built again under the same id has a new one.
    pub unique_id: u64,
}

/// What [`StoreService::domains_changed`] did to a domain, for the other
/// services (the block back end forgets or offers its devices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainChange {
    /// Its connection, port, page and nodes are gone.
    Released(u16),
    /// A new domain under a served id (one that rebooted) is connected.
    Introduced(u16),
}

/// A Xen error number (positive).
pub type Errno = i32;

/// The hypervisor as the service sees it.
pub trait Platform {
    /// A mapped xenstore page.
    type Mem: SharedMem + Clone;
    /// Maps domain `domid`'s xenstore page (its grant 1).
    fn map_store(&mut self, domid: u16) -> Result<Self::Mem, Errno>;
    /// Unmaps it.
    fn unmap_store(&mut self, domid: u16);
    /// Binds our end of `domid`'s port `remote`; returns our port.
    fn bind(&mut self, domid: u16, remote: u32) -> Result<u32, Errno>;
    /// Closes one of our ports.
    fn unbind(&mut self, port: u32);
    /// Signals one of our ports.
    fn notify(&mut self, port: u32);
    /// The domain's information; `None` if it no longer exists.
    fn domain_info(&mut self, domid: u16) -> Result<Option<DomainInfo>, Errno>;
    /// A line for the log.
    fn log(&mut self, line: core::fmt::Arguments<'_>);
    /// A timestamp for the log (the TSC), if there is one.
    fn timestamp(&mut self) -> Option<u64> {
        None
    }
}

struct Guest<M> {
    name: String,
    /// [`DomainInfo::unique_id`] when connected.
    unique_id: u64,
    ring: RingConnection<M>,
    port: u32,
    conn: ConnId,
    shutdown_seen: bool,
    /// It shut down to reboot.
    rebooting: bool,
    cut_off: bool,
    /// It has sent a request (its xenbus is up).
    talked: bool,
}

/// The xenstore service of the service domain.
pub struct StoreService<P: Platform> {
    /// The store.
    pub xs: Xenstored,
    platform: P,
    /// The service's own (privileged) connection, for the nodes it writes.
    me: ConnId,
    guests: BTreeMap<u16, Guest<P::Mem>>,
    /// Every domain ever added, by id, with its name: one that comes back
    /// under the same id (a reboot) is connected again.
    served: BTreeMap<u16, String>,
    /// `shutdown-when=KEY`: once every live domain has written KEY under
    /// its home, each is asked to power off (once).
    shutdown_when: Option<String>,
}

impl<P: Platform> StoreService<P> {
    /// A service with an empty store.
    pub fn new(platform: P) -> Self {
        let mut xs = Xenstored::new();
        let me = xs.connect_socket();
        Self {
            xs,
            platform,
            me,
            guests: BTreeMap::new(),
            served: BTreeMap::new(),
            shutdown_when: None,
        }
    }

    /// Asks every domain to power off, through `control/shutdown`, once
    /// each live one has written `key` (relative to its home): a scripted
    /// `xl shutdown` for tests and demos, checked by [`Self::orders`].
    pub fn shutdown_when(&mut self, key: &str) {
        self.shutdown_when = Some(String::from(key));
    }

    /// Carries out an order given by [`Self::shutdown_when`] whose
    /// condition now holds; call after [`Self::pump`]. Domains cut off or
    /// already shut down do not count (they cannot write any more).
    pub fn orders(&mut self) {
        let Some(key) = self.shutdown_when.clone() else {
            return;
        };
        let live: Vec<u16> = self
            .guests
            .iter()
            .filter(|(_, g)| !g.cut_off && !g.shutdown_seen)
            .map(|(&d, _)| d)
            .collect();
        if live.is_empty()
            || live
                .iter()
                .any(|d| self.read(&format!("/local/domain/{d}/{key}")).is_err())
        {
            return;
        }
        self.shutdown_when = None;
        for d in live {
            self.platform.log(format_args!(
                "xenstore: every domain wrote {key}; asking d{d} to power off"
            ));
            if let Err(e) = self.request_shutdown(d, "poweroff") {
                self.platform
                    .log(format_args!("xenstore: d{d}: control/shutdown: {e}"));
            }
        }
    }

    /// The platform.
    pub fn platform(&mut self) -> &mut P {
        &mut self.platform
    }

    /// Our ports, one per connected domain (what to wait on).
    pub fn ports(&self) -> Vec<u32> {
        self.guests
            .values()
            .filter(|g| !g.cut_off)
            .map(|g| g.port)
            .collect()
    }

    /// Whether every domain served has shut down (other than to reboot)
    /// or is gone: the service's work is over. A domain that shut down to
    /// reboot is not down: it is destroyed next, and maybe built again.
    pub fn all_down(&self) -> bool {
        self.guests
            .values()
            .all(|g| g.shutdown_seen && !g.rebooting)
    }

    /// The connected domains, by id.
    pub fn domains(&self) -> Vec<u16> {
        self.guests.keys().copied().collect()
    }

    /// Connects domain `domid` (steps 1-5 of the module doc). A failure
    /// leaves nothing behind and concerns this domain only.
    pub fn add_domain(&mut self, domid: u16, name: &str) -> Result<(), Errno> {
        if self.guests.contains_key(&domid) {
            return Err(xen_abi::EEXIST);
        }
        let info = self.platform.domain_info(domid)?.ok_or(xen_abi::ESRCH)?;
        let mem = self.platform.map_store(domid)?;
        let remote = mem.load_u32(EVTCHN_PORT_OFFSET, Ordering::Acquire);
        let port = match self.platform.bind(domid, remote) {
            Ok(p) => p,
            Err(e) => {
                self.platform.unmap_store(domid);
                return Err(e);
            }
        };
        self.served.insert(domid, String::from(name));
        let conn = self.xs.introduce_domain(u32::from(domid));
        if let Err(e) = self.write_nodes(domid, name, &info) {
            self.platform
                .log(format_args!("xenstore: d{domid}: nodes: {e}"));
        }
        let ring = match RingConnection::attach(mem, conn) {
            Ok(r) => r,
            Err(e) => {
                self.platform
                    .log(format_args!("xenstore: d{domid}: bad ring page: {e:?}"));
                self.xs.domain_gone(u32::from(domid), &mut NoTransport);
                self.platform.unbind(port);
                self.platform.unmap_store(domid);
                return Err(xen_abi::EINVAL);
            }
        };
        self.platform.notify(port);
        self.guests.insert(
            domid,
            Guest {
                name: String::from(name),
                unique_id: info.unique_id,
                ring,
                port,
                conn,
                shutdown_seen: false,
                rebooting: false,
                cut_off: false,
                talked: false,
            },
        );
        self.platform.log(format_args!(
            "xenstore: d{domid} ({name}) connected on port {port}"
        ));
        Ok(())
    }

    /// One request on the service's own connection.
    fn request(&mut self, kind: u32, tx: u32, payload: &[u8]) -> Result<Vec<u8>, XsError> {
        let hdr = XsdSockmsg {
            r#type: kind,
            req_id: 0,
            tx_id: tx,
            len: payload.len() as u32,
        };
        self.xs.handle(self.me, &hdr, payload, &mut NoTransport);
        let mut reply = None;
        while let Some(m) = self.xs.next_output(self.me) {
            if m.len() >= wire::HEADER_SIZE {
                let mut h = [0u8; wire::HEADER_SIZE];
                h.copy_from_slice(&m[..wire::HEADER_SIZE]);
                let h = wire::decode_header(&h);
                if h.r#type != wire::XS_WATCH_EVENT {
                    reply = Some((h.r#type, m[wire::HEADER_SIZE..].to_vec()));
                }
            }
        }
        match reply {
            Some((wire::XS_ERROR, p)) => Err(XsError::from_name(&p).unwrap_or(XsError::EINVAL)),
            Some((_, p)) => Ok(p),
            None => Err(XsError::EIO),
        }
    }

    fn write(&mut self, tx: u32, path: &str, value: &str) -> Result<(), XsError> {
        let mut p = Vec::with_capacity(path.len() + 1 + value.len());
        p.extend_from_slice(path.as_bytes());
        p.push(0);
        p.extend_from_slice(value.as_bytes());
        self.request(wire::XS_WRITE, tx, &p).map(drop)
    }

    fn with_nul(s: &str) -> Vec<u8> {
        let mut v = Vec::from(s.as_bytes());
        v.push(0);
        v
    }

    /// What a toolstack writes for a new domain (Xen's `init-dom0less`,
    /// mirroring libxl), in one transaction, all owned by the domain.
    fn write_nodes(&mut self, domid: u16, name: &str, info: &DomainInfo) -> Result<(), XsError> {
        let home = format!("/local/domain/{domid}");
        for _ in 0..8 {
            let id = self.request(wire::XS_TRANSACTION_START, 0, b"\0")?;
            let tx = xenstored::path::atoi(&id);
            let r = self.write_nodes_in(tx, domid, name, info, &home);
            let end: &[u8] = if r.is_ok() { b"T\0" } else { b"F\0" };
            match (r, self.request(wire::XS_TRANSACTION_END, tx, end)) {
                (Err(e), _) => return Err(e),
                (Ok(()), Err(XsError::EAGAIN)) => continue,
                (Ok(()), r) => return r.map(drop),
            }
        }
        Err(XsError::EAGAIN)
    }

    fn write_nodes_in(
        &mut self,
        tx: u32,
        domid: u16,
        name: &str,
        info: &DomainInfo,
        home: &str,
    ) -> Result<(), XsError> {
        self.request(wire::XS_MKDIR, tx, &Self::with_nul(home))?;
        let mut perms = Self::with_nul(home);
        perms.extend(Self::with_nul(&format!("n{domid}")));
        self.request(wire::XS_SET_PERMS, tx, &perms)?;
        let kib = info.tot_pages * 4;
        let max_kib = info.max_pages.max(info.tot_pages) * 4;
        let nodes: [(&str, String); 16] = [
            ("name", String::from(name)),
            ("domid", format!("{domid}")),
            ("vm", format!("/vm/{domid}")),
            ("memory/static-max", format!("{max_kib}")),
            ("memory/target", format!("{kib}")),
            ("memory/videoram", String::from("-1")),
            ("device/suspend/event-channel", String::new()),
            ("control/shutdown", String::new()),
            ("control/feature-poweroff", String::from("1")),
            ("control/feature-reboot", String::from("1")),
            ("control/feature-suspend", String::new()),
            ("control/sysrq", String::new()),
            (
                "control/platform-feature-multiprocessor-suspend",
                String::from("1"),
            ),
            (
                "control/platform-feature-xs_reset_watches",
                String::from("1"),
            ),
            ("data", String::new()),
            ("drivers", String::new()),
        ];
        for (k, v) in nodes {
            self.write(tx, &format!("{home}/{k}"), &v)?;
        }
        for k in ["feature", "attr"] {
            self.request(wire::XS_MKDIR, tx, &Self::with_nul(&format!("{home}/{k}")))?;
        }
        for cpu in 0..info.vcpus {
            self.write(tx, &format!("{home}/cpu/{cpu}/availability"), "online")?;
        }
        Ok(())
    }

    /// Serves every ring until none moves (at most [`ROUNDS_PER_PUMP`]
    /// rounds; returns true if work is left for the next call). A domain
    /// that breaks the ring protocol is cut off; the others go on.
    pub fn pump(&mut self) -> bool {
        for _ in 0..ROUNDS_PER_PUMP {
            let mut progress = false;
            let mut cut = Vec::new();
            for (&domid, g) in self.guests.iter_mut() {
                if g.cut_off {
                    continue;
                }
                match g.ring.pump(&mut self.xs, &mut NoTransport) {
                    Ok(p) => {
                        if p.notify {
                            self.platform.notify(g.port);
                            progress = true;
                        }
                        progress |= p.more;
                    }
                    Err(e) => {
                        g.cut_off = true;
                        cut.push((domid, g.conn, e));
                        // It learns why from the page's error field.
                        self.platform.notify(g.port);
                    }
                }
            }
            for (domid, conn, e) in cut {
                self.platform
                    .log(format_args!("xenstore: d{domid} cut off: {e:?}"));
                self.xs.disconnect(conn);
            }
            for (&domid, g) in self.guests.iter_mut() {
                if !g.talked && self.xs.conn_stats(g.conn).is_some_and(|(n, _)| n > 0) {
                    g.talked = true;
                    match self.platform.timestamp() {
                        Some(t) => self.platform.log(format_args!(
                            "xenstore: d{domid} sent its first request (tsc={t})"
                        )),
                        None => self
                            .platform
                            .log(format_args!("xenstore: d{domid} sent its first request")),
                    }
                }
            }
            if !progress {
                return false;
            }
        }
        true
    }

    /// `VIRQ_DOM_EXC` fired: looks at every domain served. One that shut
    /// down fires `@releaseDomain`; one that is gone (or dying), or
    /// replaced by a new domain under its id (another `unique_id`: it
    /// rebooted), is released: its connection, port, page and nodes go. A
    /// live new domain under a served id is connected again, as a
    /// toolstack introduces a domain it built. Returns what changed, in
    /// order, for the other services.
    pub fn domains_changed(&mut self) -> Vec<DomainChange> {
        let mut changes = Vec::new();
        let ids: Vec<u16> = self.served.keys().copied().collect();
        for domid in ids {
            let info = match self.platform.domain_info(domid) {
                Ok(i) => i,
                Err(_) => continue,
            };
            let live = info.filter(|i| !i.dying);
            let replaced = match (self.guests.get(&domid), live) {
                (Some(_), None) => true,
                (Some(g), Some(i)) => i.unique_id != g.unique_id,
                (None, _) => false,
            };
            if replaced {
                self.release(domid);
                changes.push(DomainChange::Released(domid));
            }
            let Some(i) = live else {
                continue;
            };
            if !self.guests.contains_key(&domid) && !i.shutdown {
                let name = self.served.get(&domid).cloned().unwrap_or_default();
                match self.add_domain(domid, &name) {
                    Ok(()) => changes.push(DomainChange::Introduced(domid)),
                    Err(e) => self
                        .platform
                        .log(format_args!("xenstore: d{domid} ({name}): not served: {e}")),
                }
                continue;
            }
            if i.shutdown
                && let Some(g) = self.guests.get_mut(&domid)
                && !g.shutdown_seen
            {
                g.shutdown_seen = true;
                g.rebooting = i.reboot;
                let (requests, watches) = self.xs.conn_stats(g.conn).unwrap_or_default();
                self.xs.domain_shutdown(u32::from(domid));
                self.platform.log(format_args!(
                    "xenstore: d{domid} shut down{} ({requests} requests, {watches} watches held)",
                    if i.reboot { " to reboot" } else { "" }
                ));
            }
        }
        self.pump();
        changes
    }

    fn release(&mut self, domid: u16) {
        let Some(g) = self.guests.remove(&domid) else {
            return;
        };
        self.xs.domain_gone(u32::from(domid), &mut NoTransport);
        let _ = self.request(
            wire::XS_RM,
            0,
            &Self::with_nul(&format!("/local/domain/{domid}")),
        );
        self.platform.unbind(g.port);
        self.platform.unmap_store(domid);
        self.platform
            .log(format_args!("xenstore: d{domid} ({}) released", g.name));
    }

    /// Asks domain `domid` to shut down (`poweroff`, `reboot`, `halt`),
    /// through its `control/shutdown`, as `xl shutdown` does.
    pub fn request_shutdown(&mut self, domid: u16, how: &str) -> Result<(), XsError> {
        self.write(0, &format!("/local/domain/{domid}/control/shutdown"), how)?;
        self.pump();
        Ok(())
    }

    /// Reads a node as the service (privileged).
    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, XsError> {
        self.request(wire::XS_READ, 0, &Self::with_nul(path))
    }

    /// Writes a node as the service (privileged); watchers are told at
    /// the next [`Self::pump`].
    pub fn write_node(&mut self, path: &str, value: &str) -> Result<(), XsError> {
        self.write(0, path, value)
    }

    /// Creates a node (and its parents) as the service.
    pub fn mkdir(&mut self, path: &str) -> Result<(), XsError> {
        self.request(wire::XS_MKDIR, 0, &Self::with_nul(path))
            .map(drop)
    }

    /// Removes a node and its children as the service.
    pub fn rm(&mut self, path: &str) -> Result<(), XsError> {
        self.request(wire::XS_RM, 0, &Self::with_nul(path))
            .map(drop)
    }

    /// Sets a node's permissions (`n0`, `r1`, ...: the owner first).
    pub fn set_perms(&mut self, path: &str, perms: &[&str]) -> Result<(), XsError> {
        let mut p = Self::with_nul(path);
        for q in perms {
            p.extend(Self::with_nul(q));
        }
        self.request(wire::XS_SET_PERMS, 0, &p).map(drop)
    }

    /// A node's permissions, as [`Self::set_perms`] takes them.
    pub fn get_perms(&mut self, path: &str) -> Result<Vec<String>, XsError> {
        let p = self.request(wire::XS_GET_PERMS, 0, &Self::with_nul(path))?;
        Ok(p.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect())
    }
}

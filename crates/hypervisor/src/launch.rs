//! Which boot module is which domain's kernel or ramdisk: the launch plan,
//! in the spirit of Xen's hyperlaunch, read from the module command lines.
//!
//! Each module's command line is
//!
//! ```text
//! kernel [name=N] [mem=SIZE] [vcpus=N] [priv] [service] [on_reboot=restart|destroy]
//!        [pci=BDF[,BDF...]] [directmap=MiB] [vif[=MAC]]... [-- guest command line]
//! ramdisk
//! ```
//!
//! A `kernel` module starts a new domain (ids count up from 1, or from 0
//! for the first `priv` one, as Xen's control domain is 0). A `ramdisk`
//! module belongs to the kernel module before it. SIZE is in bytes with an
//! optional `K`, `M` or `G` suffix (default unit: MiB, as Xen's `dom0_mem`).
//! N (a name) is letters, digits, `-`, `_` and `.`.
//!
//! `service` makes the domain the **service domain** (at most one): it may
//! act as the xenstore domain and read every domain's information
//! (hv-core's `Caps::XENSTORE` and `Caps::DOMCTL_INFO`), and every other
//! domain gets a xenstore connection it serves (ring page, grant 1, an
//! unbound port, `HVM_PARAM_STORE_*`). Its guest command line gets
//! ` domains=ID:NAME,...` appended, every domain of the plan in module
//! order ([`Plans::write_domain_list`]): Xen has no hypercall for names
//! (a toolstack writes them into xenstore), so this is how the service
//! domain learns them. Without a `service` domain nothing changes: no
//! domain has a store and `HVM_PARAM_STORE_*` stay 0.
//!
//! `on_reboot` is what happens when the domain asks to reboot
//! (`SHUTDOWN_reboot`), as in Xen's domain configuration: `restart`
//! (Xen's default) destroys it and builds it again from its modules, with
//! the same id and a new `unique_id`; `destroy` leaves it shut down. The
//! service domain itself is never restarted (it holds the others' disks).
//!
//! `pci` assigns host PCI functions to the domain (device assignment, the
//! first layer: configuration space, see `hv_core::pci`). A BDF is
//! `BB:DD.F` or `0000:BB:DD.F` in hexadecimal, as `lspci` and Xen's
//! `pci=` write it; segment 0 only, at most 32 per domain, each function
//! to one domain. The hypervisor refuses to start when a named function
//! is absent or is a bridge.
//!
//! `directmap=MiB` gives the domain a **direct-mapped** RAM region of that
//! many MiB (a multiple of 2, at most [`MAX_DIRECTMAP_MIB`]): host frames
//! below 4 GiB mapped at guest-physical = host-physical, so that a
//! bus-master device it was assigned (`pci=`) works with the addresses it
//! gives it, without an IOMMU (as Xen's direct-mapped domains on Arm).
//! Only the service domain or the privileged control domain may have one:
//! such a domain can program a device to read and write any host memory,
//! so it is trusted as the hypervisor is. The region is listed as RAM in
//! the domain's memory map, and its command line gets
//! ` directmap=0xBASE:0xSIZE` appended (hexadecimal bytes).
//!
//! A boot loader that carries a single module and no module command line
//! (QEMU's `-kernel ... -initrd KERNEL`) gives a kernel with the defaults.
//! `vif` gives the domain a virtual network interface on the service
//! domain's switch, `vif=MAC` one with that address (six hexadecimal
//! octets, `00:16:3e:12:34:56`, unicast): the domain's module options
//! say its MAC addresses, as `vif = ['mac=...']` does in an `xl`
//! configuration. Up to [`MAX_VIFS`] per domain, handles 0, 1, .. in
//! order; without an address the service domain uses Xen's `00:16:3e`
//! prefix, the handle and the domain id (`netback::default_mac` in the
//! service domain). The service domain's command line gets ` vif=ID` or
//! ` vif=ID,mac=MAC` for each ([`Plans::write_domain_list`]); it writes
//! the address into the vif's front-end and back-end `mac` keys, as Xen's
//! toolstack does. A `vif` needs a service domain, and the service domain
//! has none.
//!
//! Bad plans are refused as a whole with the module and reason: a
//! half-started system is worse than none.

use core::fmt;

use hv_core::pci::{Bdf, MAX_FUNCTIONS};

/// Defaults for a kernel module's options.
pub const DEFAULT_MEM_MIB: u64 = 64;
/// Default vCPU count.
pub const DEFAULT_VCPUS: u32 = 1;
/// Most vCPUs a domain may ask for.
pub const MAX_VCPUS: u32 = 128;
/// Most domains in one plan.
pub const MAX_DOMAINS: usize = 16;
/// Most `vif` options per domain.
pub const MAX_VIFS: usize = 4;
/// Largest `directmap=` region, in MiB.
pub const MAX_DIRECTMAP_MIB: u64 = 1024;

/// A MAC address.
pub type Mac = [u8; 6];

/// One domain to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainPlan<'a> {
    /// Domain id.
    pub domid: u16,
    /// Name for logs (defaults to `d<id>`, kept empty here).
    pub name: &'a str,
    /// Index of the kernel module.
    pub kernel: usize,
    /// Index of the ramdisk module, if any.
    pub ramdisk: Option<usize>,
    /// Guest RAM in bytes.
    pub mem: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Whether this is the privileged control domain.
    pub privileged: bool,
    /// Whether this is the service domain (xenstore for the others).
    pub service: bool,
    /// The guest's command line.
    pub cmdline: &'a str,
    /// What a reboot does.
    pub on_reboot: OnReboot,
    /// Host PCI functions assigned to it: a checked `pci=` list (empty:
    /// none), see [`pci_functions`](DomainPlan::pci_functions).
    pub pci: &'a str,
    /// Bytes of direct-mapped RAM (`directmap=MiB`; 0: none).
    pub directmap: u64,
    /// Its network interfaces (`vif[=MAC]`), in handle order: `Some(mac)`
    /// for an address given, `None` for the default; see
    /// [`vifs`](DomainPlan::vifs).
    pub vif: [Option<Option<Mac>>; MAX_VIFS],
}

/// What happens to a domain that shuts down with `SHUTDOWN_reboot` (Xen's
/// `on_reboot`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnReboot {
    /// Built again from its modules and started (Xen's default).
    #[default]
    Restart,
    /// Left shut down.
    Destroy,
}

impl DomainPlan<'_> {
    /// The host PCI functions assigned to the domain.
    pub fn pci_functions(&self) -> impl Iterator<Item = Bdf> + '_ {
        self.pci.split(',').filter_map(Bdf::parse)
    }

    /// Its network interfaces in handle order: the address given, or
    /// `None` for the service domain's default.
    pub fn vifs(&self) -> impl Iterator<Item = Option<Mac>> + '_ {
        self.vif.iter().map_while(|v| *v)
    }

    /// Whether a reboot of this domain builds it again: `on_reboot=restart`
    /// and not the service domain.
    pub fn restarts(&self) -> bool {
        self.on_reboot == OnReboot::Restart && !self.service
    }
}

/// Why a plan was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError<'a> {
    /// No module at all.
    NoModules,
    /// A module's first word is neither `kernel` nor `ramdisk`.
    UnknownRole { module: usize, word: &'a str },
    /// A ramdisk with no kernel before it.
    OrphanRamdisk { module: usize },
    /// A second ramdisk for the same kernel.
    SecondRamdisk { module: usize },
    /// An option that is unknown or has a bad value.
    BadOption { module: usize, option: &'a str },
    /// More than one privileged domain.
    SecondPrivileged { module: usize },
    /// More than one service domain.
    SecondService { module: usize },
    /// More than [`MAX_DOMAINS`] kernels.
    TooManyDomains,
    /// A `vif` in a plan without a service domain to serve it.
    VifWithoutService { module: usize },
    /// A PCI function assigned to a second domain.
    PciTwice { module: usize, function: &'a str },
    /// `directmap` on a domain that is neither the service domain nor
    /// privileged.
    DirectmapNotTrusted { module: usize },
}

impl fmt::Display for PlanError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoModules => write!(f, "no boot modules: nothing to run"),
            Self::UnknownRole { module, word } => write!(
                f,
                "module {module}: `{word}` is not a role (kernel or ramdisk)"
            ),
            Self::OrphanRamdisk { module } => {
                write!(f, "module {module}: ramdisk with no kernel before it")
            }
            Self::SecondRamdisk { module } => {
                write!(f, "module {module}: the kernel already has a ramdisk")
            }
            Self::BadOption { module, option } => {
                write!(f, "module {module}: bad option `{option}`")
            }
            Self::SecondPrivileged { module } => {
                write!(f, "module {module}: only one domain may be privileged")
            }
            Self::SecondService { module } => {
                write!(
                    f,
                    "module {module}: only one domain may be the service domain"
                )
            }
            Self::TooManyDomains => write!(f, "more than {MAX_DOMAINS} domains"),
            Self::VifWithoutService { module } => write!(
                f,
                "module {module}: a vif needs a service domain (its switch), and there is none"
            ),
            Self::DirectmapNotTrusted { module } => write!(
                f,
                "module {module}: only the service or the privileged domain may be direct-mapped"
            ),
            Self::PciTwice { module, function } => write!(
                f,
                "module {module}: PCI function {function} is assigned to another domain"
            ),
        }
    }
}

/// Parses a size: a number with an optional K/M/G suffix; no suffix means MiB.
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        _ => (s, 20),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

/// Builds the plan from the module command lines (in module order).
pub fn plan<'a>(module_cmdlines: &[&'a str]) -> Result<Plans<'a>, PlanError<'a>> {
    if module_cmdlines.is_empty() {
        return Err(PlanError::NoModules);
    }
    let mut plans = Plans::new();
    // A lone module without a command line is a kernel with the defaults.
    if module_cmdlines.len() == 1 && module_cmdlines[0].trim().is_empty() {
        plans.push(DomainPlan {
            domid: 1,
            name: "",
            kernel: 0,
            ramdisk: None,
            mem: DEFAULT_MEM_MIB << 20,
            vcpus: DEFAULT_VCPUS,
            privileged: false,
            service: false,
            cmdline: "",
            on_reboot: OnReboot::Restart,
            pci: "",
            directmap: 0,
            vif: [None; MAX_VIFS],
        })?;
        return Ok(plans);
    }
    let mut next_id: u16 = 1;
    let mut have_priv = false;
    let mut have_service = false;
    for (module, line) in module_cmdlines.iter().enumerate() {
        let (opts, guest_cmdline) = match line.split_once(" -- ") {
            Some((o, c)) => (o, c.trim()),
            None => (line.strip_suffix(" --").unwrap_or(line), ""),
        };
        let mut words = opts.split_ascii_whitespace();
        match words.next() {
            Some("kernel") => {
                let mut d = DomainPlan {
                    domid: 0,
                    name: "",
                    kernel: module,
                    ramdisk: None,
                    mem: DEFAULT_MEM_MIB << 20,
                    vcpus: DEFAULT_VCPUS,
                    privileged: false,
                    service: false,
                    cmdline: guest_cmdline,
                    on_reboot: OnReboot::Restart,
                    pci: "",
                    directmap: 0,
                    vif: [None; MAX_VIFS],
                };
                for w in words {
                    let bad = PlanError::BadOption { module, option: w };
                    match w.split_once('=') {
                        Some(("name", v)) if valid_name(v) => d.name = v,
                        Some(("mem", v)) => {
                            d.mem = parse_size(v)
                                .filter(|&m| m >= 1 << 20 && m % 4096 == 0)
                                .ok_or(bad)?
                        }
                        Some(("vcpus", v)) => {
                            d.vcpus = v
                                .parse()
                                .ok()
                                .filter(|n| (1..=MAX_VCPUS).contains(n))
                                .ok_or(bad)?
                        }
                        Some(("on_reboot", "restart")) => d.on_reboot = OnReboot::Restart,
                        Some(("on_reboot", "destroy")) => d.on_reboot = OnReboot::Destroy,
                        Some(("pci", v)) if d.pci.is_empty() && valid_pci(v) => d.pci = v,
                        Some(("directmap", v)) if d.directmap == 0 => {
                            let mib: u64 = v
                                .parse()
                                .ok()
                                .filter(|&m| m > 0 && m % 2 == 0 && m <= MAX_DIRECTMAP_MIB)
                                .ok_or(bad)?;
                            d.directmap = mib << 20;
                        }
                        Some(("vif", v)) => {
                            let mac = parse_mac(v).filter(|m| m[0] & 1 == 0).ok_or(bad)?;
                            add_vif(&mut d, Some(mac)).ok_or(bad)?
                        }
                        None if w == "vif" => add_vif(&mut d, None).ok_or(bad)?,
                        None if w == "priv" => d.privileged = true,
                        None if w == "service" => d.service = true,
                        _ => return Err(bad),
                    }
                }
                if let Some(function) = d.pci.split(',').find(|t| {
                    let b = Bdf::parse(t);
                    plans
                        .iter()
                        .any(|o| o.pci_functions().any(|x| Some(x) == b))
                }) {
                    return Err(PlanError::PciTwice { module, function });
                }
                if d.directmap != 0 && !d.service && !d.privileged {
                    return Err(PlanError::DirectmapNotTrusted { module });
                }
                if d.service {
                    if d.vif[0].is_some() {
                        return Err(PlanError::BadOption {
                            module,
                            option: "vif",
                        });
                    }
                    if have_service {
                        return Err(PlanError::SecondService { module });
                    }
                    have_service = true;
                }
                if d.privileged {
                    if have_priv {
                        return Err(PlanError::SecondPrivileged { module });
                    }
                    have_priv = true;
                    d.domid = 0;
                } else {
                    d.domid = next_id;
                    next_id = next_id.checked_add(1).ok_or(PlanError::TooManyDomains)?;
                }
                plans.push(d)?;
            }
            Some("ramdisk") => {
                if let Some(w) = words.next() {
                    return Err(PlanError::BadOption { module, option: w });
                }
                let d = plans
                    .last_mut()
                    .ok_or(PlanError::OrphanRamdisk { module })?;
                if d.ramdisk.is_some() {
                    return Err(PlanError::SecondRamdisk { module });
                }
                d.ramdisk = Some(module);
            }
            Some(word) => return Err(PlanError::UnknownRole { module, word }),
            None => {
                return Err(PlanError::UnknownRole { module, word: "" });
            }
        }
    }
    if !have_service && let Some(d) = plans.iter().find(|d| d.vif[0].is_some()) {
        return Err(PlanError::VifWithoutService { module: d.kernel });
    }
    Ok(plans)
}

/// Adds a vif (its address, or `None` for the default) to `d`; `None` if
/// it has [`MAX_VIFS`] already.
fn add_vif(d: &mut DomainPlan<'_>, mac: Option<Mac>) -> Option<()> {
    let slot = d.vif.iter_mut().find(|v| v.is_none())?;
    *slot = Some(mac);
    Some(())
}

/// Parses `aa:bb:cc:dd:ee:ff` (hexadecimal, either case).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in m.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// Whether `v` is a `pci=` list: 1 to [`MAX_FUNCTIONS`] functions, none
/// twice (checked without the heap, which does not exist yet).
fn valid_pci(v: &str) -> bool {
    let mut n = 0;
    for (i, t) in v.split(',').enumerate() {
        let Some(b) = Bdf::parse(t) else {
            return false;
        };
        if v.split(',').take(i).any(|u| Bdf::parse(u) == Some(b)) {
            return false;
        }
        n += 1;
    }
    n <= MAX_FUNCTIONS
}

/// Whether `v` may be a domain name: 1 to 64 of `A-Z a-z 0-9 - _ .` (safe
/// in a xenstore value and in the service domain's command line).
fn valid_name(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A fixed-capacity list of plans (this runs before, and independently of,
/// the heap): up to [`MAX_DOMAINS`] domain plans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plans<'a> {
    items: [Option<DomainPlan<'a>>; MAX_DOMAINS],
    len: usize,
}

impl<'a> Plans<'a> {
    fn new() -> Self {
        Self {
            items: [const { None }; MAX_DOMAINS],
            len: 0,
        }
    }

    fn push(&mut self, d: DomainPlan<'a>) -> Result<(), PlanError<'a>> {
        let slot = self
            .items
            .get_mut(self.len)
            .ok_or(PlanError::TooManyDomains)?;
        *slot = Some(d);
        self.len += 1;
        Ok(())
    }

    fn last_mut(&mut self) -> Option<&mut DomainPlan<'a>> {
        self.len.checked_sub(1).and_then(|i| self.items[i].as_mut())
    }

    /// The plans, in module order.
    pub fn iter(&self) -> impl Iterator<Item = &DomainPlan<'a>> {
        self.items[..self.len].iter().flatten()
    }

    /// The service domain's id, if the plan has one.
    pub fn service(&self) -> Option<u16> {
        self.iter().find(|d| d.service).map(|d| d.domid)
    }

    /// Writes `domains=ID:NAME,...` for every domain, in module order
    /// (an unnamed domain is `d<id>`, as the builder names it), then
    /// ` vif=ID` or ` vif=ID,mac=MAC` for each `vif` option, in module and
    /// handle order: what the service domain's command line carries.
    pub fn write_domain_list(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        out.write_str("domains=")?;
        for (i, d) in self.iter().enumerate() {
            if i > 0 {
                out.write_char(',')?;
            }
            if d.name.is_empty() {
                write!(out, "{}:d{}", d.domid, d.domid)?;
            } else {
                write!(out, "{}:{}", d.domid, d.name)?;
            }
        }
        for d in self.iter() {
            for mac in d.vifs() {
                write!(out, " vif={}", d.domid)?;
                if let Some(m) = mac {
                    write!(
                        out,
                        ",mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                        m[0], m[1], m[2], m[3], m[4], m[5]
                    )?;
                }
            }
        }
        Ok(())
    }

    /// How many domains.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(lines: &[&'static str]) -> Vec<DomainPlan<'static>> {
        plan(lines).unwrap().iter().cloned().collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64"), Some(64 << 20));
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1m"), Some(1 << 20));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("-1M"), None);
        assert_eq!(parse_size("99999999999999999G"), None);
    }

    #[test]
    fn lone_module_without_cmdline_is_a_default_kernel() {
        let p = ok(&[""]);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].domid, p[0].kernel, p[0].ramdisk), (1, 0, None));
        assert_eq!(p[0].mem, DEFAULT_MEM_MIB << 20);
    }

    #[test]
    fn kernels_ramdisks_and_options() {
        let p = ok(&[
            "kernel name=ctl priv mem=128M vcpus=2 -- console=hvc0 quiet",
            "ramdisk",
            "kernel mem=32",
            "kernel -- a -- b",
        ]);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].domid, 0);
        assert!(p[0].privileged);
        assert_eq!(p[0].name, "ctl");
        assert_eq!(p[0].mem, 128 << 20);
        assert_eq!(p[0].vcpus, 2);
        assert_eq!(p[0].ramdisk, Some(1));
        assert_eq!(p[0].cmdline, "console=hvc0 quiet");
        assert_eq!((p[1].domid, p[1].kernel, p[1].mem), (1, 2, 32 << 20));
        assert_eq!(p[1].cmdline, "");
        assert_eq!((p[2].domid, p[2].cmdline), (2, "a -- b"));
    }

    #[test]
    fn on_reboot_restarts_by_default_but_never_the_service_domain() {
        let p = ok(&[
            "kernel name=a",
            "kernel name=b on_reboot=destroy",
            "kernel name=c on_reboot=restart",
            "kernel name=svc service on_reboot=restart",
        ]);
        assert_eq!(p[0].on_reboot, OnReboot::Restart);
        assert_eq!(p[1].on_reboot, OnReboot::Destroy);
        assert_eq!(p[2].on_reboot, OnReboot::Restart);
        let restarts: Vec<bool> = p.iter().map(DomainPlan::restarts).collect();
        assert_eq!(restarts, [true, false, true, false]);
        assert!(ok(&[""])[0].restarts());
    }

    #[test]
    fn bad_plans_are_refused_with_the_module_and_reason() {
        assert_eq!(plan(&[]), Err(PlanError::NoModules));
        assert_eq!(
            plan(&["ramdisk"]),
            Err(PlanError::OrphanRamdisk { module: 0 })
        );
        assert_eq!(
            plan(&["kernel", "ramdisk", "ramdisk"]),
            Err(PlanError::SecondRamdisk { module: 2 })
        );
        assert_eq!(
            plan(&["kernel", "initrd"]),
            Err(PlanError::UnknownRole {
                module: 1,
                word: "initrd"
            })
        );
        assert_eq!(
            plan(&["kernel", ""]),
            Err(PlanError::UnknownRole {
                module: 1,
                word: ""
            })
        );
        for bad in [
            "mem=0",
            "mem=12K",
            "mem=lots",
            "vcpus=0",
            "vcpus=129",
            "vcpus=-1",
            "name=",
            "name=a,b",
            "name=a:b",
            "colour=blue",
            "service=1",
            "on_reboot=",
            "on_reboot=preserve",
            "pci=",
            "pci=00:03",
            "pci=00:20.0",
            "pci=0001:00:03.0",
            "pci=00:03.0,00:03.0",
            "pci=00:03.0,",
            "vif=",
            "vif=00:16:3e:00:00",
            "vif=00:16:3e:00:00:02:03",
            "vif=00:16:3e:00:00:2",
            "vif=00:16:3e:00:00:+2",
            "vif=00:16:3e:00:00:zz",
            "vif=01:00:5e:00:00:01",
            "vif=ff:ff:ff:ff:ff:ff",
        ] {
            let line = format!("kernel {bad}");
            let line: &'static str = Box::leak(line.into_boxed_str());
            assert_eq!(
                plan(&[line]),
                Err(PlanError::BadOption {
                    module: 0,
                    option: bad
                }),
                "{bad}"
            );
        }
        assert_eq!(
            plan(&["kernel priv", "kernel priv"]),
            Err(PlanError::SecondPrivileged { module: 1 })
        );
        let many = ["kernel"; MAX_DOMAINS + 1];
        assert_eq!(plan(&many), Err(PlanError::TooManyDomains));
    }

    #[test]
    fn vifs_from_the_module_options_reach_the_service_domain() {
        let p = plan(&[
            "kernel name=svc service",
            "kernel name=a vif vif=00:16:3E:12:34:56 -- vif=ignored",
            "kernel name=b",
            "kernel name=c vif=02:00:00:00:00:0c",
        ])
        .unwrap();
        let v: Vec<_> = p.iter().map(|d| d.vifs().collect::<Vec<_>>()).collect();
        assert_eq!(v[0], []);
        assert_eq!(v[1], [None, Some([0, 0x16, 0x3e, 0x12, 0x34, 0x56])]);
        assert_eq!(v[2], []);
        assert_eq!(v[3], [Some([2, 0, 0, 0, 0, 12])]);
        assert_eq!(p.iter().nth(1).unwrap().cmdline, "vif=ignored");
        let mut s = String::new();
        p.write_domain_list(&mut s).unwrap();
        assert_eq!(
            s,
            "domains=1:svc,2:a,3:b,4:c vif=2 vif=2,mac=00:16:3e:12:34:56 \
             vif=4,mac=02:00:00:00:00:0c"
        );
        // At most MAX_VIFS per domain.
        let four = "kernel vif vif vif vif";
        assert_eq!(plan(&["kernel service", four]).unwrap().len(), 2);
        assert_eq!(
            plan(&["kernel service", "kernel vif vif vif vif vif"]),
            Err(PlanError::BadOption {
                module: 1,
                option: "vif"
            })
        );
        // The service domain is no front end of its own switch.
        assert_eq!(
            plan(&["kernel service vif"]),
            Err(PlanError::BadOption {
                module: 0,
                option: "vif"
            })
        );
        // Nobody to serve it.
        assert_eq!(
            plan(&["kernel name=a", "kernel vif"]),
            Err(PlanError::VifWithoutService { module: 1 })
        );
        // The service domain may come after the domain with the vif.
        assert!(plan(&["kernel vif", "ramdisk", "kernel service"]).is_ok());
    }

    #[test]
    fn the_service_domain_and_its_domain_list() {
        let p = plan(&[
            "kernel name=svc service mem=16M -- quiet",
            "kernel name=linux-1 -- console=hvc0",
            "ramdisk",
            "kernel",
        ])
        .unwrap();
        assert_eq!(p.service(), Some(1));
        let v: Vec<_> = p.iter().cloned().collect();
        assert!(v[0].service && !v[1].service && !v[2].service);
        assert_eq!(v[0].cmdline, "quiet");
        let mut s = String::new();
        p.write_domain_list(&mut s).unwrap();
        assert_eq!(s, "domains=1:svc,2:linux-1,3:d3");
        // A privileged service domain is domain 0.
        let p = plan(&["kernel priv service", "kernel name=g"]).unwrap();
        assert_eq!(p.service(), Some(0));
        // No service domain: the old setup.
        assert_eq!(plan(&["kernel", "kernel"]).unwrap().service(), None);
        assert_eq!(
            plan(&["kernel service", "kernel service"]),
            Err(PlanError::SecondService { module: 1 })
        );
    }

    #[test]
    fn pci_functions_go_to_one_domain_each() {
        let p = ok(&[
            "kernel service pci=00:03.0,0000:00:1f.7",
            "kernel name=g",
            "kernel pci=01:00.0",
        ]);
        let f: Vec<Vec<Bdf>> = p.iter().map(|d| d.pci_functions().collect()).collect();
        assert_eq!(
            f,
            [
                vec![Bdf::new(0, 3, 0).unwrap(), Bdf::new(0, 0x1F, 7).unwrap()],
                vec![],
                vec![Bdf::new(1, 0, 0).unwrap()],
            ]
        );
        assert_eq!(
            plan(&["kernel pci=00:03.0", "kernel pci=00:04.0,0000:00:03.0"]),
            Err(PlanError::PciTwice {
                module: 1,
                function: "0000:00:03.0"
            })
        );
        assert_eq!(
            plan(&["kernel pci=00:03.0 pci=00:04.0"]),
            Err(PlanError::BadOption {
                module: 0,
                option: "pci=00:04.0"
            })
        );
    }

    #[test]
    fn directmap_only_for_a_trusted_domain() {
        let p = ok(&[
            "kernel directmap=32 service pci=00:04.0",
            "kernel priv directmap=2",
        ]);
        assert_eq!((p[0].directmap, p[1].directmap), (32 << 20, 2 << 20));
        assert_eq!(ok(&["kernel service"])[0].directmap, 0);
        assert_eq!(
            plan(&["kernel service", "kernel name=g directmap=32"]),
            Err(PlanError::DirectmapNotTrusted { module: 1 })
        );
        for bad in [
            "directmap=0",
            "directmap=3",
            "directmap=2048",
            "directmap=x",
        ] {
            let line: &'static str = Box::leak(format!("kernel service {bad}").into_boxed_str());
            assert_eq!(
                plan(&[line]),
                Err(PlanError::BadOption {
                    module: 0,
                    option: bad
                })
            );
        }
        assert_eq!(
            plan(&["kernel service directmap=2 directmap=4"]),
            Err(PlanError::BadOption {
                module: 0,
                option: "directmap=4"
            })
        );
    }

    #[test]
    fn errors_name_the_module() {
        let e = plan(&["kernel vcpus=0"]).unwrap_err();
        assert_eq!(e.to_string(), "module 0: bad option `vcpus=0`");
    }
}

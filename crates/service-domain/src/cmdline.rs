//! The service domain's command line: `domains=ID:NAME,...` (the hypervisor
//! appends the domains of its launch plan), the devices it serves
//! (`disk=`, `vif=`) and test options.

use alloc::string::String;
use alloc::vec::Vec;

/// One domain the launch plan names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    /// Its domain id.
    pub domid: u16,
    /// Its name.
    pub name: String,
}

/// What the command line asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The domains to serve (from `domains=`), in order.
    pub domains: Vec<Named>,
    /// `shutdown=ID,...`: ask these domains to power off as soon as they
    /// are connected (for tests).
    pub shutdown: Vec<u16>,
    /// `shutdown-when=KEY`: ask every domain to power off once each has
    /// written KEY under its home (for tests and demos).
    pub shutdown_when: Option<String>,
    /// `disk=ID[:ro][@OFFSET+LEN]` (repeatable): the boot module (our
    /// ramdisk), or the LEN bytes at OFFSET in it, is domain ID's `xvda`,
    /// read-write unless `:ro`.
    pub disks: Vec<Disk>,
    /// `vif=ID[,mac=aa:bb:cc:dd:ee:ff]` (repeatable): a network interface
    /// for domain ID on the switch (its `handle`s count from 0 in order);
    /// without `mac=`, Xen's `00:16:3e` prefix and the domain id
    /// ([`crate::netback::default_mac`]).
    pub vifs: Vec<Vif>,
    /// `net-split-events`: offer netfront one event channel per ring
    /// (`feature-split-event-channels`); without it, one for both.
    pub net_split_events: bool,
    /// `blkback.feature_persistent=0|1` (Linux blkback's module parameter
    /// of that name): whether the vbds offer `feature-persistent`; `None`
    /// leaves blkback's default (on).
    pub blk_persistent: Option<bool>,
    /// `directmap=0xBASE:0xSIZE` (hexadecimal bytes, appended by the
    /// hypervisor): our RAM at guest-physical == host-physical, the only
    /// memory a device may be given for DMA. The module option
    /// `directmap=MiB` (decimal, no colon) is the hypervisor's and is
    /// ignored here.
    pub directmap: Option<(u64, u64)>,
    /// `pci=BB:DD.F[,...]`: the assigned PCI functions to drive (bus,
    /// device, function); empty: every function bus 0 shows us.
    pub pci: Vec<(u8, u8, u8)>,
    /// `vdisk=ID`: the virtio-blk disk assigned to us is domain ID's
    /// `xvda` (instead of a boot-module `disk=` word for it).
    pub virtio_disk: Option<u16>,
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?, 16).ok()
}

fn parse_directmap(v: &str) -> Option<(u64, u64)> {
    let (base, size) = v.split_once(':')?;
    let (base, size) = (parse_hex(base)?, parse_hex(size)?);
    (size > 0 && base % 4096 == 0 && size % 4096 == 0 && base.checked_add(size).is_some())
        .then_some((base, size))
}

/// `BB:DD.F` or `0000:BB:DD.F` (hexadecimal, segment 0), as `lspci`.
pub fn parse_bdf(s: &str) -> Option<(u8, u8, u8)> {
    let s = s.strip_prefix("0000:").unwrap_or(s);
    let (bus, rest) = s.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    let hex = |t: &str, max: u8| {
        (!t.is_empty() && t.len() <= 2)
            .then(|| u8::from_str_radix(t, 16).ok())
            .flatten()
            .filter(|&v| v <= max)
    };
    Some((hex(bus, 0xff)?, hex(dev, 31)?, hex(func, 7)?))
}

/// One `vif=` word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vif {
    /// The front-end domain.
    pub domid: u16,
    /// Its address, if given.
    pub mac: Option<[u8; 6]>,
}

fn parse_vif(v: &str) -> Option<Vif> {
    let mut parts = v.split(',');
    let domid = parts.next()?.parse().ok()?;
    let mut mac = None;
    for p in parts {
        mac = Some(crate::netback::parse_mac(p.strip_prefix("mac=")?)?);
    }
    Some(Vif { domid, mac })
}

/// One `disk=` word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disk {
    /// The front-end domain.
    pub domid: u16,
    /// Read-only.
    pub ro: bool,
    /// Bytes of the module (offset, length); `None`: all of it.
    pub range: Option<(u64, u64)>,
}

fn parse_disk(d: &str) -> Option<Disk> {
    let (d, range) = match d.split_once('@') {
        Some((d, r)) => {
            let (off, len) = r.split_once('+')?;
            (d, Some((off.parse().ok()?, len.parse().ok()?)))
        }
        None => (d, None),
    };
    let (id, ro) = match d.strip_suffix(":ro") {
        Some(id) => (id, true),
        None => (d, false),
    };
    Some(Disk {
        domid: id.parse().ok()?,
        ro,
        range,
    })
}

/// Parses the words of a command line. Unknown words are ignored (the
/// line also carries the user's own options); malformed entries of a known
/// option are skipped.
pub fn parse(line: &str) -> Options {
    let mut o = Options::default();
    for word in line.split_ascii_whitespace() {
        if let Some(list) = word.strip_prefix("domains=") {
            for entry in list.split(',') {
                let Some((id, name)) = entry.split_once(':') else {
                    continue;
                };
                let (Ok(domid), false) = (id.parse::<u16>(), name.is_empty()) else {
                    continue;
                };
                o.domains.push(Named {
                    domid,
                    name: String::from(name),
                });
            }
        } else if let Some(v) = word.strip_prefix("vif=") {
            o.vifs.extend(parse_vif(v));
        } else if word == "net-split-events" {
            o.net_split_events = true;
        } else if let Some(d) = word.strip_prefix("disk=") {
            o.disks.extend(parse_disk(d));
        } else if let Some(key) = word.strip_prefix("shutdown-when=") {
            o.shutdown_when = Some(String::from(key)).filter(|k| !k.is_empty());
        } else if let Some(v) = word.strip_prefix("blkback.feature_persistent=") {
            o.blk_persistent = match v {
                "0" | "n" | "N" => Some(false),
                "1" | "y" | "Y" => Some(true),
                _ => o.blk_persistent,
            };
        } else if let Some(v) = word.strip_prefix("directmap=") {
            if let Some(d) = parse_directmap(v) {
                o.directmap = Some(d);
            }
        } else if let Some(id) = word.strip_prefix("vdisk=") {
            if let Ok(id) = id.parse() {
                o.virtio_disk = Some(id);
            }
        } else if let Some(list) = word.strip_prefix("pci=") {
            o.pci.extend(list.split(',').filter_map(parse_bdf));
        } else if let Some(list) = word.strip_prefix("shutdown=") {
            o.shutdown
                .extend(list.split(',').filter_map(|d| d.parse::<u16>().ok()));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_and_options() {
        let o =
            parse("console=x domains=1:linux,2:d2,x:bad,3:,4 shutdown=1,z shutdown-when=data/done");
        assert_eq!(o.shutdown_when.as_deref(), Some("data/done"));
        assert_eq!(
            o.domains,
            [
                Named {
                    domid: 1,
                    name: "linux".into()
                },
                Named {
                    domid: 2,
                    name: "d2".into()
                }
            ]
        );
        assert_eq!(o.shutdown, [1]);
        assert_eq!(o.blk_persistent, None);
        assert_eq!(
            parse("blkback.feature_persistent=1").blk_persistent,
            Some(true)
        );
        assert_eq!(
            parse("blkback.feature_persistent=1 blkback.feature_persistent=0").blk_persistent,
            Some(false)
        );
        assert_eq!(parse("blkback.feature_persistent=2").blk_persistent, None);
        assert!(o.disks.is_empty());
        assert_eq!(parse(""), Options::default());
        let d = |domid, ro, range| Disk { domid, ro, range };
        assert_eq!(parse("disk=2").disks, [d(2, false, None)]);
        assert_eq!(parse("disk=3:ro").disks, [d(3, true, None)]);
        assert_eq!(
            parse("disk=2@0+4096 disk=3:ro@4096+512").disks,
            [d(2, false, Some((0, 4096))), d(3, true, Some((4096, 512)))]
        );
        assert!(
            parse("disk=x disk= disk=2@1 disk=2@x+1 disk=2@1+y")
                .disks
                .is_empty()
        );
        let v = |domid, mac| Vif { domid, mac };
        assert_eq!(
            parse("vif=2 vif=3,mac=00:16:3e:aa:bb:cc").vifs,
            [v(2, None), v(3, Some([0, 0x16, 0x3e, 0xaa, 0xbb, 0xcc]))]
        );
        assert!(
            parse("vif= vif=x vif=2,mac=01:00:00:00:00:00 vif=2,mac=1 vif=2,foo=1")
                .vifs
                .is_empty()
        );
        // What the hypervisor appends for the domains' own `vif` module
        // options (crates/hypervisor/src/launch.rs), after the user's.
        let o = parse("vif=3 domains=1:svc,2:a,3:b vif=2 vif=2,mac=00:16:3e:12:34:56");
        assert_eq!(
            o.vifs,
            [
                v(3, None),
                v(2, None),
                v(2, Some([0, 0x16, 0x3e, 0x12, 0x34, 0x56]))
            ]
        );
        assert!(!o.net_split_events);
        assert!(parse("net-split-events").net_split_events);
    }

    #[test]
    fn directmap_and_pci() {
        // The module option (MiB) is the hypervisor's; the appended word
        // is ours.
        let o = parse("directmap=16 pci=00:04.0,0000:00:05.0 directmap=0x20000000:0x1000000");
        assert_eq!(o.directmap, Some((0x2000_0000, 0x100_0000)));
        assert_eq!(o.pci, [(0, 4, 0), (0, 5, 0)]);
        for bad in [
            "directmap=0x1000",
            "directmap=0x1001:0x1000",
            "directmap=0x1000:0",
            "directmap=1000:1000",
            "directmap=0xffffffffffff0000:0x20000",
        ] {
            assert_eq!(parse(bad).directmap, None, "{bad}");
        }
        assert!(parse("pci=00:20.0,00:04.8,0:4,100:00.0,x").pci.is_empty());
        assert_eq!(parse("pci=ff:1f.7").pci, [(0xff, 0x1f, 7)]);
        assert_eq!(parse("vdisk=2").virtio_disk, Some(2));
        assert_eq!(parse("vdisk=x").virtio_disk, None);
    }
}

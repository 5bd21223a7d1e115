//! The service domain's command line: `domains=ID:NAME,...` (the hypervisor
//! appends the domains of its launch plan) and test options.

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
    /// `disk=ID[:ro]`: the boot module (our ramdisk) is domain ID's
    /// `xvda`, read-write unless `:ro`.
    pub disk: Option<(u16, bool)>,
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
        } else if let Some(d) = word.strip_prefix("disk=") {
            let (id, ro) = match d.strip_suffix(":ro") {
                Some(id) => (id, true),
                None => (d, false),
            };
            if let Ok(id) = id.parse::<u16>() {
                o.disk = Some((id, ro));
            }
        } else if let Some(key) = word.strip_prefix("shutdown-when=") {
            o.shutdown_when = Some(String::from(key)).filter(|k| !k.is_empty());
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
        assert_eq!(o.disk, None);
        assert_eq!(parse(""), Options::default());
        assert_eq!(parse("disk=2").disk, Some((2, false)));
        assert_eq!(parse("disk=3:ro").disk, Some((3, true)));
        assert_eq!(parse("disk=x disk=").disk, None);
    }
}

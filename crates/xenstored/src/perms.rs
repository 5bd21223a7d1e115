//! Node permissions: `n`/`r`/`w`/`b` + domid entries, the owner and default
//! entry, and the access a connection gets.

use alloc::vec::Vec;

use crate::wire::XsError;

/// No access.
pub const XS_PERM_NONE: u8 = 0;
/// Read access.
pub const XS_PERM_READ: u8 = 1;
/// Write access.
pub const XS_PERM_WRITE: u8 = 2;
/// Owner (only ever computed, never stored).
pub const XS_PERM_OWNER: u8 = 8;

/// One permission entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    /// The domain the entry names.
    pub domid: u32,
    /// `XS_PERM_READ | XS_PERM_WRITE` bits.
    pub access: u8,
}

/// A node's permission list: entry 0 names the owner, and its access is
/// the default for domains without an entry of their own.
pub type Perms = Vec<Perm>;

impl Perm {
    /// Parses one entry, e.g. `b0` or `r12`.
    pub fn parse(s: &[u8]) -> Result<Self, XsError> {
        let (&letter, id) = s.split_first().ok_or(XsError::EINVAL)?;
        let access = match letter {
            b'n' => XS_PERM_NONE,
            b'r' => XS_PERM_READ,
            b'w' => XS_PERM_WRITE,
            b'b' => XS_PERM_READ | XS_PERM_WRITE,
            _ => return Err(XsError::EINVAL),
        };
        if id.is_empty() || id.len() > 10 || !id.iter().all(u8::is_ascii_digit) {
            return Err(XsError::EINVAL);
        }
        let domid = id
            .iter()
            .try_fold(0u64, |v, &b| Some(v * 10 + u64::from(b - b'0')))
            .filter(|&v| v <= u64::from(u16::MAX))
            .ok_or(XsError::EINVAL)?;
        Ok(Self {
            domid: domid as u32,
            access,
        })
    }

    /// Appends the entry's text and a NUL to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.push(match self.access & (XS_PERM_READ | XS_PERM_WRITE) {
            XS_PERM_READ => b'r',
            XS_PERM_WRITE => b'w',
            3 => b'b',
            _ => b'n',
        });
        out.extend_from_slice(alloc::format!("{}", self.domid).as_bytes());
        out.push(0);
    }
}

/// Whom a connection acts for when permissions are checked.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// The connection's domain.
    pub domid: u32,
    /// Whether it may do everything (domain 0, socket clients, domains the
    /// embedder declared privileged).
    pub privileged: bool,
    /// `SET_TARGET`: the domain whose rights it also has.
    pub target: Option<u32>,
}

impl Caller {
    fn is(&self, domid: u32) -> bool {
        self.domid == domid || self.target == Some(domid)
    }

    /// The access this caller has to a node with `perms`: everything for
    /// the privileged and the owner, else the first later entry naming it,
    /// else the default (entry 0's access).
    pub fn access(&self, perms: &[Perm]) -> u8 {
        let all = XS_PERM_READ | XS_PERM_WRITE | XS_PERM_OWNER;
        let Some(owner) = perms.first() else {
            return if self.privileged { all } else { XS_PERM_NONE };
        };
        if self.privileged || self.is(owner.domid) {
            return all;
        }
        perms[1..]
            .iter()
            .find(|p| self.is(p.domid))
            .map_or(owner.access, |p| p.access)
    }

    /// Whether the caller has all of `wanted`.
    pub fn may(&self, perms: &[Perm], wanted: u8) -> bool {
        self.access(perms) & wanted == wanted
    }
}

/// Parses a `SET_PERMS` list (each entry NUL-terminated).
pub fn parse_list<'a>(entries: impl Iterator<Item = &'a [u8]>) -> Result<Perms, XsError> {
    let perms = entries.map(Perm::parse).collect::<Result<Perms, _>>()?;
    if perms.is_empty() {
        return Err(XsError::EINVAL);
    }
    Ok(perms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Perm {
        Perm::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn parse_and_print() {
        for s in ["n0", "r1", "w22", "b65535"] {
            let mut out = Vec::new();
            p(s).write_to(&mut out);
            assert_eq!(out, [s.as_bytes(), b"\0"].concat());
        }
        for bad in ["", "x1", "r", "r-1", "r65536", "r1a", "r 1"] {
            assert_eq!(Perm::parse(bad.as_bytes()), Err(XsError::EINVAL), "{bad}");
        }
    }

    #[test]
    fn access_rules() {
        let perms = [p("n5"), p("r7"), p("w8"), p("b7")];
        let c = |domid, privileged| Caller {
            domid,
            privileged,
            target: None,
        };
        assert_eq!(c(5, false).access(&perms), 11);
        assert_eq!(c(0, true).access(&perms), 11);
        // The first matching later entry wins.
        assert_eq!(c(7, false).access(&perms), XS_PERM_READ);
        assert_eq!(c(8, false).access(&perms), XS_PERM_WRITE);
        assert_eq!(c(9, false).access(&perms), XS_PERM_NONE);
        let open = [p("b5")];
        assert_eq!(c(9, false).access(&open), 3);
        let t = Caller {
            domid: 9,
            privileged: false,
            target: Some(5),
        };
        assert_eq!(t.access(&perms), 11);
    }
}

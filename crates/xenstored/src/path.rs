//! Node names: validation, the implicit `/local/domain/<domid>` prefix, and
//! the ancestor relation watches use.

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::String;

use crate::wire::{XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX, XsError};

/// The special watch path fired when a domain is introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// The special watch path fired when a domain is released or shuts down.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

/// A domain's home directory, `/local/domain/<domid>`.
pub fn domain_path(domid: u32) -> String {
    format!("/local/domain/{domid}")
}

/// Bytes C xenstored accepts in a node name: `A-Z a-z 0-9 - / _ @`.
const NAME_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'/' | b'_' | b'@');
        b += 1;
    }
    t
};

/// Whether every byte is one C xenstored accepts in a node name and no `/`
/// follows another.
fn valid_chars_no_double_slash(path: &[u8]) -> bool {
    let mut prev_slash = false;
    for &b in path {
        let slash = b == b'/';
        if !NAME_BYTES[usize::from(b)] || (slash && prev_slash) {
            return false;
        }
        prev_slash = slash;
    }
    true
}

/// The length of a `/local/domain/<domid>/` prefix of `path` (up to five
/// digits, as C xenstored's scan), or 0.
fn local_prefix_len(path: &str) -> usize {
    let Some(rest) = path.strip_prefix("/local/domain/") else {
        return 0;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 5 || rest.as_bytes().get(digits) != Some(&b'/') {
        return 0;
    }
    "/local/domain/".len() + digits + 1
}

/// Checks an absolute node name: leading `/`, allowed characters, no `//`,
/// no trailing `/` (but for the root), at most 3072 bytes, and at most
/// 2048 after a `/local/domain/<domid>/` prefix.
pub fn is_valid_node_name(path: &str) -> bool {
    path.len() <= XENSTORE_ABS_PATH_MAX
        && path.starts_with('/')
        && (path == "/" || !path.ends_with('/'))
        && (path.len() <= XENSTORE_REL_PATH_MAX
            || path.len() <= local_prefix_len(path) + XENSTORE_REL_PATH_MAX)
        && valid_chars_no_double_slash(path.as_bytes())
}

/// A path as a request names it, resolved for the caller: absolute paths
/// as they are, relative ones under `/local/domain/<domid>`. `relative`
/// says which it was (watch events keep the caller's form).
pub fn canonicalize(domid: u32, raw: &[u8]) -> Result<(Cow<'_, str>, bool), XsError> {
    let raw = core::str::from_utf8(raw).map_err(|_| XsError::EINVAL)?;
    let (path, relative) = if raw.starts_with('/') || raw.starts_with('@') {
        (Cow::Borrowed(raw), false)
    } else {
        (Cow::Owned(format!("{}/{raw}", domain_path(domid))), true)
    };
    if is_valid_node_name(&path) {
        Ok((path, relative))
    } else {
        Err(XsError::EINVAL)
    }
}

/// Whether `path` is `ancestor` or lies below it.
pub fn is_child(path: &str, ancestor: &str) -> bool {
    if ancestor == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(ancestor) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The parent of an absolute path (`/` for top-level nodes and the root).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The name's components (none for the root).
pub fn components(path: &str) -> Components<'_> {
    Components(path)
}

/// The iterator of [`components`]: a byte scan for `/`, cheaper than a
/// general string split on the hot lookup path.
pub struct Components<'a>(&'a str);

impl<'a> Iterator for Components<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.0.trim_start_matches('/');
        if rest.is_empty() {
            self.0 = rest;
            return None;
        }
        let end = rest.bytes().position(|b| b == b'/').unwrap_or(rest.len());
        // '/' is ASCII: `end` is a character boundary.
        let (c, tail) = rest.split_at(end);
        self.0 = tail;
        Some(c)
    }
}

/// How many components the path has.
pub fn depth(path: &str) -> usize {
    components(path).count()
}

/// C's `atoi` as xenstored uses it for domain ids (glibc: `(int)strtol`):
/// optional spaces and sign, then digits up to the first other byte,
/// saturating at the 64-bit limits, then truncated to 32 bits; no digits
/// gives 0.
pub fn atoi(bytes: &[u8]) -> u32 {
    let mut it = bytes
        .iter()
        .copied()
        .skip_while(u8::is_ascii_whitespace)
        .peekable();
    let negative = match it.peek() {
        Some(b'-') => {
            it.next();
            true
        }
        Some(b'+') => {
            it.next();
            false
        }
        _ => false,
    };
    let mut v: i64 = 0;
    for b in it {
        if !b.is_ascii_digit() {
            break;
        }
        v = v.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    let v = if negative { v.saturating_neg() } else { v };
    v as i32 as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_node_name("/"));
        assert!(is_valid_node_name("/local/domain/1/device/vbd/51712/state"));
        assert!(is_valid_node_name("/a-b_c@d"));
        for bad in ["", "a", "/a/", "/a//b", "/a b", "/a.b", "/ä"] {
            assert!(!is_valid_node_name(bad), "{bad:?}");
        }
        let long = format!("/{}", "x".repeat(XENSTORE_REL_PATH_MAX));
        assert!(!is_valid_node_name(&long));
        let rel_ok = format!("/local/domain/5/{}", "x".repeat(XENSTORE_REL_PATH_MAX));
        assert!(is_valid_node_name(&rel_ok));
        let rel_bad = format!("/local/domain/5/{}", "x".repeat(XENSTORE_REL_PATH_MAX + 1));
        assert!(!is_valid_node_name(&rel_bad));
        let abs_bad = format!("/local/domain/5/{}", "x/".repeat(1600) + "x");
        assert!(!is_valid_node_name(&abs_bad));
    }

    #[test]
    fn canonical() {
        assert_eq!(
            canonicalize(3, b"device/vif").unwrap(),
            (Cow::from("/local/domain/3/device/vif"), true)
        );
        assert_eq!(canonicalize(3, b"/x").unwrap(), (Cow::from("/x"), false));
        assert_eq!(canonicalize(3, b""), Err(XsError::EINVAL));
        assert_eq!(canonicalize(3, b"@foo"), Err(XsError::EINVAL));
        assert_eq!(canonicalize(3, b"/\xff"), Err(XsError::EINVAL));
    }

    #[test]
    fn relations() {
        assert!(is_child("/a/b", "/a"));
        assert!(is_child("/a", "/a"));
        assert!(!is_child("/ab", "/a"));
        assert!(is_child("/a", "/"));
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(parent("/a"), "/");
        assert_eq!(depth("/"), 0);
        assert_eq!(depth("/a/b"), 2);
    }

    #[test]
    fn atoi_like_c() {
        assert_eq!(atoi(b"12"), 12);
        assert_eq!(atoi(b"12abc"), 12);
        assert_eq!(atoi(b"abc"), 0);
        assert_eq!(atoi(b" 7"), 7);
        assert_eq!(atoi(b"-1"), u32::MAX);
        assert_eq!(atoi(b"99999999999999"), 276_447_231);
        assert_eq!(atoi(b"99999999999999999999999"), u32::MAX);
    }
}

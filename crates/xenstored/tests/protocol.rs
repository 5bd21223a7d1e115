//! The protocol as C xenstored 4.17 answers it, one behaviour per test.

mod common;

use common::*;
use xenstored::wire::*;
use xenstored::{NoTransport, Quotas, Xenstored};

fn c(xs: &mut Xenstored, conn: u32) -> Client<'_> {
    Client::new(xs, conn)
}

/// A store with a socket client (dom0) and domains 1 and 2 introduced,
/// each with a home directory it owns, as a toolstack makes them.
fn setup() -> (Xenstored, u32, u32, u32) {
    let mut xs = Xenstored::new();
    let d0 = xs.connect_socket();
    let d1 = xs.introduce_domain(1);
    let d2 = xs.introduce_domain(2);
    for d in [1, 2] {
        let home = format!("/local/domain/{d}");
        c(&mut xs, d0).mkdir(0, &home).unwrap();
        c(&mut xs, d0)
            .set_perms(0, &home, &[&format!("n{d}"), "r0"])
            .unwrap();
    }
    (xs, d0, d1, d2)
}

#[test]
fn read_write_mkdir_directory() {
    let (mut xs, d0, ..) = setup();
    let mut s = c(&mut xs, d0);
    assert_eq!(s.write(0, "/a/b/c", b"v").unwrap(), OK);
    assert_eq!(s.read(0, "/a/b/c").unwrap(), b"v");
    // Parents are created empty.
    assert_eq!(s.read(0, "/a/b").unwrap(), b"");
    // Values are raw bytes, NULs included, and may be empty.
    s.write(0, "/bin", b"x\0y").unwrap();
    assert_eq!(s.read(0, "/bin").unwrap(), b"x\0y");
    s.write(0, "/empty", b"").unwrap();
    assert_eq!(s.read(0, "/empty").unwrap(), b"");
    // MKDIR keeps an existing value.
    s.mkdir(0, "/a/b/c").unwrap();
    assert_eq!(s.read(0, "/a/b/c").unwrap(), b"v");
    s.mkdir(0, "/a/d").unwrap();
    // Children in insertion order.
    assert_eq!(s.dir(0, "/a").unwrap(), ["b", "d"]);
    assert_eq!(s.dir(0, "/a/d").unwrap(), Vec::<String>::new());
    assert_eq!(
        s.dir(0, "/").unwrap(),
        ["tool", "local", "a", "bin", "empty"]
    );
    assert_eq!(s.read(0, "/nope"), Err(XsError::ENOENT));
    assert_eq!(s.dir(0, "/nope"), Err(XsError::ENOENT));
}

#[test]
fn rm_rules() {
    let (mut xs, d0, ..) = setup();
    let mut s = c(&mut xs, d0);
    s.write(0, "/a/b/c", b"1").unwrap();
    s.rm(0, "/a/b").unwrap();
    assert_eq!(s.read(0, "/a/b/c"), Err(XsError::ENOENT));
    assert_eq!(s.dir(0, "/a").unwrap(), Vec::<String>::new());
    // Absent with an existing parent: fine. Absent parent: ENOENT.
    assert_eq!(s.rm(0, "/a/zz").unwrap(), OK);
    assert_eq!(s.rm(0, "/q/zz"), Err(XsError::ENOENT));
    assert_eq!(s.rm(0, "/"), Err(XsError::EINVAL));
}

#[test]
fn bad_paths_and_arguments() {
    let (mut xs, d0, ..) = setup();
    let mut s = c(&mut xs, d0);
    for p in ["/a/", "/a//b", "/a b", "/a.b", "@x"] {
        assert_eq!(s.read(0, p), Err(XsError::EINVAL), "{p}");
        assert_eq!(s.write(0, p, b""), Err(XsError::EINVAL), "{p}");
    }
    // READ needs exactly one NUL-terminated argument.
    assert_eq!(s.req(XS_READ, 0, b"/tool"), Err(XsError::EINVAL));
    assert_eq!(s.req(XS_READ, 0, b"/tool\0x\0"), Err(XsError::EINVAL));
    assert_eq!(s.req(XS_WRITE, 0, b"/novalue"), Err(XsError::EINVAL));
    // Anything else is ENOSYS, including the server-only types.
    for t in [
        XS_CONTROL,
        XS_WATCH_EVENT,
        XS_ERROR,
        20,
        XS_GET_QUOTA,
        27,
        999,
    ] {
        assert_eq!(s.req(t, 0, b"\0"), Err(XsError::ENOSYS), "type {t}");
    }
    let long = format!("/{}", "x".repeat(3100));
    assert_eq!(s.write(0, &long, b""), Err(XsError::EINVAL));
}

#[test]
fn relative_paths_resolve_under_the_callers_home() {
    let (mut xs, d0, d1, _) = setup();
    c(&mut xs, d1).write(0, "data/x", b"1").unwrap();
    assert_eq!(
        c(&mut xs, d0).read(0, "/local/domain/1/data/x").unwrap(),
        b"1"
    );
    // Socket clients resolve against /local/domain/0.
    c(&mut xs, d0).write(0, "y", b"2").unwrap();
    assert_eq!(c(&mut xs, d0).read(0, "/local/domain/0/y").unwrap(), b"2");
    assert_eq!(
        c(&mut xs, d1).req(XS_GET_DOMAIN_PATH, 0, b"7\0").unwrap(),
        b"/local/domain/7\0"
    );
}

#[test]
fn permissions_owner_default_entries_inheritance() {
    let (mut xs, d0, d1, d2) = setup();
    // Domain 1 creates a node: it owns it and inherits the parent's
    // entries (n1 r0).
    c(&mut xs, d1).write(0, "/local/domain/1/k", b"v").unwrap();
    assert_eq!(
        c(&mut xs, d1).get_perms(0, "/local/domain/1/k").unwrap(),
        ["n1", "r0"]
    );
    // Another unprivileged domain: default `n` applies.
    assert_eq!(
        c(&mut xs, d2).read(0, "/local/domain/1/k"),
        Err(XsError::EACCES)
    );
    assert_eq!(
        c(&mut xs, d2).write(0, "/local/domain/1/k", b"x"),
        Err(XsError::EACCES)
    );
    // A missing node under an unreadable parent: EACCES, not ENOENT.
    assert_eq!(
        c(&mut xs, d2).read(0, "/local/domain/1/nothing"),
        Err(XsError::EACCES)
    );
    // Creating under a parent without write permission: EACCES.
    assert_eq!(
        c(&mut xs, d2).write(0, "/local/domain/1/new", b""),
        Err(XsError::EACCES)
    );
    // Entries give access; the first entry naming the domain wins.
    c(&mut xs, d1)
        .set_perms(0, "/local/domain/1/k", &["n1", "r2", "b2"])
        .unwrap();
    assert_eq!(c(&mut xs, d2).read(0, "/local/domain/1/k").unwrap(), b"v");
    assert_eq!(
        c(&mut xs, d2).write(0, "/local/domain/1/k", b"x"),
        Err(XsError::EACCES)
    );
    // Only the owner (or dom0) sets perms; only dom0 changes the owner.
    assert_eq!(
        c(&mut xs, d2).set_perms(0, "/local/domain/1/k", &["b2"]),
        Err(XsError::EACCES)
    );
    assert_eq!(
        c(&mut xs, d1).set_perms(0, "/local/domain/1/k", &["b2"]),
        Err(XsError::EPERM)
    );
    c(&mut xs, d0)
        .set_perms(0, "/local/domain/1/k", &["b2"])
        .unwrap();
    assert_eq!(c(&mut xs, d2).read(0, "/local/domain/1/k").unwrap(), b"v");
    // Default `b` opens the node to everyone.
    assert_eq!(c(&mut xs, d1).read(0, "/local/domain/1/k").unwrap(), b"v");
    // Bad permission strings.
    assert_eq!(
        c(&mut xs, d0).set_perms(0, "/local/domain/1/k", &["x1"]),
        Err(XsError::EINVAL)
    );
    assert_eq!(
        c(&mut xs, d0).req(XS_SET_PERMS, 0, b"/local/domain/1/k\0"),
        Err(XsError::EINVAL)
    );
    // A privileged creator keeps the parent's owner.
    c(&mut xs, d0)
        .write(0, "/local/domain/1/byd0", b"")
        .unwrap();
    assert_eq!(
        c(&mut xs, d0).get_perms(0, "/local/domain/1/byd0").unwrap(),
        ["n1", "r0"]
    );
    // Unprivileged domains may not use privileged requests.
    for t in [
        XS_INTRODUCE,
        XS_RELEASE,
        XS_IS_DOMAIN_INTRODUCED,
        XS_RESUME,
        XS_SET_TARGET,
    ] {
        assert_eq!(c(&mut xs, d1).req(t, 0, b"1\0"), Err(XsError::EACCES));
    }
}

#[test]
fn set_target_gives_the_targets_rights() {
    let (mut xs, d0, d1, d2) = setup();
    c(&mut xs, d1).write(0, "/local/domain/1/k", b"v").unwrap();
    assert_eq!(
        c(&mut xs, d2).read(0, "/local/domain/1/k"),
        Err(XsError::EACCES)
    );
    c(&mut xs, d0).req(XS_SET_TARGET, 0, b"2\x001\0").unwrap();
    assert_eq!(c(&mut xs, d2).read(0, "/local/domain/1/k").unwrap(), b"v");
    assert_eq!(
        c(&mut xs, d0).req(XS_SET_TARGET, 0, b"2\x009\0"),
        Err(XsError::ENOENT)
    );
}

#[test]
fn watches_fire_for_the_path_and_below() {
    let (mut xs, d0, ..) = setup();
    let mut s = c(&mut xs, d0);
    s.watch("/w", "tok").unwrap();
    // The immediate event.
    assert_eq!(s.take_events(), [("/w".into(), "tok".into())]);
    assert_eq!(s.watch("/w", "tok"), Err(XsError::EEXIST));
    s.watch("/w", "tok2").unwrap();
    s.take_events();
    s.write(0, "/w/a/b", b"1").unwrap();
    let ev = s.take_events();
    assert!(ev.contains(&("/w/a/b".into(), "tok".into())));
    assert!(ev.contains(&("/w/a/b".into(), "tok2".into())));
    s.write(0, "/wx", b"").unwrap();
    s.write(0, "/", b"").unwrap();
    assert_eq!(s.take_events(), []);
    s.unwatch("/w", "tok2").unwrap();
    assert_eq!(s.unwatch("/w", "tok2"), Err(XsError::ENOENT));
    s.rm(0, "/w/a").unwrap();
    let ev = s.take_events();
    assert!(ev.contains(&("/w/a".into(), "tok".into())), "{ev:?}");
    assert!(ev.iter().all(|(_, t)| t == "tok"));
    // Removing an ancestor tells watchers of a removed node its path.
    s.write(0, "/r/x/y", b"").unwrap();
    s.watch("/r/x/y", "deep").unwrap();
    s.take_events();
    s.rm(0, "/r").unwrap();
    assert_eq!(s.take_events(), [("/r/x/y".into(), "deep".into())]);
    // RESET_WATCHES drops them all.
    s.req(XS_RESET_WATCHES, 0, b"\0").unwrap();
    s.write(0, "/w/again", b"").unwrap();
    assert_eq!(s.take_events(), []);
}

#[test]
fn watch_events_respect_read_permission_and_relative_paths() {
    let (mut xs, d0, d1, d2) = setup();
    let mut cl = c(&mut xs, d1);
    cl.watch("device", "dev").unwrap();
    assert_eq!(cl.take_events(), [("device".into(), "dev".into())]);
    c(&mut xs, d2).watch("/local/domain/1", "spy").unwrap();
    c(&mut xs, d2).take_events();
    c(&mut xs, d0)
        .write(0, "/local/domain/1/device/vbd/51712/state", b"1")
        .unwrap();
    // Relative watch: relative event path.
    assert_eq!(
        c(&mut xs, d1).take_events(),
        [("device/vbd/51712/state".into(), "dev".into())]
    );
    // Domain 2 cannot read the node: no event.
    assert_eq!(c(&mut xs, d2).take_events(), []);
}

#[test]
fn watch_depth_limits_levels() {
    let (mut xs, d0, ..) = setup();
    let mut s = c(&mut xs, d0);
    s.req(XS_WATCH, 0, b"/d\0t\x001\0").unwrap();
    s.take_events();
    s.write(0, "/d/a", b"").unwrap();
    s.write(0, "/d/a/b", b"").unwrap();
    assert_eq!(s.take_events(), [("/d/a".into(), "t".into())]);
    assert_eq!(s.req(XS_WATCH, 0, b"/d\0u\0x\0"), Err(XsError::EINVAL));
}

#[test]
fn special_watches() {
    let (mut xs, d0, d1, _) = setup();
    c(&mut xs, d0).watch("@introduceDomain", "i").unwrap();
    c(&mut xs, d0).watch("@releaseDomain", "r").unwrap();
    c(&mut xs, d0)
        .req(XS_WATCH, 0, b"@releaseDomain\0rd\x001\0")
        .unwrap();
    c(&mut xs, d1).watch("@releaseDomain", "r1").unwrap();
    c(&mut xs, d0).take_events();
    c(&mut xs, d1).take_events();
    let mut cl = c(&mut xs, d0);
    cl.req(XS_INTRODUCE, 0, b"5\x00123\x009\0").unwrap();
    assert_eq!(cl.take_events(), [("@introduceDomain".into(), "i".into())]);
    assert!(xs.is_introduced(5));
    assert_eq!(
        c(&mut xs, d0)
            .req(XS_IS_DOMAIN_INTRODUCED, 0, b"5\0")
            .unwrap(),
        b"T\0"
    );
    assert_eq!(
        c(&mut xs, d0)
            .req(XS_IS_DOMAIN_INTRODUCED, 0, b"6\0")
            .unwrap(),
        b"F\0"
    );
    xs.domain_shutdown(5);
    xs.domain_shutdown(5);
    let ev = c(&mut xs, d0).take_events();
    assert_eq!(
        ev,
        [
            ("@releaseDomain".into(), "r".into()),
            ("@releaseDomain/5".into(), "rd".into())
        ]
    );
    // An unprivileged domain is not told (perms of the special node: n0).
    assert_eq!(c(&mut xs, d1).take_events(), []);
    let mut cl = c(&mut xs, d0);
    cl.req(XS_RESUME, 0, b"5\0").unwrap();
    cl.req(XS_RELEASE, 0, b"5\0").unwrap();
    assert_eq!(cl.take_events().len(), 2);
    assert!(!xs.is_introduced(5));
    assert_eq!(
        c(&mut xs, d0).req(XS_RELEASE, 0, b"5\0"),
        Err(XsError::ENOENT)
    );
    assert_eq!(
        c(&mut xs, d0).req(XS_RESUME, 0, b"5\0"),
        Err(XsError::ENOENT)
    );
    // Given read access to the special node, domain 1 hears.
    c(&mut xs, d0)
        .set_perms(0, "@releaseDomain", &["n0", "r1"])
        .unwrap();
    assert_eq!(
        c(&mut xs, d0).get_perms(0, "@releaseDomain").unwrap(),
        ["n0", "r1"]
    );
    xs.domain_shutdown(2);
    assert_eq!(
        c(&mut xs, d1).take_events(),
        [("@releaseDomain".into(), "r1".into())]
    );
    assert_eq!(c(&mut xs, d0).get_perms(0, "@nope"), Err(XsError::ENOENT));
    // INTRODUCE argument checks.
    assert_eq!(
        c(&mut xs, d0).req(XS_INTRODUCE, 0, b"7\x001\0"),
        Err(XsError::EINVAL)
    );
    assert_eq!(
        c(&mut xs, d0).req(XS_INTRODUCE, 0, b"7\x001\x000\0"),
        Err(XsError::EINVAL)
    );
}

#[test]
fn transactions_see_a_snapshot_and_commit_or_conflict() {
    let (mut xs, d0, ..) = setup();
    let mut s = c(&mut xs, d0);
    s.write(0, "/t/a", b"1").unwrap();
    s.write(0, "/t/b", b"1").unwrap();
    let t = s.start().unwrap();
    assert_ne!(t, 0);
    // The transaction sees its own writes, others don't until commit.
    s.write(t, "/t/b", b"2").unwrap();
    assert_eq!(s.read(t, "/t/b").unwrap(), b"2");
    assert_eq!(s.read(0, "/t/b").unwrap(), b"1");
    // A change outside to a node the transaction never read does not
    // conflict.
    s.write(0, "/t/c", b"outside").unwrap();
    s.end(t, true).unwrap();
    assert_eq!(s.read(0, "/t/b").unwrap(), b"2");
    assert_eq!(s.read(0, "/t/c").unwrap(), b"outside");

    // A change outside after START is not seen inside (a snapshot), and
    // having read the old state, the transaction cannot commit.
    let t = s.start().unwrap();
    s.write(0, "/t/d", b"outside").unwrap();
    assert_eq!(s.read(t, "/t/d"), Err(XsError::ENOENT));
    assert_eq!(s.end(t, true), Err(XsError::EAGAIN));

    // Read-modify-write with a conflicting write: EAGAIN, nothing applied.
    let t = s.start().unwrap();
    assert_eq!(s.read(t, "/t/a").unwrap(), b"1");
    s.write(t, "/t/new", b"x").unwrap();
    s.write(0, "/t/a", b"changed").unwrap();
    assert_eq!(s.end(t, true), Err(XsError::EAGAIN));
    assert_eq!(s.read(0, "/t/new"), Err(XsError::ENOENT));
    // The transaction is gone either way.
    assert_eq!(s.read(t, "/t/a"), Err(XsError::ENOENT));

    // Abort applies nothing.
    let t = s.start().unwrap();
    s.rm(t, "/t").unwrap();
    assert_eq!(s.read(t, "/t/a"), Err(XsError::ENOENT));
    s.end(t, false).unwrap();
    assert_eq!(s.read(0, "/t/a").unwrap(), b"changed");

    // Remove in a transaction, commit.
    let t = s.start().unwrap();
    s.rm(t, "/t").unwrap();
    s.end(t, true).unwrap();
    assert_eq!(s.read(0, "/t"), Err(XsError::ENOENT));

    // A read of a missing node conflicts with its creation.
    let t = s.start().unwrap();
    assert_eq!(s.read(t, "/m"), Err(XsError::ENOENT));
    s.write(0, "/m", b"").unwrap();
    s.write(t, "/other", b"").unwrap();
    assert_eq!(s.end(t, true), Err(XsError::EAGAIN));

    // No nesting; unknown ids; bad END arguments.
    let t = s.start().unwrap();
    assert_eq!(s.req(XS_TRANSACTION_START, t, b"\0"), Err(XsError::EBUSY));
    assert_eq!(s.read(t + 1000, "/tool"), Err(XsError::ENOENT));
    assert_eq!(s.req(XS_TRANSACTION_END, t, b"X\0"), Err(XsError::EINVAL));
    assert_eq!(s.req(XS_TRANSACTION_END, 0, b"T\0"), Err(XsError::ENOENT));
    // WATCH ignores tx_id.
    assert_eq!(s.req(XS_WATCH, 999, b"/x\0t\0").unwrap(), OK);
    s.end(t, true).unwrap();
}

#[test]
fn interleaved_transactions_as_in_c_xenstored() {
    // Example 4 of C xenstored's transaction.c notes: two transactions,
    // each reading what the other writes; the first to commit wins.
    let (mut xs, d0, ..) = setup();
    let mut s = c(&mut xs, d0);
    s.write(0, "/A", b"a").unwrap();
    s.write(0, "/B", b"b").unwrap();
    let t1 = s.start().unwrap();
    let t2 = s.start().unwrap();
    s.read(t1, "/A").unwrap();
    s.read(t2, "/B").unwrap();
    s.write(t1, "/B", b"1").unwrap();
    s.write(t2, "/A", b"2").unwrap();
    s.end(t1, true).unwrap();
    assert_eq!(s.end(t2, true), Err(XsError::EAGAIN));
    assert_eq!(s.read(0, "/A").unwrap(), b"a");
    assert_eq!(s.read(0, "/B").unwrap(), b"1");
}

#[test]
fn transactional_changes_fire_on_commit() {
    let (mut xs, d0, ..) = setup();
    let mut s = c(&mut xs, d0);
    s.watch("/x", "t").unwrap();
    s.take_events();
    let t = s.start().unwrap();
    s.write(t, "/x/y", b"1").unwrap();
    assert_eq!(s.take_events(), []);
    s.end(t, true).unwrap();
    assert!(s.take_events().contains(&("/x/y".into(), "t".into())));
    let t = s.start().unwrap();
    s.write(t, "/x/z", b"1").unwrap();
    s.end(t, false).unwrap();
    assert_eq!(s.take_events(), []);
}

#[test]
fn reset_watches_drops_transactions() {
    let (mut xs, d0, ..) = setup();
    let mut s = c(&mut xs, d0);
    let t = s.start().unwrap();
    s.req(XS_RESET_WATCHES, 0, b"\0").unwrap();
    assert_eq!(s.end(t, true), Err(XsError::ENOENT));
}

#[test]
fn big_directories_need_directory_part() {
    let (mut xs, d0, ..) = setup();
    let mut s = c(&mut xs, d0);
    let names: Vec<String> = (0..400).map(|i| format!("child-number-{i:04}")).collect();
    for n in &names {
        s.mkdir(0, &format!("/big/{n}")).unwrap();
    }
    assert_eq!(s.dir(0, "/big"), Err(XsError::E2BIG));
    let mut got = Vec::new();
    let mut offset = 0usize;
    let mut generation = None;
    loop {
        let mut req = z("/big");
        req.extend(z(&offset.to_string()));
        let r = s.req(XS_DIRECTORY_PART, 0, &req).unwrap();
        assert!(r.len() <= XENSTORE_PAYLOAD_MAX);
        let parts = strings(&r);
        let g = parts[0].clone();
        assert!(generation.is_none() || generation.as_ref() == Some(&g));
        generation = Some(g);
        let mut done = false;
        for p in &parts[1..] {
            if p.is_empty() {
                done = true;
                break;
            }
            offset += p.len() + 1;
            got.push(p.clone());
        }
        if done {
            break;
        }
    }
    assert_eq!(got, names);
}

/// A store with `q`, a socket client and domain 1 owning its home.
fn home_of_domain_1(q: Quotas) -> (Xenstored, u32, u32) {
    let mut xs = Xenstored::with_quotas(q);
    let d0 = xs.connect_socket();
    let d1 = xs.introduce_domain(1);
    c(&mut xs, d0).mkdir(0, "/local/domain/1").unwrap();
    c(&mut xs, d0)
        .set_perms(0, "/local/domain/1", &["n1"])
        .unwrap();
    (xs, d0, d1)
}

#[test]
fn quotas_for_unprivileged_domains() {
    let q = Quotas {
        nodes_per_domain: 10,
        transactions_per_conn: 2,
        watches_per_domain: 3,
        perms_per_node: 2,
        nodes_per_transaction: 6,
        ..Quotas::default()
    };
    let (mut xs, d0, d1) = home_of_domain_1(q);
    // The home directory counts (the owner changed to 1).
    assert_eq!(xs.entries_of(1), 1);
    for i in 0..9 {
        c(&mut xs, d1).write(0, &format!("n{i}"), b"").unwrap();
    }
    assert_eq!(xs.entries_of(1), 10);
    assert_eq!(c(&mut xs, d1).write(0, "n9", b""), Err(XsError::ENOSPC));
    // Overwriting an existing node needs no new entry.
    c(&mut xs, d1).write(0, "n0", b"v").unwrap();
    c(&mut xs, d1).rm(0, "n0").unwrap();
    assert_eq!(xs.entries_of(1), 9);
    // dom0 is exempt.
    for i in 0..20 {
        c(&mut xs, d0).write(0, &format!("/free/{i}"), b"").unwrap();
    }
    // Node size (header + perms + value + children) at 2048: ENOSPC.
    let v = vec![b'x'; 2048 - 20 - 8];
    assert_eq!(c(&mut xs, d1).write(0, "n1", &v), Err(XsError::ENOSPC));
    c(&mut xs, d1).write(0, "n1", &v[1..]).unwrap();
    assert_eq!(c(&mut xs, d0).write(0, "/big", &v).unwrap(), OK);
    // Perms per node.
    assert_eq!(
        c(&mut xs, d1).set_perms(0, "n1", &["n1", "r0", "r2"]),
        Err(XsError::ENOSPC)
    );
    // Watches: more than 3 held already -> E2BIG (one more fits, as C).
    for i in 0..4 {
        c(&mut xs, d1).watch(&format!("w{i}"), "t").unwrap();
    }
    assert_eq!(c(&mut xs, d1).watch("w9", "t"), Err(XsError::E2BIG));
    // Transactions: more than 2 open already -> ENOSPC.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(c(&mut xs, d1).start().unwrap());
    }
    assert_eq!(c(&mut xs, d1).start(), Err(XsError::ENOSPC));
    // Nodes per transaction: the transaction fails.
    let t = open[0];
    let mut failed = false;
    for i in 0..10 {
        if c(&mut xs, d1).read(t, &format!("n{i}")) == Err(XsError::ENOSPC) {
            failed = true;
            break;
        }
    }
    assert!(failed);
    assert_eq!(c(&mut xs, d1).end(t, true), Err(XsError::ENOMEM));
}

#[test]
fn quotas_hold_across_transactions() {
    let q = Quotas {
        nodes_per_domain: 5,
        ..Quotas::default()
    };
    let (mut xs, _, d1) = home_of_domain_1(q);
    let t1 = c(&mut xs, d1).start().unwrap();
    let t2 = c(&mut xs, d1).start().unwrap();
    for i in 0..3 {
        c(&mut xs, d1).write(t1, &format!("a{i}"), b"").unwrap();
        c(&mut xs, d1).write(t2, &format!("b{i}"), b"").unwrap();
    }
    c(&mut xs, d1).end(t1, true).unwrap();
    assert_eq!(xs.entries_of(1), 4);
    // Committing the second would exceed the quota.
    let r = c(&mut xs, d1).end(t2, true);
    assert!(
        matches!(r, Err(XsError::ENOSPC) | Err(XsError::EAGAIN)),
        "{r:?}"
    );
    assert!(xs.entries_of(1) <= 5);
}

#[test]
fn unread_replies_and_events_are_bounded() {
    let q = Quotas {
        queued_events: 4,
        ..Quotas::default()
    };
    let (mut xs, d0, d1) = home_of_domain_1(q);
    c(&mut xs, d1).watch("x", "t").unwrap();
    c(&mut xs, d1).take_events();
    for i in 0..50 {
        c(&mut xs, d0)
            .write(0, &format!("/local/domain/1/x/{i}"), b"")
            .unwrap();
    }
    assert_eq!(xs.dropped_events(d1), 46);
    assert_eq!(c(&mut xs, d1).take_events().len(), 4);
    // Requests whose replies are not read: the transport is told to stop.
    let hdr = xen_abi::XsdSockmsg {
        r#type: XS_READ,
        req_id: 0,
        tx_id: 0,
        len: 3,
    };
    let mut n = 0;
    while xs.accepts_requests(d1) {
        xs.handle(d1, &hdr, b"/x\0", &mut NoTransport);
        n += 1;
        assert!(n <= 20);
    }
    assert_eq!(n, xs.quotas().outstanding_requests);
    xs.next_output(d1).unwrap();
    assert!(xs.accepts_requests(d1));
}

#[test]
fn introduce_goes_through_the_embedder() {
    struct Refuse(Vec<(u32, u64, u32)>);
    impl xenstored::DomainOps for Refuse {
        fn introduce(&mut self, d: u32, g: u64, p: u32, _: u32) -> Result<(), XsError> {
            self.0.push((d, g, p));
            if d == 9 { Err(XsError::EIO) } else { Ok(()) }
        }
        fn release(&mut self, _: u32, _: u32) {}
    }
    let mut xs = Xenstored::new();
    let d0 = xs.connect_socket();
    let mut ops = Refuse(Vec::new());
    let hdr = |len| xen_abi::XsdSockmsg {
        r#type: XS_INTRODUCE,
        req_id: 1,
        tx_id: 0,
        len,
    };
    xs.handle(d0, &hdr(12), b"3\x004096\x0017\0", &mut ops);
    xs.handle(d0, &hdr(9), b"9\x001\x002\0", &mut ops);
    assert_eq!(ops.0, [(3, 4096, 17), (9, 1, 2)]);
    assert_eq!(parse(&xs.next_output(d0).unwrap()).payload, OK);
    assert_eq!(parse(&xs.next_output(d0).unwrap()).payload, b"EIO\0");
    assert!(xs.is_introduced(3));
    assert!(!xs.is_introduced(9));
}

#[test]
fn events_too_long_for_one_message_are_not_sent() {
    let (mut xs, d0, ..) = setup();
    let token = "t".repeat(4000);
    let mut s = c(&mut xs, d0);
    s.watch("/", &token).unwrap();
    assert_eq!(s.take_events().len(), 1);
    let long = format!("/local/domain/5/{}", "a".repeat(2047));
    s.write(0, &long, b"v").unwrap();
    // `take_events` checks every message's length; none is sent.
    assert_eq!(s.take_events(), []);
    assert!(xs.dropped_events(d0) >= 1);
}

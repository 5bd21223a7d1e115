//! The store against a simple reference model (a map of paths plus
//! transaction bookkeeping) over random sequences from several
//! connections.
//!
//! The model: the global store is a map; a transaction sees a copy taken
//! at START plus its own changes, and remembers its operations. At commit,
//! if nothing changed the store since START, the commit must succeed and
//! the store becomes the transaction's view; otherwise it may succeed (the
//! store becomes the transaction's operations replayed on the current
//! store) or fail with EAGAIN (nothing changes). Every reply, in or out of
//! a transaction, must equal the model's.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use xenstored::Xenstored;
use xenstored::wire::XsError;

type Map = BTreeMap<String, Vec<u8>>;

#[derive(Clone, Debug)]
enum Op {
    Read(String),
    Write(String, Vec<u8>),
    Mkdir(String),
    Rm(String),
    Dir(String),
}

fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

fn new_map() -> Map {
    let mut m = Map::new();
    m.insert("/".into(), Vec::new());
    m.insert("/tool".into(), Vec::new());
    m
}

fn create(m: &mut Map, p: &str, v: &[u8]) {
    let mut missing = vec![p.to_string()];
    let mut q = parent(p);
    while !m.contains_key(q) {
        missing.push(q.to_string());
        q = parent(q);
    }
    for (i, x) in missing.iter().enumerate() {
        m.insert(x.clone(), if i == 0 { v.to_vec() } else { Vec::new() });
    }
}

/// Applies an operation to a model map; returns the reply.
fn apply(m: &mut Map, op: &Op) -> Result<Vec<u8>, XsError> {
    match op {
        Op::Read(p) => m.get(p).cloned().ok_or(XsError::ENOENT),
        Op::Write(p, v) => {
            if let Some(x) = m.get_mut(p) {
                *x = v.clone();
            } else {
                create(m, p, v);
            }
            Ok(OK.to_vec())
        }
        Op::Mkdir(p) => {
            if !m.contains_key(p) {
                create(m, p, b"");
            }
            Ok(OK.to_vec())
        }
        Op::Rm(p) => {
            if m.contains_key(p) {
                let prefix = format!("{p}/");
                m.retain(|k, _| k != p && !k.starts_with(&prefix));
                Ok(OK.to_vec())
            } else if m.contains_key(parent(p)) {
                Ok(OK.to_vec())
            } else {
                Err(XsError::ENOENT)
            }
        }
        Op::Dir(p) => {
            if !m.contains_key(p) {
                return Err(XsError::ENOENT);
            }
            let mut names: Vec<&str> = m
                .keys()
                .filter(|k| k.as_str() != "/" && parent(k) == p)
                .map(|k| k.rsplit('/').next().unwrap())
                .collect();
            names.sort();
            let mut out = Vec::new();
            for n in names {
                out.extend_from_slice(n.as_bytes());
                out.push(0);
            }
            Ok(out)
        }
    }
}

/// DIRECTORY answers in insertion order; compare as sorted lists.
fn normalise(op: &Op, r: Result<Vec<u8>, XsError>) -> Result<Vec<u8>, XsError> {
    match (op, r) {
        (Op::Dir(_), Ok(list)) => {
            let mut names: Vec<&[u8]> = list.split(|&b| b == 0).filter(|s| !s.is_empty()).collect();
            names.sort();
            let mut out = Vec::new();
            for n in names {
                out.extend_from_slice(n);
                out.push(0);
            }
            Ok(out)
        }
        (_, r) => r,
    }
}

struct ModelTx {
    id: u32,
    view: Map,
    ops: Vec<Op>,
    dirty: bool,
}

#[derive(Clone, Debug)]
enum Step {
    Op {
        conn: usize,
        tx: Option<usize>,
        op: Op,
    },
    Start {
        conn: usize,
    },
    End {
        conn: usize,
        tx: usize,
        commit: bool,
    },
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..4)
        .prop_map(|cs| format!("/{}", cs.join("/")))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        path().prop_map(Op::Read),
        (path(), prop::collection::vec(any::<u8>(), 0..4)).prop_map(|(p, v)| Op::Write(p, v)),
        path().prop_map(Op::Mkdir),
        path().prop_map(Op::Rm),
        prop_oneof![path(), Just("/".to_string())].prop_map(Op::Dir),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..3usize, prop::option::of(0..2usize), op())
            .prop_map(|(conn, tx, op)| Step::Op { conn, tx, op }),
        1 => (0..3usize).prop_map(|conn| Step::Start { conn }),
        1 => (0..3usize, 0..2usize, any::<bool>())
            .prop_map(|(conn, tx, commit)| Step::End { conn, tx, commit }),
    ]
}

fn send(c: &mut Client<'_>, tx: u32, op: &Op) -> Result<Vec<u8>, XsError> {
    match op {
        Op::Read(p) => c.read(tx, p),
        Op::Write(p, v) => c.write(tx, p, v),
        Op::Mkdir(p) => c.mkdir(tx, p),
        Op::Rm(p) => c.rm(tx, p),
        Op::Dir(p) => c.req(xenstored::wire::XS_DIRECTORY, tx, &z(p)),
    }
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut xs = Xenstored::new();
    let conns: Vec<u32> = (0..3).map(|_| xs.connect_socket()).collect();
    let mut global = new_map();
    let mut txs: Vec<Vec<ModelTx>> = (0..3).map(|_| Vec::new()).collect();
    for s in steps {
        match s {
            Step::Op { conn, tx, op } => {
                let mut c = Client::new(&mut xs, conns[conn]);
                match tx.and_then(|i| txs[conn].get_mut(i)) {
                    Some(t) => {
                        let got = normalise(&op, send(&mut c, t.id, &op));
                        let want = apply(&mut t.view, &op);
                        prop_assert_eq!(got, want, "in transaction: {:?}", op);
                        t.ops.push(op);
                    }
                    None => {
                        let got = normalise(&op, send(&mut c, 0, &op));
                        let before = global.clone();
                        let want = apply(&mut global, &op);
                        prop_assert_eq!(got, want, "{:?}", op);
                        // A write counts even when the value is the same (it
                        // is a change for conflict checking, as in C).
                        if matches!(op, Op::Write(..)) || global != before {
                            txs.iter_mut().flatten().for_each(|t| t.dirty = true);
                        }
                    }
                }
            }
            Step::Start { conn } => {
                if txs[conn].len() < 2 {
                    let id = Client::new(&mut xs, conns[conn]).start().unwrap();
                    txs[conn].push(ModelTx {
                        id,
                        view: global.clone(),
                        ops: Vec::new(),
                        dirty: false,
                    });
                }
            }
            Step::End { conn, tx, commit } => {
                if tx >= txs[conn].len() {
                    continue;
                }
                let t = txs[conn].remove(tx);
                let r = Client::new(&mut xs, conns[conn]).end(t.id, commit);
                if !commit {
                    prop_assert_eq!(r, Ok(OK.to_vec()));
                    continue;
                }
                let changed = t.view != global || t.ops.iter().any(|o| matches!(o, Op::Write(..)));
                if !t.dirty {
                    prop_assert_eq!(r, Ok(OK.to_vec()), "spurious EAGAIN");
                    global = t.view;
                } else if r.is_ok() {
                    for op in &t.ops {
                        let _ = apply(&mut global, op);
                    }
                } else {
                    prop_assert_eq!(r, Err(XsError::EAGAIN));
                    continue;
                }
                if changed {
                    txs.iter_mut().flatten().for_each(|o| o.dirty = true);
                }
            }
        }
        // The whole store agrees with the model after every step.
        let mut c = Client::new(&mut xs, conns[0]);
        for (p, v) in &global {
            prop_assert_eq!(&c.read(0, p).unwrap(), v, "{}", p);
        }
    }
    prop_assert_eq!(xs.node_count(), global.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        // No regression files (Miri cannot reach the file system).
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_the_model(steps in prop::collection::vec(step(), 1..60)) {
        run(steps)?;
    }
}

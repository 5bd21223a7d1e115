//! Grant tables in simulation: domains on the mock machine sharing pages
//! through `grant_table_op`, with every result, flag and frame checked.

use hv_core::arch::VmExit;
use hv_core::mock::{MockNpt, MockPlatform, MockVcpu};
use hv_core::p2m::P2mKind;
use hv_core::{DomId, DomainConfig, Gfn, Hypervisor};
use xen_abi::grant_table as g;
use xen_abi::memory as m;
use xen_abi::xen as x;
use zerocopy::{FromBytes, Immutable, IntoBytes};

const EFAULT: i64 = -14;
const EINVAL: i64 = -22;
const ENOSYS: i64 = -38;
const EBUSY: i64 = -16;
const ESRCH: i64 = -3;
const EPERM: i64 = -1;

/// Argument area (guest-physical, inside RAM).
const ARG: u64 = 0x10_0000;
/// Where granters place their first table frame (a hole).
const TABLE_GFN: u64 = 0x1000;
/// The granted data page of a granter.
const DATA_GFN: u64 = 0x300;
/// Where mappers map grants (holes).
const MAP_GFN: u64 = 0x2000;

struct Sim {
    hv: Hypervisor<MockPlatform>,
}

impl Sim {
    fn new() -> Self {
        Sim {
            hv: Hypervisor::new(MockPlatform::default()),
        }
    }

    /// A domain with 4 MiB of RAM from 0.
    fn domain(&mut self, privileged: bool) -> DomId {
        let d = self
            .hv
            .create_domain(
                DomainConfig {
                    domid: None,
                    name: "t".into(),
                    privileged,
                    vcpus: 1,
                    max_pages: 1024 + 64,
                },
                Box::new(MockNpt::default()),
            )
            .unwrap();
        self.hv.populate(d, Gfn(0), 1024).unwrap();
        d
    }

    fn write<T: IntoBytes + Immutable + ?Sized>(&self, d: DomId, gpa: u64, v: &T) {
        self.hv
            .guest_mem(d)
            .unwrap()
            .write(gpa, v.as_bytes())
            .unwrap();
    }

    fn read<T: FromBytes + IntoBytes>(&self, d: DomId, gpa: u64) -> T {
        self.hv.guest_mem(d).unwrap().read_obj(gpa).unwrap()
    }

    fn bytes(&self, d: DomId, gpa: u64, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        self.hv.guest_mem(d).unwrap().read(gpa, &mut b).unwrap();
        b
    }

    /// Runs a hypercall to completion (continuations included); returns
    /// RAX and the number of exits it took.
    fn call_n(&mut self, d: DomId, nr: u32, args: [u64; 5]) -> (i64, u32) {
        let mut cpu = MockVcpu::flat64();
        cpu.hypercall(nr as u64, args);
        let mut exits = 0;
        loop {
            exits += 1;
            self.hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
            if cpu.rip != 0 {
                return (cpu.ret(), exits);
            }
            assert!(exits < 1000, "continuation never ends");
        }
    }

    fn call(&mut self, d: DomId, nr: u32, args: [u64; 5]) -> i64 {
        self.call_n(d, nr, args).0
    }

    /// `grant_table_op(cmd, ARG, ops.len())` with `ops` at ARG; returns RAX
    /// and the structs as the hypervisor left them.
    fn gop<T: IntoBytes + FromBytes + Immutable + Clone>(
        &mut self,
        d: DomId,
        cmd: u32,
        ops: &[T],
    ) -> (i64, Vec<T>) {
        self.write(d, ARG, ops);
        let r = self.call(
            d,
            x::__HYPERVISOR_grant_table_op,
            [cmd as u64, ARG, ops.len() as u64, 0, 0],
        );
        let size = core::mem::size_of::<T>();
        let out = (0..ops.len())
            .map(|i| self.read(d, ARG + (i * size) as u64))
            .collect();
        (r, out)
    }

    /// Places shared frame `idx` of `d` at `gfn`.
    fn place(&mut self, d: DomId, idx: u64, gfn: u64) -> i64 {
        self.write(
            d,
            ARG,
            &m::XenAddToPhysmap {
                domid: DomId::SELF,
                size: 0,
                space: m::XENMAPSPACE_grant_table,
                idx,
                gpfn: gfn,
            },
        );
        self.call(
            d,
            x::__HYPERVISOR_memory_op,
            [m::XENMEM_add_to_physmap as u64, ARG, 0, 0, 0],
        )
    }

    /// A granter with its table frame 0 at TABLE_GFN.
    fn granter(&mut self) -> DomId {
        let d = self.domain(false);
        assert_eq!(self.place(d, 0, TABLE_GFN), 0);
        d
    }

    /// Writes v1 entry `r` in `d`'s table (as the guest does: frame and
    /// domid, then flags).
    fn grant(&self, d: DomId, r: u32, flags: u16, to: DomId, frame: u32) {
        let at = TABLE_GFN * 4096 + r as u64 * 8;
        self.write(d, at + 4, &frame);
        self.write(d, at + 2, &to.0);
        self.write(d, at, &flags);
    }

    fn entry(&self, d: DomId, r: u32) -> g::GrantEntryV1 {
        self.read(d, TABLE_GFN * 4096 + r as u64 * 8)
    }

    fn map(&mut self, d: DomId, granter: DomId, r: u32, gfn: u64, flags: u32) -> (i16, u32) {
        let op = g::GnttabMapGrantRef {
            host_addr: gfn << 12,
            flags,
            r#ref: r,
            dom: granter.0,
            status: 99,
            handle: 0xdead,
            dev_bus_addr: 0,
        };
        let (rc, out) = self.gop(d, g::GNTTABOP_map_grant_ref, &[op]);
        assert_eq!(rc, 0);
        (out[0].status, out[0].handle)
    }

    fn unmap(&mut self, d: DomId, gfn: u64, handle: u32) -> i16 {
        let op = g::GnttabUnmapGrantRef {
            host_addr: gfn << 12,
            dev_bus_addr: 0,
            handle,
            status: 99,
            pad: 0,
        };
        let (rc, out) = self.gop(d, g::GNTTABOP_unmap_grant_ref, &[op]);
        assert_eq!(rc, 0);
        out[0].status
    }

    fn copy(&mut self, d: DomId, op: g::GnttabCopy) -> i16 {
        let (rc, out) = self.gop(d, g::GNTTABOP_copy, &[op]);
        assert_eq!(rc, 0);
        out[0].status
    }
}

const HOST: u32 = g::GNTMAP_host_map;
const HOST_RO: u32 = g::GNTMAP_host_map | g::GNTMAP_readonly;
const PERMIT: u16 = g::GTF_permit_access;
const INUSE: u16 = g::GTF_reading | g::GTF_writing;

fn gref_ptr(r: u32, dom: DomId, offset: u16) -> g::GnttabCopyPtr {
    g::GnttabCopyPtr {
        u: r as u64,
        domid: dom.0,
        offset,
        pad: 0,
    }
}

fn gfn_ptr(gfn: u64, offset: u16) -> g::GnttabCopyPtr {
    g::GnttabCopyPtr {
        u: gfn,
        domid: DomId::SELF,
        offset,
        pad: 0,
    }
}

fn copy_op(
    source: g::GnttabCopyPtr,
    dest: g::GnttabCopyPtr,
    len: u16,
    flags: u16,
) -> g::GnttabCopy {
    g::GnttabCopy {
        source,
        dest,
        len,
        flags,
        status: 99,
        pad: 0,
    }
}

#[test]
fn two_domains_share_a_page_by_grant() {
    let mut s = Sim::new();
    let start = s.hv.platform.frames_in_use();
    let a = s.granter();
    let b = s.domain(false);
    // Linux PVH's sequence: version 1, query_size, frames via physmap.
    let (rc, out) = s.gop(
        a,
        g::GNTTABOP_set_version,
        &[g::GnttabSetVersion { version: 1 }],
    );
    assert_eq!((rc, out[0].version), (0, 1));
    let q = g::GnttabQuerySize {
        dom: DomId::SELF,
        ..Default::default()
    };
    let (rc, out) = s.gop(a, g::GNTTABOP_query_size, &[q]);
    assert_eq!(rc, 0);
    assert_eq!(
        (out[0].nr_frames, out[0].max_nr_frames, out[0].status),
        (1, 64, 0)
    );
    assert_eq!(
        s.hv.domain(a)
            .unwrap()
            .p2m
            .get(Gfn(TABLE_GFN))
            .unwrap()
            .kind,
        P2mKind::GrantTable(0)
    );

    s.write(a, DATA_GFN << 12, b"hello from a");
    s.grant(a, 8, PERMIT, b, DATA_GFN as u32);
    let (st, h) = s.map(b, a, 8, MAP_GFN, HOST);
    assert_eq!(st, g::GNTST_okay);
    assert_eq!(s.entry(a, 8).flags, PERMIT | INUSE);
    let e = s.hv.domain(b).unwrap().p2m.get(Gfn(MAP_GFN)).unwrap();
    assert_eq!(e.kind, P2mKind::Foreign { owner: a });
    assert!(e.perms.write);
    assert_eq!(s.bytes(b, MAP_GFN << 12, 12), b"hello from a");
    s.write(b, (MAP_GFN << 12) + 100, b"reply from b");
    assert_eq!(s.bytes(a, (DATA_GFN << 12) + 100, 12), b"reply from b");
    assert_eq!(s.hv.domain(b).unwrap().gnttab.nr_mappings(), 1);

    assert_eq!(s.unmap(b, MAP_GFN, h), g::GNTST_okay);
    assert_eq!(s.entry(a, 8).flags, PERMIT);
    assert!(s.hv.domain(b).unwrap().p2m.get(Gfn(MAP_GFN)).is_none());
    assert_eq!(s.hv.domain(a).unwrap().gnttab.nr_active(), 0);
    // The handle is gone.
    assert_eq!(s.unmap(b, MAP_GFN, h), g::GNTST_bad_handle);

    s.hv.destroy_domain(a).unwrap();
    s.hv.destroy_domain(b).unwrap();
    assert_eq!(s.hv.platform.frames_in_use(), start);
}

#[test]
fn readonly_grants_and_readonly_maps() {
    let mut s = Sim::new();
    let a = s.granter();
    let b = s.domain(false);
    s.grant(a, 9, PERMIT | g::GTF_readonly, b, DATA_GFN as u32);
    assert_eq!(s.map(b, a, 9, MAP_GFN, HOST).0, g::GNTST_general_error);
    assert_eq!(s.entry(a, 9).flags, PERMIT | g::GTF_readonly, "nothing set");
    let (st, h) = s.map(b, a, 9, MAP_GFN, HOST_RO);
    assert_eq!(st, g::GNTST_okay);
    assert_eq!(
        s.entry(a, 9).flags,
        PERMIT | g::GTF_readonly | g::GTF_reading
    );
    let e = s.hv.domain(b).unwrap().p2m.get(Gfn(MAP_GFN)).unwrap();
    assert!(!e.perms.write);
    assert!(
        s.hv.guest_mem(b)
            .unwrap()
            .write(MAP_GFN << 12, b"x")
            .is_err()
    );
    // A writable map of a grant pinned read-only still needs write access.
    assert_eq!(s.map(b, a, 9, MAP_GFN + 1, HOST).0, g::GNTST_general_error);
    assert_eq!(s.unmap(b, MAP_GFN, h), g::GNTST_okay);
    assert_eq!(s.entry(a, 9).flags, PERMIT | g::GTF_readonly);
}

#[test]
fn refused_maps() {
    let mut s = Sim::new();
    let a = s.granter();
    let b = s.domain(false);
    let c = s.domain(false);
    s.grant(a, 10, PERMIT, c, DATA_GFN as u32);
    // Not granted at all, granted to someone else, out of the table.
    assert_eq!(s.map(b, a, 11, MAP_GFN, HOST).0, g::GNTST_general_error);
    assert_eq!(s.map(b, a, 10, MAP_GFN, HOST).0, g::GNTST_general_error);
    assert_eq!(s.map(b, a, 512, MAP_GFN, HOST).0, g::GNTST_bad_gntref);
    assert_eq!(s.map(b, a, u32::MAX, MAP_GFN, HOST).0, g::GNTST_bad_gntref);
    // Entry types other than permit_access.
    s.grant(a, 12, g::GTF_accept_transfer, b, DATA_GFN as u32);
    assert_eq!(s.map(b, a, 12, MAP_GFN, HOST).0, g::GNTST_general_error);
    // A frame the granter does not have as RAM.
    s.grant(a, 13, PERMIT, b, 0x9999);
    assert_eq!(s.map(b, a, 13, MAP_GFN, HOST).0, g::GNTST_bad_page);
    assert_eq!(s.entry(a, 13).flags, PERMIT, "flags undone");
    s.grant(a, 14, PERMIT, b, TABLE_GFN as u32);
    assert_eq!(s.map(b, a, 14, MAP_GFN, HOST).0, g::GNTST_bad_page);
    // No such granter; flags a translated guest cannot use.
    assert_eq!(
        s.map(b, DomId(77), 10, MAP_GFN, HOST).0,
        g::GNTST_bad_domain
    );
    s.grant(a, 15, PERMIT, b, DATA_GFN as u32);
    assert_eq!(s.map(b, a, 15, MAP_GFN, 0).0, g::GNTST_bad_gntref);
    for f in [
        g::GNTMAP_device_map | HOST,
        g::GNTMAP_contains_pte | HOST,
        g::GNTMAP_application_map | HOST,
    ] {
        assert_eq!(s.map(b, a, 15, MAP_GFN, f).0, g::GNTST_general_error);
    }
    // Where it cannot go: over the mapper's shared_info-like frames.
    assert_eq!(s.place(b, 0, MAP_GFN + 5), 0);
    assert_eq!(s.map(b, a, 15, MAP_GFN + 5, HOST).0, g::GNTST_general_error);
    assert_eq!(s.map(b, a, 15, 1 << 40, HOST).0, g::GNTST_general_error);
    assert_eq!(s.entry(a, 15).flags, PERMIT);
    assert_eq!(s.hv.domain(b).unwrap().gnttab.nr_mappings(), 0);
    assert_eq!(s.hv.domain(a).unwrap().gnttab.nr_active(), 0);
    // Mapping over the mapper's RAM releases it.
    let pages = s.hv.domain(b).unwrap().tot_pages;
    let (st, h) = s.map(b, a, 15, 0x200, HOST);
    assert_eq!(st, g::GNTST_okay);
    assert_eq!(s.hv.domain(b).unwrap().tot_pages, pages - 1);
    // Unmap at the wrong address, then right.
    assert_eq!(s.unmap(b, 0x201, h), g::GNTST_general_error);
    assert_eq!(s.unmap(b, 0x200, h), g::GNTST_okay);
    assert_eq!(s.unmap(b, 0x200, 5000), g::GNTST_bad_handle);
}

#[test]
fn maptrack_runs_out_and_batches_continue() {
    let mut s = Sim::new();
    let a = s.granter();
    let b = s.domain(false);
    s.grant(a, 8, PERMIT, b, DATA_GFN as u32);
    let n = hv_core::gnttab::MAX_MAPTRACK as u64 + 1;
    let ops: Vec<_> = (0..n)
        .map(|i| g::GnttabMapGrantRef {
            host_addr: (MAP_GFN + i) << 12,
            flags: HOST,
            r#ref: 8,
            dom: a.0,
            ..Default::default()
        })
        .collect();
    s.write(b, ARG, &ops[..]);
    let (rc, exits) = s.call_n(
        b,
        x::__HYPERVISOR_grant_table_op,
        [g::GNTTABOP_map_grant_ref as u64, ARG, n, 0, 0],
    );
    assert_eq!(rc, 0);
    assert_eq!(
        exits as u64,
        n.div_ceil(hv_core::gnttab_op::OPS_PER_EXIT as u64)
    );
    let out: Vec<g::GnttabMapGrantRef> = (0..n).map(|i| s.read(b, ARG + i * 32)).collect();
    for (i, o) in out.iter().enumerate() {
        if (i as u64) < n - 1 {
            assert_eq!(o.status, g::GNTST_okay, "map {i}");
        } else {
            assert_eq!(o.status, g::GNTST_no_space);
        }
    }
    assert_eq!(
        s.hv.domain(a).unwrap().gnttab.active(8).unwrap().pins[1],
        1024
    );
    let unmaps: Vec<_> = out[..n as usize - 1]
        .iter()
        .map(|o| g::GnttabUnmapGrantRef {
            host_addr: o.host_addr,
            handle: o.handle,
            ..Default::default()
        })
        .collect();
    // Every mapping but the last; the grant stays in use.
    let (rc, out) = s.gop(b, g::GNTTABOP_unmap_grant_ref, &unmaps[1..]);
    assert_eq!(rc, 0);
    assert!(out.iter().all(|o| o.status == g::GNTST_okay));
    assert_eq!(s.entry(a, 8).flags, PERMIT | INUSE);
    let (_, out) = s.gop(b, g::GNTTABOP_unmap_grant_ref, &unmaps[..1]);
    assert_eq!(out[0].status, g::GNTST_okay);
    assert_eq!(s.entry(a, 8).flags, PERMIT);
    // Handles are reused.
    assert_eq!(s.map(b, a, 8, MAP_GFN, HOST).0, g::GNTST_okay);
    assert_eq!(s.hv.domain(b).unwrap().gnttab.nr_mappings(), 1);
}

#[test]
fn racing_granter_changes_entries() {
    let mut s = Sim::new();
    let a = s.granter();
    let b = s.domain(false);
    s.populate_hole(a);
    s.grant(a, 8, PERMIT, b, DATA_GFN as u32);
    let (st, h1) = s.map(b, a, 8, MAP_GFN, HOST_RO);
    assert_eq!(st, g::GNTST_okay);
    // The granter points the entry elsewhere and marks it read-only while
    // it is pinned: the pinned frame stays, a writable map is refused.
    s.grant(
        a,
        8,
        PERMIT | g::GTF_readonly | g::GTF_reading,
        b,
        DATA_GFN as u32 + 1,
    );
    assert_eq!(s.map(b, a, 8, MAP_GFN + 1, HOST).0, g::GNTST_general_error);
    let (st, h2) = s.map(b, a, 8, MAP_GFN + 1, HOST_RO);
    assert_eq!(st, g::GNTST_okay);
    let e1 = s.hv.domain(b).unwrap().p2m.get(Gfn(MAP_GFN)).unwrap();
    let e2 = s.hv.domain(b).unwrap().p2m.get(Gfn(MAP_GFN + 1)).unwrap();
    assert_eq!(e1.hfn, e2.hfn, "the active entry's frame");
    // The granter revokes (clears permit_access) while mapped: new maps
    // of the pinned grant still work (Xen trusts the active entry) ...
    s.grant(a, 8, g::GTF_reading, b, DATA_GFN as u32);
    assert_eq!(s.unmap(b, MAP_GFN, h1), g::GNTST_okay);
    assert_eq!(s.entry(a, 8).flags, g::GTF_reading, "still pinned");
    assert_eq!(s.unmap(b, MAP_GFN + 1, h2), g::GNTST_okay);
    // ... and only reading/writing are cleared: the guest's bits stay.
    assert_eq!(s.entry(a, 8).flags, 0);
    assert_eq!(s.map(b, a, 8, MAP_GFN, HOST_RO).0, g::GNTST_general_error);
    // A guest that set the in-use bits itself gets them cleared at the
    // end of a use, as in Xen.
    s.grant(a, 8, PERMIT | INUSE | g::GTF_PWT, b, DATA_GFN as u32);
    let (st, h) = s.map(b, a, 8, MAP_GFN, HOST);
    assert_eq!(st, g::GNTST_okay);
    assert_eq!(s.unmap(b, MAP_GFN, h), g::GNTST_okay);
    assert_eq!(s.entry(a, 8).flags, PERMIT | g::GTF_PWT);
    // Granting to DOMID_SELF-like ids does not alias: domid must match.
    s.grant(a, 8, PERMIT, DomId(DomId::SELF), DATA_GFN as u32);
    assert_eq!(s.map(b, a, 8, MAP_GFN, HOST).0, g::GNTST_general_error);
}

impl Sim {
    /// Gives `d` a RAM page just after DATA_GFN (already RAM: no-op).
    fn populate_hole(&mut self, d: DomId) {
        assert!(
            self.hv
                .domain(d)
                .unwrap()
                .p2m
                .get(Gfn(DATA_GFN + 1))
                .is_some()
        );
    }
}

#[test]
fn copy_by_gref_and_by_gfn() {
    let mut s = Sim::new();
    let a = s.granter();
    let b = s.domain(false);
    s.write(a, DATA_GFN << 12, &[0xAAu8; 4096]);
    s.write(
        b,
        0x200 << 12,
        &(0..=255u8).cycle().take(4096).collect::<Vec<_>>()[..],
    );
    s.grant(a, 8, PERMIT, b, DATA_GFN as u32);
    s.grant(a, 9, PERMIT | g::GTF_readonly, b, DATA_GFN as u32 + 1);
    // b's page -> a's grant (dest_gref): a whole page.
    let st = s.copy(
        b,
        copy_op(
            gfn_ptr(0x200, 0),
            gref_ptr(8, a, 0),
            4096,
            g::GNTCOPY_dest_gref,
        ),
    );
    assert_eq!(st, g::GNTST_okay);
    assert_eq!(
        s.bytes(a, DATA_GFN << 12, 4096),
        s.bytes(b, 0x200 << 12, 4096)
    );
    assert_eq!(s.entry(a, 8).flags, PERMIT, "transient pin released");
    // a's grant -> b's page at an offset (source_gref).
    s.write(a, (DATA_GFN << 12) + 10, b"grant copy!");
    let st = s.copy(
        b,
        copy_op(
            gref_ptr(8, a, 10),
            gfn_ptr(0x201, 4000),
            11,
            g::GNTCOPY_source_gref,
        ),
    );
    assert_eq!(st, g::GNTST_okay);
    assert_eq!(s.bytes(b, (0x201 << 12) + 4000, 11), b"grant copy!");
    // Grant to grant; read-only grant as source is fine, as dest not.
    let both = g::GNTCOPY_source_gref | g::GNTCOPY_dest_gref;
    assert_eq!(
        s.copy(b, copy_op(gref_ptr(9, a, 0), gref_ptr(8, a, 0), 64, both)),
        0
    );
    assert_eq!(
        s.copy(b, copy_op(gref_ptr(8, a, 0), gref_ptr(9, a, 0), 64, both)),
        g::GNTST_general_error
    );
    assert_eq!(s.entry(a, 9).flags, PERMIT | g::GTF_readonly);
    // Same grant both ends.
    assert_eq!(
        s.copy(b, copy_op(gref_ptr(8, a, 0), gref_ptr(8, a, 100), 50, both)),
        0
    );
    assert_eq!(s.entry(a, 8).flags, PERMIT);
    // Bounds: past the page, at either end.
    for (so, dof, len) in [
        (4000, 0, 97),
        (0, 4095, 2),
        (4096, 0, 1),
        (0, 0, 4097),
        (u16::MAX, 0, 1),
    ] {
        let st = s.copy(
            b,
            copy_op(
                gfn_ptr(0x200, so),
                gref_ptr(8, a, dof),
                len,
                g::GNTCOPY_dest_gref,
            ),
        );
        assert_eq!(st, g::GNTST_bad_copy_arg, "{so} {dof} {len}");
    }
    assert_eq!(s.entry(a, 8).flags, PERMIT);
    // Zero length is fine; a frame end must be DOMID_SELF.
    assert_eq!(
        s.copy(b, copy_op(gfn_ptr(0x200, 4096), gfn_ptr(0x201, 0), 0, 0)),
        g::GNTST_okay
    );
    let mut p = gfn_ptr(0x200, 0);
    p.domid = b.0;
    assert_eq!(
        s.copy(b, copy_op(p, gfn_ptr(0x201, 0), 8, 0)),
        g::GNTST_permission_denied
    );
    // Holes and special frames, bad refs, bad domains.
    assert_eq!(
        s.copy(b, copy_op(gfn_ptr(0x9000, 0), gfn_ptr(0x201, 0), 8, 0)),
        g::GNTST_bad_page
    );
    assert_eq!(
        s.copy(b, copy_op(gfn_ptr(0x200, 0), gfn_ptr(0x9000, 0), 8, 0)),
        g::GNTST_bad_page
    );
    assert_eq!(
        s.copy(
            b,
            copy_op(
                gref_ptr(600, a, 0),
                gfn_ptr(0x201, 0),
                8,
                g::GNTCOPY_source_gref
            )
        ),
        g::GNTST_bad_gntref
    );
    assert_eq!(
        s.copy(
            b,
            copy_op(
                gref_ptr(8, DomId(77), 0),
                gfn_ptr(0x201, 0),
                8,
                g::GNTCOPY_source_gref
            )
        ),
        g::GNTST_bad_domain
    );
    assert_eq!(
        s.copy(
            b,
            copy_op(
                gref_ptr(10, a, 0),
                gfn_ptr(0x201, 0),
                8,
                g::GNTCOPY_source_gref
            )
        ),
        g::GNTST_general_error,
        "not granted"
    );
    // The granter itself cannot use a grant made to b.
    assert_eq!(
        s.copy(
            a,
            copy_op(
                gref_ptr(8, DomId(DomId::SELF), 0),
                gfn_ptr(0x201, 0),
                8,
                g::GNTCOPY_source_gref
            )
        ),
        g::GNTST_general_error
    );
    // A batch with mixed results and a bad pointer in the middle.
    let ops = [
        copy_op(
            gfn_ptr(0x200, 0),
            gref_ptr(8, a, 0),
            16,
            g::GNTCOPY_dest_gref,
        ),
        copy_op(
            gfn_ptr(0x200, 0),
            gref_ptr(8, a, 4090),
            16,
            g::GNTCOPY_dest_gref,
        ),
    ];
    let (rc, out) = s.gop(b, g::GNTTABOP_copy, &ops);
    assert_eq!(rc, 0);
    assert_eq!([out[0].status, out[1].status], [0, g::GNTST_bad_copy_arg]);
    let r = s.call(
        b,
        x::__HYPERVISOR_grant_table_op,
        [g::GNTTABOP_copy as u64, 0x7000_0000, 1, 0, 0],
    );
    assert_eq!(r, EFAULT);
}

#[test]
fn copies_over_many_exits() {
    let mut s = Sim::new();
    let a = s.granter();
    let b = s.domain(false);
    s.grant(a, 8, PERMIT, b, DATA_GFN as u32);
    let n = 100u64;
    let ops: Vec<_> = (0..n)
        .map(|i| {
            copy_op(
                gfn_ptr(0x200, i as u16),
                gref_ptr(8, a, i as u16 * 2),
                2,
                g::GNTCOPY_dest_gref,
            )
        })
        .collect();
    s.write(b, 0x200 << 12, &(0..100u8).collect::<Vec<_>>()[..]);
    s.write(b, ARG, &ops[..]);
    let (rc, exits) = s.call_n(
        b,
        x::__HYPERVISOR_grant_table_op,
        [g::GNTTABOP_copy as u64, ARG, n, 0, 0],
    );
    assert_eq!(rc, 0);
    assert_eq!(
        exits as u64,
        n.div_ceil(hv_core::gnttab_op::COPIES_PER_EXIT as u64)
    );
    let got = s.bytes(a, DATA_GFN << 12, 200);
    for i in 0..100 {
        assert_eq!(got[i * 2], i as u8);
    }
}

#[test]
fn mapper_dies_with_grants_mapped() {
    let mut s = Sim::new();
    let start = s.hv.platform.frames_in_use();
    let a = s.granter();
    let b = s.domain(false);
    s.grant(a, 8, PERMIT, b, DATA_GFN as u32);
    s.grant(a, 9, PERMIT, b, DATA_GFN as u32 + 1);
    assert_eq!(s.map(b, a, 8, MAP_GFN, HOST).0, 0);
    assert_eq!(s.map(b, a, 9, MAP_GFN + 1, HOST_RO).0, 0);
    assert_eq!(s.map(b, a, 9, MAP_GFN + 2, HOST_RO).0, 0);
    s.hv.destroy_domain(b).unwrap();
    assert_eq!(s.entry(a, 8).flags, PERMIT);
    assert_eq!(s.entry(a, 9).flags, PERMIT);
    assert_eq!(s.hv.domain(a).unwrap().gnttab.nr_active(), 0);
    assert!(s.hv.domain(a).unwrap().pinned.is_empty());
    // The granter's pages are its own again: release one, it is freed.
    let before = s.hv.platform.frames_in_use();
    s.release(a, DATA_GFN);
    assert_eq!(s.hv.platform.frames_in_use(), before - 1);
    s.hv.destroy_domain(a).unwrap();
    assert_eq!(s.hv.platform.frames_in_use(), start);
}

impl Sim {
    /// The guest gives back one RAM page (`XENMEM_decrease_reservation`).
    fn release(&mut self, d: DomId, gfn: u64) {
        self.write(d, ARG + 0x800, &gfn);
        self.write(
            d,
            ARG,
            &m::XenMemoryReservation {
                extent_start: ARG + 0x800,
                nr_extents: 1,
                extent_order: 0,
                mem_flags: 0,
                domid: DomId::SELF,
                ..Default::default()
            },
        );
        let r = self.call(
            d,
            x::__HYPERVISOR_memory_op,
            [m::XENMEM_decrease_reservation as u64, ARG, 0, 0, 0],
        );
        assert_eq!(r, 1);
    }
}

#[test]
fn granter_dies_with_its_pages_mapped() {
    let mut s = Sim::new();
    let start = s.hv.platform.frames_in_use();
    let a = s.granter();
    let b = s.domain(false);
    let c = s.domain(false);
    s.write(a, DATA_GFN << 12, b"still here");
    s.grant(a, 8, PERMIT, b, DATA_GFN as u32);
    s.grant(a, 9, PERMIT, c, DATA_GFN as u32);
    let (_, hb) = s.map(b, a, 8, MAP_GFN, HOST);
    let (_, hb2) = s.map(b, a, 8, MAP_GFN + 1, HOST_RO);
    let (_, hc) = s.map(c, a, 9, MAP_GFN, HOST);
    s.hv.destroy_domain(a).unwrap();
    // Both mappers still reach the frame (the mock panics on freed frames).
    assert_eq!(s.bytes(b, MAP_GFN << 12, 10), b"still here");
    s.write(c, MAP_GFN << 12, b"c writes");
    assert_eq!(s.bytes(b, (MAP_GFN + 1) << 12, 8), b"c writes");
    assert!(
        s.hv.domain(b)
            .unwrap()
            .gnttab
            .mapping(hb)
            .unwrap()
            .orphaned()
    );
    // A new domain takes the dead granter's id: unmaps must not touch it.
    let a2 = s.domain(false);
    assert_eq!(a2, DomId(a.0 + 3));
    let frames = s.hv.platform.frames_in_use();
    assert_eq!(s.unmap(b, MAP_GFN, hb), 0);
    assert_eq!(s.unmap(b, MAP_GFN + 1, hb2), 0);
    assert_eq!(s.hv.platform.frames_in_use(), frames, "c still maps it");
    assert_eq!(s.bytes(c, MAP_GFN << 12, 8), b"c writes");
    assert_eq!(s.unmap(c, MAP_GFN, hc), 0);
    assert_eq!(
        s.hv.platform.frames_in_use(),
        frames - 1,
        "the last unmap frees it"
    );
    for d in [b, c, a2] {
        s.hv.destroy_domain(d).unwrap();
    }
    assert_eq!(s.hv.platform.frames_in_use(), start);
}

#[test]
fn both_die_in_either_order_and_accounting_returns() {
    for mapper_first in [false, true] {
        let mut s = Sim::new();
        let start = s.hv.platform.frames_in_use();
        let a = s.granter();
        let b = s.domain(false);
        for r in 8..40 {
            s.grant(a, r, PERMIT, b, DATA_GFN as u32 + r);
            assert_eq!(s.map(b, a, r, MAP_GFN + r as u64, HOST).0, 0);
        }
        // b also grants to a, which maps it: each maps the other.
        assert_eq!(s.place(b, 0, TABLE_GFN), 0);
        s.grant(b, 8, PERMIT, a, DATA_GFN as u32);
        assert_eq!(s.map(a, b, 8, MAP_GFN, HOST).0, 0);
        // And one granted page the granter released (a zombie).
        s.release(a, DATA_GFN + 20);
        assert_eq!(s.bytes(b, (MAP_GFN + 20) << 12, 4), [0; 4]);
        let (x, y) = if mapper_first { (b, a) } else { (a, b) };
        s.hv.destroy_domain(x).unwrap();
        // The survivor still reaches what it mapped of the dead one.
        let at = if y == b { MAP_GFN + 8 } else { MAP_GFN };
        s.write(y, at << 12, b"alive");
        s.hv.destroy_domain(y).unwrap();
        assert_eq!(
            s.hv.platform.frames_in_use(),
            start,
            "mapper_first={mapper_first}"
        );
    }
}

#[test]
fn released_granted_page_lives_until_unmapped() {
    let mut s = Sim::new();
    let a = s.granter();
    let b = s.domain(false);
    s.write(a, DATA_GFN << 12, b"zombie");
    s.grant(a, 8, PERMIT, b, DATA_GFN as u32);
    let (_, h) = s.map(b, a, 8, MAP_GFN, HOST);
    let before = s.hv.platform.frames_in_use();
    s.release(a, DATA_GFN);
    assert_eq!(s.hv.platform.frames_in_use(), before, "kept while mapped");
    assert_eq!(s.bytes(b, MAP_GFN << 12, 6), b"zombie");
    // A new grant of the released frame is refused.
    s.grant(a, 9, PERMIT, b, DATA_GFN as u32);
    assert_eq!(s.map(b, a, 9, MAP_GFN + 1, HOST).0, g::GNTST_bad_page);
    assert_eq!(s.unmap(b, MAP_GFN, h), 0);
    assert_eq!(
        s.hv.platform.frames_in_use(),
        before - 1,
        "freed at the last unmap"
    );
    assert!(s.hv.domain(a).unwrap().zombies.is_empty());
}

#[test]
fn table_frames_grow_move_and_report() {
    let mut s = Sim::new();
    let start = s.hv.platform.frames_in_use();
    let a = s.domain(false);
    // Frame 3 first: the table grows to 4 frames.
    assert_eq!(s.place(a, 3, 0x1003), 0);
    assert_eq!(s.hv.domain(a).unwrap().gnttab.nr_frames(), 4);
    assert_eq!(s.place(a, 64, 0x1040), EINVAL);
    assert_eq!(
        s.place(a, g::GNTTAB_NR_RESERVED_ENTRIES as u64 | 1 << 31, 0x1040),
        EINVAL
    );
    // Over RAM: the RAM goes.
    let pages = s.hv.domain(a).unwrap().tot_pages;
    assert_eq!(s.place(a, 0, 0x250), 0);
    assert_eq!(s.hv.domain(a).unwrap().tot_pages, pages - 1);
    // setup_table lists where each frame is (!0 for unplaced).
    let frames_list = ARG + 0x400;
    let op = g::GnttabSetupTable {
        dom: DomId::SELF,
        nr_frames: 4,
        frame_list: frames_list,
        ..Default::default()
    };
    let (rc, out) = s.gop(a, g::GNTTABOP_setup_table, &[op]);
    assert_eq!((rc, out[0].status), (0, 0));
    let list: [u64; 4] = s.read(a, frames_list);
    assert_eq!(list, [0x250, u64::MAX, u64::MAX, 0x1003]);
    // Moving frame 0; putting frame 1 where frame 3 was.
    assert_eq!(s.place(a, 0, 0x1000), 0);
    assert!(s.hv.domain(a).unwrap().p2m.get(Gfn(0x250)).is_none());
    assert_eq!(s.place(a, 1, 0x1003), 0);
    s.gop(a, g::GNTTABOP_setup_table, &[op]);
    let list: [u64; 4] = s.read(a, frames_list);
    assert_eq!(list, [0x1000, 0x1003, u64::MAX, u64::MAX]);
    // Growth through setup_table, and its limits.
    let op8 = g::GnttabSetupTable { nr_frames: 8, ..op };
    let (_, out) = s.gop(a, g::GNTTABOP_setup_table, &[op8]);
    assert_eq!(out[0].status, 0);
    assert_eq!(s.hv.domain(a).unwrap().gnttab.nr_frames(), 8);
    let op65 = g::GnttabSetupTable {
        nr_frames: 65,
        ..op
    };
    let (_, out) = s.gop(a, g::GNTTABOP_setup_table, &[op65]);
    assert_eq!(out[0].status, g::GNTST_general_error);
    let bad_list = g::GnttabSetupTable {
        frame_list: 0x7000_0000,
        ..op
    };
    let (_, out) = s.gop(a, g::GNTTABOP_setup_table, &[bad_list]);
    assert_eq!(out[0].status, g::GNTST_bad_virt_addr);
    let other = g::GnttabSetupTable { dom: 9, ..op };
    let (_, out) = s.gop(a, g::GNTTABOP_setup_table, &[other]);
    assert_eq!(out[0].status, g::GNTST_bad_domain);
    let b = s.domain(false);
    let other = g::GnttabSetupTable { dom: b.0, ..op };
    let (_, out) = s.gop(a, g::GNTTABOP_setup_table, &[other]);
    assert_eq!(out[0].status, g::GNTST_permission_denied);
    let q = g::GnttabQuerySize {
        dom: b.0,
        ..Default::default()
    };
    let (_, out) = s.gop(a, g::GNTTABOP_query_size, &[q]);
    assert_eq!(out[0].status, g::GNTST_permission_denied);
    // A privileged domain may look at others.
    let p = s.domain(true);
    let (_, out) = s.gop(
        p,
        g::GNTTABOP_query_size,
        &[g::GnttabQuerySize { dom: a.0, ..q }],
    );
    assert_eq!((out[0].status, out[0].nr_frames), (0, 8));
    // Shared info placed over a grant frame unhooks it.
    s.write(
        a,
        ARG,
        &m::XenAddToPhysmap {
            domid: DomId::SELF,
            size: 0,
            space: m::XENMAPSPACE_shared_info,
            idx: 0,
            gpfn: 0x1003,
        },
    );
    assert_eq!(
        s.call(
            a,
            x::__HYPERVISOR_memory_op,
            [m::XENMEM_add_to_physmap as u64, ARG, 0, 0, 0]
        ),
        0
    );
    s.gop(a, g::GNTTABOP_setup_table, &[op]);
    let list: [u64; 4] = s.read(a, frames_list);
    assert_eq!(list[1], u64::MAX);
    for d in [a, b, p] {
        s.hv.destroy_domain(d).unwrap();
    }
    assert_eq!(s.hv.platform.frames_in_use(), start);
}

#[test]
fn version_two_status_frames_and_maps() {
    let mut s = Sim::new();
    let start = s.hv.platform.frames_in_use();
    let a = s.granter();
    let b = s.domain(false);
    // A reserved entry (v1) survives the switch.
    s.grant(a, 1, PERMIT, b, 0x123);
    let (rc, out) = s.gop(
        a,
        g::GNTTABOP_set_version,
        &[g::GnttabSetVersion { version: 2 }],
    );
    assert_eq!((rc, out[0].version), (0, 2));
    let (rc, out) = s.gop(
        a,
        g::GNTTABOP_get_version,
        &[g::GnttabGetVersion {
            dom: DomId::SELF,
            pad: 0,
            version: 0,
        }],
    );
    assert_eq!((rc, out[0].version), (0, 2));
    let e: g::GrantEntryV2 = s.read(a, (TABLE_GFN << 12) + 16);
    assert_eq!(
        (e.hdr.flags, e.hdr.domid, e.full_page().frame),
        (PERMIT, b.0, 0x123)
    );
    let gt = &s.hv.domain(a).unwrap().gnttab;
    assert_eq!((gt.nr_entries(), gt.nr_status_frames()), (256, 1));
    // The status frame, placed with XENMAPIDX_grant_table_status.
    assert_eq!(s.place(a, m::XENMAPIDX_grant_table_status, 0x1800), 0);
    assert_eq!(
        s.hv.domain(a).unwrap().p2m.get(Gfn(0x1800)).unwrap().kind,
        P2mKind::GrantTable(1 << 31)
    );
    let op = g::GnttabGetStatusFrames {
        nr_frames: 1,
        dom: DomId::SELF,
        status: 99,
        frame_list: ARG + 0x400,
    };
    let (rc, out) = s.gop(a, g::GNTTABOP_get_status_frames, &[op]);
    assert_eq!((rc, out[0].status), (0, 0));
    assert_eq!(s.read::<u64>(a, ARG + 0x400), 0x1800);
    let (_, out) = s.gop(
        a,
        g::GNTTABOP_get_status_frames,
        &[g::GnttabGetStatusFrames { nr_frames: 2, ..op }],
    );
    assert_eq!(out[0].status, g::GNTST_general_error);
    // A v2 full-page grant: the in-use bits go to the status word.
    let entry = g::GrantEntryV2::from(g::GrantEntryV2FullPage {
        hdr: g::GrantEntryHeader {
            flags: PERMIT,
            domid: b.0,
        },
        pad0: 0,
        frame: DATA_GFN,
    });
    s.write(a, (TABLE_GFN << 12) + 8 * 16, &entry);
    s.write(a, DATA_GFN << 12, b"v2 data");
    let (st, h) = s.map(b, a, 8, MAP_GFN, HOST);
    assert_eq!(st, 0);
    assert_eq!(s.read::<u16>(a, (0x1800 << 12) + 16), INUSE);
    assert_eq!(
        s.read::<u16>(a, (TABLE_GFN << 12) + 8 * 16),
        PERMIT,
        "header untouched"
    );
    assert_eq!(s.bytes(b, MAP_GFN << 12, 7), b"v2 data");
    // No switching while a grant is in use.
    let (rc, out) = s.gop(
        a,
        g::GNTTABOP_set_version,
        &[g::GnttabSetVersion { version: 1 }],
    );
    assert_eq!((rc, out[0].version), (EBUSY, 2));
    assert_eq!(s.unmap(b, MAP_GFN, h), 0);
    assert_eq!(s.read::<u16>(a, (0x1800 << 12) + 16), 0);
    // Sub-page grants: not mappable, copyable within their range.
    let sub = g::GrantEntryV2::from(g::GrantEntryV2SubPage {
        hdr: g::GrantEntryHeader {
            flags: PERMIT | g::GTF_sub_page,
            domid: b.0,
        },
        page_off: 100,
        length: 50,
        frame: DATA_GFN,
    });
    s.write(a, (TABLE_GFN << 12) + 9 * 16, &sub);
    assert_eq!(s.map(b, a, 9, MAP_GFN, HOST).0, g::GNTST_general_error);
    let src = |off, len| {
        copy_op(
            gref_ptr(9, a, off),
            gfn_ptr(0x200, 0),
            len,
            g::GNTCOPY_source_gref,
        )
    };
    assert_eq!(s.copy(b, src(100, 50)), 0);
    assert_eq!(s.copy(b, src(99, 10)), g::GNTST_general_error);
    assert_eq!(s.copy(b, src(140, 11)), g::GNTST_general_error);
    assert_eq!(s.read::<u16>(a, (0x1800 << 12) + 18), 0);
    // Back to v1: status frames go (and leave the p2m); reserved entries stay.
    let frames = s.hv.platform.frames_in_use();
    let (rc, _) = s.gop(
        a,
        g::GNTTABOP_set_version,
        &[g::GnttabSetVersion { version: 1 }],
    );
    assert_eq!(rc, 0);
    assert_eq!(s.hv.platform.frames_in_use(), frames - 1);
    assert!(s.hv.domain(a).unwrap().p2m.get(Gfn(0x1800)).is_none());
    assert_eq!(
        s.entry(a, 1),
        g::GrantEntryV1 {
            flags: PERMIT,
            domid: b.0,
            frame: 0x123
        }
    );
    assert_eq!(
        s.entry(a, 8),
        g::GrantEntryV1::default(),
        "the rest is cleared"
    );
    let (rc, out) = s.gop(
        a,
        g::GNTTABOP_set_version,
        &[g::GnttabSetVersion { version: 3 }],
    );
    assert_eq!((rc, out[0].version), (EINVAL, 1));
    // get_version of others.
    let gv = g::GnttabGetVersion {
        dom: b.0,
        pad: 0,
        version: 0,
    };
    assert_eq!(s.gop(a, g::GNTTABOP_get_version, &[gv]).0, EPERM);
    assert_eq!(
        s.gop(
            a,
            g::GNTTABOP_get_version,
            &[g::GnttabGetVersion { dom: 99, ..gv }]
        )
        .0,
        ESRCH
    );
    s.hv.destroy_domain(a).unwrap();
    s.hv.destroy_domain(b).unwrap();
    assert_eq!(s.hv.platform.frames_in_use(), start);
}

#[test]
fn swap_and_replace() {
    let mut s = Sim::new();
    let a = s.granter();
    let b = s.domain(false);
    s.grant(a, 8, PERMIT, b, 1);
    s.grant(a, 9, PERMIT | g::GTF_readonly, b, 2);
    let sw = g::GnttabSwapGrantRef {
        ref_a: 8,
        ref_b: 9,
        status: 99,
        pad: 0,
    };
    let (rc, out) = s.gop(
        a,
        g::GNTTABOP_swap_grant_ref,
        &[sw, g::GnttabSwapGrantRef { ref_b: 512, ..sw }],
    );
    assert_eq!(rc, 0);
    assert_eq!([out[0].status, out[1].status], [0, g::GNTST_bad_gntref]);
    assert_eq!(s.entry(a, 8).frame, 2);
    assert_eq!(s.entry(a, 9).frame, 1);
    let (_, h) = s.map(b, a, 9, MAP_GFN, HOST);
    let (_, out) = s.gop(a, g::GNTTABOP_swap_grant_ref, &[sw]);
    assert_eq!(out[0].status, g::GNTST_eagain);
    // unmap_and_replace: translated guests may only pass new_addr 0.
    let r = g::GnttabUnmapAndReplace {
        host_addr: MAP_GFN << 12,
        new_addr: 0x5000,
        handle: h,
        status: 99,
        pad: 0,
    };
    let (_, out) = s.gop(b, g::GNTTABOP_unmap_and_replace, &[r]);
    assert_eq!(out[0].status, g::GNTST_general_error);
    let (_, out) = s.gop(
        b,
        g::GNTTABOP_unmap_and_replace,
        &[g::GnttabUnmapAndReplace { new_addr: 0, ..r }],
    );
    assert_eq!(out[0].status, 0);
    assert_eq!(s.entry(a, 9).flags, PERMIT);
}

#[test]
fn bad_calls() {
    let mut s = Sim::new();
    let a = s.granter();
    let op = |cmd: u32, uop: u64, count: u64| [cmd as u64, uop, count, 0, 0];
    let gt = x::__HYPERVISOR_grant_table_op;
    // Negative counts, continuation bits, unknown and unsupported ops.
    assert_eq!(
        s.call(a, gt, op(g::GNTTABOP_map_grant_ref, ARG, 0x8000_0000)),
        EINVAL
    );
    assert_eq!(
        s.call(a, gt, op(g::GNTTABOP_map_grant_ref | 1 << 12, ARG, 1)),
        EINVAL
    );
    for cmd in [
        g::GNTTABOP_transfer,
        g::GNTTABOP_dump_table,
        g::GNTTABOP_cache_flush,
        13,
        0xFFF,
    ] {
        assert_eq!(s.call(a, gt, op(cmd, ARG, 1)), ENOSYS, "cmd {cmd}");
    }
    // Single-struct ops need count 1.
    for cmd in [
        g::GNTTABOP_setup_table,
        g::GNTTABOP_query_size,
        g::GNTTABOP_get_status_frames,
    ] {
        assert_eq!(s.call(a, gt, op(cmd, ARG, 2)), EINVAL);
        assert_eq!(s.call(a, gt, op(cmd, ARG, 0)), EINVAL);
        assert_eq!(s.call(a, gt, op(cmd, 0x7000_0000, 1)), EFAULT);
    }
    // Bad pointers.
    for cmd in [
        g::GNTTABOP_map_grant_ref,
        g::GNTTABOP_unmap_grant_ref,
        g::GNTTABOP_copy,
        g::GNTTABOP_set_version,
        g::GNTTABOP_get_version,
        g::GNTTABOP_swap_grant_ref,
        g::GNTTABOP_unmap_and_replace,
    ] {
        assert_eq!(s.call(a, gt, op(cmd, 0x7000_0000, 1)), EFAULT, "cmd {cmd}");
    }
    // An array running off RAM: the first entries are done.
    let b = s.domain(false);
    s.grant(a, 8, PERMIT, b, DATA_GFN as u32);
    let last = (1024 << 12) - 32;
    s.write(
        b,
        last,
        &g::GnttabMapGrantRef {
            host_addr: MAP_GFN << 12,
            flags: HOST,
            r#ref: 8,
            dom: a.0,
            ..Default::default()
        },
    );
    assert_eq!(
        s.call(b, gt, op(g::GNTTABOP_map_grant_ref, last, 2)),
        EFAULT
    );
    assert_eq!(s.read::<g::GnttabMapGrantRef>(b, last).status, 0);
    assert_eq!(s.entry(a, 8).flags, PERMIT | INUSE);
    // Count 0 is a no-op.
    assert_eq!(
        s.call(b, gt, op(g::GNTTABOP_map_grant_ref, 0x7000_0000, 0)),
        0
    );
}

#[test]
fn self_grant_like_the_test_guest() {
    // The PVH test guest's grant_self check: the table frame placed over
    // one of its own RAM pages, a grant to itself, mapped at a hole.
    let mut s = Sim::new();
    let start = s.hv.platform.frames_in_use();
    let a = s.domain(false);
    let q = g::GnttabQuerySize {
        dom: DomId::SELF,
        ..Default::default()
    };
    let (_, out) = s.gop(a, g::GNTTABOP_query_size, &[q]);
    assert_eq!((out[0].status, out[0].nr_frames), (0, 1));
    let table = 0x180;
    assert_eq!(s.place(a, 0, table), 0);
    let src: Vec<u8> = (0..4096).map(|i| (i * 7 + 3) as u8).collect();
    s.write(a, DATA_GFN << 12, &src[..]);
    let at = (table << 12) + 8 * 8;
    s.write(a, at + 2, &a.0);
    s.write(a, at + 4, &(DATA_GFN as u32));
    s.write(a, at, &PERMIT);
    let pages = s.hv.domain(a).unwrap().tot_pages;
    let (st, h) = s.map(a, DomId(DomId::SELF), 8, MAP_GFN, HOST);
    assert_eq!(st, 0);
    assert_eq!(s.bytes(a, MAP_GFN << 12, 4096), src);
    s.write(a, MAP_GFN << 12, &0x5Au8);
    assert_eq!(s.bytes(a, MAP_GFN << 12, 1), [0x5A]);
    // As on Xen (p2m_add_page): the frame left its own gfn, a hole now,
    // and no longer counts as the domain's memory.
    assert!(s.hv.domain(a).unwrap().p2m.get(Gfn(DATA_GFN)).is_none());
    assert_eq!(s.hv.domain(a).unwrap().tot_pages, pages - 1);
    let in_use = s.hv.platform.frames_in_use();
    assert_eq!(s.unmap(a, MAP_GFN, h), 0);
    assert_eq!(s.read::<u16>(a, at), PERMIT);
    // Both gfns are holes; the frame went with the mapping (after the TLB
    // shootdown: no CPU runs the domain here).
    assert!(s.hv.domain(a).unwrap().p2m.get(Gfn(DATA_GFN)).is_none());
    assert!(s.hv.domain(a).unwrap().p2m.get(Gfn(MAP_GFN)).is_none());
    s.hv.settle();
    assert_eq!(s.hv.platform.frames_in_use(), in_use - 1);
    // The grant names a hole now: mapping it again fails, as on Xen.
    assert_eq!(s.map(a, a, 8, MAP_GFN, HOST).0, g::GNTST_bad_page);
    // A grant of another page, left mapped at death.
    s.write(a, at + 4, &((DATA_GFN + 1) as u32));
    s.write(a, at, &PERMIT);
    assert_eq!(s.map(a, a, 8, MAP_GFN, HOST).0, 0);
    s.hv.destroy_domain(a).unwrap();
    s.hv.settle();
    assert_eq!(s.hv.platform.frames_in_use(), start);
}

/// A frame a guest gives back is unmapped at once but reused only after
/// every CPU that was in guest mode has left it (TLB shootdown,
/// `hv_core::tlb`); the CPUs are kicked. A vCPU that moves to another CPU
/// meanwhile does not make it sooner; a destroyed domain's frames (and
/// nested tables) wait for the CPU still running it.
#[test]
fn freed_frames_wait_for_the_tlb_shootdown() {
    let mut s = Sim::new();
    let a = s.domain(false);
    let b = s.domain(false);
    // CPU 1 runs a vCPU of a, CPU 2 one of b.
    s.hv.tlb.enter(1, a);
    s.hv.tlb.enter(2, b);
    s.hv.platform.kicks.lock().clear();
    let before = s.hv.platform.frames_in_use();
    s.release(a, DATA_GFN);
    assert!(s.hv.domain(a).unwrap().p2m.get(Gfn(DATA_GFN)).is_none());
    assert_eq!(s.hv.platform.frames_in_use(), before, "not reusable yet");
    assert_eq!(s.hv.frames_awaiting_shootdown(), 1);
    let mut kicked = core::mem::take(&mut *s.hv.platform.kicks.lock());
    kicked.sort();
    assert_eq!(kicked, [1, 2]);
    let now = s.hv.now();
    s.hv.tlb.exit(2);
    s.hv.tick(now);
    assert_eq!(s.hv.platform.frames_in_use(), before);
    // The vCPU on CPU 1 is kicked out and runs on CPU 0 next.
    s.hv.tlb.exit(1);
    s.hv.tlb.enter(0, a);
    s.hv.tick(now);
    assert_eq!(s.hv.platform.frames_in_use(), before - 1);
    assert_eq!(s.hv.frames_awaiting_shootdown(), 0);
    // a dies while CPU 0 still runs one of its vCPUs: nothing of it is
    // reused until CPU 0 leaves guest mode.
    let in_use = s.hv.platform.frames_in_use();
    s.hv.destroy_domain(a).unwrap();
    assert_eq!(s.hv.platform.frames_in_use(), in_use);
    assert!(s.hv.frames_awaiting_shootdown() > 1000);
    s.hv.platform.freed.lock().clear();
    s.hv.tlb.exit(0);
    s.hv.tick(now);
    assert_eq!(s.hv.frames_awaiting_shootdown(), 0);
    assert!(s.hv.platform.frames_in_use() < in_use - 1000);
    // Freed in address order (a range allocator keeps them merged).
    let freed = s.hv.platform.freed.lock().clone();
    assert!(freed.len() > 1000);
    assert!(freed.windows(2).all(|w| w[0] < w[1]));
}

/// An unmap returns (and the granter sees its grant released) only after
/// every other CPU running the mapper has left guest mode: here a thread
/// plays a CPU in guest mode that leaves when kicked.
#[test]
fn an_unmap_completes_after_the_mappers_cpus_left_guest_mode() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut s = Sim::new();
    let a = s.granter();
    let b = s.domain(false);
    s.grant(a, 8, PERMIT, b, DATA_GFN as u32);
    let (st, h) = s.map(b, a, 8, MAP_GFN, HOST);
    assert_eq!(st, 0);
    // Another vCPU of b runs on CPU 3.
    let tlb = s.hv.tlb.clone();
    tlb.enter(3, b);
    let left = Arc::new(AtomicBool::new(false));
    let cpu = {
        let (tlb, left) = (tlb.clone(), left.clone());
        std::thread::spawn(move || {
            // It leaves guest mode some time later (after a kick, on
            // hardware).
            std::thread::sleep(std::time::Duration::from_millis(20));
            left.store(true, Ordering::SeqCst);
            tlb.exit(3);
        })
    };
    assert_eq!(s.unmap(b, MAP_GFN, h), 0);
    assert!(
        left.load(Ordering::SeqCst),
        "unmap returned under a live mapping"
    );
    assert_eq!(s.entry(a, 8).flags, PERMIT);
    assert!(s.hv.platform.kicks.lock().contains(&3));
    cpu.join().unwrap();
}

#[test]
fn an_assigned_bar_can_be_neither_granted_nor_copied() {
    use hv_core::mock::MockPciFunction;
    use hv_core::pci::Bdf;
    let nic = Bdf::new(0, 3, 0).unwrap();
    let bar: u32 = 0xFEB0_0000;
    let mut s = Sim::new();
    s.hv.platform
        .pci
        .lock()
        .push(MockPciFunction::endpoint(nic, 0x1AF4, 0x1000).with_bar(0, bar, 0xFFFF_F000));
    let a = s.granter();
    let b = s.domain(false);
    s.hv.assign_pci(a, nic).unwrap();
    assert_eq!(
        s.hv.domain(a).unwrap().p2m.kind(Gfn(u64::from(bar >> 12))),
        Some(P2mKind::Mmio)
    );
    // A grant of the BAR's page: mapping it, or copying from or to it
    // by reference or by frame, fails.
    s.grant(a, 1, PERMIT, b, bar >> 12);
    let (st, _) = s.map(b, a, 1, MAP_GFN, HOST);
    assert_eq!(st, g::GNTST_permission_denied);
    assert!(s.hv.domain(b).unwrap().p2m.get(Gfn(MAP_GFN)).is_none());
    let from = copy_op(
        gref_ptr(1, a, 0),
        gfn_ptr(0x10, 0),
        8,
        g::GNTCOPY_source_gref,
    );
    assert_ne!(s.copy(b, from), g::GNTST_okay);
    let own = copy_op(gfn_ptr(u64::from(bar >> 12), 0), gfn_ptr(0x10, 0), 8, 0);
    assert_ne!(s.copy(a, own), g::GNTST_okay);
    let into = copy_op(gfn_ptr(0x10, 0), gfn_ptr(u64::from(bar >> 12), 0), 8, 0);
    assert_ne!(s.copy(a, into), g::GNTST_okay);
}

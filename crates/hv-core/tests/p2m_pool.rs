//! The nested page tables' frame budget (Xen's per-domain paging pool): a
//! guest that maps a page at scattered frame numbers, over and over, gets
//! `-ENOMEM` once its tables reach `p2m::table_limit`, and takes no host
//! frame beyond it; its own memory and other domains keep working.

use hv_core::arch::VmExit;
use hv_core::mock::{MockPlatform, MockVcpu};
use hv_core::pagetable::{MockFormat, MockTables, NestedTables};
use hv_core::{DomId, DomainConfig, Gfn, Hypervisor};
use xen_abi::memory as m;
use xen_abi::xen as x;

const ARG: u64 = 0x10_0000;
const ENOMEM: i64 = -12;

fn domain(hv: &mut Hypervisor<MockPlatform>, pages: u64) -> DomId {
    let tables = NestedTables::<MockFormat, MockTables>::new(MockTables::default()).unwrap();
    let d = hv
        .create_domain(
            DomainConfig {
                domid: None,
                name: "t".into(),
                privileged: false,
                vcpus: 1,
                max_pages: pages + 64,
            },
            Box::new(tables),
        )
        .unwrap();
    hv.populate(d, Gfn(0), pages).unwrap();
    d
}

/// `XENMEM_add_to_physmap` of shared_info at `gpfn`.
fn move_shared_info(hv: &mut Hypervisor<MockPlatform>, d: DomId, gpfn: u64) -> i64 {
    hv.guest_mem(d)
        .unwrap()
        .write_obj(
            ARG,
            &m::XenAddToPhysmap {
                domid: DomId::SELF,
                size: 0,
                space: m::XENMAPSPACE_shared_info,
                idx: 0,
                gpfn,
            },
        )
        .unwrap();
    let mut cpu = MockVcpu::flat64();
    cpu.hypercall(
        u64::from(x::__HYPERVISOR_memory_op),
        [u64::from(m::XENMEM_add_to_physmap), ARG, 0, 0, 0],
    );
    hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
    cpu.ret()
}

#[test]
fn scattered_mappings_stop_at_the_table_budget() {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let pages = 1024; // 4 MiB
    let hostile = domain(&mut hv, pages);
    let other = domain(&mut hv, pages);
    let limit = hv_core::p2m::table_limit(1, pages + 64);
    assert_eq!(limit, 512, "the floor, for a small domain");
    let frames_before = hv.platform.frames_in_use();
    // Each move lands 1 GiB further up: a new L2 and L1 table each time
    // (a new L3 every 512 GiB).
    let mut refused = None;
    for k in 1..2000u64 {
        let r = move_shared_info(&mut hv, hostile, k << 18);
        if r != 0 {
            assert_eq!(r, ENOMEM, "move {k}");
            refused = Some(k);
            break;
        }
    }
    let k = refused.expect("the budget never ran out");
    assert!(k < 600, "refused only at move {k}");
    // No frame of the domain's was taken or lost on the way.
    assert_eq!(hv.platform.frames_in_use(), frames_before);
    // Its RAM stays mapped and usable, the other domain's moves still work.
    hv.guest_mem(hostile)
        .unwrap()
        .write_obj(0x2000, &0x55u64)
        .unwrap();
    assert_eq!(move_shared_info(&mut hv, other, 0x3FF), 0);
    assert_eq!(move_shared_info(&mut hv, other, 1 << 18), 0);
    // Moving shared_info back into RAM's tables needs no new table.
    assert_eq!(move_shared_info(&mut hv, hostile, 0x3FE), 0);
}

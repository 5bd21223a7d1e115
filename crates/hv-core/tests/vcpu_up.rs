//! `VCPUOP_initialise` and `VCPUOP_up` for PVH vCPUs (Xen's
//! `arch_set_info_hvm_guest` rules): a checked context starts an offline
//! vCPU once `up` comes; bad contexts, a second `initialise`, `up` before
//! `initialise` and vCPUs out of range are refused with Xen's codes.

use hv_core::arch::VmExit;
use hv_core::domain::VcpuState;
use hv_core::mock::{MockNpt, MockPlatform, MockVcpu};
use hv_core::{DomId, DomainConfig, Gfn, Hypervisor, VcpuStart};
use xen_abi::vcpu::{self as vc, VcpuHvmContext, VcpuHvmX86_32, VcpuHvmX86_64};
use xen_abi::xen as x;

const ARG: u64 = 0x10_0000;
const EINVAL: i64 = -22;
const EEXIST: i64 = -17;
const ENOENT: i64 = -2;

fn setup() -> (Hypervisor<MockPlatform>, DomId) {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let d = hv
        .create_domain(
            DomainConfig {
                domid: None,
                name: "t".into(),
                privileged: false,
                vcpus: 3,
                max_pages: 2048,
            },
            Box::new(MockNpt::default()),
        )
        .unwrap();
    hv.populate(d, Gfn(0), 1024).unwrap();
    (hv, d)
}

fn vcpu_op(hv: &mut Hypervisor<MockPlatform>, d: DomId, cmd: u32, vcpu: u64) -> i64 {
    let mut cpu = MockVcpu::flat64();
    cpu.hypercall(
        x::__HYPERVISOR_vcpu_op as u64,
        [cmd as u64, vcpu, ARG, 0, 0],
    );
    hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
    cpu.ret()
}

fn initialise(hv: &mut Hypervisor<MockPlatform>, d: DomId, vcpu: u64, ctx: &VcpuHvmContext) -> i64 {
    hv.guest_mem(d).unwrap().write_obj(ARG, ctx).unwrap();
    vcpu_op(hv, d, vc::VCPUOP_initialise, vcpu)
}

/// A 64-bit start: paging, PAE, LME, as a PVH kernel brings up an AP.
fn ctx64() -> VcpuHvmX86_64 {
    VcpuHvmX86_64 {
        rip: 0xFFFF_FFFF_8100_0000,
        rsp: 0x8000,
        rbx: 7,
        rflags: 0x2,
        cr0: 0x8000_0011,
        cr3: 0x1000,
        cr4: 0x20,
        efer: 0x100,
        ..Default::default()
    }
}

/// A 32-bit start: flat segments, paging off (the PVH entry state).
fn ctx32() -> VcpuHvmX86_32 {
    VcpuHvmX86_32 {
        eip: 0x10_0000,
        esp: 0x9000,
        eflags: 0x2,
        cr0: 0x11,
        cs_limit: 0xFFFF_FFFF,
        ds_limit: 0xFFFF_FFFF,
        ss_limit: 0xFFFF_FFFF,
        es_limit: 0xFFFF_FFFF,
        tr_limit: 0x67,
        cs_ar: 0xC9A,
        ds_ar: 0xC92,
        ss_ar: 0xC92,
        es_ar: 0xC92,
        tr_ar: 0x89,
        ..Default::default()
    }
}

#[test]
fn initialise_then_up_starts_the_vcpu_in_the_given_state() {
    let (mut hv, d) = setup();
    assert_eq!(vcpu_op(&mut hv, d, vc::VCPUOP_is_up, 1), 0);
    // Undefined RFLAGS bits are dropped, LMA follows LME with paging.
    let mut r = ctx64();
    r.rflags = 0xFFFF_0000_0000_0202;
    assert_eq!(initialise(&mut hv, d, 1, &VcpuHvmContext::new_64(r)), 0);
    // Initialised is not up.
    assert!(hv.take_vcpu_starts().is_empty());
    assert_eq!(hv.domain(d).unwrap().vcpus[1].state, VcpuState::Offline);
    assert_eq!(vcpu_op(&mut hv, d, vc::VCPUOP_is_up, 1), 0);
    assert_eq!(vcpu_op(&mut hv, d, vc::VCPUOP_up, 1), 0);
    let starts = hv.take_vcpu_starts();
    let [(sd, 1, VcpuStart::Context(c))] = starts[..] else {
        panic!("{starts:?}");
    };
    assert_eq!(sd, d);
    let got = c.x86_64();
    assert_eq!((got.rip, got.rsp, got.rbx), (r.rip, r.rsp, 7));
    assert_eq!(got.rflags, 0x202);
    assert_eq!(got.efer, 0x500);
    // The image makes the backend, then marks it up.
    hv.vcpu_up(d, 1).unwrap();
    assert_eq!(vcpu_op(&mut hv, d, vc::VCPUOP_is_up, 1), 1);
    // Up again: nothing more happens; initialise again: -EEXIST.
    assert_eq!(vcpu_op(&mut hv, d, vc::VCPUOP_up, 1), 0);
    assert!(hv.take_vcpu_starts().is_empty());
    assert_eq!(
        initialise(&mut hv, d, 1, &VcpuHvmContext::new_64(ctx64())),
        EEXIST
    );
    // vCPU 0 runs from the start.
    assert_eq!(
        initialise(&mut hv, d, 0, &VcpuHvmContext::new_64(ctx64())),
        EEXIST
    );
}

#[test]
fn thirty_two_bit_context_gets_accessed_and_busy_bits() {
    let (mut hv, d) = setup();
    assert_eq!(
        initialise(&mut hv, d, 2, &VcpuHvmContext::new_32(ctx32())),
        0
    );
    // Initialised twice before up: -EEXIST.
    assert_eq!(
        initialise(&mut hv, d, 2, &VcpuHvmContext::new_32(ctx32())),
        EEXIST
    );
    assert_eq!(vcpu_op(&mut hv, d, vc::VCPUOP_up, 2), 0);
    let starts = hv.take_vcpu_starts();
    let [(_, 2, VcpuStart::Context(c))] = starts[..] else {
        panic!("{starts:?}");
    };
    let r = c.x86_32();
    assert_eq!(
        (r.cs_ar, r.ds_ar, r.ss_ar, r.es_ar, r.tr_ar),
        (0xC9B, 0xC93, 0xC93, 0xC93, 0x8B)
    );
    assert_eq!((r.eip, r.esp, r.efer), (0x10_0000, 0x9000, 0));
}

#[test]
fn up_needs_initialise_and_the_vcpu_must_exist() {
    let (mut hv, d) = setup();
    assert_eq!(vcpu_op(&mut hv, d, vc::VCPUOP_up, 1), EINVAL);
    assert_eq!(vcpu_op(&mut hv, d, vc::VCPUOP_up, 3), ENOENT);
    assert_eq!(
        initialise(&mut hv, d, 3, &VcpuHvmContext::new_64(ctx64())),
        ENOENT
    );
    assert_eq!(
        initialise(&mut hv, d, u64::MAX, &VcpuHvmContext::new_64(ctx64())),
        ENOENT
    );
    assert!(hv.take_vcpu_starts().is_empty());
}

#[test]
fn bad_contexts_are_refused() {
    let (mut hv, d) = setup();
    let mut bad: Vec<(&str, VcpuHvmContext)> = Vec::new();
    let c64 = |f: fn(&mut VcpuHvmX86_64)| {
        let mut r = ctx64();
        f(&mut r);
        VcpuHvmContext::new_64(r)
    };
    let c32 = |f: fn(&mut VcpuHvmX86_32)| {
        let mut r = ctx32();
        f(&mut r);
        VcpuHvmContext::new_32(r)
    };
    let mut mode = VcpuHvmContext::new_64(ctx64());
    mode.mode = 2;
    bad.push(("mode", mode));
    let mut pad = VcpuHvmContext::new_64(ctx64());
    pad.pad = 1;
    bad.push(("pad", pad));
    bad.push(("non-canonical rip", c64(|r| r.rip = 0x8000_0000_0000_0000)));
    bad.push(("64-bit without paging", c64(|r| r.cr0 = 0x11)));
    bad.push(("64-bit without PAE", c64(|r| r.cr4 = 0)));
    bad.push(("64-bit without LME", c64(|r| r.efer = 0)));
    bad.push(("CR4 bit not offered", c64(|r| r.cr4 |= 1 << 22)));
    bad.push(("EFER bit not offered", c64(|r| r.efer |= 1 << 15)));
    bad.push(("CR0 high bits", c64(|r| r.cr0 |= 1 << 40)));
    bad.push(("NW without CD", c64(|r| r.cr0 |= 1 << 29)));
    bad.push(("32-bit pad1", c32(|r| r.pad1 = 1)));
    bad.push(("32-bit pad2", c32(|r| r.pad2[1] = 1)));
    bad.push(("attribute bits 12-15", c32(|r| r.cs_ar |= 0x1000)));
    bad.push(("null CS", c32(|r| r.cs_ar = 0)));
    bad.push(("data segment as CS", c32(|r| r.cs_ar = 0xC92)));
    bad.push(("read-only SS", c32(|r| r.ss_ar = 0xC90)));
    bad.push(("execute-only DS", c32(|r| r.ds_ar = 0xC98)));
    bad.push(("system segment as DS", c32(|r| r.ds_ar = 0xC82)));
    bad.push(("code segment as TR", c32(|r| r.tr_ar = 0x9B)));
    bad.push(("16-bit TSS as TR", c32(|r| r.tr_ar = 0x81)));
    bad.push(("non-present CS", c32(|r| r.cs_ar = 0xC1A)));
    bad.push((
        "EIP past CS limit",
        c32(|r| {
            r.cs_ar = 0x49A;
            r.cs_limit = 0xFFFF;
        }),
    ));
    bad.push(("SS.DPL != CS.DPL", c32(|r| r.ss_ar = 0xCF2)));
    bad.push(("DS.DPL > CS.DPL", c32(|r| r.ds_ar = 0xCF2)));
    bad.push(("LMA without LME", c32(|r| r.efer = 0x400)));
    bad.push(("PG without PE", c32(|r| r.cr0 = 0x8000_0010)));
    bad.push((
        "long-mode paging without PAE",
        c32(|r| {
            r.cr0 = 0x8000_0011;
            r.efer = 0x100;
        }),
    ));
    for (what, ctx) in bad {
        assert_eq!(initialise(&mut hv, d, 1, &ctx), EINVAL, "{what}");
        assert!(
            hv.domain(d).unwrap().vcpus[1].initialised.is_none(),
            "{what}"
        );
    }
    // Null DS and ES are allowed (Xen's check_segment).
    assert_eq!(
        initialise(
            &mut hv,
            d,
            1,
            &c32(|r| {
                r.ds_ar = 0;
                r.es_ar = 0;
            })
        ),
        0
    );
    // An argument outside guest memory: -EFAULT.
    let mut cpu = MockVcpu::flat64();
    cpu.hypercall(
        x::__HYPERVISOR_vcpu_op as u64,
        [vc::VCPUOP_initialise as u64, 2, 0xFFFF_FFFF_0000, 0, 0],
    );
    hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
    assert_eq!(cpu.ret(), -14);
}

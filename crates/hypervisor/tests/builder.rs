//! The domain builder on hv-core's mock machine: a small PVH ELF becomes a
//! domain whose memory holds the kernel, start_info, the module and the
//! ACPI tables, and whose boot vCPU starts at the entry with EBX pointing
//! at start_info.

use hv_core::mock::{MockNpt, MockPlatform};
use hv_core::p2m::P2mKind;
use hv_core::{Gfn, Hypervisor};
use hypervisor::builder::build;
use hypervisor::builder::{BuildOptions, build_with};
use hypervisor::launch::DomainPlan;

/// An ELF64 with one PT_LOAD (paddr 0x100000, 0x2000 bytes of which 0x100
/// from the file) and a PT_NOTE holding a 4-byte PHYS32_ENTRY 0x100010.
fn tiny_pvh_elf() -> Vec<u8> {
    let mut f = vec![0u8; 0x400];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little endian
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&0x3Eu16.to_le_bytes()); // x86-64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&0x100010u64.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
    f[56..58].copy_from_slice(&2u16.to_le_bytes()); // phnum
    let ph = |f: &mut Vec<u8>,
              i: usize,
              ty: u32,
              flags: u32,
              off: u64,
              paddr: u64,
              filesz: u64,
              memsz: u64| {
        let b = 64 + i * 56;
        f[b..b + 4].copy_from_slice(&ty.to_le_bytes());
        f[b + 4..b + 8].copy_from_slice(&flags.to_le_bytes());
        f[b + 8..b + 16].copy_from_slice(&off.to_le_bytes());
        f[b + 16..b + 24].copy_from_slice(&paddr.to_le_bytes());
        f[b + 24..b + 32].copy_from_slice(&paddr.to_le_bytes());
        f[b + 32..b + 40].copy_from_slice(&filesz.to_le_bytes());
        f[b + 40..b + 48].copy_from_slice(&memsz.to_le_bytes());
        f[b + 48..b + 56].copy_from_slice(&4u64.to_le_bytes());
    };
    ph(&mut f, 0, 1, 5, 0x200, 0x100000, 0x100, 0x2000);
    ph(&mut f, 1, 4, 4, 0x180, 0, 20, 0);
    // Note: namesz 4, descsz 4, type 18, "Xen\0", entry.
    let note = [
        4u32.to_le_bytes(),
        4u32.to_le_bytes(),
        18u32.to_le_bytes(),
        *b"Xen\0",
        0x100010u32.to_le_bytes(),
    ]
    .concat();
    f[0x180..0x180 + 20].copy_from_slice(&note);
    for (i, b) in f[0x200..0x300].iter_mut().enumerate() {
        *b = i as u8 ^ 0x5A;
    }
    f
}

fn plan(privileged: bool) -> DomainPlan<'static> {
    DomainPlan {
        domid: 0,
        name: "",
        kernel: 0,
        ramdisk: Some(1),
        mem: 16 << 20,
        vcpus: 2,
        privileged,
        service: false,
        cmdline: "console=hvc0 test",
        on_reboot: hypervisor::launch::OnReboot::Restart,
        pci: "",
        directmap: 0,
        vif: [None; hypervisor::launch::MAX_VIFS],
    }
}

#[test]
fn builds_a_bootable_domain() {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let elf = tiny_pvh_elf();
    let ramdisk = vec![0xA5u8; 10_000];
    let b = build(
        &mut hv,
        &plan(true),
        &elf,
        Some(&ramdisk),
        Box::new(MockNpt::default()),
    )
    .unwrap();
    assert_eq!(b.vcpu0.rip, 0x100010);
    assert_eq!(b.vcpus, 2);
    let mem = hv.guest_mem(b.domid).unwrap();
    // The kernel's file bytes and zeroed bss.
    let mut k = vec![0u8; 0x2000];
    mem.read(0x100000, &mut k).unwrap();
    assert_eq!(&k[..0x100], &elf[0x200..0x300]);
    assert!(k[0x100..].iter().all(|&b| b == 0));
    // start_info at EBX.
    let si: xen_abi::start_info::HvmStartInfo = mem.read_obj(b.vcpu0.rbx).unwrap();
    assert_eq!(si.magic, xen_abi::start_info::XEN_HVM_START_MAGIC_VALUE);
    assert_eq!(si.nr_modules, 1);
    assert_ne!(si.flags & xen_abi::start_info::SIF_PRIVILEGED, 0);
    let mut cmd = [0u8; 18];
    mem.read(si.cmdline_paddr, &mut cmd).unwrap();
    assert_eq!(&cmd, b"console=hvc0 test\0");
    let m: xen_abi::start_info::HvmModlistEntry = mem.read_obj(si.modlist_paddr).unwrap();
    let mut rd = vec![0u8; m.size as usize];
    mem.read(m.paddr, &mut rd).unwrap();
    assert_eq!(rd, ramdisk);
    // ACPI: the RSDP signature where start_info says.
    let mut sig = [0u8; 8];
    mem.read(si.rsdp_paddr, &mut sig).unwrap();
    assert_eq!(&sig, b"RSD PTR ");
    // The memory map is what XENMEM_memory_map will report.
    let dom = hv.domain(b.domid).unwrap();
    assert_eq!(dom.memory_map.len() as u32, si.memmap_entries);
    assert_eq!({ dom.memory_map[0].r#type }, 1);
    assert_eq!(dom.p2m.get(Gfn(0xfefff)).unwrap().kind, P2mKind::Special);
    // RAM nobody wrote yet is lazy: owned, but not handed out unzeroed.
    assert_eq!(dom.p2m.kind(Gfn(0)), Some(P2mKind::Ram));
    assert!(dom.p2m.get(Gfn(0)).is_none());
    assert!(dom.p2m.lazy_frames() > 0);
    assert!(dom.tot_pages >= 16 * 256);
}

#[test]
fn failures_leave_nothing_behind() {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let before = hv.platform.frames_in_use();
    let mut elf = tiny_pvh_elf();
    elf[0x180 + 12..0x180 + 16].copy_from_slice(b"Nop\0");
    assert!(
        build(
            &mut hv,
            &plan(false),
            &elf,
            None,
            Box::new(MockNpt::default())
        )
        .is_err()
    );
    // Out of host memory halfway through populating.
    let mut hv2 = Hypervisor::new(MockPlatform::new(1000));
    let r = build(
        &mut hv2,
        &plan(false),
        &tiny_pvh_elf(),
        None,
        Box::new(MockNpt::default()),
    );
    assert!(r.is_err());
    assert_eq!(hv2.platform.frames_in_use(), 0);
    assert!(hv2.domain_ids().is_empty());
    assert_eq!(hv.platform.frames_in_use(), before);
}

/// A service domain (d1) and a guest it serves (d2).
fn service_and_guest() -> (DomainPlan<'static>, DomainPlan<'static>) {
    let svc = DomainPlan {
        domid: 1,
        service: true,
        ..plan(false)
    };
    let guest = DomainPlan {
        domid: 2,
        ..plan(false)
    };
    (svc, guest)
}

#[test]
fn a_service_domain_serves_the_others_stores() {
    use hv_core::domain::Caps;
    use xen_abi::hvm::{HVM_PARAM_STORE_EVTCHN, HVM_PARAM_STORE_PFN};
    let mut hv = Hypervisor::new(MockPlatform::default());
    let elf = tiny_pvh_elf();
    let (svc, guest) = service_and_guest();
    let opts = BuildOptions {
        store_server: Some(1),
        extra_cmdline: "domains=1:svc,2:d2",
    };
    // The guest first: the server need not exist yet.
    let g = build_with(
        &mut hv,
        &guest,
        &opts,
        &elf,
        None,
        Box::new(MockNpt::default()),
    )
    .unwrap();
    let s = build_with(
        &mut hv,
        &svc,
        &opts,
        &elf,
        None,
        Box::new(MockNpt::default()),
    )
    .unwrap();
    let gd = hv.domain(g.domid).unwrap();
    assert_eq!(gd.hvm_params[HVM_PARAM_STORE_PFN as usize], 0xfeffc);
    let port = gd.hvm_params[HVM_PARAM_STORE_EVTCHN as usize];
    assert_ne!(port, 0);
    assert_eq!(gd.store.unwrap().server, s.domid);
    assert_eq!(gd.caps, Caps::NONE);
    // The page says "wait" (connection = XENSTORE_RECONNECT).
    let conn: u32 = hv
        .guest_mem(g.domid)
        .unwrap()
        .read_obj(0xfeffc000 + 2068)
        .unwrap();
    assert_eq!(conn, 1);
    // Grant 1: permit_access, the service domain, the store frame.
    let hfn = gd.gnttab.shared_hfn(0).unwrap();
    let mut e = [0u8; 8];
    hv_core::platform::FrameAccess::read(&*hv.platform, hfn, 8, &mut e);
    assert_eq!(u16::from_le_bytes([e[0], e[1]]), 1);
    assert_eq!(u16::from_le_bytes([e[2], e[3]]), 1);
    assert_eq!(u32::from_le_bytes([e[4], e[5], e[6], e[7]]), 0xfeffc);
    // The service domain: powers, no store of its own, the domain list.
    let sd = hv.domain(s.domid).unwrap();
    assert!(sd.caps.contains(Caps::XENSTORE.union(Caps::DOMCTL_INFO)));
    assert!(sd.store.is_none());
    assert_eq!(sd.hvm_params[HVM_PARAM_STORE_PFN as usize], 0);
    let si: xen_abi::start_info::HvmStartInfo = hv
        .guest_mem(s.domid)
        .unwrap()
        .read_obj(s.vcpu0.rbx)
        .unwrap();
    let mut line = vec![0u8; 128];
    hv.guest_mem(s.domid)
        .unwrap()
        .read(si.cmdline_paddr, &mut line)
        .unwrap();
    let line = &line[..line.iter().position(|&b| b == 0).unwrap()];
    assert_eq!(line, b"console=hvc0 test domains=1:svc,2:d2");
}

#[test]
fn without_a_service_domain_no_store() {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let elf = tiny_pvh_elf();
    let b = build(
        &mut hv,
        &plan(false),
        &elf,
        None,
        Box::new(MockNpt::default()),
    )
    .unwrap();
    let d = hv.domain(b.domid).unwrap();
    assert_eq!(d.hvm_params[xen_abi::hvm::HVM_PARAM_STORE_PFN as usize], 0);
    assert_eq!(
        d.hvm_params[xen_abi::hvm::HVM_PARAM_STORE_EVTCHN as usize],
        0
    );
    assert!(d.store.is_none());
}

/// What the run loop does for `on_reboot=restart`: destroy, then build
/// again from the same plan under the same id. The new domain is a new
/// one to the service domain (another `unique_id`), has a fresh store
/// page and port, and the old one's frames are all given back.
#[test]
fn a_domain_is_built_again_under_its_id_after_a_reboot() {
    use hv_core::domain::ShutdownReason;
    use xen_abi::hvm::HVM_PARAM_STORE_EVTCHN;
    let mut hv = Hypervisor::new(MockPlatform::default());
    let elf = tiny_pvh_elf();
    let (svc, guest) = service_and_guest();
    let opts = BuildOptions {
        store_server: Some(1),
        extra_cmdline: "",
    };
    let npt = || Box::new(MockNpt::default());
    build_with(&mut hv, &svc, &opts, &elf, None, npt()).unwrap();
    let g = build_with(&mut hv, &guest, &opts, &elf, None, npt()).unwrap();
    let first = hv.domain(g.domid).unwrap().unique_id;
    hv.shutdown(g.domid, ShutdownReason::Reboot);
    let in_use = hv.platform.frames_in_use();
    let pages = hv.domain(g.domid).unwrap().tot_pages as usize;
    hv.destroy_domain(g.domid).unwrap();
    hv.settle();
    assert!(hv.domain(g.domid).is_none());
    assert!(hv.platform.frames_in_use() + pages <= in_use);
    let again = build_with(&mut hv, &guest, &opts, &elf, None, npt()).unwrap();
    assert_eq!(again.domid, g.domid);
    let d = hv.domain(again.domid).unwrap();
    assert_ne!(d.unique_id, first);
    assert!(d.is_alive());
    assert_ne!(d.hvm_params[HVM_PARAM_STORE_EVTCHN as usize], 0);
    let conn: u32 = hv
        .guest_mem(again.domid)
        .unwrap()
        .read_obj(0xfeffc000 + 2068)
        .unwrap();
    assert_eq!(conn, 1, "a fresh store page");
}

/// Whether a frame holds anything an earlier owner or the host left: the
/// secret of `a_new_domain_never_sees_old_data`, or the mock's stale
/// power-on contents.
fn holds_old_data(hv: &Hypervisor<MockPlatform>, hfn: hv_core::Hfn, secret: u64) -> bool {
    use hv_core::platform::FrameAccess;
    let mut page = vec![0u8; 4096];
    hv.platform.read(hfn, 0, &mut page);
    page.chunks(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .any(|w| w == secret || w == hv_core::mock::STALE_WORD)
}

/// Builds domain `domid` on `hv`, fills every frame it owns with `secret`
/// (as its guest would), destroys it and answers its host frames.
fn fill_and_destroy(
    hv: &mut Hypervisor<MockPlatform>,
    domid: u16,
    secret: u64,
) -> std::collections::HashSet<u64> {
    let mut p = plan(false);
    p.domid = domid;
    let a = build(hv, &p, &tiny_pvh_elf(), None, Box::new(MockNpt::default())).unwrap();
    let gfns: Vec<(Gfn, hv_core::Hfn)> = {
        let dom = hv.domain(a.domid).unwrap();
        dom.p2m.iter().map(|(g, e)| (g, e.hfn)).collect()
    };
    let page: Vec<u8> = secret.to_le_bytes().repeat(512);
    for &(g, _) in &gfns {
        hv.guest_mem(a.domid)
            .unwrap()
            .write(g.0 << 12, &page)
            .unwrap();
    }
    hv.destroy_domain(a.domid).unwrap();
    hv.settle();
    gfns.iter().map(|&(_, h)| h.0).collect()
}

/// The security invariant of lazily zeroed guest memory: frames are handed
/// to a domain unzeroed (host RAM is not zero, and here they are the very
/// frames an earlier domain filled and freed), yet neither the new guest
/// itself (through the nested tables) nor the hypervisor on its behalf
/// (hypercall buffers, grants) ever reads a byte of the old contents.
#[test]
fn a_new_domain_never_sees_old_data() {
    use core::sync::atomic::Ordering::SeqCst;
    const SECRET: u64 = 0x5EC2_E75E_C2E7_5EC2;
    let mut hv = Hypervisor::new(MockPlatform::default());
    hv.platform.recycle.store(true, SeqCst);
    let mut p = plan(false);

    // The guest's view: every frame it can reach, lazy ones after their
    // first touch (the nested page fault), holds no old data.
    let old = fill_and_destroy(&mut hv, 1, SECRET);
    p.domid = 2;
    let b = build(
        &mut hv,
        &p,
        &tiny_pvh_elf(),
        None,
        Box::new(MockNpt::default()),
    )
    .unwrap();
    let entries: Vec<(Gfn, hv_core::Hfn)> = {
        let dom = hv.domain(b.domid).unwrap();
        dom.p2m.iter().map(|(g, e)| (g, e.hfn)).collect()
    };
    let waiting = hv.domain(b.domid).unwrap().p2m.lazy_frames();
    assert!(waiting > 3000, "most RAM is lazy ({waiting} frames)");
    let (mut reused, mut faults) = (0, 0);
    for (g, h) in entries {
        reused += usize::from(old.contains(&h.0));
        if hv.is_lazy(b.domid, g.0 << 12) {
            faults += 1;
            // Not handed out before it is zeroed.
            assert!(hv.domain(b.domid).unwrap().p2m.get(g).is_none());
            assert!(hv.lazy_fault(b.domid, g.0 << 12).unwrap());
        }
        assert!(
            !holds_old_data(&hv, h, SECRET),
            "gfn {:#x} (frame {:#x}) is mapped with old data",
            g.0,
            h.0
        );
    }
    // One fault zeroes and maps a whole 2 MiB block.
    assert!(faults >= 7, "{faults} first touches");
    assert_eq!(hv.domain(b.domid).unwrap().p2m.lazy_frames(), 0);
    assert!(
        reused > 3000,
        "the old domain's frames came back ({reused})"
    );
    hv.destroy_domain(b.domid).unwrap();
    hv.settle();

    // The hypervisor's view: reads through guest memory, as hypercalls
    // do, never return old data either.
    let old = fill_and_destroy(&mut hv, 3, SECRET);
    p.domid = 4;
    let c = build(
        &mut hv,
        &p,
        &tiny_pvh_elf(),
        None,
        Box::new(MockNpt::default()),
    )
    .unwrap();
    let entries: Vec<(Gfn, hv_core::Hfn)> = {
        let dom = hv.domain(c.domid).unwrap();
        dom.p2m.iter().map(|(g, e)| (g, e.hfn)).collect()
    };
    let mut reused = 0;
    for (g, h) in entries {
        reused += usize::from(old.contains(&h.0));
        let mut page = vec![0u8; 4096];
        hv.guest_mem(c.domid)
            .unwrap()
            .read(g.0 << 12, &mut page)
            .unwrap();
        assert!(
            page.chunks(8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
                .all(|w| w != SECRET && w != hv_core::mock::STALE_WORD),
            "gfn {:#x} shows old data to the hypervisor",
            g.0
        );
    }
    assert!(
        reused > 3000,
        "the old domain's frames came back ({reused})"
    );
}

#[test]
fn a_direct_mapped_region_is_identity_mapped_zeroed_listed_and_freed() {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let before = hv.platform.frames_in_use();
    let elf = tiny_pvh_elf();
    let p = DomainPlan {
        domid: 1,
        service: true,
        directmap: 4 << 20,
        ..plan(false)
    };
    let b = build(&mut hv, &p, &elf, None, Box::new(MockNpt::default())).unwrap();
    let dom = hv.domain(b.domid).unwrap();
    // The mock's contiguous runs start at 1 GiB.
    let base = 0x4000_0000u64;
    for g in [base >> 12, (base >> 12) + 1023] {
        let e = dom.p2m.get(Gfn(g)).unwrap();
        assert_eq!((e.hfn.0, e.kind), (g, P2mKind::Ram));
    }
    assert!(dom.p2m.get(Gfn((base >> 12) + 1024)).is_none());
    assert!(dom.tot_pages >= 16 * 256 + 1024);
    let mem = hv.guest_mem(b.domid).unwrap();
    let mut w = [0xFFu8; 64];
    mem.read(base + 0x3F_FFC0, &mut w).unwrap();
    assert!(w.iter().all(|&x| x == 0), "not zeroed: {w:x?}");
    // Listed as RAM, and named on the command line.
    assert!(
        dom.memory_map
            .iter()
            .any(|e| { e.addr } == base && { e.size } == 4 << 20 && { e.r#type } == 1)
    );
    let si: xen_abi::start_info::HvmStartInfo = mem.read_obj(b.vcpu0.rbx).unwrap();
    let want = b"console=hvc0 test directmap=0x40000000:0x400000\0";
    let mut cmd = vec![0u8; want.len()];
    mem.read(si.cmdline_paddr, &mut cmd).unwrap();
    assert_eq!(&cmd, want);
    hv.destroy_domain(b.domid).unwrap();
    assert_eq!(hv.platform.frames_in_use(), before);
}

#[test]
fn a_direct_mapped_region_over_the_domain_s_ram_is_refused() {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let before = hv.platform.frames_in_use();
    let elf = tiny_pvh_elf();
    // 1.5 GiB of low RAM covers the mock's run at 1 GiB.
    let p = DomainPlan {
        domid: 1,
        service: true,
        mem: 1536 << 20,
        directmap: 2 << 20,
        ..plan(false)
    };
    let e = build(&mut hv, &p, &elf, None, Box::new(MockNpt::default())).unwrap_err();
    assert!(
        matches!(e, hypervisor::builder::BuildError::DirectMapPlace(_)),
        "{e}"
    );
    assert!(hv.domain_ids().is_empty());
    assert_eq!(hv.platform.frames_in_use(), before);
}

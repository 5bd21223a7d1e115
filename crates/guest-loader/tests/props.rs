//! Property tests of the memory plan: for random RAM sizes, kernels,
//! command lines, modules and ACPI blobs, either the plan keeps every rule
//! or the loader says cleanly why not.

mod common;

use std::sync::LazyLock;

use common::*;
use guest_loader::layout::{ACPI_BASE, BOOT_INFO_LIMIT, MODULE_LIMIT, PAGE_SIZE};
use guest_loader::{
    AcpiBlob, GpaRange, GuestConfig, LoadError, MemoryPlan, Module, PlanError, Region,
    VecGuestMemory, load, parse, plan,
};
use proptest::prelude::*;
use xen_abi::start_info::XEN_HVM_MEMMAP_TYPE_RAM;

const MIB: u64 = 1 << 20;

/// Zeroed (never touched, so never really allocated) backing for modules.
static BIG: LazyLock<Vec<u8>> = LazyLock::new(|| vec![0u8; 1 << 30]);

static CMDLINE: LazyLock<String> = LazyLock::new(|| "x".repeat(1 << 16));

static ACPI: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut t = vec![0u8; 0x4000];
    t[..8].copy_from_slice(b"RSD PTR ");
    t[15] = 2;
    t
});

fn check_plan(p: &MemoryPlan, cfg: &GuestConfig<'_>) {
    let regions = p.regions();
    for (i, (a, ra)) in regions.iter().enumerate() {
        for (b, rb) in &regions[i + 1..] {
            assert!(!ra.overlaps(rb), "{a} {ra} overlaps {b} {rb}");
        }
    }
    // The memory map: sorted, disjoint, RAM adding up.
    let map = &p.memmap_entries;
    assert!(map.windows(2).all(|w| w[0].addr + w[0].size <= w[1].addr));
    let ram_total: u64 = map
        .iter()
        .filter(|e| e.r#type == XEN_HVM_MEMMAP_TYPE_RAM)
        .map(|e| e.size)
        .sum();
    let reserved_in_ram: u64 = p
        .rsdp_page
        .iter()
        .filter(|r| r.end <= p.mem_bytes)
        .map(|r| r.len())
        .sum();
    assert_eq!(ram_total + reserved_in_ram, p.mem_bytes);
    assert_eq!(p.mem_bytes, cfg.mem_bytes & !(PAGE_SIZE - 1));
    let inside = |r: &GpaRange, ram: bool| {
        map.iter().any(|e| {
            (e.r#type == XEN_HVM_MEMMAP_TYPE_RAM) == ram
                && e.addr <= r.start
                && r.end <= e.addr + e.size
        })
    };
    for (what, r) in &regions {
        if r.is_empty() {
            continue;
        }
        let ram = !matches!(what, Region::SpecialPages | Region::Acpi | Region::RsdpPage);
        assert!(
            inside(r, ram),
            "{what} {r} not inside a matching memmap entry"
        );
        match what {
            Region::StartInfo
            | Region::Cmdline
            | Region::ModList
            | Region::MemMap
            | Region::ModuleCmdline(_) => {
                assert!(r.end <= BOOT_INFO_LIMIT, "{what} {r} above 1 GiB");
                assert!(r.start != 0, "{what} at 0 reads as absent");
            }
            Region::Module(_) => {
                assert!(r.end <= MODULE_LIMIT, "{what} {r} above 4 GiB");
                assert_eq!(r.start % PAGE_SIZE, 0, "{what} not page-aligned");
            }
            _ => {}
        }
    }
    assert_eq!(p.start_info.start % PAGE_SIZE, 0);
    assert_eq!(p.cmdline.len(), cfg.cmdline.len() as u64 + 1);
    assert_eq!(p.modules.len(), cfg.modules.len());
    for (m, placed) in cfg.modules.iter().zip(&p.modules) {
        assert_eq!(placed.range.len(), m.data.len() as u64);
        assert_eq!(placed.cmdline.is_some(), m.cmdline.is_some());
    }
    assert_eq!(p.rsdp_paddr != 0, cfg.acpi.is_some());
    let (ks, ke) = (p.kernel.start, p.kernel.end);
    assert!(p.segments.iter().all(|s| ks <= s.paddr && s.end() <= ke));
    assert!((ks..ke).contains(&u64::from(p.entry)));
}

fn allowed_error(e: &LoadError) -> bool {
    matches!(
        e,
        LoadError::Plan(
            PlanError::NoRoom { .. }
                | PlanError::KernelDoesNotFit(_)
                | PlanError::NoRoomToRelocate { .. }
                | PlanError::TooLittleMemory(_)
        )
    )
}

#[derive(Debug, Clone)]
struct Case {
    mem_bytes: u64,
    kernel_at: u32,
    kernel_pages: u32,
    reloc: bool,
    elf64: bool,
    cmdline_len: usize,
    modules: Vec<(usize, Option<usize>)>,
    acpi: bool,
    privileged: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            0u64..(8 * MIB),
            (2 * MIB)..(1 << 30),
            (1u64 << 30)..(8 << 30),
        ],
        prop_oneof![0x1000u32..0x400_0000, 0x100_0000u32..0x100_0001],
        1u32..0x800,
        any::<bool>(),
        any::<bool>(),
        0usize..5000,
        prop::collection::vec(
            (
                prop_oneof![0usize..0x10000, 0usize..(300 << 20)],
                prop::option::of(0usize..300),
            ),
            0..5,
        ),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(mem_bytes, at, pages, reloc, elf64, cmdline_len, modules, acpi, privileged)| Case {
                mem_bytes,
                kernel_at: at & !0xfff,
                kernel_pages: pages,
                reloc,
                elf64,
                cmdline_len,
                modules,
                acpi,
                privileged,
            },
        )
}

fn image_for(c: &Case) -> Vec<u8> {
    let code = vec![0x90u8; 0x100];
    let bss = u64::from(c.kernel_pages) * PAGE_SIZE - 0x100;
    let mut n = vec![entry8(c.kernel_at + 0x10)];
    if c.reloc {
        n.push(reloc(0x20_0000, 0x20_0000, 0xffff_ffff));
    }
    build(
        c.elf64,
        &[pt_load(c.kernel_at.into(), &code, bss), notes(&n)],
    )
}

fn with_cfg<R>(c: &Case, f: impl FnOnce(&GuestConfig<'_>) -> R) -> R {
    let mods: Vec<Module<'_>> = c
        .modules
        .iter()
        .map(|&(len, cmd)| Module {
            data: &BIG[..len],
            cmdline: cmd.map(|n| &CMDLINE[..n]),
        })
        .collect();
    let cfg = GuestConfig {
        mem_bytes: c.mem_bytes,
        cmdline: &CMDLINE[..c.cmdline_len],
        modules: &mods,
        acpi: c.acpi.then(|| AcpiBlob {
            tables: &ACPI,
            rsdp_paddr: ACPI_BASE,
        }),
        privileged: c.privileged,
        direct_ram: None,
    };
    f(&cfg)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plans_keep_the_rules_or_fail_cleanly(c in case()) {
        let image = image_for(&c);
        let parsed = parse(&image).unwrap();
        with_cfg(&c, |cfg| match plan(&parsed, cfg) {
            Ok(p) => check_plan(&p, cfg),
            Err(e) => assert!(allowed_error(&e), "{e:?}"),
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Loading writes what the plan says: start_info, module list and
    /// memory map read back from guest memory equal the plan's.
    #[test]
    fn loads_write_what_the_plan_says(mut c in case()) {
        // Keep the writes small.
        for m in &mut c.modules {
            m.0 %= 1 << 20;
        }
        c.mem_bytes = c.mem_bytes.min(1 << 30);
        let image = image_for(&c);
        with_cfg(&c, |cfg| {
            let mut mem = VecGuestMemory::for_ram(c.mem_bytes);
            match load(&image, cfg, &mut mem) {
                Ok(g) => {
                    check_plan(&g.plan, cfg);
                    let si = read_start_info(&mem, g.vcpu.rbx);
                    assert_eq!(si, g.plan.start_info());
                    assert_eq!(read_memmap(&mem, &si), g.plan.memmap_entries);
                    if si.nr_modules > 0 {
                        assert_eq!(read_modlist(&mem, &si), g.plan.modlist_entries());
                    }
                    assert_eq!(
                        read_cstr(&mem, si.cmdline_paddr, c.cmdline_len as u64 + 1).len(),
                        c.cmdline_len
                    );
                }
                Err(e) => assert!(allowed_error(&e), "{e:?}"),
            }
        });
    }
}

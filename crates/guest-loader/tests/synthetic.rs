//! Loading synthetic ELF32/ELF64 images: the good ones land where they
//! should, each malformed one fails with its exact error.

mod common;

use common::*;
use guest_loader::layout::{
    ACPI_BASE, CONSOLE_PFN, HIGH_RAM_BASE, LOW_RAM_TOP, RSDP_PADDR, XENSTORE_PFN,
};
use guest_loader::{
    AcpiBlob, ElfError, GpaRange, GuestConfig, GuestMemory, LoadError, Module, NoteError,
    PlanError, Region, VecGuestMemory, load, parse,
};
use xen_abi::start_info::{
    SIF_INITDOMAIN, SIF_PRIVILEGED, XEN_HVM_MEMMAP_TYPE_NVS, XEN_HVM_MEMMAP_TYPE_RAM,
    XEN_HVM_MEMMAP_TYPE_RESERVED, XEN_HVM_START_MAGIC_VALUE,
};

const MIB: u64 = 1 << 20;

fn cfg(mem_bytes: u64) -> GuestConfig<'static> {
    GuestConfig {
        mem_bytes,
        cmdline: "console=hvc0 earlyprintk=xen",
        ..GuestConfig::default()
    }
}

fn load_err(image: &[u8]) -> LoadError {
    let mut mem = VecGuestMemory::for_ram(64 * MIB);
    load(image, &cfg(64 * MIB), &mut mem).unwrap_err()
}

/// Memory whose RAM is pre-filled with garbage, to prove bss is zeroed.
fn dirty_mem(mem_bytes: u64) -> VecGuestMemory {
    let mut mem = VecGuestMemory::for_ram(mem_bytes);
    let junk = vec![0xaau8; mem_bytes.min(32 * MIB) as usize];
    mem.write(0, &junk).unwrap();
    mem
}

fn check_loaded(elf64: bool, entry_note: Vec<u8>) {
    let code: Vec<u8> = (0..0x2345u32).map(|i| (i % 251) as u8).collect();
    let image = build(
        elf64,
        &[pt_load(0x20_0000, &code, 0x1c00), notes(&[entry_note])],
    );
    let mut mem = dirty_mem(64 * MIB);
    let g = load(&image, &cfg(64 * MIB), &mut mem).unwrap();
    assert_eq!(g.plan.entry, 0x20_0010);
    assert_eq!(g.vcpu.rip, 0x20_0010);
    assert_eq!(g.vcpu.rbx, g.plan.start_info.start);
    assert_eq!(read_bytes(&mem, 0x20_0000, code.len() as u64), code);
    assert!(
        read_bytes(&mem, 0x20_0000 + code.len() as u64, 0x1c00)
            .iter()
            .all(|&b| b == 0),
        "bss zeroed"
    );
    let si = read_start_info(&mem, g.plan.start_info.start);
    assert_eq!(si, g.plan.start_info());
    assert_eq!(si.magic, XEN_HVM_START_MAGIC_VALUE);
    assert_eq!(si.version, 1);
    assert_eq!(si.flags, 0);
    assert_eq!(si.nr_modules, 0);
    assert_eq!(si.modlist_paddr, 0);
    assert_eq!(si.rsdp_paddr, 0);
    assert!(si.start_info_end() <= 1 << 30);
    assert_eq!(
        read_cstr(&mem, si.cmdline_paddr, 64),
        b"console=hvc0 earlyprintk=xen"
    );
    let map = read_memmap(&mem, &si);
    assert_eq!(
        map.iter()
            .map(|e| (e.addr, e.size, e.r#type))
            .collect::<Vec<_>>(),
        [
            (0, 64 * MIB, XEN_HVM_MEMMAP_TYPE_RAM),
            (0xfeff_8000, 0x8000, XEN_HVM_MEMMAP_TYPE_RESERVED)
        ]
    );
    assert_eq!(
        (g.plan.console_pfn, g.plan.xenstore_pfn),
        (0xfefff, 0xfeffc)
    );
}

trait End {
    fn start_info_end(&self) -> u64;
}
impl End for xen_abi::start_info::HvmStartInfo {
    fn start_info_end(&self) -> u64 {
        [
            self.cmdline_paddr,
            self.memmap_paddr + u64::from(self.memmap_entries) * 24,
        ]
        .into_iter()
        .max()
        .unwrap()
    }
}

#[test]
fn elf64_with_8_byte_entry_loads() {
    check_loaded(true, entry8(0x20_0010));
}

#[test]
fn elf64_with_4_byte_entry_loads() {
    check_loaded(true, entry4(0x20_0010));
}

#[test]
fn elf32_with_4_byte_entry_loads() {
    check_loaded(false, entry4(0x20_0010));
}

#[test]
fn elf32_with_8_byte_entry_loads() {
    check_loaded(false, entry8(0x20_0010));
}

#[test]
fn parse_reports_notes_and_segments() {
    let image = kernel(
        true,
        0x100_0000,
        &[
            xen_note(6, b"linux\0"),
            xen_note(7, b"2.6\0"),
            xen_note(5, b"xen-3.0\0"),
            xen_note(8, b"generic\0"),
            note_of(b"GNU", 3, b"buildid!"),
        ],
    );
    let p = parse(&image).unwrap();
    assert_eq!(p.entry, 0x100_0010);
    assert_eq!(p.notes.phys32_entry_len, 8);
    assert_eq!(p.notes.guest_os, Some(&b"linux"[..]));
    assert_eq!(p.notes.guest_version, Some(&b"2.6"[..]));
    assert_eq!(p.notes.xen_version, Some(&b"xen-3.0"[..]));
    assert_eq!(p.notes.loader, Some(&b"generic"[..]));
    assert_eq!(p.notes.count, 5, "the GNU note is not a Xen note");
    assert_eq!(p.segments.len(), 1);
    assert_eq!(p.span(), (0x100_0000, 0x100_5000));
    assert!(p.segments[0].executable());
}

#[test]
fn note_segment_with_vaddr_0_and_memsz_0_is_read_by_offset() {
    let mut n = notes(&[entry4(0x20_0000)]);
    n.vaddr = 0;
    n.paddr = 0;
    n.memsz = 0;
    let image = build(true, &[pt_load(0x20_0000, &[0x90; 16], 0), n]);
    assert_eq!(parse(&image).unwrap().entry, 0x20_0000);
}

#[test]
fn notes_aligned_to_8_are_read() {
    // A GNU property note first with a 4-byte value padded to 8, then the
    // Xen note: at offset 24 with 8-alignment (20 with 4).
    let mut data = Vec::new();
    data.extend_from_slice(&4u32.to_le_bytes());
    data.extend_from_slice(&4u32.to_le_bytes());
    data.extend_from_slice(&5u32.to_le_bytes());
    data.extend_from_slice(b"GNU\0");
    data.extend_from_slice(&[1, 1, 1, 1, 0, 0, 0, 0]);
    data.extend_from_slice(&4u32.to_le_bytes());
    data.extend_from_slice(&8u32.to_le_bytes());
    data.extend_from_slice(&18u32.to_le_bytes());
    data.extend_from_slice(b"Xen\0");
    data.extend_from_slice(&0x20_0000u64.to_le_bytes());
    let n = Seg {
        p_type: PT_NOTE,
        data,
        align: 8,
        ..Seg::default()
    };
    let image = build(true, &[pt_load(0x20_0000, &[0x90; 16], 0), n]);
    assert_eq!(parse(&image).unwrap().entry, 0x20_0000);
}

#[test]
fn missing_entry_note_is_not_pvh() {
    let image = build(
        true,
        &[
            pt_load(0x20_0000, &[0x90; 16], 0),
            notes(&[xen_note(6, b"linux\0"), note_of(b"GNU", 18, &[0; 4])]),
        ],
    );
    let e = load_err(&image);
    assert!(e.is_not_pvh(), "{e:?}");
    assert_eq!(e, LoadError::Note(NoteError::NotPvh));
    // No note segment at all.
    let image = build(false, &[pt_load(0x20_0000, &[0x90; 16], 0)]);
    assert!(load_err(&image).is_not_pvh());
}

#[test]
fn entry_note_of_bad_length_is_rejected() {
    let image = build(
        true,
        &[
            pt_load(0x20_0000, &[0x90; 16], 0),
            notes(&[xen_note(18, &[0; 5])]),
        ],
    );
    assert_eq!(
        load_err(&image),
        LoadError::Note(NoteError::BadEntryLength(5))
    );
}

#[test]
fn conflicting_entry_notes_are_rejected() {
    let image = build(
        true,
        &[
            pt_load(0x20_0000, &[0x90; 16], 0),
            notes(&[entry4(0x20_0000), entry8(0x20_0004)]),
        ],
    );
    assert_eq!(
        load_err(&image),
        LoadError::Note(NoteError::Conflicting { note: 18 })
    );
    // Repeating the same value is fine.
    let image = build(
        true,
        &[
            pt_load(0x20_0000, &[0x90; 16], 0),
            notes(&[entry4(0x20_0000), entry8(0x20_0000)]),
        ],
    );
    parse(&image).unwrap();
}

#[test]
fn entry_outside_every_segment_is_rejected() {
    let image = build(
        true,
        &[
            pt_load(0x20_0000, &[0x90; 16], 0),
            notes(&[entry4(0x30_0000)]),
        ],
    );
    assert_eq!(
        load_err(&image),
        LoadError::Note(NoteError::EntryOutsideImage(0x30_0000))
    );
}

#[test]
fn note_running_past_its_segment_is_rejected() {
    let mut n = entry4(0x20_0000);
    n[4] = 0xff; // descsz 255
    let image = build(true, &[pt_load(0x20_0000, &[0x90; 16], 0), notes(&[n])]);
    assert_eq!(
        load_err(&image),
        LoadError::Elf(ElfError::BadNote { index: 1 })
    );
}

#[test]
fn overlapping_segments_are_rejected() {
    let image = build(
        true,
        &[
            pt_load(0x20_0000, &[1; 0x100], 0x1000),
            pt_load(0x20_0800, &[2; 0x100], 0),
            notes(&[entry4(0x20_0000)]),
        ],
    );
    assert_eq!(
        load_err(&image),
        LoadError::Elf(ElfError::SegmentsOverlap {
            first: 0,
            second: 1
        })
    );
}

#[test]
fn adjacent_segments_load() {
    let image = build(
        false,
        &[
            pt_load(0x20_1000, &[2; 0x100], 0xf00),
            pt_load(0x20_0000, &[1; 0x100], 0xf00),
            notes(&[entry4(0x20_0000)]),
        ],
    );
    let mut mem = VecGuestMemory::for_ram(64 * MIB);
    let g = load(&image, &cfg(64 * MIB), &mut mem).unwrap();
    assert_eq!(
        g.plan.kernel,
        GpaRange {
            start: 0x20_0000,
            end: 0x20_2000
        }
    );
    assert_eq!(read_bytes(&mem, 0x20_1000, 2), [2, 2]);
}

#[test]
fn filesz_above_memsz_is_rejected() {
    let mut s = pt_load(0x20_0000, &[1; 0x100], 0);
    s.memsz = 0x80;
    let image = build(true, &[s, notes(&[entry4(0x20_0000)])]);
    assert_eq!(
        load_err(&image),
        LoadError::Elf(ElfError::FileszExceedsMemsz { index: 0 })
    );
}

#[test]
fn segment_bytes_past_the_file_end_are_rejected() {
    for (offset, filesz) in [
        (Some(0x10_0000), None),
        (None, Some(0x10_0000)),
        (Some(u64::MAX - 8), Some(0x100)),
        (Some(0x80), Some(u64::MAX)),
    ] {
        let mut s = pt_load(0x20_0000, &[1; 0x100], 0);
        s.offset = offset;
        s.filesz = filesz;
        s.memsz = s.memsz.max(filesz.unwrap_or(0));
        let image = build(true, &[s, notes(&[entry4(0x20_0000)])]);
        assert_eq!(
            load_err(&image),
            LoadError::Elf(ElfError::SegmentOutsideFile { index: 0 }),
            "{offset:?} {filesz:?}"
        );
    }
    // A note segment too.
    let mut n = notes(&[entry4(0x20_0000)]);
    n.offset = Some(1 << 40);
    let image = build(true, &[pt_load(0x20_0000, &[1; 16], 0), n]);
    assert_eq!(
        load_err(&image),
        LoadError::Elf(ElfError::SegmentOutsideFile { index: 1 })
    );
}

#[test]
fn paddr_plus_memsz_overflow_is_rejected() {
    for (paddr, memsz) in [
        (u64::MAX - 0x10, 0x100),
        (0xffff_f000, 0x2000),
        (1 << 32, 0x10),
    ] {
        let mut s = pt_load(paddr, &[1; 16], 0);
        s.memsz = memsz;
        let image = build(true, &[s, notes(&[entry4(0x20_0000)])]);
        assert_eq!(
            load_err(&image),
            LoadError::Elf(ElfError::SegmentAddressOverflow { index: 0 }),
            "{paddr:#x}"
        );
    }
    // ELF32: 32-bit fields wrap past 4 GiB only through the sum.
    let mut s = pt_load(0xffff_ff00, &[1; 16], 0);
    s.memsz = 0x200;
    let image = build(false, &[s, notes(&[entry4(0xffff_ff00)])]);
    assert_eq!(
        load_err(&image),
        LoadError::Elf(ElfError::SegmentAddressOverflow { index: 0 })
    );
}

#[test]
fn segment_above_ram_is_rejected() {
    let image = kernel(true, 0x100_0000, &[]);
    let mut mem = VecGuestMemory::for_ram(8 * MIB);
    let e = load(&image, &cfg(8 * MIB), &mut mem).unwrap_err();
    assert_eq!(
        e,
        LoadError::Plan(PlanError::KernelDoesNotFit(GpaRange {
            start: 0x100_0000,
            end: 0x100_5000
        }))
    );
    assert_eq!(mem.allocated(), 0, "nothing written on failure");
}

#[test]
fn segment_in_the_hole_below_4g_is_rejected() {
    let image = kernel(false, 0xfd00_0000, &[]);
    let mut mem = VecGuestMemory::for_ram(8 << 30);
    let e = load(&image, &cfg(8 << 30), &mut mem).unwrap_err();
    assert!(
        matches!(e, LoadError::Plan(PlanError::KernelDoesNotFit(_))),
        "{e:?}"
    );
}

#[test]
fn relocatable_kernel_moves_when_its_place_is_above_ram() {
    let image = kernel(
        true,
        0x100_0000,
        &[reloc(0x20_0000, 0x20_0000, 0x3fff_ffff)],
    );
    let mut mem = VecGuestMemory::for_ram(8 * MIB);
    let g = load(&image, &cfg(8 * MIB), &mut mem).unwrap();
    assert_eq!(g.plan.kernel.start, 0x20_0000);
    assert_eq!(g.plan.kernel_linked.start, 0x100_0000);
    assert_eq!(g.plan.entry, 0x20_0010);
    assert_eq!(g.vcpu.rip, 0x20_0010);
    let p = parse(&image).unwrap();
    let seg = &p.segments[0];
    assert_eq!(
        read_bytes(&mem, 0x20_0000, seg.filesz),
        p.segment_bytes(seg)
    );
    // Boot structures do not land on the moved kernel.
    for (r, range) in g.plan.regions() {
        if !matches!(r, Region::Segment(_)) {
            assert!(!range.overlaps(&g.plan.kernel), "{r} {range}");
        }
    }
}

#[test]
fn relocatable_kernel_stays_when_its_place_is_free() {
    let image = kernel(
        true,
        0x100_0000,
        &[reloc(0x20_0000, 0x20_0000, 0x3fff_ffff)],
    );
    let mut mem = VecGuestMemory::for_ram(64 * MIB);
    let g = load(&image, &cfg(64 * MIB), &mut mem).unwrap();
    assert_eq!(g.plan.kernel, g.plan.kernel_linked);
    assert_eq!(g.plan.entry, 0x100_0010);
}

#[test]
fn relocatable_kernel_moves_off_the_rsdp_page() {
    let image = kernel(false, 0xf_e000, &[reloc(0x1000, 0x10_0000, 0xffff_ffff)]);
    let tables = acpi_tables();
    let c = GuestConfig {
        acpi: Some(AcpiBlob {
            tables: &tables,
            rsdp_paddr: ACPI_BASE,
        }),
        ..cfg(64 * MIB)
    };
    let mut mem = VecGuestMemory::for_ram(64 * MIB);
    let g = load(&image, &c, &mut mem).unwrap();
    assert_eq!(g.plan.kernel.start, 0x10_0000);
    assert_eq!(g.plan.entry, 0x10_0010);
    // Without the reloc note it cannot load there.
    let image = kernel(false, 0xf_e000, &[]);
    assert!(matches!(
        load(&image, &c, &mut mem).unwrap_err(),
        LoadError::Plan(PlanError::KernelDoesNotFit(_))
    ));
}

#[test]
fn relocation_honours_max() {
    let image = kernel(true, 0x100_0000, &[reloc(0x20_0000, 0x40_0000, 0x40_2000)]);
    let mut mem = VecGuestMemory::for_ram(8 * MIB);
    assert!(matches!(
        load(&image, &cfg(8 * MIB), &mut mem).unwrap_err(),
        LoadError::Plan(PlanError::NoRoomToRelocate { .. })
    ));
}

#[test]
fn bad_reloc_notes_are_rejected() {
    for (note, want) in [
        (xen_note(19, &[0; 8]), NoteError::BadRelocLength(8)),
        (
            reloc(0x1234, 0, 0x1000_0000),
            NoteError::BadRelocAlign(0x1234),
        ),
        (
            reloc(0x800, 0, 0x1000_0000),
            NoteError::BadRelocAlign(0x800),
        ),
        (
            reloc(0x1000, 0x2000, 0x1000),
            NoteError::BadRelocRange {
                min: 0x2000,
                max: 0x1000,
            },
        ),
    ] {
        let image = kernel(true, 0x100_0000, &[note]);
        assert_eq!(load_err(&image), LoadError::Note(want));
    }
    // Align 0 means Xen's default, 2 MiB.
    let image = kernel(true, 0x100_0000, &[reloc(0, 0, 0x1000_0000)]);
    assert_eq!(parse(&image).unwrap().notes.reloc.unwrap().align, 0x20_0000);
}

#[test]
fn malformed_headers_are_rejected() {
    let good = kernel(true, 0x100_0000, &[]);
    assert_eq!(load_err(&[]), LoadError::Elf(ElfError::Truncated));
    assert_eq!(load_err(&good[..40]), LoadError::Elf(ElfError::Truncated));
    assert_eq!(load_err(&[0u8; 64]), LoadError::Elf(ElfError::BadMagic));
    let mut b = good.clone();
    b[4] = 3;
    assert_eq!(load_err(&b), LoadError::Elf(ElfError::BadClass(3)));
    let mut b = good.clone();
    b[5] = 2;
    assert_eq!(load_err(&b), LoadError::Elf(ElfError::NotLittleEndian(2)));
    let mut b = good.clone();
    b[18] = 40; // EM_ARM
    assert_eq!(load_err(&b), LoadError::Elf(ElfError::BadMachine(40)));
    let mut b = good.clone();
    b[54] = 32; // e_phentsize too small for ELF64
    assert_eq!(load_err(&b), LoadError::Elf(ElfError::BadPhentsize(32)));
    let mut b = good.clone();
    b[56..58].copy_from_slice(&0xffffu16.to_le_bytes());
    assert_eq!(
        load_err(&b),
        LoadError::Elf(ElfError::TooManyProgramHeaders(0xffff))
    );
    let mut b = good.clone();
    b[56..58].copy_from_slice(&500u16.to_le_bytes());
    assert_eq!(
        load_err(&b),
        LoadError::Elf(ElfError::ProgramHeadersOutsideFile)
    );
    let mut b = good.clone();
    b[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(
        load_err(&b),
        LoadError::Elf(ElfError::ProgramHeadersOutsideFile)
    );
    let b = build(true, &[notes(&[entry4(0x20_0000)])]);
    assert_eq!(load_err(&b), LoadError::Elf(ElfError::NoLoadableSegments));
}

#[test]
fn modules_land_page_aligned_with_their_command_lines() {
    let image = kernel(true, 0x100_0000, &[]);
    let initrd: Vec<u8> = (0..0x12345u32).map(|i| (i % 253) as u8).collect();
    let other = vec![0x5a; 0x800_0000]; // 128 MiB: must go after the kernel
    let mods = [
        Module {
            data: &initrd,
            cmdline: Some("initrd args"),
        },
        Module {
            data: &other,
            cmdline: None,
        },
        Module {
            data: &[],
            cmdline: Some(""),
        },
    ];
    let c = GuestConfig {
        modules: &mods,
        privileged: true,
        ..cfg(512 * MIB)
    };
    let mut mem = VecGuestMemory::for_ram(512 * MIB);
    let g = load(&image, &c, &mut mem).unwrap();
    let si = read_start_info(&mem, g.plan.start_info.start);
    assert_eq!(si.flags, SIF_PRIVILEGED | SIF_INITDOMAIN);
    assert_eq!(si.nr_modules, 3);
    let list = read_modlist(&mem, &si);
    assert_eq!(list, g.plan.modlist_entries());
    assert_eq!(list[0].size, initrd.len() as u64);
    assert_eq!(read_bytes(&mem, list[0].paddr, list[0].size), initrd);
    assert_eq!(read_cstr(&mem, list[0].cmdline_paddr, 32), b"initrd args");
    assert_eq!(list[1].cmdline_paddr, 0);
    assert_eq!(read_bytes(&mem, list[1].paddr + 0x7ff_ffff, 1), [0x5a]);
    assert!(list[1].paddr >= g.plan.kernel.end);
    assert_eq!(list[2].size, 0);
    assert_eq!(read_cstr(&mem, list[2].cmdline_paddr, 8), b"");
    for m in &list {
        assert_eq!(m.paddr % 0x1000, 0);
        assert!(m.paddr + m.size <= 1 << 32);
    }
    assert_disjoint(&g.plan);
}

#[test]
fn large_guest_gets_ram_above_4g() {
    let image = kernel(true, 0x100_0000, &[]);
    let mem_bytes = 6u64 << 30;
    let mut mem = VecGuestMemory::for_ram(mem_bytes);
    let g = load(&image, &cfg(mem_bytes), &mut mem).unwrap();
    let si = read_start_info(&mem, g.plan.start_info.start);
    let map: Vec<_> = read_memmap(&mem, &si)
        .iter()
        .map(|e| (e.addr, e.size, e.r#type))
        .collect();
    assert_eq!(
        map,
        [
            (0, LOW_RAM_TOP, XEN_HVM_MEMMAP_TYPE_RAM),
            (0xfeff_8000, 0x8000, XEN_HVM_MEMMAP_TYPE_RESERVED),
            (
                HIGH_RAM_BASE,
                mem_bytes - LOW_RAM_TOP,
                XEN_HVM_MEMMAP_TYPE_RAM
            ),
        ]
    );
    let ram: u64 = map
        .iter()
        .filter(|e| e.2 == XEN_HVM_MEMMAP_TYPE_RAM)
        .map(|e| e.1)
        .sum();
    assert_eq!(ram, mem_bytes);
    assert!(mem.allocated() <= 1 << 30, "sparse above 1 GiB");
}

/// A minimal ACPI blob: an RSDP v2 at offset 0 and some bytes.
fn acpi_tables() -> Vec<u8> {
    let mut t = vec![0u8; 0x1234];
    t[..8].copy_from_slice(b"RSD PTR ");
    t[15] = 2;
    for (i, b) in t[16..36].iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    t[0x1000] = 0xee;
    t
}

#[test]
fn acpi_tables_and_rsdp_are_placed_and_reported() {
    let image = kernel(true, 0x100_0000, &[]);
    let tables = acpi_tables();
    let c = GuestConfig {
        acpi: Some(AcpiBlob {
            tables: &tables,
            rsdp_paddr: ACPI_BASE,
        }),
        ..cfg(256 * MIB)
    };
    let mut mem = VecGuestMemory::for_ram(256 * MIB);
    mem.write(0xfc00_1f00, &[0xff; 0x100]).unwrap();
    let g = load(&image, &c, &mut mem).unwrap();
    assert_eq!(g.plan.rsdp_paddr, RSDP_PADDR);
    assert_eq!(
        g.plan.acpi,
        Some(GpaRange {
            start: ACPI_BASE,
            end: ACPI_BASE + 0x2000
        })
    );
    assert_eq!(read_bytes(&mem, ACPI_BASE, tables.len() as u64), tables);
    assert!(
        read_bytes(&mem, 0xfc00_1f00, 0x100).iter().all(|&b| b == 0),
        "tail of the ACPI region zeroed"
    );
    assert_eq!(read_bytes(&mem, RSDP_PADDR, 36), tables[..36]);
    let si = read_start_info(&mem, g.plan.start_info.start);
    assert_eq!(si.rsdp_paddr, RSDP_PADDR);
    let map: Vec<_> = read_memmap(&mem, &si)
        .iter()
        .map(|e| (e.addr, e.size, e.r#type))
        .collect();
    assert_eq!(
        map,
        [
            (0, 0xf_f000, XEN_HVM_MEMMAP_TYPE_RAM),
            (0xf_f000, 0x1000, XEN_HVM_MEMMAP_TYPE_RESERVED),
            (0x10_0000, 255 * MIB, XEN_HVM_MEMMAP_TYPE_RAM),
            (ACPI_BASE, 0x2000, XEN_HVM_MEMMAP_TYPE_NVS),
            (0xfeff_8000, 0x8000, XEN_HVM_MEMMAP_TYPE_RESERVED),
        ]
    );
    assert_disjoint(&g.plan);
}

#[test]
fn bad_acpi_blobs_are_rejected() {
    let image = kernel(true, 0x100_0000, &[]);
    let tables = acpi_tables();
    let huge = vec![0u8; 0x3000_0000];
    for (t, rsdp, want) in [
        (
            &tables[..],
            ACPI_BASE + 8,
            PlanError::BadRsdp(ACPI_BASE + 8),
        ),
        (&tables[..], 0xf_ffc0, PlanError::BadRsdp(0xf_ffc0)),
        (&tables[..20], ACPI_BASE, PlanError::BadRsdp(ACPI_BASE)),
        (&tables[..], u64::MAX, PlanError::BadRsdp(u64::MAX)),
        (&huge[..], ACPI_BASE, PlanError::AcpiTooLarge(huge.len())),
    ] {
        let c = GuestConfig {
            acpi: Some(AcpiBlob {
                tables: t,
                rsdp_paddr: rsdp,
            }),
            ..cfg(64 * MIB)
        };
        let mut mem = VecGuestMemory::for_ram(64 * MIB);
        assert_eq!(
            load(&image, &c, &mut mem).unwrap_err(),
            LoadError::Plan(want)
        );
    }
}

#[test]
fn configuration_errors_are_clean() {
    let image = kernel(true, 0x100_0000, &[]);
    let mut mem = VecGuestMemory::for_ram(64 * MIB);
    let c = GuestConfig {
        cmdline: "a\0b",
        ..cfg(64 * MIB)
    };
    assert_eq!(
        load(&image, &c, &mut mem).unwrap_err(),
        LoadError::Plan(PlanError::CmdlineHasNul(None))
    );
    let m = [Module {
        data: &[1],
        cmdline: Some("x\0"),
    }];
    let c = GuestConfig {
        modules: &m,
        ..cfg(64 * MIB)
    };
    assert_eq!(
        load(&image, &c, &mut mem).unwrap_err(),
        LoadError::Plan(PlanError::CmdlineHasNul(Some(0)))
    );
    assert_eq!(
        load(&image, &cfg(MIB), &mut mem).unwrap_err(),
        LoadError::Plan(PlanError::TooLittleMemory(MIB))
    );
    assert_eq!(
        load(&image, &cfg(u64::MAX), &mut mem).unwrap_err(),
        LoadError::Plan(PlanError::TooMuchMemory(u64::MAX))
    );
    let big = vec![0u8; 60 << 20];
    let m = [Module {
        data: &big,
        cmdline: None,
    }];
    let c = GuestConfig {
        modules: &m,
        ..cfg(64 * MIB)
    };
    assert_eq!(
        load(&image, &c, &mut mem).unwrap_err(),
        LoadError::Plan(PlanError::NoRoom {
            region: Region::Module(0),
            size: big.len() as u64,
            limit: 1 << 32
        })
    );
    let many = vec![Module::default(); 257];
    let c = GuestConfig {
        modules: &many,
        ..cfg(64 * MIB)
    };
    assert_eq!(
        load(&image, &c, &mut mem).unwrap_err(),
        LoadError::Plan(PlanError::TooManyModules(257))
    );
}

#[test]
fn memory_smaller_than_the_plan_is_rejected_before_writing() {
    let image = kernel(true, 0x100_0000, &[]);
    let mut mem = VecGuestMemory::new(64 * MIB);
    let e = load(&image, &cfg(64 * MIB), &mut mem).unwrap_err();
    assert!(matches!(e, LoadError::MemoryTooSmall { .. }), "{e:?}");
    assert_eq!(mem.allocated(), 0);
    assert!(e.to_string().contains("does not back"), "{e}");
}

#[test]
fn special_pages_are_zeroed_and_reported() {
    let image = kernel(true, 0x100_0000, &[]);
    let mut mem = VecGuestMemory::for_ram(64 * MIB);
    mem.write(CONSOLE_PFN << 12, &[0xff; 4096]).unwrap();
    mem.write(XENSTORE_PFN << 12, &[0xff; 16]).unwrap();
    let g = load(&image, &cfg(64 * MIB), &mut mem).unwrap();
    assert_eq!(g.plan.console_pfn, CONSOLE_PFN);
    assert!(
        read_bytes(&mem, CONSOLE_PFN << 12, 4096)
            .iter()
            .all(|&b| b == 0)
    );
    assert!(
        read_bytes(&mem, XENSTORE_PFN << 12, 16)
            .iter()
            .all(|&b| b == 0)
    );
}

#[test]
fn errors_read_well_in_a_log() {
    let errs = [
        LoadError::Note(NoteError::NotPvh),
        LoadError::Elf(ElfError::SegmentsOverlap {
            first: 1,
            second: 2,
        }),
        LoadError::Plan(PlanError::NoRoom {
            region: Region::Module(0),
            size: 5,
            limit: 1 << 32,
        }),
    ];
    let texts: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(texts[0].contains("PHYS32_ENTRY"), "{}", texts[0]);
    assert!(
        texts[1].contains("segments 1 and 2 overlap"),
        "{}",
        texts[1]
    );
    assert!(texts[2].contains("module 0"), "{}", texts[2]);
    use std::error::Error;
    assert!(errs[0].source().is_some());
}

/// All placed regions pairwise disjoint.
fn assert_disjoint(plan: &guest_loader::MemoryPlan) {
    let regions = plan.regions();
    for (i, (a, ra)) in regions.iter().enumerate() {
        for (b, rb) in &regions[i + 1..] {
            assert!(!ra.overlaps(rb), "{a} {ra} overlaps {b} {rb}");
        }
    }
}

#[test]
fn direct_ram_is_listed_as_ram_and_never_used() {
    let image = kernel(true, 0x100_0000, &[]);
    let direct = GpaRange {
        start: 0x3e00_0000,
        end: 0x4000_0000,
    };
    let c = GuestConfig {
        direct_ram: Some(direct),
        ..cfg(64 * MIB)
    };
    let mut mem = VecGuestMemory::for_ram(64 * MIB);
    let g = load(&image, &c, &mut mem).unwrap();
    let ram: Vec<(u64, u64)> = g
        .plan
        .memmap_entries
        .iter()
        .filter(|e| e.r#type == XEN_HVM_MEMMAP_TYPE_RAM)
        .map(|e| (e.addr, e.size))
        .collect();
    assert!(ram.contains(&(0x3e00_0000, 0x200_0000)), "{ram:x?}");
    assert!(
        g.plan
            .memmap_entries
            .windows(2)
            .all(|w| w[0].addr < w[1].addr)
    );
    // Nothing placed there, and the loader does not back it.
    assert!(g.plan.regions().iter().all(|(_, r)| !r.overlaps(&direct)));
    assert!(g.plan.backing().iter().all(|r| !r.overlaps(&direct)));
    // Overlapping the low RAM, the ACPI area, unaligned or empty: refused.
    for bad in [
        GpaRange {
            start: 0x300_0000,
            end: 0x500_0000,
        },
        GpaRange {
            start: ACPI_BASE - 0x20_0000,
            end: ACPI_BASE + 0x1000,
        },
        GpaRange {
            start: 0x3e00_0800,
            end: 0x4000_0000,
        },
        GpaRange {
            start: 0x3e00_0000,
            end: 0x3e00_0000,
        },
    ] {
        let c = GuestConfig {
            direct_ram: Some(bad),
            ..cfg(64 * MIB)
        };
        assert_eq!(
            load(&image, &c, &mut mem).unwrap_err(),
            LoadError::Plan(PlanError::BadDirectRam(bad))
        );
    }
}

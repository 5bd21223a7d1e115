//! Loads Debian's real PVH kernel (`cargo xtask linux` caches it in
//! `target/linux/`). Skipped with a note when the file is missing, unless
//! `PVH_REQUIRE_LINUX=1`.
//!
//! The checks read the ELF independently of the loader's parser: program
//! headers by their fixed ELF64 offsets, the PHYS32_ENTRY note by scanning
//! for its header bytes.

mod common;

use std::path::PathBuf;

use common::*;
use guest_loader::layout::{CONSOLE_PFN, SPECIAL_PFN_FIRST, SPECIAL_PFN_LAST, XENSTORE_PFN};
use guest_loader::{GuestConfig, Module, VecGuestMemory, load, parse};
use xen_abi::start_info::{
    XEN_HVM_MEMMAP_TYPE_RAM, XEN_HVM_MEMMAP_TYPE_RESERVED, XEN_HVM_START_MAGIC_VALUE,
};

const MEM: u64 = 512 << 20;
const CMDLINE: &str = "console=hvc0 earlyprintk=xen rdinit=/init";

fn linux_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/linux")
}

/// The file's bytes, or `None` (after a note) when it is absent and not
/// required.
fn input(name: &str) -> Option<Vec<u8>> {
    let path = linux_dir().join(name);
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) => {
            if std::env::var("PVH_REQUIRE_LINUX").as_deref() == Ok("1") {
                panic!(
                    "{}: {e} (PVH_REQUIRE_LINUX=1; run `cargo xtask linux`)",
                    path.display()
                );
            }
            eprintln!(
                "note: {} missing ({e}); skipping (run `cargo xtask linux`)",
                path.display()
            );
            None
        }
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// (paddr, offset, filesz, memsz, flags) of each PT_LOAD, read directly.
fn load_headers(elf: &[u8]) -> Vec<(u64, u64, u64, u64, u32)> {
    assert_eq!(elf[4], 2, "Debian's vmlinux is ELF64");
    let phoff = u64_at(elf, 32) as usize;
    let phentsize = u16_at(elf, 54) as usize;
    let phnum = u16_at(elf, 56) as usize;
    (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|&p| u32_at(elf, p) == 1)
        .map(|p| {
            (
                u64_at(elf, p + 24),
                u64_at(elf, p + 8),
                u64_at(elf, p + 32),
                u64_at(elf, p + 40),
                u32_at(elf, p + 4),
            )
        })
        .collect()
}

/// The PHYS32_ENTRY value found by scanning for its note header:
/// namesz 4, descsz 4 or 8, type 18, "Xen\0", at a 4-byte aligned offset.
fn entry_by_scan(elf: &[u8]) -> u32 {
    // Notes are 4-byte aligned in the file: look at aligned "Xen\0" words.
    let mut found = Vec::new();
    for at in (12..elf.len().saturating_sub(12)).step_by(4) {
        if &elf[at..at + 4] == b"Xen\0"
            && u32_at(elf, at - 12) == 4
            && matches!(u32_at(elf, at - 8), 4 | 8)
            && u32_at(elf, at - 4) == 18
        {
            found.push(u32_at(elf, at + 4));
        }
    }
    assert_eq!(found.len(), 1, "one PHYS32_ENTRY note: {found:x?}");
    found[0]
}

#[test]
fn debian_vmlinux_loads_as_pvh() {
    let Some(elf) = input("vmlinux") else { return };
    let initrd = input("initramfs.cpio").unwrap_or_else(|| b"070701 fake cpio".to_vec());

    let info = parse(&elf).unwrap();
    eprintln!(
        "vmlinux: {:?}, entry {:#x} ({}-byte note), {} segments, guest {:?} {:?}, loader {:?}",
        info.class,
        info.entry,
        info.notes.phys32_entry_len,
        info.segments.len(),
        info.notes.guest_os.map(String::from_utf8_lossy),
        info.notes.guest_version.map(String::from_utf8_lossy),
        info.notes.loader.map(String::from_utf8_lossy),
    );
    assert_eq!(
        info.notes.phys32_entry_len, 8,
        "Debian emits an 8-byte entry"
    );
    assert_eq!(info.notes.guest_os, Some(&b"linux"[..]));

    let mods = [Module {
        data: &initrd,
        cmdline: None,
    }];
    let cfg = GuestConfig {
        mem_bytes: MEM,
        cmdline: CMDLINE,
        modules: &mods,
        acpi: None,
        privileged: false,
        direct_ram: None,
    };
    let mut mem = VecGuestMemory::for_ram(MEM);
    let g = load(&elf, &cfg, &mut mem).unwrap();

    // Entry: the note's value, inside an executable loaded segment.
    let entry = entry_by_scan(&elf);
    assert_eq!(g.plan.entry, entry);
    assert_eq!(g.vcpu.rip, u64::from(entry));
    let headers = load_headers(&elf);
    assert!(
        headers.iter().any(|&(paddr, _, _, memsz, flags)| {
            flags & 1 != 0 && (paddr..paddr + memsz).contains(&u64::from(entry))
        }),
        "entry {entry:#x} in an executable segment"
    );

    // Segments at their p_paddr (not moved: 512 MiB holds the kernel).
    assert_eq!(g.plan.kernel, g.plan.kernel_linked);
    for &(paddr, offset, filesz, memsz, _) in &headers {
        let file = &elf[offset as usize..(offset + filesz) as usize];
        assert!(
            read_bytes(&mem, paddr, filesz) == file,
            "segment at {paddr:#x} matches the file"
        );
        assert!(
            read_bytes(&mem, paddr + filesz, memsz - filesz)
                .iter()
                .all(|&b| b == 0)
        );
    }

    // start_info: magic, command line, initrd, memory map.
    assert_eq!(g.vcpu.rbx, g.plan.start_info.start);
    let si = read_start_info(&mem, g.vcpu.rbx);
    assert_eq!(si.magic, XEN_HVM_START_MAGIC_VALUE);
    assert_eq!(si.version, 1);
    assert!(g.vcpu.rbx + 56 <= 1 << 30);
    assert!(si.cmdline_paddr != 0 && si.cmdline_paddr < 1 << 30);
    assert_eq!(read_cstr(&mem, si.cmdline_paddr, 4096), CMDLINE.as_bytes());
    assert_eq!(si.nr_modules, 1);
    let list = read_modlist(&mem, &si);
    assert_eq!(list[0].size, initrd.len() as u64);
    assert_eq!(list[0].paddr % 4096, 0);
    assert!(list[0].paddr + list[0].size <= 1 << 32);
    assert!(
        list[0].paddr >= g.plan.kernel.end || list[0].paddr + list[0].size <= g.plan.kernel.start
    );
    assert!(read_bytes(&mem, list[0].paddr, list[0].size) == initrd);

    let map = read_memmap(&mem, &si);
    let ram: u64 = map
        .iter()
        .filter(|e| e.r#type == XEN_HVM_MEMMAP_TYPE_RAM)
        .map(|e| e.size)
        .sum();
    assert_eq!(ram, MEM);
    assert!(map.windows(2).all(|w| w[0].addr + w[0].size <= w[1].addr));
    for pfn in [
        SPECIAL_PFN_FIRST,
        XENSTORE_PFN,
        CONSOLE_PFN,
        SPECIAL_PFN_LAST,
    ] {
        let a = pfn << 12;
        assert!(
            map.iter().any(|e| e.r#type == XEN_HVM_MEMMAP_TYPE_RESERVED
                && e.addr <= a
                && a + 4096 <= e.addr + e.size),
            "pfn {pfn:#x} reserved"
        );
    }
    eprintln!(
        "loaded: kernel {}, start_info {:#x}, initrd {:#x}+{:#x}, {} memmap entries",
        g.plan.kernel,
        g.plan.start_info.start,
        list[0].paddr,
        list[0].size,
        map.len()
    );
}

//! Hostile images: arbitrary bytes, or a valid PVH image with bytes
//! patched, loaded into a small guest. The loader must never panic and
//! either load cleanly (regions disjoint, entry inside the kernel) or
//! return an error.
#![no_main]

use guest_loader::{GuestConfig, Module, VecGuestMemory, load};
use libfuzzer_sys::fuzz_target;

const MEM: u64 = 16 << 20;

/// A valid ELF64 (or ELF32) PVH image: one PT_LOAD at 1 MiB with bss, a
/// PT_NOTE holding a GUEST_OS note, an 8-byte PHYS32_ENTRY note and a
/// PHYS32_RELOC note.
fn template(elf64: bool) -> Vec<u8> {
    let (eh, ph) = if elf64 { (64usize, 56usize) } else { (52, 32) };
    let mut notes = Vec::new();
    for (ty, desc) in [
        (6u32, &b"linux\0\0\0"[..]),
        (18, &0x10_0010u64.to_le_bytes()[..]),
        (
            19,
            &[0, 0, 0x20, 0, 0, 0, 0x10, 0, 0xff, 0xff, 0xff, 0x3f][..],
        ),
    ] {
        notes.extend_from_slice(&4u32.to_le_bytes());
        notes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        notes.extend_from_slice(&ty.to_le_bytes());
        notes.extend_from_slice(b"Xen\0");
        notes.extend_from_slice(desc);
    }
    let code_off = eh + 2 * ph;
    let code = [0x90u8; 64];
    let note_off = code_off + code.len();
    let mut v = Vec::new();
    v.extend_from_slice(b"\x7fELF");
    v.extend_from_slice(&[if elf64 { 2 } else { 1 }, 1, 1]);
    v.resize(16, 0);
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&(if elf64 { 62u16 } else { 3 }).to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    let word = |v: &mut Vec<u8>, x: u64| {
        if elf64 {
            v.extend_from_slice(&x.to_le_bytes())
        } else {
            v.extend_from_slice(&(x as u32).to_le_bytes())
        }
    };
    word(&mut v, 0x10_0010);
    word(&mut v, eh as u64);
    word(&mut v, 0);
    v.extend_from_slice(&0u32.to_le_bytes());
    for x in [eh as u16, ph as u16, 2, 0, 0, 0] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    for (ty, off, addr, filesz, memsz) in [
        (1u32, code_off, 0x10_0000u64, code.len(), 0x3000usize),
        (4, note_off, 0, notes.len(), 0),
    ] {
        v.extend_from_slice(&ty.to_le_bytes());
        if elf64 {
            v.extend_from_slice(&5u32.to_le_bytes());
        }
        word(&mut v, off as u64);
        word(&mut v, addr);
        word(&mut v, addr);
        word(&mut v, filesz as u64);
        word(&mut v, memsz as u64);
        if !elf64 {
            v.extend_from_slice(&5u32.to_le_bytes());
        }
        word(&mut v, 4);
    }
    v.extend_from_slice(&code);
    v.extend_from_slice(&notes);
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let image = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        // Patch the template: (offset, byte) pairs.
        let mut t = template(mode & 2 != 0);
        for p in rest.chunks_exact(2) {
            let at = usize::from(p[0]) % t.len();
            t[at] = p[1];
        }
        t
    };
    let initrd = [0x42u8; 5000];
    let modules = [Module {
        data: &initrd,
        cmdline: Some("initrd"),
    }];
    let cfg = GuestConfig {
        mem_bytes: if mode & 4 != 0 { 4 << 20 } else { MEM },
        cmdline: "console=hvc0",
        modules: &modules,
        acpi: None,
        privileged: mode & 8 != 0,
        direct_ram: None,
    };
    let _ = guest_loader::parse(&image);
    let mut mem = VecGuestMemory::for_ram(cfg.mem_bytes);
    if let Ok(g) = load(&image, &cfg, &mut mem) {
        let regions = g.plan.regions();
        for (i, (_, a)) in regions.iter().enumerate() {
            for (_, b) in &regions[i + 1..] {
                assert!(!a.overlaps(b));
            }
        }
        let k = g.plan.kernel;
        assert!((k.start..k.end).contains(&u64::from(g.plan.entry)));
        assert!(k.end <= cfg.mem_bytes);
    }
});

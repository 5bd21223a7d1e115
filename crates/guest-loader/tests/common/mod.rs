//! A tiny ELF builder for tests, and readers of what the loader wrote.
#![allow(dead_code)]

use guest_loader::GuestMemory;
use xen_abi::start_info::{HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo};
use zerocopy::FromBytes;

pub const PT_LOAD: u32 = 1;
pub const PT_NOTE: u32 = 4;

/// One program header and its bytes. `offset`/`filesz` override the
/// builder's choice (to make hostile headers).
#[derive(Clone, Debug, Default)]
pub struct Seg {
    pub p_type: u32,
    pub vaddr: u64,
    pub paddr: u64,
    pub data: Vec<u8>,
    pub memsz: u64,
    pub flags: u32,
    pub align: u64,
    pub offset: Option<u64>,
    pub filesz: Option<u64>,
}

/// A loadable segment holding `data` and `bss` zero bytes after it.
pub fn pt_load(paddr: u64, data: &[u8], bss: u64) -> Seg {
    Seg {
        p_type: PT_LOAD,
        vaddr: paddr,
        paddr,
        data: data.to_vec(),
        memsz: data.len() as u64 + bss,
        flags: 5,
        align: 0x1000,
        ..Seg::default()
    }
}

/// A PT_NOTE segment with vaddr 0 / memsz 0, as some images have.
pub fn notes(notes: &[Vec<u8>]) -> Seg {
    Seg {
        p_type: PT_NOTE,
        data: notes.concat(),
        align: 4,
        ..Seg::default()
    }
}

/// One ELF note of owner `name`.
pub fn note_of(name: &[u8], ty: u32, desc: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
    v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    v.extend_from_slice(&ty.to_le_bytes());
    v.extend_from_slice(name);
    v.push(0);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v.extend_from_slice(desc);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

/// A Xen note.
pub fn xen_note(ty: u32, desc: &[u8]) -> Vec<u8> {
    note_of(b"Xen", ty, desc)
}

/// PHYS32_ENTRY as 4 bytes.
pub fn entry4(entry: u32) -> Vec<u8> {
    xen_note(18, &entry.to_le_bytes())
}

/// PHYS32_ENTRY as 8 bytes (as Linux emits it).
pub fn entry8(entry: u32) -> Vec<u8> {
    xen_note(18, &u64::from(entry).to_le_bytes())
}

/// PHYS32_RELOC (align, min, max).
pub fn reloc(align: u32, min: u32, max: u32) -> Vec<u8> {
    let mut d = Vec::new();
    for v in [align, min, max] {
        d.extend_from_slice(&v.to_le_bytes());
    }
    xen_note(19, &d)
}

/// Builds an ELF32 (`!elf64`) or ELF64 image: header, program headers,
/// then each segment's bytes 16-aligned.
pub fn build(elf64: bool, segs: &[Seg]) -> Vec<u8> {
    let (ehsize, phentsize) = if elf64 { (64usize, 56usize) } else { (52, 32) };
    let mut data_off = ehsize + phentsize * segs.len();
    let mut body = Vec::new();
    let mut offsets = Vec::new();
    for s in segs {
        data_off = data_off.next_multiple_of(16);
        while body.len() + ehsize + phentsize * segs.len() < data_off {
            body.push(0);
        }
        offsets.push(data_off as u64);
        body.extend_from_slice(&s.data);
        data_off += s.data.len();
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"\x7fELF");
    out.push(if elf64 { 2 } else { 1 });
    out.extend_from_slice(&[1, 1, 0]);
    out.resize(16, 0);
    let w16 = |o: &mut Vec<u8>, v: u16| o.extend_from_slice(&v.to_le_bytes());
    let w32 = |o: &mut Vec<u8>, v: u32| o.extend_from_slice(&v.to_le_bytes());
    let w64 = |o: &mut Vec<u8>, v: u64| o.extend_from_slice(&v.to_le_bytes());
    w16(&mut out, 2); // ET_EXEC
    w16(&mut out, if elf64 { 62 } else { 3 });
    w32(&mut out, 1);
    if elf64 {
        w64(&mut out, 0); // e_entry
        w64(&mut out, 64); // e_phoff
        w64(&mut out, 0); // e_shoff
    } else {
        w32(&mut out, 0);
        w32(&mut out, 52);
        w32(&mut out, 0);
    }
    w32(&mut out, 0); // e_flags
    w16(&mut out, ehsize as u16);
    w16(&mut out, phentsize as u16);
    w16(&mut out, segs.len() as u16);
    w16(&mut out, 0);
    w16(&mut out, 0);
    w16(&mut out, 0);
    assert_eq!(out.len(), ehsize);
    for (s, off) in segs.iter().zip(&offsets) {
        let offset = s.offset.unwrap_or(*off);
        let filesz = s.filesz.unwrap_or(s.data.len() as u64);
        if elf64 {
            w32(&mut out, s.p_type);
            w32(&mut out, s.flags);
            w64(&mut out, offset);
            w64(&mut out, s.vaddr);
            w64(&mut out, s.paddr);
            w64(&mut out, filesz);
            w64(&mut out, s.memsz);
            w64(&mut out, s.align);
        } else {
            w32(&mut out, s.p_type);
            w32(&mut out, offset as u32);
            w32(&mut out, s.vaddr as u32);
            w32(&mut out, s.paddr as u32);
            w32(&mut out, filesz as u32);
            w32(&mut out, s.memsz as u32);
            w32(&mut out, s.flags);
            w32(&mut out, s.align as u32);
        }
    }
    out.extend_from_slice(&body);
    out
}

/// A simple valid kernel: code at `paddr` (entry there + 0x10) with bss.
pub fn kernel(elf64: bool, paddr: u32, extra_notes: &[Vec<u8>]) -> Vec<u8> {
    let code: Vec<u8> = (0..0x3000u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut n = vec![entry8(paddr + 0x10)];
    n.extend_from_slice(extra_notes);
    build(elf64, &[pt_load(paddr.into(), &code, 0x2000), notes(&n)])
}

pub fn read_bytes(mem: &impl GuestMemory, gpa: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    mem.read(gpa, &mut v).unwrap();
    v
}

pub fn read_start_info(mem: &impl GuestMemory, gpa: u64) -> HvmStartInfo {
    HvmStartInfo::read_from_bytes(&read_bytes(mem, gpa, 56)).unwrap()
}

pub fn read_memmap(mem: &impl GuestMemory, si: &HvmStartInfo) -> Vec<HvmMemmapTableEntry> {
    let b = read_bytes(mem, si.memmap_paddr, u64::from(si.memmap_entries) * 24);
    b.chunks(24)
        .map(|c| HvmMemmapTableEntry::read_from_bytes(c).unwrap())
        .collect()
}

pub fn read_modlist(mem: &impl GuestMemory, si: &HvmStartInfo) -> Vec<HvmModlistEntry> {
    let b = read_bytes(mem, si.modlist_paddr, u64::from(si.nr_modules) * 32);
    b.chunks(32)
        .map(|c| HvmModlistEntry::read_from_bytes(c).unwrap())
        .collect()
}

/// Reads a NUL-terminated string (at most `max` bytes).
pub fn read_cstr(mem: &impl GuestMemory, gpa: u64, max: u64) -> Vec<u8> {
    let b = read_bytes(mem, gpa, max);
    let end = b.iter().position(|&c| c == 0).expect("NUL-terminated");
    b[..end].to_vec()
}

//! Loading a kernel versus copying its bytes by hand.
//!
//! - `guest_loader`: `guest_loader::load` of the image (parse, plan, copy
//!   each PT_LOAD, zero its bss, write the boot structures) into a
//!   512 MiB `VecGuestMemory`, reused across iterations;
//! - `plain_copy`: the floor: `copy_from_slice` of each PT_LOAD's file
//!   bytes into a flat host buffer at its p_paddr and `fill(0)` of its bss,
//!   with the segment table known in advance.
//!
//! The image is Debian's vmlinux from `target/linux/` (`cargo xtask
//! linux`) when present, else a synthetic 64 MB ELF (60 MB of file bytes,
//! 4 MB of bss) so the bench always measures something (set
//! `GUEST_LOADER_BENCH_SYNTHETIC=1` to force it). Goal: the loader
//! within 1.2x of the plain copy.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use guest_loader::{GuestConfig, VecGuestMemory, load, parse};

const MEM: u64 = 512 << 20;

fn synthetic() -> Vec<u8> {
    const FILE: usize = 60 << 20;
    const BSS: u64 = 4 << 20;
    const PADDR: u64 = 0x100_0000;
    let mut v = Vec::with_capacity(FILE + 0x1000);
    v.extend_from_slice(b"\x7fELF\x02\x01\x01");
    v.resize(16, 0);
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&62u16.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&PADDR.to_le_bytes()); // e_entry
    v.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    v.extend_from_slice(&0u64.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    for x in [64u16, 56, 2, 0, 0, 0] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    let note_off = 64 + 2 * 56;
    let data_off = 0x1000u64;
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes());
    note.extend_from_slice(&8u32.to_le_bytes());
    note.extend_from_slice(&18u32.to_le_bytes());
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&PADDR.to_le_bytes());
    for (ty, off, addr, filesz, memsz) in [
        (1u32, data_off, PADDR, FILE as u64, FILE as u64 + BSS),
        (4, note_off, 0, note.len() as u64, 0),
    ] {
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(&7u32.to_le_bytes());
        for x in [off, addr, addr, filesz, memsz, 0x1000] {
            v.extend_from_slice(&x.to_le_bytes());
        }
    }
    v.extend_from_slice(&note);
    v.resize(data_off as usize, 0);
    v.extend((0..FILE).map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8));
    v
}

fn image() -> (Vec<u8>, &'static str) {
    if std::env::var_os("GUEST_LOADER_BENCH_SYNTHETIC").is_some() {
        return (synthetic(), "synthetic_64mb");
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/linux/vmlinux");
    match std::fs::read(&path) {
        Ok(b) => (b, "debian_vmlinux"),
        Err(e) => {
            eprintln!(
                "note: {} missing ({e}); benchmarking a synthetic 64 MB ELF instead",
                path.display()
            );
            (synthetic(), "synthetic_64mb")
        }
    }
}

fn bench(c: &mut Criterion) {
    let (image, name) = image();
    let parsed = parse(&image).expect("bench image loads");
    let segs: Vec<(usize, usize, usize, usize)> = parsed
        .segments
        .iter()
        .map(|s| {
            (
                s.paddr as usize,
                s.offset as usize,
                s.filesz as usize,
                s.memsz as usize,
            )
        })
        .collect();
    let top = parsed.span().1 as usize;
    let file_bytes = parsed.file_bytes();
    drop(parsed);

    let mut g = c.benchmark_group(format!("load/{name}"));
    g.throughput(Throughput::Bytes(file_bytes));
    g.sample_size(20);

    let mut flat = vec![0u8; top];
    flat.fill(1); // touch every page once
    g.bench_function("plain_copy", |b| {
        b.iter(|| {
            for &(paddr, off, filesz, memsz) in &segs {
                flat[paddr..paddr + filesz].copy_from_slice(&image[off..off + filesz]);
                flat[paddr + filesz..paddr + memsz].fill(0);
            }
            black_box(&flat);
        })
    });
    drop(flat);

    let cfg = GuestConfig {
        mem_bytes: MEM,
        cmdline: "console=hvc0",
        ..GuestConfig::default()
    };
    let mut mem = VecGuestMemory::for_ram(MEM);
    load(&image, &cfg, &mut mem).expect("bench image loads");
    g.bench_function("guest_loader", |b| {
        b.iter(|| black_box(load(black_box(&image), &cfg, &mut mem).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

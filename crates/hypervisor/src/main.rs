//! # hypervisor: the bootable image
//!
//! The binary that a boot loader starts: `boot.rs` takes it from the
//! loader's 32-bit entry (Xen PVH note or Multiboot2) to [`hv_entry`] in long
//! mode; from there it brings up the console, reads what the loader handed
//! over and (as later issues land) runs hv-core on the SVM or VMX backend.
//! It only means something when built for `x86_64-unknown-none` (`cargo
//! xtask image`); a host build is a placeholder that says so, and the pure
//! logic lives in the library half of this crate, tested on the host.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod cpu;
#[cfg(target_os = "none")]
#[macro_use]
mod console;
#[cfg(target_os = "none")]
mod fatal;
#[cfg(target_os = "none")]
mod hostplat;
#[cfg(target_os = "none")]
mod input;
#[cfg(target_os = "none")]
mod ioapic;
#[cfg(target_os = "none")]
mod machine;
#[cfg(target_os = "none")]
mod memory;
#[cfg(target_os = "none")]
mod paging;
#[cfg(target_os = "none")]
mod platform;
#[cfg(target_os = "none")]
mod run;
#[cfg(target_os = "none")]
mod serial;
#[cfg(target_os = "none")]
mod smp;

#[cfg(target_os = "none")]
use hypervisor::bootinfo::{BootInfo, Module, Protocol, Region, RegionKind, Text};
#[cfg(target_os = "none")]
use hypervisor::cmdline::{Options, SelfTest, Unknown};

/// The first Rust code on the boot CPU, called by `boot.rs` in long mode with
/// the first 4 GiB identity-mapped.
#[cfg(target_os = "none")]
extern "C" fn hv_entry(protocol: u32, info: u64) -> ! {
    let entry_tsc = platform::rdtsc();
    console::init();
    // SAFETY: the boot CPU's tables are taken exactly once, here, before any
    // other CPU runs; they live for the rest of the machine's life.
    let bsp_tables = unsafe { &mut *core::ptr::addr_of_mut!(BSP_TABLES) };
    bsp_tables.load();
    let boot = match read_boot_info(protocol, info) {
        Ok(b) => b,
        Err(e) => {
            println!("(XEN) cannot read boot information: {e}");
            machine::stop(false)
        }
    };
    let opts = Options::parse(boot.cmdline.as_str(), |Unknown(w)| {
        println!("(XEN) ignoring unknown option `{w}`");
    });
    machine::set_exit_method(opts.exit);
    console::init_log(opts.log_level);
    // For `cargo xtask bench`: under QEMU's -icount the TSC counts
    // instructions since power-on.
    log::info!("BENCH hv_entry_tsc={entry_tsc}");

    log::info!(
        "hypervisor {} starting ({:?} boot)",
        env!("CARGO_PKG_VERSION"),
        boot.protocol
    );
    log::info!("command line: {:?}", boot.cmdline);
    let mut ram = 0u64;
    for r in boot.regions() {
        log::info!(
            " {:#014x} - {:#014x} {:?}",
            r.start,
            r.start.saturating_add(r.len),
            r.kind
        );
        if r.kind == RegionKind::Ram {
            ram = ram.saturating_add(r.len);
        }
    }
    log::info!("RAM: {} MiB", ram >> 20);
    for (i, m) in boot.modules().enumerate() {
        log::info!("module {i}: {:#x} +{:#x} {:?}", m.start, m.len, m.cmdline);
    }
    if let Err(e) = memory::init(&boot) {
        log::error!("memory: {e}");
        machine::stop(false);
    }
    if opts.selftest == SelfTest::ApStackOverflow {
        smp::overflow_last_ap_stack();
    }
    let apic = bring_up_cpus(boot.rsdp);
    log::debug!("TSC with every CPU up: {}", platform::rdtsc());
    if opts.selftest == SelfTest::InvalidOpcode {
        // SAFETY: deliberately raises #UD to check the exception report.
        unsafe { core::arch::asm!("ud2") };
    }
    run::start(&boot, apic, opts.local_exits)
}

/// Calibrates the TSC, and the local APIC's timer in the same window.
#[cfg(target_os = "none")]
fn calibrate(apic: &platform::LocalApic) {
    let tsc_hz = platform::calibrate_tsc(Some(apic));
    log::info!(
        "TSC: {}.{:03} MHz",
        tsc_hz / 1_000_000,
        (tsc_hz / 1000) % 1000
    );
    log::debug!("TSC at calibration end: {}", platform::rdtsc());
}

/// Reads the CPUs from ACPI, calibrates the clocks and starts the
/// application processors; returns
/// the boot CPU's local APIC.
#[cfg(target_os = "none")]
fn bring_up_cpus(rsdp: Option<u64>) -> platform::LocalApic {
    let topo = match platform::discover(rsdp) {
        Ok(t) => t,
        Err(e) => {
            log::warn!("ACPI: {e}; running on the boot CPU alone");
            let bsp = platform::LocalApic::enable(0xFEE0_0000);
            calibrate(&bsp);
            return bsp;
        }
    };
    let bsp = platform::LocalApic::enable(topo.lapic_base);
    platform::HOST_APIC.call_once(|| bsp);
    platform::mask_legacy_pic();
    calibrate(&bsp);
    log::info!("local APIC timer: {} ticks/ms", bsp.timer_per_ms());
    let me = bsp.id();
    match topo.ioapic {
        Some((base, gsi_base)) if base < boot::IDENTITY_MAPPED => {
            ioapic::init(base, gsi_base, &topo.overrides, me)
        }
        _ => log::warn!("ACPI: no usable IOAPIC; no pirqs for guests"),
    }
    log::info!(
        "ACPI: {} CPUs, local APIC at {:#x} ({:?}), boot CPU APIC id {me}",
        topo.cpus.len(),
        topo.lapic_base,
        bsp
    );
    let aps: alloc::vec::Vec<u32> = topo
        .cpus
        .iter()
        .map(|c| c.apic_id)
        .filter(|&id| id != me)
        .collect();
    smp::start_aps(&bsp, topo.lapic_base, &aps);
    log::info!(
        "{} CPUs online",
        smp::CPUS_ONLINE.load(core::sync::atomic::Ordering::SeqCst)
    );
    bsp
}

/// The boot CPU's GDT, TSS and exception stacks.
#[cfg(target_os = "none")]
static mut BSP_TABLES: cpu::CpuTables = cpu::CpuTables::new();

/// Reads the loader's hand-over through the identity map.
#[cfg(target_os = "none")]
fn read_boot_info(protocol: u32, info: u64) -> Result<BootInfo, &'static str> {
    match protocol {
        boot::BOOT_PVH => {
            BootInfo::from_pvh(info, read_loader_memory).map_err(|_| "bad hvm_start_info")
        }
        boot::BOOT_MULTIBOOT1 => {
            BootInfo::from_multiboot1(info, read_loader_memory).map_err(|e| match e {
                hypervisor::bootinfo::BootInfoError::Malformed(_) => {
                    "malformed Multiboot information (a module or memory-map entry)"
                }
                _ => "unreadable Multiboot information",
            })
        }
        boot::BOOT_MULTIBOOT2 => read_multiboot2(info),
        _ => Err("unknown boot protocol"),
    }
}

/// Copies loader memory at `at` into `buf` through the identity map; false
/// for anything outside it.
#[cfg(target_os = "none")]
fn read_loader_memory(at: u64, buf: &mut [u8]) -> bool {
    let Some(end) = at.checked_add(buf.len() as u64) else {
        return false;
    };
    if end > IDENTITY_MAPPED {
        return false;
    }
    // SAFETY: [at, end) lies in the identity-mapped first 4 GiB, which
    // boot.rs mapped; the loader's tables are plain memory that nobody
    // writes while we read them (one CPU runs).
    unsafe { core::ptr::copy_nonoverlapping(at as *const u8, buf.as_mut_ptr(), buf.len()) };
    true
}

#[cfg(target_os = "none")]
use boot::IDENTITY_MAPPED;

#[cfg(target_os = "none")]
fn read_multiboot2(info: u64) -> Result<BootInfo, &'static str> {
    use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};
    if info >= IDENTITY_MAPPED {
        return Err("Multiboot2 information above 4 GiB");
    }
    // SAFETY: the loader put a Multiboot2 information structure at `info`
    // (EAX held the Multiboot2 magic, checked in boot.rs); it lies in the
    // identity map and stays untouched while we hold the parsed view.
    let mbi = unsafe { BootInformation::load(info as *const BootInformationHeader) }
        .map_err(|_| "bad Multiboot2 information")?;
    let mut boot = BootInfo::new(Protocol::Multiboot2);
    if let Some(Ok(cmd)) = mbi.command_line_tag().map(|t| t.cmdline()) {
        boot.cmdline = Text::from_bytes(cmd.as_bytes());
    }
    if let Some(map) = mbi.memory_map_tag() {
        for a in map.memory_areas() {
            let kind = match a.typ() {
                MemoryAreaType::Available => RegionKind::Ram,
                MemoryAreaType::AcpiAvailable => RegionKind::Acpi,
                MemoryAreaType::ReservedHibernate => RegionKind::Nvs,
                _ => RegionKind::Reserved,
            };
            boot.push_region(Region {
                start: a.start_address(),
                len: a.size(),
                kind,
            });
        }
    }
    for m in mbi.module_tags() {
        let cmdline = m
            .cmdline()
            .map(|c| Text::from_bytes(c.as_bytes()))
            .unwrap_or(Text::EMPTY);
        boot.push_module(Module {
            start: u64::from(m.start_address()),
            len: u64::from(m.module_size()),
            cmdline,
        });
    }
    // The RSDP tags hold a copy of the RSDP after their 8-byte tag header.
    if let Some(rsdp) = mbi.rsdp_v2_tag() {
        boot.rsdp = Some(rsdp as *const _ as u64 + 8);
    } else if let Some(rsdp) = mbi.rsdp_v1_tag() {
        boot.rsdp = Some(rsdp as *const _ as u64 + 8);
    }
    Ok(boot)
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // Stops the other CPUs, then holds the console for the whole report.
    let mut c = fatal::begin();
    let cpu = cpu::this_cpu();
    match info.location() {
        Some(l) => c.line(format_args!(
            "(XEN) PANIC on CPU{cpu} at {}:{}:{}: {}",
            l.file(),
            l.line(),
            l.column(),
            info.message()
        )),
        None => c.line(format_args!("(XEN) PANIC on CPU{cpu}: {}", info.message())),
    }
    c.line(format_args!(
        "(XEN) the hypervisor stopped; `addr2line -e <image>` resolves addresses from a debugger"
    ));
    drop(c);
    machine::stop(false)
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the hypervisor runs on bare metal: build it with `cargo xtask image`");
    std::process::exit(2);
}

//! The named checks.

use crate::report::Report;
use core::fmt::Write;
use xen_abi::{HvmStartInfo, XEN_HVM_START_MAGIC_VALUE};
use zerocopy::FromBytes;

/// What the guest's command line asks for.
#[derive(Default)]
pub struct Options {
    /// `exit=isa-debug-exit`: end a bare QEMU run through port 0xf4.
    pub isa_debug_exit: bool,
    /// A Xen-compatible hypervisor answered: stop with SCHEDOP_shutdown.
    pub xen: bool,
}

/// Runs every check in order.
pub fn run_all<W: Write>(r: &mut Report<W>, start_info: u64) -> Options {
    r.note(format_args!(
        "pvh-test-guest: start_info at {start_info:#x}"
    ));
    r.check("start_info", check_start_info(start_info));
    let mut opts = Options::default();
    match xen_abi::guest::find_xen_cpuid_base() {
        Some(base) => {
            r.check("xen_cpuid", Ok(()));
            opts.xen = true;
            run_hypercall_checks(r, base);
        }
        None => r.check("xen_cpuid", Err(format_args!("no XenVMMXenVMM signature"))),
    }
    if let Some(si) = read_phys::<HvmStartInfo>(start_info)
        && let Some(line) = read_phys::<[u8; 256]>(si.cmdline_paddr)
    {
        let len = line.iter().position(|&b| b == 0).unwrap_or(line.len());
        let text = core::str::from_utf8(&line[..len]).unwrap_or("");
        opts.isa_debug_exit = text
            .split_ascii_whitespace()
            .any(|w| w == "exit=isa-debug-exit");
    }
    opts
}

/// The part of guest memory the boot code identity-maps.
const MAPPED: u64 = 1 << 30;

/// Reads a `T` from guest-physical memory through the identity map.
fn read_phys<T: FromBytes>(addr: u64) -> Option<T> {
    let len = core::mem::size_of::<T>();
    let end = addr.checked_add(len as u64)?;
    if addr == 0 || end > MAPPED {
        return None;
    }
    // SAFETY: [addr, end) is inside the identity-mapped first GiB (checked)
    // and not at address 0; nothing writes it while we read (one vCPU); the
    // bytes are copied out by `read_from_bytes` before the slice is dropped.
    let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, len) };
    T::read_from_bytes(bytes).ok()
}

fn check_start_info(pa: u64) -> Result<(), core::fmt::Arguments<'static>> {
    let si: HvmStartInfo = read_phys(pa).ok_or(format_args!("start_info not in mapped memory"))?;
    if si.magic != XEN_HVM_START_MAGIC_VALUE {
        return Err(format_args!("bad magic"));
    }
    if si.version > 1 {
        return Err(format_args!("unknown version"));
    }
    if si.cmdline_paddr != 0 && read_phys::<[u8; 64]>(si.cmdline_paddr).is_none() {
        return Err(format_args!("command line outside mapped memory"));
    }
    Ok(())
}

/// Checks that need the hypervisor to answer hypercalls.
fn run_hypercall_checks<W: Write>(r: &mut Report<W>, base: xen_abi::XenCpuidBase) {
    r.note(format_args!(
        "Xen CPUID base {:#x}, max leaf {:#x}",
        base.base, base.max_leaf
    ));
    let hc = xen_abi::guest::Hypercall::detect();
    r.check(
        "console_io",
        match hc.console_write(b"pvh-test-guest: hello through console_io\n") {
            Ok(_) => Ok(()),
            Err(_) => Err(format_args!("CONSOLEIO_write refused")),
        },
    );
    r.check(
        "xen_version",
        match hc.xen_version() {
            Ok(_) => Ok(()),
            Err(_) => Err(format_args!("XENVER_version refused")),
        },
    );
}

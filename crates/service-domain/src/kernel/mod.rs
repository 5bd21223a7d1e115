//! The bare-metal half: entry, memory, console and the event loop.

mod xen;

use core::fmt::Write;

use xen_abi::guest::Hypercall;
use xen_abi::start_info::{
    HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, XEN_HVM_START_MAGIC_VALUE,
};

use alloc::vec::Vec;
use pv_rings::RawMem;
use service_domain::blkback::{Blkback, MemDisk, xvd};
use service_domain::cmdline::Disk;
use service_domain::netback::{Netback, default_mac, format_mac};
use service_domain::{DomainChange, StoreService};

/// The block back end over the boot module's bytes.
type Blk = Blkback<MemDisk<&'static mut [u8]>, RawMem<'static>>;
/// The network back end and its switch.
type Net = Netback<RawMem<'static>>;

/// The stack. There is no guard page below it (one 2 MiB mapping covers
/// it and the page tables next to it), so it is sized with room to spare
/// and its lowest bytes carry a canary the event loop checks
/// ([`stack_intact`]): 64 KiB ran over into the page tables on the path
/// that reconnects a rebooted domain.
const STACK_SIZE: usize = 512 * 1024;
/// Bytes of canary at the bottom of the stack.
const CANARY_LEN: usize = 256;
/// The canary's byte.
const CANARY: u8 = 0xA5;
/// The heap: the store, its rings' buffers, everything the services own.
const HEAP_SIZE: usize = 16 * 1024 * 1024;

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18                              /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long svc_start
    .balign 4

    .section .rodata.svc_gdt, "a"
    .balign 16
svc_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF              /* 64-bit code */
    .quad 0x00CF92000000FFFF              /* data */
svc_gdt_end:
    .balign 4
    .word 0
svc_gdt_ptr:
    .word svc_gdt_end - svc_gdt - 1
    .long svc_gdt

    .section .text.entry, "ax"
    .code32
    .global svc_start
svc_start:
    cli
    cld
    mov esi, ebx                          /* hvm_start_info, kept in esi */
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    shr ecx, 2
    xor eax, eax
    rep stosd
    mov esp, offset {stack} + {stack_size} /* the PVH ABI gives no stack */

    /* PML4[0] -> PDPT, PDPT[0] -> PD, PD: 512 x 2 MiB = the first GiB. */
    mov eax, offset {pdpt}
    or eax, 3
    mov dword ptr [{pml4}], eax
    mov eax, offset {pd}
    or eax, 3
    mov dword ptr [{pdpt}], eax
    xor ecx, ecx
1:  mov eax, ecx
    shl eax, 21
    or eax, 0x83                          /* present, writable, 2 MiB */
    mov dword ptr [{pd} + ecx * 8], eax
    inc ecx
    cmp ecx, 512
    jb 1b

    mov eax, cr4
    or eax, 1 << 5                        /* PAE */
    mov cr4, eax
    mov eax, offset {pml4}
    mov cr3, eax
    mov ecx, 0xC0000080                   /* EFER.LME */
    rdmsr
    or eax, 1 << 8
    wrmsr
    mov eax, cr0
    or eax, 0x80000001                    /* PG, PE */
    mov cr0, eax
    lgdt [svc_gdt_ptr]
    push 0x08
    .byte 0x68
    .long svc_long_mode
    retf

    .code64
svc_long_mode:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov edi, esi
    mov rsp, offset {stack} + {stack_size}
    call {main}
2:  hlt
    jmp 2b
    "#,
    stack = sym STACK,
    stack_size = const STACK_SIZE,
    pml4 = sym PML4,
    pdpt = sym PDPT,
    pd = sym PD,
    main = sym svc_main,
);

#[repr(C, align(4096))]
struct Table([u64; 512]);

#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

#[repr(C, align(4096))]
struct HeapArea([u8; HEAP_SIZE]);

static mut PML4: Table = Table([0; 512]);
static mut PDPT: Table = Table([0; 512]);
static mut PD: Table = Table([0; 512]);
static mut STACK: Stack = Stack([0; STACK_SIZE]);
static mut HEAP: HeapArea = HeapArea([0; HEAP_SIZE]);

#[global_allocator]
static ALLOCATOR: linked_list_allocator::LockedHeap = linked_list_allocator::LockedHeap::empty();

/// The hypervisor's console (`CONSOLEIO_write`).
pub struct Console(pub Hypercall);

impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let _ = self.0.console_write(s.as_bytes());
        Ok(())
    }
}

/// Reads a value at a guest-physical address of the identity map.
///
/// # Safety
/// `pa` must be mapped (below 1 GiB), hold a `T` and stay unchanged.
unsafe fn read_phys<T: Copy>(pa: u64) -> T {
    // SAFETY: per the contract; unaligned reads are fine on x86.
    unsafe { core::ptr::read_unaligned(pa as *const T) }
}

/// The boot information the loader gave: the command line and the first
/// guest frame past the RAM of the memory map (holes there are free to map
/// other domains' pages at).
struct Boot {
    cmdline: alloc::string::String,
    hole_gfn: u64,
    /// The first boot module (our ramdisk): address and size.
    module: Option<(u64, u64)>,
}

fn read_boot(start_info: u64) -> Boot {
    let mut b = Boot {
        cmdline: alloc::string::String::new(),
        hole_gfn: 0,
        module: None,
    };
    if start_info == 0 || start_info >= 1 << 30 {
        return b;
    }
    // SAFETY: the loader put `hvm_start_info` at `start_info`, in RAM
    // below 1 GiB, and never changes it.
    let si: HvmStartInfo = unsafe { read_phys(start_info) };
    if si.magic != XEN_HVM_START_MAGIC_VALUE {
        return b;
    }
    if si.cmdline_paddr != 0 && si.cmdline_paddr < 1 << 30 {
        let mut bytes = alloc::vec::Vec::new();
        for i in 0..4096u64 {
            // SAFETY: the NUL-terminated command line the loader left,
            // read byte by byte up to its NUL (bounded).
            let c: u8 = unsafe { read_phys(si.cmdline_paddr + i) };
            if c == 0 {
                break;
            }
            bytes.push(c);
        }
        b.cmdline = alloc::string::String::from_utf8_lossy(&bytes).into_owned();
    }
    let mut end = 0u64;
    if si.version >= 1 && si.memmap_paddr != 0 && si.memmap_paddr < 1 << 30 {
        for i in 0..u64::from(si.memmap_entries.min(128)) {
            // SAFETY: the loader's memory map, `memmap_entries` entries.
            let e: HvmMemmapTableEntry = unsafe { read_phys(si.memmap_paddr + i * 24) };
            if e.r#type == 1 && e.addr < 1 << 30 {
                end = end.max(e.addr.saturating_add(e.size));
            }
        }
    }
    b.hole_gfn = end.div_ceil(4096);
    if si.nr_modules >= 1 && si.modlist_paddr != 0 && si.modlist_paddr < 1 << 30 {
        // SAFETY: the loader's module list, at least one entry.
        let m: HvmModlistEntry = unsafe { read_phys(si.modlist_paddr) };
        // Only a module inside our RAM and our identity map.
        if m.size > 0
            && m.paddr
                .checked_add(m.size)
                .is_some_and(|e| e <= end.min(1 << 30))
        {
            b.module = Some((m.paddr, m.size));
        }
    }
    b
}

/// The bytes of the boot module the `disk=` words name, one slice per
/// word (`None` for a range outside the module or overlapping an earlier
/// one).
fn boot_disks(boot: &Boot, disks: &[Disk]) -> Vec<Option<&'static mut [u8]>> {
    let mut taken: Vec<(u64, u64)> = Vec::new();
    disks
        .iter()
        .map(|d| {
            let (pa, size) = boot.module?;
            let (off, len) = d.range.unwrap_or((0, size));
            let end = off.checked_add(len)?;
            if len == 0 || end > size || taken.iter().any(|&(a, b)| off < b && a < end) {
                return None;
            }
            taken.push((off, end));
            let base = core::ptr::NonNull::new((pa + off) as *mut u8)?;
            let len = usize::try_from(len).ok()?;
            // SAFETY: the loader placed the module in our RAM below 1 GiB
            // (identity-mapped), outside the kernel image and the heap,
            // which are the only other users of our memory; the range is
            // inside it and overlaps no other range handed out (checked
            // above), and this is the one reference made to it, for the
            // rest of the run.
            Some(unsafe { core::slice::from_raw_parts_mut(base.as_ptr(), len) })
        })
        .collect()
}

/// Writes the canary at the bottom of the stack (far below the frames in
/// use this early).
fn set_canary() {
    let base = core::ptr::addr_of_mut!(STACK).cast::<u8>();
    for i in 0..CANARY_LEN {
        // SAFETY: the lowest CANARY_LEN bytes of our own stack, far below
        // any live frame (a few KiB are in use at this point); volatile so
        // the writes are not elided.
        unsafe { base.add(i).write_volatile(CANARY) };
    }
}

/// Whether the canary at the bottom of the stack is whole.
fn stack_intact() -> bool {
    let base = core::ptr::addr_of!(STACK).cast::<u8>();
    // SAFETY: reads of our own stack's lowest bytes, which no frame uses
    // unless the stack overflowed (which is what this detects).
    (0..CANARY_LEN).all(|i| unsafe { base.add(i).read_volatile() } == CANARY)
}

extern "C" fn svc_main(start_info: u64) -> ! {
    set_canary();
    // SAFETY: the heap area is ours alone, handed to the allocator once,
    // before anything allocates.
    unsafe {
        ALLOCATOR
            .lock()
            .init(core::ptr::addr_of_mut!(HEAP).cast::<u8>(), HEAP_SIZE)
    };
    let hc = Hypercall::detect();
    let mut con = Console(hc);
    let boot = read_boot(start_info);
    let opts = service_domain::cmdline::parse(&boot.cmdline);
    let _ = writeln!(con, "service-domain: up");
    let platform = match xen::XenPlatform::new(hc, boot.hole_gfn) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(con, "service-domain: no shared_info ({e}); stopping");
            stop(hc)
        }
    };
    let mut svc = StoreService::new(platform);
    let me = xen_abi::guest::own_domid();
    for d in opts.domains.iter().filter(|d| Some(d.domid) != me) {
        if let Err(e) = svc.add_domain(d.domid, &d.name) {
            let _ = writeln!(
                con,
                "service-domain: d{} ({}): not served: {e}",
                d.domid, d.name
            );
        }
    }
    let mut blk = Blk::new(me.unwrap_or(0));
    if let Some(on) = opts.blk_persistent {
        blk.set_persistent(on);
    }
    for (d, bytes) in opts.disks.iter().zip(boot_disks(&boot, &opts.disks)) {
        let fe = d.domid;
        match bytes.and_then(|b| MemDisk::new(b, 512, d.ro)) {
            Some(disk) => {
                let mib = disk.data().len() >> 20;
                if let Err(e) = blk.add_disk(&mut svc, fe, xvd(0), disk, "module") {
                    let _ = writeln!(con, "service-domain: d{fe} xvda: {e}");
                } else {
                    let _ = writeln!(
                        con,
                        "service-domain: d{fe} xvda: the boot module, {mib} MiB"
                    );
                }
            }
            None => {
                let _ = writeln!(
                    con,
                    "service-domain: disk={fe}: no boot module or a bad range"
                );
            }
        }
    }
    let mut net = Net::new(me.unwrap_or(0));
    net.set_split_event_channels(opts.net_split_events);
    let mut handles: Vec<(u16, u32)> = Vec::new();
    for v in &opts.vifs {
        let fe = v.domid;
        let handle = match handles.iter_mut().find(|(d, _)| *d == fe) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                handles.push((fe, 0));
                0
            }
        };
        let mac = v.mac.unwrap_or(default_mac(fe, handle));
        match net.add_vif(&mut svc, fe, handle, mac) {
            Ok(()) => {
                let _ = writeln!(
                    con,
                    "service-domain: d{fe} vif {handle}: {} on the switch",
                    format_mac(&mac)
                );
            }
            Err(e) => {
                let _ = writeln!(con, "service-domain: d{fe} vif {handle}: {e}");
            }
        }
    }
    for &d in &opts.shutdown {
        let _ = svc.request_shutdown(d, "poweroff");
    }
    if let Some(key) = &opts.shutdown_when {
        svc.shutdown_when(key);
    }
    let virq = match hc.evtchn_bind_virq(xen_abi::VIRQ_DOM_EXC, 0) {
        Ok(p) => Some(p),
        Err(e) => {
            let _ = writeln!(con, "service-domain: VIRQ_DOM_EXC: {e}");
            None
        }
    };
    let _ = writeln!(con, "service-domain: xenstore ready");
    event_loop(&mut svc, &mut blk, &mut net, virq)
}

/// Blocks until a port is pending, clears what is pending, then serves.
fn event_loop(
    svc: &mut StoreService<xen::XenPlatform>,
    blk: &mut Blk,
    net: &mut Net,
    virq: Option<u32>,
) -> ! {
    let mut more = serve(svc, blk, net);
    loop {
        let mut ports = svc.ports();
        ports.extend(blk.ports());
        ports.extend(net.ports());
        ports.extend(virq);
        if !more {
            let hc = svc.platform().hc();
            if ports.is_empty() {
                let _ = hc.sched_block();
            } else if let Err(e) = hc.sched_poll(&ports, 0) {
                let _ = writeln!(Console(hc), "service-domain: SCHEDOP_poll: {e}");
            }
        }
        let dom_exc = virq.is_some_and(|v| svc.platform().take_pending(v));
        for p in svc
            .ports()
            .into_iter()
            .chain(blk.ports())
            .chain(net.ports())
        {
            svc.platform().take_pending(p);
        }
        if dom_exc {
            for c in svc.domains_changed() {
                match c {
                    DomainChange::Released(d) => {
                        blk.domain_gone(svc, d);
                        net.domain_gone(svc, d);
                    }
                    DomainChange::Introduced(d) => {
                        blk.domain_back(svc, d);
                        net.domain_back(svc, d);
                    }
                }
            }
            if svc.all_down() {
                let mut con = Console(svc.platform().hc());
                for v in blk.vbds() {
                    let s = v.stats;
                    let _ = writeln!(
                        con,
                        "service-domain: blkback: d{} vbd {}: {} requests ({} errors), {} grant-copy calls for {} segments, {} segments through {} persistent grants",
                        v.frontend(),
                        v.devid(),
                        s.ok + s.errors,
                        s.errors,
                        s.copy_calls,
                        s.copy_segs,
                        s.persistent_segs,
                        s.persistent_maps
                    );
                }
                for v in net.vifs() {
                    let s = v.stats;
                    let _ = writeln!(
                        con,
                        "service-domain: netback: d{} vif {}: tx {} packets ({} refused), rx {} ({} dropped), events sent {} tx + {} rx",
                        v.frontend(),
                        v.handle(),
                        s.tx_packets,
                        s.tx_errors,
                        s.rx_packets,
                        s.rx_dropped,
                        s.tx_events,
                        s.rx_events
                    );
                }
                let _ = writeln!(
                    con,
                    "service-domain: every served domain has shut down; stopping"
                );
                stop(svc.platform().hc());
            }
        }
        more = serve(svc, blk, net);
        if !stack_intact() {
            panic!("the stack overflowed its {} KiB", STACK_SIZE / 1024);
        }
    }
}

/// One round of every service: the store, the back ends' states (after
/// the store: a front end's state change arrives there), their rings.
fn serve(svc: &mut StoreService<xen::XenPlatform>, blk: &mut Blk, net: &mut Net) -> bool {
    let mut more = svc.pump();
    blk.sync(svc);
    net.sync(svc);
    more |= blk.pump(svc);
    more |= net.pump(svc);
    // What the back end wrote (states) reaches the watchers.
    more |= svc.pump();
    svc.orders();
    more
}

fn stop(hc: Hypercall) -> ! {
    let _ = hc.sched_shutdown(xen_abi::sched::ShutdownReason::Poweroff);
    loop {
        // SAFETY: cli; hlt only stops this vCPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let hc = Hypercall::detect();
    let _ = writeln!(Console(hc), "service-domain: PANIC: {info}");
    let _ = hc.sched_shutdown(xen_abi::sched::ShutdownReason::Crash);
    loop {
        // SAFETY: cli; hlt only stops this vCPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

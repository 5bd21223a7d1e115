//! The bare-metal half: entry, memory, console and the event loop.

mod pci;
mod virtio;
mod xen;

use core::fmt::Write;

use xen_abi::guest::Hypercall;
use xen_abi::start_info::{
    HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, XEN_HVM_START_MAGIC_VALUE,
};

use alloc::vec::Vec;
use pv_rings::RawMem;
use service_domain::blkback::{Blkback, IoError, MemDisk, Storage, xvd};
use service_domain::cmdline::Disk;
use service_domain::netback::{Netback, default_mac, format_mac};
use service_domain::{DomainChange, StoreService};

/// A disk: the boot module's bytes, or the virtio-blk device.
enum AnyDisk {
    Module(MemDisk<&'static mut [u8]>),
    Virtio(virtio::VirtioDisk),
}

impl Storage for AnyDisk {
    fn sector_size(&self) -> u32 {
        match self {
            AnyDisk::Module(d) => d.sector_size(),
            AnyDisk::Virtio(d) => d.sector_size(),
        }
    }
    fn sectors(&self) -> u64 {
        match self {
            AnyDisk::Module(d) => d.sectors(),
            AnyDisk::Virtio(d) => d.sectors(),
        }
    }
    fn read_only(&self) -> bool {
        match self {
            AnyDisk::Module(d) => d.read_only(),
            AnyDisk::Virtio(d) => d.read_only(),
        }
    }
    fn bytes(&mut self) -> Option<&mut [u8]> {
        match self {
            AnyDisk::Module(d) => d.bytes(),
            AnyDisk::Virtio(d) => d.bytes(),
        }
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        match self {
            AnyDisk::Module(d) => d.read(offset, buf),
            AnyDisk::Virtio(d) => d.read(offset, buf),
        }
    }
    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        match self {
            AnyDisk::Module(d) => d.write(offset, buf),
            AnyDisk::Virtio(d) => d.write(offset, buf),
        }
    }
    fn flush(&mut self) -> Result<(), IoError> {
        match self {
            AnyDisk::Module(d) => d.flush(),
            AnyDisk::Virtio(d) => d.flush(),
        }
    }
    fn can_discard(&self) -> bool {
        match self {
            AnyDisk::Module(d) => d.can_discard(),
            AnyDisk::Virtio(d) => d.can_discard(),
        }
    }
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), IoError> {
        match self {
            AnyDisk::Module(d) => d.discard(offset, len),
            AnyDisk::Virtio(d) => d.discard(offset, len),
        }
    }
}

/// The block back end over the boot module's bytes or the virtio disk.
type Blk = Blkback<AnyDisk, RawMem<'static>>;
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

    /* PML4[0] -> PDPT, PDPT[0..4] -> the four PDs (contiguous),
       2048 x 2 MiB = the first 4 GiB, write-back (`uncache_mmio` makes
       the MMIO window uncached once the memory map is known). */
    mov eax, offset {pdpt}
    or eax, 3
    mov dword ptr [{pml4}], eax
    xor ecx, ecx
3:  mov eax, ecx
    shl eax, 12
    add eax, offset {pd}
    or eax, 3
    mov dword ptr [{pdpt} + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jb 3b
    xor ecx, ecx
1:  mov eax, ecx
    shl eax, 21
    or eax, 0x83                          /* present, writable, 2 MiB */
    mov dword ptr [{pd} + ecx * 8], eax
    inc ecx
    cmp ecx, 2048
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
/// The four page directories, one after the other (4 x 512 entries).
static mut PD: [Table; 4] = [const { Table([0; 512]) }; 4];
/// What the identity map covers.
const MAPPED: u64 = 4 << 30;
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
/// `pa` must be mapped (below 4 GiB), hold a `T` and stay unchanged.
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
    /// The memory map's RAM entries (address, size), the direct-mapped
    /// region among them.
    ram: Vec<(u64, u64)>,
}

fn read_boot(start_info: u64) -> Boot {
    let mut b = Boot {
        cmdline: alloc::string::String::new(),
        hole_gfn: 0,
        module: None,
        ram: Vec::new(),
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
            if e.r#type == 1 {
                b.ram.push((e.addr, e.size));
            }
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

/// Makes the 2 MiB pages of the identity map between 1 GiB and 4 GiB
/// that hold no RAM uncached (PCD | PWT): that is where firmware put the
/// BARs of the devices assigned to us. Below 1 GiB stays write-back: the
/// frames past our RAM there are where grants are mapped
/// (`XenPlatform`'s hole), and those are other domains' RAM.
fn uncache_mmio(ram: &[(u64, u64)]) {
    const PCD_PWT: u64 = 0x18;
    let pd = core::ptr::addr_of_mut!(PD).cast::<u64>();
    for i in 512..(MAPPED >> 21) as usize {
        let (a, len) = ((i as u64) << 21, 1u64 << 21);
        if ram
            .iter()
            .any(|&(b, l)| a < b.saturating_add(l) && b < a + len)
        {
            continue;
        }
        // SAFETY: entry `i` of the four contiguous page directories (2048
        // entries); it maps no RAM, so no Rust value lives behind it and
        // nothing has touched it yet; one vCPU.
        unsafe {
            let e = pd.add(i);
            e.write_volatile(e.read_volatile() | PCD_PWT);
        }
    }
    // SAFETY: reloading CR3 with its own value flushes the TLB so the new
    // attributes take effect; the tables are unchanged otherwise.
    unsafe {
        core::arch::asm!(
            "mov {t}, cr3",
            "mov cr3, {t}",
            t = out(reg) _,
            options(nostack, preserves_flags)
        );
    }
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
    uncache_mmio(&boot.ram);
    let mut devs = virtio::probe(hc, opts.directmap, &opts.pci, &boot.ram);
    let mut blk = Blk::new(me.unwrap_or(0));
    if let Some(on) = opts.blk_persistent {
        blk.set_persistent(on);
    }
    if let Some(fe) = opts.virtio_disk {
        match devs.disk.take() {
            Some(disk) => {
                let mib = disk.mib();
                match blk.add_disk(&mut svc, fe, xvd(0), AnyDisk::Virtio(disk), "virtio-blk") {
                    Ok(()) => {
                        let _ = writeln!(con, "service-domain: d{fe} xvda: virtio-blk, {mib} MiB");
                    }
                    Err(e) => {
                        let _ = writeln!(con, "service-domain: d{fe} xvda: {e}");
                    }
                }
            }
            None => {
                let _ = writeln!(con, "service-domain: vdisk={fe}: no virtio-blk device");
            }
        }
    }
    for (d, bytes) in opts.disks.iter().zip(boot_disks(&boot, &opts.disks)) {
        let fe = d.domid;
        match bytes.and_then(|b| MemDisk::new(b, 512, d.ro)) {
            Some(disk) => {
                let mib = disk.data().len() >> 20;
                if let Err(e) = blk.add_disk(&mut svc, fe, xvd(0), AnyDisk::Module(disk), "module")
                {
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
    if let Some(up) = devs.uplink.take() {
        net.set_uplink(alloc::boxed::Box::new(up));
    }
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
    event_loop(&mut svc, &mut blk, &mut net, virq, &devs)
}

/// How long the event loop sleeps when a device has no interrupt and must
/// be polled.
const POLL_NS: u64 = 1_000_000;

/// Blocks until a port is pending, clears what is pending, then serves.
fn event_loop(
    svc: &mut StoreService<xen::XenPlatform>,
    blk: &mut Blk,
    net: &mut Net,
    virq: Option<u32>,
    devs: &virtio::Devices,
) -> ! {
    let mut more = serve(svc, blk, net);
    loop {
        let mut ports = svc.ports();
        ports.extend(blk.ports());
        ports.extend(net.ports());
        ports.extend(virq);
        ports.extend(devs.irqs.iter().filter_map(|d| d.pirq).map(|p| p.port));
        if !more {
            let hc = svc.platform().hc();
            // A device without an interrupt is looked at every POLL_NS.
            let timeout = if devs.poll {
                hc.hvm_get_time().map_or(0, |t| t + POLL_NS)
            } else {
                0
            };
            if ports.is_empty() && timeout == 0 {
                let _ = hc.sched_block();
            } else if let Err(e) = hc.sched_poll(&ports, timeout) {
                let _ = writeln!(Console(hc), "service-domain: SCHEDOP_poll: {e}");
            }
        }
        for d in &devs.irqs {
            if let Some(p) = d.pirq
                && svc.platform().take_pending(p.port)
            {
                d.handle(svc.platform().hc());
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
                if net.uplink_attached() {
                    let s = net.uplink_stats();
                    let _ = writeln!(
                        con,
                        "service-domain: netback: uplink: {} frames out ({} dropped), {} in",
                        s.tx_frames, s.tx_dropped, s.rx_frames
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

//! The named checks, in the order they run:
//!
//! | check | what it proves |
//! |---|---|
//! | `start_info` | magic, version 1 with a memory map with RAM (or version 0 without one, as Xen gives its PVH dom0), a readable command line, an RSDP |
//! | `xen_cpuid` | the Xen leaves: signature, version, hypercall MSR (base+2), vCPU id and domid flags (base+4) |
//! | `console_io` | `CONSOLEIO_write` |
//! | `xen_version` | `XENVER_version` agrees with CPUID; `XENVER_get_features` has bits 2, 8, 9 |
//! | `memory_map` | `XENMEM_memory_map` returns the start_info map |
//! | `shared_info` | `add_to_physmap` puts shared_info over one of our RAM pages; vcpu_info[0] reads sanely through it |
//! | `register_vcpu_info` | `VCPUOP_register_vcpu_info` copies vcpu_info to our page and events land there |
//! | `upcall_self_event` | an IPI port to ourselves raises the callback vector 0xF3; the handler clears the pending state |
//! | `hostile_efault` | bad guest pointers give `-EFAULT` |
//! | `hostile_enosys` | unknown hypercall numbers give `-ENOSYS` |
//! | `hostile_ring3_eperm` | a hypercall from CPL 3 gives `-EPERM` |
//! | `singleshot_timer` | `VCPUOP_set_singleshot_timer` 1 ms ahead raises `VIRQ_TIMER` |
//! | `timer_while_spinning` | 20 timers, each 1 ms ahead, reach a vCPU spinning with interrupts on and no exits (only the hypervisor's host timer can take it out of guest mode) |
//! | `block_timer_wakeup` | `SCHEDOP_block` with nothing pending sleeps until the timer |
//! | `block_woken_by_event` | a masked event does not end `SCHEDOP_block`, the timer's does; `EVTCHNOP_unmask` delivers the masked one |
//! | `poll_timeout` | `SCHEDOP_poll` on a quiet port returns at its timeout |
//! | `pvclock_monotonic` | pvclock system time never goes backwards and advances |
//! | `grant_self` | a grant of one of our pages, mapped by ourselves at another frame, shows its contents |
//! | `unbacked_mmio` | loads from unbacked guest-physical addresses (0xFED00000, the top of the first GiB) give all-ones, stores are dropped, flags and registers as on hardware ([`mmio`]) |
//! | `cr4_unoffered_gp` | setting a CR4 bit CPUID does not offer (UMIP, PKE, LA57, VMXE, OSXSAVE, whichever are absent) raises `#GP(0)` at the `MOV CR4`, CR4 unchanged; the kernel goes on ([`cregs`]) |
//! | `cr0_invalid_gp` | CR0.NW without CD, and a bit in 63:32, raise `#GP(0)` at the `MOV CR0` |
//! | `efer_unoffered_gp` | a reserved EFER bit, SVME (SVM not offered) and clearing LME with paging on raise `#GP(0)` at the `WRMSR` |
//! | `xcr0_invalid` | without XSAVE offered, `XSETBV` is `#UD` and CR4.OSXSAVE `#GP(0)`; with it, XCR0 without x87, AVX without SSE, an unoffered component and XCR1 are `#GP(0)` |
//! | `apic_modes` | IA32_APIC_BASE: x2APIC -> xAPIC and disabled -> x2APIC are `#GP`, x2APIC -> disabled -> xAPIC -> x2APIC works; in xAPIC mode the ID at 0xFEE00020 matches the x2APIC ID and the x2APIC MSRs are `#GP` ([`apic`]) |
//!
//! `role=xs-client`, `role=xs-hostile` and `role=xs-bench` add the
//! xenstore checks of [`xenstore`] after them (a raw client over the
//! ring page, hostile rings, the privileged calls refused).
//!
//! `role=ping` and `role=pong` add `interdomain_ping` / `interdomain_pong`
//! after them, then the grants between the two of [`grants`]
//! (`grant_shared`, `grant_copy` and `hostile_map_without_grant` on ping,
//! `grant_shared` on pong). `role=bench` and `role=bench-pong` add the
//! figures of [`bench`] after them (checks `bench` and `bench_pong`).
//!
//! A check whose feature is missing fails with the reason; checks that
//! could wait forever are bounded by spin counts or system-time deadlines.
//! Without a Xen CPUID signature only the first two run.

// Failure reasons are formatted into a fixed buffer: this kernel has no
// heap to box them, and they only travel one call up.
#![allow(
    clippy::result_large_err,
    reason = "no heap; the reason buffer lives on the stack"
)]

use core::fmt::{self, Write};

use xen_abi::guest::{Hypercall, HypercallInsn};
use xen_abi::*;
use zerocopy::FromBytes;

use crate::cpu;
use crate::events::{self, Page};
use crate::report::Report;

/// What the guest's command line asks for.
#[derive(Default)]
pub struct Options {
    /// `exit=isa-debug-exit`: end a bare QEMU run through port 0xf4.
    pub isa_debug_exit: bool,
    /// A Xen-compatible hypervisor answered: stop with SCHEDOP_shutdown.
    pub xen: bool,
    /// `role=...`: what this domain does in a multi-domain test.
    pub role: Role,
    /// `peer=N`: the other domain of a ping-pong (default: 2 for ping,
    /// 1 for pong, the launch plan's order).
    pub peer: Option<u16>,
    /// `kind=K`: how `role=xs-hostile` breaks the xenstore protocol.
    pub kind: &'static str,
    /// `wait=A,B,..`: the domains `role=xs-client` waits for.
    pub wait: [u16; xenstore::MAX_WAIT],
    /// How many of `wait` are set.
    pub nwait: usize,
    /// `xsname=N`: the name `role=xs-client` expects in its `name` node.
    pub xsname: Option<&'static str>,
    /// `skip=cr0-nw`: leave out the CR0.NW-without-CD write of
    /// `cr0_invalid_gp`, which crashes the domain on Xen 4.17 under SVM
    /// (docs/xen-differences.md): the differential run on Xen sets it to
    /// reach the checks after it.
    pub skip_cr0_nw: bool,
    /// `ip=A.B.C.D`: the address `role=net-peer` answers for.
    pub ip: Option<[u8; 4]>,
    /// `calls=N`: how many `xen_version` calls `role=bench` times (the
    /// SMP figure wants a loop long enough for two domains to overlap).
    pub calls: Option<u64>,
    /// `dev=`, `bar=`, `io=`, `gsi=`: for the PCI roles.
    pub pci: pci::PciOptions,
}

/// The guest's part in a multi-domain test (`role=` on its command line).
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// No role: run the checks and stop.
    #[default]
    Solo,
    /// `role=ping`: binds to the port its peer offers and sends pings.
    Ping,
    /// `role=pong`: offers an unbound port to its peer and answers pings.
    Pong,
    /// `role=crash`: run the checks, then triple-fault on purpose.
    Crash,
    /// `role=bench`: after the checks, time hypercalls and (with `peer=`)
    /// event round trips with a `bench-pong` peer (see [`bench`]).
    Bench,
    /// `role=bench-pong`: offers an unbound port to its peer and answers
    /// every event `role=bench` sends.
    BenchPong,
    /// `role=xs-client`: a well-behaved raw xenstore client (see
    /// [`xenstore`]).
    XsClient,
    /// `role=xs-hostile kind=K`: breaks the xenstore ring protocol.
    XsHostile,
    /// `role=xs-bench`: times xenstore round trips.
    XsBench,
    /// `role=blk-hostile [peer=B]`: a block front end (vbd 51712, back
    /// end in domain B, default 1) that connects, does honest I/O, then
    /// sends bad requests and finally breaks the ring indices.
    BlkHostile,
    /// `role=net-hostile [peer=B]`: a network front end (vif 0, back end
    /// in domain B, default 1) that connects, sends one good packet, then
    /// bad ones, never posts a receive buffer, and finally sends a packet
    /// cut short.
    NetHostile,
    /// `role=net-peer ip=A.B.C.D [peer=B]`: an honest network front end
    /// (vif 0, back end in domain B) that answers ARP and ICMP echo
    /// requests for its address until told to shut down.
    NetPeer,
    /// `role=pci-owner dev=DD bar=ADDR io=PORT`: the domain assigned PCI
    /// function 00:DD.0 (see [`pci`]).
    PciOwner,
    /// `role=pci-probe dev=DD bar=ADDR io=PORT gsi=G`: a domain assigned
    /// nothing, probing for that function (see [`pci`]).
    PciProbe,
    /// An unknown role (reported, otherwise ignored).
    Unknown,
}

impl Role {
    /// The word after `role=`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Solo => "solo",
            Role::Ping => "ping",
            Role::Pong => "pong",
            Role::Crash => "crash",
            Role::Bench => "bench",
            Role::BenchPong => "bench-pong",
            Role::XsClient => "xs-client",
            Role::XsHostile => "xs-hostile",
            Role::BlkHostile => "blk-hostile",
            Role::NetHostile => "net-hostile",
            Role::NetPeer => "net-peer",
            Role::XsBench => "xs-bench",
            Role::PciOwner => "pci-owner",
            Role::PciProbe => "pci-probe",
            Role::Unknown => "unknown",
        }
    }
}

/// A failure reason with values in it, formatted on the stack.
pub struct Why {
    buf: [u8; 200],
    len: usize,
}

impl Write for Why {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Truncation may split a UTF-8 sequence; the messages are ASCII.
        f.write_str(core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?"))
    }
}

fn why(args: fmt::Arguments<'_>) -> Why {
    let mut w = Why {
        buf: [0; 200],
        len: 0,
    };
    let _ = w.write_fmt(args);
    w
}

type Outcome = Result<(), Why>;

/// Returns a failure with a formatted reason.
macro_rules! fail {
    ($($t:tt)*) => {
        return Err(why(format_args!($($t)*)))
    };
}

mod apic;
mod bench;
mod cregs;
mod grants;
mod mmio;
mod pci;
mod xenstore;

fn record<W: Write>(r: &mut Report<W>, name: &str, o: Outcome) {
    match o {
        Ok(()) => r.check(name, Ok(())),
        Err(w) => r.check(name, Err(format_args!("{w}"))),
    }
}

/// The part of guest memory the boot code identity-maps.
const MAPPED: u64 = 1 << 30;
/// Most memory map entries compared.
const MAX_MAP: usize = 128;
/// An address no guest page table maps (canonical, below the kernel half).
const UNMAPPED_VA: u64 = 0x7fff_0000_0000;
/// Free frames past the memory map that the grant checks map at.
const HOLE_FRAMES: u64 = 2;
/// Spin rounds to wait for an upcall that should come at once.
const UPCALL_SPINS: u64 = 5_000_000;
/// Spin rounds bounding a wait for a timer, should the clock stall too.
const TIMER_SPINS: u64 = 200_000_000;

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

/// The NUL-terminated string at `addr` (at most 4 KiB), if mapped.
fn read_cstr(addr: u64) -> Option<&'static [u8]> {
    if addr == 0 {
        return None;
    }
    let mut len = 0u64;
    while len < 4096 {
        let b: [u8; 1] = read_phys(addr + len)?;
        if b[0] == 0 {
            // SAFETY: [addr, addr + len) was just read through the identity
            // map; the loader's command line is never written afterwards.
            return Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) });
        }
        len += 1;
    }
    None
}

/// The memory map from start_info (empty if absent or unreadable, and for
/// version 0, which has no map fields).
fn start_info_map(si: &HvmStartInfo, out: &mut [HvmMemmapTableEntry; MAX_MAP]) -> usize {
    if si.version < 1 {
        return 0;
    }
    let n = (si.memmap_entries as usize).min(MAX_MAP);
    for (i, e) in out.iter_mut().take(n).enumerate() {
        match read_phys::<HvmMemmapTableEntry>(si.memmap_paddr + i as u64 * 24) {
            Some(x) => *e = x,
            None => return i,
        }
    }
    n
}

/// What the checks learn and pass on.
struct Ctx {
    hc: Hypercall,
    insn: HypercallInsn,
    base: XenCpuidBase,
    start_info: Option<HvmStartInfo>,
    domid: Option<u16>,
    /// The first of [`HOLE_FRAMES`] frames below 1 GiB that no memory map
    /// entry covers (p2m holes).
    hole_gfn: Option<u64>,
    /// The callback vector is set and the handler ran.
    upcalls_work: bool,
    /// An IPI port bound to vCPU 0.
    ipi_port: Option<u32>,
    /// vCPU 1's ports once `vcpu_up` started it: the one it waits on and
    /// the one it answers on (see `bench::start_vcpu1`).
    ap_ports: Option<(u32, u32)>,
    /// The VIRQ_TIMER port.
    timer_port: Option<u32>,
    /// The singleshot timer fired.
    timer_works: bool,
    /// A port kept masked from the start (pong's offer), so the upcall
    /// handler never consumes what `SCHEDOP_poll` waits for.
    quiet_port: Option<u32>,
    /// Grant frame 0 is mapped at `GRANT_TABLE_PAGE`.
    gnttab_ready: bool,
    /// Ping's end of the interdomain channel, kept open after the
    /// ping-pong for the grant checks' handshake.
    peer_port: Option<u32>,
    /// More ports to mask as soon as shared_info is mapped (0: none): the
    /// xenstore roles' store port and offers.
    masked: [u32; 1 + xenstore::MAX_WAIT],
    /// See [`Options::skip_cr0_nw`].
    skip_cr0_nw: bool,
}

impl Ctx {
    /// Masks `port` once shared_info is mapped (see [`Ctx::masked`]).
    fn mask_early(&mut self, port: u32) {
        if let Some(slot) = self.masked.iter_mut().find(|p| **p == 0) {
            *slot = port;
        }
    }
}

/// Runs every check in order.
pub fn run_all<W: Write>(r: &mut Report<W>, start_info: u64) -> Options {
    r.note(format_args!(
        "pvh-test-guest: start_info at {start_info:#x}"
    ));
    // now_tsc: the TSC as this line is written, for a hypervisor that
    // stamps its console lines with its own TSC (Xen's
    // console_timestamps=raw): the guest's start on the host's clock.
    r.note(format_args!(
        "BENCH first_tsc={} now_tsc={}",
        crate::boot::first_tsc(),
        events::rdtsc()
    ));
    cpu::init();
    let si = read_phys::<HvmStartInfo>(start_info);
    let o = check_start_info(r, si.as_ref());
    record(r, "start_info", o);
    let mut opts = Options::default();
    if let Some(line) = si.as_ref().and_then(|s| read_cstr(s.cmdline_paddr)) {
        let text = core::str::from_utf8(line).unwrap_or("");
        for w in text.split_ascii_whitespace() {
            if w == "exit=isa-debug-exit" {
                opts.isa_debug_exit = true;
            } else if let Some(role) = w.strip_prefix("role=") {
                opts.role = match role {
                    "ping" => Role::Ping,
                    "pong" => Role::Pong,
                    "crash" => Role::Crash,
                    "bench" => Role::Bench,
                    "bench-pong" => Role::BenchPong,
                    "xs-client" => Role::XsClient,
                    "xs-hostile" => Role::XsHostile,
                    "xs-bench" => Role::XsBench,
                    "blk-hostile" => Role::BlkHostile,
                    "net-hostile" => Role::NetHostile,
                    "net-peer" => Role::NetPeer,
                    "pci-owner" => Role::PciOwner,
                    "pci-probe" => Role::PciProbe,
                    _ => Role::Unknown,
                };
            } else if let Some(peer) = w.strip_prefix("peer=") {
                opts.peer = peer.parse().ok();
            } else if let Some(kind) = w.strip_prefix("kind=") {
                opts.kind = kind;
            } else if w == "skip=cr0-nw" {
                opts.skip_cr0_nw = true;
            } else if let Some(ip) = w.strip_prefix("ip=") {
                opts.ip = parse_ipv4(ip);
            } else if let Some(n) = w.strip_prefix("calls=") {
                opts.calls = n.parse().ok().filter(|&n| n > 0);
            } else if let Some(v) = w.strip_prefix("dev=") {
                opts.pci.dev = u8::from_str_radix(v, 16).unwrap_or(0);
            } else if let Some(v) = w.strip_prefix("bar=") {
                opts.pci.bar = u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap_or(0);
            } else if let Some(v) = w.strip_prefix("io=") {
                opts.pci.io = u16::from_str_radix(v.trim_start_matches("0x"), 16).unwrap_or(0);
            } else if let Some(v) = w.strip_prefix("directmap=") {
                // ` directmap=0xBASE:0xSIZE`, appended by the hypervisor.
                let hex = |t: &str| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok();
                opts.pci.directmap = v
                    .split_once(':')
                    .and_then(|(b, s)| Some((hex(b)?, hex(s)?)));
            } else if let Some(v) = w.strip_prefix("gsi=") {
                opts.pci.gsi = v.parse().unwrap_or(-1);
            } else if let Some(name) = w.strip_prefix("xsname=") {
                opts.xsname = Some(name);
            } else if let Some(list) = w.strip_prefix("wait=") {
                for d in list.split(',').filter_map(|d| d.parse().ok()) {
                    if opts.nwait < opts.wait.len() {
                        opts.wait[opts.nwait] = d;
                        opts.nwait += 1;
                    }
                }
            }
        }
    }
    if opts.role != Role::Solo {
        r.note(format_args!("pvh-test-guest: role={}", opts.role.name()));
    }
    match xen_abi::guest::find_xen_cpuid_base() {
        Some(base) => {
            opts.xen = true;
            let mut ctx = Ctx {
                hc: Hypercall::detect(),
                insn: xen_abi::guest::detect_hypercall_insn(),
                base,
                start_info: si,
                domid: None,
                hole_gfn: None,
                upcalls_work: false,
                ipi_port: None,
                ap_ports: None,
                timer_port: None,
                timer_works: false,
                quiet_port: None,
                gnttab_ready: false,
                peer_port: None,
                masked: [0; 1 + xenstore::MAX_WAIT],
                skip_cr0_nw: opts.skip_cr0_nw,
            };
            let o = check_xen_cpuid(r, &mut ctx);
            record(r, "xen_cpuid", o);
            // Pong offers its port first, so ping finds it after its checks.
            let offers = matches!(opts.role, Role::Pong | Role::BenchPong);
            let peer = opts.peer.unwrap_or(if offers { 1 } else { 2 });
            let offered = offers.then(|| ctx.hc.evtchn_alloc_unbound(peer));
            ctx.quiet_port = offered.and_then(Result::ok);
            let xs = matches!(
                opts.role,
                Role::XsClient
                    | Role::XsHostile
                    | Role::XsBench
                    | Role::BlkHostile
                    | Role::NetHostile
                    | Role::NetPeer
            )
            .then(|| xenstore::early(&mut ctx, &opts));
            run_hypercall_checks(r, &mut ctx);
            match opts.role {
                Role::Ping => {
                    let o = ping(r, &mut ctx, peer);
                    let pinged = o.is_ok();
                    record(r, "interdomain_ping", o);
                    grants::ping_side(r, &mut ctx, peer, pinged);
                }
                Role::Pong => {
                    // The grants are in place before the first pong, so
                    // ping finds them once its ping-pong is over.
                    let shared = grants::offer(r, &mut ctx, peer);
                    let o = match offered {
                        Some(Ok(port)) => pong(r, &mut ctx, peer, port),
                        Some(Err(e)) => Err(why(format_args!(
                            "EVTCHNOP_alloc_unbound(remote d{peer}): {e}"
                        ))),
                        None => Ok(()),
                    };
                    let ponged = o.is_ok();
                    record(r, "interdomain_pong", o);
                    let port = offered.and_then(Result::ok).filter(|_| ponged);
                    let o = grants::pong_side(r, &mut ctx, peer, port, shared);
                    record(r, "grant_shared", o);
                }
                Role::Bench => {
                    let o = bench::bench(r, &mut ctx, opts.peer, opts.calls);
                    record(r, "bench", o);
                }
                Role::BenchPong => {
                    let o = match offered {
                        Some(Ok(port)) => bench::bench_pong(r, &mut ctx, peer, port),
                        Some(Err(e)) => Err(why(format_args!(
                            "EVTCHNOP_alloc_unbound(remote d{peer}): {e}"
                        ))),
                        None => Ok(()),
                    };
                    record(r, "bench_pong", o);
                }
                Role::XsClient => {
                    if let Some(e) = &xs {
                        xenstore::client(r, &mut ctx, &opts, e);
                    }
                }
                Role::XsHostile => {
                    if let Some(e) = &xs {
                        xenstore::hostile(r, &mut ctx, &opts, e);
                    }
                }
                Role::BlkHostile => {
                    if let Some(e) = &xs {
                        xenstore::blk_hostile(r, &mut ctx, e);
                    }
                }
                Role::NetHostile => {
                    if let Some(e) = &xs {
                        xenstore::net_hostile(r, &mut ctx, e);
                    }
                }
                Role::NetPeer => {
                    if let Some(e) = &xs {
                        xenstore::net_peer(r, &mut ctx, e, opts.ip);
                    }
                }
                Role::PciOwner => pci::owner(r, &mut ctx, &opts.pci),
                Role::PciProbe => pci::probe(r, &mut ctx, &opts.pci),
                Role::XsBench => {
                    if let Some(e) = &xs {
                        let o = xenstore::bench(r, &mut ctx, e);
                        record(r, "xenstore_bench", o);
                    }
                }
                _ => {}
            }
        }
        None => r.check("xen_cpuid", Err(format_args!("no XenVMMXenVMM signature"))),
    }
    opts
}

/// `A.B.C.D`.
fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    let mut a = [0u8; 4];
    let mut parts = s.split('.');
    for b in &mut a {
        *b = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(a)
}

fn check_start_info<W: Write>(r: &mut Report<W>, si: Option<&HvmStartInfo>) -> Outcome {
    let Some(si) = si else {
        fail!("start_info not in mapped memory");
    };
    r.note(format_args!(
        "start_info: version {} flags {:#x} modules {} cmdline {:#x} rsdp {:#x} memmap {:#x} x{}",
        si.version,
        si.flags,
        si.nr_modules,
        si.cmdline_paddr,
        si.rsdp_paddr,
        si.memmap_paddr,
        si.memmap_entries
    ));
    if si.magic != XEN_HVM_START_MAGIC_VALUE {
        fail!("bad magic {:#x}", si.magic);
    }
    // start_info.h: the memory map fields exist from version 1 on. Xen's
    // own dom0 builder (pvh_load_kernel in dom0_build.c) hands its PVH
    // dom0 version 0 with flags SIF_PRIVILEGED | SIF_INITDOMAIN and no map:
    // dom0 asks XENMEM_memory_map instead. Both forms are the ABI; a
    // version-0 structure's map fields are not read.
    match si.version {
        0 => {}
        1 => {
            if si.memmap_paddr == 0 || si.memmap_entries == 0 {
                fail!("no memory map (version 1 must carry one)");
            }
            let mut map = [HvmMemmapTableEntry::default(); MAX_MAP];
            let n = start_info_map(si, &mut map);
            if n < (si.memmap_entries as usize).min(MAX_MAP) {
                fail!("memory map at {:#x} not in mapped memory", si.memmap_paddr);
            }
            let ram = map[..n]
                .iter()
                .filter(|e| e.r#type == XEN_HVM_MEMMAP_TYPE_RAM && e.size != 0)
                .count();
            if ram == 0 {
                fail!("memory map has no RAM entry");
            }
        }
        v => fail!("version {v}, want 0 or 1"),
    }
    if si.cmdline_paddr == 0 {
        fail!("no command line");
    }
    let Some(line) = read_cstr(si.cmdline_paddr) else {
        fail!(
            "command line at {:#x} unreadable or unterminated",
            si.cmdline_paddr
        );
    };
    if core::str::from_utf8(line).is_err() {
        fail!("command line is not UTF-8");
    }
    if si.rsdp_paddr == 0 {
        fail!("rsdp_paddr is 0");
    }
    Ok(())
}

fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid(leaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

fn check_xen_cpuid<W: Write>(r: &mut Report<W>, ctx: &mut Ctx) -> Outcome {
    let b = ctx.base;
    r.note(format_args!(
        "Xen CPUID base {:#x}, max leaf {:#x}",
        b.base, b.max_leaf
    ));
    if b.max_leaf < b.base + XEN_CPUID_LEAF_HVM {
        fail!("max leaf {:#x} lacks base+4", b.max_leaf);
    }
    let ver = cpuid(b.base + XEN_CPUID_LEAF_VERSION)[0];
    if ver >> 16 == 0 {
        fail!("version leaf EAX {ver:#x}: major 0");
    }
    let [pages, msr, ..] = cpuid(b.base + XEN_CPUID_LEAF_HYPERCALL);
    if pages == 0 || msr == 0 {
        fail!("hypercall leaf: {pages} pages, MSR {msr:#x}");
    }
    let [flags, vcpu, domid, _] = cpuid(b.base + XEN_CPUID_LEAF_HVM);
    r.note(format_args!(
        "Xen {}.{}, hypercall MSR {msr:#x}, base+4 flags {flags:#x} vcpu {vcpu} domid {domid}",
        ver >> 16,
        ver & 0xFFFF
    ));
    if flags & XEN_HVM_CPUID_VCPU_ID_PRESENT == 0 {
        fail!("base+4 flags {flags:#x}: no vCPU id");
    }
    if flags & XEN_HVM_CPUID_DOMID_PRESENT == 0 {
        fail!("base+4 flags {flags:#x}: no domid");
    }
    if vcpu != 0 {
        fail!("vCPU id {vcpu} on the boot vCPU, want 0");
    }
    if domid >= u32::from(DOMID_FIRST_RESERVED) {
        fail!("domid {domid} is reserved");
    }
    ctx.domid = Some(domid as u16);
    Ok(())
}

/// Checks that need the hypervisor to answer hypercalls.
fn run_hypercall_checks<W: Write>(r: &mut Report<W>, ctx: &mut Ctx) {
    let o = match ctx
        .hc
        .console_write(b"pvh-test-guest: hello through console_io\n")
    {
        Ok(_) => Ok(()),
        Err(e) => Err(why(format_args!("CONSOLEIO_write: {e}"))),
    };
    record(r, "console_io", o);
    let o = check_xen_version(ctx);
    record(r, "xen_version", o);
    let o = check_memory_map(r, ctx);
    record(r, "memory_map", o);
    let o = check_shared_info(r, ctx);
    record(r, "shared_info", o);
    let o = check_register_vcpu_info(r, ctx);
    record(r, "register_vcpu_info", o);
    let o = check_upcall_self_event(ctx);
    record(r, "upcall_self_event", o);
    let o = check_expand_array(ctx);
    record(r, "expand_array", o);
    let o = check_hostile_efault(ctx);
    record(r, "hostile_efault", o);
    let o = check_hostile_enosys(ctx);
    record(r, "hostile_enosys", o);
    let o = check_hostile_ring3_eperm(ctx);
    record(r, "hostile_ring3_eperm", o);
    let o = check_singleshot_timer(r, ctx);
    record(r, "singleshot_timer", o);
    let o = check_timer_while_spinning(r, ctx);
    record(r, "timer_while_spinning", o);
    let o = check_block_timer_wakeup(r, ctx);
    record(r, "block_timer_wakeup", o);
    let o = check_block_woken_by_event(r, ctx);
    record(r, "block_woken_by_event", o);
    let o = check_poll_timeout(r, ctx);
    record(r, "poll_timeout", o);
    let o = check_pvclock_monotonic(r, ctx);
    record(r, "pvclock_monotonic", o);
    let o = check_grant_self(r, ctx);
    record(r, "grant_self", o);
    let o = mmio::check_unbacked_mmio(ctx);
    record(r, "unbacked_mmio", o);
    let o = cregs::check_cr4_unoffered_gp(r);
    record(r, "cr4_unoffered_gp", o);
    let o = cregs::check_cr0_invalid_gp(r, ctx.skip_cr0_nw);
    record(r, "cr0_invalid_gp", o);
    let o = cregs::check_efer_unoffered_gp();
    record(r, "efer_unoffered_gp", o);
    let o = cregs::check_xcr0_invalid(r);
    record(r, "xcr0_invalid", o);
    let o = apic::check_apic_modes(r);
    record(r, "apic_modes", o);
    // A second vCPU, when the domain has one (`VCPUOP_is_up` answers for
    // existing vCPUs only): started by VCPUOP_initialise/up.
    if ctx.hc.vcpu_is_up(1).is_ok() {
        let o = bench::start_vcpu1(ctx);
        record(r, "vcpu_up", o);
    }
    let spurious = cpu::SPURIOUS.load(core::sync::atomic::Ordering::SeqCst);
    if spurious != 0 {
        r.note(format_args!("{spurious} interrupts on unexpected vectors"));
    }
}

fn check_xen_version(ctx: &Ctx) -> Outcome {
    let (maj, min) = match ctx.hc.xen_version() {
        Ok(v) => v,
        Err(e) => fail!("XENVER_version: {e}"),
    };
    let leaf = cpuid(ctx.base.base + XEN_CPUID_LEAF_VERSION)[0];
    if (u32::from(maj) << 16 | u32::from(min)) != leaf {
        fail!("XENVER_version {maj}.{min} but CPUID says {leaf:#x}");
    }
    let f = match ctx.hc.xen_get_features(0) {
        Ok(f) => f,
        Err(e) => fail!("XENVER_get_features: {e}"),
    };
    for (bit, name) in [
        (XENFEAT_auto_translated_physmap, "auto_translated_physmap"),
        (XENFEAT_hvm_callback_vector, "hvm_callback_vector"),
        (XENFEAT_hvm_safe_pvclock, "hvm_safe_pvclock"),
    ] {
        if f & (1 << bit) == 0 {
            fail!("features {f:#x} lack {name} ({bit})");
        }
    }
    Ok(())
}

fn check_memory_map<W: Write>(r: &mut Report<W>, ctx: &mut Ctx) -> Outcome {
    let mut buf = [E820Entry::default(); MAX_MAP];
    let n = match ctx.hc.memory_map(&mut buf) {
        Ok(n) => n,
        Err(e) => fail!("XENMEM_memory_map: {e}"),
    };
    let map = &buf[..n];
    // A hole below 1 GiB, past the highest entry that starts there.
    let top = map
        .iter()
        .filter(|e| e.addr < MAPPED)
        .filter_map(|e| e.end())
        .max()
        .unwrap_or(MAPPED);
    let hole = top.div_ceil(4096) * 4096 + 16 * 4096;
    let hole_end = hole + HOLE_FRAMES * 4096;
    if hole_end <= MAPPED
        && map
            .iter()
            .all(|e| e.end().is_some_and(|end| end <= hole || e.addr >= hole_end))
    {
        ctx.hole_gfn = Some(hole >> 12);
    }
    r.note(format_args!(
        "memory_map: {n} entries, RAM top below 1 GiB {top:#x}"
    ));
    if !map.iter().any(|e| e.r#type == XEN_HVM_MEMMAP_TYPE_RAM) {
        fail!("no RAM entry");
    }
    let Some(si) = ctx.start_info.as_ref() else {
        fail!("no start_info to compare with");
    };
    if si.version == 0 {
        // Xen's PVH dom0 (see check_start_info): this hypercall is its
        // only map, nothing to compare with.
        r.note(format_args!(
            "memory_map: start_info version 0 carries no map (Xen's dom0 form)"
        ));
        return Ok(());
    }
    let mut want = [HvmMemmapTableEntry::default(); MAX_MAP];
    let m = start_info_map(si, &mut want);
    if m != n {
        fail!("{n} entries, start_info has {m}");
    }
    for (i, (a, b)) in map.iter().zip(&want[..m]).enumerate() {
        let (addr, size, ty) = (a.addr, a.size, a.r#type);
        if (addr, size, ty) != (b.addr, b.size, b.r#type) {
            fail!(
                "entry {i}: {addr:#x}+{size:#x} type {ty}, start_info {:#x}+{:#x} type {}",
                b.addr,
                b.size,
                b.r#type
            );
        }
    }
    Ok(())
}

static SHARED_INFO_PAGE: Page = Page::new();
static VCPU_INFO_PAGE: Page = Page::new();
static GRANT_TABLE_PAGE: Page = Page::new();
static GRANT_SOURCE_PAGE: Page = Page::new();
/// Where in its page the vcpu_info goes (not 0, to test the offset).
const VCPU_INFO_OFFSET: usize = 0x40;
/// A marker placed in vcpu_info.arch.pad before it moves.
const VCPU_INFO_MARKER: u64 = 0x5EED_CAFE_F00D_D00D;

fn check_shared_info<W: Write>(r: &mut Report<W>, ctx: &mut Ctx) -> Outcome {
    let page = &SHARED_INFO_PAGE;
    page.fill(0xA5);
    let mut xatp = XenAddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: XENMAPSPACE_shared_info,
        idx: 0,
        gpfn: page.gfn(),
    };
    // SAFETY: the frame is `SHARED_INFO_PAGE`, which holds no Rust value
    // and is from now on only reached through `events` with atomics.
    if let Err(e) = unsafe { ctx.hc.add_to_physmap(&mut xatp) } {
        fail!(
            "XENMEM_add_to_physmap(shared_info, gfn {:#x}): {e}",
            page.gfn()
        );
    }
    let unchanged = (0..3136).filter(|&i| page.byte(i) == 0xA5).count();
    if unchanged == 3136 {
        fail!("the frame still holds our pattern: shared_info is not there");
    }
    // SAFETY: the page is now the shared info page, for good.
    unsafe { events::set_shared_info(page.ptr()) };
    if let Some(p) = ctx.quiet_port {
        events::mask(p);
    }
    for &p in ctx.masked.iter().filter(|&&p| p != 0) {
        events::mask(p);
    }
    let vi = page.ptr();
    let Some(t) = events::read_time(vi) else {
        fail!("vcpu_info[0].time.version stays odd");
    };
    let pending = events::upcall_pending_at(vi).load(core::sync::atomic::Ordering::SeqCst);
    let sel = events::pending_sel_at(vi).load(core::sync::atomic::Ordering::SeqCst);
    let wc_version = u32::from_le_bytes([
        page.byte(3072),
        page.byte(3073),
        page.byte(3074),
        page.byte(3075),
    ]);
    r.note(format_args!(
        "shared_info at gfn {:#x}: vcpu_info[0] upcall_pending {pending} sel {sel:#x} time v{} system_time {} mul {:#x} shift {}; wc_version {wc_version}",
        page.gfn(),
        t.version,
        t.system_time,
        t.tsc_to_system_mul,
        t.tsc_shift
    ));
    if pending > 1 {
        fail!("vcpu_info[0].evtchn_upcall_pending = {pending}");
    }
    if wc_version & 1 != 0 {
        fail!("wc_version {wc_version} stays odd");
    }
    Ok(())
}

/// Writes a u64 at `p + off` of a shared page.
fn put_u64(p: *mut u8, off: usize, v: u64) {
    // SAFETY: callers pass pages from `events`/this module and in-page offsets.
    unsafe { p.add(off).cast::<u64>().write_volatile(v) }
}

/// Reads a u64 at `p + off` of a shared page.
fn get_u64(p: *mut u8, off: usize) -> u64 {
    // SAFETY: as for `put_u64`.
    unsafe { p.add(off).cast::<u64>().read_volatile() }
}

fn check_register_vcpu_info<W: Write>(r: &mut Report<W>, ctx: &mut Ctx) -> Outcome {
    use core::sync::atomic::Ordering::SeqCst;
    let Some(old) = events::shared_info() else {
        fail!("needs the shared_info mapping");
    };
    put_u64(old, 24, VCPU_INFO_MARKER);
    let page = &VCPU_INFO_PAGE;
    page.fill(0);
    // SAFETY: `VCPU_INFO_PAGE` holds no Rust value; from now on it is only
    // reached through `events` with atomics.
    if let Err(e) = unsafe {
        ctx.hc
            .vcpu_register_vcpu_info(0, page.gfn(), VCPU_INFO_OFFSET as u32)
    } {
        fail!("VCPUOP_register_vcpu_info: {e}");
    }
    // SAFETY: the page is page-aligned, so `+ 0x40` stays inside it.
    let new = unsafe { page.ptr().add(VCPU_INFO_OFFSET) };
    // SAFETY: the hypervisor now uses these 64 bytes as vcpu_info.
    unsafe { events::set_vcpu_info(new) };
    let pending = events::upcall_pending_at(new).load(SeqCst);
    let sel = events::pending_sel_at(new).load(SeqCst);
    r.note(format_args!(
        "register_vcpu_info: at {:#x}, upcall_pending {pending} sel {sel:#x}",
        new as u64
    ));
    if get_u64(new, 24) != VCPU_INFO_MARKER {
        fail!("the old contents were not copied to the new place");
    }
    // Now an event must land in the new copy only.
    for vi in [old, new] {
        events::upcall_pending_at(vi).store(0, SeqCst);
        events::pending_sel_at(vi).store(0, SeqCst);
    }
    let port = match ctx.hc.evtchn_bind_ipi(0) {
        Ok(p) => p,
        Err(e) => fail!("EVTCHNOP_bind_ipi: {e}"),
    };
    events::clear_pending(port);
    events::unmask(port);
    if let Err(e) = ctx.hc.evtchn_send(port) {
        fail!("EVTCHNOP_send({port}): {e}");
    }
    let (p_new, s_new) = (
        events::upcall_pending_at(new).load(SeqCst),
        events::pending_sel_at(new).load(SeqCst),
    );
    let (p_old, s_old) = (
        events::upcall_pending_at(old).load(SeqCst),
        events::pending_sel_at(old).load(SeqCst),
    );
    let pend = events::is_pending(port);
    events::clear_pending(port);
    for vi in [old, new] {
        events::upcall_pending_at(vi).store(0, SeqCst);
        events::pending_sel_at(vi).store(0, SeqCst);
    }
    let _ = ctx.hc.evtchn_close(port);
    if !pend {
        fail!("EVTCHNOP_send({port}) left no pending bit in shared_info");
    }
    if p_old != 0 || s_old != 0 {
        fail!("the event went to the old vcpu_info (pending {p_old} sel {s_old:#x})");
    }
    if p_new != 1 || s_new & (1 << (port / 64)) == 0 {
        fail!("the new vcpu_info shows upcall_pending {p_new} sel {s_new:#x} for port {port}");
    }
    Ok(())
}

/// A frame `check_expand_array` offers; nothing in it is a Rust value, so
/// a hypervisor that wrongly took it as FIFO event words breaks nothing.
static EXPAND_ARRAY_PAGE: events::Page = events::Page::new();

/// `EVTCHNOP_expand_array` before `EVTCHNOP_init_control` (2-level event
/// words, no FIFO control block), naming a good RAM frame: `-EOPNOTSUPP`,
/// Xen's answer (`evtchn_fifo_expand_array` looks for the FIFO ABI before
/// anything else), not `-EINVAL`. The 2-level events of the later checks
/// still arrive.
fn check_expand_array(ctx: &mut Ctx) -> Outcome {
    let mut a = xen_abi::event_channel::EvtchnExpandArray {
        array_gfn: EXPAND_ARRAY_PAGE.gfn(),
    };
    // SAFETY: the frame is a static page holding no Rust values.
    match unsafe { ctx.hc.event_channel_op(&mut a) } {
        Err(e) if e.get() == xen_abi::errno::EOPNOTSUPP => Ok(()),
        Err(e) => fail!("EVTCHNOP_expand_array before init_control: {e}, want -EOPNOTSUPP"),
        Ok(()) => fail!("EVTCHNOP_expand_array before init_control succeeded, want -EOPNOTSUPP"),
    }
}

fn check_upcall_self_event(ctx: &mut Ctx) -> Outcome {
    use core::sync::atomic::Ordering::SeqCst;
    let Some(vi) = events::vcpu_info() else {
        fail!("needs the shared_info mapping");
    };
    if let Err(e) = ctx.hc.hvm_set_param(
        HVM_PARAM_CALLBACK_IRQ,
        hvm_callback_vector(cpu::UPCALL_VECTOR),
    ) {
        fail!(
            "HVMOP_set_param(CALLBACK_IRQ, vector {:#x}): {e}",
            cpu::UPCALL_VECTOR
        );
    }
    let port = match ctx.hc.evtchn_bind_ipi(0) {
        Ok(p) => p,
        Err(e) => fail!("EVTCHNOP_bind_ipi: {e}"),
    };
    ctx.ipi_port = Some(port);
    events::clear_pending(port);
    events::unmask(port);
    events::forget_seen();
    let before = events::UPCALLS.load(SeqCst);
    if let Err(e) = ctx.hc.evtchn_send(port) {
        fail!("EVTCHNOP_send({port}): {e}");
    }
    if events::upcall_pending_at(vi).load(SeqCst) == 0 {
        fail!("EVTCHNOP_send({port}) did not set evtchn_upcall_pending");
    }
    let ran = events::wait_with_interrupts(|| events::UPCALLS.load(SeqCst) != before, UPCALL_SPINS);
    if !ran {
        fail!("no upcall on vector {:#x} after sti", cpu::UPCALL_VECTOR);
    }
    if !events::take_seen(port) {
        fail!("the upcall ran but port {port} was not pending");
    }
    if events::is_pending(port) || events::upcall_pending_at(vi).load(SeqCst) != 0 {
        fail!("pending state survived the handler");
    }
    ctx.upcalls_work = true;
    Ok(())
}

/// System time in ns: pvclock when published, else `HVMOP_get_time`.
fn now_ns(ctx: &Ctx) -> Option<u64> {
    match events::published_time() {
        Some(t) => Some(events::pvclock_ns(&t)),
        None => ctx.hc.hvm_get_time().ok(),
    }
}

/// Binds VIRQ_TIMER once.
fn timer_port(ctx: &mut Ctx) -> Result<u32, Errno> {
    if let Some(p) = ctx.timer_port {
        return Ok(p);
    }
    let p = ctx.hc.evtchn_bind_virq(VIRQ_TIMER, 0)?;
    events::clear_pending(p);
    events::unmask(p);
    ctx.timer_port = Some(p);
    Ok(p)
}

/// Arms the singleshot timer `ns` ahead as a guard against a sleep that
/// never ends; true if armed.
fn arm_guard(ctx: &mut Ctx, ns: u64) -> bool {
    if !ctx.timer_works || timer_port(ctx).is_err() {
        return false;
    }
    let Some(now) = now_ns(ctx) else {
        return false;
    };
    ctx.hc.vcpu_set_singleshot_timer(0, now + ns, 0).is_ok()
}

/// Lets pending upcalls run (interrupts on briefly).
fn drain_upcalls() {
    use core::sync::atomic::Ordering::SeqCst;
    let Some(vi) = events::vcpu_info() else {
        return;
    };
    events::wait_with_interrupts(
        || events::upcall_pending_at(vi).load(SeqCst) == 0,
        UPCALL_SPINS,
    );
}

/// How far ahead the block checks arm their timer. Long against the few
/// instructions between [`arm_and_block`]'s last look at the upcall flag
/// and `SCHEDOP_block`: on Xen, a timer that fires in between leaves the
/// vCPU asleep for good, and without icount the guest's clock is the
/// host's, so only a host that stops QEMU for this long right there can
/// make that happen (2 ms did, once, on a host running two builds and CI).
const BLOCK_TIMER_NS: u64 = 20_000_000;

/// Arms the singleshot timer `delay_ns` ahead and blocks
/// (`SCHEDOP_block`, interrupts off), returning the time it armed at and
/// the block's result. Xen counts a pending event as a reason not to
/// block only if the vCPU could take its interrupt now
/// (`hvm_local_events_need_delivery`), so a timer that fired before the
/// block (the guest held up for `delay_ns` between arming and blocking,
/// as a loaded TCG host does now and then) would leave the vCPU asleep
/// for good. So, as a guest must, this looks at the upcall flag right
/// before blocking: if the timer came already, it takes that upcall and
/// arms again (at most 4 times, each one noted).
fn arm_and_block<W: Write>(
    r: &mut Report<W>,
    ctx: &mut Ctx,
    vi: *mut u8,
    delay_ns: u64,
) -> Result<(u64, Result<(), xen_abi::errno::Errno>), Why> {
    use core::sync::atomic::Ordering::SeqCst;
    for attempt in 0..4 {
        let Some(t0) = now_ns(ctx) else {
            return Err(why(format_args!("no system time")));
        };
        if let Err(e) = ctx.hc.vcpu_set_singleshot_timer(0, t0 + delay_ns, 0) {
            return Err(why(format_args!("VCPUOP_set_singleshot_timer: {e}")));
        }
        if events::upcall_pending_at(vi).load(SeqCst) == 0 {
            return Ok((t0, ctx.hc.sched_block()));
        }
        r.note(format_args!(
            "the timer fired before SCHEDOP_block (attempt {attempt}): armed again"
        ));
        drain_upcalls();
    }
    Err(why(format_args!(
        "the {} us timer fired before SCHEDOP_block 4 times",
        delay_ns / 1000
    )))
}

/// An event that cannot be delivered (its port masked) does not end
/// `SCHEDOP_block`; the next deliverable one (the timer) does, and the
/// masked one is delivered once `EVTCHNOP_unmask` lifts the mask. (Blocking
/// with the upcall already pending and interrupts off is left out: Xen
/// sleeps there until something else kicks the vCPU, i.e. for ever;
/// docs/xen-differences.md.)
fn check_block_woken_by_event<W: Write>(r: &mut Report<W>, ctx: &mut Ctx) -> Outcome {
    use core::sync::atomic::Ordering::SeqCst;
    let (true, Some(tport), Some(ipi), Some(vi)) = (
        ctx.timer_works,
        ctx.timer_port,
        ctx.ipi_port,
        events::vcpu_info(),
    ) else {
        fail!("needs a working singleshot timer and an IPI port");
    };
    drain_upcalls();
    if events::upcall_pending_at(vi).load(SeqCst) != 0 {
        fail!("an upcall stays pending");
    }
    events::mask(ipi);
    if let Err(e) = ctx.hc.evtchn_send(ipi) {
        events::unmask(ipi);
        fail!("EVTCHNOP_send({ipi}): {e}");
    }
    let raised = events::upcall_pending_at(vi).load(SeqCst) != 0;
    if raised {
        events::unmask(ipi);
        fail!("a send on a masked port raised evtchn_upcall_pending");
    }
    let (t0, res) = match arm_and_block(r, ctx, vi, BLOCK_TIMER_NS) {
        Ok(x) => x,
        Err(e) => {
            events::unmask(ipi);
            return Err(e);
        }
    };
    let t1 = now_ns(ctx).unwrap_or(t0);
    let timer = events::is_pending(tport);
    let masked_still = events::is_pending(ipi);
    let unmasked = ctx.hc.evtchn_unmask(ipi);
    drain_upcalls();
    let seen = events::take_seen(ipi);
    events::take_seen(tport);
    if let Err(e) = res {
        fail!("SCHEDOP_block: {e}");
    }
    r.note(format_args!(
        "block_woken_by_event: woke after {} us",
        (t1 - t0) / 1000
    ));
    if raised {
        fail!("a send on a masked port raised evtchn_upcall_pending");
    }
    if t1 < t0 + BLOCK_TIMER_NS {
        fail!(
            "SCHEDOP_block returned after {} us for a masked event",
            (t1 - t0) / 1000
        );
    }
    if !timer {
        fail!("woke without the timer event");
    }
    if !masked_still {
        fail!("the masked port's event was lost");
    }
    if let Err(e) = unmasked {
        fail!("EVTCHNOP_unmask({ipi}): {e}");
    }
    if !seen {
        fail!("port {ipi} was not delivered after EVTCHNOP_unmask");
    }
    Ok(())
}

fn expect_errno(what: &str, got: i64, want: i32) -> Outcome {
    if got == -i64::from(want) {
        return Ok(());
    }
    let w = Errno::new(want)
        .map(|e| e.name().unwrap_or("?"))
        .unwrap_or("?");
    match Errno::from_ret(got) {
        Ok(v) => fail!("{what}: returned {v:#x}, want -{w}"),
        Err(e) => fail!("{what}: {e}, want -{w}"),
    }
}

fn check_hostile_efault(ctx: &mut Ctx) -> Outcome {
    let hc = &ctx.hc;
    // memory_map with a buffer nobody maps.
    let mut map = XenMemoryMap {
        nr_entries: 4,
        pad: 0,
        buffer: UNMAPPED_VA,
    };
    // SAFETY: the hypervisor may only write the struct (ours) and the
    // buffer, which is unmapped: no guest memory can change.
    let got = unsafe {
        hc.call(
            __HYPERVISOR_memory_op,
            [
                u64::from(XENMEM_memory_map),
                core::ptr::from_mut(&mut map) as u64,
                0,
                0,
                0,
            ],
        )
    };
    expect_errno("memory_map, buffer at 0x7fff00000000", got, EFAULT)?;
    // memory_map with the argument itself unmapped.
    // SAFETY: the argument is unmapped: nothing can be read or written.
    let got = unsafe {
        hc.call(
            __HYPERVISOR_memory_op,
            [u64::from(XENMEM_memory_map), UNMAPPED_VA, 0, 0, 0],
        )
    };
    expect_errno("memory_map, argument at 0x7fff00000000", got, EFAULT)?;
    // console_io reading from an unmapped address.
    // SAFETY: console_io write only reads the buffer.
    let got = unsafe {
        hc.call(
            __HYPERVISOR_console_io,
            [u64::from(CONSOLEIO_write), 16, UNMAPPED_VA, 0, 0],
        )
    };
    expect_errno("console_io, buffer at 0x7fff00000000", got, EFAULT)?;
    // console_io reading a page our tables map but no RAM backs.
    if let Some(gfn) = ctx.hole_gfn {
        // SAFETY: console_io write only reads the buffer.
        let got = unsafe {
            hc.call(
                __HYPERVISOR_console_io,
                [u64::from(CONSOLEIO_write), 16, gfn << 12, 0, 0],
            )
        };
        expect_errno("console_io, buffer in a p2m hole", got, EFAULT)?;
    }
    Ok(())
}

fn check_hostile_enosys(ctx: &mut Ctx) -> Outcome {
    for nr in [63u32, 0x7fff_ffff] {
        // SAFETY: no such hypercall: nothing happens.
        let got = unsafe { ctx.hc.call(nr, [0; 5]) };
        if got != -i64::from(ENOSYS) {
            fail!("hypercall {nr:#x} returned {got}, want -ENOSYS (-38)");
        }
    }
    Ok(())
}

fn check_hostile_ring3_eperm(ctx: &mut Ctx) -> Outcome {
    // XENVER_version (cmd 0 in RDI) would succeed at CPL 0.
    let rax = cpu::ring3_hypercall(ctx.insn, __HYPERVISOR_xen_version);
    if rax & 0xFFFF_0000_0000_0000 == cpu::RING3_FAULT {
        fail!("the ring-3 hypercall raised exception {}", rax & 0xFF);
    }
    expect_errno("xen_version from CPL 3", rax as i64, EPERM)
}

/// Arms the singleshot timer 1 ms ahead and waits for its VIRQ_TIMER
/// upcall on `port`, spinning with interrupts on and no exit (pvclock is
/// read from memory), for at most 2 s. Answers the system times it armed
/// at and saw the upcall at; the timer is stopped if it never came.
fn timer_1ms_ahead(ctx: &mut Ctx, port: u32) -> Result<(u64, u64), Why> {
    let Some(t0) = now_ns(ctx) else {
        fail!("no system time (pvclock unpublished, HVMOP_get_time refused)");
    };
    events::take_seen(port);
    if let Err(e) = ctx.hc.vcpu_set_singleshot_timer(0, t0 + 1_000_000, 0) {
        fail!("VCPUOP_set_singleshot_timer: {e}");
    }
    let deadline = t0 + 2_000_000_000;
    let mut late = false;
    let fired = events::wait_with_interrupts(
        || {
            if events::take_seen(port) {
                return true;
            }
            late = now_ns(ctx).is_none_or(|n| n > deadline);
            late
        },
        TIMER_SPINS,
    ) && !late;
    let t1 = now_ns(ctx).unwrap_or(t0);
    if !fired {
        let _ = ctx.hc.vcpu_stop_singleshot_timer(0);
        fail!("no VIRQ_TIMER upcall within 2 s of a timer 1 ms ahead");
    }
    if t1 < t0 + 1_000_000 {
        fail!("fired after {} ns, before its deadline", t1 - t0);
    }
    Ok((t0, t1))
}

fn check_singleshot_timer<W: Write>(r: &mut Report<W>, ctx: &mut Ctx) -> Outcome {
    if !ctx.upcalls_work {
        fail!("needs working upcalls (upcall_self_event)");
    }
    let port = match timer_port(ctx) {
        Ok(p) => p,
        Err(e) => fail!("EVTCHNOP_bind_virq(VIRQ_TIMER): {e}"),
    };
    let (t0, t1) = timer_1ms_ahead(ctx, port)?;
    r.note(format_args!(
        "singleshot_timer: VIRQ_TIMER port {port} after {} us",
        (t1 - t0) / 1000
    ));
    ctx.timer_works = true;
    Ok(())
}

/// How many timers `timer_while_spinning` waits for.
const SPIN_TIMERS: u64 = 20;

/// Singleshot timers reach a vCPU that never leaves guest mode of its own
/// accord: [`SPIN_TIMERS`] timers, each 1 ms ahead, each waited for by
/// spinning with interrupts on, with no hypercall or other exit between
/// arming it and its upcall (the clock is pvclock's, read from memory).
/// Only the hypervisor's own host timer can take the vCPU out of guest
/// mode to deliver them; one that resumed the vCPU with no host timer
/// armed would leave this spin without an upcall, as it left Linux
/// spinning in `try_to_generate_entropy`.
fn check_timer_while_spinning<W: Write>(r: &mut Report<W>, ctx: &mut Ctx) -> Outcome {
    if !ctx.timer_works {
        fail!("needs a working singleshot timer");
    }
    let port = match timer_port(ctx) {
        Ok(p) => p,
        Err(e) => fail!("EVTCHNOP_bind_virq(VIRQ_TIMER): {e}"),
    };
    let (mut latest, mut total) = (0, 0);
    for i in 0..SPIN_TIMERS {
        let (t0, t1) = match timer_1ms_ahead(ctx, port) {
            Ok(t) => t,
            Err(e) => fail!("timer {} of {SPIN_TIMERS}, spinning: {e}", i + 1),
        };
        latest = latest.max(t1 - t0 - 1_000_000);
        total += t1 - t0 - 1_000_000;
    }
    r.note(format_args!(
        "timer_while_spinning: {SPIN_TIMERS} timers 1 ms ahead, past their deadline by {} us on average, {} us at most",
        total / SPIN_TIMERS / 1000,
        latest / 1000
    ));
    Ok(())
}

fn check_block_timer_wakeup<W: Write>(r: &mut Report<W>, ctx: &mut Ctx) -> Outcome {
    use core::sync::atomic::Ordering::SeqCst;
    let (true, Some(port), Some(vi)) = (ctx.timer_works, ctx.timer_port, events::vcpu_info())
    else {
        fail!("needs a working singleshot timer");
    };
    drain_upcalls();
    if events::upcall_pending_at(vi).load(SeqCst) != 0 {
        fail!("an upcall stays pending");
    }
    let (t0, res) = arm_and_block(r, ctx, vi, BLOCK_TIMER_NS)?;
    let t1 = now_ns(ctx).unwrap_or(t0);
    let pending = events::is_pending(port);
    drain_upcalls();
    events::take_seen(port);
    if let Err(e) = res {
        fail!("SCHEDOP_block: {e}");
    }
    r.note(format_args!(
        "block_timer_wakeup: woke after {} us",
        (t1 - t0) / 1000
    ));
    if !pending {
        fail!("woke after {} us without the timer event", (t1 - t0) / 1000);
    }
    if t1 < t0 + BLOCK_TIMER_NS {
        fail!(
            "woke after {} us, before the {} us timer",
            (t1 - t0) / 1000,
            BLOCK_TIMER_NS / 1000
        );
    }
    Ok(())
}

fn check_poll_timeout<W: Write>(r: &mut Report<W>, ctx: &mut Ctx) -> Outcome {
    let (true, Some(tport), Some(ipi)) = (ctx.timer_works, ctx.timer_port, ctx.ipi_port) else {
        fail!("needs a working singleshot timer and an IPI port");
    };
    drain_upcalls();
    events::clear_pending(ipi);
    // The guard: the timer port is polled too, so a lost timeout ends
    // after 500 ms instead of never.
    if !arm_guard(ctx, 500_000_000) {
        fail!("cannot arm the guard timer");
    }
    let Some(t0) = now_ns(ctx) else {
        fail!("no system time");
    };
    let res = ctx.hc.sched_poll(&[ipi, tport], t0 + 3_000_000);
    let t1 = now_ns(ctx).unwrap_or(t0);
    let guard_fired = events::is_pending(tport);
    let _ = ctx.hc.vcpu_stop_singleshot_timer(0);
    drain_upcalls();
    events::take_seen(tport);
    if let Err(e) = res {
        fail!("SCHEDOP_poll: {e}");
    }
    r.note(format_args!(
        "poll_timeout: returned after {} us",
        (t1 - t0) / 1000
    ));
    if guard_fired {
        fail!("the 3 ms timeout did not end the poll (the guard timer did)");
    }
    if t1 < t0 + 3_000_000 {
        fail!(
            "returned after {} us, before the 3 ms timeout",
            (t1 - t0) / 1000
        );
    }
    Ok(())
}

fn check_pvclock_monotonic<W: Write>(r: &mut Report<W>, ctx: &mut Ctx) -> Outcome {
    let Some(vi) = events::vcpu_info() else {
        fail!("needs the shared_info mapping");
    };
    let Some(t) = events::read_time(vi) else {
        fail!("vcpu_info.time.version stays odd");
    };
    if t.version == 0 || t.tsc_to_system_mul == 0 {
        fail!(
            "pvclock not published (version {}, tsc_to_system_mul {})",
            t.version,
            t.tsc_to_system_mul
        );
    }
    let first = events::pvclock_ns(&t);
    let mut prev = first;
    for i in 0..20_000u32 {
        let Some(t) = events::read_time(vi) else {
            fail!("vcpu_info.time.version stays odd at sample {i}");
        };
        let now = events::pvclock_ns(&t);
        if now < prev {
            fail!("went back {} ns at sample {i}", prev - now);
        }
        prev = now;
    }
    if prev <= first {
        fail!("did not advance over 20000 samples ({first} ns)");
    }
    let reference = ctx.hc.hvm_get_time().ok();
    r.note(format_args!(
        "pvclock: {first}..{prev} ns over 20000 samples (mul {:#x} shift {}); HVMOP_get_time {reference:?}",
        t.tsc_to_system_mul, t.tsc_shift
    ));
    Ok(())
}

/// The grant reference used (the first one not reserved).
const GREF: u32 = GNTTAB_NR_RESERVED_ENTRIES;

fn check_grant_self<W: Write>(r: &mut Report<W>, ctx: &mut Ctx) -> Outcome {
    let hc = ctx.hc;
    let Some(domid) = ctx.domid else {
        fail!("own domid unknown (CPUID base+4)");
    };
    let q = match hc.gnttab_query_size() {
        Ok(q) => q,
        Err(e) => fail!("GNTTABOP_query_size: {e}"),
    };
    if q.status != GNTST_okay {
        fail!("GNTTABOP_query_size status {}", q.status);
    }
    r.note(format_args!(
        "grant table: {} of {} frames",
        q.nr_frames, q.max_nr_frames
    ));
    let table = &GRANT_TABLE_PAGE;
    let mut xatp = XenAddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: XENMAPSPACE_grant_table,
        idx: 0,
        gpfn: table.gfn(),
    };
    // SAFETY: `GRANT_TABLE_PAGE` holds no Rust value and is only touched
    // with volatile accesses from now on.
    if let Err(e) = unsafe { hc.add_to_physmap(&mut xatp) } {
        fail!(
            "XENMEM_add_to_physmap(grant_table 0, gfn {:#x}): {e}",
            table.gfn()
        );
    }
    ctx.gnttab_ready = true;
    let Some(target) = ctx.hole_gfn else {
        fail!("no free frame below 1 GiB to map the grant at");
    };
    let src = &GRANT_SOURCE_PAGE;
    for i in 0..4096 {
        // SAFETY: inside the page.
        unsafe { src.ptr().add(i).write_volatile((i * 7 + 3) as u8) };
    }
    // Entry GREF: domid and frame first, then the flags that publish it.
    let entry = (GREF as usize) * 8;
    // SAFETY: entry 8 of the grant frame, inside the page; u16/u32 aligned.
    unsafe {
        let e = table.ptr().add(entry);
        e.add(2).cast::<u16>().write_volatile(domid);
        e.add(4).cast::<u32>().write_volatile(src.gfn() as u32);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        e.cast::<u16>().write_volatile(GTF_permit_access);
    }
    let mut map = [GnttabMapGrantRef {
        host_addr: target << 12,
        flags: GNTMAP_host_map,
        r#ref: GREF,
        dom: domid,
        ..Default::default()
    }];
    // SAFETY: the target frame is a hole (no RAM, no Rust value); the
    // mapping only adds a p2m entry there.
    if let Err(e) = unsafe { hc.grant_table_op(&mut map) } {
        fail!("GNTTABOP_map_grant_ref: {e}");
    }
    if map[0].status != GNTST_okay {
        fail!("GNTTABOP_map_grant_ref status {}", map[0].status);
    }
    let dst = (target << 12) as *mut u8;
    let mut bad = None;
    for i in 0..4096 {
        // SAFETY: the identity map covers the target; the grant backs it.
        let b = unsafe { dst.add(i).read_volatile() };
        if b != (i * 7 + 3) as u8 {
            bad = Some((i, b));
            break;
        }
    }
    // A write through the mapping reaches the granted frame. Whether the
    // frame also still shows at its own gfn is the hypervisor's choice;
    // the ABI says nothing. Xen's p2m_add_page (x86/mm/p2m.c) takes a frame
    // the domain owns out of its old gfn when it is mapped at another,
    // grant maps included, so the source gfn becomes a hole (reads
    // all-ones) until it is populated again; our hypervisor does the same
    // since 2026-12-03 (it used to alias). The write is checked through
    // the mapping itself.
    // SAFETY: as above; the grant is writable.
    unsafe { dst.write_volatile(0x5A) };
    // SAFETY: as above.
    let back = unsafe { dst.read_volatile() };
    let at_source = src.byte(0);
    let moved = match at_source {
        0x5A => false,
        0xFF => true,
        b => fail!("the source frame shows {b:#x} after a write of 0x5a through the mapping"),
    };
    let mut unmap = [GnttabUnmapGrantRef {
        host_addr: target << 12,
        dev_bus_addr: 0,
        handle: map[0].handle,
        ..Default::default()
    }];
    // SAFETY: removes the mapping made above; nothing else uses the frame.
    let un = unsafe { hc.grant_table_op(&mut unmap) };
    // SAFETY: entry GREF inside the grant frame.
    unsafe {
        table
            .ptr()
            .add(entry)
            .cast::<u16>()
            .write_volatile(GTF_invalid)
    };
    if moved {
        r.note(format_args!(
            "grant_self: the source frame left its gfn {:#x} when mapped at {target:#x} (Xen's p2m rule); populating it again",
            src.gfn()
        ));
        let mut gfn = src.gfn();
        let mut res = XenMemoryReservation {
            extent_start: &raw mut gfn as u64,
            nr_extents: 1,
            extent_order: 0,
            mem_flags: 0,
            domid: DOMID_SELF,
            pad: [0; 6],
        };
        // SAFETY: `res` and `gfn` live across the call; the frame is a
        // hole (it read all-ones), so populating it changes no Rust value.
        match unsafe { hc.memory_op(XENMEM_populate_physmap, (&raw mut res).cast()) } {
            Ok(1) => {}
            Ok(n) => fail!(
                "XENMEM_populate_physmap of gfn {:#x}: {n} extents",
                src.gfn()
            ),
            Err(e) => fail!("XENMEM_populate_physmap of gfn {:#x}: {e}", src.gfn()),
        }
    }
    if let Some((i, b)) = bad {
        fail!("mapped byte {i} is {b:#x}, want {:#x}", (i * 7 + 3) as u8);
    }
    if back != 0x5A {
        fail!("a write through the mapping reads back {back:#x}");
    }
    if let Err(e) = un {
        fail!("GNTTABOP_unmap_grant_ref: {e}");
    }
    if unmap[0].status != GNTST_okay {
        fail!("GNTTABOP_unmap_grant_ref status {}", unmap[0].status);
    }
    // The unmap leaves a hole at the target again: loads read all-ones.
    // SAFETY: the identity map covers the target; unbacked reads are
    // answered by the hypervisor's null MMIO handler.
    let after = unsafe { dst.read_volatile() };
    if after != 0xFF {
        fail!("after the unmap the target frame reads {after:#x}, want 0xff (a hole)");
    }
    Ok(())
}

/// Round trips of the ping-pong.
const PING_ROUNDS: u32 = 10;
/// Lowest port numbers ping tries to bind to (pong allocates its port
/// before any other, so it is among the first).
const PING_SCAN_PORTS: u32 = 32;

/// Waits (SCHEDOP_poll, guarded by the singleshot timer) until `port` is
/// pending or `ns` pass; clears it and returns whether it came.
fn await_port(ctx: &mut Ctx, port: u32, ns: u64) -> Result<bool, Why> {
    let Some(tport) = ctx.timer_port.filter(|_| ctx.timer_works) else {
        fail!("needs a working singleshot timer to bound the wait");
    };
    let Some(t0) = now_ns(ctx) else {
        fail!("no system time");
    };
    let deadline = t0 + ns;
    loop {
        if events::is_pending(port) {
            events::clear_pending(port);
            return Ok(true);
        }
        let Some(now) = now_ns(ctx) else {
            fail!("no system time");
        };
        if now >= deadline {
            return Ok(false);
        }
        // The guard also wakes the poll should its timeout be lost.
        let _ = ctx
            .hc
            .vcpu_set_singleshot_timer(0, deadline.min(now + 100_000_000), 0);
        if let Err(e) = ctx.hc.sched_poll(&[port, tport], deadline) {
            fail!("SCHEDOP_poll: {e}");
        }
        events::clear_pending(tport);
    }
}

/// Clears every upcall left over, with interrupts briefly on.
fn settle(ctx: &mut Ctx) {
    let _ = ctx.hc.vcpu_stop_singleshot_timer(0);
    drain_upcalls();
    events::forget_seen();
}

fn ping<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, peer: u16) -> Outcome {
    let mut bound = None;
    'scan: for _ in 0..2000 {
        for p in 1..=PING_SCAN_PORTS {
            if let Ok(local) = ctx.hc.evtchn_bind_interdomain(peer, p) {
                bound = Some((local, p));
                break 'scan;
            }
        }
        let _ = ctx.hc.sched_yield();
    }
    let Some((port, remote)) = bound else {
        fail!("d{peer} offers no unbound port to us among ports 1..={PING_SCAN_PORTS}");
    };
    events::mask(port);
    r.note(format_args!(
        "ping: port {port} bound to d{peer} port {remote}"
    ));
    events::clear_pending(port);
    let t0 = now_ns(ctx).unwrap_or(0);
    for i in 0..PING_ROUNDS {
        if let Err(e) = ctx.hc.evtchn_send(port) {
            fail!("EVTCHNOP_send({port}) round {i}: {e}");
        }
        match await_port(ctx, port, 5_000_000_000) {
            Ok(true) => {}
            Ok(false) => {
                settle(ctx);
                fail!("no pong within 5 s in round {i}");
            }
            Err(e) => {
                settle(ctx);
                return Err(e);
            }
        }
    }
    settle(ctx);
    let t1 = now_ns(ctx).unwrap_or(0);
    r.note(format_args!(
        "ping: {PING_ROUNDS} round trips with d{peer} in {} us",
        t1.saturating_sub(t0) / 1000
    ));
    // Closed after the grant checks' handshake (`grants::ping_side`).
    ctx.peer_port = Some(port);
    Ok(())
}

fn pong<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, peer: u16, port: u32) -> Outcome {
    r.note(format_args!("pong: port {port} offered to d{peer}"));
    for i in 0..PING_ROUNDS {
        // The first ping waits for ping's own checks.
        let wait = if i == 0 {
            60_000_000_000
        } else {
            5_000_000_000
        };
        match await_port(ctx, port, wait) {
            Ok(true) => {}
            Ok(false) => {
                settle(ctx);
                fail!("no ping from d{peer} in round {i}");
            }
            Err(e) => {
                settle(ctx);
                return Err(e);
            }
        }
        if let Err(e) = ctx.hc.evtchn_send(port) {
            settle(ctx);
            fail!("EVTCHNOP_send({port}) round {i}: {e}");
        }
    }
    settle(ctx);
    r.note(format_args!("pong: answered {PING_ROUNDS} pings"));
    Ok(())
}

//! The virtio devices assigned to the service domain (issue 17), driven
//! by the `virtio-drivers` crate over its PCI transport:
//!
//! - [`DirectHal`]: its `Hal`. DMA memory comes from the direct-mapped
//!   region (`directmap=0xBASE:0xSIZE`, guest-physical == host-physical,
//!   the only memory a device may be given: there is no IOMMU); a buffer
//!   elsewhere is bounced through pages of the region. The region is
//!   identity-mapped by our own page tables too, so an address in it is
//!   at once our pointer, our guest-physical and the host's physical
//!   address.
//! - [`VirtioDisk`]: a virtio-blk device as blkback's [`Storage`];
//!   flushes reach it as `VIRTIO_BLK_T_FLUSH` (when it offers
//!   `VIRTIO_BLK_F_FLUSH`; QEMU does).
//! - [`VirtioUplink`]: a virtio-net device as the switch's [`Uplink`].
//!
//! Interrupts: each device's INTx becomes a pirq and an event channel
//! ([`super::pci::bind_intx`]); the event loop acknowledges the device
//! (its ISR register, which drops the line) and then ends the interrupt
//! (`PHYSDEVOP_eoi`); the network device's says frames arrived. The
//! block driver runs one request at a time and waits for it asleep in
//! `SCHEDOP_poll` on its own port (acknowledging and ending the interrupt
//! there), or spins on the used ring when it has no interrupt.

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt::Write;
use core::ptr::NonNull;

use service_domain::blkback::{IoError, Storage};
use service_domain::dma::PageAlloc;
use service_domain::uplink::Uplink;
use spin::Mutex;
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::{Command, DeviceFunction, PciRoot};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};
use xen_abi::guest::Hypercall;

use super::Console;
use super::pci::{self, Pirq, PortCam};

const PAGE: usize = 4096;
/// Largest transfer one virtio-blk request carries (blkback's requests
/// are cut into these), through a buffer of this size in the region.
const BLK_CHUNK: usize = 256 << 10;
/// Block requests in flight at once (one 1 MiB blkfront request in four).
const BLK_INFLIGHT: usize = 4;
/// The region's block buffer: what one round of requests covers.
const BLK_WINDOW: usize = BLK_CHUNK * BLK_INFLIGHT;
/// Receive and transmit queue size of the network device.
const NET_QUEUE: usize = 64;
/// Receive buffer: a 1514-byte frame and the virtio-net header.
const NET_BUF: usize = 2048;

/// The direct-mapped region and its pages.
struct Region {
    base: u64,
    pages: PageAlloc,
}

static REGION: Mutex<Option<Region>> = Mutex::new(None);

impl Region {
    fn contains(&self, pa: u64, len: usize) -> bool {
        let end = (self.pages.pages() * PAGE) as u64 + self.base;
        pa >= self.base && pa.checked_add(len as u64).is_some_and(|e| e <= end)
    }
}

/// virtio-drivers' `Hal` over the direct-mapped region.
pub struct DirectHal;

fn alloc_pages(pages: usize) -> Option<u64> {
    let mut r = REGION.lock();
    let r = r.as_mut()?;
    let first = r.pages.alloc(pages)?;
    Some(r.base + (first * PAGE) as u64)
}

fn free_pages(pa: u64, pages: usize) -> bool {
    let mut r = REGION.lock();
    let Some(r) = r.as_mut() else {
        return false;
    };
    pa >= r.base && r.pages.free(((pa - r.base) / PAGE as u64) as usize, pages)
}

fn in_region(pa: u64, len: usize) -> bool {
    REGION.lock().as_ref().is_some_and(|r| r.contains(pa, len))
}

// SAFETY: `dma_alloc` hands out pages of the region that no one else
// uses (the allocator's bits), zeroed, with the address the device must
// use (guest-physical == host-physical there) and our pointer (the same
// number: identity map); `share` gives the device either the buffer's own
// address, when the whole buffer lies in the region, or a bounce copy in
// pages of the region kept until `unshare`; `mmio_phys_to_virt` returns
// the identity-mapped, uncached address of a BAR that `probe` checked.
unsafe impl Hal for DirectHal {
    fn dma_alloc(pages: usize, _dir: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match alloc_pages(pages) {
            Some(pa) => {
                // SAFETY: `pages` pages at `pa` were just allocated to us
                // alone, in the region, identity-mapped and writable.
                unsafe { core::ptr::write_bytes(pa as *mut u8, 0, pages * PAGE) };
                (
                    pa,
                    NonNull::new(pa as *mut u8).unwrap_or(NonNull::dangling()),
                )
            }
            // virtio-drivers takes 0 as failure.
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        if free_pages(paddr, pages) { 0 } else { -1 }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, dir: BufferDirection) -> PhysAddr {
        let va = buffer.as_ptr().cast::<u8>() as u64;
        let len = buffer.len();
        if in_region(va, len) {
            return va;
        }
        let Some(pa) = alloc_pages(len.div_ceil(PAGE)) else {
            // Handing the device any other address would let it write
            // over memory that is not ours to give: stop instead. The
            // region's use is bounded (queues, one blk chunk, a page per
            // posted receive buffer and per request header), so this is
            // a sizing bug, not something a guest can cause.
            panic!("the direct-mapped region is exhausted ({len} bytes to share)");
        };
        if dir != BufferDirection::DeviceToDriver {
            // SAFETY: the caller's buffer is valid for `len` bytes (the
            // trait's contract); the bounce pages are ours alone.
            unsafe { core::ptr::copy_nonoverlapping(va as *const u8, pa as *mut u8, len) };
        }
        pa
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, dir: BufferDirection) {
        let va = buffer.as_ptr().cast::<u8>() as u64;
        let len = buffer.len();
        if paddr == va {
            return;
        }
        if dir != BufferDirection::DriverToDevice {
            // SAFETY: `paddr` is the bounce copy `share` made of this
            // buffer (the trait's contract), which the device is done
            // with; the buffer is valid for `len` bytes.
            unsafe { core::ptr::copy_nonoverlapping(paddr as *const u8, va as *mut u8, len) };
        }
        free_pages(paddr, len.div_ceil(PAGE));
    }
}

type Blk = VirtIOBlk<DirectHal, PciTransport>;
type Net = VirtIONetRaw<DirectHal, PciTransport, NET_QUEUE>;

/// A virtio-blk disk as blkback's storage.
pub struct VirtioDisk {
    dev: Rc<RefCell<Blk>>,
    sectors: u64,
    read_only: bool,
    /// [`BLK_WINDOW`] bytes in the region: data goes to and from the
    /// device through it without a bounce per request.
    buf: &'static mut [u8],
    /// The device's interrupt: a request in flight is waited for in
    /// `SCHEDOP_poll` on its port (the vCPU sleeps and QEMU's I/O runs)
    /// rather than by spinning on the used ring.
    irq: Option<(Hypercall, Pirq)>,
}

impl VirtioDisk {
    /// Runs the requests for `len` bytes from `block` on the region's
    /// block buffer, at most [`BLK_INFLIGHT`] of [`BLK_CHUNK`] at once
    /// (`len` is at most their product), and waits for all of them:
    /// asleep on the interrupt's port when there is one (acknowledging
    /// the device and ending the interrupt each time it fires), else
    /// spinning. Every request submitted is waited for, even after one
    /// failed, so the device is done with the buffer when this returns.
    fn run(&mut self, block: usize, len: usize, write: bool) -> Result<(), IoError> {
        let mut dev = self.dev.borrow_mut();
        let mut reqs: [BlkReq; BLK_INFLIGHT] = core::array::from_fn(|_| BlkReq::default());
        let mut resps: [BlkResp; BLK_INFLIGHT] = core::array::from_fn(|_| BlkResp::default());
        let mut bufs: Vec<&mut [u8]> = self.buf[..len].chunks_mut(BLK_CHUNK).collect();
        let mut tokens: [Option<u16>; BLK_INFLIGHT] = [None; BLK_INFLIGHT];
        let mut ok = bufs.len() <= BLK_INFLIGHT;
        for (k, ((b, req), resp)) in bufs
            .iter_mut()
            .zip(reqs.iter_mut())
            .zip(resps.iter_mut())
            .enumerate()
        {
            let at = block + k * (BLK_CHUNK / 512);
            // SAFETY: `req`, `b` and `resp` are not touched until the
            // request completes below (or the queue refuses it).
            let t = unsafe {
                if write {
                    dev.write_blocks_nb(at, req, b, resp)
                } else {
                    dev.read_blocks_nb(at, req, b, resp)
                }
            };
            match t {
                Ok(t) => tokens[k] = Some(t),
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        while tokens.iter().any(Option::is_some) {
            let Some(t) = dev.peek_used() else {
                match self.irq {
                    Some((hc, p)) => {
                        if !super::xen::take_pending_port(p.port) {
                            let _ = hc.sched_poll(&[p.port], 0);
                            if !super::xen::take_pending_port(p.port) {
                                continue;
                            }
                        }
                        dev.ack_interrupt();
                        pci::eoi(hc, p.pirq);
                    }
                    None => core::hint::spin_loop(),
                }
                continue;
            };
            let Some(k) = tokens.iter().position(|&x| x == Some(t)) else {
                // Not ours: nothing else is queued on this device.
                return Err(IoError);
            };
            tokens[k] = None;
            // SAFETY: the same `req`, buffer and `resp` as the request `t`.
            let r = unsafe {
                if write {
                    dev.complete_write_blocks(t, &reqs[k], bufs[k], &mut resps[k])
                } else {
                    dev.complete_read_blocks(t, &reqs[k], bufs[k], &mut resps[k])
                }
            };
            ok &= r.is_ok();
        }
        if ok { Ok(()) } else { Err(IoError) }
    }
}

impl VirtioDisk {
    /// Size in MiB.
    pub fn mib(&self) -> u64 {
        self.sectors >> 11
    }
}

impl Storage for VirtioDisk {
    fn sector_size(&self) -> u32 {
        512
    }
    fn sectors(&self) -> u64 {
        self.sectors
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn bytes(&mut self) -> Option<&mut [u8]> {
        None
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        // The driver asserts whole, non-empty sectors: checked here so no
        // request can make it panic (blkback only sends whole sectors).
        if !offset.is_multiple_of(512) || !buf.len().is_multiple_of(512) {
            return Err(IoError);
        }
        for (k, chunk) in buf.chunks_mut(BLK_WINDOW).enumerate() {
            let block =
                usize::try_from((offset + (k * BLK_WINDOW) as u64) / 512).map_err(|_| IoError)?;
            self.run(block, chunk.len(), false)?;
            chunk.copy_from_slice(&self.buf[..chunk.len()]);
        }
        Ok(())
    }
    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        if !offset.is_multiple_of(512) || !buf.len().is_multiple_of(512) {
            return Err(IoError);
        }
        for (k, chunk) in buf.chunks(BLK_WINDOW).enumerate() {
            let block =
                usize::try_from((offset + (k * BLK_WINDOW) as u64) / 512).map_err(|_| IoError)?;
            self.buf[..chunk.len()].copy_from_slice(chunk);
            self.run(block, chunk.len(), true)?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), IoError> {
        self.dev.borrow_mut().flush().map_err(|_| IoError)
    }
    fn can_discard(&self) -> bool {
        false
    }
    fn discard(&mut self, _: u64, _: u64) -> Result<(), IoError> {
        Err(IoError)
    }
}

/// A virtio-net device as the switch's uplink. Its receive and transmit
/// buffers are pages of the direct-mapped region (no bounce), one per
/// queue slot: [`NET_QUEUE`] receive buffers stay posted, and a frame
/// goes out without waiting for the device (its buffer is taken back once
/// the device has used it), so QEMU can take several at once.
pub struct VirtioUplink {
    dev: Rc<RefCell<Net>>,
    rx: Vec<&'static mut [u8]>,
    /// Receive buffer of each queue token.
    rx_token: [Option<usize>; NET_QUEUE],
    tx: Vec<&'static mut [u8]>,
    /// Transmit buffer (and its length) of each token in flight.
    tx_token: [Option<(usize, usize)>; NET_QUEUE],
    tx_free: Vec<usize>,
}

/// `n` buffers of [`NET_BUF`] bytes, a page each, in the region.
fn region_buffers(n: usize) -> Option<Vec<&'static mut [u8]>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let pa = alloc_pages(1)?;
        // SAFETY: one page of the region, just allocated to us alone and
        // never given back; identity-mapped. The device reaches it only
        // while it is posted to a queue, and we do not touch it then.
        v.push(unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, NET_BUF) });
    }
    Some(v)
}

impl VirtioUplink {
    fn new(dev: Rc<RefCell<Net>>) -> Option<Self> {
        let mut up = Self {
            dev,
            rx: region_buffers(NET_QUEUE)?,
            rx_token: [None; NET_QUEUE],
            tx: region_buffers(NET_QUEUE)?,
            tx_token: [None; NET_QUEUE],
            tx_free: (0..NET_QUEUE).rev().collect(),
        };
        for i in 0..NET_QUEUE {
            up.post(i).ok()?;
        }
        Some(up)
    }

    /// Posts receive buffer `i`.
    fn post(&mut self, i: usize) -> Result<(), ()> {
        let mut dev = self.dev.borrow_mut();
        // SAFETY: buffer `i` is ours ('static, in the region) and not
        // posted; we leave it alone until its token comes back used.
        let t = unsafe { dev.receive_begin(self.rx[i]) }.map_err(|_| ())?;
        *self.rx_token.get_mut(usize::from(t)).ok_or(())? = Some(i);
        Ok(())
    }

    /// Takes back the transmit buffers the device is done with.
    fn reap(&mut self) {
        let mut dev = self.dev.borrow_mut();
        while let Some(t) = dev.poll_transmit() {
            let Some((i, len)) = self.tx_token.get_mut(usize::from(t)).and_then(Option::take)
            else {
                break;
            };
            // SAFETY: the same buffer (and length) as `transmit_begin`'s
            // for this token.
            let _ = unsafe { dev.transmit_complete(t, &self.tx[i][..len]) };
            self.tx_free.push(i);
        }
    }
}

impl Uplink for VirtioUplink {
    fn send(&mut self, frame: &[u8]) -> bool {
        self.reap();
        // A full queue: wait for the device a little (it completes in
        // order), else drop.
        let mut spins = 0u32;
        while self.tx_free.is_empty() && spins < 1_000_000 {
            core::hint::spin_loop();
            self.reap();
            spins += 1;
        }
        let Some(i) = self.tx_free.pop() else {
            return false;
        };
        let mut dev = self.dev.borrow_mut();
        let buf = &mut *self.tx[i];
        let Ok(hdr) = dev.fill_buffer_header(buf) else {
            self.tx_free.push(i);
            return false;
        };
        let len = hdr + frame.len();
        let Some(dst) = buf.get_mut(hdr..len) else {
            // Larger than a buffer (no offloads: frames are at most 1514).
            self.tx_free.push(i);
            return false;
        };
        dst.copy_from_slice(frame);
        // SAFETY: buffer `i` is ours ('static, in the region) and stays
        // untouched until `reap` takes it back for this token.
        match unsafe { dev.transmit_begin(&buf[..len]) } {
            Ok(t) => match self.tx_token.get_mut(usize::from(t)) {
                Some(slot) => {
                    *slot = Some((i, len));
                    true
                }
                None => false,
            },
            Err(_) => {
                self.tx_free.push(i);
                false
            }
        }
    }

    fn recv(&mut self) -> Option<Vec<u8>> {
        let (t, i) = {
            let dev = self.dev.borrow();
            let t = dev.poll_receive()?;
            (t, self.rx_token.get_mut(usize::from(t))?.take()?)
        };
        let got = {
            let mut dev = self.dev.borrow_mut();
            // SAFETY: the buffer posted under this token.
            unsafe { dev.receive_complete(t, self.rx[i]) }
        };
        let frame = got
            .ok()
            .and_then(|(hdr, len)| self.rx[i].get(hdr..hdr + len))
            .map(<[u8]>::to_vec);
        let _ = self.post(i);
        // A bad completion gives an empty frame, which the switch drops.
        Some(frame.unwrap_or_default())
    }
}

/// A device whose interrupt the event loop handles.
pub enum IrqDev {
    /// The disk.
    Blk(Rc<RefCell<Blk>>),
    /// The uplink.
    Net(Rc<RefCell<Net>>),
}

/// One device interrupt: its port, or none (the device is polled).
pub struct DevIrq {
    pub dev: IrqDev,
    pub pirq: Option<Pirq>,
}

impl DevIrq {
    /// Acknowledges the device (reads its ISR: the line drops), then ends
    /// the interrupt.
    pub fn handle(&self, hc: Hypercall) {
        match &self.dev {
            IrqDev::Blk(d) => {
                d.borrow_mut().ack_interrupt();
            }
            IrqDev::Net(d) => {
                d.borrow_mut().ack_interrupt();
            }
        }
        if let Some(p) = self.pirq {
            pci::eoi(hc, p.pirq);
        }
    }
}

/// What [`probe`] found.
#[derive(Default)]
pub struct Devices {
    pub disk: Option<VirtioDisk>,
    pub uplink: Option<VirtioUplink>,
    pub irqs: Vec<DevIrq>,
    /// A device without an interrupt: the event loop must poll.
    pub poll: bool,
}

/// Whether `[a, a+len)` overlaps any of `ram`.
fn overlaps(ram: &[(u64, u64)], a: u64, len: u64) -> bool {
    ram.iter()
        .any(|&(b, l)| a < b.saturating_add(l) && b < a.saturating_add(len))
}

/// The lowest address of the uncached MMIO window our page tables give
/// (`super::uncache_mmio`): 1 GiB up to 4 GiB, outside RAM.
pub const MMIO_WINDOW: (u64, u64) = (1 << 30, 4 << 30);

/// Sets up the direct-mapped region and drives the virtio functions
/// assigned to us: `pci` names them (empty: every function on bus 0 that
/// configuration space shows us). `ram` is the memory map's RAM.
pub fn probe(
    hc: Hypercall,
    directmap: Option<(u64, u64)>,
    pci_list: &[(u8, u8, u8)],
    ram: &[(u64, u64)],
) -> Devices {
    let mut con = Console(hc);
    let mut out = Devices::default();
    let mut functions: Vec<DeviceFunction> = pci_list
        .iter()
        .map(|&(bus, device, function)| DeviceFunction {
            bus,
            device,
            function,
        })
        .collect();
    if functions.is_empty() {
        let root = PciRoot::new(PortCam);
        functions.extend(root.enumerate_bus(0).map(|(df, _)| df));
    }
    if functions.is_empty() {
        return out;
    }
    let Some((base, size)) = directmap else {
        let _ = writeln!(
            con,
            "service-domain: {} PCI function(s) but no directmap= region: not driven (no DMA without it)",
            functions.len()
        );
        return out;
    };
    let inside_ram = ram
        .iter()
        .any(|&(b, l)| base >= b && base.saturating_add(size) <= b.saturating_add(l));
    if base == 0 || base.saturating_add(size) > MMIO_WINDOW.1 || !inside_ram {
        let _ = writeln!(
            con,
            "service-domain: directmap={base:#x}:{size:#x} is not RAM below 4 GiB: devices not driven"
        );
        return out;
    }
    *REGION.lock() = Some(Region {
        base,
        pages: PageAlloc::new((size / PAGE as u64) as usize),
    });
    let _ = writeln!(
        con,
        "service-domain: DMA region {base:#x}+{} MiB (guest-physical = host-physical)",
        size >> 20
    );
    let mut root = PciRoot::new(PortCam);
    for df in functions {
        let name = alloc::format!("{:02x}:{:02x}.{}", df.bus, df.device, df.function);
        if let Some(a) = pci::memory_bars(df)
            .find(|&a| a < MMIO_WINDOW.0 || a >= MMIO_WINDOW.1 || overlaps(ram, a, 1))
        {
            let _ = writeln!(
                con,
                "service-domain: {name}: a BAR at {a:#x}, outside the uncached window 1-4 GiB: not driven"
            );
            continue;
        }
        let (_, cmd) = root.get_status_command(df);
        root.set_command(
            df,
            cmd | Command::MEMORY_SPACE | Command::IO_SPACE | Command::BUS_MASTER,
        );
        let transport = match PciTransport::new::<DirectHal, _>(&mut root, df) {
            Ok(t) => t,
            Err(e) => {
                let _ = writeln!(
                    con,
                    "service-domain: {name}: not a virtio device we drive ({e})"
                );
                continue;
            }
        };
        let irq = pci::bind_intx(hc, df);
        let dev = match transport.device_type() {
            DeviceType::Block if out.disk.is_none() => {
                let Some(pa) = alloc_pages(BLK_WINDOW / PAGE) else {
                    let _ = writeln!(con, "service-domain: {name}: the DMA region is too small");
                    continue;
                };
                // SAFETY: BLK_WINDOW bytes of the region, just allocated to
                // us alone and never given back; identity-mapped. The
                // device reaches them only while a request we make on them
                // runs.
                let buf = unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, BLK_WINDOW) };
                match VirtIOBlk::<DirectHal, _>::new(transport) {
                    Ok(mut b) => {
                        // Without an interrupt, requests are polled to
                        // completion in place.
                        if irq.is_err() {
                            b.disable_interrupts();
                        }
                        let d = Rc::new(RefCell::new(b));
                        let sectors = d.borrow().capacity();
                        let read_only = d.borrow().readonly();
                        let disk = VirtioDisk {
                            dev: d.clone(),
                            sectors,
                            read_only,
                            buf,
                            irq: irq.ok().map(|p| (hc, p)),
                        };
                        let _ = writeln!(
                            con,
                            "service-domain: {name}: virtio-blk, {} MiB{}",
                            disk.mib(),
                            if read_only { ", read-only" } else { "" }
                        );
                        out.disk = Some(disk);
                        IrqDev::Blk(d)
                    }
                    Err(e) => {
                        let _ = writeln!(con, "service-domain: {name}: virtio-blk: {e}");
                        continue;
                    }
                }
            }
            DeviceType::Network if out.uplink.is_none() => {
                match VirtIONetRaw::<DirectHal, _, NET_QUEUE>::new(transport) {
                    Ok(n) => {
                        let mac = n.mac_address();
                        let d = Rc::new(RefCell::new(n));
                        let Some(up) = VirtioUplink::new(d.clone()) else {
                            let _ = writeln!(
                                con,
                                "service-domain: {name}: virtio-net: the DMA region is too small"
                            );
                            continue;
                        };
                        let _ = writeln!(
                            con,
                            "service-domain: {name}: virtio-net {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, the switch's uplink",
                            mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
                        );
                        out.uplink = Some(up);
                        IrqDev::Net(d)
                    }
                    Err(e) => {
                        let _ = writeln!(con, "service-domain: {name}: virtio-net: {e}");
                        continue;
                    }
                }
            }
            t => {
                let _ = writeln!(con, "service-domain: {name}: virtio {t:?}: not used");
                continue;
            }
        };
        let pirq = match irq {
            Ok(p) => {
                let _ = writeln!(
                    con,
                    "service-domain: {name}: interrupt: pirq {} on port {}",
                    p.pirq, p.port
                );
                Some(p)
            }
            Err((step, e)) => {
                let _ = match e {
                    Some(e) => writeln!(
                        con,
                        "service-domain: {name}: no interrupt ({step}: {e}); polling it"
                    ),
                    None => writeln!(
                        con,
                        "service-domain: {name}: no interrupt ({step}); polling it"
                    ),
                };
                if matches!(dev, IrqDev::Net(_)) {
                    out.poll = true;
                }
                None
            }
        };
        out.irqs.push(DevIrq { dev, pirq });
    }
    out
}

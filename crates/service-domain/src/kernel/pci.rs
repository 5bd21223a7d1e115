//! PCI configuration space through ports 0xCF8/0xCFC (the hypervisor
//! filters it per domain: functions not assigned to us read all-ones),
//! and a device's INTx as an event channel through Xen's physdev
//! interface.

use core::arch::asm;

use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};
use xen_abi::errno::Errno;
use xen_abi::event_channel::EvtchnBindPirq;
use xen_abi::guest::Hypercall;
use xen_abi::physdev::{
    MAP_PIRQ_TYPE_GSI, PHYSDEVOP_eoi, PHYSDEVOP_map_pirq, PhysdevEoi, PhysdevMapPirq,
};
use xen_abi::xen::__HYPERVISOR_physdev_op;

/// Configuration mechanism #1: address to 0xCF8, data at 0xCFC.
pub struct PortCam;

fn address(df: DeviceFunction, reg: u8) -> u32 {
    0x8000_0000
        | u32::from(df.bus) << 16
        | u32::from(df.device & 0x1f) << 11
        | u32::from(df.function & 7) << 8
        | u32::from(reg & 0xfc)
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, reg: u8) -> u32 {
        let v: u32;
        // SAFETY: ports 0xCF8 and 0xCFC are the configuration mechanism,
        // which the hypervisor emulates and filters for this domain; they
        // touch no memory. One vCPU and no interrupt handlers: the pair
        // of accesses is not interleaved with another.
        unsafe {
            asm!("out dx, eax", in("dx") 0xCF8u16, in("eax") address(df, reg), options(nomem, nostack, preserves_flags));
            asm!("in eax, dx", in("dx") 0xCFCu16, out("eax") v, options(nomem, nostack, preserves_flags));
        }
        v
    }

    fn write_word(&mut self, df: DeviceFunction, reg: u8, data: u32) {
        // SAFETY: as in `read_word`; the hypervisor decides which
        // registers of an assigned function a write reaches (BARs never).
        unsafe {
            asm!("out dx, eax", in("dx") 0xCF8u16, in("eax") address(df, reg), options(nomem, nostack, preserves_flags));
            asm!("out dx, eax", in("dx") 0xCFCu16, in("eax") data, options(nomem, nostack, preserves_flags));
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// `physdev_op(cmd, arg)`.
///
/// # Safety
/// `T` must be the argument struct of `cmd`, one that the hypervisor only
/// reads and writes in place.
unsafe fn physdev_op<T>(hc: Hypercall, cmd: u32, arg: &mut T) -> Result<(), Errno> {
    let args = [u64::from(cmd), core::ptr::from_mut(arg) as u64, 0, 0, 0];
    // SAFETY: per the contract, `arg` is ours for the call and of the
    // layout `cmd` expects.
    Errno::from_ret(unsafe { hc.call(__HYPERVISOR_physdev_op, args) }).map(|_| ())
}

/// A device interrupt delivered as an event channel.
#[derive(Clone, Copy, Debug)]
pub struct Pirq {
    /// Xen's pirq.
    pub pirq: u32,
    /// The bound port.
    pub port: u32,
}

/// Maps the function's INTx (its interrupt line register, 0x3C, as
/// firmware routed it: a GSI) to a pirq and binds it to a port
/// (`PHYSDEVOP_map_pirq`, `EVTCHNOP_bind_pirq`). `Err` says which step
/// failed and how (`None`: no interrupt line).
pub fn bind_intx(hc: Hypercall, df: DeviceFunction) -> Result<Pirq, (&'static str, Option<Errno>)> {
    let line = PortCam.read_word(df, 0x3c) & 0xff;
    if line == 0 || line == 0xff {
        return Err(("no interrupt line", None));
    }
    let mut m = PhysdevMapPirq {
        domid: xen_abi::DOMID_SELF,
        r#type: MAP_PIRQ_TYPE_GSI,
        index: line as i32,
        pirq: -1,
        ..Default::default()
    };
    // SAFETY: `PhysdevMapPirq` is `PHYSDEVOP_map_pirq`'s argument.
    unsafe { physdev_op(hc, PHYSDEVOP_map_pirq, &mut m) }.map_err(|e| ("map_pirq", Some(e)))?;
    let pirq = u32::try_from(m.pirq).map_err(|_| ("map_pirq: a negative pirq", None))?;
    let mut b = EvtchnBindPirq {
        pirq,
        flags: 0,
        port: 0,
    };
    // SAFETY: EVTCHNOP_bind_pirq touches only the argument.
    unsafe { hc.event_channel_op(&mut b) }.map_err(|e| ("bind_pirq", Some(e)))?;
    Ok(Pirq { pirq, port: b.port })
}

/// Ends a level-triggered interrupt once the device was acknowledged
/// (`PHYSDEVOP_eoi`).
pub fn eoi(hc: Hypercall, pirq: u32) {
    let mut e = PhysdevEoi { irq: pirq };
    // SAFETY: `PhysdevEoi` is `PHYSDEVOP_eoi`'s argument.
    let _ = unsafe { physdev_op(hc, PHYSDEVOP_eoi, &mut e) };
}

/// The memory BARs of a function: (address, size), read without sizing
/// (sizing writes all-ones, which the hypervisor answers with the size
/// mask; virtio-drivers sizes them itself later).
pub fn memory_bars(df: DeviceFunction) -> impl Iterator<Item = u64> {
    let mut out = [0u64; 6];
    let mut i = 0;
    while i < 6 {
        let lo = PortCam.read_word(df, 0x10 + 4 * i as u8);
        if lo & 1 == 0 {
            let mut a = u64::from(lo & !0xf);
            if lo & 0x6 == 0x4 && i < 5 {
                a |= u64::from(PortCam.read_word(df, 0x14 + 4 * i as u8)) << 32;
                out[i] = a;
                i += 2;
                continue;
            }
            out[i] = a;
        }
        i += 1;
    }
    out.into_iter().filter(|&a| a != 0)
}

//! Every ABI struct, reached through the crate root, converts from any
//! bytes of its size (and only from those), and back to the same bytes.

use xen_abi::*;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            *b = (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
        }
    }
}

fn check<T>(rng: &mut Rng)
where
    T: FromBytes + IntoBytes + Immutable + KnownLayout + PartialEq + core::fmt::Debug,
{
    let size = core::mem::size_of::<T>();
    let name = core::any::type_name::<T>();
    let mut buf = vec![0u8; size + 9];
    for _ in 0..8 {
        rng.fill(&mut buf);
        // Exact size, any content, any alignment: a copy always succeeds
        // and gives back the same bytes.
        for start in 0..=8 {
            let bytes = &buf[start..start + size];
            let v = T::read_from_bytes(bytes).unwrap_or_else(|_| panic!("{name} from bytes"));
            assert_eq!(v.as_bytes(), bytes, "{name} round trip");
            let (p, rest) = T::read_from_prefix(&buf[start..]).unwrap();
            assert_eq!(p, v);
            assert_eq!(rest.len(), buf.len() - start - size);
        }
    }
    // Wrong sizes are refused, never padded or truncated.
    if size > 0 {
        assert!(
            T::read_from_bytes(&buf[..size - 1]).is_err(),
            "{name} short"
        );
        assert!(
            T::read_from_prefix(&buf[..size - 1]).is_err(),
            "{name} short prefix"
        );
    }
    assert!(T::read_from_bytes(&buf[..size + 1]).is_err(), "{name} long");
    // A reference needs the type's alignment; at an offset that breaks it
    // the conversion fails instead of producing a misaligned reference.
    let align = core::mem::align_of::<T>();
    let base = buf.as_ptr() as usize;
    let misaligned = (0..align).find(|o| !(base + o).is_multiple_of(align));
    if let Some(off) = misaligned {
        assert!(
            T::ref_from_bytes(&buf[off..off + size]).is_err(),
            "{name} misaligned ref"
        );
    }
    let aligned = (0..align)
        .find(|o| (base + o).is_multiple_of(align))
        .unwrap();
    assert!(
        T::ref_from_bytes(&buf[aligned..aligned + size]).is_ok(),
        "{name} aligned ref"
    );
}

macro_rules! check_all {
    ($rng:expr, $($t:ty),* $(,)?) => { $(check::<$t>($rng);)* };
}

#[test]
fn every_abi_struct_converts_from_arbitrary_bytes() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    check_all!(
        &mut rng,
        ArchSharedInfo,
        ArchVcpuInfo,
        Blkif32Request,
        Blkif32RequestDiscard,
        Blkif32RequestIndirect,
        Blkif32Response,
        BlkifRequest,
        BlkifRequestDiscard,
        BlkifRequestIndirect,
        BlkifRequestSegment,
        BlkifResponse,
        E820Entry,
        EvtchnAllocUnbound,
        EvtchnBindInterdomain,
        EvtchnBindIpi,
        EvtchnBindPirq,
        EvtchnBindVcpu,
        EvtchnBindVirq,
        EvtchnClose,
        EvtchnExpandArray,
        EvtchnFifoControlBlock,
        EvtchnInitControl,
        EvtchnOp,
        EvtchnReset,
        EvtchnSend,
        EvtchnSetPriority,
        EvtchnStatus,
        EvtchnUnmask,
        GnttabCacheFlush,
        GnttabCopy,
        GnttabCopyPtr,
        GnttabDumpTable,
        GnttabGetStatusFrames,
        GnttabGetVersion,
        GnttabMapGrantRef,
        GnttabQuerySize,
        GnttabSetVersion,
        GnttabSetupTable,
        GnttabSwapGrantRef,
        GnttabTransfer,
        GnttabUnmapAndReplace,
        GnttabUnmapGrantRef,
        GrantEntryHeader,
        GrantEntryV1,
        PhysdevEoi,
        PhysdevGetFreePirq,
        PhysdevIrqStatusQuery,
        PhysdevManagePci,
        PhysdevMapPirq,
        PhysdevPciDevice,
        PhysdevPciDeviceAdd,
        PhysdevPciMmcfgReserved,
        PhysdevPirqEoiGmfn,
        PhysdevRestoreMsi,
        PhysdevSetIopl,
        PhysdevSetupGsi,
        PhysdevUnmapPirq,
        CompatPhysdevMapPirq,
        CompatPhysdevPirqEoiGmfn,
        GrantEntryV2,
        GrantEntryV2FullPage,
        GrantEntryV2SubPage,
        GrantEntryV2Transitive,
        HvmMemmapTableEntry,
        HvmModlistEntry,
        HvmStartInfo,
        MmuUpdate,
        MulticallEntry,
        NetifExtraInfo,
        NetifExtraInfoGso,
        NetifRxRequest,
        NetifRxResponse,
        NetifTxRequest,
        NetifTxResponse,
        SchedPinOverride,
        SchedPoll,
        SchedRemoteShutdown,
        SchedShutdown,
        SchedWatchdog,
        SharedInfo,
        SringHeader,
        VcpuGetPhysid,
        VcpuHvmContext,
        VcpuHvmX86_32,
        VcpuHvmX86_64,
        VcpuInfo,
        VcpuRegisterRunstateMemoryArea,
        VcpuRegisterTimeMemoryArea,
        VcpuRegisterVcpuInfo,
        VcpuRunstateInfo,
        VcpuSetPeriodicTimer,
        VcpuSetSingleshotTimer,
        VcpuTimeInfo,
        XenAddToPhysmap,
        XenAddToPhysmapBatch,
        XenCompileInfo,
        XenFeatureInfo,
        XenForeignMemoryMap,
        XenHvmEvtchnUpcallVector,
        XenHvmGetMemType,
        XenHvmGetTime,
        XenHvmPagetableDying,
        XenHvmParam,
        XenMachphysMapping,
        XenMachphysMfnList,
        XenMemoryDomain,
        XenMemoryExchange,
        XenMemoryMap,
        XenMemoryReservation,
        XenNetifCtrlRequest,
        XenNetifCtrlResponse,
        XenNetifGref,
        XenPlatformParameters,
        XenPodTarget,
        XenRemoveFromPhysmap,
        XenVarbuf,
        XenconsInterface,
        XenstoreDomainInterface,
        XsdSockmsg,
    );
}

#[test]
fn names_are_reachable_at_the_root() {
    assert_eq!(xen_abi::XEN_ELFNOTE_PHYS32_ENTRY, 18);
    assert_eq!(xen_abi::HVM_PARAM_CONSOLE_PFN, 17);
    assert_eq!(xen_abi::__HYPERVISOR_hvm_op, 34);
    assert_eq!(core::mem::size_of::<xen_abi::HvmStartInfo>(), 56);
    assert_eq!(core::mem::size_of::<xen_abi::EvtchnAllocUnbound>(), 8);
    assert_eq!(core::mem::size_of::<xen_abi::XenconsInterface>(), 3092);
}

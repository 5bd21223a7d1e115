//! The hypervisor CPUID leaves: `xen/include/public/arch-x86/cpuid.h`.
//!
//! Xen answers CPUID from a base leaf at 0x40000000 (or at 0x40000100 and
//! up, in steps of 0x100, when another hypervisor interface comes first).
//! Leaf `base + 0` carries the "XenVMMXenVMM" signature and the highest
//! leaf; the following leaves carry version, hypercall-page MSR and
//! feature bits. Guests scan the candidate bases; [`xen_cpuid_base_check`]
//! tells whether one base answers as Xen.

/// The first candidate base leaf (cpuid.h `XEN_CPUID_FIRST_LEAF`).
pub const XEN_CPUID_FIRST_LEAF: u32 = 0x4000_0000;
/// Distance between candidate base leaves (cpuid.h: bases at 0x40000x00).
pub const XEN_CPUID_BASE_STEP: u32 = 0x100;
/// End (exclusive) of the range where guests look for the base leaf
/// (the 0x40000000-0x4000ff00 scan Linux performs).
pub const XEN_CPUID_BASE_END: u32 = 0x4001_0000;

/// Leaf `i` from the first base (cpuid.h `XEN_CPUID_LEAF`).
pub const fn XEN_CPUID_LEAF(i: u32) -> u32 {
    XEN_CPUID_FIRST_LEAF + i
}

/// Signature in EBX: "XenV" (cpuid.h `XEN_CPUID_SIGNATURE_EBX`).
pub const XEN_CPUID_SIGNATURE_EBX: u32 = 0x566e_6558;
/// Signature in ECX: "MMXe" (cpuid.h `XEN_CPUID_SIGNATURE_ECX`).
pub const XEN_CPUID_SIGNATURE_ECX: u32 = 0x6558_4d4d;
/// Signature in EDX: "nVMM" (cpuid.h `XEN_CPUID_SIGNATURE_EDX`).
pub const XEN_CPUID_SIGNATURE_EDX: u32 = 0x4d4d_566e;
/// The signature as bytes, EBX then ECX then EDX (cpuid.h).
pub const XEN_CPUID_SIGNATURE: &[u8; 12] = b"XenVMMXenVMM";

/// Offset of the version leaf: EAX = major << 16 | minor (cpuid.h leaf 2, "0x40000x01").
pub const XEN_CPUID_LEAF_VERSION: u32 = 1;
/// Offset of the hypercall leaf: EAX = number of hypercall pages, EBX = MSR
/// base, ECX/EDX features (cpuid.h leaf 3, "0x40000x02").
pub const XEN_CPUID_LEAF_HYPERCALL: u32 = 2;
/// Offset of the time leaf (cpuid.h leaf 4, "0x40000x03").
pub const XEN_CPUID_LEAF_TIME: u32 = 3;
/// Offset of the HVM features leaf (cpuid.h leaf 5, "0x40000x04").
pub const XEN_CPUID_LEAF_HVM: u32 = 4;
/// Offset of the PV features leaf (cpuid.h leaf 6, "0x40000x05").
pub const XEN_CPUID_LEAF_PV: u32 = 5;
/// Number of leaves Xen defines after the base (cpuid.h `XEN_CPUID_MAX_NUM_LEAVES`).
pub const XEN_CPUID_MAX_NUM_LEAVES: u32 = 5;

/// Hypercall leaf ECX: `MMU_PT_UPDATE_PRESERVE_AD` supported
/// (cpuid.h `XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD`).
pub const XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD: u32 = 1 << 0;

/// Time leaf EAX: TSC is emulated (cpuid.h `XEN_CPUID_TSC_EMULATED`).
pub const XEN_CPUID_TSC_EMULATED: u32 = 1 << 0;
/// Time leaf EAX: host TSC is reliable (cpuid.h `XEN_CPUID_HOST_TSC_RELIABLE`).
pub const XEN_CPUID_HOST_TSC_RELIABLE: u32 = 1 << 1;
/// Time leaf EAX: RDTSCP available (cpuid.h `XEN_CPUID_RDTSCP_INSTR_AVAIL`).
pub const XEN_CPUID_RDTSCP_INSTR_AVAIL: u32 = 1 << 2;
/// Time leaf EBX: default TSC mode (cpuid.h `XEN_CPUID_TSC_MODE_DEFAULT`).
pub const XEN_CPUID_TSC_MODE_DEFAULT: u32 = 0;
/// Time leaf EBX: always emulate (cpuid.h `XEN_CPUID_TSC_MODE_ALWAYS_EMULATE`).
pub const XEN_CPUID_TSC_MODE_ALWAYS_EMULATE: u32 = 1;
/// Time leaf EBX: never emulate (cpuid.h `XEN_CPUID_TSC_MODE_NEVER_EMULATE`).
pub const XEN_CPUID_TSC_MODE_NEVER_EMULATE: u32 = 2;
/// Time leaf EBX: PV RDTSCP (cpuid.h `XEN_CPUID_TSC_MODE_PVRDTSCP`).
pub const XEN_CPUID_TSC_MODE_PVRDTSCP: u32 = 3;

/// HVM leaf EAX: APIC register access is virtualised (cpuid.h `XEN_HVM_CPUID_APIC_ACCESS_VIRT`).
pub const XEN_HVM_CPUID_APIC_ACCESS_VIRT: u32 = 1 << 0;
/// HVM leaf EAX: x2APIC access is virtualised (cpuid.h `XEN_HVM_CPUID_X2APIC_VIRT`).
pub const XEN_HVM_CPUID_X2APIC_VIRT: u32 = 1 << 1;
/// HVM leaf EAX: foreign mappings have IOMMU entries (cpuid.h `XEN_HVM_CPUID_IOMMU_MAPPINGS`).
pub const XEN_HVM_CPUID_IOMMU_MAPPINGS: u32 = 1 << 2;
/// HVM leaf EAX: EBX holds the vCPU id (cpuid.h `XEN_HVM_CPUID_VCPU_ID_PRESENT`).
pub const XEN_HVM_CPUID_VCPU_ID_PRESENT: u32 = 1 << 3;
/// HVM leaf EAX: ECX holds the domain id (cpuid.h `XEN_HVM_CPUID_DOMID_PRESENT`).
pub const XEN_HVM_CPUID_DOMID_PRESENT: u32 = 1 << 4;
/// HVM leaf EAX: extended destination id in IO-APIC/MSI (cpuid.h `XEN_HVM_CPUID_EXT_DEST_ID`).
pub const XEN_HVM_CPUID_EXT_DEST_ID: u32 = 1 << 5;
/// HVM leaf EAX: per-vCPU upcall vectors work with physical IRQs
/// (cpuid.h `XEN_HVM_CPUID_UPCALL_VECTOR`).
pub const XEN_HVM_CPUID_UPCALL_VECTOR: u32 = 1 << 6;
/// PV leaf EBX: machine address width (cpuid.h `XEN_CPUID_MACHINE_ADDRESS_WIDTH_MASK`).
pub const XEN_CPUID_MACHINE_ADDRESS_WIDTH_MASK: u32 = 0xff;

/// The fact a valid base leaf establishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenCpuidBase {
    /// The base leaf (0x40000x00).
    pub base: u32,
    /// The highest leaf it says is valid (from EAX).
    pub max_leaf: u32,
}

impl XenCpuidBase {
    /// The leaf at `offset` from the base, if the hypervisor reported it.
    pub const fn leaf(&self, offset: u32) -> Option<u32> {
        match self.base.checked_add(offset) {
            Some(l) if l <= self.max_leaf => Some(l),
            _ => None,
        }
    }
}

/// Why a base leaf is not a usable Xen interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenCpuidError {
    /// `base` is not one of the 0x40000x00 candidates.
    BadBase(u32),
    /// EBX/ECX/EDX do not spell "XenVMMXenVMM".
    WrongSignature,
    /// EAX (the highest leaf) is below `base + 2`: no hypercall leaf.
    MaxLeafTooSmall(u32),
    /// EAX points past this base's 0x100 leaves.
    MaxLeafTooLarge(u32),
}

/// Checks the registers `[eax, ebx, ecx, edx]` that CPUID returned for leaf
/// `base`. A usable Xen base spells the signature and reports at least the
/// hypercall leaf (`base + 2`); leaves past the base's 0x100 window are
/// refused.
pub const fn xen_cpuid_base_check(
    base: u32,
    regs: [u32; 4],
) -> Result<XenCpuidBase, XenCpuidError> {
    if base < XEN_CPUID_FIRST_LEAF
        || base >= XEN_CPUID_BASE_END
        || !base.is_multiple_of(XEN_CPUID_BASE_STEP)
    {
        return Err(XenCpuidError::BadBase(base));
    }
    let [eax, ebx, ecx, edx] = regs;
    if ebx != XEN_CPUID_SIGNATURE_EBX
        || ecx != XEN_CPUID_SIGNATURE_ECX
        || edx != XEN_CPUID_SIGNATURE_EDX
    {
        return Err(XenCpuidError::WrongSignature);
    }
    if eax < base + XEN_CPUID_LEAF_HYPERCALL {
        return Err(XenCpuidError::MaxLeafTooSmall(eax));
    }
    if eax >= base + XEN_CPUID_BASE_STEP {
        return Err(XenCpuidError::MaxLeafTooLarge(eax));
    }
    Ok(XenCpuidBase {
        base,
        max_leaf: eax,
    })
}

/// The registers `[eax, ebx, ecx, edx]` a hypervisor returns for leaf
/// `base` when its highest leaf is `base + last`: EAX and the signature.
pub const fn xen_cpuid_base_regs(base: u32, last: u32) -> [u32; 4] {
    [
        base.wrapping_add(last),
        XEN_CPUID_SIGNATURE_EBX,
        XEN_CPUID_SIGNATURE_ECX,
        XEN_CPUID_SIGNATURE_EDX,
    ]
}

/// Splits the version leaf's EAX into (major, minor).
pub const fn xen_cpuid_version(eax: u32) -> (u16, u16) {
    ((eax >> 16) as u16, eax as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_constants_spell_the_string() {
        let mut bytes = [0u8; 12];
        bytes[0..4].copy_from_slice(&XEN_CPUID_SIGNATURE_EBX.to_le_bytes());
        bytes[4..8].copy_from_slice(&XEN_CPUID_SIGNATURE_ECX.to_le_bytes());
        bytes[8..12].copy_from_slice(&XEN_CPUID_SIGNATURE_EDX.to_le_bytes());
        assert_eq!(&bytes, XEN_CPUID_SIGNATURE);
    }

    #[test]
    fn accepts_a_xen_base() {
        let base = XEN_CPUID_FIRST_LEAF + 0x100;
        let info = xen_cpuid_base_check(base, xen_cpuid_base_regs(base, 5)).unwrap();
        assert_eq!(info.max_leaf, base + 5);
        assert_eq!(info.leaf(XEN_CPUID_LEAF_HVM), Some(base + 4));
        assert_eq!(info.leaf(6), None);
        assert_eq!(info.leaf(u32::MAX), None);
        assert_eq!(XEN_CPUID_LEAF(2), 0x4000_0002);
    }

    #[test]
    fn rejects_wrong_signature() {
        let base = XEN_CPUID_FIRST_LEAF;
        // KVM's signature.
        let kvm = [base + 1, 0x4b4d_564b, 0x564b_4d56, 0x4d];
        assert_eq!(
            xen_cpuid_base_check(base, kvm),
            Err(XenCpuidError::WrongSignature)
        );
        let mut regs = xen_cpuid_base_regs(base, 5);
        regs[3] ^= 1;
        assert_eq!(
            xen_cpuid_base_check(base, regs),
            Err(XenCpuidError::WrongSignature)
        );
        assert_eq!(
            xen_cpuid_base_check(base, [0; 4]),
            Err(XenCpuidError::WrongSignature)
        );
    }

    #[test]
    fn rejects_bad_max_leaf() {
        let base = XEN_CPUID_FIRST_LEAF;
        for small in [0, 1] {
            assert_eq!(
                xen_cpuid_base_check(base, xen_cpuid_base_regs(base, small)),
                Err(XenCpuidError::MaxLeafTooSmall(base + small))
            );
        }
        assert_eq!(
            xen_cpuid_base_check(base, xen_cpuid_base_regs(base, 0)).unwrap_err(),
            XenCpuidError::MaxLeafTooSmall(base)
        );
        // EAX below the base altogether (e.g. 0).
        let mut regs = xen_cpuid_base_regs(base, 5);
        regs[0] = 0;
        assert_eq!(
            xen_cpuid_base_check(base, regs),
            Err(XenCpuidError::MaxLeafTooSmall(0))
        );
        assert_eq!(
            xen_cpuid_base_check(base, xen_cpuid_base_regs(base, 0x100)),
            Err(XenCpuidError::MaxLeafTooLarge(base + 0x100))
        );
        assert!(xen_cpuid_base_check(base, xen_cpuid_base_regs(base, 2)).is_ok());
    }

    #[test]
    fn rejects_bad_base() {
        let regs = xen_cpuid_base_regs(0, 5);
        for base in [
            0,
            0x3fff_ff00,
            0x4000_0001,
            0x4000_0080,
            0x4001_0000,
            u32::MAX,
        ] {
            assert_eq!(
                xen_cpuid_base_check(base, regs),
                Err(XenCpuidError::BadBase(base))
            );
        }
    }

    #[test]
    fn version_split() {
        assert_eq!(xen_cpuid_version(0x0004_0011), (4, 17));
    }
}

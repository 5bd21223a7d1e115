//! Feature bits reported by `XENVER_get_features`:
//! `xen/include/public/features.h`.

/// The guest may write its page tables directly (features.h `XENFEAT_writable_page_tables`).
pub const XENFEAT_writable_page_tables: u32 = 0;
/// The guest may write its descriptor tables directly (features.h `XENFEAT_writable_descriptor_tables`).
pub const XENFEAT_writable_descriptor_tables: u32 = 1;
/// The physmap is translated: guest frames are not machine frames
/// (features.h `XENFEAT_auto_translated_physmap`).
pub const XENFEAT_auto_translated_physmap: u32 = 2;
/// The guest kernel runs in ring 0 (features.h `XENFEAT_supervisor_mode_kernel`).
pub const XENFEAT_supervisor_mode_kernel: u32 = 3;
/// PAE page directories may sit above 4 GiB (features.h `XENFEAT_pae_pgdir_above_4gb`).
pub const XENFEAT_pae_pgdir_above_4gb: u32 = 4;
/// `MMU_PT_UPDATE_PRESERVE_AD` is available (features.h `XENFEAT_mmu_pt_update_preserve_ad`).
pub const XENFEAT_mmu_pt_update_preserve_ad: u32 = 5;
/// Highmem assist is available (features.h `XENFEAT_highmem_assist`).
pub const XENFEAT_highmem_assist: u32 = 6;
/// Grant mappings honour the available PTE bits (features.h `XENFEAT_gnttab_map_avail_bits`).
pub const XENFEAT_gnttab_map_avail_bits: u32 = 7;
/// Event upcalls may be delivered as an IDT vector
/// (features.h `XENFEAT_hvm_callback_vector`).
pub const XENFEAT_hvm_callback_vector: u32 = 8;
/// The pvclock is safe to use in HVM guests (features.h `XENFEAT_hvm_safe_pvclock`).
pub const XENFEAT_hvm_safe_pvclock: u32 = 9;
/// Physical IRQs are delivered as events (features.h `XENFEAT_hvm_pirqs`).
pub const XENFEAT_hvm_pirqs: u32 = 10;
/// The domain is the control domain (features.h `XENFEAT_dom0`).
pub const XENFEAT_dom0: u32 = 11;
/// Grant mappings are 1:1 (features.h `XENFEAT_grant_map_identity`).
pub const XENFEAT_grant_map_identity: u32 = 12;
/// `memory_op` accepts vNUMA node arguments (features.h `XENFEAT_memory_op_vnode_supported`).
pub const XENFEAT_memory_op_vnode_supported: u32 = 13;
/// Arm SMCCC is available (features.h `XENFEAT_ARM_SMCCC_supported`).
pub const XENFEAT_ARM_SMCCC_supported: u32 = 14;
/// Linux may place the RSDP anywhere (features.h `XENFEAT_linux_rsdp_unrestricted`).
pub const XENFEAT_linux_rsdp_unrestricted: u32 = 15;
/// The domain's memory is not 1:1 mapped (features.h `XENFEAT_not_direct_mapped`).
pub const XENFEAT_not_direct_mapped: u32 = 16;
/// The domain's memory is 1:1 mapped (features.h `XENFEAT_direct_mapped`).
pub const XENFEAT_direct_mapped: u32 = 17;
/// Runstate areas may be registered by physical address (features.h `XENFEAT_runstate_phys_area`).
pub const XENFEAT_runstate_phys_area: u32 = 18;
/// Time areas may be registered by physical address (features.h `XENFEAT_vcpu_time_phys_area`).
pub const XENFEAT_vcpu_time_phys_area: u32 = 19;
/// All MSI-X writes reach the device model (features.h `XENFEAT_dm_msix_all_writes`).
pub const XENFEAT_dm_msix_all_writes: u32 = 20;
/// Number of 32-bit feature words (features.h `XENFEAT_NR_SUBMAPS`).
pub const XENFEAT_NR_SUBMAPS: u32 = 1;

/// Whether feature `feat` is set in the words returned by
/// `XENVER_get_features` (`submaps[i]` holds features `32*i..32*i+32`).
/// Features beyond the given words are reported absent.
pub fn xen_feature_set(submaps: &[u32], feat: u32) -> bool {
    let word = (feat / 32) as usize;
    submaps
        .get(word)
        .is_some_and(|w| w & (1 << (feat % 32)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_lookup() {
        let words = [(1 << XENFEAT_auto_translated_physmap) | (1 << XENFEAT_hvm_callback_vector)];
        assert!(xen_feature_set(&words, XENFEAT_hvm_callback_vector));
        assert!(xen_feature_set(&words, XENFEAT_auto_translated_physmap));
        assert!(!xen_feature_set(&words, XENFEAT_hvm_safe_pvclock));
        assert!(!xen_feature_set(&words, 32), "beyond the given words");
        assert!(!xen_feature_set(&[], XENFEAT_dom0));
        assert!(!xen_feature_set(&words, u32::MAX));
    }
}

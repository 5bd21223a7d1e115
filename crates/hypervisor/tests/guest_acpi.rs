//! The guest ACPI tables, parsed back by the `acpi` crate as a guest's
//! kernel would parse them: signatures, checksums, revisions and contents.

use acpi::{AcpiHandler, AcpiTables, PhysicalMapping, fadt::Fadt, madt::Madt, madt::MadtEntry};
use hypervisor::guest_acpi::{self, ACPI_BASE, LAPIC_ADDRESS, SLEEP_CONTROL_PORT};
use std::ptr::NonNull;
use std::sync::Arc;

/// Maps guest-physical addresses into the built table bytes.
#[derive(Clone)]
struct GuestView(Arc<Vec<u8>>);

impl AcpiHandler for GuestView {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        let off = (phys as u64)
            .checked_sub(ACPI_BASE)
            .expect("the guest's tables only point into their own region")
            as usize;
        assert!(off + size <= self.0.len(), "mapping past the tables");
        let ptr = NonNull::new(self.0.as_ptr().wrapping_add(off) as *mut T).unwrap();
        // SAFETY: [off, off + size) lies inside the Vec (checked), which the
        // Arc in the returned mapping's handler keeps alive; the acpi crate
        // only reads through it.
        unsafe { PhysicalMapping::new(phys, ptr, size, size, self.clone()) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

fn parse(vcpus: u32) -> AcpiTables<GuestView> {
    let t = guest_acpi::build(vcpus).unwrap();
    // SAFETY: the handler above maps only inside the built tables.
    unsafe { AcpiTables::from_rsdp(GuestView(Arc::new(t.bytes)), t.rsdp as usize) }
        .expect("the acpi crate accepts our RSDP and XSDT")
}

#[test]
fn madt_lists_every_vcpu_with_xen_apic_ids() {
    for vcpus in [1, 2, 7, 128] {
        let tables = parse(vcpus);
        let madt = tables.find_table::<Madt>().expect("MADT present");
        let lapic = { madt.get().local_apic_address };
        assert_eq!(lapic, LAPIC_ADDRESS);
        let ids: Vec<(u8, u8)> = madt
            .get()
            .entries()
            .filter_map(|e| match e {
                MadtEntry::LocalApic(l) if l.flags & 1 == 1 => Some((l.processor_id, l.apic_id)),
                _ => None,
            })
            .collect();
        let want: Vec<(u8, u8)> = (0..vcpus).map(|v| (v as u8, (2 * v) as u8)).collect();
        assert_eq!(ids, want, "{vcpus} vCPUs");
    }
}

#[test]
fn fadt_is_hardware_reduced_with_sleep_registers_and_a_dsdt() {
    let tables = parse(2);
    let fadt = tables.find_table::<Fadt>().expect("FADT present");
    let flags = { fadt.get().flags };
    assert!(flags.system_is_hw_reduced_acpi());
    let sleep = fadt
        .get()
        .sleep_control_register()
        .unwrap()
        .expect("sleep control register");
    assert_eq!(sleep.address, u64::from(SLEEP_CONTROL_PORT));
    assert!(matches!(
        sleep.address_space,
        acpi::address::AddressSpace::SystemIo
    ));
    let dsdt = tables.dsdt().expect("DSDT reachable from the FADT");
    assert_eq!(
        dsdt.address as u64,
        fadt.get().dsdt_address().unwrap() as u64 + 36
    );
    assert!(dsdt.length > 0, "the DSDT carries the \\_S5 package");
}

#[test]
fn a_corrupted_table_is_rejected_by_the_parser() {
    let mut t = guest_acpi::build(2).unwrap();
    let madt_off = t.bytes.len() - (36 + 8 + 16);
    assert_eq!(&t.bytes[madt_off..madt_off + 4], b"APIC");
    t.bytes[madt_off + 40] ^= 0xff; // flags, without fixing the checksum
    // SAFETY: the handler maps only inside the built tables.
    let tables =
        unsafe { AcpiTables::from_rsdp(GuestView(Arc::new(t.bytes)), t.rsdp as usize) }.unwrap();
    assert!(tables.find_table::<Madt>().is_err());
}

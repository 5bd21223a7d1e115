//! ACPI tables for a PVH guest: RSDP, XSDT, a hardware-reduced FADT, a
//! DSDT holding only the `\_S5` sleep package, and a MADT with one local
//! APIC per vCPU, laid out as Xen lays them out for a PVH domU.
//!
//! Linux uses the MADT to find and start its other vCPUs (INIT/SIPI through
//! the emulated local APIC) and the FADT's sleep registers to power off
//! (`poweroff` enters S5 by writing `SLP_TYP | SLP_EN` to
//! [`SLEEP_CONTROL_PORT`], which the hypervisor intercepts). The tables are
//! built as bytes, to be copied into guest memory at [`ACPI_BASE`]; the
//! hypervisor publishes [`Tables::rsdp`] in `hvm_start_info.rsdp_paddr`.

use alloc::vec::Vec;

/// Where Xen places a PVH guest's ACPI tables (a reserved/NVS region).
pub const ACPI_BASE: u64 = 0xfc00_0000;
/// Guest-physical address of the local APIC registers.
pub const LAPIC_ADDRESS: u32 = 0xfee0_0000;
/// I/O port of the FADT's sleep control register (one byte).
pub const SLEEP_CONTROL_PORT: u16 = 0xb004;
/// I/O port of the FADT's sleep status register (one byte).
pub const SLEEP_STATUS_PORT: u16 = 0xb005;
/// The `SLP_TYP` value the DSDT's `\_S5` package gives for soft-off.
pub const SLP_TYP_S5: u8 = 5;
/// The sleep control register's sleep-enable bit.
pub const SLP_EN: u8 = 1 << 5;
/// Most vCPUs the MADT describes (APIC ids are 2 x vCPU id and must fit a
/// byte in the xAPIC entries used).
pub const MAX_VCPUS: u32 = 128;

/// The APIC id of a vCPU, as Xen assigns them.
pub const fn vcpu_apic_id(vcpu: u32) -> u32 {
    vcpu * 2
}

const OEM_ID: &[u8; 6] = b"RUSTHV";
const OEM_TABLE_ID: &[u8; 8] = b"PVHGUEST";
const CREATOR_ID: &[u8; 4] = b"RSHV";

const RSDP_OFF: usize = 0x00;
const XSDT_OFF: usize = 0x40;
const FADT_OFF: usize = 0x80;
const DSDT_OFF: usize = 0x200;
const MADT_OFF: usize = 0x240;

const RSDP_LEN: usize = 36;
const _: () = assert!(RSDP_OFF + RSDP_LEN <= XSDT_OFF);
const FADT_LEN: usize = 276;
const HEADER_LEN: usize = 36;

/// The `\_S5` package: Name(_S5_, Package(2) { 5, 5 }) in AML.
const DSDT_AML: [u8; 12] = [
    0x08, b'_', b'S', b'5', b'_', // NameOp "_S5_"
    0x12, 0x06, 0x02, // PackageOp, PkgLength 6, 2 elements
    0x0a, SLP_TYP_S5, // BytePrefix 5 (SLP_TYPa)
    0x0a, SLP_TYP_S5, // BytePrefix 5 (SLP_TYPb)
];

/// Built tables.
#[derive(Clone, Debug)]
pub struct Tables {
    /// The bytes to copy to [`ACPI_BASE`].
    pub bytes: Vec<u8>,
    /// Guest-physical address of the RSDP.
    pub rsdp: u64,
}

/// Why tables could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiBuildError {
    /// Zero vCPUs, or more than [`MAX_VCPUS`].
    BadVcpuCount(u32),
}

/// Builds the tables for a guest with `vcpus` vCPUs.
pub fn build(vcpus: u32) -> Result<Tables, AcpiBuildError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(AcpiBuildError::BadVcpuCount(vcpus));
    }
    let madt_len = HEADER_LEN + 8 + 8 * vcpus as usize;
    let mut b = alloc::vec![0u8; MADT_OFF + madt_len];
    let addr = |off: usize| ACPI_BASE + off as u64;

    // RSDP (ACPI 2.0+): signature, checksum, OEM, revision 2, RSDT 0,
    // length, XSDT, extended checksum.
    {
        let r = &mut b[RSDP_OFF..RSDP_OFF + RSDP_LEN];
        r[0..8].copy_from_slice(b"RSD PTR ");
        r[9..15].copy_from_slice(OEM_ID);
        r[15] = 2;
        r[20..24].copy_from_slice(&(RSDP_LEN as u32).to_le_bytes());
        r[24..32].copy_from_slice(&addr(XSDT_OFF).to_le_bytes());
        r[8] = checksum(&r[0..20]);
        r[32] = checksum(r);
    }

    // XSDT: the FADT and the MADT.
    {
        let len = HEADER_LEN + 16;
        header(&mut b[XSDT_OFF..], b"XSDT", len, 1);
        b[XSDT_OFF + 36..XSDT_OFF + 44].copy_from_slice(&addr(FADT_OFF).to_le_bytes());
        b[XSDT_OFF + 44..XSDT_OFF + 52].copy_from_slice(&addr(MADT_OFF).to_le_bytes());
        finish(&mut b[XSDT_OFF..XSDT_OFF + len]);
    }

    // FADT, revision 5, hardware-reduced.
    {
        let f = &mut b[FADT_OFF..FADT_OFF + FADT_LEN];
        header(f, b"FACP", FADT_LEN, 5);
        f[40..44].copy_from_slice(&(addr(DSDT_OFF) as u32).to_le_bytes());
        // IAPC_BOOT_ARCH: VGA not present (bit 2), CMOS RTC not present (bit 5).
        f[109..111].copy_from_slice(&((1u16 << 2) | (1 << 5)).to_le_bytes());
        // Flags: HW_REDUCED_ACPI (bit 20).
        f[112..116].copy_from_slice(&(1u32 << 20).to_le_bytes());
        f[131] = 1; // FADT minor version
        f[140..148].copy_from_slice(&addr(DSDT_OFF).to_le_bytes());
        gas_io(&mut f[244..256], SLEEP_CONTROL_PORT);
        gas_io(&mut f[256..268], SLEEP_STATUS_PORT);
        f[268..276].copy_from_slice(b"XenVMM\0\0");
        finish(f);
    }

    // DSDT: the \_S5 package only.
    {
        let len = HEADER_LEN + DSDT_AML.len();
        header(&mut b[DSDT_OFF..], b"DSDT", len, 2);
        b[DSDT_OFF + HEADER_LEN..DSDT_OFF + len].copy_from_slice(&DSDT_AML);
        finish(&mut b[DSDT_OFF..DSDT_OFF + len]);
    }

    // MADT: local APIC address, flags 0 (no 8259s), one entry per vCPU.
    {
        let m = &mut b[MADT_OFF..MADT_OFF + madt_len];
        header(m, b"APIC", madt_len, 4);
        m[36..40].copy_from_slice(&LAPIC_ADDRESS.to_le_bytes());
        for v in 0..vcpus {
            let e = &mut m[44 + 8 * v as usize..52 + 8 * v as usize];
            e[0] = 0; // processor local APIC
            e[1] = 8;
            e[2] = v as u8; // ACPI processor id
            e[3] = vcpu_apic_id(v) as u8;
            e[4..8].copy_from_slice(&1u32.to_le_bytes()); // enabled
        }
        finish(m);
    }

    Ok(Tables {
        bytes: b,
        rsdp: addr(RSDP_OFF),
    })
}

/// Writes a system description table header (checksum left for `finish`).
fn header(t: &mut [u8], sig: &[u8; 4], len: usize, revision: u8) {
    t[0..4].copy_from_slice(sig);
    t[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    t[8] = revision;
    t[10..16].copy_from_slice(OEM_ID);
    t[16..24].copy_from_slice(OEM_TABLE_ID);
    t[24..28].copy_from_slice(&1u32.to_le_bytes());
    t[28..32].copy_from_slice(CREATOR_ID);
    t[32..36].copy_from_slice(&1u32.to_le_bytes());
}

/// Sets the checksum byte (offset 9) so that the table sums to zero.
fn finish(t: &mut [u8]) {
    t[9] = 0;
    t[9] = checksum(t);
}

/// A generic address structure naming a one-byte I/O port.
fn gas_io(g: &mut [u8], port: u16) {
    g[0] = 1; // system I/O space
    g[1] = 8; // register bit width
    g[2] = 0; // bit offset
    g[3] = 1; // byte access
    g[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
}

/// The byte that makes `bytes` sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |s, &x| s.wrapping_add(x))
        .wrapping_neg()
}

/// What a write of `value` to the sleep control register asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SleepRequest {
    /// Soft-off (S5): power the domain off.
    PowerOff,
    /// Another sleep state, which PVH guests do not get.
    Unsupported(u8),
    /// SLP_EN clear: no request.
    None,
}

/// Decodes a guest's write to [`SLEEP_CONTROL_PORT`].
pub fn decode_sleep_control(value: u8) -> SleepRequest {
    if value & SLP_EN == 0 {
        return SleepRequest::None;
    }
    match (value >> 2) & 0x7 {
        SLP_TYP_S5 => SleepRequest::PowerOff,
        other => SleepRequest::Unsupported(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_sums_to_zero() {
        let t = build(4).unwrap();
        let b = &t.bytes;
        assert_eq!(checksum(&b[0..20]), 0);
        assert_eq!(checksum(&b[0..RSDP_LEN]), 0);
        for off in [XSDT_OFF, FADT_OFF, DSDT_OFF, MADT_OFF] {
            let len = u32::from_le_bytes(b[off + 4..off + 8].try_into().unwrap()) as usize;
            assert_eq!(checksum(&b[off..off + len]), 0, "table at {off:#x}");
        }
    }

    #[test]
    fn tables_do_not_overlap() {
        let t = build(MAX_VCPUS).unwrap();
        let len =
            |off: usize| u32::from_le_bytes(t.bytes[off + 4..off + 8].try_into().unwrap()) as usize;
        assert!(XSDT_OFF + len(XSDT_OFF) <= FADT_OFF);
        assert!(FADT_OFF + len(FADT_OFF) <= DSDT_OFF);
        assert!(DSDT_OFF + len(DSDT_OFF) <= MADT_OFF);
        assert_eq!(MADT_OFF + len(MADT_OFF), t.bytes.len());
    }

    #[test]
    fn vcpu_counts_are_checked() {
        assert_eq!(build(0).unwrap_err(), AcpiBuildError::BadVcpuCount(0));
        assert_eq!(
            build(MAX_VCPUS + 1).unwrap_err(),
            AcpiBuildError::BadVcpuCount(MAX_VCPUS + 1)
        );
        assert!(build(MAX_VCPUS).is_ok());
    }

    #[test]
    fn sleep_control_decoding() {
        assert_eq!(
            decode_sleep_control((SLP_TYP_S5 << 2) | SLP_EN),
            SleepRequest::PowerOff
        );
        assert_eq!(decode_sleep_control(SLP_TYP_S5 << 2), SleepRequest::None);
        assert_eq!(
            decode_sleep_control((3 << 2) | SLP_EN),
            SleepRequest::Unsupported(3)
        );
    }
}

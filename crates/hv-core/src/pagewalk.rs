//! Guest linear to guest-physical translation by walking the guest's own
//! page tables, as hypercall arguments of HVM/PVH guests are linear
//! addresses (Xen's `hvm_copy_*_guest_linear`).
//!
//! Supported: paging off, 32-bit two-level (with 4 MiB pages when PSE),
//! PAE three-level, long mode four- and five-level, large pages at every
//! level the mode allows. Supervisor accesses: writes honour the R/W bit
//! when CR0.WP is set. Any malformed entry or unreadable table is a fault.

use crate::guestmem::GuestMem;
use crate::types::{Errno, PAGE_SIZE, XenResult};

const CR0_PG: u64 = 1 << 31;
const CR0_WP: u64 = 1 << 16;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;

const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_PS: u64 = 1 << 7;
/// Physical-address bits 51:12 of a 64-bit entry.
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// The paging controls of a vCPU at the time of a hypercall.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingMode {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
}

impl PagingMode {
    /// Paging disabled: linear equals physical.
    pub const FLAT: PagingMode = PagingMode {
        cr0: 0x11,
        cr3: 0,
        cr4: 0,
        efer: 0,
    };

    /// Translates linear address `la` for a supervisor access.
    pub fn translate(&self, mem: &GuestMem<'_>, la: u64, write: bool) -> XenResult<u64> {
        if self.cr0 & CR0_PG == 0 {
            return Ok(la & 0xFFFF_FFFF);
        }
        let wp = self.cr0 & CR0_WP != 0;
        if self.efer & EFER_LMA != 0 {
            let levels = if self.cr4 & CR4_LA57 != 0 { 5 } else { 4 };
            let va_bits = 12 + 9 * levels;
            // Canonical check.
            let top = (la as i64) >> (va_bits - 1);
            if top != 0 && top != -1 {
                return Err(Errno::EFAULT);
            }
            walk64(mem, self.cr3 & ADDR_MASK, la, levels, write && wp)
        } else if self.cr4 & CR4_PAE != 0 {
            let la = la & 0xFFFF_FFFF;
            let pdpte = mem.load_u64((self.cr3 & 0xFFFF_FFE0) + ((la >> 30) & 3) * 8)?;
            if pdpte & PTE_P == 0 {
                return Err(Errno::EFAULT);
            }
            walk64(mem, pdpte & ADDR_MASK, la, 2, write && wp)
        } else {
            let la = la & 0xFFFF_FFFF;
            let pde = mem.load_u32((self.cr3 & 0xFFFF_F000) + ((la >> 22) & 0x3FF) * 4)? as u64;
            if pde & PTE_P == 0 || (write && wp && pde & PTE_RW == 0) {
                return Err(Errno::EFAULT);
            }
            if pde & PTE_PS != 0 && self.cr4 & CR4_PSE != 0 {
                // 4 MiB page: bits 31:22 plus PSE-36 bits 20:13 as 39:32.
                let base = (pde & 0xFFC0_0000) | ((pde >> 13) & 0xFF) << 32;
                return Ok(base | (la & 0x3F_FFFF));
            }
            let pte = mem.load_u32((pde & 0xFFFF_F000) + ((la >> 12) & 0x3FF) * 4)? as u64;
            if pte & PTE_P == 0 || (write && wp && pte & PTE_RW == 0) {
                return Err(Errno::EFAULT);
            }
            Ok((pte & 0xFFFF_F000) | (la & 0xFFF))
        }
    }
}

/// Walks `levels` levels of 64-bit entries from `table`.
fn walk64(
    mem: &GuestMem<'_>,
    mut table: u64,
    la: u64,
    levels: u32,
    check_rw: bool,
) -> XenResult<u64> {
    for level in (0..levels).rev() {
        let shift = 12 + 9 * level;
        let idx = (la >> shift) & 0x1FF;
        let e = mem.load_u64(table + idx * 8)?;
        if e & PTE_P == 0 || (check_rw && e & PTE_RW == 0) {
            return Err(Errno::EFAULT);
        }
        // Large pages exist at the 2 MiB and 1 GiB levels only.
        if level > 0 && e & PTE_PS != 0 {
            if level > 2 {
                return Err(Errno::EFAULT);
            }
            let size = 1u64 << shift;
            return Ok((e & ADDR_MASK & !(size - 1)) | (la & (size - 1)));
        }
        table = e & ADDR_MASK;
    }
    Ok(table | (la & (PAGE_SIZE as u64 - 1)))
}

/// Guest memory seen through a vCPU's linear addresses.
#[derive(Clone, Copy)]
pub struct GuestVirt<'a> {
    /// Guest-physical memory.
    pub mem: GuestMem<'a>,
    /// The vCPU's paging controls.
    pub mode: PagingMode,
}

impl GuestVirt<'_> {
    fn each_page(
        &self,
        la: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(u64, core::ops::Range<usize>) -> XenResult<()>,
    ) -> XenResult<()> {
        la.checked_add(len as u64).ok_or(Errno::EFAULT)?;
        let mut done = 0usize;
        while done < len {
            let at = la + done as u64;
            let off = (at as usize) & (PAGE_SIZE - 1);
            let n = (PAGE_SIZE - off).min(len - done);
            let gpa = self.mode.translate(&self.mem, at, write)?;
            f(gpa, done..done + n)?;
            done += n;
        }
        Ok(())
    }

    /// Copies from guest linear address `la` (`copy_from_guest`).
    pub fn read(&self, la: u64, buf: &mut [u8]) -> XenResult<()> {
        let mem = self.mem;
        self.each_page(la, buf.len(), false, |gpa, r| mem.read(gpa, &mut buf[r]))
    }

    /// Copies to guest linear address `la` (`copy_to_guest`).
    pub fn write(&self, la: u64, data: &[u8]) -> XenResult<()> {
        let mem = self.mem;
        self.each_page(la, data.len(), true, |gpa, r| mem.write(gpa, &data[r]))
    }

    /// Reads an ABI struct at `la`.
    pub fn read_obj<T: zerocopy::FromBytes + zerocopy::IntoBytes>(&self, la: u64) -> XenResult<T> {
        let mut v = T::new_zeroed();
        self.read(la, v.as_mut_bytes())?;
        Ok(v)
    }

    /// Writes an ABI struct at `la`.
    pub fn write_obj<T: zerocopy::IntoBytes + zerocopy::Immutable>(
        &self,
        la: u64,
        v: &T,
    ) -> XenResult<()> {
        self.write(la, v.as_bytes())
    }

    /// Translates one linear address to guest-physical.
    pub fn to_gpa(&self, la: u64, write: bool) -> XenResult<u64> {
        self.mode.translate(&self.mem, la, write)
    }
}

//! The block device ring protocol: `xen/include/public/io/blkif.h`.
//!
//! Entries in x86_64 layout ([`BlkifRequest`], 112 bytes) and in the layout
//! a 32-bit x86 front end uses ([`Blkif32Request`], 108 bytes, 64-bit
//! fields only 4-aligned), which a back end must read when the front end's
//! `protocol` key is `x86_32-abi`.

use crate::GrantRef;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A virtual device handle (blkif.h `blkif_vdev_t`).
pub type BlkifVdev = u16;
/// A sector number, in 512-byte units (blkif.h `blkif_sector_t`).
pub type BlkifSector = u64;

/// Read (blkif.h `BLKIF_OP_READ`).
pub const BLKIF_OP_READ: u8 = 0;
/// Write (blkif.h `BLKIF_OP_WRITE`).
pub const BLKIF_OP_WRITE: u8 = 1;
/// Write with barrier, if `feature-barrier` (blkif.h `BLKIF_OP_WRITE_BARRIER`).
pub const BLKIF_OP_WRITE_BARRIER: u8 = 2;
/// Flush the disk cache, if `feature-flush-cache` (blkif.h `BLKIF_OP_FLUSH_DISKCACHE`).
pub const BLKIF_OP_FLUSH_DISKCACHE: u8 = 3;
/// Reserved, used by old blktap (blkif.h `BLKIF_OP_RESERVED_1`).
pub const BLKIF_OP_RESERVED_1: u8 = 4;
/// Discard, if `feature-discard`; entry [`BlkifRequestDiscard`] (blkif.h `BLKIF_OP_DISCARD`).
pub const BLKIF_OP_DISCARD: u8 = 5;
/// Indirect request, if `feature-max-indirect-segments`; entry
/// [`BlkifRequestIndirect`] (blkif.h `BLKIF_OP_INDIRECT`).
pub const BLKIF_OP_INDIRECT: u8 = 6;
/// Segments in a direct request (blkif.h `BLKIF_MAX_SEGMENTS_PER_REQUEST`).
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// Indirect pages in an indirect request (blkif.h `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`).
pub const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// Discard flag: secure erase (blkif.h `BLKIF_DISCARD_SECURE`).
pub const BLKIF_DISCARD_SECURE: u8 = 1 << 0;
/// Response status: unsupported operation (blkif.h `BLKIF_RSP_EOPNOTSUPP`).
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;
/// Response status: error (blkif.h `BLKIF_RSP_ERROR`).
pub const BLKIF_RSP_ERROR: i16 = -1;
/// Response status: success (blkif.h `BLKIF_RSP_OKAY`).
pub const BLKIF_RSP_OKAY: i16 = 0;
/// `info` bit: CD-ROM (blkif.h `VDISK_CDROM`).
pub const VDISK_CDROM: u32 = 0x1;
/// `info` bit: removable (blkif.h `VDISK_REMOVABLE`).
pub const VDISK_REMOVABLE: u32 = 0x2;
/// `info` bit: read-only (blkif.h `VDISK_READONLY`).
pub const VDISK_READONLY: u32 = 0x4;
/// Sector size the protocol counts in, bytes (blkif.h: 512-byte sectors).
pub const BLKIF_SECTOR_SIZE: u64 = 512;

/// A block operation (blkif.h `BLKIF_OP_*`), built only by
/// [`BlkifOp::try_from`] from a request's `operation` byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlkifOp {
    /// `BLKIF_OP_READ`.
    Read = BLKIF_OP_READ,
    /// `BLKIF_OP_WRITE`.
    Write = BLKIF_OP_WRITE,
    /// `BLKIF_OP_WRITE_BARRIER`.
    WriteBarrier = BLKIF_OP_WRITE_BARRIER,
    /// `BLKIF_OP_FLUSH_DISKCACHE`.
    FlushDiskcache = BLKIF_OP_FLUSH_DISKCACHE,
    /// `BLKIF_OP_DISCARD`.
    Discard = BLKIF_OP_DISCARD,
    /// `BLKIF_OP_INDIRECT`.
    Indirect = BLKIF_OP_INDIRECT,
}

impl TryFrom<u8> for BlkifOp {
    type Error = u8;
    /// Checked conversion; unknown values and the reserved 4 are returned
    /// as the error.
    fn try_from(v: u8) -> Result<Self, u8> {
        Ok(match v {
            BLKIF_OP_READ => Self::Read,
            BLKIF_OP_WRITE => Self::Write,
            BLKIF_OP_WRITE_BARRIER => Self::WriteBarrier,
            BLKIF_OP_FLUSH_DISKCACHE => Self::FlushDiskcache,
            BLKIF_OP_DISCARD => Self::Discard,
            BLKIF_OP_INDIRECT => Self::Indirect,
            other => return Err(other),
        })
    }
}

impl From<BlkifOp> for u8 {
    fn from(op: BlkifOp) -> u8 {
        op as u8
    }
}

/// One data segment: a granted page and an inclusive sector range in it
/// (blkif.h `struct blkif_request_segment`). Both layouts share it.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct BlkifRequestSegment {
    /// Grant of the data page.
    pub gref: GrantRef,
    /// First sector in the page (0-7).
    pub first_sect: u8,
    /// Last sector in the page, inclusive (`first_sect`-7).
    pub last_sect: u8,
    /// Padding.
    pub pad: [u8; 2],
}
crate::assert_layout!(BlkifRequestSegment, 8, { gref: 0, first_sect: 4, last_sect: 5, pad: 6 });

impl BlkifRequestSegment {
    /// Bytes the segment covers, or `None` if its sector range is invalid
    /// (`last_sect` below `first_sect` or past the 4 KiB page).
    pub fn byte_len(&self) -> Option<u32> {
        if self.first_sect > self.last_sect || self.last_sect > 7 {
            return None;
        }
        Some(u32::from(self.last_sect - self.first_sect + 1) * 512)
    }
}

/// A read/write/flush/barrier request (blkif.h `struct blkif_request`, x86_64, 112 bytes).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct BlkifRequest {
    /// `BLKIF_OP_*` (kept as an integer).
    pub operation: u8,
    /// Number of valid entries in `seg` (at most 11; check it).
    pub nr_segments: u8,
    /// Virtual device.
    pub handle: BlkifVdev,
    /// Padding.
    pub pad: u32,
    /// Echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: BlkifSector,
    /// Data segments.
    pub seg: [BlkifRequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}
crate::assert_layout!(BlkifRequest, 112, {
    operation: 0, nr_segments: 1, handle: 2, pad: 4, id: 8, sector_number: 16, seg: 24,
});

impl BlkifRequest {
    /// The segments `nr_segments` says are valid, or `None` if it exceeds 11.
    pub fn segments(&self) -> Option<&[BlkifRequestSegment]> {
        self.seg.get(..usize::from(self.nr_segments))
    }
}

/// A discard request (blkif.h `struct blkif_request_discard`, x86_64).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct BlkifRequestDiscard {
    /// `BLKIF_OP_DISCARD`.
    pub operation: u8,
    /// `BLKIF_DISCARD_*`.
    pub flag: u8,
    /// Virtual device.
    pub handle: BlkifVdev,
    /// Padding.
    pub pad: u32,
    /// Echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: BlkifSector,
    /// Number of sectors.
    pub nr_sectors: u64,
}
crate::assert_layout!(BlkifRequestDiscard, 32, {
    operation: 0, flag: 1, handle: 2, pad: 4, id: 8, sector_number: 16, nr_sectors: 24,
});

/// An indirect request (blkif.h `struct blkif_request_indirect`, x86_64):
/// segments live in granted pages of [`BlkifRequestSegment`]s.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct BlkifRequestIndirect {
    /// `BLKIF_OP_INDIRECT`.
    pub operation: u8,
    /// The real operation (`BLKIF_OP_READ`/`WRITE`).
    pub indirect_op: u8,
    /// Total number of segments.
    pub nr_segments: u16,
    /// Padding.
    pub pad0: u32,
    /// Echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: BlkifSector,
    /// Virtual device.
    pub handle: BlkifVdev,
    /// Padding.
    pub pad1: u16,
    /// Grants of the pages holding the segments.
    pub indirect_grefs: [GrantRef; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
    /// Padding.
    pub pad2: u32,
}
crate::assert_layout!(BlkifRequestIndirect, 64, {
    operation: 0, indirect_op: 1, nr_segments: 2, pad0: 4, id: 8, sector_number: 16,
    handle: 24, pad1: 26, indirect_grefs: 28, pad2: 60,
});

/// A response (blkif.h `struct blkif_response`, x86_64, 16 bytes).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct BlkifResponse {
    /// The request's `id`.
    pub id: u64,
    /// The request's operation.
    pub operation: u8,
    /// Padding.
    pub pad0: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
    /// Padding.
    pub pad1: u32,
}
crate::assert_layout!(BlkifResponse, 16, { id: 0, operation: 8, pad0: 9, status: 10, pad1: 12 });

/// A read/write request in the 32-bit x86 layout (blkif.h `struct
/// blkif_request` compiled for i386: 108 bytes, `id` at 4).
#[repr(C, packed(4))]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Blkif32Request {
    /// `BLKIF_OP_*`.
    pub operation: u8,
    /// Number of valid entries in `seg`.
    pub nr_segments: u8,
    /// Virtual device.
    pub handle: BlkifVdev,
    /// Echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: BlkifSector,
    /// Data segments.
    pub seg: [BlkifRequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}
crate::assert_layout!(Blkif32Request, 108, {
    operation: 0, nr_segments: 1, handle: 2, id: 4, sector_number: 12, seg: 20,
});

/// A discard request in the 32-bit x86 layout (blkif.h `struct blkif_request_discard`, i386).
#[repr(C, packed(4))]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Blkif32RequestDiscard {
    /// `BLKIF_OP_DISCARD`.
    pub operation: u8,
    /// `BLKIF_DISCARD_*`.
    pub flag: u8,
    /// Virtual device.
    pub handle: BlkifVdev,
    /// Echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: BlkifSector,
    /// Number of sectors.
    pub nr_sectors: u64,
}
crate::assert_layout!(Blkif32RequestDiscard, 28, {
    operation: 0, flag: 1, handle: 2, id: 4, sector_number: 12, nr_sectors: 20,
});

/// An indirect request in the 32-bit x86 layout (blkif.h `struct blkif_request_indirect`, i386).
#[repr(C, packed(4))]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Blkif32RequestIndirect {
    /// `BLKIF_OP_INDIRECT`.
    pub operation: u8,
    /// The real operation.
    pub indirect_op: u8,
    /// Total number of segments.
    pub nr_segments: u16,
    /// Echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: BlkifSector,
    /// Virtual device.
    pub handle: BlkifVdev,
    /// Padding.
    pub pad1: u16,
    /// Grants of the pages holding the segments.
    pub indirect_grefs: [GrantRef; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
    /// Padding to 64 bytes (the i386-only `pad` field).
    pub pad: u64,
}
crate::assert_layout!(Blkif32RequestIndirect, 64, {
    operation: 0, indirect_op: 1, nr_segments: 2, id: 4, sector_number: 12, handle: 20,
    pad1: 22, indirect_grefs: 24, pad: 56,
});

/// A response in the 32-bit x86 layout (blkif.h `struct blkif_response`, i386, 12 bytes).
#[repr(C, packed(4))]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Blkif32Response {
    /// The request's `id`.
    pub id: u64,
    /// The request's operation.
    pub operation: u8,
    /// Padding.
    pub pad0: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
}
crate::assert_layout!(Blkif32Response, 12, { id: 0, operation: 8, pad0: 9, status: 10 });

impl From<Blkif32Request> for BlkifRequest {
    /// Converts a 32-bit-layout request to the native one.
    fn from(r: Blkif32Request) -> Self {
        Self {
            operation: r.operation,
            nr_segments: r.nr_segments,
            handle: r.handle,
            pad: 0,
            id: r.id,
            sector_number: r.sector_number,
            seg: r.seg,
        }
    }
}

impl From<BlkifResponse> for Blkif32Response {
    /// Converts a native response to the 32-bit layout.
    fn from(r: BlkifResponse) -> Self {
        Self {
            id: r.id,
            operation: r.operation,
            pad0: 0,
            status: r.status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{XEN_PAGE_SIZE, ring_size};

    #[test]
    fn ring_sizes() {
        let native =
            core::mem::size_of::<BlkifRequest>().max(core::mem::size_of::<BlkifResponse>());
        assert_eq!(ring_size(XEN_PAGE_SIZE, native), 32);
        let compat =
            core::mem::size_of::<Blkif32Request>().max(core::mem::size_of::<Blkif32Response>());
        assert_eq!(ring_size(XEN_PAGE_SIZE, compat), 32);
    }

    #[test]
    fn request_32_bit_layout_from_bytes() {
        let mut raw = [0u8; 108];
        raw[0] = BLKIF_OP_WRITE;
        raw[1] = 2;
        raw[2..4].copy_from_slice(&0x51u16.to_le_bytes());
        raw[4..12].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        raw[12..20].copy_from_slice(&2048u64.to_le_bytes());
        raw[20..24].copy_from_slice(&9u32.to_le_bytes());
        raw[24] = 0;
        raw[25] = 7;
        let r32 = Blkif32Request::read_from_bytes(&raw[..]).unwrap();
        let r = BlkifRequest::from(r32);
        assert_eq!(
            (r.operation, r.handle, r.id, r.sector_number),
            (1, 0x51, 0x1122_3344_5566_7788, 2048)
        );
        assert_eq!(
            r.seg[0],
            BlkifRequestSegment {
                gref: 9,
                first_sect: 0,
                last_sect: 7,
                pad: [0; 2]
            }
        );
        assert_eq!(r.segments().unwrap().len(), 2);
        // The native layout reads the same bytes differently: id is at 8.
        let mut native = [0u8; 112];
        native[..108].copy_from_slice(&raw);
        assert_ne!(BlkifRequest::read_from_bytes(&native[..]).unwrap().id, r.id);
        assert!(Blkif32Request::read_from_bytes(&raw[..107]).is_err());
    }

    #[test]
    fn hostile_segment_counts_and_ranges() {
        let r = BlkifRequest {
            nr_segments: 12,
            ..Default::default()
        };
        assert!(r.segments().is_none());
        let r = BlkifRequest {
            nr_segments: 255,
            ..Default::default()
        };
        assert!(r.segments().is_none());
        let r = BlkifRequest {
            nr_segments: 11,
            ..Default::default()
        };
        assert_eq!(r.segments().unwrap().len(), 11);
        let seg = |f, l| BlkifRequestSegment {
            gref: 0,
            first_sect: f,
            last_sect: l,
            pad: [0; 2],
        };
        assert_eq!(seg(0, 7).byte_len(), Some(4096));
        assert_eq!(seg(3, 3).byte_len(), Some(512));
        assert_eq!(seg(4, 3).byte_len(), None);
        assert_eq!(seg(0, 8).byte_len(), None);
        assert_eq!(seg(255, 255).byte_len(), None);
    }

    #[test]
    fn operations_checked() {
        for v in [0u8, 1, 2, 3, 5, 6] {
            assert_eq!(u8::from(BlkifOp::try_from(v).unwrap()), v);
        }
        assert_eq!(BlkifOp::try_from(BLKIF_OP_RESERVED_1), Err(4));
        assert_eq!(BlkifOp::try_from(7), Err(7));
        assert_eq!(BlkifOp::try_from(u8::MAX), Err(u8::MAX));
    }

    #[test]
    fn response_conversion() {
        let r = BlkifResponse {
            id: 7,
            operation: 1,
            pad0: 0,
            status: BLKIF_RSP_ERROR,
            pad1: 0,
        };
        let r32 = Blkif32Response::from(r);
        let b = r32.as_bytes();
        assert_eq!(b.len(), 12);
        assert_eq!(&b[10..12], &(-1i16).to_le_bytes());
    }
}

//! ELF32/ELF64 parsing for PVH images: program headers and Xen notes.
//!
//! Parsed by hand: a PVH loader needs the ELF header, the program headers
//! and the notes, nothing else, and every field is hostile. Each read goes
//! through [`Bytes`], which checks bounds and never panics; every sum is
//! checked.

use alloc::vec::Vec;
use core::fmt;

use xen_abi::elfnote::{
    XEN_ELFNOTE_GUEST_OS, XEN_ELFNOTE_GUEST_VERSION, XEN_ELFNOTE_LOADER, XEN_ELFNOTE_NAME,
    XEN_ELFNOTE_PHYS32_ENTRY, XEN_ELFNOTE_PHYS32_RELOC, XEN_ELFNOTE_PHYS32_RELOC_DEFAULT_ALIGN,
    XEN_ELFNOTE_XEN_VERSION, phys32_entry_from_desc,
};

/// Highest number of program headers accepted (a kernel has a handful).
pub const MAX_PROGRAM_HEADERS: usize = 512;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;

/// Why an image is not a well-formed little-endian x86 ELF file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than its ELF header.
    Truncated,
    /// No `\x7fELF` magic.
    BadMagic,
    /// `EI_CLASS` is neither 1 (ELF32) nor 2 (ELF64).
    BadClass(u8),
    /// Not little-endian (`EI_DATA` != 1).
    NotLittleEndian(u8),
    /// `e_machine` is neither EM_386 nor EM_X86_64.
    BadMachine(u16),
    /// `e_phentsize` is smaller than a program header of this class.
    BadPhentsize(u16),
    /// More than [`MAX_PROGRAM_HEADERS`] program headers (or `PN_XNUM`).
    TooManyProgramHeaders(u16),
    /// The program header table lies (partly) outside the file.
    ProgramHeadersOutsideFile,
    /// Segment `index`'s file bytes lie (partly) outside the file.
    SegmentOutsideFile {
        /// Program header index.
        index: usize,
    },
    /// Segment `index` has `p_filesz > p_memsz`.
    FileszExceedsMemsz {
        /// Program header index.
        index: usize,
    },
    /// Segment `index`'s `p_paddr + p_memsz` overflows, or ends above 4 GiB
    /// (a PVH kernel starts with paging off).
    SegmentAddressOverflow {
        /// Program header index.
        index: usize,
    },
    /// Two loadable segments overlap in guest-physical memory.
    SegmentsOverlap {
        /// Program header index of the lower segment.
        first: usize,
        /// Program header index of the other segment.
        second: usize,
    },
    /// No `PT_LOAD` segment with bytes to load.
    NoLoadableSegments,
    /// A note in the `PT_NOTE` segment `index` runs past its segment.
    BadNote {
        /// Program header index.
        index: usize,
    },
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ElfError::Truncated => f.write_str("image shorter than an ELF header"),
            ElfError::BadMagic => f.write_str("image is not ELF (bad magic)"),
            ElfError::BadClass(c) => write!(f, "ELF class {c} is neither ELF32 nor ELF64"),
            ElfError::NotLittleEndian(d) => write!(f, "ELF data encoding {d} is not little-endian"),
            ElfError::BadMachine(m) => write!(f, "ELF machine {m} is not x86"),
            ElfError::BadPhentsize(s) => write!(f, "ELF program header size {s} too small"),
            ElfError::TooManyProgramHeaders(n) => write!(f, "{n} program headers: too many"),
            ElfError::ProgramHeadersOutsideFile => {
                f.write_str("program header table lies outside the file")
            }
            ElfError::SegmentOutsideFile { index } => {
                write!(f, "segment {index}: file bytes lie outside the file")
            }
            ElfError::FileszExceedsMemsz { index } => {
                write!(f, "segment {index}: p_filesz exceeds p_memsz")
            }
            ElfError::SegmentAddressOverflow { index } => {
                write!(f, "segment {index}: p_paddr + p_memsz overflows 4 GiB")
            }
            ElfError::SegmentsOverlap { first, second } => {
                write!(f, "segments {first} and {second} overlap")
            }
            ElfError::NoLoadableSegments => f.write_str("no loadable segment"),
            ElfError::BadNote { index } => {
                write!(f, "segment {index}: a note runs past the segment")
            }
        }
    }
}

impl core::error::Error for ElfError {}

/// Why the Xen notes do not describe a bootable PVH kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteError {
    /// No `XEN_ELFNOTE_PHYS32_ENTRY` note: not a PVH kernel.
    NotPvh,
    /// A PHYS32_ENTRY note whose value is not 4 or 8 bytes.
    BadEntryLength(usize),
    /// A PHYS32_RELOC note that is not three 32-bit values.
    BadRelocLength(usize),
    /// A PHYS32_RELOC alignment that is not a power of two of at least 4 KiB.
    BadRelocAlign(u32),
    /// A PHYS32_RELOC note with `min > max`.
    BadRelocRange {
        /// Lowest load address.
        min: u32,
        /// Highest address.
        max: u32,
    },
    /// Two notes of type `note` with different values.
    Conflicting {
        /// The Xen note type.
        note: u32,
    },
    /// The entry point is not inside any loadable segment.
    EntryOutsideImage(u32),
}

impl fmt::Display for NoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NoteError::NotPvh => f.write_str(
                "not a PVH kernel: no XEN_ELFNOTE_PHYS32_ENTRY note (is CONFIG_PVH set?)",
            ),
            NoteError::BadEntryLength(n) => {
                write!(f, "PHYS32_ENTRY note has {n} bytes, expected 4 or 8")
            }
            NoteError::BadRelocLength(n) => {
                write!(f, "PHYS32_RELOC note has {n} bytes, expected 12")
            }
            NoteError::BadRelocAlign(a) => {
                write!(
                    f,
                    "PHYS32_RELOC alignment {a:#x} is not a power of two >= 4 KiB"
                )
            }
            NoteError::BadRelocRange { min, max } => {
                write!(f, "PHYS32_RELOC minimum {min:#x} above maximum {max:#x}")
            }
            NoteError::Conflicting { note } => write!(f, "conflicting Xen notes of type {note}"),
            NoteError::EntryOutsideImage(e) => {
                write!(f, "entry point {e:#x} is outside every loadable segment")
            }
        }
    }
}

impl core::error::Error for NoteError {}

/// ELF file class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfClass {
    /// 32-bit ELF.
    Elf32,
    /// 64-bit ELF.
    Elf64,
}

/// One `PT_LOAD` segment with bytes to load (`p_memsz > 0`), checked: its
/// file bytes lie in the file, `filesz <= memsz`, and it ends at or below
/// 4 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index of its program header.
    pub index: usize,
    /// Guest-physical load address as linked (`p_paddr`).
    pub paddr: u64,
    /// File offset of its bytes (`p_offset`).
    pub offset: u64,
    /// Bytes taken from the file (`p_filesz`).
    pub filesz: u64,
    /// Bytes in memory (`p_memsz`); the rest after `filesz` is zeroed.
    pub memsz: u64,
    /// `p_flags` (bit 0 execute, 1 write, 2 read).
    pub flags: u32,
}

impl Segment {
    /// One past the segment's last guest-physical byte as linked.
    pub fn end(&self) -> u64 {
        // Checked at parse time to stay at or below 4 GiB.
        self.paddr + self.memsz
    }

    /// Whether the segment is executable (`PF_X`).
    pub fn executable(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// `XEN_ELFNOTE_PHYS32_RELOC`: the kernel may be loaded at any address
/// that is a multiple of `align` and lies in `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reloc {
    /// Alignment of the load address (a power of two, at least 4 KiB).
    pub align: u64,
    /// Lowest load address.
    pub min: u64,
    /// Highest address the kernel may occupy (inclusive).
    pub max: u64,
}

/// The Xen notes of an image (strings kept for logs, without their NUL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenNotes<'a> {
    /// `XEN_ELFNOTE_PHYS32_ENTRY`, low 32 bits.
    pub phys32_entry: Option<u32>,
    /// Byte length of the PHYS32_ENTRY value (4 or 8).
    pub phys32_entry_len: usize,
    /// `XEN_ELFNOTE_PHYS32_RELOC`.
    pub reloc: Option<Reloc>,
    /// `XEN_ELFNOTE_GUEST_OS`, e.g. "linux".
    pub guest_os: Option<&'a [u8]>,
    /// `XEN_ELFNOTE_GUEST_VERSION`.
    pub guest_version: Option<&'a [u8]>,
    /// `XEN_ELFNOTE_XEN_VERSION`, e.g. "xen-3.0".
    pub xen_version: Option<&'a [u8]>,
    /// `XEN_ELFNOTE_LOADER`, e.g. "generic".
    pub loader: Option<&'a [u8]>,
    /// How many Xen notes were seen in all.
    pub count: usize,
}

/// What [`parse`](crate::parse) finds in an image, before any placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvhImage<'a> {
    /// The image bytes.
    pub bytes: &'a [u8],
    /// ELF32 or ELF64.
    pub class: ElfClass,
    /// The PVH entry point (from the PHYS32_ENTRY note), as linked.
    pub entry: u32,
    /// Loadable segments, sorted by `paddr`, pairwise disjoint.
    pub segments: Vec<Segment>,
    /// The Xen notes.
    pub notes: XenNotes<'a>,
}

impl PvhImage<'_> {
    /// The guest-physical span `[first segment start, last segment end)`
    /// as linked.
    pub fn span(&self) -> (u64, u64) {
        let start = self.segments.first().map_or(0, |s| s.paddr);
        let end = self.segments.iter().map(Segment::end).max().unwrap_or(0);
        (start, end)
    }

    /// Bytes taken from the file by all segments.
    pub fn file_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.filesz).sum()
    }

    /// The file bytes of `seg` (in bounds: checked at parse time).
    pub fn segment_bytes(&self, seg: &Segment) -> &[u8] {
        Bytes(self.bytes)
            .slice(seg.offset, seg.filesz)
            .unwrap_or_default()
    }
}

/// Bounds-checked little-endian reads.
#[derive(Clone, Copy)]
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn slice(self, off: u64, len: u64) -> Option<&'a [u8]> {
        let off = usize::try_from(off).ok()?;
        let len = usize::try_from(len).ok()?;
        self.0.get(off..off.checked_add(len)?)
    }
    fn array<const N: usize>(self, off: u64) -> Option<[u8; N]> {
        self.slice(off, N as u64)?.try_into().ok()
    }
    fn u16(self, off: u64) -> Option<u16> {
        self.array(off).map(u16::from_le_bytes)
    }
    fn u32(self, off: u64) -> Option<u32> {
        self.array(off).map(u32::from_le_bytes)
    }
    fn u64(self, off: u64) -> Option<u64> {
        self.array(off).map(u64::from_le_bytes)
    }
}

/// The fields of a program header the loader uses.
struct Phdr {
    p_type: u32,
    flags: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

fn read_phdr(b: Bytes<'_>, class: ElfClass, at: u64) -> Option<Phdr> {
    Some(match class {
        ElfClass::Elf32 => Phdr {
            p_type: b.u32(at)?,
            offset: b.u32(at + 4)?.into(),
            paddr: b.u32(at + 12)?.into(),
            filesz: b.u32(at + 16)?.into(),
            memsz: b.u32(at + 20)?.into(),
            flags: b.u32(at + 24)?,
            align: b.u32(at + 28)?.into(),
        },
        ElfClass::Elf64 => Phdr {
            p_type: b.u32(at)?,
            flags: b.u32(at + 4)?,
            offset: b.u64(at + 8)?,
            paddr: b.u64(at + 24)?,
            filesz: b.u64(at + 32)?,
            memsz: b.u64(at + 40)?,
            align: b.u64(at + 48)?,
        },
    })
}

/// Why [`parse_image`] failed: a malformed file or unusable notes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParseError {
    Elf(ElfError),
    Note(NoteError),
}

impl From<ElfError> for ParseError {
    fn from(e: ElfError) -> Self {
        ParseError::Elf(e)
    }
}

impl From<NoteError> for ParseError {
    fn from(e: NoteError) -> Self {
        ParseError::Note(e)
    }
}

const FOUR_GIB: u64 = 1 << 32;

/// Parses and checks an image: header, segments, Xen notes.
pub(crate) fn parse_image(image: &[u8]) -> Result<PvhImage<'_>, ParseError> {
    let b = Bytes(image);
    let ident: [u8; 16] = b.array(0).ok_or(ElfError::Truncated)?;
    if ident[..4] != *b"\x7fELF" {
        return Err(ElfError::BadMagic.into());
    }
    let class = match ident[4] {
        1 => ElfClass::Elf32,
        2 => ElfClass::Elf64,
        c => return Err(ElfError::BadClass(c).into()),
    };
    if ident[5] != 1 {
        return Err(ElfError::NotLittleEndian(ident[5]).into());
    }
    let (phoff, phentsize, phnum, min_phent) = match class {
        ElfClass::Elf32 => (b.u32(28).map(u64::from), b.u16(42), b.u16(44), 32u16),
        ElfClass::Elf64 => (b.u64(32), b.u16(54), b.u16(56), 56u16),
    };
    let machine = b.u16(18).ok_or(ElfError::Truncated)?;
    let (Some(phoff), Some(phentsize), Some(phnum)) = (phoff, phentsize, phnum) else {
        return Err(ElfError::Truncated.into());
    };
    if machine != EM_386 && machine != EM_X86_64 {
        return Err(ElfError::BadMachine(machine).into());
    }
    if usize::from(phnum) > MAX_PROGRAM_HEADERS {
        return Err(ElfError::TooManyProgramHeaders(phnum).into());
    }
    if phentsize < min_phent {
        return Err(ElfError::BadPhentsize(phentsize).into());
    }
    let table_len = u64::from(phnum) * u64::from(phentsize);
    if b.slice(phoff, table_len).is_none() {
        return Err(ElfError::ProgramHeadersOutsideFile.into());
    }

    let mut segments = Vec::new();
    let mut notes = XenNotes::default();
    for index in 0..usize::from(phnum) {
        // In bounds: the whole table was checked above.
        let at = phoff + index as u64 * u64::from(phentsize);
        let ph = read_phdr(b, class, at).ok_or(ElfError::ProgramHeadersOutsideFile)?;
        match ph.p_type {
            PT_LOAD => {
                if ph.filesz > ph.memsz {
                    return Err(ElfError::FileszExceedsMemsz { index }.into());
                }
                if b.slice(ph.offset, ph.filesz).is_none() {
                    return Err(ElfError::SegmentOutsideFile { index }.into());
                }
                match ph.paddr.checked_add(ph.memsz) {
                    Some(end) if end <= FOUR_GIB => {}
                    _ => return Err(ElfError::SegmentAddressOverflow { index }.into()),
                }
                if ph.memsz > 0 {
                    segments.push(Segment {
                        index,
                        paddr: ph.paddr,
                        offset: ph.offset,
                        filesz: ph.filesz,
                        memsz: ph.memsz,
                        flags: ph.flags,
                    });
                }
            }
            PT_NOTE => {
                // By file offset: p_vaddr and p_memsz may be 0.
                let data = b
                    .slice(ph.offset, ph.filesz)
                    .ok_or(ElfError::SegmentOutsideFile { index })?;
                let align = if ph.align == 8 { 8 } else { 4 };
                parse_notes(data, align, &mut notes).ok_or(ElfError::BadNote { index })??;
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(ElfError::NoLoadableSegments.into());
    }
    segments.sort_unstable_by_key(|s| s.paddr);
    for pair in segments.windows(2) {
        if pair[1].paddr < pair[0].end() {
            return Err(ElfError::SegmentsOverlap {
                first: pair[0].index,
                second: pair[1].index,
            }
            .into());
        }
    }
    let entry = notes.phys32_entry.ok_or(NoteError::NotPvh)?;
    if !segments
        .iter()
        .any(|s| (s.paddr..s.end()).contains(&u64::from(entry)))
    {
        return Err(NoteError::EntryOutsideImage(entry).into());
    }
    Ok(PvhImage {
        bytes: image,
        class,
        entry,
        segments,
        notes,
    })
}

fn align_up(x: u64, align: u64) -> Option<u64> {
    x.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// Walks the notes of one `PT_NOTE` segment. `None`: a note runs past the
/// segment; `Some(Err)`: a Xen note is unusable.
fn parse_notes<'a>(
    data: &'a [u8],
    align: u64,
    notes: &mut XenNotes<'a>,
) -> Option<Result<(), NoteError>> {
    let b = Bytes(data);
    let len = data.len() as u64;
    let mut at = 0u64;
    while at < len {
        let namesz = u64::from(b.u32(at)?);
        let descsz = u64::from(b.u32(at + 4)?);
        let ty = b.u32(at + 8)?;
        let name_at = at + 12;
        let name = b.slice(name_at, namesz)?;
        let desc_at = align_up(name_at.checked_add(namesz)?, align)?;
        let desc = b.slice(desc_at, descsz)?;
        at = align_up(desc_at.checked_add(descsz)?, align)?;
        let name = name.strip_suffix(&[0]).unwrap_or(name);
        if name == XEN_ELFNOTE_NAME
            && let Err(e) = xen_note(ty, desc, notes)
        {
            return Some(Err(e));
        }
    }
    Some(Ok(()))
}

fn set_once<T: PartialEq + Copy>(slot: &mut Option<T>, v: T, note: u32) -> Result<(), NoteError> {
    match *slot {
        Some(old) if old != v => Err(NoteError::Conflicting { note }),
        _ => {
            *slot = Some(v);
            Ok(())
        }
    }
}

fn string(desc: &[u8]) -> &[u8] {
    let end = desc.iter().position(|&c| c == 0).unwrap_or(desc.len());
    &desc[..end]
}

fn xen_note<'a>(ty: u32, desc: &'a [u8], notes: &mut XenNotes<'a>) -> Result<(), NoteError> {
    notes.count += 1;
    match ty {
        XEN_ELFNOTE_PHYS32_ENTRY => {
            let entry =
                phys32_entry_from_desc(desc).ok_or(NoteError::BadEntryLength(desc.len()))?;
            set_once(&mut notes.phys32_entry, entry, ty)?;
            notes.phys32_entry_len = desc.len();
        }
        XEN_ELFNOTE_PHYS32_RELOC => {
            let [a0, a1, a2, a3, n0, n1, n2, n3, x0, x1, x2, x3] = *desc else {
                return Err(NoteError::BadRelocLength(desc.len()));
            };
            let align = u32::from_le_bytes([a0, a1, a2, a3]);
            let min = u32::from_le_bytes([n0, n1, n2, n3]);
            let max = u32::from_le_bytes([x0, x1, x2, x3]);
            let align = match align {
                0 => XEN_ELFNOTE_PHYS32_RELOC_DEFAULT_ALIGN,
                a if a.is_power_of_two() && a >= 0x1000 => u64::from(a),
                a => return Err(NoteError::BadRelocAlign(a)),
            };
            if min > max {
                return Err(NoteError::BadRelocRange { min, max });
            }
            let reloc = Reloc {
                align,
                min: min.into(),
                max: max.into(),
            };
            set_once(&mut notes.reloc, reloc, ty)?;
        }
        XEN_ELFNOTE_GUEST_OS => notes.guest_os = Some(string(desc)),
        XEN_ELFNOTE_GUEST_VERSION => notes.guest_version = Some(string(desc)),
        XEN_ELFNOTE_XEN_VERSION => notes.xen_version = Some(string(desc)),
        XEN_ELFNOTE_LOADER => notes.loader = Some(string(desc)),
        _ => {}
    }
    Ok(())
}

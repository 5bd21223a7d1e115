//! The console page (`io/console.h`): `in` carries bytes to the guest,
//! `out` bytes from the guest.
//!
//! | offset | field        |
//! |--------|--------------|
//! | 0      | `in[1024]`   |
//! | 1024   | `out[2048]`  |
//! | 3072   | `in_cons`    |
//! | 3076   | `in_prod`    |
//! | 3080   | `out_cons`   |
//! | 3084   | `out_prod`   |
//! | 3088   | `connection` (u8, newer Xen) |
//!
//! Each direction is masked with the length of its own array. Offsets come
//! from `xen_abi`'s `XenconsInterface`.

use core::mem::offset_of;

use crate::bytes::{ByteReader, ByteRingError, ByteRingLayout, ByteWriter};
use crate::mem::SharedMem;

pub use xen_abi::{XENCONSOLE_CONNECTED, XENCONSOLE_DISCONNECTED, XenconsInterface};

/// Offset of `in`.
pub const CONS_IN_OFFSET: usize = offset_of!(XenconsInterface, r#in);
/// Length of `in`.
pub const CONS_IN_LEN: u32 = xen_abi::XENCONS_IN_SIZE as u32;
/// Offset of `out`.
pub const CONS_OUT_OFFSET: usize = offset_of!(XenconsInterface, out);
/// Length of `out`.
pub const CONS_OUT_LEN: u32 = xen_abi::XENCONS_OUT_SIZE as u32;
/// Offset of `in_cons`.
pub const CONS_IN_CONS_OFFSET: usize = offset_of!(XenconsInterface, in_cons);
/// Offset of `in_prod`.
pub const CONS_IN_PROD_OFFSET: usize = offset_of!(XenconsInterface, in_prod);
/// Offset of `out_cons`.
pub const CONS_OUT_CONS_OFFSET: usize = offset_of!(XenconsInterface, out_cons);
/// Offset of `out_prod`.
pub const CONS_OUT_PROD_OFFSET: usize = offset_of!(XenconsInterface, out_prod);
/// Offset of `connection` (a byte).
pub const CONS_CONNECTION_OFFSET: usize = offset_of!(XenconsInterface, connection);

/// Layout of `in` (to the guest).
pub const CONSOLE_IN: ByteRingLayout = ByteRingLayout {
    data: CONS_IN_OFFSET,
    len: CONS_IN_LEN,
    cons: CONS_IN_CONS_OFFSET,
    prod: CONS_IN_PROD_OFFSET,
};

/// Layout of `out` (from the guest).
pub const CONSOLE_OUT: ByteRingLayout = ByteRingLayout {
    data: CONS_OUT_OFFSET,
    len: CONS_OUT_LEN,
    cons: CONS_OUT_CONS_OFFSET,
    prod: CONS_OUT_PROD_OFFSET,
};

/// The guest's end: writes `out`, reads `in`.
#[derive(Debug)]
pub struct ConsoleFront<M> {
    /// Bytes the guest prints.
    pub output: ByteWriter<M>,
    /// Bytes typed at the guest.
    pub input: ByteReader<M>,
}

impl<M: SharedMem + Clone> ConsoleFront<M> {
    /// Attaches to a console page (indices taken from the page).
    pub fn attach(mem: M) -> Result<Self, ByteRingError> {
        Ok(Self {
            output: ByteWriter::attach(mem.clone(), CONSOLE_OUT)?,
            input: ByteReader::attach(mem, CONSOLE_IN)?,
        })
    }

    /// Whether the back end reports it services the console.
    pub fn connected(&self) -> bool {
        self.input.mem().load_u8(CONS_CONNECTION_OFFSET) == XENCONSOLE_CONNECTED
    }
}

/// The console back end (the hypervisor or a daemon): reads `out`, writes
/// `in`.
#[derive(Debug)]
pub struct ConsoleBack<M> {
    /// Bytes from the guest.
    pub output: ByteReader<M>,
    /// Bytes to the guest.
    pub input: ByteWriter<M>,
}

impl<M: SharedMem + Clone> ConsoleBack<M> {
    /// Attaches to a console page (indices taken from the page).
    pub fn attach(mem: M) -> Result<Self, ByteRingError> {
        Ok(Self {
            output: ByteReader::attach(mem.clone(), CONSOLE_OUT)?,
            input: ByteWriter::attach(mem, CONSOLE_IN)?,
        })
    }

    /// Sets the `connection` byte.
    pub fn set_connection(&self, value: u8) {
        self.input.mem().store_u8(CONS_CONNECTION_OFFSET, value);
    }
}

//! The split-driver protocols of `xen/include/public/io/`: shared-ring
//! layout, console and xenstore byte rings, xenbus states, block and
//! network ring entries, and protocol names.
//!
//! These define what lies in pages shared between domains. The protocol
//! logic (producer/consumer indices, notification) lives in the `pv-rings`
//! crate.

pub mod blkif;
pub mod console;
pub mod netif;
pub mod protocols;
pub mod ring;
pub mod xenbus;
pub mod xs_wire;

pub use blkif::*;
pub use console::*;
pub use netif::*;
pub use protocols::*;
pub use ring::*;
pub use xenbus::*;
pub use xs_wire::*;

//! The privileged instructions the backend uses: all shared with arch-vmx,
//! so they live in `arch-common` (one `unsafe` wrapper each, with the
//! duties its caller takes on). SVM's own instructions (VMRUN, VMLOAD,
//! VMSAVE, CLGI, STGI) appear only in [`crate::entry`].

pub use arch_common::instr::*;

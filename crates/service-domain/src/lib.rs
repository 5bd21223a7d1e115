//! # service-domain: the domain that serves the others
//!
//! This crate's job is the service domain's logic: what Xen's xenstore
//! stub domain and dom0less's `init-dom0less` do together, without a
//! Linux dom0. It finds the domains it serves, maps each one's xenstore
//! page, binds its event channel, writes the nodes a toolstack writes
//! (`name`, `domid`, `memory/*`, `cpu/*`, `control/*`, ...), introduces
//! the domain to [`xenstored`] and serves its ring; it notices domains
//! shutting down or dying (`VIRQ_DOM_EXC`, then `XEN_DOMCTL_getdomaininfo`)
//! and asks them to shut down through `control/shutdown`.
//!
//! Everything that touches the hypervisor goes through [`Platform`], so
//! the logic here is host-tested with pages on the heap; the kernel
//! (`src/main.rs`, built for `x86_64-unknown-none`) implements it with
//! hypercalls. One module per service: [`xenstore`] today, the block and
//! network back ends next to it later.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod blkback;
pub mod cmdline;
pub mod dma;
pub mod netback;
pub mod switch;
pub mod uplink;
pub mod xenbus;
pub mod xenstore;

pub use xenstore::{DomainChange, DomainInfo, Platform, StoreService};

//! Builds the C side of the rings benchmark (`benches/c/ring_h.c`: the
//! same streams with Xen's own `io/ring.h` macros, from the system's Xen
//! headers) and links it into the bench targets only. Nothing for the
//! library itself: without the headers (Debian's `libxen-dev`), a C
//! compiler, or on a bare-metal target, the bench runs its Rust cases
//! alone and says why.

use std::path::Path;

const HEADER: &str = "/usr/include/xen/io/ring.h";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(xen_ring_h)");
    println!("cargo::rerun-if-changed=benches/c/ring_h.c");
    println!("cargo::rerun-if-changed={HEADER}");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "none" || !Path::new(HEADER).exists() {
        return;
    }
    let Ok(out) = std::env::var("OUT_DIR") else {
        return;
    };
    let built = cc::Build::new()
        .file("benches/c/ring_h.c")
        .opt_level(2)
        .warnings(true)
        .cargo_metadata(false)
        .try_compile("ring_h");
    if let Err(e) = built {
        println!("cargo::warning=the io/ring.h side of the rings bench is not built: {e}");
        return;
    }
    println!("cargo::rustc-link-arg-benches={out}/libring_h.a");
    println!("cargo::rustc-cfg=xen_ring_h");
}

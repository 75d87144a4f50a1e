//! Generates the Rust side of `sensor-ebpf/include/events.h` with bindgen:
//! the structs the kernel writes into the ring buffer are defined once, in C.

use std::env;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let header = manifest.parent().unwrap().join("sensor-ebpf/include/events.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("events.rs");
    bindgen::Builder::default()
        .header(header.to_str().unwrap())
        .allowlist_type("nt_.*")
        .allowlist_var("NT_.*")
        .constified_enum_module("nt_.*")
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(true)
        .generate()
        .expect("bindgen failed on events.h (libclang1-19 is installed by ci/install.sh)")
        .write_to_file(&out)
        .expect("cannot write events.rs");
}

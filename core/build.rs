//! Generates the Rust side of `sensor-ebpf/include/events.h` with bindgen:
//! the structs the kernel writes into the ring buffer are defined once, in C.

use std::env;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let header = manifest.parent().unwrap().join("sensor-ebpf/include/events.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("events.rs");
    events_bindings(&header, &out);
}

include!("../sensor-ebpf/include/bindings.rs");

// Included by core/build.rs and sensor/build.rs: both generate their Rust
// side of events.h (core: the ring-buffer records; sensor: the map values,
// which must implement aya::Pod there) with the same settings.

/// Generates the Rust types and constants of `header` into `out`.
fn events_bindings(header: &std::path::Path, out: &std::path::Path) {
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
        .write_to_file(out)
        .expect("cannot write the bindings of events.h");
}

//! Compiles the C eBPF programs of `sensor-ebpf/` with clang-19 for x86_64 and
//! arm64 (the target's object is embedded in `nettap`, the other one is
//! checked by the tests) and generates the Rust side of `events.h` with bindgen.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const BPF_SOURCES: &[&str] = &["nettap.bpf.c"];
const ARCHES: &[(&str, &str)] = &[("x86_64", "x86"), ("aarch64", "arm64")];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let ebpf = manifest.parent().unwrap().join("sensor-ebpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let clang = env::var("NETTAP_CLANG").unwrap_or_else(|_| "clang-19".into());

    for dir in ["bpf", "include", "bpf/vmlinux/x86", "bpf/vmlinux/arm64"] {
        for entry in std::fs::read_dir(ebpf.join(dir)).expect("sensor-ebpf is missing") {
            let path = entry.unwrap().path();
            if path.is_file() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    println!("cargo:rerun-if-env-changed=NETTAP_CLANG");

    for (rust_arch, bpf_arch) in ARCHES {
        for src in BPF_SOURCES {
            let stem = src.trim_end_matches(".bpf.c");
            let obj = out.join(format!("{stem}.{rust_arch}.bpf.o"));
            compile(&clang, &ebpf, bpf_arch, &ebpf.join("bpf").join(src), &obj);
        }
    }

    events_bindings(&ebpf.join("include/events.h"), &out.join("events.rs"));
}

fn compile(clang: &str, ebpf: &Path, bpf_arch: &str, src: &Path, obj: &Path) {
    let status = Command::new(clang)
        .args(["-g", "-O2", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{bpf_arch}"))
        .arg(format!("-I{}", ebpf.join("bpf/vmlinux").join(bpf_arch).display()))
        .arg(format!("-I{}", ebpf.join("include").display()))
        .arg(format!("-I{}", ebpf.join("bpf").display()))
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(obj)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {clang} ({e}): install clang-19 and libbpf-dev (ci/install.sh does)")
        });
    assert!(status.success(), "{clang} failed on {} for {bpf_arch}", src.display());
    // DWARF is only for humans; BTF (kept by -g stripping) is what CO-RE needs.
    let strip = env::var("NETTAP_LLVM_STRIP").unwrap_or_else(|_| "llvm-strip-19".into());
    if let Ok(status) = Command::new(&strip).arg("-g").arg(obj).status() {
        assert!(status.success(), "{strip} -g failed on {}", obj.display());
    }
}

include!("../sensor-ebpf/include/bindings.rs");

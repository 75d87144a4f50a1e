//! nettap-core stays free of I/O by its dependencies: nothing that loads
//! eBPF, runs an async runtime, speaks gRPC or talks to Kubernetes may be
//! among them (the sensor has those). Read from `cargo tree`, so a new
//! dependency that pulls one in fails here, not in review.

use std::process::Command;

const FORBIDDEN: &[&str] = &[
    "aya",
    "aya-obj",
    "tokio",
    "mio",
    "tonic",
    "hyper",
    "hyper-util",
    "tower",
    "h2",
    "kube",
    "kube-client",
    "k8s-openapi",
    "reqwest",
    "rustls",
    "tokio-stream",
];

#[test]
fn the_core_depends_on_no_io_crate() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "-p",
            "nettap-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(names.contains(&"nettap-core") && names.contains(&"httparse"), "unexpected tree:\n{tree}");
    let found: Vec<&&str> = FORBIDDEN.iter().filter(|f| names.contains(f)).collect();
    assert!(found.is_empty(), "nettap-core depends on I/O crates {found:?}:\n{tree}");
}

//! BoringSSL linked into a file without its symbols: gRPC's C core in
//! grpcio's Python extension (`cygrpc.*.so`, loaded by `import grpc`). The
//! functions are found by `boringssl_find` (error-report call sites and the
//! BIO pair's method table; a file where that evidence does not single
//! them out is refused with the reason) and get the uprobes of
//! `boringssl.bpf.c`: `SSL_write` and `SSL_read` for the plaintext,
//! `SSL_do_handshake` and the BIO pair's `bio_write` to learn each SSL
//! object's socket from the ciphertext it writes (see that file).

use super::boringssl_find;
use super::elf::FileSymbol;
use super::tls_lib::TlsLibrary;
use super::uprobe_plan::TlsFunction;
use std::collections::HashMap;
use std::path::Path;

/// The functions probed. `SSL_peek` is not: gRPC reads with `SSL_read`,
/// which in this build inlines it.
pub const BORINGSSL_FUNCTIONS: [TlsFunction; 4] = [
    TlsFunction {
        name: "SSL_write",
        entry: "up_bssl_write",
        uretprobe: Some("ur_bssl_ret"),
        return_site: None,
        args: 3,
    },
    TlsFunction {
        name: "SSL_read",
        entry: "up_bssl_read",
        uretprobe: Some("ur_bssl_ret"),
        return_site: None,
        args: 3,
    },
    TlsFunction {
        name: "SSL_do_handshake",
        entry: "up_bssl_handshake",
        uretprobe: Some("ur_bssl_handshake"),
        return_site: None,
        args: 1,
    },
    TlsFunction {
        name: "bio_write",
        entry: "up_bssl_bio_write",
        uretprobe: None,
        return_site: None,
        args: 3,
    },
];

/// BoringSSL inside grpcio's extension module.
pub static BORINGSSL: TlsLibrary = TlsLibrary {
    name: "BoringSSL",
    is_file: is_cygrpc,
    functions: &BORINGSSL_FUNCTIONS,
    linked_in: &[],
    another_library: None,
    bundlers: &[],
    version: grpcio_version,
    locate: Some(locate),
    shared_callees: &[],
};

/// "BoringSSL (grpcio 1.68.1)" for grpcio's module at `path`
/// (`…/site-packages/grpc/_cython/cygrpc.*.so`), from the wheel's
/// `grpcio-VERSION.dist-info` beside the `grpc` package: BoringSSL itself
/// has no version, gRPC pins its commit. Just "BoringSSL" when that
/// directory is not there (a build from source, another layout).
pub fn grpcio_version(path: &Path) -> String {
    let site = path.parent().and_then(Path::parent).and_then(Path::parent);
    let wheel = site.and_then(|dir| std::fs::read_dir(dir).ok()).and_then(|entries| {
        entries.flatten().find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name.strip_prefix("grpcio-")?.strip_suffix(".dist-info")?;
            Some(version.to_string())
        })
    });
    match wheel {
        Some(v) => format!("BoringSSL (grpcio {v})"),
        None => "BoringSSL".into(),
    }
}

/// Whether a file name is grpcio's extension module (`cygrpc.cpython-311-
/// x86_64-linux-gnu.so`; the kernel's mapping reports give the first 31
/// bytes of the name, so the prefix decides).
pub fn is_cygrpc(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("cygrpc."))
}

/// The file offsets of the probed functions in `data`, or why not.
pub fn locate(data: &[u8]) -> Result<HashMap<String, FileSymbol>, String> {
    let found = boringssl_find::find(data).map_err(|e| e.to_string())?;
    let pair = boringssl_find::bio_pair(data).map_err(|e| e.to_string())?;
    let at = |e: boringssl_find::Entry| FileSymbol { offset: e.offset, size: 0 };
    Ok(HashMap::from([
        ("SSL_write".to_string(), at(found.ssl_write)),
        ("SSL_read".to_string(), at(found.ssl_read)),
        ("SSL_do_handshake".to_string(), at(found.ssl_do_handshake)),
        ("bio_write".to_string(), at(pair.bio_write)),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::uprobe_plan::plan_located;

    #[test]
    fn the_version_is_the_grpcio_wheels() {
        let site = tempfile::tempdir().unwrap();
        let module = site.path().join("grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so");
        std::fs::create_dir_all(module.parent().unwrap()).unwrap();
        assert_eq!(grpcio_version(&module), "BoringSSL");
        for dir in ["grpcio_tools-1.0.0.dist-info", "grpcio-1.68.1.dist-info"] {
            std::fs::create_dir(site.path().join(dir)).unwrap();
        }
        assert_eq!(grpcio_version(&module), "BoringSSL (grpcio 1.68.1)");
    }

    #[test]
    fn recognises_the_extension_by_name_and_by_its_truncated_mapping_name() {
        assert!(is_cygrpc(Path::new("/v/site-packages/grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so")));
        assert!(is_cygrpc(Path::new("cygrpc.cpython-311-x86_64-linux")));
        assert!(!is_cygrpc(Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3")));
    }

    #[test]
    fn grpcio_is_planned_entry_and_return_but_bio_write_entry_only() {
        let path = crate::probes::boringssl_find::tests::cygrpc();
        let data = std::fs::read(&path).unwrap();
        let t = std::time::Instant::now();
        let located = locate(&data).unwrap();
        eprintln!("located in {:?}", t.elapsed());
        let plans = plan_located(&data, &BORINGSSL_FUNCTIONS, &located);
        let got: Vec<Vec<(&str, u64, &str)>> = plans
            .iter()
            .map(|p| p.as_ref().unwrap().iter().map(|pt| (pt.program, pt.offset, pt.kind)).collect())
            .collect();
        // Offsets of grpcio 1.68.1's wheel (boringssl_find's tests check them by hand).
        assert_eq!(
            got,
            [
                vec![("up_bssl_write", 0x961840, "uprobe"), ("ur_bssl_ret", 0x961840, "uretprobe")],
                vec![("up_bssl_read", 0x963520, "uprobe"), ("ur_bssl_ret", 0x963520, "uretprobe")],
                vec![("up_bssl_handshake", 0x961240, "uprobe"), ("ur_bssl_handshake", 0x961240, "uretprobe")],
                vec![("up_bssl_bio_write", 0x7ff4f0, "uprobe")],
            ]
        );
    }

    #[test]
    fn a_file_without_boringssl_is_refused_with_the_reason() {
        let libssl = std::fs::read("/usr/lib/x86_64-linux-gnu/libssl.so.3").expect("the system libssl.so.3");
        let e = locate(&libssl).unwrap_err();
        assert!(e.contains("ssl_lib.cc"), "{e}");
    }
}

//! GnuTLS (libgnutls.so.30): the uprobes of `gnutls.bpf.c` on its record
//! functions. `gnutls_record_send` is a tail jump into `gnutls_record_send2`
//! (GnuTLS >= 3.6.3), so the latter is probed: one probe covers both, and
//! its first instruction is emulated (`push`), where `gnutls_record_send`'s
//! is single-stepped.

use super::tls_lib::TlsLibrary;
use super::uprobe_plan::TlsFunction;
use super::{elf, sites};
use std::path::Path;

/// The functions probed. No return sites: the receive functions end in
/// tail jumps (nothing to put one on) and the send function's first
/// instruction is emulated already.
pub const GNUTLS_FUNCTIONS: [TlsFunction; 3] = [
    TlsFunction {
        name: "gnutls_record_send2",
        entry: "up_gnutls_send",
        uretprobe: Some("ur_gnutls_ret"),
        return_site: None,
        args: 3,
    },
    TlsFunction {
        name: "gnutls_record_recv",
        entry: "up_gnutls_recv",
        uretprobe: Some("ur_gnutls_ret"),
        return_site: None,
        args: 3,
    },
    TlsFunction {
        name: "gnutls_record_recv_seq",
        entry: "up_gnutls_recv_seq",
        uretprobe: Some("ur_gnutls_ret"),
        return_site: None,
        args: 3,
    },
];

/// GnuTLS: the shared library, and programs with it linked in statically
/// (found by their symbol table, so not when stripped).
pub static GNUTLS: TlsLibrary = TlsLibrary {
    name: "GnuTLS",
    is_file: is_libgnutls,
    functions: &GNUTLS_FUNCTIONS,
    linked_in: &["gnutls_record_send2", "gnutls_record_recv"],
    another_library: None,
    bundlers: &[],
    version: library_version,
    locate: None,
    shared_callees: &[],
};

/// Whether a file name is the shared GnuTLS (`libgnutls.so.30`), not one of
/// its companions (`libgnutls-dane`, `libgnutlsxx`, `libgnutls-openssl`).
pub fn is_libgnutls(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libgnutls.so"))
}

/// "GnuTLS 3.7.9": the string `gnutls_check_version(NULL)` returns, found
/// by decoding the function (its first RIP-relative `lea` loads it).
pub fn gnutls_version(data: &[u8]) -> Option<String> {
    let (address, code) = elf::function_code(data, "gnutls_check_version")?;
    let string_at = sites::first_rip_relative_lea(code, address)?;
    let bytes = elf::at_address(data, string_at, 32)?;
    let text = std::str::from_utf8(&bytes[..bytes.iter().position(|&b| b == 0)?]).ok()?;
    let looks_right = text.split('.').count() >= 2
        && text.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    looks_right.then(|| format!("GnuTLS {text}"))
}

/// The GnuTLS version of a file, or "unknown version".
pub fn library_version(path: &Path) -> String {
    super::elf::map(path).and_then(|map| gnutls_version(&map)).unwrap_or_else(|| "unknown version".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::uprobe_plan::plan;

    /// ci/install.sh installs gnutls-bin, which brings the system libgnutls.
    const SYSTEM: &str = "/usr/lib/x86_64-linux-gnu/libgnutls.so.30";

    #[test]
    fn recognises_libgnutls_names() {
        assert!(is_libgnutls(Path::new(SYSTEM)));
        assert!(!is_libgnutls(Path::new("/usr/lib/x86_64-linux-gnu/libgnutls-dane.so.0")));
        assert!(!is_libgnutls(Path::new("/usr/lib/x86_64-linux-gnu/libgnutlsxx.so.30")));
        assert!(!is_libgnutls(Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3")));
    }

    #[test]
    fn the_system_gnutls_says_its_version() {
        let data = std::fs::read(SYSTEM).expect("the system libgnutls.so.30");
        let v = gnutls_version(&data).expect("a version");
        assert!(v.starts_with("GnuTLS 3."), "{v}");
        let libssl = std::fs::read("/usr/lib/x86_64-linux-gnu/libssl.so.3").unwrap();
        assert_eq!(gnutls_version(&libssl), None);
    }

    #[test]
    fn every_record_function_is_planned_with_entry_and_uretprobe() {
        let data = std::fs::read(SYSTEM).expect("the system libgnutls.so.30");
        let plans = plan(&data, &GNUTLS_FUNCTIONS, &[]).unwrap();
        for (f, p) in GNUTLS_FUNCTIONS.iter().zip(&plans) {
            let points = p.as_ref().unwrap_or_else(|m| panic!("{m} missing"));
            let kinds: Vec<_> = points.iter().map(|pt| pt.kind).collect();
            assert_eq!(kinds, ["uprobe", "uretprobe"], "{}", f.name);
            assert!(points.iter().all(|pt| pt.label == f.name));
        }
    }
}

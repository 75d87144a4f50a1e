//! NSS (libssl3.so, with NSPR): the uprobes of `nss.bpf.c` on the SSL
//! layer's I/O methods. Applications call NSPR (`PR_Write`, `PR_Recv`, …),
//! which jumps through the top layer's method table: for an SSL socket into
//! `ssl_Write`/`ssl_Read`/`ssl_Send`/`ssl_Recv`. Those are the plaintext
//! boundary, and only SSL sockets reach them (NSPR's `PR_Write` also serves
//! files and plain sockets). They call neither each other nor NSPR's entry
//! points again, so each plaintext call is seen once; `PR_Writev` on an SSL
//! socket is `ssl_WriteV`, which calls `ssl_Send`. They are static, found in
//! the method table's setup code (`nss_methods`), x86_64 only.

use super::nss_methods;
use super::tls_lib::TlsLibrary;
use super::uprobe_plan::TlsFunction;
use super::{elf, sites};
use std::path::Path;

/// The functions probed: each starts with `push` (an emulated instruction),
/// so entry uprobe + uretprobe cost no single-step.
pub const NSS_FUNCTIONS: [TlsFunction; 4] = [
    TlsFunction {
        name: "ssl_Read",
        entry: "up_nss_read",
        uretprobe: Some("ur_nss_ret"),
        return_site: None,
        args: 3,
    },
    TlsFunction {
        name: "ssl_Write",
        entry: "up_nss_write",
        uretprobe: Some("ur_nss_ret"),
        return_site: None,
        args: 3,
    },
    TlsFunction {
        name: "ssl_Recv",
        entry: "up_nss_recv",
        uretprobe: Some("ur_nss_ret"),
        return_site: None,
        args: 5,
    },
    TlsFunction {
        name: "ssl_Send",
        entry: "up_nss_send",
        uretprobe: Some("ur_nss_ret"),
        return_site: None,
        args: 5,
    },
];

/// NSS's libssl3, shared only (NSS is not linked statically in practice).
pub static NSS: TlsLibrary = TlsLibrary {
    name: "NSS",
    is_file: is_libssl3,
    functions: &NSS_FUNCTIONS,
    linked_in: &[],
    another_library: None,
    bundlers: &[],
    version: library_version,
    locate: Some(|data| nss_methods::ssl_layer_methods(data).map_err(|e| e.to_string())),
    shared_callees: &[],
};

/// Whether a file name is NSS's SSL library (`libssl3.so`), not OpenSSL's
/// `libssl.so.3`.
pub fn is_libssl3(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "libssl3.so" || n.starts_with("libssl3.so."))
}

/// "NSS 3.87.1": the string `NSSSSL_GetVersion()` returns (its first
/// RIP-relative `lea` loads it).
pub fn nss_version(data: &[u8]) -> Option<String> {
    let (address, code) = elf::function_code(data, "NSSSSL_GetVersion")?;
    let string_at = sites::first_rip_relative_lea(code, address)?;
    let bytes = elf::at_address(data, string_at, 32)?;
    let text = std::str::from_utf8(&bytes[..bytes.iter().position(|&b| b == 0)?]).ok()?;
    let digits =
        text.split(['.', ' ']).next().is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (digits && text.contains('.')).then(|| format!("NSS {text}"))
}

/// The NSS version of a file, or "unknown version".
pub fn library_version(path: &Path) -> String {
    super::elf::map(path).and_then(|map| nss_version(&map)).unwrap_or_else(|| "unknown version".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::uprobe_plan::plan_located;

    /// ci/install.sh installs libnss3-tools, which brings libnss3.
    const SYSTEM: &str = "/usr/lib/x86_64-linux-gnu/libssl3.so";

    #[test]
    fn recognises_libssl3_names() {
        assert!(is_libssl3(Path::new(SYSTEM)));
        assert!(!is_libssl3(Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3")));
        assert!(!is_libssl3(Path::new("/usr/lib/x86_64-linux-gnu/libsmime3.so")));
    }

    #[test]
    fn the_system_nss_says_its_version() {
        let data = std::fs::read(SYSTEM).expect("the system libssl3.so");
        let v = nss_version(&data).expect("a version");
        assert!(v.starts_with("NSS 3."), "{v}");
        assert_eq!(nss_version(&std::fs::read("/usr/lib/x86_64-linux-gnu/libssl.so.3").unwrap()), None);
    }

    #[test]
    fn every_method_is_planned_with_entry_and_uretprobe() {
        let data = std::fs::read(SYSTEM).expect("the system libssl3.so");
        let symbols = nss_methods::ssl_layer_methods(&data).unwrap();
        let plans = plan_located(&data, &NSS_FUNCTIONS, &symbols);
        for (f, p) in NSS_FUNCTIONS.iter().zip(&plans) {
            let points = p.as_ref().unwrap_or_else(|m| panic!("{m} missing"));
            let kinds: Vec<_> = points.iter().map(|pt| pt.kind).collect();
            assert_eq!(kinds, ["uprobe", "uretprobe"], "{}", f.name);
            assert_eq!(points[0].offset, symbols[f.name].offset);
        }
    }
}

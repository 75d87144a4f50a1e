//! OpenSSL (libssl.so.3, or a binary with OpenSSL linked in): the uprobes of
//! `openssl.bpf.c` on `SSL_write`/`SSL_read` and their `_ex` forms.

use super::elf;
use super::shared_callee::SharedCallee;
use super::tls_lib::TlsLibrary;
use super::uprobe_plan::TlsFunction;
use std::path::Path;

/// The functions probed.
pub const SSL_FUNCTIONS: [TlsFunction; 4] = [
    TlsFunction {
        name: "SSL_write",
        entry: "up_ssl_write",
        uretprobe: Some("ur_ssl_write"),
        return_site: Some("up_ssl_write_ret"),
        args: 3,
    },
    TlsFunction {
        name: "SSL_write_ex",
        entry: "up_ssl_write_ex",
        uretprobe: Some("ur_ssl_write_ex"),
        return_site: Some("up_ssl_write_ex_ret"),
        args: 4,
    },
    TlsFunction {
        name: "SSL_read",
        entry: "up_ssl_read",
        uretprobe: Some("ur_ssl_read"),
        return_site: Some("up_ssl_read_ret"),
        args: 3,
    },
    TlsFunction {
        name: "SSL_read_ex",
        entry: "up_ssl_read_ex",
        uretprobe: Some("ur_ssl_read_ex"),
        return_site: Some("up_ssl_read_ex_ret"),
        args: 4,
    },
];

/// What `SSL_write`/`SSL_write_ex` and `SSL_read`/`SSL_read_ex` call to
/// do their work in OpenSSL 1.1.1 and 3.x (`shared_callee`): probed
/// instead of them where found, with the `_ex` programs' meaning (the
/// count written through the fourth argument).
pub const SHARED_CALLEES: [SharedCallee; 2] = [
    SharedCallee {
        name: "ssl_write_internal",
        first_call_of: "SSL_write_ex",
        args: 4,
        also_called_by: &["SSL_write"],
        entry: "up_ssl_write_internal",
        uretprobe: "ur_ssl_write_ex",
    },
    SharedCallee {
        name: "ssl_read_internal",
        first_call_of: "SSL_read_ex",
        args: 4,
        also_called_by: &["SSL_read"],
        entry: "up_ssl_read_internal",
        uretprobe: "ur_ssl_read_ex",
    },
];

/// OpenSSL 3.x and 1.1.1, and LibreSSL (same functions; LibreSSL 2.0.0
/// lacks the `_ex` forms, which are then said missing). No struct of theirs
/// is read, so no layout differs between them.
pub static OPENSSL: TlsLibrary = TlsLibrary {
    name: "OpenSSL",
    is_file: is_libssl,
    functions: &SSL_FUNCTIONS,
    linked_in: &["SSL_write", "SSL_read"],
    another_library: Some(super::boringssl_static::has_boringssl),
    bundlers: &["node", "nodejs"],
    version: library_version,
    locate: None,
    shared_callees: &SHARED_CALLEES,
};

/// Whether a file name is a shared libssl (`libssl.so`, `libssl.so.3`, …),
/// also as Python wheels bundle it, renamed by auditwheel with a hash
/// (`libssl-3a880ada.so.1.1`, `libssl-6a9b88ec.so.3`). NSS's `libssl3.so`
/// is not one.
pub fn is_libssl(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    if name.starts_with("libssl.so") {
        return true;
    }
    let Some((hash, _)) = name.strip_prefix("libssl-").and_then(|rest| rest.split_once(".so")) else {
        return false;
    };
    hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

/// "OpenSSL 3.0.17", "OpenSSL 1.1.1w" or "LibreSSL 2.0" as found in the
/// library's read-only data, if any. LibreSSL is looked for first: it keeps
/// OpenSSL's API, so a text naming OpenSSL with a version may be in its
/// files too, where OpenSSL 3.0, 1.1.1w and Node.js carry no "LibreSSL N.".
/// LibreSSL 2.0.0 says "LibreSSL 2.0" (its `OPENSSL_VERSION_TEXT`); later
/// releases give all three numbers.
pub fn openssl_version(bytes: &[u8]) -> Option<String> {
    name_and_version(bytes, "LibreSSL").or_else(|| name_and_version(bytes, "OpenSSL"))
}

/// The first "NAME D.…" in `bytes` (a digit and a dot after the name and a
/// space), up to the next space or NUL (32 bytes at most).
fn name_and_version(bytes: &[u8], name: &str) -> Option<String> {
    let needle = format!("{name} ");
    // memmem, not a byte-by-byte window: every libssl and libcrypto of the
    // host is searched at start-up, and this was half of it.
    memchr::memmem::find_iter(bytes, needle.as_bytes()).find_map(|i| {
        let rest = &bytes[i + needle.len()..];
        if rest.len() < 2 || !rest[0].is_ascii_digit() || rest[1] != b'.' {
            return None;
        }
        let end = rest.iter().take(32).position(|&b| b == b' ' || b == 0).unwrap_or(rest.len().min(32));
        std::str::from_utf8(&rest[..end]).ok().map(|v| format!("{name} {v}"))
    })
}

/// The OpenSSL version in a file's read-only data, if any.
fn file_version(path: &Path) -> Option<String> {
    openssl_version(elf::rodata(&elf::map(path)?))
}

/// The OpenSSL version of a libssl file: from the file itself (a static
/// build carries the string, LibreSSL's libssl too), else from the libcrypto
/// beside it (where OpenSSL keeps `OpenSSL_version`'s text): `libcrypto.so.N`
/// for `libssl.so.N`; else the libcrypto the file needs (`DT_NEEDED`: LibreSSL
/// numbers the two apart, `libssl.so.53` with `libcrypto.so.50`); or for a
/// wheel's `libssl-HASH.so.N` the `libcrypto-*.so.N` in the same directory
/// (auditwheel gives each its own hash).
pub fn library_version(path: &Path) -> String {
    let sibling = || {
        let name = path.file_name()?.to_str()?;
        let same = path.with_file_name(name.replacen("libssl", "libcrypto", 1));
        if let Some(v) = file_version(&same) {
            return Some(v);
        }
        if let Some(v) = needed_libcrypto(path).and_then(|c| file_version(&path.with_file_name(c))) {
            return Some(v);
        }
        let soversion = &name[name.find(".so")?..];
        let hashed = |n: &str| n.starts_with("libcrypto-") && n.ends_with(soversion);
        std::fs::read_dir(path.parent()?)
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(hashed))
            .find_map(|e| file_version(&e.path()))
    };
    file_version(path).or_else(sibling).unwrap_or_else(|| "unknown version".into())
}

/// The `libcrypto*` file name a libssl file needs, if it names one.
fn needed_libcrypto(path: &Path) -> Option<String> {
    elf::needed(&elf::map(path)?).into_iter().find(|n| n.starts_with("libcrypto"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::tls_lib::library_of_process;

    #[test]
    fn recognises_libssl_names() {
        assert!(is_libssl(Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3")));
        assert!(is_libssl(Path::new("/opt/app/libssl.so")));
        assert!(!is_libssl(Path::new("/usr/lib/libssl3.so")));
        assert!(!is_libssl(Path::new("/usr/lib/libcrypto.so.3")));
        // Wheels' copies, renamed by auditwheel.
        assert!(is_libssl(Path::new("/venv/psycopg2_binary.libs/libssl-3a880ada.so.1.1")));
        assert!(is_libssl(Path::new("/venv/psycopg_binary.libs/libssl-6a9b88ec.so.3")));
        assert!(!is_libssl(Path::new("/venv/x.libs/libssl-notahash.so.3")));
        assert!(!is_libssl(Path::new("/usr/lib/x86_64-linux-gnu/libssl3.so")));
    }

    #[test]
    fn finds_the_version_string() {
        let lib = b"\0\0junk\0OpenSSL 3.0.17 1 Jul 2025\0more";
        assert_eq!(openssl_version(lib).as_deref(), Some("OpenSSL 3.0.17"));
        assert_eq!(openssl_version(b"OpenSSL is great"), None);
        assert_eq!(openssl_version(b"\0OpenSSL 1.1.1w  11 Sep 2023\0").as_deref(), Some("OpenSSL 1.1.1w"));
        // Were a LibreSSL file to name OpenSSL with a version too, it is still LibreSSL.
        let libre = b"OpenSSL 1.0.1g-compat\0LibreSSL 3.8.2\0";
        assert_eq!(openssl_version(libre).as_deref(), Some("LibreSSL 3.8.2"));
    }

    #[test]
    fn the_libcrypto_a_libssl_needs_is_read_from_its_dynamic_section() {
        let lib = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert_eq!(needed_libcrypto(lib).as_deref(), Some("libcrypto.so.3"));
        assert_eq!(needed_libcrypto(Path::new("/nonexistent/libssl.so.53")), None);
    }

    #[test]
    fn system_libssl_version_comes_from_its_libcrypto() {
        // ci/install.sh installs libssl-dev.
        let lib = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert!(library_version(lib).starts_with("OpenSSL 3."), "{}", library_version(lib));
    }

    #[test]
    fn a_mapped_libssl_is_found_in_the_process_maps() {
        let file =
            std::fs::File::open("/usr/lib/x86_64-linux-gnu/libssl.so.3").expect("the system libssl.so.3");
        // SAFETY: read-only mapping of a file we opened, never read through.
        let _map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let found = library_of_process(std::process::id(), is_libssl);
        let want = format!("/proc/{}/root/usr/lib/x86_64-linux-gnu/libssl.so.3", std::process::id());
        assert!(found.iter().any(|p| p.to_str() == Some(want.as_str())), "{found:?}");
        assert!(library_of_process(u32::MAX, is_libssl).is_empty(), "no such process");
    }
}

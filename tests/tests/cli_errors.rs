//! Bad input gets a clear one-line error and a non-zero exit, before any probe is touched.

use nettap_e2e::nettap_bin;
use std::process::Command;

fn fails_with(args: &[&str], needle: &str) {
    let out = Command::new(nettap_bin()).args(args).env_remove("RUST_BACKTRACE").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} must fail");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert!(!err.contains("Stack backtrace"), "{err}");
}

#[test]
fn invalid_settings_are_refused_clearly() {
    fails_with(&["capture", "--duration=-1"], "seconds must be finite and not negative");
    fails_with(&["capture", "--duration", "soon"], "is not a number of seconds");
    fails_with(&["capture", "--ring-buffer-bytes", "5000"], "must be a power of two");
    fails_with(&["capture", "--config", "/nonexistent/nettap.toml"], "cannot read config file");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[capture]\nbogus = 1\n").unwrap();
    fails_with(&["capture", "--config", bad.to_str().unwrap()], "unknown field `bogus`");
    fails_with(&["capture", "--out", "/nonexistent/dir/f.jsonl"], "cannot open /nonexistent/dir/f.jsonl");
}

#[test]
fn records_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.jsonl");
    // A file that was there, readable by all, is made private too.
    std::fs::write(&out, "old").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    let st = Command::new(nettap_bin())
        .args(["capture", "--port", "1", "--duration", "0.1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "captured traffic holds secrets");
}

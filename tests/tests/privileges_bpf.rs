//! Least privilege: the sensor started with exactly the DaemonSet's four
//! capabilities, or with one of them removed, says at start-up what is
//! missing and what that disables, and still captures what it can (exact
//! plaintext TCP); without CAP_BPF it refuses to start with a clear reason.

use nettap_e2e::*;
use std::process::Stdio;

const FOUR: &str = "-all,+bpf,+perfmon,+net_admin,+sys_ptrace";

/// A loopback exchange of every size in SIZES, captured by `sensor`; both
/// peers' records must be exact.
fn captures_plaintext_exactly(start: impl FnOnce(&[&str]) -> Sensor) -> Capture {
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec!["--port", &port_s];
    args.extend_from_slice(EXACT);
    let sensor = start(&args);
    let (server, client, _dir) =
        Exchange::start(None, "127.0.0.1", None, "127.0.0.1", port, SIZES, &[]).finish();
    let cap = sensor.stop();
    assert_exact(&cap, &client, "client", 0);
    assert_exact(&cap, &server, "server", 0);
    cap
}

fn log_line<'a>(cap: &'a Capture, words: &[&str]) -> &'a str {
    cap.log
        .lines()
        .find(|l| words.iter().all(|w| l.contains(w)))
        .unwrap_or_else(|| panic!("no log line with {words:?}:\n{}", cap.log))
}

#[test]
fn with_exactly_the_four_capabilities_plaintext_is_captured_and_what_is_off_is_said() {
    let cap = captures_plaintext_exactly(|args| Sensor::start_with_caps(FOUR, args));
    let held = log_line(&cap, &["capabilities", "held="]);
    assert!(held.contains("held=\"CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN,CAP_SYS_PTRACE\""), "{held}");
    assert!(!cap.log.contains("capability missing"), "none of the four is missing:\n{}", cap.log);
    log_line(&cap, &["capability not granted", "CAP_SYS_ADMIN", "exec gate"]);
    // Whether uprobes need CAP_SYS_ADMIN depends on the kernel (the fix for
    // CVE-2025-38466); the sensor must say which it found, and act on it.
    match cap.log.lines().find(|l| l.contains("uprobes not permitted")) {
        Some(line) => {
            assert!(line.contains("CAP_SYS_ADMIN") && line.contains("OpenSSL and Go"), "{line}");
            assert!(
                !cap.log.contains("probe_type=\"uprobe\"") && !cap.log.contains("OpenSSL libraries probed"),
                "no uprobe is tried once refused:\n{}",
                cap.log
            );
        }
        None => {
            log_line(&cap, &["OpenSSL libraries probed"]);
        }
    }
    assert!(!cap.log.contains("Permission denied"), "no EPERM surfaces later:\n{}", cap.log);
}

#[test]
fn without_cap_sys_ptrace_the_sensor_names_it_and_what_it_disables() {
    let cap = captures_plaintext_exactly(|args| Sensor::start_with_caps("-sys_ptrace", args));
    let line = log_line(&cap, &["WARN", "capability missing", "capability=\"CAP_SYS_PTRACE\""]);
    assert!(line.contains("TLS capture (OpenSSL, Go)") && line.contains("--attach-jvms"), "{line}");
    let held = log_line(&cap, &["capabilities", "held="]);
    assert!(!held.contains("CAP_SYS_PTRACE") && held.contains("CAP_BPF"), "{held}");
}

#[test]
fn without_cap_bpf_the_sensor_refuses_to_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Sensor::with_caps("-all,+perfmon,+net_admin,+sys_ptrace")
        .arg("capture")
        .arg("--out")
        .arg(dir.path().join("records.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_child(&mut child, "nettap without CAP_BPF");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "nettap must not run without CAP_BPF:\n{err}");
    assert!(err.contains("capability missing capability=\"CAP_BPF\""), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("cannot capture without CAP_BPF")
            && last.contains("CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_PTRACE"),
        "the last line says why and what to grant: {last}"
    );
    assert!(!err.contains("probe attached"), "nothing is attempted:\n{err}");
}

//! Both kernel data paths pass the verifier here, and start-up picks the one
//! the kernel allows, saying which and why.

use nettap_e2e::*;
use nettap_sensor::config::CaptureConfig;
use nettap_sensor::probes::{attach_kprobes, load_every_program, load_object};
use std::path::Path;
use std::process::Command;

fn kernel_has_kprobes() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
        || Path::new("/sys/kernel/tracing/kprobe_events").exists()
}

/// kprobes attach but never fire (`echo 0 > /sys/kernel/debug/kprobes/enabled`,
/// as the kernel matrix's disarmed guest boot does).
fn kprobes_disarmed() -> bool {
    std::fs::read_to_string("/sys/kernel/debug/kprobes/enabled").is_ok_and(|s| s.trim() == "0")
}

#[test]
fn every_program_of_both_paths_loads() {
    let mut ebpf = load_object(&CaptureConfig::default(), std::process::id()).expect("object loads");
    let names = load_every_program(&mut ebpf).expect("the verifier accepts every program");
    for expected in [
        "kp_tcp_sendmsg",
        "kr_tcp_sendmsg",
        "kp_tcp_recvmsg",
        "kr_tcp_recvmsg",
        "tp_exit_write",
        "tp_exit_recvmsg",
        "tp_exit_connect",
        "tp_exit_accept4",
        "rtp_sock_set_state",
        "rtp_sock_set_state_nested",
        "up_ssl_write",
        "ur_ssl_write",
        "up_ssl_write_ex",
        "ur_ssl_write_ex",
        "up_ssl_read",
        "ur_ssl_read",
        "up_ssl_read_ex",
        "ur_ssl_read_ex",
        "up_ssl_write_ret",
        "up_ssl_write_ex_ret",
        "up_ssl_read_ret",
        "up_ssl_read_ex_ret",
        "up_go_tls_write",
        "up_go_tls_read",
        "up_go_tls_ret",
        "tp_exit_sendmmsg",
        "tp_exit_recvmmsg",
        "up_nss_write",
        "up_nss_send",
        "up_nss_read",
        "up_nss_recv",
        "ur_nss_ret",
        "up_rustls_write",
        "ur_rustls_write",
        "up_rustls_write_vectored",
        "ur_rustls_write_vectored",
        "up_rustls_read",
        "ur_rustls_read",
        "up_rustls_write_tls",
        "ur_rustls_write_tls",
        "up_rustls_read_tls",
        "ur_rustls_read_tls",
        "up_rustls_first_chunk",
        "ur_rustls_first_chunk",
        "up_rustls_consume",
    ] {
        // A uprobe in the mode this kernel uses: NAME, or its uprobe_multi twin NAME_m.
        let twin = format!("{expected}_m");
        assert!(names.iter().any(|n| *n == expected || *n == twin), "{expected} not loaded: {names:?}");
    }
}

#[test]
fn auto_selection_logs_its_choice_and_reason() {
    let sensor = Sensor::start(&["--port", "1"]);
    let cap = sensor.stop();
    let line = cap.log.lines().find(|l| l.contains("kernel hook selected")).expect("selection is logged");
    if kprobes_disarmed() {
        assert!(line.contains("hook=\"tracepoint\""), "{line}");
        assert!(line.contains("kprobes are disarmed"), "{line}");
        let kprobe_lines =
            cap.log.lines().filter(|l| l.contains("probe attached") && l.contains("probe_type=\"kprobe\""));
        assert_eq!(kprobe_lines.count(), 0, "disarmed kprobes are not even attached:\n{}", cap.log);
    } else if kernel_has_kprobes() {
        assert!(line.contains("hook=\"kprobe\""), "{line}");
    } else {
        assert!(line.contains("hook=\"tracepoint\""), "{line}");
        assert!(line.contains("kprobes unavailable"), "{line}");
        assert!(cap.log.contains("probe attached: failed"), "the failed kprobe attach is logged");
    }
    let attached = cap.log.lines().filter(|l| l.contains("probe attached") && l.contains("ok=true")).count();
    assert!(attached >= 14, "every attached probe is logged: {attached}\n{}", cap.log);
}

/// `--kernel-hook kprobe` is a requirement: where kprobes fire it takes
/// them (and says so), elsewhere it refuses with the reason.
#[test]
fn required_kprobes_are_used_or_refused_clearly() {
    let out = Command::new(nettap_bin())
        .args(["capture", "--kernel-hook", "kprobe", "--out", "/dev/null", "--duration", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if kernel_has_kprobes() && !kprobes_disarmed() {
        assert!(out.status.success(), "{err}");
        let used = err.lines().any(|l| l.contains("kernel hook selected") && l.contains("hook=\"kprobe\""));
        assert!(used, "the required kprobes are taken:\n{err}");
        return;
    }
    assert!(!out.status.success());
    assert!(err.contains("kprobes were required"), "{err}");
    if kprobes_disarmed() {
        assert!(err.contains("kprobes are disarmed"), "{err}");
    }
}

#[test]
fn json_logs_carry_the_probe_fields() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(nettap_bin())
        .args(["--log-format", "json", "capture", "--port", "1", "--duration", "0.2", "--out"])
        .arg(dir.path().join("r.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8(out.stderr).unwrap();
    let line = err.lines().find(|l| l.contains("sys_exit_read")).expect("a probe line for sys_exit_read");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["fields"]["message"], "probe attached");
    assert_eq!(v["fields"]["probe_type"], "tracepoint");
    assert_eq!(v["fields"]["target"], "kernel");
    assert_eq!(v["fields"]["ok"], true);
}

/// Open fds of this process whose link names contain `what`
/// (`bpf-prog`: a loaded program).
fn fds_named(what: &str) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains(what)))
        .count()
}

/// Kprobe attachments this process holds: a BPF link, or a perf event
/// where the kernel has no BPF perf links.
fn attachments() -> usize {
    fds_named("bpf_link") + fds_named("[perf_event]")
}

/// Kprobes the kernel has registered on `function` (debugfs; 0 where the
/// kernel has no kprobes).
fn kprobes_on(function: &str) -> usize {
    let list = std::fs::read_to_string("/sys/kernel/debug/kprobes/list").unwrap_or_default();
    list.lines().filter(|l| l.split_whitespace().any(|w| w.starts_with(&format!("{function}+")))).count()
}

#[test]
fn a_kprobe_path_failing_midway_leaves_nothing_attached() {
    let good = [("kp_tcp_sendmsg", "tcp_sendmsg"), ("kr_tcp_sendmsg", "tcp_sendmsg")];
    let (links, progs, registered) = (attachments(), fds_named("bpf-prog"), kprobes_on("tcp_sendmsg"));
    if kernel_has_kprobes() {
        // The first two attach on their own, so the failure below is midway.
        let mut ebpf = load_object(&CaptureConfig::default(), std::process::id()).expect("object loads");
        attach_kprobes(&mut ebpf, &good).expect("kprobes attach on this kernel");
        assert_eq!(kprobes_on("tcp_sendmsg"), registered + 2, "kprobe and kretprobe registered");
        assert_eq!(attachments(), links + 2);
    }
    let mut ebpf = load_object(&CaptureConfig::default(), std::process::id()).expect("object loads");
    let mut list = good.to_vec();
    list.push(("kp_tcp_recvmsg", "nettap_no_such_kernel_function"));
    attach_kprobes(&mut ebpf, &list).expect_err("a kprobe on a missing function cannot attach");
    assert_eq!(kprobes_on("tcp_sendmsg"), registered, "a kprobe stayed registered");
    assert_eq!(attachments(), links, "a kprobe link leaked");
    assert_eq!(fds_named("bpf-prog"), progs, "a kprobe program stayed loaded");
}

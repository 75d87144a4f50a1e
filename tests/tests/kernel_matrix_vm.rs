//! The end-to-end suite on a second kernel: Debian's 6.1 (kprobes on, unlike
//! the 6.18 kernel of our machines) under qemu (tests/src/vm.rs). One guest
//! boot runs a list of the host's own end-to-end tests, their binaries
//! unchanged, with `NETTAP_EXPECT_HOOK` set: every sensor they start must
//! have chosen that hook, and every plaintext TCP record must come from it
//! (`assert_kernel_hook` in tests/src/lib.rs).
//!
//! The other test binaries must be built (`cargo test` builds every test
//! target before it runs any).

use nettap_e2e::vm::Guest;
use std::path::PathBuf;
use std::time::Duration;

/// (test binary, test) run in the guest on the kprobe path.
const KPROBE_SUITE: &[(&str, &str)] = &[
    ("kernel_hook_bpf", "auto_selection_logs_its_choice_and_reason"),
    ("kernel_hook_bpf", "a_kprobe_path_failing_midway_leaves_nothing_attached"),
    ("kernel_hook_bpf", "required_kprobes_are_used_or_refused_clearly"),
    ("tcp_exact_bpf", "loopback_ipv4"),
    ("tcp_exact_bpf", "loopback_ipv4_from_0_b_to_4_mib"),
    ("tcp_exact_bpf", "loopback_ipv6"),
    ("tcp_exact_bpf", "veth_between_namespaces_ipv4"),
    ("tcp_exact_bpf", "veth_between_namespaces_ipv6"),
    ("tcp_exact_bpf", "bytes_peeked_before_they_are_read_are_captured_once"),
    ("midstream_bpf", "connection_opened_before_the_sensor"),
    ("blocked_readers_bpf", "every_reader_blocked_at_the_same_time_is_captured"),
    ("syscalls_bpf", "sendfile_is_counted_not_invented"),
    ("filters_bpf", "port_filter_keeps_only_that_port"),
    ("filters_bpf", "pid_filter_keeps_only_that_process"),
    ("drops_bpf", "tiny_ring_buffer_counts_every_lost_byte"),
    ("tls_openssl_bpf", "python_ssl_plaintext_is_exact_and_ciphertext_never_written"),
    ("tls_go_bpf", "go_tls_stripped_build"),
    ("tls_boringssl_bpf", "grpcio_tls_both_ends_exact_with_the_real_connection"),
    ("tls_boringssl_bpf", "grpcio_tls_on_an_unwanted_port_is_left_out_not_counted_unbound"),
    ("dns_bpf", "connections_are_named_by_the_dns_answers_their_process_saw"),
    ("bpf_cost_bpf", "bpf_run_time_per_call_of_the_chosen_path"),
];

/// Run on the same kernel with the hook forced to tracepoints
/// (`NETTAP_KERNEL_HOOK=tracepoint`): both paths stay green where both exist.
const TRACEPOINT_SUITE: &[(&str, &str)] = &[
    ("tcp_exact_bpf", "loopback_ipv4"),
    ("tls_openssl_bpf", "python_ssl_plaintext_is_exact_and_ciphertext_never_written"),
    ("bpf_cost_bpf", "bpf_run_time_per_call_of_the_chosen_path"),
];

/// Run with kprobes attachable but disarmed (`echo 0 >
/// /sys/kernel/debug/kprobes/enabled`: attached kprobes never fire): `auto`
/// must see it and take the tracepoints, `--kernel-hook kprobe` must refuse.
const DISARMED_SUITE: &[(&str, &str)] = &[
    ("kernel_hook_bpf", "auto_selection_logs_its_choice_and_reason"),
    ("kernel_hook_bpf", "required_kprobes_are_used_or_refused_clearly"),
    ("tcp_exact_bpf", "loopback_ipv4"),
];

/// Environment the guest's tests get from the host (tool locations and caches).
const PASSED_ENV: &[&str] = &["PATH", "HOME", "GOPATH", "GOCACHE", "GOMODCACHE", "GOFLAGS", "RUST_BACKTRACE"];

/// The newest `NAME-<hash>` test binary next to this one.
fn test_binary(name: &str) -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let deps = me.parent().unwrap();
    let prefix = format!("{name}-");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(deps)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let file = p.file_name().unwrap().to_string_lossy();
            file.strip_prefix(&prefix)
                .is_some_and(|hash| hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).unwrap_or_else(|| {
        panic!(
            "no test binary {name}-<hash> in {}: build them with `cargo test -p nettap-e2e --no-run`",
            deps.display()
        )
    })
}

/// The guest's script: each test on its own, its outcome and time on one
/// `nettap-guest-test` line, the output of a failure on the console.
fn script(setup: &str, tests: &[(&str, &str)]) -> String {
    let mut s = format!("{setup}\n");
    s.push_str(
        r#"mkdir -p logs
fails=0
t() {
  local start=$(date +%s%N)
  "$1" --exact --test-threads=1 --nocapture "$2" >"logs/$2.log" 2>&1
  local rc=$? ms=$(( ($(date +%s%N) - start) / 1000000 ))
  if [ $rc = 0 ] && grep -q "test result: ok. 1 passed" "logs/$2.log"; then
    echo "nettap-guest-test $2 ok ${ms}ms"
    grep "^nettap-report " "logs/$2.log"
  else
    echo "nettap-guest-test $2 FAILED ${ms}ms"
    tail -n 60 "logs/$2.log"
    fails=$((fails + 1))
  fi
}
"#,
    );
    for (bin, test) in tests {
        s.push_str(&format!("t {} {test}\n", test_binary(bin).display()));
    }
    s.push_str("exit $fails\n");
    s
}

/// Boots the guest, runs `setup` then `tests` there with `hook` expected
/// (and `env`), and fails unless every one passed.
fn run_in_guest(hook: &str, setup: &str, env: &[(&str, &str)], tests: &[(&str, &str)]) {
    let guest = Guest::debian_6_1();
    let host_env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| PASSED_ENV.contains(&k.as_str()) || (k.starts_with("NETTAP_") && k != "NETTAP_VM"))
        .collect();
    let mut all: Vec<(&str, &str)> = host_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.push(("NETTAP_EXPECT_HOOK", hook));
    all.extend_from_slice(env);
    // Software emulation is slow: a bound per test, not one for the whole boot.
    let timeout = Duration::from_secs(60 + 240 * tests.len() as u64);
    let run = guest.run(&script(setup, tests), &all, timeout);

    let lines: Vec<&str> = run
        .console
        .lines()
        .filter(|l| l.starts_with("nettap-guest-test ") || l.starts_with("nettap-report "))
        .collect();
    let ran = lines.iter().filter(|l| l.starts_with("nettap-guest-test ")).count();
    eprintln!(
        "{} ({hook} path): {ran} tests, guest boot to power-off {:.1} s\n{}",
        guest.kernel_package(),
        run.wall.as_secs_f64(),
        lines.join("\n")
    );
    let passed = |test: &str| lines.iter().any(|l| l.starts_with(&format!("nettap-guest-test {test} ok ")));
    if run.status != Some(0) || !tests.iter().all(|(_, test)| passed(test)) {
        // Kept for a look at every test's whole log (the console has the tail of each failure's).
        let logs = run.share.keep().join("logs");
        panic!(
            "the guest suite failed (status {:?}; logs in {}); console:\n{}",
            run.status,
            logs.display(),
            run.console
        );
    }
}

#[test]
fn debian_6_1_kprobe_path() {
    // Go compiles here, natively, into the shared build cache: the guest's
    // build of the same program then only links.
    let warm = tempfile::tempdir().unwrap();
    nettap_e2e::go_build(&warm.path().join("tlspeer"), &["-ldflags=-s -w"], &[]);
    run_in_guest("kprobe", "", &[], KPROBE_SUITE);
}

#[test]
fn debian_6_1_tracepoint_path_by_override() {
    run_in_guest("tracepoint", "", &[("NETTAP_KERNEL_HOOK", "tracepoint")], TRACEPOINT_SUITE);
}

#[test]
fn debian_6_1_kprobes_disarmed_auto_takes_tracepoints() {
    let disarm = "echo 0 >/sys/kernel/debug/kprobes/enabled || exit 1";
    run_in_guest("tracepoint", disarm, &[], DISARMED_SUITE);
}

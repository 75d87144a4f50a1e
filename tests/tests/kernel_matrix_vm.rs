//! The end-to-end suite on a second kernel: Debian's 6.1 (kprobes on, unlike
//! the 6.18 kernel of our machines) under qemu (tests/src/vm.rs). One guest
//! boot runs a list of the host's own end-to-end tests, their binaries
//! unchanged, with `NETTAP_EXPECT_HOOK` set: every sensor they start must
//! have chosen that hook, and every plaintext TCP record must come from it
//! (`assert_kernel_hook` in tests/src/lib.rs).
//!
//! The three suites below share one boot (the first of this file's tests
//! to run boots the guest, the others read its outcome): under software
//! emulation a boot and the cold caches after it cost a minute or more.
//!
//! The other test binaries must be built (`cargo test` builds every test
//! target before it runs any).

use nettap_e2e::vm::Guest;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
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

/// One suite of the boot: its name, the hook its sensors must choose,
/// shell run before it (in the suite's own subshell), its environment and tests.
struct Suite {
    name: &'static str,
    hook: &'static str,
    setup: &'static str,
    env: &'static [(&'static str, &'static str)],
    tests: &'static [(&'static str, &'static str)],
}

/// In this order: the disarmed suite last (it disarms kprobes for the rest
/// of the boot; the script arms them again after it all the same).
const SUITES: [Suite; 3] = [
    Suite { name: "kprobe", hook: "kprobe", setup: "", env: &[], tests: KPROBE_SUITE },
    Suite {
        name: "tracepoint",
        hook: "tracepoint",
        setup: "",
        env: &[("NETTAP_KERNEL_HOOK", "tracepoint")],
        tests: TRACEPOINT_SUITE,
    },
    Suite {
        name: "disarmed",
        hook: "tracepoint",
        setup: "echo 0 >/sys/kernel/debug/kprobes/enabled || exit 1",
        env: &[],
        tests: DISARMED_SUITE,
    },
];

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

/// The sensor the guest's tests run (`NETTAP_BIN` there): the one under test
/// (`nettap_bin()`, checked fresh here) without its symbol table. At start-up
/// the sensor used to examine every running Rust program for rustls, itself
/// included, by demangling its whole symbol table: the debug build's 180 000
/// symbols took 20-35 s of every sensor start under emulation (about half of
/// it), in every test. The sensor now passes over its own executable
/// (probes::probed_files), so this copy is belt and braces until a guest run
/// times the suite without it; its code is the same bytes. Written under the
/// target directory, which the guest sees at the same path (its /tmp is its own).
fn guest_sensor() -> PathBuf {
    let bin = nettap_e2e::sensor::nettap_bin();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-matrix-vm");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("nettap");
    let tmp = dir.join("nettap.tmp");
    let status = Command::new("objcopy")
        .arg("--strip-all")
        .arg(&bin)
        .arg(&tmp)
        .status()
        .expect("objcopy (binutils) is required to strip the guest's sensor");
    assert!(status.success(), "objcopy --strip-all {} failed", bin.display());
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// The guest's script: each suite in a subshell of its own (its environment
/// and setup), each test on its own, its outcome and time on one
/// `nettap-guest-test SUITE NAME` line, the output of a failure on the
/// console, each suite's failures on a `nettap-guest-suite SUITE` line.
fn script(sensor: &Path) -> String {
    let mut s = String::from(
        r#"mkdir -p logs
t() {
  local start=$(date +%s%N)
  "$2" --exact --test-threads=1 --nocapture "$3" >"logs/$1.$3.log" 2>&1
  local rc=$? ms=$(( ($(date +%s%N) - start) / 1000000 ))
  if [ $rc = 0 ] && grep -q "test result: ok. 1 passed" "logs/$1.$3.log"; then
    echo "nettap-guest-test $1 $3 ok ${ms}ms"
    grep "^nettap-report " "logs/$1.$3.log"
  else
    echo "nettap-guest-test $1 $3 FAILED ${ms}ms"
    tail -n 60 "logs/$1.$3.log"
    fails=$((fails + 1))
  fi
}
total=0
"#,
    );
    s.push_str(&format!("export NETTAP_BIN={}\n", shell_quote(&sensor.to_string_lossy())));
    for suite in &SUITES {
        s.push_str(&format!(
            "suite_start=$(date +%s)\n(\nfails=0\nexport NETTAP_EXPECT_HOOK={}\n",
            suite.hook
        ));
        for (k, v) in suite.env {
            s.push_str(&format!("export {k}={}\n", shell_quote(v)));
        }
        s.push_str(&format!("{}\n", suite.setup));
        for (bin, test) in suite.tests {
            s.push_str(&format!("t {} {} {test}\n", suite.name, test_binary(bin).display()));
        }
        s.push_str(&format!(
            "exit $fails\n)\nrc=$?\necho \"nettap-guest-suite {} $rc $(( $(date +%s) - suite_start ))s\"\ntotal=$((total + rc))\n",
            suite.name
        ));
    }
    s.push_str("echo 1 >/sys/kernel/debug/kprobes/enabled\nexit $total\n");
    s
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What the one boot left: its console's test lines, and where its logs
/// were kept if anything failed.
struct Outcome {
    status: Option<i32>,
    lines: Vec<String>,
    console: String,
    kept_logs: Option<PathBuf>,
}

/// Boots the guest once and runs every suite (the first caller does; the
/// others wait for it and share the outcome).
fn outcome() -> &'static Outcome {
    static OUTCOME: OnceLock<Outcome> = OnceLock::new();
    OUTCOME.get_or_init(|| {
        // Go compiles here, natively, into the shared build cache: the guest's
        // build of the same program then only links.
        let warm = tempfile::tempdir().unwrap();
        nettap_e2e::go_build(&warm.path().join("tlspeer"), &["-ldflags=-s -w"], &[]);
        let sensor = guest_sensor();
        let guest = Guest::debian_6_1();
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| {
                PASSED_ENV.contains(&k.as_str())
                    || (k.starts_with("NETTAP_") && !["NETTAP_VM", "NETTAP_BIN"].contains(&k.as_str()))
            })
            .collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // Software emulation is slow: a bound per test, not one for the whole boot.
        let tests: usize = SUITES.iter().map(|s| s.tests.len()).sum();
        let timeout = Duration::from_secs(60 + 240 * tests as u64);
        let run = guest.run(&script(&sensor), &env, timeout);
        let lines: Vec<String> = run
            .console
            .lines()
            .filter(|l| {
                ["nettap-guest-test ", "nettap-report ", "nettap-guest-suite "]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .map(str::to_string)
            .collect();
        eprintln!(
            "{}: {tests} tests in {} suites, guest boot to power-off {:.1} s\n{}",
            guest.kernel_package(),
            SUITES.len(),
            run.wall.as_secs_f64(),
            lines.join("\n")
        );
        let ok = run.status == Some(0)
            && SUITES.iter().all(|s| suite_passed(&lines, s))
            && lines.iter().filter(|l| l.starts_with("nettap-guest-test ")).count() == tests;
        // Kept for a look at every test's whole log (the console has the tail of each failure's).
        let kept_logs = (!ok).then(|| run.share.keep().join("logs"));
        Outcome { status: run.status, lines, console: run.console, kept_logs }
    })
}

/// True if `suite` ended with no failure and each of its tests passed.
fn suite_passed(lines: &[String], suite: &Suite) -> bool {
    let ended = lines.iter().any(|l| l.starts_with(&format!("nettap-guest-suite {} 0 ", suite.name)));
    ended
        && suite.tests.iter().all(|(_, test)| {
            lines.iter().any(|l| l.starts_with(&format!("nettap-guest-test {} {test} ok ", suite.name)))
        })
}

/// Fails unless every test of suite `name` passed in the guest.
fn check(name: &str) {
    let suite = SUITES.iter().find(|s| s.name == name).unwrap();
    let out = outcome();
    let mine: Vec<&String> = out
        .lines
        .iter()
        .filter(|l| {
            l.starts_with(&format!("nettap-guest-test {name} "))
                || l.starts_with(&format!("nettap-guest-suite {name} "))
        })
        .collect();
    eprintln!(
        "{name} suite ({} path):\n{}",
        suite.hook,
        mine.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n")
    );
    if !suite_passed(&out.lines, suite) {
        panic!(
            "the guest's {name} suite failed (status {:?}; logs in {}); console:\n{}",
            out.status,
            out.kept_logs.as_deref().unwrap_or(Path::new("?")).display(),
            out.console
        );
    }
}

#[test]
fn debian_6_1_kprobe_path() {
    check("kprobe");
}

#[test]
fn debian_6_1_tracepoint_path_by_override() {
    check("tracepoint");
}

#[test]
fn debian_6_1_kprobes_disarmed_auto_takes_tracepoints() {
    check("disarmed");
}

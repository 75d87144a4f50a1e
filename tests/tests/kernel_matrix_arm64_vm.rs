//! The sensor on arm64: Debian's 6.1 arm64 kernel under qemu (tests/src/vm.rs),
//! the sensor cross-built for aarch64, Go peers built with GOARCH=arm64 and
//! Debian's arm64 OpenSSL. The guest has no Python and cannot run the host's
//! test binaries, so one boot runs a shell script of real peers (plaintext TCP
//! over IPv4 through a DNS name and over IPv6, OpenSSL's command against a Go
//! TLS server, a Go TLS client and server) under one sensor, and the checks
//! are made here on the records, the peers' dumps and the sensor's log. Two
//! boots: `auto` (which takes kprobes there) and `--kernel-hook tracepoint`.

use nettap_e2e::vm::Guest;
use nettap_e2e::*;
use std::path::Path;
use std::time::Duration;

/// Plaintext payload sizes each side sends, in order.
const SIZES: &[usize] = &[1, 100, 4095, 65537, 1 << 20];
/// The Go client's POST bodies (the server answers each with as many bytes).
const GO_SIZES: &[usize] = &[0, 1024, 100 * 1024];
/// The body OpenSSL's client posts, and the size of the Go server's answer.
const OSSL_REQ: usize = 70_000;
const OSSL_RESP: usize = 65_536;

const SCRIPT: &str = r#"
H=/host
fail() { echo "nettap-guest: $*"; exit 1; }
# wait_for FILE: up to 60 s.
wait_for() {
  i=0
  while [ ! -e "$1" ]; do
    i=$((i + 1)); [ $i -le 600 ] || fail "$1 never appeared"; sleep 0.1
  done
}
# wait_log WORD WORD: a line of the sensor's log with both, up to 60 s.
wait_log() {
  i=0
  while ! grep -F "$1" sensor.log | grep -qF "$2"; do
    i=$((i + 1)); [ $i -le 600 ] || fail "the sensor never logged $1 $2"; sleep 0.1
  done
}
echo "nameserver 127.0.0.1" >/etc/resolv.conf
t0=$(date +%s)
$H$NETTAP capture --out records.jsonl --ready-file /tmp/ready --raw --kernel-hook $HOOK \
  --ring-buffer-bytes 67108864 --max-bytes-per-call 16777216 2>sensor.log &
sensor=$!
wait_for /tmp/ready
echo "nettap-guest: sensor ready after $(( $(date +%s) - t0 )) s"

$H$PEER dns -listen 127.0.0.1:53 -name api.example.test -a 127.0.0.1 -ready /tmp/dns.ready &
dns=$!
wait_for /tmp/dns.ready
mkdir v4 v6 ossl
$H$PEER server -listen 127.0.0.1:7001 -sizes $SIZES -dump v4 -ready /tmp/v4.ready &
s=$!
wait_for /tmp/v4.ready
$H$PEER client -connect api.example.test:7001 -sizes $SIZES -dump v4 || fail "IPv4 client"
wait $s || fail "IPv4 server"
$H$PEER server -listen [::1]:7002 -sizes $SIZES -dump v6 -ready /tmp/v6.ready &
s=$!
wait_for /tmp/v6.ready
$H$PEER client -connect [::1]:7002 -sizes $SIZES -dump v6 || fail "IPv6 client"
wait $s || fail "IPv6 server"
echo "nettap-guest: plaintext done after $(( $(date +%s) - t0 )) s"

# OpenSSL's client against a Go server, then a Go client against another.
$H$TLSPEER server -http1 -addr 127.0.0.1:7443 -cert $H$CERT -key $H$KEY -ready /tmp/tls1.ready &
tls1=$!
wait_for /tmp/tls1.ready
$H$TLSPEER server -http1 -addr 127.0.0.1:7444 -cert $H$CERT -key $H$KEY -ready /tmp/tls2.ready &
tls2=$!
wait_for /tmp/tls2.ready
wait_log "probe attached" "crypto/tls.(*Conn).Read"
echo $tls1 >ossl/server.pid
echo $tls2 >go.server.pid
openssl s_client -connect 127.0.0.1:7443 -quiet <request >ossl/client.recv 2>ossl/client.err &
c=$!
echo $c >ossl/client.pid
wait $c || fail "openssl s_client"
$H$TLSPEER client -http1 -url https://127.0.0.1:7444/ -ca $H$CERT -sizes $GO_SIZES &
c=$!
echo $c >go.client.pid
wait $c || fail "Go TLS client"
echo "nettap-guest: TLS done after $(( $(date +%s) - t0 )) s"
kill $tls1 $tls2 $dns
kill -INT $sensor
wait $sensor || fail "the sensor exited with $?"
echo "nettap-guest: sensor stopped after $(( $(date +%s) - t0 )) s"
"#;

fn sizes(list: &[usize]) -> String {
    list.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")
}

fn pid_file(share: &Path, name: &str) -> u32 {
    std::fs::read_to_string(share.join(name)).unwrap().trim().parse().unwrap()
}

/// The single `conn.local` of `pid`'s data records.
fn local_of(cap: &Capture, pid: u32) -> String {
    let locals: std::collections::BTreeSet<&str> =
        cap.of("data", pid).iter().filter_map(|r| r["conn"]["local"].as_str()).collect();
    assert_eq!(locals.len(), 1, "pid {pid}: one connection, got {locals:?}");
    locals.into_iter().next().unwrap().to_string()
}

#[test]
fn debian_6_1_arm64_kprobe_path_by_auto() {
    run_arm64("auto", "kprobe");
}

#[test]
fn debian_6_1_arm64_tracepoint_path_by_override() {
    run_arm64("tracepoint", "tracepoint");
}

/// One boot: the sensor with `--kernel-hook choice` must take `hook`, and
/// everything above must be captured exactly.
fn run_arm64(choice: &str, hook: &str) {
    let guest = Guest::debian_6_1_arm64();
    let nettap = nettap_bin_arm64();
    let work = tempfile::tempdir().unwrap();
    let arm = [("GOARCH", "arm64"), ("CGO_ENABLED", "0")];
    let (peer, tlspeer) = (work.path().join("guestpeer"), work.path().join("tlspeer"));
    go_build_program("guestpeer", &peer, &[], &arm);
    // With its symbol table: crypto/tls found by name, g in x28, ret sites.
    go_build(&tlspeer, &[], &arm);
    let (cert, key) = tls_cert(work.path());

    let path = |p: &Path| p.to_str().unwrap().to_string();
    let env = [
        ("NETTAP", path(&nettap)),
        ("PEER", path(&peer)),
        ("TLSPEER", path(&tlspeer)),
        ("CERT", path(&cert)),
        ("KEY", path(&key)),
        ("SIZES", sizes(SIZES)),
        ("GO_SIZES", sizes(GO_SIZES)),
        ("HOOK", choice.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut request =
        format!("POST /echo/{OSSL_RESP} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {OSSL_REQ}\r\nConnection: close\r\n\r\n")
            .into_bytes();
    request.extend_from_slice(pattern_body("req", OSSL_REQ).as_bytes());
    let run = guest.run_with_files(SCRIPT, &env, &[("request", &request)], Duration::from_secs(600));

    let share = run.share.path();
    let progress: Vec<&str> = run.console.lines().filter(|l| l.starts_with("nettap-guest:")).collect();
    eprintln!(
        "{} (arm64, {hook} path): guest boot to power-off {:.1} s\n{}",
        guest.kernel_package(),
        run.wall.as_secs_f64(),
        progress.join("\n")
    );
    let log = std::fs::read_to_string(share.join("sensor.log")).unwrap_or_default();
    assert_eq!(run.status, Some(0), "the guest script failed; sensor log:\n{log}\nconsole:\n{}", run.console);
    let cap = Capture::parse(&std::fs::read_to_string(share.join("records.jsonl")).unwrap(), log);
    // Debian's arm64 kernel has kprobes: auto takes them; every kernel
    // record comes from the path taken.
    assert_kernel_hook(&cap, hook);
    let mut by_probe = std::collections::BTreeMap::<String, usize>::new();
    for r in cap.records.iter().filter(|r| r["kind"] == "data") {
        *by_probe.entry(format!("{} {} {}", r["comm"], r["source"], r["probe"])).or_default() += 1;
    }
    eprintln!("data records by comm, source and probe: {by_probe:#?}");

    // Plaintext TCP, both ends byte-exact; the IPv4 client named by the DNS
    // answer its own Go resolver got.
    for dir in ["v4", "v6"] {
        let (client, server) = (peer_info(&share.join(dir), "client"), peer_info(&share.join(dir), "server"));
        assert_exact(&cap, &client, "client", 0);
        assert_exact(&cap, &server, "server", 0);
        let named = dir == "v4";
        for r in cap.of("data", client.pid) {
            assert_eq!(r["conn"]["remote_host"] == "api.example.test", named, "{dir}: {r}");
        }
        if named {
            let dns = cap.of("dns", client.pid);
            let answered = dns.iter().any(|r| r["response"] == true && r["conn"]["remote"] == "127.0.0.1:53");
            assert!(answered, "the client's DNS answer: {dns:?}");
        }
    }

    // OpenSSL (arm64 libssl3: uprobe at SSL_write, return of SSL_read)
    // against Go's crypto/tls: each end exactly what the other end had.
    let ossl = share.join("ossl");
    let client_pid = pid_file(share, "ossl/client.pid");
    let server_pid = pid_file(share, "ossl/server.pid");
    let recv = std::fs::read(ossl.join("client.recv")).unwrap();
    assert!(
        recv.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&recv[..recv.len().min(200)])
    );
    assert!(recv.ends_with(pattern_body("resp", OSSL_RESP).as_bytes()), "the whole answer reached openssl");
    let client_local = local_of(&cap, client_pid);
    let client = PeerInfo {
        pid: client_pid,
        comm: "openssl".into(),
        local: client_local.clone(),
        remote: "127.0.0.1:7443".into(),
        sent: request.clone(),
        recv: recv.clone(),
    };
    assert_exact_from(&cap, &client, "client", 0, "openssl");
    let server = PeerInfo {
        pid: server_pid,
        comm: "tlspeer".into(),
        local: "127.0.0.1:7443".into(),
        remote: client_local,
        sent: recv,
        recv: request,
    };
    assert_exact_from(&cap, &server, "server", 0, "go-tls");
    for probe in ["uprobe:SSL_write", "uretprobe:SSL_read"] {
        assert!(cap.of("data", client_pid).iter().any(|r| r["probe"] == probe), "openssl: no {probe} record");
    }

    // Go client and server: every POST and answer exact in the HTTP records
    // of both ends, and each end's bytes the other's.
    let (go_client, go_server) = (pid_file(share, "go.client.pid"), pid_file(share, "go.server.pid"));
    for (pid, role) in [(go_client, "client"), (go_server, "server")] {
        let http = cap.of("http", pid);
        assert_eq!(http.len(), GO_SIZES.len(), "{role}: {http:?}");
        for (r, &n) in http.iter().zip(GO_SIZES) {
            assert_eq!(r["source"], "go-tls", "{role}: {r}");
            assert_eq!(r["conn"]["tls"], true, "{role}: {r}");
            assert_eq!(r["conn"]["role"], role, "{role}: {r}");
            assert_eq!(r["request"]["path"], format!("/echo/{n}"), "{role}");
            assert_eq!(r["response"]["status"], 200, "{role}: {r}");
            if n > 0 {
                assert_http_body(&r["request"], &pattern_body("req", n), role);
                assert_http_body(&r["response"], &pattern_body("resp", n), role);
            }
        }
    }
    for (a, b) in [("send", "recv"), ("recv", "send")] {
        let (c, s) = (cap.stream(go_client, a), cap.stream(go_server, b));
        assert!(c.gaps.is_empty() && s.gaps.is_empty(), "Go {a}: gaps {:?} {:?}", c.gaps, s.gaps);
        assert!(!c.bytes.is_empty() && c.bytes == s.bytes, "the Go client's {a} is the Go server's {b}");
    }
    for pid in [client_pid, server_pid, go_client, go_server] {
        assert!(
            cap.of("data", pid).iter().all(|r| r["conn"]["tls"] == true && r["source"] != "kernel"),
            "no ciphertext for TLS pid {pid}"
        );
    }
}

//! DNS enrichment end to end: dnsmasq in one network namespace answers for
//! names under example.test with the address of an HTTP server in that
//! namespace; clients in the other namespace resolve them through glibc
//! (`/etc/netns/NS/resolv.conf`, which `ip netns exec` puts in place) and
//! connect. Their records must name the server as the client asked for it.

use nettap_e2e::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Child;

/// A namespace pair with dnsmasq and an HTTP server in `b`, and `a`
/// resolving through that dnsmasq. Everything is removed on drop.
struct World {
    pair: NetNsPair,
    dnsmasq: Child,
    http: Child,
    port: u16,
    resolv_dir: PathBuf,
    _scratch: tempfile::TempDir,
}

impl World {
    fn new(n: u8, ttl: u32) -> World {
        let pair = NetNsPair::new(n);
        let scratch = tempfile::tempdir().unwrap();
        let dnsmasq = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"].into_iter().find(|p| Path::new(p).exists());
        let dnsmasq = dnsmasq.expect("dnsmasq is required (ci/install.sh installs dnsmasq-base)");
        let dnsmasq = in_ns(Some(&pair.b), Path::new(dnsmasq))
            .args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces", "--user=root"])
            .arg(format!("--listen-address={}", pair.b4))
            .arg(format!("--listen-address={}", pair.b6))
            .arg("--pid-file")
            .arg(format!("--local-ttl={ttl}"))
            .arg(format!("--host-record=api.example.test,{}", pair.b4))
            .arg(format!("--address=/ttl.example.test/{}", pair.b4))
            .arg(format!("--address=/v6.example.test/{}", pair.b6))
            .arg("--cname=www.example.test,api.example.test")
            .spawn()
            .expect("cannot start dnsmasq");
        let resolv_dir = PathBuf::from(format!("/etc/netns/{}", pair.a));
        std::fs::create_dir_all(&resolv_dir).unwrap();
        std::fs::write(
            resolv_dir.join("resolv.conf"),
            format!("nameserver {}\noptions timeout:2\n", pair.b4),
        )
        .unwrap();
        let port = free_port();
        let ready = scratch.path().join("ready");
        let mut http = in_ns(Some(&pair.b), &python())
            .arg(nettap_e2e::program("http_peer.py"))
            .args(["server", "--listen", "::", "--port", &port.to_string(), "--ready"])
            .arg(&ready)
            .spawn()
            .unwrap();
        wait_for_file(&ready, || http.try_wait().unwrap().is_none());
        let mut w = World { pair, dnsmasq, http, port, resolv_dir, _scratch: scratch };
        // dnsmasq answers once it is listening (a CNAME target must be a
        // host record, hence api.example.test is one).
        let start = std::time::Instant::now();
        while !w.resolves("api.example.test") {
            assert!(w.dnsmasq.try_wait().unwrap().is_none(), "dnsmasq exited");
            assert!(start.elapsed() < TIMEOUT, "dnsmasq never answered");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        w
    }

    /// Points namespace `a`'s resolver at `server`, with resolv.conf `options`.
    fn resolver(&self, server: &str, options: &str) {
        let conf = format!("nameserver {server}\noptions timeout:2 {options}\n");
        std::fs::write(self.resolv_dir.join("resolv.conf"), conf).unwrap();
    }

    /// Whether `name` resolves in namespace `a` (through glibc, as apps do).
    fn resolves(&self, name: &str) -> bool {
        in_ns(Some(&self.pair.a), &python())
            .args(["-c", &format!("import socket; socket.getaddrinfo('{name}', 80)")])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// curl in namespace `a`; returns its pid once it succeeded.
    fn curl(&self, extra: &[&str], url: &str) -> u32 {
        let mut c = in_ns(Some(&self.pair.a), Path::new("/usr/bin/curl"))
            .args(["-sS", "--fail", "-o", "/dev/null"])
            .args(extra)
            .arg(url)
            .spawn()
            .unwrap();
        assert!(wait_child(&mut c, "curl").success(), "curl {url}");
        c.id()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for c in [&mut self.dnsmasq, &mut self.http] {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.resolv_dir);
    }
}

fn one_http(cap: &Capture, pid: u32) -> &Value {
    let h = cap.of("http", pid);
    assert_eq!(h.len(), 1, "{h:#?}\n{}", cap.log);
    h[0]
}

#[test]
fn connections_are_named_by_the_dns_answers_their_process_saw() {
    let w = World::new(40, 60);
    let sensor = Sensor::start(&[]);
    let port = w.port;
    let api = w.curl(&["-4"], &format!("http://api.example.test:{port}/a"));
    let www = w.curl(&["-4"], &format!("http://www.example.test:{port}/w"));
    let v6 = w.curl(&["-6"], &format!("http://v6.example.test:{port}/6"));
    let cap = sensor.stop();

    // The exchange and its connection carry the name the client asked for.
    let h = one_http(&cap, api);
    assert_eq!(h["conn"]["remote"], format!("{}:{port}", w.pair.b4));
    assert_eq!(h["conn"]["remote_host"], "api.example.test");
    let opens: Vec<&Value> = cap.of("conn", api).into_iter().filter(|r| r["event"] == "open").collect();
    assert!(opens.iter().any(|r| r["conn"]["remote_host"] == "api.example.test"), "{opens:?}");
    // Through a CNAME, still the name asked for.
    assert_eq!(one_http(&cap, www)["conn"]["remote_host"], "www.example.test");
    // AAAA.
    let h = one_http(&cap, v6);
    assert_eq!(h["conn"]["remote"], format!("[{}]:{port}", w.pair.b6));
    assert_eq!(h["conn"]["remote_host"], "v6.example.test");

    // The dns records of the client: its own queries and the answers.
    let answers: Vec<&Value> =
        cap.of("dns", api).into_iter().filter(|r| r["response"] == true && r["qtype"] == "A").collect();
    assert!(!answers.is_empty(), "{:#?}", cap.of("dns", api));
    let a = answers[0];
    assert_eq!(a["query"], "api.example.test");
    assert_eq!(a["answers"], serde_json::json!([w.pair.b4]));
    assert_eq!(a["rcode"], "NOERROR");
    assert_eq!(a["direction"], "recv");
    assert_eq!(a["conn"]["remote"], format!("{}:53", w.pair.b4));
    assert_eq!(a["conn"]["role"], "client");
    assert!(cap.of("dns", api).iter().any(|r| r["response"] == false), "the query itself is recorded");
    let cname = cap.of("dns", www).into_iter().find(|r| r["response"] == true && r["qtype"] == "A").unwrap();
    assert_eq!(cname["records"][0]["type"], "CNAME");
    assert_eq!(cname["records"][0]["data"], "api.example.test");
    // dnsmasq's side of the same exchange, as the server.
    let served: Vec<&Value> = cap
        .records
        .iter()
        .filter(|r| r["kind"] == "dns" && r["comm"] == "dnsmasq" && r["response"] == true)
        .collect();
    assert!(served.iter().any(|r| r["query"] == "api.example.test" && r["conn"]["role"] == "server"));
    // Only DNS of UDP: nothing else of UDP is recorded.
    assert!(cap.records.iter().filter(|r| r["kind"] == "dns").all(|r| r["conn"]["remote"]
        .as_str()
        .unwrap()
        .ends_with(":53")
        || r["conn"]["local"].as_str().unwrap().ends_with(":53")));
}

#[test]
fn names_expire_with_their_ttl_and_garbage_on_port_53_is_counted() {
    let w = World::new(41, 1);
    let sensor = Sensor::start(&[]);
    let port = w.port;
    // Resolve, then connect by address at once and again after the answer
    // expired (TTL 1 s; nettap keeps answers at least 5 s).
    let script = format!(
        "import socket, time, urllib.request\n\
         ip = socket.getaddrinfo('ttl.example.test', {port}, socket.AF_INET)[0][4][0]\n\
         urllib.request.urlopen(f'http://{{ip}}:{port}/fresh').read()\n\
         time.sleep(6)\n\
         urllib.request.urlopen(f'http://{{ip}}:{port}/stale').read()\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.sendto(b'\\xff' * 7 + b'not dns', ('{}', 53))\n",
        w.pair.b4
    );
    let mut client = in_ns(Some(&w.pair.a), &python()).args(["-c", &script]).spawn().unwrap();
    assert!(wait_child(&mut client, "resolving client").success());
    // The sensor keeps running after garbage on port 53.
    let api = w.curl(&["-4"], &format!("http://api.example.test:{port}/after"));
    let cap = sensor.stop();

    let by_path = |p: &str| {
        cap.of("http", client.id())
            .into_iter()
            .find(|r| r["request"]["path"] == p)
            .unwrap_or_else(|| panic!("no exchange {p}: {:#?}", cap.of("http", client.id())))
    };
    assert_eq!(by_path("/fresh")["conn"]["remote_host"], "ttl.example.test");
    assert!(by_path("/stale")["conn"].get("remote_host").is_none(), "expired: {}", by_path("/stale"));
    assert!(cap.dropped("dns_malformed").0 >= 1, "the garbage datagram is counted");
    assert_eq!(one_http(&cap, api)["conn"]["remote_host"], "api.example.test");
}

#[test]
fn the_terminal_summary_names_resolved_peers() {
    let w = World::new(42, 60);
    let dir = tempfile::tempdir().unwrap();
    let (ready, out) = (dir.path().join("ready"), dir.path().join("terminal.txt"));
    let mut sensor = std::process::Command::new(nettap_bin())
        .arg("capture")
        .arg("--ready-file")
        .arg(&ready)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&ready, || sensor.try_wait().unwrap().is_none());
    // Not HTTP: a TCP connection that sends a line, to a name.
    let script = format!(
        "import socket\ns = socket.create_connection(('api.example.test', {}))\ns.sendall(b'hello\\n')\ns.close()\n",
        w.port
    );
    let mut client = in_ns(Some(&w.pair.a), &python()).args(["-c", &script]).spawn().unwrap();
    assert!(wait_child(&mut client, "raw TCP client").success());
    let api = w.curl(&["-4"], &format!("http://api.example.test:{}/t", w.port));
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(sensor.id() as i32, libc::SIGINT) };
    assert!(wait_child(&mut sensor, "nettap").success());
    let text = std::fs::read_to_string(&out).unwrap();
    let tcp = format!("-> api.example.test:{} [{}] (client)", w.port, w.pair.b4);
    assert!(text.lines().any(|l| l.contains(&tcp) && l.contains(&format!("[{}]", client.id()))), "{text}");
    let http = format!("GET     http://api.example.test:{}/t  200", w.port);
    assert!(text.lines().any(|l| l.contains(&http) && l.contains(&format!("curl[{api}]"))), "{text}");
}

#[test]
fn answers_over_tcp_over_ipv6_and_through_a_local_stub_name_connections_too() {
    let w = World::new(43, 60);
    let sensor = Sensor::start(&[]);
    let port = w.port;
    // UDP to the server's IPv6 address.
    w.resolver(&w.pair.b6, "");
    let over_v6 = w.curl(&["-4"], &format!("http://api.example.test:{port}/v6dns"));
    // TCP (glibc's `use-vc`) to its IPv4 address.
    w.resolver(&w.pair.b4, "use-vc");
    let over_tcp = w.curl(&["-4"], &format!("http://www.example.test:{port}/tcpdns"));
    // A local stub resolver on 127.0.0.53 (as systemd-resolved) forwarding
    // to the server: the application's own query and answer still count.
    let dnsmasq =
        ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"].into_iter().find(|p| Path::new(p).exists()).unwrap();
    let mut stub = in_ns(Some(&w.pair.a), Path::new(dnsmasq))
        .args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces", "--user=root"])
        .args(["--listen-address=127.0.0.53", "--pid-file", "--cache-size=0"])
        .arg(format!("--server={}", w.pair.b4))
        .spawn()
        .unwrap();
    w.resolver("127.0.0.53", "");
    let start = std::time::Instant::now();
    while !w.resolves("api.example.test") {
        assert!(start.elapsed() < TIMEOUT, "the stub never answered");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let via_stub = w.curl(&["-4"], &format!("http://api.example.test:{port}/stub"));
    let _ = stub.kill();
    let _ = stub.wait();
    let cap = sensor.stop();

    let h = one_http(&cap, via_stub);
    assert_eq!(h["conn"]["remote_host"], "api.example.test");
    let asked =
        cap.of("dns", via_stub).into_iter().find(|r| r["response"] == true).expect("the app's own answer");
    assert_eq!(asked["conn"]["remote"], "127.0.0.53:53");

    assert_eq!(one_http(&cap, over_v6)["conn"]["remote_host"], "api.example.test");
    let udp6 = cap.of("dns", over_v6).into_iter().find(|r| r["response"] == true).expect("a dns answer");
    assert_eq!(udp6["conn"]["remote"], format!("[{}]:53", w.pair.b6));
    assert_eq!(one_http(&cap, over_tcp)["conn"]["remote_host"], "www.example.test");
    let tcp =
        cap.of("dns", over_tcp).into_iter().find(|r| r["response"] == true).expect("a dns answer over TCP");
    assert!(tcp["probe"].as_str().unwrap().starts_with("tracepoint:syscalls:sys_exit_"), "{tcp}");
    assert_eq!(tcp["query"], "www.example.test");
    assert_eq!(tcp["answers"], serde_json::json!([w.pair.b4]));
    // The TCP connection to port 53 is a TCP connection like any other.
    assert!(cap.of("conn", over_tcp).iter().any(|r| r["conn"]["remote"] == format!("{}:53", w.pair.b4)));
}

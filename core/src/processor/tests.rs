//! The processor driven by generated kernel records and agent frames, the
//! way the ring buffer and the agent socket feed it, with a fixed clock and
//! a host that answers from tables.

use super::*;
use crate::agent::{AgentChunk, AgentConn, AgentEvent, AgentMsg, Frame, Hook};
use crate::events::{user_probe, ConnChange, Direction, Role};
use crate::pod::{Peer, PodOf, ServiceMeta};
use crate::record::JsonlWriter;
use crate::testing::{Conn, EventGen};
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// A sink that keeps the JSON Lines it was given, shared with the test.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn records(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn kind(&self, kind: &str) -> Vec<Value> {
        self.records().into_iter().filter(|r| r["kind"] == kind).collect()
    }
}

/// Answers from tables: which (pid, port) listen, names, pods.
#[derive(Default)]
struct TableHost {
    listening: Vec<(u32, u16)>,
    comms: Vec<(u32, &'static str)>,
    pods: Vec<(u32, PodOf)>,
    /// Remote addresses that are pods or Services (shared: the test adds some later).
    peers: Arc<Mutex<Vec<(std::net::IpAddr, Peer)>>>,
    /// Processes that ended since (their /proc entry is gone).
    gone: Arc<Mutex<Vec<u32>>>,
}

impl Host for TableHost {
    fn listens(&mut self, pid: u32, _netns: u32, port: u16) -> Option<bool> {
        self.listening.iter().any(|&(p, _)| p == pid).then(|| self.listening.contains(&(pid, port)))
    }

    fn comm(&mut self, pid: u32) -> [u8; 16] {
        let mut comm = [0; 16];
        if self.gone.lock().unwrap().contains(&pid) {
            return comm;
        }
        if let Some((_, name)) = self.comms.iter().find(|(p, _)| *p == pid) {
            comm[..name.len()].copy_from_slice(name.as_bytes());
        }
        comm
    }

    fn pod_of(&mut self, pid: u32, _cgroup: u64) -> Option<PodOf> {
        self.pods.iter().find(|(p, _)| *p == pid).map(|(_, pod)| pod.clone())
    }

    fn peer_of(&mut self, ip: std::net::IpAddr) -> Option<Peer> {
        self.peers.lock().unwrap().iter().find(|(a, _)| *a == ip).map(|(_, peer)| peer.clone())
    }

    fn host_netns(&mut self) -> u32 {
        HOST_NETNS
    }
}

/// The host's network namespace in these tests (`Conn`'s default).
const HOST_NETNS: u32 = 4026531840;

/// Boot time 0 is realtime 1_700_000_000 s.
const OFFSET: i128 = 1_700_000_000_000_000_000;

fn processor_with(host: TableHost, raw: bool) -> (Processor, Lines) {
    let mut p = Processor::new(
        64,
        Limits::default(),
        Clock::with_offset(OFFSET),
        Box::new(host),
        EphemeralPorts::default(),
    );
    let lines = Lines::default();
    p.add_sink(Box::new(JsonlWriter::new(lines.clone(), raw)));
    (p, lines)
}

fn processor() -> (Processor, Lines) {
    processor_with(TableHost::default(), false)
}

fn end(p: &mut Processor, now: u64) {
    p.close_all(now).unwrap();
    p.report_drops(Vec::new(), now).unwrap();
    p.finish().unwrap();
}

const REQ: &[u8] = b"GET /items?id=1 HTTP/1.1\r\nHost: shop.test\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn an_exchange_over_plain_tcp_becomes_an_http_record_between_open_and_close() {
    let (mut p, out) = processor();
    let mut g = EventGen::default();
    let c = Conn::client(1, 100, "10.0.0.1:40000", "10.0.0.2:80");
    for rec in [
        g.conn(&c, ConnChange::Open),
        g.plain(&c, Direction::Send, 0, REQ),
        g.plain(&c, Direction::Recv, 0, RESP),
        g.conn(&c, ConnChange::Close),
    ] {
        p.handle(&rec).unwrap();
    }
    end(&mut p, g.now);
    let kinds: Vec<String> = out.records().iter().map(|r| r["kind"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["conn", "http", "conn"]);
    let http = &out.kind("http")[0];
    assert_eq!(http["request"]["path"], "/items?id=1");
    assert_eq!(http["response"]["body"], "hello");
    assert_eq!(http["pid"], 100);
    assert_eq!(http["conn"]["local"], "10.0.0.1:40000");
    assert_eq!(http["conn"]["role"], "client");
    assert_eq!(http["source"], "kernel");
    // The clock is the caller's: realtime = boot + offset.
    assert_eq!(http["ts_ns"].as_u64().unwrap() as i128, 1_000_001_000 + OFFSET);
}

#[test]
fn raw_output_has_every_chunk_as_captured_and_no_unparsed_copy() {
    let (mut p, out) = processor_with(TableHost::default(), true);
    let mut g = EventGen::default();
    let c = Conn::client(1, 100, "10.0.0.1:40000", "10.0.0.2:6379");
    p.handle(&g.plain(&c, Direction::Send, 0, b"*1\r\n$4\r\nPING\r\n")).unwrap();
    p.handle(&g.plain(&c, Direction::Recv, 0, b"+PONG\r\n")).unwrap();
    end(&mut p, g.now);
    let data = out.kind("data");
    assert_eq!(data.len(), 2, "{data:?}");
    assert_eq!(data[1]["payload"], "+PONG\r\n");
    assert_eq!(data[1]["direction"], "recv");
}

#[test]
fn chunks_of_a_request_that_arrive_out_of_order_wait_for_their_turn() {
    let (mut p, out) = processor();
    let mut g = EventGen::default();
    let c = Conn::client(1, 100, "10.0.0.1:40000", "10.0.0.2:80");
    p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
    // The first bytes decide the protocol; later chunks may swap (two CPUs).
    p.handle(&g.plain(&c, Direction::Send, 0, &REQ[..10])).unwrap();
    p.handle(&g.plain(&c, Direction::Send, 20, &REQ[20..])).unwrap();
    p.handle(&g.plain(&c, Direction::Send, 10, &REQ[10..20])).unwrap();
    p.handle(&g.plain(&c, Direction::Recv, 0, RESP)).unwrap();
    end(&mut p, g.now);
    let http = out.kind("http");
    assert_eq!(http.len(), 1, "{:?}", out.records());
    assert_eq!(http[0]["request"]["authority"], "shop.test");
    assert!(out.kind("drop").is_empty(), "{:?}", out.kind("drop"));
}

#[test]
fn a_later_chunk_arriving_first_does_not_decide_the_protocol() {
    let (mut p, out) = processor();
    let mut g = EventGen::default();
    let c = Conn::client(1, 100, "10.0.0.1:40000", "10.0.0.2:80");
    p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
    // The request's second chunk comes out of the ring buffer before its
    // first, and the response's before either (three CPUs).
    p.handle(&g.plain(&c, Direction::Send, 10, &REQ[10..])).unwrap();
    p.handle(&g.plain(&c, Direction::Recv, 0, RESP)).unwrap();
    p.handle(&g.plain(&c, Direction::Send, 0, &REQ[..10])).unwrap();
    p.handle(&g.conn(&c, ConnChange::Close)).unwrap();
    end(&mut p, g.now);
    let http = out.kind("http");
    assert_eq!(http.len(), 1, "{:?}", out.records());
    assert_eq!(http[0]["request"]["path"], "/items?id=1");
    assert_eq!(http[0]["response"]["body"], "hello");
    assert!(out.kind("data").is_empty() && out.kind("drop").is_empty(), "{:?}", out.records());
}

#[test]
fn a_connection_whose_first_byte_was_lost_is_still_parsed_from_what_came() {
    let (mut p, out) = processor();
    let mut g = EventGen::default();
    let c = Conn::client(1, 100, "10.0.0.1:40000", "10.0.0.2:80");
    p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
    // The first request's record was dropped: the next one starts at 100.
    let second = [REQ, REQ].concat();
    for (i, part) in second.chunks(10).enumerate() {
        p.handle(&g.plain(&c, Direction::Send, 100 + 10 * i as u64, part)).unwrap();
    }
    p.handle(&g.plain(&c, Direction::Recv, 0, &[RESP, RESP].concat())).unwrap();
    p.handle(&g.conn(&c, ConnChange::Close)).unwrap();
    end(&mut p, g.now);
    let http = out.kind("http");
    assert_eq!(http.len(), 2, "{:?}", out.records());
    assert_eq!(http[1]["request"]["authority"], "shop.test");
}

#[test]
fn tls_plaintext_takes_over_the_sockets_bytes() {
    let (mut p, out) = processor();
    let mut g = EventGen::default();
    let mut c = Conn::client(1, 100, "10.0.0.1:40000", "10.0.0.2:443");
    p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
    // The kernel saw the ClientHello before the connection was known to be TLS.
    p.handle(&g.plain(&c, Direction::Send, 0, &[0x16, 3, 1, 0, 4, 1, 2, 3, 4])).unwrap();
    c.tls = true;
    p.handle(&g.data(&c, nt_probe_ssl_write(), Direction::Send, 0, REQ, 0)).unwrap();
    // Ciphertext after the plaintext started is not the connection's stream.
    p.handle(&g.plain(&c, Direction::Recv, 0, &[0x17, 3, 3, 0, 2, 9, 9])).unwrap();
    p.handle(&g.data(&c, nt_probe_ssl_read(), Direction::Recv, 0, RESP, 0)).unwrap();
    p.handle(&g.conn(&c, ConnChange::Close)).unwrap();
    end(&mut p, g.now);
    let http = out.kind("http");
    assert_eq!(http.len(), 1);
    assert_eq!(http[0]["source"], "openssl");
    assert_eq!(http[0]["conn"]["tls"], true);
    assert_eq!(http[0]["response"]["body"], "hello");
    // Only the handshake bytes seen before are left as data, never the ciphertext after.
    assert!(out.kind("data").iter().all(|d| d["direction"] == "send"), "{:?}", out.kind("data"));
}

fn nt_probe_ssl_write() -> u32 {
    crate::abi::nt_probe::NT_PROBE_UPROBE_SSL_WRITE_EX
}

fn nt_probe_ssl_read() -> u32 {
    crate::abi::nt_probe::NT_PROBE_UPROBE_SSL_READ_EX
}

fn agent_chunk(
    local: &str,
    remote: &str,
    hook: Hook,
    direction: Direction,
    seq: u64,
    payload: &[u8],
) -> AgentMsg {
    AgentMsg {
        pid: 300,
        frame: Frame {
            event: AgentEvent::Data(AgentChunk {
                conn: AgentConn {
                    local: Some(local.parse().unwrap()),
                    remote: Some(remote.parse().unwrap()),
                    role: Role::Client,
                    object_id: 0,
                    peer_port: 0,
                },
                hook,
                direction,
                seq,
                ts_boot_ns: 2_000_000_000,
                tid: 301,
                payload: payload.to_vec().into(),
            }),
            dropped_chunks: 0,
            dropped_bytes: 0,
        },
    }
}

#[test]
fn an_agents_plaintext_joins_the_kernels_connection_and_its_close_waits_for_it() {
    let host = TableHost { comms: vec![(300, "java")], ..TableHost::default() };
    let (mut p, out) = processor_with(host, false);
    let mut g = EventGen::default();
    let c = Conn { comm: "java", ..Conn::client(7, 300, "10.0.0.1:40000", "10.0.0.2:8443") };
    p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
    p.on_agent(agent_chunk("10.0.0.1:40000", "10.0.0.2:8443", Hook::SocketWrite, Direction::Send, 0, REQ))
        .unwrap();
    // The kernel's close arrives before the agent's last chunk.
    p.handle(&g.conn(&c, ConnChange::Close)).unwrap();
    p.on_agent(agent_chunk("10.0.0.1:40000", "10.0.0.2:8443", Hook::SocketRead, Direction::Recv, 0, RESP))
        .unwrap();
    p.flush().unwrap();
    assert_eq!(out.kind("conn").len(), 1, "the close is held");
    // A second later the close is applied: the exchange, then the close.
    p.tick(g.now + 2_000_000_000).unwrap();
    p.flush().unwrap();
    let kinds: Vec<Value> = out.records().iter().map(|r| r["kind"].clone()).collect();
    assert_eq!(kinds, ["conn", "http", "conn"]);
    let http = &out.kind("http")[0];
    assert_eq!(http["source"], "jvmti");
    assert_eq!(http["comm"], "java");
    assert_eq!(http["conn"]["tls"], true);
    assert_eq!(http["response"]["body"], "hello");
    assert_eq!(out.kind("conn")[1]["event"], "close");
}

#[test]
fn an_agent_cannot_speak_for_another_process_connection() {
    let (mut p, out) = processor();
    let mut g = EventGen::default();
    // The connection belongs to pid 100; the agent is pid 300.
    let c = Conn::client(7, 100, "10.0.0.1:40000", "10.0.0.2:8443");
    p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
    p.on_agent(agent_chunk("10.0.0.1:40000", "10.0.0.2:8443", Hook::SocketWrite, Direction::Send, 0, REQ))
        .unwrap();
    end(&mut p, g.now);
    let theirs: Vec<Value> = out.records().into_iter().filter(|r| r["source"] == "jvmti").collect();
    assert!(!theirs.is_empty());
    assert!(theirs.iter().all(|r| r["pid"] == 300), "{theirs:?}");
}

#[test]
fn the_oldest_session_is_evicted_and_its_exchange_still_written() {
    let mut p = Processor::new(
        2,
        Limits::default(),
        Clock::with_offset(0),
        Box::new(crate::host::NoHost),
        EphemeralPorts::default(),
    );
    let lines = Lines::default();
    p.add_sink(Box::new(JsonlWriter::new(lines.clone(), false)));
    let mut g = EventGen::default();
    for id in 1..=3u64 {
        let c = Conn::client(id, 100, &format!("10.0.0.1:{}", 40000 + id), "10.0.0.2:80");
        p.handle(&g.plain(&c, Direction::Send, 0, REQ)).unwrap();
        p.handle(&g.plain(&c, Direction::Recv, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).unwrap();
    }
    assert!(p.connections() <= 2);
    end(&mut p, g.now);
    assert_eq!(lines.kind("http").len(), 3);
}

#[test]
fn dns_answers_name_later_connections_also_over_tcp() {
    let (mut p, out) = processor();
    let mut g = EventGen::default();
    let answer = dns_answer("api.shop.test", [10, 0, 0, 9]);
    // Over UDP.
    let resolver = Conn { id: 0, ..Conn::client(0, 100, "10.0.0.1:50000", "10.0.0.53:53") };
    p.handle(&g.dns(&resolver, Direction::Recv, &answer)).unwrap();
    let c = Conn::client(1, 100, "10.0.0.1:40000", "10.0.0.9:80");
    p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
    // Over TCP: a length-framed message split across chunks.
    let answer2 = dns_answer("db.shop.test", [10, 0, 0, 10]);
    let mut framed = (answer2.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&answer2);
    let t = Conn::client(2, 100, "10.0.0.1:40001", "10.0.0.53:53");
    p.handle(&g.plain(&t, Direction::Recv, 0, &framed[..7])).unwrap();
    p.handle(&g.plain(&t, Direction::Recv, 7, &framed[7..])).unwrap();
    let c2 = Conn::client(3, 100, "10.0.0.1:40002", "10.0.0.10:5432");
    p.handle(&g.conn(&c2, ConnChange::Open)).unwrap();
    end(&mut p, g.now);
    let dns = out.kind("dns");
    assert_eq!(dns.len(), 2, "{dns:?}");
    assert_eq!(dns[0]["query"], "api.shop.test");
    assert_eq!(dns[0]["answers"][0], "10.0.0.9");
    let opens: Vec<Value> = out.kind("conn").into_iter().filter(|c| c["event"] == "open").collect();
    assert_eq!(opens.len(), 2, "{opens:?}");
    assert_eq!(opens[0]["conn"]["remote_host"], "api.shop.test");
    assert_eq!(opens[1]["conn"]["remote_host"], "db.shop.test");
}

/// A DNS response: `name` A `ip`, TTL 60.
fn dns_answer(name: &str, ip: [u8; 4]) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    m.extend_from_slice(&ip);
    m
}

#[test]
fn losses_become_drop_records_and_garbage_is_counted_not_fatal() {
    let (mut p, out) = processor();
    let mut g = EventGen::default();
    let resolver = Conn { id: 0, ..Conn::client(0, 100, "10.0.0.1:50000", "10.0.0.53:53") };
    p.handle(&g.dns(&resolver, Direction::Recv, b"\x00\x01garbage")).unwrap();
    p.handle(&[9, 0, 0, 0, 1, 2]).unwrap();
    let kernel = vec![DropRecord { count: 3, bytes: 4096, reason: "ringbuf_full" }];
    p.report_drops(kernel, g.now).unwrap();
    p.flush().unwrap();
    let drops = out.kind("drop");
    let reasons: Vec<&str> = drops.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["ringbuf_full", "dns_malformed"]);
    assert_eq!(drops[0]["bytes"], 4096);
    assert_eq!(drops[1]["bytes"], 9);
    assert_eq!(p.stats.decode_errors, 1);
}

#[test]
fn midstream_roles_come_from_the_hosts_listeners_and_pods_from_the_host() {
    let pod = PodOf {
        meta: Arc::new(crate::pod::PodMeta {
            pod: "web-1".into(),
            namespace: "shop".into(),
            labels: Default::default(),
            workload: None,
            uid: "u1".into(),
        }),
        container: Some("app".into()),
    };
    let host = TableHost { listening: vec![(200, 45000)], pods: vec![(200, pod)], ..TableHost::default() };
    let (mut p, out) = processor_with(host, true);
    let mut g = EventGen::default();
    // Both ports ephemeral: only the listener table can tell.
    let c = Conn { role: Role::Unknown, ..Conn::client(1, 200, "10.0.0.2:45000", "10.0.0.1:45001") };
    p.handle(&g.plain(&c, Direction::Recv, 0, b"x")).unwrap();
    end(&mut p, g.now);
    let d = &out.kind("data")[0];
    assert_eq!(d["conn"]["role"], "server");
    assert_eq!(d["k8s"]["pod"], "web-1");
}

fn web_pod() -> PodOf {
    PodOf {
        meta: Arc::new(crate::pod::PodMeta {
            pod: "web-1".into(),
            namespace: "shop".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            workload: Some(crate::pod::Workload { kind: "Deployment".into(), name: "web".into() }),
            uid: "u1".into(),
        }),
        container: Some("app".into()),
    }
}

/// `k8s.peer` names the remote address's pod (its IP) or Service (its
/// cluster IP), as the host knows them; an address that is neither has none.
#[test]
fn peers_are_the_pods_and_services_of_remote_addresses() {
    let db = PodOf {
        meta: Arc::new(crate::pod::PodMeta {
            pod: "db-0".into(),
            uid: "u2".into(),
            ..(*web_pod().meta).clone()
        }),
        container: None,
    };
    let svc = ServiceMeta {
        service: "db".into(),
        namespace: "shop".into(),
        labels: [("tier".to_string(), "data".to_string())].into(),
    };
    let host = TableHost {
        pods: vec![(200, web_pod())],
        peers: Arc::new(Mutex::new(vec![
            ("10.244.0.7".parse().unwrap(), Peer::Pod(db.meta.clone())),
            ("10.96.0.20".parse().unwrap(), Peer::Service(Arc::new(svc))),
        ])),
        ..TableHost::default()
    };
    let peers = host.peers.clone();
    let (mut p, out) = processor_with(host, true);
    let mut g = EventGen::default();
    for (id, remote) in [(1, "10.244.0.7:5432"), (2, "10.96.0.20:5432"), (3, "10.1.2.3:5432")] {
        let c = Conn::client(id, 200, &format!("10.244.0.5:4000{id}"), remote);
        p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
        p.handle(&g.plain(&c, Direction::Send, 0, b"x")).unwrap();
    }
    // A pod whose address reaches the index after the connection opened:
    // named by a lookup on a later chunk (a millisecond later, then at
    // doubling intervals).
    let c = Conn::client(4, 200, "10.244.0.5:40004", "10.244.0.8:5432");
    p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
    peers.lock().unwrap().push(("10.244.0.8".parse().unwrap(), Peer::Pod(db.meta.clone())));
    g.now += 1_000_000;
    p.handle(&g.plain(&c, Direction::Send, 0, b"x")).unwrap();
    end(&mut p, g.now);
    let got: Vec<Value> = out.kind("data").iter().map(|d| d["k8s"]["peer"].clone()).collect();
    let db_peer = serde_json::json!({"pod": "db-0", "namespace": "shop", "labels": {"app": "web"},
        "workload": {"kind": "Deployment", "name": "web"}, "uid": "u2"});
    assert_eq!(
        got,
        [
            db_peer.clone(),
            serde_json::json!({"service": "db", "namespace": "shop", "labels": {"tier": "data"}}),
            Value::Null,
            db_peer,
        ]
    );
    // The local pod is as before.
    assert!(out.kind("data").iter().all(|d| d["k8s"]["pod"] == "web-1"));
}

/// A pod whose address the index does not hold yet (it has just started)
/// is named at once when the other end of the connection is on this node:
/// by that end's pod. Not for a hostNetwork process (the index names none),
/// nor a pod's own loopback.
#[test]
fn a_peer_on_this_node_is_named_before_the_index_has_its_address() {
    let job = PodOf {
        meta: Arc::new(crate::pod::PodMeta {
            pod: "client-x1".into(),
            uid: "u3".into(),
            workload: Some(crate::pod::Workload { kind: "Job".into(), name: "client".into() }),
            ..(*web_pod().meta).clone()
        }),
        container: Some("c".into()),
    };
    let host =
        TableHost { pods: vec![(200, web_pod()), (300, job), (400, web_pod())], ..TableHost::default() };
    let (mut p, out) = processor_with(host, true);
    let mut g = EventGen::default();
    let pair = |id, client_pid, client_netns, local: &str, remote: &str| {
        let client = Conn { netns: client_netns, ..Conn::client(id, client_pid, local, remote) };
        let server = Conn { netns: 7, ..client.peer(id + 1, 200) };
        (client, server)
    };
    let (in_pod, server) = pair(10, 300, 8, "10.244.0.9:40000", "10.244.0.5:8443");
    let (host_net, server2) = pair(20, 400, HOST_NETNS, "192.168.1.2:40001", "10.244.0.5:8443");
    let (lo, lo_server) = pair(30, 300, 7, "127.0.0.1:40002", "127.0.0.1:8443");
    // The server's open first, for the pod client: the client's open, seen
    // later, names it.
    let (late, server3) = pair(40, 300, 8, "10.244.0.9:40003", "10.244.0.5:8443");
    for (c, s) in [(&in_pod, &server), (&host_net, &server2), (&lo, &lo_server), (&late, &server3)] {
        let opens = [g.conn(c, ConnChange::Open), g.conn(s, ConnChange::Open)];
        let first_server = c.id == late.id;
        for open in if first_server { [&opens[1], &opens[0]] } else { [&opens[0], &opens[1]] } {
            p.handle(open).unwrap();
        }
        p.handle(&g.plain(s, Direction::Recv, 0, b"x")).unwrap();
    }
    end(&mut p, g.now);
    let got: Vec<Value> = out.kind("data").iter().map(|d| d["k8s"]["peer"].clone()).collect();
    let want = serde_json::json!({"pod": "client-x1", "namespace": "shop", "labels": {"app": "web"},
        "workload": {"kind": "Job", "name": "client"}, "uid": "u3"});
    // In order: the pod client, the hostNetwork client, loopback, the pod client again.
    assert_eq!(got, [want.clone(), Value::Null, Value::Null, want]);
}

#[test]
fn libraries_and_programs_are_handed_out_as_probe_work() {
    let (mut p, _) = processor();
    let mut g = EventGen::default();
    p.handle(&g.lib(42, 7, "libssl.so.3", false)).unwrap();
    p.handle(&g.lib(43, 8, "python3", true)).unwrap();
    let work = p.take_work();
    assert_eq!(work.libraries.len(), 1);
    assert_eq!(work.libraries[0].pid, 42);
    assert_eq!(work.execs.len(), 1);
    assert_eq!(work.execs[0].ino, 8);
    assert!(p.take_work().libraries.is_empty());
    let _ = user_probe::JVMTI_SOCKET_READ;
}

/// The kernel's table evicted a live connection's entry: the socket, seen
/// again, gets a new kernel id and a `midstream` record; it is the same
/// connection (same id, offsets going on, no `midstream`), and the eviction
/// is counted. Its close, under either id or untracked, is its one close.
#[test]
fn a_connection_seen_again_after_eviction_continues_as_itself() {
    for close in ["new id", "untracked"] {
        let (mut p, out) = processor();
        let mut g = EventGen::default();
        let c = Conn::client(7, 100, "10.0.0.1:40000", "10.0.0.2:80");
        p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
        p.handle(&g.plain(&c, Direction::Send, 0, REQ)).unwrap();
        let again = Conn { id: 9, role: Role::Unknown, ..c.clone() };
        p.handle(&g.conn(&again, ConnChange::Midstream)).unwrap();
        p.handle(&g.plain(&again, Direction::Recv, 0, RESP)).unwrap();
        match close {
            "new id" => p.handle(&g.conn(&again, ConnChange::Close)).unwrap(),
            _ => p
                .handle(&g.conn(&Conn { id: 0, pid: 0, ..again.clone() }, ConnChange::CloseUntracked))
                .unwrap(),
        }
        end(&mut p, g.now);
        let conns: Vec<(Value, Value, Value)> = out
            .kind("conn")
            .iter()
            .map(|r| (r["event"].clone(), r["conn"]["role"].clone(), r["pid"].clone()))
            .collect();
        let want = |e: &str| (Value::from(e), Value::from("client"), Value::from(100));
        assert_eq!(conns, [want("open"), want("close")], "{close}");
        let http = out.kind("http");
        assert_eq!(http.len(), 1, "{close}: {:?}", out.records());
        assert_eq!(http[0]["response"]["body"], "hello");
        // An untracked close means the new entry was evicted too: twice.
        let evictions = if close == "untracked" { 2 } else { 1 };
        let drops = out.kind("drop");
        assert_eq!(drops.len(), 1, "{drops:?}");
        assert_eq!(
            (drops[0]["reason"].as_str(), drops[0]["count"].as_u64()),
            (Some(CONN_TABLE_EVICTED), Some(evictions))
        );
        assert_eq!(p.tracker.alias_count(), 0, "aliases go with their connection");
        assert_eq!(p.evictions_seen(), evictions);
        assert_eq!(p.connections(), 0);
    }
}

/// A `midstream` of a socket no live connection has (opened before the
/// sensor) stays one; an untracked close of a socket the sensor never
/// tracked writes nothing; neither counts an eviction.
#[test]
fn true_midstream_and_foreign_untracked_closes_are_left_as_they_are() {
    let (mut p, out) = processor();
    let mut g = EventGen::default();
    let c = Conn::client(7, 100, "10.0.0.1:40000", "10.0.0.2:80");
    p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
    // Same endpoints in another network namespace: another socket.
    let other_ns = Conn { id: 8, netns: 4026532000, role: Role::Unknown, ..c.clone() };
    p.handle(&g.conn(&other_ns, ConnChange::Midstream)).unwrap();
    let foreign = Conn::client(0, 0, "10.0.0.1:40001", "10.0.0.2:80");
    p.handle(&g.conn(&foreign, ConnChange::CloseUntracked)).unwrap();
    end(&mut p, g.now);
    let events: Vec<Value> = out.kind("conn").iter().map(|r| r["event"].clone()).collect();
    assert_eq!(events, ["open", "midstream"]);
    assert!(out.kind("drop").is_empty(), "{:?}", out.kind("drop"));
    assert_eq!(p.connections(), 2);
}

/// User space forgets its oldest connection when its own table is full,
/// and says so.
#[test]
fn a_full_user_space_table_is_counted() {
    let mut p = Processor::new(
        2,
        Limits::default(),
        Clock::with_offset(OFFSET),
        Box::new(TableHost::default()),
        EphemeralPorts::default(),
    );
    let lines = Lines::default();
    p.add_sink(Box::new(JsonlWriter::new(lines.clone(), false)));
    let mut g = EventGen::default();
    for i in 0..5u16 {
        let c = Conn::client(u64::from(i) + 1, 100, &format!("10.0.0.1:{}", 40000 + i), "10.0.0.2:80");
        p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
    }
    end(&mut p, g.now);
    let drops = lines.kind("drop");
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert_eq!(
        (drops[0]["reason"].as_str(), drops[0]["count"].as_u64()),
        (Some(CONN_TRACKER_EVICTED), Some(3))
    );
    assert_eq!(p.connections(), 2);
}

/// A process that ended takes its agent state with it (its pid may come
/// back as another process), and is handed to the probes as work.
#[test]
fn an_ended_process_leaves_nothing_behind() {
    let host = TableHost { comms: vec![(300, "java")], ..TableHost::default() };
    let (mut p, _out) = processor_with(host, false);
    let mut g = EventGen::default();
    let c = Conn { comm: "java", ..Conn::client(7, 300, "10.0.0.1:40000", "10.0.0.2:8443") };
    p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
    p.on_agent(agent_chunk("10.0.0.1:40000", "10.0.0.2:8443", Hook::SocketWrite, Direction::Send, 0, REQ))
        .unwrap();
    p.handle(&g.conn(&c, ConnChange::Close)).unwrap();
    p.tick(g.now + 2_000_000_000).unwrap();
    assert_eq!(p.table_sizes().agent_processes, 1);
    p.handle(&g.exit(300, "java")).unwrap();
    assert_eq!(p.take_work().exits, [300]);
    // Kept for the agent's last chunks, then gone.
    assert_eq!(p.table_sizes().agent_processes, 1);
    p.tick(g.now + 2_000_000_000).unwrap();
    assert_eq!(p.table_sizes(), TableSizes::default());
}

/// The kernel's close and the process's end come through the ring before
/// the agent's last chunks come through its socket (two queues): those
/// chunks still name the process.
#[test]
fn an_agents_last_chunks_after_its_process_ended_keep_the_process_name() {
    let host = TableHost { comms: vec![(300, "java")], ..TableHost::default() };
    let gone = host.gone.clone();
    let (mut p, out) = processor_with(host, false);
    let mut g = EventGen::default();
    let c = Conn { comm: "java", ..Conn::client(7, 300, "10.0.0.1:40000", "10.0.0.2:8443") };
    p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
    p.on_agent(agent_chunk("10.0.0.1:40000", "10.0.0.2:8443", Hook::SocketWrite, Direction::Send, 0, REQ))
        .unwrap();
    p.handle(&g.conn(&c, ConnChange::Close)).unwrap();
    p.tick(g.now + 2_000_000_000).unwrap();
    // A second connection whose close and the process's end overtake its plaintext.
    let c2 = Conn { comm: "java", ..Conn::client(8, 300, "10.0.0.1:40001", "10.0.0.2:8443") };
    p.handle(&g.conn(&c2, ConnChange::Open)).unwrap();
    p.handle(&g.conn(&c2, ConnChange::Close)).unwrap();
    p.handle(&g.exit(300, "java")).unwrap();
    gone.lock().unwrap().push(300);
    p.on_agent(agent_chunk("10.0.0.1:40001", "10.0.0.2:8443", Hook::SocketWrite, Direction::Send, 0, REQ))
        .unwrap();
    end(&mut p, g.now + 4_000_000_000);
    let data: Vec<Value> = out.records().into_iter().filter(|r| r["source"] == "jvmti").collect();
    assert!(!data.is_empty());
    for r in data {
        assert_eq!(r["comm"], "java", "{r}");
    }
}

#[test]
fn a_redis_pipeline_becomes_redis_records_in_order() {
    let (mut p, out) = processor();
    let mut g = EventGen::default();
    let c = Conn::client(1, 100, "10.0.0.1:40000", "10.0.0.2:6379");
    p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
    let cmds = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    // Split inside a bulk string: the parser does not care where chunks end.
    p.handle(&g.plain(&c, Direction::Send, 0, &cmds[..20])).unwrap();
    p.handle(&g.plain(&c, Direction::Send, 20, &cmds[20..])).unwrap();
    p.handle(&g.plain(&c, Direction::Recv, 0, b"+OK\r\n$2\r\nv1\r\n")).unwrap();
    p.handle(&g.conn(&c, ConnChange::Close)).unwrap();
    end(&mut p, g.now);
    let kinds: Vec<String> = out.records().iter().map(|r| r["kind"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["conn", "redis", "redis", "conn"]);
    let r = out.kind("redis");
    assert_eq!(r[0]["request"], serde_json::json!({"command": "SET", "args": ["k", "v1"]}));
    assert_eq!(r[0]["response"], serde_json::json!({"type": "simple_string", "value": "OK"}));
    assert_eq!(r[1]["response"], serde_json::json!({"type": "bulk_string", "value": "v1"}));
    assert_eq!((r[1]["pid"].clone(), r[1]["conn"]["role"].clone()), (100.into(), "client".into()));
    assert!(r[1]["latency_ns"].as_u64().is_some());
}

#[test]
fn garbage_on_the_redis_port_stays_data() {
    let (mut p, out) = processor();
    let mut g = EventGen::default();
    let c = Conn::client(1, 100, "10.0.0.1:40000", "10.0.0.2:6379");
    p.handle(&g.plain(&c, Direction::Send, 0, b"\x00\x01garbage\r\n")).unwrap();
    p.handle(&g.plain(&c, Direction::Recv, 0, b"-ERR unknown\r\n")).unwrap();
    end(&mut p, g.now);
    assert!(out.kind("redis").is_empty());
    assert_eq!(out.kind("data").len(), 2);
}

/// An OP_MSG whose body has string fields.
fn mongo_msg(id: i32, to: i32, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut d = Vec::new();
    for (k, v) in fields {
        d.push(2);
        d.extend(k.as_bytes());
        d.push(0);
        d.extend((v.len() as i32 + 1).to_le_bytes());
        d.extend(v.as_bytes());
        d.push(0);
    }
    let doc_len = d.len() as i32 + 5;
    let mut m = (21 + doc_len).to_le_bytes().to_vec();
    for w in [id, to, 2013, 0] {
        m.extend(w.to_le_bytes());
    }
    m.push(0);
    m.extend(doc_len.to_le_bytes());
    m.extend(d);
    m.push(0);
    m
}

#[test]
fn a_mongodb_command_becomes_a_record_with_named_fields_redacted_and_garbage_a_drop() {
    use crate::redact::{Policy, Redactor, DEFAULT_FIELDS, DEFAULT_HEADERS};
    let (mut p, out) = processor();
    let redactor = Redactor::new(DEFAULT_HEADERS, DEFAULT_FIELDS, b"test key");
    let marker = redactor.marker(b"hunter2");
    p.set_redactor(Some(Policy::new(redactor, Vec::new())));
    let mut g = EventGen::default();
    let c = Conn::client(1, 100, "10.0.0.1:40000", "10.0.0.2:27017");
    p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
    let q = mongo_msg(5, 0, &[("update", "users"), ("password", "hunter2"), ("$db", "shop")]);
    p.handle(&g.plain(&c, Direction::Send, 0, &q[..30])).unwrap();
    p.handle(&g.plain(&c, Direction::Send, 30, &q[30..])).unwrap();
    let r = mongo_msg(9, 5, &[("ok", "yes")]);
    p.handle(&g.plain(&c, Direction::Recv, 0, &r)).unwrap();
    // A header whose length is shorter than a header.
    let garbage = b"\x05\x00\x00\x00garbage-garbage!";
    p.handle(&g.plain(&c, Direction::Send, q.len() as u64, garbage)).unwrap();
    p.handle(&g.conn(&c, ConnChange::Close)).unwrap();
    end(&mut p, g.now);
    let m = out.kind("mongodb");
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(
        (&m[0]["request"]["command"], &m[0]["request"]["collection"], &m[0]["request"]["database"]),
        (&"update".into(), &"users".into(), &"shop".into())
    );
    assert_eq!(
        m[0]["request"]["document"],
        serde_json::json!({"update": "users", "password": marker, "$db": "shop"})
    );
    assert_eq!(m[0]["response"]["document"], serde_json::json!({"ok": "yes"}));
    let drops = out.kind("drop");
    assert!(drops.iter().any(|d| d["reason"] == "mongodb_parse_error" && d["bytes"] == 16), "{drops:?}");
    let data = out.kind("data");
    assert_eq!(data.len(), 1, "{data:?}");
    // The header's 16 bytes are the drop; what follows them is kept raw.
    assert_eq!(data[0]["payload"], "age!");
}

#[test]
fn a_close_found_by_listing_sockets_ends_the_exchange_and_a_late_kernel_close_is_not_written_twice() {
    let (mut p, out) = processor();
    let mut g = EventGen::default();
    let c = Conn::client(1, 100, "10.0.0.1:40000", "10.0.0.2:80");
    let other = Conn::client(2, 100, "10.0.0.1:40001", "10.0.0.2:80");
    for rec in [
        g.conn(&c, ConnChange::Open),
        g.conn(&other, ConnChange::Open),
        g.plain(&c, Direction::Send, 0, REQ),
        g.plain(&c, Direction::Recv, 0, RESP),
    ] {
        p.handle(&rec).unwrap();
    }
    let tracked = p.tracked_sockets();
    assert_eq!(tracked.len(), 2);
    assert!(tracked
        .iter()
        .any(|t| t.id == 1 && t.pid == 100 && t.local.port() == 40000 && t.netns == c.netns));
    assert_eq!(p.close_gone(&[1, 7], g.now).unwrap(), 1, "an id not tracked is skipped");
    assert_eq!(p.tracked_sockets().iter().map(|t| t.id).collect::<Vec<_>>(), [2]);
    // The kernel's own close after all: not a second close record.
    p.handle(&g.conn(&c, ConnChange::Close)).unwrap();
    end(&mut p, g.now);
    let kinds: Vec<String> = out.records().iter().map(|r| r["kind"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["conn", "conn", "http", "conn"]);
    let close = out.kind("conn").pop().unwrap();
    assert_eq!(close["event"], "close");
    assert_eq!(close["probe"], "sock_diag:inet");
    assert_eq!((close["pid"].as_u64(), close["comm"].as_str()), (Some(100), Some("client")));
    assert_eq!(close["conn"]["local"], "10.0.0.1:40000");
    assert_eq!(out.kind("http")[0]["response"]["body"], "hello");
}

/// A MySQL packet: 3-byte length, sequence id, body.
fn my_packet(seq: u8, body: &[u8]) -> Vec<u8> {
    let mut p = (body.len() as u32).to_le_bytes()[..3].to_vec();
    p.push(seq);
    p.extend(body);
    p
}

#[test]
fn a_mysql_login_after_an_ssl_request_on_the_socket_is_parsed_from_the_tls_plaintext() {
    let (mut p, out) = processor();
    let mut g = EventGen::default();
    let mut c = Conn::client(1, 100, "10.0.0.1:40000", "10.0.0.2:3306");
    // Protocol 4.1, SSL, secure connection, with a database.
    let fixed = || {
        let mut b = (0x200u32 | 0x800 | 0x8000 | 0x8).to_le_bytes().to_vec();
        b.extend([0; 28]);
        b
    };
    p.handle(&g.conn(&c, ConnChange::Open)).unwrap();
    p.handle(&g.plain(
        &c,
        Direction::Recv,
        0,
        &my_packet(0, b"\x0a5.5.5-10.11.19-MariaDB\0\x01\0\0\0abcdefgh\0\xff\xf7"),
    ))
    .unwrap();
    let ssl_request = my_packet(1, &fixed());
    p.handle(&g.plain(&c, Direction::Send, 0, &ssl_request)).unwrap();
    // The ClientHello, on the socket.
    p.handle(&g.plain(&c, Direction::Send, ssl_request.len() as u64, &[0x16, 3, 1, 0, 4, 1, 2, 3, 4]))
        .unwrap();
    c.tls = true;
    let mut login = fixed();
    login.extend(b"app\0\x03pwd" as &[u8]);
    login.extend(b"shop\0");
    let ok = [0, 0, 0, 2, 0, 0, 0];
    let login = my_packet(2, &login);
    let query = my_packet(0, b"\x03DO 1");
    p.handle(&g.data(&c, nt_probe_ssl_write(), Direction::Send, 0, &login, 0)).unwrap();
    p.handle(&g.data(&c, nt_probe_ssl_read(), Direction::Recv, 0, &my_packet(3, &ok), 0)).unwrap();
    p.handle(&g.data(&c, nt_probe_ssl_write(), Direction::Send, login.len() as u64, &query, 0)).unwrap();
    p.handle(&g.data(&c, nt_probe_ssl_read(), Direction::Recv, 11, &my_packet(1, &ok), 0)).unwrap();
    p.handle(&g.conn(&c, ConnChange::Close)).unwrap();
    end(&mut p, g.now);
    let my = out.kind("mysql");
    let brief: Vec<_> = my
        .iter()
        .map(|r| (r["source"].as_str(), r["request"]["command"].as_str(), r["request"]["query"].as_str()))
        .collect();
    assert_eq!(
        brief,
        [
            (Some("kernel"), Some("SSL_REQUEST"), Some("")),
            (Some("openssl"), Some("HANDSHAKE"), Some("")),
            (Some("openssl"), Some("COM_QUERY"), Some("DO 1"))
        ]
    );
    assert_eq!((&my[2]["user"], &my[2]["database"]), (&Value::from("app"), &Value::from("shop")));
    assert_eq!(my[2]["response"]["affected_rows"], 0);
    assert_eq!((&my[2]["pid"], &my[2]["conn"]["role"]), (&Value::from(100), &Value::from("client")));
    assert!(out.kind("drop").is_empty(), "{:?}", out.kind("drop"));
    assert!(!String::from_utf8_lossy(&out.0.lock().unwrap()).contains("pwd"));
}

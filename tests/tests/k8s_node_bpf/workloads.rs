//! Workloads in the languages users run, on the real node: a stripped Go
//! HTTPS server (Deployment `go-echo` behind Service `go-echo`), a stripped Go
//! client calling it by its Service name (through CoreDNS and kube-proxy), a
//! Node.js HTTPS client (OpenSSL linked into `node`) calling its pod IP, and
//! curl calling a Python HTTP server by its Service name. Every exchange is
//! in the sensor's records from both ends: bodies byte-exact, host pids, pod
//! IPs, roles, sources `go-tls`, `openssl`, `kernel`, each side's `k8s`,
//! `remote_host` from the DNS the pod did, and `k8s.peer` naming the remote
//! pod (by pod IP) or Service (by cluster IP).

use super::{expected_k8s, pod_peer, running_pod};
use nettap_e2e::node::{container_pid, Node};
use nettap_e2e::{assert_http_body, pattern_body, wait_for_file, TIMEOUT};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

/// Body sizes of the Go and Node.js clients' requests (and the answers).
const SIZES: [usize; 4] = [1, 100, 4095, 65537];
const NS: &str = "shop";
/// curl's request body (both requests), read from a FIFO: curl blocks on it
/// until the test has its host pid.
const CURL_BODY_LEN: usize = 20000;

// Every client waits, after its requests, until the test has read their
// records: a process that has ended cannot be named by pod any more (the
// sensor reads its cgroup when it handles its first event, and on a loaded
// node its loop can be seconds behind: one libssl's uprobes took 9.7 s to
// attach on this shared machine while curl came and went).

/// A client Job: its name, image, arguments, a word of its command line,
/// whether it speaks TLS.
struct Job<'a> {
    name: &'a str,
    image: &'a str,
    args: Value,
    word: &'a str,
    tls: bool,
}

/// A client Job's pod and its host pid (found while it holds).
struct Client {
    pod: Value,
    pid: u32,
}

/// Starts Job `name` (container `client`, image `image`, `args`), with the
/// certificate Secret at /d and `dump` at /dump; once it runs, its host pid
/// (its process's command line holds `word`), found while it holds on
/// `/dump/<name>` (then released), or on a FIFO `release` fills. With `tls`
/// it is released once the sensor has probed its TLS library (Go's
/// crypto/tls, Node.js's OpenSSL): the exec gate holds a new program for
/// 1 s at most, and examining the 98 MB `node` took 11-26 s on this
/// machine at load 37.
fn client_job(node: &Node, job: Job, dump: &Path, release: impl FnOnce()) -> Client {
    let Job { name, image, args, word, tls } = job;
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS},
        "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": {"app": name}}, "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "client", "image": image, "imagePullPolicy": "Never", "args": args,
                "volumeMounts": [{"name": "d", "mountPath": "/d", "readOnly": true},
                    {"name": "dump", "mountPath": "/dump"}]}],
            "volumes": [{"name": "d", "secret": {"secretName": "go-echo-tls"}},
                {"name": "dump", "hostPath": {"path": dump.to_str().unwrap(), "type": "Directory"}}]}}}});
    node.apply(&job.to_string());
    let (pod, cid) = running_pod(node, NS, &format!("app={name}"));
    let pid = node.wait(&format!("{name}'s process"), TIMEOUT, || container_pid(&cid, word));
    if tls {
        // Its program probed at its exec, or before: a program of an image
        // another pod already runs (the Go client and server) is one file
        // under both containers' roots, probed once.
        let pid_field = format!("\"pid\":{pid},");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        let binary_field = format!("\"binary\":\"{}\"", exe.display());
        node.wait(&format!("{name}'s TLS probed by the sensor"), 2 * TIMEOUT, || {
            let log = node.kubectl(&["-n", "nettap", "logs", "daemonset/nettap-sensor", "--tail=-1"]);
            log.lines()
                .any(|l| {
                    l.contains("probes attached to") && (l.contains(&pid_field) || l.contains(&binary_field))
                })
                .then_some(())
        });
    }
    // The sensor's peer index learns a new pod's address from the API
    // server's watch (and 200 ms of settling): a client done within a
    // moment of its start would be unnamed at its server (seen with curl).
    std::thread::sleep(std::time::Duration::from_secs(1));
    release();
    Client { pod, pid }
}

/// Waits until Job `name` has succeeded.
fn job_succeeded(node: &Node, name: &str) {
    node.wait(&format!("Job {name} done"), 2 * TIMEOUT, || {
        let job = node.get(&["-n", NS, "job", name]);
        assert!(
            job["status"]["failed"].as_u64().unwrap_or(0) == 0,
            "Job {name} failed: {}",
            logs(node, name)
        );
        (job["status"]["succeeded"].as_u64() == Some(1)).then_some(())
    });
}

fn logs(node: &Node, job: &str) -> String {
    let out = node.kubectl_with(&["-n", NS, "logs", &format!("job/{job}")], None);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A Deployment `name` (`app: name`), one container `server`, and Service
/// `name` (`port` → `target`); its running pod.
fn server(
    node: &Node,
    name: &str,
    image: &str,
    args: Value,
    target: u16,
    port: u16,
    volumes: Value,
) -> Value {
    let mounts: Vec<Value> = volumes
        .as_array()
        .unwrap()
        .iter()
        .map(|v| json!({"name": v["name"], "mountPath": format!("/{}", v["name"].as_str().unwrap())}))
        .collect();
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name, "tier": "api"}}, "spec": {
                "containers": [{"name": "server", "image": image, "imagePullPolicy": "Never", "args": args,
                    "volumeMounts": mounts}],
                "volumes": volumes}}}});
    node.apply(&deployment.to_string());
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": target}]}});
    node.apply(&service.to_string());
    running_pod(node, NS, &format!("app={name}")).0
}

/// `http` records of process `pid` once there are `n`; if they do not come,
/// the failure says what the sensor did write and log about the process.
fn http_of(node: &Node, pid: u32, n: usize) -> Vec<Value> {
    let start = std::time::Instant::now();
    loop {
        let mine: Vec<Value> = node.sensor_records().into_iter().filter(|r| r["pid"] == pid).collect();
        let http: Vec<Value> = mine.iter().filter(|r| r["kind"] == "http").cloned().collect();
        if http.len() >= n {
            return http;
        }
        if start.elapsed() > 2 * TIMEOUT {
            let mut kinds = std::collections::BTreeMap::<String, usize>::new();
            for r in &mine {
                *kinds
                    .entry(format!("{} {} {}", r["kind"], r["source"], r["conn"]["remote"]))
                    .or_default() += 1;
            }
            let log = node.kubectl(&["-n", "nettap", "logs", "daemonset/nettap-sensor", "--tail=-1"]);
            let about: Vec<&str> = log.lines().filter(|l| l.contains(&format!("{pid}"))).collect();
            panic!(
                "{n} http records of pid {pid}: {} within {:?}; its records (kind source remote: count): \
                 {kinds:#?}\nthe sensor's log lines naming it:\n{}",
                http.len(),
                2 * TIMEOUT,
                about.join("\n")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// `k8s.peer` of a Service's cluster IP.
fn service_peer(name: &str) -> Value {
    json!({"service": name, "namespace": NS, "labels": {"app": name}})
}

fn ip(pod: &Value) -> &str {
    pod["status"]["podIP"].as_str().unwrap()
}

/// What one side's records of an exchange must say.
struct Side<'a> {
    who: &'a str,
    pid: u32,
    role: &'a str,
    source: &'a str,
    k8s: Value,
    local_ip: &'a str,
}

/// Every record of `side` is exact: its pid, role, source, TLS, `k8s`
/// (with `peer` as `peer_of(remote)` says), local pod IP, and bodies
/// (`bodies(path)` = request and response).
fn assert_side(
    records: &[Value],
    side: &Side,
    tls: bool,
    peer_of: impl Fn(&Value) -> (Value, Option<String>),
    bodies: impl Fn(&str) -> (String, String),
) {
    for r in records {
        let who = side.who;
        assert_eq!(r["pid"], side.pid, "{who}: {r}");
        assert_eq!(r["conn"]["role"], side.role, "{who}: {r}");
        assert_eq!(r["source"], side.source, "{who}: {r}");
        assert_eq!(r["conn"]["tls"], tls, "{who}: {r}");
        assert_eq!(r["node"], "nettap-node", "{who}: {r}");
        let local = r["conn"]["local"].as_str().unwrap();
        assert_eq!(local.rsplit_once(':').unwrap().0, side.local_ip, "{who}: {r}");
        let (peer, host) = peer_of(&r["conn"]["remote"]);
        let mut want = side.k8s.clone();
        want["peer"] = peer;
        assert_eq!(r["k8s"], want, "{who}: {r}");
        assert_eq!(r["conn"]["remote_host"].as_str(), host.as_deref(), "{who}: remote_host: {r}");
        let (req, resp) = bodies(r["request"]["path"].as_str().unwrap());
        assert_http_body(&r["request"], &req, who);
        assert_eq!(r["response"]["status"], 200, "{who}: {r}");
        assert_http_body(&r["response"], &resp, who);
    }
    eprintln!("{}: {} exchanges exact ({})", side.who, records.len(), side.source);
}

/// The `/echo/N` bodies of tlspeer and node_https.js.
fn echo_bodies(path: &str) -> (String, String) {
    let n: usize = path.strip_prefix("/echo/").unwrap().parse().unwrap();
    (pattern_body("req", n), pattern_body("resp", n))
}

pub fn go_node_and_curl(node: &Node, cert_dir: &Path) {
    let read = |f: &str| std::fs::read_to_string(cert_dir.join(f)).unwrap();
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "go-echo-tls", "namespace": NS},
        "stringData": {"cert.pem": read("cert.pem"), "key.pem": read("key.pem")}});
    node.apply(&secret.to_string());
    let go_args = json!([
        "server",
        "-addr",
        "0.0.0.0:8443",
        "-cert",
        "/d/cert.pem",
        "-key",
        "/d/key.pem",
        "-ready",
        "/r/ready",
        "-http1"
    ]);
    let volumes =
        json!([{"name": "d", "secret": {"secretName": "go-echo-tls"}}, {"name": "r", "emptyDir": {}}]);
    let go_pod = server(node, "go-echo", "docker.io/nettap/test-go:1", go_args, 8443, 8443, volumes);
    let http_args = json!(["/app/node_load.py", "server", "--port", "8080"]);
    let http_pod =
        server(node, "http-echo", "docker.io/nettap/test-python:1", http_args, 8080, 80, json!([]));
    let go_cid = go_pod["status"]["containerStatuses"][0]["containerID"].as_str().unwrap();
    let go_pid = node.wait("the Go server's process", TIMEOUT, || {
        container_pid(go_cid.strip_prefix("containerd://").unwrap(), "-ready")
    });
    node.wait("the Go server serving", TIMEOUT, || {
        Path::new(&format!("/proc/{go_pid}/root/r/ready")).exists().then_some(())
    });
    let http_cid = http_pod["status"]["containerStatuses"][0]["containerID"].as_str().unwrap();
    let http_pid = node.wait("the HTTP server's process", TIMEOUT, || {
        container_pid(http_cid.strip_prefix("containerd://").unwrap(), "node_load.py")
    });
    let cluster_ip =
        |svc: &str| node.get(&["-n", NS, "service", svc])["spec"]["clusterIP"].as_str().unwrap().to_string();
    let (go_svc, http_svc) = (cluster_ip("go-echo"), cluster_ip("http-echo"));

    let dump = tempfile::tempdir().unwrap();
    let d = dump.path();
    let sizes = SIZES.map(|n| n.to_string()).join(",");
    // The file `name` once `name.waiting` is there: a held client goes on.
    let release = |name: String| {
        let d = d.to_path_buf();
        move || {
            wait_for_file(&d.join(format!("{name}.waiting")), || true);
            std::fs::write(d.join(name), "").unwrap();
        }
    };
    let hold_release = |name: &str| release(name.to_string());
    // The Go client by the Service's name: CoreDNS answers, kube-proxy
    // takes the cluster IP to the pod.
    let go_args = json!([
        "client",
        "-url",
        "https://go-echo:8443/",
        "-ca",
        "/d/cert.pem",
        "-sizes",
        sizes,
        "-http1",
        "-hold",
        "/dump/go-client"
    ]);
    let go = Job {
        name: "go-client",
        image: "docker.io/nettap/test-go:1",
        args: go_args,
        word: "-hold",
        tls: true,
    };
    let go_client = client_job(node, go, d, hold_release("go-client"));
    // Node.js by the Go server's pod IP.
    let node_args = json!([
        "/app/node_https.js",
        "client",
        "--host",
        ip(&go_pod),
        "--port",
        "8443",
        "--ca",
        "/d/cert.pem",
        "--sizes",
        sizes,
        "--hold",
        "/dump/node-client"
    ]);
    let job = Job {
        name: "node-client",
        image: "docker.io/nettap/test-node:1",
        args: node_args,
        word: "node_https",
        tls: true,
    };
    let node_client = client_job(node, job, d, hold_release("node-client"));
    // curl by the HTTP Service's name, two requests on one connection.
    let fifo = d.join("curl-body");
    let st = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success(), "mkfifo");
    let curl_body = pattern_body("curl", CURL_BODY_LEN);
    // Then it reads a second FIFO (a third transfer, file://) until the test closes it.
    let exit_fifo = d.join("curl-exit");
    let st = std::process::Command::new("mkfifo").arg(&exit_fifo).status().unwrap();
    assert!(st.success(), "mkfifo");
    let curl_args = json!([
        "-sS",
        "--fail",
        "--data-binary",
        "@/dump/curl-body",
        "-H",
        "Content-Type: application/octet-stream",
        "http://http-echo/echo/a",
        "http://http-echo/echo/b",
        "--next",
        "file:///dump/curl-exit"
    ]);
    let body = curl_body.clone();
    let job = Job {
        name: "curl-client",
        image: "docker.io/nettap/test-curl:1",
        args: curl_args,
        word: "curl",
        tls: false,
    };
    let curl = client_job(node, job, d, move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        f.write_all(body.as_bytes()).unwrap();
    });
    let n = SIZES.len();
    for (pid, count) in [(go_client.pid, n), (node_client.pid, n), (curl.pid, 2)] {
        http_of(node, pid, count);
    }
    release("go-client.exit".into())();
    release("node-client.exit".into())();
    drop(std::fs::OpenOptions::new().write(true).open(&exit_fifo).unwrap());
    for job in ["go-client", "node-client", "curl-client"] {
        job_succeeded(node, job);
    }
    let curl_out = logs(node, "curl-client");
    assert_eq!(curl_out, format!("ok:{curl_body}ok:{curl_body}"), "curl's output");

    let job = |name: &str| json!({"kind": "Job", "name": name});
    let deployment = |name: &str| json!({"kind": "Deployment", "name": name});
    let dns_name = |svc: &str| format!("{svc}.{NS}.svc.cluster.local");

    // The Go server: both clients' connections, from their pod IPs.
    let server_records = http_of(node, go_pid, 2 * n);
    assert_eq!(server_records.len(), 2 * n, "{server_records:#?}");
    let go_server = Side {
        who: "Go server",
        pid: go_pid,
        role: "server",
        source: "go-tls",
        k8s: expected_k8s(&go_pod, "server", deployment("go-echo")),
        local_ip: ip(&go_pod),
    };
    let peers = [
        (ip(&go_client.pod).to_string(), pod_peer(&go_client.pod, job("go-client"))),
        (ip(&node_client.pod).to_string(), pod_peer(&node_client.pod, job("node-client"))),
    ];
    let peer_by_ip = |remote: &Value| {
        let remote_ip = remote.as_str().unwrap().rsplit_once(':').unwrap().0;
        let p = peers
            .iter()
            .find(|(a, _)| a == remote_ip)
            .unwrap_or_else(|| panic!("a client's address: {remote}"));
        (p.1.clone(), None)
    };
    assert_side(&server_records, &go_server, true, peer_by_ip, echo_bodies);
    for (client_ip, _) in &peers {
        let from = server_records
            .iter()
            .filter(|r| r["conn"]["remote"].as_str().unwrap().starts_with(&format!("{client_ip}:")));
        assert_eq!(from.count(), n, "the Go server's exchanges with {client_ip}");
    }

    // The Go client: to the Service's cluster IP, named by the pod's DNS.
    let records = http_of(node, go_client.pid, n);
    let side = Side {
        who: "Go client",
        pid: go_client.pid,
        role: "client",
        source: "go-tls",
        k8s: expected_k8s(&go_client.pod, "client", job("go-client")),
        local_ip: ip(&go_client.pod),
    };
    let to_service = |remote: &Value| {
        assert_eq!(remote, &format!("{go_svc}:8443"));
        (service_peer("go-echo"), Some(dns_name("go-echo")))
    };
    assert_side(&records, &side, true, to_service, echo_bodies);
    assert_eq!(records.len(), n);

    // Node.js: to the Go server's pod IP, the pod named.
    let records = http_of(node, node_client.pid, n);
    let side = Side {
        who: "Node.js client",
        pid: node_client.pid,
        role: "client",
        source: "openssl",
        k8s: expected_k8s(&node_client.pod, "client", job("node-client")),
        local_ip: ip(&node_client.pod),
    };
    let go_peer = pod_peer(&go_pod, deployment("go-echo"));
    let to_pod = |remote: &Value| {
        assert_eq!(remote, &format!("{}:8443", ip(&go_pod)));
        (go_peer.clone(), None)
    };
    assert_side(&records, &side, true, to_pod, echo_bodies);
    assert_eq!(records.len(), n);

    // curl and the Python server: plaintext from the kernel.
    let curl_bodies = |_: &str| (curl_body.clone(), format!("ok:{curl_body}"));
    let records = http_of(node, curl.pid, 2);
    let side = Side {
        who: "curl",
        pid: curl.pid,
        role: "client",
        source: "kernel",
        k8s: expected_k8s(&curl.pod, "client", job("curl-client")),
        local_ip: ip(&curl.pod),
    };
    let to_http_service = |remote: &Value| {
        assert_eq!(remote, &format!("{http_svc}:80"));
        (service_peer("http-echo"), Some(dns_name("http-echo")))
    };
    assert_side(&records, &side, false, to_http_service, curl_bodies);
    assert_eq!(records.len(), 2);
    let records = http_of(node, http_pid, 2);
    let side = Side {
        who: "Python HTTP server",
        pid: http_pid,
        role: "server",
        source: "kernel",
        k8s: expected_k8s(&http_pod, "server", deployment("http-echo")),
        local_ip: ip(&http_pod),
    };
    let curl_peer = pod_peer(&curl.pod, job("curl-client"));
    let from_curl = |remote: &Value| {
        assert!(remote.as_str().unwrap().starts_with(&format!("{}:", ip(&curl.pod))), "{remote}");
        (curl_peer.clone(), None)
    };
    assert_side(&records, &side, false, from_curl, curl_bodies);
    assert_eq!(records.len(), 2);
}

//! The sensor's life on the node under traffic: a Java pod started while
//! no sensor runs, the sensor pod deleted mid-traffic, Deployment
//! annotations switching capture and ports, and the records store rotating
//! within its bound with no payload in the sensor's log.

use super::security::{assert_java_captured, java_client, java_deployment, java_serving};
use super::{running_pod, sensor_pod, upgrade, wait_new_sensor};
use nettap_e2e::node::Node;
use nettap_e2e::TIMEOUT;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The capture target of the tests after the first phases: the `tier: api`
/// pods of `team: shop` namespaces.
pub const TARGETS_API: &str = r#"ebpf.configuration.capture.targets=[{"name":"api","namespaceSelector":{"matchLabels":{"team":"shop"}},"podSelector":{"matchLabels":{"tier":"api"}}}]"#;

/// The records store's bound from then on: 4 files of 2 MiB.
const STORE_MAX_BYTES: u64 = 8 << 20;
const STORE_MAX_FILES: usize = 4;

/// The node's records directory (the chart's default).
const RECORDS: &str = "/var/lib/nettap/records";

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The bytes and count of `reason` drop records in the store.
fn dropped(node: &Node, reason: &str) -> (u64, u64) {
    node.sensor_records()
        .iter()
        .filter(|r| r["kind"] == "drop" && r["reason"] == reason)
        .fold((0, 0), |(c, b), r| (c + r["count"].as_u64().unwrap(), b + r["bytes"].as_u64().unwrap()))
}

/// A Java Deployment created while no sensor runs on the node (the
/// DaemonSet's nodeSelector matches no node meanwhile) serves requests
/// (their plaintext is kept only if a sensor comes within the agent's early
/// window); once the sensor is back its agent hands its socket over and its
/// exchanges are captured exactly. The same `helm
/// upgrade` sets the `tier: api` targets and the store's bound.
pub fn java_pod_before_the_sensor(node: &Node, home: &Path, cert_dir: &Path) {
    let dropped_before = dropped(node, "jvmti_agent_dropped");
    let bytes = format!("sensor.records.maxBytes={STORE_MAX_BYTES}");
    let files = format!("sensor.records.maxFiles={STORE_MAX_FILES}");
    upgrade(node, home, &[TARGETS_API, &bytes, &files, r#"sensor.nodeSelector={"nettap.io/sensor":"off"}"#]);
    node.wait("no sensor pod on the node", 2 * TIMEOUT, || {
        let pods = node.get(&["-n", "nettap", "pods", "-l", "app.kubernetes.io/component=sensor"]);
        pods["items"].as_array()?.is_empty().then_some(())
    });
    java_deployment(node, "shop", "java-early", cert_dir, json!({}));
    let (pod, pid) = java_serving(node, "shop", "java-early");
    java_client(node, "shop", &pod);

    // Back on the node (the chart's own nodeSelector again).
    let back = r#"[{"op": "remove", "path": "/spec/template/spec/nodeSelector/nettap.io~1sensor"}]"#;
    node.kubectl(&["-n", "nettap", "patch", "daemonset/nettap-sensor", "--type", "json", "-p", back]);
    let sensor = wait_new_sensor(node, None);
    let t0 = std::time::Instant::now();
    // The server's agent offered its socket all along: the new sensor takes it.
    let taken = format!("\"pid\":{pid},");
    node.wait("the early Java server's socket taken by the new sensor", TIMEOUT, || {
        let log = sensor_log(node, &sensor);
        log.lines().any(|l| l.contains("agent socket taken") && l.contains(&taken)).then_some(())
    });
    eprintln!(
        "the early JVM's socket taken {:.1} s after the sensor applied its rules",
        t0.elapsed().as_secs_f64()
    );
    java_client(node, "shop", &pod);
    assert_java_captured(node, &pod, "java-early", pid, 1);
    // Not counted: with no sensor connected the agent's hooks skip the
    // copy and the count altogether (the JVM's speed without a sensor).
    let dropped_after = dropped(node, "jvmti_agent_dropped");
    eprintln!(
        "Java pod started before the sensor: captured once it came up; counted as dropped meanwhile: {} chunks, {} bytes",
        dropped_after.0 - dropped_before.0,
        dropped_after.1 - dropped_before.1
    );
}

/// The load server: a Deployment `load` (`tier: api`) in `shop` serving
/// HTTP on 9002 and 9003; its running pod.
pub fn load_server(node: &Node) -> Value {
    node.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: load, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: load}}
  template:
    metadata: {labels: {app: load, tier: api}}
    spec:
      containers:
      - name: server
        image: docker.io/nettap/test-python:1
        imagePullPolicy: Never
        args: [/app/node_load.py, server, --port, "9002", --port, "9003"]
"#,
    );
    running_pod(node, "shop", "app=load").0
}

/// One request of a load client's log.
#[derive(Debug)]
struct Request {
    i: u64,
    port: u16,
    t: f64,
}

/// A load client Job `name` (not targeted: no `tier` label) against the
/// load server, with node_load.py's client `args`; its log and stop file
/// are in `dump`.
struct LoadClient {
    log: PathBuf,
    stop: PathBuf,
}

impl LoadClient {
    fn start(node: &Node, server: &Value, name: &str, dump: &Path, args: &[&str]) -> LoadClient {
        let ip = server["status"]["podIP"].as_str().unwrap();
        let mut a = vec!["/app/node_load.py", "client", "--connect", ip, "--run", name];
        a.extend(["--log", "/dump/client.log", "--until-file", "/dump/stop"]);
        a.extend(args);
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "shop"},
            "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": {"app": name}}, "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "client", "image": "docker.io/nettap/test-python:1",
                    "imagePullPolicy": "Never", "args": a,
                    "volumeMounts": [{"name": "dump", "mountPath": "/dump"}]}],
                "volumes": [{"name": "dump", "hostPath": {"path": dump.to_str().unwrap(), "type": "Directory"}}]}}}});
        node.apply(&job.to_string());
        LoadClient { log: dump.join("client.log"), stop: dump.join("stop") }
    }

    /// The lines of its log so far.
    fn lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Waits until it has made `n` requests.
    fn wait_requests(&self, node: &Node, n: usize) {
        node.wait(&format!("{n} requests of {}", self.log.display()), 2 * TIMEOUT, || {
            (self.lines().len() >= n).then_some(())
        });
    }

    /// Stops it; its requests, once it is done, none of which failed (the
    /// application does not notice the sensor).
    fn finish(&self, node: &Node) -> Vec<Request> {
        std::fs::write(&self.stop, "").unwrap();
        self.done(node)
    }

    /// Its requests once it is done by itself, none of which failed.
    fn done(&self, node: &Node) -> Vec<Request> {
        let lines = node.wait("the load client done", 2 * TIMEOUT, || {
            let l = self.lines();
            l.iter().any(|v| v["done"] == true).then_some(l)
        });
        let done = lines.iter().find(|v| v["done"] == true).unwrap();
        assert_eq!(done["failures"], 0, "failed requests: {:?}", lines.iter().filter(|v| v["ok"] == false));
        lines
            .iter()
            .filter(|v| v["done"].is_null())
            .map(|v| Request {
                i: v["i"].as_u64().unwrap(),
                port: v["port"].as_u64().unwrap() as u16,
                t: v["t"].as_f64().unwrap(),
            })
            .collect()
    }
}

/// How often each request of load run `run` appears, on the server's side,
/// in the sensor's records (`http` records of the load pod whose request
/// body is that request's nonce body).
fn captured(node: &Node, server: &Value, run: &str) -> BTreeMap<u64, usize> {
    let prefix = format!("nettap-nonce-{run}-");
    let mut seen = BTreeMap::new();
    for r in node.sensor_records() {
        if r["kind"] != "http"
            || r["k8s"]["pod"] != server["metadata"]["name"]
            || r["conn"]["role"] != "server"
        {
            continue;
        }
        let body = r["request"]["body"].as_str().unwrap_or_default();
        let i = body.strip_prefix(&prefix).and_then(|b| b.split('-').next()).and_then(|i| i.parse().ok());
        // A request whose answer was not seen (the sensor went away
        // between them) is not counted as captured.
        if let (Some(i), false) = (i, r["response"].is_null()) {
            let answer = r["response"]["body"].as_str().unwrap_or_default();
            let expected = format!("ok:{body}");
            if r["request"]["body_truncated"].is_null() && r["response"]["body_truncated"].is_null() {
                assert_eq!(answer, expected, "{r}");
            } else {
                // Bytes were lost and the record says how many (a ring
                // buffer that filled on a loaded machine: counted as drops,
                // which the store's rotation may have evicted since): what
                // it kept is still exact.
                let n = answer.len().min(expected.len());
                assert_eq!(answer.as_bytes()[..n], expected.as_bytes()[..n], "{r}");
            }
            *seen.entry(i).or_insert(0) += 1;
        }
    }
    seen
}

/// The sensor's own log lines of pod `pod` (all of them).
fn sensor_log(node: &Node, pod: &str) -> String {
    node.kubectl(&["-n", "nettap", "logs", &format!("pod/{pod}"), "--tail=-1"])
}

/// The sensor pod is deleted while a client makes a request every 20 ms,
/// each on a new connection: the DaemonSet recreates it, no request fails,
/// every request before the deletion and after the new sensor's start is
/// captured exactly once; what went uncaptured is the requests made while
/// no sensor ran (counted here, from the client's log). Returns the old
/// pod's log, read before the deletion.
pub fn sensor_deleted_mid_traffic(node: &Node, server: &Value) -> String {
    let dump = tempfile::tempdir().unwrap();
    let client = LoadClient::start(
        node,
        server,
        "load-del",
        dump.path(),
        &["--port", "9002", "--count", "10000", "--interval", "0.02", "--max-seconds", "180"],
    );
    client.wait_requests(node, 100);
    let old = sensor_pod(node).expect("a sensor pod");
    let old_log = sensor_log(node, &old);
    let t_delete = now();
    node.kubectl(&["-n", "nettap", "delete", "pod", &old, "--wait=false"]);
    wait_new_sensor(node, Some(&old));
    let t_ready = now();
    std::thread::sleep(Duration::from_secs(3));
    let requests = client.finish(node);
    let last = requests.last().unwrap().i;
    node.wait("the last request captured", TIMEOUT, || {
        captured(node, server, "load-del").contains_key(&last).then_some(())
    });
    let seen = captured(node, server, "load-del");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "requests captured more than once: {twice:?}");
    let missing: Vec<&Request> = requests.iter().filter(|r| !seen.contains_key(&r.i)).collect();
    let outside: Vec<&&Request> = missing.iter().filter(|r| r.t < t_delete || r.t > t_ready + 1.0).collect();
    assert!(outside.is_empty(), "uncaptured requests while a sensor ran: {outside:?}");
    let gap = missing.first().map(|f| missing.last().unwrap().t - f.t).unwrap_or(0.0);
    eprintln!(
        "sensor pod deleted mid-traffic: {} requests, none failed; {} uncaptured, made within {gap:.1} s between the deletion and the new sensor ({:.1} s)",
        requests.len(),
        missing.len(),
        t_ready - t_delete
    );
    old_log
}

/// `kubectl annotate deployment load` while a client alternates requests
/// between ports 9002 and 9003 (one every 20 ms): `capture=false` stops the
/// capture of the load pod within 2 s, `capture=true` restores it within
/// 2 s, `port-filter=9003` keeps only port 9003 within 2 s.
pub fn annotations_switch_capture(node: &Node, server: &Value) {
    let dump = tempfile::tempdir().unwrap();
    let args =
        ["--port", "9002", "--port", "9003", "--count", "5000", "--interval", "0.02", "--max-seconds", "90"];
    let client = LoadClient::start(node, server, "load-ann", dump.path(), &args);
    client.wait_requests(node, 50);
    let annotate = |kv: &str| {
        let t = now();
        node.kubectl(&["-n", "shop", "annotate", "deployment/load", kv, "--overwrite"]);
        std::thread::sleep(Duration::from_secs(4));
        t
    };
    let t_off = annotate("ebpf.speedscale.com/capture=false");
    let t_on = annotate("ebpf.speedscale.com/capture=true");
    let t_ports = annotate("ebpf.speedscale.com/port-filter=9003");
    let requests = client.finish(node);
    let last_9003 = requests.iter().rev().find(|r| r.port == 9003).unwrap().i;
    node.wait("the last request captured", TIMEOUT, || {
        captured(node, server, "load-ann").contains_key(&last_9003).then_some(())
    });
    let seen = captured(node, server, "load-ann");
    // What each request's time says, 2 s after each change allowed for it.
    let expected = |r: &Request| -> Option<bool> {
        let within = |t0: f64| r.t >= t0 && r.t < t0 + 2.0;
        if within(t_off) || within(t_on) || within(t_ports) {
            None
        } else if r.t < t_off {
            Some(true)
        } else if r.t < t_on {
            Some(false)
        } else if r.t < t_ports {
            Some(true)
        } else {
            Some(r.port == 9003)
        }
    };
    let wrong: Vec<String> = requests
        .iter()
        .filter_map(|r| {
            let want = expected(r)?;
            (seen.contains_key(&r.i) != want).then(|| format!("{r:?} captured={}", !want))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "annotations not applied within 2 s (off {t_off:.2}, on {t_on:.2}, ports {t_ports:.2}):\n{wrong:#?}"
    );
    // How fast each change took hold: the first request that followed it.
    let took = |t0: f64, f: &dyn Fn(&Request) -> bool| {
        requests.iter().filter(|r| r.t >= t0 && f(r)).map(|r| r.t - t0).next().unwrap_or(f64::NAN)
    };
    eprintln!(
        "annotations: capture=false took hold within {:.2} s, capture=true {:.2} s, port-filter {:.2} s",
        took(t_off, &|r| !seen.contains_key(&r.i)),
        took(t_on, &|r| seen.contains_key(&r.i)),
        took(t_ports, &|r| r.port == 9002 && !seen.contains_key(&r.i)),
    );
}

/// Sustained bounded traffic (16 KiB bodies, both ways, on new connections)
/// passes the store's bound several times: the store keeps at most its
/// files (0600) within its bytes, says what it evicted, keeps the newest
/// requests; no nonce of any load run is in the sensor's log (`old_log`:
/// the deleted pod's).
pub fn store_rotates_and_logs_stay_clean(node: &Node, server: &Value, old_log: &str) {
    let dump = tempfile::tempdir().unwrap();
    let args = ["--port", "9003", "--count", "800", "--size", "16384", "--max-seconds", "120"];
    let client = LoadClient::start(node, server, "load-rot", dump.path(), &args);
    let requests = client.done(node);
    assert_eq!(requests.len(), 800, "the rotation's requests");
    node.wait("the last request captured", TIMEOUT, || {
        captured(node, server, "load-rot").contains_key(&799).then_some(())
    });
    let seen = captured(node, server, "load-rot");
    for i in 780..800 {
        assert_eq!(seen.get(&i), Some(&1), "newest request {i} in the store");
    }
    let files: Vec<std::fs::Metadata> =
        std::fs::read_dir(RECORDS).unwrap().flatten().map(|e| e.metadata().unwrap()).collect();
    let total: u64 = files.iter().map(|m| m.len()).sum();
    eprintln!(
        "store after {} requests of 16 KiB: {} files, {total} bytes; {} of them kept",
        requests.len(),
        files.len(),
        seen.len()
    );
    assert!(files.len() <= STORE_MAX_FILES, "{} files", files.len());
    // One record may pass a file's bound: a 16 KiB request and answer.
    assert!(total <= STORE_MAX_BYTES + (64 << 10), "{total} bytes in the store");
    use std::os::unix::fs::PermissionsExt;
    assert!(files.iter().all(|m| m.permissions().mode() & 0o777 == 0o600));
    let (count, bytes) = dropped(node, "file_store_evicted");
    assert!(count > 0 && bytes > 0, "evictions said: {count} records, {bytes} bytes");
    assert!(seen.len() < 800, "the oldest requests were evicted");

    let new = sensor_pod(node).unwrap();
    for (pod, log) in [("the deleted sensor", old_log.to_string()), ("the sensor", sensor_log(node, &new))] {
        assert!(!log.is_empty());
        assert!(!log.contains("nettap-nonce-"), "a payload in {pod}'s log");
        assert!(!log.contains("\"request\""), "a record in {pod}'s log");
    }
}

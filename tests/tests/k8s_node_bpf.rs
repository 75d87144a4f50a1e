//! The user's journey on a real node: `ci/node.sh up` starts etcd, the
//! control plane, containerd and a kubelet on this host, loads the sensor and
//! injector images built from this checkout and `helm install`s
//! charts/nettap. A Deployment's pod and a Job's pod then exchange exact
//! bytes over the pod network, and the sensor DaemonSet's records, read with
//! `kubectl logs`, name each side's pod, namespace, labels, workload,
//! container and UID, with the host pid, both pod IPs and every byte.

use nettap_e2e::node::{container_pid, python_image, Node};
use nettap_e2e::{assert_exact, peer_info, sizes_arg, wait_for_file, Capture, PeerInfo, TIMEOUT};
use serde_json::{json, Value};
use std::path::Path;

const SIZES: &[usize] = &[1, 100, 4095, 65537];
const PORT: u16 = 9000;

/// The pod of `selector` in `ns` once its container runs: (pod, container ID).
fn running_pod(node: &Node, ns: &str, selector: &str) -> (Value, String) {
    node.wait(&format!("a running pod {selector} in {ns}"), 2 * TIMEOUT, || {
        let pods = node.get(&["-n", ns, "pods", "-l", selector]);
        let pod = pods["items"].as_array()?.first()?.clone();
        let id = pod["status"]["containerStatuses"][0]["containerID"].as_str()?;
        let id = id.strip_prefix("containerd://").expect("containerd names its containers").to_string();
        pod["status"]["containerStatuses"][0]["state"]["running"].is_object().then_some((pod, id))
    })
}

/// The `k8s` object records of `pod`'s container carry.
fn expected_k8s(pod: &Value, container: &str, workload: Value) -> Value {
    let m = &pod["metadata"];
    json!({"pod": m["name"], "namespace": m["namespace"], "labels": m["labels"], "workload": workload,
        "uid": m["uid"], "container": container})
}

/// A peer's dump with its host pid (the dump has its pid inside the pod).
fn host_peer(dir: &Path, who: &str, pid: u32) -> PeerInfo {
    PeerInfo { pid, ..peer_info(dir, who) }
}

#[test]
fn deployment_traffic_is_captured_with_its_pod() {
    let node = Node::up();

    // What `helm install` made is there and ready.
    let ds = node.get(&["-n", "nettap", "daemonset", "nettap-sensor"]);
    assert_eq!(ds["status"]["desiredNumberScheduled"], 1, "{}", ds["status"]);
    assert_eq!(ds["status"]["numberReady"], 1, "{}", ds["status"]);
    let injector = node.get(&["-n", "nettap", "deployment", "nettap-injector"]);
    assert_eq!(injector["status"]["readyReplicas"], 1, "{}", injector["status"]);
    let webhook = node.get(&["mutatingwebhookconfiguration", "nettap-injector"]);
    assert_eq!(webhook["webhooks"][0]["name"], "java-agent.nettap.io");

    let images = tempfile::tempdir().unwrap();
    node.load_image(&python_image(images.path()));
    let dump = tempfile::tempdir().unwrap();
    let d = dump.path().display();
    let sizes = sizes_arg(SIZES);
    node.apply(&format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {{team: shop}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: shop}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo, tier: api}}}}
    spec:
      containers:
      - name: server
        image: docker.io/nettap/test-python:1
        imagePullPolicy: Never
        args: [/app/exchange.py, server, --listen, 0.0.0.0, --port, "{PORT}", --sizes, "{sizes}",
               --dump, /dump, --ready, /dump/server.ready]
        volumeMounts: [{{name: dump, mountPath: /dump}}]
      volumes: [{{name: dump, hostPath: {{path: "{d}", type: Directory}}}}]
"#
    ));
    wait_for_file(&dump.path().join("server.ready"), || true);
    let (server_pod, server_cid) = running_pod(&node, "shop", "app=echo");
    let server_ip = server_pod["status"]["podIP"].as_str().unwrap().to_string();
    let server_pid = container_pid(&server_cid, "exchange.py").expect("the server's process on the host");

    // The client holds after connecting until the test has its host pid.
    node.apply(&format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: client, namespace: shop}}
spec:
  backoffLimit: 0
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      restartPolicy: Never
      containers:
      - name: client
        image: docker.io/nettap/test-python:1
        imagePullPolicy: Never
        args: [/app/exchange.py, hold, --connect, "{server_ip}", --port, "{PORT}", --sizes, "{sizes}",
               --hold-at, "0", --hold-file, /dump/go, --dump, /dump]
        volumeMounts: [{{name: dump, mountPath: /dump}}]
      volumes: [{{name: dump, hostPath: {{path: "{d}", type: Directory}}}}]
"#
    ));
    wait_for_file(&dump.path().join("go.waiting"), || true);
    let (client_pod, client_cid) = running_pod(&node, "shop", "app=client");
    let client_pid = container_pid(&client_cid, "exchange.py").expect("the client's process on the host");
    std::fs::write(dump.path().join("go"), "").unwrap();
    wait_for_file(&dump.path().join("server.sent"), || true);
    wait_for_file(&dump.path().join("client.sent"), || true);
    let server = host_peer(dump.path(), "server", server_pid);
    let client = host_peer(dump.path(), "client", client_pid);
    assert_eq!(server.local, format!("{server_ip}:{PORT}"));
    assert_eq!(client.remote, format!("{server_ip}:{PORT}"));
    assert_eq!(client.local.rsplit_once(':').unwrap().0, client_pod["status"]["podIP"].as_str().unwrap());

    // Every byte of both directions of both sides reaches the sensor's output.
    let total: usize = SIZES.iter().sum();
    let cap = node.wait("the exchange in the sensor's records", 2 * TIMEOUT, || {
        let cap = Capture { records: node.sensor_records(), log: String::new() };
        let complete = [server_pid, client_pid]
            .iter()
            .all(|&p| ["send", "recv"].iter().all(|dir| cap.stream(p, dir).bytes.len() >= total));
        complete.then_some(cap)
    });
    assert_exact(&cap, &server, "server", 0);
    assert_exact(&cap, &client, "client", 0);

    let server_k8s = expected_k8s(&server_pod, "server", json!({"kind": "Deployment", "name": "echo"}));
    let client_k8s = expected_k8s(&client_pod, "client", json!({"kind": "Job", "name": "client"}));
    for (pid, want) in [(server_pid, &server_k8s), (client_pid, &client_k8s)] {
        for r in cap.of("data", pid) {
            assert_eq!(&r["k8s"], want, "{r}");
        }
    }
    node.kubectl(&["delete", "namespace", "shop", "--wait=false"]);
}

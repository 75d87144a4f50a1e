//! The user's journey on a real node: `ci/node.sh up` starts etcd, the
//! control plane, containerd and a kubelet on this host, loads the sensor and
//! injector images built from this checkout and `helm install`s
//! charts/nettap. A Deployment's pod and a Job's pod then exchange exact
//! bytes over the pod network, and the sensor DaemonSet's records, read from
//! the node's records store, name each side's pod, namespace, labels,
//! workload, container and UID, with the host pid, both pod IPs and every
//! byte. Then (one node, one test, to keep the bring-up once): Go, Node.js
//! and curl workloads calling Services and pods (`workloads`), Java pods
//! under each Pod Security level and a hostile pod (`security`), the
//! sensor's life under traffic (`lifecycle`), pods coming and going
//! (`churn`).

use nettap_e2e::helm::{chart, helm};
use nettap_e2e::node::{container_pid, curl_image, go_image, java_image, node_image, python_image, Node};
use nettap_e2e::{
    assert_exact_from, peer_info, sizes_arg, tls_cert, wait_for_file, Capture, PeerInfo, TIMEOUT,
};
use serde_json::{json, Value};
use std::path::Path;

#[path = "k8s_node_bpf/churn.rs"]
mod churn;
#[path = "k8s_node_bpf/lifecycle.rs"]
mod lifecycle;
#[path = "k8s_node_bpf/security.rs"]
mod security;
#[path = "k8s_node_bpf/workloads.rs"]
mod workloads;

const SIZES: &[usize] = &[1, 100, 4095, 65537];

/// The pod of `selector` in `ns` once its container runs: (pod, container ID).
fn running_pod(node: &Node, ns: &str, selector: &str) -> (Value, String) {
    node.wait(&format!("a running pod {selector} in {ns}"), 2 * TIMEOUT, || {
        let pods = node.get(&["-n", ns, "pods", "-l", selector]);
        let Some(pod) = pods["items"].as_array()?.first().cloned() else {
            assert_admitted(node, ns);
            return None;
        };
        let id = pod["status"]["containerStatuses"][0]["containerID"].as_str()?;
        let id = id.strip_prefix("containerd://").expect("containerd names its containers").to_string();
        pod["status"]["containerStatuses"][0]["state"]["running"].is_object().then_some((pod, id))
    })
}

/// No ReplicaSet in `ns` was refused its pods (Pod Security, the webhook).
fn assert_admitted(node: &Node, ns: &str) {
    for rs in node.get(&["-n", ns, "replicasets"])["items"].as_array().unwrap() {
        for c in rs["status"]["conditions"].as_array().into_iter().flatten() {
            assert!(c["type"] != "ReplicaFailure", "{ns}: pods refused: {}", c["message"]);
        }
    }
}

/// The `k8s` object records of `pod`'s container carry.
fn expected_k8s(pod: &Value, container: &str, workload: Value) -> Value {
    let m = &pod["metadata"];
    json!({"pod": m["name"], "namespace": m["namespace"], "labels": m["labels"], "workload": workload,
        "uid": m["uid"], "container": container})
}

/// `k8s.peer` of a pod's address: the pod, its workload.
fn pod_peer(pod: &Value, workload: Value) -> Value {
    let m = &pod["metadata"];
    json!({"pod": m["name"], "namespace": m["namespace"], "labels": m["labels"], "workload": workload,
        "uid": m["uid"]})
}

/// A peer's dump with its host pid (the dump has its pid inside the pod).
fn host_peer(dir: &Path, who: &str, pid: u32) -> PeerInfo {
    PeerInfo { pid, ..peer_info(dir, who) }
}

/// One exchange between pods: a Deployment `name` serving on `port` and a
/// Job `name-client`, in namespace `ns`, over TLS when `tls`.
struct PodExchange {
    server: PeerInfo,
    client: PeerInfo,
    server_pod: Value,
    client_pod: Value,
    _dump: tempfile::TempDir,
}

fn pod_exchange(node: &Node, ns: &str, name: &str, port: u16, tls: bool) -> PodExchange {
    let dump = tempfile::tempdir().unwrap();
    let d = dump.path().display();
    let sizes = sizes_arg(SIZES);
    let (server_tls, client_tls) = if tls {
        tls_cert(dump.path());
        (", --tls-cert, /dump/cert.pem, --tls-key, /dump/key.pem", ", --tls, /dump/cert.pem")
    } else {
        ("", "")
    };
    let volume = format!(
        r#"        volumeMounts: [{{name: dump, mountPath: /dump}}]
      volumes: [{{name: dump, hostPath: {{path: "{d}", type: Directory}}}}]"#
    );
    node.apply(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}, tier: api}}}}
    spec:
      containers:
      - name: server
        image: docker.io/nettap/test-python:1
        imagePullPolicy: Never
        args: [/app/exchange.py, server, --listen, 0.0.0.0, --port, "{port}", --sizes, "{sizes}",
               --dump, /dump, --ready, /dump/server.ready{server_tls}]
{volume}
"#
    ));
    wait_for_file(&dump.path().join("server.ready"), || true);
    let (server_pod, server_cid) = running_pod(node, ns, &format!("app={name}"));
    let server_ip = server_pod["status"]["podIP"].as_str().unwrap().to_string();
    let server_pid = container_pid(&server_cid, "exchange.py").expect("the server's process on the host");

    // The client holds after connecting until the test has its host pid.
    node.apply(&format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}-client, namespace: {ns}}}
spec:
  backoffLimit: 0
  template:
    metadata: {{labels: {{app: {name}-client}}}}
    spec:
      restartPolicy: Never
      containers:
      - name: client
        image: docker.io/nettap/test-python:1
        imagePullPolicy: Never
        args: [/app/exchange.py, hold, --connect, "{server_ip}", --port, "{port}", --sizes, "{sizes}",
               --hold-at, "0", --hold-file, /dump/go, --dump, /dump{client_tls}]
{volume}
"#
    ));
    wait_for_file(&dump.path().join("go.waiting"), || true);
    let (client_pod, client_cid) = running_pod(node, ns, &format!("app={name}-client"));
    let client_pid = container_pid(&client_cid, "exchange.py").expect("the client's process on the host");
    std::fs::write(dump.path().join("go"), "").unwrap();
    wait_for_file(&dump.path().join("server.sent"), || true);
    wait_for_file(&dump.path().join("client.sent"), || true);
    let server = host_peer(dump.path(), "server", server_pid);
    let client = host_peer(dump.path(), "client", client_pid);
    assert_eq!(server.local, format!("{server_ip}:{port}"));
    assert_eq!(client.remote, format!("{server_ip}:{port}"));
    assert_eq!(client.local.rsplit_once(':').unwrap().0, client_pod["status"]["podIP"].as_str().unwrap());
    PodExchange { server, client, server_pod, client_pod, _dump: dump }
}

/// The sensor's records once both directions of every peer are complete.
fn records_of(node: &Node, peers: &[&PeerInfo]) -> Capture {
    node.wait("the exchanges in the sensor's records", 2 * TIMEOUT, || {
        let cap = Capture { records: node.sensor_records(), log: String::new(), text: String::new() };
        let complete = peers.iter().all(|p| {
            cap.stream(p.pid, "send").bytes.len() >= p.sent.len()
                && cap.stream(p.pid, "recv").bytes.len() >= p.recv.len()
        });
        complete.then_some(cap)
    })
}

/// Every data record of the exchange's two sides: exact bytes from `source`
/// and the `k8s` of its pod, container and workload, with the other side's
/// pod as `peer` (they talk by pod IP).
fn assert_exchange(cap: &Capture, x: &PodExchange, source: &str) {
    assert_exact_from(cap, &x.server, "server", 0, source);
    assert_exact_from(cap, &x.client, "client", 0, source);
    let name = x.server_pod["metadata"]["labels"]["app"].as_str().unwrap();
    let server_workload = json!({"kind": "Deployment", "name": name});
    let client_workload = json!({"kind": "Job", "name": format!("{name}-client")});
    let mut server_k8s = expected_k8s(&x.server_pod, "server", server_workload.clone());
    server_k8s["peer"] = pod_peer(&x.client_pod, client_workload.clone());
    let mut client_k8s = expected_k8s(&x.client_pod, "client", client_workload);
    client_k8s["peer"] = pod_peer(&x.server_pod, server_workload);
    for (pid, want) in [(x.server.pid, &server_k8s), (x.client.pid, &client_k8s)] {
        for r in cap.of("data", pid) {
            assert_eq!(&r["k8s"], want, "{r}");
            // CONTRACT: the Kubernetes node's name (ci/node.sh's node).
            assert_eq!(r["node"], "nettap-node", "{r}");
        }
    }
}

/// The sensor DaemonSet's pod that is not being deleted, if any.
fn sensor_pod(node: &Node) -> Option<String> {
    let pods = node.get(&["-n", "nettap", "pods", "-l", "app.kubernetes.io/component=sensor"]);
    let p = pods["items"].as_array()?.iter().find(|p| p["metadata"]["deletionTimestamp"].is_null())?.clone();
    Some(p["metadata"]["name"].as_str()?.to_string())
}

/// Waits until a sensor pod other than `old` has applied the capture rules;
/// its name.
fn wait_new_sensor(node: &Node, old: Option<&str>) -> String {
    node.wait("a new sensor pod with its capture rules applied", 2 * TIMEOUT, || {
        let new = sensor_pod(node).filter(|p| Some(p.as_str()) != old)?;
        // Fails while the new pod's container is being created.
        let out = node.kubectl_with(&["-n", "nettap", "logs", &format!("pod/{new}")], None);
        String::from_utf8_lossy(&out.stdout).contains("kubernetes capture rules applied").then_some(new)
    })
}

/// `helm upgrade --reuse-values` of the release with `sets` (`--set-json`
/// values).
fn upgrade(node: &Node, home: &Path, sets: &[&str]) {
    let chart = chart();
    let mut args = vec!["upgrade", "nettap", chart.to_str().unwrap(), "-n", "nettap", "--reuse-values"];
    for s in sets {
        args.extend(["--set-json", s]);
    }
    let up = helm(home, Some(&node.kubeconfig), &args);
    assert!(up.status.success(), "helm upgrade: {}", String::from_utf8_lossy(&up.stderr));
}

/// `helm upgrade` with capture targets `targets` (JSON); waits until the
/// DaemonSet's new sensor pod has applied them.
fn set_targets(node: &Node, home: &Path, targets: &str) {
    let old = sensor_pod(node);
    upgrade(node, home, &[&format!("ebpf.configuration.capture.targets={targets}")]);
    wait_new_sensor(node, old.as_deref());
}

#[test]
fn deployment_traffic_is_captured_with_its_pod() {
    let bpffs = || {
        let mut names: Vec<_> =
            std::fs::read_dir("/sys/fs/bpf").unwrap().flatten().map(|e| e.file_name()).collect();
        names.sort();
        names
    };
    let bpffs_before = bpffs();
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
    node.load_image(&java_image(images.path()));
    for image in [go_image, node_image, curl_image] {
        node.load_image(&image(images.path()));
    }
    node.apply("{apiVersion: v1, kind: Namespace, metadata: {name: shop, labels: {team: shop}}}");
    // The pods of `team: shop` namespaces only: the node's own daemons (the
    // API server carrying `kubectl logs` of the sensor's records, among
    // others) would feed the sensor its own output, growing with every read.
    let home = tempfile::tempdir().unwrap();
    set_targets(
        &node,
        home.path(),
        r#"[{"name":"shop","namespaceSelector":{"matchLabels":{"team":"shop"}}}]"#,
    );

    // Plaintext from the kernel's hook; TLS plaintext from the uprobes on the
    // libssl inside the image (a file of the container's root, not the host's).
    let plain = pod_exchange(&node, "shop", "echo", 9000, false);
    let tls = pod_exchange(&node, "shop", "echo-tls", 9443, true);
    let cap = records_of(&node, &[&plain.server, &plain.client, &tls.server, &tls.client]);
    assert_exchange(&cap, &plain, "kernel");
    assert_exchange(&cap, &tls, "openssl");

    let certs = tempfile::tempdir().unwrap();
    tls_cert(certs.path());
    // Go, Node.js and curl, by Service names (CoreDNS, kube-proxy) and pod IPs.
    let t = std::time::Instant::now();
    workloads::go_node_and_curl(&node, certs.path());
    eprintln!("Go, Node.js and curl workloads checked in {:.1} s", t.elapsed().as_secs_f64());
    security::java_under_every_pod_security_level(&node, certs.path());
    security::a_uid0_pod_reaches_nothing(&node);

    // From here a capture target selecting the `tier: api` pods of `team:
    // shop` namespaces, set while the sensor is away.
    lifecycle::java_pod_before_the_sensor(&node, home.path(), certs.path());
    // The servers are captured, the clients are not (decided in the kernel
    // per cgroup).
    let targeted = pod_exchange(&node, "shop", "echo-targeted", 9001, false);
    let cap = records_of(&node, &[&targeted.server]);
    assert_exact_from(&cap, &targeted.server, "server", 0, "kernel");
    assert!(cap.of("data", targeted.client.pid).is_empty(), "the untargeted client was captured");

    let load = lifecycle::load_server(&node);
    let old_log = lifecycle::sensor_deleted_mid_traffic(&node, &load);
    lifecycle::annotations_switch_capture(&node, &load);
    lifecycle::store_rotates_and_logs_stay_clean(&node, &load, &old_log);
    churn::pods_come_and_go(&node);

    node.kubectl(&["delete", "namespace", "shop", "--wait=false"]);

    // `helm uninstall` leaves no object, no socket on the node, no pinned BPF object.
    let un = helm(home.path(), Some(&node.kubeconfig), &["uninstall", "nettap", "-n", "nettap", "--wait"]);
    assert!(un.status.success(), "helm uninstall: {}", String::from_utf8_lossy(&un.stderr));
    node.wait("the sensor and injector pods gone", 2 * TIMEOUT, || {
        let pods = node.get(&["-n", "nettap", "pods"]);
        pods["items"].as_array().unwrap().is_empty().then_some(())
    });
    let left = node.kubectl(&[
        "get",
        "all,configmaps,secrets,serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings,mutatingwebhookconfigurations",
        "-A",
        "-l",
        "app.kubernetes.io/instance=nettap",
        "-o",
        "name",
    ]);
    assert_eq!(left.trim(), "", "objects left by helm uninstall");
    for sock in ["/run/nettap/agent.sock", "/run/nettap/api.sock", "/run/nettap/api/api.sock"] {
        assert!(!Path::new(sock).exists(), "{sock} left on the node");
    }
    assert_eq!(bpffs(), bpffs_before, "BPF objects pinned by the sensor left");
}

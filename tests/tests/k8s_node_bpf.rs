//! The user's journey on a real node: `ci/node.sh up` starts etcd, the
//! control plane, containerd and a kubelet on this host, loads the sensor and
//! injector images built from this checkout and `helm install`s
//! charts/nettap. A Deployment's pod and a Job's pod then exchange exact
//! bytes over the pod network, and the sensor DaemonSet's records, read with
//! `kubectl logs`, name each side's pod, namespace, labels, workload,
//! container and UID, with the host pid, both pod IPs and every byte.

use nettap_e2e::helm::{chart, helm};
use nettap_e2e::node::{container_pid, java_image, python_image, Node, JAVA};
use nettap_e2e::{
    assert_exact_from, assert_http_body, pattern_body, peer_info, sizes_arg, tls_cert, wait_for_file,
    Capture, PeerInfo, TIMEOUT,
};
use serde_json::{json, Value};
use std::path::Path;

const SIZES: &[usize] = &[1, 100, 4095, 65537];

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
/// and the `k8s` of its pod, container and workload.
fn assert_exchange(cap: &Capture, x: &PodExchange, source: &str) {
    assert_exact_from(cap, &x.server, "server", 0, source);
    assert_exact_from(cap, &x.client, "client", 0, source);
    let name = x.server_pod["metadata"]["labels"]["app"].as_str().unwrap();
    let server_k8s = expected_k8s(&x.server_pod, "server", json!({"kind": "Deployment", "name": name}));
    let client_k8s =
        expected_k8s(&x.client_pod, "client", json!({"kind": "Job", "name": format!("{name}-client")}));
    for (pid, want) in [(x.server.pid, &server_k8s), (x.client.pid, &client_k8s)] {
        for r in cap.of("data", pid) {
            assert_eq!(&r["k8s"], want, "{r}");
        }
    }
}

/// A Java Deployment is injected by the webhook (init container copying the
/// agent, JAVA_TOOL_OPTIONS), starts, and its JSSE plaintext arrives from the
/// agent through the node's socket (`source: jvmti`) named with its pod; an
/// opted-out Java Deployment is left as it was.
fn java_is_injected_and_captured(node: &Node) {
    const SIZES: [usize; 3] = [10, 5000, 70000];
    let images = tempfile::tempdir().unwrap();
    node.load_image(&java_image(images.path()));
    let d = tempfile::tempdir().unwrap();
    tls_cert(d.path());
    let dp = d.path().display();
    let deployment = |name: &str, annotations: &str| {
        format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: shop}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}, annotations: {{{annotations}}}}}
    spec:
      containers:
      - name: server
        image: docker.io/nettap/test-java:1
        imagePullPolicy: Never
        command: [{JAVA}, -jar, /app/jdk-peers.jar, https-server, --port, "8443", --requests, "0",
                  --cert, /d/cert.pem, --key, /d/key.pem, --ready, /d/{name}.ready]
        volumeMounts: [{{name: d, mountPath: /d}}]
      volumes: [{{name: d, hostPath: {{path: "{dp}", type: Directory}}}}]
"#
        )
    };
    node.apply(&deployment("java", ""));
    node.apply(&deployment("java-opted-out", r#""ebpf.speedscale.com/inject-java": "false""#));
    for name in ["java", "java-opted-out"] {
        let ready = d.path().join(format!("{name}.ready"));
        node.wait(&format!("{name} serving"), 2 * TIMEOUT, || ready.exists().then_some(()));
    }
    let (pod, cid) = running_pod(node, "shop", "app=java");
    let inits: Vec<&Value> =
        pod["spec"]["initContainers"].as_array().unwrap().iter().map(|c| &c["name"]).collect();
    assert_eq!(inits, [&json!("nettap-agent-init")]);
    let env = pod["spec"]["containers"][0]["env"].to_string();
    assert!(env.contains("JAVA_TOOL_OPTIONS") && env.contains("-agentpath:"), "{env}");
    let (opted_out, _) = running_pod(node, "shop", "app=java-opted-out");
    assert!(opted_out["spec"]["initContainers"].is_null(), "{}", opted_out["spec"]);
    assert!(!opted_out["spec"].to_string().contains("JAVA_TOOL_OPTIONS"), "{}", opted_out["spec"]);
    let server_pid = container_pid(&cid, "https-server").expect("the Java server's process on the host");

    // The client in the same pod (the server listens on loopback), as
    // `kubectl exec` runs it: the container's environment loads the agent too.
    let sizes = SIZES.map(|n| n.to_string()).join(",");
    let args =
        ["-n", "shop", "exec", "deploy/java", "-c", "server", "--", JAVA, "-jar", "/app/jdk-peers.jar"];
    let mut args = args.to_vec();
    args.extend(["httpclient-client", "--port", "8443", "--cert", "/d/cert.pem", "--sizes", &sizes]);
    let out = node.kubectl(&args);
    assert!(out.contains("3 requests ok"), "{out}");

    let want_k8s = expected_k8s(&pod, "server", json!({"kind": "Deployment", "name": "java"}));
    let pod_http = || -> Vec<Value> {
        let records = node.sensor_records();
        records
            .into_iter()
            .filter(|r| r["kind"] == "http" && r["k8s"]["pod"] == pod["metadata"]["name"])
            .collect()
    };
    let start = std::time::Instant::now();
    let mut http = pod_http();
    while http.len() < 2 * SIZES.len() && start.elapsed() < 2 * TIMEOUT {
        std::thread::sleep(std::time::Duration::from_secs(1));
        http = pod_http();
    }
    if http.len() < 2 * SIZES.len() {
        let log = node.kubectl(&["-n", "nettap", "logs", "daemonset/nettap-sensor", "--tail=-1"]);
        let agent: Vec<&str> = log
            .lines()
            .filter(|l| !l.starts_with("{\"kind\"") && (l.contains("agent") || l.contains("JVMTI")))
            .collect();
        let java_log = node.kubectl_with(&["-n", "shop", "logs", "deploy/java", "--all-containers"], None);
        eprintln!("java pod's log:\n{}", String::from_utf8_lossy(&java_log.stdout));
        let jvmti: Vec<String> = node
            .sensor_records()
            .iter()
            .filter(|r| r["source"] == "jvmti")
            .map(|r| format!("{} {} {} {}", r["kind"], r["pid"], r["conn"]["role"], r["k8s"]["pod"]))
            .collect();
        panic!("Java exchanges of pod {}: {} of {} http records\n{http:?}\nsensor: {agent:#?}\njvmti records: {jvmti:#?}",
            pod["metadata"]["name"], http.len(), 2 * SIZES.len());
    }
    for role in ["server", "client"] {
        let side: Vec<&Value> = http.iter().filter(|r| r["conn"]["role"] == role).collect();
        assert_eq!(side.len(), SIZES.len(), "{role}: {side:?}");
        for n in SIZES {
            let r =
                side.iter().find(|r| r["request"]["path"] == format!("/echo/{n}")).expect("every request");
            assert_eq!(r["source"], "jvmti", "{r}");
            assert_eq!(r["conn"]["tls"], true, "{r}");
            assert_eq!(r["k8s"], want_k8s, "{r}");
            assert_http_body(&r["request"], &pattern_body("req", n), role);
            assert_http_body(&r["response"], &pattern_body("resp", n), role);
            if role == "server" {
                assert_eq!(r["pid"], server_pid, "{r}");
            }
        }
    }
}

/// `helm upgrade` with capture targets `targets` (JSON); waits until the
/// DaemonSet's new sensor pod has applied them.
fn set_targets(node: &Node, home: &Path, targets: &str) {
    let sensor_pod = || -> Option<String> {
        let pods = node.get(&["-n", "nettap", "pods", "-l", "app.kubernetes.io/component=sensor"]);
        let p =
            pods["items"].as_array()?.iter().find(|p| p["metadata"]["deletionTimestamp"].is_null())?.clone();
        Some(p["metadata"]["name"].as_str()?.to_string())
    };
    let old = sensor_pod();
    let chart = chart();
    let set = format!("ebpf.configuration.capture.targets={targets}");
    let args =
        ["upgrade", "nettap", chart.to_str().unwrap(), "-n", "nettap", "--reuse-values", "--set-json", &set];
    let up = helm(home, Some(&node.kubeconfig), &args);
    assert!(up.status.success(), "helm upgrade: {}", String::from_utf8_lossy(&up.stderr));
    node.wait("the sensor restarted with the targets", 2 * TIMEOUT, || {
        let new = sensor_pod().filter(|p| Some(p) != old.as_ref())?;
        // Fails while the new pod's container is being created.
        let out = node.kubectl_with(&["-n", "nettap", "logs", &format!("pod/{new}")], None);
        String::from_utf8_lossy(&out.stdout).contains("kubernetes capture rules applied").then_some(())
    });
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
    java_is_injected_and_captured(&node);

    // A capture target selecting the `tier: api` pods of `team: shop`
    // namespaces: the servers are captured, the clients are not (decided in
    // the kernel per cgroup).
    let targets = r#"[{"name":"api","namespaceSelector":{"matchLabels":{"team":"shop"}},"podSelector":{"matchLabels":{"tier":"api"}}}]"#;
    set_targets(&node, home.path(), targets);
    let targeted = pod_exchange(&node, "shop", "echo-targeted", 9001, false);
    let cap = records_of(&node, &[&targeted.server]);
    assert_exact_from(&cap, &targeted.server, "server", 0, "kernel");
    assert!(cap.of("data", targeted.client.pid).is_empty(), "the untargeted client was captured");

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

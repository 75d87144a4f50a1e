//! What Kubernetes mode captures: the capture targets of the Helm values
//! select pods by namespace and pod labels; a Deployment's annotations add
//! it (`capture: "true"`), remove it (`"false"`) and keep only some ports
//! (`port-filter`), live, enforced in the kernel by the pods' cgroups.

use nettap_e2e::jvm::KillOnDrop;
use nettap_e2e::k8s::{ApiServer, Driver, Runtime, SimPod};
use nettap_e2e::{python, wait_child, wait_for_file, Sensor};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `http_peer.py server` on 127.0.0.1:`port` inside `pod`'s container.
fn server(pod: &SimPod, port: u16) -> (KillOnDrop, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut cmd = Command::new(python());
    cmd.arg(nettap_e2e::program("http_peer.py"))
        .args(["server", "--listen", "127.0.0.1", "--port", &port.to_string(), "--ready"])
        .arg(&ready);
    let mut child = KillOnDrop(pod.cgroup.enter(&mut cmd).spawn().unwrap());
    wait_for_file(&ready, || child.try_wait().unwrap().is_none());
    (child, dir)
}

fn get(port: u16, path: &str) {
    let mut c = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{port}{path}"),
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_child(&mut c, "curl").success(), "curl :{port}{path}");
}

/// Deployment `name` in `ns` with one running pod `name-0` on `node`.
fn deployed(api: &ApiServer, ns: &str, name: &str, node: &str, driver: Driver) -> SimPod {
    let labels = json!({"app": name});
    let (_, rs) = api.deployment(ns, name, &labels, json!({}));
    let owner = Some(("apps/v1", "ReplicaSet", &rs));
    SimPod::run(api, ns, &format!("{name}-0"), node, &labels, owner, json!({}), (driver, Runtime::Containerd))
}

#[test]
fn targets_select_pods_and_annotations_change_capture_live() {
    let api = ApiServer::start();
    let node = format!("e2e-capture-{}", std::process::id());
    api.namespace("shop", json!({"team": "payments"}));
    api.namespace("tools", json!({"team": "platform"}));
    let web = deployed(&api, "shop", "web", &node, Driver::Systemd);
    let api_pod = deployed(&api, "shop", "api", &node, Driver::Cgroupfs);
    let tool = deployed(&api, "tools", "tool", &node, Driver::Systemd);

    let targets = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        targets.path(),
        json!({"targets": [{"name": "payments-web", "namespaceSelector": {"matchLabels": {"team": "payments"}},
            "podSelector": {"matchLabels": {"app": "web"}}}]})
        .to_string(),
    )
    .unwrap();
    let ports: Vec<u16> = (0..4).map(|_| nettap_e2e::free_port()).collect();
    let (web_port, api_port, api_other_port, tool_port) = (ports[0], ports[1], ports[2], ports[3]);
    let (web_srv, _a) = server(&web, web_port);
    let (api_srv, _b) = server(&api_pod, api_port);
    let (api_other_srv, _c) = server(&api_pod, api_other_port);
    let (tool_srv, _d) = server(&tool, tool_port);

    let kubeconfig = api.kubeconfig.display().to_string();
    let targets_arg = targets.path().display().to_string();
    let port_args: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mut args = vec!["--kubernetes", "--node-name", &node, "--kubeconfig", &kubeconfig];
    args.extend(["--capture-targets", &targets_arg]);
    for p in &port_args {
        args.extend(["--port", p]);
    }
    let sensor = Sensor::start(&args);
    sensor.wait_for_log(&["pod captured", "web-0", "target payments-web"]);
    let everyone = |phase: &str| {
        for p in &ports {
            get(*p, &format!("/{phase}"));
        }
    };
    everyone("targets");

    // An annotation change reaches the kernel within 2 s: measured from the
    // API's answer to the sensor's applying the new rules.
    let mut latencies = Vec::new();
    let mut annotate = |deployment: &str, annotations: Value| {
        let applied = sensor.log_count(&["kubernetes capture rules applied"]);
        let t = Instant::now();
        api.merge_patch(
            &format!("/apis/apps/v1/namespaces/shop/deployments/{deployment}"),
            &json!({"metadata": {"annotations": annotations}}),
        );
        sensor.wait_for_log_count(&["kubernetes capture rules applied"], applied);
        latencies.push(t.elapsed());
    };
    annotate(
        "api",
        json!({"ebpf.speedscale.com/capture": "true", "ebpf.speedscale.com/port-filter": api_port.to_string()}),
    );
    everyone("api-added");
    annotate("web", json!({"ebpf.speedscale.com/capture": "false"}));
    everyone("web-removed");
    annotate("web", json!({"ebpf.speedscale.com/capture": "true"}));
    everyone("web-back");
    let cap = sensor.stop();
    eprintln!("annotation change to rules applied: {latencies:?}");
    for l in &latencies {
        assert!(*l < Duration::from_secs(2), "{latencies:?}");
    }

    let paths = |pid: u32| -> Vec<String> {
        cap.records
            .iter()
            .filter(|r| r["pid"] == pid && r["kind"] != "drop")
            .filter(|r| r["kind"] == "http")
            .map(|r| r["request"]["path"].as_str().unwrap().to_string())
            .collect()
    };
    let any = |pid: u32| cap.records.iter().filter(|r| r["pid"] == pid).count();
    assert_eq!(paths(web_srv.id()), ["/targets", "/api-added", "/web-back"], "log:\n{}", cap.log);
    assert_eq!(paths(api_srv.id()), ["/api-added", "/web-removed", "/web-back"]);
    assert_eq!(any(api_other_srv.id()), 0, "port-filter keeps only its ports");
    assert_eq!(any(tool_srv.id()), 0, "no target selects the tools namespace");
    // The curl clients run in no pod: with targets, they are not captured.
    let servers = [web_srv.id(), api_srv.id(), api_other_srv.id(), tool_srv.id()];
    let others: Vec<&Value> = cap
        .records
        .iter()
        .filter(|r| {
            r["kind"] != "drop" && !servers.contains(&r["pid"].as_u64().unwrap_or(0).try_into().unwrap())
        })
        .collect();
    assert!(others.is_empty(), "records of processes in no targeted pod: {others:?}");
    for (pod, why) in [("web-0", "annotation capture=false"), ("api-0", "annotation capture=true")] {
        assert!(cap.log.lines().any(|l| l.contains(pod) && l.contains(why)), "{pod}: {why} not logged");
    }
}

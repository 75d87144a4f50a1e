//! Kubernetes mode on a simulated node: a real API server holds the
//! namespaces, workloads and pods; real processes run in the cgroups (and
//! network namespaces) a kubelet would give those pods; the sensor names
//! each record's pod, namespace, labels and workload.

use nettap_e2e::jvm::KillOnDrop;
use nettap_e2e::k8s::{ApiServer, Driver, Runtime, SimPod};
use nettap_e2e::{in_ns, python, wait_child, wait_for_file, Capture, NetNsPair, Sensor};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};

/// `http_peer.py server` on `listen:port` in `ns`, inside `pod`'s container; ready.
fn server(pod: &SimPod, ns: Option<&str>, listen: &str, port: u16) -> (KillOnDrop, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut cmd = in_ns(ns, &python());
    cmd.arg(nettap_e2e::program("http_peer.py"))
        .args(["server", "--listen", listen, "--port", &port.to_string(), "--ready"])
        .arg(&ready);
    let mut child = KillOnDrop(pod.cgroup.enter(&mut cmd).spawn().unwrap());
    wait_for_file(&ready, || child.try_wait().unwrap().is_none());
    (child, dir)
}

/// curl GET `url` from `ns`, inside `pod`'s container when given; its pid.
fn curl(pod: Option<&SimPod>, ns: Option<&str>, url: &str) -> u32 {
    let mut cmd = in_ns(ns, Path::new("/usr/bin/curl"));
    cmd.args(["-sS", "--fail", "--max-time", "20", "-o", "/dev/null", url]).stdout(Stdio::null());
    if let Some(pod) = pod {
        pod.cgroup.enter(&mut cmd);
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    assert!(wait_child(&mut child, "curl").success(), "curl {url} failed");
    pid
}

fn kubernetes_sensor(api: &ApiServer, node: &str, ports: &[u16]) -> Sensor {
    kubernetes_sensor_with(api, node, ports, &[])
}

fn kubernetes_sensor_with(api: &ApiServer, node: &str, ports: &[u16], extra: &[&str]) -> Sensor {
    let kubeconfig = api.kubeconfig.display().to_string();
    let mut args = vec!["--kubernetes", "--node-name", node, "--kubeconfig", &kubeconfig];
    args.extend_from_slice(extra);
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    for p in &ports {
        args.extend(["--port", p]);
    }
    let sensor = Sensor::start(&args);
    sensor.wait_for_log(&["kubernetes state synchronised"]);
    sensor
}

/// The `k8s` objects of a process's http records (one per exchange).
fn k8s_of(cap: &Capture, pid: u32) -> Vec<Value> {
    cap.of("http", pid).iter().map(|r| r.get("k8s").cloned().unwrap_or(Value::Null)).collect()
}

fn node_name(test: &str) -> String {
    format!("e2e-{test}-{}", std::process::id())
}

#[test]
fn records_name_pod_namespace_labels_and_workload() {
    let api = ApiServer::start();
    let node = node_name("enrich");
    api.namespace("shop", json!({"team": "payments"}));
    api.namespace("tools", json!({}));
    let web_labels = json!({"app": "web", "tier": "front"});
    let (_, rs) = api.deployment("shop", "web", &web_labels, json!({}));
    let mut pod_labels = web_labels.clone();
    pod_labels["pod-template-hash"] = rs["metadata"]["labels"]["pod-template-hash"].clone();
    let web = SimPod::run(
        &api,
        "shop",
        "web-5d8f7c9b6-x2x7k",
        &node,
        &pod_labels,
        Some(("apps/v1", "ReplicaSet", &rs)),
        json!({}),
        (Driver::Systemd, Runtime::Containerd),
    );
    let loader_set = api.workload("StatefulSet", "tools", "loader", &json!({"app": "loader"}));
    let loader = SimPod::run(
        &api,
        "tools",
        "loader-0",
        &node,
        &json!({"app": "loader"}),
        Some(("apps/v1", "StatefulSet", &loader_set)),
        json!({}),
        (Driver::Cgroupfs, Runtime::CriO),
    );
    let agent_set = api.workload("DaemonSet", "tools", "node-agent", &json!({"app": "node-agent"}));
    let agent = SimPod::run(
        &api,
        "tools",
        "node-agent-q8m2d",
        &node,
        &json!({"app": "node-agent"}),
        Some(("apps/v1", "DaemonSet", &agent_set)),
        json!({"hostNetwork": true}),
        (Driver::Systemd, Runtime::Docker),
    );
    // A pod of another node, with a process here in its cgroup: not this node's.
    let stray = SimPod::run(
        &api,
        "tools",
        "stray",
        "another-node",
        &json!({"app": "stray"}),
        None,
        json!({}),
        (Driver::Cgroupfs, Runtime::Containerd),
    );

    let net = NetNsPair::new(91);
    let (web_port, agent_port) = (nettap_e2e::free_port(), nettap_e2e::free_port());
    let (mut web_server, _w) = server(&web, Some(&net.a), "0.0.0.0", web_port);
    let (mut agent_server, _a) = server(&agent, None, "127.0.0.1", agent_port);
    let scratch = tempfile::tempdir().unwrap();
    let api_addr = format!("unix:{}", scratch.path().join("api.sock").display());
    let sensor = kubernetes_sensor_with(&api, &node, &[web_port, agent_port], &["--api", &api_addr]);
    // A subscriber of the streaming API sees the same pods (`nettap tail`
    // prints namespace/pod after the process).
    // Three exchanges, each seen by both ends: six http records.
    let mut tail = std::process::Command::new(nettap_e2e::nettap_bin())
        .args(["tail", "--connect", &api_addr, "--kind", "http", "--count", "6"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Pod filters: the node agent's pod by namespace and label (its two
    // exchanges, server side), the loader by pod name (its one, client side).
    let pod_tail = |filter: &[&str], count: &str| {
        std::process::Command::new(nettap_e2e::nettap_bin())
            .args(["tail", "--connect", &api_addr, "--kind", "http", "--count", count])
            .args(filter)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let agent_tail = pod_tail(&["--namespace", "tools", "--label", "app=node-agent"], "2");
    let loader_tail = pod_tail(&["--pod", "loader-0"], "1");
    // Traffic only once all three are subscribed (the exec gate may hold
    // each new program up to 1 s first: a tail once missed an exchange).
    sensor.wait_for_log_count(&["API subscriber joined"], 2);

    let loader_curl = curl(Some(&loader), Some(&net.b), &format!("http://{}:{web_port}/orders", net.a4));
    let host_curl = curl(None, None, &format!("http://127.0.0.1:{agent_port}/metrics"));
    let stray_curl = curl(Some(&stray), None, &format!("http://127.0.0.1:{agent_port}/stray"));
    wait_child(&mut tail, "nettap tail");
    let tail = tail.wait_with_output().unwrap();
    let tail = String::from_utf8(tail.stdout).unwrap();
    let filtered = |mut c: std::process::Child| {
        wait_child(&mut c, "nettap tail with pod filters");
        String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap()
    };
    let (agent_lines, loader_lines) = (filtered(agent_tail), filtered(loader_tail));
    let cap = sensor.stop();
    let _ = web_server.kill();
    let _ = agent_server.kill();
    let _ = (web_server.wait(), agent_server.wait());

    let web_k8s = web.record_k8s(Some(("Deployment", "web")));
    assert_eq!(web_k8s["labels"], json!({"app": "web", "tier": "front", "pod-template-hash": "5d8f7c9b6"}));
    // The web server and the loader are pods of this node in network
    // namespaces of their own: each names the other as its peer, from the
    // other end of the connection (these pods' statuses have no IP for the
    // cluster's index to name them by).
    let loader_k8s = loader.record_k8s(Some(("StatefulSet", "loader")));
    let with_peer = |k8s: &Value, peer: &Value| {
        let mut out = k8s.clone();
        out["peer"] = peer.clone();
        out["peer"].as_object_mut().unwrap().remove("container");
        out
    };
    assert_eq!(
        k8s_of(&cap, web_server.id()),
        vec![with_peer(&web_k8s, &loader_k8s)],
        "web server; log:\n{}",
        cap.log
    );
    assert_eq!(k8s_of(&cap, loader_curl), vec![with_peer(&loader_k8s, &web_k8s)]);
    let agent_k8s = agent.record_k8s(Some(("DaemonSet", "node-agent")));
    assert_eq!(k8s_of(&cap, agent_server.id()), vec![agent_k8s.clone(), agent_k8s]);
    assert_eq!(k8s_of(&cap, host_curl), vec![Value::Null], "a process in no pod");
    assert_eq!(k8s_of(&cap, stray_curl), vec![Value::Null], "a pod of another node");
    let agent_pid = format!("[{}] tools/node-agent-q8m2d", agent_server.id());
    assert_eq!(agent_lines.lines().count(), 2, "{agent_lines}");
    assert!(agent_lines.lines().all(|l| l.ends_with(&agent_pid)), "{agent_lines}");
    assert!(agent_lines.contains("/metrics") && agent_lines.contains("/stray"), "{agent_lines}");
    assert_eq!(loader_lines.lines().count(), 1, "{loader_lines}");
    assert!(loader_lines.trim_end().ends_with(&format!("[{loader_curl}] tools/loader-0")), "{loader_lines}");
    for (pid, pod) in [
        (web_server.id(), Some("shop/web-5d8f7c9b6-x2x7k")),
        (loader_curl, Some("tools/loader-0")),
        (agent_server.id(), Some("tools/node-agent-q8m2d")),
        (host_curl, None),
    ] {
        let lines: Vec<&str> = tail.lines().filter(|l| l.contains(&format!("[{pid}]"))).collect();
        assert!(!lines.is_empty(), "no API record of pid {pid}:\n{tail}");
        for l in lines {
            match pod {
                Some(p) => assert!(l.ends_with(&format!("[{pid}] {p}")), "{l}"),
                None => assert!(l.ends_with(&format!("[{pid}]")), "{l}"),
            }
        }
    }
}

#[test]
fn a_pod_recreated_with_the_same_name_is_a_new_pod() {
    let api = ApiServer::start();
    let node = node_name("recreate");
    api.namespace("shop", json!({}));
    let (_, rs) = api.deployment("shop", "web", &json!({"app": "web"}), json!({}));
    let owner = Some(("apps/v1", "ReplicaSet", &rs));
    let pod = |version: &str, driver| {
        SimPod::run(
            &api,
            "shop",
            "web-0",
            &node,
            &json!({"app": "web", "version": version}),
            owner,
            json!({}),
            (driver, Runtime::Containerd),
        )
    };
    let old = pod("v1", Driver::Systemd);
    let (old_port, new_port) = (nettap_e2e::free_port(), nettap_e2e::free_port());
    let (mut old_server, _o) = server(&old, None, "127.0.0.1", old_port);
    let sensor = kubernetes_sensor(&api, &node, &[old_port, new_port]);
    curl(None, None, &format!("http://127.0.0.1:{old_port}/before"));

    api.delete("/api/v1/namespaces/shop/pods/web-0");
    sensor.wait_for_log(&["kubernetes pod removed", old.object["metadata"]["uid"].as_str().unwrap()]);
    let new = pod("v2", Driver::Cgroupfs);
    assert_ne!(new.object["metadata"]["uid"], old.object["metadata"]["uid"]);
    sensor.wait_for_log(&["kubernetes pod added", new.object["metadata"]["uid"].as_str().unwrap()]);
    let (mut new_server, _n) = server(&new, None, "127.0.0.1", new_port);
    curl(None, None, &format!("http://127.0.0.1:{new_port}/new"));
    curl(None, None, &format!("http://127.0.0.1:{old_port}/after"));
    let cap = sensor.stop();
    for s in [&mut old_server, &mut new_server] {
        let _ = s.kill();
        let _ = s.wait();
    }

    let workload = Some(("Deployment", "web"));
    let paths = |pid| -> Vec<(String, Value)> {
        cap.of("http", pid)
            .iter()
            .map(|r| {
                (
                    r["request"]["path"].as_str().unwrap().to_string(),
                    r.get("k8s").cloned().unwrap_or_default(),
                )
            })
            .collect()
    };
    assert_eq!(
        paths(old_server.id()),
        vec![("/before".to_string(), old.record_k8s(workload)), ("/after".to_string(), Value::Null)],
        "the old pod's process, before and after its pod was deleted; log:\n{}",
        cap.log
    );
    assert_eq!(paths(new_server.id()), vec![("/new".to_string(), new.record_k8s(workload))]);
}

#[test]
fn the_api_server_stopped_and_restarted_keeps_the_last_state_then_resynchronises() {
    let mut api = ApiServer::start();
    let node = node_name("restart");
    api.namespace("shop", json!({}));
    let (_, rs) = api.deployment("shop", "web", &json!({"app": "web"}), json!({}));
    let owner = Some(("apps/v1", "ReplicaSet", &rs));
    let pod = |api: &ApiServer, name: &str| {
        SimPod::run(
            api,
            "shop",
            name,
            &node,
            &json!({"app": "web"}),
            owner,
            json!({}),
            (Driver::Systemd, Runtime::Containerd),
        )
    };
    let first = pod(&api, "web-a");
    let (first_port, second_port) = (nettap_e2e::free_port(), nettap_e2e::free_port());
    let (mut first_server, _f) = server(&first, None, "127.0.0.1", first_port);
    let sensor = kubernetes_sensor(&api, &node, &[first_port, second_port]);

    api.stop_apiserver();
    sensor.wait_for_log(&["kubernetes API error"]);
    curl(None, None, &format!("http://127.0.0.1:{first_port}/while-down"));
    api.start_apiserver();
    let second = pod(&api, "web-b");
    sensor.wait_for_log(&["kubernetes pod added", second.object["metadata"]["uid"].as_str().unwrap()]);
    sensor.wait_for_log(&["kubernetes API reachable again"]);
    let (mut second_server, _s) = server(&second, None, "127.0.0.1", second_port);
    curl(None, None, &format!("http://127.0.0.1:{second_port}/after"));
    let cap = sensor.stop();
    for s in [&mut first_server, &mut second_server] {
        let _ = s.kill();
        let _ = s.wait();
    }

    let workload = Some(("Deployment", "web"));
    assert_eq!(k8s_of(&cap, first_server.id()), vec![first.record_k8s(workload)], "log:\n{}", cap.log);
    assert_eq!(k8s_of(&cap, second_server.id()), vec![second.record_k8s(workload)]);
}

#[test]
fn kubernetes_mode_without_a_node_name_is_refused() {
    let out = Command::new(nettap_e2e::nettap_bin())
        .args(["capture", "--kubernetes", "--duration", "1"])
        .env_remove("NODE_NAME")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node's name"), "{err}");
}

/// A process that exited before the sensor looked it up (a job's `curl`,
/// a `kubectl exec`, while the capture loop was busy: here stopped) is still
/// named by its pod, through the cgroup id its events carry: its
/// `/proc/PID/cgroup` went with it, its container's cgroup did not.
#[test]
fn a_process_gone_before_the_sensor_looked_is_still_named_by_its_pod() {
    let api = ApiServer::start();
    let node = node_name("gone");
    api.namespace("jobs", json!({}));
    let job_labels = json!({"app": "report"});
    let job = SimPod::run(
        &api,
        "jobs",
        "report-28411-x7kq2",
        &node,
        &job_labels,
        None,
        json!({}),
        (Driver::Systemd, Runtime::Containerd),
    );
    let port = nettap_e2e::free_port();
    let (mut host_server, _dir) = nettap_e2e::http_peer_server(port);
    // No exec gate: a stopped sensor would hold every exec on the host.
    let sensor = kubernetes_sensor_with(&api, &node, &[port], &["--exec-hold-ms", "0"]);
    let stop = |sig| {
        // SAFETY: plain syscall on the sensor this test started.
        assert_eq!(unsafe { libc::kill(sensor.pid() as i32, sig) }, 0);
    };
    stop(libc::SIGSTOP);
    let gone = curl(Some(&job), None, &format!("http://127.0.0.1:{port}/report"));
    assert!(!Path::new(&format!("/proc/{gone}")).exists(), "the client has exited");
    stop(libc::SIGCONT);
    let cap = sensor.stop();
    let _ = host_server.kill();
    let _ = host_server.wait();

    assert_eq!(k8s_of(&cap, gone), vec![job.record_k8s(None)], "log:\n{}", cap.log);
    let paths: Vec<&str> =
        cap.of("http", gone).iter().map(|r| r["request"]["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/report"]);
    assert_eq!(k8s_of(&cap, host_server.id()), vec![Value::Null], "the host's server is in no pod");
}

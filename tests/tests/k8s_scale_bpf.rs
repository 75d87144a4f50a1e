//! Kubernetes mode with 1,000 pods on the node: the sensor learns every
//! one and its memory stays bounded (the number is printed for the notes).

use nettap_e2e::k8s::ApiServer;
use nettap_e2e::Sensor;
use serde_json::json;
use std::time::Instant;

const PODS: usize = 1000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_thousand_pods_are_indexed_in_bounded_memory() {
    let api = ApiServer::start();
    let node = format!("e2e-scale-{}", std::process::id());
    api.namespace("bulk", json!({"team": "load"}));
    let (_, rs) = api.deployment("bulk", "many", &json!({"app": "many"}), json!({}));
    let kubeconfig = api.kubeconfig.display().to_string();
    // Only a port nothing uses: this test measures the Kubernetes side.
    let port = nettap_e2e::free_port().to_string();
    let sensor =
        Sensor::start(&["--kubernetes", "--node-name", &node, "--kubeconfig", &kubeconfig, "--port", &port]);
    sensor.wait_for_log(&["kubernetes state synchronised"]);
    let before = rss_kib(sensor.pid());

    let labels = |i: usize| {
        json!({"app": "many", "pod-template-hash": "5d8f7c9b6", "shard": format!("s{}", i % 10),
        "release": "stable", "team": "load"})
    };
    let pods: Vec<_> = (0..PODS)
        .map(|i| {
            json!({"metadata": {"name": format!("many-5d8f7c9b6-{i:05}"), "labels": labels(i),
                    "annotations": {"note": "x".repeat(200)},
                    "ownerReferences": [nettap_e2e::k8s::owner(&rs, "apps/v1", "ReplicaSet")]},
                "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.invalid/app:1",
                    "env": [{"name": "A", "value": "y".repeat(200)}]}]}})
        })
        .collect();
    let t = Instant::now();
    api.create_many("/api/v1/namespaces/bulk/pods", &pods);
    let created = t.elapsed();
    let start = Instant::now();
    while sensor.log_count(&["kubernetes pod added"]) < PODS {
        assert!(
            start.elapsed() < nettap_e2e::TIMEOUT,
            "only {} pods added",
            sensor.log_count(&["kubernetes pod added"])
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let known = t.elapsed();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let after = rss_kib(sensor.pid());
    eprintln!(
        "{PODS} pods: created in {created:?}, all known to the sensor {known:?} after the first create; \
         sensor RSS {before} KiB before, {after} KiB after (+{} KiB)",
        after.saturating_sub(before)
    );
    assert!(after.saturating_sub(before) < 64 * 1024, "RSS grew from {before} KiB to {after} KiB");
    sensor.stop();
}

//! Kubernetes mode with 1,000 pods on the node: the sensor learns every
//! one and its memory stays bounded (the number is printed for the notes).

use nettap_e2e::inspect::{map_entries, rss_kib};
use nettap_e2e::k8s::ApiServer;
use nettap_e2e::Sensor;
use serde_json::json;
use std::time::Instant;

const PODS: usize = 1000;

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

/// Waits until `what` holds, polling.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < nettap_e2e::TIMEOUT, "{what} never happened");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Pod churn: 1 000 pods of a Deployment whose annotation gives each a
/// kernel capture rule are created on the node (with their cgroups) and
/// deleted, twice. Each time every pod is indexed and ruled, and after the
/// deletion the pod index loses every one and the kernel's rule map returns
/// to its baseline; the sensor's memory after the second round is within 5 %
/// of that after the first.
#[test]
fn a_thousand_pods_come_and_go_and_the_tables_return_to_their_baseline() {
    use nettap_e2e::k8s::{container_id, Driver, PodCgroup};
    const ROUNDS: usize = 2;
    let api = ApiServer::start();
    let node = format!("e2e-churn-{}", std::process::id());
    api.namespace("churn", json!({}));
    let (_, rs) = api.deployment(
        "churn",
        "many",
        &json!({"app": "many"}),
        json!({"ebpf.speedscale.com/port-filter": "8080"}),
    );
    let kubeconfig = api.kubeconfig.display().to_string();
    let port = nettap_e2e::free_port().to_string();
    let sensor =
        Sensor::start(&["--kubernetes", "--node-name", &node, "--kubeconfig", &kubeconfig, "--port", &port]);
    sensor.wait_for_log(&["kubernetes state synchronised"]);
    let baseline = map_entries(sensor.pid(), "cgroup_policy");
    let mut rss = Vec::new();
    for round in 0..ROUNDS {
        let t = Instant::now();
        let pods: Vec<_> = (0..PODS)
            .map(|i| {
                json!({"metadata": {"name": format!("many-5d8f7c9b6-r{round}-{i:05}"),
                        "labels": {"app": "many", "pod-template-hash": "5d8f7c9b6"},
                        "ownerReferences": [nettap_e2e::k8s::owner(&rs, "apps/v1", "ReplicaSet")]},
                    "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.invalid/app:1"}]}})
            })
            .collect();
        api.create_many("/api/v1/namespaces/churn/pods", &pods);
        // As a kubelet does: the container's cgroup, then the pod's status.
        let listed = api.request("GET", "/api/v1/namespaces/churn/pods", None);
        let listed = listed["items"].as_array().unwrap();
        assert_eq!(listed.len(), PODS);
        let ids: Vec<String> = listed.iter().map(|_| container_id()).collect();
        let cgroups: Vec<PodCgroup> = listed
            .iter()
            .zip(&ids)
            .map(|(p, id)| {
                PodCgroup::new(Driver::Systemd, "besteffort", nettap_e2e::k8s::uid(p), "cri-containerd", id)
            })
            .collect();
        let running: Vec<(&serde_json::Value, String)> =
            listed.iter().zip(&ids).map(|(p, id)| (p, format!("containerd://{id}"))).collect();
        api.pods_running(&running);
        until(&format!("round {round}: every pod added"), || {
            sensor.log_count(&["kubernetes pod added"]) == (round + 1) * PODS
        });
        // One rule for the pod's cgroup, one for its container's.
        until(&format!("round {round}: a rule for every pod's cgroups"), || {
            map_entries(sensor.pid(), "cgroup_policy") == baseline + 2 * PODS
        });
        let ruled = t.elapsed();
        let t = Instant::now();
        api.request(
            "DELETE",
            "/api/v1/namespaces/churn/pods",
            Some(("application/json", &json!({"gracePeriodSeconds": 0}))),
        );
        until(&format!("round {round}: every pod removed"), || {
            sensor.log_count(&["kubernetes pod removed"]) == (round + 1) * PODS
        });
        until(&format!("round {round}: the rule map back to its baseline"), || {
            map_entries(sensor.pid(), "cgroup_policy") == baseline
        });
        drop(cgroups);
        std::thread::sleep(std::time::Duration::from_secs(1));
        rss.push(rss_kib(sensor.pid()));
        eprintln!(
            "round {round}: {PODS} pods indexed and ruled in {ruled:?}, gone in {:?}; sensor RSS {} KiB",
            t.elapsed(),
            rss[round]
        );
    }
    assert!(rss[ROUNDS - 1] <= rss[0] + rss[0] / 20, "RSS grew over the churn: {rss:?} KiB");
    sensor.stop();
}

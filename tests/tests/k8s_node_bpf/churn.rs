//! Issue 27 on the real node: pods the kubelet creates and deletes, with
//! their sandboxes and cgroups, come and go from the sensor's tables.

use super::security::sensor_pid;
use nettap_e2e::inspect::{map_u64_keys, rss_kib};
use nettap_e2e::node::Node;
use nettap_e2e::TIMEOUT;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Pods per round (the kubelet's default limit is 110 pods per node, and
/// the other phases' pods are still there) and rounds.
const PODS: usize = 40;
const ROUNDS: usize = 2;

/// The sensor's log lines `message` says about namespace `churn`.
fn logged(node: &Node, message: &str) -> usize {
    let log = node.kubectl(&["-n", "nettap", "logs", "daemonset/nettap-sensor", "--tail=-1"]);
    log.lines().filter(|l| l.contains(message) && l.contains(r#""namespace":"churn""#)).count()
}

/// UIDs of the pods in `churn` and how many of them run.
fn pods(node: &Node) -> (Vec<String>, usize) {
    let pods = node.get(&["-n", "churn", "pods"]);
    let items = pods["items"].as_array().cloned().unwrap_or_default();
    let running = items.iter().filter(|p| p["status"]["phase"] == "Running").count();
    (items.iter().map(|p| p["metadata"]["uid"].as_str().unwrap().to_string()).collect(), running)
}

/// The node's cgroup v2 hierarchy (at `unified` on a hybrid host), where the
/// ids the sensor's rules are keyed by live.
fn cgroup2() -> PathBuf {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.controllers").exists())
        .expect("no cgroup v2 hierarchy on the node")
}

/// Ids (inode numbers) of the cgroups of pods `uids` — each pod's own and
/// those below it (its sandbox's and containers') — in `dir` at `depth`.
fn pod_cgroup_ids(dir: &Path, uids: &HashSet<String>, in_pod: bool, depth: usize, ids: &mut HashSet<u64>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
        let name = e.file_name().to_string_lossy().replace('_', "-");
        let ours = in_pod || uids.iter().any(|u| name.contains(&format!("pod{u}")));
        if ours {
            ids.insert(e.metadata().unwrap().ino());
        }
        if depth < 6 {
            pod_cgroup_ids(&e.path(), uids, ours, depth + 1, ids);
        }
    }
}

/// A Deployment of pause containers scaled to `PODS` and back to none,
/// twice. Each round the sensor indexes every pod (`kubernetes pod added`)
/// and the kernel's rule map gets an entry for every cgroup of each (the
/// pod's, its sandbox's, its container's); once the pods are gone the
/// sensor forgets each (`kubernetes pod removed`) and none of their rules
/// is left. The sensor's memory after the second round is within 5 % of
/// that after the first.
pub fn pods_come_and_go(node: &Node) {
    node.apply("{apiVersion: v1, kind: Namespace, metadata: {name: churn}}");
    let pid = sensor_pid(node);
    node.apply(
        r#"{apiVersion: apps/v1, kind: Deployment, metadata: {name: many, namespace: churn},
            spec: {replicas: 0, selector: {matchLabels: {app: many}},
              template: {metadata: {labels: {app: many}},
                spec: {terminationGracePeriodSeconds: 0, automountServiceAccountToken: false,
                  containers: [{name: pause, image: "docker.io/nettap/pause:1", imagePullPolicy: Never}]}}}}"#,
    );
    let root = cgroup2();
    let mut rss = Vec::new();
    for round in 1..=ROUNDS {
        let t = Instant::now();
        node.kubectl(&["-n", "churn", "scale", "deployment/many", &format!("--replicas={PODS}")]);
        let uids: HashSet<String> =
            node.wait(&format!("round {round}: {PODS} pods running"), 4 * TIMEOUT, || {
                let (uids, running) = pods(node);
                (uids.len() == PODS && running == PODS).then(|| uids.into_iter().collect())
            });
        node.wait(&format!("round {round}: every pod indexed"), 2 * TIMEOUT, || {
            (logged(node, "kubernetes pod added") == round * PODS).then_some(())
        });
        let mut ids = HashSet::new();
        node.wait(&format!("round {round}: a rule for every cgroup of every pod"), 2 * TIMEOUT, || {
            ids.clear();
            pod_cgroup_ids(&root, &uids, false, 0, &mut ids);
            // At least the pod's own cgroup and its container's, each.
            let keys = map_u64_keys(pid, "cgroup_policy");
            (ids.len() >= 2 * PODS && ids.is_subset(&keys)).then_some(())
        });
        let up = t.elapsed();

        let t = Instant::now();
        node.kubectl(&["-n", "churn", "scale", "deployment/many", "--replicas=0"]);
        node.wait(&format!("round {round}: every pod gone"), 4 * TIMEOUT, || {
            pods(node).0.is_empty().then_some(())
        });
        node.wait(&format!("round {round}: every pod forgotten"), 2 * TIMEOUT, || {
            (logged(node, "kubernetes pod removed") == round * PODS).then_some(())
        });
        node.wait(&format!("round {round}: none of their rules left"), 2 * TIMEOUT, || {
            map_u64_keys(pid, "cgroup_policy").is_disjoint(&ids).then_some(())
        });
        rss.push(rss_kib(pid));
        eprintln!(
            "pod churn round {round}: {PODS} pods up, indexed and their {} cgroups ruled in {up:.1?}; \
             gone and forgotten in {:.1?}; sensor RSS {} KiB",
            ids.len(),
            t.elapsed(),
            rss[round - 1]
        );
    }
    assert_eq!(sensor_pid(node), pid, "the sensor restarted during the churn");
    assert!(rss[ROUNDS - 1] <= rss[0] + rss[0] / 20, "sensor RSS grew over the churn: {rss:?} KiB");
    node.kubectl(&["delete", "namespace", "churn", "--wait=false"]);
}

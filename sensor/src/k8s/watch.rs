//! The Kubernetes API side: reflectors on this node's Pods, ReplicaSets,
//! Deployments and Namespaces, each object stripped to what the sensor
//! reads, and the pod index rebuilt from them after every change.

use super::enforce;
use super::meta::{controller, PodIndex, PodMeta, Workload};
use super::policy::{decide, CaptureTargets, CgroupRules, Decision, Target};
use super::{KubernetesError, KubernetesOptions, PodResolver};
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ContainerStatus, Namespace, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

/// Deployment annotations the sensor reads (the others are dropped).
pub const ANNOTATION_PREFIX: &str = "ebpf.speedscale.com/";

/// How long changes are gathered before the index is rebuilt once for all.
const SETTLE: Duration = Duration::from_millis(50);

/// The stores the reflectors fill.
#[derive(Clone)]
pub struct Stores {
    /// Pods of this node.
    pub pods: Store<Pod>,
    /// ReplicaSets' metadata (owners).
    pub replicasets: Store<PartialObjectMeta<ReplicaSet>>,
    /// Deployments' metadata (our annotations).
    pub deployments: Store<PartialObjectMeta<Deployment>>,
    /// Namespaces' metadata (labels).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
}

impl Stores {
    /// The Deployment (or other controller) of ReplicaSet `namespace/name`.
    pub fn replicaset_owner(&self, namespace: &str, name: &str) -> Option<Workload> {
        let rs = self.replicasets.get(&ObjectRef::new(name).within(namespace))?;
        let o = controller(rs.metadata.owner_references.as_deref())?;
        Some(Workload { kind: o.kind.clone(), name: o.name.clone() })
    }

    /// The pod index as the stores are now.
    pub fn index(&self) -> PodIndex {
        let pods = self.pods.state();
        PodIndex::build(pods.iter().map(|p| &**p), |ns, name| self.replicaset_owner(ns, name))
    }
}

/// The capture rules for the kernel, as they change (`None` until the first
/// synchronisation).
pub type RulesWatch = tokio::sync::watch::Receiver<Option<Arc<CgroupRules>>>;

/// Starts the reflectors of `opts.node_name` on the current tokio runtime
/// and keeps `resolver`'s index and the capture rules up to date; returns
/// once every reflector has listed its objects, or after the sync timeout
/// (then the index and rules follow when they have).
pub async fn start(
    client: kube::Client,
    opts: &KubernetesOptions,
    resolver: PodResolver,
) -> Result<(Stores, RulesWatch), KubernetesError> {
    let (node, sync_timeout) = (opts.node_name.as_str(), opts.sync_timeout);
    let mut policy = PolicyState::new(opts)?;
    let changed = Arc::new(Notify::new());
    let listed: Arc<[AtomicBool; 4]> = Arc::default();
    let (pods, pods_w) = reflector::store();
    let (replicasets, rs_w) = reflector::store();
    let (deployments, dep_w) = reflector::store();
    let (namespaces, ns_w) = reflector::store();
    let stores = Stores { pods, replicasets, deployments, namespaces };

    let on_node = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let all = watcher::Config::default;
    spawn_reflector(
        "pods",
        watcher(Api::<Pod>::all(client.clone()), on_node).default_backoff().modify(strip_pod).reflect(pods_w),
        (changed.clone(), listed.clone(), 0),
    );
    spawn_reflector(
        "replicasets",
        watcher(Api::<PartialObjectMeta<ReplicaSet>>::all(client.clone()), all())
            .default_backoff()
            .modify(|rs| keep_owners(&mut rs.metadata))
            .reflect(rs_w),
        (changed.clone(), listed.clone(), 1),
    );
    spawn_reflector(
        "deployments",
        watcher(Api::<PartialObjectMeta<Deployment>>::all(client.clone()), all())
            .default_backoff()
            .modify(|d| keep_annotations(&mut d.metadata))
            .reflect(dep_w),
        (changed.clone(), listed.clone(), 2),
    );
    spawn_reflector(
        "namespaces",
        watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), all())
            .default_backoff()
            .modify(|n| keep_labels(&mut n.metadata))
            .reflect(ns_w),
        (changed.clone(), listed.clone(), 3),
    );

    let synced = async {
        for (what, ready) in [
            ("pods", stores.pods.wait_until_ready().await),
            ("replicasets", stores.replicasets.wait_until_ready().await),
            ("deployments", stores.deployments.wait_until_ready().await),
            ("namespaces", stores.namespaces.wait_until_ready().await),
        ] {
            ready.map_err(|_| KubernetesError::ReflectorEnded(what))?;
        }
        Ok::<_, KubernetesError>(())
    };
    let (rules_tx, rules_rx) = tokio::sync::watch::channel(None);
    match tokio::time::timeout(sync_timeout, synced).await {
        Ok(r) => {
            r?;
            let index = stores.index();
            info!(node, pods = index.pods(), "kubernetes state synchronised");
            rules_tx.send_replace(Some(Arc::new(policy.rules(&stores, &index))));
            resolver.set(index);
        }
        Err(_) => warn!(
            node,
            timeout_s = sync_timeout.as_secs(),
            "kubernetes state not synchronised yet: capturing without it"
        ),
    }

    super::peers::start(client, stores.clone(), resolver.peers.clone());
    let keep = stores.clone();
    tokio::spawn(async move {
        // Changes of the objects, and each second new containers' cgroups
        // and a changed targets file.
        let mut tick = tokio::time::interval(RESCAN);
        loop {
            tokio::select! {
                _ = changed.notified() => tokio::time::sleep(SETTLE).await,
                _ = tick.tick() => {}
            }
            // Not before every store has listed once: a partial index would
            // name workloads wrong.
            if !listed.iter().all(|l| l.load(Ordering::Relaxed)) {
                continue;
            }
            let index = keep.index();
            let before = resolver.snapshot();
            if before.iter().any(|p| !index.has_uid(&p.uid)) {
                // A pod leaves the index only after the records of its
                // processes' last moments are named: those may still wait in
                // the ring (polled every 50 ms at most when quiet).
                tokio::time::sleep(REMOVAL_GRACE).await;
            }
            log_changes(&before, &index);
            policy.reload_targets();
            let rules = policy.rules(&keep, &index);
            rules_tx.send_if_modified(|old| {
                let same = old.as_deref() == Some(&rules);
                if !same {
                    *old = Some(Arc::new(rules));
                }
                !same
            });
            resolver.set(index);
        }
    });
    Ok((stores, rules_rx))
}

/// How long a removed pod stays in the index after the API server said so:
/// longer than kernel records wait in the ring before they are read (the
/// capture loop's longest poll interval, 50 ms, and a busy loop's delay), so
/// that what its processes did before the removal is still named by it.
const REMOVAL_GRACE: Duration = Duration::from_millis(250);

/// How often pod cgroups are looked for (new containers) and the targets file re-read.
const RESCAN: Duration = Duration::from_secs(1);

/// The capture decisions: the targets (re-read when their file changes),
/// each pod's last decision (to log changes), the cgroup tree.
struct PolicyState {
    targets_file: Option<PathBuf>,
    targets_mtime: Option<std::time::SystemTime>,
    targets: Vec<Target>,
    cgroup_root: Option<PathBuf>,
    last: HashMap<String, (Decision, Arc<PodMeta>)>,
}

impl PolicyState {
    fn new(opts: &KubernetesOptions) -> Result<Self, KubernetesError> {
        let mut s = PolicyState {
            targets_file: opts.targets_file.clone(),
            targets_mtime: None,
            targets: Vec::new(),
            cgroup_root: match &opts.cgroup_root {
                Some(root) => enforce::cgroup2_under(root),
                None => enforce::cgroup2_mount(),
            },
            last: HashMap::new(),
        };
        if let Some(path) = &s.targets_file {
            s.targets = CaptureTargets::load(path)?.targets;
            s.targets_mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            info!(file = %path.display(), targets = s.targets.len(), "capture targets read");
        }
        match &s.cgroup_root {
            Some(root) => {
                info!(root = %root.display(), "pod cgroups looked for under this cgroup v2 hierarchy")
            }
            None => warn!("no cgroup v2 hierarchy mounted: capture targets and annotations are not enforced"),
        }
        Ok(s)
    }

    /// Re-reads the targets file if it changed (a ConfigMap update); a
    /// file that cannot be used leaves the targets as they were.
    fn reload_targets(&mut self) {
        let Some(path) = &self.targets_file else { return };
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if mtime == self.targets_mtime {
            return;
        }
        self.targets_mtime = mtime;
        match CaptureTargets::load(path) {
            Ok(t) => {
                info!(file = %path.display(), targets = t.targets.len(), "capture targets changed");
                self.targets = t.targets;
            }
            Err(e) => warn!(error = %crate::probes::error_chain(&e), "capture targets unchanged"),
        }
    }

    /// Each pod's decision (changes logged) and the rules of their cgroups.
    fn rules(&mut self, stores: &Stores, index: &PodIndex) -> CgroupRules {
        let no_labels = BTreeMap::new();
        let mut decisions = HashMap::new();
        for pod in index.iter() {
            let ns = stores.namespaces.get(&ObjectRef::new(&pod.namespace));
            let ns_labels = ns.as_ref().and_then(|n| n.metadata.labels.as_ref()).unwrap_or(&no_labels);
            let deployment = pod
                .workload
                .as_ref()
                .filter(|w| w.kind == "Deployment")
                .and_then(|w| stores.deployments.get(&ObjectRef::new(&w.name).within(&pod.namespace)));
            let annotations = deployment.as_ref().and_then(|d| d.metadata.annotations.as_ref());
            let d = decide(pod, ns_labels, annotations, &self.targets);
            let before = self.last.get(&pod.uid).map(|(d, _)| d);
            if before != Some(&d) {
                let was = before.is_some_and(|b| b.capture);
                let (pod_name, namespace, ports) = (&pod.pod, &pod.namespace, format!("{:?}", d.ports));
                match (was, d.capture) {
                    (_, true) => info!(pod = pod_name, namespace, why = d.why, ports, "pod captured"),
                    (true, false) => info!(pod = pod_name, namespace, why = d.why, "pod no longer captured"),
                    (false, false) => {
                        tracing::debug!(pod = pod_name, namespace, why = d.why, "pod not captured")
                    }
                }
            }
            decisions.insert(pod.uid.clone(), d);
        }
        let mut last = HashMap::new();
        for pod in index.iter() {
            last.insert(pod.uid.clone(), (decisions[&pod.uid].clone(), pod.clone()));
        }
        for (uid, (d, pod)) in &self.last {
            if d.capture && !last.contains_key(uid) {
                info!(pod = pod.pod, namespace = pod.namespace, "pod no longer captured: gone");
            }
        }
        self.last = last;
        let cgroups = self.cgroup_root.as_deref().map(enforce::pod_cgroups).unwrap_or_default();
        CgroupRules::build(&cgroups, &decisions, self.targets.is_empty())
    }
}

/// Logs each pod that came to or left this node between two indexes.
fn log_changes(before: &PodIndex, after: &PodIndex) {
    for p in after.iter().filter(|p| !before.has_uid(&p.uid)) {
        info!(pod = p.pod, namespace = p.namespace, uid = p.uid, "kubernetes pod added");
    }
    for p in before.iter().filter(|p| !after.has_uid(&p.uid)) {
        info!(pod = p.pod, namespace = p.namespace, uid = p.uid, "kubernetes pod removed");
    }
}

/// Drives one reflector: every event wakes the index rebuild; errors are
/// logged as they come (the watcher retries with backoff) and so is the
/// recovery.
fn spawn_reflector<K, S>(resource: &'static str, stream: S, wake: (Arc<Notify>, Arc<[AtomicBool; 4]>, usize))
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    let (changed, listed, me) = wake;
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if failing {
                        info!(resource, "kubernetes API reachable again: watch resumed");
                        failing = false;
                    }
                    if matches!(event, watcher::Event::InitDone) {
                        tracing::debug!(resource, "kubernetes list done");
                        listed[me].store(true, Ordering::Relaxed);
                    }
                    changed.notify_one();
                }
                Err(error) => {
                    warn!(resource, error = %crate::probes::error_chain(&error), "kubernetes API error: retrying with the last known state");
                    failing = true;
                }
            }
        }
    });
}

/// A pod as the sensor keeps it: identity, labels, owners and the IDs of
/// its containers; no spec, no annotations, no managed fields.
pub fn strip_pod(pod: &mut Pod) {
    keep_labels(&mut pod.metadata);
    pod.spec = None;
    let status = pod.status.take().unwrap_or_default();
    let ids = |list: Option<Vec<ContainerStatus>>| {
        list.map(|l| {
            l.into_iter()
                .map(|c| ContainerStatus { name: c.name, container_id: c.container_id, ..Default::default() })
                .collect()
        })
    };
    pod.status = Some(PodStatus {
        container_statuses: ids(status.container_statuses),
        init_container_statuses: ids(status.init_container_statuses),
        ephemeral_container_statuses: ids(status.ephemeral_container_statuses),
        ..Default::default()
    });
}

/// Name, namespace, UID, labels and owners.
pub(super) fn keep_labels(m: &mut ObjectMeta) {
    *m = ObjectMeta {
        name: m.name.take(),
        namespace: m.namespace.take(),
        uid: m.uid.take(),
        resource_version: m.resource_version.take(),
        labels: m.labels.take(),
        owner_references: m.owner_references.take(),
        ..Default::default()
    };
}

/// Name, namespace, UID and owners.
fn keep_owners(m: &mut ObjectMeta) {
    keep_labels(m);
    m.labels = None;
}

/// Name, namespace, UID and the `ebpf.speedscale.com/` annotations.
fn keep_annotations(m: &mut ObjectMeta) {
    let annotations = m.annotations.take().map(|mut a| {
        a.retain(|k, _| k.starts_with(ANNOTATION_PREFIX));
        a
    });
    keep_owners(m);
    m.owner_references = None;
    m.annotations = annotations.filter(|a| !a.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripped_pods_keep_what_the_index_reads_only() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"a": "b"},
                "annotations": {"big": "x".repeat(1000)},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "ru", "controller": true}]},
            "spec": {"nodeName": "node1", "containers": [{"name": "app", "image": "img"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                "containerStatuses": [{"name": "app", "containerID": "containerd://abc", "image": "img",
                    "imageID": "sha", "ready": true, "restartCount": 3, "state": {"running": {}}}]}
        }))
        .unwrap();
        strip_pod(&mut pod);
        assert_eq!(
            serde_json::to_value(&pod).unwrap(),
            serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"a": "b"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "ru", "controller": true}]},
                "status": {"containerStatuses": [{"name": "app", "containerID": "containerd://abc",
                    "image": "", "imageID": "", "ready": false, "restartCount": 0}]}})
        );
    }

    #[test]
    fn deployments_keep_only_our_annotations() {
        let mut m: ObjectMeta = serde_json::from_value(serde_json::json!({
            "name": "d", "namespace": "n", "uid": "u", "labels": {"a": "b"},
            "annotations": {"ebpf.speedscale.com/capture": "true", "deployment.kubernetes.io/revision": "3"}
        }))
        .unwrap();
        keep_annotations(&mut m);
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"name": "d", "namespace": "n", "uid": "u",
                "annotations": {"ebpf.speedscale.com/capture": "true"}})
        );
    }
}

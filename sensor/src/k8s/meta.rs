//! What records say about a pod, and the index from container IDs and pod
//! UIDs to it, built from the watched objects without I/O.

use super::cgroup::{status_container_id, CgroupRef};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use std::collections::HashMap;
use std::sync::Arc;

pub use nettap_core::pod::{PodMeta, PodOf, Workload};

/// The controller among an object's owners.
pub fn controller(owners: Option<&[OwnerReference]>) -> Option<&OwnerReference> {
    owners?.iter().find(|o| o.controller == Some(true))
}

/// Container IDs and pod UIDs → pods.
#[derive(Debug, Default)]
pub struct PodIndex {
    by_container: HashMap<String, (Arc<PodMeta>, Arc<str>)>,
    by_uid: HashMap<String, Arc<PodMeta>>,
}

impl PodIndex {
    /// The index of `pods`; `replicaset_owner(namespace, name)` is the
    /// controller of a ReplicaSet (its Deployment), when it has one.
    pub fn build<'a>(
        pods: impl IntoIterator<Item = &'a Pod>,
        replicaset_owner: impl Fn(&str, &str) -> Option<Workload>,
    ) -> PodIndex {
        let mut index = PodIndex::default();
        for pod in pods {
            let m = &pod.metadata;
            let (Some(name), Some(namespace), Some(uid)) = (&m.name, &m.namespace, &m.uid) else {
                continue;
            };
            let workload = controller(m.owner_references.as_deref()).map(|o| {
                let own = Workload { kind: o.kind.clone(), name: o.name.clone() };
                match o.kind.as_str() {
                    "ReplicaSet" => replicaset_owner(namespace, &o.name).unwrap_or(own),
                    _ => own,
                }
            });
            let meta = Arc::new(PodMeta {
                pod: name.clone(),
                namespace: namespace.clone(),
                labels: m.labels.clone().unwrap_or_default(),
                workload,
                uid: uid.clone(),
            });
            if let Some(status) = &pod.status {
                let lists = [
                    &status.container_statuses,
                    &status.init_container_statuses,
                    &status.ephemeral_container_statuses,
                ];
                for c in lists.into_iter().flatten().flatten() {
                    if let Some(id) =
                        c.container_id.as_deref().map(status_container_id).filter(|id| !id.is_empty())
                    {
                        index.by_container.insert(id.to_owned(), (meta.clone(), Arc::from(c.name.as_str())));
                    }
                }
            }
            index.by_uid.insert(uid.clone(), meta);
        }
        index
    }

    /// The pod of a process in cgroup `cg`: by container ID, else by pod UID
    /// (a container not in the status yet, the pod's sandbox). A container
    /// ID of another pod than the cgroup's UID says is not believed.
    pub fn lookup(&self, cg: &CgroupRef) -> Option<PodOf> {
        if let Some((meta, name)) = cg.container_id.as_ref().and_then(|id| self.by_container.get(id)) {
            if cg.pod_uid.as_ref().is_none_or(|uid| *uid == meta.uid) {
                return Some(PodOf { meta: meta.clone(), container: Some(name.clone()) });
            }
        }
        let meta = self.by_uid.get(cg.pod_uid.as_ref()?)?;
        Some(PodOf { meta: meta.clone(), container: None })
    }

    /// Pods indexed.
    pub fn pods(&self) -> usize {
        self.by_uid.len()
    }

    /// True when the pod with this UID is indexed.
    pub fn has_uid(&self, uid: &str) -> bool {
        self.by_uid.contains_key(uid)
    }

    /// Every pod indexed.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<PodMeta>> {
        self.by_uid.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const UID1: &str = "11111111-1111-1111-1111-111111111111";
    const UID2: &str = "22222222-2222-2222-2222-222222222222";

    fn web_pod() -> Pod {
        pod(serde_json::json!({
            "metadata": {"name": "web-7d9f-abcde", "namespace": "shop", "uid": UID1,
                "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f",
                                     "uid": "r", "controller": true}]},
            "status": {"containerStatuses": [
                {"name": "app", "containerID": format!("containerd://{A}"), "image": "", "imageID": "", "ready": true, "restartCount": 0}],
                "initContainerStatuses": [
                {"name": "init", "containerID": format!("cri-o://{B}"), "image": "", "imageID": "", "ready": false, "restartCount": 0}]}
        }))
    }

    fn cg(uid: Option<&str>, id: Option<&str>) -> CgroupRef {
        CgroupRef { pod_uid: uid.map(Into::into), container_id: id.map(Into::into) }
    }

    #[test]
    fn containers_and_uids_find_the_pod_and_its_deployment() {
        let rs = |ns: &str, name: &str| {
            (ns == "shop" && name == "web-7d9f")
                .then(|| Workload { kind: "Deployment".into(), name: "web".into() })
        };
        let index = PodIndex::build([&web_pod()], rs);
        let want = PodMeta {
            pod: "web-7d9f-abcde".into(),
            namespace: "shop".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            workload: Some(Workload { kind: "Deployment".into(), name: "web".into() }),
            uid: UID1.into(),
        };
        let by_id = index.lookup(&cg(Some(UID1), Some(A))).unwrap();
        assert_eq!((&*by_id.meta, by_id.container.as_deref()), (&want, Some("app")));
        assert_eq!(index.lookup(&cg(None, Some(B))).unwrap().container.as_deref(), Some("init"));
        // The sandbox, or a container not reported yet: the pod, no container.
        let by_uid = index.lookup(&cg(Some(UID1), Some(&"c".repeat(64)))).unwrap();
        assert_eq!((&*by_uid.meta, by_uid.container), (&want, None));
        assert_eq!(index.lookup(&cg(Some(UID2), None)), None);
        assert_eq!(index.lookup(&cg(None, None)), None);
        // A container ID under another pod's cgroup is not that pod's.
        assert_eq!(index.lookup(&cg(Some(UID2), Some(A))), None);
    }

    #[test]
    fn workloads_without_a_known_deployment() {
        // The ReplicaSet unknown (or without owner): the ReplicaSet is the workload.
        let index = PodIndex::build([&web_pod()], |_, _| None);
        let w = index.lookup(&cg(Some(UID1), None)).unwrap().meta.workload.clone();
        assert_eq!(w, Some(Workload { kind: "ReplicaSet".into(), name: "web-7d9f".into() }));
        // Other controllers are named as they are; a pod without one has no workload;
        // a non-controller owner is not the workload.
        let other = |uid: &str, owners: serde_json::Value| {
            pod(
                serde_json::json!({"metadata": {"name": "p", "namespace": "n", "uid": uid, "ownerReferences": owners}}),
            )
        };
        let ss = other(
            UID1,
            serde_json::json!([{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "x"},
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "s", "controller": true}]),
        );
        let bare =
            other(UID2, serde_json::json!([{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "x"}]));
        let index = PodIndex::build([&ss, &bare], |_, _| unreachable!());
        let w = index.lookup(&cg(Some(UID1), None)).unwrap().meta.workload.clone();
        assert_eq!(w, Some(Workload { kind: "StatefulSet".into(), name: "db".into() }));
        assert_eq!(index.lookup(&cg(Some(UID2), None)).unwrap().meta.workload, None);
        assert_eq!(index.pods(), 2);
    }

    #[test]
    fn pods_without_identity_or_status_ids_are_skipped_or_found_by_uid() {
        let nameless = pod(serde_json::json!({"metadata": {"namespace": "n", "uid": UID1}}));
        let waiting = pod(serde_json::json!({"metadata": {"name": "w", "namespace": "n", "uid": UID2},
            "status": {"containerStatuses": [{"name": "app", "image": "", "imageID": "", "ready": false, "restartCount": 0}]}}));
        let index = PodIndex::build([&nameless, &waiting], |_, _| None);
        assert_eq!(index.pods(), 1);
        assert_eq!(index.lookup(&cg(Some(UID2), Some(A))).unwrap().meta.pod, "w");
    }

    #[test]
    fn serialised_as_the_contract_says() {
        let index = PodIndex::build([&web_pod()], |_, _| None);
        let v = serde_json::to_value(&*index.lookup(&cg(Some(UID1), None)).unwrap().meta).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"pod": "web-7d9f-abcde", "namespace": "shop", "labels": {"app": "web"},
                "workload": {"kind": "ReplicaSet", "name": "web-7d9f"}, "uid": UID1})
        );
    }
}

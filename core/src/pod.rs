//! What a record says about the pod of its process (Kubernetes mode). The
//! sensor builds these from the objects it watches; here they are only data.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A record's `k8s` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodMeta {
    /// Pod name.
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
    /// The pod's labels.
    pub labels: BTreeMap<String, String>,
    /// The workload that owns the pod, if any.
    pub workload: Option<Workload>,
    /// The pod's UID (tells a pod from an earlier one of the same name).
    pub uid: String,
}

/// The owning workload: a Deployment (through its ReplicaSet), StatefulSet,
/// DaemonSet, Job, a ReplicaSet of its own…
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Workload {
    /// Kind, as in the owner reference (`Deployment`, `StatefulSet`, …).
    pub kind: String,
    /// Name.
    pub name: String,
}

/// A pod as a process sees it: the pod, and the container the process is in
/// when the pod's status names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOf {
    /// The pod.
    pub meta: Arc<PodMeta>,
    /// The container's name, when its ID is in the pod's status.
    pub container: Option<Arc<str>>,
}

/// What a connection's remote address is in the cluster (a record's
/// `k8s.peer`): a pod, by its IP, or a Service, by its cluster IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A pod's IP (hostNetwork pods share their node's and are not named).
    Pod(Arc<PodMeta>),
    /// A Service's cluster IP (which pod answers is the proxy's choice).
    Service(Arc<ServiceMeta>),
}

/// A Service, as a record's `k8s.peer` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceMeta {
    /// Service name.
    pub service: String,
    /// Its namespace.
    pub namespace: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

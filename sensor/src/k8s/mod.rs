//! Kubernetes mode: which pod each process belongs to, from its cgroup and
//! the API server's view of this node's pods.
//!
//! `cgroup` reads `/proc/PID/cgroup`, `meta` builds the index from pods,
//! `watch` keeps reflectors on the API server and rebuilds the index;
//! `peers` names remote addresses (every pod's and Service's in the cluster).

pub mod cgroup;
mod cgroup_ids;
pub mod enforce;
pub mod meta;
pub mod peers;
pub mod policy;
pub mod watch;

pub use meta::{PodIndex, PodMeta, PodOf, Workload};

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Errors of Kubernetes mode.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// No node name: the sensor must know which node's pods to watch.
    #[error("Kubernetes mode needs the node's name (NODE_NAME, from the downward API, or --node-name)")]
    NoNodeName,
    /// No kubeconfig and not in a cluster.
    #[error("no Kubernetes client configuration (KUBECONFIG, ~/.kube/config or in-cluster service account)")]
    Config(#[source] kube::config::InferConfigError),
    /// The kubeconfig named could not be used.
    #[error("cannot use kubeconfig {path}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The client could not be built from the configuration.
    #[error("cannot build the Kubernetes client")]
    Client(#[source] kube::Error),
    /// The capture targets file cannot be used.
    #[error(transparent)]
    Targets(#[from] policy::TargetsError),
    /// A reflector stopped before its first list.
    #[error("the {0} reflector stopped before listing")]
    ReflectorEnded(&'static str),
}

/// What Kubernetes mode needs to start.
#[derive(Debug, Clone)]
pub struct KubernetesOptions {
    /// This node's name (`spec.nodeName` of its pods).
    pub node_name: String,
    /// A kubeconfig file; else KUBECONFIG, `~/.kube/config` or in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// How long start-up waits for the first list of every resource.
    pub sync_timeout: Duration,
    /// The capture targets (JSON: Helm's `ebpf.configuration.capture`), re-read when it changes.
    pub targets_file: Option<PathBuf>,
    /// Where the host's cgroup v2 hierarchy is (default: where it is mounted here).
    pub cgroup_root: Option<PathBuf>,
}

/// A Kubernetes client from `opts`.
pub async fn client(opts: &KubernetesOptions) -> Result<kube::Client, KubernetesError> {
    let config = match &opts.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|source| KubernetesError::Kubeconfig { path: path.clone(), source })?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|source| KubernetesError::Kubeconfig { path: path.clone(), source })?
        }
        None => kube::Config::infer().await.map_err(KubernetesError::Config)?,
    };
    kube::Client::try_from(config).map_err(KubernetesError::Client)
}

/// Process → pod, shared by the capture loop (lookups) and the reflectors
/// (index updates): a cheap handle.
#[derive(Debug, Clone)]
pub struct PodResolver {
    index: Arc<RwLock<Arc<PodIndex>>>,
    proc: PathBuf,
    /// Pod cgroups by id, for processes that have exited.
    ids: Arc<Mutex<cgroup_ids::CgroupIds>>,
    /// Remote addresses → pods and Services of the whole cluster.
    pub peers: peers::PeerResolver,
}

impl Default for PodResolver {
    fn default() -> Self {
        Self::new("/proc", None)
    }
}

impl PodResolver {
    /// A resolver reading processes' cgroups under `proc` (the host's
    /// `/proc`: the sensor runs with hostPID), and, for processes that
    /// have exited, the cgroup v2 hierarchy at `cgroups`.
    pub fn new(proc: impl Into<PathBuf>, cgroups: Option<PathBuf>) -> Self {
        let ids = Arc::new(Mutex::new(cgroup_ids::CgroupIds::new(cgroups)));
        Self { index: Arc::default(), proc: proc.into(), ids, peers: Default::default() }
    }

    /// The resolver Kubernetes mode uses: the host's /proc, and the cgroup
    /// v2 hierarchy as configured.
    pub fn for_node(opts: &KubernetesOptions) -> Self {
        let cgroups = match &opts.cgroup_root {
            Some(root) => enforce::cgroup2_under(root),
            None => enforce::cgroup2_mount(),
        };
        Self::new("/proc", cgroups)
    }

    /// The pod process `pid` runs in, if it is one of this node's known
    /// pods; `cgroup` is its cgroup id from its event (0: not known). By the
    /// id when it was seen before (no reading of /proc), else from
    /// `/proc/PID/cgroup`, else, the process having exited, from the tree.
    pub fn pod_of(&self, pid: u32, cgroup: u64) -> Option<PodOf> {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let cg = match ids.get_learnt(cgroup) {
            Some(cg) => cg,
            None => match std::fs::read_to_string(self.proc.join(pid.to_string()).join("cgroup")) {
                Ok(text) => {
                    let cg = cgroup::parse(&text);
                    ids.learn(cgroup, &cg);
                    cg
                }
                Err(e) => match ids.get(cgroup) {
                    Some(cg) => cg,
                    None => {
                        unnamed(pid, "its cgroup cannot be read (the process ended)", &e.to_string());
                        return None;
                    }
                },
            },
        };
        drop(ids);
        if cg.is_empty() {
            return None;
        }
        let found = self.snapshot().lookup(&cg);
        if found.is_none() {
            unnamed(pid, "its pod is not known yet", cg.pod_uid.as_deref().unwrap_or_default());
        }
        found
    }

    /// The index as it is now.
    pub fn snapshot(&self) -> Arc<PodIndex> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the index.
    pub fn set(&self, index: PodIndex) {
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
    }

    /// Pods in the index.
    pub fn pods(&self) -> usize {
        self.snapshot().pods()
    }
}

/// Says (the first [`UNNAMED_LOGGED`] times) that a process's records go
/// without `k8s`: a process that ended before the sensor looked it up, or a
/// pod the API server has not told of yet.
fn unnamed(pid: u32, why: &str, detail: &str) {
    static LOGGED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    if LOGGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < UNNAMED_LOGGED {
        tracing::info!(pid, why, detail, "process not named by pod");
    }
}

/// How many unnamed processes are logged.
const UNNAMED_LOGGED: u32 = 50;

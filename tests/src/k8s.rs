//! A real Kubernetes control plane for the tests and a simulated node.
//!
//! `ApiServer` runs etcd and kube-apiserver (built by `ci/install-k8s.sh`)
//! on loopback with their own ports, certificates, service-account key and
//! an admin token, and writes a kubeconfig for the sensor. Objects are made
//! through the API with curl, as a user would; no controller runs, so the
//! test makes the ReplicaSets a Deployment controller would and sets pod
//! status as a kubelet would. `PodCgroup` puts processes into cgroups shaped
//! as the kubelet and the container runtime name them.

use crate::{Pki, TIMEOUT};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory `ci/install-k8s.sh` builds etcd and kube-apiserver into.
pub fn k8s_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("NETTAP_K8S_BIN").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(&std::env::var_os("HOME").expect("HOME is not set")).join(".cache/nettap/k8s")
    });
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run ci/install.sh (it builds etcd and kube-apiserver)",
        path.display()
    );
    path
}

/// 64 random hex digits, as container runtimes name containers.
pub fn container_id() -> String {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// etcd and kube-apiserver on loopback; both killed on drop.
pub struct ApiServer {
    /// Certificates, keys, data, logs.
    pub dir: tempfile::TempDir,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// A kubeconfig with the admin token, for the sensor.
    pub kubeconfig: PathBuf,
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    token: String,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    args: Vec<String>,
}

const ADMIN_TOKEN: &str = "nettap-e2e-admin-token";

impl ApiServer {
    /// Starts etcd and kube-apiserver and waits until the API server is ready.
    pub fn start() -> ApiServer {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let pki = Pki::new(d, &[]);
        let openssl = |args: &[&str]| {
            let out =
                Command::new("openssl").args(args).current_dir(d).output().expect("openssl is required");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "sa.key"]);
        openssl(&["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        std::fs::write(d.join("tokens.csv"), format!("{ADMIN_TOKEN},nettap-admin,1,\"system:masters\"\n"))
            .unwrap();

        let (client, peer, secure) = (crate::free_port(), crate::free_port(), crate::free_port());
        let etcd_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let etcd = Command::new(k8s_bin("etcd"))
            .args(["--name", "e2e", "--data-dir"])
            .arg(d.join("etcd"))
            .args(["--listen-client-urls", &etcd_url, "--advertise-client-urls", &etcd_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("e2e={peer_url}"), "--log-level", "error"])
            // A test cluster: no fsync (the machine is shared and slow enough).
            .arg("--unsafe-no-fsync")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("etcd.log")).unwrap())
            .spawn()
            .expect("cannot start etcd");

        let p = |f: &str| d.join(f).display().to_string();
        let args: Vec<String> = [
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // Loopback cannot be the `kubernetes` service endpoint.
            "--endpoint-reconciler-type=none".into(),
            format!("--secure-port={secure}"),
            format!("--tls-cert-file={}", pki.server_cert.display()),
            format!("--tls-private-key-file={}", pki.server_key.display()),
            format!("--cert-dir={}", p("certs")),
            format!("--token-auth-file={}", p("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            // No controller manager makes the `default` service accounts.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--enable-priority-and-fairness=false".into(),
            "--profiling=false".into(),
        ]
        .into();
        let kubeconfig = d.join("kubeconfig");
        let url = format!("https://127.0.0.1:{secure}");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {url}\n    \
                 certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\n\
                 contexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: admin\ncurrent-context: e2e\n",
                ca = pki.ca.display()
            ),
        )
        .unwrap();
        let mut s = ApiServer {
            url,
            kubeconfig,
            ca: pki.ca.clone(),
            token: ADMIN_TOKEN.into(),
            etcd: Some(etcd),
            apiserver: None,
            args,
            dir,
        };
        s.start_apiserver();
        s
    }

    /// Starts kube-apiserver (again) and waits for `/readyz`.
    pub fn start_apiserver(&mut self) {
        assert!(self.apiserver.is_none(), "the API server runs already");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        self.apiserver = Some(
            Command::new(k8s_bin("kube-apiserver"))
                .args(&self.args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("cannot start kube-apiserver"),
        );
        // The first start creates the RBAC roles and the system namespaces.
        let start = Instant::now();
        loop {
            if let Some(st) = self.apiserver.as_mut().unwrap().try_wait().unwrap() {
                panic!("kube-apiserver exited ({st}):\n{}", self.log_tail());
            }
            if self.etcd.as_mut().unwrap().try_wait().unwrap().is_some() {
                panic!(
                    "etcd exited:\n{}",
                    std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
                );
            }
            if matches!(self.try_request("GET", "/readyz", None), Some((200, _))) {
                return;
            }
            assert!(
                start.elapsed() < 2 * TIMEOUT,
                "kube-apiserver not ready in {:?}:\n{}",
                2 * TIMEOUT,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops kube-apiserver at once, as a crash would (etcd keeps the state;
    /// a graceful stop waits for the clients' watches to end).
    pub fn stop_apiserver(&mut self) {
        let mut child = self.apiserver.take().expect("the API server is not running");
        let _ = child.kill();
        crate::wait_child(&mut child, "kube-apiserver after SIGKILL");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("kube-apiserver.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// One API request with curl: the status and the JSON answer (`Null`
    /// when not JSON); `None` when nothing answered.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &Value)>,
    ) -> Option<(u16, Value)> {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&self.ca)
            .args(["-H", &format!("Authorization: Bearer {}", self.token), "-X", method])
            .args(["-w", "\n%{http_code}", &format!("{}{path}", self.url)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((content_type, _)) = body {
            c.args(["-H", &format!("Content-Type: {content_type}"), "--data-binary", "@-"]);
        }
        let mut child = c.spawn().expect("curl is required");
        let mut stdin = child.stdin.take().unwrap();
        if let Some((_, v)) = body {
            stdin.write_all(v.to_string().as_bytes()).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (answer, code) = text.rsplit_once('\n')?;
        let code: u16 = code.trim().parse().ok().filter(|&c| c != 0)?;
        Some((code, serde_json::from_str(answer).unwrap_or(Value::Null)))
    }

    /// A request that must answer with a 2xx status; its JSON answer.
    pub fn request(&self, method: &str, path: &str, body: Option<(&str, &Value)>) -> Value {
        match self.try_request(method, path, body) {
            Some((code, v)) if (200..300).contains(&code) => v,
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    /// Creates an object (POST to its collection); the object as stored.
    pub fn create(&self, collection: &str, object: &Value) -> Value {
        self.request("POST", collection, Some(("application/json", object)))
    }

    /// Creates `objects` in `collection` with one curl per 100 (one
    /// connection each), checking that each was created.
    pub fn create_many(&self, collection: &str, objects: &[Value]) {
        let requests: Vec<(String, &Value)> = objects.iter().map(|o| (collection.to_string(), o)).collect();
        self.bulk("POST", "application/json", &requests, "201");
    }

    /// Sets many pods' status as `pod_running` does, one curl per 100.
    pub fn pods_running(&self, pods: &[(&Value, String)]) {
        let patches: Vec<(String, Value)> = pods.iter().map(|(p, id)| Self::running_patch(p, id)).collect();
        let requests: Vec<(String, &Value)> = patches.iter().map(|(path, v)| (path.clone(), v)).collect();
        self.bulk("PATCH", "application/merge-patch+json", &requests, "200");
    }

    /// `method` requests (path, JSON body) with one curl per 100 (one
    /// connection each), checking that each answered `code`.
    fn bulk(&self, method: &str, content_type: &str, requests: &[(String, &Value)], code: &str) {
        for chunk in requests.chunks(100) {
            let dir = tempfile::tempdir().unwrap();
            let mut c = Command::new("curl");
            c.args(["-sS", "--max-time", "120"]);
            for (i, (path, o)) in chunk.iter().enumerate() {
                let f = dir.path().join(i.to_string());
                std::fs::write(&f, o.to_string()).unwrap();
                if i > 0 {
                    c.arg("--next");
                }
                c.arg("--cacert")
                    .arg(&self.ca)
                    .args(["-X", method])
                    .args(["-H", &format!("Authorization: Bearer {}", self.token)])
                    .args([
                        "-H",
                        &format!("Content-Type: {content_type}"),
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}\n",
                    ])
                    .arg("--data-binary")
                    .arg(format!("@{}", f.display()))
                    .arg(format!("{}{path}", self.url));
            }
            let out = c.output().expect("curl is required");
            let codes = String::from_utf8_lossy(&out.stdout);
            assert_eq!(codes.lines().filter(|l| *l == code).count(), chunk.len(), "{codes}");
        }
    }

    /// A JSON merge patch of an object (or subresource).
    pub fn merge_patch(&self, path: &str, patch: &Value) -> Value {
        self.request("PATCH", path, Some(("application/merge-patch+json", patch)))
    }

    /// Deletes an object, at once.
    pub fn delete(&self, path: &str) {
        self.request("DELETE", path, Some(("application/json", &json!({"gracePeriodSeconds": 0}))));
    }

    /// Creates namespace `name` with `labels`.
    pub fn namespace(&self, name: &str, labels: Value) -> Value {
        self.create("/api/v1/namespaces", &json!({"metadata": {"name": name, "labels": labels}}))
    }

    /// Creates Deployment `ns/name` whose pods carry `labels`, and the
    /// ReplicaSet `name-hash` its controller would make; returns both.
    pub fn deployment(&self, ns: &str, name: &str, labels: &Value, annotations: Value) -> (Value, Value) {
        let template = json!({"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}});
        let d = self.create(
            &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
            &json!({"metadata": {"name": name, "labels": labels, "annotations": annotations},
                "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}}),
        );
        let hash = "5d8f7c9b6";
        let mut rs_labels = labels.clone();
        rs_labels["pod-template-hash"] = hash.into();
        let mut rs_template = template.clone();
        rs_template["metadata"]["labels"] = rs_labels.clone();
        let rs = self.create(
            &format!("/apis/apps/v1/namespaces/{ns}/replicasets"),
            &json!({"metadata": {"name": format!("{name}-{hash}"), "labels": rs_labels,
                    "ownerReferences": [owner(&d, "apps/v1", "Deployment")]},
                "spec": {"replicas": 1, "selector": {"matchLabels": rs_labels}, "template": rs_template}}),
        );
        (d, rs)
    }

    /// Creates pod `ns/name` on `node` with `labels`, owned by `owner`
    /// (apiVersion, kind, object) if given, with one container `app`.
    pub fn pod(
        &self,
        ns: &str,
        name: &str,
        node: &str,
        labels: &Value,
        owned_by: Option<(&str, &str, &Value)>,
    ) -> Value {
        self.pod_with(ns, name, node, labels, owned_by, json!({}))
    }

    /// `pod` with more `spec` fields (`hostNetwork`…).
    pub fn pod_with(
        &self,
        ns: &str,
        name: &str,
        node: &str,
        labels: &Value,
        owned_by: Option<(&str, &str, &Value)>,
        spec: Value,
    ) -> Value {
        let owners: Vec<Value> = owned_by.map(|(api, kind, o)| owner(o, api, kind)).into_iter().collect();
        let mut full =
            json!({"nodeName": node, "containers": [{"name": "app", "image": "registry.invalid/app:1"}]});
        for (k, v) in spec.as_object().unwrap() {
            full[k] = v.clone();
        }
        self.create(
            &format!("/api/v1/namespaces/{ns}/pods"),
            &json!({"metadata": {"name": name, "labels": labels, "ownerReferences": owners}, "spec": full}),
        )
    }

    /// Creates a StatefulSet or DaemonSet (`kind`) `ns/name` whose pods carry `labels`.
    pub fn workload(&self, kind: &str, ns: &str, name: &str, labels: &Value) -> Value {
        let template = json!({"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}});
        let mut spec = json!({"selector": {"matchLabels": labels}, "template": template});
        let collection = match kind {
            "StatefulSet" => {
                spec["serviceName"] = name.into();
                "statefulsets"
            }
            "DaemonSet" => "daemonsets",
            other => panic!("no {other} here"),
        };
        self.create(
            &format!("/apis/apps/v1/namespaces/{ns}/{collection}"),
            &json!({"metadata": {"name": name}, "spec": spec}),
        )
    }

    /// Sets a pod's status as its kubelet would once container `app` runs
    /// as `runtime://id` (status subresource).
    pub fn pod_running(&self, pod: &Value, container_id: &str) -> Value {
        let (path, patch) = Self::running_patch(pod, container_id);
        self.merge_patch(&path, &patch)
    }

    /// The status subresource's path and the patch `pod_running` sends.
    fn running_patch(pod: &Value, container_id: &str) -> (String, Value) {
        let (ns, name) =
            (pod["metadata"]["namespace"].as_str().unwrap(), pod["metadata"]["name"].as_str().unwrap());
        (
            format!("/api/v1/namespaces/{ns}/pods/{name}/status"),
            json!({"status": {"phase": "Running", "containerStatuses": [{
                "name": "app", "image": "registry.invalid/app:1", "imageID": "", "ready": true, "restartCount": 0,
                "started": true, "containerID": container_id, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}}),
        )
    }
}

/// A container runtime: the systemd scope prefix of its containers' cgroups
/// and the scheme of their IDs in the pod status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// containerd: `cri-containerd-<ID>.scope`, `containerd://<ID>`.
    Containerd,
    /// CRI-O: `crio-<ID>.scope`, `cri-o://<ID>`.
    CriO,
    /// Docker (cri-dockerd): `docker-<ID>.scope`, `docker://<ID>`.
    Docker,
}

impl Runtime {
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Runtime::Containerd => ("cri-containerd", "containerd"),
            Runtime::CriO => ("crio", "cri-o"),
            Runtime::Docker => ("docker", "docker"),
        }
    }
}

/// A pod of the simulated node: its object in the API server (status set as
/// running) and its container's cgroup.
pub struct SimPod {
    /// The pod as the API server answered the status update.
    pub object: Value,
    /// The container's ID.
    pub container_id: String,
    /// The container's cgroup.
    pub cgroup: PodCgroup,
}

impl SimPod {
    /// Creates the pod (`spec` adds to its spec), its container's cgroup as
    /// `driver` and `runtime` would name it, and marks it running.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        api: &ApiServer,
        ns: &str,
        name: &str,
        node: &str,
        labels: &Value,
        owned_by: Option<(&str, &str, &Value)>,
        spec: Value,
        (driver, runtime): (Driver, Runtime),
    ) -> SimPod {
        let pod = api.pod_with(ns, name, node, labels, owned_by, spec);
        let id = container_id();
        let (scope, scheme) = runtime.names();
        let cgroup = PodCgroup::new(driver, "besteffort", uid(&pod), scope, &id);
        let object = api.pod_running(&pod, &format!("{scheme}://{id}"));
        SimPod { object, container_id: id, cgroup }
    }

    /// The `k8s` object records of this pod's container carry.
    pub fn record_k8s(&self, workload: Option<(&str, &str)>) -> Value {
        let m = &self.object["metadata"];
        json!({"pod": m["name"], "namespace": m["namespace"], "labels": m["labels"],
            "workload": workload.map(|(kind, name)| json!({"kind": kind, "name": name})),
            "uid": m["uid"], "container": "app"})
    }
}

/// An owner reference to `o`, as its controller.
pub fn owner(o: &Value, api_version: &str, kind: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": o["metadata"]["name"], "uid": o["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true})
}

/// The `metadata.uid` of an object.
pub fn uid(o: &Value) -> &str {
    o["metadata"]["uid"].as_str().unwrap()
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        for c in [self.apiserver.take(), self.etcd.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How the kubelet names cgroups (its cgroup driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<UID_>.slice/<runtime>-<ID>.scope`.
    Systemd,
    /// `kubepods/<qos>/pod<UID>/<ID>`.
    Cgroupfs,
}

/// A container's cgroup as the kubelet and runtime make it, in the cgroup v2
/// hierarchy; processes started with `enter` run in it. Removed on drop
/// (what is left in it is moved to the root first).
pub struct PodCgroup {
    root: PathBuf,
    created: Vec<PathBuf>,
    /// The container's cgroup directory.
    pub leaf: PathBuf,
}

/// Where the cgroup v2 hierarchy is mounted.
pub fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split(' ').next() == Some("cgroup2")).then(|| PathBuf::from(pre.split(' ').nth(4).unwrap()))
        })
        .expect("no cgroup v2 hierarchy is mounted: the simulated node needs one")
}

impl PodCgroup {
    /// The cgroup of container `container_id` of pod `pod_uid` (QoS class
    /// `besteffort` or `burstable`), made by `runtime` (`cri-containerd`,
    /// `crio`, `docker`: the systemd scope's prefix).
    pub fn new(driver: Driver, qos: &str, pod_uid: &str, runtime: &str, container_id: &str) -> PodCgroup {
        let root = cgroup2_root();
        let parts: Vec<String> = match driver {
            Driver::Systemd => vec![
                "kubepods.slice".into(),
                format!("kubepods-{qos}.slice"),
                format!("kubepods-{qos}-pod{}.slice", pod_uid.replace('-', "_")),
                format!("{runtime}-{container_id}.scope"),
            ],
            Driver::Cgroupfs => {
                vec!["kubepods".into(), qos.into(), format!("pod{pod_uid}"), container_id.into()]
            }
        };
        let mut created = Vec::new();
        let mut dir = root.clone();
        for p in parts {
            dir.push(p);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                created.push(dir.clone());
            }
        }
        PodCgroup { root, created, leaf: dir }
    }

    /// Makes `cmd`'s process move itself into this cgroup before it execs.
    pub fn enter<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let procs =
            std::ffi::CString::new(self.leaf.join("cgroup.procs").into_os_string().into_encoded_bytes())
                .unwrap();
        // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if ok {
                    Ok(())
                } else {
                    Err(err)
                }
            })
        }
    }

    /// Moves a running process into this cgroup.
    pub fn add(&self, pid: u32) {
        std::fs::write(self.leaf.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.leaf.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
        }
        for dir in self.created.iter().rev() {
            // A parent another test still uses stays.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

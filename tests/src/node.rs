//! The real node of `ci/node.sh`: etcd, the control plane, containerd and a
//! kubelet on this host, with charts/nettap installed from images built of
//! this checkout's binaries. `Node::up` brings it up (a node left by an
//! earlier run is taken down first), drop takes it down. Objects are made
//! and read with kubectl, records read from the sensor's log as a user
//! reads them (`kubectl logs`).

use crate::k8s::k8s_bin;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The containerd socket of the node (ci/node.sh).
const CONTAINERD: &str = "/run/nettap-node/containerd.sock";

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A running node with nettap installed; taken down on drop.
pub struct Node {
    /// The admin kubeconfig `ci/node.sh up` printed.
    pub kubeconfig: PathBuf,
}

/// Where the chart's sensor keeps its records on the node (values.yaml `sensor.records.dir`).
const RECORDS_DIR: &str = "/var/lib/nettap/records";

impl Node {
    /// `bash ci/node.sh up` with the images made of the binaries under test.
    pub fn up() -> Node {
        // Records of an earlier run are not this run's.
        let _ = std::fs::remove_dir_all(RECORDS_DIR);
        let bins = crate::nettap_bin().parent().unwrap().to_path_buf();
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(repo().join("ci/node.sh"))
            .arg("up")
            .env("NETTAP_BIN_DIR", &bins)
            .stderr(Stdio::inherit())
            .output()
            .expect("bash runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            // What it started is not left running.
            down();
            panic!("ci/node.sh up failed ({}):\n{stdout}", out.status);
        }
        let kubeconfig = PathBuf::from(stdout.lines().last().expect("ci/node.sh up printed nothing").trim());
        assert!(kubeconfig.is_file(), "ci/node.sh up's last line is not a kubeconfig: {stdout}");
        eprintln!("node up in {:.1} s", started.elapsed().as_secs_f64());
        Node { kubeconfig }
    }

    /// `kubectl ARGS` against the node, with `stdin` when given.
    pub fn kubectl_with(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new(k8s_bin("kubectl"));
        c.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("kubectl runs");
        let mut pipe = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            pipe.write_all(s.as_bytes()).unwrap();
        }
        drop(pipe);
        child.wait_with_output().unwrap()
    }

    /// `kubectl ARGS`, which must succeed; its standard output.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_with(args, None);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kubectl get ARGS -o json`.
    pub fn get(&self, args: &[&str]) -> Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a)).unwrap()
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) {
        let out = self.kubectl_with(&["apply", "-f", "-"], Some(yaml));
        assert!(out.status.success(), "kubectl apply: {}\n{yaml}", String::from_utf8_lossy(&out.stderr));
    }

    /// Imports an image archive into the node's containerd (the kubelet's namespace).
    pub fn load_image(&self, archive: &Path) {
        let out = Command::new(k8s_bin("ctr"))
            .args(["--address", CONTAINERD, "-n", "k8s.io", "images", "import"])
            .arg(archive)
            .output()
            .expect("ctr runs");
        assert!(out.status.success(), "ctr images import: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Waits (bounded) until `f` gives `Some`.
    pub fn wait<T>(&self, what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The records the sensor DaemonSet's pod has written so far: the
    /// chart's default store on the node (`records-<seq>.jsonl`, 0600, in
    /// a 0700 directory), read as root on the node as a user would; the
    /// container log holds only the sensor's own lines.
    pub fn sensor_records(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(RECORDS_DIR)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        files.sort();
        files
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f).unwrap_or_default().lines().map(String::from).collect::<Vec<_>>()
            })
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .filter(|v| v.get("kind").is_some())
            .collect()
    }
}

/// `bash ci/node.sh down`; whether it succeeded.
fn down() -> bool {
    let st = Command::new("bash").arg(repo().join("ci/node.sh")).arg("down").status();
    matches!(st, Ok(s) if s.success())
}

impl Drop for Node {
    fn drop(&mut self) {
        // To look at a failed run's node: `bash ci/node.sh down` afterwards.
        if std::env::var_os("NETTAP_NODE_KEEP").is_some() {
            eprintln!("NETTAP_NODE_KEEP: the node stays up (kubeconfig {})", self.kubeconfig.display());
            return;
        }
        if !down() && !std::thread::panicking() {
            panic!("ci/node.sh down failed");
        }
    }
}

/// The host pid of the process in container `container_id` (the runtime's
/// ID, as in the pod's status after `containerd://`) whose command line
/// holds `word`.
pub fn container_pid(container_id: &str, word: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (cgroup.contains(container_id) && String::from_utf8_lossy(&cmdline).contains(word)).then_some(pid)
    })
}

/// The java binary of the Java workload image.
pub const JAVA: &str = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java";

/// A workload image `docker.io/nettap/test-NAME:1` on the `cc` base (glibc,
/// OpenSSL, CA certificates): the files of the machine's Debian packages
/// `debs` and `files` (host path, image path), started as `entrypoint`.
/// Written to `dir`/NAME.tar without a daemon or registry (ci/node/image.py).
fn workload_image(
    dir: &Path,
    name: &str,
    files: &[(PathBuf, &str)],
    debs: &[&str],
    entrypoint: &str,
) -> PathBuf {
    let out = dir.join(format!("{name}.tar"));
    let mut c = Command::new("python3");
    c.arg(repo().join("ci/node/image.py")).args(["files", "cc", &format!("docker.io/nettap/test-{name}:1")]);
    c.arg(&out);
    for (src, dest) in files {
        c.arg(format!("{}={dest}", src.display()));
    }
    for deb in debs {
        c.args(["--deb", deb]);
    }
    c.args(["--entrypoint", &format!(r#"["{entrypoint}"]"#)]);
    let st = c.status().expect("python3 runs");
    assert!(st.success(), "ci/node/image.py failed for the {name} image");
    out
}

/// A Java image for workloads (`docker.io/nettap/test-java:1`): the
/// machine's OpenJDK 17 runtime with the java-testapps jar at
/// /app/jdk-peers.jar.
pub fn java_image(dir: &Path) -> PathBuf {
    let jar = crate::jvm::testapps_jar();
    workload_image(dir, "java", &[(jar, "/app/jdk-peers.jar")], &["openjdk-17-jre-headless", "zlib1g"], JAVA)
}

/// A Python image for workloads (`docker.io/nettap/test-python:1`): the
/// machine's Python 3.11 (OpenSSL from the base), with the tests' peer
/// programs under /app.
pub fn python_image(dir: &Path) -> PathBuf {
    let files =
        ["exchange.py", "http_peer.py", "node_load.py"].map(|p| (crate::program(p), ["/app/", p].concat()));
    let files: Vec<(PathBuf, &str)> = files.iter().map(|(src, dest)| (src.clone(), dest.as_str())).collect();
    let debs = [
        "python3.11-minimal",
        "libpython3.11-minimal",
        "libpython3.11-stdlib",
        "libexpat1",
        "zlib1g",
        "libffi8",
        "libbz2-1.0",
        "liblzma5",
        "libuuid1",
    ];
    workload_image(dir, "python", &files, &debs, "/usr/bin/python3.11")
}

/// The Go peer in the Go workload image.
const GO_PEER: &str = "/app/tlspeer";

/// A Go image for workloads (`docker.io/nettap/test-go:1`): the Go TLS
/// tests' HTTPS server and client (tests/programs/go/tlspeer), stripped
/// (`-ldflags=-s -w`, as the Go TLS tests build it: the build is cached).
pub fn go_image(dir: &Path) -> PathBuf {
    let bin = dir.join("tlspeer");
    crate::go_build(&bin, &["-ldflags=-s -w"], &[]);
    workload_image(dir, "go", &[(bin, GO_PEER)], &[], GO_PEER)
}

/// A Node.js image for workloads (`docker.io/nettap/test-node:1`): the
/// machine's `node` (OpenSSL linked in statically) and the tests'
/// node_https.js at /app.
pub fn node_image(dir: &Path) -> PathBuf {
    let node = which("node").expect("the Node.js workload image needs `node` (Node.js 20) on PATH");
    let files = [(node, "/usr/bin/node"), (crate::program("node_https.js"), "/app/node_https.js")];
    workload_image(dir, "node", &files, &[], "/usr/bin/node")
}

/// A curl image for workloads (`docker.io/nettap/test-curl:1`): Debian's
/// curl and the libraries it loads.
pub fn curl_image(dir: &Path) -> PathBuf {
    let debs = [
        "curl",
        "libcurl4",
        "libbrotli1",
        "libffi8",
        "libgmp10",
        "libgnutls30",
        "libgssapi-krb5-2",
        "libhogweed6",
        "libidn2-0",
        "libk5crypto3",
        "libkrb5-3",
        "libkrb5support0",
        "libldap-2.5-0",
        "libnettle8",
        "libnghttp2-14",
        "libp11-kit0",
        "libpsl5",
        "librtmp1",
        "libsasl2-2",
        "libssh2-1",
        "libtasn1-6",
        "libunistring2",
        "libzstd1",
        "libcom-err2",
        "libkeyutils1",
        "zlib1g",
    ];
    workload_image(dir, "curl", &[], &debs, "/usr/bin/curl")
}

/// `name`'s path on PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

//! The chart under test and the `helm` that ci/install.sh builds.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `$NETTAP_HELM`, else the cached build of ci/install.sh.
pub fn helm_bin() -> PathBuf {
    let path = std::env::var_os("NETTAP_HELM").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/nettap/helm/v3.22.0-k1.37/helm")
    });
    assert!(path.exists(), "helm missing at {} (ci/install.sh builds it)", path.display());
    path
}

/// `charts/nettap`.
pub fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/nettap")
}

/// `helm ARGS` with its caches and configuration in `home` (nothing of the
/// user's), and `--kubeconfig` when given.
pub fn helm(home: &Path, kubeconfig: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(helm_bin());
    c.args(args);
    if let Some(k) = kubeconfig {
        c.arg("--kubeconfig").arg(k);
    }
    c.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("helm runs")
}

/// The objects of a multi-document YAML stream (`helm template` output), as JSON.
pub fn yaml_objects(yaml: &[u8]) -> Vec<Value> {
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import sys, yaml, json; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with PyYAML (python3-yaml) is required");
    std::io::Write::write_all(py.stdin.as_mut().unwrap(), yaml).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success(), "not YAML");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `helm template tap charts/nettap --namespace nettap EXTRA`, as JSON objects.
pub fn template(home: &Path, kubeconfig: Option<&Path>, extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", "tap", chart.to_str().unwrap(), "--namespace", "nettap"];
    args.extend_from_slice(extra);
    let out = helm(home, kubeconfig, &args);
    assert!(out.status.success(), "helm template failed:\n{}", String::from_utf8_lossy(&out.stderr));
    yaml_objects(&out.stdout)
}

//! The chart and the injector on the real API server (etcd + kube-apiserver
//! of `nettap_e2e::k8s`): `helm install` creates every object, each rendered
//! object passes the server's strict validation, a pod is created while the
//! installed webhook has no endpoint (failurePolicy Ignore); and with the
//! injector running locally, the API server calls it: a Java pod comes back
//! mutated exactly once, a non-Java and an opted-out pod come back
//! untouched, and garbage sent to the injector gets a 400 while it keeps
//! serving the API server.

use nettap_e2e::helm::{chart, helm, template};
use nettap_e2e::k8s::ApiServer;
use nettap_e2e::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn run_helm(api: &ApiServer, args: &[&str]) -> String {
    let out = helm(&api.dir.path().join("helm"), Some(&api.kubeconfig), args);
    assert!(out.status.success(), "helm {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn rendered(api: &ApiServer, extra: &[&str]) -> Vec<Value> {
    template(&api.dir.path().join("helm"), Some(&api.kubeconfig), extra)
}

/// The API path of an object's collection.
fn collection(o: &Value) -> String {
    let api = o["apiVersion"].as_str().unwrap();
    let plural = match o["kind"].as_str().unwrap() {
        "ServiceAccount" => "serviceaccounts",
        "Secret" => "secrets",
        "ConfigMap" => "configmaps",
        "Service" => "services",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "DaemonSet" => "daemonsets",
        "Deployment" => "deployments",
        "MutatingWebhookConfiguration" => "mutatingwebhookconfigurations",
        other => panic!("no path for {other}"),
    };
    let base = if api == "v1" { "/api/v1".to_string() } else { format!("/apis/{api}") };
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{base}/namespaces/{ns}/{plural}"),
        None => format!("{base}/{plural}"),
    }
}

#[test]
fn helm_install_creates_every_object_and_each_passes_strict_validation() {
    let api = ApiServer::start();
    api.namespace("nettap", json!({}));
    for values in [
        vec![],
        vec!["-f", "../charts/nettap/examples/targets.yaml", "--set", "injector.certManager.enabled=false"],
    ] {
        let values: Vec<String> = values
            .iter()
            .map(|v| {
                if v.starts_with("../") {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join(v).display().to_string()
                } else {
                    v.to_string()
                }
            })
            .collect();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        for o in rendered(&api, &values) {
            let path = format!("{}?dryRun=All&fieldValidation=Strict", collection(&o));
            let (code, answer) = api.try_request("POST", &path, Some(("application/json", &o))).unwrap();
            assert!(
                (200..300).contains(&code),
                "{} {} refused ({code}): {answer}",
                o["kind"],
                o["metadata"]["name"]
            );
        }
    }

    let out = run_helm(&api, &["install", "tap", chart().to_str().unwrap(), "--namespace", "nettap"]);
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(out.contains("grep \"probe attached\""), "NOTES.txt says how to check: {out}");
    for o in rendered(&api, &[]) {
        let name = o["metadata"]["name"].as_str().unwrap();
        let stored = api.request("GET", &format!("{}/{name}", collection(&o)), None);
        assert_eq!(stored["metadata"]["labels"]["app.kubernetes.io/instance"], "tap", "{} {name}", o["kind"]);
    }
    let ds = api.request("GET", "/apis/apps/v1/namespaces/nettap/daemonsets/tap-nettap-sensor", None);
    let caps = &ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"];
    assert_eq!(caps, &json!(["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE"]));

    // The installed webhook has no endpoint here (no kubelet runs the
    // injector): with failurePolicy Ignore a Java pod is still created.
    api.namespace("shop", json!({}));
    let pod = api.create(
        "/api/v1/namespaces/shop/pods",
        &json!({"metadata": {"name": "orders"}, "spec": {"containers": [{"name": "app", "image": "eclipse-temurin:21", "command": ["java", "-jar", "app.jar"]}]}}),
    );
    assert!(pod["spec"].get("initContainers").is_none(), "created, untouched: {pod}");
}

struct Injector(Child);

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn injector_bin() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/nettap-injector");
    assert!(path.exists(), "{} missing: cargo build -p nettap-injector", path.display());
    path
}

fn java_pod(name: &str, annotations: Value) -> Value {
    json!({"metadata": {"name": name, "annotations": annotations}, "spec": {"containers": [
        {"name": "app", "image": "eclipse-temurin:21-jre", "command": ["java", "-jar", "/app/app.jar"],
         "env": [{"name": "JAVA_TOOL_OPTIONS", "value": "-Xss1m"}]},
        {"name": "proxy", "image": "envoyproxy/envoy:v1.31"}]}})
}

#[test]
fn the_api_server_calls_the_injector_and_java_pods_come_back_mutated_once() {
    let api = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &[]);
    let port = free_port();
    let mut injector = Injector(
        Command::new(injector_bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--agent-image",
                "example/nettap-injector:1",
            ])
            .arg("--tls-cert")
            .arg(&pki.server_cert)
            .arg("--tls-key")
            .arg(&pki.server_key)
            .stderr(std::fs::File::create(dir.path().join("injector.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let ca = std::fs::read(&pki.ca).unwrap();
    use base64::Engine as _;
    api.namespace("shop", json!({"nettap-e2e": "inject"}));
    // failurePolicy Fail: a pod created without a call would be an error here.
    api.create(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        &json!({"metadata": {"name": "nettap-e2e"}, "webhooks": [{
            "name": "java-agent.nettap.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Fail", "timeoutSeconds": 10,
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate"),
                             "caBundle": base64::engine::general_purpose::STANDARD.encode(&ca)},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"nettap-e2e": "inject"}}}]}),
    );
    // The API server picks up a new webhook configuration within a second or
    // so: dry-run creations until one is mutated.
    let start = Instant::now();
    loop {
        let (code, p) = api
            .try_request(
                "POST",
                "/api/v1/namespaces/shop/pods?dryRun=All",
                Some(("application/json", &java_pod("probe", json!({})))),
            )
            .unwrap();
        if code == 201 && p["spec"].get("initContainers").is_some() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the webhook was never called: {code} {p}");
        assert!(injector.0.try_wait().unwrap().is_none(), "the injector exited");
        std::thread::sleep(Duration::from_millis(250));
    }

    let pod = api.create("/api/v1/namespaces/shop/pods", &java_pod("orders", json!({})));
    let spec = &pod["spec"];
    let inits: Vec<&str> =
        spec["initContainers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(inits, ["nettap-agent-init"], "{pod}");
    assert_eq!(spec["initContainers"][0]["image"], "example/nettap-injector:1");
    let option = "-agentpath:/nettap-agent/libnettap_agent.so";
    assert_eq!(
        spec["containers"][0]["env"],
        json!([{"name": "JAVA_TOOL_OPTIONS", "value": format!("-Xss1m {option}")}])
    );
    assert_eq!(pod.to_string().matches("-agentpath:").count(), 1, "exactly once: {pod}");
    assert!(spec["containers"][1].get("env").is_none(), "envoy is not Java");
    let volumes: Vec<&str> =
        spec["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(volumes, ["nettap-agent"], "nothing of the node");
    assert!(!pod.to_string().contains("hostPath"), "{pod}");
    assert_eq!(pod["metadata"]["annotations"]["ebpf.speedscale.com/java-agent-injected"], "true");

    for (name, body) in [
        (
            "web",
            json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}),
        ),
        ("batch", java_pod("batch", json!({"ebpf.speedscale.com/inject-java": "false"}))),
    ] {
        let p = api.create("/api/v1/namespaces/shop/pods", &body);
        assert!(p["spec"].get("initContainers").is_none(), "{name} untouched: {p}");
        assert!(!p.to_string().contains("agentpath"), "{name}");
    }

    // Garbage straight at the injector: a 400 with the reason, and it keeps serving.
    for garbage in ["{\"kind\": 1", "not json", "{}"] {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&pki.ca)
            .args(["-w", "\n%{http_code}", "-H", "Content-Type: application/json", "--data-binary", garbage])
            .arg(format!("https://127.0.0.1:{port}/mutate"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.ends_with("\n400") && text.contains("AdmissionReview"), "{garbage}: {text}");
    }
    let again = api.create("/api/v1/namespaces/shop/pods", &java_pod("orders-2", json!({})));
    assert_eq!(again["spec"]["initContainers"][0]["name"], "nettap-agent-init");
    let log = std::fs::read_to_string(dir.path().join("injector.log")).unwrap();
    assert!(log.contains("shop/orders: injected the JVM agent into app"), "{log}");
    assert!(log.contains("review refused"), "{log}");

    injected_pods_pass_pod_security(&api);
}

/// A Java pod that passes Pod Security "restricted" on its own.
fn restricted_java_pod(name: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {
        "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app", "image": "eclipse-temurin:21-jre", "command": ["java", "-jar", "/app/app.jar"],
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}})
}

/// In namespaces enforcing each Pod Security level, a Java pod that the
/// level admits is injected and still admitted (a dry-run creation runs the
/// webhook, then Pod Security on the mutated pod); a hostPath, as the
/// injector added before, is refused there, so the check is live.
fn injected_pods_pass_pod_security(api: &ApiServer) {
    for level in ["restricted", "baseline", "privileged"] {
        let ns = format!("pss-{level}");
        api.namespace(
            &ns,
            json!({"nettap-e2e": "inject", "pod-security.kubernetes.io/enforce": level,
                   "pod-security.kubernetes.io/enforce-version": "latest"}),
        );
        let pods = format!("/api/v1/namespaces/{ns}/pods?dryRun=All");
        let (code, pod) =
            api.try_request("POST", &pods, Some(("application/json", &restricted_java_pod("app")))).unwrap();
        assert_eq!(code, 201, "{level}: the injected pod is admitted: {pod}");
        let init = &pod["spec"]["initContainers"][0];
        assert_eq!(init["name"], "nettap-agent-init", "{level}: injected: {pod}");
        assert_eq!(init["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        assert!(!pod.to_string().contains("hostPath"), "{pod}");

        let mut with_host_path = restricted_java_pod("old-style");
        with_host_path["spec"]["volumes"] = json!([{"name": "s", "hostPath": {"path": "/run/nettap"}}]);
        let (code, answer) =
            api.try_request("POST", &pods, Some(("application/json", &with_host_path))).unwrap();
        if level == "privileged" {
            assert_eq!(code, 201, "{answer}");
        } else {
            assert_eq!(code, 403, "{level} refuses a hostPath: {answer}");
            assert!(answer["message"].as_str().unwrap().contains("hostPath"), "{answer}");
        }
    }
}

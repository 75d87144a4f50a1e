//! The webhook's answers to AdmissionReview bodies captured from
//! kube-apiserver v1.37.2 (`tests/reviews/*.json`, written by
//! `nettap-injector serve --dump-reviews` during dry-run creations; only
//! `pod-not-a-pod.json` is made by hand, as the API server never sends an
//! unreadable pod): each patch is applied to the pod it
//! came with, the result must be a valid Pod with the agent wired exactly
//! once, and a second pass over the result must change nothing.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use nettap_injector::mutate::{mutate, Config, Decision, INIT_CONTAINER};
use nettap_injector::review::answer;
use serde_json::{json, Value};

fn review(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reviews").join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The response of the webhook for `body`: (HTTP status, response object).
fn respond(body: &[u8]) -> (u16, Value) {
    let a = answer(body, &Config::default());
    let v: Value = serde_json::from_slice(&a.body).expect("always a JSON review");
    assert_eq!(v["kind"], "AdmissionReview");
    (a.status, v["response"].clone())
}

/// The pod of review `name` after the webhook's patch (and the response).
fn mutated(name: &str) -> (Pod, Value) {
    let r = review(name);
    let (status, response) = respond(&serde_json::to_vec(&r).unwrap());
    assert_eq!(status, 200);
    assert_eq!(response["uid"], r["request"]["uid"], "the uid is copied");
    assert_eq!(response["allowed"], true);
    let mut pod = r["request"]["object"].clone();
    if let Some(p) = response.get("patch") {
        assert_eq!(response["patchType"], "JSONPatch");
        // Go's []byte: base64, or (as kube writes it) an array of byte values.
        let bytes: Vec<u8> = match p {
            Value::String(s) => base64::engine::general_purpose::STANDARD.decode(s).unwrap(),
            _ => serde_json::from_value(p.clone()).unwrap(),
        };
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut pod, &patch).expect("the patch applies to the pod it was made for");
    }
    (serde_json::from_value(pod).expect("still a Pod"), response)
}

fn env_of(pod: &Pod, container: &str) -> Vec<(String, Value)> {
    let c = pod.spec.as_ref().unwrap().containers.iter().find(|c| c.name == container).unwrap();
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().map(Value::String).unwrap_or_else(|| json!(e.value_from))))
        .collect()
}

fn mounts_of(pod: &Pod, container: &str) -> Vec<String> {
    let c = pod.spec.as_ref().unwrap().containers.iter().find(|c| c.name == container).unwrap();
    c.volume_mounts.iter().flatten().map(|m| format!("{}:{}", m.name, m.mount_path)).collect()
}

const OPTION: &str = "-agentpath:/nettap-agent/libnettap_agent.so";

#[test]
fn a_java_pod_gets_the_agent_in_its_java_container_only() {
    let (pod, _) = mutated("java-pod.json");
    let spec = pod.spec.as_ref().unwrap();
    let inits: Vec<&str> = spec.init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(inits, [INIT_CONTAINER]);
    let init = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.image.as_deref(), Some("nettap/injector:latest"));
    assert_eq!(init.command.as_ref().unwrap().last().unwrap(), "/nettap-agent");
    let volumes: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    assert_eq!(volumes, ["kube-api-access-x7k2p", "nettap-agent"]);
    let agent = &spec.volumes.as_ref().unwrap()[1];
    assert!(agent.empty_dir.is_some() && agent.host_path.is_none(), "nothing of the node: {agent:?}");
    // What Pod Security "restricted" asks of the init container.
    let sc = init.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!((sc.run_as_non_root, sc.run_as_user), (Some(true), Some(65532)));
    assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    assert_eq!(
        env_of(&pod, "orders"),
        [
            ("JAVA_TOOL_OPTIONS".to_string(), json!(format!("-XX:+UseG1GC {OPTION}"))),
            ("DB_HOST".to_string(), json!("db")),
        ]
    );
    assert_eq!(
        mounts_of(&pod, "orders"),
        ["kube-api-access-x7k2p:/var/run/secrets/kubernetes.io/serviceaccount", "nettap-agent:/nettap-agent",]
    );
    assert!(env_of(&pod, "proxy").is_empty(), "the envoy sidecar is not Java");
    assert_eq!(mounts_of(&pod, "proxy").len(), 1);
    let annotations = pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["ebpf.speedscale.com/java-agent-injected"], "true");
    assert_eq!(annotations["kubectl.kubernetes.io/restartedAt"], "2026-11-20T10:00:00Z", "kept");
}

#[test]
fn injection_happens_once() {
    for name in ["java-pod.json", "java-pod-valuefrom.json", "opt-in-pod.json"] {
        let (pod, _) = mutated(name);
        assert!(
            matches!(mutate(&pod, &Config::default()), Decision::Skip(ref why) if why.contains("already injected")),
            "{name}"
        );
        // Also through the webhook: a review of the injected pod gets no patch.
        let mut r = review(name);
        r["request"]["object"] = serde_json::to_value(&pod).unwrap();
        let (status, response) = respond(&serde_json::to_vec(&r).unwrap());
        assert_eq!((status, response["allowed"].clone()), (200, json!(true)));
        assert!(response.get("patch").is_none(), "{name}: {response}");
    }
}

#[test]
fn java_tool_options_from_a_config_map_is_kept_and_extended() {
    let (pod, _) = mutated("java-pod-valuefrom.json");
    let env = env_of(&pod, "billing");
    assert_eq!(env[0].0, "NETTAP_ORIGINAL_JAVA_TOOL_OPTIONS");
    assert_eq!(env[0].1["configMapKeyRef"]["name"], "jvm-opts");
    assert_eq!(
        env[1],
        ("JAVA_TOOL_OPTIONS".into(), json!(format!("$(NETTAP_ORIGINAL_JAVA_TOOL_OPTIONS) {OPTION}")))
    );
    let inits: Vec<String> = pod.spec.unwrap().init_containers.unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(inits, [INIT_CONTAINER, "migrate"], "the agent is in place before other init containers");
}

#[test]
fn annotations_decide_before_detection() {
    let (pod, _) = mutated("opt-in-pod.json");
    assert_eq!(env_of(&pod, "app"), [("JAVA_TOOL_OPTIONS".to_string(), json!(OPTION))]);
    for name in ["opted-out-pod.json", "nginx-pod.json"] {
        let r = review(name);
        let (pod, response) = mutated(name);
        assert!(response.get("patch").is_none(), "{name}: {response}");
        let original: Pod = serde_json::from_value(r["request"]["object"].clone()).unwrap();
        assert_eq!(pod, original, "{name} untouched");
    }
}

#[test]
fn what_is_not_a_readable_pod_is_allowed_unchanged() {
    for name in ["deployment.json", "pod-not-a-pod.json"] {
        let (status, response) = respond(&serde_json::to_vec(&review(name)).unwrap());
        assert_eq!(status, 200, "{name}");
        assert_eq!(response["allowed"], true, "{name}: never block a pod");
        assert!(response.get("patch").is_none(), "{name}");
    }
    let (_, response) = respond(&serde_json::to_vec(&review("pod-not-a-pod.json")).unwrap());
    assert!(response["warnings"][0].as_str().unwrap().contains("could not be read as a Pod"), "{response}");
}

#[test]
fn malformed_reviews_get_a_400_with_the_reason() {
    for (body, why) in [
        (&b"not json at all"[..], "not an AdmissionReview"),
        (b"{}", "not an AdmissionReview"),
        (br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#, "without a request"),
        (
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":5}}"#,
            "not an AdmissionReview",
        ),
        (b"\xff\xfe\x00", "not an AdmissionReview"),
    ] {
        let (status, response) = respond(body);
        assert_eq!(status, 400, "{body:?}");
        assert_eq!(response["allowed"], false);
        assert!(response["status"]["message"].as_str().unwrap().contains(why), "{response}");
    }
}

//! The pure part of the webhook: a Pod in, the decision and its JSON Patch
//! out. No I/O, so every case is a unit test on real AdmissionReview JSON.
//!
//! A Java pod gets: an init container (the injector's image) that copies
//! `libnettap_agent.so` into an `emptyDir`, that volume mounted read-only in
//! each Java container, and `-agentpath:…` appended to its
//! `JAVA_TOOL_OPTIONS`. Nothing of the node: the agent hands a socket of its
//! own to the sensor (no hostPath, so Pod Security "baseline" and
//! "restricted" admit the pod; the init container itself passes
//! "restricted"). The agent comes from an init container rather than from
//! the node so that a JVM never starts with an `-agentpath` that is missing
//! (the JVM refuses to start then).

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};
use serde_json::{json, Value};

/// `"true"` injects every container, `"false"` none; otherwise detection decides.
pub const INJECT_ANNOTATION: &str = "ebpf.speedscale.com/inject-java";
/// Set on injected pods: a pod carrying it is never injected again.
pub const INJECTED_ANNOTATION: &str = "ebpf.speedscale.com/java-agent-injected";
/// Names of what the injector adds (also how a re-injection is recognised).
pub const INIT_CONTAINER: &str = "nettap-agent-init";
/// The `emptyDir` that carries the agent.
pub const AGENT_VOLUME: &str = "nettap-agent";
/// The init container's user (the image's own `nonroot` user, said
/// explicitly so the kubelet can check `runAsNonRoot` whatever the image says).
pub const INIT_UID: i64 = 65532;

/// Where things are, from the chart's values.
#[derive(Debug, Clone)]
pub struct Config {
    /// Image of the init container (the injector's own image carries the agent).
    pub agent_image: String,
    /// Command of the init container; the agent directory is appended.
    pub install_command: Vec<String>,
    /// Where the agent directory is mounted in the pod's containers.
    pub agent_dir: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            agent_image: "nettap/injector:latest".into(),
            install_command: vec!["/usr/local/bin/nettap-injector".into(), "install-agent".into()],
            agent_dir: "/nettap-agent".into(),
        }
    }
}

impl Config {
    /// The option the JVM is given (no `socket=`: the agent hands its own
    /// socket to the node's sensor).
    pub fn agent_option(&self) -> String {
        format!("-agentpath:{}/libnettap_agent.so", self.agent_dir.trim_end_matches('/'))
    }
}

/// What happens to a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Left as it is, and why (said in the log and the audit annotation).
    Skip(String),
    /// The JSON Patch (RFC 6902 operations) and the containers it injects.
    Inject {
        /// Operations, in order.
        patch: Vec<Value>,
        /// Names of the containers given the agent.
        containers: Vec<String>,
    },
}

/// Decides for `pod` and builds its patch.
pub fn mutate(pod: &Pod, cfg: &Config) -> Decision {
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    if annotations.contains_key(INJECTED_ANNOTATION) {
        return Decision::Skip(format!("already injected ({INJECTED_ANNOTATION})"));
    }
    let Some(spec) = &pod.spec else {
        return Decision::Skip("the pod has no spec".into());
    };
    if spec.init_containers.iter().flatten().any(|c| c.name == INIT_CONTAINER) {
        return Decision::Skip(format!("already injected (init container {INIT_CONTAINER})"));
    }
    let wanted: Vec<usize> = match annotations.get(INJECT_ANNOTATION).map(|v| v.trim().to_ascii_lowercase()) {
        Some(v) if v == "false" => return Decision::Skip(format!("opted out ({INJECT_ANNOTATION}=false)")),
        Some(v) if v == "true" => (0..spec.containers.len()).collect(),
        Some(v) => {
            return Decision::Skip(format!("{INJECT_ANNOTATION}={v:?} is neither \"true\" nor \"false\""))
        }
        None => (0..spec.containers.len()).filter(|i| runs_java(&spec.containers[*i])).collect(),
    };
    if wanted.is_empty() {
        return Decision::Skip("no container runs Java".into());
    }

    let mut patch = Vec::new();
    let mut push =
        |path: String, value: Value| patch.push(json!({"op": "add", "path": path, "value": value}));
    // Annotations first: "add" on a missing map needs the map.
    match pod.metadata.annotations {
        Some(_) => push(format!("/metadata/annotations/{}", escape(INJECTED_ANNOTATION)), json!("true")),
        None => push("/metadata/annotations".into(), json!({ INJECTED_ANNOTATION: "true" })),
    }
    let volumes = [json!({"name": AGENT_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}})];
    append(&mut push, "/spec/volumes", spec.volumes.is_some(), &volumes);
    let mut command = cfg.install_command.clone();
    command.push(cfg.agent_dir.clone());
    let init = json!({
        "name": INIT_CONTAINER,
        "image": cfg.agent_image,
        "command": command,
        "volumeMounts": [{"name": AGENT_VOLUME, "mountPath": cfg.agent_dir}],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
        // Everything Pod Security "restricted" asks of a container.
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": INIT_UID,
            "runAsGroup": INIT_UID,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        }
    });
    // First, so the agent is in place before any other init container runs Java.
    match &spec.init_containers {
        Some(list) if !list.is_empty() => push("/spec/initContainers/0".into(), init),
        _ => push("/spec/initContainers".into(), json!([init])),
    }
    let mounts = [json!({"name": AGENT_VOLUME, "mountPath": cfg.agent_dir, "readOnly": true})];
    let option = cfg.agent_option();
    let mut containers = Vec::new();
    for i in wanted {
        let c = &spec.containers[i];
        let base = format!("/spec/containers/{i}");
        append(&mut push, &format!("{base}/volumeMounts"), c.volume_mounts.is_some(), &mounts);
        push(format!("{base}/env"), json!(env_with_agent(c.env.as_deref().unwrap_or_default(), &option)));
        containers.push(c.name.clone());
    }
    Decision::Inject { patch, containers }
}

/// `items` appended to the array at `path` (made when `exists` is false).
fn append(push: &mut impl FnMut(String, Value), path: &str, exists: bool, items: &[Value]) {
    if exists {
        for item in items {
            push(format!("{path}/-"), item.clone());
        }
    } else {
        push(path.to_string(), Value::Array(items.to_vec()));
    }
}

/// A JSON Pointer token (RFC 6901).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The container's environment with the agent option appended to
/// `JAVA_TOOL_OPTIONS`, whatever form that takes: a value is kept and
/// appended to; a `valueFrom` (ConfigMap, Secret…) moves to another name that
/// the new value references (`$(NAME)`, expanded by the kubelet); absent, it
/// is added last (after any `envFrom`, which it then overrides only for this
/// one variable).
fn env_with_agent(env: &[EnvVar], option: &str) -> Vec<Value> {
    const MOVED: &str = "NETTAP_ORIGINAL_JAVA_TOOL_OPTIONS";
    let mut out = Vec::with_capacity(env.len() + 2);
    let mut done = false;
    for e in env {
        if e.name != "JAVA_TOOL_OPTIONS" || done {
            out.push(serde_json::to_value(e).expect("EnvVar serialises"));
            continue;
        }
        done = true;
        match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                out.push(json!({"name": MOVED, "valueFrom": from}));
                out.push(json!({"name": "JAVA_TOOL_OPTIONS", "value": format!("$({MOVED}) {option}")}));
            }
            (Some(v), None) if !v.trim().is_empty() => {
                out.push(json!({"name": "JAVA_TOOL_OPTIONS", "value": format!("{} {option}", v.trim_end())}));
            }
            _ => out.push(json!({"name": "JAVA_TOOL_OPTIONS", "value": option})),
        }
    }
    if !done {
        out.push(json!({"name": "JAVA_TOOL_OPTIONS", "value": option}));
    }
    out
}

/// Images whose name says they carry a JVM.
const JAVA_IMAGES: &[&str] = &[
    "openjdk",
    "temurin",
    "jdk",
    "jre",
    "java",
    "corretto",
    "zulu",
    "liberica",
    "semeru",
    "graalvm",
    "tomcat",
    "jetty",
    "wildfly",
    "jboss",
    "payara",
    "glassfish",
    "maven",
    "gradle",
    "kafka",
    "zookeeper",
    "elasticsearch",
    "opensearch",
    "keycloak",
    "sonarqube",
    "jenkins",
    "cassandra",
    "solr",
    "flink",
    "spark",
    "hadoop",
    "hive",
    "nifi",
    "neo4j",
    "activemq",
    "artemis",
];

/// Environment variables only Java images set.
const JAVA_ENV: &[&str] =
    &["JAVA_HOME", "JAVA_VERSION", "JAVA_OPTS", "JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "JAVA_OPTIONS"];

/// Whether the container looks like it runs a JVM: its command or args name
/// `java` (or a `.jar`), its image is a known Java image, or its environment
/// has a JAVA_* variable.
pub fn runs_java(c: &Container) -> bool {
    let words = c.command.iter().flatten().chain(c.args.iter().flatten());
    let by_command = words.flat_map(|w| w.split_whitespace()).any(|w| {
        let base = w.rsplit('/').next().unwrap_or(w);
        base == "java" || base == "javaw" || w.ends_with(".jar") || w == "-jar"
    });
    let by_image = c.image.as_deref().is_some_and(|image| {
        // The repository's last path segment, without tag or digest.
        let name = image.rsplit('/').next().unwrap_or(image);
        let name = name.split(['@', ':']).next().unwrap_or(name).to_ascii_lowercase();
        name.split(['-', '_', '.']).any(|part| JAVA_IMAGES.contains(&part))
    });
    let by_env = c.env.iter().flatten().any(|e| JAVA_ENV.contains(&e.name.as_str()));
    by_command || by_image || by_env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(v: Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn java_is_recognised_by_command_image_or_environment() {
        for c in [
            json!({"name": "a", "image": "busybox", "command": ["/opt/java/bin/java", "-jar", "app.jar"]}),
            json!({"name": "a", "image": "busybox", "args": ["sh", "-c", "exec java -cp /app Main"]}),
            json!({"name": "a", "image": "eclipse-temurin:21-jre"}),
            json!({"name": "a", "image": "registry.example/team/openjdk@sha256:abc"}),
            json!({"name": "a", "image": "library/tomcat:10"}),
            json!({"name": "a", "image": "acme/app:1", "env": [{"name": "JAVA_OPTS", "value": "-Xmx1g"}]}),
        ] {
            assert!(runs_java(&container(c.clone())), "{c}");
        }
        for c in [
            json!({"name": "a", "image": "nginx:1.27"}),
            json!({"name": "a", "image": "python:3.12", "command": ["python", "-m", "javalike"]}),
            json!({"name": "a", "image": "javascript-runner:1"}),
            json!({"name": "a", "image": "acme/app", "env": [{"name": "JAVASCRIPT", "value": "1"}]}),
        ] {
            assert!(!runs_java(&container(c.clone())), "{c}");
        }
    }

    #[test]
    fn java_tool_options_is_appended_to_in_every_form() {
        let opt = Config::default().agent_option();
        assert_eq!(opt, "-agentpath:/nettap-agent/libnettap_agent.so");
        let env = |v: Value| -> Vec<EnvVar> { serde_json::from_value(v).unwrap() };
        assert_eq!(
            env_with_agent(&env(json!([{"name": "A", "value": "1"}])), &opt),
            vec![json!({"name": "A", "value": "1"}), json!({"name": "JAVA_TOOL_OPTIONS", "value": opt})]
        );
        assert_eq!(
            env_with_agent(&env(json!([{"name": "JAVA_TOOL_OPTIONS", "value": "-Xss1m "}])), &opt),
            vec![json!({"name": "JAVA_TOOL_OPTIONS", "value": format!("-Xss1m {opt}")})]
        );
        let from = json!({"configMapKeyRef": {"name": "jvm", "key": "opts"}});
        assert_eq!(
            env_with_agent(&env(json!([{"name": "JAVA_TOOL_OPTIONS", "valueFrom": from}])), &opt),
            vec![
                json!({"name": "NETTAP_ORIGINAL_JAVA_TOOL_OPTIONS", "valueFrom": from}),
                json!({"name": "JAVA_TOOL_OPTIONS", "value": format!("$(NETTAP_ORIGINAL_JAVA_TOOL_OPTIONS) {opt}")}),
            ]
        );
    }
}

//! The Helm chart with the real `helm` (built by ci/install.sh): lint and
//! template with the default and the example values; the rendered objects
//! say what the chart promises (the DaemonSet's four capabilities and host
//! access, the webhook's failurePolicy and a caBundle that signed the
//! Secret's certificate, RBAC for exactly what the sensor reads, the
//! targets as values gave them), and wrong values fail at install time.

use nettap_e2e::helm::{chart, helm};
use serde_json::{json, Value};
use std::process::{Command, Output};

fn run_helm(args: &[&str]) -> Output {
    helm(&std::env::temp_dir().join("nettap-helm"), None, args)
}

/// `helm template` with `extra` arguments, as JSON objects.
fn template(extra: &[&str]) -> Vec<Value> {
    nettap_e2e::helm::template(&std::env::temp_dir().join("nettap-helm"), None, extra)
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn example() -> String {
    chart().join("examples/targets.yaml").display().to_string()
}

#[test]
fn lint_passes_with_default_and_example_values() {
    let chart = chart();
    for extra in [vec![], vec!["-f".to_string(), example()]] {
        let mut args = vec!["lint", "--strict", chart.to_str().unwrap()];
        args.extend(extra.iter().map(String::as_str));
        let out = run_helm(&args);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_sensor_daemonset_has_exactly_the_four_capabilities_and_its_host_access() {
    let objects = template(&[]);
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole/tap-nettap-sensor",
            "ClusterRoleBinding/tap-nettap-sensor",
            "ConfigMap/tap-nettap-sensor",
            "DaemonSet/tap-nettap-sensor",
            "Deployment/tap-nettap-injector",
            "MutatingWebhookConfiguration/tap-nettap-injector",
            "Secret/tap-nettap-injector-tls",
            "Secret/tap-nettap-redact-key",
            "Service/tap-nettap-injector",
            "ServiceAccount/tap-nettap-injector",
            "ServiceAccount/tap-nettap-sensor",
        ],
        "every object, nothing else"
    );
    let ds = find(&objects, "DaemonSet", "tap-nettap-sensor");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!((pod["hostPID"].clone(), pod["hostNetwork"].clone()), (json!(true), json!(true)));
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(
        sc["capabilities"],
        json!({"drop": ["ALL"], "add": ["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE"]})
    );
    let host: Vec<&str> =
        pod["volumes"].as_array().unwrap().iter().filter_map(|v| v["hostPath"]["path"].as_str()).collect();
    assert_eq!(
        host,
        [
            "/sys/kernel/tracing",
            "/sys/kernel/btf",
            "/run/nettap",
            "/var/lib/nettap/records",
            "/sys/fs/cgroup"
        ]
    );
    // Read-only but for the API socket's directory and the records store.
    let writable: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["readOnly"] != true)
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(writable, ["api", "records"]);
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    // Records to the node's store, never to the container log; the API in its own directory.
    assert!(args.windows(2).any(|w| w == ["--out-dir", "/var/lib/nettap/records"]), "{args:?}");
    assert!(args.windows(2).any(|w| w == ["--out-max-bytes", "1073741824"]), "{args:?}");
    assert!(args.windows(2).any(|w| w == ["--api", "unix:/run/nettap/api/api.sock"]), "{args:?}");
    assert!(!args.contains(&"--out") && !args.contains(&"--agent-socket"), "{args:?}");
    assert!(args.windows(2).any(|w| w == ["--config", "/etc/nettap/nettap.toml"]), "{args:?}");
    let config = find(&objects, "ConfigMap", "tap-nettap-sensor")["data"]["nettap.toml"].as_str().unwrap();
    for line in [
        "enabled = true",
        "capture_targets = \"/etc/nettap/capture-targets.json\"",
        "cgroup_root = \"/host/sys/fs/cgroup\"",
    ] {
        assert!(config.lines().any(|l| l.trim() == line), "{line} in {config}");
    }
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    // The redaction key: a generated Secret, mounted read-only for root alone.
    let key = &find(&objects, "Secret", "tap-nettap-redact-key")["data"]["key"];
    assert!(base64_decode(key.as_str().unwrap()).len() >= 16);
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "redact-key").unwrap();
    assert_eq!(volume["secret"], json!({"secretName": "tap-nettap-redact-key", "defaultMode": 0o400}));

    let role = find(&objects, "ClusterRole", "tap-nettap-sensor");
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["pods", "namespaces", "services"], "verbs": ["list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["replicasets", "deployments"], "verbs": ["list", "watch"]}
        ]),
        "read-only, and only what the sensor reads"
    );
    let targets: Value = serde_json::from_str(
        find(&objects, "ConfigMap", "tap-nettap-sensor")["data"]["capture-targets.json"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(targets, json!({"targets": []}));
}

/// The sensor's `nettap.toml` of a rendering, read by the sensor's own
/// configuration code (and checked as the sensor checks it).
fn sensor_config(objects: &[Value]) -> nettap_sensor::config::FileConfig {
    let text = find(objects, "ConfigMap", "tap-nettap-sensor")["data"]["nettap.toml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nettap.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = nettap_sensor::config::FileConfig::load(&path).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    cfg.capture.validate().unwrap();
    cfg
}

#[test]
fn capture_settings_and_redaction_come_from_values() {
    let cfg = sensor_config(&template(&[]));
    assert_eq!((cfg.capture.ring_buffer_bytes, cfg.capture.max_bytes_per_call), (8 << 20, 256 << 10));
    assert!(cfg.capture.ports.is_empty() && cfg.capture.redact.enabled);
    assert_eq!(cfg.capture.redact.key_file.as_deref(), Some(std::path::Path::new("/etc/nettap/redact/key")));

    let objects = template(&[
        "--set",
        "sensor.capture.ports={443,8443}",
        "--set",
        "sensor.capture.ringBufferBytes=16777216",
        "--set",
        "sensor.capture.execHoldMs=0",
        "--set",
        "sensor.redaction.headers={x-api-key}",
        "--set",
        "sensor.redaction.fields={ssn,card_number}",
        "--set",
        "sensor.redaction.existingSecret=team-redact-key",
    ]);
    let cfg = sensor_config(&objects);
    assert_eq!(cfg.capture.ports, [443, 8443]);
    assert_eq!((cfg.capture.ring_buffer_bytes, cfg.capture.exec_hold_ms), (16 << 20, 0));
    assert_eq!(cfg.capture.redact.headers, ["x-api-key"]);
    assert_eq!(cfg.capture.redact.fields, ["ssn", "card_number"]);
    assert!(
        objects.iter().all(|o| o["metadata"]["name"] != "tap-nettap-redact-key"),
        "the operator's Secret"
    );
    let pod = &find(&objects, "DaemonSet", "tap-nettap-sensor")["spec"]["template"]["spec"];
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "redact-key").unwrap();
    assert_eq!(volume["secret"]["secretName"], "team-redact-key");
}

#[test]
fn records_go_to_stdout_only_when_asked() {
    let objects = template(&["--set", "sensor.records.sink=stdout"]);
    let pod = &find(&objects, "DaemonSet", "tap-nettap-sensor")["spec"]["template"]["spec"];
    let args: Vec<&str> =
        pod["containers"][0]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.windows(2).any(|w| w == ["--out", "-"]), "{args:?}");
    assert!(!args.contains(&"--out-dir"), "{args:?}");
    assert!(pod["volumes"].as_array().unwrap().iter().all(|v| v["name"] != "records"));
}

#[test]
fn the_webhook_never_blocks_pods_and_trusts_the_secret_it_was_rendered_with() {
    let objects = template(&[]);
    let hook = &find(&objects, "MutatingWebhookConfiguration", "tap-nettap-injector")["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(
        hook["clientConfig"]["service"],
        json!({"name": "tap-nettap-injector", "namespace": "nettap", "path": "/mutate", "port": 443})
    );
    assert_eq!(hook["rules"][0]["operations"], json!(["CREATE"]));
    assert_eq!(hook["namespaceSelector"]["matchExpressions"][0]["values"], json!(["nettap", "kube-system"]));
    let secret = find(&objects, "Secret", "tap-nettap-injector-tls");
    assert_eq!(hook["clientConfig"]["caBundle"], secret["data"]["ca.crt"]);
    // The CA in the bundle signed the serving certificate, for the Service's name.
    let dir = tempfile::tempdir().unwrap();
    let decode = |v: &Value, name: &str| {
        let path = dir.path().join(name);
        let pem = base64_decode(v.as_str().unwrap());
        std::fs::write(&path, pem).unwrap();
        path
    };
    let (ca, crt) =
        (decode(&secret["data"]["ca.crt"], "ca.pem"), decode(&secret["data"]["tls.crt"], "tls.pem"));
    let verify = Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            ca.to_str().unwrap(),
            "-verify_hostname",
            "tap-nettap-injector.nettap.svc",
        ])
        .arg(&crt)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let deploy = find(&objects, "Deployment", "tap-nettap-injector");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false, "the injector reads nothing from the API");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let args: Vec<&str> =
        pod["containers"][0]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.windows(2).any(|w| w == ["--agent-image", "nettap/injector:0.1.0"]), "{args:?}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[test]
fn example_values_reach_the_objects() {
    let objects = template(&["-f", &example()]);
    let ds = find(&objects, "DaemonSet", "tap-nettap-sensor");
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["securityContext"]["capabilities"]["add"],
        json!(["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "SYS_ADMIN"])
    );
    let env: Vec<(&str, &str)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    assert_eq!(
        env,
        [("NETTAP_OPENSSL_STATIC", "true"), ("NETTAP_OPENSSL_BINARY", "/usr/local/bin/edge-proxy")]
    );
    let targets: Value = serde_json::from_str(
        find(&objects, "ConfigMap", "tap-nettap-sensor")["data"]["capture-targets.json"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(targets["targets"][0]["name"], "shop-api");
    assert_eq!(targets["targets"][0]["podSelector"]["matchLabels"], json!({"tier": "api"}));
    assert_eq!(
        targets["targets"][0]["podSelector"]["matchExpressions"],
        json!([{"key": "track", "operator": "NotIn", "values": ["canary"]}])
    );
    assert_eq!(
        targets["targets"][1]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "payments"
    );
    // cert-manager: a Certificate instead of a generated Secret, and the CA injected by annotation.
    assert!(objects.iter().all(|o| o["metadata"]["name"] != "tap-nettap-injector-tls"));
    find(&objects, "Certificate", "tap-nettap-injector");
    let hook = find(&objects, "MutatingWebhookConfiguration", "tap-nettap-injector");
    assert_eq!(
        hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "nettap/tap-nettap-injector"
    );
    assert!(hook["webhooks"][0]["clientConfig"].get("caBundle").is_none());
    assert_eq!(
        hook["webhooks"][0]["namespaceSelector"]["matchLabels"],
        json!({"nettap-injection": "enabled"})
    );
}

#[test]
fn probes_metrics_otlp_and_pod_settings_come_from_values() {
    let pod_of =
        |objects: &[Value]| find(objects, "DaemonSet", "tap-nettap-sensor")["spec"]["template"].clone();
    let objects = template(&[]);
    let pod = pod_of(&objects);
    let c = &pod["spec"]["containers"][0];
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    // The probes need the endpoints: --metrics is always on, on the node's port.
    assert!(args.windows(2).any(|w| w == ["--metrics", "0.0.0.0:9464"]), "{args:?}");
    assert_eq!(c["ports"], json!([{"name": "metrics", "containerPort": 9464}]));
    assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "metrics"}));
    assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "metrics"}));
    assert!(c["env"].as_array().unwrap().iter().all(|e| !e["name"].as_str().unwrap().starts_with("OTEL_")));
    assert_eq!(c["image"], "nettap/sensor:0.1.0");

    let digest = format!("sha256:{}", "ab".repeat(32));
    let objects = template(&[
        "--set",
        "sensor.otlp.endpoint=https://collector.observability:4317",
        "--set",
        "sensor.otlp.headers.api-key=k 1/2",
        "--set",
        "sensor.otlp.tlsSecret=otlp-ca",
        "--set",
        "sensor.metrics.port=9555",
        "--set",
        "sensor.metrics.serviceMonitor.enabled=true",
        "--set",
        "sensor.podLabels.team=obs",
        "--set",
        "sensor.podAnnotations.note=kept",
        "--set",
        "sensor.extraArgs={--raw}",
        "--set",
        "sensor.env[0].name=NETTAP_LOG,sensor.env[0].value=debug",
        "--set",
        "sensor.updateStrategy.type=OnDelete",
        "--set",
        "global.imageRegistry=registry.example",
        "--set",
        &format!("image.sensor.digest={digest}"),
    ]);
    let pod = pod_of(&objects);
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["image"], format!("registry.example/nettap/sensor@{digest}"));
    assert_eq!(pod["metadata"]["labels"]["team"], "obs");
    assert_eq!(pod["metadata"]["annotations"]["note"], "kept");
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args[args.len() - 3..], ["--metrics", "0.0.0.0:9555", "--raw"]);
    let ds = find(&objects, "DaemonSet", "tap-nettap-sensor");
    assert_eq!(ds["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
    let env: std::collections::HashMap<&str, &Value> =
        c["env"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), e)).collect();
    assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"], "https://collector.observability:4317");
    assert_eq!(env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"], "grpc");
    assert_eq!(env["OTEL_EXPORTER_OTLP_CERTIFICATE"]["value"], "/etc/nettap/otlp/ca.crt");
    assert_eq!(env["NETTAP_LOG"]["value"], "debug");
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"],
        json!({"name": "tap-nettap-otlp", "key": "headers"})
    );
    // The headers' Secret, percent-encoded as the variable has them; never in the pod spec.
    let secret = find(&objects, "Secret", "tap-nettap-otlp");
    assert_eq!(secret["stringData"]["headers"], "api-key=k%201%2F2");
    assert!(!pod.to_string().contains("k 1/2") && !pod.to_string().contains("k%201"));
    let volume = pod["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "otlp-tls").unwrap();
    assert_eq!(volume["secret"]["secretName"], "otlp-ca");
    let monitor = find(&objects, "ServiceMonitor", "tap-nettap-sensor");
    let service = find(&objects, "Service", "tap-nettap-sensor-metrics");
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(service["spec"]["ports"][0]["port"], 9555);
    for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&service["metadata"]["labels"][k], v, "the ServiceMonitor selects the Service");
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
}

#[test]
fn kafka_values_set_the_sinks_environment_and_keep_credentials_in_a_secret() {
    let objects = template(&[
        "--set-string",
        "sensor.kafka.brokers=k1:9093\\,k2:9093",
        "--set",
        "sensor.kafka.tls.enabled=true",
        "--set",
        "sensor.kafka.tls.secret=kafka-ca",
        "--set",
        "sensor.kafka.tls.clientCertificate=true",
        "--set",
        "sensor.kafka.sasl.mechanism=SCRAM-SHA-512",
        "--set",
        "sensor.kafka.sasl.username=nettap",
        "--set",
        "sensor.kafka.sasl.password=pa55-word",
    ]);
    let pod = find(&objects, "DaemonSet", "tap-nettap-sensor")["spec"]["template"].clone();
    let c = &pod["spec"]["containers"][0];
    let env: std::collections::HashMap<&str, &Value> =
        c["env"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), e)).collect();
    let value = |name: &str| env[name]["value"].as_str().unwrap().to_string();
    assert_eq!(value("NETTAP_KAFKA_BROKERS"), "k1:9093,k2:9093");
    assert_eq!(value("NETTAP_KAFKA_TOPIC"), "nettap-records");
    assert_eq!(value("NETTAP_KAFKA_QUEUE_BYTES"), "33554432");
    assert_eq!(value("NETTAP_KAFKA_TLS"), "true");
    assert_eq!(value("NETTAP_KAFKA_CA"), "/etc/nettap/kafka/ca.crt");
    assert_eq!(value("NETTAP_KAFKA_CERT"), "/etc/nettap/kafka/tls.crt");
    assert_eq!(value("NETTAP_KAFKA_KEY"), "/etc/nettap/kafka/tls.key");
    assert_eq!(value("NETTAP_KAFKA_SASL_MECHANISM"), "SCRAM-SHA-512");
    for (var, key) in [("NETTAP_KAFKA_SASL_USERNAME", "username"), ("NETTAP_KAFKA_SASL_PASSWORD", "password")]
    {
        assert_eq!(env[var]["valueFrom"]["secretKeyRef"], json!({"name": "tap-nettap-kafka", "key": key}));
    }
    let secret = find(&objects, "Secret", "tap-nettap-kafka");
    assert_eq!(secret["stringData"], json!({"username": "nettap", "password": "pa55-word"}));
    assert!(!pod.to_string().contains("pa55-word"), "the password is in the pod spec");
    let volume =
        pod["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "kafka-tls").unwrap();
    assert_eq!(volume["secret"]["secretName"], "kafka-ca");
    let mount = c["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "kafka-tls").unwrap();
    assert_eq!(mount["mountPath"], "/etc/nettap/kafka");

    // Your own Secret: none is made.
    let objects = template(&[
        "--set",
        "sensor.kafka.brokers=k1:9093",
        "--set",
        "sensor.kafka.sasl.mechanism=PLAIN",
        "--set",
        "sensor.kafka.sasl.existingSecret=mine",
    ]);
    assert!(objects.iter().all(|o| o["metadata"]["name"] != "tap-nettap-kafka"));
    let pod = &find(&objects, "DaemonSet", "tap-nettap-sensor")["spec"]["template"];
    assert!(pod.to_string().contains(r#"{"key":"password","name":"mine"}"#), "{pod}");
    // Off by default: no variable, no Secret.
    let objects = template(&[]);
    assert!(!serde_json::to_string(&objects).unwrap().contains("NETTAP_KAFKA"));
    // A mechanism without credentials is refused with the reason.
    let out = run_helm(&[
        "template",
        "tap",
        chart().to_str().unwrap(),
        "--set",
        "sensor.kafka.brokers=k1:9093",
        "--set",
        "sensor.kafka.sasl.mechanism=PLAIN",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("a mechanism needs username and password"));
}

#[test]
fn wrong_values_are_refused_at_install_time() {
    let chart = chart();
    for (set, why) in [
        ("injector.failurePolicy=Sometimes", "failurePolicy"),
        ("ebpf.configuration.capture.targets[0].nam=x", "targets"),
        ("sensor.apiDir=relative/dir", "apiDir"),
        ("sensor.records.sink=syslog", "sink"),
        ("sensor.records.maxFiles=1", "maxFiles"),
        ("ebpf.enabeld=true", "enabeld"),
        ("sensor.otlp.protocol=http/json", "protocol"),
        ("sensor.otlp.endpoint=collector:4317", "endpoint"),
        ("sensor.kafka.brokers=kafka", "brokers"),
        ("sensor.kafka.sasl.mechanism=GSSAPI", "mechanism"),
        ("image.sensor.digest=latest", "digest"),
        ("sensor.metrics.port=0", "port"),
        (
            "ebpf.configuration.capture.targets[0].name=x,\
             ebpf.configuration.capture.targets[0].podSelector.matchExpressions[0].key=app,\
             ebpf.configuration.capture.targets[0].podSelector.matchExpressions[0].operator=Equals",
            "operator",
        ),
        (
            "ebpf.configuration.capture.targets[0].name=x,\
             ebpf.configuration.capture.targets[0].namespaceSelector.matchExpressions[0].key=app,\
             ebpf.configuration.capture.targets[0].namespaceSelector.matchExpressions[0].operator=In",
            "values",
        ),
    ] {
        let out = run_helm(&["template", "tap", chart.to_str().unwrap(), "--set", set]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(
            err.contains("values don't meet the specifications of the schema") && err.contains(why),
            "{set}: {err}"
        );
    }
}

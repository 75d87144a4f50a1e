//! What is captured of each pod: the capture targets of the Helm values and
//! the annotations of the pod's Deployment, decided without I/O, and the
//! per-cgroup rules the kernel enforces.

use super::meta::PodMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::core::SelectorExt;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// `ebpf.speedscale.com/capture`: `"true"` adds the workload, `"false"` removes it.
pub const ANNOTATION_CAPTURE: &str = "ebpf.speedscale.com/capture";
/// `ebpf.speedscale.com/port-filter`: `"8080,8443"`, only those ports of the workload.
pub const ANNOTATION_PORTS: &str = "ebpf.speedscale.com/port-filter";
/// Ports a port filter may name (`NT_CGROUP_PORTS` in events.h).
pub const MAX_PORTS: usize = crate::bpf::events::NT_CGROUP_PORTS as usize;

/// A label selector as Kubernetes writes one: `matchLabels`, and
/// `matchExpressions` with `In`, `NotIn`, `Exists` and `DoesNotExist`, all of
/// which must hold; matched by kube's `Selector` (an empty one selects
/// everything). Checked as the API server checks a `LabelSelector`, so a
/// typo is an error rather than a selector that selects all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SelectorSpec")]
pub struct Selector(kube::core::Selector);

impl Selector {
    /// True when `labels` satisfy every term.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.matches(labels)
    }
}

/// The JSON form of a selector, before it is checked.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SelectorSpec {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<RequirementSpec>,
}

/// One `matchExpressions` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequirementSpec {
    key: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
}

impl TryFrom<SelectorSpec> for Selector {
    type Error = String;

    fn try_from(spec: SelectorSpec) -> Result<Self, String> {
        let mut requirements = Vec::with_capacity(spec.match_expressions.len());
        for r in spec.match_expressions {
            // kube accepts `In` with no values and `Exists` with some; the API server does not.
            match (r.operator.as_str(), r.values.is_empty()) {
                ("In" | "NotIn", false) | ("Exists" | "DoesNotExist", true) => {}
                ("In" | "NotIn", true) => {
                    return Err(format!("{} {}: values must not be empty", r.key, r.operator))
                }
                ("Exists" | "DoesNotExist", false) => {
                    return Err(format!("{} {}: values must be empty", r.key, r.operator))
                }
                (op, _) => {
                    return Err(format!(
                        "{}: unknown operator {op:?} (In, NotIn, Exists, DoesNotExist)",
                        r.key
                    ))
                }
            }
            requirements.push(LabelSelectorRequirement {
                key: r.key,
                operator: r.operator,
                values: (!r.values.is_empty()).then_some(r.values),
            });
        }
        let selector =
            LabelSelector { match_labels: Some(spec.match_labels), match_expressions: Some(requirements) };
        kube::core::Selector::try_from(selector).map(Selector).map_err(|e| e.to_string())
    }
}

/// One entry of `ebpf.configuration.capture.targets`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// The target's name (said in the logs).
    pub name: String,
    /// Namespaces whose pods it selects (by the namespace's labels).
    #[serde(default)]
    pub namespace_selector: Selector,
    /// Pods it selects in those namespaces (by the pod's labels).
    #[serde(default)]
    pub pod_selector: Selector,
}

/// `ebpf.configuration.capture` as the chart writes it (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureTargets {
    /// Several targets: a pod any of them selects is captured. None: every pod is.
    #[serde(default)]
    pub targets: Vec<Target>,
}

/// Errors reading the targets file.
#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    /// Unreadable.
    #[error("cannot read capture targets {path}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not the expected JSON.
    #[error("invalid capture targets {path}")]
    Parse {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

impl CaptureTargets {
    /// Reads the file the chart mounts (`{"targets": [...]}`).
    pub fn load(path: &Path) -> Result<Self, TargetsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TargetsError::Read { path: path.display().to_string(), source })?;
        serde_json::from_str(&text)
            .map_err(|source| TargetsError::Parse { path: path.display().to_string(), source })
    }
}

/// What is captured of one pod, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Captured at all.
    pub capture: bool,
    /// Only connections with one of these ports at either end (empty: any).
    pub ports: Vec<u16>,
    /// Why, for the logs.
    pub why: String,
}

/// Decides for `pod`, given its namespace's labels, its Deployment's
/// annotations (if it has one) and the targets: `capture: "false"` wins,
/// then `capture: "true"`, then the targets (none: every pod).
pub fn decide(
    pod: &PodMeta,
    namespace_labels: &BTreeMap<String, String>,
    annotations: Option<&BTreeMap<String, String>>,
    targets: &[Target],
) -> Decision {
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).map(|v| v.trim().to_ascii_lowercase());
    let ports = annotation(ANNOTATION_PORTS).map(|v| parse_ports(&v)).unwrap_or_default();
    let (capture, why) = match annotation(ANNOTATION_CAPTURE).as_deref() {
        Some("false") => (false, "annotation capture=false".to_string()),
        Some("true") => (true, "annotation capture=true".to_string()),
        _ if targets.is_empty() => (true, "no capture targets: every pod".to_string()),
        _ => match targets
            .iter()
            .find(|t| t.namespace_selector.matches(namespace_labels) && t.pod_selector.matches(&pod.labels))
        {
            Some(t) => (true, format!("target {}", t.name)),
            None => (false, "no capture target selects it".to_string()),
        },
    };
    Decision { capture, ports: if capture { ports } else { Vec::new() }, why }
}

/// `"8080, 8443"` → the ports, in order, without repeats, at most
/// `MAX_PORTS`; what is not a port (0 included) is left out.
pub fn parse_ports(v: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    for p in v.split(',').filter_map(|p| p.trim().parse::<u16>().ok()).filter(|&p| p != 0) {
        if !ports.contains(&p) && ports.len() < MAX_PORTS {
            ports.push(p);
        }
    }
    ports
}

/// What the kernel is given: a rule per cgroup (by cgroup v2 id) and what
/// cgroups without one get.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupRules {
    /// Unlisted cgroups (processes in no known pod) are captured: there are no targets.
    pub unlisted_captured: bool,
    /// cgroup id → (captured, ports).
    pub rules: HashMap<u64, (bool, Vec<u16>)>,
}

impl CgroupRules {
    /// Rules for the pod cgroups found (`(pod UID, cgroup id)`), from each
    /// pod's decision (`decisions` by UID); cgroups of unknown pods get none.
    pub fn build<'a>(
        cgroups: impl IntoIterator<Item = &'a (String, u64)>,
        decisions: &HashMap<String, Decision>,
        unlisted_captured: bool,
    ) -> CgroupRules {
        let rules = cgroups
            .into_iter()
            .filter_map(|(uid, id)| decisions.get(uid).map(|d| (*id, (d.capture, d.ports.clone()))))
            .collect();
        CgroupRules { unlisted_captured, rules }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn pod(l: &[(&str, &str)]) -> PodMeta {
        PodMeta { pod: "p".into(), namespace: "n".into(), labels: labels(l), workload: None, uid: "u".into() }
    }

    fn targets() -> Vec<Target> {
        let t: CaptureTargets = serde_json::from_value(serde_json::json!({"targets": [
            {"name": "payments-web", "namespaceSelector": {"matchLabels": {"team": "payments"}},
             "podSelector": {"matchLabels": {"app": "web"}}},
            {"name": "all-of-tools", "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tools"}}}
        ]}))
        .unwrap();
        t.targets
    }

    #[test]
    fn targets_select_by_namespace_and_pod_labels() {
        let t = targets();
        let payments = labels(&[("team", "payments")]);
        let tools = labels(&[("kubernetes.io/metadata.name", "tools")]);
        let web = pod(&[("app", "web"), ("tier", "front")]);
        let d = decide(&web, &payments, None, &t);
        assert_eq!((d.capture, d.why.as_str()), (true, "target payments-web"));
        assert!(!decide(&pod(&[("app", "api")]), &payments, None, &t).capture);
        assert!(!decide(&web, &labels(&[("team", "other")]), None, &t).capture);
        assert_eq!(decide(&pod(&[]), &tools, None, &t).why, "target all-of-tools");
        // No targets: every pod.
        assert!(decide(&pod(&[]), &labels(&[]), None, &[]).capture);
    }

    #[test]
    fn match_expressions_select_as_kubernetes_does() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/k8s/testdata/capture-targets.json");
        let t = CaptureTargets::load(&path).unwrap().targets;
        let why = |ns: &[(&str, &str)], p: &[(&str, &str)]| decide(&pod(p), &labels(ns), None, &t).why;
        let none = "no capture target selects it";
        // In: the key with one of the values; NotIn and DoesNotExist also hold when the key is absent.
        assert_eq!(why(&[("env", "prod")], &[("app", "web")]), "target web-not-canary");
        assert_eq!(
            why(&[("env", "staging")], &[("app", "web"), ("track", "stable")]),
            "target web-not-canary"
        );
        assert_eq!(why(&[("env", "dev")], &[("app", "web")]), none);
        assert_eq!(why(&[], &[("app", "web")]), none, "In needs the key");
        assert_eq!(why(&[("env", "prod")], &[("app", "web"), ("track", "canary")]), none);
        assert_eq!(
            why(&[("env", "prod")], &[("app", "web"), ("debug", "")]),
            none,
            "DoesNotExist, any value"
        );
        assert_eq!(why(&[("env", "prod")], &[("app", "api")]), none, "matchLabels still hold");
        // Exists: any value, the empty one included; matchLabels and expressions together.
        assert_eq!(why(&[("team", "payments")], &[("nettap/capture", "")]), "target opted-in");
        assert_eq!(
            why(&[("team", "payments"), ("env", "dev")], &[("nettap/capture", "y")]),
            "target opted-in"
        );
        assert_eq!(why(&[("team", "payments"), ("env", "prod")], &[("nettap/capture", "y")]), none);
        assert_eq!(why(&[("team", "payments")], &[("capture", "y")]), none);
        assert_eq!(why(&[("team", "shop")], &[("nettap/capture", "y")]), none);
    }

    #[test]
    fn malformed_expressions_are_refused() {
        let parse = |selector: serde_json::Value| {
            serde_json::from_value::<CaptureTargets>(
                serde_json::json!({"targets": [{"name": "a", "podSelector": selector}]}),
            )
            .map_err(|e| e.to_string())
        };
        let expr = |e: serde_json::Value| parse(serde_json::json!({"matchExpressions": [e]}));
        let err = expr(serde_json::json!({"key": "app", "operator": "In"})).unwrap_err();
        assert!(err.contains("app In: values must not be empty"), "{err}");
        let err = expr(serde_json::json!({"key": "app", "operator": "NotIn", "values": []})).unwrap_err();
        assert!(err.contains("app NotIn: values must not be empty"), "{err}");
        let err = expr(serde_json::json!({"key": "app", "operator": "Exists", "values": ["x"]})).unwrap_err();
        assert!(err.contains("app Exists: values must be empty"), "{err}");
        let err = expr(serde_json::json!({"key": "app", "operator": "Equals", "values": ["x"]})).unwrap_err();
        assert!(err.contains("unknown operator \"Equals\""), "{err}");
        assert!(expr(serde_json::json!({"key": "app", "operator": "In", "valuse": ["x"]})).is_err());
        // A misspelt field would otherwise be a selector that selects everything.
        assert!(parse(serde_json::json!({"matchLabel": {"app": "web"}})).is_err());
        assert!(parse(serde_json::json!({})).is_ok());
    }

    #[test]
    fn annotations_add_remove_and_filter_ports() {
        let t = targets();
        let none = labels(&[]);
        let on = labels(&[(ANNOTATION_CAPTURE, "true"), (ANNOTATION_PORTS, "8080, 8443,x,0,8080")]);
        let d = decide(&pod(&[]), &none, Some(&on), &t);
        assert_eq!(
            d,
            Decision { capture: true, ports: vec![8080, 8443], why: "annotation capture=true".into() }
        );
        // false wins over a target; ports then do not matter.
        let off = labels(&[(ANNOTATION_CAPTURE, "False"), (ANNOTATION_PORTS, "80")]);
        let d = decide(&pod(&[("app", "web")]), &labels(&[("team", "payments")]), Some(&off), &t);
        assert_eq!(d, Decision { capture: false, ports: vec![], why: "annotation capture=false".into() });
        // A port filter alone, on a targeted pod; an unknown capture value is no annotation.
        let ports = labels(&[(ANNOTATION_PORTS, "9090"), (ANNOTATION_CAPTURE, "maybe")]);
        let d = decide(&pod(&[("app", "web")]), &labels(&[("team", "payments")]), Some(&ports), &t);
        assert_eq!((d.capture, d.ports), (true, vec![9090]));
    }

    #[test]
    fn port_lists_are_bounded() {
        assert_eq!(parse_ports("1,2,3,4,5,6,7,8,9,10"), (1..=8).collect::<Vec<u16>>());
        assert_eq!(parse_ports(""), Vec::<u16>::new());
        assert_eq!(parse_ports("65536,-1, 443 "), vec![443]);
    }

    #[test]
    fn targets_file_rejects_unknown_fields() {
        assert!(serde_json::from_str::<CaptureTargets>(r#"{"targets": [{"name": "a", "podSelectr": {}}]}"#)
            .is_err());
        assert_eq!(serde_json::from_str::<CaptureTargets>("{}").unwrap(), CaptureTargets::default());
    }

    #[test]
    fn cgroup_rules_follow_their_pods() {
        let mut decisions = HashMap::new();
        decisions.insert("a".to_string(), Decision { capture: true, ports: vec![80], why: String::new() });
        decisions.insert("b".to_string(), Decision { capture: false, ports: vec![], why: String::new() });
        let cgroups =
            [("a".to_string(), 10), ("a".to_string(), 11), ("b".to_string(), 20), ("c".to_string(), 30)];
        let r = CgroupRules::build(&cgroups, &decisions, false);
        assert_eq!(r.rules.len(), 3);
        assert_eq!(r.rules[&11], (true, vec![80]));
        assert_eq!(r.rules[&20], (false, vec![]));
        assert!(!r.rules.contains_key(&30));
    }
}

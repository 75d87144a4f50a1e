//! Whom a connection talks to (`k8s.peer`): every pod's IP and every
//! Service's cluster IP in the cluster, from reflectors on all namespaces'
//! Pods and Services, each object stripped to its addresses and identity.
//! The index is bounded ([`MAX_PEERS`] addresses) and kept apart from this
//! node's pod index: without it (no RBAC for Services, an API error) capture
//! and the node's pods go on as before.

use super::meta::{controller, PodMeta, Workload};
use super::watch::Stores;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus, Service, ServiceSpec};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use nettap_core::pod::{Peer, ServiceMeta};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

/// Addresses the index holds at most (a pod or Service is ~300 bytes with
/// its labels: ~20 MiB at the bound); the rest are left out and counted.
pub const MAX_PEERS: usize = 65_536;

/// How long changes are gathered before the index is rebuilt (pod churn
/// in a large cluster must not rebuild it for every event).
const SETTLE: Duration = Duration::from_millis(200);

/// IP → pod or Service.
#[derive(Debug, Default)]
pub struct PeerIndex {
    by_ip: HashMap<IpAddr, Peer>,
}

impl PeerIndex {
    /// The index of `pods` and `services`, at most `max` addresses (Services
    /// first: they are fewer and stable); `replicaset_owner(namespace,
    /// name)` names a ReplicaSet's Deployment. Returns it and the number of
    /// addresses left out.
    pub fn build<'a>(
        pods: impl IntoIterator<Item = &'a Pod>,
        services: impl IntoIterator<Item = &'a Service>,
        replicaset_owner: impl Fn(&str, &str) -> Option<Workload>,
        max: usize,
    ) -> (PeerIndex, usize) {
        let mut by_ip = HashMap::new();
        let mut left_out = 0;
        let mut add = |ip: &str, peer: &Peer| match ip.parse::<IpAddr>() {
            Ok(ip) if by_ip.len() < max || by_ip.contains_key(&ip) => {
                by_ip.insert(ip, peer.clone());
            }
            Ok(_) => left_out += 1,
            Err(_) => {}
        };
        for svc in services {
            let m = &svc.metadata;
            let (Some(name), Some(namespace)) = (&m.name, &m.namespace) else { continue };
            let peer = Peer::Service(Arc::new(ServiceMeta {
                service: name.clone(),
                namespace: namespace.clone(),
                labels: m.labels.clone().unwrap_or_default(),
            }));
            let spec = svc.spec.as_ref();
            // Headless Services ("None") have no address of their own.
            for ip in spec.and_then(|s| s.cluster_ips.as_ref()).into_iter().flatten() {
                add(ip, &peer);
            }
        }
        for pod in pods {
            let m = &pod.metadata;
            let (Some(name), Some(namespace), Some(uid)) = (&m.name, &m.namespace, &m.uid) else {
                continue;
            };
            // hostNetwork pods share their node's address: it names none of them.
            if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
                continue;
            }
            let status = pod.status.as_ref();
            // A finished pod's address may be a new pod's already.
            if matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")) {
                continue;
            }
            let workload = controller(m.owner_references.as_deref()).map(|o| {
                let own = Workload { kind: o.kind.clone(), name: o.name.clone() };
                match o.kind.as_str() {
                    "ReplicaSet" => replicaset_owner(namespace, &o.name).unwrap_or(own),
                    _ => own,
                }
            });
            let peer = Peer::Pod(Arc::new(PodMeta {
                pod: name.clone(),
                namespace: namespace.clone(),
                labels: m.labels.clone().unwrap_or_default(),
                workload,
                uid: uid.clone(),
            }));
            for ip in status.and_then(|s| s.pod_ips.as_ref()).into_iter().flatten() {
                add(&ip.ip, &peer);
            }
        }
        (PeerIndex { by_ip }, left_out)
    }

    /// The pod or Service with address `ip`.
    pub fn get(&self, ip: IpAddr) -> Option<&Peer> {
        self.by_ip.get(&ip)
    }

    /// Addresses indexed.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// True when no address is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

/// The index, shared by the capture loop (lookups) and its rebuilder.
#[derive(Debug, Clone, Default)]
pub struct PeerResolver(Arc<RwLock<Arc<PeerIndex>>>);

impl PeerResolver {
    /// The pod or Service with address `ip`, as the index is now.
    pub fn peer_of(&self, ip: IpAddr) -> Option<Peer> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).get(ip).cloned()
    }

    fn set(&self, index: PeerIndex) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
    }
}

/// Starts the Pod and Service reflectors of every namespace on the current
/// tokio runtime and keeps `resolver` up to date (workloads through the
/// node's ReplicaSet store in `stores`). Returns at once: the index fills
/// as the lists arrive.
pub fn start(client: kube::Client, stores: Stores, resolver: PeerResolver) {
    let changed = Arc::new(Notify::new());
    let (pods, pods_w) = reflector::store();
    let (services, svc_w) = reflector::store();
    let pods_stream = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(strip_pod)
        .reflect(pods_w);
    let svc_stream = watcher(Api::<Service>::all(client), watcher::Config::default())
        .default_backoff()
        .modify(strip_service)
        .reflect(svc_w);
    drive("peer pods", pods_stream, changed.clone());
    drive("services", svc_stream, changed.clone());
    tokio::spawn(rebuild(pods, services, stores, resolver, changed));
}

/// Rebuilds the index after changes, once both stores have listed.
async fn rebuild(
    pods: Store<Pod>,
    services: Store<Service>,
    stores: Stores,
    resolver: PeerResolver,
    changed: Arc<Notify>,
) {
    if pods.wait_until_ready().await.is_err() || services.wait_until_ready().await.is_err() {
        return;
    }
    let mut said_left_out = false;
    loop {
        let (p, s) = (pods.state(), services.state());
        let (index, left_out) = PeerIndex::build(
            p.iter().map(|p| &**p),
            s.iter().map(|s| &**s),
            |ns, name| stores.replicaset_owner(ns, name),
            MAX_PEERS,
        );
        if left_out > 0 && !said_left_out {
            warn!(
                left_out,
                max = MAX_PEERS,
                "more pod and Service addresses than the peer index holds: some peers are not named"
            );
        }
        said_left_out = left_out > 0;
        tracing::debug!(addresses = index.len(), "peer index rebuilt");
        resolver.set(index);
        changed.notified().await;
        tokio::time::sleep(SETTLE).await;
    }
}

/// Drives one reflector, waking the rebuild on every event; errors are
/// logged (the watcher retries with backoff).
fn drive<S, K>(resource: &'static str, stream: S, changed: Arc<Notify>)
where
    S: futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        let mut listed = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if failing {
                        info!(resource, "kubernetes API reachable again: watch resumed");
                        failing = false;
                    }
                    if matches!(event, watcher::Event::InitDone) && !listed {
                        listed = true;
                        info!(resource, "peer addresses listed");
                    }
                    changed.notify_one();
                }
                Err(error) => {
                    if !failing {
                        warn!(resource, error = %crate::probes::error_chain(&error), "kubernetes API error: peers of the last known state");
                    }
                    failing = true;
                }
            }
        }
    });
}

/// A pod as the peer index keeps it: identity, labels, owners, whether it
/// uses the host's network, its phase and addresses.
fn strip_pod(pod: &mut Pod) {
    super::watch::keep_labels(&mut pod.metadata);
    let host_network = pod.spec.take().and_then(|s| s.host_network);
    pod.spec = host_network.map(|h| PodSpec { host_network: Some(h), ..Default::default() });
    let status = pod.status.take().unwrap_or_default();
    pod.status = Some(PodStatus { phase: status.phase, pod_ips: status.pod_ips, ..Default::default() });
}

/// A Service as the peer index keeps it: identity, labels, cluster IPs.
fn strip_service(svc: &mut Service) {
    super::watch::keep_labels(&mut svc.metadata);
    svc.metadata.owner_references = None;
    let ips = svc.spec.take().and_then(|s| s.cluster_ips);
    svc.spec = Some(ServiceSpec { cluster_ips: ips, ..Default::default() });
    svc.status = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, extra: serde_json::Value) -> Pod {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "labels": {"app": name},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-rs"),
                    "uid": "r", "controller": true}]},
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
        });
        json_patch(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn json_patch(v: &mut serde_json::Value, extra: serde_json::Value) {
        if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
            for (k, e) in extra {
                match (v.get_mut(&k), e) {
                    (Some(inner), e @ serde_json::Value::Object(_)) => json_patch(inner, e),
                    (_, e) => {
                        v.insert(k, e);
                    }
                }
            }
        }
    }

    fn service(name: &str, ips: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "labels": {"svc": name}},
            "spec": {"clusterIP": ips[0], "clusterIPs": ips, "ports": [{"port": 80}]}
        }))
        .unwrap()
    }

    fn deployment_of(_: &str, rs: &str) -> Option<Workload> {
        Some(Workload { kind: "Deployment".into(), name: rs.trim_end_matches("-rs").into() })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pods_and_services_by_address() {
        let pods = [
            pod("web", "10.244.0.5", json!({})),
            pod(
                "dual",
                "10.244.0.6",
                json!({"status": {"podIPs": [{"ip": "10.244.0.6"}, {"ip": "fd00::6"}]}}),
            ),
            pod("agent", "192.168.1.10", json!({"spec": {"hostNetwork": true}})),
            pod("done", "10.244.0.9", json!({"status": {"phase": "Succeeded"}})),
        ];
        let services = [service("web", json!(["10.96.0.20"])), service("headless", json!(["None"]))];
        let (index, left_out) = PeerIndex::build(&pods, &services, deployment_of, MAX_PEERS);
        assert_eq!(left_out, 0);
        let Some(Peer::Pod(web)) = index.get(ip("10.244.0.5")) else { panic!("web by its IP") };
        assert_eq!((web.pod.as_str(), web.uid.as_str()), ("web", "uid-web"));
        assert_eq!(web.workload, Some(Workload { kind: "Deployment".into(), name: "web".into() }));
        assert_eq!(web.labels["app"], "web");
        for a in ["10.244.0.6", "fd00::6"] {
            assert!(matches!(index.get(ip(a)), Some(Peer::Pod(p)) if p.pod == "dual"), "{a}");
        }
        let Some(Peer::Service(svc)) = index.get(ip("10.96.0.20")) else {
            panic!("the Service by its cluster IP")
        };
        assert_eq!((svc.service.as_str(), svc.namespace.as_str()), ("web", "shop"));
        // The node's address (hostNetwork), a finished pod's: no one's.
        assert_eq!(index.get(ip("192.168.1.10")), None);
        assert_eq!(index.get(ip("10.244.0.9")), None);
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn bounded_services_first() {
        let pods: Vec<Pod> =
            (0..10).map(|i| pod(&format!("p{i}"), &format!("10.244.0.{i}"), json!({}))).collect();
        let services = [service("a", json!(["10.96.0.1"])), service("b", json!(["10.96.0.2"]))];
        let (index, left_out) = PeerIndex::build(&pods, &services, |_, _| None, 5);
        assert_eq!((index.len(), left_out), (5, 7));
        assert!(index.get(ip("10.96.0.1")).is_some() && index.get(ip("10.96.0.2")).is_some());
    }

    #[test]
    fn stripped_to_addresses_and_identity() {
        let mut p = pod("web", "10.244.0.5", json!({"metadata": {"annotations": {"big": "x".repeat(100)}}}));
        strip_pod(&mut p);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["spec"], serde_json::Value::Null);
        assert_eq!(v["status"], json!({"phase": "Running", "podIPs": [{"ip": "10.244.0.5"}]}));
        assert!(v["metadata"]["annotations"].is_null());
        let mut s = service("web", json!(["10.96.0.20"]));
        strip_service(&mut s);
        assert_eq!(serde_json::to_value(&s).unwrap()["spec"], json!({"clusterIPs": ["10.96.0.20"]}));
    }
}

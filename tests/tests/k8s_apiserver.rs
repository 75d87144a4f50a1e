//! The test control plane itself: etcd and kube-apiserver start, serve the
//! API with the admin token, survive an API server restart with their
//! objects, and a process lands in a kubelet-shaped cgroup.

use nettap_e2e::k8s::{container_id, uid, ApiServer, Driver, PodCgroup};
use serde_json::json;
use std::process::Command;

#[test]
fn api_server_serves_keeps_objects_across_a_restart_and_cgroups_take_processes() {
    let mut api = ApiServer::start();
    let version = api.request("GET", "/version", None);
    assert_eq!(version["gitVersion"], "v1.37.2", "{version}");
    let ns = api.namespace("e2e-probe", json!({"team": "a"}));
    let (d, rs) = api.deployment("e2e-probe", "web", &json!({"app": "web"}), json!({}));
    let pod =
        api.pod("e2e-probe", "web-1", "node-a", &json!({"app": "web"}), Some(("apps/v1", "ReplicaSet", &rs)));
    let id = container_id();
    let running = api.pod_running(&pod, &format!("containerd://{id}"));
    assert_eq!(running["status"]["containerStatuses"][0]["containerID"], format!("containerd://{id}"));
    assert_eq!(rs["metadata"]["ownerReferences"][0]["uid"], d["metadata"]["uid"]);
    assert_eq!(ns["metadata"]["labels"]["team"], "a");

    api.stop_apiserver();
    assert_eq!(api.try_request("GET", "/readyz", None), None);
    api.start_apiserver();
    let again = api.request("GET", "/api/v1/namespaces/e2e-probe/pods/web-1", None);
    assert_eq!(uid(&again), uid(&pod));
    let on_node = api.request("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a", None);
    assert_eq!(on_node["items"].as_array().unwrap().len(), 1);

    for driver in [Driver::Systemd, Driver::Cgroupfs] {
        let cg = PodCgroup::new(driver, "besteffort", uid(&pod), "cri-containerd", &id);
        let out = cg.enter(Command::new("cat").arg("/proc/self/cgroup")).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let want = match driver {
            Driver::Systemd => format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope",
                uid(&pod).replace('-', "_")
            ),
            Driver::Cgroupfs => format!("0::/kubepods/besteffort/pod{}/{id}", uid(&pod)),
        };
        assert!(text.lines().any(|l| l == want), "{want} not in\n{text}");
        let parsed = nettap_sensor::k8s::cgroup::parse(&text);
        assert_eq!(parsed.pod_uid.as_deref(), Some(uid(&pod)));
        assert_eq!(parsed.container_id.as_deref(), Some(id.as_str()));
    }
}

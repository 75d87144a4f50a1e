//! `/proc/PID/cgroup` → the container and pod a process runs in, without I/O.
//!
//! The kubelet names a pod's cgroup after the pod's UID and the runtime names
//! the container's after its ID, in one of these shapes (cgroup v2 shows one
//! `0::` line; v1 one line per hierarchy, any of which has the same path):
//!
//! | driver | path |
//! |---|---|
//! | systemd | `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<UID with _>.slice/cri-containerd-<ID>.scope` |
//! | systemd, Guaranteed QoS | `/kubepods.slice/kubepods-pod<UID with _>.slice/crio-<ID>.scope` |
//! | cgroupfs | `/kubepods/burstable/pod<UID>/<ID>` (also Docker through cri-dockerd) |
//!
//! with `docker-<ID>.scope` for Docker under systemd. CRI-O's monitor runs in
//! `crio-conmon-<ID>.scope`: the pod's, but no container's. Paths may carry a
//! prefix (a node inside a container: `/docker/<id>/kubepods/…`) or, seen
//! from inside a cgroup namespace, start with `/..`: only the pod component
//! and the one after it are read.

/// What a process's cgroup says about it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupRef {
    /// The pod's UID (with dashes, as in `metadata.uid`), when under a pod's cgroup.
    pub pod_uid: Option<String>,
    /// The container's ID (64 hex digits, as in `status.containerStatuses[].containerID`
    /// after `<runtime>://`), when in a container's cgroup.
    pub container_id: Option<String>,
}

impl CgroupRef {
    /// True when neither a pod nor a container was found.
    pub fn is_empty(&self) -> bool {
        self.pod_uid.is_none() && self.container_id.is_none()
    }
}

/// Reads the contents of `/proc/PID/cgroup`. The first line naming a pod
/// wins; otherwise the first naming a container (Docker or containerd
/// outside Kubernetes).
pub fn parse(contents: &str) -> CgroupRef {
    let mut found = CgroupRef::default();
    for line in contents.lines() {
        // hierarchy-ID:controller-list:cgroup-path (the path may hold ':').
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(_), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let r = parse_path(path);
        if r.pod_uid.is_some() {
            return r;
        }
        if found.container_id.is_none() {
            found = r;
        }
    }
    found
}

/// One cgroup path (`/kubepods/…`).
pub fn parse_path(path: &str) -> CgroupRef {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // The innermost pod component: a pod's cgroup never holds another pod's.
    if let Some(i) = parts.iter().rposition(|p| pod_uid(p).is_some()) {
        return CgroupRef {
            pod_uid: pod_uid(parts[i]),
            container_id: parts.get(i + 1).and_then(|p| container_id(p)).map(str::to_owned),
        };
    }
    // Outside Kubernetes: the innermost component that is a container.
    let container = parts.iter().rev().find_map(|p| container_id(p)).map(str::to_owned);
    CgroupRef { pod_uid: None, container_id: container }
}

/// `pod<UID>` (cgroupfs) or `kubepods[-<qos>]-pod<UID_with_underscores>.slice` (systemd).
fn pod_uid(component: &str) -> Option<String> {
    let uid = if let Some(slice) = component.strip_suffix(".slice") {
        if !slice.starts_with("kubepods-") {
            return None;
        }
        let at = slice.rfind("-pod")?;
        slice[at + 4..].replace('_', "-")
    } else {
        component.strip_prefix("pod")?.to_owned()
    };
    is_uid(&uid).then_some(uid)
}

/// A UUID as the API server writes them: 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The container ID in `cri-containerd-<ID>.scope`, `crio-<ID>.scope`,
/// `docker-<ID>.scope`, `cri-dockerd-<ID>.scope` or a bare `<ID>`; not
/// CRI-O's `crio-conmon-<ID>.scope`.
fn container_id(component: &str) -> Option<&str> {
    let id = match component.strip_suffix(".scope") {
        Some(scope) => ["cri-containerd-", "crio-", "docker-", "cri-dockerd-"]
            .iter()
            .find_map(|prefix| scope.strip_prefix(prefix))?,
        None => component,
    };
    (id.len() == 64 && id.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))).then_some(id)
}

/// The ID in a `containerID` of the pod status (`containerd://<ID>`,
/// `cri-o://<ID>`, `docker://<ID>`).
pub fn status_container_id(container_id: &str) -> &str {
    container_id.split_once("://").map_or(container_id, |(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "7c5cd3a4-0b8e-4a53-9d43-1f2e3d4c5b6a";
    const UID_: &str = "7c5cd3a4_0b8e_4a53_9d43_1f2e3d4c5b6a";

    fn both() -> CgroupRef {
        CgroupRef { pod_uid: Some(UID.into()), container_id: Some(ID.into()) }
    }

    #[test]
    fn cgroup_v2_systemd_driver_each_runtime_and_qos() {
        for qos in
            ["kubepods-besteffort.slice/kubepods-besteffort", "kubepods-burstable.slice/kubepods-burstable"]
        {
            for scope in ["cri-containerd", "crio", "docker", "cri-dockerd"] {
                let f = format!("0::/kubepods.slice/{qos}-pod{UID_}.slice/{scope}-{ID}.scope\n");
                assert_eq!(parse(&f), both(), "{f}");
            }
        }
        // Guaranteed QoS: no QoS level in the path.
        assert_eq!(parse(&format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope\n")), both());
    }

    #[test]
    fn cgroup_v2_cgroupfs_driver() {
        for qos in ["besteffort/", "burstable/", ""] {
            assert_eq!(parse(&format!("0::/kubepods/{qos}pod{UID}/{ID}\n")), both(), "{qos}");
        }
    }

    #[test]
    fn cgroup_v1_lines_per_hierarchy() {
        let f = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{ID}\n\
             11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n\
             1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n\
             0::/\n"
        );
        assert_eq!(parse(&f), both());
        let f = format!(
            "5:memory:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{ID}.scope\n\
             1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{ID}.scope\n"
        );
        assert_eq!(parse(&f), both());
    }

    #[test]
    fn prefixes_and_cgroup_namespace_views() {
        // A node that is itself a container (kind), and a view from inside a cgroup namespace.
        assert_eq!(parse(&format!("0::/docker/{ID}/kubepods/besteffort/pod{UID}/{ID}\n")), both());
        let f = format!("0::/../../kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope\n");
        assert_eq!(parse(&f), both());
    }

    #[test]
    fn pod_without_container() {
        let pod_only = CgroupRef { pod_uid: Some(UID.into()), container_id: None };
        // CRI-O's conmon, the pod cgroup itself, an unknown child.
        for f in [
            format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope\n"),
            format!("0::/kubepods/besteffort/pod{UID}\n"),
            format!("0::/kubepods/besteffort/pod{UID}/not-an-id\n"),
        ] {
            assert_eq!(parse(&f), pod_only, "{f}");
        }
    }

    #[test]
    fn containers_outside_kubernetes_and_plain_processes() {
        let container = CgroupRef { pod_uid: None, container_id: Some(ID.into()) };
        assert_eq!(parse(&format!("0::/system.slice/docker-{ID}.scope\n")), container);
        assert_eq!(parse(&format!("0::/docker/{ID}\n")), container);
        for f in
            ["0::/user.slice/user-0.slice/session-1.scope\n", "0::/\n", "", "garbage\n", "0::/init.scope"]
        {
            assert!(parse(f).is_empty(), "{f:?}");
        }
    }

    #[test]
    fn look_alikes_are_not_pods_or_containers() {
        for f in [
            format!("0::/kubepods/besteffort/pod{}/x\n", &UID[..35]), // short UID
            format!("0::/kubepods/besteffort/pod{}/x\n", UID.replace('-', "x")),
            format!("0::/system.slice/podman-pod{UID_}.slice\n"), // not kubepods-
            format!("0::/system.slice/docker-{}.scope\n", &ID[..63]),
            format!("0::/system.slice/docker-{}.scope\n", ID.to_uppercase()),
            format!("0::/system.slice/containerd-{ID}.scope\n"),
        ] {
            assert!(parse(&f).is_empty(), "{f}");
        }
    }

    #[test]
    fn status_ids_lose_their_runtime_scheme() {
        assert_eq!(status_container_id(&format!("containerd://{ID}")), ID);
        assert_eq!(status_container_id(&format!("cri-o://{ID}")), ID);
        assert_eq!(status_container_id(ID), ID);
    }
}

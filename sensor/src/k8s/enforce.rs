//! The kernel's side of the capture decisions: finding pods' cgroups on the
//! host, and writing their rules into `cgroup_policy` / `cgroup_mode`.

use super::cgroup;
use super::policy::CgroupRules;
use crate::bpf::events::{nt_cgroup_policy, NT_CGROUP_UNLISTED_CAPTURED, NT_CGROUP_UNLISTED_SKIPPED};
use crate::probes::ProbeError;
use aya::maps::{Array, HashMap as BpfHashMap};
use aya::Ebpf;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Directories visited at most per scan.
const MAX_DIRS: usize = 200_000;
/// Depth of the cgroup tree looked at.
const MAX_DEPTH: usize = 12;

/// Where the cgroup v2 hierarchy is mounted, from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let infos = procfs::process::Process::myself().and_then(|p| p.mountinfo()).ok()?;
    // Mount points with spaces would be octal-escaped; cgroup mounts have none.
    infos.into_iter().find(|m| m.fs_type == "cgroup2").map(|m| m.mount_point)
}

/// `CGROUP2_SUPER_MAGIC` (linux/magic.h): `statfs` of a cgroup v2 mount.
const CGROUP2_MAGIC: i64 = 0x6367_7270;

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: `c` is a valid C string and `st` a properly sized, writable statfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == CGROUP2_MAGIC }
}

/// The cgroup v2 hierarchy at or under `root` (the host's `/sys/fs/cgroup`
/// as configured): `root` itself on a cgroup v2 host, `root/unified` on a
/// hybrid one (cgroup v1 controllers with v2 at `unified`, where runc puts
/// each container into both). `None` when neither is cgroup v2: the
/// directories of a v1 hierarchy are not the ids the kernel side looks up.
pub fn cgroup2_under(root: &Path) -> Option<PathBuf> {
    [root.to_path_buf(), root.join("unified")].into_iter().find(|p| is_cgroup2(p))
}

/// Every cgroup under `root` that belongs to a pod: (pod UID, cgroup id).
pub fn pod_cgroups(root: &Path) -> Vec<(String, u64)> {
    pod_cgroup_refs(root).into_iter().filter_map(|(id, cg)| Some((cg.pod_uid?, id))).collect()
}

/// Every cgroup under `root` that belongs to a pod (its own and its
/// containers'): (cgroup id, what its path says). The id of a cgroup v2
/// directory is its inode number, which is what `bpf_get_current_cgroup_id`
/// returns for a task in it.
pub fn pod_cgroup_refs(root: &Path) -> Vec<(u64, cgroup::CgroupRef)> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    let mut visited = 0;
    while let Some((dir, depth)) = stack.pop() {
        visited += 1;
        if visited > MAX_DIRS {
            tracing::warn!(root = %root.display(), "cgroup tree larger than {MAX_DIRS} directories: scan cut short");
            break;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            let Ok(rel) = path.strip_prefix(root) else { continue };
            let cg = cgroup::parse_path(&rel.to_string_lossy());
            if cg.pod_uid.is_some() {
                if let Ok(m) = e.metadata() {
                    found.push((m.ino(), cg));
                }
            }
            if depth + 1 < MAX_DEPTH {
                stack.push((path, depth + 1));
            }
        }
    }
    found
}

/// Writes `rules` into the kernel's maps, changing only what differs from
/// `applied` (what was written before), which it then equals.
pub fn apply(ebpf: &mut Ebpf, applied: &mut CgroupRules, rules: &CgroupRules) -> Result<(), ProbeError> {
    let err =
        |map: &'static str| move |e: aya::maps::MapError| ProbeError::Map { map, detail: e.to_string() };
    {
        let mut map: BpfHashMap<_, u64, nt_cgroup_policy> =
            BpfHashMap::try_from(ebpf.map_mut("cgroup_policy").ok_or(missing("cgroup_policy"))?)
                .map_err(err("cgroup_policy"))?;
        for id in applied.rules.keys().filter(|id| !rules.rules.contains_key(id)) {
            // Gone already when its cgroup was removed with its last process: no matter.
            let _ = map.remove(id);
        }
        let mut full = 0;
        for (id, rule) in rules.rules.iter().filter(|(id, r)| applied.rules.get(id) != Some(r)) {
            if map.insert(id, &policy(rule), 0).is_err() {
                full += 1;
            }
        }
        if full > 0 {
            // Those cgroups get what unlisted ones get; said, not hidden.
            tracing::warn!(
                cgroups = full,
                "capture rules not written: cgroup_policy is full (max_pod_cgroups)"
            );
        }
    }
    let mut mode: Array<_, u32> = Array::try_from(ebpf.map_mut("cgroup_mode").ok_or(missing("cgroup_mode"))?)
        .map_err(err("cgroup_mode"))?;
    let m = if rules.unlisted_captured { NT_CGROUP_UNLISTED_CAPTURED } else { NT_CGROUP_UNLISTED_SKIPPED };
    mode.set(0, &m, 0).map_err(err("cgroup_mode"))?;
    let captured = rules.rules.values().filter(|(c, _)| *c).count();
    tracing::info!(
        cgroups = rules.rules.len(),
        captured,
        unlisted_captured = rules.unlisted_captured,
        "kubernetes capture rules applied"
    );
    *applied = rules.clone();
    Ok(())
}

fn missing(map: &'static str) -> ProbeError {
    ProbeError::Map { map, detail: "missing".into() }
}

fn policy((capture, ports): &(bool, Vec<u16>)) -> nt_cgroup_policy {
    let mut p = nt_cgroup_policy { capture: *capture as u16, nports: ports.len() as u16, ports: [0; 8] };
    for (slot, port) in p.ports.iter_mut().zip(ports) {
        *slot = *port;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_hierarchy_is_found_under_the_hosts_cgroup_root() {
        // v2 at /sys/fs/cgroup, or at /sys/fs/cgroup/unified on a hybrid host
        // (ours): the same mount /proc/self/mountinfo names.
        assert_eq!(cgroup2_under(Path::new("/sys/fs/cgroup")), cgroup2_mount());
        assert_eq!(cgroup2_under(Path::new("/proc")), None);
    }
}

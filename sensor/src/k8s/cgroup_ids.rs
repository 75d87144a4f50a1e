//! Pod cgroups by id. Events carry the cgroup v2 id of the process that
//! made them, so a process that exited before the sensor looked it up (a
//! `curl` in a loop, a `kubectl exec`, while the capture loop was busy
//! attaching probes) is still named by its pod: its `/proc/PID/cgroup` is
//! gone, its pod's and container's cgroups are not.

use super::cgroup::CgroupRef;
use super::enforce;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Cgroups remembered at most (a node's pods and containers, ≈ 150 B each).
const MAX_IDS: usize = 65_536;
/// Shortest time between two walks of the cgroup tree.
const WALK_EVERY: Duration = Duration::from_secs(1);

/// Cgroup id → what its path says.
#[derive(Debug, Default)]
pub struct CgroupIds {
    /// The cgroup v2 hierarchy walked on a miss (none: ids are only learnt).
    root: Option<PathBuf>,
    by_id: HashMap<u64, CgroupRef>,
    walked: Option<Instant>,
}

impl CgroupIds {
    /// Ids found under `root`, when there is one.
    pub fn new(root: Option<PathBuf>) -> Self {
        Self { root, ..Self::default() }
    }

    /// A process's cgroup as read from /proc, under the id its event gave.
    pub fn learn(&mut self, id: u64, cg: &CgroupRef) {
        if id == 0 || cg.pod_uid.is_none() || self.by_id.get(&id) == Some(cg) {
            return;
        }
        if self.by_id.len() >= MAX_IDS {
            self.by_id.clear();
        }
        self.by_id.insert(id, cg.clone());
    }

    /// The cgroup with this id, if remembered.
    pub fn get_learnt(&self, id: u64) -> Option<CgroupRef> {
        self.by_id.get(&id).cloned()
    }

    /// The cgroup with this id: remembered, or found by walking the tree
    /// (at most once per WALK_EVERY; the walk replaces what was remembered,
    /// so cgroups removed since are forgotten).
    pub fn get(&mut self, id: u64) -> Option<CgroupRef> {
        if id == 0 || self.by_id.contains_key(&id) {
            return self.get_learnt(id);
        }
        let root = self.root.as_deref()?;
        if self.walked.is_some_and(|at| at.elapsed() < WALK_EVERY) {
            return None;
        }
        self.walked = Some(Instant::now());
        self.by_id = enforce::pod_cgroup_refs(root).into_iter().take(MAX_IDS).collect();
        self.by_id.get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn pod(uid: &str) -> CgroupRef {
        CgroupRef { pod_uid: Some(uid.into()), container_id: None }
    }

    #[test]
    fn learnt_ids_are_kept_and_others_found_by_walking_once_a_second() {
        // A tree shaped as the kubelet's cgroupfs driver makes it.
        let root = tempfile::tempdir().unwrap();
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let cid = "a".repeat(64);
        let container = root.path().join(format!("kubepods/burstable/pod{uid}/{cid}"));
        std::fs::create_dir_all(&container).unwrap();
        let id = std::fs::metadata(&container).unwrap().ino();

        let mut ids = CgroupIds::new(Some(root.path().to_path_buf()));
        ids.learn(7, &pod("learnt"));
        ids.learn(8, &CgroupRef::default()); // no pod: not kept
        ids.learn(0, &pod("no id"));
        assert_eq!(ids.get(7), Some(pod("learnt")));
        assert_eq!((ids.get(8), ids.get(0)), (None, None));
        let found = ids.get(id).expect("found by walking");
        assert_eq!(found.pod_uid.as_deref(), Some(uid));
        assert_eq!(found.container_id.as_deref(), Some(cid.as_str()));
        // A cgroup made after the walk waits for the next one.
        let later = root.path().join("kubepods/besteffort/pod11111111-2222-3333-4444-555555555555");
        std::fs::create_dir_all(&later).unwrap();
        let later_id = std::fs::metadata(&later).unwrap().ino();
        assert_eq!(ids.get(later_id), None, "no second walk within a second");
        std::thread::sleep(WALK_EVERY);
        assert!(ids.get(later_id).is_some());
        assert_eq!(ids.get(7), None, "the walk replaced what was learnt: only what exists is kept");
        assert!(CgroupIds::new(None).get(id).is_none(), "no tree, nothing to walk");
    }
}

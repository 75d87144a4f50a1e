//! Which files were already examined for TLS code. A file is named by its
//! inode number, size, and modification and change times: under churn (a
//! fresh library copy or a new build per process) a deleted file's inode
//! number comes back for a new file, which must be examined again, not
//! taken for the old one. The set of examined files is bounded: when full
//! it starts over, which costs only examining again (probed files are kept
//! apart, never forgotten so, since probing a file twice would report its
//! calls twice).
//!
//! The device is left out: a container's files are on overlayfs, whose
//! every mount has a device of its own, while a file of an image layer is
//! one file underneath, shared by every container of the image, and that
//! real file is what a uprobe is set on. Its overlay views all give the
//! real file's inode number and times (layers on one filesystem, as
//! container runtimes keep them), and so does the real file itself, which
//! is what the exec gate's fanotify events hand over. With the device, a
//! program was probed once as itself (the exec gate) and once more per
//! container running it, and each of its calls ran the programs as often.
//! Two different files with the same inode number on two filesystems would
//! also need equal sizes and times to the nanosecond to be taken for one
//! another.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;

/// A file's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    /// The identity of the file `meta` describes.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Files examined at most (≈ 50 B each).
pub const MAX_EXAMINED: usize = 16384;

/// Files examined, bounded.
#[derive(Debug, Default)]
pub struct Examined(HashSet<FileId>);

impl Examined {
    /// True if `id` was not examined yet (it is now).
    pub fn insert(&mut self, id: FileId) -> bool {
        if self.0.len() >= MAX_EXAMINED && !self.0.contains(&id) {
            self.0.clear();
        }
        self.0.insert(id)
    }

    /// Files remembered.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_on_a_reused_inode_is_new_and_the_set_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lib");
        std::fs::write(&path, b"one").unwrap();
        let first = FileId::of(&std::fs::metadata(&path).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"two").unwrap();
        let second = FileId::of(&std::fs::metadata(&path).unwrap());
        assert_ne!(first, second, "same inode or not, another file");
        let mut e = Examined::default();
        assert!(e.insert(first));
        assert!(!e.insert(first));
        assert!(e.insert(second));
        for ino in 0..(2 * MAX_EXAMINED) as u64 {
            e.insert(FileId { ino, ..first });
        }
        assert!(e.len() <= MAX_EXAMINED);
    }

    /// Two containers of one image: two overlay mounts of one lower layer.
    /// A file of that layer is one identity through both and as itself; a
    /// file copied up (written in one container) is another.
    #[test]
    fn a_layer_file_is_one_file_through_every_overlay_mount() {
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        std::fs::create_dir(&lower).unwrap();
        std::fs::write(lower.join("lib.so"), b"shared").unwrap();
        let mount = |n: &str| {
            let [upper, work, at] = ["u", "w", "m"].map(|d| dir.path().join(format!("{d}{n}")));
            for d in [&upper, &work, &at] {
                std::fs::create_dir(d).unwrap();
            }
            let opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            );
            let st = std::process::Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &opts])
                .arg(&at)
                .status()
                .expect("mount (util-linux)");
            assert!(st.success(), "mounting an overlay needs root and overlayfs");
            at
        };
        let (one, two) = (mount("1"), mount("2"));
        let id = |p: std::path::PathBuf| FileId::of(&std::fs::metadata(p).unwrap());
        let (a, b, real) = (id(one.join("lib.so")), id(two.join("lib.so")), id(lower.join("lib.so")));
        std::fs::write(two.join("own.so"), b"copied up").unwrap();
        let own = id(two.join("own.so"));
        for at in [&one, &two] {
            let _ = std::process::Command::new("umount").arg(at).status();
        }
        assert_eq!(a, b, "the same layer file through two mounts");
        assert_eq!(a, real, "the layer file itself");
        assert_ne!(own, a);
    }
}

//! Which files were already examined for TLS code. A file is named by its
//! device, inode and change time: under churn (a fresh library copy or a
//! new build per process) a deleted file's inode number comes back for a
//! new file, which must be examined again, not taken for the old one. The
//! set of examined files is bounded: when full it starts over, which costs
//! only examining again (probed files are kept apart, never forgotten so,
//! since probing a file twice would report its calls twice).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;

/// A file's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

impl FileId {
    /// The identity of the file `meta` describes.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self { dev: meta.dev(), ino: meta.ino(), ctime: meta.ctime(), ctime_nsec: meta.ctime_nsec() }
    }

    /// Its device as `stat` gives it.
    pub fn dev(&self) -> u64 {
        self.dev
    }

    /// Its inode number.
    pub fn ino(&self) -> u64 {
        self.ino
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
}

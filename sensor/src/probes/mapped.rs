//! The files a process has mapped (`/proc/PID/maps`, read by `procfs`), as
//! paths this sensor can open: through `/proc/PID/root` (the process's own
//! root, so inside containers too), or, for a file deleted since it was
//! mapped (a library upgraded under a running program), through
//! `/proc/PID/map_files/`, which still reaches the mapped inode where the
//! old path would now name the new file.

use procfs::process::{MMapPath, Process};
use std::path::{Path, PathBuf};

/// What `/proc/PID/maps` appends to the path of a file deleted since.
const DELETED: &str = " (deleted)";

/// One mapped file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The path as the process sees it (without ` (deleted)`).
    pub path: PathBuf,
    /// A path this sensor can open that names the same inode.
    pub reachable: PathBuf,
    /// The inode the process mapped.
    pub inode: u64,
}

/// The files process `pid` has mapped whose name `wanted` accepts, each once
/// (empty when the process is gone).
pub fn mapped_files(pid: u32, wanted: impl Fn(&Path) -> bool) -> Vec<Mapped> {
    let Ok(maps) = Process::new(pid as i32).and_then(|p| p.maps()) else { return Vec::new() };
    let mut out: Vec<Mapped> = Vec::new();
    for m in maps {
        let MMapPath::Path(p) = &m.pathname else { continue };
        let text = p.to_string_lossy();
        let (path, deleted) = match text.strip_suffix(DELETED) {
            Some(kept) => (PathBuf::from(kept), true),
            None => (p.clone(), false),
        };
        if !path.is_absolute() || !wanted(&path) || out.iter().any(|o| o.inode == m.inode && o.path == path) {
            continue;
        }
        let reachable = if deleted {
            PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.address.0, m.address.1))
        } else {
            let mut r = PathBuf::from(format!("/proc/{pid}/root"));
            r.push(path.strip_prefix("/").unwrap_or(&path));
            r
        };
        out.push(Mapped { path, reachable, inode: m.inode });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn paths_with_spaces_and_deleted_files_are_found_and_reachable() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a dir with spaces");
        std::fs::create_dir(&sub).unwrap();
        let (kept, gone) = (sub.join("libssl.so.3"), sub.join("libssl.so.old"));
        std::fs::write(&kept, vec![1u8; 8192]).unwrap();
        std::fs::write(&gone, vec![2u8; 8192]).unwrap();
        let open = |p: &Path| std::fs::File::open(p).unwrap();
        // SAFETY: read-only maps of files only this test writes.
        let (m1, m2) =
            unsafe { (memmap2::Mmap::map(&open(&kept)).unwrap(), memmap2::Mmap::map(&open(&gone)).unwrap()) };
        let gone_ino = std::fs::metadata(&gone).unwrap().ino();
        std::fs::remove_file(&gone).unwrap();

        let found = mapped_files(std::process::id(), |p| p.starts_with(&sub));
        assert_eq!(found.len(), 2, "{found:?}");
        let k = found.iter().find(|m| m.path == kept).expect("the file with spaces in its path");
        assert_eq!(std::fs::read(&k.reachable).unwrap()[0], 1);
        let g = found.iter().find(|m| m.path == gone).expect("the deleted file, without ' (deleted)'");
        assert_eq!(g.inode, gone_ino);
        assert!(g.reachable.starts_with(format!("/proc/{}/map_files", std::process::id())), "{g:?}");
        assert_eq!(std::fs::read(&g.reachable).unwrap()[0], 2, "map_files reaches the deleted inode");
        drop((m1, m2));
        assert!(mapped_files(u32::MAX - 1, |_| true).is_empty());
    }
}

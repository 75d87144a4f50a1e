//! Files that carry uprobes, and when they may lose them. A uprobe holds its
//! file's inode: a library copy or a build deleted long ago would keep its
//! disk space, its probes (kernel memory) and our tables' entries for as
//! long as the sensor runs, and under churn (a fresh copy or build per
//! process) that grows without bound. A probed file is released once it is
//! deleted (no path can map it again) and no process maps it any more.
//! Files still on disk keep their probes: a new process may map them at any
//! time, and a mapping is only seen after it happened.
//!
//! "Maps it" is read from `/proc/PID/maps`, which names a file by device and
//! inode as the kernel sees the mapping (on overlayfs that need not be what
//! `stat` says). So each probed file is mapped here too, one page that is
//! never touched, and our own maps line gives the name every other
//! process's line carries for it.

use super::file_id::{Examined, FileId};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;

/// A file as `/proc/PID/maps` names it: (major, minor, inode).
pub type MapsName = (i32, i32, u64);

/// One probed file, held so that its link count can be read.
struct Held {
    file: File,
    /// As logs name it.
    target: String,
    /// Keeps our own maps line (see the module's comment).
    _page: memmap2::Mmap,
    name: MapsName,
}

/// A file opened to be examined for the first time: held open (its probes
/// name it), its identity, and a read-only mapping of it.
pub struct Unexamined {
    pub file: File,
    pub key: FileId,
    pub map: memmap2::Mmap,
}

/// Opens and maps `path` unless a file of its identity is probed already or
/// was examined before (it counts as examined from now on).
pub fn open_unexamined(
    path: &std::path::Path,
    probed: &ProbedFiles,
    examined: &mut Examined,
) -> Option<Unexamined> {
    let file = File::open(path).ok()?;
    let key = FileId::of(&file.metadata().ok()?);
    if probed.contains(&key) || Some(&key) == own_executable() || !examined.insert(key) {
        return None;
    }
    // SAFETY: read-only private mapping of a file we hold open; callers read
    // only headers, symbol tables, strings and the functions they probe.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    Some(Unexamined { file, key, map })
}

/// The sensor's own executable: never examined. The sensor captures nothing
/// of itself, and searching its symbols (rustls, Go) cost seconds of every
/// start; other sensors running the same file (tests) are passed over too.
fn own_executable() -> Option<&'static FileId> {
    static OWN: std::sync::OnceLock<Option<FileId>> = std::sync::OnceLock::new();
    OWN.get_or_init(|| std::fs::metadata("/proc/self/exe").ok().map(|m| FileId::of(&m))).as_ref()
}

/// Probed files by identity; `None` for one that could not be held, which
/// is never released.
#[derive(Default)]
pub struct ProbedFiles {
    files: HashMap<FileId, Option<Held>>,
}

impl ProbedFiles {
    /// Whether a file with this identity is probed.
    pub fn contains(&self, id: &FileId) -> bool {
        self.files.contains_key(id)
    }

    /// Files probed.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Records `file` (now probed, named `target` in logs) under `id`. When
    /// it cannot be held (an empty file, no fd left), it is recorded and
    /// never released: keeping probes is safe, losing them while in use is not.
    pub fn insert(&mut self, id: FileId, file: &File, target: &str) {
        let held = hold(file, target).inspect_err(
            |e| tracing::debug!(error = %e, "a probed file cannot be held; its probes stay until the end"),
        );
        self.files.insert(id, held.ok());
    }

    /// How the probed files that were deleted are named in maps.
    pub fn deleted(&self) -> impl Iterator<Item = MapsName> + '_ {
        self.files.values().flatten().filter(|h| h.deleted()).map(|h| h.name)
    }

    /// Removes the deleted files no process maps (`in_use` holds what some
    /// process maps, from [`mapped_by_others`]) and detaches their uprobes
    /// (all on one thread: `loader::release_uprobes`). Returns each file's
    /// identity, its name in logs and how many links it had.
    pub fn release_unused(&mut self, in_use: &HashSet<MapsName>) -> Vec<(FileId, String, usize)> {
        let gone: Vec<FileId> = self
            .files
            .iter()
            .filter(|(_, h)| h.as_ref().is_some_and(|h| h.deleted() && !in_use.contains(&h.name)))
            .map(|(id, _)| *id)
            .collect();
        let links = super::loader::release_uprobes(&gone);
        gone.into_iter()
            .zip(links)
            .filter_map(|(id, links)| Some((id, self.files.remove(&id)??.target, links)))
            .collect()
    }

    /// [`ProbedFiles::release_unused`] for programs of one kind (`what`: "rustls
    /// program"), each release logged; returns how many.
    pub fn release_unused_programs(&mut self, in_use: &HashSet<MapsName>, what: &str) -> usize {
        let gone = self.release_unused(in_use);
        for (_, target, links) in &gone {
            tracing::info!(target, links, "probes detached from a deleted {what} no process runs");
        }
        gone.len()
    }
}

impl Held {
    fn deleted(&self) -> bool {
        self.file.metadata().is_ok_and(|m| m.nlink() == 0)
    }
}

fn hold(file: &File, target: &str) -> std::io::Result<Held> {
    let file = file.try_clone()?;
    // SAFETY: a read-only private mapping of one page that is never read.
    let page = unsafe { memmap2::MmapOptions::new().len(1).map(&file)? };
    let start = page.as_ptr() as u64;
    let name = file_mappings(std::process::id() as i32)?
        .into_iter()
        .find(|(addr, _)| *addr == start)
        .map(|(_, name)| name)
        .ok_or_else(|| std::io::Error::other("our own mapping is not in /proc/self/maps"))?;
    Ok(Held { file, target: target.to_string(), _page: page, name })
}

/// (start address, file name) of each file mapping of process `pid`, read
/// by `procfs` as `mapped.rs` reads them.
fn file_mappings(pid: i32) -> std::io::Result<Vec<(u64, MapsName)>> {
    let maps = procfs::process::Process::new(pid)
        .and_then(|p| p.maps())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(maps
        .into_iter()
        .filter(|m| m.inode != 0)
        .map(|m| (m.address.0, (m.dev.0, m.dev.1, m.inode)))
        .collect())
}

/// Which of `wanted` some process other than this one maps. Reads every
/// process's maps: called only when a probed file was deleted, and stops
/// as soon as every wanted file is found in use.
pub fn mapped_by_others(wanted: &HashSet<MapsName>) -> HashSet<MapsName> {
    let mut found = HashSet::new();
    if wanted.is_empty() {
        return found;
    }
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else { return wanted.clone() };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        // A process that exits meanwhile maps nothing.
        let Ok(mappings) = file_mappings(pid as i32) else { continue };
        found.extend(mappings.into_iter().map(|(_, name)| name).filter(|n| wanted.contains(n)));
        if found.len() == wanted.len() {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::process::{Command, Stdio};

    #[test]
    fn the_own_executable_is_never_examined_and_others_once() {
        let (probed, mut examined) = (ProbedFiles::default(), Examined::default());
        let own = std::path::Path::new("/proc/self/exe");
        assert!(open_unexamined(own, &probed, &mut examined).is_none());
        let other = std::path::Path::new("/bin/sh");
        assert!(open_unexamined(other, &probed, &mut examined).is_some());
        assert!(open_unexamined(other, &probed, &mut examined).is_none(), "once per identity");
    }

    /// The real thing: a deleted file is released only once the process
    /// that maps it is gone; one still on disk never is.
    #[test]
    fn a_deleted_file_is_released_when_no_process_maps_it() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, gone) = (dir.path().join("kept.so"), dir.path().join("gone.so"));
        std::fs::write(&kept, vec![1u8; 4096]).unwrap();
        std::fs::write(&gone, vec![2u8; 4096]).unwrap();
        let mut probed = ProbedFiles::default();
        let id = |p: &std::path::Path| FileId::of(&std::fs::metadata(p).unwrap());
        let (kept_id, gone_id) = (id(&kept), id(&gone));
        probed.insert(kept_id, &File::open(&kept).unwrap(), "kept");
        probed.insert(gone_id, &File::open(&gone).unwrap(), "gone");

        // Another process maps `gone` (as a loader maps a library), then it is deleted.
        let script = "import mmap,sys,time\nf=open(sys.argv[1],'rb')\nm=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)\nprint('mapped',flush=True)\ntime.sleep(60)";
        let mut child = Command::new("python3")
            .args(["-c", script, gone.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = [0u8; 7];
        child.stdout.as_mut().unwrap().read_exact(&mut line).unwrap();
        std::fs::remove_file(&gone).unwrap();

        let deleted: HashSet<MapsName> = probed.deleted().collect();
        assert_eq!(deleted.len(), 1, "only the deleted file is a candidate");
        let in_use = mapped_by_others(&deleted);
        assert_eq!(in_use, deleted, "the child maps it");
        assert!(probed.release_unused(&in_use).is_empty());

        child.kill().unwrap();
        child.wait().unwrap();
        let in_use = mapped_by_others(&deleted);
        assert!(in_use.is_empty(), "our own page does not count");
        assert_eq!(probed.release_unused(&in_use), vec![(gone_id, "gone".to_string(), 0)]);
        assert!(probed.contains(&kept_id) && !probed.contains(&gone_id));
        assert_eq!(probed.deleted().count(), 0);
    }
}

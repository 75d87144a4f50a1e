//! The node-local records store: JSON Lines files in one directory that only
//! the sensor's user may enter (0700; files 0600), rotated by size, bounded
//! in count and so in total bytes. When a new file would pass the bound, the
//! oldest file goes first, and what went is said: a `drop` record
//! (`reason: "file_store_evicted"`, its records and bytes) opens the new file,
//! and a log line (counts only) says the same.
//!
//! Records are whole lines: [`FileStore::write_record`] takes one line;
//! through `io::Write` (behind a buffered JSON Lines writer) a file is
//! rotated only right after a newline, so no record spans two files.

use nettap_core::record::{Body, DropRecord, Origin, Record};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// File names: `records-<sequence>.jsonl`, zero-padded so names sort in order.
const PREFIX: &str = "records-";
const SUFFIX: &str = ".jsonl";

/// The store's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// All files together, at most (one record's overshoot aside).
    pub max_bytes: u64,
    /// Files kept, at most (the one being written included); at least 2.
    pub max_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 1 << 30, max_files: 10 }
    }
}

impl Limits {
    /// The size at which a file is closed and the next one begun.
    pub fn file_bytes(&self) -> u64 {
        (self.max_bytes / self.max_files as u64).max(1)
    }
}

/// Why the store cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    /// Bounds that cannot hold anything.
    #[error("records store bounds: {0}")]
    Limits(&'static str),
    /// The directory could not be made, read or made private.
    #[error("records directory {dir}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The directory belongs to another user: it could be read or swapped by them.
    #[error("records directory {dir} is owned by uid {uid}, not by the sensor's uid {euid}")]
    NotOurs {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        uid: u32,
        /// The sensor's effective uid.
        euid: u32,
    },
    /// A records file could not be created.
    #[error("records file {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

#[derive(Debug)]
struct Closed {
    path: PathBuf,
    bytes: u64,
    /// Records in it, when this run wrote it.
    records: Option<u64>,
}

/// What was evicted and not yet reported.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Files removed.
    pub files: u64,
    /// Records they held.
    pub records: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The records store (see the module documentation).
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    limits: Limits,
    closed: VecDeque<Closed>,
    current: File,
    current_path: PathBuf,
    current_bytes: u64,
    current_records: u64,
    /// The current file ends with a newline (or is empty).
    at_line_start: bool,
    next_seq: u64,
    evicted_total: Evicted,
}

fn seq_of(name: &str) -> Option<u64> {
    name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?.parse().ok()
}

/// Lines in `path` (records of a file an earlier run wrote).
fn count_lines(path: &Path) -> u64 {
    use std::io::Read;
    let Ok(mut f) = File::open(path) else { return 0 };
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0;
    while let Ok(k) = f.read(&mut buf) {
        if k == 0 {
            break;
        }
        n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    n
}

impl FileStore {
    /// Opens the store in `dir` (made 0700 if missing, made 0700 if it is
    /// ours and wider), keeping the files an earlier run left within the
    /// bounds, and begins a new file.
    pub fn open(dir: &Path, limits: Limits) -> Result<FileStore, FileStoreError> {
        if limits.max_files < 2 {
            return Err(FileStoreError::Limits("at least 2 files (one written, one kept)"));
        }
        if limits.max_bytes < limits.max_files as u64 * 4096 {
            return Err(FileStoreError::Limits("at least 4 KiB per file"));
        }
        let err = |source| FileStoreError::Dir { dir: dir.into(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
        let meta = std::fs::symlink_metadata(dir).map_err(err)?;
        if !meta.is_dir() {
            return Err(err(io::Error::other("not a directory (symbolic links are refused)")));
        }
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if meta.uid() != euid {
            return Err(FileStoreError::NotOurs { dir: dir.into(), uid: meta.uid(), euid });
        }
        if meta.mode() & 0o077 != 0 {
            warn!(dir = %dir.display(), mode = format!("{:o}", meta.mode() & 0o7777), "records directory was open to others: made 0700");
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        }
        let mut found: Vec<(u64, Closed)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(err)?.flatten() {
            let name = entry.file_name();
            let Some(seq) = name.to_str().and_then(seq_of) else { continue };
            let Ok(m) = entry.metadata() else { continue };
            if m.is_file() {
                found.push((seq, Closed { path: entry.path(), bytes: m.len(), records: None }));
            }
        }
        found.sort_by_key(|(seq, _)| *seq);
        let next_seq = found.last().map_or(1, |(seq, _)| seq + 1);
        let (current, current_path) = Self::create(dir, next_seq)?;
        let mut store = FileStore {
            dir: dir.into(),
            limits,
            closed: found.into_iter().map(|(_, c)| c).collect(),
            current,
            current_path,
            current_bytes: 0,
            current_records: 0,
            at_line_start: true,
            next_seq: next_seq + 1,
            evicted_total: Evicted::default(),
        };
        let evicted = store.evict();
        let path = store.current_path.clone();
        store.report(evicted).map_err(|source| FileStoreError::File { path, source })?;
        info!(
            dir = %dir.display(),
            max_bytes = limits.max_bytes,
            max_files = limits.max_files,
            kept_from_before = store.closed.len(),
            "records file store"
        );
        Ok(store)
    }

    fn create(dir: &Path, seq: u64) -> Result<(File, PathBuf), FileStoreError> {
        let path = dir.join(format!("{PREFIX}{seq:012}{SUFFIX}"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| FileStoreError::File { path: path.clone(), source })?;
        // Exactly 0600 whatever the umask.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|source| FileStoreError::File { path: path.clone(), source })?;
        Ok((file, path))
    }

    /// Removes the oldest closed files while there are too many.
    fn evict(&mut self) -> Evicted {
        let mut e = Evicted::default();
        while self.closed.len() + 1 > self.limits.max_files {
            let Some(old) = self.closed.pop_front() else { break };
            e.files += 1;
            e.bytes += old.bytes;
            e.records += old.records.unwrap_or_else(|| count_lines(&old.path));
            if let Err(err) = std::fs::remove_file(&old.path) {
                warn!(path = %old.path.display(), error = %err, "cannot remove an old records file");
            }
        }
        e
    }

    /// Says what was evicted: a `drop` record in the current file and a log line.
    fn report(&mut self, e: Evicted) -> io::Result<()> {
        if e.files == 0 {
            return Ok(());
        }
        self.evicted_total.files += e.files;
        self.evicted_total.records += e.records;
        self.evicted_total.bytes += e.bytes;
        warn!(
            files = e.files,
            records = e.records,
            bytes = e.bytes,
            max_bytes = self.limits.max_bytes,
            "records file store full: the oldest records were removed"
        );
        let record = Record {
            origin: Origin {
                ts_ns: nettap_core::clock::Clock::new().now_ns(),
                pid: 0,
                comm: "",
                source: "kernel",
                probe: "file_store",
            },
            conn: None,
            body: Body::Drop(DropRecord { count: e.records, bytes: e.bytes, reason: "file_store_evicted" }),
        };
        let mut line = nettap_core::record::record_to_vec(&record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.append(&line)
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.current.write_all(bytes)?;
        self.current_bytes += bytes.len() as u64;
        self.current_records += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        if let Some(&last) = bytes.last() {
            self.at_line_start = last == b'\n';
        }
        Ok(())
    }

    /// Closes the current file and begins the next, evicting as needed.
    pub fn rotate(&mut self) -> io::Result<()> {
        let (file, path) = Self::create(&self.dir, self.next_seq).map_err(io::Error::other)?;
        self.next_seq += 1;
        let old = std::mem::replace(&mut self.current, file);
        drop(old);
        let closed = Closed {
            path: std::mem::replace(&mut self.current_path, path),
            bytes: self.current_bytes,
            records: Some(self.current_records),
        };
        self.closed.push_back(closed);
        self.current_bytes = 0;
        self.current_records = 0;
        self.at_line_start = true;
        let evicted = self.evict();
        self.report(evicted)
    }

    /// Appends one record (a whole line, its newline included), rotating first if the file is full.
    pub fn write_record(&mut self, line: &[u8]) -> io::Result<()> {
        if self.current_bytes > 0 && self.current_bytes + line.len() as u64 > self.limits.file_bytes() {
            self.rotate()?;
        }
        self.append(line)
    }

    /// Everything evicted since the store was opened.
    pub fn evicted(&self) -> Evicted {
        self.evicted_total
    }

    /// The file being written.
    pub fn current_path(&self) -> &Path {
        &self.current_path
    }
}

impl Write for FileStore {
    /// Appends bytes of whole or partial records; the file is rotated only
    /// right after a newline, once it is full.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let room = self.limits.file_bytes().saturating_sub(self.current_bytes);
            if (rest.len() as u64) <= room {
                self.append(rest)?;
                break;
            }
            // Fill up to the last newline that fits, then rotate. When none
            // fits: rotate first if this file holds whole records only, else
            // finish the record begun here (to its newline) and then rotate.
            if let Some(i) = rest[..room as usize].iter().rposition(|&b| b == b'\n') {
                self.append(&rest[..=i])?;
                rest = &rest[i + 1..];
                self.rotate()?;
            } else if self.at_line_start && self.current_bytes > 0 {
                self.rotate()?;
            } else if let Some(i) = rest.iter().position(|&b| b == b'\n') {
                self.append(&rest[..=i])?;
                rest = &rest[i + 1..];
                self.rotate()?;
            } else {
                // No newline at all: part of one record, kept in this file.
                self.append(rest)?;
                break;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.current.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<(String, u64, u32)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                let m = e.metadata().unwrap();
                (e.file_name().into_string().unwrap(), m.len(), m.mode() & 0o777)
            })
            .collect();
        v.sort();
        v
    }

    fn line(n: usize, len: usize) -> Vec<u8> {
        let mut l = format!("{{\"n\":{n},\"pad\":\"").into_bytes();
        l.resize(len - 3, b'x');
        l.extend(b"\"}\n");
        l
    }

    #[test]
    fn private_rotated_bounded_and_the_loss_is_said() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("records");
        let limits = Limits { max_bytes: 40_000, max_files: 4 };
        let mut store = FileStore::open(&dir, limits).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let mut written = Vec::new();
        for n in 0..200 {
            let l = line(n, 500);
            store.write_record(&l).unwrap();
            written.push(l);
        }
        store.flush().unwrap();
        let listed = files(&dir);
        assert_eq!(listed.len(), 4, "{listed:?}");
        let total: u64 = listed.iter().map(|f| f.1).sum();
        assert!(total <= limits.max_bytes + 1000, "{total}");
        assert!(listed.iter().all(|f| f.2 == 0o600), "{listed:?}");
        // What is there is the newest records, whole and in order, and drop
        // records that add up to everything that is not there.
        let mut kept = Vec::new();
        let (mut dropped_records, mut dropped_bytes) = (0, 0);
        for (name, _, _) in &listed {
            for l in std::fs::read_to_string(dir.join(name)).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                if v["kind"] == "drop" {
                    assert_eq!(v["reason"], "file_store_evicted");
                    dropped_records += v["count"].as_u64().unwrap();
                    dropped_bytes += v["bytes"].as_u64().unwrap();
                } else {
                    kept.push(v["n"].as_u64().unwrap());
                }
            }
        }
        let first = kept[0];
        assert_eq!(kept, (first..200).collect::<Vec<_>>());
        let e = store.evicted();
        // Drop records written into files that were evicted in turn count
        // themselves among the evicted records.
        assert!(e.records >= first && e.records <= first + e.files, "{e:?} first kept {first}");
        assert!(dropped_records <= e.records && dropped_bytes <= e.bytes);
        assert!(e.bytes >= first * 500);
    }

    #[test]
    fn through_io_write_no_record_spans_two_files_and_a_restart_keeps_the_bound() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("records");
        let limits = Limits { max_bytes: 5 * 8192, max_files: 5 };
        {
            let mut w = io::BufWriter::with_capacity(3000, FileStore::open(&dir, limits).unwrap());
            for n in 0..100 {
                w.write_all(&line(n, 333)).unwrap();
            }
            w.flush().unwrap();
        }
        for (name, len, _) in files(&dir) {
            let text = std::fs::read_to_string(dir.join(&name)).unwrap();
            assert!(text.ends_with('\n') && len <= 8192, "{name}: {len}");
            for l in text.lines() {
                serde_json::from_str::<serde_json::Value>(l).expect("whole records only");
            }
        }
        let before = files(&dir);
        let store = FileStore::open(&dir, limits).unwrap();
        let after = files(&dir);
        assert_eq!(after.len(), 5, "{after:?}");
        assert_eq!(store.evicted().files, (before.len() + 1 - 5) as u64);
        assert!(store.current_path() > dir.join(&before.last().unwrap().0).as_path(), "numbering goes on");
    }

    #[test]
    fn a_directory_of_another_user_or_a_wide_one() {
        let scratch = tempfile::tempdir().unwrap();
        let theirs = scratch.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let err = FileStore::open(&theirs, Limits::default()).unwrap_err();
        assert!(matches!(err, FileStoreError::NotOurs { uid: 65534, .. }), "{err}");
        let wide = scratch.path().join("wide");
        std::fs::create_dir(&wide).unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o755)).unwrap();
        FileStore::open(&wide, Limits::default()).unwrap();
        assert_eq!(std::fs::metadata(&wide).unwrap().mode() & 0o777, 0o700);
        assert!(FileStore::open(&wide, Limits { max_bytes: 1000, max_files: 1 }).is_err());
    }
}

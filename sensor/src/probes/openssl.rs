//! OpenSSL: find every libssl file in use (and the system's own), and attach
//! the uprobes of `openssl.bpf.c` once per file (by device and inode, however
//! many processes or mount namespaces map it).

use super::file_id::{Examined, FileId};
use super::openssl_plan::{self, FunctionPlan, FUNCTION_NAMES, SSL_FUNCTIONS};
use super::{elf, loader, log_attach, log_program_probed, ProbeError};
use crate::probes::exec_gate::HeldExec;
use aya::Ebpf;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Where distributions keep the system libssl, for processes not yet started.
const SYSTEM_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/lib64",
];

/// Whether a file name is a shared libssl (`libssl.so`, `libssl.so.3`, …).
pub fn is_libssl(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libssl.so"))
}

/// Files mapped by process `pid` that are libssl, as paths reachable from
/// here (through `/proc/PID/root`, so inside containers too; a deleted one
/// through `/proc/PID/map_files`).
pub fn libssl_of_process(pid: u32) -> Vec<PathBuf> {
    super::mapped::mapped_files(pid, is_libssl).into_iter().map(|m| m.reachable).collect()
}

/// "OpenSSL 3.0.17" as found in the library's read-only data, if any.
pub fn openssl_version(bytes: &[u8]) -> Option<String> {
    const NEEDLE: &[u8] = b"OpenSSL ";
    let mut from = 0;
    while let Some(i) = bytes[from..].windows(NEEDLE.len()).position(|w| w == NEEDLE) {
        let rest = &bytes[from + i + NEEDLE.len()..];
        if rest.len() >= 2 && rest[0].is_ascii_digit() && rest[1] == b'.' {
            let end = rest.iter().take(32).position(|&b| b == b' ' || b == 0).unwrap_or(rest.len().min(32));
            return std::str::from_utf8(&rest[..end]).ok().map(|v| format!("OpenSSL {v}"));
        }
        from += i + 1;
    }
    None
}

/// The OpenSSL version in a file's read-only data, if any.
fn file_version(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: read-only private mapping of a file we opened; only its
    // headers and `.rodata` are read.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    openssl_version(elf::rodata(&map))
}

/// The OpenSSL version of a libssl file: from the file itself (a static
/// build carries the string), else from the libcrypto beside it (where
/// OpenSSL keeps `OpenSSL_version`'s text).
pub fn library_version(path: &Path) -> String {
    let sibling = || {
        let name = path.file_name()?.to_str()?.replacen("libssl", "libcrypto", 1);
        file_version(&path.with_file_name(name))
    };
    file_version(path).or_else(sibling).unwrap_or_else(|| "unknown version".into())
}

/// Programs known to carry their own OpenSSL, looked for on `PATH` at
/// start-up so their first process is probed before it starts (examining
/// one on exec races its first TLS call).
const KNOWN_BUNDLERS: &[&str] = &["node", "nodejs"];

/// Attaches the OpenSSL uprobes to libssl files, once per file identity.
pub struct OpenSslProbes {
    seen: HashSet<FileId>,
    /// Executables already examined for linked-in OpenSSL, by identity.
    examined: Examined,
    loaded: bool,
}

impl Default for OpenSslProbes {
    fn default() -> Self {
        Self::new()
    }
}

impl OpenSslProbes {
    /// Nothing attached yet.
    pub fn new() -> Self {
        Self { seen: HashSet::new(), examined: Examined::default(), loaded: false }
    }

    /// Files examined or probed (by identity).
    pub fn files(&self) -> usize {
        self.seen.len() + self.examined.len()
    }

    /// Attaches to the system libssl, to every libssl mapped by a running
    /// process, and to running and known programs with OpenSSL linked in.
    /// Returns how many files were probed.
    pub fn attach_all(&mut self, ebpf: &mut Ebpf) -> usize {
        let mut candidates: Vec<PathBuf> = Vec::new();
        for dir in SYSTEM_DIRS {
            if let Ok(entries) = std::fs::read_dir(dir) {
                // Resolved, so the log names the real file, not `libssl.so` → `libssl.so.3`.
                candidates.extend(
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| is_libssl(p))
                        .filter_map(|p| p.canonicalize().ok()),
                );
            }
        }
        let mut programs: Vec<PathBuf> = Vec::new();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                if let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                    candidates.extend(libssl_of_process(pid));
                    programs.push(PathBuf::from(format!("/proc/{pid}/exe")));
                }
            }
        }
        let libs = candidates.into_iter().filter(|p| self.attach_file(ebpf, p)).count();
        let running = programs.iter().filter(|p| self.examine_program(ebpf, p).is_some()).count();
        libs + running + self.attach_known_programs(ebpf)
    }

    /// Whether the file at `path` has the probes.
    pub fn is_probed(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| self.seen.contains(&FileId::of(&m)))
    }

    /// A program was executed: if its file (examined once per identity)
    /// defines OpenSSL's SSL functions itself — Node.js, static builds — it
    /// gets the same probes as a libssl.
    pub fn examine_exec(&mut self, ebpf: &mut Ebpf, exe: &nettap_core::events::LibEvent, now_boot_ns: u64) {
        let path = PathBuf::from(format!("/proc/{}/exe", exe.pid));
        if let Some(in_place) = self.examine_program(ebpf, &path) {
            let what = "a program with OpenSSL linked in";
            log_program_probed(what, exe.pid, &path, exe.ts_boot_ns, Some(now_boot_ns), in_place);
        }
    }

    /// A program held at exec: probe it, before it runs, if it has OpenSSL linked in.
    pub fn examine_held(&mut self, ebpf: &mut Ebpf, held: &HeldExec) {
        if let Some(in_place) = self.examine_program(ebpf, &held.path()) {
            let what = "a program with OpenSSL linked in";
            log_program_probed(what, held.pid, &held.path(), held.held_at_boot_ns, None, in_place);
        }
    }

    /// Examines the known bundlers of OpenSSL found on `PATH`. Returns how
    /// many were probed.
    pub fn attach_known_programs(&mut self, ebpf: &mut Ebpf) -> usize {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut found: Vec<PathBuf> = std::env::split_paths(&path)
            .flat_map(|dir| KNOWN_BUNDLERS.iter().map(move |name| dir.join(name)))
            .filter_map(|p| p.canonicalize().ok())
            .collect();
        found.dedup();
        found.into_iter().filter(|p| self.examine_program(ebpf, p).is_some()).count()
    }

    /// Probes an executable (once per identity) if it defines SSL_read and
    /// SSL_write itself; when the probes were in place (boot-time ns).
    fn examine_program(&mut self, ebpf: &mut Ebpf, path: &Path) -> Option<u64> {
        let file = std::fs::File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        let key = FileId::of(&meta);
        if self.seen.contains(&key) || !self.examined.insert(key) {
            return None;
        }
        // SAFETY: read-only private mapping of a file we opened; only the
        // pages the ELF parser touches (headers, symbol tables) are read.
        let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let found = elf::symbol_offsets(&map, &FUNCTION_NAMES).ok()?;
        if !(found.contains_key("SSL_write") && found.contains_key("SSL_read")) {
            return None;
        }
        let plans = openssl_plan::plan(&map).map_err(|e| e.to_string());
        drop(map);
        self.attach_opened(ebpf, path, file, plans)
    }

    /// A process mapped a libssl file (`lib`, from the kernel): finds it in
    /// the process's mappings by inode and probes it if new. Logs how long
    /// after the mapping the probes were in place.
    pub fn attach_mapped(&mut self, ebpf: &mut Ebpf, lib: &nettap_core::events::LibEvent, now_boot_ns: u64) {
        // Nothing when the process is already gone.
        let mapped = super::mapped::mapped_files(lib.pid, is_libssl);
        let Some(path) = mapped.into_iter().find(|m| m.inode == lib.ino).map(|m| m.reachable) else { return };
        if let Some(in_place) = self.attach_file_at(ebpf, &path) {
            tracing::info!(
                pid = lib.pid,
                path = %path.display(),
                noticed_us = now_boot_ns.saturating_sub(lib.ts_boot_ns) / 1000,
                attached_us = in_place.saturating_sub(lib.ts_boot_ns) / 1000,
                "probes attached to a library mapped after start-up"
            );
        }
    }

    /// Attaches to one file unless a file with its identity already has the
    /// probes. True when it was newly probed. The file is held open and
    /// attached through `/proc/self/fd`, so a process that exits meanwhile
    /// (its `/proc/PID/root` path vanishing) does not matter.
    pub fn attach_file(&mut self, ebpf: &mut Ebpf, path: &Path) -> bool {
        self.attach_file_at(ebpf, path).is_some()
    }

    /// `attach_file`, returning when (boot-time ns) the probes were in place.
    fn attach_file_at(&mut self, ebpf: &mut Ebpf, path: &Path) -> Option<u64> {
        let file = std::fs::File::open(path).ok()?;
        // SAFETY: read-only private mapping of a file we hold open; only its
        // headers, symbol tables and the probed functions' code are read.
        let plans = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| e.to_string())
            .and_then(|map| openssl_plan::plan(&map).map_err(|e| e.to_string()));
        self.attach_opened(ebpf, path, file, plans)
    }

    /// Attaches to an open file whose probes were planned, unless a file
    /// with its identity already has the probes.
    fn attach_opened(
        &mut self,
        ebpf: &mut Ebpf,
        path: &Path,
        file: std::fs::File,
        plans: Result<Vec<FunctionPlan>, String>,
    ) -> Option<u64> {
        let meta = file.metadata().ok()?;
        let key = FileId::of(&meta);
        if !self.seen.insert(key) {
            return None;
        }
        let target = path.display().to_string();
        let plans = match plans {
            Ok(p) => p,
            Err(e) => {
                crate::metrics::global().probe_failed("uprobe", &target, "openssl_layout");
                tracing::warn!(target, probe_type = "uprobe", ok = false, error = %e, "probe attached: failed");
                return None;
            }
        };
        if !self.loaded {
            let programs = SSL_FUNCTIONS.iter().flat_map(|f| [f.entry, f.uretprobe, f.return_site]);
            if let Err(e) = loader::load_uprobes(ebpf, programs) {
                tracing::warn!(error = %loader::chain(&e), "OpenSSL probes cannot load");
                return None;
            }
            self.loaded = true;
        }
        let mut results: Vec<(&'static str, String, loader::PointResult)> = Vec::new();
        let mut points = Vec::new();
        for plan in &plans {
            match plan {
                Ok(p) => points.extend(p),
                Err(missing) => {
                    let e = Err(ProbeError::MissingSymbol(missing.to_string()));
                    results.push(("uprobe", missing.to_string(), Rc::new(e)));
                }
            }
        }
        let at: Vec<(&str, u64)> = points.iter().map(|pt| (pt.program, pt.offset)).collect();
        let attached = loader::attach_uprobes(ebpf, &at, &file);
        for (pt, r) in points.iter().zip(attached) {
            results.push((pt.kind, pt.label.clone(), r));
        }
        let in_place = nettap_core::clock::Clock::boot_now_ns();
        // Logged after attaching: the version is read from another mapping.
        let version = library_version(path);
        for (kind, label, result) in &results {
            log_attach(&target, kind, label, result, Some(&version));
        }
        if results.iter().any(|(_, _, r)| r.is_ok()) {
            Some(in_place)
        } else {
            self.seen.remove(&key); // a later mapping may succeed
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_libssl_names() {
        assert!(is_libssl(Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3")));
        assert!(is_libssl(Path::new("/opt/app/libssl.so")));
        assert!(!is_libssl(Path::new("/usr/lib/libssl3.so")));
        assert!(!is_libssl(Path::new("/usr/lib/libcrypto.so.3")));
    }

    #[test]
    fn finds_the_version_string() {
        let lib = b"\0\0junk\0OpenSSL 3.0.17 1 Jul 2025\0more";
        assert_eq!(openssl_version(lib).as_deref(), Some("OpenSSL 3.0.17"));
        assert_eq!(openssl_version(b"OpenSSL is great"), None);
    }

    #[test]
    fn system_libssl_version_comes_from_its_libcrypto() {
        // ci/install.sh installs libssl-dev.
        let lib = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert!(library_version(lib).starts_with("OpenSSL 3."), "{}", library_version(lib));
    }

    #[test]
    fn a_mapped_libssl_is_found_in_the_process_maps() {
        let file =
            std::fs::File::open("/usr/lib/x86_64-linux-gnu/libssl.so.3").expect("the system libssl.so.3");
        // SAFETY: read-only mapping of a file we opened, never read through.
        let _map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let found = libssl_of_process(std::process::id());
        let want = format!("/proc/{}/root/usr/lib/x86_64-linux-gnu/libssl.so.3", std::process::id());
        assert!(found.iter().any(|p| p.to_str() == Some(want.as_str())), "{found:?}");
        assert!(libssl_of_process(u32::MAX).is_empty(), "no such process");
    }
}

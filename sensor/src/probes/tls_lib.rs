//! TLS libraries probed by uprobes on their record functions (OpenSSL,
//! GnuTLS): find every file of the library in use (and the system's own),
//! and attach the probes once per file (by device and inode, however many
//! processes or mount namespaces map it). What differs per library is its
//! `TlsLibrary` description.

use super::elf::FileSymbol;
use super::file_id::{Examined, FileId};
use super::probed_files::{open_unexamined, MapsName, ProbedFiles, Unexamined};
use super::shared_callee::SharedCallee;
use super::uprobe_plan::{self, FunctionPlan, TlsFunction};
use super::{elf, loader, log_attach, log_program_probed, ProbeError};
use crate::probes::exec_gate::HeldExec;
use aya::Ebpf;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Where distributions keep the system libraries, for processes not yet started.
const SYSTEM_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/lib64",
];

/// One TLS library: how its files are named, what is probed, how its
/// version is read.
pub struct TlsLibrary {
    /// As logs name it ("OpenSSL").
    pub name: &'static str,
    /// Whether a file name is one of its shared objects.
    pub is_file: fn(&Path) -> bool,
    /// The functions probed.
    pub functions: &'static [TlsFunction],
    /// Symbols an executable must define to have the library linked in
    /// (then it is probed like the shared object); empty: executables are
    /// not examined for it.
    pub linked_in: &'static [&'static str],
    /// Whether an executable that defines `linked_in` holds another
    /// library under the same names (BoringSSL keeps OpenSSL's), which
    /// then is left to that library's prober.
    pub another_library: Option<fn(&[u8]) -> bool>,
    /// Programs known to carry their own copy, looked for on `PATH` at
    /// start-up so their first process is probed before it starts
    /// (examining one on exec races its first TLS call).
    pub bundlers: &'static [&'static str],
    /// The version a file of it carries, for the `probe attached` lines.
    pub version: fn(&Path) -> String,
    /// Where the functions are when the symbol table does not say (NSS's
    /// static SSL-layer methods), or why they cannot be found; `None`: by symbol.
    pub locate: Option<Locate>,
    /// Static functions probed instead of the public ones that go through
    /// them, where found (`shared_callee`; by symbol only).
    pub shared_callees: &'static [SharedCallee],
}

/// Finds a library's functions in its file's bytes, or says why it cannot.
pub type Locate = fn(&[u8]) -> Result<HashMap<String, FileSymbol>, String>;

/// Files mapped by process `pid` that `is_file` accepts, as paths reachable
/// from here (through `/proc/PID/root`, so inside containers too; a deleted
/// one through `/proc/PID/map_files`).
pub fn library_of_process(pid: u32, is_file: fn(&Path) -> bool) -> Vec<PathBuf> {
    super::mapped::mapped_files(pid, is_file).into_iter().map(|m| m.reachable).collect()
}

/// Attaches one library's uprobes to its files, once per file identity.
pub struct TlsLibProbes {
    lib: &'static TlsLibrary,
    probed: ProbedFiles,
    /// Executables already examined for linked-in OpenSSL, by identity.
    examined: Examined,
    /// Files whose ELF could not be read, said once each.
    unreadable: Examined,
    loaded: bool,
}

impl TlsLibProbes {
    /// Nothing attached yet.
    pub fn new(lib: &'static TlsLibrary) -> Self {
        Self {
            lib,
            probed: ProbedFiles::default(),
            examined: Examined::default(),
            unreadable: Examined::default(),
            loaded: false,
        }
    }

    /// The library.
    pub fn library(&self) -> &'static TlsLibrary {
        self.lib
    }

    /// Files examined or probed (by identity).
    pub fn files(&self) -> usize {
        self.probed.len() + self.examined.len()
    }

    /// Probed files that were deleted, as maps name them.
    pub fn deleted(&self) -> impl Iterator<Item = MapsName> + '_ {
        self.probed.deleted()
    }

    /// Detaches the probes of deleted files no process maps (`in_use`:
    /// what some process maps). Returns how many files lost their probes.
    pub fn release_unused(&mut self, in_use: &HashSet<MapsName>) -> usize {
        let gone = self.probed.release_unused(in_use);
        for (_, target, links) in &gone {
            tracing::info!(
                target,
                links,
                library = self.lib.name,
                "probes detached from a deleted file no process maps"
            );
        }
        gone.len()
    }

    /// Attaches to the system's copy of the library, to every copy mapped by
    /// a running process, and to running and known programs with it linked in.
    /// Returns how many files were probed.
    pub fn attach_all(&mut self, ebpf: &mut Ebpf) -> usize {
        let mut candidates: Vec<PathBuf> = Vec::new();
        for dir in SYSTEM_DIRS {
            if let Ok(entries) = std::fs::read_dir(dir) {
                // Resolved, so the log names the real file, not `libssl.so` → `libssl.so.3`.
                let is_file = self.lib.is_file;
                candidates.extend(
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| is_file(p))
                        .filter_map(|p| p.canonicalize().ok()),
                );
            }
        }
        let mut programs: Vec<PathBuf> = Vec::new();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                if let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                    candidates.extend(library_of_process(pid, self.lib.is_file));
                    if !self.lib.linked_in.is_empty() {
                        programs.push(PathBuf::from(format!("/proc/{pid}/exe")));
                    }
                }
            }
        }
        let libs = candidates.into_iter().filter(|p| self.attach_file(ebpf, p)).count();
        let running = programs.iter().filter(|p| self.examine_program(ebpf, p).is_some()).count();
        libs + running + self.attach_known_programs(ebpf)
    }

    /// Whether the file at `path` has the probes.
    pub fn is_probed(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| self.probed.contains(&FileId::of(&m)))
    }

    /// A program was executed: if its file (examined once per identity)
    /// defines the library's functions itself — Node.js with OpenSSL, static
    /// builds — it gets the same probes as the shared object.
    pub fn examine_exec(&mut self, ebpf: &mut Ebpf, exe: &nettap_core::events::LibEvent, now_boot_ns: u64) {
        let path = PathBuf::from(format!("/proc/{}/exe", exe.pid));
        if let Some(in_place) = self.examine_program(ebpf, &path) {
            let what = format!("a program with {} linked in", self.lib.name);
            log_program_probed(&what, exe.pid, &path, exe.ts_boot_ns, Some(now_boot_ns), in_place);
        }
    }

    /// A program held at exec: probe it, before it runs, if it has the library linked in.
    pub fn examine_held(&mut self, ebpf: &mut Ebpf, held: &HeldExec) {
        if let Some(in_place) = self.examine_program(ebpf, &held.path()) {
            let what = format!("a program with {} linked in", self.lib.name);
            log_program_probed(&what, held.pid, &held.path(), held.held_at_boot_ns, None, in_place);
        }
    }

    /// Examines the library's known bundlers found on `PATH`. Returns how
    /// many were probed.
    pub fn attach_known_programs(&mut self, ebpf: &mut Ebpf) -> usize {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut found: Vec<PathBuf> = std::env::split_paths(&path)
            .flat_map(|dir| self.lib.bundlers.iter().map(move |name| dir.join(name)))
            .filter_map(|p| p.canonicalize().ok())
            .collect();
        found.dedup();
        found.into_iter().filter(|p| self.examine_program(ebpf, p).is_some()).count()
    }

    /// Probes an executable (once per identity) if it defines every
    /// `linked_in` symbol itself; when the probes were in place (boot-time ns).
    fn examine_program(&mut self, ebpf: &mut Ebpf, path: &Path) -> Option<u64> {
        if self.lib.linked_in.is_empty() {
            return None;
        }
        let Unexamined { file, map, .. } = open_unexamined(path, &self.probed, &mut self.examined)?;
        let found = elf::symbol_offsets(&map, self.lib.linked_in).ok()?;
        if found.len() < self.lib.linked_in.len() || self.lib.another_library.is_some_and(|other| other(&map))
        {
            return None;
        }
        let plans = self.plan(&map);
        drop(map);
        self.attach_opened(ebpf, path, file, plans)
    }

    /// A process mapped a file (`lib`, from the kernel) that may be this
    /// library: finds it in the process's mappings by inode and probes it if
    /// new. Logs how long after the mapping the probes were in place.
    pub fn attach_mapped(&mut self, ebpf: &mut Ebpf, lib: &nettap_core::events::LibEvent, now_boot_ns: u64) {
        let name = lib.name.split(|&b| b == 0).next().unwrap_or_default();
        if !std::str::from_utf8(name).is_ok_and(|n| (self.lib.is_file)(Path::new(n))) {
            return; // another library's mapping
        }
        // Nothing when the process is already gone.
        let mapped = super::mapped::mapped_files(lib.pid, self.lib.is_file);
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
        let plans =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string()).and_then(|map| self.plan(&map));
        self.attach_opened(ebpf, path, file, plans)
    }

    /// Where each function's probes go in the file `data`.
    fn plan(&self, data: &[u8]) -> Result<Vec<FunctionPlan>, String> {
        match self.lib.locate {
            None => uprobe_plan::plan(data, self.lib.functions, self.lib.shared_callees)
                .map_err(|e| e.to_string()),
            Some(locate) => Ok(uprobe_plan::plan_located(data, self.lib.functions, &locate(data)?)),
        }
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
        if self.probed.contains(&key) {
            return None;
        }
        let target = super::shown_path(path).display().to_string();
        let plans = match plans {
            Ok(p) => p,
            Err(e) => {
                if self.unreadable.insert(key) {
                    // A library found without symbols (NSS) says why it refused.
                    let reason =
                        if self.lib.locate.is_some() { "functions_not_found" } else { "elf_unreadable" };
                    crate::metrics::global().probe_failed("uprobe", &target, reason);
                    tracing::warn!(target, probe_type = "uprobe", ok = false, error = %e, "probe attached: failed");
                }
                return None;
            }
        };
        if !self.loaded {
            // Functions may share a program (GnuTLS's one exit): loaded once.
            let callees = self.lib.shared_callees.iter().flat_map(|c| [c.entry, c.uretprobe]);
            let mut programs: Vec<&str> =
                self.lib.functions.iter().flat_map(TlsFunction::programs).chain(callees).collect();
            programs.sort_unstable();
            programs.dedup();
            if let Err(e) = loader::load_uprobes(ebpf, programs) {
                tracing::warn!(library = self.lib.name, error = %loader::chain(&e), "TLS probes cannot load");
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
                    results.push(("uprobe", missing.to_string(), std::rc::Rc::new(e)));
                }
            }
        }
        let labelled = points.iter().map(|pt| (pt.program, pt.offset, (pt.kind, pt.label.clone()))).collect();
        for ((kind, label), r) in loader::attach_uprobes(ebpf, labelled, &file, key, None) {
            results.push((kind, label, r));
        }
        let in_place = nettap_core::clock::Clock::boot_now_ns();
        // Logged after attaching: the version is read from another mapping.
        let version = (self.lib.version)(path);
        for (kind, label, result) in &results {
            log_attach(&target, kind, label, result, Some(&version));
        }
        // None probed: a later mapping may succeed.
        let probed = results.iter().any(|(_, _, r)| r.is_ok());
        probed.then(|| self.probed.insert(key, &file, &target));
        probed.then_some(in_place)
    }
}

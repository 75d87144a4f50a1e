//! rustls in Rust executables: every executable (running at start-up,
//! executed later, or held at exec) whose symbol table has rustls's
//! functions (`rustls_find`) gets the probes of `rustls.bpf.c`, once per
//! file (device, inode): entry and return probes on the plaintext
//! functions and on the ciphertext functions that bind them to a socket.
//! An executable with no symbol table has them found from anchors
//! (`rustls_stripped`), or is refused with the reason.

use super::file_id::Examined;
use super::probed_files::{open_unexamined, MapsName, ProbedFiles, Unexamined};
use super::rustls_find::{self, Located, Role};
use super::{loader, log_attach, ProbeError, ProgramProber};
use aya::Ebpf;
use std::collections::HashSet;
use std::path::Path;
use std::rc::Rc;

const PROGRAMS: [&str; 13] = [
    "up_rustls_write",
    "ur_rustls_write",
    "up_rustls_write_vectored",
    "ur_rustls_write_vectored",
    "up_rustls_read",
    "ur_rustls_read",
    "up_rustls_write_tls",
    "ur_rustls_write_tls",
    "up_rustls_read_tls",
    "ur_rustls_read_tls",
    "up_rustls_first_chunk",
    "ur_rustls_first_chunk",
    "up_rustls_consume",
];

/// (entry program, return program) of a role.
fn programs(role: Role) -> (&'static str, Option<&'static str>) {
    match role {
        Role::PlaintextWrite => ("up_rustls_write", Some("ur_rustls_write")),
        Role::PlaintextWriteVectored => ("up_rustls_write_vectored", Some("ur_rustls_write_vectored")),
        Role::PlaintextRead => ("up_rustls_read", Some("ur_rustls_read")),
        Role::TlsWrite => ("up_rustls_write_tls", Some("ur_rustls_write_tls")),
        Role::TlsRead => ("up_rustls_read_tls", Some("ur_rustls_read_tls")),
        Role::FirstChunk => ("up_rustls_first_chunk", Some("ur_rustls_first_chunk")),
        Role::Consume => ("up_rustls_consume", None),
    }
}

/// Attaches the rustls probes to executables, once per file identity.
#[derive(Default)]
pub struct RustlsProbes {
    examined: Examined,
    probed: ProbedFiles,
    loaded: bool,
}

impl RustlsProbes {
    /// Nothing examined yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Probed executables that were deleted, as maps name them.
    pub fn deleted(&self) -> impl Iterator<Item = MapsName> + '_ {
        self.probed.deleted()
    }

    /// Forgets deleted executables no process runs (`in_use`: what some
    /// process maps); their links went with their files. Returns how many.
    pub fn release_unused(&mut self, in_use: &HashSet<MapsName>) -> usize {
        self.probed.release_unused_programs(in_use, "rustls program")
    }
}

impl ProgramProber for RustlsProbes {
    const WHAT: &'static str = "a rustls program";

    /// Probes the executable at `path` once per identity; when the probes
    /// were in place (boot-time ns), if it was newly probed.
    fn examine(&mut self, ebpf: &mut Ebpf, path: &Path) -> Option<u64> {
        let Unexamined { file, key, map } = open_unexamined(path, &self.probed, &mut self.examined)?;
        let located = rustls_find::locate(&map).ok()?; // not ELF
        drop(map);
        let target = super::shown_path(path).display().to_string();
        let (functions, versions, missing) = match located {
            Located::Absent => return None,
            Located::Stripped { versions, reason } => {
                crate::metrics::global().probe_failed("uprobe", &target, "functions_not_found");
                tracing::warn!(
                    target,
                    probe_type = "uprobe",
                    probe = "rustls",
                    version = %version_label(&versions),
                    ok = false,
                    error = %format!("rustls is linked in, {reason}: not probed rather than guessed"),
                    "probe attached: failed"
                );
                return None;
            }
            Located::Found { functions, versions, missing } => (functions, versions, missing),
        };
        let version = version_label(&versions);
        // A direction needs its plaintext function and the ciphertext one
        // that binds it; without all four nothing is probed.
        if !missing.is_empty() {
            crate::metrics::global().probe_failed("uprobe", &target, "functions_not_found");
            for role in &missing {
                let e: loader::PointResult = Rc::new(Err(ProbeError::MissingSymbol(format!(
                    "{} (inlined everywhere, or not linked in): rustls not probed",
                    role.name()
                ))));
                log_attach(&target, "uprobe", role.name(), &e, Some(&version));
            }
            return None;
        }
        if !self.loaded {
            if let Err(e) = loader::load_uprobes(ebpf, PROGRAMS) {
                tracing::warn!(error = %loader::chain(&e), "rustls probes cannot load");
                return None;
            }
            self.loaded = true;
        }
        let mut points = Vec::new();
        for f in &functions {
            let (entry, ret) = programs(f.role);
            let label = format!("{} @{:#x}", f.name, f.offset);
            points.push((entry, f.offset, ("uprobe", label.clone())));
            if let Some(ret) = ret {
                points.push((ret, f.offset, ("uretprobe", label)));
            }
        }
        let results = loader::attach_uprobes(ebpf, points, &file, key, None);
        let in_place = nettap_core::clock::Clock::boot_now_ns();
        for ((kind, label), r) in &results {
            log_attach(&target, kind, label, r, Some(&version));
        }
        let probed = results.iter().any(|(_, r)| r.is_ok());
        probed.then(|| self.probed.insert(key, &file, &target));
        probed.then_some(in_place)
    }
}

/// "rustls 0.21.12, 0.23.48" for the `probe attached` lines.
fn version_label(versions: &[String]) -> String {
    if versions.is_empty() {
        "rustls (version unknown)".into()
    } else {
        format!("rustls {}", versions.join(", "))
    }
}

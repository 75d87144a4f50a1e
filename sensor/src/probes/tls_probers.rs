//! Every TLS prober (each uprobed library, and Go's crypto/tls), driven
//! together by the capture loop: start-up, a library mapped, a program
//! executed or held at exec, and files that are gone losing their probes.

use super::boringssl_static::BoringProgramProbes;
use super::go_tls::GoTlsProbes;
use super::probed_files::{self, MapsName};
use super::rustls::RustlsProbes;
use super::tls_lib::{TlsLibProbes, TlsLibrary};
use super::ProgramProber;
use super::{BORINGSSL, GNUTLS, NSS, OPENSSL};
use crate::probes::exec_gate::HeldExec;
use aya::Ebpf;
use nettap_core::events::LibEvent;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The TLS probers.
pub struct TlsProbers {
    libraries: Vec<TlsLibProbes>,
    go: GoTlsProbes,
    rustls: RustlsProbes,
    boring: BoringProgramProbes,
    /// The deleted files still mapped at the last look, and when that was.
    still_mapped: HashSet<MapsName>,
    looked: Instant,
}

/// Deleted files still mapped are looked at again after this long even
/// when no process ended (a `dlclose` or an `exec` unmaps without an exit).
const LOOK_AGAIN: Duration = Duration::from_secs(10);

impl Default for TlsProbers {
    fn default() -> Self {
        Self {
            libraries: [&OPENSSL, &GNUTLS, &NSS, &BORINGSSL].map(TlsLibProbes::new).into(),
            go: GoTlsProbes::new(),
            rustls: RustlsProbes::new(),
            boring: BoringProgramProbes::new(),
            still_mapped: HashSet::new(),
            looked: Instant::now(),
        }
    }
}

impl TlsProbers {
    /// Probes what exists at start-up: every library's files, running and
    /// known programs, and `openssl_binaries` (named on purpose: a failure
    /// there is said).
    pub fn attach_all(&mut self, ebpf: &mut Ebpf, openssl_binaries: &[PathBuf]) {
        for lib in &mut self.libraries {
            let mut files = lib.attach_all(ebpf);
            if std::ptr::eq(lib.library(), &OPENSSL) {
                for binary in openssl_binaries {
                    if lib.attach_file(ebpf, binary) || lib.is_probed(binary) {
                        files += 1;
                    } else {
                        warn!(binary = %binary.display(), "NETTAP_OPENSSL_BINARY names a file that could not be probed");
                    }
                }
            }
            info!(files, "{} libraries probed", lib.library().name);
        }
        info!(programs = self.go.attach_running(ebpf), "Go programs with crypto/tls probed");
        info!(programs = self.rustls.attach_running(ebpf), "programs with rustls probed");
        info!(programs = self.boring.attach_running(ebpf), "programs with BoringSSL linked in probed");
    }

    /// A process mapped a TLS library's file.
    pub fn library_mapped(&mut self, ebpf: &mut Ebpf, lib: &LibEvent, now_boot_ns: u64) {
        for l in &mut self.libraries {
            l.attach_mapped(ebpf, lib, now_boot_ns);
        }
    }

    /// A program was executed (and already runs).
    pub fn program_executed(&mut self, ebpf: &mut Ebpf, exe: &LibEvent, now_boot_ns: u64) {
        for l in &mut self.libraries {
            l.examine_exec(ebpf, exe, now_boot_ns);
        }
        self.go.examine_exec(ebpf, exe, now_boot_ns);
        self.rustls.examine_exec(ebpf, exe, now_boot_ns);
        self.boring.examine_exec(ebpf, exe, now_boot_ns);
    }

    /// A program is held at exec, not yet run.
    pub fn program_held(&mut self, ebpf: &mut Ebpf, held: &HeldExec) {
        for l in &mut self.libraries {
            l.examine_held(ebpf, held);
        }
        self.go.examine_held(ebpf, held);
        self.rustls.examine_held(ebpf, held);
        self.boring.examine_held(ebpf, held);
    }

    /// Detaches the probes of every deleted file no process maps any more.
    /// The processes' maps are read (once for all files) only when a probed
    /// file was deleted since the last look, or a process ended
    /// (`exited`), or LOOK_AGAIN passed. Returns how many files lost their probes.
    pub fn release_unused(&mut self, ebpf: &mut Ebpf, exited: bool) -> usize {
        let deleted: HashSet<MapsName> = self
            .libraries
            .iter()
            .flat_map(TlsLibProbes::deleted)
            .chain(self.go.deleted())
            .chain(self.rustls.deleted())
            .chain(self.boring.deleted())
            .collect();
        let newly_deleted = deleted.iter().any(|d| !self.still_mapped.contains(d));
        if deleted.is_empty() || !(newly_deleted || exited || self.looked.elapsed() >= LOOK_AGAIN) {
            return 0;
        }
        let in_use = probed_files::mapped_by_others(&deleted);
        self.looked = Instant::now();
        self.still_mapped = in_use.clone();
        let libs: usize = self.libraries.iter_mut().map(|l| l.release_unused(&in_use)).sum();
        libs + self.go.release_unused(ebpf, &in_use)
            + self.rustls.release_unused(&in_use)
            + self.boring.release_unused(&in_use)
    }

    /// Files examined or probed for `lib`.
    pub fn files(&self, lib: &'static TlsLibrary) -> usize {
        self.libraries.iter().filter(|l| std::ptr::eq(l.library(), lib)).map(TlsLibProbes::files).sum()
    }

    /// Go programs examined or probed.
    pub fn go_programs(&self) -> usize {
        self.go.programs()
    }
}

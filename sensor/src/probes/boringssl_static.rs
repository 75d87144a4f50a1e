//! BoringSSL linked statically into an executable: Envoy-style static
//! binaries, C/C++ programs built against BoringSSL's `libssl.a`, Rust
//! programs on the `boring` crate. Every executable (running at start-up,
//! executed later, or held at exec) is examined once per file identity and
//! gets the uprobes of `boringssl.bpf.c` (those grpcio's module gets) when
//! it carries BoringSSL's libssl:
//!
//! - The mark: the path string of `ssl/ssl_lib.cc` that BoringSSL's error
//!   reports carry (OpenSSL's file is `ssl_lib.c`), looked for with memmem
//!   in `.rodata`; a program without it is left after that search.
//! - By symbol, where the symbol table defines `SSL_write`, `SSL_read` and
//!   `SSL_do_handshake` (BoringSSL keeps OpenSSL's names, unmangled).
//! - Else by `boringssl_find` (error-report call sites and the call graph),
//!   which refuses, with the reason, a file where its evidence does not
//!   single each function out: no guessed address is ever probed.
//!
//! The BIO pair's `bio_write` is probed too where the program has a BIO
//! pair (gRPC's C core linked in); a program whose BIO does its socket I/O
//! inside `SSL_read`/`SSL_write` (a socket BIO, Envoy's, `boring`'s Rust
//! stream BIO) binds each SSL object to its socket by those syscalls.

use super::boringssl::BORINGSSL_FUNCTIONS;
use super::boringssl_find;
use super::elf::{self, FileSymbol};
use super::file_id::Examined;
use super::probed_files::{open_unexamined, MapsName, ProbedFiles, Unexamined};
use super::uprobe_plan::{self, TlsFunction};
use super::{loader, log_attach, ProbeError, ProgramProber};
use aya::Ebpf;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

/// The functions found by symbol; `bio_write` is static and found by its
/// method table, never by a (local, ambiguous) name.
const BY_SYMBOL: [&str; 3] = ["SSL_write", "SSL_read", "SSL_do_handshake"];

/// Whether the ELF file `data` carries BoringSSL's libssl: its `.rodata`
/// holds the path of `ssl_lib.cc` (`ssl/ssl_lib.c` is OpenSSL's) as a whole
/// string, after a directory or on its own, whatever the build's source
/// root: a memmem or two over that section. The needles are made at run
/// time from a reversed literal, so that nettap's own files (another
/// sensor's, a test's) do not carry them and are not taken for BoringSSL.
pub fn has_boringssl(data: &[u8]) -> bool {
    let rodata = elf::rodata(data);
    let suffix = boringssl_find::source_suffix();
    [[b"/".as_slice(), &suffix, b"\0"].concat(), [b"\0".as_slice(), &suffix, b"\0"].concat()]
        .iter()
        .any(|needle| memchr::memmem::find(rodata, needle).is_some())
}

/// How the functions were found, for the `probe attached` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// From the symbol table.
    Symbols,
    /// By `boringssl_find`, without symbols.
    Found,
}

/// The probed functions' offsets in a program with BoringSSL linked in
/// and how they were found, or why they were not.
pub fn locate(data: &[u8]) -> Result<(HashMap<String, FileSymbol>, Method), String> {
    let mut located = elf::symbol_offsets(data, &BY_SYMBOL).map_err(|e| e.to_string())?;
    let method = if located.len() == BY_SYMBOL.len() {
        Method::Symbols
    } else {
        let found = boringssl_find::find(data).map_err(|e| e.to_string())?;
        let at = |e: boringssl_find::Entry| FileSymbol { offset: e.offset, size: 0 };
        located = HashMap::from([
            ("SSL_write".to_string(), at(found.ssl_write)),
            ("SSL_read".to_string(), at(found.ssl_read)),
            ("SSL_do_handshake".to_string(), at(found.ssl_do_handshake)),
        ]);
        Method::Found
    };
    // Only where a BIO pair is linked in; its absence is the usual case.
    if let Ok(pair) = boringssl_find::bio_pair(data) {
        located.insert("bio_write".to_string(), FileSymbol { offset: pair.bio_write.offset, size: 0 });
    }
    Ok((located, method))
}

/// Attaches the BoringSSL probes to executables, once per file identity.
#[derive(Default)]
pub struct BoringProgramProbes {
    examined: Examined,
    probed: ProbedFiles,
    loaded: bool,
}

impl BoringProgramProbes {
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
        self.probed.release_unused_programs(in_use, "BoringSSL program")
    }
}

impl ProgramProber for BoringProgramProbes {
    const WHAT: &'static str = "a program with BoringSSL linked in";

    fn examine(&mut self, ebpf: &mut Ebpf, path: &Path) -> Option<u64> {
        let Unexamined { file, key, map } = open_unexamined(path, &self.probed, &mut self.examined)?;
        if !has_boringssl(&map) {
            return None;
        }
        let target = super::shown_path(path).display().to_string();
        let located = locate(&map);
        let (located, method) = match located {
            Ok(l) => l,
            Err(e) => {
                crate::metrics::global().probe_failed("uprobe", &target, "functions_not_found");
                tracing::warn!(
                    target,
                    probe_type = "uprobe",
                    probe = "BoringSSL",
                    version = "BoringSSL",
                    ok = false,
                    error = %format!("BoringSSL is linked in but its functions were not singled out: {e}; not probed rather than guessed"),
                    "probe attached: failed"
                );
                return None;
            }
        };
        // bio_write is left out, not missing, where no BIO pair is linked in.
        let plans: Vec<_> = uprobe_plan::plan_located(&map, &BORINGSSL_FUNCTIONS, &located)
            .into_iter()
            .filter(|p| *p != Err("bio_write"))
            .collect();
        drop(map);
        if !self.loaded {
            let mut programs: Vec<&str> =
                BORINGSSL_FUNCTIONS.iter().flat_map(TlsFunction::programs).collect();
            programs.sort_unstable();
            programs.dedup();
            if let Err(e) = loader::load_uprobes(ebpf, programs) {
                tracing::warn!(error = %loader::chain(&e), "BoringSSL probes cannot load");
                return None;
            }
            self.loaded = true;
        }
        let version = match method {
            Method::Symbols => "BoringSSL (linked in, by symbol)",
            Method::Found => "BoringSSL (linked in, stripped: found by its error reports and call graph)",
        };
        let mut results: Vec<((&'static str, String), loader::PointResult)> = Vec::new();
        let mut points = Vec::new();
        for plan in plans {
            match plan {
                Ok(p) => points.extend(p),
                Err(missing) => {
                    let e = Rc::new(Err(ProbeError::MissingSymbol(missing.to_string())));
                    results.push((("uprobe", missing.to_string()), e));
                }
            }
        }
        let labelled = points.iter().map(|pt| (pt.program, pt.offset, (pt.kind, pt.label.clone()))).collect();
        results.extend(loader::attach_uprobes(ebpf, labelled, &file, key, None));
        let in_place = nettap_core::clock::Clock::boot_now_ns();
        for ((kind, label), r) in &results {
            log_attach(&target, kind, label, r, Some(version));
        }
        let probed = results.iter().any(|(_, r)| r.is_ok());
        probed.then(|| self.probed.insert(key, &file, &target));
        probed.then_some(in_place)
    }
}

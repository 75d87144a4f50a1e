//! Go's crypto/tls: every Go executable (running at start-up, or executed
//! later) that links crypto/tls gets the probes of `go_tls.bpf.c`, once per
//! file (device, inode): an entry uprobe on (*Conn).Write and (*Conn).Read
//! (on the jump of the stack check where there is one: see
//! `golang::entry_site`), and a uprobe on each of their `ret` instructions,
//! or, where the code allows, on the calls inside them that carry the
//! plaintext (see `function_points`).

use super::file_id::{Examined, FileId};
use super::go_layout::{TABLE as GO_LAYOUT_TABLE, TCPCONN_TYPE_HASHES};
use super::golang::{self, GoBinary};
use super::probed_files::{open_unexamined, MapsName, ProbedFiles, Unexamined};
use super::{loader, log_attach, ProbeError, ProgramProber};
use crate::bpf::events::nt_go_layout;
use aya::Ebpf;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

const WRITE: &str = "crypto/tls.(*Conn).Write";
const READ: &str = "crypto/tls.(*Conn).Read";
/// Write's one call that moves application data; Read's copy out of the
/// decrypted record (`bytes.(*Reader).Read`, inlined).
const WRITE_RECORD: &str = "crypto/tls.(*Conn).writeRecordLocked";
const MEMMOVE: &str = "runtime.memmove";
const PROGRAMS: [&str; 5] =
    ["up_go_tls_write", "up_go_tls_read", "up_go_tls_ret", "up_go_tls_write_record", "up_go_tls_read_copy"];
/// The callees whose calls are probed.
const CALLEES: &[&str] = &[WRITE_RECORD, MEMMOVE];

/// A uprobe to attach: program, file offset, label.
type Point = (&'static str, u64, String);

/// Where one function is probed. On x86_64 a probe on a `ret` is
/// single-stepped (a debug trap more: ~13 µs a call in our VMs), one on a
/// `call` is emulated. So where the code allows it:
/// - Write: one probe on each of its calls of `writeRecordLocked(c,
///   recordTypeApplicationData, b)`, where the connection, the buffer and
///   its length are all arguments: one trap per Write, none at its return
///   (a write that fails part way is recorded whole: the connection fails
///   with it);
/// - Read: one probe on its only call of `runtime.memmove(b, unread, n)`,
///   the bytes it returns before they are copied, which reads the
///   connection from Read's stack (`read_receiver_home`); where that slot
///   is not found, an entry probe too, which keeps the connection for it.
///
/// Otherwise (arm64, where `ret` is simulated; a build where the calls are
/// not found as expected) the entry and every `ret`. `None`: no `ret` at all.
fn function_points(go: &GoBinary, name: &str, f: &golang::GoFunction) -> Option<Vec<Point>> {
    let at = |off: u64, what: &str| match off {
        0 => format!("{name}{what}"),
        off => format!("{name}+{off:#x}{what}"),
    };
    let calls = |callee: &str| go.callees.get(callee).map(|&t| f.calls_to(t)).unwrap_or_default();
    let entry_prog = if name == WRITE { "up_go_tls_write" } else { "up_go_tls_read" };
    let entry = (entry_prog, f.offset + f.entry, at(f.entry, ""));
    if name == WRITE {
        let sites = calls(WRITE_RECORD);
        if !sites.is_empty() {
            let label = |c| at(c, " (writeRecordLocked call)");
            return Some(sites.iter().map(|&c| ("up_go_tls_write_record", f.offset + c, label(c))).collect());
        }
    } else if let [copy] = calls(MEMMOVE)[..] {
        let copy = ("up_go_tls_read_copy", f.offset + copy, at(copy, " (copy)"));
        return Some(match read_receiver_home(go) {
            Some(_) => vec![copy],
            None => vec![entry, copy],
        });
    }
    if f.returns.is_empty() {
        return None;
    }
    let mut points = vec![entry];
    points.extend(f.returns.iter().map(|&r| ("up_go_tls_ret", f.offset + r, at(r, " (return)"))));
    Some(points)
}

/// Where (*Conn).Read keeps its receiver on the stack, from the stack
/// pointer at its calls, when its copy call is probed: the copy's probe then
/// reads the connection there and Read needs no entry probe (a trap, and a
/// table entry per call, less).
fn read_receiver_home(go: &GoBinary) -> Option<u32> {
    let f = go.functions.get(READ)?;
    let copies = go.callees.get(MEMMOVE).map(|&t| f.calls_to(t)).unwrap_or_default();
    if copies.len() == 1 {
        f.receiver_home
    } else {
        None
    }
}

/// Attaches the Go TLS probes to Go executables, once per file identity.
#[derive(Default)]
pub struct GoTlsProbes {
    examined: Examined,
    /// Executables probed, kept while they exist or run (probing one twice
    /// would report its calls twice).
    probed: ProbedFiles,
    /// The attach cookie of each probed executable's probes: the key of its
    /// layout on the eBPF side.
    cookies: HashMap<FileId, u64>,
    /// The last cookie given.
    last_cookie: u64,
    loaded: bool,
}

impl GoTlsProbes {
    /// Nothing examined yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Executables examined (by identity).
    pub fn programs(&self) -> usize {
        self.examined.len() + self.probed.len()
    }

    /// Probed executables that were deleted, as maps name them.
    pub fn deleted(&self) -> impl Iterator<Item = MapsName> + '_ {
        self.probed.deleted()
    }

    /// Detaches the probes of deleted executables no process runs (`in_use`:
    /// what some process maps) and forgets their layouts. Returns how many
    /// lost their probes.
    pub fn release_unused(&mut self, ebpf: &mut Ebpf, in_use: &HashSet<MapsName>) -> usize {
        let gone = self.probed.release_unused(in_use);
        for (id, target, links) in &gone {
            if let Some(cookie) = self.cookies.remove(id) {
                let forgotten = layouts(ebpf).and_then(|mut m| m.remove(&cookie).map_err(|e| e.to_string()));
                if let Err(e) = forgotten {
                    tracing::debug!(error = %e, target, "Go layout not removed");
                }
            }
            tracing::info!(target, links, "probes detached from a deleted Go program no process runs");
        }
        gone.len()
    }

    fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        file: &std::fs::File,
        key: FileId,
        target: &str,
        go: &GoBinary,
    ) -> Option<u64> {
        if !self.loaded {
            if let Err(e) = loader::load_uprobes(ebpf, PROGRAMS) {
                tracing::warn!(error = %loader::chain(&e), "Go TLS probes cannot load");
                return None;
            }
            self.loaded = true;
        }
        // Both functions' points go in one attachment: each program is then
        // one link for all its points.
        let mut results = Vec::new();
        let mut points = Vec::new();
        for name in [WRITE, READ] {
            match go.functions.get(name) {
                Some(f) => match function_points(go, name, f) {
                    Some(p) => points.extend(p),
                    None => results.push((
                        name.to_string(),
                        Rc::new(Err(ProbeError::MissingSymbol(format!("{name}: no ret")))),
                    )),
                },
                None => results
                    .push((name.to_string(), Rc::new(Err(ProbeError::MissingSymbol(name.to_string()))))),
            }
        }
        // The layout is in place before the probes: their first calls read it.
        self.last_cookie += 1;
        let cookie = self.last_cookie;
        let offsets = self.set_layout(ebpf, cookie, go);
        results.extend(loader::attach_uprobes(ebpf, points, file, key, Some(cookie)));
        let in_place = nettap_core::clock::Clock::boot_now_ns();
        let version = format!(
            "{} ({}offsets: {offsets})",
            go.version,
            if go.symtab { "" } else { "stripped: pclntab; " }
        );
        for (label, r) in &results {
            log_attach(target, "uprobe", label, r, Some(&version));
        }
        let attached = results.iter().any(|(_, r)| r.is_ok());
        if attached {
            self.cookies.insert(key, cookie);
        } else if let Ok(mut m) = layouts(ebpf) {
            let _ = m.remove(&cookie);
        }
        attached.then_some(in_place)
    }

    /// Gives the eBPF side this program's layout and itab hash (keyed by its
    /// probes' cookie); says where the offsets came from.
    fn set_layout(&self, ebpf: &mut Ebpf, cookie: u64, go: &GoBinary) -> String {
        let (layout, mut source) = match &go.dwarf_layout {
            Some(Ok(l)) => (*l, "DWARF".to_string()),
            Some(Err(e)) => (GO_LAYOUT_TABLE, format!("table, DWARF unusable: {e}")),
            None => (GO_LAYOUT_TABLE, "table".to_string()),
        };
        if let Some(h) = go.tcpconn_itab_hash.filter(|h| !TCPCONN_TYPE_HASHES.contains(h)) {
            source.push_str(&format!(
                "; *net.TCPConn itab hash {h:#x} of an unknown algorithm, from the symbol table"
            ));
        }
        let value = nt_go_layout {
            conn_data: layout.conn_data,
            tcpconn_fd: layout.tcpconn_fd,
            netfd_sysfd: layout.netfd_sysfd,
            itab_hash: go.tcpconn_itab_hash.unwrap_or(0),
            read_conn_sp: read_receiver_home(go).unwrap_or(0),
        };
        let set = layouts(ebpf).and_then(|mut m| m.insert(&cookie, &value, 0).map_err(|e| e.to_string()));
        if let Err(e) = set {
            tracing::warn!(error = %e, "Go layout not given to the eBPF side; it uses the table");
        }
        source
    }
}

impl ProgramProber for GoTlsProbes {
    const WHAT: &'static str = "a Go program";

    /// Probes the executable at `path` once per identity; when the probes
    /// were in place (boot-time ns), if it was newly probed.
    fn examine(&mut self, ebpf: &mut Ebpf, path: &Path) -> Option<u64> {
        let Unexamined { file, key, map } = open_unexamined(path, &self.probed, &mut self.examined)?;
        let target = super::shown_path(path).display().to_string();
        let go = match golang::inspect(&map, &[WRITE, READ], CALLEES) {
            Ok(Some(go)) => go,
            Ok(None) | Err(golang::GoError::Elf(_)) => return None, // not Go
            Err(e) => {
                crate::metrics::global().probe_failed("uprobe", &target, "go_layout");
                tracing::warn!(target, probe_type = "uprobe", probe = WRITE, ok = false, error = %e, "probe attached: failed");
                return None;
            }
        };
        if !go.functions.contains_key(WRITE) && !go.functions.contains_key(READ) {
            return None; // Go without crypto/tls
        }
        drop(map);
        let in_place = self.attach(ebpf, &file, key, &target, &go);
        if in_place.is_some() {
            self.probed.insert(key, &file, &target);
        }
        in_place
    }
}

/// The eBPF side's layouts by probe cookie.
fn layouts(
    ebpf: &mut Ebpf,
) -> Result<aya::maps::HashMap<&mut aya::maps::MapData, u64, nt_go_layout>, String> {
    let map = ebpf.map_mut("go_layouts").ok_or_else(|| "map missing".to_string())?;
    aya::maps::HashMap::try_from(map).map_err(|e| e.to_string())
}

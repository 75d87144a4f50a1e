//! The eBPF object: settings written before load, maps sized, filters filled.

use super::file_id::FileId;
use crate::bpf::{events::nt_config, OBJECT};
use crate::config::CaptureConfig;
use aya::maps::HashMap as BpfHashMap;
use aya::programs::uprobe::UProbeLink;
use aya::programs::{Program, ProgramError};
use aya::{Ebpf, EbpfError, EbpfLoader};
use std::collections::HashMap;

use super::HookDecision;

/// Errors of the probe subsystem.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The object did not load (maps, BTF relocation).
    #[error("cannot load the eBPF object")]
    Object(#[source] Box<EbpfError>),
    /// The object lacks a program the sensor expects.
    #[error("eBPF program {0} is missing from the object")]
    MissingProgram(String),
    /// A program has an unexpected type.
    #[error("eBPF program {program} has the wrong type")]
    ProgramType {
        /// Program name.
        program: String,
        /// Cause.
        #[source]
        source: ProgramError,
    },
    /// The verifier refused a program.
    #[error("eBPF program {program} failed to load")]
    Load {
        /// Program name.
        program: String,
        /// Cause (with the verifier log).
        #[source]
        source: ProgramError,
    },
    /// A program could not be attached.
    #[error("eBPF program {program} failed to attach")]
    Attach {
        /// Program name.
        program: String,
        /// Cause.
        #[source]
        source: ProgramError,
    },
    /// A map is missing or could not be filled.
    #[error("eBPF map {map}: {detail}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// A function to probe is not in the file.
    #[error("symbol {0} not found")]
    MissingSymbol(String),
    /// kprobes were required by configuration and cannot be attached.
    #[error("kprobes were required (kernel_hook = kprobe) but cannot be attached: {0}")]
    KprobesRequired(String),
}

impl ProbeError {
    /// A short class of the failure, for metrics labels.
    pub fn class(&self) -> &'static str {
        match self {
            ProbeError::Object(_) => "object",
            ProbeError::MissingProgram(_) => "missing_program",
            ProbeError::ProgramType { .. } => "program_type",
            ProbeError::Load { .. } => "verifier",
            ProbeError::Attach { .. } => "attach",
            ProbeError::Map { .. } => "map",
            ProbeError::MissingSymbol(_) => "missing_symbol",
            ProbeError::KprobesRequired(_) => "kprobes_required",
        }
    }
}

/// What start-up attached.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The kernel data path chosen.
    pub hook: HookDecision,
}

/// An error and its causes on one line, for logs.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A program of the object as its concrete type.
pub fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or_else(|| ProbeError::MissingProgram(name.into()))?;
    p.try_into().map_err(|e| ProbeError::ProgramType { program: name.into(), source: e })
}

/// Loads the object with `cfg` applied; attaches nothing.
pub fn load_object(cfg: &CaptureConfig, self_tgid: u32) -> Result<Ebpf, ProbeError> {
    raise_memlock();
    let settings = nt_config {
        self_tgid,
        filter_pids: !cfg.pids.is_empty() as u32,
        filter_ports: !cfg.ports.is_empty() as u32,
        max_bytes_per_call: cfg.max_bytes_per_call,
    };
    // Size each map to its use (`conns` and the ring are preallocated, so
    // they cost their size from load). `inflight` serves only the kprobe
    // path, which a kernel without kprobe support can never take.
    let inflight = if super::kernel_hook::kprobes_possible() { 4096 } else { 1 };
    let (conns, conns_spill) = crate::conn_table::table_sizes(cfg.max_connections);
    // `ssl_calls` is task local storage, which aya loads but has no type for.
    let mut ebpf = EbpfLoader::new()
        .allow_unsupported_maps()
        .override_global("CONFIG", &settings, true)
        .override_global("recv_flags_arg", &super::kernel_hook::running_recv_flags_arg(), true)
        .map_max_entries("events", cfg.ring_buffer_bytes)
        .map_max_entries("conns", conns)
        .map_max_entries("conns_spill", conns_spill)
        .map_max_entries("inflight", inflight)
        .map_max_entries("pid_filter", cfg.pids.len().max(1) as u32)
        .map_max_entries("port_filter", cfg.ports.len().max(1) as u32)
        .map_max_entries("cgroup_policy", cfg.max_pod_cgroups.max(1))
        .load(OBJECT)
        .map_err(|e| ProbeError::Object(Box::new(e)))?;

    let mut pids: BpfHashMap<_, u32, u8> = map(&mut ebpf, "pid_filter")?;
    for pid in &cfg.pids {
        pids.insert(pid, &1, 0).map_err(|e| ProbeError::Map { map: "pid_filter", detail: e.to_string() })?;
    }
    let mut ports: BpfHashMap<_, u16, u8> = map(&mut ebpf, "port_filter")?;
    for port in &cfg.ports {
        ports
            .insert(port, &1, 0)
            .map_err(|e| ProbeError::Map { map: "port_filter", detail: e.to_string() })?;
    }
    Ok(ebpf)
}

fn map<'a, V>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<V, ProbeError>
where
    V: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = ebpf.map_mut(name).ok_or(ProbeError::Map { map: name, detail: "missing".into() })?;
    V::try_from(m).map_err(|e| ProbeError::Map { map: name, detail: e.to_string() })
}

/// Loads every program of the object into the kernel (the verifier's
/// verdict) without attaching any: both kernel paths are checked this way
/// even where only one can attach; uprobes in the mode this kernel uses
/// (`NAME_m` for uprobe_multi). Returns the names loaded.
pub fn load_every_program(ebpf: &mut Ebpf) -> Result<Vec<String>, ProbeError> {
    let mut names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    let all = names.clone();
    names.retain(|n| !unused_twin(n, &all));
    for name in &names {
        let p = ebpf.program_mut(name).ok_or_else(|| ProbeError::MissingProgram(name.clone()))?;
        let loaded = match p {
            Program::TracePoint(p) => p.load(),
            Program::RawTracePoint(p) => p.load(),
            Program::KProbe(p) => p.load(),
            Program::UProbe(p) => p.load(),
            _ => Err(ProgramError::AlreadyLoaded),
        };
        loaded.map_err(|e| ProbeError::Load { program: name.clone(), source: e })?;
    }
    Ok(names)
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
fn raise_memlock() {
    let lim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}

/// Mounts tracefs where it is missing: tracepoint attachment needs it.
pub fn ensure_tracefs() {
    use std::path::Path;
    if Path::new("/sys/kernel/tracing/events").exists()
        || Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return;
    }
    let (src, target, fstype) = (c"nodev", c"/sys/kernel/tracing", c"tracefs");
    // SAFETY: static NUL-terminated strings; no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 {
        tracing::info!("mounted tracefs at /sys/kernel/tracing");
    } else {
        tracing::warn!(error = %std::io::Error::last_os_error(), "tracefs is not mounted and mounting it failed");
    }
}

/// Whether uprobes go through uprobe_multi links: one link for all of a
/// file's points of a program (Linux 6.6+), whose detach waits for the
/// kernel's grace periods once, not once per point. `NETTAP_UPROBE_MULTI=0`
/// takes the per-point perf events older kernels need, to test and measure
/// that path here. Probed once.
pub fn uprobe_multi() -> bool {
    static MULTI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MULTI.get_or_init(|| {
        if std::env::var_os("NETTAP_UPROBE_MULTI").is_some_and(|v| v == "0") {
            return false;
        }
        match aya::sys::is_uprobe_multi_supported(aya::sys::UProbeMultiFeature::LinkCreation) {
            Ok(yes) => yes,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell whether the kernel has uprobe_multi links: using one perf event per uprobe");
                false
            }
        }
    })
}

/// Suffix of a uprobe program's uprobe_multi twin in the object
/// (sensor-ebpf/bpf/uprobe.bpf.h).
const MULTI_TWIN: &str = "_m";

/// The object's program for uprobe `name` on this kernel.
fn uprobe_program(name: &str) -> std::borrow::Cow<'_, str> {
    if uprobe_multi() {
        format!("{name}{MULTI_TWIN}").into()
    } else {
        name.into()
    }
}

/// True for a uprobe program of the mode this kernel does not use (its twin
/// is among `names`): never loaded.
fn unused_twin(name: &str, names: &[String]) -> bool {
    let twin_of = |base: &str| names.iter().any(|n| n == base);
    match name.strip_suffix(MULTI_TWIN) {
        Some(base) if twin_of(base) => !uprobe_multi(),
        _ => uprobe_multi() && twin_of(&format!("{name}{MULTI_TWIN}")),
    }
}

/// Loads uprobe programs (done once, before their first attachment).
pub fn load_uprobes<'a>(
    ebpf: &mut Ebpf,
    programs: impl IntoIterator<Item = &'a str>,
) -> Result<(), ProbeError> {
    for prog in programs {
        let prog = uprobe_program(prog);
        program::<aya::programs::UProbe>(ebpf, &prog)?
            .load()
            .map_err(|e| ProbeError::Load { program: prog.to_string(), source: e })?;
    }
    Ok(())
}

/// Uprobe links by the file they probe, owned here rather than by their
/// programs: a file's links go when it does (`release_uprobes`), and
/// shutdown closes them from many threads at once: each close waits for the
/// kernel's grace periods (uprobe unregister), and one after another — as
/// the programs drop them — a few hundred per-point probes took 40 s, past
/// Kubernetes' default grace period, holding up execs meanwhile.
static UPROBE_LINKS: std::sync::LazyLock<std::sync::Mutex<HashMap<FileId, Vec<UProbeLink>>>> =
    std::sync::LazyLock::new(Default::default);

fn uprobe_links() -> std::sync::MutexGuard<'static, HashMap<FileId, Vec<UProbeLink>>> {
    UPROBE_LINKS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One uprobe point's attachment, shared by the points of one program.
pub type PointResult = std::rc::Rc<Result<(), ProbeError>>;

/// Attaches uprobe points `(program, file offset, label)` to `file` (whose
/// identity is `owner`), which
/// is held open and named through `/proc/self/fd`, so a process that exits
/// meanwhile (its `/proc/PID/...` path vanishing) does not matter. Each
/// program is attached once for all of its offsets (one uprobe_multi link,
/// or one perf event per point where the kernel has no such links). Each
/// label comes back with its point's result, in order: the points of a
/// program share its result. `cookie` is what `bpf_get_attach_cookie()`
/// gives the programs at every point (0 without).
pub fn attach_uprobes<L>(
    ebpf: &mut Ebpf,
    points: Vec<(&str, u64, L)>,
    file: &std::fs::File,
    owner: FileId,
    cookie: Option<u64>,
) -> Vec<(L, PointResult)> {
    let mut by_program: Vec<(&str, Vec<u64>, Option<PointResult>)> = Vec::new();
    for &(prog, offset, _) in &points {
        match by_program.iter_mut().find(|(p, _, _)| *p == prog) {
            Some((_, offsets, _)) => offsets.push(offset),
            None => by_program.push((prog, vec![offset], None)),
        }
    }
    for (prog, offsets, result) in &mut by_program {
        *result = Some(std::rc::Rc::new(attach_program(ebpf, prog, offsets, file, owner, cookie)));
    }
    points
        .into_iter()
        .filter_map(|(prog, _, label)| {
            let (_, _, result) = by_program.iter().find(|(p, _, _)| *p == prog)?;
            Some((label, result.clone()?))
        })
        .collect()
}

fn attach_program(
    ebpf: &mut Ebpf,
    prog: &str,
    offsets: &[u64],
    file: &std::fs::File,
    owner: FileId,
    cookie: Option<u64>,
) -> Result<(), ProbeError> {
    use std::os::fd::AsRawFd;
    let via_fd = std::path::PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let name = uprobe_program(prog);
    let failed = |e| ProbeError::Attach { program: name.to_string(), source: e };
    let p = program::<aya::programs::UProbe>(ebpf, &name)?;
    let points = offsets.iter().map(|&offset| aya::programs::uprobe::UProbeAttachPoint {
        location: aya::programs::uprobe::UProbeAttachLocation::AbsoluteOffset(offset),
        cookie,
    });
    let id = p.attach(points, &via_fd, aya::programs::uprobe::UProbeScope::AllProcesses).map_err(failed)?;
    let link = p.take_link(id).map_err(failed)?;
    uprobe_links().entry(owner).or_default().push(link);
    Ok(())
}

/// Detaches the uprobes of files that are gone, from one thread of their
/// own (each close waits for grace periods the capture loop must not wait
/// for). Returns how many links each owner had, in order.
pub fn release_uprobes(owners: &[FileId]) -> Vec<usize> {
    let per_owner: Vec<Vec<UProbeLink>> = {
        let mut all = uprobe_links();
        owners.iter().map(|o| all.remove(o).unwrap_or_default()).collect()
    };
    let counts = per_owner.iter().map(Vec::len).collect();
    let links: Vec<UProbeLink> = per_owner.into_iter().flatten().collect();
    if !links.is_empty() {
        let spawned = std::thread::Builder::new().name("release".into()).spawn(move || drop(links));
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "release thread did not start; links detached in place");
        }
    }
    counts
}

/// Threads closing uprobe links at once at shutdown.
const DETACH_THREADS: usize = 32;

/// Detaches every uprobe, from up to DETACH_THREADS threads; returns how many
/// links there were.
pub fn detach_uprobes() -> usize {
    let links: Vec<UProbeLink> = std::mem::take(&mut *uprobe_links()).into_values().flatten().collect();
    let n = links.len();
    in_parallel(links, drop);
    n
}

/// Unloads every program of the object, detaching the tracepoints and
/// kprobes they own, from up to DETACH_THREADS threads: each perf-event
/// link's detach waits for an RCU tasks-trace grace period, which waiters
/// at the same time share (one after another, on a loaded node, this took
/// 12-18 s for some 15 links once the uprobes went in 0.1 s).
pub fn unload_all(ebpf: &mut Ebpf) {
    let programs: Vec<&mut Program> = ebpf.programs_mut().map(|(_, p)| p).collect();
    in_parallel(programs, |p| {
        // A program never loaded (the other kernel path's) says so: fine.
        let _ = match p {
            Program::TracePoint(p) => p.unload(),
            Program::RawTracePoint(p) => p.unload(),
            Program::KProbe(p) => p.unload(),
            Program::UProbe(p) => p.unload(),
            _ => Ok(()),
        };
    });
}

/// Runs `f` on every item, spread over up to DETACH_THREADS threads.
fn in_parallel<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync) {
    let threads = DETACH_THREADS.min(items.len());
    let mut shares: Vec<Vec<T>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        shares[i % threads].push(item);
    }
    let f = &f;
    std::thread::scope(|scope| {
        for share in shares {
            // A thread that cannot start drops its share here: links detach in
            // turn, programs go with the object.
            let builder = std::thread::Builder::new().name("detach".into());
            if let Err(e) = builder.spawn_scoped(scope, move || share.into_iter().for_each(f)) {
                tracing::debug!(error = %e, "detach thread did not start");
            }
        }
    });
}

//! Loading the eBPF object and attaching its probe families. Every
//! attachment is logged as a `probe attached` line (CONTRACT.md).

mod boringssl;
pub mod boringssl_find;
pub mod boringssl_static;
mod elf;
pub mod exec_gate;
mod file_id;
mod gnutls;
mod go_layout;
mod go_tls;
pub mod golang;
pub mod jvm_attach;
mod kernel_hook;
mod loader;
pub mod mapped;
mod nss;
mod nss_methods;
mod openssl;
mod probed_files;
mod rustls;
pub mod rustls_find;
mod rustls_stripped;
mod shared_callee;
mod sites;
mod tls_lib;
mod tls_probers;
mod uprobe_plan;

pub use boringssl::BORINGSSL;
pub use gnutls::GNUTLS;
pub use go_layout::{GoLayout, TABLE as GO_LAYOUT_TABLE, TCPCONN_TYPE_HASHES};
pub use go_tls::GoTlsProbes;
pub use kernel_hook::{decide, HookDecision, KernelHook};
pub use loader::{
    chain as error_chain, detach_uprobes, ensure_tracefs, load_every_program, load_object, unload_all,
    Attached, ProbeError,
};
pub use nss::NSS;
pub use openssl::{is_libssl, openssl_version, OPENSSL};
pub use tls_lib::{library_of_process, TlsLibProbes};
pub use tls_probers::TlsProbers;

use aya::programs::{KProbe, RawTracePoint, TracePoint};
use aya::Ebpf;
use tracing::{info, warn};

/// (program, tracepoint category, tracepoint name) for connection lifecycle
/// and for libraries mapped after start-up.
const LIFECYCLE_TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("tp_exit_mmap", "syscalls", "sys_exit_mmap"),
    ("tp_sched_exec", "sched", "sched_process_exec"),
    ("tp_sched_exit", "sched", "sched_process_exit"),
    ("tp_exit_connect", "syscalls", "sys_exit_connect"),
    ("tp_exit_accept", "syscalls", "sys_exit_accept"),
    ("tp_exit_accept4", "syscalls", "sys_exit_accept4"),
];

/// (program, raw tracepoint), attached in this order: closes, which mostly
/// come in softirq, where a perf tracepoint's program is skipped while any
/// other BPF program runs on the CPU; the second program runs what the
/// kernel skipped of the first (tcp_conn.bpf.c).
const LIFECYCLE_RAW_TRACEPOINTS: &[(&str, &str)] =
    &[("rtp_sock_set_state", "inet_sock_set_state"), ("rtp_sock_set_state_nested", "inet_sock_set_state")];

/// Syscalls whose payload the tracepoint data path captures (at exit).
const DATA_SYSCALLS: &[&str] =
    &["write", "read", "writev", "readv", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendfile64", "splice"];

/// Syscalls watched for DNS datagrams only (glibc asks A and AAAA with one sendmmsg).
const DNS_ONLY_SYSCALLS: &[&str] = &["sendmmsg", "recvmmsg"];

/// (program, kernel function) for the kprobe data path.
const DATA_KPROBES: &[(&str, &str)] = &[
    ("kp_tcp_sendmsg", "tcp_sendmsg"),
    ("kr_tcp_sendmsg", "tcp_sendmsg"),
    ("kp_tcp_recvmsg", "tcp_recvmsg"),
    ("kr_tcp_recvmsg", "tcp_recvmsg"),
];

/// The `probe attached` line of CONTRACT.md: what was probed (`kernel`, or a
/// library or binary path), the probe type and function, and the outcome.
fn log_attach(
    target: &str,
    probe_type: &str,
    probe: &str,
    result: &Result<(), ProbeError>,
    version: Option<&str>,
) {
    let metrics = crate::metrics::global();
    match result {
        Ok(()) => metrics.probe_attached(probe_type, target, version),
        Err(e) => metrics.probe_failed(probe_type, target, e.class()),
    }
    let version = version.unwrap_or("");
    match result {
        Ok(()) => info!(target, probe_type, probe, version, ok = true, "probe attached"),
        Err(e) => warn!(
            target,
            probe_type,
            probe,
            version,
            ok = false,
            error = %loader::chain(e),
            "probe attached: failed"
        ),
    }
}

/// The pids of the processes running now (as /proc lists them).
pub(crate) fn running_pids() -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs.flatten().filter_map(|p| p.file_name().to_str()?.parse().ok()).collect()
}

/// A prober of whole executables (Go programs with crypto/tls, Rust programs
/// with rustls): what it probes differs, how a program comes to be examined
/// does not — the processes running at start-up, each program executed
/// later, each program the exec gate holds.
pub(crate) trait ProgramProber {
    /// What a probed program is, for the logs ("a Go program").
    const WHAT: &'static str;

    /// Probes the executable at `path` once per identity; when the probes
    /// were in place (boot-time ns), if it was newly probed.
    fn examine(&mut self, ebpf: &mut aya::Ebpf, path: &std::path::Path) -> Option<u64>;

    /// Examines the executables of every running process. Returns how many were probed.
    fn attach_running(&mut self, ebpf: &mut aya::Ebpf) -> usize {
        running_pids()
            .into_iter()
            .filter(|pid| self.examine(ebpf, std::path::Path::new(&format!("/proc/{pid}/exe"))).is_some())
            .count()
    }

    /// A program was executed: probe it if it is one of ours.
    fn examine_exec(&mut self, ebpf: &mut aya::Ebpf, exe: &nettap_core::events::LibEvent, now_boot_ns: u64) {
        let path = std::path::PathBuf::from(format!("/proc/{}/exe", exe.pid));
        if let Some(in_place) = self.examine(ebpf, &path) {
            log_program_probed(Self::WHAT, exe.pid, &path, exe.ts_boot_ns, Some(now_boot_ns), in_place);
        }
    }

    /// A program held at exec: probe it, before it runs, if it is one of ours.
    fn examine_held(&mut self, ebpf: &mut aya::Ebpf, held: &exec_gate::HeldExec) {
        if let Some(in_place) = self.examine(ebpf, &held.path()) {
            log_program_probed(Self::WHAT, held.pid, &held.path(), held.held_at_boot_ns, None, in_place);
        }
    }
}

/// One line per program probed after start-up: `since` is when it was seen
/// (the exec tracepoint, or the exec gate holding it), `noticed` when the
/// sensor read that, `in_place` when its probes were attached (boot ns).
/// Held programs (no `noticed`) had not run a single instruction yet.
/// How logs name a file reached through a `/proc` link (`/proc/PID/exe`, a
/// held program's `/proc/self/fd/N`, `/proc/PID/map_files/…`): the file the
/// link points to. Other paths as given (a library's own symlink would
/// read as a bare relative name; `/proc/PID/root/…` says whose file it is).
fn shown_path(path: &std::path::Path) -> std::path::PathBuf {
    let parts: Vec<_> = path.components().map(|c| c.as_os_str().to_string_lossy()).collect();
    let link = matches!(
        parts.iter().map(|p| p.as_ref()).collect::<Vec<&str>>().as_slice(),
        ["/", "proc", _, "exe"] | ["/", "proc", _, "fd" | "map_files", _]
    );
    if link {
        if let Ok(target) = std::fs::read_link(path) {
            return target;
        }
    }
    path.to_path_buf()
}

fn log_program_probed(
    what: &str,
    pid: u32,
    path: &std::path::Path,
    since: u64,
    noticed: Option<u64>,
    in_place: u64,
) {
    let binary = shown_path(path);
    let attached_us = in_place.saturating_sub(since) / 1000;
    match noticed {
        Some(n) => info!(
            pid,
            binary = %binary.display(),
            noticed_us = n.saturating_sub(since) / 1000,
            attached_us,
            "probes attached to {what}"
        ),
        None => info!(pid, binary = %binary.display(), attached_us, held = true, "probes attached to {what}"),
    }
}

fn attach_tracepoint(ebpf: &mut Ebpf, prog: &str, category: &str, name: &str) -> Result<(), ProbeError> {
    let result = (|| {
        let p: &mut TracePoint = loader::program(ebpf, prog)?;
        p.load().map_err(|e| ProbeError::Load { program: prog.into(), source: e })?;
        p.attach(category, name).map_err(|e| ProbeError::Attach { program: prog.into(), source: e })?;
        Ok(())
    })();
    log_attach("kernel", "tracepoint", &format!("{category}:{name}"), &result, None);
    result
}

fn attach_raw_tracepoint(ebpf: &mut Ebpf, prog: &str, name: &str) -> Result<(), ProbeError> {
    let result = (|| {
        let p: &mut RawTracePoint = loader::program(ebpf, prog)?;
        p.load().map_err(|e| ProbeError::Load { program: prog.into(), source: e })?;
        p.attach(name).map_err(|e| ProbeError::Attach { program: prog.into(), source: e })?;
        Ok(())
    })();
    log_attach("kernel", "raw_tracepoint", name, &result, None);
    result
}

fn attach_kprobe(ebpf: &mut Ebpf, prog: &str, function: &str) -> Result<(), ProbeError> {
    let result = (|| {
        let p: &mut KProbe = loader::program(ebpf, prog)?;
        p.load().map_err(|e| ProbeError::Load { program: prog.into(), source: e })?;
        p.attach(function, 0).map_err(|e| ProbeError::Attach { program: prog.into(), source: e })?;
        Ok(())
    })();
    let kind = if prog.starts_with("kr_") { "kretprobe" } else { "kprobe" };
    log_attach("kernel", kind, function, &result, None);
    result
}

/// Attaches the connection lifecycle probes and the kernel data path chosen
/// by `choice` (trying kprobes first where allowed).
pub fn attach_kernel(
    ebpf: &mut Ebpf,
    choice: crate::config::KernelHookChoice,
) -> Result<Attached, ProbeError> {
    for (prog, cat, name) in LIFECYCLE_TRACEPOINTS {
        attach_tracepoint(ebpf, prog, cat, name)?;
    }
    for (prog, name) in LIFECYCLE_RAW_TRACEPOINTS {
        attach_raw_tracepoint(ebpf, prog, name)?;
    }

    let kprobes = if choice == crate::config::KernelHookChoice::Tracepoint {
        Err("not tried: tracepoints were configured".to_string())
    } else {
        try_kprobes(ebpf)
    };
    let decision = decide(choice, kprobes)?;
    info!(hook = decision.hook.as_str(), reason = %decision.reason, "kernel hook selected");

    // The syscall exits carry TCP on the tracepoint path, and DNS over UDP
    // on both paths.
    let tcp_here = u32::from(decision.hook == KernelHook::Tracepoint);
    let map_err = |detail: String| ProbeError::Map { map: "syscall_tcp", detail };
    let map = ebpf.map_mut("syscall_tcp").ok_or_else(|| map_err("missing from the object".into()))?;
    let mut flag: aya::maps::Array<_, u32> =
        aya::maps::Array::try_from(map).map_err(|e| map_err(e.to_string()))?;
    flag.set(0, &tcp_here, 0).map_err(|e| map_err(e.to_string()))?;
    for sc in DATA_SYSCALLS.iter().chain(DNS_ONLY_SYSCALLS) {
        attach_tracepoint(ebpf, &format!("tp_exit_{sc}"), "syscalls", &format!("sys_exit_{sc}"))?;
    }
    Ok(Attached { hook: decision })
}

/// Attaches all kprobes or none: a half-attached path would lose one direction.
fn try_kprobes(ebpf: &mut Ebpf) -> Result<(), String> {
    // Disarmed kprobes attach fine and never fire: not tried at all.
    if let Some(why) = kernel_hook::running_kprobes_disarmed() {
        return Err(why);
    }
    attach_kprobes(ebpf, DATA_KPROBES)
}

/// Attaches every `(program, kernel function)` kprobe of `list`, or, when one
/// fails, detaches and unloads every program of `list` again (the failing one
/// included: it may be loaded) and says why. Public for the tests, which make
/// one fail midway on a kernel with kprobes.
pub fn attach_kprobes(ebpf: &mut Ebpf, list: &[(&str, &str)]) -> Result<(), String> {
    for (prog, function) in list {
        if let Err(e) = attach_kprobe(ebpf, prog, function) {
            for (other, _) in list {
                if let Ok(p) = loader::program::<KProbe>(ebpf, other) {
                    // Unloading drops the program's links with it; one never
                    // loaded says so, which is fine.
                    let _ = p.unload();
                }
            }
            warn!(program = %prog, "kprobe attachment undone: every kprobe of the path detached");
            return Err(loader::chain(&e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::shown_path;
    use std::path::Path;

    #[test]
    fn proc_links_are_followed_and_other_paths_kept() {
        let exe = std::env::current_exe().unwrap();
        assert_eq!(shown_path(Path::new("/proc/self/exe")), exe);
        let file = std::fs::File::open(&exe).unwrap();
        let fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
        assert_eq!(shown_path(Path::new(&fd)), exe);
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("libx.so.1");
        std::os::unix::fs::symlink("libx.so.1.2", &link).unwrap();
        assert_eq!(shown_path(&link), link, "a library's symlink is named as given");
        let in_root = Path::new("/proc/self/root/usr");
        assert_eq!(shown_path(in_root), in_root);
    }
}

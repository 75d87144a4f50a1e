//! What the sensor may do with the capabilities it runs with. Checked once at
//! start-up so that a missing capability is named, with the features it
//! disables, instead of surfacing later as a stream of EPERMs (or, worse, as
//! processes silently skipped).
//!
//! The DaemonSet grants exactly CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and
//! CAP_SYS_PTRACE. CAP_SYS_ADMIN (root) adds the exec gate, and on kernels
//! carrying the fix for CVE-2025-38466 (every stable kernel since July 2025)
//! the kernel only creates uprobes for CAP_SYS_ADMIN, so there TLS capture
//! through OpenSSL and Go needs it too: that is measured here, not guessed
//! from the kernel version, because the fix was backported.

use std::io;

/// The capabilities the sensor's features depend on (numbers from
/// `linux/capability.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// Signals to processes of other users (the HotSpot attach handshake).
    Kill = 5,
    /// The attach socket of a JVM run by another user (mode 0600).
    DacOverride = 1,
    /// Documented for the DaemonSet; no program type nettap loads needs it today.
    NetAdmin = 12,
    /// /proc/PID/exe, maps and root of processes of other users.
    SysPtrace = 19,
    /// The exec gate (fanotify), uprobes on patched kernels; implies BPF and PERFMON.
    SysAdmin = 21,
    /// Tracing programs, perf events, reading kernel memory from eBPF.
    Perfmon = 38,
    /// Maps and programs.
    Bpf = 39,
}

impl Cap {
    /// The name used in logs and documentation.
    pub fn name(self) -> &'static str {
        match self {
            Cap::Kill => "CAP_KILL",
            Cap::DacOverride => "CAP_DAC_OVERRIDE",
            Cap::NetAdmin => "CAP_NET_ADMIN",
            Cap::SysPtrace => "CAP_SYS_PTRACE",
            Cap::SysAdmin => "CAP_SYS_ADMIN",
            Cap::Perfmon => "CAP_PERFMON",
            Cap::Bpf => "CAP_BPF",
        }
    }
}

/// The four capabilities the sensor is documented to run with.
pub const DOCUMENTED: [Cap; 4] = [Cap::Bpf, Cap::Perfmon, Cap::NetAdmin, Cap::SysPtrace];

/// An effective capability set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps(pub u64);

impl Caps {
    /// This process's effective set, from `/proc/self/status`.
    pub fn current() -> io::Result<Caps> {
        let status = procfs::process::Process::myself().and_then(|p| p.status()).map_err(io::Error::other)?;
        Ok(Caps(status.capeff))
    }

    /// Whether `cap` is in the set.
    pub fn has(self, cap: Cap) -> bool {
        self.0 & (1u64 << cap as u32) != 0
    }
}

/// Whether the kernel lets this process create uprobes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uprobes {
    /// A uprobe perf event could be created.
    Permitted,
    /// The kernel refused (EACCES/EPERM).
    Refused,
    /// The kernel has no uprobe event source (or the check itself failed).
    Unavailable,
}

/// What the sensor can and cannot do, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// Why capture cannot start at all, if it cannot.
    pub fatal: Option<String>,
    /// (capability, what its absence disables) for each missing documented capability.
    pub missing: Vec<(&'static str, String)>,
    /// The same for capabilities beyond the documented four that a feature
    /// in use would need (expected to be absent in the DaemonSet).
    pub beyond: Vec<(String, String)>,
    /// OpenSSL and Go TLS probes can be attached.
    pub uprobes: bool,
    /// Why not, when not.
    pub uprobes_refused: Option<String>,
    /// The exec gate can be started.
    pub exec_gate: bool,
}

const UPROBE_FEATURES: &str = "TLS plaintext through OpenSSL and Go (uprobes)";

/// Decides what `caps` allow, given what the kernel said about uprobes and
/// whether running JVMs are to be attached.
pub fn assess(caps: Caps, uprobes: Uprobes, attach_jvms: bool) -> Assessment {
    let admin = caps.has(Cap::SysAdmin);
    let mut missing = Vec::new();
    let mut fatal = Vec::new();
    for cap in DOCUMENTED {
        if caps.has(cap) || (admin && matches!(cap, Cap::Bpf | Cap::Perfmon)) {
            continue;
        }
        let disables = match cap {
            Cap::Bpf => {
                fatal.push("CAP_BPF (creating eBPF maps and programs)");
                "all capture (no eBPF map or program can be created)".to_string()
            }
            Cap::Perfmon => {
                fatal.push("CAP_PERFMON (tracing programs and their attachment)");
                "all capture (no tracing program can be loaded or attached)".to_string()
            }
            Cap::NetAdmin => {
                "nothing in this version (nettap loads no socket-filter, TC or XDP program)".to_string()
            }
            Cap::SysPtrace => "TLS capture (OpenSSL, Go) and `--attach-jvms` for processes of other users \
                               or with more capabilities than the sensor: their executables, libraries \
                               and file systems cannot be opened through /proc"
                .to_string(),
            _ => unreachable!("not a documented capability"),
        };
        missing.push((cap.name(), disables));
    }
    let mut beyond = Vec::new();
    if !admin {
        beyond.push((
            Cap::SysAdmin.name().to_string(),
            "the exec gate (programs started after the sensor are probed 10-30 ms after they start, \
             so their first TLS calls can be missed)"
                .to_string(),
        ));
    }
    let attach_caps: Vec<&str> =
        [Cap::Kill, Cap::DacOverride].into_iter().filter(|c| !caps.has(*c)).map(Cap::name).collect();
    if attach_jvms && !attach_caps.is_empty() {
        beyond.push((
            attach_caps.join(" and "),
            "`--attach-jvms` for JVMs of other users (the attach handshake signals the JVM and \
             connects to its owner-only socket); JVMs of the sensor's own user, and JVMs given \
             the agent at start, are unaffected"
                .to_string(),
        ));
    }
    let (uprobes_ok, uprobes_refused) = match uprobes {
        Uprobes::Permitted => (true, None),
        Uprobes::Refused if !admin => (
            false,
            Some(format!(
                "{UPROBE_FEATURES}: this kernel creates uprobes only for CAP_SYS_ADMIN \
                 (the fix for CVE-2025-38466); plaintext TCP, DNS and JVM agent capture go on"
            )),
        ),
        Uprobes::Refused => (false, Some(format!("{UPROBE_FEATURES}: the kernel refused a uprobe"))),
        Uprobes::Unavailable => {
            (false, Some(format!("{UPROBE_FEATURES}: the kernel has no uprobe event source")))
        }
    };
    Assessment {
        fatal: (!fatal.is_empty()).then(|| {
            format!(
                "nettap cannot capture without {}: run it as root or with {}",
                fatal.join(" and "),
                DOCUMENTED.map(Cap::name).join(", ")
            )
        }),
        missing,
        beyond,
        uprobes: uprobes_ok,
        uprobes_refused,
        exec_gate: admin,
    }
}

impl Assessment {
    /// Says at start-up what is missing and what that disables: a warning per
    /// missing documented capability and for uprobes refused, a note for the
    /// capabilities beyond the four.
    pub fn log(&self, caps: Caps) {
        let held: Vec<&str> = [DOCUMENTED.as_slice(), &[Cap::SysAdmin]]
            .concat()
            .into_iter()
            .filter(|c| caps.has(*c))
            .map(Cap::name)
            .collect();
        tracing::info!(effective = format!("{:#x}", caps.0), held = held.join(","), "capabilities");
        for (cap, disables) in &self.missing {
            tracing::warn!(capability = cap, disabled = disables.as_str(), "capability missing");
        }
        for (cap, disables) in &self.beyond {
            tracing::info!(capability = cap.as_str(), disabled = disables.as_str(), "capability not granted");
        }
        if let Some(why) = &self.uprobes_refused {
            tracing::warn!(disabled = why.as_str(), "uprobes not permitted");
        }
    }
}

/// Reads this process's capabilities, asks the kernel about uprobes when
/// CAP_SYS_ADMIN does not settle it, logs the outcome and returns it; an
/// error when capture cannot start at all.
pub fn check(attach_jvms: bool) -> Result<Assessment, String> {
    let caps = Caps::current().map_err(|e| format!("cannot read this process's capabilities: {e}"))?;
    let uprobes = if caps.has(Cap::SysAdmin) { Uprobes::Permitted } else { probe_uprobes() };
    let a = assess(caps, uprobes, attach_jvms);
    a.log(caps);
    match &a.fatal {
        Some(why) => Err(why.clone()),
        None => Ok(a),
    }
}

/// The first fields of `struct perf_event_attr` (`linux/perf_event.h`), padded
/// to PERF_ATTR_SIZE_VER7; the kernel reads the rest as zero.
#[repr(C)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    rest: [u64; 7],
}

const PERF_FLAG_DISABLED: u64 = 1;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// Asks the kernel for a (disabled) uprobe on a few `nop`s in an anonymous
/// memory file that nothing maps: no breakpoint lands in any process, and the
/// answer is exactly the permission check every real uprobe goes through.
pub fn probe_uprobes() -> Uprobes {
    let Some(kind) = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return Uprobes::Unavailable;
    };
    // SAFETY: plain syscalls on a name we own; the fd is closed below.
    let memfd = unsafe { libc::memfd_create(c"nettap-uprobe-check".as_ptr(), libc::MFD_CLOEXEC) };
    if memfd < 0 {
        return Uprobes::Unavailable;
    }
    let nops = [0x90u8; 16];
    // SAFETY: writes from a live buffer of the given length.
    let written = unsafe { libc::write(memfd, nops.as_ptr().cast(), nops.len()) };
    let path = std::ffi::CString::new(format!("/proc/self/fd/{memfd}")).expect("no NUL");
    let attr = PerfEventAttr {
        kind,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: 0,
        sample_period: 1,
        sample_type: 0,
        read_format: 0,
        flags: PERF_FLAG_DISABLED,
        wakeup_events: 0,
        bp_type: 0,
        config1: path.as_ptr() as u64,
        config2: 0,
        rest: [0; 7],
    };
    let result = if written != nops.len() as isize {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: `attr` and `path` outlive the call; pid -1 with cpu 0 is a
        // system-wide event on one CPU, closed right away.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                -1,
                0,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: the fd was just returned to us.
            unsafe { libc::close(fd as i32) };
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: our own fd.
    unsafe { libc::close(memfd) };
    match result {
        Ok(()) => Uprobes::Permitted,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => Uprobes::Refused,
        // Anything else (an odd file system, an old kernel's EINVAL) is not a
        // permission answer: let the real attachments report.
        Err(_) => Uprobes::Permitted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[Cap]) -> Caps {
        Caps(list.iter().fold(0, |acc, c| acc | 1u64 << *c as u32))
    }

    const FOUR: [Cap; 4] = DOCUMENTED;

    #[test]
    fn the_four_capabilities_capture_but_without_the_exec_gate() {
        let a = assess(caps(&FOUR), Uprobes::Permitted, false);
        assert_eq!(a.fatal, None);
        assert!(a.missing.is_empty(), "{:?}", a.missing);
        assert!(a.uprobes && !a.exec_gate);
        let named: Vec<&str> = a.beyond.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(named, ["CAP_SYS_ADMIN"]);
        let a = assess(caps(&FOUR), Uprobes::Permitted, true);
        assert_eq!(a.beyond[1].0, "CAP_KILL and CAP_DAC_OVERRIDE");
    }

    #[test]
    fn a_kernel_refusing_uprobes_without_sys_admin_is_named_with_the_cve() {
        let a = assess(caps(&FOUR), Uprobes::Refused, false);
        assert!(!a.uprobes);
        let why = a.uprobes_refused.unwrap();
        assert!(why.contains("CAP_SYS_ADMIN") && why.contains("CVE-2025-38466"), "{why}");
    }

    #[test]
    fn missing_bpf_or_perfmon_is_fatal_and_says_which() {
        let a = assess(caps(&[Cap::Perfmon, Cap::NetAdmin, Cap::SysPtrace]), Uprobes::Permitted, false);
        let fatal = a.fatal.unwrap();
        assert!(fatal.contains("CAP_BPF") && !fatal.contains("CAP_PERFMON ("), "{fatal}");
        let a = assess(caps(&[Cap::Bpf, Cap::NetAdmin, Cap::SysPtrace]), Uprobes::Permitted, false);
        assert!(a.fatal.unwrap().contains("CAP_PERFMON"));
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon() {
        let a = assess(caps(&[Cap::SysAdmin, Cap::SysPtrace, Cap::NetAdmin]), Uprobes::Refused, false);
        assert_eq!(a.fatal, None);
        assert!(a.missing.is_empty() && a.beyond.is_empty(), "{:?} {:?}", a.missing, a.beyond);
        assert!(a.exec_gate);
        assert!(!a.uprobes && !a.uprobes_refused.unwrap().contains("CVE"));
    }

    #[test]
    fn a_missing_ptrace_names_what_it_disables() {
        let a = assess(caps(&[Cap::Bpf, Cap::Perfmon, Cap::NetAdmin]), Uprobes::Permitted, false);
        assert_eq!(a.missing[0].0, "CAP_SYS_PTRACE");
        assert!(a.missing[0].1.contains("TLS capture"));
    }

    #[test]
    fn the_uprobe_check_answers_as_root() {
        // The test suite runs as root: with CAP_SYS_ADMIN every kernel permits them.
        assert!(Caps::current().unwrap().has(Cap::SysAdmin), "the tests run as root");
        assert_eq!(probe_uprobes(), Uprobes::Permitted);
    }
}

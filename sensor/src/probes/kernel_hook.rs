//! Which kernel hook carries plaintext TCP, decided at start-up from what
//! the running kernel allows.

use super::ProbeError;
use crate::config::KernelHookChoice;

/// The kernel data path in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelHook {
    /// kprobes on tcp_sendmsg/tcp_recvmsg (the documented method).
    Kprobe,
    /// Syscall tracepoints (kernels without kprobes).
    Tracepoint,
}

impl KernelHook {
    /// Name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            KernelHook::Kprobe => "kprobe",
            KernelHook::Tracepoint => "tracepoint",
        }
    }
}

/// The choice and why it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookDecision {
    /// Chosen path.
    pub hook: KernelHook,
    /// Why, in words for the log.
    pub reason: String,
}

/// Whether this kernel has any way to attach kprobes (the perf kprobe PMU or
/// tracefs `kprobe_events`). Without either, the attempt can only fail.
pub fn kprobes_possible() -> bool {
    [
        "/sys/bus/event_source/devices/kprobe",
        "/sys/kernel/tracing/kprobe_events",
        "/sys/kernel/debug/tracing/kprobe_events",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists())
}

/// Where the kernel says whether kprobes are armed (debugfs): `0` after
/// `echo 0 >` it, when every kprobe stays attached and never fires.
pub const KPROBES_ENABLED: &str = "/sys/kernel/debug/kprobes/enabled";

/// Why kprobes would attach and capture nothing, from the contents of
/// `KPROBES_ENABLED` (`None` where debugfs is not mounted: nothing to tell).
pub fn kprobes_disarmed(enabled: Option<&str>) -> Option<String> {
    (enabled?.trim() == "0").then(|| format!("kprobes are disarmed ({KPROBES_ENABLED} is 0)"))
}

/// `kprobes_disarmed` of the running kernel.
pub fn running_kprobes_disarmed() -> Option<String> {
    kprobes_disarmed(std::fs::read_to_string(KPROBES_ENABLED).ok().as_deref())
}

/// Which argument of the kernel's `tcp_recvmsg` holds its flags (the kprobe
/// skips `MSG_PEEK` calls): Linux 5.19 removed the `nonblock` argument before
/// them ("net: remove noblock parameter from recvmsg() entities").
pub fn recv_flags_arg(release: &str) -> u32 {
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    match (numbers.next(), numbers.next()) {
        (Some(major), Some(minor)) if (major, minor) < (5, 19) => 5,
        _ => 4,
    }
}

/// `recv_flags_arg` of the running kernel.
pub fn running_recv_flags_arg() -> u32 {
    recv_flags_arg(&std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default())
}

/// Decides from the configured preference and the outcome of attaching the
/// kprobes (`Err` carries why they could not be attached).
pub fn decide(choice: KernelHookChoice, kprobes: Result<(), String>) -> Result<HookDecision, ProbeError> {
    match (choice, kprobes) {
        (KernelHookChoice::Tracepoint, _) => {
            Ok(HookDecision { hook: KernelHook::Tracepoint, reason: "syscall tracepoints configured".into() })
        }
        (_, Ok(())) => Ok(HookDecision {
            hook: KernelHook::Kprobe,
            reason: "kprobes attached on tcp_sendmsg/tcp_recvmsg".into(),
        }),
        (KernelHookChoice::Kprobe, Err(why)) => Err(ProbeError::KprobesRequired(why)),
        (KernelHookChoice::Auto, Err(why)) => Ok(HookDecision {
            hook: KernelHook::Tracepoint,
            reason: format!("kprobes unavailable ({why}); falling back to syscall tracepoints"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prefers_kprobes() {
        let d = decide(KernelHookChoice::Auto, Ok(())).unwrap();
        assert_eq!(d.hook, KernelHook::Kprobe);
    }

    #[test]
    fn auto_falls_back_and_says_why() {
        let d = decide(KernelHookChoice::Auto, Err("no kprobe PMU".into())).unwrap();
        assert_eq!(d.hook, KernelHook::Tracepoint);
        assert!(d.reason.contains("no kprobe PMU"), "{}", d.reason);
        assert!(d.reason.contains("falling back"), "{}", d.reason);
    }

    #[test]
    fn explicit_kprobe_fails_loudly() {
        let e = decide(KernelHookChoice::Kprobe, Err("no kprobe PMU".into())).unwrap_err();
        assert!(e.to_string().contains("no kprobe PMU"), "{e}");
    }

    #[test]
    fn disarmed_kprobes_are_named_and_unknown_or_armed_ones_are_not() {
        let why = kprobes_disarmed(Some("0\n")).unwrap();
        assert!(why.contains("disarmed") && why.contains(KPROBES_ENABLED), "{why}");
        assert_eq!(kprobes_disarmed(Some("1\n")), None);
        assert_eq!(kprobes_disarmed(None), None);
        let d = decide(KernelHookChoice::Auto, Err(why)).unwrap();
        assert_eq!(d.hook, KernelHook::Tracepoint);
        assert!(d.reason.contains("disarmed"), "{}", d.reason);
    }

    #[test]
    fn recv_flags_argument_moved_in_5_19() {
        assert_eq!(recv_flags_arg("6.1.0-57-amd64"), 4);
        assert_eq!(recv_flags_arg("5.19.0"), 4);
        assert_eq!(recv_flags_arg("6.18.44-fc-v1252"), 4);
        assert_eq!(recv_flags_arg("5.18.19-generic"), 5);
        assert_eq!(recv_flags_arg("5.17.0-1"), 5);
        assert_eq!(recv_flags_arg(""), 4);
    }

    #[test]
    fn explicit_tracepoint_never_uses_kprobes() {
        let d = decide(KernelHookChoice::Tracepoint, Ok(())).unwrap();
        assert_eq!(d.hook, KernelHook::Tracepoint);
    }
}

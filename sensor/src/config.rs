//! Capture settings: defaults, the `--config` TOML file, then command-line overrides.

use serde::Deserialize;
use std::path::Path;

/// Which kernel hook carries plaintext TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KernelHookChoice {
    /// kprobes where the kernel has them, syscall tracepoints otherwise.
    Auto,
    /// kprobes on tcp_sendmsg/tcp_recvmsg, or fail.
    Kprobe,
    /// syscall tracepoints.
    Tracepoint,
}

/// Sockets the kernel tracks by default: 100 000 connections with both ends
/// on the node, with room for what CPUs hold back (docs/benchmarks.md).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 262_144;
/// The most `max_connections` may be (≈ 0.4 GiB of kernel memory).
pub const MAX_CONNECTIONS_BOUND: u32 = 4 << 20;

/// Everything that shapes what the kernel side captures.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Size of the one BPF ring buffer, bytes (a power of two, at least one page).
    pub ring_buffer_bytes: u32,
    /// Payload bytes captured per syscall; the rest is reported as `truncated`.
    pub max_bytes_per_call: u32,
    /// Kernel hook selection.
    pub kernel_hook: KernelHookChoice,
    /// Only these processes (tgids), when not empty.
    pub pids: Vec<u32>,
    /// Only connections with one of these ports at either end, when not empty.
    pub ports: Vec<u16>,
    /// How many sockets the kernel tracks at once (LRU beyond that; an
    /// eviction is counted and recovered in user space, which tracks twice
    /// as many). At most MAX_CONNECTIONS_BOUND.
    pub max_connections: u32,
    /// How long a program executed for the first time may be held at exec
    /// until its TLS code is probed (fanotify; needs CAP_SYS_ADMIN); 0: never.
    pub exec_hold_ms: u32,
    /// What is redacted from exchanges before any output.
    pub redact: RedactConfig,
    /// Pod cgroups the kernel can hold capture rules for (Kubernetes mode;
    /// 0: 8192 there, none otherwise).
    pub max_pod_cgroups: u32,
}

/// `[capture.redact]`: on by default; the named headers and fields are
/// redacted besides `nettap_core::redact`'s defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactConfig {
    /// Off only when asked (`--no-redact`), and then said in the log.
    pub enabled: bool,
    /// More header names to redact.
    pub headers: Vec<String>,
    /// More JSON, form and query field names to redact.
    pub fields: Vec<String>,
    /// A key (16 bytes or more) that keeps markers equal across runs; random per run otherwise.
    pub key_file: Option<std::path::PathBuf>,
    /// `[[capture.redact.targets]]`: rules for some connections only; the
    /// first target matching a connection decides for it.
    pub targets: Vec<RedactTarget>,
}

/// Redaction for one capture target: the connections of the named processes
/// and/or ports get these headers and fields redacted besides the global
/// ones, or no redaction at all with `enabled = false`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactTarget {
    /// Said in the log.
    pub name: String,
    /// Process names (`comm`, at most 15 characters); any, when empty.
    #[serde(default)]
    pub processes: Vec<String>,
    /// A port at either end of the connection; any, when empty.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// `false`: this target's exchanges are written as captured (logged).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// More header names to redact for this target.
    #[serde(default)]
    pub headers: Vec<String>,
    /// More JSON, form and query field names to redact for this target.
    #[serde(default)]
    pub fields: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for RedactConfig {
    fn default() -> Self {
        Self { enabled: true, headers: Vec::new(), fields: Vec::new(), key_file: None, targets: Vec::new() }
    }
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: 8 << 20,
            max_bytes_per_call: 256 << 10,
            kernel_hook: KernelHookChoice::Auto,
            pids: Vec::new(),
            ports: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            exec_hold_ms: 1000,
            redact: RedactConfig::default(),
            max_pod_cgroups: 0,
        }
    }
}

/// The `--config` file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// `[capture]` table.
    pub capture: CaptureConfig,
    /// `[kubernetes]` table.
    pub kubernetes: KubernetesConfig,
}

/// `[kubernetes]`: Kubernetes mode (also `--kubernetes`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Name each record's pod, from the API server.
    pub enabled: bool,
    /// This node's name (else `NODE_NAME`).
    pub node_name: Option<String>,
    /// A kubeconfig file (else `KUBECONFIG`, `~/.kube/config` or in-cluster).
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The capture targets file (JSON; see `--capture-targets`).
    pub capture_targets: Option<std::path::PathBuf>,
    /// The host's cgroup v2 hierarchy, where it is not mounted at the usual place in the sensor.
    pub cgroup_root: Option<std::path::PathBuf>,
}

/// Problems with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// File named by `--config`.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}")]
    Parse {
        /// File named by `--config`.
        path: String,
        /// Cause.
        #[source]
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl FileConfig {
    /// Reads and parses a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        toml::from_str(&text)
            .map_err(|source| ConfigError::Parse { path: path.display().to_string(), source })
    }
}

impl CaptureConfig {
    /// Checks the values the kernel will be given.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let page = 4096;
        let rb = self.ring_buffer_bytes;
        if rb < page || !rb.is_power_of_two() {
            return Err(ConfigError::Invalid(format!(
                "ring_buffer_bytes = {rb}: must be a power of two and at least {page}"
            )));
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS_BOUND {
            return Err(ConfigError::Invalid(format!(
                "max_connections = {}: must be between 1 and {MAX_CONNECTIONS_BOUND}",
                self.max_connections
            )));
        }
        if self.pids.len() > 1024 || self.ports.len() > 1024 {
            return Err(ConfigError::Invalid("at most 1024 pids and 1024 ports".into()));
        }
        for t in &self.redact.targets {
            if t.processes.is_empty() && t.ports.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "redact target {:?} names no processes and no ports: it would match every \
                     connection (say that in [capture.redact] instead)",
                    t.name
                )));
            }
            if let Some(p) = t.processes.iter().find(|p| p.len() > 15) {
                return Err(ConfigError::Invalid(format!(
                    "redact target {:?}: process {p:?} is longer than a process name (15 bytes)",
                    t.name
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let c: FileConfig = toml::from_str(
            "[capture]\nring_buffer_bytes = 65536\nkernel_hook = \"tracepoint\"\nports = [80]\n",
        )
        .unwrap();
        assert_eq!(c.capture.ring_buffer_bytes, 65536);
        assert_eq!(c.capture.kernel_hook, KernelHookChoice::Tracepoint);
        assert_eq!(c.capture.ports, vec![80]);
        assert_eq!(c.capture.max_bytes_per_call, 256 << 10);
        assert!(toml::from_str::<FileConfig>("[capture]\nbogus = 1\n").is_err());
    }

    #[test]
    fn redact_targets_need_a_selector() {
        let c: FileConfig = toml::from_str(
            "[[capture.redact.targets]]\nname = \"payments\"\nports = [8443]\nfields = [\"card\"]\n\
             [[capture.redact.targets]]\nname = \"sandbox\"\nprocesses = [\"curl\"]\nenabled = false\n",
        )
        .unwrap();
        let t = &c.capture.redact.targets;
        assert_eq!(
            (t[0].enabled, t[0].ports.as_slice(), t[0].fields.as_slice()),
            (true, &[8443][..], &["card".to_string()][..])
        );
        assert!(!t[1].enabled);
        c.capture.validate().unwrap();
        let c: FileConfig = toml::from_str("[[capture.redact.targets]]\nname = \"all\"\n").unwrap();
        assert!(c.capture.validate().unwrap_err().to_string().contains("no processes and no ports"));
    }

    #[test]
    fn ring_size_must_be_a_power_of_two() {
        let mut c = CaptureConfig::default();
        c.validate().unwrap();
        c.ring_buffer_bytes = 5000;
        assert!(c.validate().is_err());
        c.ring_buffer_bytes = 2048;
        assert!(c.validate().is_err());
    }
}

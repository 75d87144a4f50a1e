//! The processor's questions about the host (`nettap_core::host::Host`),
//! answered from /proc and, in Kubernetes mode, the pod index.

use crate::k8s::PodResolver;
use nettap_core::conn::EphemeralPorts;
use nettap_core::host::Host;
use nettap_core::pod::{Peer, PodOf};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a namespace's listener list is trusted.
const LISTENERS_TTL: Duration = Duration::from_secs(2);
/// Namespaces remembered at once.
const MAX_NAMESPACES: usize = 256;

/// Answers from `/proc` (the host's: the sensor runs with hostPID).
#[derive(Debug)]
pub struct ProcHost {
    proc: PathBuf,
    /// Network namespace (its /proc link text) → when read, listening ports.
    listeners: HashMap<String, (Instant, HashSet<u16>)>,
    pods: Option<PodResolver>,
    /// The sensor's own network namespace, which is the host's: the chart
    /// runs it with hostNetwork (0: not readable). Not init's: PID 1's
    /// links can be closed even to root (seen on our CI machines).
    host_netns: u32,
}

impl ProcHost {
    /// Reads this host's /proc; with `pods`, processes are named by pod.
    pub fn new(pods: Option<PodResolver>) -> Self {
        let host_netns = crate::sock_diag::netns_of("/proc/self/ns/net").unwrap_or(0);
        Self { proc: PathBuf::from("/proc"), listeners: HashMap::new(), pods, host_netns }
    }

    fn listeners_of(&mut self, pid: u32) -> Option<&HashSet<u16>> {
        let dir = self.proc.join(pid.to_string());
        let ns = std::fs::read_link(dir.join("ns/net")).ok()?.to_string_lossy().into_owned();
        let fresh = self.listeners.get(&ns).is_some_and(|(at, _)| at.elapsed() < LISTENERS_TTL);
        if !fresh {
            let process = procfs::process::Process::new(pid as i32).ok()?;
            let ports: HashSet<u16> = [process.tcp(), process.tcp6()]
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.state == procfs::net::TcpState::Listen)
                .map(|e| e.local_address.port())
                .collect();
            if self.listeners.len() >= MAX_NAMESPACES {
                self.listeners.retain(|_, (at, _)| at.elapsed() < LISTENERS_TTL);
                if self.listeners.len() >= MAX_NAMESPACES {
                    self.listeners.clear();
                }
            }
            self.listeners.insert(ns.clone(), (Instant::now(), ports));
        }
        self.listeners.get(&ns).map(|(_, ports)| ports)
    }
}

impl Host for ProcHost {
    fn listens(&mut self, pid: u32, port: u16) -> Option<bool> {
        self.listeners_of(pid).map(|ports| ports.contains(&port))
    }

    fn comm(&mut self, pid: u32) -> [u8; 16] {
        let mut comm = [0u8; 16];
        if let Ok(name) = std::fs::read(self.proc.join(pid.to_string()).join("comm")) {
            let name = name.strip_suffix(b"\n").unwrap_or(&name);
            let n = name.len().min(15);
            comm[..n].copy_from_slice(&name[..n]);
        }
        comm
    }

    fn pod_of(&mut self, pid: u32, cgroup: u64) -> Option<PodOf> {
        self.pods.as_ref()?.pod_of(pid, cgroup)
    }

    fn peer_of(&mut self, ip: std::net::IpAddr) -> Option<Peer> {
        self.pods.as_ref()?.peers.peer_of(ip)
    }

    fn host_netns(&mut self) -> u32 {
        self.host_netns
    }
}

/// This host's ephemeral port range, or Linux's default when it cannot be read.
pub fn ephemeral_ports() -> EphemeralPorts {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| EphemeralPorts::parse(&text))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_in_the_namespace_decides() {
        // This test process listens on an ephemeral-range port: the port rule
        // alone cannot tell, the namespace's listener table can.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (s, _) = l.accept().unwrap();
        let mut h = ProcHost::new(None);
        let me = std::process::id();
        assert_eq!(h.listens(me, s.local_addr().unwrap().port()), Some(true));
        assert_eq!(h.listens(me, c.local_addr().unwrap().port()), Some(false));
        // A process that is gone: unknown.
        assert_eq!(h.listens(u32::MAX, port), None);
        assert_eq!(crate::host::ProcHost::new(None).comm(me)[..4], *b"nett");
    }

    #[test]
    fn the_hosts_port_range_is_read() {
        let p = ephemeral_ports();
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(p.infer(a("127.0.0.1:1"), a("127.0.0.1:1")), nettap_core::events::Role::Unknown);
    }
}

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
/// How long it still answers for a process that is gone (a client that sent
/// its last bytes and exited before the sensor handled them): an older list
/// beats guessing from ports.
const LISTENERS_KEEP: Duration = Duration::from_secs(60);
/// Namespaces remembered at once.
const MAX_NAMESPACES: usize = 256;

/// Answers from `/proc` (the host's: the sensor runs with hostPID).
#[derive(Debug)]
pub struct ProcHost {
    proc: PathBuf,
    /// Network namespace (inode) → when read, listening ports.
    listeners: HashMap<u32, (Instant, HashSet<u16>)>,
    pods: Option<PodResolver>,
    /// The sensor's own network namespace, which is the host's: the chart
    /// runs it with hostNetwork (0: not readable). Not init's: PID 1's
    /// links can be closed even to root (seen on our CI machines).
    host_netns: u32,
}

type TcpTables = [procfs::ProcResult<Vec<procfs::net::TcpNetEntry>>; 2];

fn listening_ports(tables: TcpTables) -> HashSet<u16> {
    tables
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.state == procfs::net::TcpState::Listen)
        .map(|e| e.local_address.port())
        .collect()
}

impl ProcHost {
    /// Reads this host's /proc; with `pods`, processes are named by pod.
    pub fn new(pods: Option<PodResolver>) -> Self {
        let host_netns = crate::sock_diag::netns_of("/proc/self/ns/net").unwrap_or(0);
        Self { proc: PathBuf::from("/proc"), listeners: HashMap::new(), pods, host_netns }
    }

    /// The listening ports of namespace `netns`, read through `pid` while it
    /// lives; once it is gone, the last list read (if recent) or, for the
    /// host's namespace, the sensor's own tables.
    fn listeners_of(&mut self, pid: u32, netns: u32) -> Option<&HashSet<u16>> {
        let age = |l: &HashMap<u32, (Instant, HashSet<u16>)>, ns| l.get(&ns).map(|(at, _)| at.elapsed());
        let through_pid = crate::sock_diag::netns_of(self.proc.join(pid.to_string()).join("ns/net"));
        let read = match through_pid {
            Some(ns) if age(&self.listeners, ns).is_some_and(|a| a < LISTENERS_TTL) => {
                return self.cached(ns)
            }
            Some(ns) => procfs::process::Process::new(pid as i32)
                .ok()
                .map(|p| (ns, [p.tcp(), p.tcp6()]))
                .filter(|(_, t)| t.iter().any(|t| t.is_ok())),
            None => None,
        };
        let (ns, tables) = match read {
            Some(read) => read,
            None if netns == 0 => return None,
            None if age(&self.listeners, netns).is_some_and(|a| a < LISTENERS_KEEP) => {
                return self.cached(netns)
            }
            None if netns == self.host_netns => (netns, [procfs::net::tcp(), procfs::net::tcp6()]),
            None => return None,
        };
        let ports = listening_ports(tables);
        if self.listeners.len() >= MAX_NAMESPACES {
            self.listeners.retain(|_, (at, _)| at.elapsed() < LISTENERS_TTL);
            if self.listeners.len() >= MAX_NAMESPACES {
                self.listeners.clear();
            }
        }
        self.listeners.insert(ns, (Instant::now(), ports));
        self.cached(ns)
    }

    fn cached(&self, ns: u32) -> Option<&HashSet<u16>> {
        self.listeners.get(&ns).map(|(_, ports)| ports)
    }
}

impl Host for ProcHost {
    fn listens(&mut self, pid: u32, netns: u32, port: u16) -> Option<bool> {
        self.listeners_of(pid, netns).map(|ports| ports.contains(&port))
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
        let ns = crate::sock_diag::netns_of("/proc/self/ns/net").unwrap();
        assert_eq!(h.listens(me, ns, s.local_addr().unwrap().port()), Some(true));
        assert_eq!(h.listens(me, ns, c.local_addr().unwrap().port()), Some(false));
        // A process that is gone, its namespace not known: unknown.
        assert_eq!(h.listens(u32::MAX, 0, port), None);
        // Gone, in a namespace another namespace's number: unknown.
        assert_eq!(h.listens(u32::MAX, ns.wrapping_add(1), port), None);
        assert_eq!(h.comm(me)[..4], *b"nett");
    }

    #[test]
    fn a_process_gone_is_answered_for_by_its_namespace() {
        // A client that exited before the sensor handled its bytes: its
        // namespace (the host's here) still has the listener to tell by.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let ns = crate::sock_diag::netns_of("/proc/self/ns/net").unwrap();
        let mut fresh = ProcHost::new(None);
        assert_eq!(fresh.listens(u32::MAX, ns, port), Some(true), "the host's own tables");
        let mut seen = ProcHost::new(None);
        seen.host_netns = 0;
        assert_eq!(seen.listens(u32::MAX, ns, port), None, "not the host's, never read");
        assert_eq!(seen.listens(std::process::id(), ns, port), Some(true));
        drop(l);
        // Read through a live process before: that list answers.
        assert_eq!(seen.listens(u32::MAX, ns, port), Some(true), "the last list read");
    }

    #[test]
    fn the_hosts_port_range_is_read() {
        let p = ephemeral_ports();
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(p.infer(a("127.0.0.1:1"), a("127.0.0.1:1")), nettap_core::events::Role::Unknown);
    }
}

//! The role of a connection the kernel first saw mid-stream (it did not see
//! connect() or accept()). A socket whose local port has a listener in its
//! process's network namespace was accepted: server. Otherwise it connected:
//! client, unless its peer's port is ephemeral and its own is not (a server
//! whose listener has since closed). Without /proc (the process is gone),
//! only the ephemeral-port rule is left.

use crate::events::Role;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The local ephemeral port range (`net.ipv4.ip_local_port_range`).
#[derive(Debug, Clone, Copy)]
pub struct EphemeralPorts {
    low: u16,
    high: u16,
}

impl EphemeralPorts {
    /// A fixed range.
    pub fn new(low: u16, high: u16) -> Self {
        Self { low, high }
    }

    /// This host's range, or Linux's default when it cannot be read.
    pub fn of_host() -> Self {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| {
                let mut it = s.split_whitespace().map(|p| p.parse::<u16>());
                Some(Self::new(it.next()?.ok()?, it.next()?.ok()?))
            })
            .unwrap_or(Self::new(32768, 60999))
    }

    fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }

    /// The likely role from ports alone: the side whose port is ephemeral is the client.
    pub fn infer(&self, local: SocketAddr, remote: SocketAddr) -> Role {
        match (self.contains(local.port()), self.contains(remote.port())) {
            (true, false) => Role::Client,
            (false, true) => Role::Server,
            _ => Role::Unknown,
        }
    }
}

/// Listening TCP ports in `/proc/net/tcp` or `tcp6` text (state 0A).
pub fn listening_ports(proc_net_tcp: &str, into: &mut HashSet<u16>) {
    for line in proc_net_tcp.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_sl), Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if state != "0A" {
            continue;
        }
        if let Some(port) = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()) {
            into.insert(port);
        }
    }
}

/// How long a namespace's listener list is trusted.
const LISTENERS_TTL: Duration = Duration::from_secs(2);
/// Namespaces remembered at once.
const MAX_NAMESPACES: usize = 256;

/// Infers roles, caching each network namespace's listeners briefly.
#[derive(Debug)]
pub struct RoleGuesser {
    ports: EphemeralPorts,
    listeners: HashMap<String, (Instant, HashSet<u16>)>,
}

impl RoleGuesser {
    /// A guesser using this port range when /proc cannot tell.
    pub fn new(ports: EphemeralPorts) -> Self {
        Self { ports, listeners: HashMap::new() }
    }

    fn listeners_of(&mut self, pid: u32) -> Option<&HashSet<u16>> {
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?.to_string_lossy().into_owned();
        let fresh = self.listeners.get(&ns).is_some_and(|(at, _)| at.elapsed() < LISTENERS_TTL);
        if !fresh {
            let mut ports = HashSet::new();
            for file in ["tcp", "tcp6"] {
                if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
                    listening_ports(&text, &mut ports);
                }
            }
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

    /// The role of process `pid`'s connection `local` ↔ `remote`.
    pub fn infer(&mut self, pid: u32, local: SocketAddr, remote: SocketAddr) -> Role {
        let by_ports = self.ports.infer(local, remote);
        match self.listeners_of(pid) {
            Some(listening) if listening.contains(&local.port()) => Role::Server,
            Some(_) if by_ports == Role::Server => Role::Server,
            Some(_) => Role::Client,
            None => by_ports,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_NET_TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123 1 0 100 0 0 10 0
   1: 0100007F:A2C4 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 124 1 0 20 4 30 10 -1
";
    const PROC_NET_TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
";

    #[test]
    fn parses_listeners_of_both_families() {
        let mut ports = HashSet::new();
        listening_ports(PROC_NET_TCP, &mut ports);
        listening_ports(PROC_NET_TCP6, &mut ports);
        listening_ports("garbage\nnot a table at all\n", &mut ports);
        assert_eq!(ports, HashSet::from([0x1F90, 22]));
    }

    #[test]
    fn ephemeral_rule() {
        let p = EphemeralPorts::new(32768, 60999);
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(p.infer(a("127.0.0.1:45000"), a("127.0.0.1:8080")), Role::Client);
        assert_eq!(p.infer(a("127.0.0.1:8080"), a("127.0.0.1:45000")), Role::Server);
        assert_eq!(p.infer(a("127.0.0.1:45000"), a("127.0.0.1:45001")), Role::Unknown);
    }

    #[test]
    fn a_listener_in_the_namespace_decides() {
        // This test process listens on an ephemeral-range port: the port rule
        // alone cannot tell, the namespace's listener table can.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (s, _) = l.accept().unwrap();
        let mut g = RoleGuesser::new(EphemeralPorts::new(1, 65535));
        let me = std::process::id();
        assert_eq!(g.infer(me, s.local_addr().unwrap(), s.peer_addr().unwrap()), Role::Server);
        assert_eq!(g.infer(me, c.local_addr().unwrap(), c.peer_addr().unwrap()), Role::Client);
        // A process that is gone leaves only the port rule.
        assert_eq!(g.infer(u32::MAX, c.local_addr().unwrap(), c.peer_addr().unwrap()), Role::Unknown);
    }
}

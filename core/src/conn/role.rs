//! The role of a connection the kernel first saw mid-stream (it did not see
//! connect() or accept()). A socket whose local port has a listener in its
//! process's network namespace was accepted: server. Otherwise it connected:
//! client, unless its peer's port is ephemeral and its own is not (a server
//! whose listener has since closed). When the host cannot tell (the process
//! is gone), only the ephemeral-port rule is left.

use crate::events::Role;
use std::net::SocketAddr;

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

    /// The range in the text of `/proc/sys/net/ipv4/ip_local_port_range`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut it = text.split_whitespace().map(|p| p.parse::<u16>());
        Some(Self::new(it.next()?.ok()?, it.next()?.ok()?))
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
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

impl Default for EphemeralPorts {
    /// Linux's default range.
    fn default() -> Self {
        Self::new(32768, 60999)
    }
}

/// Infers the roles of connections whose opening was not seen.
#[derive(Debug, Clone, Copy)]
pub struct RoleGuesser {
    ports: EphemeralPorts,
}

impl RoleGuesser {
    /// A guesser using this port range when the host cannot tell.
    pub fn new(ports: EphemeralPorts) -> Self {
        Self { ports }
    }

    /// The role of a connection `local` ↔ `remote`, given whether its local
    /// port has a listener in its process's network namespace (`None`:
    /// unknown, the process is gone).
    pub fn infer(&self, local_listens: Option<bool>, local: SocketAddr, remote: SocketAddr) -> Role {
        let by_ports = self.ports.infer(local, remote);
        match local_listens {
            Some(true) => Role::Server,
            Some(false) if by_ports == Role::Server => Role::Server,
            Some(false) => Role::Client,
            None => by_ports,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Ports in the ephemeral range on both sides: the port rule alone
        // cannot tell, the namespace's listener table can.
        let g = RoleGuesser::new(EphemeralPorts::new(1, 65535));
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let (server_end, client_end) = (a("127.0.0.1:45000"), a("127.0.0.1:45001"));
        assert_eq!(g.infer(Some(true), server_end, client_end), Role::Server);
        assert_eq!(g.infer(Some(false), client_end, server_end), Role::Client);
        // A process that is gone leaves only the port rule.
        assert_eq!(g.infer(None, client_end, server_end), Role::Unknown);
    }
}

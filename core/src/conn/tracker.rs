//! The user-space connection table: process and endpoints per kernel conn id,
//! so that close records (which run in no particular process) and midstream
//! connections (role unknown to the kernel) are labelled right.

use super::reconcile::TrackedSocket;
use super::role::{EphemeralPorts, RoleGuesser};
use crate::dns::{DnsMessage, HostTable};
use crate::events::{ConnChange, ConnEvent, ConnId, Header, Role};
use crate::host::Host;
use crate::pod::{Peer, PodOf};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

/// What is known about one connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Process that opened it or first used it.
    pub pid: u32,
    /// That process's name.
    pub comm: [u8; 16],
    /// Local endpoint.
    pub local: SocketAddr,
    /// Remote endpoint.
    pub remote: SocketAddr,
    /// Role, possibly inferred.
    pub role: Role,
    /// Not seen from its first byte (opened before the sensor, or its open was lost).
    pub midstream: bool,
    /// Carries TLS (learned from the first TLS plaintext or record seen).
    pub tls: bool,
    /// The name the process looked up for the remote address (DNS), when
    /// an answer for it was seen before the connection was.
    pub remote_host: Option<Arc<str>>,
    /// The pod of the process (Kubernetes mode), when known.
    pub pod: Option<crate::pod::PodOf>,
    /// The pod or Service of the remote address (Kubernetes mode), when known.
    pub peer: Option<crate::pod::Peer>,
    /// Lookups of `peer` left: a pod's address reaches the index up to
    /// seconds after the pod starts, so a connection it makes at once is
    /// looked up again on its chunks, at doubling intervals (1 ms, 2 ms, …:
    /// a minute in all), not on the next few, which come within a millisecond.
    pub peer_tries: u8,
    /// The first chunk time (boot clock) of the next lookup.
    pub peer_next_ns: u64,
    /// Network namespace (inode) of the socket.
    pub netns: u32,
    /// Later kernel ids of this connection: the kernel's table evicted its
    /// entry and made a new one when the socket was seen again.
    pub aliases: Vec<u64>,
    /// A protocol session took this connection's bytes already (one that
    /// starts later, after eviction or idleness, starts mid-stream).
    pub had_session: bool,
}

impl ConnInfo {
    /// A connection the table no longer knows.
    pub fn unknown() -> Self {
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        Self {
            pid: 0,
            comm: [0; 16],
            local: any,
            remote: any,
            role: Role::Unknown,
            midstream: true,
            tls: false,
            remote_host: None,
            pod: None,
            peer: None,
            peer_tries: 0,
            peer_next_ns: 0,
            netns: 0,
            aliases: Vec::new(),
            had_session: false,
        }
    }
}

/// Lookups of a connection's unknown peer after the first (see `peer_tries`).
const PEER_TRIES: u8 = 16;
/// The first interval between them.
const PEER_RETRY_NS: u64 = 1_000_000;

/// The pod of `other`, the other end on this node of a connection in
/// namespace `netns`, as that connection's peer. The index names no
/// hostNetwork pod (they share the node's address), nor a pod's own loopback
/// peer: neither does this; nor anything when the host's namespace is unknown.
fn same_node_peer(host_netns: u32, netns: u32, other: &ConnInfo) -> Option<Peer> {
    let pod = host_netns != 0 && other.netns != 0 && other.netns != host_netns && other.netns != netns;
    pod.then(|| other.pod.as_ref().map(|p| Peer::Pod(p.meta.clone())))?
}

/// A socket by its network namespace and endpoints: unique among the live
/// connections of a host, so it finds a connection again under a new kernel id.
type Tuple = (u32, SocketAddr, SocketAddr);

/// Bounded table of live connections, oldest evicted first.
pub struct ConnTracker {
    /// By the kernel's connection id, looked up for every record: a fast
    /// seeded hash (foldhash) instead of SipHash.
    conns: foldhash::HashMap<u64, ConnInfo>,
    order: VecDeque<u64>,
    capacity: usize,
    roles: RoleGuesser,
    hosts: HostTable,
    /// (local, remote) → id of the newest connection with those endpoints,
    /// so plaintext from an in-process agent finds the kernel's connection.
    by_endpoints: foldhash::HashMap<(SocketAddr, SocketAddr), u64>,
    /// Live kernel connections by socket, and later kernel ids → the first.
    by_tuple: foldhash::HashMap<Tuple, u64>,
    aliases: foldhash::HashMap<u64, u64>,
    /// Connections forgotten because the table was full, not yet reported.
    evicted: u64,

    /// Listeners, process names and pods, asked once per new connection.
    host: Box<dyn Host + Send>,
}

impl std::fmt::Debug for ConnTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTracker")
            .field("conns", &self.conns.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Addresses remembered from DNS answers at most.
const MAX_HOSTS: usize = 65536;

impl ConnTracker {
    /// A table holding at most `capacity` connections.
    pub fn new(capacity: usize, ports: EphemeralPorts, host: Box<dyn Host + Send>) -> Self {
        Self {
            conns: foldhash::HashMap::with_capacity_and_hasher(capacity.min(4096), Default::default()),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            roles: RoleGuesser::new(ports),
            hosts: HostTable::new(MAX_HOSTS),
            by_endpoints: Default::default(),
            by_tuple: Default::default(),
            aliases: Default::default(),
            evicted: 0,
            host,
        }
    }

    /// The first kernel id of the connection the kernel now calls `id`.
    pub fn resolve(&self, id: u64) -> u64 {
        self.aliases.get(&id).copied().unwrap_or(id)
    }

    /// A kernel `midstream` (or untracked close) for a socket: the live
    /// connection it already is, when the kernel's table had evicted it.
    pub fn live_with(&self, c: &ConnId) -> Option<u64> {
        let id = *self.by_tuple.get(&(c.netns, c.local, c.remote))?;
        (id != c.id).then_some(id)
    }

    /// Kernel id `alias` is connection `id` again (its entry was evicted).
    pub fn add_alias(&mut self, alias: u64, id: u64) {
        if let Some(info) = self.conns.get_mut(&id) {
            info.aliases.push(alias);
            self.aliases.insert(alias, id);
        }
    }

    /// Connections forgotten since the last call because the table was full.
    pub fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }

    /// Kernel ids that are later names of live connections (bounded by them).
    pub fn alias_count(&self) -> usize {
        self.aliases.len()
    }

    /// The pod of process `pid` in cgroup `cgroup` (Kubernetes mode), when known.
    pub fn pod_of(&mut self, pid: u32, cgroup: u64) -> Option<PodOf> {
        self.host.pod_of(pid, cgroup)
    }

    /// The pod or Service of `remote` (Kubernetes mode): the cluster's
    /// index, else this node's other end of the connection. A new pod's
    /// address reaches the index only after the kubelet has reported it,
    /// while its first connection may already be carrying requests; when
    /// both ends are on this node, the other end's pod names it at once.
    fn peer_of(&mut self, netns: u32, local: SocketAddr, remote: SocketAddr) -> Option<Peer> {
        if let Some(peer) = self.host.peer_of(remote.ip()) {
            return Some(peer);
        }
        let other = self.conns.get(self.by_endpoints.get(&(remote, local))?)?;
        same_node_peer(self.host.host_netns(), netns, other)
    }

    /// Names a connection just learned as the peer of its other end on this
    /// node, if that end has none yet (its open may have been seen first).
    fn name_other_end(&mut self, id: u64) {
        let Some(info) = self.conns.get(&id).filter(|i| i.pod.is_some()) else { return };
        let Some(&other) = self.by_endpoints.get(&(info.remote, info.local)) else { return };
        let host = self.host.host_netns();
        let Some(o) = self.conns.get(&other) else { return };
        if o.peer.is_some() {
            return;
        }
        let peer = same_node_peer(host, o.netns, info);
        if let Some(o) = self.conns.get_mut(&other) {
            o.peer = peer;
        }
    }

    /// The host the table asks about listeners, names and pods.
    pub fn host(&mut self) -> &mut (dyn Host + Send) {
        &mut *self.host
    }

    /// What is known of connection `id`.
    pub fn info(&self, id: u64) -> Option<ConnInfo> {
        self.conns.get(&id).cloned()
    }

    /// Learns the addresses a DNS answer gave, in namespace `netns`, at
    /// `ts_boot_ns`: connections to them seen from now on are named.
    pub fn learn_dns(&mut self, netns: u32, m: &DnsMessage, ts_boot_ns: u64) {
        for (ip, name, ttl) in m.resolved() {
            self.hosts.insert(netns, ip, name, ttl, ts_boot_ns);
        }
    }

    /// The connection of process `pid` with these endpoints, if the kernel
    /// reported it. Another process's connection is never returned, so an
    /// agent can only speak for its own process's connections.
    pub fn find(&self, pid: u32, local: SocketAddr, remote: SocketAddr) -> Option<u64> {
        let id = *self.by_endpoints.get(&(local, remote))?;
        self.conns.get(&id).filter(|c| c.pid == pid).map(|_| id)
    }

    /// The newest connection of process `pid` whose remote port is `port`,
    /// other than those `taken` says are another's (for SSLEngine users,
    /// which know only their peer's port); only connections the kernel
    /// reported (ids below 2^63). Scans the table: called once per engine.
    pub fn newest_to_port(&self, pid: u32, port: u16, taken: impl Fn(u64) -> bool) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(&id, c)| id < 1 << 63 && c.pid == pid && c.remote.port() == port && !taken(id))
            .map(|(&id, _)| id)
            .max()
    }

    fn remove(&mut self, id: u64) -> Option<ConnInfo> {
        let info = self.conns.remove(&id)?;
        if self.by_endpoints.get(&(info.local, info.remote)) == Some(&id) {
            self.by_endpoints.remove(&(info.local, info.remote));
        }
        let tuple = (info.netns, info.local, info.remote);
        if self.by_tuple.get(&tuple) == Some(&id) {
            self.by_tuple.remove(&tuple);
        }
        for a in &info.aliases {
            self.aliases.remove(a);
        }
        Some(info)
    }

    /// The kernel's connections tracked now (not the agents' own ids).
    pub fn kernel_sockets(&self) -> impl Iterator<Item = TrackedSocket> + '_ {
        self.conns.iter().filter(|(&id, c)| id != 0 && id < 1 << 63 && c.netns != 0).map(|(&id, c)| {
            TrackedSocket { id, netns: c.netns, local: c.local, remote: c.remote, pid: c.pid }
        })
    }

    /// Number of connections tracked.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    fn insert(&mut self, h: &Header, midstream: bool) -> &ConnInfo {
        let c: ConnId = h.conn;
        let role = match c.role {
            Role::Unknown => {
                let listens = self.host.listens(h.pid, c.netns, c.local.port());
                self.roles.infer(listens, c.local, c.remote)
            }
            r => r,
        };
        if !self.conns.contains_key(&c.id) {
            while self.conns.len() >= self.capacity {
                match self.order.pop_front() {
                    Some(old) => {
                        if self.remove(old).is_some() {
                            self.evicted += 1;
                        }
                    }
                    None => break,
                }
            }
            self.order.push_back(c.id);
        }
        let aliases = self.conns.get(&c.id).map(|i| i.aliases.clone()).unwrap_or_default();
        let remote_host = self.hosts.lookup(c.netns, c.remote.ip(), h.ts_boot_ns);
        let pod = self.pod_of(h.pid, h.cgroup);
        let peer = self.peer_of(c.netns, c.local, c.remote);
        self.by_endpoints.insert((c.local, c.remote), c.id);
        // Kernel ids only: agents' connections (ids from 2^63) have no namespace.
        if c.id != 0 && c.id < 1 << 63 {
            self.by_tuple.insert((c.netns, c.local, c.remote), c.id);
        }
        self.conns.insert(
            c.id,
            ConnInfo {
                pid: h.pid,
                comm: h.comm,
                local: c.local,
                remote: c.remote,
                role,
                midstream,
                tls: c.tls,
                remote_host,
                pod,
                peer,
                peer_tries: PEER_TRIES,
                peer_next_ns: h.ts_boot_ns + PEER_RETRY_NS,
                netns: c.netns,
                aliases,
                had_session: false,
            },
        );
        self.name_other_end(c.id);
        &self.conns[&c.id]
    }

    /// The connection a data record belongs to, learning it if new (then
    /// as mid-stream: its open, if any, was not seen).
    pub fn on_data(&mut self, h: &Header) -> &ConnInfo {
        let user = self.conns.get(&h.conn.id).map(|info| info.pid);
        if user.is_some_and(|pid| pid != h.pid && h.pid != 0) {
            // Another process uses the socket now (PostgreSQL's postmaster
            // accepts, the backend it forks reads and writes): records name
            // the process whose calls carried the bytes.
            let pod = self.pod_of(h.pid, h.cgroup);
            if let Some(info) = self.conns.get_mut(&h.conn.id) {
                (info.pid, info.comm, info.pod) = (h.pid, h.comm, pod);
            }
        }
        if let Some(info) = self.conns.get_mut(&h.conn.id) {
            info.tls |= h.conn.tls;
            if info.peer.is_none() && info.peer_tries > 0 && h.ts_boot_ns >= info.peer_next_ns {
                info.peer_tries -= 1;
                info.peer_next_ns = h.ts_boot_ns + (PEER_RETRY_NS << (PEER_TRIES - info.peer_tries));
                let (netns, local, remote) = (info.netns, info.local, info.remote);
                let peer = self.peer_of(netns, local, remote);
                if let Some(info) = self.conns.get_mut(&h.conn.id) {
                    info.peer = peer;
                }
            }
            return &self.conns[&h.conn.id];
        }
        self.insert(h, true)
    }

    /// Marks that a protocol session starts on connection `id`; true when
    /// it is the connection's first.
    pub fn start_session(&mut self, id: u64) -> bool {
        self.conns.get_mut(&id).is_some_and(|c| !std::mem::replace(&mut c.had_session, true))
    }

    /// Applies a lifecycle event; returns what is known of the connection
    /// (for close: as it was while open).
    pub fn on_conn(&mut self, ev: &ConnEvent) -> ConnInfo {
        match ev.change {
            ConnChange::Open => self.insert(&ev.header, false).clone(),
            ConnChange::Midstream => self.insert(&ev.header, true).clone(),
            ConnChange::Close | ConnChange::CloseUntracked => match self.remove(ev.header.conn.id) {
                Some(info) => {
                    // `order` keeps the id until it reaches the front; removal there is a no-op.
                    if self.order.len() > 2 * self.capacity {
                        let conns = &self.conns;
                        self.order.retain(|id| conns.contains_key(id));
                    }
                    info
                }
                None => {
                    let mut info = self.insert(&ev.header, true).clone();
                    self.remove(ev.header.conn.id);
                    info.comm = [0; 16];
                    info
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    /// A process the host knows nothing of: only the port rule infers roles.
    const NO_SUCH_PID: u32 = u32::MAX - 1;

    fn tracker(capacity: usize) -> ConnTracker {
        ConnTracker::new(capacity, EphemeralPorts::default(), Box::new(crate::host::NoHost))
    }

    fn header(id: u64, lport: u16, rport: u16, role: Role) -> Header {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Header {
            probe: 0,
            ts_boot_ns: 0,
            pid: NO_SUCH_PID,
            tid: NO_SUCH_PID,
            comm: *b"python3\0\0\0\0\0\0\0\0\0",
            cgroup: 0,
            conn: ConnId {
                id,
                local: SocketAddr::new(ip, lport),
                remote: SocketAddr::new(ip, rport),
                role,
                tls: false,
                netns: 0,
            },
        }
    }

    fn event(h: Header, change: ConnChange) -> ConnEvent {
        ConnEvent { header: h, change, send_bytes: 0, recv_bytes: 0 }
    }

    #[test]
    fn close_reports_the_opener_not_the_closing_context() {
        let mut t = tracker(8);
        t.on_conn(&event(header(1, 40000, 80, Role::Client), ConnChange::Open));
        let mut closing = header(1, 40000, 80, Role::Client);
        closing.pid = 99;
        closing.comm = [0; 16];
        let info = t.on_conn(&event(closing, ConnChange::Close));
        assert_eq!(info.pid, NO_SUCH_PID);
        assert_eq!(crate::events::comm_str(&info.comm), "python3");
        assert!(t.is_empty());
    }

    #[test]
    fn data_from_a_process_that_inherited_the_socket_names_that_process() {
        let mut t = tracker(8);
        t.on_conn(&event(header(1, 5432, 40000, Role::Server), ConnChange::Open));
        let mut backend = header(1, 5432, 40000, Role::Server);
        backend.pid = 4242;
        backend.comm = *b"postgres\0\0\0\0\0\0\0\0";
        let info = t.on_data(&backend);
        assert_eq!((info.pid, crate::events::comm_str(&info.comm)), (4242, "postgres"));
        assert_eq!(info.role, Role::Server);
        assert_eq!(t.find(4242, backend.conn.local, backend.conn.remote), Some(1));
    }

    #[test]
    fn midstream_role_is_inferred() {
        let mut t = tracker(8);
        assert_eq!(t.on_data(&header(1, 45000, 8080, Role::Unknown)).role, Role::Client);
        assert_eq!(t.on_data(&header(2, 8080, 45000, Role::Unknown)).role, Role::Server);
        assert_eq!(t.on_data(&header(3, 45000, 45001, Role::Unknown)).role, Role::Unknown);
        assert_eq!(t.on_data(&header(4, 8080, 45000, Role::Client)).role, Role::Client);
    }

    #[test]
    fn agents_find_only_their_own_process_connections() {
        let mut t = tracker(2);
        let h = header(1, 40000, 8443, Role::Client);
        t.on_conn(&event(h, ConnChange::Open));
        let (l, r) = (h.conn.local, h.conn.remote);
        assert_eq!(t.find(NO_SUCH_PID, l, r), Some(1));
        assert_eq!(t.find(NO_SUCH_PID, r, l), None);
        assert_eq!(t.find(7, l, r), None, "another process");
        t.on_conn(&event(h, ConnChange::Close));
        assert_eq!(t.find(NO_SUCH_PID, l, r), None);
        t.on_conn(&event(header(2, 40001, 8443, Role::Client), ConnChange::Open));
        t.on_conn(&event(header(3, 40002, 8443, Role::Client), ConnChange::Open));
        t.on_conn(&event(header(4, 40003, 8443, Role::Client), ConnChange::Open));
        assert!(t.by_endpoints.len() <= 2, "evicted connections leave the index");
    }

    #[test]
    fn table_is_bounded() {
        let mut t = tracker(3);
        for id in 0..10 {
            t.on_data(&header(id, 40000, 80, Role::Client));
        }
        assert_eq!(t.len(), 3);
        for id in 10..1000 {
            let h = header(id, 40000, 80, Role::Client);
            t.on_conn(&event(h, ConnChange::Open));
            t.on_conn(&event(h, ConnChange::Close));
        }
        assert!(t.order.len() <= 7, "{}", t.order.len());
    }
}

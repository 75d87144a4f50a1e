//! Plaintext from in-process agents (the JVM agent) merged into the same
//! pipeline as the kernel's records: a chunk takes the kernel's connection
//! when the agent's process has one with the same endpoints, so its records
//! carry the kernel's `conn` (role included) with `tls: true`; the kernel
//! writes no ciphertext for it (its first bytes are a TLS record). Agents
//! send from a background thread, so their last chunks can arrive after the
//! kernel saw the socket close: that close is held back a moment.
//!
//! An SSLEngine has no socket: the agent names it by its identity and the
//! peer port it was created with (`HttpsServer` gives the client's port,
//! `java.net.http` the server's). Its first chunk takes the newest
//! connection of the process to that port that no other engine has, and
//! keeps it: an engine's first bytes follow its connection's opening.

use super::Processor;
use crate::agent::{AgentChunk, AgentEvent, AgentMsg, Hook};
use crate::events::{user_probe, ConnChange, ConnEvent, ConnId, DataEvent, Direction, Header, Role};
use crate::stream::ConnSession;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// How long a kernel close waits for an agent's last chunks.
const CLOSE_GRACE_NS: u64 = 1_000_000_000;
/// Processes whose name is remembered.
const MAX_COMMS: usize = 4096;

/// What the processor keeps about agents; looked up for every chunk, so
/// hashed with foldhash, not SipHash.
#[derive(Debug, Default)]
pub(super) struct Agents {
    /// Kernel connections that agents' plaintext went to.
    fed: foldhash::HashSet<u64>,
    /// Their closes, held back: id → (the kernel's event, when to apply it).
    closing: foldhash::HashMap<u64, (ConnEvent, u64)>,
    /// Process names of agents' processes.
    comms: foldhash::HashMap<u32, [u8; 16]>,
    /// SSLEngines (pid, identity) → the kernel connection they were given.
    engines: foldhash::HashMap<(u32, u64), u64>,
    /// Processes whose agent was loaded while they ran.
    late: foldhash::HashSet<u32>,
    /// Processes the kernel said ended, and when their state goes: their
    /// agent's last chunks come over its socket after the ring said so.
    ended: Vec<(u32, u64)>,
}

impl Agents {
    /// Whether connection `id`'s close is held back for its agent's last plaintext.
    pub(super) fn close_held(&self, id: u64) -> bool {
        self.closing.contains_key(&id)
    }

    /// Processes with agent state.
    pub(super) fn processes(&self) -> usize {
        self.comms.len().max(self.late.len())
    }
}

/// A connection id for plaintext whose connection the kernel never reported
/// (kernel ids count up from 1, so the top bit keeps these apart).
fn agent_conn_id(pid: u32, local: SocketAddr, remote: SocketAddr) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (pid, local, remote).hash(&mut h);
    h.finish() | 1 << 63
}

fn unspecified_like(remote: SocketAddr) -> SocketAddr {
    let ip = match remote.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

impl Processor {
    /// One frame from an agent of process `pid`.
    pub fn on_agent(&mut self, msg: AgentMsg) -> std::io::Result<()> {
        let AgentMsg { pid, frame } = msg;
        if frame.dropped_chunks > 0 {
            self.out.lost("jvmti_agent_dropped", frame.dropped_bytes);
            if let Some(d) = self.out.user_drops.get_mut("jvmti_agent_dropped") {
                d.count += frame.dropped_chunks - 1;
            }
        }
        match frame.event {
            AgentEvent::Hello { attached_late, .. } => {
                if self.agents.comms.len() >= MAX_COMMS {
                    self.agents.comms.clear();
                    self.agents.late.clear();
                }
                if attached_late {
                    self.agents.late.insert(pid);
                }
                let comm = self.tracker.host().comm(pid);
                self.agents.comms.insert(pid, comm);
                Ok(())
            }
            AgentEvent::Data(c) => self.on_agent_chunk(pid, c),
            // The kernel's close ends the connection; the agent's says nothing more.
            AgentEvent::Close { .. } => Ok(()),
        }
    }

    /// The connection of an engine: (id, local, remote).
    fn engine_conn(&mut self, pid: u32, object_id: u64, peer_port: u16) -> (u64, SocketAddr, SocketAddr) {
        let key = (pid, object_id);
        let known = self.agents.engines.get(&key).and_then(|&id| Some((id, self.tracker.info(id)?)));
        let found = known.or_else(|| {
            let engines = &self.agents.engines;
            let taken = |id: u64| engines.iter().any(|(&(p, _), &v)| p == pid && v == id);
            let id = self.tracker.newest_to_port(pid, peer_port, taken)?;
            if self.agents.engines.len() >= self.max_sessions {
                self.agents.engines.clear();
            }
            self.agents.engines.insert(key, id);
            Some((id, self.tracker.info(id)?))
        });
        match found {
            Some((id, info)) => (id, info.local, info.remote),
            None => {
                // Never matched: its own connection, named by the peer port.
                let remote = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), peer_port);
                let local = unspecified_like(remote);
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (pid, object_id).hash(&mut h);
                (h.finish() | 1 << 63, local, remote)
            }
        }
    }

    fn on_agent_chunk(&mut self, pid: u32, c: AgentChunk) -> std::io::Result<()> {
        let (id, local, remote) = match (c.conn.local, c.conn.remote) {
            (Some(local), Some(remote)) => {
                let id = self
                    .tracker
                    .find(pid, local, remote)
                    .unwrap_or_else(|| agent_conn_id(pid, local, remote));
                (id, local, remote)
            }
            (None, Some(remote)) => {
                let local = unspecified_like(remote);
                (agent_conn_id(pid, local, remote), local, remote)
            }
            _ => self.engine_conn(pid, c.conn.object_id, c.conn.peer_port),
        };
        if self.agents.fed.len() < self.max_sessions {
            self.agents.fed.insert(id);
        }
        let comm = match self.agents.comms.get(&pid) {
            Some(comm) => *comm,
            None => {
                let comm = self.tracker.host().comm(pid);
                self.agents.comms.insert(pid, comm);
                comm
            }
        };
        let probe = match c.hook {
            Hook::SocketRead => user_probe::JVMTI_SOCKET_READ,
            Hook::SocketWrite => user_probe::JVMTI_SOCKET_WRITE,
            Hook::EngineUnwrap => user_probe::JVMTI_ENGINE_UNWRAP,
            Hook::EngineWrap => user_probe::JVMTI_ENGINE_WRAP,
        };
        let header = Header {
            probe,
            ts_boot_ns: c.ts_boot_ns,
            pid,
            tid: c.tid as u32,
            comm,
            cgroup: 0,
            conn: ConnId { id, local, remote, role: c.conn.role, tls: true, netns: 0 },
        };
        if self.agents.late.contains(&pid) && !self.sessions.contains_key(&id) {
            // The first bytes after a late attach may be mid-message: the
            // session waits for the next message start.
            let hint = match c.conn.role {
                Role::Client => Some(Direction::Send),
                Role::Server => Some(Direction::Recv),
                Role::Unknown => None,
            };
            if self.sessions.len() >= self.max_sessions {
                self.evict_oldest_session()?;
            }
            let mut s = ConnSession::new(true, hint, self.limits, super::REORDER_LIMIT)
                .with_kafka_topics(self.kafka_topics.clone());
            s.plaintext = true;
            self.sessions.insert(id, s);
        }
        let d = DataEvent { header, seq: c.seq, truncated: 0, direction: c.direction, payload: &c.payload };
        self.on_data(&d)
    }

    /// Process `pid` ended at `ts_boot_ns`: its agent state goes once its
    /// agent's last chunks are in (a new process may get the pid).
    pub(super) fn process_ended(&mut self, pid: u32, ts_boot_ns: u64) {
        if self.agents.comms.contains_key(&pid) || self.agents.late.contains(&pid) {
            self.agents.ended.push((pid, ts_boot_ns + CLOSE_GRACE_NS));
        }
    }

    /// Forgets the ended processes whose time has come at `now` (all with `all`).
    fn forget_ended(&mut self, now: u64, all: bool) {
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.agents.ended).into_iter().partition(|&(_, at)| all || at <= now);
        self.agents.ended = later;
        for (pid, _) in due {
            self.forget_process(pid);
        }
    }

    fn forget_process(&mut self, pid: u32) {
        self.agents.comms.remove(&pid);
        self.agents.late.remove(&pid);
        self.agents.engines.retain(|&(p, _), _| p != pid);
    }

    /// A kernel close of a connection agents fed is held back (true) for
    /// their last chunks; `finish_held_closes` applies it.
    pub(super) fn hold_close(&mut self, c: &ConnEvent) -> bool {
        let id = c.header.conn.id;
        if c.change != ConnChange::Close || !self.agents.fed.contains(&id) {
            return false;
        }
        self.agents.closing.insert(id, (*c, c.header.ts_boot_ns + CLOSE_GRACE_NS));
        true
    }

    /// Applies held-back closes whose time has come at `now` (boot-time ns;
    /// all of them with `all`): the session's last records, then the close.
    pub(super) fn finish_held_closes(&mut self, now: u64, all: bool) -> std::io::Result<()> {
        self.forget_ended(now, all);
        let due: Vec<u64> =
            self.agents.closing.iter().filter(|(_, (_, at))| all || *at <= now).map(|(&id, _)| id).collect();
        for id in due {
            let Some((ev, _)) = self.agents.closing.remove(&id) else { continue };
            self.agents.fed.remove(&id);
            self.agents.engines.retain(|_, v| *v != id);
            let info = self.tracker.on_conn(&ev);
            self.close_session(id, &info, ev.header.ts_boot_ns)?;
            self.conn_record(&ev, &info)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_never_look_like_kernel_ids() {
        let a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        assert!(agent_conn_id(1, a, b) >= 1 << 63);
        assert_eq!(agent_conn_id(1, a, b), agent_conn_id(1, a, b));
        assert_ne!(agent_conn_id(1, a, b), agent_conn_id(1, b, a));
        assert_eq!(crate::events::source_of(user_probe::JVMTI_ENGINE_WRAP), "jvmti");
    }
}

//! Ring-buffer records laid out exactly as the kernel side writes them (the
//! structs of `events.h`), for unit tests, fuzzing and benchmarks of the
//! processor without a kernel: a connection is described once, then its
//! opening, chunks and close are generated with a clock that moves forward.

use crate::abi::{
    nt_conn_change, nt_conn_event, nt_data_event, nt_event_header, nt_event_kind, nt_lib_event, nt_probe,
    nt_role, NT_CONN_F_TLS,
};
use crate::events::{ConnChange, Direction, Role};
use std::mem::{offset_of, size_of};
use std::net::{IpAddr, SocketAddr};

/// One connection as the kernel names it.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The kernel's connection id (never 0 for a socket; 0 for a datagram).
    pub id: u64,
    /// Process (tgid).
    pub pid: u32,
    /// Its name (at most 15 bytes are kept).
    pub comm: &'static str,
    /// Local endpoint.
    pub local: SocketAddr,
    /// Remote endpoint.
    pub remote: SocketAddr,
    /// What the kernel knew of the role.
    pub role: Role,
    /// Marked as TLS by a TLS probe.
    pub tls: bool,
    /// Network namespace inode.
    pub netns: u32,
}

impl Conn {
    /// A client connection of `pid` from `local` to `remote`.
    pub fn client(id: u64, pid: u32, local: &str, remote: &str) -> Self {
        Self {
            id,
            pid,
            comm: "client",
            local: local.parse().expect("an address"),
            remote: remote.parse().expect("an address"),
            role: Role::Client,
            tls: false,
            netns: 4026531840,
        }
    }

    /// The same connection seen from the other end (another process).
    pub fn peer(&self, id: u64, pid: u32) -> Self {
        Self {
            id,
            pid,
            comm: "server",
            local: self.remote,
            remote: self.local,
            role: match self.role {
                Role::Client => Role::Server,
                Role::Server => Role::Client,
                Role::Unknown => Role::Unknown,
            },
            ..self.clone()
        }
    }
}

/// Generates records with a boot-time clock that advances 1 µs per record.
#[derive(Debug, Clone)]
pub struct EventGen {
    /// Boot-time ns of the next record.
    pub now: u64,
}

impl Default for EventGen {
    fn default() -> Self {
        Self { now: 1_000_000_000 }
    }
}

fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn bytes_of<T>(v: &T, len: usize) -> Vec<u8> {
    // SAFETY: the event structs are plain C structs of integers and arrays.
    let all = unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) };
    all[..len].to_vec()
}

impl EventGen {
    fn header(&mut self, kind: u32, probe: u32, c: &Conn) -> nt_event_header {
        let mut h =
            nt_event_header { kind, probe, ts_ns: self.now, pid: c.pid, tid: c.pid, ..Default::default() };
        self.now += 1_000;
        let n = c.comm.len().min(15);
        h.comm[..n].copy_from_slice(&c.comm.as_bytes()[..n]);
        h.conn.conn_id = c.id;
        h.conn.laddr = ip16(c.local.ip());
        h.conn.raddr = ip16(c.remote.ip());
        h.conn.lport = c.local.port();
        h.conn.rport = c.remote.port();
        h.conn.family = if c.local.is_ipv4() { libc::AF_INET as u16 } else { libc::AF_INET6 as u16 };
        h.conn.role = match c.role {
            Role::Client => nt_role::NT_ROLE_CLIENT,
            Role::Server => nt_role::NT_ROLE_SERVER,
            Role::Unknown => nt_role::NT_ROLE_UNKNOWN,
        } as u8;
        h.conn.flags = if c.tls { NT_CONN_F_TLS as u8 } else { 0 };
        h.conn.netns = c.netns;
        h
    }

    /// A connection event.
    pub fn conn(&mut self, c: &Conn, change: ConnChange) -> Vec<u8> {
        let (event, probe) = match change {
            ConnChange::Open if c.role == Role::Server => {
                (nt_conn_change::NT_CONN_OPEN, nt_probe::NT_PROBE_SYS_ACCEPT4)
            }
            ConnChange::Open => (nt_conn_change::NT_CONN_OPEN, nt_probe::NT_PROBE_SYS_CONNECT),
            ConnChange::Close => (nt_conn_change::NT_CONN_CLOSE, nt_probe::NT_PROBE_SOCK_SET_STATE),
            ConnChange::CloseUntracked => {
                (nt_conn_change::NT_CONN_CLOSE_UNTRACKED, nt_probe::NT_PROBE_SOCK_SET_STATE)
            }
            ConnChange::Midstream => (nt_conn_change::NT_CONN_MIDSTREAM, nt_probe::NT_PROBE_SYS_READ),
        };
        let ev = nt_conn_event {
            hdr: self.header(nt_event_kind::NT_EV_CONN, probe, c),
            event,
            ..Default::default()
        };
        bytes_of(&ev, size_of::<nt_conn_event>())
    }

    /// A chunk of `payload` at offset `seq` of one direction, from `probe`
    /// (an `nt_probe`, or a `user_probe` for agents' records); `truncated`
    /// bytes of the call were not captured.
    pub fn data(
        &mut self,
        c: &Conn,
        probe: u32,
        dir: Direction,
        seq: u64,
        payload: &[u8],
        truncated: u32,
    ) -> Vec<u8> {
        self.data_kind(nt_event_kind::NT_EV_DATA, c, probe, dir, seq, payload, truncated)
    }

    /// A plaintext chunk from the kernel's syscall probes (write for send, read for recv).
    pub fn plain(&mut self, c: &Conn, dir: Direction, seq: u64, payload: &[u8]) -> Vec<u8> {
        let probe = match dir {
            Direction::Send => nt_probe::NT_PROBE_SYS_WRITE,
            Direction::Recv => nt_probe::NT_PROBE_SYS_READ,
        };
        self.data(c, probe, dir, seq, payload, 0)
    }

    /// One DNS datagram (`conn.id` 0) from the kernel's UDP probes.
    pub fn dns(&mut self, c: &Conn, dir: Direction, message: &[u8]) -> Vec<u8> {
        let probe = match dir {
            Direction::Send => nt_probe::NT_PROBE_SYS_SENDTO,
            Direction::Recv => nt_probe::NT_PROBE_SYS_RECVFROM,
        };
        self.data_kind(nt_event_kind::NT_EV_DNS, c, probe, dir, 0, message, 0)
    }

    #[allow(clippy::too_many_arguments)]
    fn data_kind(
        &mut self,
        kind: u32,
        c: &Conn,
        probe: u32,
        dir: Direction,
        seq: u64,
        payload: &[u8],
        truncated: u32,
    ) -> Vec<u8> {
        let mut ev: Box<nt_data_event> = Box::default();
        ev.hdr = self.header(kind, probe, c);
        ev.seq = seq;
        ev.len = payload.len() as u32;
        ev.truncated = truncated;
        ev.direction = dir as u8;
        ev.payload[..payload.len()].copy_from_slice(payload);
        bytes_of(&*ev, offset_of!(nt_data_event, payload) + payload.len())
    }

    /// Process `pid` (named `comm`) ended.
    pub fn exit(&mut self, pid: u32, comm: &str) -> Vec<u8> {
        let mut ev = self.lib(pid, 0, comm, false);
        ev[..4].copy_from_slice(&nt_event_kind::NT_EV_EXIT.to_ne_bytes());
        ev
    }

    /// A library mapped (`exec` false) or a program executed (`exec` true) by `pid`.
    pub fn lib(&mut self, pid: u32, ino: u64, name: &str, exec: bool) -> Vec<u8> {
        let mut ev = nt_lib_event {
            kind: if exec { nt_event_kind::NT_EV_EXEC } else { nt_event_kind::NT_EV_LIB },
            pid,
            ts_ns: self.now,
            ino,
            ..Default::default()
        };
        self.now += 1_000;
        let n = name.len().min(31);
        ev.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        bytes_of(&ev, size_of::<nt_lib_event>())
    }
}

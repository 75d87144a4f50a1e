//! Ring-buffer bytes → typed events. Borrowing, allocation-free decoding of
//! the records laid out by `events.h`.

use crate::abi::{
    nt_conn_change, nt_conn_event, nt_conn_ident, nt_data_event, nt_direction, nt_event_header,
    nt_event_kind, nt_lib_event, nt_probe, nt_role, NT_CONN_F_TLS,
};
use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than its fixed part or than its declared payload.
    #[error("record of {len} bytes is too short for a {what}")]
    Short {
        /// What was being decoded.
        what: &'static str,
        /// Bytes available.
        len: usize,
    },
    /// Unknown `kind`.
    #[error("unknown record kind {0}")]
    Kind(u32),
}

/// Who opened a connection, as far as the kernel saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This process called connect().
    Client,
    /// This process accepted it.
    Server,
    /// Opened before the sensor, or not seen.
    Unknown,
}

impl Role {
    fn from_raw(v: u8) -> Self {
        match v as u32 {
            nt_role::NT_ROLE_CLIENT => Role::Client,
            nt_role::NT_ROLE_SERVER => Role::Server,
            _ => Role::Unknown,
        }
    }

    /// The word used in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
            Role::Unknown => "unknown",
        }
    }
}

/// Direction of a data chunk, seen from the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The process wrote it.
    Send,
    /// The process read it.
    Recv,
}

impl Direction {
    /// The word used in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Send => "send",
            Direction::Recv => "recv",
        }
    }
}

/// What happened to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnChange {
    /// connect() or accept() returned.
    Open,
    /// The socket reached TCP_CLOSE.
    Close,
    /// First seen on a connection opened before the sensor (or whose
    /// kernel table entry was evicted: the processor tells them apart).
    Midstream,
    /// The kernel: a socket it had no entry for closed (its entry may have
    /// been evicted); the processor turns it into the `Close` of the live
    /// connection with those endpoints, or ignores it.
    CloseUntracked,
}

impl ConnChange {
    /// The word used in records.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnChange::Open => "open",
            ConnChange::Close | ConnChange::CloseUntracked => "close",
            ConnChange::Midstream => "midstream",
        }
    }
}

/// Which connection, as the kernel identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId {
    /// Kernel-assigned id, unique while the sensor runs.
    pub id: u64,
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
    /// Who opened it.
    pub role: Role,
    /// The connection carries TLS (payload records hold plaintext).
    pub tls: bool,
    /// The socket's network namespace (inode number; 0 when unknown).
    pub netns: u32,
}

/// Fields every record carries.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// The concrete hook (`enum nt_probe`).
    pub probe: u32,
    /// Boot-time clock, ns.
    pub ts_boot_ns: u64,
    /// Process (tgid).
    pub pid: u32,
    /// Thread.
    pub tid: u32,
    /// NUL-padded process name.
    pub comm: [u8; 16],
    /// The process's cgroup v2 id at the event (0: not known), which still
    /// names its pod once it has exited.
    pub cgroup: u64,
    /// Connection.
    pub conn: ConnId,
}

impl Header {
    /// The process name without its NUL padding (lossy only if not UTF-8).
    pub fn comm(&self) -> &str {
        comm_str(&self.comm)
    }
}

/// A NUL-padded kernel comm as text (empty when it is not UTF-8).
pub fn comm_str(comm: &[u8; 16]) -> &str {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    std::str::from_utf8(&comm[..end]).unwrap_or("")
}

/// A chunk of payload.
#[derive(Debug, Clone, Copy)]
pub struct DataEvent<'a> {
    /// Common fields.
    pub header: Header,
    /// Offset of `payload[0]` in this direction of the connection.
    pub seq: u64,
    /// Bytes of the call after this chunk that were not captured.
    pub truncated: u32,
    /// Send or receive.
    pub direction: Direction,
    /// The captured bytes.
    pub payload: &'a [u8],
}

/// A connection lifecycle event.
#[derive(Debug, Clone, Copy)]
pub struct ConnEvent {
    /// Common fields.
    pub header: Header,
    /// What happened.
    pub change: ConnChange,
    /// Bytes sent so far.
    pub send_bytes: u64,
    /// Bytes received so far.
    pub recv_bytes: u64,
}

/// A process mapped a library the sensor may want to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LibEvent {
    /// Process (tgid).
    pub pid: u32,
    /// Boot-time clock, ns.
    pub ts_boot_ns: u64,
    /// The file's inode.
    pub ino: u64,
    /// The file's base name, NUL-padded.
    pub name: [u8; 32],
}

/// One decoded ring-buffer record.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Payload.
    Data(DataEvent<'a>),
    /// Lifecycle.
    Conn(ConnEvent),
    /// A library was mapped.
    Lib(LibEvent),
    /// A program was executed (`name` is its comm).
    Exec(LibEvent),
    /// A process ended (`ino` 0, `name` its comm).
    Exit(LibEvent),
    /// One DNS message over UDP (`header.conn`: the datagram's endpoints,
    /// id 0; `seq` 0).
    Dns(DataEvent<'a>),
}

fn read<T: Copy>(buf: &[u8], off: usize, what: &'static str) -> Result<T, DecodeError> {
    if buf.len() < off + size_of::<T>() {
        return Err(DecodeError::Short { what, len: buf.len() });
    }
    // SAFETY: bounds checked above; T is a plain C struct or integer with no invalid bit patterns.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off) as *const T) })
}

fn addr(raw: [u8; 16], port: u16) -> SocketAddr {
    let v6 = Ipv6Addr::from(raw);
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    };
    SocketAddr::new(ip, port)
}

fn conn_id(c: &nt_conn_ident) -> ConnId {
    ConnId {
        id: c.conn_id,
        local: addr(c.laddr, c.lport),
        remote: addr(c.raddr, c.rport),
        role: Role::from_raw(c.role),
        tls: c.flags as u32 & NT_CONN_F_TLS != 0,
        netns: c.netns,
    }
}

fn header(h: &nt_event_header) -> Header {
    Header {
        probe: h.probe,
        ts_boot_ns: h.ts_ns,
        pid: h.pid,
        tid: h.tid,
        comm: h.comm,
        cgroup: h.cgroup,
        conn: conn_id(&h.conn),
    }
}

/// Decodes one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<Event<'_>, DecodeError> {
    let kind: u32 = read(buf, 0, "record kind")?;
    match kind {
        nt_event_kind::NT_EV_DATA | nt_event_kind::NT_EV_DNS => {
            let h: nt_event_header = read(buf, offset_of!(nt_data_event, hdr), "data header")?;
            let seq: u64 = read(buf, offset_of!(nt_data_event, seq), "data record")?;
            let len: u32 = read(buf, offset_of!(nt_data_event, len), "data record")?;
            let truncated: u32 = read(buf, offset_of!(nt_data_event, truncated), "data record")?;
            let dir: u8 = read(buf, offset_of!(nt_data_event, direction), "data record")?;
            let start = offset_of!(nt_data_event, payload);
            let payload = buf
                .get(start..start + len as usize)
                .ok_or(DecodeError::Short { what: "data payload", len: buf.len() })?;
            let data = DataEvent {
                header: header(&h),
                seq,
                truncated,
                direction: if dir as u32 == nt_direction::NT_DIR_RECV {
                    Direction::Recv
                } else {
                    Direction::Send
                },
                payload,
            };
            Ok(if kind == nt_event_kind::NT_EV_DNS { Event::Dns(data) } else { Event::Data(data) })
        }
        nt_event_kind::NT_EV_CONN => {
            let ev: nt_conn_event = read(buf, 0, "conn record")?;
            let change = match ev.event {
                nt_conn_change::NT_CONN_OPEN => ConnChange::Open,
                nt_conn_change::NT_CONN_CLOSE => ConnChange::Close,
                nt_conn_change::NT_CONN_CLOSE_UNTRACKED => ConnChange::CloseUntracked,
                _ => ConnChange::Midstream,
            };
            Ok(Event::Conn(ConnEvent {
                header: header(&ev.hdr),
                change,
                send_bytes: ev.send_bytes,
                recv_bytes: ev.recv_bytes,
            }))
        }
        nt_event_kind::NT_EV_LIB | nt_event_kind::NT_EV_EXEC | nt_event_kind::NT_EV_EXIT => {
            let ev: nt_lib_event = read(buf, 0, "library record")?;
            let lib = LibEvent { pid: ev.pid, ts_boot_ns: ev.ts_ns, ino: ev.ino, name: ev.name };
            Ok(match kind {
                nt_event_kind::NT_EV_LIB => Event::Lib(lib),
                nt_event_kind::NT_EV_EXEC => Event::Exec(lib),
                _ => Event::Exit(lib),
            })
        }
        other => Err(DecodeError::Kind(other)),
    }
}

/// Hooks outside the kernel (the JVM agent's instrumented methods),
/// numbered above `enum nt_probe` so one `probe` number names any hook.
pub mod user_probe {
    /// `SSLSocketImpl$AppInputStream.read`.
    pub const JVMTI_SOCKET_READ: u32 = 0x1_0000;
    /// `SSLSocketImpl$AppOutputStream.write`.
    pub const JVMTI_SOCKET_WRITE: u32 = 0x1_0001;
    /// `SSLEngineImpl.unwrap`.
    pub const JVMTI_ENGINE_UNWRAP: u32 = 0x1_0002;
    /// `SSLEngineImpl.wrap`.
    pub const JVMTI_ENGINE_WRAP: u32 = 0x1_0003;
    /// A close found by listing the sockets that exist (sock_diag), where
    /// the kernel's own report of it never arrived.
    pub const SOCK_DIAG: u32 = 0x1_0100;
}

/// The concrete hook's name as records show it.
pub fn probe_name(probe: u32) -> &'static str {
    match probe {
        user_probe::JVMTI_SOCKET_READ => "jvmti:sun.security.ssl.SSLSocketImpl$AppInputStream.read",
        user_probe::JVMTI_SOCKET_WRITE => "jvmti:sun.security.ssl.SSLSocketImpl$AppOutputStream.write",
        user_probe::JVMTI_ENGINE_UNWRAP => "jvmti:sun.security.ssl.SSLEngineImpl.unwrap",
        user_probe::JVMTI_ENGINE_WRAP => "jvmti:sun.security.ssl.SSLEngineImpl.wrap",
        user_probe::SOCK_DIAG => "sock_diag:inet",
        nt_probe::NT_PROBE_SYS_READ => "tracepoint:syscalls:sys_exit_read",
        nt_probe::NT_PROBE_SYS_WRITE => "tracepoint:syscalls:sys_exit_write",
        nt_probe::NT_PROBE_SYS_READV => "tracepoint:syscalls:sys_exit_readv",
        nt_probe::NT_PROBE_SYS_WRITEV => "tracepoint:syscalls:sys_exit_writev",
        nt_probe::NT_PROBE_SYS_RECVFROM => "tracepoint:syscalls:sys_exit_recvfrom",
        nt_probe::NT_PROBE_SYS_SENDTO => "tracepoint:syscalls:sys_exit_sendto",
        nt_probe::NT_PROBE_SYS_RECVMSG => "tracepoint:syscalls:sys_exit_recvmsg",
        nt_probe::NT_PROBE_SYS_SENDMSG => "tracepoint:syscalls:sys_exit_sendmsg",
        nt_probe::NT_PROBE_SYS_SENDFILE => "tracepoint:syscalls:sys_exit_sendfile64",
        nt_probe::NT_PROBE_SYS_SPLICE => "tracepoint:syscalls:sys_exit_splice",
        nt_probe::NT_PROBE_SYS_CONNECT => "tracepoint:syscalls:sys_exit_connect",
        nt_probe::NT_PROBE_SYS_ACCEPT => "tracepoint:syscalls:sys_exit_accept",
        nt_probe::NT_PROBE_SYS_ACCEPT4 => "tracepoint:syscalls:sys_exit_accept4",
        nt_probe::NT_PROBE_SOCK_SET_STATE => "raw_tracepoint:inet_sock_set_state",
        nt_probe::NT_PROBE_SYS_SENDMMSG => "tracepoint:syscalls:sys_exit_sendmmsg",
        nt_probe::NT_PROBE_SYS_RECVMMSG => "tracepoint:syscalls:sys_exit_recvmmsg",
        nt_probe::NT_PROBE_UPROBE_GO_TLS_WRITE => "uprobe:crypto/tls.(*Conn).Write",
        nt_probe::NT_PROBE_UPROBE_GO_TLS_READ => "uprobe:crypto/tls.(*Conn).Read:return",
        nt_probe::NT_PROBE_UPROBE_GO_TLS_WRITE_RECORD => "uprobe:crypto/tls.(*Conn).Write:writeRecordLocked",
        nt_probe::NT_PROBE_UPROBE_GO_TLS_READ_COPY => "uprobe:crypto/tls.(*Conn).Read:copy",
        nt_probe::NT_PROBE_UPROBE_SSL_WRITE_INTERNAL => "uprobe:ssl_write_internal",
        nt_probe::NT_PROBE_UPROBE_SSL_READ_INTERNAL => "uretprobe:ssl_read_internal",
        nt_probe::NT_PROBE_KPROBE_TCP_SENDMSG => "kprobe:tcp_sendmsg",
        nt_probe::NT_PROBE_KPROBE_TCP_RECVMSG => "kprobe:tcp_recvmsg",
        nt_probe::NT_PROBE_UPROBE_SSL_WRITE => "uprobe:SSL_write",
        nt_probe::NT_PROBE_UPROBE_SSL_WRITE_EX => "uprobe:SSL_write_ex",
        nt_probe::NT_PROBE_UPROBE_SSL_READ => "uretprobe:SSL_read",
        nt_probe::NT_PROBE_UPROBE_SSL_READ_EX => "uretprobe:SSL_read_ex",
        nt_probe::NT_PROBE_UPROBE_SSL_READ_SITE => "uprobe:SSL_read:return",
        nt_probe::NT_PROBE_UPROBE_SSL_READ_EX_SITE => "uprobe:SSL_read_ex:return",
        nt_probe::NT_PROBE_UPROBE_GNUTLS_SEND => "uprobe:gnutls_record_send2",
        nt_probe::NT_PROBE_UPROBE_GNUTLS_RECV => "uretprobe:gnutls_record_recv",
        nt_probe::NT_PROBE_UPROBE_GNUTLS_RECV_SEQ => "uretprobe:gnutls_record_recv_seq",
        nt_probe::NT_PROBE_UPROBE_NSS_WRITE => "uprobe:ssl_Write",
        nt_probe::NT_PROBE_UPROBE_NSS_SEND => "uprobe:ssl_Send",
        nt_probe::NT_PROBE_UPROBE_NSS_READ => "uretprobe:ssl_Read",
        nt_probe::NT_PROBE_UPROBE_NSS_RECV => "uretprobe:ssl_Recv",
        nt_probe::NT_PROBE_UPROBE_RUSTLS_WRITE => "uprobe:rustls::conn::PlaintextSink::write",
        nt_probe::NT_PROBE_UPROBE_RUSTLS_READ => "uretprobe:rustls::conn::Reader::read",
        nt_probe::NT_PROBE_UPROBE_BSSL_WRITE => "uprobe:SSL_write",
        nt_probe::NT_PROBE_UPROBE_BSSL_READ => "uretprobe:SSL_read",
        _ => "unknown",
    }
}

/// The probe family (`source` in records) of a hook.
pub fn source_of(probe: u32) -> &'static str {
    match probe {
        nt_probe::NT_PROBE_UPROBE_SSL_WRITE
        | nt_probe::NT_PROBE_UPROBE_SSL_WRITE_EX
        | nt_probe::NT_PROBE_UPROBE_SSL_READ
        | nt_probe::NT_PROBE_UPROBE_SSL_READ_EX
        | nt_probe::NT_PROBE_UPROBE_SSL_READ_SITE
        | nt_probe::NT_PROBE_UPROBE_SSL_READ_EX_SITE
        | nt_probe::NT_PROBE_UPROBE_SSL_WRITE_INTERNAL
        | nt_probe::NT_PROBE_UPROBE_SSL_READ_INTERNAL => "openssl",
        nt_probe::NT_PROBE_UPROBE_GO_TLS_WRITE
        | nt_probe::NT_PROBE_UPROBE_GO_TLS_READ
        | nt_probe::NT_PROBE_UPROBE_GO_TLS_WRITE_RECORD
        | nt_probe::NT_PROBE_UPROBE_GO_TLS_READ_COPY => "go-tls",
        nt_probe::NT_PROBE_UPROBE_GNUTLS_SEND
        | nt_probe::NT_PROBE_UPROBE_GNUTLS_RECV
        | nt_probe::NT_PROBE_UPROBE_GNUTLS_RECV_SEQ => "gnutls",
        nt_probe::NT_PROBE_UPROBE_NSS_WRITE
        | nt_probe::NT_PROBE_UPROBE_NSS_SEND
        | nt_probe::NT_PROBE_UPROBE_NSS_READ
        | nt_probe::NT_PROBE_UPROBE_NSS_RECV => "nss",
        nt_probe::NT_PROBE_UPROBE_RUSTLS_WRITE | nt_probe::NT_PROBE_UPROBE_RUSTLS_READ => "rustls",
        nt_probe::NT_PROBE_UPROBE_BSSL_WRITE | nt_probe::NT_PROBE_UPROBE_BSSL_READ => "boringssl",
        user_probe::JVMTI_SOCKET_READ..=user_probe::JVMTI_ENGINE_WRAP => "jvmti",
        _ => "kernel",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::abi::NT_CHUNK_MAX;

    /// Lays out a data record the way the kernel side does.
    pub(crate) fn data_record(conn: u64, dir: u32, seq: u64, payload: &[u8], truncated: u32) -> Vec<u8> {
        let mut ev: Box<nt_data_event> = Box::default();
        ev.hdr.kind = nt_event_kind::NT_EV_DATA;
        ev.hdr.probe = nt_probe::NT_PROBE_SYS_WRITE;
        ev.hdr.ts_ns = 42;
        ev.hdr.pid = 7;
        ev.hdr.tid = 8;
        ev.hdr.comm[..4].copy_from_slice(b"curl");
        ev.hdr.conn.conn_id = conn;
        ev.hdr.conn.laddr[10..].copy_from_slice(&[0xff, 0xff, 127, 0, 0, 1]);
        ev.hdr.conn.raddr[15] = 1; // ::1, not v4-mapped
        ev.hdr.conn.lport = 40000;
        ev.hdr.conn.rport = 8080;
        ev.hdr.conn.role = nt_role::NT_ROLE_CLIENT as u8;
        ev.seq = seq;
        ev.len = payload.len() as u32;
        ev.truncated = truncated;
        ev.direction = dir as u8;
        ev.payload[..payload.len()].copy_from_slice(payload);
        // SAFETY: viewing a plain C struct as bytes.
        let all = unsafe {
            std::slice::from_raw_parts(&*ev as *const nt_data_event as *const u8, size_of::<nt_data_event>())
        };
        all[..offset_of!(nt_data_event, payload) + payload.len()].to_vec()
    }

    #[test]
    fn decodes_a_data_record() {
        let rec = data_record(3, nt_direction::NT_DIR_RECV, 100, b"hello", 9);
        let Event::Data(d) = decode(&rec).unwrap() else { panic!("not data") };
        assert_eq!(d.payload, b"hello");
        assert_eq!(d.seq, 100);
        assert_eq!(d.truncated, 9);
        assert_eq!(d.direction, Direction::Recv);
        assert_eq!(d.header.pid, 7);
        assert_eq!(d.header.comm(), "curl");
        assert_eq!(d.header.conn.local.to_string(), "127.0.0.1:40000");
        assert_eq!(d.header.conn.remote.to_string(), "[::1]:8080");
        assert_eq!(d.header.conn.role, Role::Client);
        assert_eq!(probe_name(d.header.probe), "tracepoint:syscalls:sys_exit_write");
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let rec = data_record(3, 0, 0, b"hello", 0);
        assert!(matches!(decode(&rec[..rec.len() - 1]), Err(DecodeError::Short { .. })));
        assert!(matches!(decode(&rec[..10]), Err(DecodeError::Short { .. })));
        assert!(matches!(decode(&[9, 0, 0, 0, 0, 0, 0, 0]), Err(DecodeError::Kind(9))));
        assert!(matches!(decode(&[]), Err(DecodeError::Short { .. })));
        let full = data_record(3, 0, 0, &vec![b'x'; NT_CHUNK_MAX as usize], 0);
        assert!(matches!(decode(&full), Ok(Event::Data(d)) if d.payload.len() == NT_CHUNK_MAX as usize));
    }

    #[test]
    fn decodes_a_conn_record() {
        let mut ev = nt_conn_event::default();
        ev.hdr.kind = nt_event_kind::NT_EV_CONN;
        ev.event = nt_conn_change::NT_CONN_CLOSE;
        ev.send_bytes = 5;
        ev.recv_bytes = 6;
        // SAFETY: viewing a plain C struct as bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts(&ev as *const _ as *const u8, size_of::<nt_conn_event>()) };
        let Event::Conn(c) = decode(bytes).unwrap() else { panic!("not conn") };
        assert_eq!(c.change, ConnChange::Close);
        assert_eq!((c.send_bytes, c.recv_bytes), (5, 6));
        assert_eq!(c.header.conn.role, Role::Unknown);
    }
}

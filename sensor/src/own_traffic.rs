//! The sensor's own connections, seen from the other end. The kernel never
//! captures the sensor's process, but the peer of one of its connections is
//! captured like any process: a Kafka broker (or an OTLP collector, or a
//! client of the API or of `/metrics`) on a captured port records the
//! sensor's own requests, which the sensor would then export again, and
//! again — a loop that grows with every round. Every record of a
//! connection whose remote endpoint is one of the sensor's own sockets is
//! held back here before any output sees it, and counted as `drop` records
//! of reason `sensor_own_traffic`.
//!
//! The sensor's sockets are found by `getsockname` on its own descriptors
//! (`/proc/self/fd`, some 110 µs for 130 descriptors), looked at again only
//! for a connection not yet judged whose remote endpoint could be one of
//! them: an address of this host (loopback or an interface's) and a port
//! in the ephemeral range (the sensor's client sockets) or one the sensor
//! listens on (so a DNS query to 127.0.0.53:53 costs nothing). A socket the
//! sensor opened is there before its first byte reaches the peer, so the
//! peer's first record finds it. The verdict is kept per connection until
//! it closes.

use crate::shed::Shed;
use nettap_core::conn::EphemeralPorts;
use nettap_core::events::ConnChange;
use nettap_core::record::{in_jsonl, Body, Record};
use nettap_core::sink::Sink;
use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};

/// Verdicts kept at once (beyond, they are forgotten and judged again).
const MAX_VERDICTS: usize = 1 << 16;

/// The outputs, behind the filter of the sensor's own traffic.
pub struct OwnTraffic {
    sinks: Vec<Box<dyn Sink>>,
    sockets: OwnSockets,
    /// Connection id → whether its remote is the sensor's; looked up for
    /// every record, so foldhash, not SipHash (SipHash here was 1.0 % of
    /// the sensor's CPU on a JVM agent's frames).
    verdicts: foldhash::HashMap<u64, bool>,
    shed: Shed,
    raw: bool,
}

impl OwnTraffic {
    /// Filters what goes to `sinks`; `raw` as theirs (what is counted is
    /// what they would have written).
    pub fn new(sinks: Vec<Box<dyn Sink>>, raw: bool) -> Self {
        let shed = Shed::new("sensor_own_traffic");
        Self { sinks, sockets: OwnSockets::default(), verdicts: foldhash::HashMap::default(), shed, raw }
    }

    /// What is held back, for the capture loop to report as `drop` records.
    pub fn shed(&self) -> Shed {
        self.shed.clone()
    }

    fn own(&mut self, id: u64, remote: SocketAddr) -> bool {
        if let Some(&v) = self.verdicts.get(&id) {
            return v;
        }
        let v = self.sockets.is_own(remote);
        if self.verdicts.len() >= MAX_VERDICTS {
            self.verdicts.clear();
        }
        self.verdicts.insert(id, v);
        v
    }
}

impl Sink for OwnTraffic {
    fn record(&mut self, r: &Record<'_>) -> io::Result<()> {
        if let Some(c) = r.conn {
            let own = self.own(c.id, c.remote);
            if matches!(r.body, Body::Conn(ConnChange::Close)) {
                self.verdicts.remove(&c.id);
            }
            if own {
                if in_jsonl(&r.body, self.raw) {
                    let bytes = match r.body {
                        Body::Data { payload, .. } => payload.len() as u64,
                        _ => 0,
                    };
                    self.shed.add(1, bytes);
                }
                return Ok(());
            }
        }
        self.sinks.iter_mut().try_for_each(|s| s.record(r))
    }

    fn flush(&mut self) -> io::Result<()> {
        // Once a second: interfaces may have gained an address.
        self.sockets.local_ips = local_ips();
        self.sinks.iter_mut().try_for_each(|s| s.flush())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.finish())
    }
}

/// The local endpoints of the sensor's TCP sockets.
#[derive(Debug)]
struct OwnSockets {
    /// Of its connections.
    endpoints: HashSet<SocketAddr>,
    /// Ports it listens on.
    listening: HashSet<u16>,
    /// This host's addresses (the network namespace's interfaces).
    local_ips: HashSet<IpAddr>,
    ephemeral: EphemeralPorts,
    /// Looks at the descriptors so far.
    scans: u64,
}

impl Default for OwnSockets {
    fn default() -> Self {
        let mut s = Self {
            endpoints: HashSet::new(),
            listening: HashSet::new(),
            local_ips: local_ips(),
            ephemeral: crate::host::ephemeral_ports(),
            scans: 0,
        };
        s.scan();
        s
    }
}

impl OwnSockets {
    fn is_own(&mut self, remote: SocketAddr) -> bool {
        let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
        if self.endpoints.contains(&remote) {
            return true;
        }
        let (ip, port) = (remote.ip(), remote.port());
        let host = ip.is_loopback() || self.local_ips.contains(&ip);
        if !host || !(self.ephemeral.contains(port) || self.listening.contains(&port)) {
            return false;
        }
        self.scan();
        self.endpoints.contains(&remote)
    }

    fn scan(&mut self) {
        self.scans += 1;
        self.endpoints.clear();
        self.listening.clear();
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
        for fd in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
            if int_option(fd, libc::SO_TYPE) != Some(libc::SOCK_STREAM) {
                continue;
            }
            let Some(local) = socket_addr(fd, libc::getsockname) else { continue };
            if int_option(fd, libc::SO_ACCEPTCONN) == Some(1) {
                self.listening.insert(local.port());
            } else if socket_addr(fd, libc::getpeername).is_some() {
                self.endpoints.insert(local);
            }
        }
    }
}

/// An integer socket option of `fd`, if it is a socket (still open).
fn int_option(fd: i32, option: libc::c_int) -> Option<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for the option's size; a descriptor
    // that is not a socket (or was closed meanwhile) only gives an error.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, option, (&raw mut v).cast(), &mut len) };
    (rc == 0).then_some(v)
}

type NameFn = unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

/// `getsockname`/`getpeername` of `fd` as an address, if it is an IP socket.
fn socket_addr(fd: i32, name: NameFn) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data, valid when zeroed.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` has room for any address; the kernel writes at most `len`.
    if unsafe { name(fd, (&raw mut ss).cast(), &mut len) } != 0 {
        return None;
    }
    sockaddr(&ss)
}

fn sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr).to_canonical();
            Some(SocketAddr::new(ip, u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

/// The addresses of this network namespace's interfaces.
fn local_ips() -> HashSet<IpAddr> {
    let mut out = HashSet::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs made.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of its family's size;
            // only the family's own struct is read (sockaddr_storage is a bound).
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET || family == libc::AF_INET6 {
                // SAFETY: as above: the struct of the family, at most sockaddr_in6.
                let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
                let n = if family == libc::AF_INET {
                    std::mem::size_of::<libc::sockaddr_in>()
                } else {
                    std::mem::size_of::<libc::sockaddr_in6>()
                };
                // SAFETY: copies `n` bytes of a sockaddr of that size into room for any.
                unsafe { std::ptr::copy_nonoverlapping(ifa.ifa_addr.cast::<u8>(), (&raw mut ss).cast(), n) };
                if let Some(a) = sockaddr(&ss) {
                    out.insert(a.ip());
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_knows_its_connections_and_no_one_elses() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let mut own = OwnSockets::default();
        // Both ends are this process's: a peer of either is the sensor's traffic.
        assert!(own.is_own(c.local_addr().unwrap()));
        assert!(own.is_own(s.local_addr().unwrap()));
        // The listener is no connection; a port nothing of ours has is not ours.
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(!own.is_own(other));
        // IPv4-mapped as the kernel may write it.
        let mapped = match c.local_addr().unwrap() {
            SocketAddr::V4(a) => SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port()),
            a => a,
        };
        assert!(own.is_own(mapped));
        // An address not of this host, or a port the sensor has no socket
        // on (a DNS server's), is never looked up.
        let scans = own.scans;
        assert!(!own.is_own("192.0.2.1:40000".parse().unwrap()));
        assert!(!own.is_own("127.0.0.53:53".parse().unwrap()));
        assert_eq!(own.scans, scans);
        assert!(local_ips().contains(&IpAddr::from([127, 0, 0, 1])));
    }

    #[test]
    fn a_new_socket_is_found_at_once() {
        let mut own = OwnSockets::default();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!own.is_own(l.local_addr().unwrap()), "a listener, no connection yet");
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert!(own.is_own(c.local_addr().unwrap()), "a socket connected after the last look");
    }
}

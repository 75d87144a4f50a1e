//! Lists the TCP sockets that exist in network namespaces, through the
//! kernel's sock_diag netlink interface (what `ss` uses), so closes the
//! kernel never reported can be found (`nettap_core::conn::MissingSockets`).
//!
//! A netlink socket lists the namespace it was created in, so the listing
//! thread enters each namespace (`setns`, which needs CAP_SYS_ADMIN) through
//! a process in it or a bind mount under /run/netns. The thread is made for
//! one listing and ends with it: it never has to find its way back. Where
//! it may not enter (the DaemonSet's four capabilities), a process's own
//! `/proc/PID/net/tcp{,6}` lists its namespace instead: text, slower for
//! many sockets, but no setns.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};
use nettap_core::conn::{endpoints_key, NetnsSockets};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// The initial pid namespace's inode (the kernel's PROC_PID_INIT_INO): only
/// a sensor that sees every process may conclude that a namespace no
/// process is in has gone.
const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// States of a socket whose close is still to come. TIME_WAIT and CLOSE
/// come after the kernel's TCP_CLOSE of the connection's socket; LISTEN and
/// the request sockets of SYN_RECV are no connection of ours.
fn open_states() -> StateFlags {
    StateFlags::ESTABLISHED
        | StateFlags::SYN_SENT
        | StateFlags::FIN_WAIT1
        | StateFlags::FIN_WAIT2
        | StateFlags::CLOSE_WAIT
        | StateFlags::LAST_ACK
        | StateFlags::CLOSING
}

/// Lists each of `namespaces` (inode → pids that used its sockets, a way in).
/// Runs on the calling thread and may leave it in another namespace: call
/// it on a thread of its own.
pub fn list(namespaces: &HashMap<u32, Vec<u32>>) -> HashMap<u32, NetnsSockets> {
    let own = netns_of("/proc/self/ns/net");
    let sees_every_process = std::fs::metadata("/proc/self/ns/pid")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m) == INIT_PID_NS_INO)
        .unwrap_or(false);
    let mut out = HashMap::new();
    // Our own namespace first: after a setns this thread is elsewhere.
    if let Some(own) = own.filter(|n| namespaces.contains_key(n)) {
        out.insert(own, listing(dump()));
    }
    let mut all_processes: Option<HashMap<u32, u32>> = None;
    for (&netns, pids) in namespaces {
        if Some(netns) == own {
            continue;
        }
        let way_in = pids
            .iter()
            .map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")))
            .find(|p| netns_of(p) == Some(netns))
            .or_else(|| {
                let all = all_processes.get_or_insert_with(every_processes_netns);
                all.get(&netns).map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")))
            })
            .or_else(|| bind_mounted(netns));
        let sockets = match way_in {
            None if sees_every_process => NetnsSockets::Gone,
            None => NetnsSockets::Unknown,
            Some(path) => match enter(&path) {
                Ok(()) => listing(dump()),
                // /proc/PID/ns/net → /proc/PID: that process's view of its namespace.
                Err(_) => match path.parent().and_then(|ns| ns.parent()) {
                    Some(proc_dir) if proc_dir.starts_with("/proc") => listing(from_procfs(proc_dir)),
                    _ => NetnsSockets::Unknown,
                },
            },
        };
        out.insert(netns, sockets);
    }
    out
}

fn listing(r: io::Result<HashSet<u64>>) -> NetnsSockets {
    r.map_or(NetnsSockets::Unknown, NetnsSockets::Live)
}

/// The namespace inode a `/proc/*/ns/net` link names ("net:[4026531840]").
pub(crate) fn netns_of(link: impl AsRef<std::path::Path>) -> Option<u32> {
    let target = std::fs::read_link(link).ok()?;
    target.to_str()?.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// One process per network namespace, from every process's link.
fn every_processes_netns() -> HashMap<u32, u32> {
    let mut out = HashMap::new();
    for pid in crate::probes::running_pids() {
        if let Some(ns) = netns_of(format!("/proc/{pid}/ns/net")) {
            out.entry(ns).or_insert(pid);
        }
    }
    out
}

/// A namespace kept by a bind mount (`ip netns add`) with no process in it.
fn bind_mounted(netns: u32) -> Option<PathBuf> {
    ["/run/netns", "/var/run/netns"].iter().find_map(|dir| {
        std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| {
            std::fs::metadata(p).is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == netns as u64)
        })
    })
}

/// Moves this thread into the network namespace `path` names.
fn enter(path: &std::path::Path) -> io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: setns on a descriptor we own; it changes only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The TCP sockets of this thread's network namespace whose close is still
/// to come, by `endpoints_key` (IPv4-mapped addresses as IPv4, as records
/// have them).
fn dump() -> io::Result<HashSet<u64>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    let mut live = HashSet::new();
    let mut buf = vec![0u8; 1 << 16];
    for family in [AF_INET, AF_INET6] {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: open_states(),
                socket_id,
            })
            .into(),
        );
        request.finalize();
        let mut bytes = vec![0u8; request.buffer_len()];
        request.serialize(&mut bytes);
        socket.send(&bytes, 0)?;
        'messages: loop {
            let n = socket.recv(&mut &mut buf[..], 0)?;
            let mut at = 0;
            while at < n {
                let m = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[at..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {e}")))?;
                let len = m.header.length as usize;
                match m.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        let id = &r.header.socket_id;
                        live.insert(endpoints_key(
                            &SocketAddr::new(id.source_address.to_canonical(), id.source_port),
                            &SocketAddr::new(id.destination_address.to_canonical(), id.destination_port),
                        ));
                    }
                    NetlinkPayload::Done(_) => break 'messages,
                    NetlinkPayload::Error(e) => return Err(e.to_io()),
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                at += len;
            }
        }
    }
    Ok(live)
}

/// The same as `dump`, from the text tables of the namespace of the process
/// at `proc_dir` (`/proc/PID`).
fn from_procfs(proc_dir: &std::path::Path) -> io::Result<HashSet<u64>> {
    use procfs::net::TcpState::*;
    let pid: i32 = proc_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a /proc/PID directory"))?;
    let p = procfs::process::Process::new(pid).map_err(io::Error::other)?;
    let mut live = HashSet::new();
    for e in p.tcp().map_err(io::Error::other)?.into_iter().chain(p.tcp6().map_err(io::Error::other)?) {
        if matches!(e.state, Established | SynSent | FinWait1 | FinWait2 | CloseWait | LastAck | Closing) {
            live.insert(endpoints_key(
                &SocketAddr::new(e.local_address.ip().to_canonical(), e.local_address.port()),
                &SocketAddr::new(e.remote_address.ip().to_canonical(), e.remote_address.port()),
            ));
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn this_namespace_lists_a_connection_of_ours_until_it_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let pair = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        let own = netns_of("/proc/self/ns/net").unwrap();
        let listed = std::thread::spawn(move || list(&HashMap::from([(own, vec![std::process::id()])])))
            .join()
            .unwrap();
        let NetnsSockets::Live(live) = &listed[&own] else { panic!("not listed: {listed:?}") };
        assert!(live.contains(&endpoints_key(&pair.0, &pair.1)), "{pair:?} not among {} sockets", live.len());
        assert!(live.contains(&endpoints_key(&pair.1, &pair.0)), "the server's end");
        drop((client, server));
        // The FINs cross on loopback at once; TIME_WAIT is after the close.
        for tries in 0.. {
            let listed = std::thread::spawn(move || list(&HashMap::from([(own, vec![])]))).join().unwrap();
            let NetnsSockets::Live(live) = &listed[&own] else { panic!() };
            if !live.contains(&endpoints_key(&pair.0, &pair.1)) {
                break;
            }
            assert!(tries < 100, "still listed after a second");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn the_text_tables_list_what_netlink_lists() {
        let listener = TcpListener::bind("[::1]:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let pair = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        let me = PathBuf::from(format!("/proc/{}", std::process::id()));
        let text = from_procfs(&me).unwrap();
        assert!(text.contains(&endpoints_key(&pair.0, &pair.1)), "{pair:?}");
        assert!(text.contains(&endpoints_key(&pair.1, &pair.0)));
        let netlink = std::thread::spawn(dump).join().unwrap().unwrap();
        assert!(netlink.contains(&endpoints_key(&pair.0, &pair.1)));
    }

    #[test]
    fn a_namespace_no_process_is_in_is_gone_and_reading_links_works() {
        let own = netns_of("/proc/self/ns/net").unwrap();
        assert!(every_processes_netns().contains_key(&own));
        // An inode no namespace has.
        let listed = std::thread::spawn(|| list(&HashMap::from([(1, vec![])]))).join().unwrap();
        let sees_all = std::fs::metadata("/proc/self/ns/pid")
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m) == INIT_PID_NS_INO)
            .unwrap();
        let want = if sees_all { NetnsSockets::Gone } else { NetnsSockets::Unknown };
        assert_eq!(listed[&1], want);
    }
}

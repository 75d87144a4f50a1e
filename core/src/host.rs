//! What the processor needs to know about the host beyond the events it is
//! given. The sensor answers from /proc and the Kubernetes pod index; unit
//! tests answer from tables. Nothing in this crate reads the host itself.

use crate::pod::{Peer, PodOf};
use std::net::IpAddr;

/// The processor's questions to its host, asked at most once per new
/// connection or process (never per chunk).
pub trait Host {
    /// Whether `port` has a TCP listener in network namespace `netns` (its
    /// inode, 0: not known), read through process `pid`; `None` when that
    /// cannot be known (the process is gone and the namespace not otherwise
    /// readable).
    fn listens(&mut self, pid: u32, netns: u32, port: u16) -> Option<bool>;
    /// The name of process `pid` (kernel events carry their own; agents' do not).
    fn comm(&mut self, pid: u32) -> [u8; 16];
    /// The pod process `pid` runs in (Kubernetes mode); `cgroup` is its
    /// cgroup v2 id as its event gave it (0: not known), which still names
    /// the pod once the process has exited.
    fn pod_of(&mut self, pid: u32, cgroup: u64) -> Option<PodOf>;
    /// The pod or Service whose address `ip` is, anywhere in the cluster
    /// (Kubernetes mode): a record's `k8s.peer`.
    fn peer_of(&mut self, _ip: IpAddr) -> Option<Peer> {
        None
    }
    /// The host's own network namespace (inode), which hostNetwork pods
    /// share; 0 when not known (then no peer is named from this node's
    /// other end of a connection).
    fn host_netns(&mut self) -> u32 {
        0
    }
}

/// A host that knows nothing: roles come from ports alone, agents' processes
/// have no name, and no process is in a pod.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHost;

impl Host for NoHost {
    fn listens(&mut self, _pid: u32, _netns: u32, _port: u16) -> Option<bool> {
        None
    }

    fn comm(&mut self, _pid: u32) -> [u8; 16] {
        [0; 16]
    }

    fn pod_of(&mut self, _pid: u32, _cgroup: u64) -> Option<PodOf> {
        None
    }
}

//! Closes the kernel never reported. On a busy node the kernel sometimes
//! does not run a BPF program on a socket's last state change (its dispatch
//! drops nested runs without always counting them), so a connection would
//! stay open in our tables for ever and its close record would be missing.
//! The sensor therefore lists, now and then, the sockets that really exist
//! in each network namespace (sock_diag) and compares: a tracked connection
//! whose socket two listings in a row did not find is closed. Two, because
//! a close may still be on its way through the ring buffer when the first
//! listing is taken. Sans-IO: the listing is the caller's.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

/// A socket's endpoints as a listing keeps them: 8 bytes instead of 64, for
/// listings of hundreds of thousands of sockets. Two pairs with one key can
/// only make a gone socket look present (its close comes from the kernel or
/// not at all, as without listings), never invent a close.
pub fn endpoints_key(local: &SocketAddr, remote: &SocketAddr) -> u64 {
    // SipHash with fixed keys: the same key in the listing thread and here.
    let mut h = std::hash::DefaultHasher::new();
    (local, remote).hash(&mut h);
    h.finish()
}

/// A kernel connection the tracker holds, as the comparison needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackedSocket {
    /// The tracker's id (the first kernel id of the connection).
    pub id: u64,
    /// Network namespace (inode).
    pub netns: u32,
    /// Local endpoint.
    pub local: SocketAddr,
    /// Remote endpoint.
    pub remote: SocketAddr,
    /// The process that used it last (a way into its network namespace).
    pub pid: u32,
}

/// What a listing found in one network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsSockets {
    /// Its TCP sockets that are not closed yet, by `endpoints_key`.
    Live(HashSet<u64>),
    /// The namespace no longer exists: none of its sockets do.
    Gone,
    /// It could not be listed (no permission to enter it): nothing is
    /// concluded about its connections.
    Unknown,
}

/// The tracked connections one listing did not find, kept to be confirmed
/// by the next.
#[derive(Debug, Default)]
pub struct MissingSockets {
    suspects: HashSet<u64>,
}

impl MissingSockets {
    /// Compares `tracked` (the tracker's kernel connections, taken before
    /// the listing began, so each socket existed when it was listed) with
    /// `listing`, and returns the ids to close: those missing now that were
    /// missing last time too, or, with `final_listing` (nothing more can be
    /// on its way: the ring buffer was drained after the probes went), those
    /// missing now. A connection whose endpoints a newer tracked connection
    /// of the same namespace took is closed at once: two live sockets never
    /// share both endpoints.
    pub fn compare(
        &mut self,
        tracked: &[TrackedSocket],
        listing: &HashMap<u32, NetnsSockets>,
        final_listing: bool,
    ) -> Vec<u64> {
        // Tracked connections sharing a namespace and both endpoints: all
        // but the newest (highest id) are gone. Sorted indices, not a map:
        // the table may hold hundreds of thousands.
        let mut order: Vec<u32> = (0..tracked.len() as u32).collect();
        order.sort_unstable_by_key(|&i| {
            let t = &tracked[i as usize];
            (t.netns, t.local, t.remote, std::cmp::Reverse(t.id))
        });
        let mut superseded = HashSet::new();
        for w in order.windows(2) {
            let (newer, older) = (&tracked[w[0] as usize], &tracked[w[1] as usize]);
            if (newer.netns, newer.local, newer.remote) == (older.netns, older.local, older.remote) {
                superseded.insert(older.id);
            }
        }
        drop(order);
        let mut gone = Vec::new();
        let mut missing = HashSet::new();
        for t in tracked {
            if superseded.contains(&t.id) {
                gone.push(t.id);
                continue;
            }
            let absent = match listing.get(&t.netns) {
                Some(NetnsSockets::Live(live)) => !live.contains(&endpoints_key(&t.local, &t.remote)),
                Some(NetnsSockets::Gone) => true,
                Some(NetnsSockets::Unknown) | None => false,
            };
            if !absent {
                continue;
            }
            if final_listing || self.suspects.contains(&t.id) {
                gone.push(t.id);
            } else {
                missing.insert(t.id);
            }
        }
        self.suspects = missing;
        gone
    }

    /// Connections waiting for a second listing.
    pub fn suspects(&self) -> usize {
        self.suspects.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(id: u64, netns: u32, lport: u16) -> TrackedSocket {
        TrackedSocket {
            id,
            netns,
            local: SocketAddr::from(([10, 0, 0, 1], lport)),
            remote: SocketAddr::from(([10, 0, 0, 2], 80)),
            pid: 1,
        }
    }

    fn live(socks: &[TrackedSocket]) -> NetnsSockets {
        NetnsSockets::Live(socks.iter().map(|s| endpoints_key(&s.local, &s.remote)).collect())
    }

    #[test]
    fn a_socket_missing_from_two_listings_in_a_row_is_closed() {
        let (a, b) = (sock(1, 7, 40000), sock(2, 7, 40001));
        let mut m = MissingSockets::default();
        let listing = HashMap::from([(7, live(&[a]))]);
        assert_eq!(m.compare(&[a, b], &listing, false), Vec::<u64>::new(), "once may be a close on its way");
        assert_eq!(m.suspects(), 1);
        assert_eq!(m.compare(&[a, b], &listing, false), vec![2]);
        assert_eq!(m.suspects(), 0);
    }

    #[test]
    fn a_socket_found_again_is_no_longer_suspected() {
        let (a, b) = (sock(1, 7, 40000), sock(2, 7, 40001));
        let mut m = MissingSockets::default();
        m.compare(&[a, b], &HashMap::from([(7, live(&[a]))]), false);
        assert!(m.compare(&[a, b], &HashMap::from([(7, live(&[a, b]))]), false).is_empty());
        assert!(m.compare(&[a, b], &HashMap::from([(7, live(&[a]))]), false).is_empty());
    }

    #[test]
    fn the_final_listing_needs_no_confirmation() {
        let (a, b) = (sock(1, 7, 40000), sock(2, 8, 40001));
        let mut m = MissingSockets::default();
        let listing = HashMap::from([(7, live(&[])), (8, live(&[b]))]);
        assert_eq!(m.compare(&[a, b], &listing, true), vec![1]);
    }

    #[test]
    fn a_gone_namespace_closes_its_connections_and_an_unknown_one_nothing() {
        let (a, b, c) = (sock(1, 7, 40000), sock(2, 8, 40001), sock(3, 9, 40002));
        let mut m = MissingSockets::default();
        let listing = HashMap::from([(7, NetnsSockets::Gone), (8, NetnsSockets::Unknown)]);
        m.compare(&[a, b, c], &listing, false);
        let mut gone = m.compare(&[a, b, c], &listing, false);
        gone.sort();
        assert_eq!(gone, vec![1], "an unlisted namespace concludes nothing either");
    }

    #[test]
    fn endpoints_taken_by_a_newer_connection_close_the_older_at_once() {
        let (old, new) = (sock(1, 7, 40000), sock(5, 7, 40000));
        let other_ns = sock(3, 8, 40000);
        let mut m = MissingSockets::default();
        let listing = HashMap::from([(7, live(&[new])), (8, live(&[other_ns]))]);
        assert_eq!(m.compare(&[old, new, other_ns], &listing, false), vec![1]);
    }
}

//! Address → name, per network namespace, from observed DNS answers; each
//! entry lives for its TTL. Bounded: when full, the entry closest to
//! expiring goes first.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

type Key = (u32, IpAddr);

/// The table.
#[derive(Debug)]
pub struct HostTable {
    entries: HashMap<Key, (Arc<str>, u64)>,
    by_expiry: BTreeSet<(u64, Key)>,
    capacity: usize,
}

/// A TTL of 0 still names the connection the application opens right after.
const MIN_TTL_NS: u64 = 5_000_000_000;

impl HostTable {
    /// A table of at most `capacity` addresses.
    pub fn new(capacity: usize) -> Self {
        Self { entries: HashMap::new(), by_expiry: BTreeSet::new(), capacity: capacity.max(1) }
    }

    /// `ip` in namespace `netns` stands for `name` for `ttl` seconds from `now_ns`.
    pub fn insert(&mut self, netns: u32, ip: IpAddr, name: &str, ttl: u32, now_ns: u64) {
        let key = (netns, ip);
        let expires = now_ns + (u64::from(ttl) * 1_000_000_000).max(MIN_TTL_NS);
        if let Some((_, old)) = self.entries.remove(&key) {
            self.by_expiry.remove(&(old, key));
        }
        self.expire(now_ns);
        while self.entries.len() >= self.capacity {
            let Some((_, k)) = self.by_expiry.pop_first() else { break };
            self.entries.remove(&k);
        }
        self.entries.insert(key, (Arc::from(name), expires));
        self.by_expiry.insert((expires, key));
    }

    /// The name `ip` stands for in `netns` at `now_ns`, if its answer is still valid.
    pub fn lookup(&self, netns: u32, ip: IpAddr, now_ns: u64) -> Option<Arc<str>> {
        self.entries.get(&(netns, ip)).filter(|(_, exp)| *exp > now_ns).map(|(n, _)| n.clone())
    }

    /// Addresses held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now_ns: u64) {
        while let Some(&(exp, k)) = self.by_expiry.first() {
            if exp > now_ns {
                break;
            }
            self.by_expiry.pop_first();
            self.entries.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn names_per_namespace_until_the_ttl_ends() {
        let mut t = HostTable::new(10);
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        t.insert(1, ip, "api.example.test", 30, 0);
        t.insert(2, ip, "other.example.test", 30, 0);
        assert_eq!(t.lookup(1, ip, 29 * S).as_deref(), Some("api.example.test"));
        assert_eq!(t.lookup(2, ip, 29 * S).as_deref(), Some("other.example.test"));
        assert_eq!(t.lookup(3, ip, 0), None);
        assert_eq!(t.lookup(1, ip, 31 * S), None, "expired");
        // A TTL of 0 still covers the connection made right after.
        t.insert(1, ip, "zero.test", 0, 100 * S);
        assert_eq!(t.lookup(1, ip, 100 * S + 1).as_deref(), Some("zero.test"));
    }

    #[test]
    fn full_tables_drop_what_expires_first() {
        let mut t = HostTable::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        t.insert(1, a, "a", 100, 0);
        t.insert(1, b, "b", 10, 0);
        t.insert(1, c, "c", 50, 0);
        assert_eq!(t.len(), 2);
        assert!(t.lookup(1, b, 1).is_none());
        assert!(t.lookup(1, a, 1).is_some() && t.lookup(1, c, 1).is_some());
        // Re-inserting a key replaces it without growing.
        t.insert(1, a, "a2", 100, 1);
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(1, a, 2).as_deref(), Some("a2"));
    }
}

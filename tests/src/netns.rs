//! Network namespaces the test creates (veth pairs), removed on drop.

use std::path::Path;
use std::process::Command;

/// A command, optionally run inside network namespace `ns`.
pub fn in_ns(ns: Option<&str>, program: &Path) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("the `ip` command (iproute2) is required");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Two network namespaces joined by a veth pair, with IPv4 and IPv6
/// addresses; removed on drop.
pub struct NetNsPair {
    /// First namespace.
    pub a: String,
    /// Second namespace.
    pub b: String,
    /// IPv4 address in `a`.
    pub a4: String,
    /// IPv4 address in `b`.
    pub b4: String,
    /// IPv6 address in `a`.
    pub a6: String,
    /// IPv6 address in `b`.
    pub b6: String,
}

impl NetNsPair {
    /// Creates the pair; `n` (0..=255) keeps concurrent tests' subnets apart.
    pub fn new(n: u8) -> NetNsPair {
        let tag = format!("nt{}x{n}", std::process::id());
        let pair = NetNsPair {
            a: format!("{tag}a"),
            b: format!("{tag}b"),
            a4: format!("10.213.{n}.1"),
            b4: format!("10.213.{n}.2"),
            a6: format!("fd00:213:{n}::1"),
            b6: format!("fd00:213:{n}::2"),
        };
        let (va, vb) = (format!("v{tag}a"), format!("v{tag}b"));
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &pair.a]);
        ip(&["link", "set", &vb, "netns", &pair.b]);
        for (ns, dev, v4, v6) in [(&pair.a, &va, &pair.a4, &pair.a6), (&pair.b, &vb, &pair.b4, &pair.b6)] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ip(&["-n", ns, "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }
}

impl Drop for NetNsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

//! What a test reads of a running sensor from the outside, by its host pid:
//! its resident memory and the entries of its own BPF maps (other sensors
//! on the host have maps of the same names).

use serde_json::Value;
use std::process::Command;

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))
        .unwrap_or_else(|| panic!("{field} in {status}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

fn bpftool_json(args: &[&str]) -> Value {
    let out = Command::new("bpftool").arg("-j").args(args).output().expect("bpftool runs");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// The entries of the map called `name` that process `pid` holds, as
/// `bpftool -j map dump` prints them (its map fds' fdinfo name the map id).
fn map_dump(pid: u32, name: &str) -> Vec<Value> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().display()))
            .unwrap_or_default();
        if let Some(id) = info.lines().find_map(|l| l.strip_prefix("map_id:")) {
            ids.push(id.trim().to_string());
        }
    }
    for id in ids {
        if bpftool_json(&["map", "show", "id", &id])["name"] == name {
            let dump = bpftool_json(&["map", "dump", "id", &id]);
            return dump.as_array().unwrap_or_else(|| panic!("bpftool map dump id {id}: {dump}")).clone();
        }
    }
    panic!("process {pid} holds no {name} map");
}

/// How many entries the map called `name` of process `pid` has.
pub fn map_entries(pid: u32, name: &str) -> usize {
    map_dump(pid, name).len()
}

/// The keys of `pid`'s map `name`, whose keys are one u64 (little-endian
/// bytes, or the number itself where bpftool formats them by BTF).
pub fn map_u64_keys(pid: u32, name: &str) -> std::collections::HashSet<u64> {
    let key = |e: &Value| -> u64 {
        if let Some(k) = e["formatted"]["key"].as_u64() {
            return k;
        }
        let bytes: Vec<u8> = e["key"]
            .as_array()
            .unwrap_or_else(|| panic!("a {name} entry without a key: {e}"))
            .iter()
            .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
            .collect();
        u64::from_le_bytes(bytes.try_into().unwrap_or_else(|b| panic!("{name} key {b:?} is not 8 bytes")))
    };
    map_dump(pid, name).iter().map(key).collect()
}

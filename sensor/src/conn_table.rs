//! The kernel's connection table: its two parts' sizes, and the table
//! under pressure. `conns` (a hash that allocates entries as sockets come)
//! holds most; once it is full, new sockets go to `conns_spill`, a small
//! LRU (preallocated, as the kernel requires of LRUs) that evicts.
//! While the table holds so many entries that the LRU may evict live ones, or
//! evicted entries user space has not found yet, the kernel reports the
//! closes of sockets it has no entry for, so that an evicted connection's
//! close is still its close. It counts entries itself (no lag); user space
//! gives it the threshold and the evictions it found (`conn_pressure`).
//! Below the threshold nothing is reported: each report costs a ring record,
//! for every TCP socket of the host that closes.

use anyhow::{anyhow, Result};
use aya::maps::{Array, MapData};
use tracing::info;

/// Slots of `conn_pressure` (maps.bpf.h).
const NT_PRESSURE_AT: u32 = 0;
const NT_PRESSURE_EVICTIONS_SEEN: u32 = 1;

/// Free nodes each CPU may hold back from a BPF LRU map (the kernel's
/// LOCAL_FREE_TARGET): the LRU can evict before it is full by up to this
/// many per CPU, plus one batch of the global list.
const LRU_PER_CPU_FREE: usize = 128;

/// The sizes of `conns` and `conns_spill` for `max_connections` sockets in
/// all: a sixteenth spills (1 024 to 16 384 entries, at most half).
pub fn table_sizes(max_connections: u32) -> (u32, u32) {
    let spill = (max_connections / 16).clamp(1024, 16_384).min(max_connections / 2).max(1);
    (max_connections.saturating_sub(spill).max(1), spill)
}

/// Tracked connections from which the LRU may evict: half the table, or
/// less on many CPUs (twice what the CPUs may hold back).
pub fn pressure_threshold(max_connections: u32, cpus: usize) -> usize {
    let max = max_connections as usize;
    let held_back = 2 * (cpus + 1) * LRU_PER_CPU_FREE;
    (max / 2).min(max.saturating_sub(held_back))
}

/// The `conn_pressure` map: the threshold, and the evictions user space found.
pub struct ConnPressure {
    map: Array<MapData, u64>,
    seen: u64,
}

impl ConnPressure {
    /// Wraps the object's `conn_pressure` map for a table of
    /// `max_connections` on `cpus` CPUs and writes the threshold.
    pub fn new(mut map: Array<MapData, u64>, max_connections: u32, cpus: usize) -> Result<Self> {
        let threshold = pressure_threshold(max_connections, cpus);
        map.set(NT_PRESSURE_AT, &(threshold as u64), 0).map_err(|e| anyhow!("setting conn_pressure: {e}"))?;
        info!(max_connections, untracked_closes_from = threshold, "kernel connection table");
        Ok(Self { map, seen: 0 })
    }

    /// Tells the kernel how many evicted entries user space has found in all.
    pub fn update(&mut self, evictions_seen: u64) -> Result<()> {
        if evictions_seen != self.seen {
            self.map
                .set(NT_PRESSURE_EVICTIONS_SEEN, &evictions_seen, 0)
                .map_err(|e| anyhow!("setting conn_pressure: {e}"))?;
            self.seen = evictions_seen;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_tables_hold_max_connections_together() {
        assert_eq!(table_sizes(262_144), (245_760, 16_384));
        assert_eq!(table_sizes(4 << 20), ((4 << 20) - 16_384, 16_384));
        assert_eq!(table_sizes(6_144), (5_120, 1_024));
        assert_eq!(table_sizes(1_000), (500, 500));
        assert_eq!(table_sizes(1), (1, 1));
        for max in [2, 3, 100, 2_047, 16_385, 262_143, 1 << 20] {
            let (main, spill) = table_sizes(max);
            assert_eq!(main + spill, max, "{max}");
            assert!(main >= spill && spill >= 1, "{max}: {main} + {spill}");
        }
    }

    #[test]
    fn threshold_leaves_room_for_what_cpus_hold_back() {
        assert_eq!(pressure_threshold(262_144, 2), 131_072);
        assert_eq!(pressure_threshold(16_384, 64), 0);
        assert_eq!(pressure_threshold(65_536, 64), 32_768);
        assert_eq!(pressure_threshold(20_000, 64), 20_000 - 2 * 65 * 128);
        assert_eq!(pressure_threshold(6_144, 2), 3_072);
    }
}

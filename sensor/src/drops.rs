//! Turns the kernel's per-CPU loss counters into `drop` records: every loss
//! is said, as the difference since the last look.

use crate::bpf::events::{nt_drop_counter, nt_drop_reason};
use aya::maps::{MapData, PerCpuArray};
use nettap_core::record::DropRecord;

/// The record's `reason` for a kernel drop slot.
pub fn reason_name(slot: u32) -> &'static str {
    match slot {
        nt_drop_reason::NT_DROP_RINGBUF_FULL_DATA => "ringbuf_full",
        nt_drop_reason::NT_DROP_RINGBUF_FULL_EVENT => "ringbuf_full_event",
        nt_drop_reason::NT_DROP_INFLIGHT_FULL => "inflight_table_full",
        nt_drop_reason::NT_DROP_READ_FAULT => "user_memory_unreadable",
        nt_drop_reason::NT_DROP_TLS_NO_SOCKET => "tls_socket_unknown",
        nt_drop_reason::NT_DROP_GO_CONN_NOT_TCP => "go_conn_not_tcp",
        nt_drop_reason::NT_DROP_CLOSED_IN_CALL => "conn_closed_in_call",
        nt_drop_reason::NT_DROP_TLS_UNBOUND => "tls_unbound",
        _ => "unknown",
    }
}

/// Reads the `drops` map and remembers what was already reported.
pub struct DropCounters {
    map: PerCpuArray<MapData, nt_drop_counter>,
    seen: Vec<nt_drop_counter>,
}

impl DropCounters {
    /// Wraps the object's `drops` map.
    pub fn new(map: PerCpuArray<MapData, nt_drop_counter>) -> Self {
        let slots = nt_drop_reason::NT_DROP_REASON_MAX as usize;
        Self { map, seen: vec![nt_drop_counter::default(); slots] }
    }

    /// New losses since the last call, one per reason that has any.
    pub fn poll(&mut self) -> Vec<DropRecord> {
        let mut out = Vec::new();
        for slot in 0..self.seen.len() as u32 {
            let Ok(per_cpu) = self.map.get(&slot, 0) else {
                continue;
            };
            let total = per_cpu.iter().fold(nt_drop_counter::default(), |a, c| nt_drop_counter {
                count: a.count + c.count,
                bytes: a.bytes + c.bytes,
            });
            let seen = &mut self.seen[slot as usize];
            let delta = DropRecord {
                count: total.count.saturating_sub(seen.count),
                bytes: total.bytes.saturating_sub(seen.bytes),
                reason: reason_name(slot),
            };
            *seen = total;
            if delta.count > 0 {
                out.push(delta);
            }
        }
        out
    }
}

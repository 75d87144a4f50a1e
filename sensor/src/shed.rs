//! What an output sheds (an exporter's full queue) becomes `drop` records
//! like the kernel's losses: the output counts from its side, the capture
//! loop turns the counts into records once a second.

use nettap_core::record::DropRecord;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Records and bytes shed for one reason, shared by an output and the capture loop.
#[derive(Clone, Debug)]
pub struct Shed {
    reason: &'static str,
    counts: Arc<[AtomicU64; 2]>,
}

impl Shed {
    /// Counts under `reason` (the `drop` record's).
    pub fn new(reason: &'static str) -> Self {
        Self { reason, counts: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]) }
    }

    /// `count` records of `bytes` bytes were shed.
    pub fn add(&self, count: u64, bytes: u64) {
        self.counts[0].fetch_add(count, Ordering::Relaxed);
        self.counts[1].fetch_add(bytes, Ordering::Relaxed);
    }

    /// What was shed since the last call, if anything.
    pub fn take(&self) -> Option<DropRecord> {
        let count = self.counts[0].swap(0, Ordering::Relaxed);
        let bytes = self.counts[1].swap(0, Ordering::Relaxed);
        (count > 0).then_some(DropRecord { count, bytes, reason: self.reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_loss_is_reported_once() {
        let s = Shed::new("export_queue_full");
        assert!(s.take().is_none());
        s.clone().add(2, 10);
        s.add(1, 5);
        let d = s.take().unwrap();
        assert_eq!((d.count, d.bytes, d.reason), (3, 15, "export_queue_full"));
        assert!(s.take().is_none());
    }
}

//! The ring buffer's side of the metrics: how full it is now, how full each
//! drain found it, and how many bytes were read.

use crate::ring_meter::RingMeter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

/// Fill ratios the drains' histogram counts: near empty is the normal case;
/// the upper buckets say how close the ring came to `ringbuf_full` drops.
const FILL_BUCKETS: [f64; 8] = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0];

/// Ring buffer metrics; all zero until the capture loop hands its meter over.
pub struct RingMetrics {
    meter: OnceLock<RingMeter>,
    size: Gauge,
    fill: Gauge,
    fill_at_drain: Histogram,
    read_bytes: Counter,
}

impl Default for RingMetrics {
    fn default() -> Self {
        RingMetrics {
            meter: OnceLock::new(),
            size: Gauge::default(),
            fill: Gauge::default(),
            fill_at_drain: Histogram::new(FILL_BUCKETS),
            read_bytes: Counter::default(),
        }
    }
}

impl RingMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register("ring_buffer_size_bytes", "Data size of the BPF ring buffer", self.size.clone());
        registry.register(
            "ring_buffer_fill_bytes",
            "Bytes waiting in the ring buffer when this page was served (producer minus consumer position, record headers included)",
            self.fill.clone(),
        );
        registry.register(
            "ring_buffer_drain_fill_ratio",
            "Fill of the ring buffer (0 to 1 of its size) when each drain began: what the reader found waiting",
            self.fill_at_drain.clone(),
        );
        registry.register(
            "ring_buffer_read_bytes",
            "Bytes the reader took from the ring buffer (record headers and padding included)",
            self.read_bytes.clone(),
        );
    }

    /// The capture loop's ring: from now on the ring metrics are its.
    pub fn watch(&self, meter: RingMeter) {
        self.size.set(meter.size() as i64);
        let _ = self.meter.set(meter);
    }

    /// A drain begins: records the fill it finds; returns the consumer
    /// position to hand to `drained`.
    pub fn drain_started(&self) -> u64 {
        let Some(m) = self.meter.get() else { return 0 };
        self.fill_at_drain.observe(m.fill() as f64 / m.size().max(1) as f64);
        m.consumed()
    }

    /// The drain that began at consumer position `start` ended; returns the
    /// bytes it read (0 when the ring is not metered).
    pub fn drained(&self, start: u64) -> u64 {
        let Some(m) = self.meter.get() else { return 0 };
        let read = m.consumed().saturating_sub(start);
        self.read_bytes.inc_by(read);
        read
    }

    /// Brings the fill gauge up to now (before the page is encoded).
    pub(super) fn refresh(&self) {
        if let Some(m) = self.meter.get() {
            self.fill.set(m.fill() as i64);
        }
    }
}

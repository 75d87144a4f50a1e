//! The exporters' side of the metrics: how full each queue is, what was
//! exported and what failed, per exporter (`otlp`, …) and signal.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExporterLabels {
    exporter: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    exporter: &'static str,
    signal: &'static str,
}

/// Exporter metrics.
#[derive(Default)]
pub struct ExportMetrics {
    queue_records: Family<ExporterLabels, Gauge>,
    queue_bytes: Family<ExporterLabels, Gauge>,
    exported: Family<SignalLabels, Counter>,
    failures: Family<SignalLabels, Counter>,
}

impl ExportMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "export_queue_records",
            "Records waiting in an exporter's queue",
            self.queue_records.clone(),
        );
        registry.register(
            "export_queue_bytes",
            "Memory held by an exporter's queue (bounded; beyond it records are shed as export_queue_full drops)",
            self.queue_bytes.clone(),
        );
        registry.register(
            "exported",
            "Items the collector accepted, by exporter and signal (spans, logs)",
            self.exported.clone(),
        );
        registry.register(
            "export_failures",
            "Export requests that failed (each retry counts), by exporter and signal",
            self.failures.clone(),
        );
    }

    /// The queue holds `records` taking `bytes` now.
    pub fn queue(&self, exporter: &'static str, records: usize, bytes: usize) {
        let l = ExporterLabels { exporter };
        self.queue_records.get_or_create(&l).set(records as i64);
        self.queue_bytes.get_or_create(&l).set(bytes as i64);
    }

    /// `n` items of `signal` accepted.
    pub fn exported(&self, exporter: &'static str, signal: &'static str, n: u64) {
        self.exported.get_or_create(&SignalLabels { exporter, signal }).inc_by(n);
    }

    /// One failed request.
    pub fn failed(&self, exporter: &'static str, signal: &'static str) {
        self.failures.get_or_create(&SignalLabels { exporter, signal }).inc();
    }
}

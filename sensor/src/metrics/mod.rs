//! Prometheus metrics and health (`--metrics ADDR`, CONTRACT.md): whether
//! probes attach and why not, what is captured and lost, and — per pod —
//! whether its TLS plaintext is being captured. Counters live in one
//! process-wide registry (probes report from deep inside attach code); the
//! endpoint and the record counter exist only with `--metrics`.

mod export;
mod kind_bytes;
mod records;
mod ring;
mod server;

pub use export::ExportMetrics;
pub use records::RecordCounter;
pub use ring::RingMetrics;
pub use server::serve;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::LazyLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttachedLabels {
    probe_type: String,
    library: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailedLabels {
    probe_type: String,
    library: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabels {
    namespace: String,
    pod: String,
    source: &'static str,
}

/// The sensor's metrics.
pub struct Metrics {
    registry: Registry,
    probes_attached: Family<AttachedLabels, Counter>,
    probe_failures: Family<FailedLabels, Counter>,
    records: Family<KindLabels, Counter>,
    record_bytes: Family<KindLabels, Counter>,
    captured_bytes: Family<SourceLabels, Counter>,
    drops: Family<ReasonLabels, Counter>,
    dropped_bytes: Family<ReasonLabels, Counter>,
    pod_tls_bytes: Family<PodLabels, Counter>,
    pods_not_labelled: Counter,
    api_subscribers: Gauge,
    /// Exporters' queues and results.
    pub export: ExportMetrics,
    /// The BPF ring buffer's fill and reads.
    pub ring: RingMetrics,
    ready: AtomicBool,
    /// Boot-time ns of the capture loop's latest turn (0: not started).
    heartbeat: AtomicU64,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("nettap");
        let m = Metrics {
            probes_attached: Family::default(),
            probe_failures: Family::default(),
            records: Family::default(),
            record_bytes: Family::default(),
            captured_bytes: Family::default(),
            drops: Family::default(),
            dropped_bytes: Family::default(),
            pod_tls_bytes: Family::default(),
            pods_not_labelled: Counter::default(),
            api_subscribers: Gauge::default(),
            export: ExportMetrics::default(),
            ring: RingMetrics::default(),
            ready: AtomicBool::new(false),
            heartbeat: AtomicU64::new(0),
            registry: Registry::default(),
        };
        // The registry holds handles to the same counters.
        registry.register(
            "probes_attached",
            "Probes attached, by probe type, what was probed (kernel, or the library or program file name) and its version",
            m.probes_attached.clone(),
        );
        registry.register(
            "probe_failures",
            "Probe attachments that failed, by probe type, what was probed and the reason",
            m.probe_failures.clone(),
        );
        registry.register(
            "records",
            "Records written, by kind (as the JSON Lines output has them)",
            m.records.clone(),
        );
        registry.register(
            "record_bytes",
            "Payload bytes captured, by the kind of record they became (http, pgsql, …; data: a connection closed with no exchange); a TLS connection's plaintext, not its ciphertext",
            m.record_bytes.clone(),
        );
        registry.register(
            "captured_bytes",
            "Payload bytes captured, by source (kernel: the socket's bytes, ciphertext on TLS connections; the others: TLS plaintext)",
            m.captured_bytes.clone(),
        );
        registry.register(
            "dropped",
            "Events the sensor could not keep, by reason (the drop records' counts)",
            m.drops.clone(),
        );
        registry.register(
            "dropped_bytes",
            "Payload bytes the sensor could not keep, by reason",
            m.dropped_bytes.clone(),
        );
        registry.register(
            "pod_tls_bytes",
            "Bytes of TLS connections per pod, by source: kernel is the ciphertext on the wire, any other source the plaintext captured from the TLS library (kernel growing while no other source does: decryption is not working for that pod)",
            m.pod_tls_bytes.clone(),
        );
        registry.register(
            "pod_series_over_limit_bytes",
            "TLS bytes not counted per pod because the bound on pod series was reached",
            m.pods_not_labelled.clone(),
        );
        registry.register(
            "api_subscribers",
            "Subscribers of the streaming API now",
            m.api_subscribers.clone(),
        );
        m.export.register(&mut registry);
        m.ring.register(&mut registry);
        Metrics { registry, ..m }
    }

    /// A probe attached (`library`: `kernel`, or a file path whose name is kept).
    pub fn probe_attached(&self, probe_type: &str, library: &str, version: Option<&str>) {
        let labels = AttachedLabels {
            probe_type: probe_type.to_string(),
            library: file_name(library),
            version: version.unwrap_or("").to_string(),
        };
        self.probes_attached.get_or_create(&labels).inc();
    }

    /// A probe failed to attach; `reason` is a short class, not a message.
    pub fn probe_failed(&self, probe_type: &str, library: &str, reason: &str) {
        let labels = FailedLabels {
            probe_type: probe_type.to_string(),
            library: file_name(library),
            reason: reason.to_string(),
        };
        self.probe_failures.get_or_create(&labels).inc();
    }

    /// Every start-up probe is attached: `/readyz` answers 200 from now on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// The capture loop turned at boot-time `now_ns` (`/healthz`).
    pub fn heartbeat(&self, now_ns: u64) {
        self.heartbeat.store(now_ns, Ordering::Relaxed);
    }

    /// One more (or one fewer) API subscriber.
    pub fn api_subscriber(&self, joined: bool) {
        if joined {
            self.api_subscribers.inc();
        } else {
            self.api_subscribers.dec();
        }
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Boot-time ns of the capture loop's latest turn (0: not yet).
    fn last_turn(&self) -> u64 {
        self.heartbeat.load(Ordering::Relaxed)
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        self.ring.refresh();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The file's name: label values stay few (one per library or program file,
/// not per process). `/proc/PID/exe` and `/proc/self/fd/N` (how running
/// programs and deleted libraries are probed) are named by what they link to.
fn file_name(target: &str) -> String {
    let resolved = target
        .starts_with("/proc/")
        .then(|| std::fs::read_link(target).ok())
        .flatten()
        .map(|p| p.to_string_lossy().trim_end_matches(" (deleted)").to_string());
    let path = resolved.as_deref().unwrap_or(target);
    path.rsplit('/').next().unwrap_or(path).to_string()
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

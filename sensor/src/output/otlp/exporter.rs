//! The exporter thread: takes batches from the queue, groups them by
//! resource into one request per signal, sends, and retries what the
//! collector could not take yet with growing pauses. While it waits the
//! queue fills and the sink sheds: memory stays within the queue's bound.

use super::queue::{Batch, Queue};
use super::transport::{ExportError, SetupError, Transport};
use super::{Item, OtlpConfig, EXPORTER};
use crate::shed::Shed;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long a partial batch waits for more records.
const LINGER: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The semantic conventions the attributes follow.
const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.30.0";

/// Starts the thread (its own single-threaded runtime).
pub(super) fn spawn(
    config: OtlpConfig,
    queue: Arc<Queue<Item>>,
    failed: Shed,
) -> Result<std::thread::JoinHandle<()>, SetupError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SetupError::Invalid(e.to_string()))?;
    let (traces, logs) = {
        let _in_runtime = rt.enter();
        (Transport::new(&config.traces)?, Transport::new(&config.logs)?)
    };
    info!(
        traces = %config.traces.endpoint,
        traces_protocol = config.traces.protocol.as_str(),
        logs = %config.logs.endpoint,
        logs_protocol = config.logs.protocol.as_str(),
        queue_bytes = config.queue_bytes,
        "OTLP export on"
    );
    let timeout = config.traces.timeout.max(config.logs.timeout);
    let mut e = Exporter { traces, logs, queue, failed, timeout, stop_by: None, failing: false };
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || rt.block_on(e.run()))
        .map_err(|e| SetupError::Invalid(e.to_string()))
}

struct Exporter {
    /// Spans' connection.
    traces: Transport,
    /// Log records' connection.
    logs: Transport,
    queue: Arc<Queue<Item>>,
    /// Batches the collector refused, or still failing at shutdown (`export_failed`).
    failed: Shed,
    /// The longer of the two signals' timeouts: how long retries go on at shutdown.
    timeout: Duration,
    /// Set once the queue is closed: retries end then.
    stop_by: Option<Instant>,
    /// The last request failed (logged once per outage, not per retry).
    failing: bool,
}

/// Which signal a request carries.
#[derive(Clone, Copy)]
enum Signal {
    Spans,
    Logs,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Spans => "spans",
            Signal::Logs => "logs",
        }
    }
}

impl Exporter {
    async fn run(&mut self) {
        loop {
            let Batch { items, closed, left } = self.queue.pop_batch(LINGER);
            // (Blocking here is fine: the thread and its runtime are the exporter's.)
            crate::metrics::global().export.queue(EXPORTER, left.0, left.1);
            if closed && self.stop_by.is_none() {
                self.stop_by = Some(Instant::now() + self.timeout);
            }
            if items.is_empty() {
                if closed {
                    return;
                }
                continue;
            }
            let n = items.len() as u64;
            let bytes: u64 = items.iter().map(|i| i.bytes as u64).sum();
            if self.stop_by.is_some_and(|t| Instant::now() >= t) {
                // Stopping and out of time: no more attempts (each could
                // wait a whole timeout on an unreachable collector).
                warn!(records = n, "OTLP export given up at shutdown");
                self.failed.add(n, bytes);
                continue;
            }
            let (traces, logs) = requests(items);
            let spans_ok = self.send(Signal::Spans, n, |t| Box::pin(t.traces(traces.clone()))).await;
            let logs_ok = self.send(Signal::Logs, n, |t| Box::pin(t.logs(logs.clone()))).await;
            if !(spans_ok && logs_ok) {
                self.failed.add(n, bytes);
            }
        }
    }

    /// Sends until the collector takes it, refuses it for good, or the
    /// sensor is stopping and the timeout has passed. Returns whether it was taken.
    async fn send<F>(&mut self, signal: Signal, n: u64, mut attempt: F) -> bool
    where
        F: for<'a> FnMut(
            &'a mut Transport,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<i64, ExportError>> + Send + 'a>,
        >,
    {
        let m = &crate::metrics::global().export;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let transport = match signal {
                Signal::Spans => &mut self.traces,
                Signal::Logs => &mut self.logs,
            };
            match attempt(transport).await {
                Ok(rejected) => {
                    if self.failing {
                        info!(signal = signal.name(), "OTLP export resumed");
                        self.failing = false;
                    }
                    if rejected > 0 {
                        warn!(
                            signal = signal.name(),
                            rejected, "the OTLP collector rejected part of a batch"
                        );
                    }
                    m.exported(EXPORTER, signal.name(), n.saturating_sub(rejected.max(0) as u64));
                    return true;
                }
                Err(e) => {
                    m.failed(EXPORTER, signal.name());
                    if !self.failing {
                        warn!(signal = signal.name(), error = %e, retrying = e.retryable, "OTLP export failed");
                        self.failing = e.retryable;
                    }
                    let stopping = self.stop_by.is_some_and(|t| Instant::now() + backoff > t);
                    if !e.retryable || stopping {
                        if stopping {
                            warn!(signal = signal.name(), records = n, "OTLP export given up at shutdown");
                        }
                        return false;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// One request per signal, the items grouped by resource.
fn requests(items: Vec<Item>) -> (ExportTraceServiceRequest, ExportLogsServiceRequest) {
    let mut groups: Vec<(Arc<Vec<KeyValue>>, Vec<_>, Vec<_>)> = Vec::new();
    let mut index: HashMap<*const Vec<KeyValue>, usize> = HashMap::new();
    for item in items {
        let i = *index.entry(Arc::as_ptr(&item.resource)).or_insert_with(|| {
            groups.push((item.resource.clone(), Vec::new(), Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(item.converted.span);
        groups[i].2.push(item.converted.log);
    }
    let scope = || {
        Some(InstrumentationScope {
            name: "nettap".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    };
    let resource = |attrs: &Vec<KeyValue>| Some(Resource { attributes: attrs.clone(), ..Default::default() });
    let mut traces = ExportTraceServiceRequest::default();
    let mut logs = ExportLogsServiceRequest::default();
    for (attrs, spans, records) in groups {
        traces.resource_spans.push(ResourceSpans {
            resource: resource(&attrs),
            scope_spans: vec![ScopeSpans { scope: scope(), spans, schema_url: SCHEMA_URL.into() }],
            schema_url: SCHEMA_URL.into(),
        });
        logs.resource_logs.push(ResourceLogs {
            resource: resource(&attrs),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: records,
                schema_url: SCHEMA_URL.into(),
            }],
            schema_url: SCHEMA_URL.into(),
        });
    }
    (traces, logs)
}

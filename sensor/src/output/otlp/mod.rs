//! OTLP export (`--otlp-endpoint`, `OTEL_EXPORTER_OTLP_*`): a span and a
//! log record per exchange. The sink only converts and queues (a bounded
//! queue; what does not fit is shed and counted as `export_queue_full`
//! drops); a thread of its own batches, sends and retries, so a slow or
//! absent collector never holds the capture loop.

pub mod config;
mod convert;
mod exporter;
mod mongodb;
mod queue;
mod transport;

pub use config::{OtlpConfig, Protocol};
pub use transport::SetupError;

use crate::shed::Shed;
use nettap_core::record::{Body, Record};
use nettap_core::sink::Sink;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use queue::{Queue, Weighed};
use std::collections::HashMap;
use std::io;
use std::sync::Arc;

/// The exporter's name in metrics.
const EXPORTER: &str = "otlp";
/// Spans (and log records) per export request (the SDKs' default batch).
const BATCH: usize = 512;
/// Resources remembered (one per process seen); forgotten all at once beyond.
const MAX_RESOURCES: usize = 4096;

/// One exchange waiting for export.
struct Item {
    resource: Arc<Vec<KeyValue>>,
    converted: convert::Converted,
    bytes: usize,
}

impl Weighed for Item {
    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The sink of `--otlp-endpoint`.
pub struct OtlpSink {
    queue: Arc<Queue<Item>>,
    thread: Option<std::thread::JoinHandle<()>>,
    node: String,
    /// (pid, process name, pod uid) → the resource of its spans.
    resources: HashMap<(u32, String, String), Arc<Vec<KeyValue>>>,
    /// Records that did not fit the queue (`export_queue_full`).
    shed: Shed,
    /// Records the collector refused or that were still failing at the end (`export_failed`).
    failed: Shed,
}

impl OtlpSink {
    /// Starts the exporter thread. `node` names the host in resources.
    pub fn start(config: OtlpConfig, node: String) -> Result<Self, SetupError> {
        let queue = Arc::new(Queue::new(config.queue_bytes, BATCH));
        let failed = Shed::new("export_failed");
        let thread = exporter::spawn(config, queue.clone(), failed.clone())?;
        let shed = Shed::new("export_queue_full");
        Ok(Self { queue, thread: Some(thread), node, resources: HashMap::new(), shed, failed })
    }

    /// What this sink sheds, for the capture loop to report as `drop` records.
    pub fn sheds(&self) -> Vec<Shed> {
        vec![self.shed.clone(), self.failed.clone()]
    }

    fn resource(&mut self, r: &Record<'_>) -> Arc<Vec<KeyValue>> {
        let pod = r.conn.and_then(|c| c.k8s);
        let key =
            (r.origin.pid, r.origin.comm.to_string(), pod.map(|p| p.meta.uid.clone()).unwrap_or_default());
        if let Some(res) = self.resources.get(&key) {
            return res.clone();
        }
        if self.resources.len() >= MAX_RESOURCES {
            self.resources.clear();
        }
        let res = Arc::new(convert::resource(r.origin.pid, r.origin.comm, pod, &self.node));
        self.resources.insert(key, res.clone());
        res
    }
}

impl Sink for OtlpSink {
    fn record(&mut self, r: &Record<'_>) -> io::Result<()> {
        if !matches!(r.body, Body::Http(_) | Body::Db(_)) || r.conn.is_none() {
            return Ok(());
        }
        let jsonl = String::from_utf8(nettap_core::record::record_to_vec(r).map_err(io::Error::other)?)
            .map_err(io::Error::other)?;
        let Some(converted) = convert::exchange(r, jsonl) else { return Ok(()) };
        let resource = self.resource(r);
        // Heap estimate: the encoded sizes plus the in-memory overhead of
        // each attribute (key, value enum, vector slot).
        let attrs = converted.span.attributes.len() + converted.log.attributes.len();
        let bytes = converted.span.encoded_len() + converted.log.encoded_len() + 96 * attrs + 256;
        match self.queue.push(Item { resource, converted, bytes }) {
            Ok((records, bytes)) => crate::metrics::global().export.queue(EXPORTER, records, bytes),
            Err(item) => self.shed.add(1, item.bytes as u64),
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.queue.close();
        if let Some(t) = self.thread.take() {
            // The thread gives up retrying after the export timeout.
            let _ = t.join();
        }
        Ok(())
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.queue.close();
    }
}

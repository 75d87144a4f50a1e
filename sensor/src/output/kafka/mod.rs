//! The Kafka sink (`--kafka-brokers`, `--kafka-topic`): every record as its
//! JSON Lines bytes (without the newline), keyed by connection so one
//! connection's records stay in one partition, in order.
//!
//! librdkafka does the sending, in its own threads: an idempotent producer
//! (acks=all; a record retried across a broker restart is written once),
//! reconnecting on its own. Its buffer is the bound (`queue.buffering.max.kbytes`):
//! a send into a full buffer returns at once, and what it refuses is shed
//! as `export_queue_full`; what the broker refuses or what outlives the
//! delivery timeout is `export_failed`. The capture loop never waits.

pub mod config;

pub use config::{KafkaArgs, KafkaConfig};

use crate::shed::Shed;
use nettap_core::record::{in_jsonl, Record};
use nettap_core::sink::Sink;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// The sink's name in metrics (`exporter` label).
const EXPORTER: &str = "kafka";
/// The metrics' `signal` label: Kafka carries records.
const SIGNAL: &str = "records";
/// How long the end of the capture waits for the broker to take what is buffered.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

/// The librdkafka producer could not be made.
#[derive(Debug, thiserror::Error)]
#[error("the Kafka producer: {0}")]
pub struct SetupError(#[from] KafkaError);

/// Delivery reports and librdkafka's logs, on librdkafka's polling thread.
struct Context {
    failed: Shed,
    /// Bytes handed to librdkafka and not yet delivered or failed.
    queued: Arc<AtomicUsize>,
    /// The brokers are unreachable (said once per outage, not per retry).
    down: AtomicBool,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        // librdkafka's own lines (never captured payloads). Its errors also
        // come to `error` below, which says an outage once: here they are debug.
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                warn!(facility = fac, "librdkafka: {message}")
            }
            _ => debug!(facility = fac, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        use RDKafkaErrorCode::{AllBrokersDown, BrokerTransportFailure, Resolve};
        let unreachable =
            matches!(error.rdkafka_error_code(), Some(AllBrokersDown | BrokerTransportFailure | Resolve));
        if !unreachable {
            warn!(error = %error, reason, "Kafka producer error");
        } else if !self.down.swap(true, Ordering::Relaxed) {
            warn!(reason, "Kafka brokers unreachable; records are buffered up to the bound, then shed");
        } else {
            debug!(reason, "Kafka brokers still unreachable");
        }
    }
}

impl ProducerContext for Context {
    /// The record's size, for the byte count.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
        let m = &crate::metrics::global().export;
        match result {
            Ok(_) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    info!("Kafka delivery resumed");
                }
                m.exported(EXPORTER, SIGNAL, 1);
            }
            Err((e, _)) => {
                debug!(error = %e, "Kafka delivery failed");
                m.failed(EXPORTER, SIGNAL);
                self.failed.add(1, bytes as u64);
            }
        }
    }
}

/// The sink of `--kafka-brokers`.
pub struct KafkaSink {
    producer: ThreadedProducer<Context>,
    topic: String,
    raw: bool,
    queued: Arc<AtomicUsize>,
    /// Records the full buffer refused (`export_queue_full`).
    shed: Shed,
    /// Records the broker refused or that timed out (`export_failed`).
    failed: Shed,
}

impl KafkaSink {
    /// Makes the producer (it connects in the background). `raw` as for
    /// JSON Lines: the same records go to both.
    pub fn start(config: KafkaConfig, raw: bool) -> Result<Self, SetupError> {
        let queued = Arc::new(AtomicUsize::new(0));
        let failed = Shed::new("export_failed");
        let context =
            Context { failed: failed.clone(), queued: queued.clone(), down: AtomicBool::new(false) };
        let producer = config.client_config().create_with_context(context)?;
        info!(
            brokers = config.properties.iter().find(|(k, _)| k == "bootstrap.servers").map_or("", |(_, v)| v),
            topic = %config.topic,
            queue_bytes = config.queue_bytes,
            "Kafka export on"
        );
        let shed = Shed::new("export_queue_full");
        Ok(Self { producer, topic: config.topic, raw, queued, shed, failed })
    }

    /// What this sink sheds, for the capture loop to report as `drop` records.
    pub fn sheds(&self) -> Vec<Shed> {
        vec![self.shed.clone(), self.failed.clone()]
    }
}

/// The partition key: one connection, both directions, as the record names it.
fn key(r: &Record<'_>) -> Option<String> {
    r.conn.map(|c| format!("{}-{}", c.local, c.remote))
}

impl Sink for KafkaSink {
    fn record(&mut self, r: &Record<'_>) -> io::Result<()> {
        if !in_jsonl(&r.body, self.raw) {
            return Ok(());
        }
        let value = nettap_core::record::record_to_vec(r).map_err(io::Error::other)?;
        let key = key(r);
        // The record's size as librdkafka bounds its buffer (the value alone).
        let bytes = value.len();
        let mut record = BaseRecord::with_opaque_to(&self.topic, bytes).payload(&value);
        if let Some(k) = &key {
            record = record.key(k);
        }
        // Counted before the send: the delivery report may come first.
        self.queued.fetch_add(bytes, Ordering::Relaxed);
        match self.producer.send(record) {
            Ok(()) => {}
            Err((e, _)) => {
                self.queued.fetch_sub(bytes, Ordering::Relaxed);
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) {
                    self.shed.add(1, bytes as u64);
                } else {
                    // A record over message.max.bytes, an unknown topic…
                    debug!(error = %e, "Kafka send refused");
                    crate::metrics::global().export.failed(EXPORTER, SIGNAL);
                    self.failed.add(1, bytes as u64);
                }
            }
        }
        Ok(())
    }

    /// (Once a second: the queue's depth for the metrics.)
    fn flush(&mut self) -> io::Result<()> {
        let records = self.producer.in_flight_count().max(0) as usize;
        crate::metrics::global().export.queue(EXPORTER, records, self.queued.load(Ordering::Relaxed));
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Err(e) = self.producer.flush(FINISH_TIMEOUT) {
            warn!(
                error = %e,
                records = self.producer.in_flight_count(),
                "Kafka export given up at shutdown"
            );
        }
        Ok(())
    }
}

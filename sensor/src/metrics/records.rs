//! The records' side of the metrics: a sink that counts what the outputs
//! are given — records by kind, captured bytes by source, losses by reason,
//! and TLS bytes per pod (ciphertext seen by the kernel vs plaintext from
//! the TLS library: the answer to "is decryption working for my pod?"),
//! and captured bytes by the kind of record they became.

use super::kind_bytes::KindBytes;
use super::{global, KindLabels, PodLabels, ReasonLabels, SourceLabels};
use nettap_core::record::{in_jsonl, Body, DataKind, Record};
use nettap_core::sink::Sink;
use prometheus_client::metrics::counter::Counter;
use std::collections::HashMap;
use std::io;

/// Pods given their own TLS series at most (a node runs a few hundred).
const MAX_PODS: usize = 4096;

/// Counts records into the metrics.
pub struct RecordCounter {
    raw: bool,
    /// Pod UID → its TLS byte counter per source, so that a chunk costs a
    /// lookup, not a label set built and hashed; bounded by MAX_PODS.
    pods: HashMap<String, Vec<(&'static str, Counter)>>,
    kind_bytes: KindBytes,
    /// Kind → its byte counter (a handful of kinds).
    kinds: Vec<(&'static str, Counter)>,
}

impl RecordCounter {
    /// Counts records as a JSON Lines output with `raw` (or without) has them.
    pub fn new(raw: bool) -> Self {
        Self { raw, pods: HashMap::new(), kind_bytes: KindBytes::default(), kinds: Vec::new() }
    }

    fn pod_tls(&mut self, r: &Record<'_>, bytes: u64) {
        let Some(pod) = r.conn.and_then(|c| c.k8s) else { return };
        let source = r.origin.source;
        if !self.pods.contains_key(pod.meta.uid.as_str()) {
            if self.pods.len() >= MAX_PODS {
                global().pods_not_labelled.inc_by(bytes);
                return;
            }
            self.pods.insert(pod.meta.uid.clone(), Vec::new());
        }
        let counters = self.pods.get_mut(pod.meta.uid.as_str()).expect("inserted above");
        let counter = match counters.iter().find(|(s, _)| *s == source) {
            Some((_, c)) => c,
            None => {
                let labels =
                    PodLabels { namespace: pod.meta.namespace.clone(), pod: pod.meta.pod.clone(), source };
                counters.push((source, global().pod_tls_bytes.get_or_create(&labels).clone()));
                &counters.last().expect("pushed").1
            }
        };
        counter.inc_by(bytes);
    }
}

impl Sink for RecordCounter {
    fn record(&mut self, r: &Record<'_>) -> io::Result<()> {
        let m = global();
        let kinds = &mut self.kinds;
        self.kind_bytes.record(r, &mut |kind, bytes| {
            let counter = match kinds.iter().find(|(k, _)| *k == kind) {
                Some((_, c)) => c,
                None => {
                    kinds.push((kind, m.record_bytes.get_or_create(&KindLabels { kind }).clone()));
                    &kinds.last().expect("pushed").1
                }
            };
            counter.inc_by(bytes);
        });
        if in_jsonl(&r.body, self.raw) {
            m.records.get_or_create(&KindLabels { kind: r.kind() }).inc();
        }
        match r.body {
            Body::Data { payload, kind: DataKind::Captured, .. } => {
                let bytes = payload.len() as u64;
                m.captured_bytes.get_or_create(&SourceLabels { source: r.origin.source }).inc_by(bytes);
                if r.conn.is_some_and(|c| c.tls) || r.origin.source != "kernel" {
                    self.pod_tls(r, bytes);
                }
            }
            Body::Drop(d) => {
                m.drops.get_or_create(&ReasonLabels { reason: d.reason }).inc_by(d.count);
                m.dropped_bytes.get_or_create(&ReasonLabels { reason: d.reason }).inc_by(d.bytes);
            }
            _ => {}
        }
        Ok(())
    }
}

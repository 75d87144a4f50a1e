//! One Kafka connection: size-prefixed frames in each direction, request
//! headers (v1, and v2 with tagged fields for flexible versions), responses
//! paired with requests by correlation id, bounded state. A direction that
//! loses its framing (a gap, bytes that make no sense) passes its bytes on
//! raw until a chunk starts with a frame again: a request header that
//! makes sense, or a response whose correlation id a request is waiting for.

use super::api::{self, key, RequestBody, ResponseBody, Topic};
use super::batch::SetLimits;
use super::wire::{Reader, WireError};
use super::{api_name, flexible, request_start};
use crate::protocols::db::{DbExchange, DbOutput};
use crate::protocols::exchange::Limits;
use crate::protocols::framing::{Frame, Framer, HEAD_KEPT};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// A request: its header, what its body said, its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRequest {
    /// API key.
    pub api_key: i16,
    /// API version.
    pub api_version: i16,
    /// Correlation id (the response carries it back).
    pub correlation_id: i32,
    /// The client's id, if it sent one.
    pub client_id: Option<String>,
    /// The decoded body (APIs not decoded leave it empty).
    pub body: RequestBody,
    /// Why the body was not decoded, when it was not.
    pub undecoded: Option<&'static str>,
    /// Frame size (bytes after the size field).
    pub size: u64,
    /// First byte's time.
    pub start_ts: u64,
    /// Last byte's time.
    pub end_ts: u64,
}

/// A response: what its body said and its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaResponse {
    /// The decoded body.
    pub body: ResponseBody,
    /// Why the body was not decoded, when it was not.
    pub undecoded: Option<&'static str>,
    /// Frame size.
    pub size: u64,
    /// First byte's time.
    pub start_ts: u64,
    /// Last byte's time.
    pub end_ts: u64,
}

/// A request and its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaExchange {
    /// The request.
    pub request: KafkaRequest,
    /// The response; `None` for Produce with acks=0 (none comes) or when
    /// the connection ended first.
    pub response: Option<KafkaResponse>,
}

impl KafkaExchange {
    /// The API's name, or `api_<key>` for a key this version does not know.
    pub fn api(&self) -> String {
        api_name(self.request.api_key).map_or_else(|| format!("api_{}", self.request.api_key), str::to_string)
    }

    /// From the request's first byte to the response's last.
    pub fn latency_ns(&self) -> Option<u64> {
        self.response.as_ref().map(|r| r.end_ts.saturating_sub(self.request.start_ts))
    }

    /// The API and its topics with their record counts, and the answer.
    pub fn summary(&self) -> (String, String) {
        let q = &self.request;
        let mut asked = format!("{} v{}", self.api(), q.api_version);
        for t in q.body.topics.iter().flatten().take(4) {
            let records: usize =
                t.partitions.iter().filter_map(|p| p.records.as_ref()).map(|s| s.records.len()).sum();
            asked.push(' ');
            asked.push_str(t.name.as_deref().unwrap_or("?"));
            if records > 0 {
                asked.push_str(&format!(" ({records} records)"));
            }
        }
        let answer = match &self.response {
            None if q.body.acks == Some(0) => "acks=0".to_string(),
            None => "no response".to_string(),
            Some(r) if r.body.error_code != 0 => format!("error {}", r.body.error_code),
            Some(r) => {
                let n: usize = r
                    .body
                    .topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .filter_map(|p| p.records.as_ref())
                    .map(|s| s.records.len())
                    .sum();
                if n > 0 {
                    format!("ok, {n} records")
                } else {
                    "ok".to_string()
                }
            }
        };
        (asked, answer)
    }
}

/// Requests waiting for a response, at most (their oldest go unanswered).
const MAX_PENDING: usize = 1024;
/// Topic ids named by Metadata responses, at most.
const MAX_TOPIC_IDS: usize = 4096;

/// Topic ids to names, from the Metadata responses of every connection that
/// shares the table (the processor gives all its Kafka connections one): a
/// topic id is a random UUID that names one topic of one cluster, and a
/// client learns it on another connection than the one it produces or
/// fetches on (the Java client asks its bootstrap connection). Oldest
/// entries go first past the bound. A cheap handle; a session made without
/// one has a table of its own.
#[derive(Debug, Clone, Default)]
pub struct TopicNames(Arc<Mutex<TopicTable>>);

/// Names by id, and the ids in the order they came (oldest first).
type TopicTable = (HashMap<[u8; 16], String>, VecDeque<[u8; 16]>);

impl TopicNames {
    fn table(&self) -> std::sync::MutexGuard<'_, TopicTable> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, id: [u8; 16], name: &str) {
        let mut table = self.table();
        let (names, order) = &mut *table;
        if id == [0; 16] || names.get(&id).is_some_and(|n| n == name) {
            return;
        }
        if names.insert(id, name.to_string()).is_none() {
            order.push_back(id);
        }
        if order.len() > MAX_TOPIC_IDS {
            let oldest = order.pop_front().expect("over the bound");
            names.remove(&oldest);
        }
    }

    fn name_topics<'a>(&self, topics: impl Iterator<Item = &'a mut Topic>) {
        let mut unnamed = topics.filter(|t| t.name.is_none() && t.topic_id.is_some()).peekable();
        if unnamed.peek().is_none() {
            return;
        }
        let table = self.table();
        for t in unnamed {
            t.name = t.topic_id.and_then(|id| table.0.get(&id).cloned());
        }
    }
}
/// The state of one Kafka connection.
#[derive(Debug)]
pub struct KafkaSession {
    framers: [Framer; 2],
    pending: VecDeque<KafkaRequest>,
    /// Largest frame decoded whole.
    max_frame: usize,
    set_limits: SetLimits,
    /// After SaslHandshake v0, one raw SASL token each way (not Kafka
    /// frames, and the client's holds the password): skipped, not kept.
    sasl_tokens: [bool; 2],
    /// Joined mid-stream: responses wait until a request was seen.
    await_request: bool,
    topics: TopicNames,
}

/// A Kafka frame's head: the size of what follows (negative sizes make no sense).
fn frame_size(head: &[u8]) -> Option<u64> {
    u64::try_from(i32::from_be_bytes(head.try_into().ok()?)).ok()
}

fn framer() -> Framer {
    Framer::new(4, frame_size)
}

impl KafkaSession {
    /// A session within `limits`: frames up to 8 bodies' worth are decoded
    /// (a fetch response carries many values), each key or value keeps a
    /// body's worth, 1000 records per partition.
    pub fn new(limits: Limits) -> Self {
        let max_frame = limits.max_body.saturating_mul(8).max(HEAD_KEPT);
        Self {
            framers: [framer(), framer()],
            pending: VecDeque::new(),
            max_frame,
            set_limits: SetLimits { max_records: 1000, max_value: limits.max_body, max_inflated: max_frame },
            sasl_tokens: [false; 2],
            await_request: false,
            topics: TopicNames::default(),
        }
    }

    /// The same, naming topic ids from `topics` (shared with other connections).
    pub fn with_topics(self, topics: TopicNames) -> Self {
        Self { topics, ..self }
    }

    /// A session joined mid-stream at a request's first byte.
    pub fn midstream(limits: Limits) -> Self {
        Self { await_request: true, ..Self::new(limits) }
    }

    /// True when both directions are between frames.
    pub fn synced(&self) -> bool {
        self.framers.iter().all(Framer::at_boundary)
    }

    /// Feeds bytes of the request (`true`) or response direction.
    pub fn feed(&mut self, request_side: bool, data: &[u8], ts: u64, out: &mut Vec<DbOutput>) {
        let i = usize::from(!request_side);
        if !request_side && self.await_request && self.pending.is_empty() {
            out.push(DbOutput::Raw(0..data.len()));
            return;
        }
        if self.framers[i].lost {
            if !self.frame_starts(request_side, data) {
                out.push(DbOutput::Raw(0..data.len()));
                return;
            }
            self.framers[i].reset(false);
        }
        if !request_side {
            self.await_request = false;
        }
        let mut frames = Vec::new();
        let lost = self.framers[i].feed_or_lose(data, ts, self.max_frame, "kafka_parse_error", &mut frames);
        self.on_frames(request_side, frames, out);
        out.extend(lost);
    }

    fn on_frames(&mut self, request_side: bool, frames: Vec<Frame>, out: &mut Vec<DbOutput>) {
        for f in frames {
            let ok = if request_side { self.on_request(f, out) } else { self.on_response(f, out) };
            if let Err(e) = ok {
                tracing::debug!(error = %e, "Kafka frame not understood; the direction passes on raw until it resynchronises");
                out.push(DbOutput::Drop { reason: "kafka_parse_error", bytes: 0 });
            }
        }
    }

    /// Whether `data` starts a frame: a sensible request header, or a
    /// response to a request that waits.
    fn frame_starts(&self, request_side: bool, data: &[u8]) -> bool {
        if request_side {
            return request_start(data) == Some(true);
        }
        let (Some(size), Some(corr)) = (data.get(..4), data.get(4..8)) else { return false };
        let size = i32::from_be_bytes(size.try_into().expect("4"));
        let corr = i32::from_be_bytes(corr.try_into().expect("4"));
        size >= 4 && self.pending.iter().any(|q| q.correlation_id == corr)
    }

    fn lose(&mut self, i: usize) {
        self.framers[i].reset(true);
    }

    /// `len` bytes of a direction never came. Inside a frame's body the
    /// frame goes on, the fields they held said not captured (true: a
    /// broker sends stored record batches with sendfile, whose bytes are
    /// counted, not seen). Elsewhere its framing is lost until a chunk
    /// starts a frame again, and requests waiting on a lost response go
    /// unanswered.
    pub fn gap(&mut self, request_side: bool, len: u64, ts: u64, out: &mut Vec<DbOutput>) -> bool {
        let i = usize::from(!request_side);
        let mut frames = Vec::new();
        if self.framers[i].fill(len, ts, self.max_frame, &mut frames) {
            self.on_frames(request_side, frames, out);
            return true;
        }
        self.lose(i);
        if !request_side {
            self.flush_pending(out);
        }
        false
    }

    /// The connection ended: requests still waiting are written unanswered.
    pub fn close(&mut self, _ts: u64, out: &mut Vec<DbOutput>) {
        self.flush_pending(out);
    }

    fn flush_pending(&mut self, out: &mut Vec<DbOutput>) {
        for request in self.pending.drain(..) {
            emit(out, request, None);
        }
    }

    fn on_request(&mut self, f: Frame, out: &mut Vec<DbOutput>) -> Result<(), WireError> {
        if std::mem::take(&mut self.sasl_tokens[0]) {
            return Ok(()); // a raw SASL token: never kept
        }
        let mut r = Reader::with_holes(&f.body, &f.holes);
        let (api_key, api_version, correlation_id) = (r.i16()?, r.i16()?, r.i32()?);
        if api_name(api_key).is_none() {
            self.lose(0);
            return Err(WireError::BadLength(i64::from(api_key)));
        }
        let client_id = r.nullable_string()?;
        r.flexible = flexible(api_key, api_version);
        r.tags()?;
        let mut undecoded = None;
        let mut body = RequestBody::default();
        if f.skipped > 0 {
            undecoded = Some("frame over the bound");
        } else {
            match api::request(api_key, api_version, &mut r, self.set_limits) {
                Ok(_) if !r.holes_accounted() => undecoded = Some("bytes not captured"),
                Ok(b) => body = b,
                Err(_) => undecoded = Some("body not understood"),
            }
        }
        if api_key == key::SASL_HANDSHAKE && api_version == 0 {
            self.sasl_tokens[0] = true;
        }
        self.topics.name_topics(body.topics.iter_mut().flatten());
        let request = KafkaRequest {
            api_key,
            api_version,
            correlation_id,
            client_id,
            body,
            undecoded,
            size: f.body_len,
            start_ts: f.start_ts,
            end_ts: f.end_ts,
        };
        if api_key == key::PRODUCE && request.body.acks == Some(0) {
            emit(out, request, None);
            return Ok(());
        }
        if self.pending.len() >= MAX_PENDING {
            let oldest = self.pending.pop_front().expect("full");
            out.push(DbOutput::Drop { reason: "kafka_pending_over_limit", bytes: 0 });
            emit(out, oldest, None);
        }
        self.pending.push_back(request);
        Ok(())
    }

    fn on_response(&mut self, f: Frame, out: &mut Vec<DbOutput>) -> Result<(), WireError> {
        if std::mem::take(&mut self.sasl_tokens[1]) {
            return Ok(()); // the server's raw SASL token
        }
        let mut r = Reader::with_holes(&f.body, &f.holes);
        let corr = r.i32()?;
        let Some(at) = self.pending.iter().position(|q| q.correlation_id == corr) else {
            // Nothing asked for this (the request came before a join, or
            // was lost): its bytes are counted.
            out.push(DbOutput::Drop { reason: "kafka_unpaired_response", bytes: f.body_len + 4 });
            return Ok(());
        };
        // Those before it will not be answered (a broker answers in order).
        for q in self.pending.drain(..at) {
            emit(out, q, None);
        }
        let request = self.pending.pop_front().expect("found");
        if key::SASL_HANDSHAKE == request.api_key && request.api_version == 0 {
            self.sasl_tokens[1] = true;
        }
        let (key, version) = (request.api_key, request.api_version);
        // ApiVersions answers with response header v0 whatever its version.
        if flexible(key, version) && key != key::API_VERSIONS {
            r.flexible = true;
            r.tags()?;
        }
        r.flexible = flexible(key, version);
        let mut undecoded = None;
        let mut body = ResponseBody::default();
        if f.skipped > 0 {
            undecoded = Some("frame over the bound");
        } else {
            match api::response(key, version, &mut r, self.set_limits) {
                Ok(_) if !r.holes_accounted() => undecoded = Some("bytes not captured"),
                Ok(b) => body = b,
                Err(_) => undecoded = Some("body not understood"),
            }
        }
        if key == key::METADATA {
            for t in &body.topics {
                if let (Some(id), Some(name)) = (t.topic_id, &t.name) {
                    self.topics.remember(id, name);
                }
            }
        }
        self.topics.name_topics(body.topics.iter_mut());
        let response =
            KafkaResponse { body, undecoded, size: f.body_len, start_ts: f.start_ts, end_ts: f.end_ts };
        emit(out, request, Some(response));
        Ok(())
    }
}

fn emit(out: &mut Vec<DbOutput>, request: KafkaRequest, response: Option<KafkaResponse>) {
    out.push(DbOutput::Exchange(Box::new(DbExchange::Kafka(KafkaExchange { request, response }))));
}

#[cfg(test)]
mod tests;

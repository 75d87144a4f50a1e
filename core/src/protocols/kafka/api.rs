//! The bodies of the APIs decoded field by field: Produce (0), Fetch (1),
//! Metadata (3) and ApiVersions (18), each request and response in every
//! version Kafka 4.1 defines (topic names up to v12 of Produce and Fetch,
//! topic ids from v13, where the name comes from a Metadata answer the
//! sensor saw on any connection).

use super::batch::{self, RecordSet, SetLimits};
use super::wire::{Reader, WireError};

type R<T> = Result<T, WireError>;

/// API keys decoded here.
pub mod key {
    /// Produce.
    pub const PRODUCE: i16 = 0;
    /// Fetch.
    pub const FETCH: i16 = 1;
    /// Metadata.
    pub const METADATA: i16 = 3;
    /// SaslHandshake (v0 is followed by SASL tokens outside Kafka's framing).
    pub const SASL_HANDSHAKE: i16 = 17;
    /// ApiVersions (its response header is never flexible).
    pub const API_VERSIONS: i16 = 18;
}

/// A topic of a request or response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topic {
    /// Its name (up to v12; from v13 when a Metadata answer named its id).
    pub name: Option<String>,
    /// Its id (Produce and Fetch v13+, Metadata v10+).
    pub topic_id: Option<[u8; 16]>,
    /// Metadata responses: the topic's error code.
    pub error_code: Option<i16>,
    /// Its partitions.
    pub partitions: Vec<Partition>,
}

/// A partition of a request or response; each API fills its own fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Partition {
    /// The partition index.
    pub partition: i32,
    /// Responses: the partition's error code.
    pub error_code: Option<i16>,
    /// Fetch requests: where to read from.
    pub fetch_offset: Option<i64>,
    /// Produce responses: the offset given to the first record.
    pub base_offset: Option<i64>,
    /// Fetch responses: the partition's high watermark.
    pub high_watermark: Option<i64>,
    /// Metadata responses: the leader's node id.
    pub leader: Option<i32>,
    /// Produce responses (v8+): the error message.
    pub error_message: Option<String>,
    /// Produce requests and Fetch responses: the records.
    pub records: Option<RecordSet>,
}

/// A broker named by a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Node id.
    pub node_id: i32,
    /// Host.
    pub host: String,
    /// Port.
    pub port: i32,
}

/// What a request's body says, for the APIs decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestBody {
    /// Produce: the transactional id.
    pub transactional_id: Option<String>,
    /// Produce: acks (0: no response comes).
    pub acks: Option<i16>,
    /// Fetch: isolation level (0 read uncommitted, 1 read committed).
    pub isolation_level: Option<i8>,
    /// Produce, Fetch and Metadata: the topics (Metadata: `None` for all).
    pub topics: Option<Vec<Topic>>,
    /// ApiVersions v3+: the client's software name and version.
    pub client_software: Option<(String, String)>,
}

/// What a response's body says, for the APIs decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseBody {
    /// The top-level error code (ApiVersions, Fetch v7+, Metadata v13+),
    /// else the first partition's that is not 0, else 0.
    pub error_code: i16,
    /// Throttle time in ms, where sent and not 0.
    pub throttle_time_ms: Option<i32>,
    /// Produce, Fetch, Metadata: the topics.
    pub topics: Vec<Topic>,
    /// Metadata: the brokers.
    pub brokers: Vec<Broker>,
    /// ApiVersions: (key, min, max) per API.
    pub api_versions: Vec<(i16, i16, i16)>,
}

fn topic_head(r: &mut Reader<'_>, version: i16, ids_from: i16) -> R<Topic> {
    if version >= ids_from {
        Ok(Topic { topic_id: Some(r.uuid()?), ..Topic::default() })
    } else {
        Ok(Topic { name: Some(r.string()?), ..Topic::default() })
    }
}

/// A `records` field: decoded, or said not captured when bytes of it never
/// came (a broker sends stored batches with sendfile, whose bytes the
/// sensor counts but does not see).
fn records(r: &mut Reader<'_>, limits: SetLimits) -> R<Option<RecordSet>> {
    let Some(b) = r.nullable_bytes()? else { return Ok(None) };
    let end = r.pos();
    if r.uncaptured(end - b.len()..end) {
        return Ok(Some(RecordSet {
            bytes: b.len() as u64,
            undecoded: 1,
            undecoded_reason: Some("bytes not captured"),
            ..RecordSet::default()
        }));
    }
    Ok(Some(batch::decode(b, limits)))
}

/// Decodes the body of request `key` v`version` (after the header).
pub fn request(key: i16, version: i16, r: &mut Reader<'_>, limits: SetLimits) -> R<RequestBody> {
    let mut body = RequestBody::default();
    match key {
        key::PRODUCE => {
            if version >= 3 {
                body.transactional_id = r.nullable_string()?;
            }
            body.acks = Some(r.i16()?);
            let _timeout_ms = r.i32()?;
            body.topics = Some(r.vec(|r| {
                let mut t = topic_head(r, version, 13)?;
                t.partitions = r.vec(|r| {
                    let partition = r.i32()?;
                    let records = records(r, limits)?;
                    Ok(Partition { partition, records, ..Partition::default() })
                })?;
                Ok(t)
            })?);
        }
        key::FETCH => {
            if version <= 14 {
                let _replica_id = r.i32()?;
            }
            let (_max_wait_ms, _min_bytes) = (r.i32()?, r.i32()?);
            if version >= 3 {
                let _max_bytes = r.i32()?;
            }
            if version >= 4 {
                body.isolation_level = Some(r.i8()?);
            }
            if version >= 7 {
                let (_session_id, _epoch) = (r.i32()?, r.i32()?);
            }
            body.topics = Some(r.vec(|r| {
                let mut t = topic_head(r, version, 13)?;
                t.partitions = r.vec(|r| {
                    let partition = r.i32()?;
                    if version >= 9 {
                        let _current_leader_epoch = r.i32()?;
                    }
                    let fetch_offset = Some(r.i64()?);
                    if version >= 12 {
                        let _last_fetched_epoch = r.i32()?;
                    }
                    if version >= 5 {
                        let _log_start_offset = r.i64()?;
                    }
                    let _partition_max_bytes = r.i32()?;
                    Ok(Partition { partition, fetch_offset, ..Partition::default() })
                })?;
                Ok(t)
            })?);
        }
        key::METADATA => {
            // A null array (v1+), or an empty one in v0, asks for every topic.
            let all = r.rest().starts_with(if r.flexible { &[0] } else { &[0xff, 0xff, 0xff, 0xff] });
            let topics = r.vec(|r| {
                let topic_id = if version >= 10 { Some(r.uuid()?) } else { None };
                let name = r.nullable_string()?;
                Ok(Topic { name, topic_id: topic_id.filter(|id| *id != [0; 16]), ..Topic::default() })
            })?;
            body.topics = (!(all || version == 0 && topics.is_empty())).then_some(topics);
        }
        key::API_VERSIONS if version >= 3 => {
            body.client_software = Some((r.string()?, r.string()?));
        }
        _ => {}
    }
    Ok(body)
}

/// Decodes the body of the response to request `key` v`version` (after
/// the header).
pub fn response(key: i16, version: i16, r: &mut Reader<'_>, limits: SetLimits) -> R<ResponseBody> {
    let mut body = ResponseBody::default();
    let throttle = |r: &mut Reader<'_>, body: &mut ResponseBody| -> R<()> {
        body.throttle_time_ms = Some(r.i32()?).filter(|&t| t != 0);
        Ok(())
    };
    match key {
        key::PRODUCE => {
            body.topics = r.vec(|r| {
                let mut t = topic_head(r, version, 13)?;
                t.partitions = r.vec(|r| {
                    let mut p = Partition {
                        partition: r.i32()?,
                        error_code: Some(r.i16()?),
                        base_offset: Some(r.i64()?),
                        ..Partition::default()
                    };
                    if version >= 2 {
                        let _log_append_time = r.i64()?;
                    }
                    if version >= 5 {
                        let _log_start_offset = r.i64()?;
                    }
                    if version >= 8 {
                        let _record_errors = r.vec(|r| Ok((r.i32()?, r.nullable_string()?)))?;
                        p.error_message = r.nullable_string()?;
                    }
                    Ok(p)
                })?;
                Ok(t)
            })?;
            if version >= 1 {
                throttle(r, &mut body)?;
            }
        }
        key::FETCH => {
            if version >= 1 {
                throttle(r, &mut body)?;
            }
            if version >= 7 {
                body.error_code = r.i16()?;
                let _session_id = r.i32()?;
            }
            body.topics = r.vec(|r| {
                let mut t = topic_head(r, version, 13)?;
                t.partitions = r.vec(|r| {
                    let mut p = Partition {
                        partition: r.i32()?,
                        error_code: Some(r.i16()?),
                        high_watermark: Some(r.i64()?),
                        ..Partition::default()
                    };
                    if version >= 4 {
                        let _last_stable_offset = r.i64()?;
                    }
                    if version >= 5 {
                        let _log_start_offset = r.i64()?;
                    }
                    if version >= 4 {
                        let _aborted = r.vec(|r| Ok((r.i64()?, r.i64()?)))?;
                    }
                    if version >= 11 {
                        let _preferred_read_replica = r.i32()?;
                    }
                    p.records = records(r, limits)?;
                    Ok(p)
                })?;
                Ok(t)
            })?;
        }
        key::METADATA => {
            if version >= 3 {
                throttle(r, &mut body)?;
            }
            body.brokers = r.vec(|r| {
                let b = Broker { node_id: r.i32()?, host: r.string()?, port: r.i32()? };
                if version >= 1 {
                    let _rack = r.nullable_string()?;
                }
                Ok(b)
            })?;
            if version >= 2 {
                let _cluster_id = r.nullable_string()?;
            }
            if version >= 1 {
                let _controller_id = r.i32()?;
            }
            body.topics = r.vec(|r| {
                let error_code = Some(r.i16()?);
                let name = r.nullable_string()?;
                let topic_id = if version >= 10 { Some(r.uuid()?) } else { None };
                if version >= 1 {
                    let _is_internal = r.i8()?;
                }
                let partitions = r.vec(|r| {
                    let p = Partition {
                        error_code: Some(r.i16()?),
                        partition: r.i32()?,
                        leader: Some(r.i32()?),
                        ..Partition::default()
                    };
                    if version >= 7 {
                        let _leader_epoch = r.i32()?;
                    }
                    let (_replicas, _isr) = (r.i32s()?, r.i32s()?);
                    if version >= 5 {
                        let _offline = r.i32s()?;
                    }
                    Ok(p)
                })?;
                if version >= 8 {
                    let _authorized_operations = r.i32()?;
                }
                Ok(Topic { name, topic_id, error_code, partitions })
            })?;
            if (8..=10).contains(&version) {
                let _cluster_authorized_operations = r.i32()?;
            }
            if version >= 13 {
                body.error_code = r.i16()?;
            }
        }
        key::API_VERSIONS => {
            body.error_code = r.i16()?;
            body.api_versions = r.vec(|r| Ok((r.i16()?, r.i16()?, r.i16()?)))?;
            if version >= 1 {
                throttle(r, &mut body)?;
            }
        }
        _ => {}
    }
    if body.error_code == 0 {
        let first = body
            .topics
            .iter()
            .flat_map(|t| t.error_code.into_iter().chain(t.partitions.iter().filter_map(|p| p.error_code)));
        body.error_code = first.into_iter().find(|&e| e != 0).unwrap_or(0);
    }
    Ok(body)
}

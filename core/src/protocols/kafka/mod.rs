//! Kafka: the request and response framing of the wire protocol
//! ([`session`]), the primitive types ([`wire`]), the bodies of Produce,
//! Fetch, Metadata and ApiVersions ([`api`]) and record batches v2
//! ([`batch`]). Other APIs are named from their key, their bodies not
//! decoded. A connection is Kafka when its client's first bytes are a
//! request header that makes sense: a size, a known API key, a version that
//! API has, and a printable client id within the size.

pub mod api;
pub mod batch;
pub mod session;
pub mod wire;

pub use session::{KafkaExchange, KafkaRequest, KafkaResponse, KafkaSession, TopicNames};

/// Every API key Kafka 4.1 defines (and the four inter-broker ones 4.0
/// removed): name, newest version, first flexible version (tagged fields,
/// compact strings; request header v2, response header v1).
const APIS: &[(i16, &str, i16, Option<i16>)] = &[
    (0, "Produce", 13, Some(9)),
    (1, "Fetch", 18, Some(12)),
    (2, "ListOffsets", 10, Some(6)),
    (3, "Metadata", 13, Some(9)),
    (4, "LeaderAndIsr", 7, Some(4)),
    (5, "StopReplica", 4, Some(2)),
    (6, "UpdateMetadata", 8, Some(6)),
    (7, "ControlledShutdown", 3, Some(3)),
    (8, "OffsetCommit", 10, Some(8)),
    (9, "OffsetFetch", 10, Some(6)),
    (10, "FindCoordinator", 6, Some(3)),
    (11, "JoinGroup", 9, Some(6)),
    (12, "Heartbeat", 4, Some(4)),
    (13, "LeaveGroup", 5, Some(4)),
    (14, "SyncGroup", 5, Some(4)),
    (15, "DescribeGroups", 6, Some(5)),
    (16, "ListGroups", 5, Some(3)),
    (17, "SaslHandshake", 1, None),
    (18, "ApiVersions", 4, Some(3)),
    (19, "CreateTopics", 7, Some(5)),
    (20, "DeleteTopics", 6, Some(4)),
    (21, "DeleteRecords", 2, Some(2)),
    (22, "InitProducerId", 6, Some(2)),
    (23, "OffsetForLeaderEpoch", 4, Some(4)),
    (24, "AddPartitionsToTxn", 5, Some(3)),
    (25, "AddOffsetsToTxn", 4, Some(3)),
    (26, "EndTxn", 5, Some(3)),
    (27, "WriteTxnMarkers", 1, Some(1)),
    (28, "TxnOffsetCommit", 5, Some(3)),
    (29, "DescribeAcls", 3, Some(2)),
    (30, "CreateAcls", 3, Some(2)),
    (31, "DeleteAcls", 3, Some(2)),
    (32, "DescribeConfigs", 4, Some(4)),
    (33, "AlterConfigs", 2, Some(2)),
    (34, "AlterReplicaLogDirs", 2, Some(2)),
    (35, "DescribeLogDirs", 4, Some(2)),
    (36, "SaslAuthenticate", 2, Some(2)),
    (37, "CreatePartitions", 3, Some(2)),
    (38, "CreateDelegationToken", 3, Some(2)),
    (39, "RenewDelegationToken", 2, Some(2)),
    (40, "ExpireDelegationToken", 2, Some(2)),
    (41, "DescribeDelegationToken", 3, Some(2)),
    (42, "DeleteGroups", 2, Some(2)),
    (43, "ElectLeaders", 2, Some(2)),
    (44, "IncrementalAlterConfigs", 1, Some(1)),
    (45, "AlterPartitionReassignments", 1, Some(0)),
    (46, "ListPartitionReassignments", 0, Some(0)),
    (47, "OffsetDelete", 0, None),
    (48, "DescribeClientQuotas", 1, Some(1)),
    (49, "AlterClientQuotas", 1, Some(1)),
    (50, "DescribeUserScramCredentials", 0, Some(0)),
    (51, "AlterUserScramCredentials", 0, Some(0)),
    (52, "Vote", 2, Some(0)),
    (53, "BeginQuorumEpoch", 1, Some(1)),
    (54, "EndQuorumEpoch", 1, Some(1)),
    (55, "DescribeQuorum", 2, Some(0)),
    (56, "AlterPartition", 3, Some(0)),
    (57, "UpdateFeatures", 2, Some(0)),
    (58, "Envelope", 0, Some(0)),
    (59, "FetchSnapshot", 1, Some(0)),
    (60, "DescribeCluster", 2, Some(0)),
    (61, "DescribeProducers", 0, Some(0)),
    (62, "BrokerRegistration", 4, Some(0)),
    (63, "BrokerHeartbeat", 1, Some(0)),
    (64, "UnregisterBroker", 0, Some(0)),
    (65, "DescribeTransactions", 0, Some(0)),
    (66, "ListTransactions", 2, Some(0)),
    (67, "AllocateProducerIds", 0, Some(0)),
    (68, "ConsumerGroupHeartbeat", 1, Some(0)),
    (69, "ConsumerGroupDescribe", 1, Some(0)),
    (70, "ControllerRegistration", 0, Some(0)),
    (71, "GetTelemetrySubscriptions", 0, Some(0)),
    (72, "PushTelemetry", 0, Some(0)),
    (73, "AssignReplicasToDirs", 0, Some(0)),
    (74, "ListConfigResources", 1, Some(0)),
    (75, "DescribeTopicPartitions", 0, Some(0)),
    (76, "ShareGroupHeartbeat", 1, Some(0)),
    (77, "ShareGroupDescribe", 1, Some(0)),
    (78, "ShareFetch", 1, Some(0)),
    (79, "ShareAcknowledge", 1, Some(0)),
    (80, "AddRaftVoter", 0, Some(0)),
    (81, "RemoveRaftVoter", 0, Some(0)),
    (82, "UpdateRaftVoter", 0, Some(0)),
    (83, "InitializeShareGroupState", 0, Some(0)),
    (84, "ReadShareGroupState", 0, Some(0)),
    (85, "WriteShareGroupState", 0, Some(0)),
    (86, "DeleteShareGroupState", 0, Some(0)),
    (87, "ReadShareGroupStateSummary", 0, Some(0)),
    (88, "StreamsGroupHeartbeat", 0, Some(0)),
    (89, "StreamsGroupDescribe", 0, Some(0)),
    (90, "DescribeShareGroupOffsets", 0, Some(0)),
    (91, "AlterShareGroupOffsets", 0, Some(0)),
    (92, "DeleteShareGroupOffsets", 0, Some(0)),
];

/// The API's name (`Produce`, …), if the key is known.
pub fn api_name(key: i16) -> Option<&'static str> {
    APIS.get(usize::try_from(key).ok()?).map(|a| a.1)
}

/// Whether `version` of API `key` is a flexible version.
pub fn flexible(key: i16, version: i16) -> bool {
    usize::try_from(key).ok().and_then(|k| APIS.get(k)).and_then(|a| a.3).is_some_and(|f| version >= f)
}

/// The oldest version a Kafka 4 broker accepts, where it is not 0: older
/// ones are not taken for Kafka when classifying (an HTTP/2 SETTINGS frame
/// reads as a Produce v0 header).
fn oldest_version(key: i16) -> i16 {
    match key {
        0 => 3,
        1 => 4,
        8 | 19 | 23 | 56 => 2,
        2 | 9 | 20 | 27 | 29..=32 | 34 | 35 | 38..=41 | 76..=79 => 1,
        _ => 0,
    }
}

/// Longest client id believed when classifying.
const MAX_CLASSIFY_CLIENT_ID: i16 = 512;

/// Versions past the newest this table knows that a newer client may send
/// and still be taken for Kafka.
const VERSION_SLACK: i16 = 4;

/// Largest frame believed when deciding a connection is Kafka (the
/// broker's default `socket.request.max.bytes` is 100 MiB).
const MAX_CLASSIFY_FRAME: i32 = 100 << 20;

/// Whether a request header starts `b`: `Some(true)` yes, `Some(false)`
/// no, `None` too few bytes. Checks the size, the API key and version,
/// and the client id (int16 length, printable ASCII, within the frame).
pub fn request_start(b: &[u8]) -> Option<bool> {
    if b.len() < 14 {
        // Refuse early what cannot be a size and key.
        let plausible =
            b.len() < 4 || (1..=MAX_CLASSIFY_FRAME).contains(&i32::from_be_bytes(b[..4].try_into().ok()?));
        return if plausible { None } else { Some(false) };
    }
    let size = i32::from_be_bytes(b[..4].try_into().ok()?);
    let key = i16::from_be_bytes([b[4], b[5]]);
    let version = i16::from_be_bytes([b[6], b[7]]);
    let client_len = i16::from_be_bytes([b[12], b[13]]);
    let Some(&(_, _, max, _)) = usize::try_from(key).ok().and_then(|k| APIS.get(k)) else {
        return Some(false);
    };
    if !(10..=MAX_CLASSIFY_FRAME).contains(&size)
        || !(oldest_version(key)..=max + VERSION_SLACK).contains(&version)
    {
        return Some(false);
    }
    if !(-1..=MAX_CLASSIFY_CLIENT_ID).contains(&client_len) || i32::from(client_len) > size - 10 {
        return Some(false);
    }
    let id = &b[14..b.len().min(14 + client_len.max(0) as usize)];
    if !id.iter().all(|c| (0x20..0x7f).contains(c)) {
        return Some(false);
    }
    if id.len() < client_len.max(0) as usize {
        return None;
    }
    Some(true)
}

/// Whether `first` (a connection's first bytes from its client) is a Kafka
/// request: `Some(true)` yes, `Some(false)` no, `None` too few bytes.
pub fn classify(first: &[u8]) -> Option<bool> {
    request_start(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_indexed_by_key() {
        for (i, a) in APIS.iter().enumerate() {
            assert_eq!(a.0 as usize, i);
        }
        assert_eq!(
            (api_name(0), api_name(18), api_name(200), api_name(-1)),
            (Some("Produce"), Some("ApiVersions"), None, None)
        );
        assert!(flexible(0, 9) && !flexible(0, 8) && !flexible(17, 1) && flexible(60, 0));
    }

    #[test]
    fn requests_are_recognised_from_their_first_bytes() {
        // ApiVersions v4, correlation id 1, client id "producer-1", then tagged fields.
        let mut req = vec![0, 0, 0, 0, 0, 18, 0, 4, 0, 0, 0, 1, 0, 10];
        req.extend(b"producer-1\0\x0bapache-kafka\x064.1.1\0");
        let size = (req.len() - 4) as i32;
        req[..4].copy_from_slice(&size.to_be_bytes());
        assert_eq!(classify(&req), Some(true));
        for n in 0..24 {
            assert_eq!(classify(&req[..n]), None, "{n} bytes");
        }
        assert_eq!(classify(&req[..24]), Some(true));
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(false));
        assert_eq!(classify(b"*1\r\n\r\nPING\r\n"), Some(false));
        assert_eq!(classify(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcd"), Some(false));
        let mut bad = req.clone();
        bad[7] = 40; // ApiVersions has no version 40
        assert_eq!(classify(&bad), Some(false));
        let mut bad = req.clone();
        bad[15] = 1; // a control byte in the client id
        assert_eq!(classify(&bad), Some(false));
    }
}

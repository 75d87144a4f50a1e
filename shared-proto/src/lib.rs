//! The protobuf schema shared by nettap's components (`proto/nettap/v1`),
//! as prost types.
#![deny(missing_docs)]

/// `nettap.v1`: the records of CONTRACT.md.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/nettap.v1.rs"));
}

#[cfg(test)]
mod tests {
    use super::v1::*;
    use prost::Message;

    #[test]
    fn a_data_record_round_trips() {
        let r = Record {
            origin: Some(Origin {
                ts_ns: 1,
                pid: 42,
                comm: "curl".into(),
                source: Source::Kernel as i32,
                probe: "tracepoint:syscalls:sys_exit_write".into(),
            }),
            conn: Some(Conn {
                local: Some(Endpoint { ip: vec![127, 0, 0, 1], port: 40000 }),
                remote: Some(Endpoint { ip: vec![127, 0, 0, 1], port: 80 }),
                role: Role::Client as i32,
                tls: false,
                remote_host: String::new(),
            }),
            k8s: Some(K8s {
                pod: "orders-7d9f8-abcde".into(),
                namespace: "shop".into(),
                labels: [("app".to_string(), "orders".to_string())].into(),
                workload: Some(Workload { kind: "Deployment".into(), name: "orders".into() }),
                uid: "9c5e2d1a".into(),
                container: "app".into(),
            }),
            kind: Some(record::Kind::Data(DataChunk {
                direction: Direction::Send as i32,
                seq: 7,
                payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                truncated: 0,
            })),
            jsonl: br#"{"kind":"data"}"#.to_vec(),
        };
        let bytes = r.encode_to_vec();
        assert_eq!(Record::decode(bytes.as_slice()).unwrap(), r);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Record::decode(&[0xff, 0xff, 0xff, 0xff, 0x0f][..]).is_err());
    }
}

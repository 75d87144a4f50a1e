//! One DNS message, sans IO: bytes in, questions and answers out. Parsing
//! is hickory-proto's; this keeps what enrichment and records need.

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::RData;
use std::borrow::Cow;
use std::net::IpAddr;

/// Why a datagram is not a DNS message we can read.
#[derive(Debug, thiserror::Error)]
#[error("malformed DNS message: {0}")]
pub struct DnsError(String);

/// What an answer record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerData {
    /// A or AAAA.
    Addr(IpAddr),
    /// CNAME: the name is an alias of this one.
    Cname(String),
    /// Any other type, by its name (`MX`, `TXT`, …).
    Other(String),
}

/// One answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Owner name, without the final dot.
    pub name: String,
    /// Seconds it may be cached.
    pub ttl: u32,
    /// Its data.
    pub data: AnswerData,
}

/// A parsed DNS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage {
    /// Transaction id.
    pub id: u16,
    /// An answer (QR bit) rather than a query.
    pub response: bool,
    /// Response code (RCODE, with the EDNS extension).
    pub rcode: u16,
    /// Questions: name (without the final dot) and type (`A`, `AAAA`, …).
    pub questions: Vec<(String, String)>,
    /// Answer section.
    pub answers: Vec<Answer>,
}

fn name(n: &hickory_proto::rr::Name) -> String {
    let s = n.to_utf8();
    s.strip_suffix('.').map(str::to_string).unwrap_or(s)
}

/// Parses one message (a UDP payload).
pub fn parse(bytes: &[u8]) -> Result<DnsMessage, DnsError> {
    let m = Message::from_vec(bytes).map_err(|e| DnsError(e.to_string()))?;
    let answers = m
        .answers()
        .iter()
        .map(|r| Answer {
            name: name(r.name()),
            ttl: r.ttl(),
            data: match r.data() {
                RData::A(a) => AnswerData::Addr(IpAddr::V4(a.0)),
                RData::AAAA(a) => AnswerData::Addr(IpAddr::V6(a.0)),
                RData::CNAME(c) => AnswerData::Cname(name(&c.0)),
                other => AnswerData::Other(other.record_type().to_string()),
            },
        })
        .collect();
    Ok(DnsMessage {
        id: m.id(),
        response: m.message_type() == MessageType::Response,
        rcode: u16::from(m.response_code()),
        questions: m.queries().iter().map(|q| (name(q.name()), q.query_type().to_string())).collect(),
        answers,
    })
}

/// The RCODE's mnemonic (`NOERROR`, `NXDOMAIN`, …), or its number.
pub fn rcode_name(rcode: u16) -> Cow<'static, str> {
    let known = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"];
    known.get(rcode as usize).map(|s| Cow::Borrowed(*s)).unwrap_or_else(|| Cow::Owned(rcode.to_string()))
}

impl DnsMessage {
    /// Each answered address with the name the application asked for (the
    /// question, followed through CNAME chains) and its TTL.
    pub fn resolved(&self) -> Vec<(IpAddr, &str, u32)> {
        let mut out = Vec::new();
        for (asked, _) in &self.questions {
            // Names that stand for `asked`: itself and, one link per pass, its aliases' targets.
            let mut names: Vec<&str> = vec![asked];
            for _ in 0..self.answers.len() {
                let before = names.len();
                for a in &self.answers {
                    if let AnswerData::Cname(target) = &a.data {
                        if names.iter().any(|n| n.eq_ignore_ascii_case(&a.name))
                            && !names.iter().any(|n| n.eq_ignore_ascii_case(target))
                        {
                            names.push(target);
                        }
                    }
                }
                if names.len() == before {
                    break;
                }
            }
            for a in &self.answers {
                if let AnswerData::Addr(ip) = a.data {
                    if names.iter().any(|n| n.eq_ignore_ascii_case(&a.name)) {
                        out.push((ip, asked.as_str(), a.ttl));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, Query};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::str::FromStr;

    fn answer(q: &str, records: Vec<Record>) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7).set_message_type(MessageType::Response);
        m.add_query(Query::query(Name::from_str(q).unwrap(), RecordType::A));
        m.add_answers(records);
        m.to_vec().unwrap()
    }

    fn rec(name: &str, ttl: u32, data: RData) -> Record {
        Record::from_rdata(Name::from_str(name).unwrap(), ttl, data)
    }

    #[test]
    fn a_cname_chain_resolves_to_the_name_asked() {
        let bytes = answer(
            "www.example.test.",
            vec![
                rec(
                    "www.example.test.",
                    60,
                    RData::CNAME(CNAME(Name::from_str("edge.example.test.").unwrap())),
                ),
                rec(
                    "edge.example.test.",
                    60,
                    RData::CNAME(CNAME(Name::from_str("api.example.test.").unwrap())),
                ),
                rec("api.example.test.", 30, RData::A(A::new(10, 0, 0, 2))),
                rec("api.example.test.", 30, RData::AAAA(AAAA::from_str("fd00::2").unwrap())),
                rec("unrelated.test.", 30, RData::A(A::new(10, 9, 9, 9))),
            ],
        );
        let m = parse(&bytes).unwrap();
        assert!(m.response);
        assert_eq!((m.id, rcode_name(m.rcode).as_ref()), (7, "NOERROR"));
        assert_eq!(m.questions, vec![("www.example.test".to_string(), "A".to_string())]);
        let got = m.resolved();
        assert_eq!(
            got,
            vec![
                ("10.0.0.2".parse().unwrap(), "www.example.test", 30),
                ("fd00::2".parse().unwrap(), "www.example.test", 30)
            ]
        );
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let good = answer("a.test.", vec![rec("a.test.", 5, RData::A(A::new(1, 2, 3, 4)))]);
        assert!(parse(&good).is_ok());
        for cut in 0..good.len() {
            let _ = parse(&good[..cut]); // must not panic
        }
        assert!(parse(&good[..good.len() - 3]).is_err());
        assert!(parse(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn rcodes_by_name() {
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(16), "16");
    }
}

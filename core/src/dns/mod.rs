//! DNS enrichment: DNS messages the kernel saw (UDP port 53) parsed into
//! questions and answers (`message`), and the table of answered addresses
//! to the names applications asked for, per network namespace (`table`).

mod message;
mod table;
mod tcp;

pub use message::{parse, rcode_name, Answer, AnswerData, DnsError, DnsMessage};
pub use table::HostTable;
pub use tcp::TcpDnsFramer;

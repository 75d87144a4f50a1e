//! The streaming API (`nettap.v1.Capture/Subscribe`, tonic): a running
//! sensor publishes its records to subscribers on a Unix socket or a
//! loopback address, and `nettap tail --connect` prints them.

mod convert;
mod server;
mod tail;

pub use convert::{conn_record, dns_record, http_record};
pub use server::{serve, ApiAddr, Publisher};
pub use tail::tail;

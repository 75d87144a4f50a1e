//! The streaming API (`nettap.v1.Capture/Subscribe`, tonic): a running
//! sensor publishes its records to subscribers on a Unix socket, a
//! loopback address, or (with TLS and a token or client certificates)
//! elsewhere, and `nettap tail --connect` prints them.

mod convert;
mod security;
mod server;
mod tail;

pub use convert::{conn_record, dns_record, http_record};
pub use security::{ApiListen, ApiSecurityError, Dial, ServerTls, Token};
pub use server::{serve, ApiAddr, Publisher};
pub use tail::tail;

//! The streaming API (`nettap.v1.Capture/Subscribe`, tonic): a running
//! sensor publishes its records to subscribers on a Unix socket, a
//! loopback address, or (with TLS and a token or client certificates)
//! elsewhere (`crate::tail` is the client).

mod convert;
mod security;
mod server;

pub use convert::{conn_record, dns_record, http_record, record};
pub use security::{ApiListen, ApiSecurityError, Dial, ServerTls, Token};
pub use server::{serve, ApiAddr, Publisher, SocketFile};

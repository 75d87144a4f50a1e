//! nettap's core, without I/O: kernel records decoded from the shared header
//! (`events`), connections (`conn`), per-direction reassembly (`stream`), the
//! protocol parsers (`protocols`), DNS (`dns`), redaction (`redact`), the
//! records of CONTRACT.md (`record`), and the `processor` that turns ring
//! bytes and agent frames into records for the `sink`s. Nothing here opens a
//! file or a socket or reads the clock on its own: the sensor does, and
//! hands this crate bytes, answers (`host`) and times.
#![deny(missing_docs)]

pub mod abi;
pub mod agent;
pub mod clock;
pub mod conn;
pub mod dns;
pub mod events;
pub mod host;
pub mod pod;
pub mod processor;
pub mod protocols;
pub mod record;
pub mod redact;
pub mod sink;
pub mod stream;
pub mod testing;

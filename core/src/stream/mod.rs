//! Turning a connection's chunks back into its byte streams: per-direction
//! reassembly by `seq`, and the per-connection session that hands the bytes
//! to a protocol parser.

mod db;
mod reassembly;
mod session;

pub use reassembly::{Delivery, Reassembler};
pub use session::{Chunk, ConnSession, SessionOut};

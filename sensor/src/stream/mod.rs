//! Turning a connection's chunks back into its byte streams: per-direction
//! reassembly by `seq`, and the per-connection session that hands the bytes
//! to a protocol parser.

mod reassembly;

pub use reassembly::{Delivery, Reassembler};

//! Connection tracking in user space: what the sensor knows about each
//! connection beyond a single record.

mod tracker;

pub use tracker::{ConnInfo, ConnTracker, EphemeralPorts};

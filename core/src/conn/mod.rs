//! Connection tracking in user space: what the sensor knows about each
//! connection beyond a single record.

mod reconcile;
mod role;
mod tracker;

pub use reconcile::{endpoints_key, MissingSockets, NetnsSockets, TrackedSocket};
pub use role::{EphemeralPorts, RoleGuesser};
pub use tracker::{ConnInfo, ConnTracker};

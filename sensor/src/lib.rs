//! nettap's node sensor: loads the eBPF programs, attaches probes, and turns
//! kernel events into the records of CONTRACT.md.
#![deny(missing_docs)]

pub mod agent;
pub mod api;
pub mod bpf;
pub mod clock;
pub mod config;
pub mod conn;
pub mod dns;
pub mod drops;
pub mod events;
pub mod exec_gate;
pub mod jvm_attach;
pub mod k8s;
pub mod output;
pub mod pipeline;
pub mod privileges;
pub mod probes;
pub mod protocols;
pub mod redact;
pub mod stream;

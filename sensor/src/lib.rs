//! nettap's node sensor: loads the eBPF programs, attaches probes, and runs
//! the capture loop that feeds `nettap_core`'s processor and hands its
//! records to the outputs. Everything here touches the host (the kernel,
//! /proc, sockets, files, the Kubernetes API); what does not lives in
//! `nettap_core`.
#![deny(missing_docs)]

pub mod agent;
pub mod api;
pub mod bpf;
pub mod capture;
pub mod config;
pub mod conn_table;
pub mod drops;
pub mod heap_trim;
pub mod host;
pub mod k8s;
pub mod metrics;
pub mod missing_closes;
pub mod output;
pub mod own_traffic;
pub mod privileges;
pub mod probes;
pub mod recursion;
pub mod ring_meter;
pub mod shed;
pub mod sock_diag;
pub mod tail;

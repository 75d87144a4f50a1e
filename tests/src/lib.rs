//! Harness for nettap's end-to-end tests: starts the real `nettap` binary,
//! real peer programs (in network namespaces the test creates), and reads
//! the records back. Needs root, BPF and the machine's python3: a missing
//! prerequisite is a failure with a message, never a skip. One module per
//! concern; everything is re-exported here for the tests.

pub mod assertions;
pub mod databases;
pub mod helm;
pub mod inspect;
pub mod jvm;
pub mod k8s;
pub mod kafka;
pub mod mongodb;
pub mod netns;
pub mod node;
pub mod otelcol;
pub mod peers;
pub mod pki;
pub mod sensor;
pub mod vm;
pub mod wait;

pub use assertions::*;
pub use databases::*;
pub use kafka::{kafka_peer, KafkaBroker, SecureListener, TopicRecord};
pub use mongodb::{node_mongodb, FerretDb};
pub use netns::*;
pub use otelcol::*;
pub use peers::*;
pub use pki::*;
pub use sensor::*;
pub use wait::*;

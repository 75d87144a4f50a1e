//! The outputs that need more than a writer: a HAR document and the terminal
//! summary. Each is a `nettap_core::sink::Sink`, as are JSON Lines
//! (`nettap_core::record::JsonlWriter`) and the streaming API's publisher
//! (`crate::api::Publisher`); an output is added by one file here and one
//! line where the capture is wired (`main.rs`).
//! The node-local records store (`file_store`) is the writer of a JSON
//! Lines sink for `--out-dir`. `otlp` exports exchanges as spans and log records; `kafka` sends every
//! record to a Kafka topic.

pub mod file_store;
mod har;
pub mod kafka;
pub mod otlp;
mod terminal;

pub use file_store::FileStore;
pub use har::HarWriter;
pub use terminal::TerminalSummary;

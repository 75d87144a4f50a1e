//! Where records go: JSON Lines (CONTRACT.md), HAR 1.2, or the terminal
//! summary; JSON Lines to a file, stdout, or the node-local store (`file_store`).

pub mod file_store;
mod har;
mod jsonl;
mod record;
mod terminal;

pub use file_store::FileStore;
pub use har::{entry as har_entry, rfc3339, HarWriter};
pub use jsonl::JsonlWriter;
pub use record::{Body, ConnView, DropRecord, Origin, Record};
pub use terminal::TerminalSummary;

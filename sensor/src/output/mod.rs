//! Where records go: JSON Lines (CONTRACT.md) or the terminal summary.

mod jsonl;
mod record;
mod terminal;

pub use jsonl::JsonlWriter;
pub use record::{Body, ConnView, DropRecord, Origin, Record};
pub use terminal::TerminalSummary;

//! HTTP/1.x: a message parser per direction (`message`) and the pairing of
//! requests with responses (`exchange`), into the shared exchange types.

mod exchange;
mod message;

pub use exchange::Http1Session;
pub use message::{Event, Kind, MessageParser, ParseError};

//! HTTP/1.x: a message parser per direction (`message`), the pairing of
//! requests with responses (`exchange`), and body content decoding (`decode`).

mod decode;
mod exchange;
mod message;

pub use exchange::{Exchange, Http1Output, Http1Session};
pub use message::{decode_body, Event, Head, Kind, Limits, Message, MessageParser, ParseError};

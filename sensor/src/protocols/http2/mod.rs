//! HTTP/2 (RFC 9113), sans IO: frames per direction (`frame`), and the
//! connection's streams paired into exchanges with HPACK-decoded headers
//! (`session`). Exchanges come out in the HTTP/1 types, marked `h2`.

mod frame;
mod session;

pub use frame::{Frame, FrameReader};
pub use session::Http2Session;

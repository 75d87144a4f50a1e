//! HTTP/2 (RFC 9113), sans IO: frames (`frame`), one direction's bytes into
//! frames (`reader`), frame boundaries found in bytes joined mid-stream
//! (`sync`), header blocks (`hpack`, with loona-hpack), and a connection's
//! streams paired into exchanges (`session`).

mod frame;
mod hpack;
mod reader;
mod session;
mod sync;
#[cfg(test)]
mod tests;

pub use frame::{error_name, Frame, FrameError, FrameHeader, Settings, PREFACE};
pub use hpack::{Decoded, HeaderDecoder};
pub use reader::{Event, FrameReader, GapOutcome};
pub use session::Http2Session;
pub use sync::{frames_at, Verdict};

/// A frame's bytes, for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) use frame::tests::frame as test_frame;
/// Frame types, for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) use frame::{flag, kind};

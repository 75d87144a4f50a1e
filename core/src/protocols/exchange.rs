//! What every HTTP version's parser produces: messages paired into
//! exchanges. HTTP/1.x and HTTP/2 fill the same types, so records, HAR,
//! the terminal summary and the streaming API have one path for both.

use super::content;
pub use super::fields::Fields;
use std::ops::Range;

/// Bounds on what one message may hold in memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest head: HTTP/1 start line and headers; HTTP/2 header block,
    /// compressed and decoded.
    pub max_head: usize,
    /// Body bytes kept per message; the rest is counted in `body_truncated`.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_head: 64 << 10, max_body: 1 << 20 }
    }
}

/// The HTTP version that carried a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    /// HTTP/1.0.
    Http10,
    /// HTTP/1.1.
    #[default]
    Http11,
    /// HTTP/2.
    H2,
}

impl Version {
    /// From an HTTP/1 minor version (1 when unknown).
    pub fn http1(minor: Option<u8>) -> Self {
        if minor == Some(0) {
            Version::Http10
        } else {
            Version::Http11
        }
    }

    /// As records name it: `http/1.0`, `http/1.1`, `h2` (ALPN tokens).
    pub fn protocol(self) -> &'static str {
        match self {
            Version::Http10 => "http/1.0",
            Version::Http11 => "http/1.1",
            Version::H2 => "h2",
        }
    }

    /// As HAR names it.
    pub fn har(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
            Version::H2 => "HTTP/2.0",
        }
    }
}

/// Start line (or HTTP/2 pseudo-headers) and headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Head {
    /// Request method (requests; HTTP/2 `:method`).
    pub method: String,
    /// Request target (requests; HTTP/2 `:path`).
    pub target: String,
    /// Status code (responses; HTTP/2 `:status`).
    pub status: u16,
    /// Reason phrase (HTTP/1 responses).
    pub reason: String,
    /// The version that carried the message.
    pub version: Version,
    /// Headers in order, values as sent (lossy UTF-8); for HTTP/2 the
    /// pseudo-headers (`:method`, `:path`, `:authority`, `:status`) too.
    pub headers: Fields,
    /// HTTP/2 only: part of the header block could not be decoded (the
    /// connection was joined mid-stream, bytes went missing, or the block was
    /// over the limit), so some fields are absent; what is here was decoded,
    /// never guessed.
    pub headers_incomplete: bool,
}

impl Head {
    /// The request's authority: HTTP/2's `:authority`, else the Host header.
    pub fn authority(&self) -> Option<&str> {
        self.header(":authority").or_else(|| self.header("host")).filter(|a| !a.is_empty())
    }

    /// The protocol as records name it: `h2`, `http/1.1`, `http/1.0`.
    pub fn protocol(&self) -> &'static str {
        self.version.protocol()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.value(name)
    }

    /// Whether a comma-separated header lists `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// A complete message (or as much of it as was seen).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Start line and headers.
    pub head: Head,
    /// Body, decoded from transfer encoding (chunked, HTTP/2 DATA frames)
    /// and, where possible, content encoding.
    pub body: Vec<u8>,
    /// Body bytes not kept (over `Limits::max_body`, or never captured).
    pub body_truncated: u64,
    /// Why content decoding failed, if it did (the body is then as sent).
    pub decode_error: Option<String>,
    /// Trailer fields (chunked trailers, HTTP/2 trailing HEADERS).
    pub trailers: Fields,
    /// Time of the chunk holding the first byte.
    pub start_ts: u64,
    /// Time of the chunk holding the last byte.
    pub end_ts: u64,
}

impl Message {
    /// Field `name` from the trailers, else from the headers (a gRPC
    /// "trailers-only" answer puts its status in the headers).
    pub fn trailer_or_header(&self, name: &str) -> Option<&str> {
        self.trailers.value(name).or_else(|| self.head.header(name))
    }

    /// Undoes a complete body's Content-Encoding in place (at most `max`
    /// bytes kept), or says why it could not. A body cut short is left as
    /// sent: decoding a prefix would pass for the whole.
    pub fn decode_content(&mut self, max: usize) {
        if self.body_truncated > 0 || self.body.is_empty() {
            return;
        }
        let Some(enc) = self.head.header("content-encoding").map(str::to_string) else { return };
        match content::decode(&enc, &self.body, max) {
            Ok(Some((body, cut))) => {
                self.body = body;
                self.body_truncated = cut;
            }
            Ok(None) => {}
            Err(e) => self.decode_error = Some(e),
        }
    }
}

/// A request and what answered it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exchange {
    /// The request (boxed: exchanges and messages move as pointers, see
    /// `spare`).
    pub request: Box<Message>,
    /// The response; `None` when the connection or stream ended first.
    pub response: Option<Box<Message>>,
    /// HTTP/2: the stream was reset (RST_STREAM) with this error code.
    pub reset: Option<u32>,
}

impl Exchange {
    /// A request and its answer.
    pub fn new(request: Box<Message>, response: Option<Box<Message>>) -> Self {
        Self { request, response, reset: None }
    }

    /// The RST_STREAM error code by name (`CANCEL`), or in hex when RFC
    /// 9113 does not define it.
    pub fn reset_name(&self) -> Option<String> {
        self.reset.map(|c| super::http2::error_name(c).map_or_else(|| format!("{c:#x}"), str::to_string))
    }

    /// From the request's first byte to the response's last.
    pub fn latency_ns(&self) -> Option<u64> {
        self.response.as_ref().map(|r| r.end_ts.saturating_sub(self.request.start_ts))
    }
}

/// What feeding bytes to an HTTP session produced.
#[derive(Debug, PartialEq, Eq)]
pub enum HttpOutput {
    /// A finished exchange.
    Exchange(Box<Exchange>),
    /// These bytes of the chunk just fed are not HTTP (skipped while out of
    /// sync, or after an upgrade): the caller keeps them as raw data.
    Raw(Range<usize>),
    /// The bytes stopped parsing; the direction resynchronises.
    Error(String),
    /// Something a bound made the parser give up (a `drop` record).
    Drop {
        /// Why, as the `drop` record's `reason`.
        reason: &'static str,
        /// Bytes not kept.
        bytes: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_trailers() {
        assert_eq!(Version::http1(Some(0)).protocol(), "http/1.0");
        assert_eq!(Version::http1(None).har(), "HTTP/1.1");
        assert_eq!(Version::H2.har(), "HTTP/2.0");
        let m = Message {
            head: Head { headers: Fields::from_iter([("grpc-status", "1")]), ..Head::default() },
            trailers: Fields::from_iter([("Grpc-Status", "0")]),
            ..Message::default()
        };
        assert_eq!(m.trailer_or_header("grpc-status"), Some("0"));
        assert_eq!(Message { trailers: Fields::new(), ..m }.trailer_or_header("grpc-status"), Some("1"));
    }
}

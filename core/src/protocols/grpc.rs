//! gRPC over HTTP/2, sans IO: a body is a sequence of length-prefixed
//! messages (1 byte compressed flag, 4 bytes big-endian length); the path is
//! `/package.Service/Method`; the status is in the `grpc-status` trailer.

use super::content;
use super::exchange::{Exchange, Head, Message};
use std::borrow::Cow;

/// Bytes kept of one decompressed message.
const MAX_MESSAGE: usize = 1 << 20;

/// One message of a gRPC body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcMessage<'a> {
    /// Sent compressed (with the `grpc-encoding` of its side).
    pub compressed: bool,
    /// Its bytes as carried (the body may have been cut at the keep limit:
    /// then the last message is partial).
    pub data: &'a [u8],
}

/// Whether a message head says gRPC (`content-type: application/grpc…`).
pub fn is_grpc(head: &Head) -> bool {
    head.header("content-type").is_some_and(|t| t.starts_with("application/grpc"))
}

/// The messages of a gRPC body; a partial last one is given as it is.
pub fn messages(mut body: &[u8]) -> Vec<GrpcMessage<'_>> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let end = (5 + len).min(body.len());
        out.push(GrpcMessage { compressed: body[0] & 1 == 1, data: &body[5..end] });
        body = &body[end..];
    }
    out
}

/// One message as the application sent it: decompressed with its side's
/// `grpc-encoding` when it was compressed (bounded), else as carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMessage<'a> {
    /// It was compressed on the wire.
    pub compressed: bool,
    /// Its bytes (decompressed where that worked).
    pub data: Cow<'a, [u8]>,
    /// Why a compressed message was left as carried.
    pub decode_error: Option<String>,
}

/// The messages of a gRPC request or response, decompressed.
pub fn app_messages(m: &Message) -> Vec<AppMessage<'_>> {
    let encoding = m.head.header("grpc-encoding").unwrap_or("identity");
    messages(&m.body)
        .into_iter()
        .map(|g| {
            let (data, decode_error) = match g.compressed {
                false => (Cow::Borrowed(g.data), None),
                true => match content::decode(encoding, g.data, MAX_MESSAGE) {
                    Ok(Some((plain, _))) => (Cow::Owned(plain), None),
                    Ok(None) => (Cow::Borrowed(g.data), Some("compressed with no grpc-encoding".to_string())),
                    Err(e) => (Cow::Borrowed(g.data), Some(e)),
                },
            };
            AppMessage { compressed: g.compressed, data, decode_error }
        })
        .collect()
}

/// Service and method from a request path (`/pkg.Service/Method`).
pub fn service_method(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix('/')?.split_once('/')
}

/// The call's gRPC status and message, from the response's trailers (or its
/// headers, for a trailers-only answer).
pub fn status(e: &Exchange) -> Option<(u32, Option<&str>)> {
    let r = e.response.as_ref()?;
    let code = r.trailer_or_header("grpc-status")?.trim().parse().ok()?;
    Some((code, r.trailer_or_header("grpc-message")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::fields::Fields;

    #[test]
    fn messages_split_and_partial_tails() {
        let mut body = vec![0, 0, 0, 0, 3];
        body.extend(b"abc");
        body.extend([1, 0, 0, 0, 0]);
        body.extend([0, 0, 0, 0, 9, b'x']); // cut short
        let m = messages(&body);
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].compressed, m[0].data), (false, &b"abc"[..]));
        assert_eq!((m[1].compressed, m[1].data), (true, &b""[..]));
        assert_eq!(m[2].data, b"x");
        assert!(messages(&[0, 0, 0]).is_empty());
    }

    #[test]
    fn compressed_messages_are_decompressed_with_their_side_s_encoding() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello grpc").unwrap();
        let gz = gz.finish().unwrap();
        let mut body = vec![1, 0, 0, 0, gz.len() as u8];
        body.extend(&gz);
        body.extend([0, 0, 0, 0, 2, b'o', b'k']);
        let mut m = Message {
            head: Head { headers: Fields::from_iter([("grpc-encoding", "gzip")]), ..Head::default() },
            body,
            ..Message::default()
        };
        let got = app_messages(&m);
        assert_eq!((got[0].compressed, &got[0].data[..]), (true, &b"hello grpc"[..]));
        assert_eq!((got[1].compressed, &got[1].data[..]), (false, &b"ok"[..]));
        m.head.headers.clear();
        assert!(app_messages(&m)[0].decode_error.is_some(), "no encoding said");
    }

    #[test]
    fn paths_and_status() {
        assert_eq!(service_method("/nettap.test.Echo/Say"), Some(("nettap.test.Echo", "Say")));
        assert_eq!(service_method("nope"), None);
        let e = Exchange {
            reset: None,
            request: Default::default(),
            response: Some(Box::new(crate::protocols::exchange::Message {
                head: Head {
                    headers: Fields::from_iter([("grpc-status", "5"), ("grpc-message", "not found")]),
                    ..Head::default()
                },
                ..Default::default()
            })),
        };
        assert_eq!(status(&e), Some((5, Some("not found"))));
    }
}

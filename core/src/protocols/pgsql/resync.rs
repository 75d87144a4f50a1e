//! Finding message boundaries on a connection joined mid-stream. PostgreSQL
//! messages carry no marker, so a chunk (one write) is taken to start at a
//! boundary only when it reads as a run of typed messages whose lengths
//! chain through it (the last may go on past its end), every type one its
//! sender uses, and the first one that begins the kind of unit looked for.

/// Messages longer than this are not taken for a boundary (PostgreSQL's
/// own bound for a frontend message is 1 GiB; a write starting with one
/// that long is far likelier to be anything else).
const MAX_PLAUSIBLE: u32 = 64 << 20;

/// Types a client sends after the startup.
const FRONTEND: &[u8] = b"QPBDESHCFXdcfp";
/// Types a server sends.
const BACKEND: &[u8] = b"RKSZTDCEINAV123nstGHWdcv";

/// The (type, body) of each message of `chunk` in turn, the last body (or
/// a later message's header) cut short where the chunk ends; `None` when the lengths do not chain or a
/// type is not in `types`.
fn messages<'a>(chunk: &'a [u8], types: &[u8]) -> Option<Vec<(u8, &'a [u8])>> {
    let mut out = Vec::new();
    let mut rest = chunk;
    while !rest.is_empty() {
        let kind = rest[0];
        let Some(len) = rest.get(1..5) else {
            // A later message's header cut short by the chunk's end.
            return (!out.is_empty() && types.contains(&kind)).then_some(out);
        };
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes"));
        if !types.contains(&kind) || !(4..=MAX_PLAUSIBLE).contains(&len) {
            return None;
        }
        let end = (1 + len as usize).min(rest.len());
        out.push((kind, &rest[5..end]));
        rest = &rest[end..];
    }
    Some(out)
}

/// The C string (text) at the start of `body` and what follows it.
fn cstr(body: &[u8]) -> Option<(&str, &[u8])> {
    let nul = body.iter().position(|&b| b == 0)?;
    let text = std::str::from_utf8(&body[..nul]).ok().filter(|t| texty(t.as_bytes()))?;
    Some((text, &body[nul + 1..]))
}

/// Whether `text` (possibly cut short) reads as SQL or a name: UTF-8
/// without control characters other than tabs and line ends.
fn texty(text: &[u8]) -> bool {
    let utf8 = match std::str::from_utf8(text) {
        Ok(_) => true,
        // Cut in the middle of a character is fine; a bad byte is not.
        Err(e) => e.error_len().is_none(),
    };
    utf8 && text.iter().all(|&b| b >= 0x20 || b"\t\n\r".contains(&b))
}

/// Whether a client's `chunk` starts a request: a Query, Parse or Bind
/// (what begins a simple query or an extended-protocol batch), then only
/// frontend messages.
pub fn request_start(chunk: &[u8]) -> bool {
    let Some(msgs) = messages(chunk, FRONTEND) else { return false };
    let Some(&(first, body)) = msgs.first() else { return false };
    let len = u32::from_be_bytes(chunk[1..5].try_into().expect("4 bytes")) as usize;
    let whole = body.len() + 4 == len;
    match first {
        // The query text: one C string filling the message.
        b'Q' => match body.iter().position(|&b| b == 0) {
            Some(nul) => whole && nul + 1 == body.len() && texty(&body[..nul]),
            None => !whole && texty(body),
        },
        b'P' => parse_plausible(body, whole),
        // Portal and statement names; a Bind comes with its Execute.
        b'B' => msgs.len() > 1 && cstr(body).and_then(|(_, rest)| cstr(rest)).is_some(),
        _ => false,
    }
}

/// A Parse's body: statement name and query text, then as many parameter
/// types as it says; cut short by the chunk, only inside the query text.
fn parse_plausible(body: &[u8], whole: bool) -> bool {
    let Some((_, rest)) = cstr(body) else { return false };
    let Some((_, rest)) = cstr(rest) else { return !whole && texty(rest) };
    whole && rest.len() >= 2 && rest.len() == 2 + 4 * i16::from_be_bytes([rest[0], rest[1]]).max(0) as usize
}

/// Whether a server's `chunk` starts with an answer whose first message
/// may be `first_types` (or an asynchronous one: a notice, a parameter
/// status, a notification), then only backend messages.
pub fn answer_start(chunk: &[u8], first_types: &[u8]) -> bool {
    let Some(msgs) = messages(chunk, BACKEND) else { return false };
    let Some(&(first, _)) = msgs.first() else { return false };
    first_types.contains(&first) || b"NSA".contains(&first)
}

#[cfg(test)]
mod tests {
    use super::super::session::tests::msg;
    use super::*;

    #[test]
    fn a_request_start_is_found_and_the_middle_of_one_is_not() {
        let q = msg(b'Q', b"SELECT 1\0");
        assert!(request_start(&q));
        assert!(request_start(&q[..9]), "a long query cut at the chunk's end");
        let mut batch = msg(b'P', b"\0SELECT $1\0\0\x01\0\0\0\x17");
        batch.extend(msg(b'B', b"\0\0\0\0\0\x01\0\0\0\x012\0\0"));
        batch.extend(msg(b'D', b"P\0"));
        batch.extend(msg(b'E', b"\0\0\0\0\0"));
        batch.extend(msg(b'S', b""));
        assert!(request_start(&batch));
        // Any other cut of the batch is not a start (nor is a Sync alone).
        for cut in 1..batch.len() {
            let at_bind = cut == msg(b'P', b"\0SELECT $1\0\0\x01\0\0\0\x17").len();
            assert_eq!(request_start(&batch[cut..]), at_bind, "cut at {cut}");
        }
        assert!(!request_start(&msg(b'S', b"")));
        assert!(!request_start(b"Q\0\0\0\x09SEL\xff1\0"), "not text");
        assert!(!request_start(b"Q\0\0\0\x0dSELECT 1\0\0"), "longer than its length");
        assert!(!request_start(b"GET / HTTP/1.1\r\n"));
        assert!(!request_start(&msg(b'T', b"\0\0")), "a server's message");
    }

    #[test]
    fn an_answer_start_is_checked_against_what_waits() {
        let mut answer = msg(b'T', b"\0\x01a\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0");
        answer.extend(msg(b'D', b"\0\x01\0\0\0\x011"));
        answer.extend(msg(b'C', b"SELECT 1\0"));
        answer.extend(msg(b'Z', b"I"));
        assert!(answer_start(&answer, b"TCEI"));
        assert!(!answer_start(&answer, b"1"), "a Parse is answered by ParseComplete");
        assert!(answer_start(&answer[..20], b"TCEI"), "cut short");
        let tail = &answer[answer.len() - 6..];
        assert!(
            !answer_start(tail, b"TCEI"),
            "the end of an earlier answer (a C then Z could be an INSERT's whole answer)"
        );
        assert!(!answer_start(&answer[3..], b"TCEI"));
    }
}

//! Spare messages: once an exchange's record is written, its buffers (head
//! text, fields, body) and its box come back here, and the HTTP/1 parser
//! fills them again for the next message. In steady state an exchange then
//! costs no allocation. Per thread (the parsers and the record writer run
//! on one), and bounded: a few dozen messages, large bodies freed.

use super::exchange::{Exchange, Fields, Head, Message};
use std::cell::RefCell;

/// Messages kept at most (each thread).
const MAX_MESSAGES: usize = 32;
/// Exchange boxes kept at most.
const MAX_BOXES: usize = 16;
/// A body buffer larger than this is freed rather than kept: a spare is for
/// the common small exchange, and 32 of them must stay small.
const MAX_KEPT_BODY: usize = 16 << 10;
/// Likewise for the head's text (start line strings and fields).
const MAX_KEPT_TEXT: usize = 8 << 10;

#[derive(Default)]
struct Spares {
    messages: Vec<Message>,
    /// The allocations themselves are what is kept.
    #[allow(clippy::vec_box)]
    boxes: Vec<Box<Exchange>>,
}

thread_local! {
    static SPARES: RefCell<Spares> = RefCell::new(Spares::default());
}

/// An empty message, reusing a spare's buffers when there is one.
pub fn message() -> Message {
    SPARES.with_borrow_mut(|s| s.messages.pop()).unwrap_or_default()
}

/// An exchange of `request` (no answer yet) in a box, reusing a spare box
/// when there is one: the request moves once, into the box it leaves in.
pub fn exchange(request: Message) -> Box<Exchange> {
    match SPARES.with_borrow_mut(|s| s.boxes.pop()) {
        Some(mut b) => {
            b.request = request;
            b.response = None;
            b.reset = None;
            b
        }
        None => Box::new(Exchange::new(request, None)),
    }
}

/// Gives a written exchange's buffers back.
pub fn give_back(mut e: Box<Exchange>) {
    let request = std::mem::take(&mut e.request);
    let response = e.response.take();
    e.reset = None;
    SPARES.with_borrow_mut(|s| {
        for m in std::iter::once(request).chain(response) {
            if s.messages.len() < MAX_MESSAGES {
                s.messages.push(emptied(m));
            }
        }
        if s.boxes.len() < MAX_BOXES {
            s.boxes.push(e);
        }
    });
}

/// `m` with nothing in it, its buffers kept unless they grew large: built
/// from `Message::default()`, so no field of the old message survives but
/// the emptied buffers.
fn emptied(m: Message) -> Message {
    let Message { head, body, trailers, .. } = m;
    let Head { method, target, reason, headers, .. } = head;
    let text = |mut t: String| {
        t.clear();
        if t.capacity() > MAX_KEPT_TEXT {
            t = String::new();
        }
        t
    };
    let fields = |mut f: Fields| {
        f.clear_within(MAX_KEPT_TEXT);
        f
    };
    let mut body = if body.capacity() > MAX_KEPT_BODY { Vec::new() } else { body };
    body.clear();
    Message {
        head: Head {
            method: text(method),
            target: text(target),
            reason: text(reason),
            headers: fields(headers),
            ..Head::default()
        },
        body,
        trailers: fields(trailers),
        ..Message::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(body: usize) -> Message {
        Message {
            head: Head {
                method: "POST".into(),
                target: "/secret?token=1".into(),
                status: 200,
                reason: "OK".into(),
                version: crate::protocols::exchange::Version::Http10,
                headers: Fields::from_iter([("Cookie", "sid=1")]),
                headers_incomplete: true,
            },
            body: vec![b'x'; body],
            body_truncated: 3,
            decode_error: Some("bad".into()),
            trailers: Fields::from_iter([("x-sum", "9")]),
            start_ts: 1,
            end_ts: 2,
        }
    }

    #[test]
    fn a_given_back_message_comes_out_empty_with_its_buffers() {
        let e = Exchange { request: full(100), response: Some(full(100)), reset: Some(8) };
        give_back(Box::new(e));
        let m = message();
        assert_eq!(m, Message::default(), "nothing of the old message is readable");
        assert!(m.body.capacity() >= 100 && m.head.target.capacity() >= 15, "buffers kept");
        let b = exchange(Message::default());
        assert_eq!(*b, Exchange::default());
    }

    #[test]
    fn large_buffers_are_freed_and_the_spares_are_bounded() {
        give_back(Box::new(Exchange { request: full(MAX_KEPT_BODY + 1), response: None, reset: None }));
        assert_eq!(message().body.capacity(), 0);
        for _ in 0..MAX_MESSAGES * 2 {
            give_back(Box::new(Exchange { request: full(10), response: Some(full(10)), reset: None }));
        }
        SPARES.with_borrow(|s| {
            assert_eq!(s.messages.len(), MAX_MESSAGES);
            assert_eq!(s.boxes.len(), MAX_BOXES);
        });
    }
}

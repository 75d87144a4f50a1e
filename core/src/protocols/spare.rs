//! Spare messages: once an exchange's record is written, its buffers (head
//! text, fields, body), their boxes and the exchange's box come back here,
//! and the parsers fill them again for the next message. In steady state an
//! exchange then costs no allocation, and a message moves between parser,
//! exchange and writer as a pointer (moving the ~270-byte struct cost ~30
//! instructions a time, dozens of times an exchange). Per thread (the
//! parsers and the record writer run on one), and bounded: a few dozen
//! messages, large bodies freed.

use super::exchange::{Exchange, Head, Message};
use std::cell::RefCell;

/// Messages kept at most (each thread).
const MAX_MESSAGES: usize = 32;
/// Exchange boxes kept at most (each holds an emptied request).
const MAX_BOXES: usize = 16;
/// A body buffer larger than this is freed rather than kept: a spare is for
/// the common small exchange, and 32 of them must stay small.
const MAX_KEPT_BODY: usize = 16 << 10;
/// Likewise for the head's text (start line strings and fields).
const MAX_KEPT_TEXT: usize = 8 << 10;

#[derive(Default)]
struct Spares {
    /// The allocations themselves are what is kept.
    #[allow(clippy::vec_box)]
    messages: Vec<Box<Message>>,
    #[allow(clippy::vec_box)]
    boxes: Vec<Box<Exchange>>,
}

thread_local! {
    static SPARES: RefCell<Spares> = RefCell::new(Spares::default());
}

/// An empty message, reusing a spare's box and buffers when there is one.
pub fn message() -> Box<Message> {
    SPARES.with_borrow_mut(|s| s.messages.pop()).unwrap_or_default()
}

/// An exchange of `request` (no answer yet) in a box, reusing a spare box
/// when there is one.
pub fn exchange(request: Box<Message>) -> Box<Exchange> {
    SPARES.with_borrow_mut(|s| match s.boxes.pop() {
        Some(mut b) => {
            let emptied = std::mem::replace(&mut b.request, request);
            if s.messages.len() < MAX_MESSAGES {
                s.messages.push(emptied);
            }
            b.response = None;
            b.reset = None;
            b
        }
        None => Box::new(Exchange::new(request, None)),
    })
}

/// Gives a written exchange's buffers back: its request is emptied in its
/// box, which keeps it.
pub fn give_back(mut e: Box<Exchange>) {
    empty(&mut e.request);
    let response = e.response.take();
    e.reset = None;
    SPARES.with_borrow_mut(|s| {
        if let Some(mut m) = response {
            if s.messages.len() < MAX_MESSAGES {
                empty(&mut m);
                s.messages.push(m);
            }
        }
        if s.boxes.len() < MAX_BOXES {
            s.boxes.push(e);
        }
    });
}

/// Empties `m` in place, its buffers kept unless they grew large. Every
/// field is named (no `..`), so a field added to `Message` or `Head` fails
/// to compile here until it is emptied too: nothing of the old message
/// survives but the emptied buffers.
fn empty(m: &mut Message) {
    let Message { head, body, body_truncated, decode_error, trailers, start_ts, end_ts } = m;
    let Head { method, target, status, reason, version, headers, headers_incomplete } = head;
    for t in [method, target, reason] {
        t.clear();
        if t.capacity() > MAX_KEPT_TEXT {
            *t = String::new();
        }
    }
    *status = 0;
    *version = Default::default();
    headers.clear_within(MAX_KEPT_TEXT);
    *headers_incomplete = false;
    if body.capacity() > MAX_KEPT_BODY {
        *body = Vec::new();
    }
    body.clear();
    *body_truncated = 0;
    *decode_error = None;
    trailers.clear_within(MAX_KEPT_TEXT);
    *start_ts = 0;
    *end_ts = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::exchange::Fields;

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
        let e =
            Exchange { request: Box::new(full(100)), response: Some(Box::new(full(100))), reset: Some(8) };
        give_back(Box::new(e));
        let m = message();
        assert_eq!(*m, Message::default(), "nothing of the old message is readable");
        assert!(m.body.capacity() >= 100 && m.head.target.capacity() >= 15, "buffers kept");
        let b = exchange(Box::default());
        assert_eq!(*b, Exchange::default());
        // The request emptied in its box comes out when that box is reused.
        let request = message();
        assert_eq!(*request, Message::default());
        assert!(request.body.capacity() >= 100 && request.head.target.capacity() >= 15, "buffers kept");
    }

    #[test]
    fn large_buffers_are_freed_and_the_spares_are_bounded() {
        give_back(Box::new(Exchange {
            request: Box::new(full(MAX_KEPT_BODY + 1)),
            response: None,
            reset: None,
        }));
        drop(exchange(Box::default()));
        assert_eq!(message().body.capacity(), 0);
        for _ in 0..MAX_MESSAGES * 2 {
            let (request, response) = (Box::new(full(10)), Some(Box::new(full(10))));
            give_back(Box::new(Exchange { request, response, reset: None }));
        }
        SPARES.with_borrow(|s| {
            assert_eq!(s.messages.len(), MAX_MESSAGES);
            assert_eq!(s.boxes.len(), MAX_BOXES);
        });
    }
}

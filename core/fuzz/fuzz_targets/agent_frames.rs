//! Arbitrary bytes on the agent socket, fed in pieces of arbitrary sizes:
//! the frame reader never panics, and every data frame it returns has a
//! payload within the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettap_core::agent::{AgentEvent, FrameReader, MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let step = usize::from(cut).max(1);
    let mut r = FrameReader::new();
    for piece in rest.chunks(step) {
        r.push(piece);
        loop {
            match r.next_frame() {
                Ok(Some(f)) => {
                    if let AgentEvent::Data(c) = f.event {
                        assert!(!c.payload.is_empty() && c.payload.len() <= MAX_PAYLOAD);
                    }
                }
                Ok(None) => break,
                Err(_) => return, // the sensor closes the connection here
            }
        }
    }
    let _ = r.finish();
});

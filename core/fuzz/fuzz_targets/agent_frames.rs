//! Arbitrary bytes on the agent socket, fed in pieces of arbitrary sizes:
//! the frame reader never panics, and every data frame it returns has a
//! payload within the limit. The same bytes as one frame's body are read
//! as prost reads them: refused by both, or the frame prost decodes (its
//! canonical encoding, read back) equals the frame read in place.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use nettap_core::agent::{decode, AgentEvent, FrameError, FrameReader, MAX_PAYLOAD};
use nettap_shared_proto::v1 as pb;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let ours = decode(Bytes::copy_from_slice(data));
    match pb::AgentFrame::decode(data) {
        Err(_) => assert!(matches!(ours, Err(FrameError::Decode(_))), "prost refuses, read in place: {ours:?}"),
        Ok(f) => assert_eq!(ours, decode(Bytes::from(f.encode_to_vec())), "prost reads {f:?}"),
    }

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

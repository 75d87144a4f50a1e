//! Arbitrary ring-buffer bytes: decoding never panics or reads out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nettap_core::events::decode(data);
});

//! Arbitrary bytes fed to both directions of a MySQL session (db_driver.rs),
//! half the time after a greeting and a handshake so commands are reached,
//! and (the first byte's second bit) to a session joined mid-stream, or
//! (its third bit alone) to one that goes on after TLS (the login next); the
//! mid-stream boundary checks get the bytes whole.
#![no_main]

#[path = "db_driver.rs"]
mod db_driver;

use libfuzzer_sys::fuzz_target;
use nettap_core::protocols::db::DbSession;
use nettap_core::protocols::mysql::{resync, MySession};

fuzz_target!(|data: &[u8]| {
    let mut hello = vec![0x26, 0, 0, 1, 0x08, 0x82, 0x0f, 0x01];
    hello.extend([0; 28]);
    hello.extend(b"u\0\0d\0");
    hello[0] = (hello.len() - 4) as u8;
    let prelude: [(bool, &[u8]); 3] =
        [(false, b"\x0b\0\0\0\x0a5.5.5-x\0\0\0\0"), (true, &hello), (false, b"\x07\0\0\x02\0\0\0\x02\0\0\0")];
    resync::request_start(data);
    resync::answer_start(data);
    let session = match data.first().map(|b| b & 6) {
        Some(2 | 6) => MySession::midstream(db_driver::LIMITS),
        Some(4) => MySession::after_tls(db_driver::LIMITS),
        _ => MySession::new(db_driver::LIMITS),
    };
    db_driver::drive(DbSession::Mysql(session), data, 3, &prelude);
});

//! Arbitrary bytes fed to both directions of a PostgreSQL session
//! (db_driver.rs), half the time after a valid startup so the typed messages
//! are reached, and (the first byte's second bit) to a session joined
//! mid-stream; the mid-stream boundary checks get the bytes whole.
#![no_main]

#[path = "db_driver.rs"]
mod db_driver;

use libfuzzer_sys::fuzz_target;
use nettap_core::protocols::db::DbSession;
use nettap_core::protocols::pgsql::{resync, PgSession};

const STARTUP: &[u8] = b"\0\0\0\x1d\0\x03\0\0user\0u\0database\0d\0\0";

fuzz_target!(|data: &[u8]| {
    resync::request_start(data);
    resync::answer_start(data, b"TCEI");
    let session = if data.first().is_some_and(|b| b & 2 != 0) {
        PgSession::midstream(db_driver::LIMITS)
    } else {
        PgSession::new(db_driver::LIMITS)
    };
    db_driver::drive(DbSession::Pgsql(session), data, 3, &[(true, STARTUP)]);
});

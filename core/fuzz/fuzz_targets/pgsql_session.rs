//! Arbitrary bytes fed to both directions of a PostgreSQL session
//! (db_driver.rs), half the time after a valid startup so the typed messages
//! are reached.
#![no_main]

#[path = "db_driver.rs"]
mod db_driver;

use libfuzzer_sys::fuzz_target;
use nettap_core::protocols::db::DbSession;
use nettap_core::protocols::pgsql::PgSession;

const STARTUP: &[u8] = b"\0\0\0\x1d\0\x03\0\0user\0u\0database\0d\0\0";

fuzz_target!(|data: &[u8]| {
    db_driver::drive(DbSession::Pgsql(PgSession::new(db_driver::LIMITS)), data, 3, &[(true, STARTUP)]);
});

//! Arbitrary bytes fed to both directions of a MongoDB session (db_driver.rs).
#![no_main]

#[path = "db_driver.rs"]
mod db_driver;

use libfuzzer_sys::fuzz_target;
use nettap_core::protocols::db::DbSession;
use nettap_core::protocols::mongodb::MongoSession;

fuzz_target!(|data: &[u8]| {
    db_driver::drive(DbSession::Mongodb(MongoSession::new(db_driver::LIMITS)), data, 1, &[]);
});

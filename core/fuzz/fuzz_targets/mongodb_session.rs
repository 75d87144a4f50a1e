//! Arbitrary bytes fed to both directions of a MongoDB session (db_driver.rs),
//! and decoded as one BSON document and written as relaxed Extended JSON
//! (random bytes seldom make a message whose documents go deep).
#![no_main]

#[path = "db_driver.rs"]
mod db_driver;

use libfuzzer_sys::fuzz_target;
use nettap_core::protocols::db::DbSession;
use nettap_core::protocols::mongodb::{bson, MongoSession};

fuzz_target!(|data: &[u8]| {
    if let Some((doc, _)) = bson::document(data) {
        serde_json::to_string(&doc).expect("a document always serializes");
    }
    db_driver::drive(DbSession::Mongodb(MongoSession::new(db_driver::LIMITS)), data, 1, &[]);
});

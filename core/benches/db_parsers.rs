//! Parser throughput on one core for the database and queue protocols
//! (Redis, PostgreSQL, MySQL, Kafka, MongoDB): a realistic conversation repeated, fed to a session
//! in 4 KiB pieces per direction in conversation order, as the stream layer
//! would. Counts protocol messages (both directions) and bytes.
//!
//!     cargo bench -p nettap-core --bench db_parsers
//!
//! Prints a Markdown table for docs/benchmarks.md.

use nettap_core::protocols::db::{DbOutput, DbSession};
use nettap_core::protocols::exchange::Limits;
use nettap_core::protocols::kafka::{batch::encode, KafkaSession};
use nettap_core::protocols::mongodb::MongoSession;
use nettap_core::protocols::mysql::MySession;
use nettap_core::protocols::pgsql::PgSession;
use nettap_core::protocols::redis::RedisSession;
use std::time::{Duration, Instant};

/// (client bytes, server bytes, messages) of one unit of work.
type Unit = (Vec<u8>, Vec<u8>, u64);

/// A protocol's name, workload, session maker, opening bytes and unit.
type Case = (&'static str, &'static str, Box<dyn Fn() -> DbSession>, (Vec<u8>, Vec<u8>), Unit);

fn redis_unit() -> Unit {
    let value = "v".repeat(100);
    let mut c = Vec::new();
    let mut s = Vec::new();
    for i in 0..10 {
        let key = format!("user:{i:04}");
        c.extend(format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$100\r\n{value}\r\n", key.len()).bytes());
        c.extend(format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).bytes());
        s.extend(b"+OK\r\n");
        s.extend(format!("$100\r\n{value}\r\n").bytes());
    }
    (c, s, 40)
}

/// A BSON document of string, int32 and double fields (`Err` ints, `Ok`
/// strings; a `f64` as its bits under a name starting with `f`).
fn bson(fields: &[(&str, Result<&str, i32>)]) -> Vec<u8> {
    let mut d = Vec::new();
    for (k, v) in fields {
        d.push(if v.is_ok() { 2 } else { 0x10 });
        d.extend(k.as_bytes());
        d.push(0);
        match v {
            Ok(s) => {
                d.extend((s.len() as i32 + 1).to_le_bytes());
                d.extend(s.as_bytes());
                d.push(0);
            }
            Err(n) => d.extend(n.to_le_bytes()),
        }
    }
    let mut out = ((d.len() + 5) as i32).to_le_bytes().to_vec();
    out.extend(d);
    out.push(0);
    out
}

/// An OP_MSG: a body section, then one document sequence if `docs`.
fn op_msg(id: i32, to: i32, body: &[u8], docs: Option<(&str, &[Vec<u8>])>) -> Vec<u8> {
    let mut b = vec![0, 0, 0, 0, 0];
    b.extend(body);
    if let Some((name, docs)) = docs {
        b.push(1);
        b.extend(((4 + name.len() + 1 + docs.iter().map(Vec::len).sum::<usize>()) as i32).to_le_bytes());
        b.extend(name.as_bytes());
        b.push(0);
        docs.iter().for_each(|d| b.extend(d));
    }
    let mut m = ((16 + b.len()) as i32).to_le_bytes().to_vec();
    m.extend(id.to_le_bytes());
    m.extend(to.to_le_bytes());
    m.extend(2013i32.to_le_bytes());
    m.extend(b);
    m
}

fn mongo_unit() -> Unit {
    // An insert of 10 documents (a 100 B value each) as a document
    // sequence, and a find answered with those 10 documents.
    let value = "v".repeat(100);
    let docs: Vec<Vec<u8>> = (0..10).map(|i| bson(&[("_id", Err(i)), ("value", Ok(&value))])).collect();
    let mut c = op_msg(
        1,
        0,
        &bson(&[("insert", Ok("items")), ("ordered", Err(1)), ("$db", Ok("shop"))]),
        Some(("documents", &docs)),
    );
    c.extend(op_msg(2, 0, &bson(&[("find", Ok("items")), ("$db", Ok("shop"))]), None));
    let mut s = op_msg(3, 1, &bson(&[("n", Err(10)), ("ok", Err(1))]), None);
    let mut batch = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        batch.push(3);
        batch.extend(i.to_string().as_bytes());
        batch.push(0);
        batch.extend(d);
    }
    let mut array = ((batch.len() + 5) as i32).to_le_bytes().to_vec();
    array.extend(batch);
    array.push(0);
    let mut cursor = vec![4];
    cursor.extend(b"firstBatch\0");
    cursor.extend(array);
    let mut reply = bson(&[("ns", Ok("shop.items")), ("ok", Err(1))]);
    let at = reply.len() - 1;
    reply.splice(at..at, cursor);
    let n = reply.len() as i32;
    reply[..4].copy_from_slice(&n.to_le_bytes());
    s.extend(op_msg(4, 2, &reply, None));
    (c, s, 4)
}

fn pg_msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend(((body.len() + 4) as u32).to_be_bytes());
    m.extend(body);
    m
}

fn pg_startup() -> (Vec<u8>, Vec<u8>) {
    let body = b"\0\x03\0\0user\0bench\0database\0shop\0\0";
    let mut c = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    c.extend(body);
    let mut s = pg_msg(b'R', &0u32.to_be_bytes());
    s.extend(pg_msg(b'Z', b"I"));
    (c, s)
}

fn pg_unit() -> Unit {
    // Parse, Bind (one text parameter), Describe, Execute, Sync; 10 rows of 2 columns.
    let mut c = pg_msg(b'P', b"\0SELECT id, name FROM items WHERE owner = $1\0\0\0");
    c.extend(pg_msg(b'B', b"\0\0\0\0\0\x01\0\0\0\x05alice\0\0"));
    c.extend(pg_msg(b'D', b"P\0"));
    c.extend(pg_msg(b'E', b"\0\0\0\0\0"));
    c.extend(pg_msg(b'S', b""));
    let mut s = pg_msg(b'1', b"");
    s.extend(pg_msg(b'2', b""));
    let mut rd = 2i16.to_be_bytes().to_vec();
    for (name, oid) in [("id", 23u32), ("name", 25)] {
        rd.extend(name.as_bytes());
        rd.extend([0, 0, 0, 0, 0, 0, 0]);
        rd.extend(oid.to_be_bytes());
        rd.extend([0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0]);
    }
    s.extend(pg_msg(b'T', &rd));
    for i in 0..10 {
        let id = format!("{i}");
        let mut row = 2i16.to_be_bytes().to_vec();
        for v in [id.as_str(), "a name of some length"] {
            row.extend((v.len() as i32).to_be_bytes());
            row.extend(v.as_bytes());
        }
        s.extend(pg_msg(b'D', &row));
    }
    s.extend(pg_msg(b'C', b"SELECT 10\0"));
    s.extend(pg_msg(b'Z', b"I"));
    (c, s, 5 + 15)
}

fn my_packet(seq: u8, body: &[u8]) -> Vec<u8> {
    let mut p = (body.len() as u32).to_le_bytes()[..3].to_vec();
    p.push(seq);
    p.extend(body);
    p
}

fn my_login() -> (Vec<u8>, Vec<u8>) {
    let greeting = my_packet(0, b"\x0a5.5.5-10.11\0\x01\0\0\0abcdefgh\0\xff\xf7");
    let mut hello = (0x0100_8208u32).to_le_bytes().to_vec(); // protocol 41, secure connection, with db, deprecate EOF
    hello.extend([0; 28]);
    hello.extend(b"bench\0\x00shop\0");
    (my_packet(1, &hello), [greeting, my_packet(2, &[0, 0, 0, 2, 0, 0, 0])].concat())
}

fn my_unit() -> Unit {
    let c = my_packet(0, b"\x03SELECT id, name FROM items WHERE owner = 'alice'");
    let mut s = my_packet(1, &[2]);
    for name in ["id", "name"] {
        let mut col = Vec::new();
        for part in ["def", "shop", "items", "items", name, name] {
            col.push(part.len() as u8);
            col.extend(part.as_bytes());
        }
        col.extend([0x0c, 0x21, 0, 0x0b, 0, 0, 0, 253, 0, 0, 0, 0, 0]);
        s.extend(my_packet(2, &col));
    }
    for i in 0..10u8 {
        let mut row = vec![1, b'0' + i];
        row.push(21);
        row.extend(b"a name of some length");
        s.extend(my_packet(3 + i, &row));
    }
    s.extend(my_packet(13, &[0xfe, 0, 0, 2, 0, 0, 0]));
    (c, s, 1 + 14)
}

fn uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn sized(body: Vec<u8>) -> Vec<u8> {
    let mut m = (body.len() as u32).to_be_bytes().to_vec();
    m.extend(body);
    m
}

fn kafka_unit() -> Unit {
    // Produce v9 (flexible): one topic, one partition, a batch of 10
    // uncompressed records (16 B key, 100 B value, one header); its answer.
    let value = [b'v'; 100];
    let keys: Vec<String> = (0..10).map(|i| format!("order-{i:010}")).collect();
    const HEADERS: &[(&str, &[u8])] = &[("trace", b"abc")];
    let records: Vec<_> = keys.iter().map(|k| (Some(k.as_bytes()), Some(&value[..]), HEADERS)).collect();
    let batch = encode::batch(0, 1000, 0, &records);
    let mut c = vec![0, 0, 0, 9, 0, 0, 0, 7, 0, 5];
    c.extend(b"bench\0\0\xff\xff\0\0\x75\x30\x02\x07orders\x02\0\0\0\0");
    uvarint(&mut c, batch.len() as u64 + 1);
    c.extend(&batch);
    c.extend([0, 0, 0]);
    let mut s = vec![0, 0, 0, 7, 0, 2, 7];
    s.extend(b"orders\x02\0\0\0\0\0\0");
    s.extend(42i64.to_be_bytes());
    s.extend((-1i64).to_be_bytes());
    s.extend(0i64.to_be_bytes());
    s.extend([1, 0, 0, 0, 0, 0, 0, 0, 0]);
    (sized(c), sized(s), 2)
}

/// Feeds `units` repetitions of `unit` after `opening`; (seconds, bytes, messages).
fn run(
    mut session: DbSession,
    opening: (Vec<u8>, Vec<u8>),
    unit: &Unit,
    units: usize,
) -> (Duration, u64, u64) {
    let mut out = Vec::new();
    let mut exchanges = 0u64;
    let mut feed = |s: &mut DbSession, client: bool, bytes: &[u8], out: &mut Vec<DbOutput>| {
        for piece in bytes.chunks(4096) {
            s.feed(client, piece, 1, out);
        }
        exchanges += out.iter().filter(|o| matches!(o, DbOutput::Exchange(_))).count() as u64;
        assert!(out.iter().all(|o| matches!(o, DbOutput::Exchange(_))), "the parser gave up");
        out.clear();
    };
    // MySQL's server speaks first; the others' clients do.
    let mysql = matches!(session, DbSession::Mysql(_));
    if mysql {
        feed(&mut session, false, &opening.1[..opening.1.len() - 11], &mut out);
        feed(&mut session, true, &opening.0, &mut out);
        feed(&mut session, false, &opening.1[opening.1.len() - 11..], &mut out);
    } else {
        feed(&mut session, true, &opening.0, &mut out);
        feed(&mut session, false, &opening.1, &mut out);
    }
    // Batches of 64 units per direction: pipelined, as a busy connection is.
    let batch = 64;
    let client: Vec<u8> = unit.0.repeat(batch);
    let server: Vec<u8> = unit.1.repeat(batch);
    let start = Instant::now();
    for _ in 0..units / batch {
        feed(&mut session, true, &client, &mut out);
        feed(&mut session, false, &server, &mut out);
    }
    let took = start.elapsed();
    let n = (units / batch * batch) as u64;
    assert!(exchanges >= n, "{exchanges} exchanges for {n} units");
    (took, n * (unit.0.len() + unit.1.len()) as u64, n * unit.2)
}

fn main() {
    let limits = Limits::default();
    let units = 64 * 2000;
    println!("| protocol | workload | MB/s | messages/s |");
    println!("|---|---|---:|---:|");
    let cases: [Case; 5] = [
        (
            "Redis",
            "pipelined SET (100 B value) + GET",
            Box::new(move || DbSession::Redis(RedisSession::new(limits))),
            (Vec::new(), Vec::new()),
            redis_unit(),
        ),
        (
            "PostgreSQL",
            "Parse/Bind/Describe/Execute/Sync, 10 rows × 2 columns",
            Box::new(move || DbSession::Pgsql(PgSession::new(limits))),
            pg_startup(),
            pg_unit(),
        ),
        (
            "MySQL",
            "COM_QUERY, 10 rows × 2 columns (deprecate-EOF)",
            Box::new(move || DbSession::Mysql(MySession::new(limits))),
            my_login(),
            my_unit(),
        ),
        (
            "Kafka",
            "Produce v9, a batch of 10 records (100 B values, a header) + its answer",
            Box::new(move || DbSession::Kafka(KafkaSession::new(limits))),
            (Vec::new(), Vec::new()),
            kafka_unit(),
        ),
        (
            "MongoDB",
            "OP_MSG insert of 10 documents (100 B values) + find returning them",
            Box::new(move || DbSession::Mongodb(MongoSession::new(limits))),
            (Vec::new(), Vec::new()),
            mongo_unit(),
        ),
    ];
    for (name, workload, make, opening, unit) in cases {
        let (took, bytes, messages) = run(make(), opening, &unit, units);
        let s = took.as_secs_f64();
        println!("| {name} | {workload} | {:.0} | {:.0} |", bytes as f64 / s / 1e6, messages as f64 / s);
    }
}

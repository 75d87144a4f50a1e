//! The bounded queue application threads copy plaintext into, and the one
//! background thread that sends it to the sensor. An application thread
//! only takes a short lock; when the queue is full or no sensor is
//! connected, the chunk is dropped and counted, and the count rides on the
//! next frame that gets through.

use nettap_shared_proto::v1 as pb;
use prost::Message;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Payload bytes the queue holds at most.
pub const QUEUE_BYTES: usize = 16 << 20;
/// Largest payload in one frame (the sensor accepts up to 256 KiB).
pub const FRAME_PAYLOAD: usize = 64 << 10;
/// Connections whose plaintext offsets are remembered.
const MAX_CONNS: usize = 16384;
/// How long the sender lets chunks gather after being woken.
const BATCH_DELAY: Duration = Duration::from_millis(1);
/// How often a missing sensor is looked for again.
const RECONNECT: Duration = Duration::from_secs(1);

/// A connection's endpoints as the socket reports them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Local address bytes (4 or 16; empty when unknown).
    pub local_ip: Vec<u8>,
    /// Local port.
    pub local_port: u16,
    /// Remote address bytes.
    pub remote_ip: Vec<u8>,
    /// Remote port.
    pub remote_port: u16,
    /// An SSLEngine's identity (no endpoints then), else 0.
    pub object_id: u64,
    /// The port the engine was created with.
    pub peer_port: u16,
}

/// One instrumented call's plaintext.
#[derive(Debug)]
pub struct Chunk {
    /// Connection.
    pub conn: ConnKey,
    /// `pb::Role`.
    pub role: i32,
    /// `pb::Direction`.
    pub direction: i32,
    /// `pb::AgentHook`.
    pub hook: i32,
    /// CLOCK_BOOTTIME, ns.
    pub ts_boot_ns: u64,
    /// Thread id.
    pub tid: u64,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<pb::AgentData>,
    bytes: usize,
    /// Plaintext offsets per connection: [send, recv].
    seqs: HashMap<ConnKey, [u64; 2]>,
}

/// State shared by application threads and the sender thread.
#[derive(Debug)]
pub struct Sender {
    queue: Mutex<Queue>,
    ready: Condvar,
    connected: AtomicBool,
    dropped_chunks: AtomicU64,
    dropped_bytes: AtomicU64,
    /// A batch taken from the queue is being written.
    sending: AtomicBool,
    socket: PathBuf,
}

fn endpoint(ip: &[u8], port: u16) -> Option<pb::Endpoint> {
    (!ip.is_empty()).then(|| pb::Endpoint { ip: ip.to_vec(), port: port.into() })
}

impl Sender {
    /// A sender for the sensor at `socket` (not yet running).
    pub fn new(socket: PathBuf) -> Sender {
        Sender {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            connected: AtomicBool::new(false),
            dropped_chunks: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
            sending: AtomicBool::new(false),
            socket,
        }
    }

    /// Whether a chunk of `len` bytes would be queued now (so the caller can
    /// skip copying it out of the JVM when it would not).
    pub fn wants(&self, len: usize) -> bool {
        self.connected.load(Ordering::Relaxed) && len <= QUEUE_BYTES
    }

    /// Queues `payload` (empty when the caller did not copy it: then it is
    /// counted as dropped) and advances the connection's offset either way.
    pub fn push(&self, c: Chunk, len: usize, payload: Vec<u8>) {
        let Ok(mut q) = self.queue.lock() else { return };
        if q.seqs.len() >= MAX_CONNS && !q.seqs.contains_key(&c.conn) {
            q.seqs.clear(); // rare: offsets restart, the sensor sees a new stream
        }
        let dir = (c.direction == pb::Direction::Recv as i32) as usize;
        let seq = {
            let s = &mut q.seqs.entry(c.conn.clone()).or_default()[dir];
            let seq = *s;
            *s += len as u64;
            seq
        };
        if payload.len() != len || q.bytes + len > QUEUE_BYTES || !self.connected.load(Ordering::Relaxed) {
            drop(q);
            self.dropped_chunks.fetch_add(1, Ordering::Relaxed);
            self.dropped_bytes.fetch_add(len as u64, Ordering::Relaxed);
            return;
        }
        let conn = pb::AgentConn {
            local: endpoint(&c.conn.local_ip, c.conn.local_port),
            remote: endpoint(&c.conn.remote_ip, c.conn.remote_port),
            role: c.role,
            fd: -1,
            object_id: c.conn.object_id,
            peer_port: c.conn.peer_port.into(),
        };
        // Only a sender that may be asleep needs waking (a wake is a system call).
        let was_empty = q.frames.is_empty();
        for (i, part) in payload.chunks(FRAME_PAYLOAD).enumerate() {
            q.bytes += part.len();
            q.frames.push_back(pb::AgentData {
                conn: Some(conn.clone()),
                direction: c.direction,
                hook: c.hook,
                seq: seq + (i * FRAME_PAYLOAD) as u64,
                ts_boot_ns: c.ts_boot_ns,
                tid: c.tid,
                payload: part.to_vec(),
            });
        }
        drop(q);
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// The sender thread's loop: connect, say hello, send what is queued;
    /// on any failure, drop what was being sent and connect again later.
    pub fn run(&self, hello: pb::AgentHello) -> ! {
        let mut stream: Option<UnixStream> = None;
        let mut said_absent = false;
        loop {
            if stream.is_none() {
                match self.connect(&hello) {
                    Ok(s) => {
                        stream = Some(s);
                        self.connected.store(true, Ordering::Relaxed);
                        said_absent = false;
                    }
                    Err(e) => {
                        if !said_absent {
                            crate::log(&format!(
                                "sensor not reachable at {} ({e}); capture is dropped until it is",
                                self.socket.display()
                            ));
                            said_absent = true;
                        }
                        std::thread::sleep(RECONNECT);
                        continue;
                    }
                }
            }
            let woke = {
                let Ok(q) = self.queue.lock() else { self.idle() };
                if q.frames.is_empty() {
                    match self.ready.wait_timeout(q, Duration::from_millis(500)) {
                        Ok((q, _)) => !q.frames.is_empty(),
                        Err(_) => self.idle(),
                    }
                } else {
                    false
                }
            };
            if woke {
                // Let a burst gather: one write and one wake of the sensor
                // for many chunks instead of one each.
                std::thread::sleep(BATCH_DELAY);
            }
            let batch = {
                let Ok(mut q) = self.queue.lock() else { self.idle() };
                q.bytes = 0;
                self.sending.store(true, Ordering::Release);
                std::mem::take(&mut q.frames)
            };
            if batch.is_empty() {
                self.sending.store(false, Ordering::Release);
                continue;
            }
            let mut buf = Vec::with_capacity(batch.iter().map(|d| d.payload.len() + 64).sum());
            let (mut chunks, mut bytes) = (0u64, 0u64);
            for d in batch {
                chunks += 1;
                bytes += d.payload.len() as u64;
                let frame = pb::AgentFrame {
                    kind: Some(pb::agent_frame::Kind::Data(d)),
                    dropped_chunks: self.dropped_chunks.swap(0, Ordering::Relaxed),
                    dropped_bytes: self.dropped_bytes.swap(0, Ordering::Relaxed),
                };
                let _ = frame.encode_length_delimited(&mut buf);
            }
            if let Err(e) = stream.as_mut().expect("connected").write_all(&buf) {
                crate::log(&format!("lost the sensor at {} ({e}); reconnecting", self.socket.display()));
                self.connected.store(false, Ordering::Relaxed);
                stream = None;
                self.dropped_chunks.fetch_add(chunks, Ordering::Relaxed);
                self.dropped_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            self.sending.store(false, Ordering::Release);
        }
    }

    /// Waits (at most `limit`) until what is queued has been written, so a
    /// JVM that exits right after its last request still has it captured.
    pub fn flush(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.connected.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
            let empty = self.queue.lock().map(|q| q.frames.is_empty()).unwrap_or(true);
            if empty && !self.sending.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn connect(&self, hello: &pb::AgentHello) -> std::io::Result<UnixStream> {
        let mut s = UnixStream::connect(&self.socket)?;
        let frame =
            pb::AgentFrame { kind: Some(pb::agent_frame::Kind::Hello(hello.clone())), ..Default::default() };
        s.write_all(&frame.encode_length_delimited_to_vec())?;
        Ok(s)
    }

    /// A poisoned lock (a panic while holding it) ends sending for good.
    fn idle(&self) -> ! {
        self.connected.store(false, Ordering::Relaxed);
        crate::log("giving up: the queue is unusable; the JVM runs on without capture");
        loop {
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(dir: pb::Direction) -> Chunk {
        Chunk {
            conn: ConnKey {
                local_ip: vec![127, 0, 0, 1],
                local_port: 1,
                remote_ip: vec![127, 0, 0, 1],
                remote_port: 2,
                object_id: 0,
                peer_port: 0,
            },
            role: pb::Role::Client as i32,
            direction: dir as i32,
            hook: pb::AgentHook::SslSocketWrite as i32,
            ts_boot_ns: 0,
            tid: 0,
        }
    }

    #[test]
    fn offsets_advance_even_when_dropped_and_big_chunks_split() {
        let s = Sender::new("/nonexistent".into());
        s.push(chunk(pb::Direction::Send), 10, Vec::new());
        assert_eq!(s.dropped_chunks.load(Ordering::Relaxed), 1);
        assert_eq!(s.dropped_bytes.load(Ordering::Relaxed), 10);
        s.connected.store(true, Ordering::Relaxed);
        let big = vec![7u8; FRAME_PAYLOAD + 5];
        s.push(chunk(pb::Direction::Send), big.len(), big);
        s.push(chunk(pb::Direction::Recv), 3, vec![1, 2, 3]);
        let q = s.queue.lock().unwrap();
        let seqs: Vec<(i32, u64, usize)> =
            q.frames.iter().map(|d| (d.direction, d.seq, d.payload.len())).collect();
        assert_eq!(seqs, vec![(0, 10, FRAME_PAYLOAD), (0, 10 + FRAME_PAYLOAD as u64, 5), (1, 0, 3)]);
        assert_eq!(q.bytes, FRAME_PAYLOAD + 8);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let s = Sender::new("/nonexistent".into());
        s.connected.store(true, Ordering::Relaxed);
        s.push(chunk(pb::Direction::Send), QUEUE_BYTES, vec![0; QUEUE_BYTES]);
        s.push(chunk(pb::Direction::Send), 1, vec![0]);
        assert_eq!(s.dropped_chunks.load(Ordering::Relaxed), 1);
        assert_eq!(s.queue.lock().unwrap().frames.len(), QUEUE_BYTES / FRAME_PAYLOAD);
    }
}

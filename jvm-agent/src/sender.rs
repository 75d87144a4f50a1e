//! The bounded queue application threads copy plaintext into, and the one
//! background thread that sends it to the sensor. An application thread
//! only takes a short lock; when the queue is full or no sensor is
//! connected, the chunk is dropped and counted, and the count rides on the
//! next frame that gets through. Until a sensor first takes the socket, for
//! [`EARLY_WINDOW`] after the agent starts, chunks are kept (within the
//! queue's bound) instead: a short-lived JVM (a `kubectl exec`'d client)
//! is often done before a busy sensor gets to it.
//!
//! Two routes to the sensor: by default the agent makes a Unix socket pair
//! and names this thread `nettap-fd-<N>`, N being the pair's other end; the
//! sensor copies that fd out of the process (pidfd_getfd) and writes one
//! byte; then the agent closes its copy of that end and streams. No path,
//! no name, no volume: nothing another process of the pod could reach. With
//! `socket=PATH` it connects to that path instead (the older route).

use crate::wire;
use nettap_shared_proto::v1 as pb;
use prost::Message;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
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
/// How long the sender lets chunks gather before each write. Under load a
/// write per chunk (and the sensor's wake per write) cost the JVM more than
/// the copies: with this, a busy JVM makes ~100 writes a second at most.
const BATCH_PERIOD: Duration = Duration::from_millis(10);
/// Queued payload at which an application thread cuts the gathering short
/// (the queue would otherwise fill within the period and drop).
const WAKE_BYTES: usize = QUEUE_BYTES / 8;
/// How long an idle sender waits before checking that the sensor is still there.
const IDLE_CHECK: Duration = Duration::from_millis(500);
/// How often a missing sensor is looked for again.
const RECONNECT: Duration = Duration::from_secs(1);
/// The sending thread's name while it offers a socket (the sensor's
/// `agent::THREAD_PREFIX`), followed by the fd.
pub const THREAD_PREFIX: &str = "nettap-fd-";
/// The sensor's go-ahead byte.
const READY: u8 = 1;
/// How long after start chunks wait in the queue for a first sensor (the
/// sensor watches a new JVM closely for as long).
pub const EARLY_WINDOW: Duration = Duration::from_secs(10);

/// How the agent reaches the sensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Offer a socket pair's end for the sensor to take (the default).
    Handoff,
    /// Connect to a Unix socket at this path.
    Path(PathBuf),
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Handoff => f.write_str("socket handoff"),
            Route::Path(p) => write!(f, "socket {}", p.display()),
        }
    }
}

/// A socket pair offered to the sensor: our end, and the end it is to take.
#[derive(Debug)]
struct Offer {
    mine: UnixStream,
    theirs: OwnedFd,
}

/// Names the calling thread (at most 15 bytes are kept).
fn name_thread(name: &str) {
    if let Ok(c) = std::ffi::CString::new(name) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of the calling thread.
        unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr() as libc::c_ulong, 0, 0, 0) };
    }
}

/// Waits up to `limit` for `fd` to be readable (or hung up).
fn readable(fd: &impl AsRawFd, limit: Duration) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN | libc::POLLRDHUP, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, limit.as_millis() as libc::c_int) > 0 }
}

/// An address's bytes (4 or 16; none when unknown), held inline: a key is
/// made and hashed for every chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Ip {
    bytes: [u8; 16],
    len: u8,
}

impl Ip {
    /// The address `b` (unknown unless 4 or 16 bytes).
    pub fn new(b: &[u8]) -> Ip {
        let mut ip = Ip::default();
        if b.len() == 4 || b.len() == 16 {
            ip.bytes[..b.len()].copy_from_slice(b);
            ip.len = b.len() as u8;
        }
        ip
    }

    /// Its bytes (empty when unknown).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Whether it is unknown.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A connection's endpoints as the socket reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Local address.
    pub local_ip: Ip,
    /// Local port.
    pub local_port: u16,
    /// Remote address.
    pub remote_ip: Ip,
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

/// Encoded frames (`AgentFrame` bodies, no length prefix) back to back.
#[derive(Debug, Default)]
struct Frames {
    bodies: Vec<u8>,
    /// Where each body ends in `bodies`.
    ends: Vec<usize>,
}

impl Frames {
    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn clear(&mut self) {
        self.bodies.clear();
        self.ends.clear();
    }

    /// Each body in order.
    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter()).map(|(a, &b)| &self.bodies[a..b])
    }

    /// A buffer that a burst grew stays no larger than this when idle.
    const KEEP: usize = 1 << 20;

    /// Gives back the memory of a burst.
    fn trim(&mut self) {
        self.bodies.shrink_to(Self::KEEP);
        self.ends.shrink_to(Self::KEEP / 1024);
    }
}

#[derive(Debug, Default)]
struct Queue {
    frames: Frames,
    /// Payload bytes queued.
    bytes: usize,
    /// The sender waits for a first chunk: the next push wakes it (the only
    /// wake an application thread makes, besides crossing [`WAKE_BYTES`]).
    idle: bool,
    /// Plaintext offsets per connection: [send, recv]. foldhash, not
    /// SipHash: looked up for every chunk on the application's thread.
    seqs: foldhash::HashMap<ConnKey, [u64; 2]>,
    /// Room for a frame's nested connection message.
    scratch: Vec<u8>,
}

impl Queue {
    /// Whether a push of `len` more bytes wakes the sender. A wake is a
    /// system call and a context switch: only an idle sender, or one whose
    /// queue is filling up, gets one.
    fn needs_wake(&mut self, len: usize) -> bool {
        std::mem::take(&mut self.idle) || (self.bytes < WAKE_BYTES && self.bytes + len >= WAKE_BYTES)
    }
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
    route: Route,
    /// Until then, and while no sensor has ever taken the socket, chunks wait in the queue.
    early_until: std::time::Instant,
    ever_connected: AtomicBool,
}

impl Sender {
    /// A sender for the sensor reached by `route` (not yet running).
    pub fn new(route: Route) -> Sender {
        Sender {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            connected: AtomicBool::new(false),
            dropped_chunks: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
            sending: AtomicBool::new(false),
            route,
            early_until: std::time::Instant::now() + EARLY_WINDOW,
            ever_connected: AtomicBool::new(false),
        }
    }

    /// Whether chunks wait for a first sensor (see [`EARLY_WINDOW`]).
    fn early(&self) -> bool {
        !self.ever_connected.load(Ordering::Relaxed) && std::time::Instant::now() < self.early_until
    }

    /// Whether chunks are taken now: a sensor is connected, or a first one is awaited.
    fn accepting(&self) -> bool {
        self.connected.load(Ordering::Relaxed) || self.early()
    }

    /// Whether a chunk of `len` bytes would be queued now (so the caller can
    /// skip copying it out of the JVM when it would not).
    pub fn wants(&self, len: usize) -> bool {
        self.accepting() && len <= QUEUE_BYTES
    }

    /// Queues `payload` (None when the caller did not copy it: then it is
    /// counted as dropped) and advances the connection's offset either way.
    /// Nothing is allocated once the queue's buffers have grown.
    pub fn push(&self, c: &Chunk, len: usize, payload: Option<&[u8]>) {
        let Ok(mut q) = self.queue.lock() else { return };
        let q = &mut *q;
        if q.seqs.len() >= MAX_CONNS && !q.seqs.contains_key(&c.conn) {
            q.seqs.clear(); // rare: offsets restart, the sensor sees a new stream
        }
        let dir = (c.direction == pb::Direction::Recv as i32) as usize;
        let seq = {
            let s = &mut q.seqs.entry(c.conn).or_default()[dir];
            let seq = *s;
            *s += len as u64;
            seq
        };
        let payload = match payload {
            Some(p) if p.len() == len && q.bytes + len <= QUEUE_BYTES && self.accepting() => p,
            _ => {
                self.dropped_chunks.fetch_add(1, Ordering::Relaxed);
                self.dropped_bytes.fetch_add(len as u64, Ordering::Relaxed);
                return;
            }
        };
        let wake = q.needs_wake(len);
        q.bytes += len;
        for (i, part) in payload.chunks(FRAME_PAYLOAD).enumerate() {
            let head = wire::DataHead {
                conn: &c.conn,
                role: c.role,
                direction: c.direction,
                hook: c.hook,
                seq: seq + (i * FRAME_PAYLOAD) as u64,
                ts_boot_ns: c.ts_boot_ns,
                tid: c.tid,
            };
            wire::put_data_frame(&head, part, &mut q.scratch, &mut q.frames.bodies);
            q.frames.ends.push(q.frames.bodies.len());
        }
        if wake {
            self.ready.notify_one();
        }
    }

    /// The sender thread's loop: connect, say hello, send what is queued;
    /// on any failure, drop what was being sent and connect again later.
    pub fn run(&self, hello: pb::AgentHello) -> ! {
        let mut stream: Option<UnixStream> = None;
        // The batch being written and the bytes written: swapped with the
        // queue's and kept, so sending allocates nothing either.
        let (mut batch, mut out, mut tail) = (Frames::default(), Vec::new(), Vec::new());
        let mut offer: Option<Offer> = None;
        let mut said_absent = false;
        loop {
            if stream.is_none() {
                let connected = match &self.route {
                    Route::Path(path) => Self::connect(path, &hello),
                    Route::Handoff => Self::handed_over(&mut offer, &hello),
                };
                match connected {
                    Ok(s) => {
                        stream = Some(s);
                        self.connected.store(true, Ordering::Relaxed);
                        self.ever_connected.store(true, Ordering::Relaxed);
                        said_absent = false;
                    }
                    Err(e) => {
                        self.drop_early_chunks();
                        if !said_absent {
                            crate::log(&format!(
                                "sensor not reachable by {} ({e}); capture is dropped until it is",
                                self.route
                            ));
                            said_absent = true;
                        }
                        // An offer waits in `handed_over` itself.
                        if e.kind() != std::io::ErrorKind::TimedOut {
                            std::thread::sleep(RECONNECT);
                        }
                        continue;
                    }
                }
            }
            let bytes = {
                let Ok(mut q) = self.queue.lock() else { self.idle() };
                if q.frames.is_empty() {
                    q.idle = true;
                    q = match self.ready.wait_timeout_while(q, IDLE_CHECK, |q| q.frames.is_empty()) {
                        Ok((q, _)) => q,
                        Err(_) => self.idle(),
                    };
                    q.idle = false;
                }
                if q.frames.is_empty() {
                    q.frames.trim();
                    drop(q);
                    batch.trim();
                    out.shrink_to(Frames::KEEP);
                    if stream.as_ref().is_some_and(|s| readable(s, Duration::ZERO)) {
                        // Idle, and the sensor hung up (it never writes after the
                        // go-ahead): look for the next one now, not at the next write.
                        crate::log(&format!("lost the sensor ({}); reconnecting", self.route));
                        self.connected.store(false, Ordering::Relaxed);
                        stream = None;
                    }
                    continue;
                }
                // Let a period's chunks join this write: one write and one
                // wake of the sensor for many chunks instead of one each.
                let mut q = match self.ready.wait_timeout_while(q, BATCH_PERIOD, |q| q.bytes < WAKE_BYTES) {
                    Ok((q, _)) => q,
                    Err(_) => self.idle(),
                };
                batch.clear();
                std::mem::swap(&mut batch, &mut q.frames);
                self.sending.store(true, Ordering::Release);
                std::mem::take(&mut q.bytes) as u64
            };
            // The losses so far ride on the first frame.
            let drops = [&self.dropped_chunks, &self.dropped_bytes].map(|c| c.swap(0, Ordering::Relaxed));
            out.clear();
            tail.clear();
            wire::put_drops(drops[0], drops[1], &mut tail);
            for (i, body) in batch.iter().enumerate() {
                wire::put_delimited(body, if i == 0 { &tail } else { &[] }, &mut out);
            }
            if let Err(e) = stream.as_mut().expect("connected").write_all(&out) {
                crate::log(&format!("lost the sensor ({}: {e}); reconnecting", self.route));
                self.connected.store(false, Ordering::Relaxed);
                stream = None;
                self.dropped_chunks.fetch_add(drops[0] + batch.ends.len() as u64, Ordering::Relaxed);
                self.dropped_bytes.fetch_add(drops[1] + bytes, Ordering::Relaxed);
            }
            self.sending.store(false, Ordering::Release);
        }
    }

    /// Waits (at most `limit`) until what is queued has been written, so a
    /// JVM that exits right after its last request still has it captured.
    pub fn flush(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        // Chunks waiting for a first sensor wait for it too.
        while self.accepting() && std::time::Instant::now() < deadline {
            let empty = self.queue.lock().map(|q| q.frames.is_empty()).unwrap_or(true);
            if empty && !self.sending.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Once the early window is over with no sensor ever connected, what
    /// waited for one is dropped and counted.
    fn drop_early_chunks(&self) {
        if self.accepting() {
            return;
        }
        let Ok(mut q) = self.queue.lock() else { return };
        if q.frames.is_empty() {
            return;
        }
        let frames = std::mem::take(&mut q.frames);
        let bytes = std::mem::take(&mut q.bytes);
        drop(q);
        self.dropped_chunks.fetch_add(frames.ends.len() as u64, Ordering::Relaxed);
        self.dropped_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn connect(path: &std::path::Path, hello: &pb::AgentHello) -> std::io::Result<UnixStream> {
        let mut s = UnixStream::connect(path)?;
        say_hello(&mut s, hello)?;
        Ok(s)
    }

    /// Offers a socket (made once, kept until taken) and waits up to
    /// [`RECONNECT`] for the sensor's go-ahead.
    fn handed_over(offer: &mut Option<Offer>, hello: &pb::AgentHello) -> std::io::Result<UnixStream> {
        if offer.is_none() {
            let (mine, theirs) = UnixStream::pair()?;
            let theirs = OwnedFd::from(theirs);
            name_thread(&format!("{THREAD_PREFIX}{}", theirs.as_raw_fd()));
            *offer = Some(Offer { mine, theirs });
        }
        let o = offer.as_mut().expect("made above");
        if !readable(&o.mine, RECONNECT) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no sensor took the offered socket",
            ));
        }
        let mut go = [0u8; 1];
        let read = o.mine.read(&mut go);
        // Taken or not, this offer is spent: a new one is made next time.
        let Offer { mut mine, theirs } = offer.take().expect("made above");
        name_thread("nettap-agent");
        drop(theirs); // the sensor's copy is now the only one: its exit is our hang-up
        match read {
            Ok(1) if go[0] == READY => {}
            Ok(_) => {
                return Err(std::io::Error::other("the offered socket's first byte is not the go-ahead"))
            }
            Err(e) => return Err(e),
        }
        say_hello(&mut mine, hello)?;
        Ok(mine)
    }

    /// The route to the sensor.
    pub fn route(&self) -> &Route {
        &self.route
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

fn say_hello(s: &mut UnixStream, hello: &pb::AgentHello) -> std::io::Result<()> {
    let frame =
        pb::AgentFrame { kind: Some(pb::agent_frame::Kind::Hello(hello.clone())), ..Default::default() };
    s.write_all(&frame.encode_length_delimited_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(dir: pb::Direction) -> Chunk {
        Chunk {
            conn: ConnKey {
                local_ip: Ip::new(&[127, 0, 0, 1]),
                local_port: 1,
                remote_ip: Ip::new(&[127, 0, 0, 1]),
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

    /// The queued frames, decoded.
    fn queued(s: &Sender) -> Vec<pb::AgentData> {
        let q = s.queue.lock().unwrap();
        q.frames
            .iter()
            .map(|body| match pb::AgentFrame::decode(body).unwrap().kind {
                Some(pb::agent_frame::Kind::Data(d)) => d,
                other => panic!("not data: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn offsets_advance_even_when_dropped_and_big_chunks_split() {
        let s = Sender {
            early_until: std::time::Instant::now(),
            ..Sender::new(Route::Path("/nonexistent".into()))
        };
        s.push(&chunk(pb::Direction::Send), 10, None);
        assert_eq!(s.dropped_chunks.load(Ordering::Relaxed), 1);
        assert_eq!(s.dropped_bytes.load(Ordering::Relaxed), 10);
        s.connected.store(true, Ordering::Relaxed);
        let big: Vec<u8> = (0..FRAME_PAYLOAD + 5).map(|i| i as u8).collect();
        s.push(&chunk(pb::Direction::Send), big.len(), Some(&big));
        s.push(&chunk(pb::Direction::Recv), 3, Some(&[1, 2, 3]));
        let got = queued(&s);
        let seqs: Vec<(i32, u64, usize)> =
            got.iter().map(|d| (d.direction, d.seq, d.payload.len())).collect();
        assert_eq!(seqs, vec![(0, 10, FRAME_PAYLOAD), (0, 10 + FRAME_PAYLOAD as u64, 5), (1, 0, 3)]);
        assert_eq!([&got[0].payload[..], &got[1].payload[..]].concat(), big);
        assert_eq!(got[2].conn.as_ref().unwrap().remote.as_ref().unwrap().ip, [127, 0, 0, 1]);
        assert_eq!(s.queue.lock().unwrap().bytes, FRAME_PAYLOAD + 8);
    }

    #[test]
    fn only_an_idle_sender_or_a_filling_queue_is_woken() {
        let mut q = Queue { idle: true, ..Queue::default() };
        assert!(q.needs_wake(100), "the first chunk wakes an idle sender");
        q.bytes = 100;
        assert!(!q.needs_wake(100), "later chunks of the gathering period do not");
        q.bytes = WAKE_BYTES - 10;
        assert!(q.needs_wake(10), "crossing the mark cuts the gathering short");
        q.bytes = WAKE_BYTES;
        assert!(!q.needs_wake(10), "once: the sender is already woken");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let s = Sender::new(Route::Path("/nonexistent".into()));
        s.connected.store(true, Ordering::Relaxed);
        s.push(&chunk(pb::Direction::Send), QUEUE_BYTES, Some(&vec![0; QUEUE_BYTES]));
        s.push(&chunk(pb::Direction::Send), 1, Some(&[0]));
        assert_eq!(s.dropped_chunks.load(Ordering::Relaxed), 1);
        assert_eq!(s.queue.lock().unwrap().frames.ends.len(), QUEUE_BYTES / FRAME_PAYLOAD);
    }

    /// Before any sensor: chunks wait (the hooks copy them); once one took
    /// the socket and went, they are dropped as before; a window that ends
    /// with no sensor drops what waited, counted.
    #[test]
    fn chunks_wait_for_a_first_sensor_within_the_early_window() {
        let s = Sender::new(Route::Path("/nonexistent".into()));
        assert!(s.wants(3));
        s.push(&chunk(pb::Direction::Send), 3, Some(&[1, 2, 3]));
        assert_eq!(queued(&s).len(), 1);
        assert_eq!(s.dropped_chunks.load(Ordering::Relaxed), 0);
        s.ever_connected.store(true, Ordering::Relaxed);
        assert!(!s.wants(3), "a sensor came and went: no copies");
        s.push(&chunk(pb::Direction::Send), 3, Some(&[1, 2, 3]));
        assert_eq!(s.dropped_chunks.load(Ordering::Relaxed), 1);

        let mut late = Sender::new(Route::Handoff);
        late.push(&chunk(pb::Direction::Send), 5, Some(&[0; 5]));
        assert_eq!(queued(&late).len(), 1);
        late.early_until = std::time::Instant::now();
        late.drop_early_chunks();
        assert!(late.queue.lock().unwrap().frames.is_empty());
        assert_eq!(late.dropped_bytes.load(Ordering::Relaxed), 5);
    }
}

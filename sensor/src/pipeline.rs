//! The capture loop: ring buffer → decode → connection table → output,
//! woken by the ring buffer's epoll readiness (no busy-waiting), with drop
//! counters read once a second and at the end.

use crate::clock::Clock;
use crate::config::CaptureConfig;
use crate::conn::{ConnInfo, ConnTracker, EphemeralPorts};
use crate::drops::DropCounters;
use crate::events::{self, Event};
use crate::exec_gate::ExecGate;
use crate::output::DropRecord;
use crate::output::{har_entry, Body, ConnView, HarWriter, JsonlWriter, Origin, Record, TerminalSummary};
use crate::probes;
use crate::protocols::exchange::Limits;
use crate::stream::{Chunk, ConnSession, SessionOut};
use anyhow::{anyhow, Context, Result};
use aya::maps::{PerCpuArray, RingBuf};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};

mod jvmti;

/// Where records go.
pub enum Sink {
    /// JSON Lines to a file or stdout.
    Jsonl(JsonlWriter<Box<dyn Write + Send>>),
    /// One line per exchange on the terminal.
    Terminal(TerminalSummary<std::io::Stdout>),
    /// HTTP exchanges as a HAR 1.2 document.
    Har(HarWriter<Box<dyn Write + Send>>),
}

/// What `nettap capture` was asked to do.
pub struct CaptureOptions {
    /// Kernel-side settings.
    pub capture: CaptureConfig,
    /// Output.
    pub sink: Sink,
    /// Created once every start-up probe is attached.
    pub ready_file: Option<PathBuf>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Also write every chunk as a `data` record.
    pub raw: bool,
    /// Bounds on HTTP messages kept in memory.
    pub http_limits: Limits,
    /// Binaries with OpenSSL linked in to probe at start (NETTAP_OPENSSL_BINARY).
    pub openssl_binaries: Vec<PathBuf>,
    /// Where to serve the streaming API, if anywhere.
    pub api: Option<crate::api::ApiListen>,
    /// The Unix socket in-process agents (the JVM agent) stream to, if any.
    pub agent_socket: Option<PathBuf>,
    /// Load the JVM agent (this library) into running and new JVMs.
    pub attach_jvms: Option<PathBuf>,
    /// Kubernetes mode: records name their pods.
    pub kubernetes: Option<crate::k8s::KubernetesOptions>,
}

/// Counters for the run, logged at the end.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Ring-buffer records handled.
    pub events: u64,
    /// Payload bytes handled.
    pub payload_bytes: u64,
    /// Records that could not be decoded.
    pub decode_errors: u64,
    /// Time spent handling records (not waiting for them).
    pub busy: Duration,
}

/// Everything between a raw ring-buffer record and the output.
pub struct Processor {
    /// The connection table (Kubernetes mode names pods through it).
    pub tracker: ConnTracker,
    /// By connection id, looked up for every record (foldhash: see ConnTracker).
    sessions: foldhash::HashMap<u64, ConnSession>,
    max_sessions: usize,
    /// DNS over TCP: per connection, each direction's framing (send, recv).
    tcp_dns: foldhash::HashMap<u64, [TcpDns; 2]>,
    sink: Sink,
    clock: Clock,
    raw: bool,
    limits: Limits,
    user_drops: BTreeMap<&'static str, DropRecord>,
    /// Libraries mapped since the last look, for the capture loop to probe.
    pub libraries: Vec<events::LibEvent>,
    /// Programs executed since the last look, for the capture loop to examine.
    pub execs: Vec<events::LibEvent>,
    /// Subscribers of the streaming API, if it is served.
    pub publisher: Option<crate::api::Publisher>,
    agents: jvmti::Agents,
    /// Secrets out of exchanges before any output sees them.
    pub redactor: Option<crate::redact::Policy>,
    /// Counters.
    pub stats: Stats,
}

/// One direction of a DNS-over-TCP connection, read while its bytes arrive in order.
#[derive(Debug, Default)]
struct TcpDns {
    framer: crate::dns::TcpDnsFramer,
    next_seq: Option<u64>,
    lost: bool,
}

/// Source of sensor-wide and lifecycle records.
const SOURCE: &str = "kernel";
/// Early bytes one direction may hold while waiting for a reordered chunk.
const REORDER_LIMIT: usize = 4 << 20;
/// A connection silent for this long has its session closed.
const IDLE_NS: u64 = 300 * 1_000_000_000;

fn conn_view(info: &ConnInfo) -> ConnView<'_> {
    ConnView {
        local: info.local,
        remote: info.remote,
        role: info.role,
        tls: info.tls,
        remote_host: info.remote_host.as_deref(),
        k8s: info.pod.as_ref(),
    }
}

/// Where session output goes: records or terminal lines.
struct Emit<'a> {
    sink: &'a mut Sink,
    clock: &'a Clock,
    info: &'a ConnInfo,
    raw: bool,
    user_drops: &'a mut BTreeMap<&'static str, DropRecord>,
    publisher: Option<&'a crate::api::Publisher>,
    redactor: Option<&'a crate::redact::Policy>,
}

fn user_drop(drops: &mut BTreeMap<&'static str, DropRecord>, reason: &'static str, bytes: u64) {
    let d = drops.entry(reason).or_insert(DropRecord { count: 0, bytes: 0, reason });
    d.count += 1;
    d.bytes += bytes;
}

impl Emit<'_> {
    fn out(&mut self, o: SessionOut<'_>) -> std::io::Result<()> {
        let info = self.info;
        match (o, &mut *self.sink) {
            (SessionOut::Gap { len, .. }, _) => {
                user_drop(self.user_drops, "http_stream_gap", len);
                Ok(())
            }
            (SessionOut::Drop { reason, bytes }, _) => {
                user_drop(self.user_drops, reason, bytes);
                Ok(())
            }
            // With --raw every chunk was written as it arrived.
            (SessionOut::Data(_), _) if self.raw => Ok(()),
            (SessionOut::Data(c), Sink::Jsonl(w)) => w.write(&Record {
                origin: Origin {
                    ts_ns: self.clock.realtime_ns(c.ts_ns),
                    pid: info.pid,
                    comm: events::comm_str(&info.comm),
                    source: events::source_of(c.probe),
                    probe: events::probe_name(c.probe),
                },
                conn: Some(conn_view(info)),
                body: Body::Data {
                    direction: c.direction,
                    seq: c.seq,
                    payload: c.payload,
                    truncated: c.truncated,
                },
            }),
            (SessionOut::Data(_), Sink::Terminal(_) | Sink::Har(_)) => Ok(()),
            (SessionOut::Exchange(mut e, probe), sink) => {
                let ports = [info.local.port(), info.remote.port()];
                if let Some(r) = self.redactor.and_then(|p| p.for_conn(events::comm_str(&info.comm), ports)) {
                    r.exchange(&mut e);
                }
                for m in std::iter::once(&e.request).chain(e.response.as_ref()) {
                    if m.body_truncated > 0 {
                        user_drop(self.user_drops, "http_body_over_limit", m.body_truncated);
                    }
                }
                let ts_ns = self.clock.realtime_ns(e.request.start_ts);
                if let Some(p) = self.publisher.filter(|p| p.active()) {
                    let origin = Origin {
                        ts_ns,
                        pid: info.pid,
                        comm: events::comm_str(&info.comm),
                        source: events::source_of(probe),
                        probe: events::probe_name(probe),
                    };
                    p.publish(crate::api::http_record(&origin, &conn_view(info), &e));
                }
                match sink {
                    Sink::Jsonl(w) => w.write(&Record {
                        origin: Origin {
                            ts_ns,
                            pid: info.pid,
                            comm: events::comm_str(&info.comm),
                            source: events::source_of(probe),
                            probe: events::probe_name(probe),
                        },
                        conn: Some(conn_view(info)),
                        body: Body::Http(&e),
                    }),
                    Sink::Terminal(t) => t.on_exchange(info, &e, ts_ns),
                    Sink::Har(h) => h.write(&har_entry(
                        &e,
                        ts_ns,
                        info.pid,
                        events::comm_str(&info.comm),
                        &conn_view(info),
                    )),
                }
            }
        }
    }
}

impl Processor {
    /// A processor writing to `sink`; with `raw`, every chunk is also a `data` record.
    pub fn new(sink: Sink, max_conns: usize, raw: bool, limits: Limits) -> Self {
        Self {
            tracker: ConnTracker::new(max_conns, EphemeralPorts::of_host()),
            sessions: Default::default(),
            tcp_dns: Default::default(),
            max_sessions: max_conns.max(1),
            sink,
            clock: Clock::new(),
            raw,
            limits,
            user_drops: BTreeMap::new(),
            libraries: Vec::new(),
            execs: Vec::new(),
            publisher: None,
            agents: Default::default(),
            redactor: None,
            stats: Stats::default(),
        }
    }

    /// Handles one ring-buffer record.
    pub fn handle(&mut self, raw: &[u8]) -> std::io::Result<()> {
        self.stats.events += 1;
        let ev = match events::decode(raw) {
            Ok(ev) => ev,
            Err(e) => {
                self.stats.decode_errors += 1;
                if self.stats.decode_errors <= 10 {
                    warn!(error = %e, "undecodable ring-buffer record skipped");
                }
                return Ok(());
            }
        };
        match ev {
            Event::Data(d) => self.on_data(&d),
            Event::Conn(c) => self.on_conn(&c),
            Event::Lib(l) => {
                self.libraries.push(l);
                Ok(())
            }
            Event::Exec(e) => {
                self.execs.push(e);
                Ok(())
            }
            Event::Dns(d) => self.on_dns(&d),
        }
    }

    /// A DNS datagram.
    fn on_dns(&mut self, d: &events::DataEvent<'_>) -> std::io::Result<()> {
        self.dns_message(d.payload, &d.header, d.direction)
    }

    /// Bytes of a TCP connection to or from port 53: DNS messages framed by
    /// their length, read while the bytes arrive in order.
    fn on_tcp_dns(&mut self, d: &events::DataEvent<'_>) -> std::io::Result<()> {
        if self.tcp_dns.len() >= self.max_sessions && !self.tcp_dns.contains_key(&d.header.conn.id) {
            return Ok(()); // as many as sessions at most; a rare protocol
        }
        let dir = &mut self.tcp_dns.entry(d.header.conn.id).or_default()[d.direction as usize];
        if dir.lost || dir.next_seq.is_some_and(|s| s != d.seq) || d.truncated > 0 {
            dir.lost = true;
            dir.framer.gap();
            return Ok(());
        }
        dir.next_seq = Some(d.seq + d.payload.len() as u64);
        let mut messages = Vec::new();
        dir.framer.feed(d.payload, &mut |m| messages.push(m.to_vec()));
        for m in messages {
            self.dns_message(&m, &d.header, d.direction)?;
        }
        Ok(())
    }

    /// One DNS message: its answers name later connections; it is written
    /// as a `dns` record. One that does not parse is counted and skipped.
    fn dns_message(
        &mut self,
        bytes: &[u8],
        header: &events::Header,
        direction: events::Direction,
    ) -> std::io::Result<()> {
        let m = match crate::dns::parse(bytes) {
            Ok(m) => m,
            Err(_) => {
                user_drop(&mut self.user_drops, "dns_malformed", bytes.len() as u64);
                return Ok(());
            }
        };
        let c = &header.conn;
        if m.response {
            self.tracker.learn_dns(c.netns, &m, header.ts_boot_ns);
        }
        let role = if c.remote.port() == 53 { events::Role::Client } else { events::Role::Server };
        let origin = Origin {
            ts_ns: self.clock.realtime_ns(header.ts_boot_ns),
            pid: header.pid,
            comm: header.comm(),
            source: SOURCE,
            probe: events::probe_name(header.probe),
        };
        let pod = self.tracker.pod_of(header.pid);
        let conn = ConnView {
            local: c.local,
            remote: c.remote,
            role,
            tls: false,
            remote_host: None,
            k8s: pod.as_ref(),
        };
        if let Some(p) = self.publisher.as_ref().filter(|p| p.active()) {
            p.publish(crate::api::dns_record(&origin, &conn, &m, direction));
        }
        if let Sink::Jsonl(w) = &mut self.sink {
            w.write(&Record { origin, conn: Some(conn), body: Body::Dns(&m, direction) })?;
        }
        Ok(())
    }

    fn on_data(&mut self, d: &events::DataEvent<'_>) -> std::io::Result<()> {
        self.stats.payload_bytes += d.payload.len() as u64;
        let id = d.header.conn.id;
        let info = self.tracker.on_data(&d.header).clone();
        if self.raw {
            if let Sink::Jsonl(w) = &mut self.sink {
                w.write(&Record {
                    origin: Origin {
                        ts_ns: self.clock.realtime_ns(d.header.ts_boot_ns),
                        pid: d.header.pid,
                        comm: d.header.comm(),
                        source: events::source_of(d.header.probe),
                        probe: events::probe_name(d.header.probe),
                    },
                    conn: Some(conn_view(&info)),
                    body: Body::Data {
                        direction: d.direction,
                        seq: d.seq,
                        payload: d.payload,
                        truncated: d.truncated,
                    },
                })?;
            }
        }
        if let Sink::Terminal(t) = &mut self.sink {
            t.on_data(id, d.direction, d.payload.len());
        }
        if info.local.port() == 53 || info.remote.port() == 53 {
            self.on_tcp_dns(d)?;
        }
        // TLS plaintext has its own offsets: a session that saw the socket's
        // bytes (before the connection was known to be TLS) ends, and the
        // plaintext starts its own; socket bytes after plaintext are ignored.
        let plaintext = events::source_of(d.header.probe) != SOURCE;
        // Plaintext whose first chunk seen is not its first byte (an agent
        // attached or reconnected late) is joined mid-stream too.
        let joined = if plaintext { d.seq > 0 } else { info.midstream };
        match self.sessions.get(&id).map(|s| s.plaintext) {
            Some(false) if plaintext => self.close_session(id, &info, d.header.ts_boot_ns)?,
            Some(true) if !plaintext => return Ok(()),
            _ => {}
        }
        if !self.sessions.contains_key(&id) && self.sessions.len() >= self.max_sessions {
            self.evict_oldest_session()?;
        }
        let limits = self.limits;
        let session = self.sessions.entry(id).or_insert_with(|| {
            let hint = match info.role {
                events::Role::Client => Some(events::Direction::Send),
                events::Role::Server => Some(events::Direction::Recv),
                events::Role::Unknown => None,
            };
            let mut s = ConnSession::new(joined, hint, limits, REORDER_LIMIT);
            s.plaintext = plaintext;
            s
        });
        let chunk = Chunk {
            direction: d.direction,
            seq: d.seq,
            ts_ns: d.header.ts_boot_ns,
            probe: d.header.probe,
            payload: d.payload,
            truncated: d.truncated,
        };
        let mut emit = Emit {
            sink: &mut self.sink,
            clock: &self.clock,
            info: &info,
            raw: self.raw,
            user_drops: &mut self.user_drops,
            publisher: self.publisher.as_ref(),
            redactor: self.redactor.as_ref(),
        };
        let mut result = Ok(());
        session.on_chunk(chunk, &mut |o| {
            if result.is_ok() {
                result = emit.out(o);
            }
        });
        result
    }

    fn on_conn(&mut self, c: &events::ConnEvent) -> std::io::Result<()> {
        let held = self.hold_close(c);
        let info = match self.tracker.info(c.header.conn.id) {
            Some(info) if held => info,
            _ => self.tracker.on_conn(c),
        };
        let ts_ns = self.clock.realtime_ns(c.header.ts_boot_ns);
        if let Some(p) = self.publisher.as_ref().filter(|p| p.active()) {
            let origin = Origin {
                ts_ns,
                pid: info.pid,
                comm: events::comm_str(&info.comm),
                source: SOURCE,
                probe: events::probe_name(c.header.probe),
            };
            p.publish(crate::api::conn_record(&origin, &conn_view(&info), c.change));
        }
        if let Sink::Jsonl(w) = &mut self.sink {
            w.write(&Record {
                origin: Origin {
                    ts_ns,
                    pid: info.pid,
                    comm: events::comm_str(&info.comm),
                    source: SOURCE,
                    probe: events::probe_name(c.header.probe),
                },
                conn: Some(conn_view(&info)),
                body: Body::Conn(c.change),
            })?;
        }
        if c.change == events::ConnChange::Close && !held {
            self.close_session(c.header.conn.id, &info, c.header.ts_boot_ns)?;
        }
        Ok(())
    }

    fn close_session(&mut self, id: u64, info: &ConnInfo, ts_boot_ns: u64) -> std::io::Result<()> {
        let mut was_http = false;
        self.tcp_dns.remove(&id);
        if let Some(mut session) = self.sessions.remove(&id) {
            was_http = session.is_http();
            let mut emit = Emit {
                sink: &mut self.sink,
                clock: &self.clock,
                info,
                raw: self.raw,
                user_drops: &mut self.user_drops,
                publisher: self.publisher.as_ref(),
                redactor: self.redactor.as_ref(),
            };
            let mut result = Ok(());
            session.close(ts_boot_ns, &mut |o| {
                if result.is_ok() {
                    result = emit.out(o);
                }
            });
            result?;
        }
        if let Sink::Terminal(t) = &mut self.sink {
            t.on_close(id, info, self.clock.realtime_ns(ts_boot_ns), was_http)?;
        }
        Ok(())
    }

    fn evict_oldest_session(&mut self) -> std::io::Result<()> {
        if let Some((&id, s)) = self.sessions.iter().min_by_key(|(_, s)| s.last_ts) {
            let ts = s.last_ts;
            let info = self.tracker.info(id).unwrap_or_else(ConnInfo::unknown);
            self.close_session(id, &info, ts)?;
        }
        Ok(())
    }

    /// Once a second: holes that have not filled are given up, idle
    /// connections are closed.
    pub fn tick(&mut self) -> std::io::Result<()> {
        self.finish_held_closes(false)?;
        let now = Clock::boot_now_ns();
        let idle: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.last_ts) > IDLE_NS)
            .map(|(&id, _)| id)
            .collect();
        for id in idle {
            let info = self.tracker.info(id).unwrap_or_else(ConnInfo::unknown);
            self.close_session(id, &info, now)?;
        }
        let waiting: Vec<u64> =
            self.sessions.iter().filter(|(_, s)| s.buffered() > 0).map(|(&id, _)| id).collect();
        for id in waiting {
            let info = self.tracker.info(id).unwrap_or_else(ConnInfo::unknown);
            let Some(session) = self.sessions.get_mut(&id) else { continue };
            let mut emit = Emit {
                sink: &mut self.sink,
                clock: &self.clock,
                info: &info,
                raw: self.raw,
                user_drops: &mut self.user_drops,
                publisher: self.publisher.as_ref(),
                redactor: self.redactor.as_ref(),
            };
            let mut result = Ok(());
            session.flush(&mut |o| {
                if result.is_ok() {
                    result = emit.out(o);
                }
            });
            result?;
        }
        Ok(())
    }

    /// Ends every session (at shutdown), so nothing held is lost.
    pub fn close_all(&mut self) -> std::io::Result<()> {
        self.finish_held_closes(true)?;
        let now = Clock::boot_now_ns();
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            let info = self.tracker.info(id).unwrap_or_else(ConnInfo::unknown);
            self.close_session(id, &info, now)?;
        }
        Ok(())
    }

    /// Writes `drop` records for new kernel losses and for user-space limits.
    pub fn report_drops(&mut self, drops: &mut DropCounters) -> std::io::Result<()> {
        let user = std::mem::take(&mut self.user_drops).into_values();
        for d in drops.poll().into_iter().chain(user) {
            warn!(count = d.count, bytes = d.bytes, reason = d.reason, "capture lost data");
            if let Sink::Jsonl(w) = &mut self.sink {
                // Sensor-wide: no single process or connection.
                let ts_ns = self.clock.now_ns();
                w.write(&Record {
                    origin: Origin { ts_ns, pid: 0, comm: "", source: SOURCE, probe: "ringbuf:events" },
                    conn: None,
                    body: Body::Drop(d),
                })?;
            }
        }
        Ok(())
    }

    /// Pushes buffered output.
    pub fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Jsonl(w) => w.flush(),
            Sink::Har(h) => h.flush(),
            Sink::Terminal(_) => Ok(()),
        }
    }

    /// Completes the output (closes a HAR document).
    pub fn finish(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Har(h) => h.finish(),
            _ => self.flush(),
        }
    }
}

/// Shortest time between two drains of the ring buffer. The kernel wakes the
/// reader only for a record submitted into an empty ring, so the records of
/// the meantime are read in one wake-up instead of one wake-up (and one
/// context switch each side) per record. 5 ms of records fit the default
/// 8 MiB ring up to 1.6 GB/s.
const DRAIN_EVERY: Duration = Duration::from_millis(5);

/// A drain lets other runnable tasks have the CPU after this much work
/// (`sched_yield`; it returns at once when nothing else waits). The kernel
/// preempts a task only at a tick (4 ms at HZ=250) or a wake-up, so
/// without it one drain of a busy host holds the CPU for milliseconds and
/// the traced programs' requests wait that long: at HTTP saturation their
/// p99 latency went 0.3 → 3 ms with the sensor, and 0.4–1.5 ms with this. Much
/// shorter turns starved the drain and overflowed the ring (measured at
/// 100 and 250 µs).
const YIELD_AFTER: Duration = Duration::from_micros(500);

fn drain(ring: &mut RingBuf<aya::maps::MapData>, p: &mut Processor) -> Result<()> {
    let start = Instant::now();
    let mut slice = start;
    let mut n = 0u32;
    while let Some(item) = ring.next() {
        p.handle(&item).context("writing records")?;
        n = n.wrapping_add(1);
        if n.is_multiple_of(32) && slice.elapsed() >= YIELD_AFTER {
            // A drain longer than DRAIN_EVERY is behind the programs: it
            // keeps the CPU, or the ring overflows (each yield pushes the
            // task's deadline back, and a yielding drain fell further behind).
            if start.elapsed() < DRAIN_EVERY {
                std::thread::yield_now();
            }
            slice = Instant::now();
        }
    }
    p.stats.busy += start.elapsed();
    Ok(())
}

/// What `next` gives, or never when the source is not there (no agent
/// socket served, no exec gate): a `select!` branch that stays quiet.
async fn next_or_never<T>(next: Option<impl std::future::Future<Output = Option<T>>>) -> Option<T> {
    match next {
        Some(next) => next.await,
        None => std::future::pending().await,
    }
}

/// Installs the SIGINT/SIGTERM handlers at once (a signal sent as soon as
/// the ready file appears must not find the default action, which kills)
/// and resolves when one arrives or `duration` has passed.
fn stop_signal(duration: Option<Duration>) -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    async move {
        let timer = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = timer => "duration elapsed",
        }
    }
}

/// The redaction the configuration asks for, said in the log either way.
fn redactor(cfg: &crate::config::RedactConfig, raw: bool) -> Result<Option<crate::redact::Policy>> {
    if !cfg.enabled {
        warn!("redaction off (--no-redact): records carry credentials, cookies and passwords as sent");
        return Ok(None);
    }
    let key = match &cfg.key_file {
        Some(path) => {
            let key =
                std::fs::read(path).with_context(|| format!("reading redact key {}", path.display()))?;
            anyhow::ensure!(key.len() >= 16, "redact key {} is shorter than 16 bytes", path.display());
            key
        }
        None => {
            let mut key = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                .map_err(|_| anyhow!("no randomness for the redaction key"))?;
            key.to_vec()
        }
    };
    let headers: Vec<&str> =
        crate::redact::DEFAULT_HEADERS.into_iter().chain(cfg.headers.iter().map(String::as_str)).collect();
    let fields: Vec<&str> =
        crate::redact::DEFAULT_FIELDS.into_iter().chain(cfg.fields.iter().map(String::as_str)).collect();
    info!(headers = ?headers, fields = ?fields, stable_key = cfg.key_file.is_some(), "redaction on");
    if raw {
        warn!("--raw: data records carry payloads as captured, not redacted");
    }
    let global = crate::redact::Redactor::new(headers, fields, &key);
    let targets = cfg
        .targets
        .iter()
        .map(|t| {
            let selector = crate::redact::TargetMatch { processes: t.processes.clone(), ports: t.ports.clone() };
            let (processes, ports) = (&t.processes, &t.ports);
            if !t.enabled {
                warn!(target = t.name, ?processes, ?ports, "redaction off for this capture target: its exchanges carry credentials as sent");
                return (selector, None);
            }
            info!(target = t.name, ?processes, ?ports, headers = ?t.headers, fields = ?t.fields, "redaction for this capture target: also these");
            let more = global.with(t.headers.iter().map(String::as_str), t.fields.iter().map(String::as_str));
            (selector, Some(more))
        })
        .collect();
    Ok(Some(crate::redact::Policy::new(global, targets)))
}

/// The exec gate when configured and allowed; otherwise why not, once.
fn start_exec_gate(hold_ms: u32, allowed: &crate::privileges::Assessment) -> Option<ExecGate> {
    if hold_ms == 0 {
        info!("exec gate off (exec_hold_ms = 0): new programs are probed after they start");
        return None;
    }
    if !allowed.exec_gate || !allowed.uprobes {
        // Already said with the capabilities at start-up.
        return None;
    }
    match ExecGate::start(Duration::from_millis(hold_ms.into())) {
        Ok(g) => {
            info!(
                filesystems = g.filesystems(),
                hold_ms = g.hold().as_millis() as u64,
                "exec gate on: programs run for the first time are probed before they start"
            );
            Some(g)
        }
        Err(e) => {
            warn!(error = %e, "exec gate unavailable: new programs are probed 10-30 ms after they start");
            None
        }
    }
}

/// Loads, attaches, captures until a signal or the duration, then detaches
/// every probe, drains what was captured and flushes.
pub async fn capture(opts: CaptureOptions) -> Result<Stats> {
    opts.capture.validate()?;
    let allowed = crate::privileges::check(opts.attach_jvms.is_some()).map_err(|why| anyhow!(why))?;
    probes::ensure_tracefs();
    let mut ebpf = probes::load_object(&opts.capture, std::process::id())?;
    let attached = probes::attach_kernel(&mut ebpf, opts.capture.kernel_hook)?;
    // Without uprobes every TLS attachment would fail one by one: none is tried.
    let tls_probes = allowed.uprobes;
    let mut openssl = probes::OpenSslProbes::new();
    let mut go_tls = probes::GoTlsProbes::new();
    if tls_probes {
        let mut files = openssl.attach_all(&mut ebpf);
        for binary in &opts.openssl_binaries {
            // Named on purpose (NETTAP_OPENSSL_BINARY): a failure here is said.
            if openssl.attach_file(&mut ebpf, binary) || openssl.is_probed(binary) {
                files += 1;
            } else {
                warn!(binary = %binary.display(), "NETTAP_OPENSSL_BINARY names a file that could not be probed");
            }
        }
        info!(files, "OpenSSL libraries probed");
        let go_programs = go_tls.attach_running(&mut ebpf);
        info!(programs = go_programs, "Go programs with crypto/tls probed");
    }
    let mut gate = start_exec_gate(opts.capture.exec_hold_ms, &allowed);

    let ring = RingBuf::try_from(ebpf.take_map("events").ok_or_else(|| anyhow!("map events missing"))?)?;
    let drops_map: PerCpuArray<_, _> =
        PerCpuArray::try_from(ebpf.take_map("drops").ok_or_else(|| anyhow!("map drops missing"))?)?;
    let mut drops = DropCounters::new(drops_map);
    // SAFETY: the RingBuf owns its map fd and keeps it open and unchanged until
    // `into_inner` below hands it back.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("cannot watch the ring buffer: {e}"))?;
    let mut proc =
        Processor::new(opts.sink, opts.capture.max_connections as usize, opts.raw, opts.http_limits);
    proc.redactor = redactor(&opts.capture.redact, opts.raw)?;
    if let Some(listen) = &opts.api {
        let publisher = crate::api::Publisher::new();
        let addr = &listen.addr;
        crate::api::serve(listen, &publisher)
            .await
            .with_context(|| format!("serving the streaming API at {addr}"))?;
        info!(%addr, access = listen.describe(), "streaming API served");
        proc.publisher = Some(publisher);
    }

    // Capture goes on without it: agents are one source among several.
    let (_agent_socket, mut agent_rx) = match opts.agent_socket.as_deref().map(crate::agent::listen) {
        Some(Ok((socket, rx))) => {
            info!(path = %opts.agent_socket.as_ref().unwrap().display(), "agent socket served");
            (Some(socket), Some(rx))
        }
        Some(Err(e)) => {
            warn!(error = %probes::error_chain(&e), "agent socket not served: JVM agents cannot send plaintext");
            (None, None)
        }
        None => (None, None),
    };

    let mut auto_attach = match (&opts.attach_jvms, &opts.agent_socket, &_agent_socket) {
        (Some(agent), Some(socket), Some(_)) => {
            let mut a = crate::jvm_attach::AutoAttach::new(agent.clone(), socket);
            a.running();
            Some(a)
        }
        (Some(_), _, _) => {
            warn!("--attach-jvms needs the agent socket: JVMs are not attached");
            None
        }
        _ => None,
    };

    // Kubernetes mode: pods named in records, capture rules in the kernel.
    let mut rules = None;
    let mut applied = crate::k8s::policy::CgroupRules::default();
    if let Some(k8s) = &opts.kubernetes {
        let client = crate::k8s::client(k8s).await.context("Kubernetes mode")?;
        let pods = crate::k8s::PodResolver::default();
        let (_stores, mut rx) =
            crate::k8s::watch::start(client, k8s, pods.clone()).await.context("Kubernetes mode")?;
        proc.tracker.set_pods(pods);
        if let Some(r) = rx.borrow_and_update().clone() {
            crate::k8s::enforce::apply(&mut ebpf, &mut applied, &r)?;
        }
        rules = Some(rx);
    }

    let stop = stop_signal(opts.duration);
    if let Some(path) = &opts.ready_file {
        std::fs::write(path, format!("{}\n", attached.hook.hook.as_str()))
            .with_context(|| format!("writing ready file {}", path.display()))?;
    }
    info!(hook = attached.hook.hook.as_str(), "capturing");

    let started = Instant::now();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_drain = Instant::now();
    let why = loop {
        tokio::select! {
            why = &mut stop => break why,
            guard = ring.readable_mut() => {
                let gather = DRAIN_EVERY.saturating_sub(last_drain.elapsed());
                if !gather.is_zero() {
                    tokio::time::sleep(gather).await;
                }
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &mut proc)?;
                last_drain = Instant::now();
                guard.clear_ready();
                for lib in proc.libraries.drain(..).filter(|_| tls_probes) {
                    openssl.attach_mapped(&mut ebpf, &lib, Clock::boot_now_ns());
                }
                for exe in proc.execs.drain(..) {
                    if let Some(g) = &mut gate {
                        g.mark(Path::new(&format!("/proc/{}/exe", exe.pid)));
                    }
                    if tls_probes {
                        openssl.examine_exec(&mut ebpf, &exe, Clock::boot_now_ns());
                        go_tls.examine_exec(&mut ebpf, &exe, Clock::boot_now_ns());
                    }
                    if let Some(a) = &mut auto_attach {
                        a.on_exec(exe.pid, &exe.name);
                    }
                }
            }
            Some(msg) = next_or_never(agent_rx.as_mut().map(|rx| rx.recv())) => {
                // The kernel's records of the same moment first: a
                // connection's open is in the ring before its plaintext is here.
                drain(ring.get_mut(), &mut proc)?;
                proc.on_agent(msg)?;
                while let Some(msg) = agent_rx.as_mut().and_then(|rx| rx.try_recv().ok()) {
                    proc.on_agent(msg)?;
                }
            }
            held = next_or_never(gate.as_mut().map(ExecGate::next)) => match held {
                Some(held) => {
                    openssl.examine_held(&mut ebpf, &held);
                    go_tls.examine_held(&mut ebpf, &held);
                    // Dropping `held` lets the program run.
                }
                None => {
                    warn!("exec gate stopped; new programs are probed after they start");
                    gate = None;
                }
            },
            Some(r) = next_or_never(rules.as_mut().map(changed_rules)) => {
                crate::k8s::enforce::apply(&mut ebpf, &mut applied, &r)?;
            }
            _ = tick.tick() => {
                proc.tick()?;
                proc.report_drops(&mut drops)?;
                proc.flush()?;
            }
        }
    };

    // Detach first so nothing new arrives, then keep everything already captured.
    drop(ebpf);
    let mut ring = ring.into_inner();
    drain(&mut ring, &mut proc)?;
    while let Some(msg) = agent_rx.as_mut().and_then(|rx| rx.try_recv().ok()) {
        proc.on_agent(msg)?;
    }
    proc.close_all()?;
    proc.report_drops(&mut drops)?;
    proc.finish()?;

    let stats = proc.stats;
    let secs = started.elapsed().as_secs_f64();
    let busy = stats.busy.as_secs_f64().max(1e-9);
    info!(
        reason = why,
        events = stats.events,
        payload_bytes = stats.payload_bytes,
        decode_errors = stats.decode_errors,
        seconds = format!("{secs:.1}"),
        busy_seconds = format!("{busy:.3}"),
        pipeline_events_per_busy_sec = format!("{:.0}", stats.events as f64 / busy),
        pipeline_mb_per_busy_sec = format!("{:.1}", stats.payload_bytes as f64 / busy / 1e6),
        "capture finished; probes detached"
    );
    Ok(stats)
}

/// The next capture rules; pending forever once their sender is gone.
async fn changed_rules(
    rx: &mut crate::k8s::watch::RulesWatch,
) -> Option<std::sync::Arc<crate::k8s::policy::CgroupRules>> {
    loop {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        if let Some(r) = rx.borrow_and_update().clone() {
            return Some(r);
        }
    }
}

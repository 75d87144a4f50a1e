//! The processor: ring-buffer records and agent frames in; records (handed
//! to the sinks) and probe work (libraries and programs to examine) out.
//! It does no I/O: what it must know of the host comes through `Host`, and
//! time through the caller (`tick(now)`), so unit tests drive it with
//! generated events (`testing::EventGen`) and a fixed clock.

mod agents;
mod tcp_dns;
#[cfg(test)]
mod tests;

use crate::clock::Clock;
use crate::conn::{ConnInfo, ConnTracker, EphemeralPorts, TrackedSocket};
use crate::events::{self, Event};
use crate::host::Host;
use crate::protocols::exchange::Limits;
use crate::protocols::kafka::TopicNames;
use crate::record::{Body, ConnView, DataKind, DropRecord, Origin, Record};
use crate::redact::Policy;
use crate::sink::Sink;
use crate::stream::{Chunk, ConnSession, SessionOut};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io;
use std::time::Duration;
use tracing::warn;

/// Counters for the run, logged at the end.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Ring-buffer records handled.
    pub events: u64,
    /// Payload bytes handled.
    pub payload_bytes: u64,
    /// Records that could not be decoded.
    pub decode_errors: u64,
    /// Time spent handling records (not waiting for them), as measured by the caller.
    pub busy: Duration,
}

/// Entries in the processor's tables (see `Processor::table_sizes`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableSizes {
    /// Connections tracked.
    pub connections: usize,
    /// Later kernel ids of tracked connections (after kernel evictions).
    pub aliases: usize,
    /// Connections with a stream session.
    pub sessions: usize,
    /// Processes with agent state (names, engines).
    pub agent_processes: usize,
}

/// What the kernel reported since the last look that the probes must act on.
#[derive(Debug, Default)]
pub struct ProbeWork {
    /// Libraries mapped (to probe if they hold TLS code).
    pub libraries: Vec<events::LibEvent>,
    /// Programs executed (to examine for TLS code and JVMs).
    pub execs: Vec<events::LibEvent>,
    /// Processes that ended (what is kept for their pid goes).
    pub exits: Vec<u32>,
}

/// Everything between a raw ring-buffer record and the sinks.
pub struct Processor {
    tracker: ConnTracker,
    /// By connection id, looked up for every record (foldhash: see ConnTracker).
    sessions: foldhash::HashMap<u64, ConnSession>,
    max_sessions: usize,
    tcp_dns: tcp_dns::TcpDnsStreams,
    out: Outputs,
    limits: Limits,
    /// Kafka topic ids to names, for every connection of this processor.
    kafka_topics: TopicNames,
    work: ProbeWork,
    agents: agents::Agents,
    /// See `evictions_seen`.
    evictions_seen: u64,
    /// Kernel ids (and their aliases) of connections `close_gone` closed,
    /// oldest first: a close the kernel reports for them after all is not
    /// written twice. Bounded by `RECONCILED_KEPT`.
    reconciled: (HashSet<u64>, VecDeque<u64>),
    /// Counters.
    pub stats: Stats,
}

/// Source of sensor-wide and lifecycle records.
const SOURCE: &str = "kernel";
/// Early bytes one direction may hold while waiting for a reordered chunk.
const REORDER_LIMIT: usize = 4 << 20;
/// Drop reason: the kernel's connection table evicted a live connection's
/// entry (seen again when the socket was used or closed).
pub const CONN_TABLE_EVICTED: &str = "conn_table_evicted";
/// Drop reason: user space forgot a live connection (its table was full).
pub const CONN_TRACKER_EVICTED: &str = "conn_tracker_evicted";
/// Ids of reconciled closes remembered (a late kernel close of an older one
/// is written as a close of an unknown connection).
const RECONCILED_KEPT: usize = 65_536;
/// A connection silent for this long has its session closed.
const IDLE_NS: u64 = 300 * 1_000_000_000;

fn conn_view(id: u64, info: &ConnInfo) -> ConnView<'_> {
    ConnView {
        id,
        local: info.local,
        remote: info.remote,
        role: info.role,
        tls: info.tls,
        remote_host: info.remote_host.as_deref(),
        k8s: info.pod.as_ref(),
        peer: info.peer.as_ref(),
    }
}

/// The sinks and what every record passes through on its way to them.
struct Outputs {
    sinks: Vec<Box<dyn Sink>>,
    clock: Clock,
    /// Losses in user space since the last report, by reason.
    user_drops: BTreeMap<&'static str, DropRecord>,
    /// Secrets out of exchanges before any sink sees them.
    redactor: Option<Policy>,
}

impl Outputs {
    /// Hands one record to every sink.
    fn emit(&mut self, r: &Record<'_>) -> io::Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.record(r))
    }

    /// Counts a loss for the next `drop` records.
    fn lost(&mut self, reason: &'static str, bytes: u64) {
        self.lost_n(reason, 1, bytes);
    }

    /// Counts `count` losses of `bytes` in all.
    fn lost_n(&mut self, reason: &'static str, count: u64, bytes: u64) {
        let d = self.user_drops.entry(reason).or_insert(DropRecord { count: 0, bytes: 0, reason });
        d.count += count;
        d.bytes += bytes;
    }

    /// The output of connection `id`'s session, as a closure's state.
    fn session<'a>(&'a mut self, id: u64, info: &'a ConnInfo) -> Emit<'a> {
        Emit { out: self, id, info, result: Ok(()) }
    }
}

/// A session's output for one connection, turned into records; the first
/// error stops it and is kept for the caller.
struct Emit<'a> {
    out: &'a mut Outputs,
    id: u64,
    info: &'a ConnInfo,
    result: io::Result<()>,
}

/// Who, when and which probe, for a record of connection `info`.
fn origin<'i>(clock: &Clock, info: &'i ConnInfo, ts_boot_ns: u64, probe: u32) -> Origin<'i> {
    Origin {
        ts_ns: clock.realtime_ns(ts_boot_ns),
        pid: info.pid,
        comm: events::comm_str(&info.comm),
        source: events::source_of(probe),
        probe: events::probe_name(probe),
    }
}

impl Emit<'_> {
    /// Takes one session output (a no-op after an error).
    fn take(&mut self, o: SessionOut<'_>) {
        if self.result.is_ok() {
            self.result = self.out_one(o);
        }
    }

    fn out_one(&mut self, o: SessionOut<'_>) -> io::Result<()> {
        let info = self.info;
        match o {
            SessionOut::Gap { len, .. } => {
                self.out.lost("http_stream_gap", len);
                Ok(())
            }
            SessionOut::Drop { reason, bytes } => {
                self.out.lost(reason, bytes);
                Ok(())
            }
            SessionOut::Data(c) => {
                let r = Record {
                    origin: origin(&self.out.clock, info, c.ts_ns, c.probe),
                    conn: Some(conn_view(self.id, info)),
                    body: Body::Data {
                        direction: c.direction,
                        seq: c.seq,
                        payload: c.payload,
                        truncated: c.truncated,
                        kind: DataKind::Unparsed,
                    },
                };
                self.out.emit(&r)
            }
            SessionOut::Exchange(mut e, probe) => {
                let ports = [info.local.port(), info.remote.port()];
                let comm = events::comm_str(&info.comm);
                if let Some(r) = self.out.redactor.as_ref().and_then(|p| p.for_conn(comm, ports)) {
                    r.exchange(&mut e);
                }
                for m in std::iter::once(&e.request).chain(e.response.as_ref()) {
                    if m.body_truncated > 0 {
                        self.out.lost("http_body_over_limit", m.body_truncated);
                    }
                }
                let r = Record {
                    origin: origin(&self.out.clock, info, e.request.start_ts, probe),
                    conn: Some(conn_view(self.id, info)),
                    body: Body::Http(&e),
                };
                let written = self.out.emit(&r);
                crate::protocols::spare::give_back(e);
                written
            }
            SessionOut::Db(mut e, probe) => {
                let ports = [info.local.port(), info.remote.port()];
                if let Some(r) =
                    self.out.redactor.as_ref().and_then(|p| p.for_conn(events::comm_str(&info.comm), ports))
                {
                    r.db(&mut e);
                }
                let r = Record {
                    origin: origin(&self.out.clock, info, e.start_ts(), probe),
                    conn: Some(conn_view(self.id, info)),
                    body: Body::Db(&e),
                };
                self.out.emit(&r)
            }
        }
    }
}

impl Processor {
    /// A processor tracking at most `max_conns` connections (sized by the
    /// caller above the kernel's table, so that a connection whose kernel
    /// entry was evicted is still known when it is seen again), converting kernel
    /// times with `clock`, asking `host` about processes, and guessing roles
    /// from `ports` when the host cannot tell. It has no sinks yet.
    pub fn new(
        max_conns: usize,
        limits: Limits,
        clock: Clock,
        host: Box<dyn Host + Send>,
        ports: EphemeralPorts,
    ) -> Self {
        Self {
            tracker: ConnTracker::new(max_conns, ports, host),
            sessions: Default::default(),
            tcp_dns: Default::default(),
            max_sessions: max_conns.max(1),
            out: Outputs { sinks: Vec::new(), clock, user_drops: BTreeMap::new(), redactor: None },
            limits,
            kafka_topics: TopicNames::default(),
            work: ProbeWork::default(),
            agents: Default::default(),
            evictions_seen: 0,
            reconciled: Default::default(),
            stats: Stats::default(),
        }
    }

    /// Adds an output: every record from now on is handed to it too.
    pub fn add_sink(&mut self, sink: Box<dyn Sink>) {
        self.out.sinks.push(sink);
    }

    /// Redacts exchanges with `policy` before any sink sees them.
    pub fn set_redactor(&mut self, policy: Option<Policy>) {
        self.out.redactor = policy;
    }

    /// Libraries and programs reported since the last call, for the probes.
    pub fn take_work(&mut self) -> ProbeWork {
        std::mem::take(&mut self.work)
    }

    /// Connections tracked now.
    pub fn connections(&self) -> usize {
        self.tracker.len()
    }

    /// How full each of the processor's tables is (logged, and checked by
    /// the churn tests: none may grow with processes that came and went).
    pub fn table_sizes(&self) -> TableSizes {
        TableSizes {
            connections: self.tracker.len(),
            aliases: self.tracker.alias_count(),
            sessions: self.sessions.len(),
            agent_processes: self.agents.processes(),
        }
    }

    /// Evictions of live connections' kernel entries found so far (the
    /// kernel subtracts them from its count of entries).
    pub fn evictions_seen(&self) -> u64 {
        self.evictions_seen
    }

    /// Handles one ring-buffer record.
    pub fn handle(&mut self, raw: &[u8]) -> io::Result<()> {
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
            Event::Data(mut d) => {
                d.header.conn.id = self.tracker.resolve(d.header.conn.id);
                self.on_data(&d)
            }
            Event::Conn(c) => self.on_conn(&c),
            Event::Lib(l) => {
                self.work.libraries.push(l);
                Ok(())
            }
            Event::Exec(e) => {
                self.work.execs.push(e);
                Ok(())
            }
            Event::Exit(e) => {
                self.process_ended(e.pid, e.ts_boot_ns);
                self.work.exits.push(e.pid);
                Ok(())
            }
            Event::Dns(d) => self.dns_message(d.payload, &d.header, d.direction),
        }
    }

    /// One DNS message: its answers name later connections; it is written
    /// as a `dns` record. One that does not parse is counted and skipped.
    fn dns_message(
        &mut self,
        bytes: &[u8],
        header: &events::Header,
        direction: events::Direction,
    ) -> io::Result<()> {
        let m = match crate::dns::parse(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.out.lost("dns_malformed", bytes.len() as u64);
                return Ok(());
            }
        };
        let c = &header.conn;
        if m.response {
            self.tracker.learn_dns(c.netns, &m, header.ts_boot_ns);
        }
        let role = if c.remote.port() == 53 { events::Role::Client } else { events::Role::Server };
        let pod = self.tracker.pod_of(header.pid, header.cgroup);
        let r = Record {
            origin: Origin {
                ts_ns: self.out.clock.realtime_ns(header.ts_boot_ns),
                pid: header.pid,
                comm: header.comm(),
                source: SOURCE,
                probe: events::probe_name(header.probe),
            },
            conn: Some(ConnView {
                id: c.id,
                local: c.local,
                remote: c.remote,
                role,
                tls: false,
                remote_host: None,
                k8s: pod.as_ref(),
                peer: None,
            }),
            body: Body::Dns(&m, direction),
        };
        self.out.emit(&r)
    }

    fn on_data(&mut self, d: &events::DataEvent<'_>) -> io::Result<()> {
        self.stats.payload_bytes += d.payload.len() as u64;
        let id = d.header.conn.id;
        let info = self.tracker.on_data(&d.header).clone();
        let captured = Record {
            origin: Origin {
                ts_ns: self.out.clock.realtime_ns(d.header.ts_boot_ns),
                pid: d.header.pid,
                comm: d.header.comm(),
                source: events::source_of(d.header.probe),
                probe: events::probe_name(d.header.probe),
            },
            conn: Some(conn_view(id, &info)),
            body: Body::Data {
                direction: d.direction,
                seq: d.seq,
                payload: d.payload,
                truncated: d.truncated,
                kind: DataKind::Captured,
            },
        };
        self.out.emit(&captured)?;
        if info.local.port() == 53 || info.remote.port() == 53 {
            let mut messages = Vec::new();
            self.tcp_dns.feed(d, self.max_sessions, &mut |m| messages.push(m.to_vec()));
            for m in messages {
                self.dns_message(&m, &d.header, d.direction)?;
            }
        }
        // TLS plaintext has its own offsets: a session that saw the socket's
        // bytes (before the connection was known to be TLS) ends, and the
        // plaintext starts its own; socket bytes after plaintext are ignored.
        let plaintext = events::source_of(d.header.probe) != SOURCE;
        // Plaintext whose first chunk seen is not its first byte (an agent
        // attached or reconnected late) is joined mid-stream too.
        let joined = if plaintext { d.seq > 0 } else { info.midstream };
        let mut after_tls = None;
        match self.sessions.get(&id).map(|s| s.plaintext) {
            Some(false) if plaintext => {
                // A MySQL login follows its greeting and SSLRequest, which
                // only the socket's session saw.
                after_tls = self.sessions.get(&id).filter(|_| !joined).and_then(ConnSession::after_tls);
                self.close_session(id, &info, d.header.ts_boot_ns)?
            }
            Some(true) if !plaintext => return Ok(()),
            _ => {}
        }
        if !self.sessions.contains_key(&id) && self.sessions.len() >= self.max_sessions {
            self.evict_oldest_session()?;
        }
        // Socket bytes of a connection seen opened, and no session before:
        // its first chunk to arrive may not be its first byte.
        let fresh =
            !joined && !plaintext && !self.sessions.contains_key(&id) && self.tracker.start_session(id);
        let limits = self.limits;
        let topics = &self.kafka_topics;
        let session = self.sessions.entry(id).or_insert_with(|| {
            if let Some(s) = after_tls {
                return s;
            }
            let hint = match info.role {
                events::Role::Client => Some(events::Direction::Send),
                events::Role::Server => Some(events::Direction::Recv),
                events::Role::Unknown => None,
            };
            let mut s =
                ConnSession::new(joined, hint, limits, REORDER_LIMIT).with_kafka_topics(topics.clone());
            if fresh {
                s = s.from_first_byte();
            }
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
        let mut emit = self.out.session(id, &info);
        session.on_chunk(chunk, &mut |o| emit.take(o));
        emit.result
    }

    fn on_conn(&mut self, c: &events::ConnEvent) -> io::Result<()> {
        let mut c = *c;
        match c.change {
            events::ConnChange::Midstream => {
                if let Some(id) = self.tracker.live_with(&c.header.conn) {
                    // Not opened before the sensor: the same connection,
                    // whose kernel entry was evicted, under a new kernel id.
                    self.tracker.add_alias(c.header.conn.id, id);
                    self.out.lost(CONN_TABLE_EVICTED, 0);
                    self.evictions_seen += 1;
                    return Ok(());
                }
            }
            events::ConnChange::CloseUntracked => {
                // Any socket of the host that closes while the kernel's table
                // is under pressure: only those of live connections matter.
                let Some(id) = self.tracker.live_with(&c.header.conn) else { return Ok(()) };
                self.out.lost(CONN_TABLE_EVICTED, 0);
                self.evictions_seen += 1;
                c.header.conn.id = id;
                c.change = events::ConnChange::Close;
            }
            _ => c.header.conn.id = self.tracker.resolve(c.header.conn.id),
        }
        if c.change == events::ConnChange::Close
            && self.tracker.info(c.header.conn.id).is_none()
            && self.reconciled.0.remove(&c.header.conn.id)
        {
            // Closed already from a listing of the sockets (`close_gone`).
            return Ok(());
        }
        let c = &c;
        if self.hold_close(c) {
            // Written with the session's end, once the agents' last chunks are in.
            return Ok(());
        }
        let info = self.tracker.on_conn(c);
        if c.change == events::ConnChange::Close {
            // The connection's last exchanges first, then its close.
            self.close_session(c.header.conn.id, &info, c.header.ts_boot_ns)?;
        }
        self.conn_record(c, &info)
    }

    /// The kernel connections tracked now, to compare with the sockets that
    /// exist (`conn::MissingSockets`); not those whose close is held back
    /// for an agent's last plaintext.
    pub fn tracked_sockets(&self) -> Vec<TrackedSocket> {
        self.tracker.kernel_sockets().filter(|t| !self.agents.close_held(t.id)).collect()
    }

    /// Closes connections whose sockets no longer exist, at `ts_boot_ns`:
    /// each session's last records, then a close record whose probe says
    /// how it was found. Ids no longer tracked are skipped; returns how
    /// many were closed.
    pub fn close_gone(&mut self, ids: &[u64], ts_boot_ns: u64) -> io::Result<usize> {
        let mut closed = 0;
        for &id in ids {
            let Some(info) = self.tracker.info(id) else { continue };
            if self.agents.close_held(id) {
                continue;
            }
            let header = events::Header {
                probe: events::user_probe::SOCK_DIAG,
                ts_boot_ns,
                pid: info.pid,
                tid: 0,
                comm: info.comm,
                cgroup: 0,
                conn: events::ConnId {
                    id,
                    local: info.local,
                    remote: info.remote,
                    role: info.role,
                    tls: info.tls,
                    netns: info.netns,
                },
            };
            for &k in std::iter::once(&id).chain(&info.aliases) {
                if self.reconciled.0.insert(k) {
                    self.reconciled.1.push_back(k);
                }
            }
            while self.reconciled.1.len() > RECONCILED_KEPT {
                if let Some(old) = self.reconciled.1.pop_front() {
                    self.reconciled.0.remove(&old);
                }
            }
            let ev =
                events::ConnEvent { header, change: events::ConnChange::Close, send_bytes: 0, recv_bytes: 0 };
            let info = self.tracker.on_conn(&ev);
            self.close_session(id, &info, ts_boot_ns)?;
            self.conn_record(&ev, &info)?;
            closed += 1;
        }
        Ok(closed)
    }

    fn conn_record(&mut self, c: &events::ConnEvent, info: &ConnInfo) -> io::Result<()> {
        let r = Record {
            origin: Origin {
                ts_ns: self.out.clock.realtime_ns(c.header.ts_boot_ns),
                pid: info.pid,
                comm: events::comm_str(&info.comm),
                source: SOURCE,
                probe: events::probe_name(c.header.probe),
            },
            conn: Some(conn_view(c.header.conn.id, info)),
            body: Body::Conn(c.change),
        };
        self.out.emit(&r)
    }

    fn close_session(&mut self, id: u64, info: &ConnInfo, ts_boot_ns: u64) -> io::Result<()> {
        self.tcp_dns.remove(id);
        let Some(mut session) = self.sessions.remove(&id) else { return Ok(()) };
        let mut emit = self.out.session(id, info);
        session.close(ts_boot_ns, &mut |o| emit.take(o));
        emit.result
    }

    fn evict_oldest_session(&mut self) -> io::Result<()> {
        if let Some((&id, s)) = self.sessions.iter().min_by_key(|(_, s)| s.last_ts) {
            let ts = s.last_ts;
            let info = self.tracker.info(id).unwrap_or_else(ConnInfo::unknown);
            self.close_session(id, &info, ts)?;
        }
        Ok(())
    }

    /// Once a second, with the boot-time clock's `now_boot_ns`: held closes
    /// whose time has come are applied, holes that have not filled are given
    /// up, idle connections are closed.
    pub fn tick(&mut self, now_boot_ns: u64) -> io::Result<()> {
        self.finish_held_closes(now_boot_ns, false)?;
        let idle: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| now_boot_ns.saturating_sub(s.last_ts) > IDLE_NS)
            .map(|(&id, _)| id)
            .collect();
        for id in idle {
            let info = self.tracker.info(id).unwrap_or_else(ConnInfo::unknown);
            self.close_session(id, &info, now_boot_ns)?;
        }
        let waiting: Vec<u64> =
            self.sessions.iter().filter(|(_, s)| s.buffered() > 0).map(|(&id, _)| id).collect();
        for id in waiting {
            let info = self.tracker.info(id).unwrap_or_else(ConnInfo::unknown);
            let Some(session) = self.sessions.get_mut(&id) else { continue };
            let mut emit = self.out.session(id, &info);
            session.flush(&mut |o| emit.take(o));
            emit.result?;
        }
        Ok(())
    }

    /// Ends every session (at shutdown, at `now_boot_ns`), so nothing held is lost.
    pub fn close_all(&mut self, now_boot_ns: u64) -> io::Result<()> {
        self.finish_held_closes(now_boot_ns, true)?;
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            let info = self.tracker.info(id).unwrap_or_else(ConnInfo::unknown);
            self.close_session(id, &info, now_boot_ns)?;
        }
        Ok(())
    }

    /// Writes `drop` records for the kernel's new losses (`kernel`, read by
    /// the caller from the drop counters) and for user-space limits, at
    /// `now_boot_ns`.
    pub fn report_drops(&mut self, kernel: Vec<DropRecord>, now_boot_ns: u64) -> io::Result<()> {
        let forgotten = self.tracker.take_evicted();
        if forgotten > 0 {
            self.out.lost_n(CONN_TRACKER_EVICTED, forgotten, 0);
        }
        let user = std::mem::take(&mut self.out.user_drops).into_values();
        let ts_ns = self.out.clock.realtime_ns(now_boot_ns);
        for d in kernel.into_iter().chain(user) {
            warn!(count = d.count, bytes = d.bytes, reason = d.reason, "capture lost data");
            // Sensor-wide: no single process or connection.
            let r = Record {
                origin: Origin { ts_ns, pid: 0, comm: "", source: SOURCE, probe: "ringbuf:events" },
                conn: None,
                body: Body::Drop(d),
            };
            self.out.emit(&r)?;
        }
        Ok(())
    }

    /// Pushes every sink's buffered records out.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.sinks.iter_mut().try_for_each(|s| s.flush())
    }

    /// Completes every sink (closes a HAR document).
    pub fn finish(&mut self) -> io::Result<()> {
        self.out.sinks.iter_mut().try_for_each(|s| s.finish())
    }
}

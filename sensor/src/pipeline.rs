//! The capture loop: ring buffer → decode → connection table → output,
//! woken by the ring buffer's epoll readiness (no busy-waiting), with drop
//! counters read once a second and at the end.

use crate::clock::Clock;
use crate::config::CaptureConfig;
use crate::conn::{ConnInfo, ConnTracker, EphemeralPorts};
use crate::drops::DropCounters;
use crate::events::{self, Event};
use crate::output::{Body, ConnView, JsonlWriter, Origin, Record, TerminalSummary};
use crate::probes;
use anyhow::{anyhow, Context, Result};
use aya::maps::{PerCpuArray, RingBuf};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};

/// Where records go.
pub enum Sink {
    /// JSON Lines to a file or stdout.
    Jsonl(JsonlWriter<Box<dyn Write + Send>>),
    /// One line per exchange on the terminal.
    Terminal(TerminalSummary<std::io::Stdout>),
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
    tracker: ConnTracker,
    sink: Sink,
    clock: Clock,
    /// Counters.
    pub stats: Stats,
}

const SOURCE: &str = "kernel";

fn conn_view(info: &ConnInfo) -> ConnView {
    ConnView { local: info.local, remote: info.remote, role: info.role, tls: false }
}

impl Processor {
    /// A processor writing to `sink`.
    pub fn new(sink: Sink, max_conns: usize) -> Self {
        Self {
            tracker: ConnTracker::new(max_conns, EphemeralPorts::of_host()),
            sink,
            clock: Clock::new(),
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
            Event::Data(d) => {
                self.stats.payload_bytes += d.payload.len() as u64;
                let info = self.tracker.on_data(&d.header);
                let ts_ns = self.clock.realtime_ns(d.header.ts_boot_ns);
                match &mut self.sink {
                    Sink::Jsonl(w) => w.write(&Record {
                        origin: Origin {
                            ts_ns,
                            pid: d.header.pid,
                            comm: d.header.comm(),
                            source: SOURCE,
                            probe: events::probe_name(d.header.probe),
                        },
                        conn: Some(conn_view(info)),
                        body: Body::Data {
                            direction: d.direction,
                            seq: d.seq,
                            payload: d.payload,
                            truncated: d.truncated,
                        },
                    }),
                    Sink::Terminal(t) => t.on_data(d.header.conn.id, info, d.direction, ts_ns, d.payload),
                }
            }
            Event::Conn(c) => {
                let info = self.tracker.on_conn(&c);
                let ts_ns = self.clock.realtime_ns(c.header.ts_boot_ns);
                match &mut self.sink {
                    Sink::Jsonl(w) => w.write(&Record {
                        origin: Origin {
                            ts_ns,
                            pid: info.pid,
                            comm: events::comm_str(&info.comm),
                            source: SOURCE,
                            probe: events::probe_name(c.header.probe),
                        },
                        conn: Some(conn_view(&info)),
                        body: Body::Conn(c.change),
                    }),
                    Sink::Terminal(t) if c.change == events::ConnChange::Close => {
                        t.on_close(c.header.conn.id, &info, ts_ns)
                    }
                    Sink::Terminal(_) => Ok(()),
                }
            }
        }
    }

    /// Writes `drop` records for new kernel losses.
    pub fn report_drops(&mut self, drops: &mut DropCounters) -> std::io::Result<()> {
        for d in drops.poll() {
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
            Sink::Terminal(_) => Ok(()),
        }
    }
}

fn drain(ring: &mut RingBuf<aya::maps::MapData>, p: &mut Processor) -> Result<()> {
    let start = Instant::now();
    while let Some(item) = ring.next() {
        p.handle(&item).context("writing records")?;
    }
    p.stats.busy += start.elapsed();
    Ok(())
}

async fn stop_signal(duration: Option<Duration>) -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
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

/// Loads, attaches, captures until a signal or the duration, then detaches
/// every probe, drains what was captured and flushes.
pub async fn capture(opts: CaptureOptions) -> Result<Stats> {
    opts.capture.validate()?;
    probes::ensure_tracefs();
    let mut ebpf = probes::load_object(&opts.capture, std::process::id())?;
    let attached = probes::attach_kernel(&mut ebpf, opts.capture.kernel_hook)?;

    let ring = RingBuf::try_from(ebpf.take_map("events").ok_or_else(|| anyhow!("map events missing"))?)?;
    let drops_map: PerCpuArray<_, _> =
        PerCpuArray::try_from(ebpf.take_map("drops").ok_or_else(|| anyhow!("map drops missing"))?)?;
    let mut drops = DropCounters::new(drops_map);
    // SAFETY: the RingBuf owns its map fd and keeps it open and unchanged until
    // `into_inner` below hands it back.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("cannot watch the ring buffer: {e}"))?;
    let mut proc = Processor::new(opts.sink, opts.capture.max_connections as usize);

    if let Some(path) = &opts.ready_file {
        std::fs::write(path, format!("{}\n", attached.hook.hook.as_str()))
            .with_context(|| format!("writing ready file {}", path.display()))?;
    }
    info!(hook = attached.hook.hook.as_str(), "capturing");

    let started = Instant::now();
    let stop = stop_signal(opts.duration);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let why = loop {
        tokio::select! {
            why = &mut stop => break why,
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &mut proc)?;
                guard.clear_ready();
            }
            _ = tick.tick() => {
                proc.report_drops(&mut drops)?;
                proc.flush()?;
            }
        }
    };

    // Detach first so nothing new arrives, then keep everything already captured.
    drop(ebpf);
    let mut ring = ring.into_inner();
    drain(&mut ring, &mut proc)?;
    proc.report_drops(&mut drops)?;
    proc.flush()?;

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

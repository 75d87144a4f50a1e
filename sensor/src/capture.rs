//! The capture loop and its wiring: it loads and attaches the probes, feeds
//! the ring buffer's records and the agents' frames to the processor
//! (`nettap_core::processor`), hands the probes the work the processor
//! found (libraries, programs), and applies Kubernetes capture rules. It is
//! woken by the ring buffer's epoll readiness (no busy-waiting); drop
//! counters are read once a second and at the end.

use crate::config::CaptureConfig;
use crate::drops::DropCounters;
use crate::probes;
use crate::probes::exec_gate::ExecGate;
use anyhow::{anyhow, Context, Result};
use aya::maps::{PerCpuArray, RingBuf};
use nettap_core::clock::Clock;
use nettap_core::processor::{Processor, Stats};
use nettap_core::protocols::exchange::Limits;
use nettap_core::sink::Sink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};

/// What `nettap capture` was asked to do.
pub struct CaptureOptions {
    /// Kernel-side settings.
    pub capture: CaptureConfig,
    /// Outputs (the streaming API's publisher is added when `api` is set).
    pub sinks: Vec<Box<dyn Sink>>,
    /// What the sinks shed (exporters' full queues), reported as `drop` records.
    pub shed: Vec<crate::shed::Shed>,
    /// Created once every start-up probe is attached.
    pub ready_file: Option<PathBuf>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Every chunk is written as a `data` record (said in the log: not redacted).
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
    /// Where to serve `/metrics`, `/healthz` and `/readyz`, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Shortest time between two drains of the ring buffer, and how often it is
/// polled while records come fast. Data and connection records do not wake
/// the sensor (a wake-up costs the traced program ~3 µs a record: see
/// `quiet_wakeup` in emit.bpf.h); exec and library records do, and so does a
/// ring a quarter full. 5 ms of records fit the default 8 MiB ring up to
/// 1.6 GB/s.
const DRAIN_EVERY: Duration = Duration::from_millis(5);

/// Longest time between two polls: a poll that finds nothing doubles the
/// interval up to this, so an idle sensor wakes 20 times a second and the
/// first records after a quiet spell wait at most this long.
const POLL_IDLE_MAX: Duration = Duration::from_millis(50);

/// What one drain read.
#[derive(Debug, Clone, Copy, Default)]
struct Drained {
    records: u32,
    /// Ring bytes (headers and padding included; 0 when the ring is not metered).
    bytes: u64,
}

/// The next poll's interval after `d`, read `since` the drain before it
/// from a ring of `ring_bytes`. While records come, the sensor wakes as
/// seldom as keeps each drain near a sixteenth of the ring: below ~10 MB/s
/// of records (1000 HTTPS requests/s with both ends captured is ~3 MB/s)
/// every 50 ms, not every 5 (each wake-up costs the sensor a timer, an
/// epoll round and a drain's set-up); above ~100 MB/s every 5 ms. A burst
/// that fills a quarter of the ring before the poll wakes the sensor anyway.
fn next_poll_interval(now: Duration, d: Drained, since: Duration, ring_bytes: u64) -> Duration {
    if d.records == 0 {
        return (now * 2).min(POLL_IDLE_MAX);
    }
    if d.bytes == 0 || ring_bytes == 0 {
        return DRAIN_EVERY;
    }
    let per_sec = d.bytes as f64 / since.as_secs_f64().max(1e-3);
    Duration::from_secs_f64((ring_bytes / 16) as f64 / per_sec).clamp(DRAIN_EVERY, POLL_IDLE_MAX)
}

/// Until the ring is readable (a record that wakes, see DRAIN_EVERY) or `at`.
async fn ring_due(ring: &mut AsyncFd<RingBuf<aya::maps::MapData>>, at: Instant) -> std::io::Result<()> {
    tokio::select! {
        guard = ring.readable_mut() => {
            // Cleared before the drain: a wake-up during it is kept.
            guard?.clear_ready();
            Ok(())
        }
        _ = tokio::time::sleep_until(at.into()) => Ok(()),
    }
}

/// A drain lets other runnable tasks have the CPU after this much work
/// (`sched_yield`; it returns at once when nothing else waits). The kernel
/// preempts a task only at a tick (4 ms at HZ=250) or a wake-up, so
/// without it one drain of a busy host holds the CPU for milliseconds and
/// the traced programs' requests wait that long: at HTTP saturation their
/// p99 latency went 0.3 → 3 ms with the sensor, and 0.4–1.5 ms with this. Much
/// shorter turns starved the drain and overflowed the ring (measured at
/// 100 and 250 µs).
const YIELD_AFTER: Duration = Duration::from_micros(500);

/// Handles every record in the ring; returns what it read.
fn drain(ring: &mut RingBuf<aya::maps::MapData>, p: &mut Processor) -> Result<Drained> {
    let meter = &crate::metrics::global().ring;
    let consumed = meter.drain_started();
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
    let bytes = meter.drained(consumed);
    Ok(Drained { records: n, bytes })
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
fn redactor(cfg: &crate::config::RedactConfig, raw: bool) -> Result<Option<nettap_core::redact::Policy>> {
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
    let headers: Vec<&str> = nettap_core::redact::DEFAULT_HEADERS
        .into_iter()
        .chain(cfg.headers.iter().map(String::as_str))
        .collect();
    let fields: Vec<&str> = nettap_core::redact::DEFAULT_FIELDS
        .into_iter()
        .chain(cfg.fields.iter().map(String::as_str))
        .collect();
    info!(headers = ?headers, fields = ?fields, stable_key = cfg.key_file.is_some(), "redaction on");
    if raw {
        warn!("--raw: data records carry payloads as captured, not redacted");
    }
    let global = nettap_core::redact::Redactor::new(headers, fields, &key);
    let targets = cfg
        .targets
        .iter()
        .map(|t| {
            let selector = nettap_core::redact::TargetMatch { processes: t.processes.clone(), ports: t.ports.clone() };
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
    Ok(Some(nettap_core::redact::Policy::new(global, targets)))
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
    // Before anything is attached: `/readyz` says so until it is.
    if let Some(addr) = opts.metrics {
        let bound = crate::metrics::serve(addr).with_context(|| format!("serving metrics at {addr}"))?;
        info!(addr = %bound, "metrics served (/metrics, /healthz, /readyz)");
    }
    let allowed = crate::privileges::check(opts.attach_jvms.is_some()).map_err(|why| anyhow!(why))?;
    probes::ensure_tracefs();
    let mut ebpf = probes::load_object(&opts.capture, std::process::id())?;
    let attached = probes::attach_kernel(&mut ebpf, opts.capture.kernel_hook)?;
    // Without uprobes every TLS attachment would fail one by one: none is tried.
    let tls_probes = allowed.uprobes;
    let mut tls = probes::TlsProbers::default();
    if tls_probes {
        tls.attach_all(&mut ebpf, &opts.openssl_binaries);
    }
    // A process ended since the last tick: a deleted file's probes may go
    // once its last process has.
    let mut exited = false;
    let mut gate = start_exec_gate(opts.capture.exec_hold_ms, &allowed);

    let ring = RingBuf::try_from(ebpf.take_map("events").ok_or_else(|| anyhow!("map events missing"))?)?;
    // Paces the polls (next_poll_interval); the drains read bytes only from a metered ring.
    let ring_bytes = u64::from(opts.capture.ring_buffer_bytes);
    match crate::ring_meter::RingMeter::new(std::os::fd::AsFd::as_fd(&ring), opts.capture.ring_buffer_bytes) {
        Ok(m) => crate::metrics::global().ring.watch(m),
        Err(e) => warn!(error = %e, "ring buffer fill is not measured"),
    }
    let drops_map: PerCpuArray<_, _> =
        PerCpuArray::try_from(ebpf.take_map("drops").ok_or_else(|| anyhow!("map drops missing"))?)?;
    let mut drops = DropCounters::new(drops_map);
    let mut skipped = crate::recursion::RecursionMisses::default();
    let pressure_map = aya::maps::Array::try_from(
        ebpf.take_map("conn_pressure").ok_or_else(|| anyhow!("map conn_pressure missing"))?,
    )?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| anyhow!("counting CPUs: {e}"))?;
    let mut pressure = crate::conn_table::ConnPressure::new(
        pressure_map,
        opts.capture.max_connections,
        cpus.get() as usize,
    )?;
    // SAFETY: the RingBuf owns its map fd and keeps it open and unchanged until
    // `into_inner` below hands it back.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("cannot watch the ring buffer: {e}"))?;
    // Kubernetes mode names pods through this; the watchers fill it below.
    let pods = opts.kubernetes.as_ref().map(crate::k8s::PodResolver::for_node);
    let host = Box::new(crate::host::ProcHost::new(pods.clone()));
    // Twice the kernel's table: a connection whose kernel entry was evicted
    // is still known when its socket is seen again.
    let max_conns = 2 * opts.capture.max_connections as usize;
    let mut proc =
        Processor::new(max_conns, opts.http_limits, Clock::new(), host, crate::host::ephemeral_ports());
    proc.set_redactor(redactor(&opts.capture.redact, opts.raw)?);
    let mut sinks = opts.sinks;
    if opts.metrics.is_some() {
        sinks.push(Box::new(crate::metrics::RecordCounter::new(opts.raw)));
    }
    let mut api_socket = None;
    if let Some(listen) = &opts.api {
        let publisher = crate::api::Publisher::new(opts.raw);
        let addr = &listen.addr;
        api_socket = crate::api::serve(listen, &publisher)
            .await
            .with_context(|| format!("serving the streaming API at {addr}"))?;
        info!(%addr, access = listen.describe(), "streaming API served");
        sinks.push(Box::new(publisher));
    }
    // Every output behind one filter: the peers of the sensor's own
    // connections (a broker on a captured port) are not exported again.
    let own = crate::own_traffic::OwnTraffic::new(sinks, opts.raw);
    let mut sheds = opts.shed;
    sheds.push(own.shed());
    proc.add_sink(Box::new(own));

    // Capture goes on without them: agents are one source among several.
    let (agent_routes, agent_rx) = crate::agent::serve(opts.agent_socket.as_deref());
    let mut agent_rx = Some(agent_rx);

    let mut auto_attach = match &opts.attach_jvms {
        Some(agent) => {
            let mut a = crate::probes::jvm_attach::AutoAttach::new(
                agent.clone(),
                opts.agent_socket.as_deref(),
                agent_routes.handoff.as_ref().map(crate::agent::Handoff::watcher),
            );
            a.running();
            Some(a)
        }
        None => None,
    };

    // Kubernetes mode: pods named in records, capture rules in the kernel.
    let mut rules = None;
    let mut applied = crate::k8s::policy::CgroupRules::default();
    if let (Some(k8s), Some(pods)) = (&opts.kubernetes, pods) {
        let client = crate::k8s::client(k8s).await.context("Kubernetes mode")?;
        let (_stores, mut rx) =
            crate::k8s::watch::start(client, k8s, pods).await.context("Kubernetes mode")?;
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
    crate::metrics::global().heartbeat(Clock::boot_now_ns());
    crate::metrics::global().set_ready();
    info!(hook = attached.hook.hook.as_str(), "capturing");

    let started = Instant::now();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_drain = Instant::now();
    let mut poll_every = DRAIN_EVERY;
    let mut missing_closes = crate::missing_closes::MissingCloses::new(reconcile_every());
    // Start-up examined every running program: its freed heap goes back now.
    crate::heap_trim::trim();
    let mut heap = crate::heap_trim::HeapTrim::default();
    let why = loop {
        tokio::select! {
            why = &mut stop => break why,
            due = ring_due(&mut ring, last_drain + poll_every) => {
                due.context("waiting for the ring buffer")?;
                let gather = DRAIN_EVERY.saturating_sub(last_drain.elapsed());
                if !gather.is_zero() {
                    tokio::time::sleep(gather).await;
                }
                let drained = drain(ring.get_mut(), &mut proc)?;
                pressure.update(proc.evictions_seen())?;
                let since = last_drain.elapsed();
                last_drain = Instant::now();
                poll_every = next_poll_interval(poll_every, drained, since, ring_bytes);
                let work = proc.take_work();
                if !work.libraries.is_empty() || !work.execs.is_empty() {
                    heap.examined();
                }
                for lib in work.libraries.iter().filter(|_| tls_probes) {
                    tls.library_mapped(&mut ebpf, lib, Clock::boot_now_ns());
                }
                for exe in work.execs {
                    if let Some(g) = &mut gate {
                        // Held programs first: after start-up the ring holds
                        // every program started meanwhile, seconds of examining.
                        while let Some(held) = g.try_next() {
                            tls.program_held(&mut ebpf, &held);
                        }
                        g.mark(Path::new(&format!("/proc/{}/exe", exe.pid)));
                    }
                    if tls_probes {
                        tls.program_executed(&mut ebpf, &exe, Clock::boot_now_ns());
                    }
                    if let Some(a) = &mut auto_attach {
                        a.on_exec(exe.pid, &exe.name);
                    }
                    if let Some(h) = &agent_routes.handoff {
                        h.on_exec(exe.pid);
                    }
                }
                exited |= !work.exits.is_empty();
                for pid in work.exits {
                    if let Some(a) = &mut auto_attach {
                        a.on_exit(pid);
                    }
                }
            }
            Some(msgs) = next_or_never(agent_rx.as_mut().map(|rx| rx.recv())) => {
                // The kernel's records of the same moment first: a
                // connection's open is in the ring before its plaintext is here.
                drain(ring.get_mut(), &mut proc)?;
                for msg in msgs {
                    proc.on_agent(msg)?;
                }
                while let Some(msgs) = agent_rx.as_mut().and_then(|rx| rx.try_recv().ok()) {
                    for msg in msgs {
                        proc.on_agent(msg)?;
                    }
                }
            }
            held = next_or_never(gate.as_mut().map(ExecGate::next)) => match held {
                Some(held) => {
                    tls.program_held(&mut ebpf, &held);
                    heap.examined();
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
            listing = missing_closes.listed() => {
                missing_closes.apply(listing, &mut proc, Clock::boot_now_ns())?;
            }
            _ = tick.tick() => {
                let now = Clock::boot_now_ns();
                missing_closes.maybe_start(&proc);
                crate::metrics::global().heartbeat(now);
                proc.tick(now)?;
                let shed = sheds.iter().filter_map(crate::shed::Shed::take);
                proc.report_drops(kernel_drops(&mut drops, &mut skipped, &ebpf).into_iter().chain(shed).collect(), now)?;
                proc.flush()?;
                if tls_probes {
                    tls.release_unused(&mut ebpf, std::mem::take(&mut exited));
                }
                heap.tick();
            }
        }
    };

    // The sockets' files go first (connected clients and agents go on): a
    // sensor killed while it detaches, which takes seconds per hundred
    // uprobes, leaves none on the node.
    drop(api_socket);
    if let Some(s) = &agent_routes.socket {
        s.unlink();
    }
    // Detach first so nothing new arrives, then keep everything already captured.
    let last_skips = skipped.poll(&ebpf);
    let detach_started = Instant::now();
    let uprobes = probes::detach_uprobes();
    let uprobes_seconds = detach_started.elapsed().as_secs_f64();
    probes::unload_all(&mut ebpf);
    drop(ebpf);
    info!(
        uprobes,
        uprobes_seconds = format!("{uprobes_seconds:.1}"),
        seconds = format!("{:.1}", detach_started.elapsed().as_secs_f64()),
        "probes detached"
    );
    let mut ring = ring.into_inner();
    drain(&mut ring, &mut proc)?;
    while let Some(msgs) = agent_rx.as_mut().and_then(|rx| rx.try_recv().ok()) {
        for msg in msgs {
            proc.on_agent(msg)?;
        }
    }
    missing_closes.finish(&mut proc, LAST_LISTING_TIMEOUT, Clock::boot_now_ns())?;
    let now = Clock::boot_now_ns();
    proc.close_all(now)?;
    let shed = sheds.iter().filter_map(crate::shed::Shed::take);
    proc.report_drops(drops.poll().into_iter().chain(last_skips).chain(shed).collect(), now)?;
    proc.finish()?;

    let t = proc.table_sizes();
    info!(
        connections = t.connections,
        aliases = t.aliases,
        sessions = t.sessions,
        agent_processes = t.agent_processes,
        openssl_files = tls.files(&probes::OPENSSL),
        gnutls_files = tls.files(&probes::GNUTLS),
        nss_files = tls.files(&probes::NSS),
        boringssl_files = tls.files(&probes::BORINGSSL),
        go_programs = tls.go_programs(),
        jvms_tried = auto_attach.as_ref().map_or(0, |a| a.tried()),
        "tables at the end"
    );
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

/// How often tracked connections are compared with the sockets that exist
/// (`NETTAP_RECONCILE_SECS`, for tests; default 10 s): a close the kernel
/// did not report is written within two of these.
fn reconcile_every() -> Duration {
    let secs = std::env::var("NETTAP_RECONCILE_SECS").ok().and_then(|v| v.parse::<f64>().ok());
    Duration::from_secs_f64(secs.filter(|s| *s > 0.0).unwrap_or(10.0))
}

/// The shutdown's listing waits at most this long (each namespace's listing
/// takes milliseconds per thousand sockets).
const LAST_LISTING_TIMEOUT: Duration = Duration::from_secs(5);

/// The kernel's new losses: its drop counters and the program runs it skipped.
fn kernel_drops(
    drops: &mut DropCounters,
    skipped: &mut crate::recursion::RecursionMisses,
    ebpf: &aya::Ebpf,
) -> Vec<nettap_core::record::DropRecord> {
    drops.poll().into_iter().chain(skipped.poll(ebpf)).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_when_idle_and_follow_the_rate_with_records() {
        let ring = 8 << 20;
        let ms = Duration::from_millis;
        let mut every = DRAIN_EVERY;
        let mut seen = vec![];
        for _ in 0..6 {
            every = next_poll_interval(every, Drained::default(), every, ring);
            seen.push(every.as_millis());
        }
        assert_eq!(seen, [10, 20, 40, 50, 50, 50]);
        let read = |bytes| Drained { records: 1, bytes };
        // 12 MB/s of records: a sixteenth of the ring every ~43 ms.
        assert_eq!(next_poll_interval(every, read(600_000), ms(50), ring).as_millis(), 43);
        // A trickle: the longest interval; a flood, or a quarter-full wake-up: the shortest.
        assert_eq!(next_poll_interval(every, read(1_000), ms(50), ring), POLL_IDLE_MAX);
        assert_eq!(next_poll_interval(every, read(2 << 20), ms(1), ring), DRAIN_EVERY);
        assert_eq!(next_poll_interval(every, read(4 << 20), ms(20), ring), DRAIN_EVERY);
        // An unmetered ring: records, no byte count, the shortest as before.
        assert_eq!(next_poll_interval(every, read(0), ms(50), ring), DRAIN_EVERY);
    }
}

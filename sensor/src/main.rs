//! `nettap`: the command line of CONTRACT.md.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use nettap_core::record::JsonlWriter;
use nettap_core::sink::Sink;
use nettap_sensor::api::{ApiAddr, ApiListen, Dial, ServerTls, Token};
use nettap_sensor::capture::{self, CaptureOptions};
use nettap_sensor::config::{CaptureConfig, FileConfig, KernelHookChoice};
use nettap_sensor::k8s::KubernetesOptions;
use nettap_sensor::output::{HarWriter, TerminalSummary};
use nettap_shared_proto::v1::SubscribeRequest;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "nettap", version, about = "Capture the plaintext TCP and TLS traffic of this host")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Jsonl,
    Har,
}

#[derive(Subcommand)]
enum Command {
    /// Capture traffic on this host until SIGINT/SIGTERM or --duration.
    Capture(Box<CaptureArgs>),
    /// Print the records of a running `nettap capture --api ADDR` as they come.
    Tail(Box<TailArgs>),
    /// Load the JVM agent into a running JVM (HotSpot attach mechanism).
    Attach(AttachArgs),
}

#[derive(clap::Args)]
struct AttachArgs {
    /// The JVM's pid.
    pid: u32,
    /// The agent library (default: libnettap_agent.so beside this program).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// A socket path the agent is to stream to (default: none; the agent
    /// offers its own socket, which a running sensor takes).
    #[arg(long)]
    agent_socket: Option<PathBuf>,
    /// How long to wait for the JVM, in seconds.
    #[arg(long, value_parser = parse_seconds, default_value = "10")]
    timeout: Duration,
}

#[derive(clap::Args)]
struct TailArgs {
    /// The sensor's API: `unix:/path` (or a path) or host:port.
    #[arg(long)]
    connect: ApiAddr,
    /// CA certificate (PEM) that signed the sensor's: connect with TLS.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a sensor that requires one (with --tls-key).
    #[arg(long, requires = "tls_key", requires = "tls_ca")]
    tls_cert: Option<PathBuf>,
    /// Key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Name expected in the sensor's certificate, when not the host dialled.
    #[arg(long, requires = "tls_ca")]
    tls_domain: Option<String>,
    /// File whose first line is the sensor's bearer token.
    #[arg(long, env = "NETTAP_API_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Only these processes (repeatable).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Only connections with this port at either end (repeatable).
    #[arg(long = "port")]
    ports: Vec<u16>,
    /// Only exchanges with this authority or peer name (repeatable).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Only these kinds: http, dns, conn, drop, data (repeatable).
    #[arg(long = "kind")]
    kinds: Vec<String>,
    /// Only records of pods in this namespace (repeatable).
    #[arg(long = "namespace")]
    namespaces: Vec<String>,
    /// Only records of this pod (repeatable).
    #[arg(long = "pod")]
    pods: Vec<String>,
    /// Only records of pods with this label, NAME=VALUE (repeatable: all must match).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// `text`: a line per record; `json`: the records' JSON Lines bytes.
    #[arg(long, value_enum, default_value_t)]
    output: nettap_sensor::tail::Output,
    /// Exit after this many records.
    #[arg(long)]
    count: Option<u64>,
}

#[derive(clap::Args)]
struct CaptureArgs {
    /// Write records to PATH (`-` for stdout) instead of the terminal summary.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write records as JSON Lines into this directory (made 0700; files
    /// 0600, rotated, the oldest removed first beyond --out-max-bytes).
    #[arg(long, conflicts_with = "out")]
    out_dir: Option<PathBuf>,
    /// The records directory's bound, all files together.
    #[arg(long, default_value_t = nettap_sensor::output::file_store::Limits::default().max_bytes)]
    out_max_bytes: u64,
    /// Files kept in the records directory (the one written included).
    #[arg(long, default_value_t = nettap_sensor::output::file_store::Limits::default().max_files)]
    out_max_files: usize,
    /// Record format: JSON Lines, or the HTTP exchanges as HAR 1.2 (to stdout without --out).
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// Also write every captured chunk as a `data` record.
    #[arg(long)]
    raw: bool,
    /// Create this file once every start-up probe is attached.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Only these processes (repeatable).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Only connections with this port at either end (repeatable).
    #[arg(long = "port")]
    ports: Vec<u16>,
    /// Stop after this many seconds.
    #[arg(long, value_parser = parse_seconds)]
    duration: Option<Duration>,
    /// TOML configuration file (`[capture]` table).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Kernel hook for plaintext TCP.
    #[arg(long, value_enum, env = "NETTAP_KERNEL_HOOK")]
    kernel_hook: Option<KernelHookChoice>,
    /// BPF ring buffer size in bytes (power of two).
    #[arg(long)]
    ring_buffer_bytes: Option<u32>,
    /// Payload bytes captured per syscall; the rest is reported as `truncated`.
    #[arg(long)]
    max_bytes_per_call: Option<u32>,
    /// Sockets the kernel tracks at once (default 262144; `max_connections` in the config file).
    #[arg(long)]
    max_connections: Option<u32>,
    /// Write credentials, cookies and passwords as captured (redacted by default).
    #[arg(long)]
    no_redact: bool,
    /// Also redact this header (repeatable).
    #[arg(long = "redact-header")]
    redact_headers: Vec<String>,
    /// Also redact this JSON, form or query field (repeatable).
    #[arg(long = "redact-field")]
    redact_fields: Vec<String>,
    /// Hold a program executed for the first time up to this long, until its
    /// own TLS code (Go, OpenSSL linked in) is probed; 0 never holds.
    #[arg(long)]
    exec_hold_ms: Option<u32>,
    /// Serve the records to `nettap tail` and other subscribers (gRPC
    /// nettap.v1.Capture) at `unix:/path` or host:port. Other than a Unix
    /// socket or loopback, it needs TLS and a token or client certificates.
    #[arg(long)]
    api: Option<ApiAddr>,
    /// Serve Prometheus metrics at http://ADDR/metrics, and /healthz and
    /// /readyz (ready once every start-up probe is attached); host:port.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Export a span and a log record per exchange to this OpenTelemetry
    /// collector (OTLP; default from OTEL_EXPORTER_OTLP_ENDPOINT; headers,
    /// certificates and timeout from the other OTEL_EXPORTER_OTLP_* variables).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (default: OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf).
    #[arg(long)]
    otlp_protocol: Option<String>,
    /// Memory the OTLP export queue may hold; beyond it exchanges are shed
    /// and counted as `drop` records (`export_queue_full`).
    #[arg(long, env = "NETTAP_OTLP_QUEUE_BYTES", default_value_t = nettap_sensor::output::otlp::config::DEFAULT_QUEUE_BYTES)]
    otlp_queue_bytes: usize,
    #[command(flatten)]
    kafka: nettap_sensor::output::kafka::KafkaArgs,
    /// Also serve this Unix socket path to JVM agents told it (`socket=PATH`);
    /// by default agents hand their own socket over and no path is served.
    #[arg(long)]
    agent_socket: Option<PathBuf>,
    /// Load the JVM agent into every JVM running now and started later.
    #[arg(long)]
    attach_jvms: bool,
    /// The JVM agent library for --attach-jvms (default: libnettap_agent.so beside nettap).
    #[arg(long)]
    jvm_agent: Option<PathBuf>,
    /// The API's certificate chain (PEM): serve it over TLS (with --api-tls-key).
    #[arg(long, requires = "api")]
    api_tls_cert: Option<PathBuf>,
    /// The key (PEM) of --api-tls-cert.
    #[arg(long, requires = "api")]
    api_tls_key: Option<PathBuf>,
    /// Require subscribers' client certificates signed by this CA (PEM).
    #[arg(long, requires = "api")]
    api_client_ca: Option<PathBuf>,
    /// Require subscribers to send the bearer token on this file's first line.
    #[arg(long, requires = "api", env = "NETTAP_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
    /// Kubernetes mode: name each record's pod, namespace, labels and workload
    /// (from the API server; the sensor runs with hostPID).
    #[arg(long)]
    kubernetes: bool,
    /// This node's name, whose pods are watched (Kubernetes mode).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Kubeconfig file (Kubernetes mode; default: KUBECONFIG, ~/.kube/config or in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Capture only the pods these targets select (Kubernetes mode): JSON,
    /// Helm's `ebpf.configuration.capture` (`{"targets": [...]}`), re-read when it changes.
    #[arg(long)]
    capture_targets: Option<PathBuf>,
}

/// The API's address with its TLS and token, refused when not safe to serve.
fn api_listen(args: &CaptureArgs) -> Result<Option<ApiListen>> {
    let Some(addr) = &args.api else { return Ok(None) };
    let tls = ServerTls::from_flags(
        args.api_tls_cert.clone(),
        args.api_tls_key.clone(),
        args.api_client_ca.clone(),
    )?;
    let token = args.api_token_file.as_deref().map(Token::from_file).transpose()?;
    Ok(Some(ApiListen::new(addr.clone(), tls, token)?))
}

/// The agent library: the one named, else `libnettap_agent.so` beside this program.
fn jvm_agent_path(named: Option<PathBuf>) -> Result<PathBuf> {
    let agent = match named {
        Some(a) => a,
        None => std::env::current_exe()?.with_file_name("libnettap_agent.so"),
    };
    std::fs::canonicalize(&agent)
        .with_context(|| format!("the JVM agent library {} is not there", agent.display()))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?}: seconds must be finite and not negative"))
}

/// `NETTAP_OPENSSL_STATIC=true` with `NETTAP_OPENSSL_BINARY=/path[:/path…]`
/// (CONTRACT.md): binaries with OpenSSL linked in, probed at start even if
/// not running yet. (Executed programs are examined for OpenSSL anyway.)
fn openssl_binaries_from_env() -> Result<Vec<PathBuf>> {
    let on = std::env::var("NETTAP_OPENSSL_STATIC").map(|v| v.eq_ignore_ascii_case("true")).unwrap_or(false);
    let list = std::env::var_os("NETTAP_OPENSSL_BINARY");
    match (on, list) {
        (false, _) => Ok(Vec::new()),
        (true, None) => {
            anyhow::bail!("NETTAP_OPENSSL_STATIC=true needs NETTAP_OPENSSL_BINARY=/path[:/path…]")
        }
        (true, Some(list)) => {
            Ok(std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()).collect())
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NETTAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// This host's name (records' `node` outside Kubernetes).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

fn file_config(args: &CaptureArgs) -> Result<FileConfig> {
    Ok(match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    })
}

/// Kubernetes mode when asked by flag or configuration file.
fn kubernetes_options(args: &CaptureArgs, file: &FileConfig) -> Result<Option<KubernetesOptions>> {
    let k = &file.kubernetes;
    if !(args.kubernetes || k.enabled) {
        return Ok(None);
    }
    let node_name = args.node_name.clone().or_else(|| k.node_name.clone()).filter(|n| !n.is_empty());
    Ok(Some(KubernetesOptions {
        node_name: node_name.ok_or(nettap_sensor::k8s::KubernetesError::NoNodeName)?,
        kubeconfig: args.kubeconfig.clone().or_else(|| k.kubeconfig.clone()),
        sync_timeout: Duration::from_secs(10),
        targets_file: args.capture_targets.clone().or_else(|| k.capture_targets.clone()),
        cgroup_root: k.cgroup_root.clone(),
    }))
}

fn capture_config(args: &CaptureArgs, file: &FileConfig) -> Result<CaptureConfig> {
    let mut cfg = file.capture.clone();
    if let Some(h) = args.kernel_hook {
        cfg.kernel_hook = h;
    }
    if let Some(n) = args.ring_buffer_bytes {
        cfg.ring_buffer_bytes = n;
    }
    if let Some(n) = args.max_bytes_per_call {
        cfg.max_bytes_per_call = n;
    }
    if let Some(n) = args.max_connections {
        cfg.max_connections = n;
    }
    if args.no_redact {
        cfg.redact.enabled = false;
    }
    cfg.redact.headers.extend(args.redact_headers.iter().cloned());
    cfg.redact.fields.extend(args.redact_fields.iter().cloned());
    if let Some(n) = args.exec_hold_ms {
        cfg.exec_hold_ms = n;
    }
    cfg.pids.extend(&args.pids);
    cfg.ports.extend(&args.ports);
    cfg.validate()?;
    Ok(cfg)
}

/// The output the command line asks for.
fn sink(args: &CaptureArgs) -> Result<Box<dyn Sink>> {
    if let Some(dir) = &args.out_dir {
        anyhow::ensure!(
            matches!(args.format, Format::Jsonl),
            "--out-dir writes JSON Lines only (not --format har)"
        );
        let limits = nettap_sensor::output::file_store::Limits {
            max_bytes: args.out_max_bytes,
            max_files: args.out_max_files,
        };
        let store = nettap_sensor::output::FileStore::open(dir, limits)?;
        return Ok(Box::new(JsonlWriter::new(store, args.raw)));
    }
    let path = match (&args.out, args.format) {
        (Some(path), _) => path.clone(),
        (None, Format::Har) => PathBuf::from("-"),
        (None, Format::Jsonl) => return Ok(Box::new(TerminalSummary::new(std::io::stdout(), 65536))),
    };
    let out: Box<dyn Write + Send> = if path.as_os_str() == "-" {
        Box::new(std::io::stdout())
    } else {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        // Captured traffic holds secrets: only the owner may read it, also
        // when the file was there before (`mode` applies to new files only).
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if file.metadata().is_ok_and(|m| m.is_file()) {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot make {} private", path.display()))?;
        }
        Box::new(file)
    };
    Ok(match args.format {
        Format::Jsonl => Box::new(JsonlWriter::new(out, args.raw)),
        Format::Har => Box::new(HarWriter::new(out)?),
    })
}

/// The OTLP exporter, when the flags or OTEL_EXPORTER_OTLP_* name an endpoint.
fn otlp_sink(args: &CaptureArgs) -> Result<Option<nettap_sensor::output::otlp::OtlpSink>> {
    use nettap_sensor::output::otlp::{OtlpConfig, OtlpSink};
    let config = OtlpConfig::from_env(
        args.otlp_endpoint.as_deref(),
        args.otlp_protocol.as_deref(),
        Some(args.otlp_queue_bytes),
        |name| std::env::var(name).ok(),
    )?;
    let node = nettap_core::record::node().unwrap_or_default().to_string();
    config.map(|c| OtlpSink::start(c, node)).transpose().context("OTLP export")
}

/// The Kafka sink, when --kafka-brokers names brokers.
fn kafka_sink(args: &CaptureArgs) -> Result<Option<nettap_sensor::output::kafka::KafkaSink>> {
    use nettap_sensor::output::kafka::{KafkaConfig, KafkaSink};
    let config = KafkaConfig::from_args(&args.kafka)?;
    config.map(|c| KafkaSink::start(c, args.raw)).transpose().context("Kafka export")
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with every cause; no backtrace for what is a user-facing error.
            eprintln!("nettap: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Capture(args) => {
            let file = file_config(&args)?;
            let kubernetes = kubernetes_options(&args, &file)?;
            nettap_core::record::set_node(&match &kubernetes {
                Some(k) => k.node_name.clone(),
                None => host_name(),
            });
            let mut capture = capture_config(&args, &file)?;
            if kubernetes.is_some() && capture.max_pod_cgroups == 0 {
                capture.max_pod_cgroups = 8192;
            }
            let mut sinks = vec![sink(&args)?];
            let mut shed = Vec::new();
            if let Some(otlp) = otlp_sink(&args)? {
                shed.extend(otlp.sheds());
                sinks.push(Box::new(otlp));
            }
            if let Some(kafka) = kafka_sink(&args)? {
                shed.extend(kafka.sheds());
                sinks.push(Box::new(kafka));
            }
            let opts = CaptureOptions {
                capture,
                kubernetes,
                sinks,
                shed,
                ready_file: args.ready_file.clone(),
                duration: args.duration,
                raw: args.raw,
                http_limits: Default::default(),
                openssl_binaries: openssl_binaries_from_env()?,
                api: api_listen(&args)?,
                metrics: args.metrics,
                agent_socket: args.agent_socket.clone().filter(|p| p.as_os_str() != "none"),
                attach_jvms: if args.attach_jvms {
                    Some(jvm_agent_path(args.jvm_agent.clone())?)
                } else {
                    None
                },
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(capture::capture(opts))?;
        }
        Command::Attach(args) => {
            let agent = jvm_agent_path(args.agent)?;
            let options = args.agent_socket.map(|s| format!("socket={}", s.display())).unwrap_or_default();
            let answer = nettap_sensor::probes::jvm_attach::attach(args.pid, &agent, &options, args.timeout)
                .with_context(|| format!("attaching to JVM {}", args.pid))?;
            tracing::info!(pid = args.pid, agent = %agent.display(), answer, "agent loaded into the JVM");
        }
        Command::Tail(args) => {
            let filter = SubscribeRequest {
                pids: args.pids,
                ports: args.ports.into_iter().map(u32::from).collect(),
                hosts: args.hosts,
                kinds: args.kinds,
                namespaces: args.namespaces,
                pods: args.pods,
                labels: args.labels.into_iter().collect(),
                jsonl: false,
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let dial = Dial {
                ca: args.tls_ca,
                identity: args.tls_cert.zip(args.tls_key),
                domain: args.tls_domain,
                token: args.token_file.as_deref().map(Token::from_file).transpose()?,
            };
            rt.block_on(nettap_sensor::tail::tail(&args.connect, &dial, filter, args.count, args.output))
                .with_context(|| format!("streaming from {}", args.connect))?;
        }
    }
    Ok(())
}

//! The gRPC server: records go to every subscriber through a bounded
//! broadcast; one that falls behind loses the oldest and is told how many.

use super::security::{ApiListen, TokenCheck};
use nettap_core::clock::Clock;
use nettap_core::record::{in_jsonl, Body, DropRecord, Origin, Record};
use nettap_core::sink::Sink;
use nettap_shared_proto::v1::capture_server::{Capture, CaptureServer};
use nettap_shared_proto::v1::{self, SubscribeRequest};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

/// Records kept for a slow subscriber before it loses the oldest.
const BACKLOG: usize = 4096;

/// Where the API listens: a Unix socket (`unix:/path` or a path) or a TCP
/// address (anything but loopback needs TLS, see `security`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAddr {
    /// A Unix socket.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl std::str::FromStr for ApiAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(ApiAddr::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(ApiAddr::Unix(PathBuf::from(s)));
        }
        let a: SocketAddr = s.parse().map_err(|_| format!("{s:?} is neither unix:/path nor host:port"))?;
        Ok(ApiAddr::Tcp(a))
    }
}

impl std::fmt::Display for ApiAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ApiAddr::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// The sending side, held by the pipeline.
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: broadcast::Sender<Arc<v1::Record>>,
    /// Subscribers that asked for each record's JSON Lines bytes: they are
    /// made only while there is one.
    jsonl_subscribers: Arc<AtomicUsize>,
    /// The sensor's `--raw`: which data records its JSON Lines output has.
    raw: bool,
}

impl Publisher {
    /// A publisher with no subscribers, for a sensor whose JSON Lines
    /// output is `raw` or not.
    pub fn new(raw: bool) -> Self {
        Self { tx: broadcast::channel(BACKLOG).0, jsonl_subscribers: Arc::default(), raw }
    }

    /// Whether anyone listens (records are only converted then).
    pub fn active(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Sends a record to every subscriber.
    pub fn publish(&self, r: v1::Record) {
        let _ = self.tx.send(Arc::new(r));
    }
}

impl Sink for Publisher {
    /// Converted only while someone listens; a subscriber that falls behind
    /// is told (`subscriber_lagged`), the capture never waits for it. The
    /// records are those of the sensor's JSON Lines output.
    fn record(&mut self, r: &Record<'_>) -> std::io::Result<()> {
        if !self.active() || !in_jsonl(&r.body, self.raw) {
            return Ok(());
        }
        let mut pb = super::convert::record(r);
        if self.jsonl_subscribers.load(Ordering::Relaxed) > 0 {
            pb.jsonl = nettap_core::record::record_to_vec(r)?;
        }
        self.publish(pb);
        Ok(())
    }
}

fn kind_name(r: &v1::Record) -> &str {
    match &r.kind {
        Some(v1::record::Kind::Http(_)) => "http",
        Some(v1::record::Kind::Dns(_)) => "dns",
        Some(v1::record::Kind::ConnEvent(_)) => "conn",
        Some(v1::record::Kind::Drop(_)) => "drop",
        Some(v1::record::Kind::Db(d)) => d.kind.as_str(),
        Some(v1::record::Kind::Data(_)) | None => "data",
    }
}

fn wanted(f: &SubscribeRequest, r: &v1::Record) -> bool {
    let pid = r.origin.as_ref().map_or(0, |o| o.pid);
    let ports: Vec<u32> =
        r.conn.iter().flat_map(|c| [c.local.as_ref(), c.remote.as_ref()]).flatten().map(|e| e.port).collect();
    let mut hosts: Vec<&str> =
        r.conn.iter().map(|c| c.remote_host.as_str()).filter(|h| !h.is_empty()).collect();
    if let Some(v1::record::Kind::Http(h)) = &r.kind {
        if let Some(a) = h.request.as_ref().map(|q| q.authority.as_str()) {
            hosts.push(a);
            hosts.push(a.rsplit_once(':').map_or(a, |(h, _)| h));
        }
    }
    let pod_wanted = || {
        if f.namespaces.is_empty() && f.pods.is_empty() && f.labels.is_empty() {
            return true;
        }
        let Some(k) = &r.k8s else { return false };
        (f.namespaces.is_empty() || f.namespaces.contains(&k.namespace))
            && (f.pods.is_empty() || f.pods.contains(&k.pod))
            && f.labels.iter().all(|(name, value)| k.labels.get(name) == Some(value))
    };
    (f.kinds.is_empty() || f.kinds.iter().any(|k| k == kind_name(r)))
        && (f.pids.is_empty() || f.pids.contains(&pid))
        && (f.ports.is_empty() || ports.iter().any(|p| f.ports.contains(p)))
        && (f.hosts.is_empty() || hosts.iter().any(|h| f.hosts.iter().any(|w| w == h)))
        && pod_wanted()
}

/// One subscriber, counted (in the metrics, and among those that want JSON
/// Lines bytes) for as long as its stream lives.
struct Subscription {
    jsonl: Option<Arc<AtomicUsize>>,
}

impl Subscription {
    fn new(jsonl: Option<&Arc<AtomicUsize>>) -> Self {
        crate::metrics::global().api_subscriber(true);
        if let Some(count) = jsonl {
            count.fetch_add(1, Ordering::Relaxed);
        }
        // From here on it gets every record: said, so a tool (or a test)
        // knows when its subscription is live.
        tracing::info!(jsonl = jsonl.is_some(), "API subscriber joined");
        Self { jsonl: jsonl.cloned() }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        crate::metrics::global().api_subscriber(false);
        if let Some(count) = &self.jsonl {
            count.fetch_sub(1, Ordering::Relaxed);
        }
        tracing::info!("API subscriber left");
    }
}

/// A record that says `n` records were lost to a slow subscriber.
fn lagged(n: u64, jsonl: bool) -> v1::Record {
    let reason = "subscriber_lagged";
    let record = Record {
        origin: Origin {
            ts_ns: Clock::new().now_ns(),
            pid: 0,
            comm: "",
            source: "kernel",
            probe: "api:subscribe",
        },
        conn: None,
        body: Body::Drop(DropRecord { count: n, bytes: 0, reason }),
    };
    let mut pb = super::convert::record(&record);
    if jsonl {
        pb.jsonl = nettap_core::record::record_to_vec(&record).unwrap_or_default();
    }
    pb
}

struct Service {
    tx: broadcast::Sender<Arc<v1::Record>>,
    jsonl_subscribers: Arc<AtomicUsize>,
}

type RecordStream = Pin<Box<dyn Stream<Item = Result<v1::Record, tonic::Status>> + Send>>;

#[tonic::async_trait]
// The stream's error type is tonic's (large) Status, fixed by the trait.
#[allow(clippy::result_large_err)]
impl Capture for Service {
    type SubscribeStream = RecordStream;

    async fn subscribe(
        &self,
        request: tonic::Request<SubscribeRequest>,
    ) -> Result<tonic::Response<Self::SubscribeStream>, tonic::Status> {
        let filter = request.into_inner();
        // Receiving before it is counted (and logged as joined).
        let rx = self.tx.subscribe();
        let counted = Subscription::new(filter.jsonl.then_some(&self.jsonl_subscribers));
        let stream = BroadcastStream::new(rx).filter_map(move |item| {
            let _counted = &counted; // lives as long as the stream
            match item {
                Ok(r) => wanted(&filter, &r).then(|| {
                    let mut r = (*r).clone();
                    if !filter.jsonl {
                        r.jsonl = Vec::new();
                    }
                    Ok(r)
                }),
                Err(BroadcastStreamRecvError::Lagged(n)) => Some(Ok(lagged(n, filter.jsonl))),
            }
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

/// A Unix socket's file, removed on drop if it is still the one bound
/// (another sensor may have taken the path since). The server keeps serving
/// the connections it has.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    ino: Option<u64>,
}

impl SocketFile {
    fn new(path: PathBuf) -> SocketFile {
        let ino = std::fs::symlink_metadata(&path).ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        SocketFile { path, ino }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let now = std::fs::symlink_metadata(&self.path).ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        if now.is_some() && now == self.ino {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Starts serving `publisher`'s records in the background (until the runtime
/// ends); for a Unix socket, its file, removed when dropped.
pub async fn serve(listen: &ApiListen, publisher: &Publisher) -> anyhow::Result<Option<SocketFile>> {
    let svc = CaptureServer::with_interceptor(
        Service { tx: publisher.tx.clone(), jsonl_subscribers: publisher.jsonl_subscribers.clone() },
        TokenCheck(listen.token.clone()),
    );
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &listen.tls {
        server = server.tls_config(tls.config()?)?;
    }
    let router = server.add_service(svc);
    Ok(match &listen.addr {
        ApiAddr::Unix(path) => {
            let _ = std::fs::remove_file(path); // a socket left by an earlier run
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
                // A directory made here is root's alone (one that exists is left as it is).
                std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
                    .create(dir)?;
            }
            let listener = tokio::net::UnixListener::bind(path)?;
            // Only root (who could read the ring buffer anyway) subscribes here.
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            tokio::spawn(async move {
                if let Err(e) = router.serve_with_incoming(incoming).await {
                    tracing::warn!(error = %e, "streaming API stopped");
                }
            });
            Some(SocketFile::new(path.clone()))
        }
        ApiAddr::Tcp(a) => {
            let listener = tokio::net::TcpListener::bind(a).await?;
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            tokio::spawn(async move {
                if let Err(e) = router.serve_with_incoming(incoming).await {
                    tracing::warn!(error = %e, "streaming API stopped");
                }
            });
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!("unix:/run/nettap/api.sock".parse(), Ok(ApiAddr::Unix("/run/nettap/api.sock".into())));
        assert_eq!("/tmp/a.sock".parse(), Ok(ApiAddr::Unix("/tmp/a.sock".into())));
        assert_eq!("127.0.0.1:7070".parse(), Ok(ApiAddr::Tcp("127.0.0.1:7070".parse().unwrap())));
        assert_eq!("0.0.0.0:7070".parse(), Ok(ApiAddr::Tcp("0.0.0.0:7070".parse().unwrap())));
        assert!("nonsense".parse::<ApiAddr>().is_err());
    }

    #[test]
    fn filters_match_every_list_given() {
        let mut r = v1::Record {
            origin: Some(v1::Origin { pid: 7, ..Default::default() }),
            conn: Some(v1::Conn {
                remote: Some(v1::Endpoint { ip: vec![127, 0, 0, 1], port: 8080 }),
                ..Default::default()
            }),
            kind: Some(v1::record::Kind::Http(v1::HttpExchange {
                request: Some(v1::HttpMessage { authority: "api.test:8080".into(), ..Default::default() }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let f = |pids: &[u32], ports: &[u32], hosts: &[&str], kinds: &[&str]| SubscribeRequest {
            pids: pids.to_vec(),
            ports: ports.to_vec(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            kinds: kinds.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(wanted(&f(&[], &[], &[], &[]), &r));
        assert!(wanted(&f(&[7], &[8080], &["api.test"], &["http"]), &r));
        assert!(!wanted(&f(&[8], &[], &[], &[]), &r));
        assert!(!wanted(&f(&[], &[9090], &[], &[]), &r));
        assert!(!wanted(&f(&[], &[], &["other.test"], &[]), &r));
        assert!(!wanted(&f(&[], &[], &[], &["dns"]), &r));

        // Pod filters: a record without a pod never matches them.
        let pod = |ns: &[&str], pods: &[&str], labels: &[(&str, &str)]| SubscribeRequest {
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
            pods: pods.iter().map(|s| s.to_string()).collect(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        assert!(!wanted(&pod(&["shop"], &[], &[]), &r));
        r.k8s = Some(v1::K8s {
            pod: "web-1".into(),
            namespace: "shop".into(),
            labels: [("app".to_string(), "web".to_string()), ("tier".to_string(), "front".to_string())]
                .into(),
            ..Default::default()
        });
        assert!(wanted(&pod(&["shop"], &["web-1"], &[("app", "web")]), &r));
        assert!(wanted(&pod(&[], &[], &[("app", "web"), ("tier", "front")]), &r));
        assert!(!wanted(&pod(&["other"], &[], &[]), &r));
        assert!(!wanted(&pod(&[], &["web-2"], &[]), &r));
        assert!(!wanted(&pod(&[], &[], &[("app", "web"), ("tier", "back")]), &r));
        let redis = v1::Record {
            kind: Some(v1::record::Kind::Db(v1::DbExchange { kind: "redis".into(), ..Default::default() })),
            ..r
        };
        assert!(wanted(&f(&[7], &[], &[], &["redis"]), &redis));
        assert!(!wanted(&f(&[], &[], &[], &["pgsql", "http"]), &redis));
    }
}

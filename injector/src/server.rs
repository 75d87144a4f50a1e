//! The HTTPS server around `review::answer`: `POST /mutate` (the API server
//! calls it), `GET /healthz` (probes). rustls with the certificate the chart
//! or cert-manager made (re-read when renewed, `certs`); each connection is
//! served on its own task, so a slow or broken client holds nothing but
//! itself; at shutdown the requests in flight are finished.

use crate::certs::{CertError, ReloadingCert};
use crate::mutate::Config;
use crate::review::{self, MAX_BODY};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The certificate or key is unusable.
    #[error("TLS certificate")]
    Cert(#[from] CertError),
    /// rustls refused the configuration.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// bind() failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A rustls server configuration from PEM files (certificate chain, private
/// key), re-read when they change, looked at at most once per `check_every`.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    check_every: Duration,
) -> Result<rustls::ServerConfig, ServeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = ReloadingCert::new(cert, key, check_every, provider.clone())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Binds `addr`; the returned listener is served by `serve`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })
}

/// How long requests in flight may take to finish once `shutdown` resolved.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then accepts nothing more and lets the
/// requests in flight finish (at most `SHUTDOWN_GRACE`); with `dump`, each
/// review body is also written there (`review-N.json`).
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    cfg: Config,
    dump: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let cfg = Arc::new(cfg);
    let dump = Arc::new(dump);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (acceptor, cfg, dump) = (acceptor.clone(), cfg.clone(), dump.clone());
        // Taken before the handshake, so a connection still in it is waited for too.
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return warn!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return warn!(%peer, "TLS handshake timed out"),
            };
            let service = hyper::service::service_fn(move |req| handle(req, cfg.clone(), dump.clone()));
            let io = hyper_util::rt::TokioIo::new(tls);
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            if let Err(e) = watcher.watch(conn).await {
                warn!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let in_flight = graceful.count();
    info!(connections = in_flight, "no longer accepting: finishing the requests in flight");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        warn!(grace = ?SHUTDOWN_GRACE, "requests still in flight at exit");
    }
}

async fn handle(
    req: Request<Incoming>,
    cfg: Arc<Config>,
    dump: Arc<Option<PathBuf>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, "application/json".parse().expect("static"));
        Ok(r)
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, b"{\"ok\":true}".to_vec()),
        (&Method::POST, "/mutate") => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    let a = review::invalid(format!("request body unreadable or over {MAX_BODY} bytes: {e}"));
                    warn!(reason = a.summary, "review refused");
                    return reply(StatusCode::PAYLOAD_TOO_LARGE, a.body);
                }
            };
            if let Some(dir) = dump.as_ref() {
                static DUMPED: AtomicU64 = AtomicU64::new(0);
                let path = dir.join(format!("review-{}.json", DUMPED.fetch_add(1, Ordering::Relaxed)));
                if let Err(e) = std::fs::write(&path, &body) {
                    warn!(path = %path.display(), error = %e, "review not dumped");
                }
            }
            let a = review::answer(&body, &cfg);
            if a.status == 200 {
                info!("{}", a.summary);
            } else {
                warn!(reason = a.summary, "review refused");
            }
            reply(StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_REQUEST), a.body)
        }
        _ => reply(StatusCode::NOT_FOUND, b"{\"error\":\"POST /mutate or GET /healthz\"}".to_vec()),
    }
}

//! The HTTPS server around `review::answer`: `POST /mutate` (the API server
//! calls it), `GET /healthz` (probes). rustls with the certificate the chart
//! generated; each connection is served on its own task, so a slow or
//! broken client holds nothing but itself.

use crate::mutate::Config;
use crate::review::{self, MAX_BODY};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A PEM file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The certificate or key is unusable.
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

/// A rustls server configuration from PEM files (certificate chain, private key).
pub fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, ServeError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| ServeError::Read { path: p.display().to_string(), source })
    };
    let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!("{}: no certificate", cert.display())));
    }
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| ServeError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| ServeError::Tls(format!("{}: no private key", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Binds `addr`; the returned listener is served by `serve`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })
}

/// Serves until the task is dropped; with `dump`, each review body is also
/// written there (`review-N.json`).
pub async fn serve(listener: TcpListener, tls: rustls::ServerConfig, cfg: Config, dump: Option<PathBuf>) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let cfg = Arc::new(cfg);
    let dump = Arc::new(dump);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, cfg, dump) = (acceptor.clone(), cfg.clone(), dump.clone());
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return warn!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return warn!(%peer, "TLS handshake timed out"),
                };
            let service = hyper::service::service_fn(move |req| handle(req, cfg.clone(), dump.clone()));
            let io = hyper_util::rt::TokioIo::new(tls);
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                warn!(%peer, error = %e, "connection ended with an error");
            }
        });
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

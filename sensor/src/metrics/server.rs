//! `/metrics` (OpenMetrics text, which Prometheus scrapes), `/healthz` (the
//! capture loop is turning) and `/readyz` (every start-up probe attached),
//! over plain HTTP/1.1: they carry counts and pod names, never payload.

use super::global;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use nettap_core::clock::Clock;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The capture loop turns at least once a second; this much silence means
/// it is stuck.
const STALLED_AFTER: Duration = Duration::from_secs(10);

/// Binds `addr` (port 0: any) and serves the endpoints from a thread of
/// their own: the capture runtime is busy attaching probes (synchronous
/// work) during start-up, exactly when `/readyz` must answer "not yet".
/// Returns the address bound.
pub fn serve(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return tracing::warn!(error = %e, "metrics endpoint cannot serve"),
            };
            accept_loop(listener).await
        })
    })?;
    Ok(bound)
}

async fn accept_loop(listener: tokio::net::TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of fds, most likely: wait rather than spin.
                tracing::warn!(error = %e, "metrics endpoint cannot accept");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = hyper::service::service_fn(answer);
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let m = global();
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => match m.encode() {
            Ok(text) => (StatusCode::OK, OPENMETRICS, text),
            Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, TEXT, "cannot encode the metrics\n".into()),
        },
        (&Method::GET, "/healthz") => {
            let last = m.last_turn();
            let silent = Duration::from_nanos(Clock::boot_now_ns().saturating_sub(last));
            if last == 0 {
                (StatusCode::OK, TEXT, "starting\n".into())
            } else if silent > STALLED_AFTER {
                let why = format!("the capture loop has not turned for {} s\n", silent.as_secs());
                (StatusCode::SERVICE_UNAVAILABLE, TEXT, why)
            } else {
                (StatusCode::OK, TEXT, "ok\n".into())
            }
        }
        (&Method::GET, "/readyz") if m.ready() => (StatusCode::OK, TEXT, "ready\n".into()),
        (&Method::GET, "/readyz") => (StatusCode::SERVICE_UNAVAILABLE, TEXT, "attaching probes\n".into()),
        (&Method::GET, _) => (StatusCode::NOT_FOUND, TEXT, "/metrics, /healthz or /readyz\n".into()),
        _ => (StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n".into()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    Ok(response)
}

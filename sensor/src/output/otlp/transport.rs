//! OTLP over gRPC (tonic, with the generated collector clients) or over
//! HTTP with protobuf bodies (hyper), TLS by rustls either way; and which
//! failures are worth retrying (the OTLP specification's lists).

use super::config::{Compression, Protocol, SignalConfig};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use opentelemetry_proto::tonic::collector::logs::v1::{
    logs_service_client::LogsServiceClient, ExportLogsServiceRequest,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use prost::Message;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A failed export.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct ExportError {
    /// Worth sending again later (collector unavailable, overloaded, timed out).
    pub retryable: bool,
    /// What went wrong, for the log and the metrics' `reason`.
    pub reason: String,
}

/// The exporter cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A certificate or key file.
    #[error("OTLP TLS file {path}: {source}")]
    File {
        /// Which file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS settings.
    #[error("OTLP TLS: {0}")]
    Tls(String),
    /// An endpoint or header tonic refuses.
    #[error("OTLP endpoint or header: {0}")]
    Invalid(String),
}

/// A connection to the collector for one signal (each has its own settings).
pub enum Transport {
    /// OTLP/gRPC.
    Grpc {
        /// Spans.
        traces: TraceServiceClient<Channel>,
        /// Log records.
        logs: LogsServiceClient<Channel>,
        /// Sent with every call.
        headers: MetadataMap,
    },
    /// OTLP/HTTP, binary protobuf.
    Http {
        /// Pooled connections.
        client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
        /// The signal's URL.
        url: hyper::Uri,
        /// Sent with every request.
        headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
        /// Per request.
        timeout: Duration,
        /// Bodies gzipped.
        gzip: bool,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|source| SetupError::File { path: path.display().to_string(), source })
}

impl Transport {
    /// Sets up the client; it connects lazily (a collector that is not up
    /// yet is a retryable failure of the first export, not a start-up error).
    /// Needs a Tokio runtime (the exporter's).
    pub fn new(c: &SignalConfig) -> Result<Self, SetupError> {
        match c.protocol {
            Protocol::Grpc => Self::grpc(c),
            Protocol::HttpProtobuf => Self::http(c),
        }
    }

    fn grpc(c: &SignalConfig) -> Result<Self, SetupError> {
        let channel = |url: &str| -> Result<Channel, SetupError> {
            let mut ep = Endpoint::from_shared(url.to_string())
                .map_err(|e| SetupError::Invalid(e.to_string()))?
                .timeout(c.timeout)
                .connect_timeout(c.timeout);
            if url.starts_with("https://") {
                let mut tls = ClientTlsConfig::new();
                tls = match &c.certificate {
                    Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca)?)),
                    None => tls.with_native_roots(),
                };
                if let Some((cert, key)) = &c.client_identity {
                    tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                ep = ep.tls_config(tls).map_err(|e| SetupError::Tls(e.to_string()))?;
            }
            Ok(ep.connect_lazy())
        };
        let mut headers = MetadataMap::new();
        for (k, v) in &c.headers {
            let key =
                MetadataKey::from_bytes(k.as_bytes()).map_err(|e| SetupError::Invalid(e.to_string()))?;
            let value =
                MetadataValue::try_from(v.as_str()).map_err(|e| SetupError::Invalid(e.to_string()))?;
            headers.insert(key, value);
        }
        // One channel; the client of the other signal is never called.
        let channel = channel(&c.endpoint)?;
        let mut traces = TraceServiceClient::new(channel.clone());
        let mut logs = LogsServiceClient::new(channel);
        if c.compression == Compression::Gzip {
            traces = traces.send_compressed(CompressionEncoding::Gzip);
            logs = logs.send_compressed(CompressionEncoding::Gzip);
        }
        Ok(Transport::Grpc { traces, logs, headers })
    }

    fn http(c: &SignalConfig) -> Result<Self, SetupError> {
        let tls = |e: &dyn std::fmt::Display| SetupError::Tls(e.to_string());
        let mut roots = rustls::RootCertStore::empty();
        match &c.certificate {
            Some(ca) => {
                for cert in CertificateDer::pem_slice_iter(&read(ca)?) {
                    roots.add(cert.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    // A system root rustls cannot parse is not ours to refuse.
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(&e))?
            .with_root_certificates(roots);
        let config = match &c.client_identity {
            Some((cert, key)) => {
                let certs = CertificateDer::pem_slice_iter(&read(cert)?)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| tls(&e))?;
                let key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| tls(&e))?;
                builder.with_client_auth_cert(certs, key).map_err(|e| tls(&e))?
            }
            None => builder.with_no_client_auth(),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        let uri = |u: &str| u.parse::<hyper::Uri>().map_err(|e| SetupError::Invalid(format!("{u}: {e}")));
        let mut headers = Vec::new();
        for (k, v) in &c.headers {
            let name = hyper::header::HeaderName::try_from(k.as_str())
                .map_err(|e| SetupError::Invalid(e.to_string()))?;
            let value = hyper::header::HeaderValue::try_from(v.as_str())
                .map_err(|e| SetupError::Invalid(e.to_string()))?;
            headers.push((name, value));
        }
        Ok(Transport::Http {
            client,
            url: uri(&c.endpoint)?,
            headers,
            timeout: c.timeout,
            gzip: c.compression == Compression::Gzip,
        })
    }

    /// Sends spans; `Ok` carries how many the collector rejected.
    pub async fn traces(&mut self, req: ExportTraceServiceRequest) -> Result<i64, ExportError> {
        match self {
            Transport::Grpc { traces, headers, .. } => {
                let mut r = tonic::Request::new(req);
                *r.metadata_mut() = headers.clone();
                let resp = traces.export(r).await.map_err(grpc_error)?;
                Ok(resp.into_inner().partial_success.map_or(0, |p| p.rejected_spans))
            }
            Transport::Http { url, .. } => {
                let url = url.clone();
                let body = self.post(url, req.encode_to_vec()).await?;
                let resp =
                    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(
                        body,
                    )
                    .unwrap_or_default();
                Ok(resp.partial_success.map_or(0, |p| p.rejected_spans))
            }
        }
    }

    /// Sends log records; `Ok` carries how many the collector rejected.
    pub async fn logs(&mut self, req: ExportLogsServiceRequest) -> Result<i64, ExportError> {
        match self {
            Transport::Grpc { logs, headers, .. } => {
                let mut r = tonic::Request::new(req);
                *r.metadata_mut() = headers.clone();
                let resp = logs.export(r).await.map_err(grpc_error)?;
                Ok(resp.into_inner().partial_success.map_or(0, |p| p.rejected_log_records))
            }
            Transport::Http { url, .. } => {
                let url = url.clone();
                let body = self.post(url, req.encode_to_vec()).await?;
                let resp =
                    opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse::decode(body)
                        .unwrap_or_default();
                Ok(resp.partial_success.map_or(0, |p| p.rejected_log_records))
            }
        }
    }

    async fn post(&self, url: hyper::Uri, body: Vec<u8>) -> Result<Bytes, ExportError> {
        let Transport::Http { client, headers, timeout, gzip, .. } = self else {
            unreachable!("post is only called on the HTTP transport")
        };
        let mut req = hyper::Request::post(url).header(hyper::header::CONTENT_TYPE, "application/x-protobuf");
        let body = if *gzip {
            req = req.header(hyper::header::CONTENT_ENCODING, "gzip");
            // Fast level: JSON-heavy log bodies shrink several times at a
            // fraction of the default level's CPU.
            let mut z = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            z.write_all(&body)
                .and_then(|()| z.finish())
                .map_err(|e| ExportError { retryable: false, reason: e.to_string() })?
        } else {
            body
        };
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ExportError { retryable: false, reason: e.to_string() })?;
        let call = async {
            let resp = client
                .request(req)
                .await
                .map_err(|e| ExportError { retryable: true, reason: e.to_string() })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ExportError { retryable: true, reason: e.to_string() })?
                .to_bytes();
            if status.is_success() {
                Ok(body)
            } else {
                // OTLP/HTTP: these mean "later"; anything else will not get better.
                let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504);
                Err(ExportError { retryable, reason: format!("HTTP {}", status.as_u16()) })
            }
        };
        tokio::time::timeout(*timeout, call)
            .await
            .map_err(|_| ExportError { retryable: true, reason: "timed out".into() })?
    }
}

fn grpc_error(s: tonic::Status) -> ExportError {
    use tonic::Code;
    // OTLP/gRPC's retryable codes; `Unknown` is also what tonic reports for
    // a connection that could not be made.
    let retryable = matches!(
        s.code(),
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
            | Code::Unknown
    );
    ExportError { retryable, reason: format!("{:?}: {}", s.code(), s.message()) }
}

//! Where and how to export (CONTRACT.md "Export"): `--otlp-endpoint` and
//! the standard `OTEL_EXPORTER_OTLP_*` variables, read as the OpenTelemetry
//! exporter specification says (signal endpoints as given, the base
//! endpoint with `/v1/traces` and `/v1/logs` added for HTTP).

use std::path::PathBuf;
use std::time::Duration;

/// The wire protocol (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (port 4317 by convention).
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies (port 4318 by convention).
    HttpProtobuf,
}

impl Protocol {
    fn parse(s: &str) -> Result<Self, ConfigError> {
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            other => Err(ConfigError::Protocol(other.to_string())),
        }
    }

    /// As the variable spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// How request bodies are compressed (`OTEL_EXPORTER_OTLP_COMPRESSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// As they are (the specification's default).
    #[default]
    None,
    /// gzip: gRPC's `grpc-encoding: gzip`, HTTP's `Content-Encoding: gzip`.
    Gzip,
}

impl Compression {
    fn parse(s: &str) -> Result<Self, ConfigError> {
        match s.trim() {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            other => Err(ConfigError::Compression(other.to_string())),
        }
    }
}

/// What the exporter needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// gRPC or HTTP.
    pub protocol: Protocol,
    /// Spans go here (gRPC: the collector's URL; HTTP: the full URL).
    pub traces_endpoint: String,
    /// Log records go here.
    pub logs_endpoint: String,
    /// Sent with every request (`OTEL_EXPORTER_OTLP_HEADERS`, values URL-decoded).
    pub headers: Vec<(String, String)>,
    /// CA certificate (PEM) for the collector's certificate; else the system's roots.
    pub certificate: Option<PathBuf>,
    /// Client certificate (PEM) and its key, for collectors that require one.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Per export request.
    pub timeout: Duration,
    /// Request body compression.
    pub compression: Compression,
    /// Memory the queue of records waiting for export may hold.
    pub queue_bytes: usize,
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not `grpc` or `http/protobuf`.
    #[error("OTLP protocol {0:?} is not supported (grpc or http/protobuf)")]
    Protocol(String),
    /// Not an http(s) URL.
    #[error("OTLP endpoint {0:?} is not an http:// or https:// URL")]
    Endpoint(String),
    /// Not `name=value[,name=value…]`.
    #[error("OTEL_EXPORTER_OTLP_HEADERS: {0:?} is not name=value")]
    Header(String),
    /// Not milliseconds.
    #[error("OTEL_EXPORTER_OTLP_TIMEOUT: {0:?} is not a number of milliseconds")]
    Timeout(String),
    /// Not `gzip` or `none`.
    #[error("OTEL_EXPORTER_OTLP_COMPRESSION: {0:?} is not supported (gzip or none)")]
    Compression(String),
    /// Only one of the client certificate and its key.
    #[error("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY go together")]
    HalfIdentity,
}

/// The queue's bound unless told otherwise.
pub const DEFAULT_QUEUE_BYTES: usize = 32 << 20;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl OtlpConfig {
    /// The configuration from the flags and `env` (the variables), or
    /// `None` when neither names an endpoint (no export).
    pub fn from_env(
        endpoint_flag: Option<&str>,
        protocol_flag: Option<&str>,
        queue_bytes: Option<usize>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let base = endpoint_flag.map(str::to_string).or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let traces = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let logs = var("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT");
        if base.is_none() && traces.is_none() && logs.is_none() {
            return Ok(None);
        }
        // The specification's default is http/protobuf.
        let protocol = match protocol_flag.map(str::to_string).or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            Some(p) => Protocol::parse(&p)?,
            None => Protocol::HttpProtobuf,
        };
        let base = base.unwrap_or_else(|| match protocol {
            Protocol::Grpc => "http://localhost:4317".into(),
            Protocol::HttpProtobuf => "http://localhost:4318".into(),
        });
        let signal = |own: Option<String>, path: &str| -> Result<String, ConfigError> {
            let url = match (own, protocol) {
                (Some(url), _) => url,
                (None, Protocol::Grpc) => base.clone(),
                (None, Protocol::HttpProtobuf) => format!("{}/{path}", base.trim_end_matches('/')),
            };
            if url.starts_with("http://") || url.starts_with("https://") {
                Ok(url)
            } else {
                Err(ConfigError::Endpoint(url))
            }
        };
        let identity =
            match (var("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"), var("OTEL_EXPORTER_OTLP_CLIENT_KEY")) {
                (Some(c), Some(k)) => Some((c.into(), k.into())),
                (None, None) => None,
                _ => return Err(ConfigError::HalfIdentity),
            };
        let timeout = match var("OTEL_EXPORTER_OTLP_TIMEOUT") {
            Some(t) => Duration::from_millis(t.trim().parse().map_err(|_| ConfigError::Timeout(t))?),
            None => DEFAULT_TIMEOUT,
        };
        Ok(Some(OtlpConfig {
            protocol,
            traces_endpoint: signal(traces, "v1/traces")?,
            logs_endpoint: signal(logs, "v1/logs")?,
            headers: var("OTEL_EXPORTER_OTLP_HEADERS")
                .map(|h| parse_headers(&h))
                .transpose()?
                .unwrap_or_default(),
            certificate: var("OTEL_EXPORTER_OTLP_CERTIFICATE").map(PathBuf::from),
            client_identity: identity,
            timeout,
            compression: var("OTEL_EXPORTER_OTLP_COMPRESSION")
                .map(|c| Compression::parse(&c))
                .transpose()?
                .unwrap_or_default(),
            queue_bytes: queue_bytes.unwrap_or(DEFAULT_QUEUE_BYTES),
        }))
    }
}

/// `name=value,name2=value2` (W3C Baggage-like, values percent-encoded).
fn parse_headers(s: &str) -> Result<Vec<(String, String)>, ConfigError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_ascii_lowercase(), percent_decode(v.trim())))
            }
            _ => Err(ConfigError::Header(pair.to_string())),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(flag: Option<&str>, vars: &[(&str, &str)]) -> Result<Option<OtlpConfig>, ConfigError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        OtlpConfig::from_env(flag, None, None, |k| vars.get(k).cloned())
    }

    #[test]
    fn nothing_named_means_no_export() {
        assert!(cfg(None, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap().is_none());
    }

    #[test]
    fn http_adds_the_signal_paths_and_grpc_does_not() {
        let c = cfg(Some("http://c:4318/"), &[]).unwrap().unwrap();
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.traces_endpoint, "http://c:4318/v1/traces");
        assert_eq!(c.logs_endpoint, "http://c:4318/v1/logs");
        assert_eq!(c.timeout, Duration::from_secs(10));
        let c = cfg(
            None,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "https://logs:4317"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.traces_endpoint.as_str(), c.logs_endpoint.as_str()),
            ("https://c:4317", "https://logs:4317")
        );
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.compression, Compression::None);
        let c = cfg(Some("http://c"), &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]).unwrap().unwrap();
        assert_eq!(c.compression, Compression::Gzip);
    }

    #[test]
    fn the_flag_wins_over_the_variable() {
        let c =
            cfg(Some("http://flag:1"), &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:2")]).unwrap().unwrap();
        assert_eq!(c.traces_endpoint, "http://flag:1/v1/traces");
    }

    #[test]
    fn headers_are_url_decoded() {
        let c = cfg(Some("http://c"), &[("OTEL_EXPORTER_OTLP_HEADERS", "Api-Key=a%20b%3D,x-tenant=t1")])
            .unwrap()
            .unwrap();
        assert_eq!(c.headers, vec![("api-key".into(), "a b=".into()), ("x-tenant".into(), "t1".into())]);
        assert!(matches!(
            cfg(Some("http://c"), &[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]),
            Err(ConfigError::Header(_))
        ));
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(matches!(
            cfg(Some("http://c"), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
            Err(ConfigError::Protocol(_))
        ));
        assert!(matches!(cfg(Some("c:4317"), &[]), Err(ConfigError::Endpoint(_))));
        assert!(matches!(
            cfg(Some("http://c"), &[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")]),
            Err(ConfigError::Compression(_))
        ));
        assert!(matches!(
            cfg(Some("http://c"), &[("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem")]),
            Err(ConfigError::HalfIdentity)
        ));
    }
}

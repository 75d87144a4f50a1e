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
    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "none" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            _ => None,
        }
    }
}

/// How one signal (spans or log records) is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalConfig {
    /// gRPC or HTTP.
    pub protocol: Protocol,
    /// Where (gRPC: the collector's URL; HTTP: the full URL).
    pub endpoint: String,
    /// Sent with every request (`…_HEADERS`, values URL-decoded).
    pub headers: Vec<(String, String)>,
    /// CA certificate (PEM) for the collector's certificate; else the system's roots.
    pub certificate: Option<PathBuf>,
    /// Client certificate (PEM) and its key, for collectors that require one.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Per export request.
    pub timeout: Duration,
    /// Request body compression.
    pub compression: Compression,
}

/// What the exporter needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// Spans.
    pub traces: SignalConfig,
    /// Log records.
    pub logs: SignalConfig,
    /// Memory the queue of records waiting for export may hold.
    pub queue_bytes: usize,
}

/// A setting that cannot be used (each names the variable it came from).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not `grpc` or `http/protobuf`.
    #[error("OTLP protocol {0:?} is not supported (grpc or http/protobuf)")]
    Protocol(String),
    /// Not an http(s) URL.
    #[error("OTLP endpoint {0:?} is not an http:// or https:// URL")]
    Endpoint(String),
    /// Not `name=value[,name=value…]`.
    #[error("{0}: {1:?} is not name=value")]
    Header(String, String),
    /// Not milliseconds.
    #[error("{0}: {1:?} is not a number of milliseconds")]
    Timeout(String, String),
    /// Not `gzip` or `none`.
    #[error("{0}: {1:?} is not supported (gzip or none)")]
    Compression(String, String),
    /// Only one of the client certificate and its key.
    #[error("OTEL_EXPORTER_OTLP_[SIGNAL_]CLIENT_CERTIFICATE and …CLIENT_KEY go together")]
    HalfIdentity,
}

/// The queue's bound unless told otherwise.
pub const DEFAULT_QUEUE_BYTES: usize = 32 << 20;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl OtlpConfig {
    /// The configuration from the flags and `env` (the variables), or
    /// `None` when neither names an endpoint (no export).
    ///
    /// As the OpenTelemetry exporter specification says, each setting of a
    /// signal is its own variable (`OTEL_EXPORTER_OTLP_TRACES_*`,
    /// `OTEL_EXPORTER_OTLP_LOGS_*`) if set, else the general one
    /// (`OTEL_EXPORTER_OTLP_*`), else the default; a signal's own endpoint
    /// is used as given, the general one gets `/v1/traces` or `/v1/logs`
    /// for HTTP. `--otlp-endpoint` and `--otlp-protocol` stand in for the
    /// general variables; a signal's own variable still wins over them.
    pub fn from_env(
        endpoint_flag: Option<&str>,
        protocol_flag: Option<&str>,
        queue_bytes: Option<usize>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let base = endpoint_flag.map(str::to_string).or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let named =
            ["TRACES", "LOGS"].iter().any(|s| var(&format!("OTEL_EXPORTER_OTLP_{s}_ENDPOINT")).is_some());
        if base.is_none() && !named {
            return Ok(None);
        }
        let general = |key: &str, flag: Option<&str>| {
            flag.map(|v| (format!("--otlp-{}", key.to_ascii_lowercase()), v.to_string())).or_else(|| {
                let name = format!("OTEL_EXPORTER_OTLP_{key}");
                var(&name).map(|v| (name, v))
            })
        };
        let signal = |sig: &str, path: &str| -> Result<SignalConfig, ConfigError> {
            // (variable name, value): the signal's own, else the general one.
            let setting = |key: &str, flag: Option<&str>| {
                let own = format!("OTEL_EXPORTER_OTLP_{sig}_{key}");
                var(&own).map(|v| (own, v)).or_else(|| general(key, flag))
            };
            // The specification's default is http/protobuf.
            let protocol = match setting("PROTOCOL", protocol_flag) {
                Some((_, p)) => Protocol::parse(&p)?,
                None => Protocol::HttpProtobuf,
            };
            let own_endpoint = var(&format!("OTEL_EXPORTER_OTLP_{sig}_ENDPOINT"));
            let endpoint = match (own_endpoint, protocol) {
                (Some(url), _) => url,
                (None, Protocol::Grpc) => base.clone().unwrap_or_else(|| "http://localhost:4317".into()),
                (None, Protocol::HttpProtobuf) => {
                    let base = base.clone().unwrap_or_else(|| "http://localhost:4318".into());
                    format!("{}/{path}", base.trim_end_matches('/'))
                }
            };
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(ConfigError::Endpoint(endpoint));
            }
            let client_identity = match (setting("CLIENT_CERTIFICATE", None), setting("CLIENT_KEY", None)) {
                (Some((_, c)), Some((_, k))) => Some((c.into(), k.into())),
                (None, None) => None,
                _ => return Err(ConfigError::HalfIdentity),
            };
            let timeout = match setting("TIMEOUT", None) {
                Some((name, t)) => {
                    Duration::from_millis(t.trim().parse().map_err(|_| ConfigError::Timeout(name, t))?)
                }
                None => DEFAULT_TIMEOUT,
            };
            let headers = match setting("HEADERS", None) {
                Some((name, h)) => parse_headers(&name, &h)?,
                None => Vec::new(),
            };
            let compression = match setting("COMPRESSION", None) {
                Some((name, c)) => Compression::parse(&c).ok_or(ConfigError::Compression(name, c))?,
                None => Compression::None,
            };
            Ok(SignalConfig {
                protocol,
                endpoint,
                headers,
                certificate: setting("CERTIFICATE", None).map(|(_, c)| PathBuf::from(c)),
                client_identity,
                timeout,
                compression,
            })
        };
        Ok(Some(OtlpConfig {
            traces: signal("TRACES", "v1/traces")?,
            logs: signal("LOGS", "v1/logs")?,
            queue_bytes: queue_bytes.unwrap_or(DEFAULT_QUEUE_BYTES),
        }))
    }
}

/// `name=value,name2=value2` (W3C Baggage-like, values percent-encoded).
fn parse_headers(var: &str, s: &str) -> Result<Vec<(String, String)>, ConfigError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_ascii_lowercase(), percent_decode(v.trim())))
            }
            _ => Err(ConfigError::Header(var.to_string(), pair.to_string())),
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
        assert_eq!(c.traces.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.traces.endpoint, "http://c:4318/v1/traces");
        assert_eq!(c.logs.endpoint, "http://c:4318/v1/logs");
        assert_eq!(c.traces.timeout, Duration::from_secs(10));
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
            (c.traces.endpoint.as_str(), c.logs.endpoint.as_str()),
            ("https://c:4317", "https://logs:4317")
        );
        assert_eq!(
            (c.traces.timeout, c.logs.timeout),
            (Duration::from_millis(2500), Duration::from_millis(2500))
        );
        assert_eq!(c.traces.compression, Compression::None);
        let c = cfg(Some("http://c"), &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]).unwrap().unwrap();
        assert_eq!((c.traces.compression, c.logs.compression), (Compression::Gzip, Compression::Gzip));
    }

    #[test]
    fn the_flag_wins_over_the_variable() {
        let c =
            cfg(Some("http://flag:1"), &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:2")]).unwrap().unwrap();
        assert_eq!(c.traces.endpoint, "http://flag:1/v1/traces");
    }

    /// The specification: a signal's own variable, else the general one, else the default.
    #[test]
    fn a_signals_own_variable_wins_over_the_general_one() {
        let c = cfg(
            Some("http://c:4318"),
            &[
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "none"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "tenant=all"),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "tenant=spans,x=1"),
                ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/all.pem"),
                ("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", "/logs.pem"),
                ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/spans"),
            ],
        )
        .unwrap()
        .unwrap();
        let (t, l) = (&c.traces, &c.logs);
        assert_eq!((t.compression, l.compression), (Compression::Gzip, Compression::None));
        assert_eq!(t.headers, vec![("tenant".into(), "spans".into()), ("x".into(), "1".into())]);
        assert_eq!(l.headers, vec![("tenant".into(), "all".into())]);
        assert_eq!((t.timeout, l.timeout), (Duration::from_millis(700), Duration::from_secs(10)));
        assert_eq!(t.certificate.as_deref(), Some(std::path::Path::new("/all.pem")));
        assert_eq!(l.certificate.as_deref(), Some(std::path::Path::new("/logs.pem")));
        // The signal's own endpoint as given; logs over gRPC take the general endpoint as it is.
        assert_eq!((t.protocol, t.endpoint.as_str()), (Protocol::HttpProtobuf, "http://t:9/spans"));
        assert_eq!((l.protocol, l.endpoint.as_str()), (Protocol::Grpc, "http://c:4318"));
        // A signal's own endpoint alone turns export on; the other signal gets the default.
        let c = cfg(None, &[("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://l:1/logs")]).unwrap().unwrap();
        assert_eq!(
            (c.traces.endpoint.as_str(), c.logs.endpoint.as_str()),
            ("http://localhost:4318/v1/traces", "http://l:1/logs")
        );
        // Errors name the variable they came from.
        let e = cfg(Some("http://c"), &[("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "zstd")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION: \"zstd\" is not supported (gzip or none)"
        );
    }

    #[test]
    fn headers_are_url_decoded() {
        let c = cfg(Some("http://c"), &[("OTEL_EXPORTER_OTLP_HEADERS", "Api-Key=a%20b%3D,x-tenant=t1")])
            .unwrap()
            .unwrap();
        assert_eq!(c.logs.headers, vec![("api-key".into(), "a b=".into()), ("x-tenant".into(), "t1".into())]);
        assert!(matches!(
            cfg(Some("http://c"), &[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]),
            Err(ConfigError::Header(..))
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
            Err(ConfigError::Compression(..))
        ));
        assert!(matches!(
            cfg(Some("http://c"), &[("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem")]),
            Err(ConfigError::HalfIdentity)
        ));
    }
}

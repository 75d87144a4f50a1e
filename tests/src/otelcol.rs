//! A real OpenTelemetry Collector (ci/otelcol, built by ci/install-k8s.sh):
//! the OTLP receiver on loopback (gRPC and HTTP) and the file exporter, one
//! JSON object per request it received; read back as flat spans and logs.

use crate::k8s::k8s_bin;
use crate::wait::{free_port, TIMEOUT};
use serde_json::{Map, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) collector; killed on drop.
pub struct Collector {
    child: Option<Child>,
    /// Configuration, output files and its log.
    pub dir: tempfile::TempDir,
    /// OTLP/gRPC port.
    pub grpc: u16,
    /// OTLP/HTTP port.
    pub http: u16,
    runs: u32,
    /// The receivers' TLS block (server certificate, and the CA clients must present a certificate of).
    tls: String,
}

/// A received span with its resource: attributes as a JSON map (integers as numbers).
#[derive(Debug, Clone)]
pub struct OtlpSpan {
    /// `name`, `kind` (number), `traceId`, `spanId`, `parentSpanId`,
    /// `startTimeUnixNano`, `endTimeUnixNano`, `status` as received.
    pub span: Value,
    /// The span's attributes.
    pub attrs: Map<String, Value>,
    /// Its resource's attributes.
    pub resource: Map<String, Value>,
}

impl Collector {
    /// Starts the collector on two free loopback ports and waits until both listen.
    pub fn start() -> Collector {
        Collector::start_with_tls(None)
    }

    /// `start`, its receivers serving TLS with `pki`'s server certificate
    /// and requiring a client certificate its CA signed.
    pub fn start_with_tls(pki: Option<&crate::pki::Pki>) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let tls = pki.map_or_else(String::new, |p| {
            format!(
                ", tls: {{cert_file: {}, key_file: {}, client_ca_file: {}}}",
                p.server_cert.display(),
                p.server_key.display(),
                p.ca.display()
            )
        });
        let mut c = Collector { child: None, dir, grpc: free_port(), http: free_port(), runs: 0, tls };
        c.run();
        c
    }

    /// Starts it again on the same ports (after `stop`), writing new files
    /// (the file exporter truncates its file when it starts).
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "the collector is running");
        self.runs += 1;
        let (d, n, tls) = (self.dir.path().display(), self.runs, &self.tls);
        let config = format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{endpoint: \"127.0.0.1:{}\"{tls}}}\n      \
             http: {{endpoint: \"127.0.0.1:{}\"{tls}}}\n\
             exporters:\n  file/traces: {{path: {d}/traces.{n}.json, flush_interval: 100ms}}\n  \
             file/logs: {{path: {d}/logs.{n}.json, flush_interval: 100ms}}\n\
             service:\n  telemetry:\n    metrics: {{level: none}}\n  pipelines:\n    \
             traces: {{receivers: [otlp], exporters: [file/traces]}}\n    \
             logs: {{receivers: [otlp], exporters: [file/logs]}}\n",
            self.grpc, self.http
        );
        std::fs::write(self.dir.path().join("config.yaml"), config).unwrap();
        let log = std::fs::File::create(self.dir.path().join(format!("log.{}", self.runs))).unwrap();
        let child = Command::new(k8s_bin("otelcol"))
            .arg("--config")
            .arg(self.dir.path().join("config.yaml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start the collector");
        self.child = Some(child);
        let start = Instant::now();
        for port in [self.grpc, self.http] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!("the collector exited ({st}):\n{}", self.log());
                }
                assert!(start.elapsed() < TIMEOUT, "the collector did not listen on {port}:\n{}", self.log());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGTERM (it writes out what it holds) and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let st = crate::wait::wait_child(&mut child, "the collector after SIGTERM");
        assert!(st.success(), "the collector exited with {st}:\n{}", self.log());
    }

    /// Its logs, all runs.
    pub fn log(&self) -> String {
        (1..=self.runs)
            .map(|n| std::fs::read_to_string(self.dir.path().join(format!("log.{n}"))).unwrap_or_default())
            .collect()
    }

    /// `http(s)://127.0.0.1:PORT` of `protocol` (`grpc` or `http/protobuf`).
    pub fn endpoint(&self, protocol: &str) -> String {
        let port = if protocol == "grpc" { self.grpc } else { self.http };
        let scheme = if self.tls.is_empty() { "http" } else { "https" };
        format!("{scheme}://127.0.0.1:{port}")
    }

    /// Every request of `signal` (`traces`, `logs`) received, all runs.
    fn requests(&self, signal: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for n in 1..=self.runs {
            let file = self.dir.path().join(format!("{signal}.{n}.json"));
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            // The last line may be half written.
            out.extend(text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()));
        }
        out
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<OtlpSpan> {
        let mut out = Vec::new();
        for req in self.requests("traces") {
            for rs in req["resourceSpans"].as_array().into_iter().flatten() {
                let resource = attributes(&rs["resource"]["attributes"]);
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for span in ss["spans"].as_array().into_iter().flatten() {
                        let attrs = attributes(&span["attributes"]);
                        out.push(OtlpSpan { span: span.clone(), attrs, resource: resource.clone() });
                    }
                }
            }
        }
        out
    }

    /// Every log record received so far: (record, its resource's attributes).
    pub fn logs(&self) -> Vec<(Value, Map<String, Value>)> {
        let mut out = Vec::new();
        for req in self.requests("logs") {
            for rl in req["resourceLogs"].as_array().into_iter().flatten() {
                let resource = attributes(&rl["resource"]["attributes"]);
                for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
                    for r in sl["logRecords"].as_array().into_iter().flatten() {
                        out.push((r.clone(), resource.clone()));
                    }
                }
            }
        }
        out
    }

    /// Waits until at least `spans` spans and `logs` log records have arrived.
    pub fn wait_for(&self, spans: usize, logs: usize) {
        let start = Instant::now();
        loop {
            let (s, l) = (self.spans().len(), self.logs().len());
            if s >= spans && l >= logs {
                return;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "the collector got {s} spans and {l} log records, not {spans} and {logs}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// OTLP/JSON attributes (`[{key, value: {stringValue | intValue | …}}]`) as a map.
fn attributes(list: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    for kv in list.as_array().into_iter().flatten() {
        let v = &kv["value"];
        let value = if let Some(s) = v["stringValue"].as_str() {
            Value::from(s)
        } else if let Some(i) = v["intValue"].as_str().and_then(|i| i.parse::<i64>().ok()) {
            Value::from(i)
        } else {
            v.clone()
        };
        m.insert(kv["key"].as_str().unwrap_or_default().to_string(), value);
    }
    m
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

//! OTLP export to a real OpenTelemetry Collector (ci/otelcol: its OTLP
//! receiver and file exporter). Every HTTP/1, h2 and gRPC exchange the
//! sensor writes becomes one span with the semantic conventions' attributes
//! and kind, and one log record whose body is the exact JSON Lines line,
//! over both OTLP/gRPC and OTLP/HTTP. With the collector stopped under
//! load, the sensor's memory stays within its queue's bound, every exchange
//! is either exported or counted as shed, and export resumes when the
//! collector returns. Over TLS with a client certificate, configured by the
//! standard OTEL_EXPORTER_OTLP_* variables alone, both protocols work.

use nettap_e2e::*;
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PAGE: &str = "a page served over HTTP/1.1 and h2c\n";

fn curl(args: &[&str], url: &str) {
    let mut c = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-A", "otlp-test/1"])
        .args(args)
        .arg(url)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // A 404 is asked for on purpose; curl then exits 22.
    let st = wait_child(&mut c, "curl");
    assert!(st.success() || st.code() == Some(22), "curl {args:?} {url}: {st}");
}

fn nginx(h1: u16, h2c: u16, files: &[(&str, &[u8])]) -> Nginx {
    let server = format!(
        "    listen 127.0.0.1:{h1};\n    listen 127.0.0.1:{h2c} http2;\n    location / {{ root WWW; }}\n    \
         location = /missing {{ return 404 \"none here\"; }}"
    );
    Nginx::start(h1, &server, files)
}

/// The span and log record the collector has for each exchange line.
fn by_line(collector: &Collector, lines: &[&str]) -> Vec<(OtlpSpan, Value)> {
    let spans: HashMap<String, OtlpSpan> =
        collector.spans().into_iter().map(|s| (s.span["spanId"].as_str().unwrap().to_string(), s)).collect();
    let logs: HashMap<String, Value> = collector
        .logs()
        .into_iter()
        .map(|(l, _)| (l["body"]["stringValue"].as_str().unwrap_or_default().to_string(), l))
        .collect();
    lines
        .iter()
        .map(|line| {
            let log = logs.get(*line).unwrap_or_else(|| panic!("no log record carries {line}")).clone();
            let span = spans.get(log["spanId"].as_str().unwrap()).expect("the log's span").clone();
            assert_eq!(log["traceId"], span.span["traceId"]);
            (span, log)
        })
        .collect()
}

fn export_over(protocol: &str) {
    let collector = Collector::start();
    let (h1, h2c, grpc) = (free_port(), free_port(), free_port());
    let _nginx = nginx(h1, h2c, &[("page.txt", PAGE.as_bytes())]);
    let ports = [h1.to_string(), h2c.to_string(), grpc.to_string()];
    let endpoint = collector.endpoint(protocol);
    let sensor = Sensor::start(&[
        "--port",
        &ports[0],
        "--port",
        &ports[1],
        "--port",
        &ports[2],
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        protocol,
    ]);
    curl(&[], &format!("http://127.0.0.1:{h1}/page.txt?from=h1"));
    curl(&[], &format!("http://127.0.0.1:{h1}/missing"));
    curl(&["--http2-prior-knowledge"], &format!("http://127.0.0.1:{h2c}/page.txt"));
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let peer = program("grpc_peer.py");
    let mut server =
        Command::new(venv_python()).arg(&peer).args(["server", &ports[2]]).arg(&ready).spawn().unwrap();
    wait_for_file(&ready, || server.try_wait().unwrap().is_none());
    let mut client = Command::new(venv_python()).arg(&peer).args(["client", &ports[2]]).spawn().unwrap();
    assert!(wait_child(&mut client, "gRPC client").success());
    let _ = server.kill();
    let _ = server.wait();
    let cap = sensor.stop();

    let lines: Vec<&str> = cap.text.lines().filter(|l| l.starts_with(r#"{"kind":"http""#)).collect();
    // Both ends of each: 3 curl exchanges with nginx, 3 gRPC calls.
    assert_eq!(lines.len(), 12, "{protocol}: {lines:#?}");
    collector.wait_for(lines.len(), lines.len());
    let found = by_line(&collector, &lines);
    assert_eq!(collector.spans().len(), lines.len(), "{protocol}: one span per exchange, no more");
    assert_eq!(collector.logs().len(), lines.len(), "{protocol}: one log record per exchange, no more");
    let mut kinds = (0, 0, 0);
    for (line, (span, log)) in lines.iter().zip(&found) {
        let r: Value = serde_json::from_str(line).unwrap();
        let a = &span.attrs;
        let role = r["conn"]["role"].as_str().unwrap();
        let (local, remote) = (r["conn"]["local"].as_str().unwrap(), r["conn"]["remote"].as_str().unwrap());
        let server_end = if role == "server" { local } else { remote };
        let (peer_ip, _) = remote.rsplit_once(':').unwrap();
        let path = r["request"]["path"].as_str().unwrap();
        let ts = r["ts_ns"].as_u64().unwrap();
        assert_eq!(span.span["kind"], if role == "server" { 2 } else { 3 }, "{protocol} {role}: {line}");
        assert_eq!(span.span["startTimeUnixNano"], ts.to_string());
        assert_eq!(span.span["endTimeUnixNano"], (ts + r["latency_ns"].as_u64().unwrap()).to_string());
        assert_eq!(a["http.request.method"], r["request"]["method"]);
        assert_eq!(a["url.path"], path.split('?').next().unwrap());
        assert_eq!(a["http.response.status_code"], r["response"]["status"]);
        assert_eq!(a["server.port"].to_string(), server_end.rsplit_once(':').unwrap().1);
        assert_eq!(a["network.peer.address"], peer_ip);
        assert_eq!(a["network.protocol.version"], if r["protocol"] == "h2" { "2" } else { "1.1" });
        assert_eq!(span.resource["process.pid"], r["pid"]);
        assert_eq!(span.resource["service.name"], r["comm"]);
        assert_eq!(span.resource["host.name"], r["node"]);
        assert_eq!(log["timeUnixNano"], ts.to_string());
        match r.get("grpc") {
            Some(g) => {
                kinds.2 += 1;
                assert_eq!(span.span["name"], format!("nettap.test.Echo/{}", g["method"].as_str().unwrap()));
                assert_eq!(a["rpc.system"], "grpc");
                assert_eq!(a["rpc.service"], "nettap.test.Echo");
                assert_eq!(a["rpc.method"], g["method"]);
                assert_eq!(a["rpc.grpc.status_code"], g["status"]);
                // NOT_FOUND is the client's failure, not the server's.
                let error = g["status"] != 0 && role == "client";
                assert_eq!(span.span["status"]["code"] == 2, error, "{role}: {:?}", span.span);
            }
            None if r["protocol"] == "h2" => kinds.1 += 1,
            None => {
                kinds.0 += 1;
                assert_eq!(a["user_agent.original"], "otlp-test/1");
                assert_eq!(a.get("url.query").and_then(Value::as_str), path.split_once('?').map(|(_, q)| q));
                let status = r["response"]["status"].as_u64().unwrap();
                assert_eq!(span.span["status"]["code"] == 2, status == 404 && role == "client", "{line}");
            }
        }
    }
    assert_eq!(kinds, (4, 2, 6), "{protocol}: HTTP/1, h2 and gRPC exchanges");
}

#[test]
fn spans_and_logs_over_otlp_grpc() {
    export_over("grpc");
}

#[test]
fn spans_and_logs_over_otlp_http() {
    export_over("http/protobuf");
}

/// `OTEL_EXPORTER_OTLP_COMPRESSION=gzip` with
/// `OTEL_EXPORTER_OTLP_LOGS_COMPRESSION=none` (a signal's own variable wins
/// over the general one), both protocols: the collector takes the requests
/// (spans of every exchange arrive), and a second sensor, capturing the
/// collector's port, sees each span export arrive with gzip on the wire
/// (`grpc-encoding` / `content-encoding`) and each log export without. The
/// exporting sensor captures the collector's port too, and writes none of
/// its own export requests (they are the collector's side of its own
/// connection: held back as `sensor_own_traffic`, or they would be
/// exported again, and again).
#[test]
fn gzip_compressed_export_over_both_protocols() {
    for (protocol, path, logs_path, header) in [
        (
            "grpc",
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            "grpc-encoding",
        ),
        ("http/protobuf", "/v1/traces", "/v1/logs", "content-encoding"),
    ] {
        let collector = Collector::start();
        let (h1, h2c) = (free_port(), free_port());
        let _nginx = nginx(h1, h2c, &[("page.txt", PAGE.as_bytes())]);
        let endpoint = collector.endpoint(protocol);
        let collector_port = endpoint.rsplit_once(':').unwrap().1.to_string();
        let port = h1.to_string();
        let wire = Sensor::start(&["--port", &collector_port]);
        let sensor = Sensor::start_with_env(
            &[
                "--port",
                &port,
                "--port",
                &collector_port,
                "--otlp-endpoint",
                &endpoint,
                "--otlp-protocol",
                protocol,
            ],
            &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"), ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "none")],
        );
        load(h1, "/page.txt", 5);
        collector.wait_for(10, 10);
        // An export request's own exchange, answered, as the records file has it.
        for path in [path, logs_path] {
            wire.wait_for_record(&format!("{protocol}: an answered export to {path}"), |r| {
                r["request"]["path"] == path
                    && r["conn"]["role"] == "server"
                    && r["response"]["status"] == 200
            });
        }
        let own = sensor.stop();
        let cap = wire.stop();
        let pages = collector.spans().iter().filter(|s| s.attrs["url.path"] == "/page.txt").count();
        assert_eq!(pages, 10, "{protocol}: both ends of 5 exchanges");
        let collector_port: u16 = collector_port.parse().unwrap();
        let at_collector = |r: &&Value| {
            r["conn"]["local"].as_str().is_some_and(|l| l.ends_with(&format!(":{collector_port}")))
        };
        assert_eq!(
            own.records.iter().filter(at_collector).count(),
            0,
            "{protocol}: the sensor wrote its own export"
        );
        assert!(own.dropped("sensor_own_traffic").0 > 0, "{protocol}: the collector's side was never seen");
        let exports: Vec<&Value> = cap
            .records
            .iter()
            .filter(|r| r["kind"] == "http" && r["request"]["path"] == path && r["conn"]["role"] == "server")
            .collect();
        assert!(!exports.is_empty(), "{protocol}: no export request captured at the collector");
        // The sensor's last exports go out while it stops capturing, so their
        // answers may be missing from the records; any answer seen is a 200,
        // and at least one is seen.
        assert!(
            exports.iter().any(|r| r["response"]["status"] == 200),
            "{protocol}: no export's answer captured: {exports:?}"
        );
        let encoding = |r: &Value| {
            r["request"]["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(header)))
                .map(|h| h[1].clone())
        };
        for r in exports {
            assert_eq!(encoding(r), Some(Value::from("gzip")), "{protocol}: {}", r["request"]["headers"]);
            assert!(r["response"].is_null() || r["response"]["status"] == 200, "{r}");
        }
        let log_exports: Vec<&Value> =
            cap.records.iter().filter(|r| r["kind"] == "http" && r["request"]["path"] == logs_path).collect();
        for r in log_exports {
            let e = encoding(r);
            assert!(
                e.is_none() || e == Some(Value::from("identity")),
                "{protocol} logs: {}",
                r["request"]["headers"]
            );
        }
    }
}

/// The process's anonymous resident memory (its heap: where the queue
/// lives; the ring buffer's shared pages are not in it).
#[test]
fn export_over_tls_with_a_client_certificate_and_the_standard_variables() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &["127.0.0.1"]);
    let collector = Collector::start_with_tls(Some(&pki));
    let (h1, h2c) = (free_port(), free_port());
    let _nginx = nginx(h1, h2c, &[("page.txt", PAGE.as_bytes())]);
    for protocol in ["grpc", "http/protobuf"] {
        let port = h1.to_string();
        let endpoint = collector.endpoint(protocol);
        let (ca, cert, key) = (
            pki.ca.display().to_string(),
            pki.client_cert.display().to_string(),
            pki.client_key.display().to_string(),
        );
        let sensor = Sensor::start_with_env(
            &["--port", &port],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert.as_str()),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", key.as_str()),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=t%201"),
            ],
        );
        curl(&[], &format!("http://127.0.0.1:{h1}/page.txt?over={protocol}"));
        let cap = sensor.stop();
        assert_eq!(cap.log.matches("OTLP export failed").count(), 0, "{protocol}: {}", cap.log);
        let lines: Vec<&str> = cap.text.lines().filter(|l| l.starts_with(r#"{"kind":"http""#)).collect();
        assert_eq!(lines.len(), 2, "{protocol}: both ends");
        let start = Instant::now();
        while collector
            .logs()
            .iter()
            .filter(|(l, _)| lines.contains(&l["body"]["stringValue"].as_str().unwrap_or("")))
            .count()
            < 2
        {
            assert!(
                start.elapsed() < TIMEOUT,
                "{protocol}: the exchanges never arrived over TLS:\n{}",
                collector.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let found = by_line(&collector, &lines);
        assert!(found.iter().all(|(s, _)| s.attrs["url.query"] == format!("over={protocol}")));
    }
}

/// Requests of one curl on one keep-alive connection.
fn load(port: u16, path: &str, n: u32) {
    curl(&[], &format!("http://127.0.0.1:{port}{path}?n=[1-{n}]"));
}

#[test]
fn a_stopped_collector_costs_the_queue_bound_and_every_exchange_is_exported_or_counted() {
    const QUEUE: u64 = 1 << 20;
    let mut collector = Collector::start();
    let (h1, h2c, metrics) = (free_port(), free_port(), free_port());
    let big: String = (0..64 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let _nginx = nginx(h1, h2c, &[("page.txt", PAGE.as_bytes()), ("big.txt", big.as_bytes())]);
    let port = h1.to_string();
    let endpoint = collector.endpoint("grpc");
    let metrics_addr = format!("127.0.0.1:{metrics}");
    let queue = QUEUE.to_string();
    let sensor = Sensor::start(&[
        "--port",
        &port,
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
        "--otlp-queue-bytes",
        &queue,
        "--metrics",
        &metrics_addr,
    ]);
    load(h1, "/page.txt", 50);
    collector.wait_for(100, 100);
    let before = rss_anon_kib(sensor.pid());

    // The collector is down for 60 s under a steady load: a burst of 25
    // exchanges with 64 KiB bodies every 2 s (750 in all, some 100 MB of
    // records at both ends, well within what the sensor keeps up with). The
    // queue is full within the first bursts; the heap is sampled through
    // the whole outage, so growth with time (not only with the queue)
    // would show, and the exporter has long reached its longest backoff.
    collector.stop();
    let (peak, queued) = load_while_sampling(
        sensor.pid(),
        metrics,
        "nettap_export_queue_bytes{",
        30,
        Duration::from_secs(60),
        || {
            let start = Instant::now();
            load(h1, "/big.txt", 25);
            // The sampler waits 200 ms after each burst.
            std::thread::sleep(Duration::from_millis(1800).saturating_sub(start.elapsed()));
        },
    );
    assert!(queued > 0.0 && queued <= QUEUE as f64, "queue bytes {queued}");
    assert!(metric_sum(metrics, "nettap_export_failures_total{") > 0.0);
    let shed_so_far = metric_sum(metrics, r#"nettap_dropped_total{reason="export_queue_full"}"#);
    assert!(shed_so_far > 0.0, "nothing counted as shed while the collector was down");
    let grown = peak.saturating_sub(before);
    eprintln!(
        "sensor heap {before} KiB before, {peak} KiB at most while the collector was down (+{grown} KiB)"
    );
    // The queue plus the sensor's own working set (parsers, buffers).
    let bound_kib = QUEUE / 1024 + 8 * 1024;
    assert!(grown < bound_kib, "the sensor grew by {grown} KiB with a {QUEUE} B queue");

    collector.run();
    sensor.wait_for_log(&["OTLP export resumed"]);
    // The first answered batch says "resumed"; the backlog of the outage is
    // still queued, and records arriving while it is full are shed: the
    // last requests wait until it has drained.
    let start = Instant::now();
    while metric_sum(metrics, "nettap_export_queue_bytes{") > 0.0 {
        assert!(start.elapsed() < TIMEOUT, "the export queue never drained after the collector came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    load(h1, "/page.txt", 20);
    let cap = sensor.stop();

    let lines: Vec<&str> = cap.text.lines().filter(|l| l.starts_with(r#"{"kind":"http""#)).collect();
    let (shed, shed_bytes) = cap.dropped("export_queue_full");
    let (failed, _) = cap.dropped("export_failed");
    // Without the bound, what was shed would have stayed in memory: far more
    // than the sensor grew (and than the queue holds).
    let shown = 2 * grown.max(QUEUE / 1024);
    assert!(
        shed_bytes / 1024 > shown,
        "only {shed_bytes} B shed, the sensor grew {grown} KiB: the load does not show the bound"
    );
    // The file exporter writes what it got within its flush interval.
    let start = Instant::now();
    while (collector.spans().len() as u64 + shed + failed) < lines.len() as u64 && start.elapsed() < TIMEOUT {
        std::thread::sleep(Duration::from_millis(100));
    }
    let spans = collector.spans();
    let ids: std::collections::HashSet<&str> =
        spans.iter().map(|s| s.span["spanId"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), spans.len(), "a span was exported twice");
    assert!(shed > 0, "nothing shed");
    assert_eq!(
        spans.len() as u64 + shed + failed,
        lines.len() as u64,
        "every exchange is exported or counted: {} spans, {shed} shed, {failed} failed, {} exchanges",
        spans.len(),
        lines.len()
    );
    // Export resumed: the last 20 requests, both ends, all arrived (and
    // the 50 before the collector stopped).
    let small = spans.iter().filter(|s| s.attrs["url.path"] == "/page.txt").count();
    assert_eq!(small, 140, "the exchanges before the collector stopped and after it came back");
    assert_eq!(collector.logs().len(), spans.len());
}

//! `nettap tail --connect ADDR`: subscribes to a running sensor and prints
//! one line per record, like the terminal summary, or each record's JSON
//! Lines bytes (`--output json`); follows the sensor across restarts.

use crate::api::{ApiAddr, ApiSecurityError, Dial};
use nettap_shared_proto::v1::capture_client::CaptureClient;
use nettap_shared_proto::v1::{self, record::Kind, SubscribeRequest};
use std::io::Write;
use std::net::IpAddr;

fn addr(e: &Option<v1::Endpoint>) -> String {
    let Some(e) = e else { return "-".into() };
    let ip: Option<IpAddr> = match e.ip.len() {
        4 => <[u8; 4]>::try_from(e.ip.as_slice()).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(e.ip.as_slice()).ok().map(IpAddr::from),
        _ => None,
    };
    match ip {
        Some(IpAddr::V6(v6)) => format!("[{v6}]:{}", e.port),
        Some(ip) => format!("{ip}:{}", e.port),
        None => format!("?:{}", e.port),
    }
}

/// One line for a record.
pub fn line(r: &v1::Record) -> String {
    let mut who = r.origin.as_ref().map(|o| format!("{}[{}]", o.comm, o.pid)).unwrap_or_default();
    if let Some(k) = &r.k8s {
        who.push_str(&format!(" {}/{}", k.namespace, k.pod));
    }
    let conn = r.conn.clone().unwrap_or_default();
    match &r.kind {
        Some(Kind::Http(h)) => {
            let q = h.request.clone().unwrap_or_default();
            let scheme = if conn.tls { "https" } else { "http" };
            let (status, latency) = match (&h.response, h.latency_ns) {
                (Some(resp), Some(ns)) => (resp.status.to_string(), format!("{:.1} ms", ns as f64 / 1e6)),
                _ => ("-".into(), "no response".into()),
            };
            let host = if q.authority.is_empty() { addr(&conn.remote) } else { q.authority.clone() };
            format!("{:<7} {scheme}://{host}{}  {status}  {latency}  {}  {who}", q.method, q.path, h.protocol)
        }
        Some(Kind::Dns(d)) => format!(
            "DNS     {} {} {} -> [{}] {}  {who}",
            if d.response { "answer" } else { "query" },
            d.query,
            d.qtype,
            d.answers.join(", "),
            d.rcode
        ),
        Some(Kind::ConnEvent(c)) => {
            let event = v1::conn_event::Event::try_from(c.event).map(|e| e.as_str_name()).unwrap_or("?");
            let remote =
                if conn.remote_host.is_empty() { addr(&conn.remote) } else { conn.remote_host.clone() };
            format!(
                "TCP     {} {} -> {}  {who}",
                event.trim_start_matches("EVENT_").to_lowercase(),
                addr(&conn.local),
                remote
            )
        }
        Some(Kind::Db(d)) => {
            let latency = d.latency_ns.map(|ns| format!("{:.1} ms", ns as f64 / 1e6)).unwrap_or_default();
            format!(
                "{:<7} {}  {}  {latency}  {who}",
                d.kind.to_ascii_uppercase(),
                addr(&conn.remote),
                d.summary
            )
        }
        Some(Kind::Drop(d)) => format!("LOST    {} records, {} bytes ({})", d.count, d.bytes, d.reason),
        Some(Kind::Data(d)) => format!("DATA    {} bytes at {}  {who}", d.payload.len(), d.seq),
        None => String::new(),
    }
}

/// A failed subscription in words, with what the sensor most likely wants
/// when it closed the connection without an answer (a TLS handshake that
/// failed shows up only as that).
fn refusal(s: &tonic::Status, addr: &ApiAddr, dial: &Dial) -> anyhow::Error {
    let mut text = format!("{:?}: {}", s.code(), s.message());
    let mut cause = std::error::Error::source(s);
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(&format!(": {c_text}"));
        }
        cause = c.source();
    }
    let closed = matches!(s.code(), tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Unavailable);
    let hint = match (addr, &dial.ca, &dial.identity) {
        _ if !closed => "",
        (ApiAddr::Tcp(_), None, _) => " (does the sensor serve TLS? then pass --tls-ca)",
        (ApiAddr::Tcp(_), Some(_), None) => {
            " (does the sensor require client certificates? then pass --tls-cert and --tls-key)"
        }
        _ => "",
    };
    anyhow::anyhow!("{text}{hint}")
}

/// How `nettap tail` prints records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// One summary line per record.
    #[default]
    Text,
    /// Each record's JSON Lines bytes, exactly as the sensor's `--out` writes them.
    Json,
}

/// Prints records, up to `count`.
struct Printer {
    output: Output,
    count: Option<u64>,
    seen: u64,
    out: std::io::StdoutLock<'static>,
}

impl Printer {
    /// Prints `r`; true once `count` records are printed.
    fn print(&mut self, r: &v1::Record, addr: &ApiAddr) -> anyhow::Result<bool> {
        match self.output {
            Output::Text => writeln!(self.out, "{}", line(r))?,
            Output::Json if r.jsonl.is_empty() => {
                anyhow::bail!(
                    "the sensor at {addr} sends no JSON Lines bytes (it is older than --output json)"
                )
            }
            Output::Json => {
                self.out.write_all(&r.jsonl)?;
                self.out.write_all(b"\n")?;
            }
        }
        self.out.flush()?;
        self.seen += 1;
        Ok(self.count.is_some_and(|c| self.seen >= c))
    }
}

/// Statuses that mean the sensor went away (stopped, restarting), not
/// that it refused us: worth reconnecting.
fn went_away(s: &tonic::Status) -> bool {
    matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)
}

/// Prints the records matching `filter` (after `count` of them it exits).
/// When the sensor goes away after the subscription was served, waits for
/// it to come back and subscribes again, saying so on stderr; a first
/// subscription that fails, or a refusal, is an error.
pub async fn tail(
    addr: &ApiAddr,
    dial: &Dial,
    mut filter: SubscribeRequest,
    count: Option<u64>,
    output: Output,
) -> anyhow::Result<()> {
    filter.jsonl = output == Output::Json;
    let mut printer = Printer { output, count, seen: 0, out: std::io::stdout().lock() };
    let mut stream = subscribe(addr, dial, &filter).await?;
    loop {
        let why = match stream.message().await {
            Ok(Some(r)) => {
                if printer.print(&r, addr)? {
                    return Ok(());
                }
                continue;
            }
            Ok(None) => "the sensor ended the stream".to_string(),
            Err(s) if went_away(&s) => refusal(&s, addr, dial).to_string(),
            Err(s) => return Err(refusal(&s, addr, dial)),
        };
        tracing::warn!(%addr, why, "sensor went away; reconnecting (records until then are not shown)");
        stream = resubscribe(addr, dial, &filter).await?;
        tracing::info!(%addr, "subscribed again");
    }
}

/// Subscribes again once the sensor is back: retries, backing off to 2 s,
/// for as long as it is unreachable; a refusal is an error.
async fn resubscribe(
    addr: &ApiAddr,
    dial: &Dial,
    filter: &SubscribeRequest,
) -> anyhow::Result<tonic::Streaming<v1::Record>> {
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(2));
        match subscribe(addr, dial, filter).await {
            Ok(stream) => return Ok(stream),
            Err(e) if e.downcast_ref::<Refused>().is_some() => return Err(e),
            Err(e) => tracing::debug!(%addr, error = %e, "sensor not back yet"),
        }
    }
}

/// The sensor answered the subscription with a refusal (not a lost connection).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(anyhow::Error);

/// Connects and subscribes.
async fn subscribe(
    addr: &ApiAddr,
    dial: &Dial,
    filter: &SubscribeRequest,
) -> anyhow::Result<tonic::Streaming<v1::Record>> {
    let channel = match addr {
        ApiAddr::Tcp(a) => match dial.tls_config()? {
            Some(tls) => {
                tonic::transport::Endpoint::from_shared(format!("https://{a}"))?
                    .tls_config(tls)?
                    .connect()
                    .await?
            }
            None => tonic::transport::Endpoint::from_shared(format!("http://{a}"))?.connect().await?,
        },
        ApiAddr::Unix(_) if dial.ca.is_some() => {
            return Err(ApiSecurityError::TlsOnUnixSocket(addr.clone()).into())
        }
        ApiAddr::Unix(path) => {
            let path = path.clone();
            // The URI is not used: every connection goes to the socket.
            tonic::transport::Endpoint::try_from("http://localhost")?
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await?
        }
    };
    let token = dial.token_header();
    // The interceptor's error type is tonic's (large) Status, fixed by tonic.
    #[allow(clippy::result_large_err)]
    let mut client = CaptureClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        if let Some(t) = &token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    });
    match client.subscribe(filter.clone()).await {
        Ok(response) => Ok(response.into_inner()),
        Err(s) if went_away(&s) => Err(refusal(&s, addr, dial)),
        Err(s) => Err(Refused(refusal(&s, addr, dial)).into()),
    }
}

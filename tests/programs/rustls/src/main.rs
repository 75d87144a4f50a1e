//! An HTTPS server and clients on rustls, the peer of nettap's rustls tests.
//!
//!     rustlspeer server --addr 127.0.0.1:PORT --cert C --key K --ready FILE [--threads N]
//!     rustlspeer client --url https://127.0.0.1:PORT/path --ca C [--lib ureq|0.21|0.22]
//!                       [--n N] [--sizes 0,1024,...] [--conns K]
//!
//! The server (tokio, multi-threaded, tokio-rustls on rustls 0.23) answers
//! `POST /echo/N` with N bytes of pattern("resp", N) after checking the
//! request body is pattern("req", len); any other request with
//! "rustls says: " and the request path (written vectored when the path
//! starts with /v, as hyper writes). Every connection is HTTP/1.1
//! keep-alive. The client makes N GET requests (PATH0, PATH1, …) over one
//! connection, or with --sizes one POST per size, and checks every answer;
//! with --conns K it does so on K connections at once (one thread each).
//! `--lib` picks the TLS stack: ureq (rustls 0.23, the default) or a plain
//! HTTP/1.1 exchange over rustls 0.21's or 0.22's `StreamOwned`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let result = match args.get(1).map(String::as_str) {
        Some("server") => server(
            &opt("--addr").unwrap_or_else(|| "127.0.0.1:0".into()),
            &opt("--cert").expect("--cert"),
            &opt("--key").expect("--key"),
            &opt("--ready").expect("--ready"),
            opt("--threads").map_or(4, |t| t.parse().expect("--threads")),
        ),
        Some("client") => client(&Client {
            url: opt("--url").expect("--url"),
            ca: opt("--ca").expect("--ca"),
            lib: opt("--lib").unwrap_or_else(|| "ureq".into()),
            n: opt("--n").map_or(1, |n| n.parse().expect("--n")),
            sizes: opt("--sizes").map(|s| s.split(',').map(|n| n.parse().expect("--sizes")).collect()),
            conns: opt("--conns").map_or(1, |n| n.parse().expect("--conns")),
        }),
        _ => Err("usage: rustlspeer server|client ...".into()),
    };
    if let Err(e) = result {
        eprintln!("rustlspeer: {e}");
        std::process::exit(1);
    }
}

/// `tag` + "0123456789" repeated to `n` bytes (pattern_body in the tests).
fn pattern(tag: &str, n: usize) -> Vec<u8> {
    format!("{tag}0123456789").bytes().cycle().take(n).collect()
}

/// ring's provider, not the default aws-lc-rs: no cmake build. Deprecated
/// in 0.23.4x only for lacking post-quantum key exchange, irrelevant here.
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn pem_certs(path: &str) -> Result<Vec<Vec<u8>>, Error> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    Ok(CertificateDer::pem_file_iter(path)?.map(|c| c.map(|c| c.to_vec())).collect::<Result<_, _>>()?)
}

// ---- server ----

fn server(addr: &str, cert: &str, key: &str, ready: &str, threads: usize) -> Result<(), Error> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let certs = pem_certs(cert)?.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(ring_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        std::fs::write(ready, format!("{}\n", listener.local_addr()?))?;
        loop {
            let (tcp, _) = listener.accept().await?;
            // Head and body go out as two writes: no Nagle wait between them.
            tcp.set_nodelay(true)?;
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let result = async { serve_conn(acceptor.accept(tcp).await?).await }.await;
                // A client that closes without close_notify (ureq does) is done, not failed.
                let unclean_eof = |e: &Error| {
                    e.downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::UnexpectedEof)
                };
                if let Err(e) = result.as_ref().map_err(|e| (unclean_eof(e), e)) {
                    if !e.0 {
                        eprintln!("rustlspeer server: connection: {}", e.1);
                    }
                }
            });
        }
    })
}

async fn serve_conn<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(tls: S) -> Result<(), Error> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let mut tls = tokio::io::BufReader::new(tls);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if tls.read_line(&mut line).await? == 0 {
                return Ok(()); // the client closed between requests
            }
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_string());
        }
        let (method, path) = request_line(&head)?;
        let mut body = vec![0; content_length(&head)?];
        tls.read_exact(&mut body).await?;
        let (status, answer) = answer(&method, &path, &body);
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        if path.starts_with("/v") {
            // Vectored, as hyper writes: rustls's PlaintextSink::write_vectored.
            write_all_vectored(tls.get_mut(), reply.as_bytes(), &answer).await?;
        } else {
            tls.get_mut().write_all(reply.as_bytes()).await?;
            tls.get_mut().write_all(&answer).await?;
        }
        tls.get_mut().flush().await?;
    }
}

/// Writes `a` then `b` with vectored writes until both are out.
async fn write_all_vectored<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    mut a: &[u8],
    mut b: &[u8],
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    while !a.is_empty() || !b.is_empty() {
        let n = w.write_vectored(&[std::io::IoSlice::new(a), std::io::IoSlice::new(b)]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    Ok(())
}

fn request_line(head: &[String]) -> Result<(String, String), Error> {
    let mut parts = head.first().ok_or("empty request")?.split(' ');
    match (parts.next(), parts.next()) {
        (Some(m), Some(p)) => Ok((m.to_string(), p.to_string())),
        _ => Err(format!("bad request line {:?}", head[0]).into()),
    }
}

fn content_length(head: &[String]) -> Result<usize, Error> {
    for h in &head[1..] {
        if let Some((name, value)) = h.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                return Ok(value.trim().parse()?);
            }
        }
    }
    Ok(0)
}

fn answer(method: &str, path: &str, body: &[u8]) -> (&'static str, Vec<u8>) {
    if let (Some(n), "POST") = (path.strip_prefix("/echo/"), method) {
        return match n.parse() {
            Ok(n) if body == pattern("req", body.len()) => ("200 OK", pattern("resp", n)),
            _ => ("400 Bad Request", b"bad body".to_vec()),
        };
    }
    ("200 OK", format!("rustls says: {path}").into_bytes())
}

// ---- clients ----

struct Client {
    url: String,
    ca: String,
    lib: String,
    n: usize,
    sizes: Option<Vec<usize>>,
    conns: usize,
}

/// One request and the answer it must get.
struct Exchange {
    method: &'static str,
    path: String,
    body: Vec<u8>,
    want: Vec<u8>,
}

fn client(c: &Client) -> Result<(), Error> {
    let rest = c.url.strip_prefix("https://").ok_or("--url must be https://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let exchanges: Vec<Exchange> = match &c.sizes {
        Some(sizes) => sizes
            .iter()
            .map(|&n| Exchange {
                method: "POST",
                path: format!("/echo/{n}"),
                body: pattern("req", n),
                want: pattern("resp", n),
            })
            .collect(),
        None => (0..c.n)
            .map(|i| Exchange {
                method: "GET",
                path: format!("{path}{i}"),
                body: Vec::new(),
                want: format!("rustls says: {path}{i}").into_bytes(),
            })
            .collect(),
    };
    let ca = pem_certs(&c.ca)?;
    std::thread::scope(|s| {
        let workers: Vec<_> =
            (0..c.conns).map(|_| s.spawn(|| one_connection(&c.lib, authority, &ca, &exchanges))).collect();
        workers.into_iter().map(|w| w.join().expect("client thread")).collect::<Result<Vec<()>, Error>>()
    })?;
    Ok(())
}

fn one_connection(lib: &str, authority: &str, ca: &[Vec<u8>], exchanges: &[Exchange]) -> Result<(), Error> {
    match lib {
        "ureq" => ureq_exchanges(authority, ca, exchanges),
        "0.21" => {
            let mut roots = rustls021::RootCertStore::empty();
            for der in ca {
                roots.add(&rustls021::Certificate(der.clone()))?;
            }
            let config = rustls021::ClientConfig::builder()
                .with_safe_defaults()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = rustls021::ServerName::try_from("localhost")?;
            let conn = rustls021::ClientConnection::new(Arc::new(config), name)?;
            raw_exchanges(rustls021::StreamOwned::new(conn, connect(authority)?), exchanges)
        }
        "0.22" => {
            let mut roots = rustls022::RootCertStore::empty();
            for der in ca {
                roots.add(rustls::pki_types::CertificateDer::from(der.clone()))?;
            }
            let config =
                rustls022::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from("localhost")?.to_owned();
            let conn = rustls022::ClientConnection::new(Arc::new(config), name)?;
            raw_exchanges(rustls022::StreamOwned::new(conn, connect(authority)?), exchanges)
        }
        other => Err(format!("unknown --lib {other}").into()),
    }
}

/// A TCP connection without Nagle's wait (head and body are two writes).
fn connect(authority: &str) -> std::io::Result<TcpStream> {
    let tcp = TcpStream::connect(authority)?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

fn ureq_exchanges(authority: &str, ca: &[Vec<u8>], exchanges: &[Exchange]) -> Result<(), Error> {
    let mut roots = rustls::RootCertStore::empty();
    for der in ca {
        roots.add(rustls::pki_types::CertificateDer::from(der.clone()))?;
    }
    let provider = Arc::new(ring_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // One agent: its pool keeps the one connection for every request.
    let agent = ureq::AgentBuilder::new().tls_config(Arc::new(config)).build();
    let port = authority.rsplit_once(':').map_or("443", |(_, p)| p);
    for x in exchanges {
        let url = format!("https://localhost:{port}{}", x.path);
        let resp = match x.method {
            "POST" => agent.post(&url).set("Content-Type", "text/plain").send_bytes(&x.body)?,
            _ => agent.get(&url).call()?,
        };
        let mut got = Vec::new();
        resp.into_reader().read_to_end(&mut got)?;
        check(x, 200, &got)?;
    }
    Ok(())
}

/// HTTP/1.1 by hand over any stream (rustls 0.21's and 0.22's StreamOwned).
fn raw_exchanges<S: Read + Write>(stream: S, exchanges: &[Exchange]) -> Result<(), Error> {
    let mut stream = BufReader::new(stream);
    for x in exchanges {
        let head = format!(
            "{} {} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            x.method,
            x.path,
            x.body.len()
        );
        stream.get_mut().write_all(head.as_bytes())?;
        stream.get_mut().write_all(&x.body)?;
        stream.get_mut().flush()?;
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line)? == 0 {
                return Err("connection closed mid-answer".into());
            }
            if line == "\r\n" {
                break;
            }
            lines.push(line.trim_end().to_string());
        }
        let status: u16 = lines.first().and_then(|l| l.split(' ').nth(1)).ok_or("no status")?.parse()?;
        let mut body = vec![0; content_length(&lines)?];
        stream.read_exact(&mut body)?;
        check(x, status, &body)?;
    }
    Ok(())
}

fn check(x: &Exchange, status: u16, got: &[u8]) -> Result<(), Error> {
    if status != 200 || got != x.want {
        return Err(format!(
            "{} {}: status {status}, {} bytes, not the {} expected",
            x.method,
            x.path,
            got.len(),
            x.want.len()
        )
        .into());
    }
    Ok(())
}

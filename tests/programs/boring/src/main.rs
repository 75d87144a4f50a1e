//! An HTTPS server and client on BoringSSL (the `boring` crate, BoringSSL
//! linked in statically), the peer of nettap's static-BoringSSL tests.
//!
//!     boringpeer server --addr 127.0.0.1:PORT --cert C --key K --ready FILE
//!     boringpeer client --addr 127.0.0.1:PORT --ca C [--sizes 0,1024,...] [--n N] [--info FILE]
//!
//! The server (a thread per connection, blocking `SslStream`s over the
//! socket: BoringSSL calls the socket's read/write inside SSL_read and
//! SSL_write, as Envoy's socket BIO does) answers `POST /echo/N` with N
//! bytes of pattern("resp", N) after checking the request body is
//! pattern("req", len); any other request with "boring says: " and the
//! path. Connections are HTTP/1.1 keep-alive. The client makes one POST per
//! size over one connection (or N GETs of /0, /1, …) and checks every
//! answer byte for byte; `--info` writes its pid and its socket's two ends
//! as JSON (`{"pid", "local", "remote"}`) once the connection is open.

use boring::ssl::{SslAcceptor, SslConnector, SslFiletype, SslMethod, SslStream};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
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
        ),
        Some("client") => client(
            &opt("--addr").expect("--addr"),
            &opt("--ca").expect("--ca"),
            opt("--sizes").map(|s| s.split(',').map(|n| n.parse().expect("--sizes")).collect()),
            opt("--n").map_or(1, |n| n.parse().expect("--n")),
            opt("--info"),
        ),
        _ => Err("usage: boringpeer server|client ...".into()),
    };
    if let Err(e) = result {
        eprintln!("boringpeer: {e}");
        std::process::exit(1);
    }
}

/// `tag` + "0123456789" repeated to `n` bytes (pattern_body in the tests).
fn pattern(tag: &str, n: usize) -> Vec<u8> {
    format!("{tag}0123456789").bytes().cycle().take(n).collect()
}

// ---- server ----

fn server(addr: &str, cert: &str, key: &str, ready: &str) -> Result<(), Error> {
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    acceptor.set_certificate_chain_file(cert)?;
    acceptor.set_private_key_file(key, SslFiletype::PEM)?;
    acceptor.check_private_key()?;
    let acceptor = Arc::new(acceptor.build());
    let listener = TcpListener::bind(addr)?;
    std::fs::write(ready, format!("{}\n", listener.local_addr()?))?;
    for tcp in listener.incoming() {
        let tcp = tcp?;
        // Head and body go out as two writes: no Nagle wait between them.
        tcp.set_nodelay(true)?;
        let acceptor = acceptor.clone();
        std::thread::spawn(move || {
            let result = acceptor.accept(tcp).map_err(|e| e.to_string().into()).and_then(serve_conn);
            if let Err(e) = result {
                eprintln!("boringpeer server: connection: {e}");
            }
        });
    }
    Ok(())
}

fn serve_conn(tls: SslStream<TcpStream>) -> Result<(), Error> {
    let mut tls = BufReader::new(tls);
    loop {
        let Some(head) = read_head(&mut tls)? else {
            return Ok(()); // the client closed between requests
        };
        let (method, path) = request_line(&head)?;
        let mut body = vec![0; content_length(&head)?];
        tls.read_exact(&mut body)?;
        let (status, answer) = answer(&method, &path, &body);
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        tls.get_mut().write_all(reply.as_bytes())?;
        tls.get_mut().write_all(&answer)?;
        tls.get_mut().flush()?;
    }
}

/// The head's lines (without the blank line), or None at a clean end.
fn read_head<R: BufRead>(r: &mut R) -> Result<Option<Vec<String>>, Error> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        let n = match r.read_line(&mut line) {
            Ok(n) => n,
            // A peer that closes without close_notify is done, not failed.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && head.is_empty() => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return if head.is_empty() { Ok(None) } else { Err("connection closed mid-head".into()) };
        }
        if line == "\r\n" {
            return Ok(Some(head));
        }
        head.push(line.trim_end().to_string());
    }
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
    ("200 OK", format!("boring says: {path}").into_bytes())
}

// ---- client ----

fn client(
    addr: &str,
    ca: &str,
    sizes: Option<Vec<usize>>,
    n: usize,
    info: Option<String>,
) -> Result<(), Error> {
    let exchanges: Vec<(&str, String, Vec<u8>, Vec<u8>)> = match sizes {
        Some(sizes) => sizes
            .iter()
            .map(|&n| ("POST", format!("/echo/{n}"), pattern("req", n), pattern("resp", n)))
            .collect(),
        None => (0..n)
            .map(|i| ("GET", format!("/{i}"), Vec::new(), format!("boring says: /{i}").into_bytes()))
            .collect(),
    };
    let mut connector = SslConnector::builder(SslMethod::tls())?;
    connector.set_ca_file(ca)?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    if let Some(info) = info {
        let (pid, local, remote) = (std::process::id(), tcp.local_addr()?, tcp.peer_addr()?);
        std::fs::write(
            info,
            format!("{{\"pid\": {pid}, \"local\": \"{local}\", \"remote\": \"{remote}\"}}\n"),
        )?;
    }
    let tls = connector.build().connect("localhost", tcp)?;
    let mut stream = BufReader::new(tls);
    for (method, path, body, want) in &exchanges {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.get_mut().write_all(head.as_bytes())?;
        stream.get_mut().write_all(body)?;
        stream.get_mut().flush()?;
        let lines = read_head(&mut stream)?.ok_or("connection closed before the answer")?;
        let status: u16 = lines.first().and_then(|l| l.split(' ').nth(1)).ok_or("no status")?.parse()?;
        let mut got = vec![0; content_length(&lines)?];
        stream.read_exact(&mut got)?;
        if status != 200 || got != *want {
            return Err(format!(
                "{method} {path}: status {status}, {} bytes, not the {} expected",
                got.len(),
                want.len()
            )
            .into());
        }
    }
    // close_notify, so the server's read ends cleanly.
    stream.get_mut().shutdown()?;
    Ok(())
}

//! The real programs tests talk to and through: exchange.py (byte-exact
//! plaintext TCP), http_peer.py, nginx, Go programs. Each running peer is a
//! handle that stops its process on drop.

use crate::netns::in_ns;
use crate::wait::{wait_child, wait_for_file, TIMEOUT};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed and reaped when dropped, so a failing test
/// leaves no JVM behind.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `Command::spawn`, guarded.
pub trait SpawnGuarded {
    /// Starts the program (panics if it cannot) and kills it when the guard drops.
    fn spawn_guarded(&mut self) -> KillOnDrop;
}

impl SpawnGuarded for Command {
    fn spawn_guarded(&mut self) -> KillOnDrop {
        KillOnDrop(self.spawn().unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.get_program())))
    }
}

/// A test program under `tests/programs/`.
pub fn program(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("programs").join(name)
}

/// A test peer built once by a `ci/install-*-peer.sh` script into a cache:
/// `name` in the directory that `var` names (the script exports it).
pub fn cached_peer(var: &str, script: &str, name: &str) -> PathBuf {
    let dir = std::env::var_os(var)
        .unwrap_or_else(|| panic!("{var} is not set: ci/install.sh ({script}) builds the test peer"));
    let bin = Path::new(&dir).join(name);
    assert!(bin.exists(), "{} is missing: run {script}", bin.display());
    bin
}

/// The peer program (`tests/programs/exchange.py`).
pub fn exchange_py() -> PathBuf {
    program("exchange.py")
}

/// The real python interpreter (pyenv shims are shell scripts: resolve past them,
/// so pid and comm are the interpreter's own).
pub fn python() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import os, sys; print(os.path.realpath(sys.executable))"])
        .output()
        .expect("python3 is required for the end-to-end tests");
    assert!(out.status.success(), "python3 failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The Python of the test venv (`$NETTAP_VENV`, made by ci/install.sh) that
/// has the PyPI packages the tests use (haralyzer, grpcio).
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("NETTAP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cache/nettap/venv"));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: ci/install.sh creates it (PyPI packages of the tests)",
        py.display()
    );
    py
}

/// What an exchange.py side reported about itself.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Its pid.
    pub pid: u32,
    /// Its comm.
    pub comm: String,
    /// Its socket's local endpoint as records print it.
    pub local: String,
    /// Its socket's remote endpoint.
    pub remote: String,
    /// What it sent.
    pub sent: Vec<u8>,
    /// What it received.
    pub recv: Vec<u8>,
}

/// Reads `DIR/{who}.info`, `.sent`, `.recv` left by exchange.py.
pub fn peer_info(dir: &Path, who: &str) -> PeerInfo {
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{who}.info"))).unwrap()).unwrap();
    PeerInfo {
        pid: info["pid"].as_u64().unwrap() as u32,
        comm: info["comm"].as_str().unwrap().to_string(),
        local: info["local"].as_str().unwrap().to_string(),
        remote: info["remote"].as_str().unwrap().to_string(),
        sent: std::fs::read(dir.join(format!("{who}.sent"))).unwrap(),
        recv: std::fs::read(dir.join(format!("{who}.recv"))).unwrap(),
    }
}

/// Payload sizes each side sends, in order, over one connection.
pub const SIZES: &[usize] = &[1, 100, 4095, 65537, 1 << 20];

/// One exchange.py server and client.
pub struct Exchange {
    /// Scratch directory with their dumps.
    pub dir: tempfile::TempDir,
    /// The server process.
    pub server: KillOnDrop,
    /// The client process, once started.
    pub client: Option<KillOnDrop>,
    port: u16,
    sizes: String,
}

/// Comma-separated sizes for exchange.py.
pub fn sizes_arg(sizes: &[usize]) -> String {
    sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",")
}

impl Exchange {
    /// Starts a server listening on `listen` (in `server_ns`) and waits until it listens.
    pub fn server(server_ns: Option<&str>, listen: &str, port: u16, sizes: &[usize]) -> Exchange {
        Exchange::server_with(server_ns, listen, port, sizes, &[])
    }

    /// `server` with extra exchange.py arguments (`--io`, `--sendfile`).
    pub fn server_with(
        server_ns: Option<&str>,
        listen: &str,
        port: u16,
        sizes: &[usize],
        extra: &[&str],
    ) -> Exchange {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("server.ready");
        let sizes = sizes_arg(sizes);
        let mut server = in_ns(server_ns, &python())
            .arg(exchange_py())
            .args(["server", "--listen", listen, "--port", &port.to_string(), "--sizes", &sizes])
            .arg("--dump")
            .arg(dir.path())
            .arg("--ready")
            .arg(&ready)
            .args(extra)
            .spawn_guarded();
        wait_for_file(&ready, || server.try_wait().unwrap().is_none());
        Exchange { dir, server, client: None, port, sizes }
    }

    /// Starts the client (in `client_ns`) connecting to `connect`; with
    /// `--hold-at N --hold-file F` in `extra` it pauses before message N.
    pub fn client(mut self, client_ns: Option<&str>, connect: &str, extra: &[&str]) -> Exchange {
        let mode = if extra.contains(&"--hold-at") { "hold" } else { "client" };
        let client = in_ns(client_ns, &python())
            .arg(exchange_py())
            .args([mode, "--connect", connect, "--port", &self.port.to_string(), "--sizes", &self.sizes])
            .arg("--dump")
            .arg(self.dir.path())
            .args(extra)
            .spawn_guarded();
        self.client = Some(client);
        self
    }

    /// Server then client.
    pub fn start(
        server_ns: Option<&str>,
        listen: &str,
        client_ns: Option<&str>,
        connect: &str,
        port: u16,
        sizes: &[usize],
        client_extra: &[&str],
    ) -> Exchange {
        Exchange::server(server_ns, listen, port, sizes).client(client_ns, connect, client_extra)
    }

    /// The server's pid.
    pub fn server_pid(&self) -> u32 {
        self.server.id()
    }

    /// Waits for both to succeed and returns what each reported (server, client).
    pub fn finish(mut self) -> (PeerInfo, PeerInfo, tempfile::TempDir) {
        let client = self.client.as_mut().expect("client was never started");
        assert!(wait_child(client, "exchange client").success(), "client failed");
        assert!(wait_child(&mut self.server, "exchange server").success(), "server failed");
        let server = peer_info(self.dir.path(), "server");
        let client = peer_info(self.dir.path(), "client");
        (server, client, self.dir)
    }
}

/// `programs/http_peer.py server` on `port` (plain HTTP/1.1 on loopback),
/// started and ready; its scratch directory lives as long as it is held.
pub fn http_peer_server(port: u16) -> (KillOnDrop, tempfile::TempDir) {
    peer_server(port, None)
}

/// The same over TLS (Python's ssl, so OpenSSL) with this certificate and key.
pub fn https_peer_server(port: u16, cert: &Path, key: &Path) -> (KillOnDrop, tempfile::TempDir) {
    peer_server(port, Some((cert, key)))
}

fn peer_server(port: u16, tls: Option<(&Path, &Path)>) -> (KillOnDrop, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut cmd = Command::new(python());
    cmd.arg(program("http_peer.py")).args(["server", "--port", &port.to_string(), "--ready"]).arg(&ready);
    if let Some((cert, key)) = tls {
        cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
    }
    let mut server = cmd.spawn_guarded();
    wait_for_file(&ready, || server.try_wait().unwrap().is_none());
    (server, dir)
}

/// Debian's nginx (libssl.so.3), run by the test in the foreground with its
/// own configuration and files in a scratch directory, on loopback.
pub struct Nginx {
    child: Child,
    /// Its prefix: configuration, logs, and the files it serves under `www/`.
    pub dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with `server_block` (the inside of one `server {}`, where
    /// `WWW` stands for the served directory) and waits until `port` accepts
    /// connections. `files` are written under `www/` first.
    pub fn start(port: u16, server_block: &str, files: &[(&str, &[u8])]) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| Path::new(p).exists());
        let nginx = nginx.expect("nginx is required (ci/install.sh installs Debian's nginx)");
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        for (name, bytes) in files {
            let path = www.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        std::fs::create_dir_all(&www).unwrap();
        let p = dir.path().display();
        let conf = format!(
            "user root;\nworker_processes 1;\nerror_log {p}/error.log info;\npid {p}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  \
             fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  \
             client_max_body_size 64m;\n  default_type application/octet-stream;\n  \
             server {{\n{}\n  }}\n}}\n",
            server_block.replace("WWW", &www.display().to_string())
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-g", "daemon off; master_process on;"])
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start nginx");
        let mut n = Nginx { child, dir };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = n.child.try_wait().unwrap() {
                panic!(
                    "nginx exited ({st}):\n{}",
                    std::fs::read_to_string(n.dir.path().join("error.log")).unwrap_or_default()
                );
            }
            assert!(start.elapsed() < TIMEOUT, "nginx did not listen on {port} within {TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    }

    /// nginx over TLS on loopback `port` serving `resp_N` (pattern bodies of
    /// N bytes) for each of `sizes`; a POST to one is answered like a GET
    /// (nginx reads the whole request body first, by mirroring it to a
    /// location that drops it: a static file's answer would otherwise come,
    /// with `Connection: close`, while a client still writes a large body).
    pub fn tls_pattern_files(port: u16, cert: &Path, key: &Path, sizes: &[usize]) -> Nginx {
        let files: Vec<(String, Vec<u8>)> = sizes
            .iter()
            .map(|&n| (format!("resp_{n}"), crate::pattern_body("resp", n).into_bytes()))
            .collect();
        let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        let server = format!(
            "    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    \
             keepalive_requests 1000;\n    \
             location / {{ root WWW; error_page 405 =200 $uri; mirror /body_sink; mirror_request_body on; }}\n    \
             location = /body_sink {{ internal; return 204; }}",
            cert.display(),
            key.display()
        );
        Nginx::start(port, &server, &files)
    }

    /// The pid of its (one) worker process, which serves the connections.
    pub fn worker_pid(&self) -> u32 {
        let start = Instant::now();
        loop {
            let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.child.id()))
                .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                return pid.parse().unwrap();
            }
            assert!(start.elapsed() < TIMEOUT, "nginx started no worker");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: signalling our own child: SIGQUIT is nginx's graceful stop.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds tests/programs/go/tlspeer with the machine's Go into `out`, with
/// extra `go build` flags and environment (`GOTOOLCHAIN=go1.19.13` fetches
/// that release as a Go toolchain module once, then it is cached).
pub fn go_build(out: &Path, flags: &[&str], env: &[(&str, &str)]) {
    go_build_program("tlspeer", out, flags, env);
}

/// `go_build` of tests/programs/go/NAME.
pub fn go_build_program(name: &str, out: &Path, flags: &[&str], env: &[(&str, &str)]) {
    let src = program(&format!("go/{name}"));
    let status = Command::new("go")
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(".")
        .current_dir(&src)
        .env("GOFLAGS", "-buildvcs=false")
        .envs(env.iter().copied())
        .status()
        .expect("the Go toolchain (`go`) is required to build the Go test programs");
    assert!(status.success(), "go build of {name} {flags:?} {env:?} failed");
}

/// Where Debian keeps the system libssl.so.3 and libcrypto.so.3 (tests copy them).
pub fn system_lib_dir() -> &'static Path {
    ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"]
        .iter()
        .map(Path::new)
        .find(|d| d.join("libssl.so.3").exists())
        .expect("Debian's libssl.so.3")
}

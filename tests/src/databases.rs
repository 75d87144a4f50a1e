//! Real database servers from Debian's packages, run by the test in a
//! scratch directory on loopback, stopped on drop.

use crate::peers::{KillOnDrop, SpawnGuarded};
use crate::wait::TIMEOUT;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Waits until `port` on 127.0.0.1 accepts connections while `alive` says
/// the server still runs.
pub(crate) fn wait_listening(port: u16, what: &str, mut alive: impl FnMut() -> bool) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(alive(), "{what} exited before it listened on {port}");
        assert!(start.elapsed() < TIMEOUT, "{what} did not listen on {port} within {TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Debian's `redis-server` on 127.0.0.1:`port`, no persistence, with a password.
pub struct RedisServer {
    /// The server process.
    pub child: KillOnDrop,
    /// Its working directory.
    pub dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts it and waits until it listens.
    pub fn start(port: u16, password: &str) -> RedisServer {
        RedisServer::start_with(port, password, false)
    }

    /// `start`; with `tls`, the port speaks only TLS (a self-signed
    /// certificate for 127.0.0.1, `cert.pem` in `dir`; clients need none).
    pub fn start_with(port: u16, password: &str, tls: bool) -> RedisServer {
        assert!(
            Path::new("/usr/bin/redis-server").exists(),
            "redis-server is required (ci/install.sh installs Debian's redis-server)"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut ports = vec!["--port".to_string(), port.to_string()];
        if tls {
            let (cert, key) = crate::pki::tls_cert(dir.path());
            ports = vec!["--port".into(), "0".into(), "--tls-port".into(), port.to_string()];
            for (flag, path) in
                [("--tls-cert-file", &cert), ("--tls-key-file", &key), ("--tls-ca-cert-file", &cert)]
            {
                ports.extend([flag.to_string(), path.display().to_string()]);
            }
            ports.extend(["--tls-auth-clients".into(), "no".into()]);
        }
        let mut child = Command::new("/usr/bin/redis-server")
            .args(&ports)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--requirepass", password, "--daemonize", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn_guarded();
        wait_listening(port, "redis-server", || child.try_wait().unwrap().is_none());
        RedisServer { child, dir }
    }

    /// The server's pid (it serves every connection itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Debian's PostgreSQL (the newest major under /usr/lib/postgresql), a
/// fresh cluster made by initdb in a scratch directory and run as `nobody`
/// (PostgreSQL refuses root) on 127.0.0.1:`port`. TCP logins need the
/// password in clear (`password` method), so the test can check that it
/// never reaches a record.
pub struct PgServer {
    child: KillOnDrop,
    /// The cluster's directory (owned by nobody).
    pub dir: tempfile::TempDir,
}

/// Where Debian installs the server programs of the newest major version.
pub fn pg_bin(program: &str) -> std::path::PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .unwrap_or_else(|_| panic!("PostgreSQL is required (ci/install.sh installs Debian's postgresql)"))
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|v| v.parse::<u32>().ok()))
        .max()
        .expect("no PostgreSQL version under /usr/lib/postgresql");
    root.join(newest.to_string()).join("bin").join(program)
}

/// `program args…` as nobody, without root's groups.
fn as_nobody(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]).arg(program);
    c
}

impl PgServer {
    /// initdb (superuser `postgres` with `password`) and start; waits until it listens.
    pub fn start(port: u16, password: &str) -> PgServer {
        PgServer::start_with(port, password, false)
    }

    /// `start`, with TLS on (a self-signed certificate for 127.0.0.1) when `tls`.
    pub fn start_with(port: u16, password: &str, tls: bool) -> PgServer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), password).unwrap();
        let mut settings =
            vec!["-c".to_string(), "listen_addresses=127.0.0.1".into(), "-c".into(), "fsync=off".into()];
        if tls {
            let (cert, key) = crate::pki::tls_cert(dir.path());
            for (name, path) in [("ssl_cert_file", &cert), ("ssl_key_file", &key)] {
                settings.extend(["-c".into(), format!("{name}={}", path.display())]);
            }
            settings.extend(["-c".into(), "ssl=on".into()]);
        }
        let chown = Command::new("chown").args(["-R", "nobody:nogroup"]).arg(dir.path()).status().unwrap();
        assert!(chown.success());
        let data = dir.path().join("data");
        let out = as_nobody(&pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth-local=trust", "--auth-host=password", "--no-sync", "-E", "UTF8"])
            .arg(format!("--pwfile={}", dir.path().join("pw").display()))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut child = as_nobody(&pg_bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(&settings)
            .arg("-k")
            .arg(dir.path())
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn_guarded();
        wait_listening(port, "postgres", || child.try_wait().unwrap().is_none());
        PgServer { child, dir }
    }

    /// The postmaster's pid (each connection is served by a child of it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown (ends every backend).
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Debian's MariaDB: a fresh data directory made by mariadb-install-db in
/// a scratch directory, the server run as `nobody` on 127.0.0.1:`port`,
/// with a user `app` (password `password`, over TCP) and a database `shop`.
pub struct MariaDbServer {
    child: KillOnDrop,
    /// The server's directory (owned by nobody).
    pub dir: tempfile::TempDir,
}

impl MariaDbServer {
    /// Makes the data directory, starts the server, creates the user and database.
    pub fn start(port: u16, password: &str) -> MariaDbServer {
        MariaDbServer::start_with(port, password, false)
    }

    /// `start`, with TLS offered (a self-signed certificate for 127.0.0.1)
    /// when `tls`.
    pub fn start_with(port: u16, password: &str, tls: bool) -> MariaDbServer {
        assert!(
            Path::new("/usr/sbin/mariadbd").exists(),
            "mariadbd is required (ci/install.sh installs Debian's mariadb-server)"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut ssl = Vec::new();
        if tls {
            let (cert, key) = crate::pki::tls_cert(dir.path());
            ssl = vec![format!("--ssl-cert={}", cert.display()), format!("--ssl-key={}", key.display())];
        }
        let chown = Command::new("chown").args(["-R", "nobody:nogroup"]).arg(dir.path()).status().unwrap();
        assert!(chown.success());
        let data = dir.path().join("data");
        let out = as_nobody(Path::new("/usr/bin/mariadb-install-db"))
            .args(["--no-defaults", "--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "mariadb-install-db failed: {}", String::from_utf8_lossy(&out.stderr));
        let sock = dir.path().join("sock");
        let mut child = as_nobody(Path::new("/usr/sbin/mariadbd"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .args([&format!("--port={port}"), "--bind-address=127.0.0.1", "--skip-log-bin"])
            .args(["--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M"])
            .args(&ssl)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn_guarded();
        wait_listening(port, "mariadbd", || child.try_wait().unwrap().is_none());
        // Over the Unix socket (not captured: TCP only), as the server's root.
        let setup = format!(
            "CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY '{password}'; \
             GRANT ALL ON *.* TO 'app'@'127.0.0.1'; CREATE DATABASE shop;"
        );
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg("-S")
            .arg(&sock)
            .args(["-u", "root", "-e", &setup])
            .output()
            .unwrap();
        assert!(out.status.success(), "mariadb setup failed: {}", String::from_utf8_lossy(&out.stderr));
        MariaDbServer { child, dir }
    }

    /// The server's pid (one process, a thread per connection).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

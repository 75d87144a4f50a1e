//! A real MongoDB wire-protocol server: FerretDB 1.x on its SQLite backend
//! (ci/ferretdb, built by ci/install-k8s.sh), and the relay that adds the
//! server's half of OP_COMPRESSED in front of it (FerretDB 1.x has none).
//! Both on loopback, in a scratch directory, stopped on drop.

use crate::databases::wait_listening;
use crate::k8s::k8s_bin;
use crate::peers::{program, venv_python, KillOnDrop, SpawnGuarded};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `node` running `tests/programs/<name>` with the Node.js MongoDB driver
/// ci/install.sh installed (`$NETTAP_NODE_MONGODB`) on its module path.
pub fn node_mongodb(name: &str) -> Command {
    let dir = std::env::var_os("NETTAP_NODE_MONGODB").map(PathBuf::from).unwrap_or_default();
    assert!(
        dir.join(".complete").exists(),
        "the Node.js MongoDB driver is missing ({}): run `source ci/install.sh`, which installs it and exports NETTAP_NODE_MONGODB",
        dir.display()
    );
    let mut c = Command::new("node");
    c.arg(program(name)).env("NODE_PATH", dir.join("node_modules"));
    c
}

/// FerretDB, and the compressing relay in front of it unless it speaks TLS.
pub struct FerretDb {
    server: KillOnDrop,
    relay: Option<KillOnDrop>,
    /// Its data directory; the relay's `legs.jsonl` is there too.
    pub dir: tempfile::TempDir,
}

impl FerretDb {
    /// FerretDB on 127.0.0.1:`port` and the relay on `zport`; waits until both listen.
    pub fn start(port: u16, zport: u16) -> FerretDb {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Command::new(k8s_bin("ferretdb"))
            .arg(format!("127.0.0.1:{port}"))
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn_guarded();
        wait_listening(port, "ferretdb", || server.try_wait().unwrap().is_none());
        let mut relay = Command::new(venv_python())
            .arg(program("mongo_zproxy.py"))
            .args([zport.to_string(), port.to_string()])
            .arg(dir.path().join("legs.jsonl"))
            .spawn_guarded();
        wait_listening(zport, "mongo_zproxy.py", || relay.try_wait().unwrap().is_none());
        FerretDb { server, relay: Some(relay), dir }
    }

    /// FerretDB alone on 127.0.0.1:`port`, speaking only TLS (a
    /// self-signed certificate for 127.0.0.1, `cert.pem` in `dir`).
    pub fn start_tls(port: u16) -> FerretDb {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = crate::pki::tls_cert(dir.path());
        let mut server = Command::new(k8s_bin("ferretdb"))
            .arg(format!("127.0.0.1:{port}"))
            .arg(dir.path())
            .args([&cert, &key])
            .stdout(Stdio::null())
            .spawn_guarded();
        wait_listening(port, "ferretdb", || server.try_wait().unwrap().is_none());
        FerretDb { server, relay: None, dir }
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.server.id()
    }

    /// The relay's pid.
    pub fn relay_pid(&self) -> u32 {
        self.relay.as_ref().expect("started without the relay").id()
    }
}

//! A real Kafka broker (KRaft, broker and controller in one JVM) from the
//! jars ci/install-kafka.sh caches, on the machine's JDK 17, on loopback
//! with a scratch log directory; formatted and started by the test,
//! stopped on drop.

use crate::databases::wait_listening;
use crate::jvm::jdk;
use crate::peers::{KillOnDrop, SpawnGuarded};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The broker's jars: `$NETTAP_KAFKA_LIBS` (ci/install-kafka.sh exports it).
pub fn kafka_libs() -> PathBuf {
    let libs = std::env::var_os("NETTAP_KAFKA_LIBS").map(PathBuf::from).unwrap_or_default();
    assert!(
        libs.join(".complete").exists(),
        "the Kafka broker's jars are missing ({}): run `source ci/install-kafka.sh` (ci/install.sh does), which exports NETTAP_KAFKA_LIBS",
        libs.display()
    );
    libs
}

/// One broker on 127.0.0.1:`port` (its controller on the next port).
pub struct KafkaBroker {
    child: Option<KillOnDrop>,
    /// Config, log directory and the broker's output.
    pub dir: tempfile::TempDir,
    /// The client port.
    pub port: u16,
}

impl KafkaBroker {
    /// Formats a fresh log directory and starts the broker; waits until it listens.
    pub fn start(port: u16, controller_port: u16) -> KafkaBroker {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "process.roles=broker,controller\nnode.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller_port}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             log.dirs={}\n\
             offsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\nnum.partitions=1\ngroup.initial.rebalance.delay.ms=0\n",
            dir.path().join("logs").display()
        );
        std::fs::write(dir.path().join("server.properties"), config).unwrap();
        // A cluster id is 16 bytes in URL-safe base64; any fixed one serves a scratch cluster.
        let out = Self::java(&dir)
            .args(["kafka.tools.StorageTool", "format", "-t", "bmV0dGFwLWthZmthLXRlc3Q", "-c"])
            .arg(dir.path().join("server.properties"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kafka-storage format failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut broker = KafkaBroker { child: None, dir, port };
        broker.run();
        broker
    }

    fn java(dir: &tempfile::TempDir) -> Command {
        let mut c = Command::new(jdk(17).join("bin/java"));
        // A small heap and C1 only: the broker serves a few test clients.
        c.args(["-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg("-cp")
            .arg(format!("{}/*", kafka_libs().display()))
            .current_dir(dir.path());
        c
    }

    fn run(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("broker.log")).unwrap();
        let mut child = Self::java(&self.dir)
            .arg("kafka.Kafka")
            .arg(self.dir.path().join("server.properties"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn_guarded();
        wait_listening(self.port, "the Kafka broker", || child.try_wait().unwrap().is_none());
        self.child = Some(child);
    }

    /// Stops the broker (SIGKILL: nothing it acknowledged is lost, its log
    /// is flushed per write) and starts it again on the same log directory.
    pub fn restart(&mut self) {
        self.child = None;
        self.run();
    }

    /// The broker's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The broker's own output (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }
}

/// `java … nettap.testapps.KafkaPeer ARGS` on JDK 17 (java-testapps' kafka-peers).
pub fn kafka_peer(args: &[&str]) -> Command {
    let target = crate::jvm::testapps_jar().parent().unwrap().join("../../kafka-peers/target");
    let mut c = Command::new(jdk(17).join("bin/java"));
    c.arg("-cp")
        .arg(format!("{}:{}/*", target.join("kafka-peers.jar").display(), target.join("lib").display()))
        .arg("nettap.testapps.KafkaPeer")
        .args(args)
        .stdout(Stdio::null());
    c
}

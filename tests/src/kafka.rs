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

/// A second listener, SASL_SSL (TLS, then SASL/PLAIN or SCRAM-SHA-256 as
/// user `nettap`), for a client that must authenticate over TLS.
pub struct SecureListener {
    /// Its port.
    pub port: u16,
    /// The broker's certificate and key (PEM; the key PKCS#8, unencrypted).
    pub cert: PathBuf,
    /// The key of `cert`.
    pub key: PathBuf,
    /// User `nettap`'s password.
    pub password: String,
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
        Self::start_with(port, controller_port, None)
    }

    /// `start`, with a SASL_SSL listener beside the plaintext one.
    pub fn start_with(port: u16, controller_port: u16, secure: Option<&SecureListener>) -> KafkaBroker {
        Self::start_listeners(port, controller_port, secure, None)
    }

    /// `start`, with a second plaintext listener on `listen` that tells its
    /// clients to connect to `advertised` (where a relay forwards to `listen`).
    pub fn start_relayed(port: u16, controller_port: u16, listen: u16, advertised: u16) -> KafkaBroker {
        Self::start_listeners(port, controller_port, None, Some((listen, advertised)))
    }

    fn start_listeners(
        port: u16,
        controller_port: u16,
        secure: Option<&SecureListener>,
        relayed: Option<(u16, u16)>,
    ) -> KafkaBroker {
        let dir = tempfile::tempdir().unwrap();
        let (mut listeners, mut advertised) = (String::new(), String::new());
        if let Some((listen, to)) = relayed {
            listeners = format!(",RELAYED://127.0.0.1:{listen}");
            advertised = format!(",RELAYED://127.0.0.1:{to}");
        }
        let mut secure_config = String::new();
        let mut format_args = Vec::new();
        if let Some(s) = secure {
            // The PEM keystore is one file: the key, then the certificate.
            let keystore = dir.path().join("keystore.pem");
            let pem = std::fs::read_to_string(&s.key).unwrap() + &std::fs::read_to_string(&s.cert).unwrap();
            std::fs::write(&keystore, pem).unwrap();
            listeners += &format!(",SASL_SSL://127.0.0.1:{}", s.port);
            advertised += &format!(",SASL_SSL://127.0.0.1:{}", s.port);
            secure_config = format!(
                "ssl.keystore.type=PEM\nssl.keystore.location={}\n\
                 sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256\n\
                 listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \
                 required username=\"nettap\" password=\"{pw}\" user_nettap=\"{pw}\";\n\
                 listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=\
                 org.apache.kafka.common.security.scram.ScramLoginModule required;\n",
                keystore.display(),
                pw = s.password
            );
            // SCRAM credentials live in the cluster metadata: written at format time.
            format_args = vec![
                "--add-scram".to_string(),
                format!("SCRAM-SHA-256=[name=nettap,password={}]", s.password),
            ];
        }
        let config = format!(
            "process.roles=broker,controller\nnode.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller_port}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}{listeners}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}{advertised}\n\
             controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,RELAYED:PLAINTEXT\n\
             {secure_config}log.dirs={}\n\
             offsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\nnum.partitions=1\ngroup.initial.rebalance.delay.ms=0\n",
            dir.path().join("logs").display()
        );
        std::fs::write(dir.path().join("server.properties"), config).unwrap();
        // A cluster id is 16 bytes in URL-safe base64; any fixed one serves a scratch cluster.
        let out = Self::java(&dir)
            .args(["kafka.tools.StorageTool", "format", "-t", "bmV0dGFwLWthZmthLXRlc3Q", "-c"])
            .arg(dir.path().join("server.properties"))
            .args(&format_args)
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
        self.stop();
        self.resume();
    }

    /// Kills the broker (SIGKILL), leaving its log directory.
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Starts the stopped broker again on its log directory.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the broker is running");
        self.run();
    }

    /// kafka-python (tests/programs/kafka_topic.py) creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let out = Command::new(crate::peers::venv_python())
            .arg(crate::peers::program("kafka_topic.py"))
            .args(["create", &self.port.to_string(), topic, &partitions.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "creating {topic}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Every record of `topic` (at least `count` expected), read back with kafka-python from offset 0.
    pub fn read_topic(&self, topic: &str, count: usize) -> Vec<TopicRecord> {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("records.json");
        let st = Command::new(crate::peers::venv_python())
            .arg(crate::peers::program("kafka_topic.py"))
            .args(["read", &self.port.to_string(), topic, &count.to_string()])
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success(), "reading {topic}: {st}");
        let v: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        v.into_iter()
            .map(|r| TopicRecord {
                partition: r["partition"].as_u64().unwrap() as u32,
                offset: r["offset"].as_u64().unwrap(),
                key: r["key"].as_str().map(String::from),
                value: base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    r["value_b64"].as_str().unwrap(),
                )
                .unwrap(),
            })
            .collect()
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

/// One record read back from a topic.
#[derive(Clone, Debug)]
pub struct TopicRecord {
    /// Its partition.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// Its key (UTF-8), if any.
    pub key: Option<String>,
    /// Its value as stored.
    pub value: Vec<u8>,
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

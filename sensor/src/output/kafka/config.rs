//! The Kafka sink's settings: flags (each with an environment variable, so
//! the chart can hand credentials over from a Secret) turned into
//! librdkafka's configuration.

use rdkafka::ClientConfig;
use std::path::PathBuf;

/// What the producer buffers unless told otherwise (the OTLP queue's default).
pub const DEFAULT_QUEUE_BYTES: usize = 32 << 20;

/// `--kafka-*` flags of `nettap capture`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KafkaArgs {
    /// Send every record (its JSON Lines bytes, keyed by connection) to these
    /// Kafka brokers: HOST:PORT[,HOST:PORT…].
    #[arg(long, env = "NETTAP_KAFKA_BROKERS", value_name = "HOST:PORT[,…]", requires = "kafka_topic")]
    pub kafka_brokers: Option<String>,
    /// The topic records go to.
    #[arg(long, env = "NETTAP_KAFKA_TOPIC", requires = "kafka_brokers")]
    pub kafka_topic: Option<String>,
    /// Memory records waiting for the broker may hold; beyond it records are
    /// shed and counted as `drop` records (`export_queue_full`).
    #[arg(long, env = "NETTAP_KAFKA_QUEUE_BYTES", default_value_t = DEFAULT_QUEUE_BYTES)]
    pub kafka_queue_bytes: usize,
    /// Speak TLS to the brokers (implied by --kafka-ca and --kafka-cert).
    #[arg(long, env = "NETTAP_KAFKA_TLS")]
    pub kafka_tls: bool,
    /// CA certificates (PEM) the brokers' certificates are checked against
    /// (default: the system's).
    #[arg(long, env = "NETTAP_KAFKA_CA")]
    pub kafka_ca: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that require one (with --kafka-key).
    #[arg(long, env = "NETTAP_KAFKA_CERT", requires = "kafka_key")]
    pub kafka_cert: Option<PathBuf>,
    /// The key (PEM) of --kafka-cert.
    #[arg(long, env = "NETTAP_KAFKA_KEY", requires = "kafka_cert")]
    pub kafka_key: Option<PathBuf>,
    /// SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with
    /// NETTAP_KAFKA_SASL_USERNAME and NETTAP_KAFKA_SASL_PASSWORD).
    #[arg(long, env = "NETTAP_KAFKA_SASL_MECHANISM")]
    pub kafka_sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name.
    #[arg(long, env = "NETTAP_KAFKA_SASL_USERNAME", requires = "kafka_sasl_mechanism")]
    pub kafka_sasl_username: Option<String>,
    /// SASL password: from the environment only, never on a command line
    /// others can read.
    #[arg(skip = std::env::var("NETTAP_KAFKA_SASL_PASSWORD").ok().map(Secret))]
    pub kafka_sasl_password: Option<Secret>,
    /// A librdkafka property set as given, after the ones above (repeatable,
    /// KEY=VALUE), for what has no flag of its own.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", value_parser = parse_option)]
    pub kafka_options: Vec<(String, String)>,
}

/// A password: never printed (`Debug` shows asterisks).
#[derive(Clone, Default)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The SASL mechanisms librdkafka offers without Kerberos.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    /// User and password in the clear (inside TLS).
    #[value(name = "PLAIN")]
    Plain,
    /// SCRAM with SHA-256.
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-512.
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

fn parse_option(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    Ok((k.trim().to_string(), v.to_string()))
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// SASL without its user name or password.
    #[error("--kafka-sasl-mechanism needs --kafka-sasl-username (NETTAP_KAFKA_SASL_USERNAME) and NETTAP_KAFKA_SASL_PASSWORD")]
    SaslCredentials,
    /// A file named by a flag cannot be read.
    #[error("{flag} {path}: {source}")]
    File {
        /// The flag naming it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The sink's settings, checked (no `Debug`: they hold the SASL password).
#[derive(Clone)]
pub struct KafkaConfig {
    /// The topic records go to.
    pub topic: String,
    /// The producer's buffer bound in bytes.
    pub queue_bytes: usize,
    /// librdkafka's properties, in the order they are set.
    pub properties: Vec<(String, String)>,
}

impl KafkaConfig {
    /// The settings the flags ask for; `None` without `--kafka-brokers`.
    pub fn from_args(a: &KafkaArgs) -> Result<Option<Self>, ConfigError> {
        let (Some(brokers), Some(topic)) = (&a.kafka_brokers, &a.kafka_topic) else { return Ok(None) };
        let mut p: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: String| p.push((k.to_string(), v));
        set("bootstrap.servers", brokers.clone());
        // Exactly once into the log per record despite retries (a broker
        // restart), in order per partition; implies acks=all.
        set("enable.idempotence", "true".into());
        set("acks", "all".into());
        // The byte bound; the record count is bounded by bytes alone (the
        // smallest record, a drop, is ~150 bytes).
        set("queue.buffering.max.kbytes", (a.kafka_queue_bytes / 1024).max(1).to_string());
        set("queue.buffering.max.messages", (a.kafka_queue_bytes / 128).clamp(1, 2_147_483_647).to_string());
        set("linger.ms", "100".into());
        set("client.id", "nettap".into());
        // One connection's records share a key, so they share a partition;
        // murmur2 places keys as the Java client does.
        set("partitioner", "murmur2_random".into());
        let tls = a.kafka_tls || a.kafka_ca.is_some() || a.kafka_cert.is_some();
        let protocol = match (tls, a.kafka_sasl_mechanism.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        set("security.protocol", protocol.into());
        for (key, flag, path) in [
            ("ssl.ca.location", "--kafka-ca", &a.kafka_ca),
            ("ssl.certificate.location", "--kafka-cert", &a.kafka_cert),
            ("ssl.key.location", "--kafka-key", &a.kafka_key),
        ] {
            if let Some(path) = path {
                // librdkafka reads them later, in its own threads: a wrong
                // path is said here, at start-up.
                std::fs::metadata(path).map_err(|source| ConfigError::File {
                    flag,
                    path: path.clone(),
                    source,
                })?;
                set(key, path.display().to_string());
            }
        }
        if let Some(m) = a.kafka_sasl_mechanism {
            let (Some(user), Some(password)) = (&a.kafka_sasl_username, &a.kafka_sasl_password) else {
                return Err(ConfigError::SaslCredentials);
            };
            set("sasl.mechanism", m.as_str().into());
            set("sasl.username", user.clone());
            set("sasl.password", password.0.clone());
        }
        for (k, v) in &a.kafka_options {
            set(k, v.clone());
        }
        Ok(Some(Self { topic: topic.clone(), queue_bytes: a.kafka_queue_bytes, properties: p }))
    }

    /// librdkafka's configuration.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> KafkaArgs {
        KafkaArgs {
            kafka_brokers: Some("127.0.0.1:9092".into()),
            kafka_topic: Some("t".into()),
            kafka_queue_bytes: 1 << 20,
            ..Default::default()
        }
    }

    fn get<'a>(c: &'a KafkaConfig, key: &str) -> Option<&'a str> {
        c.properties.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn off_without_brokers() {
        assert!(KafkaConfig::from_args(&KafkaArgs::default()).unwrap().is_none());
    }

    #[test]
    fn idempotent_acks_all_and_bounded() {
        let c = KafkaConfig::from_args(&args()).unwrap().unwrap();
        assert_eq!(get(&c, "enable.idempotence"), Some("true"));
        assert_eq!(get(&c, "acks"), Some("all"));
        assert_eq!(get(&c, "queue.buffering.max.kbytes"), Some("1024"));
        assert_eq!(get(&c, "security.protocol"), Some("plaintext"));
        assert_eq!(c.topic, "t");
    }

    #[test]
    fn tls_and_sasl_choose_the_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        let mut a = args();
        a.kafka_ca = Some(ca);
        a.kafka_sasl_mechanism = Some(SaslMechanism::ScramSha512);
        assert!(matches!(KafkaConfig::from_args(&a), Err(ConfigError::SaslCredentials)));
        a.kafka_sasl_username = Some("u".into());
        a.kafka_sasl_password = Some(Secret("p".into()));
        let c = KafkaConfig::from_args(&a).unwrap().unwrap();
        assert_eq!(get(&c, "security.protocol"), Some("sasl_ssl"));
        assert_eq!(get(&c, "sasl.mechanism"), Some("SCRAM-SHA-512"));
        a.kafka_ca = Some(dir.path().join("missing.pem"));
        assert!(matches!(KafkaConfig::from_args(&a), Err(ConfigError::File { flag: "--kafka-ca", .. })));
    }

    #[test]
    fn options_come_last() {
        let mut a = args();
        a.kafka_options = vec![parse_option("linger.ms=5").unwrap()];
        let c = KafkaConfig::from_args(&a).unwrap().unwrap();
        assert_eq!(get(&c, "linger.ms"), Some("5"));
        assert!(parse_option("nothing").is_err());
    }
}

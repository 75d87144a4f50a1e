//! The injector's life beside the kubelet, over real HTTPS: a renewed
//! certificate (the Secret's files swapped as the kubelet swaps them) is
//! served to new handshakes without a restart, an unusable new pair leaves
//! the old one in service, and SIGTERM lets the request in flight finish,
//! refuses new connections and exits 0.

mod support;

use nettap_e2e::tls_cert;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{curl, curl_command, curl_result, pem_base64, served_certificate, Injector};

/// A Secret volume as the kubelet lays it out: `tls.crt` → `..data/tls.crt`,
/// `..data` → a directory per version, replaced by renaming a new symlink
/// over `..data` (one atomic step), the old version then removed.
struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(dir: &Path, cert: &[u8], key: &[u8]) -> SecretVolume {
        std::fs::create_dir_all(dir).unwrap();
        let mut volume = SecretVolume { dir: dir.to_path_buf(), version: 0 };
        volume.publish(cert, key);
        for name in ["tls.crt", "tls.key"] {
            symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        volume
    }

    fn publish(&mut self, cert: &[u8], key: &[u8]) {
        self.version += 1;
        let version = format!("..2026_12_05_08_00_00.{}", self.version);
        std::fs::create_dir(self.dir.join(&version)).unwrap();
        std::fs::write(self.dir.join(&version).join("tls.crt"), cert).unwrap();
        std::fs::write(self.dir.join(&version).join("tls.key"), key).unwrap();
        symlink(&version, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        if self.version > 1 {
            std::fs::remove_dir_all(self.dir.join(format!("..2026_12_05_08_00_00.{}", self.version - 1)))
                .unwrap();
        }
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
}

/// A self-signed pair for localhost in `dir`: (certificate PEM, key PEM, certificate path).
fn pair(dir: &Path) -> (Vec<u8>, Vec<u8>, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = tls_cert(dir);
    (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap(), cert)
}

/// Handshakes until `done` holds for the served certificate or the log, at most 15 s.
fn handshake_until(injector: &Injector, what: &str, done: impl Fn(&str, &str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let served = served_certificate(injector.port);
        if done(&served, &injector.log()) {
            return served;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what}: not within 15 s; log: {}",
            injector.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn renewed_certificate_is_served_without_restart_and_a_bad_one_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (a_cert, a_key, a_path) = pair(&tmp.path().join("a"));
    let (b_cert, b_key, b_path) = pair(&tmp.path().join("b"));
    let (_, c_key, _) = pair(&tmp.path().join("c"));
    let (a, b) =
        (pem_base64(&String::from_utf8_lossy(&a_cert)), pem_base64(&String::from_utf8_lossy(&b_cert)));
    assert_ne!(a, b);
    let mut volume = SecretVolume::new(&tmp.path().join("secret"), &a_cert, &a_key);
    let injector = Injector::start(&volume.cert(), &volume.key(), &["--tls-check-secs", "1"], tmp.path());
    assert_eq!(served_certificate(injector.port), a);
    assert_eq!(curl(&a_path, &format!("{}/healthz", injector.base()), None).0, 200);

    // B's certificate with another key, then a certificate that is not PEM: refused, A stays.
    let refused = "new TLS certificate refused: keeping the certificate in use";
    volume.publish(&b_cert, &c_key);
    let served = handshake_until(&injector, "refusing a mismatched pair", |_, log| log.contains(refused));
    assert_eq!(served, a);
    volume.publish(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", &b_key);
    handshake_until(&injector, "refusing a broken certificate", |_, log| log.matches(refused).count() == 2);
    assert_eq!(served_certificate(injector.port), a);
    assert_eq!(curl(&a_path, &format!("{}/healthz", injector.base()), None).0, 200, "still served with A");
    assert!(!injector.log().contains("TLS certificate reloaded"), "{}", injector.log());

    // B's own pair: new handshakes get it, and clients that trust only A no longer connect.
    volume.publish(&b_cert, &b_key);
    handshake_until(&injector, "serving the renewed certificate", |served, _| served == b);
    assert!(injector.log().contains("TLS certificate reloaded"), "{}", injector.log());
    let reviews = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reviews");
    let (status, body) =
        curl(&b_path, &format!("{}/mutate", injector.base()), Some(&reviews.join("java-pod.json")));
    assert_eq!(status, 200, "{body}");
    let old = curl_command(&a_path, &format!("{}/healthz", injector.base()), None).output().unwrap();
    assert!(!old.status.success(), "A is no longer served");
    assert_eq!(injector.log().matches(refused).count(), 2, "{}", injector.log());
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = tls_cert(tmp.path());
    let mut injector = Injector::start(&cert, &key, &[], tmp.path());

    // A review that takes ~4 s to upload (2 MiB of leading whitespace at 512 KiB/s).
    let reviews = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reviews");
    let review = std::fs::read(reviews.join("java-pod.json")).unwrap();
    let slow = tmp.path().join("slow-review.json");
    std::fs::write(&slow, [vec![b' '; 2 << 20], review.clone()].concat()).unwrap();
    let mut upload = curl_command(&cert, &format!("{}/mutate", injector.base()), Some(&slow))
        .args(["--limit-rate", "512K"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(upload.try_wait().unwrap().is_none(), "the upload is still in flight");

    let kill = Command::new("kill").args(["-TERM", &injector.pid().to_string()]).status().unwrap();
    assert!(kill.success());
    assert!(upload.try_wait().unwrap().is_none(), "the upload is in flight at the signal");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", injector.port)).is_ok() {
        assert!(start.elapsed() < Duration::from_secs(2), "still accepting 2 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(injector.running(), "exited with a request in flight");

    let (status, body) = curl_result(upload.wait_with_output().unwrap());
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&review).unwrap();
    assert_eq!(v["response"]["uid"], sent["request"]["uid"]);
    assert_eq!(v["response"]["allowed"], true);

    let status = injector.exit_status(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", injector.log());
    let log = injector.log();
    assert!(log.contains("stopping") && log.contains("no longer accepting"), "{log}");
    assert!(!log.contains("requests still in flight"), "{log}");
}

//! The webhook binary over real HTTPS (curl as the client, a certificate made
//! by openssl): a review gets its patch, garbage gets a 400, an oversized
//! body a 413, plaintext on the TLS port is dropped, and the server keeps
//! answering after all of them.

mod support;

use nettap_e2e::tls_cert;
use std::path::Path;
use std::process::Command;
use support::{curl, Injector};

#[test]
fn serves_reviews_over_https_and_survives_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = tls_cert(dir.path());
    let injector = Injector::start(&cert, &key, &[], dir.path());
    let (port, base) = (injector.port, injector.base());
    assert_eq!(curl(&cert, &format!("{base}/healthz"), None).0, 200);

    let reviews = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reviews");
    let (status, body) = curl(&cert, &format!("{base}/mutate"), Some(&reviews.join("java-pod.json")));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["response"]["allowed"], true);
    let sent: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reviews.join("java-pod.json")).unwrap()).unwrap();
    assert_eq!(v["response"]["uid"], sent["request"]["uid"]);
    assert_eq!(v["response"]["patchType"], "JSONPatch");
    let patch: Vec<u8> = serde_json::from_value(v["response"]["patch"].clone()).unwrap();
    assert!(String::from_utf8(patch).unwrap().contains("example/agent:1"), "the configured image");

    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, b"{\"kind\": 12, \x01 not json").unwrap();
    let (status, body) = curl(&cert, &format!("{base}/mutate"), Some(&garbage));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not an AdmissionReview"), "{body}");

    let huge = dir.path().join("huge");
    std::fs::write(&huge, vec![b' '; 4 << 20]).unwrap();
    assert_eq!(curl(&cert, &format!("{base}/mutate"), Some(&huge)).0, 413);

    // Plaintext HTTP on the TLS port: that connection fails, nothing else.
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "5", &format!("http://127.0.0.1:{port}/healthz")])
        .output()
        .unwrap();
    assert!(!plain.status.success());
    assert_eq!(curl(&cert, &format!("{base}/nowhere"), None).0, 404);
    let (status, _) = curl(&cert, &format!("{base}/mutate"), Some(&reviews.join("nginx-pod.json")));
    assert_eq!(status, 200, "still serving");
}

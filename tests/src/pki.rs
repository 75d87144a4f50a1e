//! Certificates for the TLS tests, made with the `openssl` command.

use crate::wait::free_port;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A self-signed certificate and key for `localhost`, 127.0.0.1 and ::1 in
/// `dir` (made by the `openssl` command; Go wants the names as SANs):
/// (certificate, key).
pub fn tls_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command is required to make test certificates");
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// A CA and the server and client certificates it signed (PEM files), for
/// tests of TLS with client authentication.
pub struct Pki {
    /// The CA certificate both sides trust.
    pub ca: PathBuf,
    /// Server certificate for localhost, 127.0.0.1, ::1 and `server_ips`.
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// Client certificate (clientAuth).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

impl Pki {
    /// Makes the CA and both certificates in `dir` with the openssl command.
    pub fn new(dir: &Path, server_ips: &[&str]) -> Pki {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("the openssl command is required to make test certificates");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=nettap test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        let mut san = "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1".to_string();
        for ip in server_ips {
            san.push_str(&format!(",IP:{ip}"));
        }
        for (name, cn, ext) in [
            ("server", "localhost", format!("{san}\nextendedKeyUsage=serverAuth")),
            ("client", "nettap test client", "extendedKeyUsage=clientAuth".to_string()),
        ] {
            let (key, csr, pem, extfile) =
                (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
            std::fs::write(dir.join(&extfile), ext).unwrap();
            openssl(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &extfile,
                "-out",
                &pem,
            ]);
        }
        Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

/// What a TLS test starts with: a fresh certificate for `localhost` and a
/// port for its server.
pub struct TlsSetup {
    /// The certificate (PEM), also the CA file clients trust.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The server's port.
    pub port: u16,
    /// The same, as a command-line argument.
    pub port_s: String,
    _dir: tempfile::TempDir,
}

impl TlsSetup {
    /// Makes the certificate and picks the port.
    pub fn new() -> TlsSetup {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = tls_cert(dir.path());
        let port = free_port();
        TlsSetup { cert, key, port, port_s: port.to_string(), _dir: dir }
    }
}

impl Default for TlsSetup {
    fn default() -> Self {
        Self::new()
    }
}

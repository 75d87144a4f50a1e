//! Who may subscribe. Records carry every password and token on the node in
//! plaintext, so the API is local (Unix socket or loopback) unless the
//! sensor is given TLS and a way to tell subscribers apart: a bearer token,
//! client certificates from a CA, or both. Anything less is refused at
//! start-up, and a subscriber that fails a check gets nothing.

use super::ApiAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Shorter tokens are guessable; refused rather than warned about.
const MIN_TOKEN_LEN: usize = 16;

/// Why an API configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ApiSecurityError {
    /// A non-local address without TLS.
    #[error(
        "{0} is not a loopback address: serving records there needs --api-tls-cert and --api-tls-key, \
         and --api-token-file or --api-client-ca to tell subscribers apart"
    )]
    NeedsTls(ApiAddr),
    /// A non-local address with TLS but no way to authenticate subscribers.
    #[error(
        "{0} is not a loopback address: with TLS it still needs --api-token-file or --api-client-ca, \
         or anyone who can reach it reads every record"
    )]
    NeedsAuthentication(ApiAddr),
    /// TLS asked for on a Unix socket.
    #[error("TLS applies to TCP addresses; {0} is a Unix socket (its file mode guards it)")]
    TlsOnUnixSocket(ApiAddr),
    /// A certificate without its key or the other way round.
    #[error("--api-tls-cert and --api-tls-key go together")]
    HalfAnIdentity,
    /// A certificate, key or token file that cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A token too short to be a secret.
    #[error("the token in {0} is shorter than {MIN_TOKEN_LEN} characters")]
    ShortToken(PathBuf),
}

fn read(path: &Path) -> Result<Vec<u8>, ApiSecurityError> {
    std::fs::read(path).map_err(|source| ApiSecurityError::Read { path: path.to_owned(), source })
}

/// A shared secret sent as `authorization: Bearer …`.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// The token is the file's first line (read from a file so that it is
    /// not in the process list or the shell's history).
    pub fn from_file(path: &Path) -> Result<Self, ApiSecurityError> {
        let text = String::from_utf8_lossy(&read(path)?).into_owned();
        let token = text.lines().next().unwrap_or("").trim();
        if token.len() < MIN_TOKEN_LEN {
            return Err(ApiSecurityError::ShortToken(path.to_owned()));
        }
        Ok(Token(token.into()))
    }

    fn header(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Compares in time that does not depend on where the first difference is.
    fn accepts(&self, header: &[u8]) -> bool {
        let want = self.header();
        let want = want.as_bytes();
        header.len() == want.len() && header.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// The sensor's certificate, and the CA whose client certificates it
/// requires (mutual TLS) when given.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA (PEM) whose client certificates are required, when given.
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// From the capture flags: both of cert and key, or neither.
    pub fn from_flags(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    ) -> Result<Option<Self>, ApiSecurityError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(ServerTls { cert, key, client_ca })),
            (None, None) if client_ca.is_none() => Ok(None),
            _ => Err(ApiSecurityError::HalfAnIdentity),
        }
    }

    pub(super) fn config(&self) -> Result<ServerTlsConfig, ApiSecurityError> {
        let mut c = ServerTlsConfig::new().identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?));
        if let Some(ca) = &self.client_ca {
            c = c.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(c)
    }
}

/// Where and how the API is served, checked against the policy above.
#[derive(Debug, Clone)]
pub struct ApiListen {
    /// Where.
    pub addr: ApiAddr,
    /// TLS, when served over it.
    pub tls: Option<ServerTls>,
    /// The bearer token subscribers must send, when set.
    pub token: Option<Token>,
}

impl ApiListen {
    /// Checks the combination against the policy in the module's comment.
    pub fn new(
        addr: ApiAddr,
        tls: Option<ServerTls>,
        token: Option<Token>,
    ) -> Result<Self, ApiSecurityError> {
        match &addr {
            ApiAddr::Unix(_) if tls.is_some() => return Err(ApiSecurityError::TlsOnUnixSocket(addr)),
            ApiAddr::Tcp(a) if !a.ip().is_loopback() => {
                let Some(t) = &tls else { return Err(ApiSecurityError::NeedsTls(addr)) };
                if token.is_none() && t.client_ca.is_none() {
                    return Err(ApiSecurityError::NeedsAuthentication(addr));
                }
            }
            _ => {}
        }
        Ok(ApiListen { addr, tls, token })
    }

    /// How subscribers are checked, for the start-up log line.
    pub fn describe(&self) -> String {
        let mut parts = vec![match &self.tls {
            None => "plaintext",
            Some(ServerTls { client_ca: Some(_), .. }) => "TLS with client certificates",
            Some(_) => "TLS",
        }];
        if self.token.is_some() {
            parts.push("bearer token");
        }
        parts.join(" + ")
    }
}

/// Refuses requests without the token; lets everything through without one.
#[derive(Clone)]
pub(super) struct TokenCheck(pub Option<Token>);

impl tonic::service::Interceptor for TokenCheck {
    // The error type is tonic's (large) Status, fixed by the trait.
    #[allow(clippy::result_large_err)]
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(token) = &self.0 else { return Ok(req) };
        let given = req.metadata().get("authorization").map(|v| v.as_bytes());
        if given.is_some_and(|h| token.accepts(h)) {
            return Ok(req);
        }
        let peer = req.remote_addr().map_or_else(|| "a local peer".to_string(), |a| a.to_string());
        let why = if given.is_some() { "wrong token" } else { "no token" };
        tracing::warn!(%peer, why, "API subscriber refused");
        Err(tonic::Status::unauthenticated("a valid bearer token is required"))
    }
}

/// How `nettap tail` reaches a sensor that wants TLS or a token.
#[derive(Debug, Clone, Default)]
pub struct Dial {
    /// CA that signed the sensor's certificate; TLS is used when given.
    pub ca: Option<PathBuf>,
    /// Client certificate and key for a sensor that requires them.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Name expected in the sensor's certificate (default: the host dialled).
    pub domain: Option<String>,
    /// Bearer token to send.
    pub token: Option<Token>,
}

impl Dial {
    /// The client's TLS settings, when the sensor serves TLS.
    pub fn tls_config(&self) -> Result<Option<ClientTlsConfig>, ApiSecurityError> {
        let Some(ca) = &self.ca else {
            return match self.identity {
                Some(_) => Err(ApiSecurityError::HalfAnIdentity),
                None => Ok(None),
            };
        };
        let mut c = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let Some((cert, key)) = &self.identity {
            c = c.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(d) = &self.domain {
            c = c.domain_name(d.clone());
        }
        Ok(Some(c))
    }

    /// The `authorization` header value, when a token is sent.
    pub fn token_header(&self) -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
        self.token.as_ref().and_then(|t| t.header().parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> ApiAddr {
        s.parse().unwrap()
    }

    fn tls(client_ca: bool) -> Option<ServerTls> {
        Some(ServerTls { cert: "c".into(), key: "k".into(), client_ca: client_ca.then(|| "ca".into()) })
    }

    fn token() -> Token {
        Token("0123456789abcdef".into())
    }

    #[test]
    fn local_addresses_need_nothing() {
        assert!(ApiListen::new(addr("127.0.0.1:1"), None, None).is_ok());
        assert!(ApiListen::new(addr("[::1]:1"), None, None).is_ok());
        assert!(ApiListen::new(addr("unix:/run/a.sock"), None, Some(token())).is_ok());
        assert!(matches!(
            ApiListen::new(addr("unix:/run/a.sock"), tls(false), None),
            Err(ApiSecurityError::TlsOnUnixSocket(_))
        ));
    }

    #[test]
    fn other_addresses_need_tls_and_a_way_to_tell_subscribers_apart() {
        let a = || addr("0.0.0.0:7070");
        assert!(matches!(ApiListen::new(a(), None, None), Err(ApiSecurityError::NeedsTls(_))));
        assert!(matches!(ApiListen::new(a(), None, Some(token())), Err(ApiSecurityError::NeedsTls(_))));
        assert!(matches!(
            ApiListen::new(a(), tls(false), None),
            Err(ApiSecurityError::NeedsAuthentication(_))
        ));
        assert!(ApiListen::new(a(), tls(false), Some(token())).is_ok());
        assert!(ApiListen::new(a(), tls(true), None).is_ok());
        let e = ApiListen::new(a(), None, None).unwrap_err().to_string();
        assert!(e.contains("--api-tls-cert") && e.contains("--api-token-file"), "{e}");
    }

    #[test]
    fn tokens_match_exactly() {
        let t = token();
        assert!(t.accepts(b"Bearer 0123456789abcdef"));
        assert!(!t.accepts(b"Bearer 0123456789abcdeF"));
        assert!(!t.accepts(b"Bearer 0123456789abcdef0"));
        assert!(!t.accepts(b"0123456789abcdef"));
        assert!(!t.accepts(b""));
        assert_eq!(format!("{t:?}"), "Token(…)");
    }

    #[test]
    fn tokens_come_from_the_first_line_of_a_file_and_are_long_enough() {
        let dir = std::env::temp_dir().join(format!("nettap-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "  0123456789abcdef \nignored\n").unwrap();
        assert!(Token::from_file(&good).unwrap().accepts(b"Bearer 0123456789abcdef"));
        let short = dir.join("short");
        std::fs::write(&short, "secret\n").unwrap();
        assert!(matches!(Token::from_file(&short), Err(ApiSecurityError::ShortToken(_))));
        assert!(matches!(Token::from_file(&dir.join("missing")), Err(ApiSecurityError::Read { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn half_an_identity_is_refused() {
        assert!(matches!(
            ServerTls::from_flags(Some("c".into()), None, None),
            Err(ApiSecurityError::HalfAnIdentity)
        ));
        assert!(matches!(
            ServerTls::from_flags(None, None, Some("ca".into())),
            Err(ApiSecurityError::HalfAnIdentity)
        ));
        assert!(ServerTls::from_flags(None, None, None).unwrap().is_none());
    }
}

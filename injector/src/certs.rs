//! The serving certificate, re-read when its files change: cert-manager
//! renews the Secret and the kubelet replaces the mounted files (an atomic
//! swap of the `..data` symlink they point through), so new handshakes get the
//! new pair without a restart. Connections already open keep theirs.

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tracing::{info, warn};

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file is missing, unreadable or not the PEM expected.
    #[error("cannot use {path}")]
    Pem {
        /// The file.
        path: String,
        /// Cause (I/O, PEM syntax, or no item of the kind wanted).
        #[source]
        source: pem::Error,
    },
    /// The key is not one rustls can sign with, or not the certificate's.
    #[error("{cert} and {key} are not a usable pair")]
    Pair {
        /// The certificate chain file.
        cert: String,
        /// The key file.
        key: String,
        /// Cause.
        #[source]
        source: rustls::Error,
    },
}

/// Reads a certificate chain and its private key (PEM) into what rustls
/// serves, checking that the key is the first certificate's.
pub fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, CertError> {
    fn pem_err(p: &Path) -> impl FnOnce(pem::Error) -> CertError + '_ {
        move |source| CertError::Pem { path: p.display().to_string(), source }
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(pem_err(cert))?;
    if chain.is_empty() {
        return Err(pem_err(cert)(pem::Error::NoItemsFound));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|source| CertError::Pair {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        source,
    })
}

/// What identifies the contents of a file without reading it: a new file
/// (the kubelet's swap) has a new inode, a rewrite a new mtime or size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

fn file_id(path: &Path) -> std::io::Result<FileId> {
    let m = std::fs::metadata(path)?; // follows the symlinks, as a read does
    Ok(FileId {
        dev: m.dev(),
        ino: m.ino(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        len: m.len(),
    })
}

#[derive(Debug)]
struct State {
    current: Arc<CertifiedKey>,
    /// The files' identities when last read (whether or not they were usable).
    seen: Option<(FileId, FileId)>,
    checked: Instant,
}

/// A rustls certificate resolver that looks at the files at most once per
/// `interval`, from a handshake, and re-reads them when they changed; a new
/// pair that cannot be used is logged and the one in use kept.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
    provider: Arc<CryptoProvider>,
    state: Mutex<State>,
}

impl ReloadingCert {
    /// Loads the pair now: an unusable one at start is an error.
    pub fn new(
        cert: &Path,
        key: &Path,
        interval: Duration,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, CertError> {
        // Identities first: if the files change while they are read, the next check reads them again.
        let seen = file_id(cert).and_then(|c| Ok((c, file_id(key)?))).ok();
        let current = Arc::new(load(cert, key, &provider)?);
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            interval,
            provider,
            state: Mutex::new(State { current, seen, checked: Instant::now() }),
        })
    }

    /// The pair to serve now, after a check of the files if one is due.
    pub fn current(&self) -> Arc<CertifiedKey> {
        // Blocking I/O on the handshake path, but small: two stat() calls per
        // interval, and a read of a few KB only after the files changed.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() >= self.interval {
            state.checked = Instant::now();
            self.refresh(&mut state);
        }
        state.current.clone()
    }

    fn refresh(&self, state: &mut State) {
        let ids = match file_id(&self.cert).and_then(|c| Ok((c, file_id(&self.key)?))) {
            Ok(ids) => ids,
            Err(e) => {
                // Kept unseen, so it is read as soon as the files are back.
                warn!(cert = %self.cert.display(), key = %self.key.display(), error = %e,
                    "TLS certificate files unreadable: keeping the certificate in use");
                return;
            }
        };
        if state.seen == Some(ids) {
            return;
        }
        state.seen = Some(ids);
        match load(&self.cert, &self.key, &self.provider) {
            Ok(pair) => {
                state.current = Arc::new(pair);
                info!(cert = %self.cert.display(), key = %self.key.display(), "TLS certificate reloaded");
            }
            // As an error value, so the log line carries its causes (`error.sources`).
            Err(e) => warn!(
                error = &e as &(dyn std::error::Error + 'static),
                "new TLS certificate refused: keeping the certificate in use"
            ),
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

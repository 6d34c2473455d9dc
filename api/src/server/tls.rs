//! HTTPS: the rustls configuration from PEM files, reloaded without a restart.
//!
//! TLS 1.3 and 1.2 only (rustls has nothing older), the `ring` provider's cipher suites,
//! ALPN `http/1.1`. With a client CA, every client must present a certificate it signed.
//! `reload` builds a whole new configuration from the files (certificate, key and client CA
//! together, so a rotation never pairs a new certificate with an old key) and swaps it in for
//! the next handshakes; connections already open keep theirs. A configuration that does not
//! load is refused and the one in force stays, loudly (log and `tls_reload_failures_total`).

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// The files HTTPS is served from.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate signed by one of these.
    pub client_ca: Option<PathBuf>,
}

/// Why a TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("{} (client CA): {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The configuration in force, and what it was built from.
pub struct TlsState {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    /// BLAKE3 of the files' bytes when `current` was built: a reload of the same files does
    /// nothing.
    loaded: Mutex<[u8; 32]>,
}

impl TlsState {
    pub fn load(files: TlsFiles) -> Result<TlsState, TlsError> {
        let (config, digest) = build(&files)?;
        Ok(TlsState { files, current: RwLock::new(Arc::new(config)), loaded: Mutex::new(digest) })
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().expect("tls lock").clone())
    }

    /// Reloads the files if they changed; `Ok(true)` when a new configuration is in force.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let digest = digest(&self.files)?;
        if digest == *self.loaded.lock().expect("tls lock") {
            return Ok(false);
        }
        let (config, digest) = build(&self.files)?;
        *self.current.write().expect("tls lock") = Arc::new(config);
        *self.loaded.lock().expect("tls lock") = digest;
        Ok(true)
    }

    /// Reloads and says so in the log and metrics; `why` names the trigger.
    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(true) => {
                metrics::counter!("tls_reloads_total").increment(1);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded ({why})");
            }
            Ok(false) => {}
            Err(e) => {
                metrics::counter!("tls_reload_failures_total").increment(1);
                tracing::error!("TLS reload ({why}) refused, the previous certificate stays in use: {e}");
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

fn digest(files: &TlsFiles) -> Result<[u8; 32], TlsError> {
    let mut hasher = blake3::Hasher::new();
    for path in [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()].into_iter().flatten() {
        let bytes = read(path)?;
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(*hasher.finalize().as_bytes())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certs)
}

fn build(files: &TlsFiles) -> Result<(ServerConfig, [u8; 32]), TlsError> {
    let digest = digest(files)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
        .map_err(|e| TlsError::Pem { path: files.key.clone(), reason: format!("no usable private key: {e}") })?;
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates(path)? {
                roots.add(ca).map_err(|e| TlsError::ClientCa { path: path.clone(), reason: e.to_string() })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa { path: path.clone(), reason: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, digest))
}

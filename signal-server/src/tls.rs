//! Serving TLS directly: the certificate chain and key from PEM files, HTTP/1.1 only (which
//! WebSocket upgrades need).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds no usable item.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificate or key (for example, they do not match).
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// An acceptor for `tls`'s certificate and key.
pub fn acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|err| pem_error(&tls.cert, &err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(&tls.cert, &err))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: tls.cert.clone(),
            reason: "no certificate in the file".to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|err| pem_error(&tls.key, &err))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn pem_error(path: &Path, err: &rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        reason: err.to_string(),
    }
}

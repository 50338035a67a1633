//! One port's PEM files, read with a size bound, turned into a rustls `ServerConfig` on the ring provider.
//!
//! Everything that can be wrong with the files is found here, before a configuration exists: unreadable or
//! oversized files, no certificate or no key in them, a key that does not match the certificate, a leaf
//! certificate already expired, a CA file with no usable certificate. Each error names the flag and the file,
//! and never the contents of the key file.

use std::{
    fmt,
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use rustls::{RootCertStore, ServerConfig, crypto::CryptoProvider, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::{MAX_PEM_FILE_BYTES, Port, TlsFiles};

/// Why a port's TLS configuration could not be built from its files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be opened or read.
    #[error("{flag} {}: cannot read the file: {source}", path.display())]
    Read {
        /// The flag that names the file.
        flag: String,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// A file is larger than any PEM certificate chain or key ([`MAX_PEM_FILE_BYTES`]).
    #[error("{flag} {}: the file is larger than {limit} bytes", path.display())]
    TooLarge {
        /// The flag that names the file.
        flag: String,
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// A file holds no usable PEM item of the kind the flag needs, or is malformed.
    #[error("{flag} {}: {reason}", path.display())]
    Pem {
        /// The flag that names the file.
        flag: String,
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// The server certificate's validity ended before now; clients would refuse it.
    #[error("{flag} {}: the certificate expired at {not_after} (UTC)", path.display())]
    Expired {
        /// The flag that names the file.
        flag: String,
        /// The file.
        path: PathBuf,
        /// When it expired.
        not_after: String,
    },
    /// The key and the certificate do not belong together, or rustls refused them.
    #[error("{cert_flag} and {key_flag}: {reason}")]
    CertifiedKey {
        /// The certificate's flag.
        cert_flag: String,
        /// The key's flag.
        key_flag: String,
        /// rustls's reason.
        reason: String,
    },
    /// Mutual TLS was asked for without a CA to check client certificates against.
    #[error(
        "--{prefix}-use-ssl-mutual needs --{prefix}-root-cert: the CA certificates client certificates are checked against"
    )]
    MissingRootCert {
        /// The port's flag prefix.
        prefix: &'static str,
    },
    /// TLS was asked for without a certificate or key file.
    #[error("--{prefix}-use-ssl needs --{prefix}-{missing}")]
    MissingFile {
        /// The port's flag prefix.
        prefix: &'static str,
        /// The flag that was not given, without its prefix (`server-cert` or `server-key`).
        missing: &'static str,
    },
}

/// The contents of one port's PEM files as last read. Compared whole to tell whether files changed.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct PemFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
    root: Option<Vec<u8>>,
}

impl fmt::Debug for PemFiles {
    // The key never reaches a log, even at trace level.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemFiles")
            .field("cert_bytes", &self.cert.len())
            .field("key_bytes", &self.key.len())
            .field("root_bytes", &self.root.as_ref().map(Vec::len))
            .finish()
    }
}

/// The flag of `port` that names file `what` (`server-cert`, `server-key`, `root-cert`).
fn flag(port: Port, what: &str) -> String {
    format!("--{}-{what}", port.flag_prefix())
}

/// Reads `files`, each at most [`MAX_PEM_FILE_BYTES`]; the CA file only under mutual TLS.
pub(super) fn read(files: &TlsFiles, port: Port) -> Result<PemFiles, TlsError> {
    let root = match (&files.root_cert, files.mutual) {
        (Some(path), true) => Some(read_bounded(path, flag(port, "root-cert"))?),
        (None, true) => {
            return Err(TlsError::MissingRootCert {
                prefix: port.flag_prefix(),
            });
        }
        (_, false) => None,
    };
    Ok(PemFiles {
        cert: read_bounded(&files.server_cert, flag(port, "server-cert"))?,
        key: read_bounded(&files.server_key, flag(port, "server-key"))?,
        root,
    })
}

fn read_bounded(path: &Path, flag: String) -> Result<Vec<u8>, TlsError> {
    let read_error = |source| TlsError::Read {
        flag: flag.clone(),
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut contents = Vec::new();
    // One byte past the limit tells an oversized file (or a device that never ends) from one at the limit.
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut contents)
        .map_err(read_error)?;
    if contents.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(TlsError::TooLarge {
            flag,
            path: path.to_path_buf(),
            limit: MAX_PEM_FILE_BYTES,
        });
    }
    Ok(contents)
}

/// The configuration `pem` describes for `port`, or the first thing wrong with it.
pub(super) fn build(pem: &PemFiles, files: &TlsFiles, port: Port) -> Result<Arc<ServerConfig>, TlsError> {
    let pem_error = |what: &str, path: &Path, reason: String| TlsError::Pem {
        flag: flag(port, what),
        path: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            pem_error(
                "server-cert",
                &files.server_cert,
                format!("malformed PEM: {error}"),
            )
        })?;
    let Some(leaf) = chain.first() else {
        return Err(pem_error(
            "server-cert",
            &files.server_cert,
            "no PEM certificate (BEGIN CERTIFICATE) in the file".into(),
        ));
    };
    check_validity(leaf, port, &files.server_cert)?;
    // The key file's contents are never quoted, whatever is wrong with them.
    let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|_| {
        pem_error(
            "server-key",
            &files.server_key,
            "no PEM private key (PKCS#8, PKCS#1 or SEC1) could be read from the file".into(),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::CertifiedKey {
            cert_flag: flag(port, "server-cert"),
            key_flag: flag(port, "server-key"),
            reason: error.to_string(),
        })?;
    let builder = match (&pem.root, &files.root_cert) {
        (Some(root), Some(path)) => {
            builder.with_client_cert_verifier(client_verifier(root, path, port, &provider)?)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|error| TlsError::CertifiedKey {
            cert_flag: flag(port, "server-cert"),
            key_flag: flag(port, "server-key"),
            reason: match error {
                rustls::Error::InconsistentKeys(_) => "the private key does not match the certificate".into(),
                other => other.to_string(),
            },
        })?;
    config.alpn_protocols = port.alpn();
    Ok(Arc::new(config))
}

/// Refuses a leaf certificate that has expired, and warns about one not valid yet (a clock a little behind
/// the issuer's is common right after a certificate is issued, and fixes itself).
fn check_validity(leaf: &CertificateDer<'_>, port: Port, path: &Path) -> Result<(), TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|error| TlsError::Pem {
        flag: flag(port, "server-cert"),
        path: path.to_path_buf(),
        reason: format!("the first certificate is not valid X.509: {error}"),
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX));
    let validity = parsed.validity();
    if validity.not_after.timestamp() < now {
        return Err(TlsError::Expired {
            flag: flag(port, "server-cert"),
            path: path.to_path_buf(),
            not_after: validity.not_after.to_string(),
        });
    }
    if validity.not_before.timestamp() > now {
        tracing::warn!(
            file = %path.display(),
            not_before = %validity.not_before,
            "--{}-server-cert is not valid yet; clients will refuse it until then",
            port.flag_prefix()
        );
    }
    Ok(())
}

/// A verifier that requires a client certificate chaining to one of the CAs in `root`.
fn client_verifier(
    root: &[u8],
    path: &Path,
    port: Port,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let pem_error = |reason: String| TlsError::Pem {
        flag: flag(port, "root-cert"),
        path: path.to_path_buf(),
        reason,
    };
    let certificates = CertificateDer::pem_slice_iter(root)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(format!("malformed PEM: {error}")))?;
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(pem_error(format!(
            "no usable CA certificate in the file ({ignored} could not be parsed)"
        )));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(store), Arc::clone(provider))
        .build()
        .map_err(|error| pem_error(format!("cannot check client certificates against it: {error}")))
}

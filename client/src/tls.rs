//! TLS for the client: which CAs to trust, the certificate to present under mutual TLS, and the name to
//! check the server's certificate against.

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// How to secure a connection, for [`crate::Client::connect_with_tls`] and [`crate::bench::LoadConfig::tls`].
///
/// The default trusts the system's CA certificates and presents no client certificate; the server's
/// certificate is checked against the endpoint's host unless [`TlsOptions::with_server_name`] says
/// otherwise. Options hold PEM text, not paths, so that callers choose where it comes from.
///
/// ```no_run
/// use ferry_client::{Client, TlsOptions};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let tls = TlsOptions::new()
///     .with_ca_pem(std::fs::read("ca.crt")?)
///     .with_identity_pem(std::fs::read("client.crt")?, std::fs::read("client.key")?);
/// let client = Client::connect_with_tls("ferry.internal:8001", tls).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct TlsOptions {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    server_name: Option<String>,
}

impl std::fmt::Debug for TlsOptions {
    // The private key stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("custom_ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsOptions {
    /// Trusts the system's CA certificates and presents no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts only the CA certificates in `pem` (one or more PEM certificates), instead of the system's.
    pub fn with_ca_pem(self, pem: impl Into<Vec<u8>>) -> Self {
        TlsOptions {
            ca_pem: Some(pem.into()),
            ..self
        }
    }

    /// Presents `cert_chain` (PEM, leaf first) with its private key `key` (PEM) to servers that ask for a
    /// client certificate (mutual TLS).
    pub fn with_identity_pem(self, cert_chain: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        TlsOptions {
            identity: Some((cert_chain.into(), key.into())),
            ..self
        }
    }

    /// Checks the server's certificate against `name` (and sends it as SNI) instead of the endpoint's
    /// host, for servers reached by an address their certificate does not name.
    pub fn with_server_name(self, name: impl Into<String>) -> Self {
        TlsOptions {
            server_name: Some(name.into()),
            ..self
        }
    }

    /// tonic's configuration for these options.
    pub(crate) fn to_tonic(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_pem {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        config
    }
}

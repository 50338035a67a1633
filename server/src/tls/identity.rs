//! The identity a verified client certificate carries: its subject and its subject alternative names.

use std::{fmt, net::IpAddr, sync::Arc};

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The certificate a client presented under mutual TLS, after rustls verified it against the port's CA.
///
/// Ferry puts one in the extensions of every request that arrives on such a connection (gRPC and REST
/// alike: `request.extensions().get::<ClientCertificate>()`), so that authorisation can take the subject's
/// common name or a SAN as the caller's identity. A request without one came over plain TCP or over TLS
/// without client certificates. Cloning is cheap: the parsed names are shared by every request of the
/// connection.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCertificate(Arc<Names>);

#[derive(PartialEq, Eq)]
struct Names {
    subject: String,
    common_name: Option<String>,
    sans: Vec<SubjectAltName>,
}

/// One subject alternative name of a client certificate, of the kinds identities are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectAltName {
    /// A DNS name (`dNSName`).
    Dns(String),
    /// A URI (`uniformResourceIdentifier`), such as a SPIFFE ID.
    Uri(String),
    /// An e-mail address (`rfc822Name`).
    Email(String),
    /// An IP address (`iPAddress`).
    Ip(IpAddr),
}

impl fmt::Display for SubjectAltName {
    /// The OpenSSL spelling: `DNS:name`, `URI:uri`, `email:address`, `IP Address:ip`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubjectAltName::Dns(name) => write!(f, "DNS:{name}"),
            SubjectAltName::Uri(uri) => write!(f, "URI:{uri}"),
            SubjectAltName::Email(address) => write!(f, "email:{address}"),
            SubjectAltName::Ip(ip) => write!(f, "IP Address:{ip}"),
        }
    }
}

impl ClientCertificate {
    /// The names of the end-entity certificate `der`; `None` if it is not X.509 (rustls has verified it by
    /// then, so this does not happen in practice). SANs of other kinds (directory names, other names) are
    /// left out.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, certificate) = X509Certificate::from_der(der).ok()?;
        let subject = certificate.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|name| name.as_str().ok())
            .map(str::to_owned);
        let mut sans = Vec::new();
        if let Ok(Some(extension)) = certificate.subject_alternative_name() {
            for name in &extension.value.general_names {
                let san = match name {
                    GeneralName::DNSName(name) => SubjectAltName::Dns((*name).to_owned()),
                    GeneralName::URI(uri) => SubjectAltName::Uri((*uri).to_owned()),
                    GeneralName::RFC822Name(address) => SubjectAltName::Email((*address).to_owned()),
                    GeneralName::IPAddress(bytes) => match ip_address(bytes) {
                        Some(ip) => SubjectAltName::Ip(ip),
                        None => continue,
                    },
                    _ => continue,
                };
                sans.push(san);
            }
        }
        Some(ClientCertificate(Arc::new(Names {
            subject: subject.to_string(),
            common_name,
            sans,
        })))
    }

    /// The subject's distinguished name, as RFC 4514 writes it (`CN=alice, O=Example`).
    pub fn subject(&self) -> &str {
        &self.0.subject
    }

    /// The subject's common name (`CN`), the usual place of a client's name, when it has one.
    pub fn common_name(&self) -> Option<&str> {
        self.0.common_name.as_deref()
    }

    /// The subject alternative names, in the certificate's order.
    pub fn sans(&self) -> &[SubjectAltName] {
        &self.0.sans
    }
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("subject", &self.0.subject)
            .field("sans", &self.0.sans)
            .finish()
    }
}

/// An `iPAddress` SAN's four or sixteen bytes as an address.
fn ip_address(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

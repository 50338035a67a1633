//! Certificates for TLS tests: a CA, a server certificate and a client certificate made for the test
//! (rcgen), written as PEM files to a temporary folder, and the acceptors a [`crate::TestServer`] serves
//! them with.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use ferry_server::tls::{Acceptor, Port, TlsFiles, TlsPorts};
use rcgen::SanType;

pub use crate::pki::{Ca, Leaf, write_pem};

/// One test's PKI: `ca.crt`, `server.crt` and `server.key` (for `localhost` and `127.0.0.1`), and
/// `client.crt` and `client.key` (common name `test-client`), all in one temporary folder.
pub struct TlsFixture {
    dir: tempfile::TempDir,
    /// The CA that signed the server and client certificates.
    pub ca: Ca,
    /// The client certificate and key.
    pub client: Leaf,
}

impl TlsFixture {
    /// A new CA with a server and a client certificate, written to a new temporary folder.
    pub fn new() -> Self {
        let ca = Ca::new("Ferry test CA");
        let client = ca.client(
            "test-client",
            vec![SanType::URI(
                "spiffe://ferry.test/client".try_into().expect("URI"),
            )],
        );
        let fixture = TlsFixture {
            dir: tempfile::tempdir().expect("temp dir"),
            ca,
            client,
        };
        fixture.install_server(&fixture.ca.server("ferry test server"));
        write_pem(fixture.dir(), "ca.crt", &fixture.ca.cert_pem);
        write_pem(fixture.dir(), "client.crt", &fixture.client.cert_pem);
        write_pem(fixture.dir(), "client.key", &fixture.client.key_pem);
        fixture
    }

    /// The folder the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of file `name` in the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces `server.crt` and `server.key` with `leaf`, each by an atomic rename (certificate first).
    pub fn install_server(&self, leaf: &Leaf) {
        write_pem(self.dir(), "server.crt", &leaf.cert_pem);
        write_pem(self.dir(), "server.key", &leaf.key_pem);
    }

    /// The files of a port serving `server.crt`, checking client certificates against `ca.crt` if `mutual`.
    pub fn files(&self, mutual: bool) -> TlsFiles {
        TlsFiles {
            server_cert: self.path("server.crt"),
            server_key: self.path("server.key"),
            root_cert: mutual.then(|| self.path("ca.crt")),
            mutual,
        }
    }

    /// TLS (and with `mutual`, client certificates) on the gRPC, REST and metrics ports.
    pub fn ports(&self, mutual: bool) -> TlsPorts {
        let acceptor = |port| {
            Some(Acceptor::new(port, self.files(mutual), Duration::from_secs(5)).expect("TLS acceptor"))
        };
        TlsPorts {
            grpc: acceptor(Port::Grpc),
            http: acceptor(Port::Http),
            metrics: acceptor(Port::Metrics),
        }
    }
}

impl Default for TlsFixture {
    fn default() -> Self {
        Self::new()
    }
}

//! Transport security: TLS on the gRPC, REST and metrics ports, client certificates (mutual TLS), and
//! certificates re-read without a restart.
//!
//! Each port that serves TLS has one [`Acceptor`], built from PEM files named by flags (Triton's
//! `--grpc-use-ssl`, `--grpc-server-cert`, `--grpc-server-key`, `--grpc-root-cert`, `--grpc-use-ssl-mutual`,
//! and the same under `--http-` and `--metrics-`; see [`TlsFlags`]). The acceptor holds the port's rustls
//! configuration behind an atomic pointer: [`spawn_reloader`] re-reads the files on SIGHUP and when they
//! change, and swaps in a new configuration only once it has been built whole, so a bad new certificate
//! leaves the old one serving. A handshake reads the configuration once, when it starts, so connections
//! already open keep what they negotiated.
//!
//! Handshakes run in each connection's own task, after the connection has passed the [`crate::connection::Gate`],
//! and are bounded by a timeout ([`DEFAULT_HANDSHAKE_TIMEOUT`]); a client that connects and never finishes
//! its handshake holds one connection slot for that long, and never the accept loop.
//!
//! Under mutual TLS the client's verified certificate becomes a [`ClientCertificate`] in each request's
//! extensions (gRPC and REST alike), so that layers above the transport can take its subject or a SAN as the
//! caller's identity.
//!
//! - `config`: PEM files to a rustls `ServerConfig`, with every failure named by flag and file.
//! - `acceptor`: the reloadable configuration and the bounded handshake.
//! - `identity`: the client certificate's subject and SANs.
//! - `reload`: SIGHUP and polling of the files.
//! - `flags`: the command-line flags.

mod acceptor;
mod config;
mod flags;
mod identity;
mod reload;

#[cfg(test)]
mod tests;

use std::{path::PathBuf, sync::Arc, time::Duration};

pub use acceptor::{Acceptor, HandshakeError};
pub use config::TlsError;
pub use flags::TlsFlags;
pub use identity::{ClientCertificate, SubjectAltName};
pub use reload::spawn_reloader;

/// Default of the handshake timeout (`--tls-handshake-timeout-secs`): ample for a client on a slow network,
/// short enough that connections that never finish their handshake give their slot back soon.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of how often certificate files are looked at for changes (`--tls-reload-poll-secs`).
pub const DEFAULT_RELOAD_POLL: Duration = Duration::from_secs(5);
/// The largest certificate, key or CA file read; PEM files of real chains are a few kilobytes.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// The port a TLS configuration is for, which fixes the protocols it offers (ALPN) and the flags its
/// messages name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The gRPC port: HTTP/2 only (ALPN `h2`), as gRPC requires.
    Grpc,
    /// The REST port: HTTP/2 or HTTP/1.1 (ALPN `h2`, `http/1.1`).
    Http,
    /// The metrics port: HTTP/2 or HTTP/1.1, like REST.
    Metrics,
}

impl Port {
    /// The prefix of the port's flags (`grpc` in `--grpc-server-cert`).
    pub fn flag_prefix(self) -> &'static str {
        match self {
            Port::Grpc => "grpc",
            Port::Http => "http",
            Port::Metrics => "metrics",
        }
    }

    /// The ALPN protocols offered, in order of preference.
    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Port::Grpc => vec![b"h2".to_vec()],
            Port::Http | Port::Metrics => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }
}

/// Where one port's certificate, key and client CA come from, and whether clients must present a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain the server presents, leaf first (`--<port>-server-cert`).
    pub server_cert: PathBuf,
    /// PEM private key of the leaf certificate: PKCS#8, PKCS#1 or SEC1 (`--<port>-server-key`).
    pub server_key: PathBuf,
    /// PEM certificates of the CAs that sign client certificates (`--<port>-root-cert`); read only when
    /// `mutual` is set, as in Triton.
    pub root_cert: Option<PathBuf>,
    /// Whether every client must present a certificate signed by `root_cert` (`--<port>-use-ssl-mutual`).
    pub mutual: bool,
}

/// The TLS acceptors of a server's ports; a port without one serves plain text.
#[derive(Debug, Clone, Default)]
pub struct TlsPorts {
    /// The gRPC port's.
    pub grpc: Option<Arc<Acceptor>>,
    /// The REST port's.
    pub http: Option<Arc<Acceptor>>,
    /// The metrics port's.
    pub metrics: Option<Arc<Acceptor>>,
}

impl TlsPorts {
    /// Every acceptor, for the reloader.
    pub fn acceptors(&self) -> Vec<Arc<Acceptor>> {
        [&self.grpc, &self.http, &self.metrics]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

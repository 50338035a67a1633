//! The TLS flags of the `ferry` binary: Triton's `--grpc-*` SSL flags, the same under `--http-*` and
//! `--metrics-*`, and the handshake timeout and reload interval.
//!
//! As in Triton (`src/command_line_parser.cc`): `--<port>-use-ssl` turns TLS on; the certificate and key
//! flags are ignored without it; `--<port>-use-ssl-mutual` requires client certificates and implies
//! `--<port>-use-ssl`; `--<port>-root-cert` is read only under mutual TLS. Booleans take Triton's spellings
//! (`1`, `true`, `yes`, `on` and their opposites), or no value for true. One difference: Triton turns TLS on
//! even for `--grpc-use-ssl-mutual=false`; Ferry does so only for true.

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::builder::BoolishValueParser;

use super::{Acceptor, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_RELOAD_POLL, Port, TlsError, TlsFiles, TlsPorts};

/// The command-line flags of transport security, flattened into the `ferry` binary's flags.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Transport security (TLS, docs/security.md)")]
pub struct TlsFlags {
    /// Serve gRPC over TLS (HTTP/2, ALPN h2) with --grpc-server-cert and --grpc-server-key (Triton's flag).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub grpc_use_ssl: bool,
    /// Require gRPC clients to present a certificate signed by --grpc-root-cert (mutual TLS); implies
    /// --grpc-use-ssl (Triton's flag).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub grpc_use_ssl_mutual: bool,
    /// PEM certificate chain of the gRPC port, leaf first (Triton's flag). Re-read on SIGHUP and on change.
    #[arg(long, value_name = "FILE")]
    pub grpc_server_cert: Option<PathBuf>,
    /// PEM private key of --grpc-server-cert: PKCS#8, PKCS#1 or SEC1 (Triton's flag).
    #[arg(long, value_name = "FILE")]
    pub grpc_server_key: Option<PathBuf>,
    /// PEM certificates of the CAs gRPC client certificates must chain to; read only with
    /// --grpc-use-ssl-mutual (Triton's flag).
    #[arg(long, value_name = "FILE")]
    pub grpc_root_cert: Option<PathBuf>,

    /// Serve REST over TLS (ALPN h2 and http/1.1) with --http-server-cert and --http-server-key.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub http_use_ssl: bool,
    /// Require REST clients to present a certificate signed by --http-root-cert; implies --http-use-ssl.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub http_use_ssl_mutual: bool,
    /// PEM certificate chain of the REST port, leaf first.
    #[arg(long, value_name = "FILE")]
    pub http_server_cert: Option<PathBuf>,
    /// PEM private key of --http-server-cert.
    #[arg(long, value_name = "FILE")]
    pub http_server_key: Option<PathBuf>,
    /// PEM certificates of the CAs REST client certificates must chain to; read only with
    /// --http-use-ssl-mutual.
    #[arg(long, value_name = "FILE")]
    pub http_root_cert: Option<PathBuf>,

    /// Serve metrics over TLS (ALPN h2 and http/1.1) with --metrics-server-cert and --metrics-server-key.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub metrics_use_ssl: bool,
    /// Require scrapers to present a certificate signed by --metrics-root-cert; implies --metrics-use-ssl.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub metrics_use_ssl_mutual: bool,
    /// PEM certificate chain of the metrics port, leaf first.
    #[arg(long, value_name = "FILE")]
    pub metrics_server_cert: Option<PathBuf>,
    /// PEM private key of --metrics-server-cert.
    #[arg(long, value_name = "FILE")]
    pub metrics_server_key: Option<PathBuf>,
    /// PEM certificates of the CAs scrapers' certificates must chain to; read only with
    /// --metrics-use-ssl-mutual.
    #[arg(long, value_name = "FILE")]
    pub metrics_root_cert: Option<PathBuf>,

    /// Seconds a client has to complete its TLS handshake before its connection is closed.
    #[arg(long, default_value_t = DEFAULT_HANDSHAKE_TIMEOUT.as_secs(), value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_handshake_timeout_secs: u64,
    /// Seconds between two looks at the certificate, key and CA files; a change is used once two looks in a
    /// row agree. 0 turns polling off (SIGHUP still reloads).
    #[arg(long, default_value_t = DEFAULT_RELOAD_POLL.as_secs(), value_name = "SECONDS")]
    pub tls_reload_poll_secs: u64,
}

/// One port's flags, gathered.
struct PortFlags<'a> {
    port: Port,
    use_ssl: bool,
    mutual: bool,
    server_cert: &'a Option<PathBuf>,
    server_key: &'a Option<PathBuf>,
    root_cert: &'a Option<PathBuf>,
}

impl TlsFlags {
    fn ports(&self) -> [PortFlags<'_>; 3] {
        [
            PortFlags {
                port: Port::Grpc,
                use_ssl: self.grpc_use_ssl,
                mutual: self.grpc_use_ssl_mutual,
                server_cert: &self.grpc_server_cert,
                server_key: &self.grpc_server_key,
                root_cert: &self.grpc_root_cert,
            },
            PortFlags {
                port: Port::Http,
                use_ssl: self.http_use_ssl,
                mutual: self.http_use_ssl_mutual,
                server_cert: &self.http_server_cert,
                server_key: &self.http_server_key,
                root_cert: &self.http_root_cert,
            },
            PortFlags {
                port: Port::Metrics,
                use_ssl: self.metrics_use_ssl,
                mutual: self.metrics_use_ssl_mutual,
                server_cert: &self.metrics_server_cert,
                server_key: &self.metrics_server_key,
                root_cert: &self.metrics_root_cert,
            },
        ]
    }

    /// The files of `port`, or `None` when it serves plain text; an error when TLS is on without a
    /// certificate or key, or mutual TLS without a CA.
    pub fn files(&self, port: Port) -> Result<Option<TlsFiles>, TlsError> {
        let Some(flags) = self.ports().into_iter().find(|flags| flags.port == port) else {
            return Ok(None);
        };
        let prefix = port.flag_prefix();
        if !flags.use_ssl && !flags.mutual {
            if flags.server_cert.is_some() || flags.server_key.is_some() || flags.root_cert.is_some() {
                tracing::warn!(
                    "--{prefix}-server-cert, -key and -root-cert are ignored without --{prefix}-use-ssl"
                );
            }
            return Ok(None);
        }
        let missing = |missing| TlsError::MissingFile { prefix, missing };
        let server_cert = flags.server_cert.clone().ok_or_else(|| missing("server-cert"))?;
        let server_key = flags.server_key.clone().ok_or_else(|| missing("server-key"))?;
        if flags.mutual && flags.root_cert.is_none() {
            return Err(TlsError::MissingRootCert { prefix });
        }
        if !flags.mutual && flags.root_cert.is_some() {
            tracing::warn!("--{prefix}-root-cert is ignored without --{prefix}-use-ssl-mutual, as in Triton");
        }
        Ok(Some(TlsFiles {
            server_cert,
            server_key,
            root_cert: flags.root_cert.clone().filter(|_| flags.mutual),
            mutual: flags.mutual,
        }))
    }

    /// The acceptors of every port the flags turn TLS on for, with their files read and checked. Blocks on
    /// file reads.
    pub fn acceptors(&self) -> Result<TlsPorts, TlsError> {
        let timeout = Duration::from_secs(self.tls_handshake_timeout_secs);
        let acceptor = |port| -> Result<Option<Arc<Acceptor>>, TlsError> {
            self.files(port)?
                .map(|files| Acceptor::new(port, files, timeout))
                .transpose()
        };
        Ok(TlsPorts {
            grpc: acceptor(Port::Grpc)?,
            http: acceptor(Port::Http)?,
            metrics: acceptor(Port::Metrics)?,
        })
    }

    /// How often the files are looked at, or `None` when polling is off.
    pub fn reload_poll(&self) -> Option<Duration> {
        (self.tls_reload_poll_secs > 0).then(|| Duration::from_secs(self.tls_reload_poll_secs))
    }
}

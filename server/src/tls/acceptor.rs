//! One port's TLS configuration, swapped whole when its files change, and the bounded handshake.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio_rustls::server::TlsStream;

use super::{
    ClientCertificate, Port, TlsFiles,
    config::{self, PemFiles, TlsError},
};
use crate::connection::TrackedIo;

/// The TLS side of one port: the configuration new handshakes use, and the files it was built from.
///
/// The configuration sits behind an atomic pointer that [`Acceptor::reload`] and [`Acceptor::poll`] swap
/// only for a configuration built whole from new files; a handshake loads it once, so connections already
/// open, and handshakes already started, are untouched by a reload.
#[derive(Debug)]
pub struct Acceptor {
    port: Port,
    files: TlsFiles,
    handshake_timeout: Duration,
    current: ArcSwap<ServerConfig>,
    state: Mutex<ReloadState>,
}

/// What the reloads have seen of the files.
#[derive(Debug)]
struct ReloadState {
    /// The contents the current configuration was built from.
    applied: PemFiles,
    /// What the last poll saw, when it differed from `applied`: polling applies a change once two looks in a
    /// row see the same, so that a certificate and key replaced one after the other are taken together.
    previous: Option<Look>,
    /// The last change that could not be applied, reported once rather than at every poll.
    reported: Option<Look>,
}

/// One look at the files.
#[derive(Debug, PartialEq, Eq)]
enum Look {
    Files(PemFiles),
    Unreadable(String),
}

/// Why a client's TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client did not finish its handshake within the handshake timeout.
    #[error("the TLS handshake did not complete within {0:?}")]
    TimedOut(Duration),
    /// The handshake failed: a protocol error, no common protocol version or cipher, a client certificate
    /// missing or not signed by the CA, or the connection closed.
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
}

impl Acceptor {
    /// Reads `files` and builds `port`'s configuration, or says what is wrong with them. Blocks on file
    /// reads: call it at start or on the blocking pool.
    pub fn new(port: Port, files: TlsFiles, handshake_timeout: Duration) -> Result<Arc<Self>, TlsError> {
        let pem = config::read(&files, port)?;
        let current = config::build(&pem, &files, port)?;
        Ok(Arc::new(Acceptor {
            port,
            files,
            handshake_timeout,
            current: ArcSwap::new(current),
            state: Mutex::new(ReloadState {
                applied: pem,
                previous: None,
                reported: None,
            }),
        }))
    }

    /// The port this acceptor serves.
    pub fn port(&self) -> Port {
        self.port
    }

    /// The files it reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Re-reads the files now and, if they changed and make a valid configuration, uses it for new
    /// handshakes (what SIGHUP does). Returns whether a new configuration is in use; on an error the old one
    /// stays and the error is logged and returned. Blocks on file reads.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.previous = None;
        let pem = match config::read(&self.files, self.port) {
            Ok(pem) => pem,
            Err(error) => {
                self.report_failure(&error);
                state.reported = Some(Look::Unreadable(error.to_string()));
                return Err(error);
            }
        };
        if pem == state.applied {
            tracing::info!(
                port = self.port.flag_prefix(),
                "TLS files unchanged; nothing to reload"
            );
            return Ok(false);
        }
        match self.apply(&pem) {
            Ok(()) => {
                state.applied = pem;
                state.reported = None;
                Ok(true)
            }
            Err(error) => {
                state.reported = Some(Look::Files(pem));
                Err(error)
            }
        }
    }

    /// Looks at the files and applies a change once two looks in a row have seen the same contents; a change
    /// that cannot be applied is logged once. Blocks on file reads.
    pub fn poll(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let look = match config::read(&self.files, self.port) {
            Ok(pem) if pem == state.applied => {
                state.previous = None;
                state.reported = None;
                return;
            }
            Ok(pem) => Look::Files(pem),
            Err(error) => Look::Unreadable(error.to_string()),
        };
        if state.previous.as_ref() != Some(&look) {
            state.previous = Some(look);
            return;
        }
        if state.reported.as_ref() == Some(&look) {
            return;
        }
        let applied = match &look {
            Look::Files(pem) => self.apply(pem).is_ok(),
            Look::Unreadable(reason) => {
                tracing::warn!(
                    port = self.port.flag_prefix(),
                    error = %reason,
                    "cannot reload the TLS certificate; the old one stays in use"
                );
                false
            }
        };
        match look {
            Look::Files(pem) if applied => {
                state.applied = pem;
                state.previous = None;
                state.reported = None;
            }
            look => state.reported = Some(look),
        }
    }

    /// Builds a configuration from `pem` and puts it in use, or logs why not.
    fn apply(&self, pem: &PemFiles) -> Result<(), TlsError> {
        match config::build(pem, &self.files, self.port) {
            Ok(config) => {
                self.current.store(config);
                tracing::info!(
                    port = self.port.flag_prefix(),
                    cert = %self.files.server_cert.display(),
                    "TLS certificate reloaded; new connections use it"
                );
                Ok(())
            }
            Err(error) => {
                self.report_failure(&error);
                Err(error)
            }
        }
    }

    fn report_failure(&self, error: &TlsError) {
        tracing::warn!(
            port = self.port.flag_prefix(),
            %error,
            "cannot reload the TLS certificate; the old one stays in use"
        );
    }

    /// Runs the server side of a TLS handshake on `io` with the configuration in use now, within the
    /// handshake timeout; returns the secured stream and, under mutual TLS, the client's verified certificate.
    pub async fn accept(
        &self,
        io: TrackedIo,
    ) -> Result<(TlsStream<TrackedIo>, Option<ClientCertificate>), HandshakeError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current.load_full());
        let stream = tokio::time::timeout(self.handshake_timeout, acceptor.accept(io))
            .await
            .map_err(|_| HandshakeError::TimedOut(self.handshake_timeout))?
            .map_err(HandshakeError::Failed)?;
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| ClientCertificate::from_der(leaf));
        Ok((stream, certificate))
    }
}

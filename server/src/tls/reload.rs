//! Certificates re-read without a restart: at once on SIGHUP, and when the files change.

use std::{sync::Arc, time::Duration};

use tokio::{
    signal::unix::{SignalKind, signal},
    task::JoinHandle,
    time::{Interval, MissedTickBehavior},
};

use super::Acceptor;

/// Re-reads the files of `acceptors` on every SIGHUP (applying a change at once) and, with `poll_interval`,
/// every interval (applying a change once two looks in a row agree, so that files being replaced one by one
/// are taken together). A change that does not make a valid configuration is logged and the old one kept.
///
/// SIGHUP's default action (ending the process) is replaced from the moment this returns, for the rest of the
/// process's life. File reads run on the blocking pool.
pub fn spawn_reloader(
    acceptors: Vec<Arc<Acceptor>>,
    poll_interval: Option<Duration>,
) -> std::io::Result<JoinHandle<()>> {
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        let mut ticker = poll_interval.map(|interval| {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticker
        });
        loop {
            let signalled = tokio::select! {
                received = hangup.recv() => match received {
                    Some(()) => true,
                    None => return,
                },
                () = tick(ticker.as_mut()) => false,
            };
            if signalled {
                tracing::info!("SIGHUP: re-reading the TLS certificates");
            }
            let acceptors = acceptors.clone();
            let looked = tokio::task::spawn_blocking(move || {
                for acceptor in &acceptors {
                    if signalled {
                        // A failure is logged by the acceptor, which keeps its configuration.
                        let _ = acceptor.reload();
                    } else {
                        acceptor.poll();
                    }
                }
            })
            .await;
            if looked.is_err() {
                tracing::warn!("re-reading the TLS certificates failed; the old ones stay in use");
            }
        }
    }))
}

/// The next tick of `ticker`, or never without one.
async fn tick(ticker: Option<&mut Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

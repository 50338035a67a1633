//! A load generator: sends one request over and over for a fixed window and reports throughput, latency
//! percentiles and failures by status, to size a deployment or catch a regression without `perf_analyzer`.
//!
//! It drives the raw generated stub on plain tonic channels, so the client adds little per request beyond
//! cloning the request and tonic's own work, and the numbers describe the server rather than the client.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use ferry_client::bench::{LoadConfig, run_load};
//! use ferry_client::{InferInput, InferRequest};
//!
//! # async fn run() -> Result<(), ferry_client::ClientError> {
//! let request = InferRequest::new("simple")
//!     .with_input(InferInput::new("INPUT0", [1, 16]).with_data(&[1i32; 16]))
//!     .with_input(InferInput::new("INPUT1", [1, 16]).with_data(&[2i32; 16]))
//!     .into_proto()?;
//! let report = run_load(LoadConfig {
//!     url: "127.0.0.1:8001".into(),
//!     connections: 2,
//!     concurrency: 16,
//!     rate: None,
//!     warmup: Duration::from_secs(2),
//!     duration: Duration::from_secs(10),
//!     request,
//!     tls: None,
//!     credentials: Default::default(),
//! })
//! .await?;
//! println!("{:.0} req/s, p99 {:?}", report.throughput, report.latency.p99);
//! # Ok(())
//! # }
//! ```

mod stats;
mod worker;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Serialize, Serializer};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::connect_channel;
use crate::{Client, ClientError, proto};
use stats::{Tally, is_transport};
use worker::{Pacing, Window};

/// What to send, where, and how hard; every request of the run is `request`, unchanged.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The server, as `host:port` or `http://host:port`, as [`Client::connect`] takes it.
    pub url: String,
    /// HTTP/2 connections to open, at least 1; requests are spread over them round-robin, so that one
    /// connection's flow control or a server's per-connection limits do not cap the load.
    pub connections: usize,
    /// Requests in flight at once, at least 1. Without `rate` this is a closed loop: each of `concurrency`
    /// senders sends its next request as soon as its last one is answered.
    pub concurrency: usize,
    /// Requests per second to start, independent of how fast they are answered (an open loop, as real
    /// traffic arrives); still at most `concurrency` in flight, and a request that could not start on time
    /// for that reason starts as soon as it can and is counted in [`LoadReport::late`].
    pub rate: Option<f64>,
    /// Traffic sent before the window opens and not counted, so that connection set-up, lazy model loading
    /// and cold caches do not skew the numbers.
    pub warmup: Duration,
    /// The measured window, which must be longer than zero.
    pub duration: Duration,
    /// The request sent, as is, every time; cloning it is cheap because raw contents are `Bytes`.
    pub request: proto::ModelInferRequest,
    /// TLS for every connection, as [`Client::connect_with_tls`] takes it; `None` connects as
    /// [`Client::connect`] does (plain text, or TLS with the system's CAs for an `https://` URL).
    pub tls: Option<crate::TlsOptions>,
    /// The API key or token every request carries ([`crate::Credentials::none`] for none).
    pub credentials: crate::Credentials,
}

/// What the measured window saw. Responses count when they complete inside the window, so those of
/// requests sent during warm-up count too, while requests still in flight when it closes are cancelled
/// and left out; in a steady state this makes `ok / elapsed` the server's true rate.
///
/// Serialized (for `ferry-client bench --json`) with units in the field names: `elapsed_s` in seconds and
/// the latencies as `p50_us` and so on, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// Successful responses.
    pub ok: u64,
    /// Failed requests by gRPC status code name (`RESOURCE_EXHAUSTED`, `UNAVAILABLE`, ...), as the server
    /// sent them, so shedding and overload can be told apart; failures of the connection itself (refused,
    /// reset) are counted under `TRANSPORT`.
    pub errors: BTreeMap<String, u64>,
    /// Open loop only: requests that started late because `concurrency` requests were in flight, a sign
    /// that the server did not keep up with `rate` and that the offered load was lower than asked.
    pub late: u64,
    /// The window's length on the run's clock, the denominator of `throughput`.
    #[serde(rename = "elapsed_s", serialize_with = "seconds")]
    pub elapsed: Duration,
    /// Successful responses per second.
    pub throughput: f64,
    /// Latency of the successful responses, from sending to the decoded response.
    pub latency: Latency,
}

/// Summary of a latency distribution. Percentiles are nearest-rank and come from a log-linear histogram:
/// each may overstate the exact value by under 0.8 %, never understates it, and never exceeds `max`.
/// All are zero when nothing succeeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// The arithmetic mean, exact.
    #[serde(rename = "mean_us", serialize_with = "micros")]
    pub mean: Duration,
    /// The median.
    #[serde(rename = "p50_us", serialize_with = "micros")]
    pub p50: Duration,
    /// The 90th percentile.
    #[serde(rename = "p90_us", serialize_with = "micros")]
    pub p90: Duration,
    /// The 99th percentile, the tail most service levels are written against.
    #[serde(rename = "p99_us", serialize_with = "micros")]
    pub p99: Duration,
    /// The slowest response, exact.
    #[serde(rename = "max_us", serialize_with = "micros")]
    pub max: Duration,
}

/// Runs a load test: connects, sends `config.request` for the warm-up and then for the measured window,
/// and summarizes the window.
///
/// Requests the server refuses do not stop the run; they are counted by status in
/// [`LoadReport::errors`], so a wrong model name shows up as `NOT_FOUND` there. The run fails only when
/// the settings are invalid, a connection cannot be opened, or the very first request, sent alone before
/// warm-up, fails on the transport (an endpoint that accepts TCP but does not speak gRPC), since nothing
/// could be measured then.
pub async fn run_load(config: LoadConfig) -> Result<LoadReport, ClientError> {
    validate(&config)?;
    let mut stubs = Vec::with_capacity(config.connections);
    for _ in 0..config.connections {
        let channel = connect_channel(config.url.clone(), config.tls.as_ref(), |endpoint| {
            endpoint.tcp_nodelay(true)
        })
        .await?;
        stubs.push(
            Client::from_channel(channel)
                .with_credentials(config.credentials.clone())
                .raw(),
        );
    }

    // The first request goes alone, before the clock starts, so one-off costs (a lazily loaded model,
    // stream set-up) fall outside warm-up and window alike; it is bounded by the run's own length.
    if let Some(stub) = stubs.first_mut() {
        let first = tokio::time::timeout(
            config.warmup.saturating_add(config.duration),
            stub.model_infer(config.request.clone()),
        )
        .await;
        if let Ok(Err(status)) = first
            && is_transport(&status)
        {
            return Err(status.into());
        }
    }

    let start = Instant::now();
    let window = Window::starting(start, config.warmup, config.duration)
        .ok_or(ClientError::InvalidLoad { reason: TOO_LONG })?;
    let pacing = match config.rate {
        Some(rate) => Pacing::open(start, rate),
        None => Pacing::Closed,
    };
    let mut workers = JoinSet::new();
    for index in 0..config.concurrency {
        let worker = worker::Worker {
            stubs: stubs.clone(),
            first_connection: index,
            request: config.request.clone(),
            window,
            pacing: pacing.clone(),
        };
        workers.spawn(worker.run());
    }
    let mut total = Tally::new();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(tally) => total.merge(&tally),
            // Only a panic can end a worker early (the set is never aborted): pass it on.
            Err(error) => {
                if let Ok(panic) = error.try_into_panic() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }

    let ok = total.latencies.count();
    let elapsed = window.close - window.open;
    Ok(LoadReport {
        ok,
        errors: total.errors(),
        late: total.late,
        elapsed,
        throughput: ok as f64 / elapsed.as_secs_f64(),
        latency: total.latencies.summary(),
    })
}

/// Why a run with absurd phases is refused, both before connecting and, should the clock have moved on
/// to make them overflow since, once the run starts.
const TOO_LONG: &str = "warm-up plus duration must fit the clock";

/// Rejects settings that would send nothing or divide by zero, before any connection is opened.
fn validate(config: &LoadConfig) -> Result<(), ClientError> {
    let reason = if config.connections == 0 {
        "connections must be at least 1"
    } else if config.concurrency == 0 {
        "concurrency must be at least 1"
    } else if config.duration.is_zero() {
        "duration must be longer than zero"
    } else if config.rate.is_some_and(|rate| !(rate.is_finite() && rate > 0.0)) {
        "rate must be a positive number of requests per second"
    } else if Window::starting(Instant::now(), config.warmup, config.duration).is_none() {
        TOO_LONG
    } else {
        return Ok(());
    };
    Err(ClientError::InvalidLoad { reason })
}

fn seconds<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

fn micros<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_nanos() as f64 / 1000.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> LoadConfig {
        LoadConfig {
            url: "127.0.0.1:1".into(),
            connections: 1,
            concurrency: 1,
            rate: None,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            request: proto::ModelInferRequest::default(),
            tls: None,
            credentials: Default::default(),
        }
    }

    /// Why `run_load` refuses the default test settings once `change` is applied.
    async fn refusal(change: impl FnOnce(&mut LoadConfig)) -> &'static str {
        let mut config = config();
        change(&mut config);
        match run_load(config).await {
            Err(ClientError::InvalidLoad { reason }) => reason,
            other => panic!("not refused as invalid: {other:?}"),
        }
    }

    #[tokio::test]
    async fn settings_that_describe_no_run_are_rejected_before_connecting() {
        assert!(refusal(|c| c.connections = 0).await.starts_with("connections"));
        assert!(refusal(|c| c.concurrency = 0).await.starts_with("concurrency"));
        assert!(
            refusal(|c| c.duration = Duration::ZERO)
                .await
                .starts_with("duration")
        );
        assert!(refusal(|c| c.rate = Some(0.0)).await.starts_with("rate"));
        assert!(refusal(|c| c.rate = Some(f64::NAN)).await.starts_with("rate"));
        assert!(refusal(|c| c.warmup = Duration::MAX).await.starts_with("warm-up"));
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_the_run() {
        // Port 1 on the loopback interface refuses connections.
        let error = run_load(config()).await.unwrap_err();
        assert!(matches!(error, ClientError::Transport { .. }), "{error}");
    }

    #[tokio::test]
    async fn an_endpoint_that_does_not_speak_grpc_fails_the_run() {
        // Accepts TCP connections and hangs up at once, as a server on the wrong port might.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        let error = run_load(LoadConfig {
            url: address.to_string(),
            ..config()
        })
        .await
        .unwrap_err();
        let status = error.status().unwrap();
        assert!(is_transport(status), "{status:?}");
    }

    #[test]
    fn reports_serialize_with_units_in_the_names() {
        let report = LoadReport {
            ok: 3,
            errors: [("NOT_FOUND".to_owned(), 2)].into(),
            late: 1,
            elapsed: Duration::from_millis(1500),
            throughput: 2.0,
            latency: Latency {
                mean: Duration::from_nanos(1500),
                ..Latency::default()
            },
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "ok": 3, "errors": {"NOT_FOUND": 2}, "late": 1, "elapsed_s": 1.5, "throughput": 2.0,
                "latency": {"mean_us": 1.5, "p50_us": 0.0, "p90_us": 0.0, "p99_us": 0.0, "max_us": 0.0},
            })
        );
    }
}

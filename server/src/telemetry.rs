//! Logs and traces: `tracing` output as text or JSON with a level that LogSettings can change at run time,
//! and, when an OTLP endpoint is configured, OpenTelemetry export of the request, queue, batch and
//! execution spans, sampled at a rate that TraceSetting can change, continuing W3C trace context that
//! clients send.

use std::sync::{
    Mutex, OnceLock, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, TextMapPropagator},
    trace::{Link, SpanKind, TraceContextExt, TraceId, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample},
};
use tracing_subscriber::{EnvFilter, Registry, layer::SubscriberExt, reload, util::SubscriberInitExt};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// What to set up.
#[derive(Debug, Clone, Default)]
pub struct TelemetryOptions {
    /// Text or JSON logs.
    pub log_format: LogFormat,
    /// Triton's `--log-verbose`: 0 info, 1 debug, 2+ trace.
    pub log_verbose: u32,
    /// OTLP/gRPC endpoint for spans (`http://host:4317`); `None` reads `OTEL_EXPORTER_OTLP_ENDPOINT`, and
    /// without either nothing is exported.
    pub otlp_endpoint: Option<String>,
}

/// Log levels as LogSettings sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLevels {
    /// Whether info messages are written.
    pub info: bool,
    /// Whether warnings are written.
    pub warning: bool,
    /// Whether errors are written.
    pub error: bool,
    /// 0 none, 1 debug, 2+ trace.
    pub verbose: u32,
}

impl LogLevels {
    fn filter(self) -> String {
        let level = match (self.verbose, self.info, self.warning, self.error) {
            (v, _, _, _) if v >= 2 => "trace",
            (1, _, _, _) => "debug",
            (_, true, _, _) => "info",
            (_, _, true, _) => "warn",
            (_, _, _, true) => "error",
            _ => "off",
        };
        // ONNX Runtime logs every graph transformation at info; it speaks only at warnings unless verbose.
        let ort = if self.verbose >= 1 { level } else { "warn" };
        format!("{level},ort={ort}")
    }
}

/// The target of the spans Ferry opens per request and per batch (`request`, `infer`, `queue`, `batch`,
/// `execute`). They cost a span allocation and bookkeeping each, so they are switched off unless something
/// consumes them: an OTLP exporter, or verbose logging ([`filter_directives`]).
pub const REQUEST_SPANS: &str = "ferry::request";

/// The filter for `levels`: request spans stay off unless spans are exported or logging is verbose, so
/// that a request costs no span bookkeeping when nothing reads it.
fn filter_directives(levels: &LogLevels, exporting: bool) -> String {
    let mut filter = levels.filter();
    if !exporting && levels.verbose == 0 {
        filter.push_str(",ferry::request=off");
    }
    filter
}

/// Trace sampling as TraceSetting sees it: one trace in every `rate` requests, none when `enabled` is off.
#[derive(Debug)]
struct TraceControl {
    rate: AtomicU64,
    counter: AtomicU64,
}

static TRACE_CONTROL: TraceControl = TraceControl {
    rate: AtomicU64::new(1),
    counter: AtomicU64::new(0),
};

/// The process's telemetry, once started.
struct Telemetry {
    filter: reload::Handle<EnvFilter, Registry>,
    levels: Mutex<LogLevels>,
    provider: Option<SdkTracerProvider>,
}

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

/// Samples one root trace in every `rate` (0: none); a request that arrives with a sampled W3C parent is
/// always traced, so that a client's trace is never cut.
#[derive(Debug, Clone)]
struct RateSampler;

impl ShouldSample for RateSampler {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        _: TraceId,
        _: &str,
        _: &SpanKind,
        _: &[KeyValue],
        _: &[Link],
    ) -> SamplingResult {
        let parent_span = parent
            .map(|cx| cx.span().span_context().clone())
            .filter(|sc| sc.is_valid());
        let sampled = match &parent_span {
            Some(context) => context.is_sampled(),
            None => {
                let rate = TRACE_CONTROL.rate.load(Ordering::Relaxed);
                rate != 0
                    && TRACE_CONTROL
                        .counter
                        .fetch_add(1, Ordering::Relaxed)
                        .is_multiple_of(rate)
            }
        };
        SamplingResult {
            decision: if sampled {
                SamplingDecision::RecordAndSample
            } else {
                SamplingDecision::Drop
            },
            attributes: Vec::new(),
            trace_state: parent_span.map(|sc| sc.trace_state().clone()).unwrap_or_default(),
        }
    }
}

/// Installs the process-wide subscriber. Call once, from inside the tokio runtime when spans are exported
/// (the OTLP exporter's connection lives on it). Later calls change nothing.
pub fn init(options: &TelemetryOptions) -> Result<(), String> {
    if TELEMETRY.get().is_some() {
        return Ok(());
    }
    let levels = LogLevels {
        info: true,
        warning: true,
        error: true,
        verbose: options.log_verbose,
    };
    let endpoint = options
        .otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.is_empty());
    let provider = match endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|error| format!("cannot set up OTLP export: {error}"))?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_sampler(RateSampler)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name("ferry")
                            .build(),
                    )
                    .build(),
            )
        }
        None => None,
    };
    let initial =
        std::env::var("RUST_LOG").unwrap_or_else(|_| filter_directives(&levels, provider.is_some()));
    let (filter, filter_handle) = reload::Layer::new(EnvFilter::new(initial));
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("ferry")));
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = match options.log_format {
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).try_init(),
        LogFormat::Json => registry.with(tracing_subscriber::fmt::layer().json()).try_init(),
    };
    installed.map_err(|error| format!("cannot install the log subscriber: {error}"))?;
    let _ = TELEMETRY.set(Telemetry {
        filter: filter_handle,
        levels: Mutex::new(levels),
        provider,
    });
    Ok(())
}

/// Sends the spans still buffered; call before the process exits.
pub fn shutdown() {
    if let Some(provider) = TELEMETRY.get().and_then(|t| t.provider.as_ref()) {
        let _ = provider.force_flush();
    }
}

/// The current log levels (Triton's defaults when telemetry was not started by `init`).
pub fn log_levels() -> LogLevels {
    TELEMETRY.get().map_or(
        LogLevels {
            info: true,
            warning: true,
            error: true,
            verbose: 0,
        },
        |t| *t.levels.lock().unwrap_or_else(PoisonError::into_inner),
    )
}

/// Changes the log levels at run time (LogSettings).
pub fn set_log_levels(levels: LogLevels) -> Result<(), String> {
    let telemetry = TELEMETRY.get().ok_or("logging is not managed by this process")?;
    telemetry
        .filter
        .reload(EnvFilter::new(filter_directives(
            &levels,
            telemetry.provider.is_some(),
        )))
        .map_err(|error| format!("cannot change the log level: {error}"))?;
    *telemetry.levels.lock().unwrap_or_else(PoisonError::into_inner) = levels;
    Ok(())
}

/// One trace in every how many requests (0: none).
pub fn trace_rate() -> u64 {
    TRACE_CONTROL.rate.load(Ordering::Relaxed)
}

/// Changes the trace sampling rate at run time (TraceSetting).
pub fn set_trace_rate(rate: u64) {
    TRACE_CONTROL.rate.store(rate, Ordering::Relaxed);
}

/// The W3C trace context a client sent in gRPC metadata or HTTP headers (`traceparent`, `tracestate`).
pub fn remote_context(headers: &http::HeaderMap) -> Context {
    struct Headers<'a>(&'a http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }
    TraceContextPropagator::new().extract(&Headers(headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_become_filters() {
        let mut levels = LogLevels {
            info: true,
            warning: true,
            error: true,
            verbose: 0,
        };
        assert_eq!(levels.filter(), "info,ort=warn");
        levels.info = false;
        assert_eq!(levels.filter(), "warn,ort=warn");
        levels.verbose = 1;
        assert_eq!(levels.filter(), "debug,ort=debug");
        let silent = LogLevels {
            info: false,
            warning: false,
            error: false,
            verbose: 0,
        };
        assert_eq!(silent.filter(), "off,ort=warn");
    }

    #[test]
    fn request_spans_are_off_unless_exported_or_verbose() {
        let mut levels = LogLevels {
            info: true,
            warning: true,
            error: true,
            verbose: 0,
        };
        assert_eq!(
            filter_directives(&levels, false),
            "info,ort=warn,ferry::request=off"
        );
        assert_eq!(filter_directives(&levels, true), "info,ort=warn");
        levels.verbose = 1;
        assert_eq!(filter_directives(&levels, false), "debug,ort=debug");
    }

    #[test]
    fn a_traceparent_header_is_continued() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let context = remote_context(&headers);
        let span = context.span().span_context().clone();
        assert_eq!(span.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(span.is_sampled());
    }
}

/// A tower layer that opens one span per call (gRPC or REST), named after the path and continuing the W3C
/// trace context of the call's metadata or headers, so that every span the call makes belongs to the
/// client's trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextLayer;

impl<S> tower::Layer<S> for TraceContextLayer {
    type Service = TraceContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceContextService { inner }
    }
}

/// The service [`TraceContextLayer`] wraps around the gRPC services and the REST router.
#[derive(Debug, Clone)]
pub struct TraceContextService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for TraceContextService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use tracing::Instrument;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let span = tracing::info_span!(target: REQUEST_SPANS, "request", path = %request.uri().path());
        if request.headers().contains_key("traceparent") {
            let _ = span.set_parent(remote_context(request.headers()));
        }
        self.inner.call(request).instrument(span)
    }
}

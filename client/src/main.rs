//! `ferry-client`: query and exercise a Triton-compatible server from the shell, for smoke tests, scripts
//! and debugging a deployment without writing code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use ferry_client::bench::{LoadConfig, run_load};
use ferry_client::proto::model_metadata_response::TensorMetadata;
use ferry_client::{Client, Credentials, InferRequest, TlsOptions};

mod cli {
    //! The pieces of the command line that are worth testing on their own.
    pub mod json;
    pub mod report;
    pub mod table;
    pub mod traffic;
}

use cli::{json, report, table};

/// Talk to a Ferry or Triton server over its gRPC (KServe v2) protocol.
#[derive(Debug, Parser)]
#[command(name = "ferry-client", version)]
struct Cli {
    /// Server address, as host:port, http://host:port or https://host:port.
    #[arg(long, global = true, env = "FERRY_URL", default_value = "127.0.0.1:8001")]
    url: String,

    #[command(flatten)]
    tls: TlsArgs,

    /// API key or bearer token (a JWT) for a server that authenticates callers, sent with every request as
    /// `authorization: Bearer <KEY>`. Prefer the environment variable: a flag shows in the process list.
    #[arg(
        long,
        global = true,
        env = "FERRY_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,

    #[command(subcommand)]
    command: Command,
}

/// TLS options, named as in Triton's client examples (`--ssl`, `--root-certificates`, `--private-key`,
/// `--certificate-chain`). Any of them connects over TLS.
#[derive(Debug, Args)]
struct TlsArgs {
    /// Connect over TLS, trusting the system's CA certificates unless --root-certificates is given.
    #[arg(long, global = true)]
    ssl: bool,
    /// PEM file of the CA certificates to trust instead of the system's.
    #[arg(long, global = true, value_name = "FILE")]
    root_certificates: Option<PathBuf>,
    /// PEM file of the client's private key, for servers that require a client certificate (mutual TLS).
    #[arg(long, global = true, value_name = "FILE", requires = "certificate_chain")]
    private_key: Option<PathBuf>,
    /// PEM file of the client's certificate chain, leaf first, presented with --private-key.
    #[arg(long, global = true, value_name = "FILE", requires = "private_key")]
    certificate_chain: Option<PathBuf>,
    /// Name to check the server's certificate against (and send as SNI) instead of the --url host.
    #[arg(long, global = true, value_name = "NAME")]
    tls_server_name: Option<String>,
}

impl TlsArgs {
    /// The TLS options the flags ask for, with their files read, or `None` for plain text.
    fn options(&self) -> anyhow::Result<Option<TlsOptions>> {
        let any = self.ssl
            || self.root_certificates.is_some()
            || self.private_key.is_some()
            || self.tls_server_name.is_some();
        if !any {
            return Ok(None);
        }
        let read = |path: &PathBuf, flag: &str| {
            std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
        };
        let mut options = TlsOptions::new();
        if let Some(path) = &self.root_certificates {
            options = options.with_ca_pem(read(path, "--root-certificates")?);
        }
        if let (Some(key), Some(chain)) = (&self.private_key, &self.certificate_chain) {
            options =
                options.with_identity_pem(read(chain, "--certificate-chain")?, read(key, "--private-key")?);
        }
        if let Some(name) = &self.tls_server_name {
            options = options.with_server_name(name.clone());
        }
        Ok(Some(options))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show whether the server is live and ready; exits non-zero unless it is both.
    Health,
    /// List every model version in the repositories with its state and the reason for it.
    Models,
    /// Show a model's versions, platform and input and output signatures.
    Metadata(ModelArgs),
    /// Print a model's configuration, as the server applies it, in JSON.
    Config(ModelArgs),
    /// Run one inference with inputs given as JSON and print the outputs as JSON.
    Infer(InferArgs),
    /// Send one request over and over and report throughput, latency percentiles and errors by status.
    Bench(BenchArgs),
    /// Ferry's version labels and traffic policies: get, set, label, promote, rollback, history.
    #[command(subcommand)]
    Traffic(cli::traffic::TrafficCommand),
    /// Show a model's input drift scores per version, input and feature (Ferry's drift service), or
    /// replace a version's baseline.
    Drift(DriftArgs),
    /// Show a model's live quality per version (Ferry's feedback service): the metric over the truths
    /// joined so far, the feedback counters and the calibration buckets.
    Quality(ModelArgs),
}

#[derive(Debug, Args)]
struct DriftArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Freeze the version's live window as its baseline (needs the `repository` scope).
    #[arg(long, conflicts_with = "reset")]
    freeze: bool,
    /// Return to the baseline file the model's config names (needs the `repository` scope).
    #[arg(long)]
    reset: bool,
}

#[derive(Debug, Args)]
struct ModelArgs {
    /// Model name.
    model: String,
    /// Model version; by default the server picks one by the model's version policy.
    #[arg(long)]
    version: Option<String>,
}

#[derive(Debug, Args)]
struct InferArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Return only this output (repeatable); by default every output is returned.
    #[arg(long = "output", value_name = "NAME")]
    outputs: Vec<String>,
    #[command(flatten)]
    inputs: InputsSource,
}

#[derive(Debug, Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    inputs: InputsSource,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = at_least_one)]
    concurrency: usize,
    /// HTTP/2 connections to spread the requests over, round-robin.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = at_least_one)]
    connections: usize,
    /// Start this many requests per second whatever the latency (open loop), still at most --concurrency
    /// in flight; by default a new request starts as soon as one is answered (closed loop).
    #[arg(long, value_name = "PER_SECOND", allow_negative_numbers = true, value_parser = per_second)]
    rate: Option<f64>,
    /// Seconds of traffic sent before measuring and left out of the report.
    #[arg(long, default_value = "2", value_name = "SECS", allow_negative_numbers = true, value_parser = seconds)]
    warmup: Duration,
    /// Seconds to measure.
    #[arg(long, default_value = "10", value_name = "SECS", allow_negative_numbers = true, value_parser = seconds)]
    duration: Duration,
    /// Print the report as one JSON object (durations in microseconds, elapsed in seconds).
    #[arg(long)]
    json: bool,
}

/// A count that must be at least one (connections, requests in flight), refused with a plain message.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(count) => Ok(count),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// A request rate, which only makes sense positive and finite.
fn per_second(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a positive number of requests per second"
        )),
    }
}

/// A non-negative number of seconds, fractions allowed (`0.5`).
fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is not a non-negative number of seconds"))
}

/// Where the inputs come from: a JSON object of
/// `{"NAME": {"datatype": "INT32", "shape": [1, 16], "data": [...]}}`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct InputsSource {
    /// Inputs as JSON text; `data` may be flat or nested, BYTES elements are strings.
    #[arg(long, value_name = "JSON")]
    inputs_json: Option<String>,
    /// Path of a file holding the inputs JSON.
    #[arg(long, value_name = "PATH")]
    inputs_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, even when a server's message spans several, so scripts can log it as is.
            eprintln!("error: {}", format!("{err:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Connect per command: the load generator opens connections of its own, as many as asked.
    let tls = cli.tls.options()?;
    let credentials = match &cli.api_key {
        Some(key) => Credentials::bearer(key)?,
        None => Credentials::none(),
    };
    let connect = || async {
        let client = match tls.clone() {
            Some(tls) => Client::connect_with_tls(cli.url.clone(), tls).await,
            None => Client::connect(cli.url.clone()).await,
        };
        client.map(|client| client.with_credentials(credentials.clone()))
    };
    match cli.command {
        Command::Health => health(&connect().await?).await,
        Command::Models => models(&connect().await?).await,
        Command::Metadata(args) => metadata(&connect().await?, &args).await,
        Command::Config(args) => {
            let client = connect().await?;
            let config = client.model_config(&args.model, args.version.as_deref()).await?;
            println!("{}", json::config_to_json(&config)?);
            Ok(())
        }
        Command::Infer(args) => infer(&connect().await?, args).await,
        Command::Bench(args) => bench(cli.url.clone(), tls, credentials, args).await,
        Command::Drift(args) => drift(&connect().await?, &args).await,
        Command::Quality(args) => quality(&connect().await?, &args).await,
        Command::Traffic(command) => cli::traffic::run(&connect().await?, command).await,
    }
}

async fn drift(client: &Client, args: &DriftArgs) -> anyhow::Result<()> {
    use ferry_client::drift_proto::{baseline_source::Source as Baseline, drift_baseline_request::Source};
    let (model, version) = (&args.model.model, args.model.version.as_deref());
    let versions = match (args.freeze, args.reset) {
        (true, _) => vec![client.drift_baseline(model, version, Source::Live).await?],
        (_, true) => vec![client.drift_baseline(model, version, Source::File).await?],
        _ => client.drift_report(model, version).await?.versions,
    };
    let score = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"));
    for report in versions {
        let baseline = match report.baseline.and_then(|b| b.source) {
            Some(Baseline::File(name)) => format!("file {name}"),
            Some(Baseline::FrozenAtUnixSeconds(at)) => {
                format!("frozen from live traffic at {at} (Unix time)")
            }
            None => "none".to_owned(),
        };
        println!(
            "version {}: {} samples ({} dropped), baseline: {baseline}",
            report.version, report.samples, report.samples_dropped
        );
        let rows: Vec<[String; 9]> = report
            .inputs
            .iter()
            .flat_map(|input| input.features.iter().map(move |feature| (input, feature)))
            .map(|(input, feature)| {
                [
                    input.name.clone(),
                    feature.feature.to_string(),
                    feature.count.to_string(),
                    score(feature.mean),
                    score(feature.psi),
                    score(feature.ks),
                    score(feature.out_of_range_ratio),
                    score(feature.nan_ratio),
                    if feature.drifting { "yes" } else { "no" }.to_owned(),
                ]
            })
            .collect();
        let header = [
            "INPUT",
            "FEATURE",
            "COUNT",
            "MEAN",
            "PSI",
            "KS",
            "OUT_OF_RANGE",
            "NAN",
            "DRIFTING",
        ];
        println!("{}", table::render("  ", header, &rows));
    }
    Ok(())
}

async fn quality(client: &Client, args: &ModelArgs) -> anyhow::Result<()> {
    let report = client.model_quality(&args.model, args.version.as_deref()).await?;
    let number = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"));
    for version in report.versions {
        println!(
            "version {}: {} {} over {} rows ({} truths joined, {} waiting, {} unmatched, {} duplicate, {} \
             rejected; {} predictions waiting, {} expired, {} dropped)",
            version.version,
            version.metric,
            number(version.value),
            version.rows,
            version.feedback_joined,
            version.feedback_waiting,
            version.feedback_unmatched,
            version.feedback_duplicate,
            version.feedback_rejected,
            version.predictions_waiting,
            version.predictions_expired,
            version.predictions_dropped,
        );
        if version.calibration.is_empty() {
            continue;
        }
        let rows: Vec<[String; 4]> = version
            .calibration
            .iter()
            .map(|bucket| {
                [
                    format!("{:.2}-{:.2}", bucket.lower, bucket.upper),
                    bucket.count.to_string(),
                    number(bucket.mean_predicted),
                    number(bucket.observed_frequency),
                ]
            })
            .collect();
        let header = ["BUCKET", "COUNT", "MEAN_PREDICTED", "OBSERVED"];
        println!("{}", table::render("  ", header, &rows));
    }
    Ok(())
}

async fn health(client: &Client) -> anyhow::Result<()> {
    let live = client.server_live().await?;
    let ready = client.server_ready().await?;
    println!("live: {live}\nready: {ready}");
    if !(live && ready) {
        bail!("server is not {}", if live { "ready" } else { "live" });
    }
    Ok(())
}

async fn models(client: &Client) -> anyhow::Result<()> {
    let rows: Vec<_> = client
        .repository_index()
        .await?
        .into_iter()
        .map(|model| [model.name, model.version, model.state, model.reason])
        .collect();
    println!(
        "{}",
        table::render("", ["NAME", "VERSION", "STATE", "REASON"], &rows)
    );
    Ok(())
}

async fn metadata(client: &Client, args: &ModelArgs) -> anyhow::Result<()> {
    let metadata = client
        .model_metadata(&args.model, args.version.as_deref())
        .await?;
    println!("name: {}", metadata.name);
    println!("versions: {}", metadata.versions.join(", "));
    println!("platform: {}", metadata.platform);
    for (title, tensors) in [("inputs", &metadata.inputs), ("outputs", &metadata.outputs)] {
        let rows: Vec<_> = tensors.iter().map(tensor_row).collect();
        println!(
            "{title}:\n{}",
            table::render("  ", ["NAME", "DATATYPE", "SHAPE"], &rows)
        );
    }
    Ok(())
}

fn tensor_row(tensor: &TensorMetadata) -> [String; 3] {
    [
        tensor.name.clone(),
        tensor.datatype.clone(),
        format!("{:?}", tensor.shape),
    ]
}

async fn infer(client: &Client, args: InferArgs) -> anyhow::Result<()> {
    let mut request = build_request(args.model, args.inputs)?;
    for output in args.outputs {
        request = request.with_output(output);
    }
    let result = client.infer(request).await?;
    println!("{}", serde_json::to_string(&json::result_to_json(&result)?)?);
    Ok(())
}

async fn bench(
    url: String,
    tls: Option<TlsOptions>,
    credentials: Credentials,
    args: BenchArgs,
) -> anyhow::Result<()> {
    let config = LoadConfig {
        url,
        connections: args.connections,
        concurrency: args.concurrency,
        rate: args.rate,
        warmup: args.warmup,
        duration: args.duration,
        request: build_request(args.model, args.inputs)?.into_proto()?,
        tls,
        credentials,
    };
    let load = run_load(config).await?;
    if args.json {
        println!("{}", serde_json::to_string(&load)?);
    } else {
        println!("{}", report::render(&load, args.rate.is_some()));
    }
    Ok(())
}

/// The request `infer` and `bench` share: the model, its version if given, and the inputs JSON.
fn build_request(model: ModelArgs, inputs: InputsSource) -> anyhow::Result<InferRequest> {
    let text = match (inputs.inputs_json, inputs.inputs_file) {
        (Some(text), _) => text,
        (None, Some(path)) => {
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?
        }
        (None, None) => bail!("give the inputs with --inputs-json or --inputs-file"),
    };
    let mut request = InferRequest::new(model.model);
    if let Some(version) = model.version {
        request = request.with_version(version);
    }
    for input in json::parse_inputs(&text)? {
        request = request.with_input(input);
    }
    Ok(request)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn tls_flags_turn_tls_on_read_their_files_and_pair_the_key_with_its_chain() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["ferry-client"], args, &["health"]].concat());
        assert!(parse(&[]).unwrap().tls.options().unwrap().is_none());
        assert!(parse(&["--ssl"]).unwrap().tls.options().unwrap().is_some());
        assert!(
            parse(&["--tls-server-name", "ferry.internal"])
                .unwrap()
                .tls
                .options()
                .unwrap()
                .is_some()
        );
        assert!(
            parse(&["--private-key", "client.key"]).is_err(),
            "a key needs its chain"
        );
        assert!(
            parse(&["--certificate-chain", "client.crt"]).is_err(),
            "a chain needs its key"
        );

        let dir = std::env::temp_dir().join(format!("ferry-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, "not read as PEM until a connection is made").unwrap();
        let ca = ca.display().to_string();
        assert!(
            parse(&["--root-certificates", &ca])
                .unwrap()
                .tls
                .options()
                .unwrap()
                .is_some()
        );
        let missing = dir.join("missing.key").display().to_string();
        let cli = parse(&["--certificate-chain", &ca, "--private-key", &missing]).unwrap();
        let error = format!("{:#}", cli.tls.options().unwrap_err());
        assert!(
            error.contains(&format!("cannot read --private-key {missing}")),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn infer_takes_exactly_one_inputs_source() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["ferry-client", "infer", "m"], args].concat());
        assert!(parse(&["--inputs-json", "{}"]).is_ok());
        assert!(parse(&[]).is_err());
        assert!(parse(&["--inputs-json", "{}", "--inputs-file", "x.json"]).is_err());
    }

    #[test]
    fn an_api_key_comes_from_the_flag_and_is_global() {
        let cli = Cli::try_parse_from(["ferry-client", "models", "--api-key", "k-1"]).unwrap();
        assert_eq!(cli.api_key.as_deref(), Some("k-1"));
        let cli = Cli::try_parse_from(["ferry-client", "--api-key", "k-2", "health"]).unwrap();
        assert_eq!(cli.api_key.as_deref(), Some("k-2"));
    }

    #[test]
    fn bench_has_defaults_and_rejects_what_cannot_run() {
        let parse = |args: &[&str]| {
            let base = ["ferry-client", "bench", "m", "--inputs-json", "{}"];
            match Cli::try_parse_from([&base, args].concat())?.command {
                Command::Bench(args) => Ok::<_, clap::Error>(args),
                other => panic!("parsed as {other:?}"),
            }
        };
        let defaults = parse(&[]).unwrap();
        assert_eq!((defaults.concurrency, defaults.connections), (8, 1));
        assert_eq!(
            (defaults.warmup, defaults.duration),
            (Duration::from_secs(2), Duration::from_secs(10))
        );
        assert_eq!((defaults.rate, defaults.json), (None, false));

        let open = parse(&["--rate", "200", "--warmup", "0.5", "--json"]).unwrap();
        assert_eq!(
            (open.rate, open.warmup, open.json),
            (Some(200.0), Duration::from_millis(500), true)
        );

        for wrong in [
            ["--concurrency", "0"],
            ["--connections", "0"],
            ["--rate", "-5"],
            ["--rate", "0"],
            ["--duration", "-1"],
            ["--warmup", "x"],
        ] {
            assert!(parse(&wrong).is_err(), "{wrong:?}");
        }
    }
}

//! `ferry-client`: query and exercise a Triton-compatible server from the shell, for smoke tests, scripts
//! and debugging a deployment without writing code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use ferry_client::proto::model_metadata_response::TensorMetadata;
use ferry_client::{Client, InferRequest};

mod cli {
    //! The pieces of the command line that are worth testing on their own.
    pub mod json;
    pub mod table;
}

use cli::{json, table};

/// Talk to a Ferry or Triton server over its gRPC (KServe v2) protocol.
#[derive(Debug, Parser)]
#[command(name = "ferry-client", version)]
struct Cli {
    /// Server address, as host:port or http://host:port.
    #[arg(long, global = true, env = "FERRY_URL", default_value = "127.0.0.1:8001")]
    url: String,

    #[command(subcommand)]
    command: Command,
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
    let client = Client::connect(cli.url).await?;
    match cli.command {
        Command::Health => health(&client).await,
        Command::Models => models(&client).await,
        Command::Metadata(args) => metadata(&client, &args).await,
        Command::Config(args) => {
            let config = client.model_config(&args.model, args.version.as_deref()).await?;
            println!("{}", json::config_to_json(&config)?);
            Ok(())
        }
        Command::Infer(args) => infer(&client, args).await,
    }
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
    let text = match (args.inputs.inputs_json, args.inputs.inputs_file) {
        (Some(text), _) => text,
        (None, Some(path)) => {
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?
        }
        (None, None) => bail!("give the inputs with --inputs-json or --inputs-file"),
    };
    let mut request = InferRequest::new(args.model.model);
    if let Some(version) = args.model.version {
        request = request.with_version(version);
    }
    for input in json::parse_inputs(&text)? {
        request = request.with_input(input);
    }
    for output in args.outputs {
        request = request.with_output(output);
    }
    let result = client.infer(request).await?;
    println!("{}", serde_json::to_string(&json::result_to_json(&result)?)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn infer_takes_exactly_one_inputs_source() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["ferry-client", "infer", "m"], args].concat());
        assert!(parse(&["--inputs-json", "{}"]).is_ok());
        assert!(parse(&[]).is_err());
        assert!(parse(&["--inputs-json", "{}", "--inputs-file", "x.json"]).is_err());
    }
}

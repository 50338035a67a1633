//! `ferry check`: what a deployment pipeline runs before it ships a model repository. Nothing is served and
//! no port is opened.
//!
//! The check loads the repository with the server's own registry ([`Registry::start`]), so every config is
//! parsed, completed and validated, every version the policy selects is opened with ONNX Runtime and warmed
//! up, and the resource limits apply, exactly as when `ferry` starts. Then each model's sample requests
//! (`<model>/tests/*.json`, see [`samples`]) go through the REST front end's decoder and the inference core
//! ([`InferenceService::infer_with`]), as a `POST /v2/models/<model>/versions/<version>/infer` would, and
//! the answers are compared with the expected outputs. The result is a [`Report`]: one line per failure, or
//! JSON.

mod cli;
mod compare;
mod report;
pub mod samples;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
pub use cli::main;
pub use report::{Failure, ModelReport, Report, SampleReport, Status, VersionReport};
use samples::Sample;

use crate::{
    core::InferenceService,
    http::infer::parse_request,
    limits::ResourceLimits,
    onnx::{self, LibrarySource},
    repository::{ControlMode, ModelEntry, Registry, RepositoryOptions, VersionState, model_folders},
};

/// What to check, and with which limits.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The model repositories, as `--model-repository` gives them to the server.
    pub roots: Vec<PathBuf>,
    /// The models to check; every model of the repositories when empty.
    pub models: Vec<String>,
    /// The limits the server will run with (`--max-request-bytes` and the like).
    pub limits: ResourceLimits,
    /// Where ONNX Runtime was found.
    pub onnxruntime: LibrarySource,
}

/// Checks the repositories. An error means the check could not run at all: ONNX Runtime cannot be loaded,
/// or a repository cannot be read.
pub fn run(options: &CheckOptions) -> Result<Report, String> {
    let folders = model_folders(&options.roots)?;
    let environment = onnx::start(&options.onnxruntime)?;
    let mut names: Vec<String> = if options.models.is_empty() {
        folders.keys().cloned().collect()
    } else {
        options.models.clone()
    };
    names.sort();
    names.dedup();
    // Models that log payloads load as they would on a server with --payload-log-dir; what the samples
    // write goes to a scratch folder that goes when the check ends.
    let scratch = Scratch(std::env::temp_dir().join(format!("ferry-check-payloads-{}", std::process::id())));
    let repository = RepositoryOptions {
        // Explicit mode loads exactly the models named, and reports a name no repository has.
        control_mode: if options.models.is_empty() {
            ControlMode::None
        } else {
            ControlMode::Explicit
        },
        startup_models: names.clone(),
        limits: options.limits.clone(),
        payload_log: Some(crate::payload::PayloadLogOptions {
            dir: scratch.0.clone(),
            max_file_bytes: crate::payload::DEFAULT_MAX_FILE_BYTES,
            max_files: 1,
        }),
        ..RepositoryOptions::new(options.roots.clone())
    };
    let registry = Registry::start(environment, repository).map_err(|error| error.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the async runtime: {error}"))?;
    let checker = Checker {
        service: InferenceService::with_shared_memory(Arc::clone(&registry), Arc::default()),
        registry: &registry,
        runtime: &runtime,
    };
    let mut failures = Vec::new();
    if names.is_empty() {
        for root in &options.roots {
            failures.push(Failure::at(root, None, "no model folders in this repository"));
        }
    }
    let models = names
        .iter()
        .map(|name| {
            let paths = folders.get(name).map(Vec::as_slice).unwrap_or_default();
            let fallback = match (paths.first(), options.roots.first()) {
                (Some(path), _) => path.clone(),
                (None, Some(root)) => root.join(name),
                (None, None) => PathBuf::from(name),
            };
            match paths {
                [dir] => checker.model(name, Some(dir), &fallback),
                _ => checker.model(name, None, &fallback),
            }
        })
        .collect();
    Ok(Report::new(failures, models))
}

/// A folder removed, with what it holds, when the check ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The loaded repository and what runs samples against it.
struct Checker<'a> {
    registry: &'a Registry,
    service: InferenceService,
    runtime: &'a tokio::runtime::Runtime,
}

impl Checker<'_> {
    /// Checks model `name`, whose folder is `dir` when exactly one repository has it; failures without a
    /// folder of their own are put on `fallback`.
    fn model(&self, name: &str, dir: Option<&Path>, fallback: &Path) -> ModelReport {
        let entry = self.registry.model(name).unwrap_or_else(|error| ModelEntry {
            failure: Some(error.to_string()),
            ..ModelEntry::default()
        });
        let mut failures = Vec::new();
        let folder = dir.unwrap_or(fallback);
        if let Some(reason) = &entry.failure {
            failures.push(Failure::from_load_error(folder, folder, reason));
        }
        let (samples, unreadable) = dir.map(samples::read_samples).unwrap_or_default();
        failures.extend(unreadable);
        if !entry.versions.is_empty() {
            failures.extend(unselected_versions(&samples, &entry));
        }
        let versions = entry
            .versions
            .iter()
            .map(|(&version, state)| {
                let version_folder = folder.join(version.to_string());
                match state {
                    VersionState::Ready { .. } => {
                        let runs = samples
                            .iter()
                            .filter(|sample| sample.version.is_none_or(|v| v == version))
                            .map(|sample| self.sample(name, version, sample))
                            .collect();
                        VersionReport::new(version, Vec::new(), runs)
                    }
                    VersionState::Unavailable(reason) => {
                        let failure = Failure::from_load_error(folder, &version_folder, reason);
                        VersionReport::new(version, vec![failure], Vec::new())
                    }
                    VersionState::Loading => {
                        let failure =
                            Failure::at(&version_folder, None, "still loading when the check ended");
                        VersionReport::new(version, vec![failure], Vec::new())
                    }
                }
            })
            .collect();
        ModelReport::new(name, dir, failures, versions)
    }

    /// Runs `sample` on `version` of model `name` as a REST request would run, and compares the answer.
    fn sample(&self, name: &str, version: u64, sample: &Sample) -> SampleReport {
        let version_text = version.to_string();
        let body = Bytes::from(sample.request.clone());
        let answer = self
            .runtime
            .block_on(self.service.infer_with(name, &version_text, None, || {
                parse_request(name, &version_text, &http::HeaderMap::new(), body)
                    .map(|rest| (rest.request, ()))
            }));
        let failures = match answer {
            Err(error) => vec![Failure::at(
                &sample.path,
                None,
                format!("version {version}: the request failed: {error}"),
            )],
            Ok((response, ())) => sample
                .outputs
                .iter()
                .filter_map(|(expected, tolerance)| {
                    let message = compare::compare_output(&response, expected, *tolerance)?;
                    Some(Failure::at(
                        &sample.path,
                        sample.output_line(&expected.name),
                        format!("version {version}: {message}"),
                    ))
                })
                .collect(),
        };
        SampleReport::new(&sample.path, failures)
    }
}

/// Samples that name a version the policy does not select: they would never run, so they fail.
fn unselected_versions(samples: &[Sample], entry: &ModelEntry) -> Vec<Failure> {
    let selected: Vec<String> = entry.versions.keys().map(ToString::to_string).collect();
    samples
        .iter()
        .filter_map(|sample| {
            let version = sample.version.filter(|v| !entry.versions.contains_key(v))?;
            Some(Failure::at(
                &sample.path,
                sample.version_line(),
                format!(
                    "version {version} is not one the version policy selects (selected: {})",
                    selected.join(", ")
                ),
            ))
        })
        .collect()
}

//! The model repository extension: the index of models and model control (load and unload), with Triton's
//! checks in Triton's order (`RegisterRepositoryIndex`, `RegisterRepositoryModelLoad` and
//! `RegisterRepositoryModelUnload` in its `grpc_server.cc`).

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use ferry_proto::inference::{
    self as pb, model_repository_parameter::ParameterChoice, repository_index_response::ModelIndex,
};

use super::InferenceService;
use crate::{
    Error,
    auth::Scope,
    repository::{LoadRequest, ModelName},
};

impl InferenceService {
    /// RepositoryIndex: every model the repositories hold that the caller may see, with each version's
    /// state, or only the ready ones when `ready` is set.
    pub fn list_models(
        &self,
        request: &pb::RepositoryIndexRequest,
    ) -> Result<pb::RepositoryIndexResponse, Error> {
        refuse_repository_name(&request.repository_name)?;
        let models = self
            .registry
            .index()
            .into_iter()
            .filter(|row| !request.ready || row.state == "READY")
            .filter(|row| self.may_see(Scope::Repository, &row.name))
            .map(|row| ModelIndex {
                name: row.name,
                version: row.version,
                state: row.state.to_owned(),
                reason: row.reason,
            })
            .collect();
        Ok(pb::RepositoryIndexResponse { models })
    }

    /// RepositoryModelLoad: loads or reloads a model, from its folder or from the config and files the
    /// request carries. Checked in Triton's order: the repository name, the parameters' types, the control
    /// mode, the model name; the caller's `repository` scope for the model first, and audited.
    pub async fn load_model(&self, request: pb::RepositoryModelLoadRequest) -> Result<(), Error> {
        let model = request.model_name.clone();
        self.audited(
            "RepositoryModelLoad",
            Scope::Repository,
            &model,
            self.load(request),
        )
        .await
    }

    async fn load(&self, request: pb::RepositoryModelLoadRequest) -> Result<(), Error> {
        refuse_repository_name(&request.repository_name)?;
        let (config_json, files) = load_parameters(request.parameters)?;
        self.registry.check_model_control()?;
        let load = LoadRequest {
            name: ModelName::parse(request.model_name)?,
            config_json,
            files,
        };
        let registry = Arc::clone(&self.registry);
        // Loading opens sessions and warms them up: never on an async worker.
        tokio::task::spawn_blocking(move || registry.load_request(load))
            .await
            .map_err(|error| Error::Internal(format!("the load task failed: {error}")))?
    }

    /// RepositoryModelUnload: takes a model out of service once its requests in flight are answered (with
    /// the caller's `repository` scope for the model; audited).
    pub async fn unload_model(&self, request: pb::RepositoryModelUnloadRequest) -> Result<(), Error> {
        let model = request.model_name.clone();
        self.audited(
            "RepositoryModelUnload",
            Scope::Repository,
            &model,
            self.unload(request),
        )
        .await
    }

    async fn unload(&self, request: pb::RepositoryModelUnloadRequest) -> Result<(), Error> {
        refuse_repository_name(&request.repository_name)?;
        let dependents = unload_dependents(&request.parameters)?;
        self.registry.check_model_control()?;
        let name = ModelName::parse(request.model_name)?;
        let registry = Arc::clone(&self.registry);
        tokio::task::spawn_blocking(move || registry.unload_request(&name, dependents))
            .await
            .map_err(|error| Error::Internal(format!("the unload task failed: {error}")))?
    }
}

/// Triton's answer to a repository name in a RepositoryIndex, load or unload request (`grpc_server.cc`).
fn refuse_repository_name(repository_name: &str) -> Result<(), Error> {
    if repository_name.is_empty() {
        Ok(())
    } else {
        Err(Error::Unsupported(
            "'repository_name' specification is not supported".to_owned(),
        ))
    }
}

/// The model file parameters of a load request (`file:<version>/<path>`, bytes).
type LoadFiles = Vec<(String, Bytes)>;

/// Reads a load request's parameters: `config` (JSON text) and `file:<version>/<path>` (bytes), refusing
/// others with Triton's texts (`RegisterRepositoryModelLoad` in `grpc_server.cc`).
fn load_parameters(
    parameters: HashMap<String, pb::ModelRepositoryParameter>,
) -> Result<(Option<String>, LoadFiles), Error> {
    let (mut config, mut files) = (None, Vec::new());
    for (key, parameter) in parameters {
        let value = parameter.parameter_choice;
        match (key.as_str(), value) {
            ("config", Some(ParameterChoice::StringParam(json))) => config = Some(json),
            ("config", _) => {
                return Err(Error::invalid(
                    "invalid value type for load parameter 'config', expected string_param.",
                ));
            }
            (file, Some(ParameterChoice::BytesParam(bytes))) if file.starts_with("file:") => {
                files.push((file["file:".len()..].to_owned(), bytes));
            }
            (file, _) if file.starts_with("file:") => {
                return Err(Error::invalid(format!(
                    "invalid value type for load parameter '{file}', expected bytes_param."
                )));
            }
            (other, _) => {
                return Err(Error::invalid(format!("unrecognized load parameter '{other}'.")));
            }
        }
    }
    Ok((config, files))
}

/// An unload request's `unload_dependents` parameter, the one Triton reads: whether the members an
/// ensemble's load brought in are unloaded with it (false when absent).
fn unload_dependents(parameters: &HashMap<String, pb::ModelRepositoryParameter>) -> Result<bool, Error> {
    match parameters.get("unload_dependents").map(|p| &p.parameter_choice) {
        None => Ok(false),
        Some(Some(ParameterChoice::BoolParam(value))) => Ok(*value),
        Some(_) => Err(Error::invalid(
            "invalid value type for 'unload_dependents' parameter, expected bool_param.",
        )),
    }
}

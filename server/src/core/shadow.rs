//! Shadow (mirror) traffic: a request routed by a policy with a shadow also runs, off the response path, on
//! the shadow version, and the two answers are compared ([`crate::traffic::compare`]). The served answer
//! never waits for the shadow and never carries its answer. A shadow request needs a place in the model's
//! small in-flight budget, taken before the request is copied: when the budget is full it is dropped (and
//! counted), so shadow load gives way first and never holds a real request.

use std::{sync::Arc, time::Instant};

use ferry_proto::inference as pb;

use super::InferenceService;
use crate::{
    Error,
    model::ModelVersion,
    repository::Routed,
    shm,
    traffic::{Outcome, Output, Permit, Slot, compare},
};

/// A shadow request ready to run once the served answer is known.
#[derive(Debug)]
pub(super) struct ShadowJob {
    permit: Permit,
    slot: Arc<Slot>,
    model: Arc<ModelVersion>,
    served: u64,
    tolerance: f64,
    request: pb::ModelInferRequest,
}

impl InferenceService {
    /// The shadow of `request`, routed as `routed`, when its policy has a shadow version other than the
    /// served one and the budget has room. Requests that use shared memory are not mirrored: the shadow
    /// would write the caller's output regions.
    pub(super) fn shadow_of(&self, routed: &Routed, request: &pb::ModelInferRequest) -> Option<ShadowJob> {
        let shadow = routed.policy.as_ref()?.shadow.as_ref()?;
        let served = routed.model.version;
        if shadow.version == served || uses_shared_memory(request) {
            return None;
        }
        let Some(permit) = shadow.slot.try_acquire(shadow.max_in_flight) else {
            shadow.slot.record(served, shadow.version, Outcome::Dropped, None);
            return None;
        };
        let Ok(model) = self
            .registry
            .resolve(&request.model_name, &shadow.version.to_string())
        else {
            shadow.slot.record(served, shadow.version, Outcome::Error, None);
            return None;
        };
        Some(ShadowJob {
            permit,
            slot: Arc::clone(&shadow.slot),
            model,
            served,
            tolerance: shadow.float_tolerance,
            request: request.clone(),
        })
    }

    /// Runs `job` in a task of its own and compares its answer with `served`; returns at once.
    pub(super) fn spawn_shadow(&self, job: ShadowJob, served: &pb::ModelInferResponse) {
        let served: Vec<Output> = served
            .outputs
            .iter()
            .zip(&served.raw_output_contents)
            .map(|(tensor, raw)| Output {
                name: tensor.name.clone(),
                datatype: tensor.datatype.clone(),
                shape: tensor.shape.clone(),
                raw: raw.clone(),
            })
            .collect();
        let service = self.clone();
        tokio::spawn(async move {
            let ShadowJob {
                permit,
                slot,
                model,
                served: served_version,
                tolerance,
                request,
            } = job;
            let (outcome, difference) = match service.run(&model, request, Instant::now()).await {
                Ok(response) => {
                    let shadow: Vec<Output> = response
                        .outputs
                        .into_iter()
                        .zip(response.raw_output_contents)
                        .map(|(tensor, raw)| Output {
                            name: tensor.name,
                            datatype: tensor.datatype,
                            shape: tensor.shape,
                            raw,
                        })
                        .collect();
                    // Comparing large outputs is real work: off the async workers.
                    tokio::task::spawn_blocking(move || compare(&served, &shadow, tolerance))
                        .await
                        .unwrap_or((Outcome::Error, None))
                }
                // A full queue of the shadow version drops the shadow, as a full budget does.
                Err(Error::Overloaded(_)) => (Outcome::Dropped, None),
                Err(_) => (Outcome::Error, None),
            };
            slot.record(served_version, model.version, outcome, difference);
            drop(permit);
        });
    }
}

/// Whether any input or output of `request` names a shared memory region.
fn uses_shared_memory(request: &pb::ModelInferRequest) -> bool {
    request
        .inputs
        .iter()
        .any(|input| input.parameters.contains_key(shm::REGION))
        || request
            .outputs
            .iter()
            .any(|output| output.parameters.contains_key(shm::REGION))
}

//! A loaded model version: its instances, each an ONNX Runtime session on a thread of its own, fed from one
//! bounded queue.

use std::{path::Path, sync::Arc, thread};

use ferry_batching::{Job, WorkQueue};
use ort::environment::Environment;
use tokio::sync::oneshot;

use crate::{
    Error,
    config::{ModelSignature, ModelSpec},
    onnx::{self, OutputTensor},
    request::InferRequest,
};

/// How many requests may wait for a model version's instances before new ones are refused.
pub const QUEUE_CAPACITY: usize = 4096;

/// A request waiting for an instance, with the channel its answer goes back on.
struct InferJob {
    request: InferRequest,
    reply: oneshot::Sender<Result<Vec<OutputTensor>, Error>>,
}

impl Job for InferJob {
    fn is_abandoned(&self) -> bool {
        // The receiver is dropped when the client cancels or its deadline passes.
        self.reply.is_closed()
    }
}

/// One served version of a model.
///
/// Dropping the last handle closes the queue; each instance finishes the jobs already queued and its thread
/// ends, releasing the session.
pub struct ModelVersion {
    /// The model's validated configuration.
    pub spec: Arc<ModelSpec>,
    /// The version number (its folder's name).
    pub version: u64,
    queue: WorkQueue<InferJob>,
}

impl std::fmt::Debug for ModelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelVersion")
            .field("model", &self.spec.name)
            .field("version", &self.version)
            .field("queued", &self.queue.len())
            .finish()
    }
}

impl ModelVersion {
    /// Opens `spec.instances.count` sessions on `model_path`, checks the file against the spec, and starts one
    /// thread per session.
    pub fn load(
        environment: &Environment,
        spec: Arc<ModelSpec>,
        version: u64,
        model_path: &Path,
    ) -> Result<Self, Error> {
        let queue: WorkQueue<InferJob> = WorkQueue::bounded(QUEUE_CAPACITY);
        let path_text = model_path.display().to_string();
        let mut sessions = Vec::with_capacity(spec.instances.count);
        for _ in 0..spec.instances.count {
            let session = onnx::open_session(environment, model_path, &spec.instances)?;
            if sessions.is_empty() {
                spec.check_signature(&onnx::signature(&session), &path_text)?;
            }
            sessions.push(session);
        }
        for (instance, mut session) in sessions.into_iter().enumerate() {
            let consumer = queue.consumer();
            let spec = Arc::clone(&spec);
            thread::Builder::new()
                .name(format!("{}-v{version}-{instance}", spec.name))
                .spawn(move || {
                    while let Some(job) = consumer.next() {
                        let result = onnx::run(&mut session, &spec, &job.request);
                        // The client may have gone while the model ran; nothing waits for the result then.
                        let _ = job.reply.send(result);
                    }
                })
                .map_err(|error| Error::ModelLoad(format!("starting an instance thread: {error}")))?;
        }
        Ok(ModelVersion { spec, version, queue })
    }

    /// Queues a validated request and waits for its outputs. Dropping the returned future withdraws the
    /// request: an instance skips it if it has not started it yet.
    pub async fn infer(&self, request: InferRequest) -> Result<Vec<OutputTensor>, Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .submit(InferJob { request, reply })
            .map_err(|(_, error)| {
                Error::Overloaded(format!(
                    "model '{}' version {} cannot take the request: {error}",
                    self.spec.name, self.version
                ))
            })?;
        answer.await.map_err(|_| {
            Error::Execution(format!(
                "model '{}' version {} stopped before answering",
                self.spec.name, self.version
            ))
        })?
    }
}

/// Opens a session only to read the model's signature, for auto-completing a config before the spec exists.
pub fn read_signature(environment: &Environment, model_path: &Path) -> Result<ModelSignature, Error> {
    let plan = crate::config::InstancePlan {
        count: 1,
        intra_op_threads: Some(1),
        inter_op_threads: None,
    };
    onnx::open_session(environment, model_path, &plan).map(|session| onnx::signature(&session))
}

//! One ONNX Runtime session: opening it with the right threads and reading its signature.

use std::path::Path;

use ort::{
    environment::Environment,
    session::Session,
    value::{Outlet, ValueType},
};

use crate::{
    DataType, Error,
    config::{InstancePlan, ModelSignature, ModelTensor},
};

/// Opens a session on `model_path` with the thread counts of `plan`.
///
/// `instances_sharing_cores` is how many sessions of the model run at once: when the config does not set
/// `intra_op_thread_count`, the machine's cores are shared out between them instead of every session
/// starting one thread per core.
pub fn open_session(
    environment: &Environment,
    model_path: &Path,
    plan: &InstancePlan,
) -> Result<Session, Error> {
    let fail = |error: ort::Error| Error::ModelLoad(format!("{}: {error}", model_path.display()));
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let intra = plan
        .intra_op_threads
        .unwrap_or((cores / plan.count.max(1)).max(1));
    let mut builder = Session::builder(environment)
        .map_err(fail)?
        .with_intra_threads(intra)
        .map_err(|e| fail(e.into()))?
        .with_intra_op_spinning(false)
        .map_err(|e| fail(e.into()))?;
    if let Some(inter) = plan.inter_op_threads {
        builder = builder.with_inter_threads(inter).map_err(|e| fail(e.into()))?;
    }
    builder.commit_from_file(model_path).map_err(fail)
}

/// The tensors a session declares, in the form config checks use.
pub fn signature(session: &Session) -> ModelSignature {
    ModelSignature {
        inputs: session.inputs().iter().map(model_tensor).collect(),
        outputs: session.outputs().iter().map(model_tensor).collect(),
    }
}

fn model_tensor(outlet: &Outlet) -> ModelTensor {
    let (data_type, shape) = match outlet.dtype() {
        ValueType::Tensor { ty, shape, .. } => (DataType::from_ort(*ty), shape.to_vec()),
        _ => (None, Vec::new()),
    };
    ModelTensor {
        name: outlet.name().to_owned(),
        data_type,
        shape,
    }
}

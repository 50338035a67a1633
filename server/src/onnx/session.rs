//! One ONNX Runtime session: opening it with the right threads and reading its signature.

use std::path::Path;

use ort::{
    environment::Environment,
    ep,
    session::{
        Session,
        builder::{GraphOptimizationLevel, PrepackedWeights},
    },
    value::{Outlet, ValueType},
};

use crate::{
    DataType, Error,
    config::{GraphLevel, InstancePlan, ModelSignature, ModelTensor, Placement},
};

/// Opens a session on `model_path` with the threads, placement and session options of `plan`.
///
/// A session whose config asks for nothing about threads ([`shares_threads`]) runs its operators on ONNX
/// Runtime's global thread pool, one per process ([`super::start`]); one that does gets a pool of its own:
/// the configured `intra_op_thread_count`, or the machine's cores shared out between the model's instances.
/// The instances of one version pass the same `prepacked` container, so that ONNX Runtime keeps one copy of
/// the weights it repacks for its kernels instead of one per instance. A GPU placement registers ONNX
/// Runtime's CUDA execution provider; `KIND_GPU` fails the load when it cannot be used, `KIND_AUTO` falls
/// back to the CPU.
pub fn open_session(
    environment: &Environment,
    model_path: &Path,
    plan: &InstancePlan,
    prepacked: Option<&PrepackedWeights>,
) -> Result<Session, Error> {
    let fail = |error: ort::Error| Error::ModelLoad(format!("{}: {error}", model_path.display()));
    let options = &plan.session;
    let mut builder = Session::builder(environment).map_err(fail)?;
    if !shares_threads(plan) {
        builder = builder
            .with_independent_thread_pool()
            .map_err(|e| fail(e.into()))?
            .with_intra_threads(intra_threads(plan))
            .map_err(|e| fail(e.into()))?
            .with_intra_op_spinning(options.intra_op_spinning)
            .map_err(|e| fail(e.into()))?;
    }
    let mut builder = builder
        .with_parallel_execution(options.parallel_execution)
        .map_err(|e| fail(e.into()))?
        .with_optimization_level(match options.graph_level {
            GraphLevel::All => GraphOptimizationLevel::All,
            GraphLevel::Basic => GraphOptimizationLevel::Level1,
            GraphLevel::Extended => GraphOptimizationLevel::Level2,
            GraphLevel::Disabled => GraphOptimizationLevel::Disable,
        })
        .map_err(|e| fail(e.into()))?;
    if let Some(prepacked) = prepacked {
        builder = builder
            .with_prepacked_weights(prepacked)
            .map_err(|e| fail(e.into()))?;
    }
    if let Some(inter) = plan.inter_op_threads {
        builder = builder.with_inter_threads(inter).map_err(|e| fail(e.into()))?;
    }
    if let Some(pattern) = options.mem_pattern {
        builder = builder.with_memory_pattern(pattern).map_err(|e| fail(e.into()))?;
    }
    if let Some(arena) = options.mem_arena {
        let cpu = ep::CPU::default().with_arena_allocator(arena).build();
        builder = builder
            .with_execution_providers([cpu])
            .map_err(|e| fail(e.into()))?;
    }
    let device = match plan.placement {
        Placement::Cpu => None,
        Placement::Gpu(device) => Some(device),
        Placement::Auto => cuda_available().then_some(0),
    };
    if let Some(device) = device {
        let cuda = ep::CUDA::default()
            .with_device_id(device)
            .build()
            .error_on_failure();
        builder = match builder.with_execution_providers([cuda]) {
            Ok(builder) => builder,
            Err(error) if plan.placement == Placement::Auto => {
                tracing::info!(model = %model_path.display(), %error, "CUDA is not usable; running on the CPU");
                error.recover()
            }
            Err(error) => {
                return Err(Error::ModelLoad(format!(
                    "{}: instance_group KIND_GPU (device {device}) needs ONNX Runtime's CUDA execution provider, \
                     which cannot start here ({error}); install onnxruntime-gpu with a CUDA driver, or use KIND_CPU",
                    model_path.display()
                )));
            }
        };
    }
    builder.commit_from_file(model_path).map_err(fail)
}

/// Whether sessions of `plan` run on ONNX Runtime's shared thread pool: when the config sets none of
/// `intra_op_thread_count`, `inter_op_thread_count`, `execution_mode: "1"` (parallel execution, which
/// needs inter-op threads of its own) and `ferry.intra_op_spinning`.
pub fn shares_threads(plan: &InstancePlan) -> bool {
    plan.intra_op_threads.is_none()
        && plan.inter_op_threads.is_none()
        && !plan.session.parallel_execution
        && !plan.session.intra_op_spinning
}

/// The intra-op threads each session of `plan` with a pool of its own runs: the config's count, or the
/// machine's cores shared out between the model's instances.
pub fn intra_threads(plan: &InstancePlan) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    plan.intra_op_threads
        .unwrap_or((cores / plan.count.max(1)).max(1))
}

/// Whether the loaded ONNX Runtime library has the CUDA execution provider (a GPU build of it).
pub fn cuda_available() -> bool {
    use ort::ep::ExecutionProvider;
    ep::CUDA::is_available().unwrap_or(false)
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

//! One ONNX Runtime session: opening it with the right threads and reading its signature.

use std::path::Path;

use ort::{
    environment::Environment,
    ep,
    session::{
        Session,
        builder::{GraphOptimizationLevel, PrepackedWeights},
    },
    value::Outlet,
};

use super::zipmap;
use crate::{
    DataType, Error,
    config::{
        GraphLevel, InstancePlan, ModelSignature, ModelTensor, Placement, Precision, TensorForm, ZIPMAP_HINT,
    },
};

/// A session and where it runs.
pub struct OpenedSession {
    /// The ONNX Runtime session.
    pub session: Session,
    /// The CUDA device it runs on, or `None` on the CPU (a `KIND_AUTO` session that fell back included).
    pub device: Option<i32>,
}

/// Opens instance `instance` of `plan` on `model_path`, with the plan's threads and session options.
///
/// A session whose config asks for nothing about threads ([`shares_threads`]) runs its operators on ONNX
/// Runtime's global thread pool, one per process ([`super::start`]); one that does gets a pool of its own:
/// the configured `intra_op_thread_count`, or the machine's cores shared out between the model's instances.
/// The instances of one version pass the same `prepacked` container, so that ONNX Runtime keeps one copy of
/// the weights it repacks for its kernels instead of one per instance. A GPU placement puts the instance on
/// its GPU (instances go round the plan's GPUs) with ONNX Runtime's TensorRT (when configured) and CUDA
/// execution providers; `KIND_GPU` fails the load, naming the reason and the fix, when the GPU is missing or
/// ONNX Runtime cannot use CUDA; `KIND_AUTO` falls back to the CPU with a log line.
pub fn open_session(
    environment: &Environment,
    model_path: &Path,
    plan: &InstancePlan,
    instance: usize,
    prepacked: Option<&PrepackedWeights>,
) -> Result<OpenedSession, Error> {
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
    let mut device = choose_device(model_path, plan, instance)?;
    if let Some(id) = device {
        // Providers first registered get the nodes first: TensorRT, then CUDA, then the CPU.
        let mut providers = Vec::with_capacity(2);
        if let Some(tensorrt) = plan.tensorrt {
            let mut provider = ep::TensorRT::default()
                .with_device_id(id)
                .with_fp16(tensorrt.precision == Precision::Fp16);
            if let Some(bytes) = tensorrt.max_workspace_bytes {
                provider = provider.with_max_workspace_size(bytes);
            }
            if let Some(iterations) = tensorrt.max_partition_iterations {
                provider = provider.with_max_partition_iterations(iterations);
            }
            if let Some(size) = tensorrt.min_subgraph_size {
                provider = provider.with_min_subgraph_size(size);
            }
            providers.push(provider.build().error_on_failure());
        }
        providers.push(ep::CUDA::default().with_device_id(id).build().error_on_failure());
        builder = match builder.with_execution_providers(providers) {
            Ok(builder) => builder,
            Err(error) if matches!(plan.placement, Placement::Auto(_)) => {
                tracing::info!(model = %model_path.display(), gpu = id, %error, "KIND_AUTO: ONNX Runtime cannot use CUDA here; running on the CPU");
                device = None;
                error.recover()
            }
            Err(error) => {
                return Err(Error::ModelLoad(format!(
                    "{}: instance_group KIND_GPU (GPU {id}) needs ONNX Runtime's CUDA execution provider{}, \
                     which cannot start here ({error}); install onnxruntime-gpu (with CUDA 12 and cuDNN 9) in place \
                     of onnxruntime, or use KIND_CPU",
                    model_path.display(),
                    if plan.tensorrt.is_some() {
                        " and TensorRT"
                    } else {
                        ""
                    },
                )));
            }
        };
    }
    if let Some(arena) = options.mem_arena {
        let cpu = ep::CPU::default().with_arena_allocator(arena).build();
        builder = builder
            .with_execution_providers([cpu])
            .map_err(|e| fail(e.into()))?;
    }
    let session = builder.commit_from_file(model_path).map_err(fail)?;
    Ok(OpenedSession { session, device })
}

/// The GPU instance `instance` of `plan` should run on, checked against this machine's GPUs: `KIND_GPU` on
/// a GPU that is not there is an error with the reason and the fix; `KIND_AUTO` without a usable GPU is the
/// CPU, said in a log line.
fn choose_device(model_path: &Path, plan: &InstancePlan, instance: usize) -> Result<Option<i32>, Error> {
    let gpus = crate::gpu::inventory();
    match (plan.placement, plan.placement.device_for(instance)) {
        (Placement::Gpu(_), Some(id)) => match gpus.refusal(id) {
            Some(refusal) => Err(Error::ModelLoad(format!("{}: {refusal}", model_path.display()))),
            None => Ok(Some(id)),
        },
        (Placement::Auto(_), Some(id)) if gpus.device(id).is_some() && cuda_available() => Ok(Some(id)),
        (Placement::Auto(_), wanted) => {
            let reason = match wanted {
                Some(id) if gpus.device(id).is_some() => {
                    "the loaded ONNX Runtime has no CUDA execution provider (install onnxruntime-gpu)"
                        .to_owned()
                }
                _ => gpus.summary(),
            };
            tracing::info!(model = %model_path.display(), %reason, "KIND_AUTO: running on the CPU");
            Ok(None)
        }
        (Placement::Cpu | Placement::Gpu(_), _) => Ok(None),
    }
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

/// The tensors a session declares, in the form config checks use. A `ZipMap` output (a sequence of maps
/// from class to probability) becomes an FP32 `[batch, classes]` tensor, with its class labels read from
/// `model_path`; other sequences and maps are marked unsupported, with the reason.
pub fn signature(session: &Session, model_path: &Path) -> Result<ModelSignature, Error> {
    let outlets = |outlets: &[Outlet]| -> Vec<(String, zipmap::Outlet)> {
        outlets
            .iter()
            .map(|o| (o.name().to_owned(), zipmap::classify(o.dtype())))
            .collect()
    };
    let (inputs, outputs) = (outlets(session.inputs()), outlets(session.outputs()));
    let class_maps: Vec<&str> = outputs
        .iter()
        .filter(|(_, kind)| matches!(kind, zipmap::Outlet::ClassMap))
        .map(|(name, _)| name.as_str())
        .collect();
    let mut forms = if class_maps.is_empty() {
        Default::default()
    } else {
        zipmap::class_outputs(model_path, &class_maps).map_err(Error::ModelLoad)?
    };
    let mut tensor = |(name, kind): (String, zipmap::Outlet)| {
        let (data_type, shape, form) = match kind {
            zipmap::Outlet::Tensor(Some(data_type), shape) => (Some(data_type), shape, TensorForm::Tensor),
            zipmap::Outlet::Tensor(None, shape) => (None, shape, TensorForm::Tensor),
            zipmap::Outlet::ClassMap => match forms.remove(&name) {
                Some(TensorForm::ClassProbabilities(labels)) => (
                    Some(DataType::Fp32),
                    vec![-1, labels.len() as i64],
                    TensorForm::ClassProbabilities(labels),
                ),
                form => (None, Vec::new(), form.unwrap_or_default()),
            },
            zipmap::Outlet::Other(what) => (
                None,
                Vec::new(),
                TensorForm::Unsupported(format!(
                    "a {what}, which Triton's protocol cannot carry (Ferry serves tensors, and sequences of maps \
                     from class to probability made by ZipMap); {ZIPMAP_HINT}"
                )),
            ),
        };
        ModelTensor {
            name,
            data_type,
            shape,
            form,
        }
    };
    Ok(ModelSignature {
        inputs: inputs.into_iter().map(&mut tensor).collect(),
        outputs: outputs.into_iter().map(&mut tensor).collect(),
    })
}

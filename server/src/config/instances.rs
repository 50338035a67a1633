//! How many sessions of a model version run, where, and with how many ONNX Runtime threads
//! (`instance_group` and the thread count parameters).

use ferry_proto::inference::{ModelConfig, ModelInstanceGroup, model_instance_group::Kind};

use super::{
    accelerators::{self, TensorRt},
    session::{SessionOptions, session_options},
    source::ConfigSource,
};
use crate::{
    Error,
    gpu::{DeviceSet, MAX_GPU_ID},
};

/// Where a model's sessions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// On the CPU (`KIND_CPU`).
    #[default]
    Cpu,
    /// On these GPUs, `count` sessions on each (`KIND_GPU`): the load fails, with the reason and the fix, if
    /// a GPU is missing or ONNX Runtime cannot use CUDA. Empty when the group named no GPU and the machine
    /// has none.
    Gpu(DeviceSet),
    /// On these GPUs when ONNX Runtime can use CUDA there, otherwise on the CPU (`KIND_AUTO`, `KIND_MODEL`):
    /// the group's `gpus`, or every GPU of the machine; empty (the CPU) on a machine without GPUs.
    Auto(DeviceSet),
}

impl Placement {
    /// The GPU instance `index` of the model runs on, if it is placed on one: instances go round the GPUs.
    pub fn device_for(self, index: usize) -> Option<i32> {
        match self {
            Placement::Cpu => None,
            // A KIND_GPU group without GPUs still asks for GPU 0, so that its load fails saying so.
            Placement::Gpu(devices) => devices.device_for(index).or(Some(0)),
            Placement::Auto(devices) => devices.device_for(index),
        }
    }
}

/// How many sessions of each model version run, where, and with how many ONNX Runtime threads each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstancePlan {
    /// ONNX Runtime's session options (execution mode, graph level, memory, spinning).
    pub session: SessionOptions,
    /// Model instances (ONNX Runtime sessions), each on a thread of its own: for GPU placements, the
    /// group's count times the number of GPUs.
    pub count: usize,
    /// `intra_op_thread_count` from the config parameters; `None` lets Ferry share the cores out.
    pub intra_op_threads: Option<usize>,
    /// `inter_op_thread_count` from the config parameters.
    pub inter_op_threads: Option<usize>,
    /// Where the sessions run.
    pub placement: Placement,
    /// ONNX Runtime's TensorRT execution provider for sessions on a GPU, when the config asks for it.
    pub tensorrt: Option<TensorRt>,
}

/// Triton's ONNX Runtime backend gives a CPU model two instances when the config names none.
const DEFAULT_CPU_INSTANCES: usize = 2;

/// The instance plan a config asks for, with Triton's defaults, on this machine's GPUs.
pub(super) fn instance_plan(config: &ModelConfig, source: ConfigSource<'_>) -> Result<InstancePlan, Error> {
    plan_on(config, source, crate::gpu::inventory().ids())
}

/// The instance plan of `config` on a machine with the GPUs `machine`.
fn plan_on(
    config: &ModelConfig,
    source: ConfigSource<'_>,
    machine: DeviceSet,
) -> Result<InstancePlan, Error> {
    let mut count = 0usize;
    let mut placement = None;
    let mut per_gpu = None;
    for group in &config.instance_group {
        let group_count = usize::try_from(group.count).map_err(|_| {
            source.error(
                &["count"],
                format!("instance_group count must be 0 or more, got {}", group.count),
            )
        })?;
        let group_count = group_count.max(1);
        let named = group_gpus(group, source)?;
        let group_placement = match group.kind() {
            Kind::Cpu if !named.is_empty() => {
                return Err(source.error(
                    &["gpus"],
                    format!("instance_group KIND_CPU must not name GPUs, got gpus {named}"),
                ));
            }
            Kind::Cpu => Placement::Cpu,
            Kind::Gpu => Placement::Gpu(if named.is_empty() { machine } else { named }),
            Kind::Auto | Kind::Model => Placement::Auto(if named.is_empty() { machine } else { named }),
        };
        let devices = match group_placement {
            Placement::Cpu => None,
            Placement::Gpu(set) | Placement::Auto(set) => Some(set),
        };
        placement = Some(match (placement, group_placement) {
            (None, this) => this,
            (Some(Placement::Cpu), Placement::Cpu) => Placement::Cpu,
            (Some(Placement::Gpu(a)), Placement::Gpu(b)) => Placement::Gpu(union(a, b)),
            (Some(Placement::Auto(a)), Placement::Auto(b)) => Placement::Auto(union(a, b)),
            _ => {
                return Err(source.error(
                    &["instance_group"],
                    "instance groups of different kinds in one model are not supported by Ferry; use one kind",
                ));
            }
        });
        match devices {
            None => count += group_count,
            Some(_) if per_gpu.is_some_and(|n| n != group_count) => {
                return Err(source.error(
                    &["instance_group"],
                    "instance groups on GPUs with different counts per GPU are not supported by Ferry; give every \
                     group the same count",
                ));
            }
            Some(_) => per_gpu = Some(group_count),
        }
    }
    if let (Some(per_gpu), Some(Placement::Gpu(set) | Placement::Auto(set))) = (per_gpu, placement) {
        count = per_gpu * set.len().max(1);
    }
    let placement = placement.unwrap_or(Placement::Auto(machine));
    let tensorrt = accelerators::tensorrt(config, source)?;
    if tensorrt.is_some() && placement == Placement::Cpu {
        return Err(source.error(
            &["tensorrt"],
            "gpu_execution_accelerator 'tensorrt' needs GPU instances, but instance_group is KIND_CPU; use \
             KIND_GPU (or KIND_AUTO), or remove the accelerator",
        ));
    }
    let thread_parameter = |key: &str| -> Result<Option<usize>, Error> {
        config
            .parameters
            .get(key)
            .map(|p| {
                p.string_value.trim().parse::<usize>().map_err(|_| {
                    source.error(
                        &[key],
                        format!("parameter {key} must be a whole number, got '{}'", p.string_value),
                    )
                })
            })
            .transpose()
    };
    let count = if count == 0 {
        // Like Triton, a model that names no instance group gets one instance per GPU when there are GPUs,
        // and the ONNX Runtime backend's two on the CPU otherwise.
        if machine.is_empty() {
            DEFAULT_CPU_INSTANCES
        } else {
            machine.len()
        }
    } else {
        count
    };
    Ok(InstancePlan {
        session: session_options(config, source)?,
        count,
        intra_op_threads: thread_parameter("intra_op_thread_count")?.filter(|n| *n > 0),
        inter_op_threads: thread_parameter("inter_op_thread_count")?.filter(|n| *n > 0),
        placement,
        tensorrt,
    })
}

/// The GPUs a group names, each checked to be an ordinal Ferry can hold.
fn group_gpus(group: &ModelInstanceGroup, source: ConfigSource<'_>) -> Result<DeviceSet, Error> {
    let mut set = DeviceSet::EMPTY;
    for &id in &group.gpus {
        if !(0..=MAX_GPU_ID).contains(&id) {
            return Err(source.error(
                &["gpus"],
                format!("instance_group gpus must be GPU ordinals from 0 to {MAX_GPU_ID}, got {id}"),
            ));
        }
        set = set.with(id);
    }
    Ok(set)
}

fn union(a: DeviceSet, b: DeviceSet) -> DeviceSet {
    b.iter().fold(a, DeviceSet::with)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{config_error, spec_from};

    /// The plan of `groups` on a machine with GPUs `machine`.
    fn plan(groups: &str, machine: &[i32]) -> Result<InstancePlan, String> {
        let text = format!("max_batch_size: 2\ninstance_group [ {groups} ]\n");
        let config = crate::config::parse_model_config(&text, "config.pbtxt").map_err(|e| e.to_string())?;
        let machine = machine.iter().fold(DeviceSet::EMPTY, |set, id| set.with(*id));
        let source = ConfigSource {
            path: "config.pbtxt",
            text: Some(&text),
        };
        plan_on(&config, source, machine).map_err(|e| e.to_string())
    }

    fn gpus(ids: &[i32]) -> DeviceSet {
        ids.iter().fold(DeviceSet::EMPTY, |set, id| set.with(*id))
    }

    /// Triton's `count` is per listed GPU for GPU groups, and a group without `gpus` runs on every GPU
    /// (model_config.proto, `ModelInstanceGroup.count` and `.gpus`).
    #[test]
    fn gpu_groups_place_count_sessions_on_each_gpu() {
        let two = plan("{ kind: KIND_GPU, gpus: [ 0, 2 ], count: 3 }", &[0, 1, 2]).expect("valid");
        assert_eq!(two.placement, Placement::Gpu(gpus(&[0, 2])));
        assert_eq!(two.count, 6);
        let placed: Vec<Option<i32>> = (0..6).map(|i| two.placement.device_for(i)).collect();
        assert_eq!(placed, [Some(0), Some(2), Some(0), Some(2), Some(0), Some(2)]);
        let all = plan("{ kind: KIND_GPU, count: 2 }", &[0, 1]).expect("valid");
        assert_eq!((all.placement, all.count), (Placement::Gpu(gpus(&[0, 1])), 4));
        let merged = plan(
            "{ kind: KIND_GPU, gpus: [ 0 ], count: 2 }, { kind: KIND_GPU, gpus: [ 1 ], count: 2 }",
            &[0, 1],
        )
        .expect("valid");
        assert_eq!(
            (merged.placement, merged.count),
            (Placement::Gpu(gpus(&[0, 1])), 4)
        );
        let uneven = plan(
            "{ kind: KIND_GPU, gpus: [ 0 ], count: 1 }, { kind: KIND_GPU, gpus: [ 1 ], count: 2 }",
            &[0, 1],
        )
        .expect_err("different counts per GPU");
        assert!(uneven.contains("same count"), "{uneven}");
    }

    #[test]
    fn without_gpus_gpu_groups_still_ask_for_one_and_auto_runs_on_the_cpu() {
        let gpu = plan("{ kind: KIND_GPU, count: 2 }", &[]).expect("valid config");
        assert_eq!((gpu.placement, gpu.count), (Placement::Gpu(DeviceSet::EMPTY), 2));
        assert_eq!(
            gpu.placement.device_for(1),
            Some(0),
            "the load must fail on GPU 0"
        );
        let auto = plan("{ count: 2 }", &[]).expect("valid");
        assert_eq!(
            (auto.placement, auto.count),
            (Placement::Auto(DeviceSet::EMPTY), 2)
        );
        assert_eq!(auto.placement.device_for(0), None);
        let on_two = plan("{ kind: KIND_AUTO }", &[0, 1]).expect("valid");
        assert_eq!(
            (on_two.placement, on_two.count),
            (Placement::Auto(gpus(&[0, 1])), 2)
        );
        let default = plan("", &[]).expect("valid");
        assert_eq!(
            (default.placement, default.count),
            (Placement::Auto(DeviceSet::EMPTY), 2)
        );
        let default_gpus = plan("", &[0, 1, 2]).expect("valid");
        assert_eq!(default_gpus.count, 3, "one instance per GPU, as Triton");
    }

    #[test]
    fn instance_kinds_choose_where_sessions_run() {
        assert_eq!(
            plan("{ kind: KIND_CPU }", &[0]).map(|p| p.placement),
            Ok(Placement::Cpu)
        );
        assert_eq!(
            plan("{ kind: KIND_GPU, gpus: [ 1 ] }", &[]).map(|p| p.placement),
            Ok(Placement::Gpu(gpus(&[1])))
        );
        let (line, message) =
            config_error("max_batch_size: 2\ninstance_group [ { kind: KIND_CPU }, { kind: KIND_GPU } ]\n");
        assert_eq!(line, 2);
        assert!(message.contains("one kind"), "{message}");
        for (groups, expected) in [
            ("{ kind: KIND_GPU, gpus: [ 64 ] }", "got 64"),
            ("{ kind: KIND_GPU, gpus: [ -1 ] }", "got -1"),
            ("{ kind: KIND_CPU, gpus: [ 0 ] }", "must not name GPUs"),
        ] {
            let refused = plan(groups, &[0]).expect_err(groups);
            assert!(refused.contains(expected), "{groups}: {refused}");
        }
    }

    #[test]
    fn thread_parameters_must_be_numbers() {
        let text = "parameters { key: \"intra_op_thread_count\" value { string_value: \"many\" } }\n";
        let (_, message) = config_error(text);
        assert!(
            message.contains("intra_op_thread_count") && message.contains("many"),
            "{message}"
        );
        let spec = spec_from("parameters { key: \"intra_op_thread_count\" value { string_value: \"3\" } }\n")
            .expect("valid");
        assert_eq!(spec.instances.intra_op_threads, Some(3));
    }
}

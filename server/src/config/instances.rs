//! How many sessions of a model version run, where, and with how many ONNX Runtime threads
//! (`instance_group` and the thread count parameters).

use ferry_proto::inference::{ModelConfig, model_instance_group::Kind};

use super::{
    session::{SessionOptions, session_options},
    source::ConfigSource,
};
use crate::Error;

/// Where a model's sessions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// On the CPU (`KIND_CPU`).
    #[default]
    Cpu,
    /// On this CUDA device (`KIND_GPU`): the load fails if ONNX Runtime cannot use it.
    Gpu(i32),
    /// On GPU 0 when ONNX Runtime can use CUDA there, otherwise on the CPU (`KIND_AUTO`, `KIND_MODEL`).
    Auto,
}

/// How many sessions of each model version run, where, and with how many ONNX Runtime threads each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstancePlan {
    /// ONNX Runtime's session options (execution mode, graph level, memory, spinning).
    pub session: SessionOptions,
    /// Model instances (ONNX Runtime sessions), each on a thread of its own.
    pub count: usize,
    /// `intra_op_thread_count` from the config parameters; `None` lets Ferry share the cores out.
    pub intra_op_threads: Option<usize>,
    /// `inter_op_thread_count` from the config parameters.
    pub inter_op_threads: Option<usize>,
    /// Where the sessions run.
    pub placement: Placement,
}

/// Triton's ONNX Runtime backend gives a CPU model two instances when the config names none.
const DEFAULT_CPU_INSTANCES: usize = 2;

/// The instance plan a config asks for, with Triton's defaults.
pub(super) fn instance_plan(config: &ModelConfig, source: ConfigSource<'_>) -> Result<InstancePlan, Error> {
    let mut count = 0usize;
    let mut placement = None;
    for group in &config.instance_group {
        let group_placement = match group.kind() {
            Kind::Cpu => Placement::Cpu,
            Kind::Gpu => Placement::Gpu(group.gpus.first().copied().unwrap_or(0)),
            Kind::Auto | Kind::Model => Placement::Auto,
        };
        if placement.is_some_and(|p| p != group_placement) {
            return Err(source.error(
                &["instance_group"],
                "instance groups of different kinds or GPUs in one model are not supported by Ferry; use one kind",
            ));
        }
        placement = Some(group_placement);
        let group_count = usize::try_from(group.count).map_err(|_| {
            source.error(
                &["count"],
                format!("instance_group count must be 0 or more, got {}", group.count),
            )
        })?;
        count += if group_count == 0 { 1 } else { group_count };
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
    Ok(InstancePlan {
        session: session_options(config, source)?,
        count: if count == 0 { DEFAULT_CPU_INSTANCES } else { count },
        intra_op_threads: thread_parameter("intra_op_thread_count")?.filter(|n| *n > 0),
        inter_op_threads: thread_parameter("inter_op_thread_count")?.filter(|n| *n > 0),
        // Like Triton, a model that names no instance group runs on a GPU when there is one.
        placement: placement.unwrap_or(Placement::Auto),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{config_error, spec_from};

    #[test]
    fn instance_kinds_choose_where_sessions_run() {
        let placement = |groups: &str| {
            spec_from(&format!("max_batch_size: 2\ninstance_group [ {groups} ]\n"))
                .map(|s| s.instances.placement)
        };
        assert_eq!(placement("{ kind: KIND_CPU }").ok(), Some(Placement::Cpu));
        assert_eq!(
            placement("{ kind: KIND_GPU, gpus: [ 1 ] }").ok(),
            Some(Placement::Gpu(1))
        );
        assert_eq!(placement("{ kind: KIND_GPU }").ok(), Some(Placement::Gpu(0)));
        assert_eq!(placement("{ count: 2 }").ok(), Some(Placement::Auto));
        assert_eq!(
            spec_from("max_batch_size: 2\n")
                .map(|s| s.instances.placement)
                .ok(),
            Some(Placement::Auto)
        );
        let (line, message) =
            config_error("max_batch_size: 2\ninstance_group [ { kind: KIND_CPU }, { kind: KIND_GPU } ]\n");
        assert_eq!(line, 2);
        assert!(message.contains("one kind"), "{message}");
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

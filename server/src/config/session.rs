//! ONNX Runtime session options a config may set, under the names Triton's ONNX Runtime backend reads
//! (`execution_mode`, `enable_mem_arena`, `enable_mem_pattern`, `optimization { graph { level } }`) and one
//! of Ferry's own (`ferry.intra_op_spinning`), so that a model tuned for Triton runs tuned here too.

use ferry_proto::inference::ModelConfig;

use super::{family::switch, source::ConfigSource};
use crate::Error;

/// The `parameters` key that lets ONNX Runtime's intra-op threads spin while they wait for work.
pub const INTRA_OP_SPINNING: &str = "ferry.intra_op_spinning";

/// How much ONNX Runtime rewrites the graph when it opens a session (Triton's `optimization.graph.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphLevel {
    /// Every optimisation ONNX Runtime has (Triton's level 0 or no level).
    #[default]
    All,
    /// Redundant-node removal and constant folding only (Triton's -1).
    Basic,
    /// Basic plus fusions (Triton's 1).
    Extended,
    /// None: the graph runs as written (Triton's 2).
    Disabled,
}

/// The ONNX Runtime session options of one model, each `None` or default where the config is silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionOptions {
    /// Run independent nodes of the graph in parallel (`execution_mode: "1"`), using the inter-op threads.
    pub parallel_execution: bool,
    /// The graph optimisation level.
    pub graph_level: GraphLevel,
    /// ONNX Runtime's CPU memory arena on or off (`enable_mem_arena`); `None` keeps its default (on).
    pub mem_arena: Option<bool>,
    /// ONNX Runtime's memory pattern planning on or off (`enable_mem_pattern`); `None` keeps its default.
    pub mem_pattern: Option<bool>,
    /// Whether idle intra-op threads spin before they sleep. Off by default: on a machine whose cores the
    /// request handlers also need, a spinning pool takes their CPU (docs/benchmarks.md has the figures).
    pub intra_op_spinning: bool,
}

/// The session options a config asks for.
pub(super) fn session_options(
    config: &ModelConfig,
    source: ConfigSource<'_>,
) -> Result<SessionOptions, Error> {
    let flag = |key: &str| switch(config, key, source);
    let parallel_execution = match config.parameters.get("execution_mode") {
        None => false,
        Some(value) => match value.string_value.trim() {
            "0" => false,
            "1" => true,
            other => {
                return Err(source.error(
                    &["execution_mode"],
                    format!("parameter execution_mode must be 0 (sequential) or 1 (parallel), got '{other}'"),
                ));
            }
        },
    };
    let level = config
        .optimization
        .as_ref()
        .and_then(|optimization| optimization.graph.as_ref())
        .map_or(0, |graph| graph.level);
    let graph_level = match level {
        0 => GraphLevel::All,
        -1 => GraphLevel::Basic,
        1 => GraphLevel::Extended,
        2 => GraphLevel::Disabled,
        other => {
            return Err(source.error(
                &["level"],
                format!(
                    "optimization graph level must be -1 (basic), 0 (all), 1 (extended) or 2 (disabled), \
                     got {other}"
                ),
            ));
        }
    };
    Ok(SessionOptions {
        parallel_execution,
        graph_level,
        mem_arena: flag("enable_mem_arena")?,
        mem_pattern: flag("enable_mem_pattern")?,
        intra_op_spinning: flag(INTRA_OP_SPINNING)?.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{config_error, spec_from};

    #[test]
    fn tritons_onnx_runtime_parameters_set_the_session_options() {
        let spec = spec_from(
            "optimization { graph { level: -1 } }\n\
             parameters { key: \"execution_mode\" value { string_value: \"1\" } }\n\
             parameters { key: \"enable_mem_arena\" value { string_value: \"0\" } }\n\
             parameters { key: \"enable_mem_pattern\" value { string_value: \"true\" } }\n\
             parameters { key: \"ferry.intra_op_spinning\" value { string_value: \"1\" } }\n",
        )
        .expect("valid");
        assert_eq!(
            spec.instances.session,
            SessionOptions {
                parallel_execution: true,
                graph_level: GraphLevel::Basic,
                mem_arena: Some(false),
                mem_pattern: Some(true),
                intra_op_spinning: true,
            }
        );
        let plain = spec_from("max_batch_size: 2\n").expect("valid");
        assert_eq!(plain.instances.session, SessionOptions::default());
    }

    #[test]
    fn bad_session_options_name_the_field_and_the_value() {
        let (line, message) = config_error("optimization { graph { level: 7 } }\n");
        assert_eq!(line, 1);
        assert!(message.contains("level") && message.contains('7'), "{message}");
        let (_, message) =
            config_error("parameters { key: \"execution_mode\" value { string_value: \"fast\" } }\n");
        assert!(
            message.contains("execution_mode") && message.contains("fast"),
            "{message}"
        );
        let (_, message) =
            config_error("parameters { key: \"enable_mem_arena\" value { string_value: \"maybe\" } }\n");
        assert!(
            message.contains("enable_mem_arena") && message.contains("maybe"),
            "{message}"
        );
    }
}

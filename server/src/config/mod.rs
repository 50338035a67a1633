//! Model configuration: parsing `config.pbtxt`, completing it from the ONNX model, and validating it into a
//! [`ModelSpec`].

mod batching;
mod complete;
mod pbtxt;
mod spec;

pub use batching::{ADAPTIVE_QUEUE_DELAY, DEFAULT_MAX_QUEUE_SIZE};
pub use complete::{ModelSignature, ModelTensor, complete_config, needs_signature};
pub use pbtxt::{model_config_descriptor, parse_model_config};
pub use spec::{ConfigSource, InstancePlan, ModelSpec, Placement, TensorSpec, VersionPolicy};

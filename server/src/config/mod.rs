//! Model configuration: parsing `config.pbtxt`, completing it from the ONNX model, and validating it into a
//! [`ModelSpec`].
//!
//! `pbtxt` parses the text, `complete` fills in what the model file says, and `spec` validates the whole into
//! a [`ModelSpec`], with one module per part of the config: `tensors`, `versions`, `instances` (with the
//! ONNX Runtime `session` options), `batching`, `drift`, `ensemble`, and `ragged` and `buckets` for inputs
//! whose length varies.
//! `signature` then checks the spec against the model file. Every part names the file and line of a mistake
//! through [`ConfigSource`] (`source`), which depends on nothing else here.

mod batching;
mod buckets;
mod complete;
mod drift;
mod ensemble;
mod instances;
mod pbtxt;
mod ragged;
mod session;
mod signature;
mod source;
mod spec;
mod tensors;
#[cfg(test)]
mod testing;
mod versions;

pub use batching::{ADAPTIVE_QUEUE_DELAY, DEFAULT_MAX_QUEUE_SIZE};
pub use buckets::{
    BucketPadding, MAX_BUCKET_LENGTH, MAX_BUCKETS, PAD_TO_BUCKET, PAD_TO_BUCKET_DIM, PAD_TO_BUCKET_VALUE,
};
pub use complete::{ModelSignature, ModelTensor, complete_config, needs_signature};
pub use drift::{DRIFT_PREFIX, DriftSettings, MAX_DRIFT_FEATURES, MAX_DRIFT_WINDOW};
pub use ensemble::{ENSEMBLE_PLATFORM, EnsembleStep, MAX_ENSEMBLE_STEPS, MAX_ENSEMBLE_TENSORS, is_ensemble};
pub use instances::{InstancePlan, Placement};
pub use pbtxt::{model_config_descriptor, parse_model_config};
pub use ragged::{BatchInputSpec, RaggedInputs, VariableLengths};
pub use session::{GraphLevel, INTRA_OP_SPINNING, SessionOptions};
pub use source::ConfigSource;
pub(crate) use source::locate_line;
pub use spec::ModelSpec;
pub use tensors::TensorSpec;
pub use versions::VersionPolicy;

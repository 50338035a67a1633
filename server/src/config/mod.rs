//! Model configuration: parsing `config.pbtxt`, completing it from the ONNX model, and validating it into a
//! [`ModelSpec`].
//!
//! `pbtxt` parses the text, `complete` fills in what the model file says, and `spec` validates the whole into
//! a [`ModelSpec`], with one module per part of the config: `tensors`, `versions`, `instances` (with the
//! ONNX Runtime `session` options), `batching`, `drift`, `payload`, `quality`, `ensemble`, `sequence`, and `ragged` and `buckets` for
//! inputs whose length varies.
//! `signature` then checks the spec against the model file. Every part names the file and line of a mistake
//! through [`ConfigSource`] (`source`), which depends on nothing else here.

mod accelerators;
mod batching;
mod buckets;
mod classes;
mod complete;
mod demand;
mod drift;
mod ensemble;
mod family;
mod instances;
mod payload;
mod pbtxt;
mod quality;
mod ragged;
mod sequence;
mod session;
mod signature;
mod source;
mod spec;
mod tensors;
#[cfg(test)]
pub(crate) mod testing;
mod versions;

pub use accelerators::{Precision, TensorRt};
pub use batching::{ADAPTIVE_QUEUE_DELAY, DEFAULT_MAX_QUEUE_SIZE};
pub use buckets::{
    BucketPadding, MAX_BUCKET_LENGTH, MAX_BUCKETS, PAD_TO_BUCKET, PAD_TO_BUCKET_DIM, PAD_TO_BUCKET_VALUE,
};
pub use classes::{
    CLASS_LABELS_PREFIX, ClassLabels, MAX_CLASSES, TensorForm, ZIPMAP_HINT, labels_from_parameters,
};
pub use complete::{
    DEFAULT_MAX_BATCH_SIZE, ModelSignature, ModelTensor, ONNX_BACKEND, complete_config, complete_config_with,
    needs_signature,
};
pub use demand::{LOAD_ON_DEMAND, load_on_demand};
pub use drift::{DRIFT_PREFIX, DriftSettings, MAX_DRIFT_FEATURES, MAX_DRIFT_WINDOW};
pub use ensemble::{ENSEMBLE_PLATFORM, EnsembleStep, MAX_ENSEMBLE_STEPS, MAX_ENSEMBLE_TENSORS, is_ensemble};
pub use instances::{InstancePlan, Placement};
pub use payload::{
    MAX_PAYLOAD_LOG_NAMES, MAX_PAYLOAD_LOG_RECORD_BYTES, PAYLOAD_LOG_PREFIX, PayloadLogSettings,
};
pub use pbtxt::{model_config_descriptor, parse_model_config};
pub use quality::{
    MAX_QUALITY_AGE_SECONDS, MAX_QUALITY_BUCKETS, MAX_QUALITY_PENDING, QUALITY_PREFIX, QualityMetric,
    QualitySettings,
};
pub use ragged::{BatchInputSpec, RaggedInputs, VariableLengths};
pub(crate) use sequence::sequence_tensor_names;
pub use sequence::{
    ControlKind, ControlTensor, InitialState, MAX_LIVE_SEQUENCES, MAX_QUEUED_PER_SEQUENCE, SequenceSpec,
    SequenceStrategyConfig, StateTensor,
};
pub use session::{GraphLevel, INTRA_OP_SPINNING, SessionOptions};
pub use source::ConfigSource;
pub(crate) use source::locate_line;
pub use spec::ModelSpec;
pub use tensors::TensorSpec;
pub use versions::VersionPolicy;

//! A Rust client for Ferry and any other server speaking Triton's gRPC protocol (KServe v2).
//!
//! [`Client`] hides the protobuf plumbing: inputs are built from slices or `ndarray` arrays, encoded as
//! raw little-endian contents, and outputs are read back as typed vectors or arrays with their datatype
//! and size checked. The generated messages ([`proto`]) and stub ([`GrpcInferenceServiceClient`]) stay
//! reachable for anything the typed client does not cover.
//!
//! ```no_run
//! use ferry_client::{Client, InferInput, InferRequest};
//!
//! # async fn run() -> Result<(), ferry_client::ClientError> {
//! let client = Client::connect("http://127.0.0.1:8001").await?;
//! let request = InferRequest::new("identity_types")
//!     .with_input(InferInput::new("IN_BYTES", [2]).with_bytes(&["hello", "world"]));
//! let result = client.infer(request).await?;
//! for item in result.output_bytes("OUT_BYTES")? {
//!     println!("{}", String::from_utf8_lossy(&item));
//! }
//! # Ok(())
//! # }
//! ```

pub mod bench;
mod client;
mod credentials;
mod drift;
mod element;
mod error;
mod feedback;
mod request;
mod response;
mod tls;
pub mod traffic;

pub use client::{Client, Stub};
pub use credentials::Credentials;
pub use drift::DriftStub;
pub use element::TensorElement;
pub use error::ClientError;
pub use feedback::FeedbackStub;
pub use ferry_proto::GrpcInferenceServiceClient;
/// The messages of Ferry's drift service (`ferry.drift.v1`), which Triton does not have.
pub use ferry_proto::ferry::drift::v1 as drift_proto;
/// The messages of Ferry's feedback service (`ferry.feedback.v1`), which Triton does not have.
pub use ferry_proto::ferry::feedback::v1 as feedback_proto;
/// The generated messages of the `inference` protobuf package, for fields and RPCs the typed client
/// does not surface.
pub use ferry_proto::inference as proto;
pub use request::{InferInput, InferRequest};
pub use response::InferResult;
pub use tls::TlsOptions;

/// Re-exported so callers build `BYTES` outputs' element type from the same version this crate uses.
pub use bytes;
/// Re-exported so `f16` and `bf16` tensors use the same `half` version as [`TensorElement`].
pub use half;
/// Re-exported so arrays passed to [`InferInput::from_array`] come from the same `ndarray` version.
pub use ndarray;

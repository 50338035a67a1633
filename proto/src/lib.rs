//! Ferry's wire types: the messages and service stubs of Triton's `inference.GRPCInferenceService` and the
//! `inference.ModelConfig` schema, generated from `proto/inference/*.proto` so that every Triton client speaks
//! to Ferry unchanged, and Ferry's own services (`proto/ferry/*.proto`).

pub mod codec;

/// Messages and service stubs of the `inference` protobuf package.
#[allow(missing_docs, clippy::all, clippy::pedantic, unused_qualifications)]
pub mod inference {
    include!(concat!(env!("OUT_DIR"), "/inference.rs"));
}

/// Ferry's own services beside Triton's.
pub mod ferry {
    /// Input drift monitoring (`ferry.drift.v1.DriftService`).
    pub mod drift {
        /// Messages and service stubs of the `ferry.drift.v1` package.
        #[allow(missing_docs, clippy::all, clippy::pedantic, unused_qualifications)]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/ferry.drift.v1.rs"));
        }
    }
    /// True outcomes posted for earlier requests, and the live quality kept from them
    /// (`ferry.feedback.v1.Feedback`).
    pub mod feedback {
        /// Messages and service stubs of the `ferry.feedback.v1` package.
        #[allow(missing_docs, clippy::all, clippy::pedantic, unused_qualifications)]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/ferry.feedback.v1.rs"));
        }
    }
    /// Version labels, traffic splits, shadow traffic, promotion, rollback and their history
    /// (`ferry.traffic.v1.Traffic`).
    pub mod traffic {
        /// Messages and service stubs of the `ferry.traffic.v1` package.
        #[allow(missing_docs, clippy::all, clippy::pedantic, unused_qualifications)]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/ferry.traffic.v1.rs"));
        }
    }
}

/// The encoded `FileDescriptorSet` of every Ferry proto. Server reflection serves it, and `config.pbtxt`
/// files are parsed against the `inference.ModelConfig` descriptor it holds.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ferry_descriptor.bin"));

pub use inference::grpc_inference_service_client::GrpcInferenceServiceClient;
pub use inference::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

//! Compiles Ferry's protos with `protox` (no `protoc` is needed on any machine) and generates the prost
//! messages and tonic stubs, plus the encoded descriptor set used by reflection and `config.pbtxt` parsing.

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: [&str; 5] = [
    "inference/grpc_service.proto",
    "inference/model_config.proto",
    "ferry/drift.proto",
    "ferry/feedback.proto",
    "ferry/traffic.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let include = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", include.join(proto).display());
    }
    let descriptors = protox::compile(PROTOS, [&include])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("ferry_descriptor.bin"), descriptors.encode_to_vec())?;

    tonic_prost_build::configure()
        // Tensor payloads decode as `Bytes` slices of the received frame: no copy per tensor.
        .bytes(".inference")
        // prost's codec, with a check that a request's decoding stays proportionate to its size.
        .codec_path("crate::codec::BoundedCodec")
        .compile_fds(descriptors)?;
    Ok(())
}

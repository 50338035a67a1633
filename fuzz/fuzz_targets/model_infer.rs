//! A gRPC `ModelInferRequest` as protobuf bytes, checked by the server's codec, decoded and validated against batching, non-batching and
//! BYTES models, with a shared memory registry that holds regions of the fuzzer's own. Whatever validation
//! accepts must hold exactly the elements its shapes promise.

#![no_main]

use ferry_fuzz::{check_parsed, shared_memory, specs};
use ferry_proto::inference::ModelInferRequest;
use ferry_server::request::InferRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    // As the server's codec does: a message whose decoding would dwarf its size is refused undecoded.
    if ferry_proto::codec::check_expansion(data).is_err() {
        return;
    }
    let Ok(request) = ModelInferRequest::decode(data) else {
        return;
    };
    let regions = shared_memory();
    for spec in specs() {
        match InferRequest::parse_with_shared_memory(request.clone(), spec, &regions) {
            Ok(parsed) => check_parsed(&parsed, spec),
            Err(error) => drop(tonic::Status::from(error)),
        }
    }
});

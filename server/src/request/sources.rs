//! Where each input's bytes are: in a shared memory region, in the next entry of `raw_input_contents`, or in
//! its typed `contents`, decided as Triton decides it.

use ferry_proto::inference::{InferTensorContents, model_infer_request::InferInputTensor};

use super::Context;
use crate::{Error, shm::TensorRegion};

/// Where an input's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// In a registered shared memory region.
    Shared,
    /// The next entry of `raw_input_contents`.
    Raw,
    /// The input's typed `contents` (possibly empty).
    Typed,
}

/// Decides where each input's bytes are, as Triton's `InferGRPCToInput` does, with its errors: contents
/// with shared memory or with `raw_input_contents`, and an input with no data at all. Raw entries left
/// over (Triton ignores them) are refused with Ferry's own message.
pub(super) fn data_sources(
    wire_inputs: &[InferInputTensor],
    in_shared_memory: &[Option<TensorRegion>],
    raw_entries: usize,
    at: &Context,
) -> Result<Vec<Source>, Error> {
    let model = at.model;
    let mut raw_left = raw_entries;
    let mut sources = Vec::with_capacity(wire_inputs.len());
    for (wire, region) in wire_inputs.iter().zip(in_shared_memory) {
        let name = &wire.name;
        let typed = wire.contents.as_ref().is_some_and(has_values);
        let source = if region.is_some() {
            if typed {
                return Err(Error::invalid(format!(
                    "unexpected 'content' provided when using shared memory for input tensor '{name}' for \
                     model '{model}'"
                )));
            }
            Source::Shared
        } else if typed && raw_entries > 0 {
            return Err(Error::invalid(format!(
                "contents field must not be specified when using raw_input_contents for '{name}' for model \
                 '{model}'"
            )));
        } else if typed {
            Source::Typed
        } else if raw_left > 0 {
            raw_left -= 1;
            Source::Raw
        } else if wire.contents.is_some() {
            Source::Typed
        } else {
            return Err(Error::invalid(format!(
                "unable to find data for input tensor '{name}' for model '{model}' in request."
            )));
        };
        sources.push(source);
    }
    if raw_left > 0 {
        let shared = in_shared_memory.iter().filter(|r| r.is_some()).count();
        let which = if shared == 0 { "" } else { " not in shared memory" };
        return Err(Error::invalid(format!(
            "raw_input_contents has {raw_entries} entries but the request has {} inputs{which}; expected one \
             entry per input{which}",
            wire_inputs.len() - shared,
        )));
    }
    Ok(sources)
}

/// Whether typed `contents` carry any value.
pub(super) fn has_values(contents: &InferTensorContents) -> bool {
    !(contents.bool_contents.is_empty()
        && contents.int_contents.is_empty()
        && contents.int64_contents.is_empty()
        && contents.uint_contents.is_empty()
        && contents.uint64_contents.is_empty()
        && contents.fp32_contents.is_empty()
        && contents.fp64_contents.is_empty()
        && contents.bytes_contents.is_empty())
}

#[cfg(test)]
mod tests {
    use crate::{
        DataType,
        request::{
            InferRequest,
            tests::{message, raw_request, spec, tensor, wire},
        },
    };

    #[test]
    fn raw_entries_must_match_inputs_one_to_one() {
        let spec = spec(0, vec![tensor("a", DataType::Fp32, &[1])]);
        let request = raw_request(
            vec![wire("a", DataType::Fp32, &[1], None)],
            vec![vec![0; 4], vec![0; 4]],
        );
        assert!(message(InferRequest::parse(request, &spec)).contains("2 entries"));
    }
}

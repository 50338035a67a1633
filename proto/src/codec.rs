//! The gRPC codec of Ferry's services: prost's, with a check before a `ModelInferRequest` is decoded.
//!
//! Decoding can take far more memory than the message holds on the wire: an empty `InferInputTensor` is two
//! bytes on the wire and a few hundred bytes once decoded, so a 256 MiB message of them would ask for tens of
//! gigabytes before any handler could refuse it. The decoder first walks the message's wire format and
//! estimates what decoding it takes; a message that would take more than [`MAX_EXPANSION`] times its own
//! size (plus [`EXPANSION_ALLOWANCE`]) is refused with `RESOURCE_EXHAUSTED` and never decoded; a message too
//! short to break that bound whatever it holds (a few kilobytes) is not walked. Ordinary
//! requests (tensors in `raw_input_contents`, or typed contents) stay well under that.

use std::{any::TypeId, marker::PhantomData};

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::ProstEncoder;

use crate::inference::ModelInferRequest;

/// How many times its wire size a message may take once decoded: packed `int64` contents of small values,
/// the worst ordinary case, take 8.
pub const MAX_EXPANSION: usize = 8;

/// What any message may take once decoded beyond [`MAX_EXPANSION`] times its size, so that small requests
/// with many tiny fields (a few hundred inputs, parameters) always pass.
pub const EXPANSION_ALLOWANCE: usize = 1 << 20;

/// prost's codec with the decoding check above; the generated services and clients use it.
#[derive(Debug, Clone, Default)]
pub struct BoundedCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder { _type: PhantomData }
    }
}

/// Decodes `U`, checking first what a `ModelInferRequest` would take.
#[derive(Debug, Clone)]
pub struct BoundedDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Message + Default + 'static> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        use bytes::Buf;
        if TypeId::of::<U>() == TypeId::of::<ModelInferRequest>() {
            // tonic hands the whole message over as one contiguous buffer.
            let wire = buf.chunk();
            if wire.len() == buf.remaining() {
                check_expansion(wire)?;
            }
        }
        U::decode(buf)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Refuses a `ModelInferRequest` whose decoding would take more than its allowance.
pub fn check_expansion(wire: &[u8]) -> Result<(), Status> {
    let allowed = wire
        .len()
        .saturating_mul(MAX_EXPANSION)
        .saturating_add(EXPANSION_ALLOWANCE);
    // Most requests are a few hundred bytes: even at the worst cost per byte they fit, and the walk (a
    // second parse of the message) is skipped.
    if wire.len().saturating_mul(MAX_COST_PER_WIRE_BYTE) <= allowed {
        return Ok(());
    }
    let cost = decoded_cost(wire, Shape::Request, allowed);
    if cost > allowed {
        return Err(Status::resource_exhausted(format!(
            "the ModelInferRequest of {} bytes would take more than {allowed} bytes once decoded ({MAX_EXPANSION} \
             times its size and 1 MiB): it holds too many small tensors, strings, shape values or parameters",
            wire.len()
        )));
    }
    Ok(())
}

/// The messages of a `ModelInferRequest`, for the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Request,
    Input,
    Output,
    Contents,
}

/// What holding one decoded message of each kind costs, at least: a generous round figure above its
/// `size_of` (an `InferInputTensor` with its strings, shape, map and contents fields is about 300 bytes).
const MESSAGE_COST: usize = 384;
/// What one map entry (a parameter) costs: its key, its value and the hash map's share.
const MAP_ENTRY_COST: usize = 128;
/// What one `bytes` or `string` element costs besides its bytes.
const SLICE_COST: usize = 32;
/// The most [`decoded_cost`] charges per byte on the wire. The dearest field is an empty nested message:
/// a key byte and a zero length byte for [`MESSAGE_COST`]; every other field charges less per byte it
/// spans (a truncated fixed-size field, 8 for its key byte; packed varints, 8 per byte), and a nested
/// message's own fields are charged no more per byte than its parent's.
const MAX_COST_PER_WIRE_BYTE: usize = MESSAGE_COST / 2;

/// Estimates what decoding `wire` as `shape` takes, stopping once past `limit`. A malformed message gets a
/// partial figure: prost refuses it anyway.
fn decoded_cost(wire: &[u8], shape: Shape, limit: usize) -> usize {
    let mut cost = 0usize;
    let mut at = 0;
    while at < wire.len() && cost <= limit {
        let Some((key, used)) = varint(&wire[at..]) else {
            return cost;
        };
        at += used;
        let (field, wire_type) = (key >> 3, key & 7);
        let field_cost = match wire_type {
            0 => {
                let Some((_, used)) = varint(&wire[at..]) else {
                    return cost;
                };
                at += used;
                8
            }
            1 => {
                at += 8;
                8
            }
            5 => {
                at += 4;
                8
            }
            2 => {
                let Some((len, used)) = varint(&wire[at..]) else {
                    return cost;
                };
                at += used;
                let Some(body) = usize::try_from(len)
                    .ok()
                    .and_then(|len| wire.get(at..at.checked_add(len)?))
                else {
                    return cost;
                };
                at += body.len();
                length_delimited_cost(shape, field, body, limit.saturating_sub(cost))
            }
            _ => return cost,
        };
        cost = cost.saturating_add(field_cost);
    }
    cost
}

/// The cost of one length-delimited field of `shape`: a nested message, a map entry, a packed array, or
/// bytes.
fn length_delimited_cost(shape: Shape, field: u64, body: &[u8], limit: usize) -> usize {
    let nested = |inner: Shape| MESSAGE_COST.saturating_add(decoded_cost(body, inner, limit));
    match (shape, field) {
        (Shape::Request, 5) => nested(Shape::Input),
        (Shape::Request, 6) => nested(Shape::Output),
        (Shape::Input, 5) => nested(Shape::Contents),
        (Shape::Request | Shape::Input, 4) | (Shape::Output, 2) => MAP_ENTRY_COST + body.len(),
        // Packed int64 shape values: up to 8 bytes each, one per final byte of a varint.
        (Shape::Input, 3) => 8 * body.iter().filter(|b| **b < 0x80).count(),
        (Shape::Contents, 8) => SLICE_COST,
        (Shape::Contents, 1) => body.len(),
        // Packed int32/uint32 (4 bytes each) and int64/uint64 (8) varints; fp32 and fp64 keep their size.
        (Shape::Contents, 2 | 4) => 4 * body.iter().filter(|b| **b < 0x80).count(),
        (Shape::Contents, 3 | 5) => 8 * body.iter().filter(|b| **b < 0x80).count(),
        (Shape::Contents, 6 | 7) => body.len(),
        // Strings are copied; `bytes` fields are slices of the frame.
        (Shape::Request, 7) => SLICE_COST,
        _ => SLICE_COST + body.len(),
    }
}

/// A protobuf varint at the start of `bytes`, with the bytes it used.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (index, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::inference::{
        InferTensorContents, model_infer_request::InferInputTensor,
        model_infer_request::InferRequestedOutputTensor,
    };

    fn input(name: &str, shape: Vec<i64>) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: "FP32".into(),
            shape,
            ..Default::default()
        }
    }

    #[test]
    fn ordinary_requests_pass() {
        let raw = ModelInferRequest {
            model_name: "simple".into(),
            inputs: vec![input("INPUT0", vec![1, 16]), input("INPUT1", vec![1, 16])],
            outputs: vec![InferRequestedOutputTensor {
                name: "OUTPUT0".into(),
                ..Default::default()
            }],
            raw_input_contents: vec![Bytes::from(vec![7u8; 4 << 20]), Bytes::from(vec![1u8; 64])],
            ..Default::default()
        };
        check_expansion(&raw.encode_to_vec()).expect("raw contents");
        let typed = ModelInferRequest {
            inputs: vec![InferInputTensor {
                contents: Some(InferTensorContents {
                    int64_contents: vec![1; 1 << 20],
                    bytes_contents: vec![Bytes::from_static(b"a string of some length"); 10_000],
                    ..Default::default()
                }),
                ..input("x", vec![1 << 20])
            }],
            ..Default::default()
        };
        check_expansion(&typed.encode_to_vec()).expect("small int64 values, strings");
        let many = ModelInferRequest {
            inputs: (0..500)
                .map(|i| input(&format!("input_{i}"), vec![1, 4]))
                .collect(),
            ..Default::default()
        };
        check_expansion(&many.encode_to_vec()).expect("500 inputs");
    }

    /// Empty inputs are 2 bytes on the wire each and ~300 bytes decoded: 16 MB of them used to ask for
    /// 2.5 GB (and a 256 MB message for 40 GB) before any check could run.
    #[test]
    fn messages_that_would_explode_are_refused_before_decoding() {
        let empty_inputs = ModelInferRequest {
            inputs: vec![InferInputTensor::default(); 2 << 20],
            ..Default::default()
        };
        let status = check_expansion(&empty_inputs.encode_to_vec()).expect_err("empty inputs");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let empty_strings = ModelInferRequest {
            inputs: vec![InferInputTensor {
                contents: Some(InferTensorContents {
                    bytes_contents: vec![Bytes::new(); 2 << 20],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        check_expansion(&empty_strings.encode_to_vec()).expect_err("empty strings");
        let empty_raw = ModelInferRequest {
            raw_input_contents: vec![Bytes::new(); 2 << 20],
            ..Default::default()
        };
        check_expansion(&empty_raw.encode_to_vec()).expect_err("empty raw contents");
    }

    /// The shortcut in [`check_expansion`] holds only if no message costs more per byte than
    /// [`MAX_COST_PER_WIRE_BYTE`]: arbitrary bytes (most of them malformed) and the dearest well-formed
    /// shapes stay within it.
    #[test]
    fn no_message_costs_more_per_byte_than_the_shortcut_assumes() {
        let bound = |wire: &[u8]| wire.len() * MAX_COST_PER_WIRE_BYTE;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = usize::try_from(seed % 64).expect("small");
            // Bytes drawn from the ones that make fields dear: keys of nested messages and maps, zero
            // lengths, fixed-size wire types and varint continuations.
            let wire: Vec<u8> = (0..len)
                .map(|i| {
                    let pick = (seed >> (i % 56)) % 8;
                    [0x2a, 0x32, 0x22, 0x00, 0x09, 0x0d, 0x80, 0x1a][usize::try_from(pick).expect("small")]
                })
                .collect();
            let cost = decoded_cost(&wire, Shape::Request, usize::MAX);
            assert!(cost <= bound(&wire), "{wire:x?} costs {cost}");
        }
        let nested = ModelInferRequest {
            inputs: vec![
                InferInputTensor {
                    contents: Some(InferTensorContents::default()),
                    ..Default::default()
                };
                100
            ],
            ..Default::default()
        }
        .encode_to_vec();
        let cost = decoded_cost(&nested, Shape::Request, usize::MAX);
        assert!(cost <= bound(&nested), "empty inputs with empty contents: {cost}");
        assert!(
            cost * 2 > bound(&nested),
            "the bound is near the dearest shape, not loose: {cost} of {}",
            bound(&nested)
        );
    }

    /// The largest message the shortcut lets through unwalked can never be refused by the walk.
    #[test]
    fn the_shortcut_passes_only_messages_the_walk_would_pass() {
        let largest = EXPANSION_ALLOWANCE / (MAX_COST_PER_WIRE_BYTE - MAX_EXPANSION);
        let empty_inputs = ModelInferRequest {
            inputs: vec![InferInputTensor::default(); largest / 2],
            ..Default::default()
        }
        .encode_to_vec();
        assert!(empty_inputs.len() <= largest);
        let allowed = empty_inputs.len() * MAX_EXPANSION + EXPANSION_ALLOWANCE;
        assert!(decoded_cost(&empty_inputs, Shape::Request, usize::MAX) <= allowed);
        let over = ModelInferRequest {
            inputs: vec![InferInputTensor::default(); largest],
            ..Default::default()
        };
        assert!(
            check_expansion(&over.encode_to_vec()).is_err(),
            "twice as many empty inputs go past the shortcut and are refused"
        );
    }

    #[test]
    fn malformed_messages_are_left_to_prost() {
        for wire in [&b"\xff\xff\xff"[..], b"\x2a\xff\xff\xff\xff\x0f", b"\x2a\x05ab"] {
            assert!(check_expansion(wire).is_ok(), "{wire:?}");
            assert!(ModelInferRequest::decode(wire).is_err());
        }
    }
}

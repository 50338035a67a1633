//! The key of a cached answer: everything a model's answer depends on, written out byte for byte (the
//! key's *material*), and a 128-bit hash of it that finds the entry. A lookup hashes the request and
//! compares it with an entry's material where they lie, without copying the inputs; only a miss copies the
//! material out, for the entry it may become.
//!
//! The material is the model version's identity, its name and version number, each input in the model's
//! order (position, name, data type, shape, and its bytes), and the outputs asked for, in the order asked.
//! Every variable-length part is preceded by its length, so two different requests never write the same
//! material. The hash is the first 128 bits of the material's SHA-256; a hit is only served when the stored
//! material equals the request's, so even a hash collision cannot answer one request with another's outputs
//! (Triton's 64-bit key can, as its `response_cache.md` admits).
//!
//! Inputs are taken in the model's order, whatever order the client sent them in, as Triton sorts them by
//! name before it hashes (`TritonCache::HashInputs`). The request's id, priority and timeout are left out:
//! they do not change the outputs. Classification is left out too: the cache holds the model's outputs,
//! and classes are ranked from them afterwards, for hits as for misses.

use sha2::{Digest, Sha256};

use crate::{
    config::ModelSpec,
    request::{InferRequest, TensorData},
};

/// Which model version answered: its identity (see [`super::Entry`] for why it is unique), name and
/// version number.
#[derive(Debug, Clone, Copy)]
pub struct ModelId<'a> {
    /// The address of the loaded version, unique among versions that have entries in the cache.
    pub identity: usize,
    /// The model's config, for the input names and data types.
    pub spec: &'a ModelSpec,
    /// The version number.
    pub version: u64,
}

/// The key's material of `request` to `model`, copied out: what an entry keeps, to compare later
/// requests with.
pub fn material(model: ModelId<'_>, request: &InferRequest) -> Vec<u8> {
    let mut material = Vec::with_capacity(material_len(model, request));
    write(model, request, &mut material);
    material
}

/// The hash of the key of `request` to `model`, computed from the request without copying its inputs:
/// what a lookup needs.
pub fn hash_of(model: ModelId<'_>, request: &InferRequest) -> u128 {
    let mut hasher = Sha256::new();
    write(model, request, &mut hasher);
    first_128_bits(hasher.finalize().as_slice())
}

/// Whether `material` is the material of `request` to `model`, compared piece by piece against the
/// request without copying it: what a hit needs before it is served.
pub fn matches(material: &[u8], model: ModelId<'_>, request: &InferRequest) -> bool {
    let mut compare = Compare {
        rest: material,
        equal: true,
    };
    write(model, request, &mut compare);
    compare.equal && compare.rest.is_empty()
}

/// How long the material of `request` to `model` is, without writing it: a request whose material alone
/// is larger than the cache can never be stored, so it is neither copied nor hashed.
pub fn material_len(model: ModelId<'_>, request: &InferRequest) -> usize {
    let mut len = Counter(0);
    write(model, request, &mut len);
    len.0
}

fn first_128_bits(digest: &[u8]) -> u128 {
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

/// Where material goes: a buffer, a hash, a comparison with stored material, or a counter of its length.
trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn number(&mut self, value: u64) {
        self.put(&value.to_le_bytes());
    }

    /// A length-prefixed byte string.
    fn text(&mut self, bytes: &[u8]) {
        self.number(bytes.len() as u64);
        self.put(bytes);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// Compares what is written with stored material, consuming it as it goes.
struct Compare<'a> {
    rest: &'a [u8],
    equal: bool,
}

impl Sink for Compare<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if !self.equal {
            return;
        }
        match self.rest.split_at_checked(bytes.len()) {
            Some((head, tail)) if head == bytes => self.rest = tail,
            _ => self.equal = false,
        }
    }
}

struct Counter(usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }
}

fn write(model: ModelId<'_>, request: &InferRequest, sink: &mut impl Sink) {
    sink.number(model.identity as u64);
    sink.number(model.version);
    sink.text(model.spec.name.as_bytes());
    let mut inputs: Vec<_> = request.inputs.iter().collect();
    inputs.sort_by_key(|input| input.index);
    sink.number(inputs.len() as u64);
    for input in inputs {
        sink.number(input.index as u64);
        if let Some(tensor) = model.spec.inputs.get(input.index) {
            sink.text(tensor.name.as_bytes());
            sink.text(tensor.data_type.wire_name().as_bytes());
        }
        sink.number(input.shape.len() as u64);
        for dim in &input.shape {
            sink.put(&dim.to_le_bytes());
        }
        match &input.data {
            TensorData::Fixed(bytes) => {
                sink.put(&[0]);
                sink.text(bytes);
            }
            TensorData::Strings(elements) => {
                sink.put(&[1]);
                sink.number(elements.len() as u64);
                for element in elements {
                    sink.text(element);
                }
            }
        }
    }
    sink.number(request.outputs.len() as u64);
    for output in &request.outputs {
        sink.number(*output as u64);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{DataType, request::InputTensor};

    fn spec() -> ModelSpec {
        crate::classification::tests::spec(8)
    }

    fn request(shape: &[i64], data: TensorData, outputs: &[usize]) -> InferRequest {
        InferRequest {
            id: "a".into(),
            inputs: vec![InputTensor {
                index: 0,
                shape: shape.to_vec(),
                model_shape: shape.to_vec(),
                data,
            }],
            outputs: outputs.to_vec(),
            batch_size: 1,
            priority: 0,
            timeout: None,
            classifications: Vec::new(),
            sequence: None,
        }
    }

    fn fixed(bytes: &[u8]) -> TensorData {
        TensorData::Fixed(Bytes::copy_from_slice(bytes))
    }

    /// A request's key: its hash and material.
    #[derive(Debug, PartialEq, Eq)]
    struct Key {
        hash: u128,
        material: Vec<u8>,
    }

    fn key(spec: &ModelSpec, identity: usize, version: u64, request: &InferRequest) -> Key {
        let model = ModelId {
            identity,
            spec,
            version,
        };
        let key = Key {
            hash: hash_of(model, request),
            material: material(model, request),
        };
        assert_eq!(key.material.len(), material_len(model, request), "counted length");
        assert_eq!(
            key.hash,
            first_128_bits(Sha256::digest(&key.material).as_slice()),
            "the hash, computed in place, is the material's"
        );
        assert!(matches(&key.material, model, request), "compared in place");
        key
    }

    #[test]
    fn identical_requests_have_identical_keys_whatever_their_id_priority_or_timeout() {
        let spec = spec();
        let first = request(&[1, 4], fixed(&[7; 16]), &[]);
        let mut second = first.clone();
        second.id = "another id".into();
        second.priority = 1;
        second.timeout = Some(std::time::Duration::from_millis(5));
        assert_eq!(key(&spec, 1, 1, &first), key(&spec, 1, 1, &second));
    }

    #[test]
    fn every_part_of_the_request_and_model_changes_the_key() {
        let spec = spec();
        let base = request(&[1, 4], fixed(&[7; 16]), &[]);
        let reference = key(&spec, 1, 1, &base);
        let mut one_byte = [7u8; 16];
        one_byte[15] = 8;
        let mut other_type = spec.clone();
        other_type.inputs[0].data_type = DataType::Int32;
        let mut other_input_name = spec.clone();
        other_input_name.inputs[0].name = "z".into();
        let mut other_model = spec.clone();
        other_model.name = "n".into();
        let variants = [
            (
                "one byte",
                key(&spec, 1, 1, &request(&[1, 4], fixed(&one_byte), &[])),
            ),
            ("shape", key(&spec, 1, 1, &request(&[2, 2], fixed(&[7; 16]), &[]))),
            (
                "rank",
                key(&spec, 1, 1, &request(&[1, 2, 2], fixed(&[7; 16]), &[])),
            ),
            ("data type", key(&other_type, 1, 1, &base)),
            ("input name", key(&other_input_name, 1, 1, &base)),
            ("model name", key(&other_model, 1, 1, &base)),
            ("version", key(&spec, 1, 2, &base)),
            ("loaded copy", key(&spec, 2, 1, &base)),
            (
                "one output",
                key(&spec, 1, 1, &request(&[1, 4], fixed(&[7; 16]), &[0])),
            ),
            (
                "other output",
                key(&spec, 1, 1, &request(&[1, 4], fixed(&[7; 16]), &[1])),
            ),
            (
                "output order",
                key(&spec, 1, 1, &request(&[1, 4], fixed(&[7; 16]), &[1, 0])),
            ),
            (
                "strings",
                key(
                    &spec,
                    1,
                    1,
                    &request(
                        &[1, 4],
                        TensorData::Strings(vec![Bytes::from_static(&[7; 16])]),
                        &[],
                    ),
                ),
            ),
        ];
        let model = ModelId {
            identity: 1,
            spec: &spec,
            version: 1,
        };
        for (what, variant) in &variants {
            assert_ne!(variant.material, reference.material, "{what}");
            assert_ne!(variant.hash, reference.hash, "{what}");
            assert!(!matches(&variant.material, model, &base), "{what}");
        }
        // Material that the request's only starts, or extends, does not match either.
        assert!(!matches(
            &reference.material[..reference.material.len() - 1],
            model,
            &base
        ));
        assert!(!matches(
            &[reference.material.as_slice(), &[0]].concat(),
            model,
            &base
        ));
        // And none of the variants equals another.
        for (i, (what, a)) in variants.iter().enumerate() {
            for (other, b) in &variants[i + 1..] {
                assert_ne!(a.material, b.material, "{what} and {other}");
            }
        }
    }

    #[test]
    fn lengths_prefix_every_string_so_that_boundaries_cannot_shift() {
        let spec = spec();
        let split = |parts: &[&'static [u8]]| {
            let elements = parts.iter().map(|p| Bytes::from_static(p)).collect();
            key(&spec, 1, 1, &request(&[1, 2], TensorData::Strings(elements), &[]))
        };
        assert_ne!(split(&[b"ab", b"c"]).material, split(&[b"a", b"bc"]).material);
        assert_ne!(split(&[b"", b"abc"]).material, split(&[b"abc", b""]).material);
    }

    #[test]
    fn inputs_are_keyed_in_the_models_order_whatever_order_they_came_in() {
        let mut spec = spec();
        let mut second = spec.inputs[0].clone();
        second.name = "w".into();
        spec.inputs.push(second);
        let input = |index, byte| InputTensor {
            index,
            shape: vec![1, 4],
            model_shape: vec![1, 4],
            data: fixed(&[byte; 16]),
        };
        let mut forward = request(&[1, 4], fixed(&[0; 16]), &[]);
        forward.inputs = vec![input(0, 1), input(1, 2)];
        let mut backward = forward.clone();
        backward.inputs.reverse();
        assert_eq!(key(&spec, 1, 1, &forward), key(&spec, 1, 1, &backward));
        let mut swapped = forward.clone();
        swapped.inputs = vec![input(0, 2), input(1, 1)];
        assert_ne!(key(&spec, 1, 1, &forward), key(&spec, 1, 1, &swapped));
    }
}

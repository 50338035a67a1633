//! `ZipMap` outputs: finding their class labels in the model file when it loads, and turning the sequence of
//! maps ONNX Runtime returns into the FP32 `[rows, classes]` tensor Ferry serves
//! ([`crate::config::ClassLabels`] explains why and in which order).
//!
//! ONNX Runtime's type information says only `seq(map(int64, float))`, not how many classes there are nor in
//! which order, so the labels are read from the `ZipMap` node's attributes. Only the few protobuf fields that
//! lead there are decoded: a tree ensemble's large attributes are skipped, not parsed.

use std::{collections::HashMap, path::Path, sync::Arc};

use bytes::Bytes;
use ort::value::{DynMapValueType, DynSequenceValueType, DynValue, TensorElementType, ValueType};
use prost::Message as _;

use crate::config::{ClassLabels, MAX_CLASSES, TensorForm, ZIPMAP_HINT};

/// The fields of ONNX's `ModelProto` that lead to the graph (onnx.proto3, field numbers as there).
#[derive(Clone, PartialEq, prost::Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

/// `GraphProto`: its nodes only.
#[derive(Clone, PartialEq, prost::Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
}

/// `NodeProto`, with its attributes left encoded until a `ZipMap` needs them.
#[derive(Clone, PartialEq, prost::Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(bytes = "bytes", repeated, tag = "5")]
    attribute: Vec<Bytes>,
}

/// `AttributeProto`: the name and the two list fields a `ZipMap` uses.
#[derive(Clone, PartialEq, prost::Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    strings: Vec<Vec<u8>>,
}

/// How deep a chain of `Identity` nodes between a `ZipMap` and the graph output is followed.
const MAX_IDENTITY_HOPS: usize = 16;

/// What an ONNX value type is, for the model signature: a tensor, a `ZipMap`-shaped output to look up, or
/// something Ferry cannot serve.
pub(super) enum Outlet {
    /// A tensor of an element type Triton can carry, or not (`None`).
    Tensor(Option<crate::DataType>, Vec<i64>),
    /// `seq(map(int64|string, float))`: a `ZipMap` output if a `ZipMap` node produces it.
    ClassMap,
    /// Anything else, described.
    Other(String),
}

/// Sorts an ONNX value type into the kinds the signature knows.
pub(super) fn classify(value_type: &ValueType) -> Outlet {
    match value_type {
        ValueType::Tensor { ty, shape, .. } => Outlet::Tensor(crate::DataType::from_ort(*ty), shape.to_vec()),
        ValueType::Sequence(inner) => match inner.as_ref() {
            ValueType::Map {
                key: TensorElementType::Int64 | TensorElementType::String,
                value: TensorElementType::Float32,
            } => Outlet::ClassMap,
            _ => Outlet::Other(format!("{value_type}")),
        },
        other => Outlet::Other(format!("{other}")),
    }
}

/// The form of each `seq(map(..., float))` output named in `outputs`: class probabilities when a `ZipMap`
/// node produces it, unsupported otherwise. Reads `model_path` once.
pub(super) fn class_outputs(
    model_path: &Path,
    outputs: &[&str],
) -> Result<HashMap<String, TensorForm>, String> {
    let bytes =
        std::fs::read(model_path).map_err(|error| format!("reading {}: {error}", model_path.display()))?;
    let model = ModelProto::decode(Bytes::from(bytes))
        .map_err(|error| format!("{} is not an ONNX model: {error}", model_path.display()))?;
    let nodes = model.graph.map(|g| g.node).unwrap_or_default();
    let mut forms = HashMap::new();
    for output in outputs {
        let form = match zipmap_labels(&nodes, output) {
            Ok(labels) => TensorForm::ClassProbabilities(Arc::new(labels)),
            Err(why) => TensorForm::Unsupported(format!(
                "a sequence of maps (seq(map(..., float))) {why}, which Triton's protocol cannot carry; \
                 {ZIPMAP_HINT}"
            )),
        };
        forms.insert((*output).to_owned(), form);
    }
    Ok(forms)
}

/// The labels of the `ZipMap` node that produces `output`, through any `Identity` nodes.
fn zipmap_labels(nodes: &[NodeProto], output: &str) -> Result<ClassLabels, String> {
    let mut name = output;
    for _ in 0..MAX_IDENTITY_HOPS {
        let node = nodes
            .iter()
            .find(|node| node.output.iter().any(|o| o == name))
            .ok_or("that no ZipMap node produces")?;
        match node.op_type.as_str() {
            "Identity" => {
                name = node.input.first().ok_or("that no ZipMap node produces")?;
            }
            "ZipMap" => return labels_of(node),
            other => return Err(format!("produced by a {other} node rather than a ZipMap")),
        }
    }
    Err("that no ZipMap node produces".to_owned())
}

fn labels_of(node: &NodeProto) -> Result<ClassLabels, String> {
    let mut labels = None;
    for encoded in &node.attribute {
        let attribute =
            AttributeProto::decode(encoded.clone()).map_err(|e| format!("whose ZipMap is malformed: {e}"))?;
        match attribute.name.as_str() {
            "classlabels_int64s" if !attribute.ints.is_empty() => {
                labels = Some(ClassLabels::Int64(attribute.ints))
            }
            "classlabels_strings" if !attribute.strings.is_empty() => {
                let strings = attribute
                    .strings
                    .into_iter()
                    .map(|s| {
                        String::from_utf8(s).map_err(|_| "whose ZipMap has a class label that is not UTF-8")
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                labels = Some(ClassLabels::Strings(strings));
            }
            _ => {}
        }
    }
    let labels = labels.ok_or("whose ZipMap lists no class labels")?;
    if labels.len() > MAX_CLASSES {
        return Err(format!(
            "whose ZipMap has {} classes, more than the {MAX_CLASSES} Ferry serves",
            labels.len()
        ));
    }
    Ok(labels)
}

/// The column of each class label of a served `ZipMap` output.
#[derive(Debug)]
pub struct ClassColumns {
    columns: usize,
    by_int: HashMap<i64, usize>,
    by_text: HashMap<String, usize>,
}

impl ClassColumns {
    /// Columns in the order of `labels`.
    pub fn new(labels: &ClassLabels) -> Self {
        let (by_int, by_text) = match labels {
            ClassLabels::Int64(labels) => (
                labels.iter().enumerate().map(|(i, l)| (*l, i)).collect(),
                HashMap::new(),
            ),
            ClassLabels::Strings(labels) => (
                HashMap::new(),
                labels.iter().enumerate().map(|(i, l)| (l.clone(), i)).collect(),
            ),
        };
        ClassColumns {
            columns: labels.len(),
            by_int,
            by_text,
        }
    }

    /// The probabilities of a `ZipMap` output as FP32 `[rows, classes]`: its shape and little-endian bytes.
    /// A class the labels do not list, which a well-formed model never returns, is an error.
    pub fn tensor(&self, value: DynValue) -> Result<(Vec<i64>, Bytes), String> {
        let sequence = value
            .downcast::<DynSequenceValueType>()
            .map_err(|e| e.to_string())?;
        let maps = sequence
            .try_extract_sequence::<DynMapValueType>()
            .map_err(|e| e.to_string())?;
        let mut values = vec![0f32; maps.len() * self.columns];
        for (row, map) in maps.iter().enumerate() {
            let out = &mut values[row * self.columns..(row + 1) * self.columns];
            let unknown = |class: &dyn std::fmt::Display| {
                format!("row {row} has class {class}, which the ZipMap does not list")
            };
            if self.by_text.is_empty() {
                for (class, p) in map
                    .try_extract_key_values::<i64, f32>()
                    .map_err(|e| e.to_string())?
                {
                    out[*self.by_int.get(&class).ok_or_else(|| unknown(&class))?] = p;
                }
            } else {
                for (class, p) in map
                    .try_extract_key_values::<String, f32>()
                    .map_err(|e| e.to_string())?
                {
                    out[*self.by_text.get(&class).ok_or_else(|| unknown(&class))?] = p;
                }
            }
        }
        let shape = vec![maps.len() as i64, self.columns as i64];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Ok((shape, Bytes::from(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], outputs: &[&str], attributes: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: outputs.iter().map(|s| (*s).to_owned()).collect(),
            op_type: op.into(),
            attribute: attributes
                .iter()
                .map(|a| Bytes::from(a.encode_to_vec()))
                .collect(),
        }
    }

    fn attribute(name: &str, ints: Vec<i64>, strings: &[&str]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            ints,
            strings: strings.iter().map(|s| s.as_bytes().to_vec()).collect(),
        }
    }

    #[test]
    fn labels_are_found_through_identities_and_refused_elsewhere() {
        let nodes = vec![
            node(
                "TreeEnsembleClassifier",
                &["x"],
                &["label", "scores"],
                vec![attribute("nodes_values", vec![1; 1000], &[])],
            ),
            node(
                "ZipMap",
                &["scores"],
                &["zipped"],
                vec![attribute("classlabels_strings", vec![], &["b", "a", "c"])],
            ),
            node("Identity", &["zipped"], &["probabilities"], vec![]),
            node("SequenceConstruct", &["scores"], &["sequence"], vec![]),
            node("ZipMap", &["scores"], &["empty"], vec![]),
        ];
        assert_eq!(
            zipmap_labels(&nodes, "probabilities"),
            Ok(ClassLabels::Strings(vec!["b".into(), "a".into(), "c".into()]))
        );
        let error = zipmap_labels(&nodes, "sequence").expect_err("not a ZipMap");
        assert!(error.contains("SequenceConstruct node"), "{error}");
        let error = zipmap_labels(&nodes, "missing").expect_err("no producer");
        assert!(error.contains("no ZipMap node produces"), "{error}");
        let error = zipmap_labels(&nodes, "empty").expect_err("no labels");
        assert!(error.contains("lists no class labels"), "{error}");
        let cycle = vec![node("Identity", &["loop"], &["loop"], vec![])];
        assert!(
            zipmap_labels(&cycle, "loop").is_err(),
            "a cycle of identities ends"
        );
    }
}

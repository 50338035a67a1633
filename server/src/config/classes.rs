//! Class-probability outputs of converted classical ML models, and the class labels that travel with them.
//!
//! Converters of scikit-learn, XGBoost and LightGBM models (`skl2onnx`, `onnxmltools`) end a classifier by
//! default with a `ZipMap` node: its output is a sequence with one map per row, class label to
//! probability (`seq(map(int64|string, float))`), which Triton's protocol cannot carry. Ferry serves such an
//! output as an FP32 tensor `[batch, classes]` whose columns follow the `ZipMap`'s class labels, which are
//! the converter's class order (scikit-learn's `classes_`, the column order of `predict_proba`). The labels
//! are written into the completed config as the parameter [`CLASS_LABELS_PREFIX`]`<output>`, a JSON list,
//! where clients read them and the classification extension takes them as the output's labels.

use std::collections::HashMap;

use ferry_proto::inference::{ModelConfig, ModelParameter};

/// The config parameter holding an output's class labels: `ferry.class_labels.<output name>`, a JSON list
/// of integers or strings, one per column.
pub const CLASS_LABELS_PREFIX: &str = "ferry.class_labels.";

/// The most classes one output may have: the labels become part of the config Ferry reports and of every
/// classification answer, so they are bounded like a label file (docs/limits.md).
pub const MAX_CLASSES: usize = 65_536;

/// The class labels of a `ZipMap`, in its order, which is the order of the served tensor's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassLabels {
    /// Integer classes (`classlabels_int64s`): XGBoost and LightGBM, and scikit-learn models fit on integers.
    Int64(Vec<i64>),
    /// String classes (`classlabels_strings`): scikit-learn models fit on strings.
    Strings(Vec<String>),
}

impl ClassLabels {
    /// The number of classes, which is the served tensor's last dimension.
    pub fn len(&self) -> usize {
        match self {
            ClassLabels::Int64(labels) => labels.len(),
            ClassLabels::Strings(labels) => labels.len(),
        }
    }

    /// Whether there is no class at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The labels as text, one per class, as the classification extension reports them.
    pub fn texts(&self) -> Vec<String> {
        match self {
            ClassLabels::Int64(labels) => labels.iter().map(i64::to_string).collect(),
            ClassLabels::Strings(labels) => labels.clone(),
        }
    }

    /// The JSON list the config parameter holds.
    fn to_json(&self) -> String {
        match self {
            ClassLabels::Int64(labels) => serde_json::to_string(labels),
            ClassLabels::Strings(labels) => serde_json::to_string(labels),
        }
        .unwrap_or_default()
    }
}

/// What a model tensor is, beyond its element type and shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TensorForm {
    /// A tensor: served as it is.
    #[default]
    Tensor,
    /// A `ZipMap` output, served as FP32 `[batch, classes]` in the order of these labels.
    ClassProbabilities(std::sync::Arc<ClassLabels>),
    /// A value Triton's protocol cannot carry (a sequence or map Ferry does not convert, or a tensor of an
    /// element type with no Triton type); the text says what it is and how to avoid it.
    Unsupported(String),
}

/// The hint every refused sequence or map output carries: how to convert the model without `ZipMap`.
pub const ZIPMAP_HINT: &str = "convert the classifier without ZipMap: skl2onnx \
     `to_onnx(model, X, options={'zipmap': False})` or `convert_sklearn(model, initial_types=..., \
     options={id(model): {'zipmap': False}})`; onnxmltools' convert_xgboost and convert_lightgbm take the same \
     `zipmap` option";

/// Writes the labels of each class-probability output the config serves into its parameters, unless the
/// config sets that parameter itself.
pub(super) fn record_labels<'a>(
    config: &mut ModelConfig,
    outputs: impl IntoIterator<Item = (&'a str, &'a ClassLabels)>,
) {
    for (name, labels) in outputs {
        if !config.output.iter().any(|o| o.name == name) {
            continue;
        }
        let key = format!("{CLASS_LABELS_PREFIX}{name}");
        config.parameters.entry(key).or_insert_with(|| ModelParameter {
            string_value: labels.to_json(),
        });
    }
}

/// The class labels the config's parameters give for each output, as text, by output name. A parameter that
/// is not a JSON list of integers or strings, or lists more than [`MAX_CLASSES`], is a config error.
pub fn labels_from_parameters(config: &ModelConfig) -> Result<HashMap<String, Vec<String>>, String> {
    let mut found = HashMap::new();
    for (key, parameter) in &config.parameters {
        let Some(output) = key.strip_prefix(CLASS_LABELS_PREFIX) else {
            continue;
        };
        let invalid = || {
            format!(
                "parameter {key} must be a JSON list of at most {MAX_CLASSES} integers or strings (the class \
                 labels of output '{output}', one per column)"
            )
        };
        let values: Vec<serde_json::Value> =
            serde_json::from_str(&parameter.string_value).map_err(|_| invalid())?;
        if values.len() > MAX_CLASSES {
            return Err(invalid());
        }
        let texts = values
            .into_iter()
            .map(|value| match value {
                serde_json::Value::String(text) => Some(text),
                serde_json::Value::Number(number) if number.is_i64() => Some(number.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<String>>>()
            .ok_or_else(invalid)?;
        found.insert(output.to_owned(), texts);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_go_into_the_config_and_come_back_as_text() {
        let mut config = ModelConfig {
            output: vec![ferry_proto::inference::ModelOutput {
                name: "probabilities".into(),
                ..Default::default()
            }],
            ..ModelConfig::default()
        };
        let ints = ClassLabels::Int64(vec![3, -1, 7]);
        let strings = ClassLabels::Strings(vec!["cat".into(), "dog \"x\"".into()]);
        record_labels(&mut config, [("probabilities", &ints), ("not_served", &strings)]);
        assert_eq!(
            config.parameters["ferry.class_labels.probabilities"].string_value,
            "[3,-1,7]"
        );
        assert_eq!(config.parameters.len(), 1, "only served outputs get labels");
        let labels = labels_from_parameters(&config).expect("valid");
        assert_eq!(labels["probabilities"], ["3", "-1", "7"]);

        config.parameters.insert(
            "ferry.class_labels.probabilities".into(),
            ModelParameter {
                string_value: strings.to_json(),
            },
        );
        record_labels(&mut config, [("probabilities", &ints)]);
        let labels = labels_from_parameters(&config).expect("valid");
        assert_eq!(
            labels["probabilities"],
            ["cat", "dog \"x\""],
            "a parameter the config sets itself wins"
        );
    }

    #[test]
    fn malformed_label_parameters_are_config_errors() {
        for text in ["{}", "[1.5]", "[true]", "not json", "[[1]]"] {
            let mut config = ModelConfig::default();
            config.parameters.insert(
                "ferry.class_labels.y".into(),
                ModelParameter {
                    string_value: text.into(),
                },
            );
            let error = labels_from_parameters(&config).expect_err(text);
            assert!(
                error.contains("ferry.class_labels.y must be a JSON list"),
                "{error}"
            );
        }
    }
}

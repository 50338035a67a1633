//! Live quality settings: the `ferry.quality.*` keys of a config's `parameters` (see docs/feedback.md),
//! validated when the model loads so that a typo fails the load instead of silently measuring nothing.

use ferry_proto::inference::ModelConfig;

use super::{
    family::{family, shown},
    source::ConfigSource,
    tensors::TensorSpec,
};
use crate::{DataType, Error};

/// The prefix every quality parameter shares; any other key under it is refused.
pub const QUALITY_PREFIX: &str = "ferry.quality.";
/// The most predictions one version keeps waiting for their truth (`ferry.quality.max_pending`).
pub const MAX_QUALITY_PENDING: usize = 1_000_000;
/// The longest a prediction may wait for its truth, in seconds (`ferry.quality.max_age_seconds`): a year.
pub const MAX_QUALITY_AGE_SECONDS: u64 = 365 * 24 * 3600;
/// The most calibration buckets (`ferry.quality.buckets`).
pub const MAX_QUALITY_BUCKETS: usize = 100;

/// What a version's live quality measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QualityMetric {
    /// The share of rows whose predicted class (the argmax of a probability row, or an integer class
    /// output) is the true class.
    Accuracy,
    /// The mean negative log of the probability the model gave the true class, clipped.
    LogLoss,
    /// The mean absolute difference between each predicted value and its true value.
    Mae,
}

impl QualityMetric {
    /// The name the config, the API and the metrics use.
    pub fn name(self) -> &'static str {
        match self {
            QualityMetric::Accuracy => "accuracy",
            QualityMetric::LogLoss => "log_loss",
            QualityMetric::Mae => "mae",
        }
    }

    /// Whether predictions are classes (and truths class indices or labels) rather than values.
    pub fn classifies(self) -> bool {
        self != QualityMetric::Mae
    }
}

/// How a model's predictions are joined with their truth and scored (off unless `ferry.quality.metric`
/// is set).
#[derive(Debug, Clone, PartialEq)]
pub struct QualitySettings {
    /// The metric; `None` leaves quality off.
    pub metric: Option<QualityMetric>,
    /// The index, in the spec's outputs, of the output that holds the prediction.
    pub output: usize,
    /// Predictions kept waiting for their truth, and truths kept waiting for their prediction, at most
    /// each; the oldest is dropped (and counted) to make room.
    pub max_pending: usize,
    /// Seconds a prediction waits for its truth before it is dropped and counted as expired.
    pub max_age_seconds: u64,
    /// Seconds a truth whose prediction is unknown waits for it before it is counted as unmatched.
    pub feedback_wait_seconds: u64,
    /// Equal-width calibration buckets over the predicted probability, from 0 to 1.
    pub buckets: usize,
}

impl Default for QualitySettings {
    fn default() -> Self {
        QualitySettings {
            metric: None,
            output: 0,
            max_pending: 100_000,
            max_age_seconds: 7 * 24 * 3600,
            feedback_wait_seconds: 600,
            buckets: 10,
        }
    }
}

impl QualitySettings {
    /// Whether the version keeps quality metrics.
    pub fn enabled(&self) -> bool {
        self.metric.is_some()
    }
}

/// The quality settings of `config`, whose outputs are `outputs`, with the key, the expected and the given
/// value in every error.
pub(super) fn quality_settings(
    config: &ModelConfig,
    outputs: &[TensorSpec],
    source: ConfigSource<'_>,
) -> Result<QualitySettings, Error> {
    let mut settings = QualitySettings::default();
    let mut output: Option<(usize, &str)> = None;
    for parameter in family(config, QUALITY_PREFIX, source) {
        match parameter.name {
            "metric" => {
                settings.metric = Some(match parameter.value {
                    "accuracy" => QualityMetric::Accuracy,
                    "log_loss" => QualityMetric::LogLoss,
                    "mae" => QualityMetric::Mae,
                    _ => return Err(parameter.refuse("one of accuracy, log_loss and mae")),
                });
            }
            "output" => {
                let index = outputs
                    .iter()
                    .position(|tensor| tensor.name == parameter.value)
                    .ok_or_else(|| parameter.refuse("the name of an output of the model"))?;
                output = Some((index, parameter.key));
            }
            "max_pending" => {
                settings.max_pending = parameter.number_in(
                    1..=MAX_QUALITY_PENDING,
                    format!("a whole number from 1 to {MAX_QUALITY_PENDING}"),
                )?;
            }
            "max_age_seconds" | "feedback_wait_seconds" => {
                let seconds = parameter.number_in(
                    1..=MAX_QUALITY_AGE_SECONDS,
                    format!("a whole number of seconds from 1 to {MAX_QUALITY_AGE_SECONDS}"),
                )?;
                if parameter.name == "max_age_seconds" {
                    settings.max_age_seconds = seconds;
                } else {
                    settings.feedback_wait_seconds = seconds;
                }
            }
            "buckets" => {
                settings.buckets = parameter.number_in(
                    1..=MAX_QUALITY_BUCKETS,
                    format!("a whole number from 1 to {MAX_QUALITY_BUCKETS}"),
                )?;
            }
            _ => {
                return Err(parameter.unknown(&format!(
                    "the quality parameters are {QUALITY_PREFIX}metric, output, max_pending, max_age_seconds, \
                     feedback_wait_seconds and buckets"
                )));
            }
        }
    }
    let Some(metric) = settings.metric else {
        return Ok(settings);
    };
    let metric_key = format!("{QUALITY_PREFIX}metric");
    let (index, key) = match output {
        Some(found) => found,
        None if outputs.len() == 1 => (0, metric_key.as_str()),
        None => {
            return Err(source.error(
                &[metric_key.as_str()],
                format!(
                    "parameter {metric_key} needs {QUALITY_PREFIX}output to name the output that holds the \
                     prediction: the model has {} outputs",
                    outputs.len()
                ),
            ));
        }
    };
    let tensor = &outputs[index];
    let fits = match metric {
        QualityMetric::LogLoss => matches!(
            tensor.data_type,
            DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64
        ),
        QualityMetric::Accuracy | QualityMetric::Mae => {
            !matches!(tensor.data_type, DataType::Bytes | DataType::Bool)
        }
    };
    if !fits {
        let expected = if metric == QualityMetric::LogLoss {
            "a floating-point output (FP16, BF16, FP32 or FP64) of probabilities"
        } else {
            "a numeric output"
        };
        let (name, datatype) = (shown(&tensor.name), tensor.data_type.wire_name());
        let message = if key == metric_key {
            format!(
                "parameter {metric_key} '{}' needs {expected}, but the model's output '{name}' is {datatype}",
                metric.name()
            )
        } else {
            format!(
                "parameter {key} '{name}' names an output of type {datatype}, but {metric_key} '{}' needs \
                 {expected}",
                metric.name()
            )
        };
        return Err(source.error(&[key], message));
    }
    settings.output = index;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::QualityMetric;
    use crate::{
        DataType,
        config::{
            ModelSignature, ModelTensor,
            testing::{assert_each_refused, config_error, parameter, spec_from, spec_with_signature},
        },
    };

    fn tensor(name: &str, data_type: DataType) -> ModelTensor {
        ModelTensor {
            name: name.into(),
            data_type: Some(data_type),
            shape: vec![-1, 4],
            form: Default::default(),
        }
    }

    #[test]
    fn quality_is_off_by_default_and_parameters_set_it() {
        let spec = spec_from("").expect("valid");
        assert!(!spec.quality.enabled());
        let text = [
            parameter("ferry.quality.metric", "log_loss"),
            parameter("ferry.quality.output", "y"),
            parameter("ferry.quality.max_pending", "50"),
            parameter("ferry.quality.max_age_seconds", "60"),
            parameter("ferry.quality.feedback_wait_seconds", "5"),
            parameter("ferry.quality.buckets", "4"),
        ]
        .concat();
        let quality = spec_from(&text).expect("valid").quality;
        assert_eq!(quality.metric, Some(QualityMetric::LogLoss));
        assert_eq!(
            (
                quality.output,
                quality.max_pending,
                quality.max_age_seconds,
                quality.feedback_wait_seconds,
                quality.buckets
            ),
            (0, 50, 60, 5, 4)
        );
        // One output: the metric alone names it.
        let quality = spec_from(&parameter("ferry.quality.metric", "mae"))
            .expect("valid")
            .quality;
        assert_eq!((quality.metric, quality.output), (Some(QualityMetric::Mae), 0));
    }

    #[test]
    fn bad_values_name_the_key_the_expectation_and_the_value() {
        let cases = [
            ("ferry.quality.metric", "f1", "accuracy, log_loss and mae"),
            ("ferry.quality.output", "z", "an output of the model"),
            ("ferry.quality.max_pending", "0", "from 1 to 1000000"),
            ("ferry.quality.max_age_seconds", "-5", "from 1 to"),
            ("ferry.quality.feedback_wait_seconds", "soon", "from 1 to"),
            ("ferry.quality.buckets", "101", "from 1 to 100"),
        ];
        assert_each_refused(&cases);
        // An output that cannot hold what the metric reads.
        let signature = ModelSignature {
            inputs: vec![tensor("x", DataType::Fp32)],
            outputs: vec![tensor("p", DataType::Fp32), tensor("label", DataType::Int64)],
        };
        let text =
            parameter("ferry.quality.metric", "log_loss") + &parameter("ferry.quality.output", "label");
        let message = spec_with_signature(&text, &signature)
            .expect_err("refused")
            .to_string();
        assert!(
            message.contains("ferry.quality.output 'label'")
                && message.contains("INT64")
                && message.contains("floating-point"),
            "{message}"
        );
        let message = spec_with_signature(&parameter("ferry.quality.metric", "mae"), &signature)
            .expect_err("refused")
            .to_string();
        assert!(
            message.contains("needs ferry.quality.output") && message.contains("2 outputs"),
            "{message}"
        );
        let (_, message) = config_error(&parameter("ferry.quality.metrc", "mae"));
        assert!(
            message.contains("ferry.quality.metrc") && message.contains("metric"),
            "{message}"
        );
    }
}

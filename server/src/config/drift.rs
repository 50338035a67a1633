//! Input drift monitoring settings: the `ferry.drift.*` keys of a config's `parameters` (see
//! docs/model_configuration.md), validated when the model loads so that a typo fails the load instead of
//! silently turning monitoring off.

use ferry_proto::inference::ModelConfig;

use super::{family::family, source::ConfigSource};
use crate::Error;

/// The prefix every drift parameter shares; any other key under it is refused.
pub const DRIFT_PREFIX: &str = "ferry.drift.";
/// The most features of one input that are tracked: each costs a few kilobytes of state.
pub const MAX_DRIFT_FEATURES: usize = 1024;
/// The largest live window, in sampled requests: the window costs no memory, only how far back it looks.
pub const MAX_DRIFT_WINDOW: u64 = 1_000_000_000;
/// The longest baseline file name.
const MAX_BASELINE_NAME_BYTES: usize = 255;

/// How a model's inputs are watched for drift (off unless `ferry.drift.sample_rate` is above 0).
#[derive(Debug, Clone, PartialEq)]
pub struct DriftSettings {
    /// The share of requests whose inputs are sampled, in [0, 1]; 0 turns monitoring off.
    pub sample_rate: f64,
    /// Features (positions along the last dimension) tracked per input; later ones are ignored.
    pub max_features: usize,
    /// Sampled requests per live window; the live statistics cover the last one to two windows.
    pub window: u64,
    /// The population stability index above which a feature is reported as drifting.
    pub psi_threshold: f64,
    /// The Kolmogorov-Smirnov statistic above which a feature is reported as drifting.
    pub ks_threshold: f64,
    /// A `.npy` or `.npz` file in the model folder whose data is the baseline.
    pub baseline: Option<String>,
}

impl Default for DriftSettings {
    fn default() -> Self {
        DriftSettings {
            sample_rate: 0.0,
            max_features: 32,
            window: 10_000,
            psi_threshold: 0.2,
            ks_threshold: 0.1,
            baseline: None,
        }
    }
}

impl DriftSettings {
    /// Whether any request is sampled.
    pub fn enabled(&self) -> bool {
        self.sample_rate > 0.0
    }
}

/// The drift settings of `config`, with the key, the expected and the given value in every error.
pub(super) fn drift_settings(config: &ModelConfig, source: ConfigSource<'_>) -> Result<DriftSettings, Error> {
    let mut settings = DriftSettings::default();
    for parameter in family(config, DRIFT_PREFIX, source) {
        let value = parameter.value;
        match parameter.name {
            "sample_rate" => settings.sample_rate = parameter.number_in(0.0..=1.0, "a number from 0 to 1")?,
            "max_features" => {
                settings.max_features = parameter.number_in(
                    1..=MAX_DRIFT_FEATURES,
                    format!("a whole number from 1 to {MAX_DRIFT_FEATURES}"),
                )?;
            }
            "window" => {
                settings.window = parameter.number_in(
                    1..=MAX_DRIFT_WINDOW,
                    format!("a whole number from 1 to {MAX_DRIFT_WINDOW}"),
                )?;
            }
            "psi_threshold" | "ks_threshold" => {
                let threshold = value
                    .parse::<f64>()
                    .ok()
                    .filter(|t| t.is_finite() && *t > 0.0)
                    .ok_or_else(|| parameter.refuse("a number above 0"))?;
                if parameter.name == "psi_threshold" {
                    settings.psi_threshold = threshold;
                } else {
                    settings.ks_threshold = threshold;
                }
            }
            "baseline" => {
                let plain = !value.is_empty()
                    && value.len() <= MAX_BASELINE_NAME_BYTES
                    && !value.contains(['/', '\\'])
                    && value != ".."
                    && (value.ends_with(".npy") || value.ends_with(".npz"));
                if !plain {
                    return Err(parameter.refuse(&format!(
                        "the name of a .npy or .npz file in the model folder (no path, at most \
                         {MAX_BASELINE_NAME_BYTES} bytes)"
                    )));
                }
                settings.baseline = Some(value.to_owned());
            }
            _ => {
                return Err(parameter.unknown(&format!(
                    "the drift parameters are {DRIFT_PREFIX}sample_rate, max_features, window, psi_threshold, \
                     ks_threshold and baseline"
                )));
            }
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{assert_each_refused, config_error, parameter, spec_from};

    #[test]
    fn drift_is_off_by_default_and_parameters_set_it() {
        let spec = spec_from("").expect("valid");
        assert!(!spec.drift.enabled());
        let text = [
            parameter("ferry.drift.sample_rate", "0.25"),
            parameter("ferry.drift.max_features", "8"),
            parameter("ferry.drift.window", "500"),
            parameter("ferry.drift.psi_threshold", "0.3"),
            parameter("ferry.drift.ks_threshold", "0.15"),
            parameter("ferry.drift.baseline", "reference.npz"),
        ]
        .concat();
        let drift = spec_from(&text).expect("valid").drift;
        assert!(drift.enabled());
        assert_eq!(drift.sample_rate, 0.25);
        assert_eq!(drift.max_features, 8);
        assert_eq!(drift.window, 500);
        assert_eq!(drift.psi_threshold, 0.3);
        assert_eq!(drift.ks_threshold, 0.15);
        assert_eq!(drift.baseline.as_deref(), Some("reference.npz"));
    }

    #[test]
    fn bad_values_name_the_key_the_expectation_and_the_value() {
        let cases = [
            ("ferry.drift.sample_rate", "1.5", "from 0 to 1"),
            ("ferry.drift.sample_rate", "often", "from 0 to 1"),
            ("ferry.drift.max_features", "0", "from 1 to 1024"),
            ("ferry.drift.max_features", "5000", "from 1 to 1024"),
            ("ferry.drift.window", "-3", "from 1 to"),
            ("ferry.drift.psi_threshold", "0", "above 0"),
            ("ferry.drift.ks_threshold", "NaN", "above 0"),
            ("ferry.drift.baseline", "../data.npy", ".npy or .npz"),
            ("ferry.drift.baseline", "data.csv", ".npy or .npz"),
        ];
        assert_each_refused(&cases);
    }

    #[test]
    fn an_unknown_drift_key_is_refused() {
        let (_, message) = config_error(&parameter("ferry.drift.sample_rte", "0.5"));
        assert!(
            message.contains("ferry.drift.sample_rte") && message.contains("sample_rate"),
            "{message}"
        );
    }
}

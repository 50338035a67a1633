//! Payload logging settings: the `ferry.payload_log.*` keys of a config's `parameters` (see
//! docs/payload_logging.md), validated when the model loads so that a typo fails the load instead of silently
//! logging nothing, or everything. Where the records go is the server's `--payload-log-dir`, never a config
//! key, so that a config sent with a load request cannot choose where Ferry writes files.

use ferry_proto::inference::ModelConfig;

use super::{
    family::{family, shown},
    source::ConfigSource,
};
use crate::Error;

/// The prefix every payload logging parameter shares; any other key under it is refused.
pub const PAYLOAD_LOG_PREFIX: &str = "ferry.payload_log.";
/// The largest per-record payload budget, `ferry.payload_log.max_bytes`.
pub const MAX_PAYLOAD_LOG_RECORD_BYTES: usize = 16 * 1024 * 1024;
/// The most tensor names one list parameter (`inputs`, `outputs`, `redact`) may hold.
pub const MAX_PAYLOAD_LOG_NAMES: usize = 256;

/// Which requests of a model are logged, and how much of each.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadLogSettings {
    /// The share of requests logged, in [0, 1]; 0 turns logging off.
    pub rate: f64,
    /// The inputs recorded; `None` records all.
    pub inputs: Option<Vec<String>>,
    /// The outputs recorded; `None` records all.
    pub outputs: Option<Vec<String>>,
    /// Payload bytes one record may carry: tensors past the budget are recorded without their data.
    pub max_bytes: usize,
    /// Tensors (inputs or outputs) whose values are never written.
    pub redact: Vec<String>,
}

impl Default for PayloadLogSettings {
    fn default() -> Self {
        PayloadLogSettings {
            rate: 0.0,
            inputs: None,
            outputs: None,
            max_bytes: 64 * 1024,
            redact: Vec::new(),
        }
    }
}

impl PayloadLogSettings {
    /// Whether any request is logged.
    pub fn enabled(&self) -> bool {
        self.rate > 0.0
    }
}

/// The payload logging settings of `config`, with the key, the expected and the given value in every error.
pub(super) fn payload_log_settings(
    config: &ModelConfig,
    source: ConfigSource<'_>,
) -> Result<PayloadLogSettings, Error> {
    let mut settings = PayloadLogSettings::default();
    for parameter in family(config, PAYLOAD_LOG_PREFIX, source) {
        let names = || {
            let names: Vec<String> = parameter
                .value
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect();
            if names.len() > MAX_PAYLOAD_LOG_NAMES {
                return Err(parameter.refuse(&format!(
                    "a comma-separated list of at most {MAX_PAYLOAD_LOG_NAMES} tensor names"
                )));
            }
            Ok(names)
        };
        match parameter.name {
            "rate" => settings.rate = parameter.number_in(0.0..=1.0, "a number from 0 to 1")?,
            "max_bytes" => {
                settings.max_bytes = parameter.number_in(
                    0..=MAX_PAYLOAD_LOG_RECORD_BYTES,
                    format!("a whole number from 0 to {MAX_PAYLOAD_LOG_RECORD_BYTES}"),
                )?;
            }
            "inputs" => settings.inputs = Some(names()?),
            "outputs" => settings.outputs = Some(names()?),
            "redact" => settings.redact = names()?,
            _ => {
                return Err(parameter.unknown(&format!(
                    "the payload logging parameters are {PAYLOAD_LOG_PREFIX}rate, inputs, outputs, max_bytes \
                     and redact"
                )));
            }
        }
    }
    let known = |name: &String, tensors: &[ferry_proto::inference::ModelInput]| {
        tensors.iter().any(|tensor| &tensor.name == name)
    };
    let outputs: Vec<&str> = config.output.iter().map(|output| output.name.as_str()).collect();
    let checks = [
        (
            "inputs",
            settings.inputs.as_deref().unwrap_or_default(),
            true,
            false,
        ),
        (
            "outputs",
            settings.outputs.as_deref().unwrap_or_default(),
            false,
            true,
        ),
        ("redact", settings.redact.as_slice(), true, true),
    ];
    for (suffix, names, inputs, outputs_too) in checks {
        for name in names {
            let found =
                (inputs && known(name, &config.input)) || (outputs_too && outputs.contains(&name.as_str()));
            if !found {
                let key = format!("{PAYLOAD_LOG_PREFIX}{suffix}");
                return Err(source.error(
                    &[key.as_str()],
                    format!(
                        "parameter {key} names '{}', which is not a tensor of the model",
                        shown(name)
                    ),
                ));
            }
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{assert_each_refused, config_error, parameter, spec_from};

    #[test]
    fn logging_is_off_by_default_and_parameters_set_it() {
        let spec = spec_from("").expect("valid");
        assert!(!spec.payload_log.enabled());
        let text = [
            parameter("ferry.payload_log.rate", "0.5"),
            parameter("ferry.payload_log.max_bytes", "1000"),
            parameter("ferry.payload_log.outputs", ""),
        ]
        .concat();
        let settings = spec_from(&text).expect("valid").payload_log;
        assert!(settings.enabled());
        assert_eq!(settings.rate, 0.5);
        assert_eq!(settings.max_bytes, 1000);
        assert_eq!(settings.inputs, None);
        assert_eq!(settings.outputs, Some(Vec::new()));
    }

    #[test]
    fn bad_values_name_the_key_the_expectation_and_the_value() {
        let cases = [
            ("ferry.payload_log.rate", "1.5", "from 0 to 1"),
            ("ferry.payload_log.rate", "often", "from 0 to 1"),
            ("ferry.payload_log.max_bytes", "-1", "from 0 to"),
            ("ferry.payload_log.max_bytes", "99999999999", "from 0 to"),
        ];
        assert_each_refused(&cases);
    }

    #[test]
    fn unknown_keys_and_tensors_are_refused() {
        let (_, message) = config_error(&parameter("ferry.payload_log.sample_rate", "0.5"));
        assert!(
            message.contains("ferry.payload_log.sample_rate") && message.contains("rate"),
            "{message}"
        );
        let (_, message) = config_error(&parameter("ferry.payload_log.redact", "nope"));
        assert!(
            message.contains("ferry.payload_log.redact") && message.contains("'nope'"),
            "{message}"
        );
    }
}

//! A family of `ferry.<name>.*` keys in a config's `parameters` (drift monitoring, payload logging): found and
//! ordered in one way, each with errors that name the key, what it takes and what it got. The value a config
//! gave is shown cut to [`MAX_SHOWN_VALUE_CHARS`], so that a megabyte-long value (a config sent with a load
//! request may carry one) is never echoed whole into an error.

use std::{fmt::Display, ops::RangeInclusive, str::FromStr};

use ferry_proto::inference::ModelConfig;

use super::source::ConfigSource;
use crate::Error;

/// The most characters of a refused value an error shows.
pub const MAX_SHOWN_VALUE_CHARS: usize = 64;

/// `value` as an error shows it: whole when short, otherwise its first [`MAX_SHOWN_VALUE_CHARS`]
/// characters and an ellipsis.
pub(super) fn shown(value: &str) -> String {
    let mut shown: String = value.chars().take(MAX_SHOWN_VALUE_CHARS).collect();
    if shown.len() < value.len() {
        shown.push('…');
    }
    shown
}

/// One key of a family, with its value trimmed.
pub(super) struct FamilyParameter<'a> {
    /// The whole key, e.g. `ferry.drift.window`.
    pub(super) key: &'a str,
    /// The key after the family's prefix, e.g. `window`.
    pub(super) name: &'a str,
    pub(super) value: &'a str,
    source: ConfigSource<'a>,
}

/// The keys of `config` under `prefix`, in key order (so that the first mistake reported does not depend on
/// the map's order).
pub(super) fn family<'a>(
    config: &'a ModelConfig,
    prefix: &str,
    source: ConfigSource<'a>,
) -> Vec<FamilyParameter<'a>> {
    let mut found: Vec<FamilyParameter<'a>> = config
        .parameters
        .iter()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix(prefix)?;
            Some(FamilyParameter {
                key,
                name,
                value: value.string_value.trim(),
                source,
            })
        })
        .collect();
    found.sort_by_key(|parameter| parameter.key);
    found
}

impl FamilyParameter<'_> {
    /// The error for a value that is not `expected`.
    pub(super) fn refuse(&self, expected: &str) -> Error {
        self.source.error(
            &[self.key],
            format!(
                "parameter {} must be {expected}, got '{}'",
                self.key,
                shown(self.value)
            ),
        )
    }

    /// The error for a key the family does not have; `known` lists the ones it has.
    pub(super) fn unknown(&self, known: &str) -> Error {
        self.source
            .error(&[self.key], format!("unknown parameter {}: {known}", self.key))
    }

    /// The value as a number within `range`, or the error saying it must be `expected`.
    pub(super) fn number_in<T>(&self, range: RangeInclusive<T>, expected: impl Display) -> Result<T, Error>
    where
        T: FromStr + PartialOrd,
    {
        self.value
            .parse::<T>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| self.refuse(&expected.to_string()))
    }
}

/// A `parameters` key that switches something on or off: `None` when the config does not set it, otherwise
/// `1`/`true` or `0`/`false` (trimmed, any case); any other value is refused with an error naming the key and
/// the value given, cut short.
pub(super) fn switch(
    config: &ModelConfig,
    key: &str,
    source: ConfigSource<'_>,
) -> Result<Option<bool>, Error> {
    let Some(value) = config.parameters.get(key) else {
        return Ok(None);
    };
    let value = value.string_value.trim();
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" => Ok(Some(true)),
        "0" | "false" => Ok(Some(false)),
        _ => Err(source.error(
            &[key],
            format!(
                "parameter {key} must be 0, 1, true or false, got '{}'",
                shown(value)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::config_error;

    #[test]
    fn a_long_refused_value_is_shown_cut_short() {
        let long = "9".repeat(10_000);
        let text =
            format!("parameters {{ key: \"ferry.drift.window\" value {{ string_value: \"{long}\" }} }}\n");
        let (_, message) = config_error(&text);
        assert!(
            message.contains(&format!("got '{}…'", "9".repeat(64))),
            "{message}"
        );
        assert!(message.len() < 300, "{message}");
    }
}

//! Whether one model loads on its first request (`ferry.load_on_demand`), whatever the server's
//! `--load-on-demand` says for the others.

use ferry_proto::inference::ModelConfig;

use super::{family::switch, source::ConfigSource};
use crate::Error;

/// The `parameters` key that makes a model load on its first request (`"true"`) or only at start and on
/// load requests (`"false"`), overriding `--load-on-demand` for that model.
pub const LOAD_ON_DEMAND: &str = "ferry.load_on_demand";

/// What the config says about loading the model on demand: `None` when it leaves it to the server's flag.
pub fn load_on_demand(config: &ModelConfig, source: ConfigSource<'_>) -> Result<Option<bool>, Error> {
    switch(config, LOAD_ON_DEMAND, source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_model_config, testing::config_error};

    fn said(text: &str) -> Option<bool> {
        let config = parse_model_config(text, "m/config.pbtxt").expect("parses");
        let source = ConfigSource {
            path: "m/config.pbtxt",
            text: Some(text),
        };
        load_on_demand(&config, source).expect("valid")
    }

    #[test]
    fn the_key_overrides_the_flag_only_when_set() {
        let with = |value: &str| {
            format!("parameters {{ key: \"ferry.load_on_demand\" value {{ string_value: \"{value}\" }} }}\n")
        };
        assert_eq!(said("max_batch_size: 2\n"), None);
        for yes in ["true", "1", " TRUE "] {
            assert_eq!(said(&with(yes)), Some(true), "{yes}");
        }
        for no in ["false", "0"] {
            assert_eq!(said(&with(no)), Some(false), "{no}");
        }
        let (line, message) = config_error(&format!("max_batch_size: 2\n{}", with("lazily")));
        assert_eq!(line, 2);
        assert_eq!(
            message,
            "parameter ferry.load_on_demand must be 0, 1, true or false, got 'lazily'"
        );
    }
}

//! TraceSetting and LogSettings: reading and changing the trace rate and the log levels at run time.

use std::collections::HashMap;

use ferry_proto::inference::{
    LogSettingsRequest, LogSettingsResponse, TraceSettingRequest, TraceSettingResponse, log_settings_request,
    log_settings_response, trace_setting_response,
};

use crate::{Error, telemetry};

/// Applies a TraceSetting request and returns the settings in force. Ferry traces with OpenTelemetry, one
/// request in every `trace_rate`; `trace_level` OFF stops tracing, any other level traces at the rate.
pub fn trace_setting(request: TraceSettingRequest) -> Result<TraceSettingResponse, Error> {
    if !request.model_name.is_empty() {
        return Err(Error::invalid(format!(
            "trace settings apply to the whole server; per-model settings (model_name '{}') are not supported",
            request.model_name
        )));
    }
    for (key, setting) in &request.settings {
        let value = setting.value.first().map(String::as_str);
        match (key.as_str(), value) {
            ("trace_rate", None) => telemetry::set_trace_rate(1),
            ("trace_rate", Some(_)) if setting.value.len() > 1 => {
                return Err(Error::invalid("expect only 1 value for 'trace_rate'"));
            }
            ("trace_rate", Some(rate)) => {
                // Triton's texts (`RegisterTrace` in grpc_server.cc), for a rate that must fit in uint32.
                let parsed = rate
                    .parse::<i64>()
                    .map_err(|_| Error::invalid(format!("Unable to parse 'trace_rate', got: {rate}")))?;
                let rate = u32::try_from(parsed).map_err(|_| {
                    Error::invalid(format!(
                        "Unable to parse 'trace_rate', value is out of range [ 0, {} ], got: {rate}",
                        u32::MAX
                    ))
                })?;
                telemetry::set_trace_rate(u64::from(rate));
            }
            ("trace_level", None) => telemetry::set_trace_rate(1),
            ("trace_level", Some(_))
                if setting.value.len() > 1 && setting.value.iter().any(|level| level == "OFF") =>
            {
                return Err(Error::invalid("Expect only one trace level 'OFF' is specified"));
            }
            ("trace_level", Some(_)) if setting.value.iter().any(|level| level == "OFF") => {
                telemetry::set_trace_rate(0);
            }
            ("trace_level", Some(_)) => {
                if telemetry::trace_rate() == 0 {
                    telemetry::set_trace_rate(1);
                }
            }
            ("trace_count" | "log_frequency" | "trace_file" | "trace_mode", _) => {
                return Err(Error::invalid(format!(
                    "trace setting '{key}' is not supported: Ferry exports traces over OTLP (--otlp-endpoint)"
                )));
            }
            (other, _) => return Err(Error::invalid(format!("unknown trace setting '{other}'"))),
        }
    }
    let rate = telemetry::trace_rate();
    let value = |v: &str| trace_setting_response::SettingValue {
        value: vec![v.to_owned()],
    };
    let level = if rate == 0 { "OFF" } else { "TIMESTAMPS" };
    Ok(TraceSettingResponse {
        settings: HashMap::from([
            ("trace_level".to_owned(), value(level)),
            ("trace_rate".to_owned(), value(&rate.to_string())),
            ("trace_count".to_owned(), value("-1")),
            ("log_frequency".to_owned(), value("0")),
            ("trace_mode".to_owned(), value("opentelemetry")),
        ]),
    })
}

/// Applies a LogSettings request and returns the settings in force.
pub fn log_settings(request: LogSettingsRequest) -> Result<LogSettingsResponse, Error> {
    use log_settings_request::setting_value::ParameterChoice as Given;
    let mut levels = telemetry::log_levels();
    for (key, setting) in &request.settings {
        // Triton's texts (`RegisterLogging` in grpc_server.cc).
        let wrong = |expected: &str| Error::invalid(format!("expect {expected} for '{key}'"));
        match (key.as_str(), &setting.parameter_choice) {
            ("log_info", Some(Given::BoolParam(on))) => levels.info = *on,
            ("log_warning", Some(Given::BoolParam(on))) => levels.warning = *on,
            ("log_error", Some(Given::BoolParam(on))) => levels.error = *on,
            ("log_verbose_level", Some(Given::Uint32Param(level))) => levels.verbose = *level,
            ("log_info" | "log_warning" | "log_error", _) => return Err(wrong("boolean")),
            ("log_verbose_level", _) => return Err(wrong("int32")),
            ("log_file" | "log_format", _) => {
                return Err(Error::invalid(format!(
                    "log setting '{key}' cannot change at run time; start ferry with --log-format instead"
                )));
            }
            (other, _) => return Err(Error::invalid(format!("unknown log setting '{other}'"))),
        }
    }
    if !request.settings.is_empty() {
        telemetry::set_log_levels(levels).map_err(Error::invalid)?;
    }
    use log_settings_response::{SettingValue, setting_value::ParameterChoice as Current};
    let setting = |choice| SettingValue {
        parameter_choice: Some(choice),
    };
    Ok(LogSettingsResponse {
        settings: HashMap::from([
            ("log_info".to_owned(), setting(Current::BoolParam(levels.info))),
            (
                "log_warning".to_owned(),
                setting(Current::BoolParam(levels.warning)),
            ),
            ("log_error".to_owned(), setting(Current::BoolParam(levels.error))),
            (
                "log_verbose_level".to_owned(),
                setting(Current::Uint32Param(levels.verbose)),
            ),
        ]),
    })
}

#[cfg(test)]
mod tests {
    use ferry_proto::inference::trace_setting_request;

    use super::*;

    fn trace(key: &str, values: &[&str]) -> TraceSettingRequest {
        TraceSettingRequest {
            settings: HashMap::from([(
                key.to_owned(),
                trace_setting_request::SettingValue {
                    value: values.iter().map(|v| (*v).to_owned()).collect(),
                },
            )]),
            model_name: String::new(),
        }
    }

    #[test]
    fn the_trace_rate_and_level_change_and_are_reported() {
        let response = trace_setting(trace("trace_rate", &["10"])).expect("valid");
        assert_eq!(response.settings["trace_rate"].value, ["10"]);
        let response = trace_setting(trace("trace_level", &["OFF"])).expect("valid");
        assert_eq!(response.settings["trace_level"].value, ["OFF"]);
        assert_eq!(telemetry::trace_rate(), 0);
        let response = trace_setting(trace("trace_level", &["TIMESTAMPS"])).expect("valid");
        assert_eq!(response.settings["trace_level"].value, ["TIMESTAMPS"]);
        trace_setting(trace("trace_rate", &["1"])).expect("valid");
        // Triton's texts (`RegisterTrace` in grpc_server.cc).
        let error = trace_setting(trace("trace_rate", &["often"])).expect_err("not a number");
        assert_eq!(error.to_string(), "Unable to parse 'trace_rate', got: often");
        let error = trace_setting(trace("trace_rate", &["5000000000"])).expect_err("over uint32");
        assert_eq!(
            error.to_string(),
            "Unable to parse 'trace_rate', value is out of range [ 0, 4294967295 ], got: 5000000000"
        );
        let error = trace_setting(trace("trace_level", &["OFF", "TIMESTAMPS"])).expect_err("OFF alone");
        assert_eq!(
            error.to_string(),
            "Expect only one trace level 'OFF' is specified"
        );
        assert!(trace_setting(trace("nope", &[])).is_err());
    }

    #[test]
    fn log_settings_check_their_types() {
        let request = LogSettingsRequest {
            settings: HashMap::from([(
                "log_info".to_owned(),
                log_settings_request::SettingValue {
                    parameter_choice: Some(
                        log_settings_request::setting_value::ParameterChoice::Uint32Param(1),
                    ),
                },
            )]),
        };
        let error = log_settings(request).expect_err("log_info takes a bool");
        // Triton's text (`RegisterLogging` in grpc_server.cc).
        assert_eq!(error.to_string(), "expect boolean for 'log_info'");
        let current = log_settings(LogSettingsRequest::default()).expect("reading is always allowed");
        assert!(current.settings.contains_key("log_verbose_level"));
    }
}

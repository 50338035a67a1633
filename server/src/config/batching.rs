//! Turning a config's scheduling settings (`dynamic_batching`, or none) into the batcher's policy, with
//! Triton's checks on impossible values.

use std::time::Duration;

use ferry_batching::{BatchingPolicy, QueuePolicy, TimeoutAction};
use ferry_proto::inference::{
    ModelConfig, ModelDynamicBatching, ModelQueuePolicy, model_config::SchedulingChoice,
    model_queue_policy::TimeoutAction as ConfigTimeoutAction,
};

use super::source::ConfigSource;
use crate::Error;

/// How many requests a priority level holds when its `max_queue_size` is 0 (Triton's "unlimited"): a bound
/// that turns overload into answers instead of unbounded memory. A request that finds its level full gets
/// Triton's answer to a full queue, UNAVAILABLE "Exceeds maximum queue size" (REST 503).
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 4096;

/// The config `parameters` key that turns on Ferry's adaptive queue delay (`"true"` or `"false"`, default
/// false): a batch waits for more requests only while more are expected within `max_queue_delay_microseconds`
/// (see docs/batching.md). The `ferry.` prefix keeps it apart from the keys of Triton's backends.
pub const ADAPTIVE_QUEUE_DELAY: &str = "ferry.adaptive_queue_delay";

/// The config `parameters` key that lets a request handler run a lone request of a quick model itself, on
/// the async worker it arrived on, instead of handing it to an instance thread and being woken back
/// (docs/batching.md, "Data path"): `"false"` (the default), `"true"` (lone runs must average under
/// [`crate::model::LONE_RUN_LIMIT`]) or that average limit in microseconds, 1 to
/// [`MAX_LONE_RUN_LIMIT_MICROS`]. Off by default because it runs ONNX Runtime on an async worker, which
/// Ferry otherwise never does.
pub const LONE_REQUESTS_ON_WORKER: &str = "ferry.lone_requests_on_worker";

/// The highest limit `ferry.lone_requests_on_worker` may set: a millisecond on an async worker is already ten
/// times what tokio asks of a task between `.await`s.
pub const MAX_LONE_RUN_LIMIT_MICROS: u64 = 1_000;

/// How long lone runs may take on average for handlers to run them themselves
/// ([`LONE_REQUESTS_ON_WORKER`]); `None` when off. A value of another form fails the load naming the key.
pub(super) fn lone_requests_on_worker(
    config: &ModelConfig,
    source: ConfigSource<'_>,
) -> Result<Option<Duration>, Error> {
    let Some(parameter) = config.parameters.get(LONE_REQUESTS_ON_WORKER) else {
        return Ok(None);
    };
    match parameter.string_value.trim() {
        "false" => Ok(None),
        "true" => Ok(Some(crate::model::LONE_RUN_LIMIT)),
        other => match other.parse::<u64>() {
            Ok(micros) if (1..=MAX_LONE_RUN_LIMIT_MICROS).contains(&micros) => {
                Ok(Some(Duration::from_micros(micros)))
            }
            _ => Err(source.error(
                &[LONE_REQUESTS_ON_WORKER],
                format!(
                    "parameter {LONE_REQUESTS_ON_WORKER} must be \"true\", \"false\" or a limit in microseconds \
                     from 1 to {MAX_LONE_RUN_LIMIT_MICROS}, got '{other}'"
                ),
            )),
        },
    }
}

/// The batching policy of a validated config whose `max_batch_size` is `max_batch_size`.
pub fn batching_policy(
    config: &ModelConfig,
    max_batch_size: usize,
    source: ConfigSource<'_>,
) -> Result<BatchingPolicy, Error> {
    let adaptive_delay = adaptive_delay(config, source)?;
    let Some(SchedulingChoice::DynamicBatching(batching)) = &config.scheduling_choice else {
        if adaptive_delay {
            return Err(source.error(
                &[ADAPTIVE_QUEUE_DELAY],
                format!(
                    "parameter {ADAPTIVE_QUEUE_DELAY} needs dynamic_batching, which this model does not have"
                ),
            ));
        }
        return Ok(BatchingPolicy::unbatched(Some(DEFAULT_MAX_QUEUE_SIZE)));
    };
    let mut preferred = Vec::with_capacity(batching.preferred_batch_size.len());
    for &size in &batching.preferred_batch_size {
        match usize::try_from(size) {
            Ok(size) if (1..=max_batch_size).contains(&size) => preferred.push(size),
            _ => {
                return Err(source.error(
                    &["preferred_batch_size"],
                    format!(
                        "preferred_batch_size {size} must be between 1 and max_batch_size {max_batch_size}"
                    ),
                ));
            }
        }
    }
    let (levels, default_level) = priority_levels(batching, source)?;
    Ok(BatchingPolicy {
        dynamic: true,
        max_batch_size,
        preferred_batch_sizes: preferred,
        max_queue_delay: Duration::from_micros(batching.max_queue_delay_microseconds),
        adaptive_delay,
        preserve_ordering: batching.preserve_ordering,
        levels,
        default_level,
    })
}

/// Whether the config turns the adaptive queue delay on; any value but "true" or "false" fails the load.
fn adaptive_delay(config: &ModelConfig, source: ConfigSource<'_>) -> Result<bool, Error> {
    let Some(parameter) = config.parameters.get(ADAPTIVE_QUEUE_DELAY) else {
        return Ok(false);
    };
    match parameter.string_value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(source.error(
            &[ADAPTIVE_QUEUE_DELAY],
            format!("parameter {ADAPTIVE_QUEUE_DELAY} must be \"true\" or \"false\", got '{other}'"),
        )),
    }
}

fn priority_levels(
    batching: &ModelDynamicBatching,
    source: ConfigSource<'_>,
) -> Result<(Vec<QueuePolicy>, usize), Error> {
    let default_policy = batching
        .default_queue_policy
        .as_ref()
        .map(queue_policy)
        .unwrap_or_default();
    if batching.priority_levels == 0 {
        if !batching.priority_queue_policy.is_empty() {
            return Err(source.error(
                &["priority_queue_policy"],
                "priority_queue_policy needs priority_levels greater than 0",
            ));
        }
        return Ok((vec![default_policy], 0));
    }
    let levels = usize::try_from(batching.priority_levels).unwrap_or(usize::MAX);
    if levels > 1 << 16 {
        return Err(source.error(
            &["priority_levels"],
            format!("priority_levels is {levels}; at most 65536 levels are supported"),
        ));
    }
    let default_level = batching.default_priority_level;
    if !(1..=batching.priority_levels).contains(&default_level) {
        return Err(source.error(
            &["default_priority_level"],
            format!(
                "default_priority_level must be between 1 and priority_levels {levels}, got {default_level}"
            ),
        ));
    }
    let mut policies = vec![default_policy; levels];
    for (level, policy) in &batching.priority_queue_policy {
        if !(1..=batching.priority_levels).contains(level) {
            return Err(source.error(
                &["priority_queue_policy"],
                format!("priority_queue_policy names level {level}, but levels are 1 to {levels}"),
            ));
        }
        policies[*level as usize - 1] = queue_policy(policy);
    }
    Ok((policies, default_level as usize - 1))
}

fn queue_policy(policy: &ModelQueuePolicy) -> QueuePolicy {
    QueuePolicy {
        timeout_action: match policy.timeout_action() {
            ConfigTimeoutAction::Reject => TimeoutAction::Reject,
            ConfigTimeoutAction::Delay => TimeoutAction::Delay,
        },
        default_timeout: (policy.default_timeout_microseconds > 0)
            .then(|| Duration::from_micros(policy.default_timeout_microseconds)),
        allow_timeout_override: policy.allow_timeout_override,
        max_queue_size: Some(if policy.max_queue_size == 0 {
            DEFAULT_MAX_QUEUE_SIZE
        } else {
            policy.max_queue_size as usize
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_model_config;

    fn policy(text: &str) -> Result<BatchingPolicy, Error> {
        let config = parse_model_config(text, "c")?;
        let source = ConfigSource {
            path: "c",
            text: Some(text),
        };
        batching_policy(&config, config.max_batch_size as usize, source)
    }

    #[test]
    fn no_dynamic_batching_runs_requests_alone() {
        let policy = policy("max_batch_size: 8\n").expect("valid");
        assert!(!policy.dynamic);
    }

    #[test]
    fn dynamic_batching_settings_are_carried_over() {
        let text = "max_batch_size: 16\ndynamic_batching {\n  preferred_batch_size: [ 4, 8 ]\n  \
                    max_queue_delay_microseconds: 250\n  preserve_ordering: true\n  priority_levels: 2\n  \
                    default_priority_level: 2\n  default_queue_policy { max_queue_size: 7 }\n  \
                    priority_queue_policy { key: 1 value { timeout_action: DELAY default_timeout_microseconds: 90 \
                    allow_timeout_override: true } }\n}\n";
        let policy = policy(text).expect("valid");
        assert!(policy.dynamic && policy.preserve_ordering);
        assert_eq!(policy.max_batch_size, 16);
        assert_eq!(policy.preferred_batch_sizes, [4, 8]);
        assert_eq!(policy.max_queue_delay, Duration::from_micros(250));
        assert_eq!(policy.default_level, 1);
        assert_eq!(policy.levels[0].timeout_action, TimeoutAction::Delay);
        assert_eq!(policy.levels[0].default_timeout, Some(Duration::from_micros(90)));
        assert!(policy.levels[0].allow_timeout_override);
        assert_eq!(policy.levels[1].max_queue_size, Some(7));
        assert_eq!(policy.levels[0].max_queue_size, Some(DEFAULT_MAX_QUEUE_SIZE));
    }

    #[test]
    fn the_adaptive_queue_delay_is_off_unless_asked_for() {
        let with = |value: &str| {
            format!(
                "max_batch_size: 8\ndynamic_batching {{ max_queue_delay_microseconds: 500 }}\n\
                 parameters {{ key: \"ferry.adaptive_queue_delay\" value {{ string_value: \"{value}\" }} }}\n"
            )
        };
        let fixed = policy("max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 500 }\n")
            .expect("valid");
        assert!(!fixed.adaptive_delay);
        let adaptive = policy(&with("true")).expect("valid");
        assert!(adaptive.adaptive_delay);
        assert_eq!(adaptive.max_queue_delay, Duration::from_micros(500));
        assert!(!policy(&with("false")).expect("valid").adaptive_delay);
        let unbatched = "max_batch_size: 8\nparameters { key: \"ferry.adaptive_queue_delay\" value { string_value: \"false\" } }\n";
        assert!(!policy(unbatched).expect("false asks for nothing").dynamic);
    }

    #[test]
    fn a_bad_adaptive_queue_delay_fails_the_load_naming_key_expected_and_given() {
        let text = "max_batch_size: 8\ndynamic_batching { }\nparameters {\n  key: \"ferry.adaptive_queue_delay\"\n  \
                    value { string_value: \"yes\" }\n}\n";
        match policy(text) {
            Err(Error::Config { line, message, .. }) => {
                assert_eq!(
                    message,
                    "parameter ferry.adaptive_queue_delay must be \"true\" or \"false\", got 'yes'"
                );
                assert_eq!(line, 4);
            }
            other => panic!("expected a config error, got {other:?}"),
        }
        let unbatched = "max_batch_size: 8\nparameters { key: \"ferry.adaptive_queue_delay\" value { string_value: \"true\" } }\n";
        match policy(unbatched) {
            Err(Error::Config { message, .. }) => {
                assert!(message.contains("needs dynamic_batching"), "{message}")
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn lone_requests_stay_off_the_workers_unless_asked_for() {
        let lone = |text: &str| {
            let config = parse_model_config(text, "c")?;
            let source = ConfigSource {
                path: "c",
                text: Some(text),
            };
            lone_requests_on_worker(&config, source)
        };
        let with = |value: &str| {
            format!(
                "max_batch_size: 8\nparameters {{ key: \"ferry.lone_requests_on_worker\" value {{ string_value: \"{value}\" }} }}\n"
            )
        };
        assert_eq!(lone("max_batch_size: 8\n").expect("valid"), None);
        assert_eq!(
            lone(&with("true")).expect("valid"),
            Some(crate::model::LONE_RUN_LIMIT)
        );
        assert_eq!(
            lone(&with("250")).expect("valid"),
            Some(Duration::from_micros(250))
        );
        assert_eq!(lone(&with("false")).expect("valid"), None);
        for bad in ["on", "0", "1001"] {
            match lone(&with(bad)) {
                Err(Error::Config { message, line, .. }) => {
                    assert_eq!(
                        message,
                        format!(
                            "parameter ferry.lone_requests_on_worker must be \"true\", \"false\" or a limit in \
                             microseconds from 1 to 1000, got '{bad}'"
                        )
                    );
                    assert_eq!(line, 2);
                }
                other => panic!("expected a config error for {bad}, got {other:?}"),
            }
        }
    }

    #[test]
    fn impossible_settings_name_the_field_and_line() {
        for (text, field, line) in [
            (
                "max_batch_size: 4\ndynamic_batching { preferred_batch_size: [ 8 ] }\n",
                "preferred_batch_size",
                2,
            ),
            (
                "max_batch_size: 4\ndynamic_batching {\n priority_levels: 2\n default_priority_level: 3\n}\n",
                "default_priority_level",
                4,
            ),
            (
                "max_batch_size: 4\ndynamic_batching {\n priority_levels: 2\n default_priority_level: 1\n priority_queue_policy { key: 5 value { } }\n}\n",
                "priority_queue_policy",
                5,
            ),
        ] {
            match policy(text) {
                Err(Error::Config {
                    line: at, message, ..
                }) => {
                    assert!(message.contains(field), "{message}");
                    assert_eq!(at, line, "{message}");
                }
                other => panic!("{field}: expected a config error, got {other:?}"),
            }
        }
    }
}

//! Triton's restricted protocol groups: `--grpc-restricted-protocol=<groups>:<key>=<value>` and
//! `--http-restricted-api=<groups>:<key>=<value>` (Triton 2.51, `ParseRestrictedFeatureOption` in its
//! `command_line_parser.cc`, groups in `restricted_features.h`). A request to a restricted group must carry
//! the header with the value: over gRPC the header `triton-grpc-protocol-<key>`, over HTTP `<key>`. Without
//! it Triton answers gRPC `UNAVAILABLE` `This protocol is restricted, expecting header '<header>'`
//! (`CommonCallData::Execute` in `grpc_server.cc`) and HTTP 403 `This API is restricted, expecting header
//! '<header>'` (`RespondIfRestricted` in `http_server.cc`); Ferry answers the same.

use http::{HeaderMap, HeaderName};
use subtle::ConstantTimeEq;

use crate::Error;

/// Triton's restricted groups, by the names its flags take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TritonGroup {
    /// Liveness and readiness of the server and of models (and gRPC health checking).
    Health,
    /// Server and model metadata.
    Metadata,
    /// ModelInfer and ModelStreamInfer.
    Inference,
    /// System and CUDA shared memory.
    SharedMemory,
    /// ModelConfig.
    ModelConfig,
    /// The repository index, load and unload.
    ModelRepository,
    /// ModelStatistics.
    Statistics,
    /// TraceSetting.
    Trace,
    /// LogSettings.
    Logging,
}

impl TritonGroup {
    /// Every group, in Triton's order.
    pub const ALL: [TritonGroup; 9] = [
        TritonGroup::Health,
        TritonGroup::Metadata,
        TritonGroup::Inference,
        TritonGroup::SharedMemory,
        TritonGroup::ModelConfig,
        TritonGroup::ModelRepository,
        TritonGroup::Statistics,
        TritonGroup::Trace,
        TritonGroup::Logging,
    ];

    /// The group's name in Triton's flags.
    pub fn name(self) -> &'static str {
        match self {
            TritonGroup::Health => "health",
            TritonGroup::Metadata => "metadata",
            TritonGroup::Inference => "inference",
            TritonGroup::SharedMemory => "shared-memory",
            TritonGroup::ModelConfig => "model-config",
            TritonGroup::ModelRepository => "model-repository",
            TritonGroup::Statistics => "statistics",
            TritonGroup::Trace => "trace",
            TritonGroup::Logging => "logging",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The header prefix Triton puts before a gRPC restriction's key (`kRestrictedProtocolHeaderTemplate`).
pub const GRPC_HEADER_PREFIX: &str = "triton-grpc-protocol-";

/// The restricted groups of one protocol, each with the header and value it needs.
#[derive(Debug, Clone, Default)]
pub struct Restrictions {
    groups: [Option<(HeaderName, Vec<u8>)>; 9],
}

impl Restrictions {
    /// Adds one flag's groups. `option` is the flag's name and `prefix` the header prefix (gRPC's, or empty
    /// for HTTP), `kind` the word Triton's messages use ("protocol" or "api"). Errors are Triton's texts.
    pub fn add(&mut self, flag: &str, option: &str, prefix: &str, kind: &str) -> Result<(), String> {
        let format_error =
            || format!("--{option} option format is '<config name>:<setting>=<value>'. Got {flag}");
        let (groups, rest) = flag.split_once(':').ok_or_else(format_error)?;
        let (key, value) = rest.split_once('=').ok_or_else(format_error)?;
        if groups.is_empty() || key.is_empty() || value.is_empty() {
            return Err(format_error());
        }
        let header = HeaderName::try_from(format!("{prefix}{key}"))
            .map_err(|_| format!("--{option}: '{key}' cannot be a header name"))?;
        for name in groups.split(',') {
            let Some(group) = TritonGroup::ALL.into_iter().find(|g| g.name() == name) else {
                return Err(format!("unknown restricted {kind} '{name}'"));
            };
            let slot = &mut self.groups[group.index()];
            if slot.is_some() {
                return Err(format!(
                    "restricted {kind} '{name}' can not be specified in multiple config groups"
                ));
            }
            *slot = Some((header.clone(), value.as_bytes().to_vec()));
        }
        Ok(())
    }

    /// Whether any group is restricted.
    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(Option::is_none)
    }

    /// Refuses a request to `group` whose headers lack the group's header and value. `kind` is the word of
    /// Triton's message: "protocol" (gRPC) or "API" (HTTP). The message names the header, never the value.
    pub fn check(&self, group: TritonGroup, headers: &HeaderMap, kind: &str) -> Result<(), Error> {
        let Some((header, expected)) = &self.groups[group.index()] else {
            return Ok(());
        };
        let given = headers.get(header).map(|value| value.as_bytes());
        if given.is_some_and(|given| bool::from(given.ct_eq(expected.as_slice()))) {
            Ok(())
        } else {
            Err(Error::Restricted(format!(
                "This {kind} is restricted, expecting header '{header}'"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn a_restricted_group_needs_its_header_and_value() {
        let mut restrictions = Restrictions::default();
        restrictions
            .add(
                "model-repository,shared-memory:admin-key=s3cret",
                "grpc-restricted-protocol",
                GRPC_HEADER_PREFIX,
                "protocol",
            )
            .expect("flag");
        let mut headers = HeaderMap::new();
        assert!(
            restrictions
                .check(TritonGroup::Inference, &headers, "protocol")
                .is_ok()
        );
        let refused = restrictions
            .check(TritonGroup::ModelRepository, &headers, "protocol")
            .expect_err("no header");
        assert_eq!(
            refused.to_string(),
            "This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'"
        );
        headers.insert(
            "triton-grpc-protocol-admin-key",
            HeaderValue::from_static("wrong"),
        );
        let refused = restrictions
            .check(TritonGroup::SharedMemory, &headers, "protocol")
            .expect_err("wrong value");
        assert!(!refused.to_string().contains("s3cret"));
        headers.insert(
            "triton-grpc-protocol-admin-key",
            HeaderValue::from_static("s3cret"),
        );
        assert!(
            restrictions
                .check(TritonGroup::SharedMemory, &headers, "protocol")
                .is_ok()
        );
    }

    /// Triton's parser texts (`ParseRestrictedFeatureOption`, `ParseGenericConfigOption`).
    #[test]
    fn refuses_flags_as_triton_does() {
        let mut restrictions = Restrictions::default();
        let add = |r: &mut Restrictions, flag: &str| r.add(flag, "http-restricted-api", "", "api");
        assert_eq!(
            add(&mut restrictions, "health").expect_err("format"),
            "--http-restricted-api option format is '<config name>:<setting>=<value>'. Got health"
        );
        assert!(add(&mut restrictions, "health:k=").is_err());
        assert_eq!(
            add(&mut restrictions, "admin:k=v").expect_err("group"),
            "unknown restricted api 'admin'"
        );
        add(&mut restrictions, "health,trace:k=v").expect("flag");
        assert_eq!(
            add(&mut restrictions, "trace:j=w").expect_err("twice"),
            "restricted api 'trace' can not be specified in multiple config groups"
        );
    }
}

//! The policy file (`--auth-policy`): which identity holds which scopes, for which models.
//!
//! A policy is a list of grants, in TOML (or JSON, for a file named `*.json`):
//!
//! ```toml
//! [[grant]]
//! identity = "anonymous"          # callers without credentials
//! scopes = ["metadata"]
//!
//! [[grant]]
//! identity = "ci-bot"             # a name from the API keys file, or an mTLS identity
//! scopes = ["infer", "metadata", "stats"]
//! models = ["resnet50", "bert-*"] # exact names or glob patterns (`*`, `?`); all models when left out
//!
//! [[grant]]
//! identity = "*"                  # any authenticated caller
//! scopes = ["infer"]
//! ```
//!
//! Grants only add: what anonymous callers may do, every identity may do too. `shm` and `settings`
//! concern no model, so a grant of them takes no `models`.

use std::path::Path;

use serde::Deserialize;

use super::{Identity, Scope, keys::check_identity_name};

/// The largest policy file Ferry reads.
pub const MAX_POLICY_FILE_BYTES: u64 = 1024 * 1024;
/// The most grants a policy may hold.
pub const MAX_GRANTS: usize = 10_000;
/// The longest model pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 256;

/// A policy file's grants, checked.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    grants: Vec<Grant>,
}

/// One grant: who, which scopes, which models.
#[derive(Debug, Clone)]
struct Grant {
    who: Who,
    scopes: Vec<Scope>,
    /// `None`: every model.
    models: Option<Vec<Pattern>>,
}

/// Whom a grant is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    /// Callers without credentials, and so everyone.
    Anonymous,
    /// Every authenticated caller.
    Authenticated,
    /// One identity.
    Named(String),
}

/// The file's form, before it is checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    grant: Vec<GrantEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantEntry {
    identity: String,
    scopes: Vec<String>,
    models: Option<Vec<String>>,
}

impl Policy {
    /// Reads a policy file: JSON when its name ends in `.json`, TOML otherwise. Files larger than
    /// [`MAX_POLICY_FILE_BYTES`] are refused before they are read.
    pub fn load(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let size = std::fs::metadata(path)
            .map_err(|error| format!("cannot read the policy file {shown}: {error}"))?
            .len();
        if size > MAX_POLICY_FILE_BYTES {
            return Err(format!(
                "the policy file {shown} is {size} bytes, over the limit of {MAX_POLICY_FILE_BYTES}"
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read the policy file {shown}: {error}"))?;
        let json = path.extension().is_some_and(|extension| extension == "json");
        let parsed = if json {
            Self::from_json(&text)
        } else {
            Self::from_toml(&text)
        };
        parsed.map_err(|error| format!("{shown}: {error}"))
    }

    /// Parses a policy in TOML.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|error| error.to_string())?;
        Self::check(file)
    }

    /// Parses a policy in JSON.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let file: PolicyFile = serde_json::from_str(text).map_err(|error| error.to_string())?;
        Self::check(file)
    }

    fn check(file: PolicyFile) -> Result<Self, String> {
        if file.grant.len() > MAX_GRANTS {
            return Err(format!(
                "a policy holds at most {MAX_GRANTS} grants, got {}",
                file.grant.len()
            ));
        }
        let grants = file
            .grant
            .into_iter()
            .enumerate()
            .map(|(index, entry)| {
                Grant::check(entry).map_err(|error| format!("grant {}: {error}", index + 1))
            })
            .collect::<Result<_, _>>()?;
        Ok(Policy { grants })
    }

    /// Whether `identity` holds `scope` for `model`, or, with no model, for some model.
    pub fn allows(&self, identity: &Identity, scope: Scope, model: Option<&str>) -> bool {
        self.grants.iter().any(|grant| {
            grant.applies_to(identity)
                && grant.scopes.contains(&scope)
                && match (&grant.models, model) {
                    (None, _) | (Some(_), None) => true,
                    (Some(patterns), Some(model)) => patterns.iter().any(|p| p.matches(model)),
                }
        })
    }
}

impl Grant {
    fn check(entry: GrantEntry) -> Result<Self, String> {
        let who = match entry.identity.as_str() {
            "anonymous" => Who::Anonymous,
            "*" => Who::Authenticated,
            name => {
                check_identity_name(name)?;
                Who::Named(name.to_owned())
            }
        };
        if entry.scopes.is_empty() {
            return Err("'scopes' is empty".to_owned());
        }
        let scopes = entry
            .scopes
            .iter()
            .map(|name| Scope::parse(name))
            .collect::<Result<Vec<_>, _>>()?;
        let models = match entry.models {
            None => None,
            Some(models) if models.iter().any(|m| m == "*") => None,
            Some(models) => {
                if let Some(scope) = scopes.iter().find(|scope| !scope.per_model()) {
                    return Err(format!(
                        "scope '{}' concerns no model: grant it in a grant without 'models'",
                        scope.name()
                    ));
                }
                if models.is_empty() {
                    return Err(
                        "'models' is empty: leave it out for every model, or list names or patterns"
                            .to_owned(),
                    );
                }
                Some(models.into_iter().map(Pattern::parse).collect::<Result<_, _>>()?)
            }
        };
        Ok(Grant { who, scopes, models })
    }

    fn applies_to(&self, identity: &Identity) -> bool {
        match (&self.who, identity) {
            (Who::Anonymous, _) => true,
            (Who::Authenticated, Identity::Named(_)) => true,
            (Who::Named(name), Identity::Named(caller)) => name.as_str() == &**caller,
            _ => false,
        }
    }
}

/// A model name, or a glob pattern of names: `*` stands for any run of characters, `?` for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// Accepts a pattern of 1 to [`MAX_PATTERN_BYTES`] bytes.
    pub fn parse(text: String) -> Result<Self, String> {
        if text.is_empty() || text.len() > MAX_PATTERN_BYTES {
            return Err(format!(
                "a model pattern is 1 to {MAX_PATTERN_BYTES} bytes, got {} bytes",
                text.len()
            ));
        }
        Ok(Pattern(text))
    }

    /// Whether `name` matches. Iterative, with one point to come back to, so time is bounded by the product
    /// of the two lengths, whatever the pattern.
    pub fn matches(&self, name: &str) -> bool {
        let (pattern, name) = (self.0.as_bytes(), name.as_bytes());
        let (mut p, mut n) = (0, 0);
        let mut retry: Option<(usize, usize)> = None;
        while n < name.len() {
            match pattern.get(p) {
                Some(b'*') => {
                    retry = Some((p, n + 1));
                    p += 1;
                }
                Some(&c) if c == b'?' || c == name[n] => {
                    p += 1;
                    n += 1;
                }
                _ => match retry {
                    Some((star, next)) => {
                        p = star + 1;
                        n = next;
                        retry = Some((star, next + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|&c| c == b'*')
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn named(name: &str) -> Identity {
        Identity::Named(Arc::from(name))
    }

    #[test]
    fn patterns_match_as_globs() {
        let cases = [
            ("bert-*", "bert-base", true),
            ("bert-*", "bert-", true),
            ("bert-*", "robert-base", false),
            ("*net*", "densenet_onnx", true),
            ("simple", "simple", true),
            ("simple", "simple_int8", false),
            ("simple?int8", "simple_int8", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("*", "", true),
        ];
        for (pattern, name, expected) in cases {
            let pattern = Pattern::parse(pattern.to_owned()).expect("pattern");
            assert_eq!(pattern.matches(name), expected, "{pattern:?} {name}");
        }
    }

    #[test]
    fn grants_add_up_per_identity_scope_and_model() {
        let policy = Policy::from_toml(
            r#"
            [[grant]]
            identity = "anonymous"
            scopes = ["metadata"]

            [[grant]]
            identity = "ci"
            scopes = ["infer", "stats"]
            models = ["simple*", "densenet_onnx"]

            [[grant]]
            identity = "*"
            scopes = ["shm"]
            "#,
        )
        .expect("policy");
        let ci = named("ci");
        assert!(policy.allows(&Identity::Anonymous, Scope::Metadata, Some("any")));
        assert!(!policy.allows(&Identity::Anonymous, Scope::Infer, None));
        assert!(!policy.allows(&Identity::Anonymous, Scope::Shm, None));
        assert!(
            policy.allows(&ci, Scope::Metadata, Some("other")),
            "anonymous grants are everyone's"
        );
        assert!(policy.allows(&ci, Scope::Infer, Some("simple_int8")));
        assert!(policy.allows(&ci, Scope::Infer, Some("densenet_onnx")));
        assert!(!policy.allows(&ci, Scope::Infer, Some("other")));
        assert!(policy.allows(&ci, Scope::Infer, None), "some model");
        assert!(!policy.allows(&ci, Scope::Repository, None));
        assert!(policy.allows(&ci, Scope::Shm, None));
        assert!(!policy.allows(&named("cia"), Scope::Infer, Some("simple")));
    }

    #[test]
    fn json_reads_as_toml_does() {
        let policy = Policy::from_json(
            r#"{"grant": [{"identity": "ops", "scopes": ["repository"], "models": ["*"]}]}"#,
        )
        .expect("policy");
        assert!(policy.allows(&named("ops"), Scope::Repository, Some("x")));
    }

    #[test]
    fn refuses_what_it_cannot_mean() {
        let cases = [
            (
                r#"[[grant]]
identity = "x"
scopes = ["admin"]"#,
                "unknown scope 'admin'",
            ),
            (
                r#"[[grant]]
identity = "x"
scopes = []"#,
                "grant 1: 'scopes' is empty",
            ),
            (
                r#"[[grant]]
identity = "x"
scopes = ["shm"]
models = ["a"]"#,
                "scope 'shm' concerns no model",
            ),
            (
                r#"[[grant]]
identity = "x"
scopes = ["infer"]
models = []"#,
                "'models' is empty",
            ),
            (
                r#"[[grant]]
identity = "x y"
scopes = ["infer"]"#,
                "without spaces",
            ),
            (
                r#"[[grant]]
who = "x"
scopes = ["infer"]"#,
                "unknown field `who`",
            ),
        ];
        for (text, expected) in cases {
            let error = Policy::from_toml(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}

//! Which version folders of a model are served (`version_policy`).

use ferry_proto::inference::{ModelConfig, model_version_policy::PolicyChoice};

/// Which version folders of a model are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The `n` numerically highest versions.
    Latest(u32),
    /// Every version present.
    All,
    /// Exactly these versions, where present.
    Specific(Vec<u64>),
}

impl VersionPolicy {
    /// The policy a config asks for; Triton's default is the single highest version.
    pub fn from_config(config: &ModelConfig) -> Self {
        match config
            .version_policy
            .as_ref()
            .and_then(|p| p.policy_choice.as_ref())
        {
            Some(PolicyChoice::All(_)) => VersionPolicy::All,
            Some(PolicyChoice::Specific(s)) => {
                VersionPolicy::Specific(s.versions.iter().filter_map(|v| u64::try_from(*v).ok()).collect())
            }
            Some(PolicyChoice::Latest(l)) => VersionPolicy::Latest(l.num_versions.max(1)),
            None => VersionPolicy::Latest(1),
        }
    }

    /// The versions to serve out of those present, highest first.
    pub fn select(&self, available: &[u64]) -> Vec<u64> {
        let mut sorted = available.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        sorted.dedup();
        match self {
            VersionPolicy::Latest(n) => sorted.into_iter().take(*n as usize).collect(),
            VersionPolicy::All => sorted,
            VersionPolicy::Specific(wanted) => sorted.into_iter().filter(|v| wanted.contains(v)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_policies_select_versions() {
        let present = [1, 3, 2, 10];
        assert_eq!(VersionPolicy::Latest(1).select(&present), [10]);
        assert_eq!(VersionPolicy::Latest(2).select(&present), [10, 3]);
        assert_eq!(VersionPolicy::All.select(&present), [10, 3, 2, 1]);
        assert_eq!(VersionPolicy::Specific(vec![2, 7]).select(&present), [2]);
    }
}

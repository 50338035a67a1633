//! What live traffic is compared with: per input and feature, a summary of reference data, computed from a
//! `.npy`/`.npz` file in the model folder when the model loads, or frozen from the live window on request.

use std::path::Path;

use serde::Serialize;

use super::{
    InputPlan,
    npy::{self, Array, MAX_BASELINE_BYTES},
    sketch::Sketch,
    stats::{FeatureStats, Generation},
};
use crate::Error;

/// The PSI's buckets are the baseline's deciles.
const PSI_BUCKETS: usize = 10;

/// The baseline of one feature.
#[derive(Debug, Clone)]
pub struct FeatureBaseline {
    /// Non-NaN values it was made of.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Their population variance.
    pub variance: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// The share of NaNs.
    pub nan_ratio: f64,
    /// Their distribution, for the KS statistic.
    pub sketch: Sketch,
    /// Bucket `i` holds the values at or below `edges[i]` (and above `edges[i - 1]`); the last bucket the
    /// values above the last edge. Deciles, with repeats removed for discrete data.
    pub edges: Vec<f64>,
    /// The share of the baseline in each bucket (`edges.len() + 1` of them).
    pub expected: Vec<f64>,
}

impl FeatureBaseline {
    /// The baseline summarising `stats`; `None` when it holds no value.
    pub fn from_stats(stats: &FeatureStats) -> Option<Self> {
        let moments = &stats.moments;
        if moments.count == 0 {
            return None;
        }
        let mut edges: Vec<f64> = (1..PSI_BUCKETS)
            .filter_map(|i| stats.sketch.quantile(i as f64 / PSI_BUCKETS as f64))
            .collect();
        edges.dedup();
        let mut below = 0.0;
        let mut expected: Vec<f64> = edges
            .iter()
            .map(|edge| {
                let share = stats.sketch.cdf(*edge);
                let bucket = share - below;
                below = share;
                bucket
            })
            .collect();
        expected.push(1.0 - below);
        Some(FeatureBaseline {
            count: moments.count,
            mean: moments.mean,
            variance: moments.variance(),
            min: moments.min,
            max: moments.max,
            nan_ratio: stats.nan as f64 / (moments.count + stats.nan) as f64,
            sketch: stats.sketch.clone(),
            edges,
            expected,
        })
    }

    /// The bucket `value` falls in.
    pub fn bucket(&self, value: f64) -> usize {
        self.edges.partition_point(|edge| *edge < value)
    }
}

/// Where a baseline came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BaselineSource {
    /// A file in the model folder.
    File {
        /// Its name.
        name: String,
    },
    /// The live window, frozen through the API.
    Live {
        /// When, in seconds since the Unix epoch.
        frozen_at_unix_seconds: u64,
    },
}

/// A model version's baseline: `inputs[i][f]` for input `i` of the spec and feature `f` (empty for an
/// input without one).
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Where it came from.
    pub source: BaselineSource,
    /// Per input, per feature.
    pub inputs: Vec<Vec<Option<FeatureBaseline>>>,
}

impl Baseline {
    /// The baseline of input `input`, feature `feature`, if it has one.
    pub fn feature(&self, input: usize, feature: usize) -> Option<&FeatureBaseline> {
        self.inputs.get(input)?.get(feature)?.as_ref()
    }

    /// The live statistics `live`, frozen; `None` when they hold no value at all.
    pub fn freeze(live: &Generation) -> Option<Self> {
        let inputs: Vec<Vec<Option<FeatureBaseline>>> = live
            .iter()
            .map(|features| features.iter().map(FeatureBaseline::from_stats).collect())
            .collect();
        if inputs.iter().flatten().all(Option::is_none) {
            return None;
        }
        let frozen_at_unix_seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        Some(Baseline {
            source: BaselineSource::Live {
                frozen_at_unix_seconds,
            },
            inputs,
        })
    }

    /// The baseline in file `name` of `model_dir`, for the inputs `plans`: a `.npy` holds the data of the
    /// model's one numeric input, a `.npz` an array per input, named after it. An array's last dimension
    /// is its features (one feature for a 1-D array) and must match the input's when that is fixed.
    pub fn load(
        model_dir: &Path,
        name: &str,
        plans: &[InputPlan],
        max_features: usize,
    ) -> Result<Self, Error> {
        let path = model_dir.join(name);
        let fail = |what: String| Error::ModelLoad(format!("drift baseline '{}': {what}", path.display()));
        let size = std::fs::metadata(&path)
            .map_err(|error| fail(format!("cannot read it: {error}")))?
            .len();
        if size > MAX_BASELINE_BYTES as u64 {
            return Err(fail(format!(
                "it is {size} bytes, over the limit of {MAX_BASELINE_BYTES} bytes"
            )));
        }
        let bytes = std::fs::read(&path).map_err(|error| fail(format!("cannot read it: {error}")))?;
        let arrays = if name.ends_with(".npz") {
            npy::parse_npz(&bytes).map_err(fail)?
        } else {
            let array = npy::parse_npy(&bytes).map_err(fail)?;
            let mut numeric = plans.iter().filter(|plan| plan.tracked);
            match (numeric.next(), numeric.next()) {
                (Some(plan), None) => vec![(plan.name.clone(), array)],
                _ => {
                    return Err(fail(
                        "a .npy baseline needs a model with exactly one numeric input; use a .npz with an \
                         array per input"
                            .to_owned(),
                    ));
                }
            }
        };
        let mut inputs = vec![Vec::new(); plans.len()];
        for (array_name, array) in &arrays {
            let Some(index) = plans
                .iter()
                .position(|plan| plan.tracked && plan.name == *array_name)
            else {
                let names: Vec<&str> = plans
                    .iter()
                    .filter(|p| p.tracked)
                    .map(|p| p.name.as_str())
                    .collect();
                return Err(fail(format!(
                    "array '{array_name}' names no numeric input of the model; expected one of {names:?}"
                )));
            };
            inputs[index] = features_of(array, &plans[index], max_features)
                .map_err(|what| fail(format!("array '{array_name}': {what}")))?;
        }
        Ok(Baseline {
            source: BaselineSource::File {
                name: name.to_owned(),
            },
            inputs,
        })
    }
}

/// The per-feature baselines of `array` for the input `plan`.
fn features_of(
    array: &Array,
    plan: &InputPlan,
    max_features: usize,
) -> Result<Vec<Option<FeatureBaseline>>, String> {
    let width = if array.shape.len() >= 2 {
        array.shape.last().copied().unwrap_or(1)
    } else {
        1
    };
    if let Some(expected) = plan.features
        && expected != width
    {
        return Err(format!(
            "field 'shape' {:?} has {width} features in its last dimension, expected {expected} for input '{}'",
            array.shape, plan.name
        ));
    }
    if width == 0 || array.shape.contains(&0) {
        return Err(format!("field 'shape' {:?} holds no value", array.shape));
    }
    let tracked = width.min(max_features);
    let mut stats = vec![FeatureStats::default(); tracked];
    for (index, value) in array.values().enumerate() {
        if let Some(feature) = stats.get_mut(index % width) {
            feature.add(value, None);
        }
    }
    Ok(stats.iter().map(FeatureBaseline::from_stats).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deciles_split_a_uniform_baseline_evenly() {
        let mut stats = FeatureStats::default();
        (0..10_000).for_each(|i| stats.add(f64::from(i), None));
        let baseline = FeatureBaseline::from_stats(&stats).expect("values");
        assert_eq!(baseline.edges.len(), 9);
        assert_eq!(baseline.expected.len(), 10);
        assert!(
            baseline.expected.iter().all(|share| (share - 0.1).abs() < 0.02),
            "{:?}",
            baseline.expected
        );
        assert_eq!(baseline.bucket(-5.0), 0);
        assert_eq!(baseline.bucket(1e9), 9);
        assert_eq!((baseline.min, baseline.max), (0.0, 9999.0));
    }

    #[test]
    fn discrete_data_gets_one_bucket_per_value() {
        let mut stats = FeatureStats::default();
        (0..1000).for_each(|i| stats.add(f64::from(i % 2), None));
        let baseline = FeatureBaseline::from_stats(&stats).expect("values");
        assert_eq!(baseline.edges, [0.0, 1.0]);
        let expected = [0.5, 0.5, 0.0];
        assert!(
            baseline
                .expected
                .iter()
                .zip(expected)
                .all(|(share, e)| (share - e).abs() < 0.01),
            "{:?}",
            baseline.expected
        );
        assert_eq!(
            FeatureBaseline::from_stats(&FeatureStats::default()).map(|b| b.count),
            None
        );
    }
}

//! Drift scores of one feature against its baseline: the population stability index on the baseline's
//! buckets, the Kolmogorov-Smirnov statistic between the two distributions, and the shares of values
//! outside the baseline's range and of NaNs.

use serde::Serialize;

use super::{baseline::FeatureBaseline, sketch::Sketch, stats::FeatureStats};

/// The smallest share a bucket counts with in the PSI, so that an empty bucket gives a large but finite
/// score instead of an infinite one (additive smoothing).
pub const PSI_EPSILON: f64 = 1e-4;

/// The drift scores of one feature; `None` where there is nothing to compare yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Scores {
    /// Population stability index; under 0.1 is usually read as no shift, over 0.2 as a real one.
    pub psi: Option<f64>,
    /// The Kolmogorov-Smirnov statistic: the largest gap between the two CDFs, in [0, 1].
    pub ks: Option<f64>,
    /// The share of live values below the baseline's minimum or above its maximum.
    pub out_of_range_ratio: Option<f64>,
    /// The share of live values that are NaN.
    pub nan_ratio: Option<f64>,
}

/// The scores of the live statistics `live` against `baseline`, when there is one.
pub fn scores(live: &FeatureStats, baseline: Option<&FeatureBaseline>) -> Scores {
    let total = live.moments.count + live.nan;
    let nan_ratio = (total > 0).then(|| live.nan as f64 / total as f64);
    let Some(baseline) = baseline else {
        return Scores {
            nan_ratio,
            ..Scores::default()
        };
    };
    let bucketed: u64 = live.histogram.iter().sum();
    Scores {
        psi: psi(&baseline.expected, &live.histogram),
        ks: ks(&baseline.sketch, &live.sketch),
        out_of_range_ratio: (bucketed > 0).then(|| live.out_of_range as f64 / bucketed as f64),
        nan_ratio,
    }
}

/// The population stability index of `counts` against the `expected` shares of the same buckets:
/// the sum of `(actual - expected) × ln(actual / expected)`, each share at least [`PSI_EPSILON`].
/// `None` without counts, or when the buckets do not line up.
pub fn psi(expected: &[f64], counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || expected.len() != counts.len() {
        return None;
    }
    let score = expected
        .iter()
        .zip(counts)
        .map(|(expected, count)| {
            let actual = (*count as f64 / total as f64).max(PSI_EPSILON);
            let expected = expected.max(PSI_EPSILON);
            (actual - expected) * (actual / expected).ln()
        })
        .sum();
    Some(score)
}

/// The Kolmogorov-Smirnov statistic between the distributions two sketches summarise: the largest gap
/// between their step CDFs, looked at every value either holds. `None` when either is empty.
pub fn ks(a: &Sketch, b: &Sketch) -> Option<f64> {
    if a.count() == 0 || b.count() == 0 {
        return None;
    }
    let (a, b) = (a.steps(), b.steps());
    let (mut i, mut j) = (0, 0);
    let (mut cdf_a, mut cdf_b, mut gap) = (0.0f64, 0.0f64, 0.0f64);
    while i < a.len() || j < b.len() {
        let x = match (a.get(i), b.get(j)) {
            (Some(p), Some(q)) => p.0.min(q.0),
            (Some(p), None) => p.0,
            (None, Some(q)) => q.0,
            (None, None) => break,
        };
        while let Some(p) = a.get(i).filter(|p| p.0 <= x) {
            cdf_a = p.1;
            i += 1;
        }
        while let Some(q) = b.get(j).filter(|q| q.0 <= x) {
            cdf_b = q.1;
            j += 1;
        }
        gap = gap.max((cdf_a - cdf_b).abs());
    }
    Some(gap)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` values of N(mean, 1), from the drift tests' stream.
    fn normal(n: usize, mean: f64, seed: u64) -> Vec<f64> {
        super::super::tests::normal(mean, seed).take(n).collect()
    }

    fn live_against(baseline: &FeatureBaseline, values: &[f64]) -> Scores {
        let mut live = FeatureStats::default();
        values.iter().for_each(|v| live.add(*v, Some(baseline)));
        scores(&live, Some(baseline))
    }

    fn baseline_of(values: &[f64]) -> FeatureBaseline {
        let mut stats = FeatureStats::default();
        values.iter().for_each(|v| stats.add(*v, None));
        FeatureBaseline::from_stats(&stats).expect("values")
    }

    #[test]
    fn the_same_distribution_scores_near_zero_and_a_shifted_one_high() {
        let baseline = baseline_of(&normal(50_000, 0.0, 1));
        let same = live_against(&baseline, &normal(20_000, 0.0, 2));
        let shifted = live_against(&baseline, &normal(20_000, 1.5, 3));
        let (same_psi, same_ks) = (same.psi.expect("psi"), same.ks.expect("ks"));
        let (shifted_psi, shifted_ks) = (shifted.psi.expect("psi"), shifted.ks.expect("ks"));
        assert!(same_psi < 0.02, "{same_psi}");
        assert!(same_ks < 0.04, "{same_ks}");
        // N(1.5, 1) against N(0, 1): the CDFs are 0.55 apart at 0.75; the PSI is well over 1.
        assert!(shifted_psi > 1.0, "{shifted_psi}");
        assert!((shifted_ks - 0.55).abs() < 0.05, "{shifted_ks}");
        // Beyond the baseline's largest value (about 4.2): a few in ten thousand of N(0, 1), a few in a
        // thousand of N(1.5, 1).
        assert!(same.out_of_range_ratio.expect("ratio") < 0.001);
        assert!(shifted.out_of_range_ratio.expect("ratio") > 0.001);
        assert_eq!(same.nan_ratio, Some(0.0));
    }

    #[test]
    fn psi_is_finite_with_empty_buckets_and_none_without_counts() {
        let expected = [0.25; 4];
        let all_in_one = psi(&expected, &[100, 0, 0, 0]).expect("psi");
        assert!(all_in_one.is_finite() && all_in_one > 3.0, "{all_in_one}");
        assert_eq!(psi(&expected, &[25, 25, 25, 25]), Some(0.0));
        assert_eq!(psi(&expected, &[0, 0, 0, 0]), None);
        assert_eq!(psi(&expected, &[1, 2]), None);
    }

    #[test]
    fn ks_of_disjoint_and_identical_sketches() {
        let (mut low, mut high) = (Sketch::default(), Sketch::default());
        (0..1000).for_each(|i| low.insert(f64::from(i)));
        (0..1000).for_each(|i| high.insert(f64::from(i) + 5000.0));
        assert_eq!(ks(&low, &high), Some(1.0));
        assert_eq!(ks(&low, &low.clone()), Some(0.0));
        assert_eq!(ks(&low, &Sketch::default()), None);
    }

    #[test]
    fn nan_ratio_counts_every_value() {
        let baseline = baseline_of(&[0.0, 1.0, 2.0]);
        let scores = live_against(&baseline, &[f64::NAN, 1.0, 1.0, 5.0]);
        assert_eq!(scores.nan_ratio, Some(0.25));
        assert!((scores.out_of_range_ratio.expect("ratio") - 1.0 / 3.0).abs() < 1e-12);
    }
}

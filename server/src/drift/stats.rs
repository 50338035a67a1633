//! Running statistics of one feature, in constant memory: Welford's mean and variance, the range, NaNs, a
//! quantile sketch, and a histogram on the baseline's buckets with the values outside the baseline's range.
//! A [`Window`] keeps two generations of them, so that the live view covers recent traffic only.

use super::{baseline::FeatureBaseline, sketch::Sketch};

/// Count, mean, variance (Welford, merged with Chan's formula) and range of the non-NaN values.
#[derive(Debug, Clone, Default)]
pub struct Moments {
    /// Values seen.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// The sum of squared differences from the mean.
    m2: f64,
    /// The smallest value (meaningless while `count` is 0).
    pub min: f64,
    /// The largest value (meaningless while `count` is 0).
    pub max: f64,
}

impl Moments {
    /// Adds one non-NaN value.
    pub fn add(&mut self, value: f64) {
        if self.count == 0 {
            (self.min, self.max) = (value, value);
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);
    }

    /// Adds every value `other` summarises.
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        let (n1, n2) = (self.count as f64, other.count as f64);
        let total = n1 + n2;
        let delta = other.mean - self.mean;
        self.mean += delta * n2 / total;
        self.m2 += other.m2 + delta * delta * n1 * n2 / total;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The population variance; 0 for fewer than two values.
    pub fn variance(&self) -> f64 {
        if self.count < 2 {
            0.0
        } else {
            self.m2 / self.count as f64
        }
    }
}

/// Everything Ferry keeps about one feature over one window generation.
#[derive(Debug, Clone, Default)]
pub struct FeatureStats {
    /// Count, mean, variance and range.
    pub moments: Moments,
    /// NaN values (not in the moments, sketch or histogram).
    pub nan: u64,
    /// The distribution of the non-NaN values.
    pub sketch: Sketch,
    /// Values per baseline bucket (`edges.len() + 1` buckets); empty while there is no baseline.
    pub histogram: Vec<u64>,
    /// Values below the baseline's minimum or above its maximum.
    pub out_of_range: u64,
}

impl FeatureStats {
    /// Adds one value, bucketed on `baseline` when there is one.
    pub fn add(&mut self, value: f64, baseline: Option<&FeatureBaseline>) {
        if value.is_nan() {
            self.nan += 1;
            return;
        }
        self.moments.add(value);
        self.sketch.insert(value);
        if let Some(baseline) = baseline {
            if self.histogram.len() != baseline.edges.len() + 1 {
                self.histogram = vec![0; baseline.edges.len() + 1];
            }
            self.histogram[baseline.bucket(value)] += 1;
            if value < baseline.min || value > baseline.max {
                self.out_of_range += 1;
            }
        }
    }

    /// Adds everything `other` holds.
    pub fn merge(&mut self, other: &FeatureStats) {
        self.moments.merge(&other.moments);
        self.nan += other.nan;
        self.sketch.merge(&other.sketch);
        if self.histogram.is_empty() {
            self.histogram.clone_from(&other.histogram);
        } else if self.histogram.len() == other.histogram.len() {
            self.histogram
                .iter_mut()
                .zip(&other.histogram)
                .for_each(|(mine, theirs)| *mine += theirs);
        }
        self.out_of_range += other.out_of_range;
    }

    /// Forgets the histogram and the out-of-range count, whose buckets belonged to a replaced baseline.
    pub fn clear_buckets(&mut self) {
        self.histogram.clear();
        self.out_of_range = 0;
    }
}

/// The statistics of every tracked input and feature: `inputs[i][f]`.
pub type Generation = Vec<Vec<FeatureStats>>;

/// Two generations of statistics: the live view is both, so it always covers between one and two windows
/// of recent samples, and memory does not grow with the traffic.
#[derive(Debug, Clone)]
pub struct Window {
    /// Sampled requests per generation.
    size: u64,
    /// Samples in `current`.
    filled: u64,
    current: Generation,
    previous: Generation,
}

impl Window {
    /// An empty window of `size` samples per generation over `inputs` inputs.
    pub fn new(size: u64, inputs: usize) -> Self {
        Window {
            size,
            filled: 0,
            current: vec![Vec::new(); inputs],
            previous: vec![Vec::new(); inputs],
        }
    }

    /// The statistics of feature `feature` of input `input` in the current generation, created on first use.
    pub fn feature(&mut self, input: usize, feature: usize) -> &mut FeatureStats {
        let features = &mut self.current[input];
        if features.len() <= feature {
            features.resize_with(feature + 1, FeatureStats::default);
        }
        &mut features[feature]
    }

    /// Adds the statistics of one sample's input `input`, feature by feature, to the current generation.
    pub fn absorb(&mut self, input: usize, features: &[FeatureStats]) {
        for (feature, stats) in features.iter().enumerate() {
            self.feature(input, feature).merge(stats);
        }
    }

    /// Counts one sample in; a full generation becomes the previous one.
    pub fn sample_done(&mut self) {
        self.filled += 1;
        if self.filled >= self.size {
            self.previous = std::mem::replace(&mut self.current, vec![Vec::new(); self.previous.len()]);
            self.filled = 0;
        }
    }

    /// Both generations merged: the live statistics.
    pub fn live(&self) -> Generation {
        let mut live = self.previous.clone();
        for (features, current) in live.iter_mut().zip(&self.current) {
            if features.len() < current.len() {
                features.resize_with(current.len(), FeatureStats::default);
            }
            for (feature, stats) in features.iter_mut().zip(current) {
                feature.merge(stats);
            }
        }
        live
    }

    /// Forgets every histogram (see [`FeatureStats::clear_buckets`]).
    pub fn clear_buckets(&mut self) {
        self.current
            .iter_mut()
            .chain(&mut self.previous)
            .flatten()
            .for_each(FeatureStats::clear_buckets);
    }

    /// Values the window holds in its sketches: its memory, for the constant-memory tests.
    pub fn retained(&self) -> usize {
        self.current
            .iter()
            .chain(&self.previous)
            .flatten()
            .map(|stats| stats.sketch.retained() + stats.histogram.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welford_matches_the_two_pass_figures_and_merges() {
        let values = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        let mut whole = Moments::default();
        values.iter().for_each(|v| whole.add(*v));
        assert_eq!(whole.count, 8);
        assert!((whole.mean - 5.0).abs() < 1e-12);
        assert!((whole.variance() - 4.0).abs() < 1e-12);
        assert_eq!((whole.min, whole.max), (2.0, 9.0));
        let (mut a, mut b) = (Moments::default(), Moments::default());
        values[..3].iter().for_each(|v| a.add(*v));
        values[3..].iter().for_each(|v| b.add(*v));
        a.merge(&b);
        assert!((a.mean - 5.0).abs() < 1e-12 && (a.variance() - 4.0).abs() < 1e-12);
        assert_eq!((a.min, a.max, a.count), (2.0, 9.0, 8));
    }

    #[test]
    fn the_window_rotates_and_its_memory_stays_flat() {
        let mut window = Window::new(100, 1);
        let mut sizes = Vec::new();
        for sample in 0..20_000u64 {
            for feature in 0..4 {
                window
                    .feature(0, feature)
                    .add((sample % 1000) as f64 + feature as f64, None);
            }
            window.sample_done();
            if sample % 5_000 == 4_999 {
                sizes.push(window.retained());
            }
        }
        let live = window.live();
        // Between one and two generations of 100 samples: the old traffic is gone.
        assert!(
            (100..=200).contains(&live[0][0].moments.count),
            "{}",
            live[0][0].moments.count
        );
        assert!(live[0][0].moments.min >= 800.0, "{}", live[0][0].moments.min);
        assert!(sizes.windows(2).all(|pair| pair[1] <= pair[0] + 8), "{sizes:?}");
    }

    #[test]
    fn nan_is_counted_apart() {
        let mut stats = FeatureStats::default();
        stats.add(f64::NAN, None);
        stats.add(1.0, None);
        assert_eq!((stats.nan, stats.moments.count, stats.sketch.count()), (1, 1, 1));
    }
}

//! A KLL quantile sketch (Karnin, Lang and Liberty, 2016): a constant-size summary of a stream of numbers
//! that answers rank and quantile queries within about 1.5% of the count, and that two of merge into one.
//!
//! Values live in levels; a value at level `h` stands for `2^h` values of the stream. When the sketch holds
//! more than its capacity, the lowest level that is over its own capacity is sorted and every other value
//! (starting at a random first or second) moves up one level with twice the weight, so the total weight
//! stays exactly the count. Level capacities shrink by 2/3 from the top down, so the whole sketch holds
//! about `3 k` values however long the stream, plus two per level (a level per doubling of the stream).

/// Values kept at the top level; the rank error is about `1.7 / K` of the count.
pub const K: usize = 200;
/// The deepest level: a level per doubling of the stream past `K` values, so 2^48 × 200 values fit.
const MAX_LEVELS: usize = 48;

/// A KLL sketch of `f64` values (NaN never enters one; callers count NaNs apart).
#[derive(Debug, Clone)]
pub struct Sketch {
    /// Level `h` holds values of weight `2^h`.
    levels: Vec<Vec<f64>>,
    /// Values inserted (the total weight).
    count: u64,
    /// xorshift state for the compaction offsets.
    rng: u64,
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch {
            levels: vec![Vec::new()],
            count: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

impl Sketch {
    /// Adds one value; NaN is ignored.
    pub fn insert(&mut self, value: f64) {
        if value.is_nan() {
            return;
        }
        self.levels[0].push(value);
        self.count += 1;
        if self.retained() > self.capacity_total() {
            self.compress();
        }
    }

    /// Values inserted, directly or through merges.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Values the sketch holds now: its memory, bounded whatever the count.
    pub fn retained(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    /// Adds every value `other` summarises.
    pub fn merge(&mut self, other: &Sketch) {
        while self.levels.len() < other.levels.len() {
            self.levels.push(Vec::new());
        }
        for (mine, theirs) in self.levels.iter_mut().zip(&other.levels) {
            mine.extend_from_slice(theirs);
        }
        self.count += other.count;
        while self.retained() > self.capacity_total() {
            self.compress();
        }
    }

    /// The share of values at or below `x`, in [0, 1]; 0 for an empty sketch.
    pub fn cdf(&self, x: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let weight: u64 = self
            .levels
            .iter()
            .enumerate()
            .map(|(h, level)| (level.iter().filter(|v| **v <= x).count() as u64) << h)
            .sum();
        weight as f64 / self.count as f64
    }

    /// The values held, sorted, each with the share of values at or below it: the sketch's step CDF.
    pub fn steps(&self) -> Vec<(f64, f64)> {
        let mut weighted: Vec<(f64, u64)> = self
            .levels
            .iter()
            .enumerate()
            .flat_map(|(h, level)| level.iter().map(move |v| (*v, 1u64 << h)))
            .collect();
        weighted.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let total = self.count.max(1) as f64;
        let mut cumulative = 0u64;
        let mut steps: Vec<(f64, f64)> = Vec::with_capacity(weighted.len());
        for (value, weight) in weighted {
            cumulative += weight;
            let share = cumulative as f64 / total;
            match steps.last_mut() {
                Some(last) if last.0 == value => last.1 = share,
                _ => steps.push((value, share)),
            }
        }
        steps
    }

    /// The smallest held value with at least a share `q` of the values at or below it; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let steps = self.steps();
        steps
            .iter()
            .find(|(_, share)| *share >= q)
            .or(steps.last())
            .map(|(value, _)| *value)
    }

    /// The capacity of level `h` while the sketch has `levels` levels.
    fn capacity(h: usize, levels: usize) -> usize {
        let depth = (levels - 1 - h) as i32;
        ((K as f64) * (2.0f64 / 3.0).powi(depth)).ceil().max(2.0) as usize
    }

    fn capacity_total(&self) -> usize {
        let levels = self.levels.len();
        (0..levels).map(|h| Self::capacity(h, levels)).sum()
    }

    /// Halves the lowest level over its capacity into the one above.
    fn compress(&mut self) {
        let levels = self.levels.len();
        let Some(h) = (0..levels).find(|&h| self.levels[h].len() >= Self::capacity(h, levels)) else {
            return;
        };
        if h + 1 == levels {
            if levels == MAX_LEVELS {
                // 2^48 × K values: keep the top level as it is rather than grow; not reachable in practice.
                return;
            }
            self.levels.push(Vec::new());
        }
        let mut level = std::mem::take(&mut self.levels[h]);
        level.sort_unstable_by(f64::total_cmp);
        // An odd value out stays where it is, so the promoted pairs keep the total weight exact.
        let kept = (level.len() % 2 == 1).then(|| level.remove(0));
        let offset = (self.next_random() & 1) as usize;
        let promoted = level.iter().skip(offset).step_by(2).copied();
        self.levels[h + 1].extend(promoted);
        self.levels[h].extend(kept);
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic uniform stream in [0, 1).
    fn uniform(n: usize) -> impl Iterator<Item = f64> {
        let mut state = 42u64;
        (0..n).map(move |_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        })
    }

    #[test]
    fn quantiles_of_a_uniform_stream_are_within_two_percent() {
        let mut sketch = Sketch::default();
        uniform(200_000).for_each(|v| sketch.insert(v));
        assert_eq!(sketch.count(), 200_000);
        for q in [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99] {
            let estimate = sketch.quantile(q).expect("not empty");
            assert!((estimate - q).abs() < 0.02, "q{q}: {estimate}");
            assert!((sketch.cdf(q) - q).abs() < 0.02, "cdf({q}): {}", sketch.cdf(q));
        }
    }

    #[test]
    fn the_sketch_stays_small_however_long_the_stream() {
        let mut sketch = Sketch::default();
        let mut sizes = Vec::new();
        for (i, value) in uniform(1_000_000).enumerate() {
            sketch.insert(value);
            if (i + 1) % 100_000 == 0 {
                sizes.push(sketch.retained());
            }
        }
        // About 3 K values plus two per level: ten times more values add only a few.
        assert!(sizes.iter().all(|&size| size <= 3 * K + 2 * 20), "{sizes:?}");
        let steps = sketch.steps();
        assert_eq!(steps.last().map(|s| s.1), Some(1.0));
    }

    #[test]
    fn merging_two_halves_gives_the_whole() {
        let (mut low, mut high) = (Sketch::default(), Sketch::default());
        uniform(50_000).for_each(|v| low.insert(v / 2.0));
        uniform(50_000).for_each(|v| high.insert(0.5 + v / 2.0));
        low.merge(&high);
        assert_eq!(low.count(), 100_000);
        assert!((low.cdf(0.5) - 0.5).abs() < 0.02, "{}", low.cdf(0.5));
        assert!(low.retained() <= 3 * K + 40);
    }

    #[test]
    fn repeated_values_and_nan() {
        let mut sketch = Sketch::default();
        for i in 0..10_000 {
            sketch.insert(f64::from(i % 2));
            sketch.insert(f64::NAN);
        }
        assert_eq!(sketch.count(), 10_000);
        assert_eq!(sketch.steps().len(), 2);
        assert!((sketch.cdf(0.0) - 0.5).abs() < 0.02);
        assert_eq!(sketch.cdf(1.0), 1.0);
        assert_eq!(Sketch::default().quantile(0.5), None);
    }
}

//! The running quality of one version: each prediction joined with its truth adds its rows to the
//! configured metric's sum and, for probabilities, to the calibration buckets. Pure arithmetic, no clock
//! and no lock, so that the numbers can be checked by hand.

use crate::config::QualityMetric;

/// Probabilities are clipped to `[LOG_LOSS_EPSILON, 1 - LOG_LOSS_EPSILON]` before their log is taken, so
/// that a confident wrong answer costs about 34.5 rather than infinity (scikit-learn's long-standing
/// default).
pub const LOG_LOSS_EPSILON: f64 = 1e-15;

/// What a request's answer predicted, read from the configured output once, off the request path.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    /// Probability rows of `classes` columns each, row after row (log-loss keeps them whole). One column is
    /// the probability of the positive class of a binary model.
    Probabilities {
        /// Columns per row.
        classes: usize,
        /// The values.
        values: Vec<f32>,
    },
    /// Per row, the predicted class and the probability calibration reads (accuracy on probabilities:
    /// the row is reduced when it is read, so that a wide row costs nothing while it waits).
    Top {
        /// Whether the rows were single positive-class probabilities, whose truth is 0 or 1.
        binary: bool,
        /// Columns per row, the bound of a true class.
        classes: usize,
        /// Predicted class and calibration probability per row.
        rows: Vec<(u32, f32)>,
    },
    /// One predicted class per row (an integer output).
    Classes(Vec<i64>),
    /// One predicted value per row (regression).
    Values(Vec<f64>),
}

impl Prediction {
    /// The prediction `metric` needs from an output's `values`, whose last dimension is `last` (1 when it
    /// has no dimension).
    pub fn read(metric: QualityMetric, values: Values, last: usize) -> Prediction {
        let classes = last.max(1);
        match (metric, values) {
            (QualityMetric::Mae, values) => Prediction::Values(values.into_f64()),
            (_, Values::Integers(classes)) => Prediction::Classes(classes),
            (QualityMetric::LogLoss, Values::Floats(values)) => Prediction::Probabilities { classes, values },
            (QualityMetric::Accuracy, Values::Floats(values)) => Prediction::Top {
                binary: classes == 1,
                classes,
                rows: values.chunks_exact(classes).map(top).collect(),
            },
        }
    }

    /// Rows predicted.
    pub fn rows(&self) -> usize {
        match self {
            Prediction::Probabilities { classes, values } => values.len() / classes.max(&1),
            Prediction::Top { rows, .. } => rows.len(),
            Prediction::Classes(classes) => classes.len(),
            Prediction::Values(values) => values.len(),
        }
    }

    /// Values held while it waits: the measure of its memory.
    pub fn size(&self) -> usize {
        match self {
            Prediction::Probabilities { values, .. } => values.len(),
            Prediction::Top { rows, .. } => rows.len() * 2,
            Prediction::Classes(classes) => classes.len() * 2,
            Prediction::Values(values) => values.len() * 2,
        }
    }
}

/// An output's elements as numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// A floating-point output.
    Floats(Vec<f32>),
    /// An integer output.
    Integers(Vec<i64>),
}

impl Values {
    fn into_f64(self) -> Vec<f64> {
        match self {
            Values::Floats(values) => values.into_iter().map(f64::from).collect(),
            Values::Integers(values) => values.into_iter().map(|v| v as f64).collect(),
        }
    }
}

/// The predicted class of a probability row and the probability calibration reads: for one column, the
/// positive class when it is at least 0.5 and the column itself; otherwise the first largest column and
/// its value (NaN never wins).
fn top(row: &[f32]) -> (u32, f32) {
    if let [p] = row {
        return (u32::from(*p >= 0.5), *p);
    }
    let mut best = (0u32, f32::NEG_INFINITY);
    for (class, &p) in row.iter().enumerate() {
        if p > best.1 {
            best = (u32::try_from(class).unwrap_or(u32::MAX), p);
        }
    }
    best
}

/// A request's true outcome, one entry per row of its prediction.
#[derive(Debug, Clone, PartialEq)]
pub enum Truth {
    /// True classes (column indices; labels are turned into them when they are posted).
    Classes(Vec<i64>),
    /// True values.
    Values(Vec<f64>),
}

impl Truth {
    /// Rows given.
    pub fn rows(&self) -> usize {
        match self {
            Truth::Classes(classes) => classes.len(),
            Truth::Values(values) => values.len(),
        }
    }
}

/// One calibration bucket: rows whose probability fell in it, their summed probability and how many
/// were right (the predicted class was true, or for a binary model the truth was positive).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bucket {
    /// Rows in the bucket.
    pub count: u64,
    /// The sum of their probabilities.
    pub predicted_sum: f64,
    /// How many of them came true.
    pub observed: u64,
}

/// The running sums of one version's metric.
#[derive(Debug, Clone)]
pub struct Accumulator {
    /// Rows scored.
    pub rows: u64,
    /// Rows right (accuracy), negative log-likelihood (log-loss) or absolute error (MAE), summed.
    pub sum: f64,
    /// Equal-width buckets over [0, 1].
    pub buckets: Vec<Bucket>,
}

impl Accumulator {
    /// An empty accumulator with `buckets` calibration buckets.
    pub fn new(buckets: usize) -> Self {
        Accumulator {
            rows: 0,
            sum: 0.0,
            buckets: vec![Bucket::default(); buckets.max(1)],
        }
    }

    /// The metric's value: the mean over the rows scored; `None` before any.
    pub fn value(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.sum / self.rows as f64)
    }

    /// Scores `prediction` against `truth`: every row or none. The error says why they do not go together
    /// (row counts, a class out of range, a value that is not finite).
    pub fn add(&mut self, prediction: &Prediction, truth: &Truth) -> Result<(), String> {
        if prediction.rows() != truth.rows() {
            return Err(format!(
                "the truth has {} rows but the prediction has {}",
                truth.rows(),
                prediction.rows()
            ));
        }
        let mut scored: Vec<(f64, Option<(f64, bool)>)> = Vec::with_capacity(truth.rows());
        match (prediction, truth) {
            (Prediction::Values(predicted), Truth::Values(values)) => {
                for (p, t) in predicted.iter().zip(values) {
                    scored.push(((p - t).abs(), None));
                }
            }
            (Prediction::Classes(predicted), Truth::Classes(classes)) => {
                for (p, t) in predicted.iter().zip(classes) {
                    scored.push((f64::from(u8::from(p == t)), None));
                }
            }
            (
                Prediction::Top {
                    binary,
                    classes: width,
                    rows,
                },
                Truth::Classes(classes),
            ) => {
                for (&(class, p), &t) in rows.iter().zip(classes) {
                    let t = true_class(t, *width)?;
                    let observed = if *binary { t == 1 } else { t == class as usize };
                    scored.push((
                        f64::from(u8::from(t == class as usize)),
                        Some((f64::from(p), observed)),
                    ));
                }
            }
            (
                Prediction::Probabilities {
                    classes: width,
                    values,
                },
                Truth::Classes(classes),
            ) => {
                for (row, &t) in values.chunks_exact(*width).zip(classes) {
                    let t = true_class(t, *width)?;
                    let (p_true, calibration) = match row {
                        [p] => {
                            let p = f64::from(*p);
                            (if t == 1 { p } else { 1.0 - p }, (p, t == 1))
                        }
                        row => {
                            let (class, p) = top(row);
                            (f64::from(row[t]), (f64::from(p), class as usize == t))
                        }
                    };
                    scored.push((-clip(p_true).ln(), Some(calibration)));
                }
            }
            (_, Truth::Values(_)) => {
                return Err("the metric scores classes, but the truth gives values".into());
            }
            (_, Truth::Classes(_)) => {
                return Err("the metric scores values, but the truth gives classes".into());
            }
        }
        if let Some((score, _)) = scored.iter().find(|(score, _)| !score.is_finite()) {
            return Err(format!("a row scores {score}, which is not a finite number"));
        }
        for (score, calibration) in scored {
            self.rows += 1;
            self.sum += score;
            if let Some((p, observed)) = calibration {
                let index = bucket_of(p, self.buckets.len());
                let bucket = &mut self.buckets[index];
                bucket.count += 1;
                bucket.predicted_sum += if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
                bucket.observed += u64::from(observed);
            }
        }
        Ok(())
    }
}

/// The class `t` as a column of a row of `width` columns (0 or 1 for a single positive-class column).
fn true_class(t: i64, width: usize) -> Result<usize, String> {
    let bound = width.max(2);
    usize::try_from(t).ok().filter(|&t| t < bound).ok_or_else(|| {
        format!(
            "the true class {t} is not a class of the prediction (0 to {})",
            bound - 1
        )
    })
}

/// `p` within `[LOG_LOSS_EPSILON, 1 - LOG_LOSS_EPSILON]`; NaN counts as the least probability.
fn clip(p: f64) -> f64 {
    if p.is_nan() {
        LOG_LOSS_EPSILON
    } else {
        p.clamp(LOG_LOSS_EPSILON, 1.0 - LOG_LOSS_EPSILON)
    }
}

/// The bucket of probability `p` among `buckets` equal-width buckets over [0, 1]: bucket `i` holds
/// `[i/n, (i+1)/n)`, the last one also 1; values outside (and NaN) go to the nearest end. Computed in single
/// precision, the outputs' own, so that an FP32 0.7 falls in [0.7, 0.8) as it reads, not in [0.6, 0.7)
/// as its double-precision value 0.69999998 would.
pub fn bucket_of(p: f64, buckets: usize) -> usize {
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) as f32 };
    ((p * buckets as f32) as usize).min(buckets - 1)
}

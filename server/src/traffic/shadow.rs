//! Shadow traffic, without transport: each model's in-flight budget for shadow requests, the comparison of a
//! served answer with the shadow's, and the tallies the metrics show. A shadow request only runs when the
//! model's budget has room; otherwise it is dropped (and counted) before anything is copied, so shadow load
//! never queues behind itself or holds a real request.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
};

use bytes::Bytes;

use crate::DataType;

/// Upper bounds of the `ferry_shadow_difference` histogram buckets: the largest absolute difference
/// between the served and the shadow answer of one request.
pub const DIFFERENCE_BOUNDS: &[f64] = &[0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0];

/// How a shadow request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every output equal (floats within the policy's tolerance).
    Agree,
    /// Some output differs: another shape, type or count, or values beyond the tolerance.
    Disagree,
    /// The shadow version failed the request, or did not serve.
    Error,
    /// Not run: the budget was full, or the shadow version's queue was.
    Dropped,
}

impl Outcome {
    /// Every outcome, in the order the metrics list them.
    pub const ALL: [Outcome; 4] = [
        Outcome::Agree,
        Outcome::Disagree,
        Outcome::Error,
        Outcome::Dropped,
    ];

    /// The `outcome` label.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Agree => "agree",
            Outcome::Disagree => "disagree",
            Outcome::Error => "error",
            Outcome::Dropped => "dropped",
        }
    }
}

/// The tallies of one (served version, shadow version) pair.
#[derive(Debug, Clone, Default)]
pub struct PairStats {
    /// Requests by outcome, in [`Outcome::ALL`] order.
    pub outcomes: [u64; 4],
    /// Requests per difference bucket ([`DIFFERENCE_BOUNDS`], then +Inf), not cumulative.
    pub buckets: [u64; DIFFERENCE_BOUNDS.len() + 1],
    /// The sum of the recorded differences.
    pub sum: f64,
}

/// One model's shadow budget and tallies, shared by every policy the model has had.
#[derive(Debug, Default)]
pub struct Slot {
    in_flight: AtomicU32,
    pairs: Mutex<BTreeMap<(u64, u64), PairStats>>,
}

/// A place in a model's shadow budget, given back when dropped.
#[derive(Debug)]
pub struct Permit(Arc<Slot>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slot {
    /// A place for one more shadow request if fewer than `max` are in flight.
    pub fn try_acquire(self: &Arc<Self>, max: u32) -> Option<Permit> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(Arc::clone(self)))
    }

    /// Counts one shadow request of `served` mirrored to `shadow`, with the difference when there is one.
    pub fn record(&self, served: u64, shadow: u64, outcome: Outcome, difference: Option<f64>) {
        let mut pairs = self.pairs.lock().unwrap_or_else(PoisonError::into_inner);
        let stats = pairs.entry((served, shadow)).or_default();
        stats.outcomes[outcome as usize] += 1;
        if let Some(difference) = difference {
            let bucket = DIFFERENCE_BOUNDS
                .iter()
                .position(|bound| difference <= *bound)
                .unwrap_or(DIFFERENCE_BOUNDS.len());
            stats.buckets[bucket] += 1;
            stats.sum += difference;
        }
    }

    /// The tallies, by (served version, shadow version).
    pub fn pairs(&self) -> Vec<((u64, u64), PairStats)> {
        let pairs = self.pairs.lock().unwrap_or_else(PoisonError::into_inner);
        pairs.iter().map(|(k, v)| (*k, v.clone())).collect()
    }
}

/// One output of an answer, as compared.
#[derive(Debug, Clone)]
pub struct Output {
    /// Its name.
    pub name: String,
    /// Its datatype's wire name.
    pub datatype: String,
    /// Its shape.
    pub shape: Vec<i64>,
    /// Its raw little-endian bytes.
    pub raw: Bytes,
}

/// Compares the served answer with the shadow's: the outcome, and the largest absolute difference between
/// numeric values when the outputs have the same names, types and shapes.
pub fn compare(served: &[Output], shadow: &[Output], tolerance: f64) -> (Outcome, Option<f64>) {
    let mut worst = 0.0f64;
    let mut agree = served.len() == shadow.len();
    let mut numeric = false;
    for output in served {
        let Some(other) = shadow.iter().find(|o| o.name == output.name) else {
            agree = false;
            continue;
        };
        if other.datatype != output.datatype
            || other.shape != output.shape
            || other.raw.len() != output.raw.len()
        {
            agree = false;
            continue;
        }
        let datatype = DataType::from_wire_name(&output.datatype);
        match datatype.and_then(|t| difference(t, &output.raw, &other.raw)) {
            Some(difference) => {
                numeric = true;
                worst = worst.max(difference);
                let exact = !matches!(
                    datatype,
                    Some(DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64)
                );
                let within = if exact {
                    difference == 0.0
                } else {
                    difference <= tolerance
                };
                agree &= within;
            }
            None => agree &= output.raw == other.raw,
        }
    }
    let outcome = if agree { Outcome::Agree } else { Outcome::Disagree };
    (outcome, numeric.then_some(worst))
}

/// The largest absolute difference between two tensors of numeric `datatype` (infinite where exactly one
/// value is NaN); `None` for BYTES.
fn difference(datatype: DataType, a: &[u8], b: &[u8]) -> Option<f64> {
    let size = datatype.element_size()?;
    let value = |chunk: &[u8]| -> f64 {
        let mut bytes = [0u8; 8];
        bytes[..size].copy_from_slice(chunk);
        let word = u64::from_le_bytes(bytes);
        match datatype {
            DataType::Bool | DataType::Uint8 | DataType::Uint16 | DataType::Uint32 | DataType::Uint64 => {
                word as f64
            }
            DataType::Int8 => f64::from(chunk[0] as i8),
            DataType::Int16 => f64::from(word as u16 as i16),
            DataType::Int32 => f64::from(word as u32 as i32),
            DataType::Int64 => word as i64 as f64,
            DataType::Fp16 => f64::from(half::f16::from_bits(word as u16)),
            DataType::Bf16 => f64::from(half::bf16::from_bits(word as u16)),
            DataType::Fp32 => f64::from(f32::from_bits(word as u32)),
            DataType::Fp64 => f64::from_bits(word),
            DataType::Bytes => 0.0,
        }
    };
    let mut worst = 0.0f64;
    for (x, y) in a.chunks_exact(size).zip(b.chunks_exact(size)) {
        let (x, y) = (value(x), value(y));
        let d = match (x.is_nan(), y.is_nan()) {
            (true, true) => 0.0,
            (false, false) if x == y => 0.0,
            (false, false) => (x - y).abs(),
            _ => f64::INFINITY,
        };
        worst = worst.max(d);
    }
    Some(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(datatype: &str, values: &[f32]) -> Output {
        Output {
            name: "y".into(),
            datatype: datatype.into(),
            shape: vec![values.len() as i64],
            raw: values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        }
    }

    #[test]
    fn floats_agree_within_the_tolerance_and_the_difference_is_measured() {
        let a = [output("FP32", &[1.0, 2.0])];
        let b = [output("FP32", &[1.0, 2.001])];
        let (outcome, difference) = compare(&a, &b, 0.01);
        assert_eq!(outcome, Outcome::Agree);
        assert!((difference.expect("numeric") - 0.001).abs() < 1e-5);
        assert_eq!(compare(&a, &b, 0.0).0, Outcome::Disagree);
        let nan = [output("FP32", &[f32::NAN, 2.0])];
        assert_eq!(compare(&nan, &nan, 0.0), (Outcome::Agree, Some(0.0)));
        assert_eq!(compare(&a, &nan, 1.0), (Outcome::Disagree, Some(f64::INFINITY)));
    }

    #[test]
    fn integers_and_strings_must_be_equal_and_shapes_must_match() {
        let int = |v: i32| Output {
            name: "y".into(),
            datatype: "INT32".into(),
            shape: vec![1],
            raw: Bytes::from(v.to_le_bytes().to_vec()),
        };
        assert_eq!(compare(&[int(-3)], &[int(-3)], 10.0), (Outcome::Agree, Some(0.0)));
        assert_eq!(
            compare(&[int(-3)], &[int(2)], 10.0),
            (Outcome::Disagree, Some(5.0))
        );
        let text = |s: &'static [u8]| Output {
            name: "y".into(),
            datatype: "BYTES".into(),
            shape: vec![1],
            raw: Bytes::from_static(s),
        };
        assert_eq!(
            compare(&[text(b"\x01\0\0\0a")], &[text(b"\x01\0\0\0a")], 0.0),
            (Outcome::Agree, None)
        );
        assert_eq!(
            compare(&[text(b"\x01\0\0\0a")], &[text(b"\x01\0\0\0b")], 0.0).0,
            Outcome::Disagree
        );
        let mut longer = output("FP32", &[1.0, 2.0, 3.0]);
        longer.shape = vec![3];
        assert_eq!(
            compare(&[output("FP32", &[1.0, 2.0])], &[longer], 1.0).0,
            Outcome::Disagree
        );
    }

    #[test]
    fn the_budget_bounds_shadows_in_flight_and_is_given_back() {
        let slot = Arc::new(Slot::default());
        let first = slot.try_acquire(2).expect("room");
        let second = slot.try_acquire(2).expect("room");
        assert!(slot.try_acquire(2).is_none());
        drop(first);
        assert!(slot.try_acquire(2).is_some());
        drop(second);
        slot.record(1, 2, Outcome::Dropped, None);
        slot.record(1, 2, Outcome::Disagree, Some(0.5));
        let pairs = slot.pairs();
        assert_eq!(pairs[0].0, (1, 2));
        assert_eq!(pairs[0].1.outcomes, [0, 1, 0, 1]);
        assert_eq!(pairs[0].1.buckets[7], 1);
    }
}

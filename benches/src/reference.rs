//! The in-process reference: the same model run directly on ONNX Runtime in this process, batch after batch,
//! with no network, queue or copies in between. Ferry's serving figures are reported against it.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use ferry_server::{config::InstancePlan, onnx};
use ort::{environment::Environment, session::SessionInputValue, value::Tensor};

/// What the reference measured at one batch size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reference {
    /// Rows per run.
    pub batch: usize,
    /// Rows computed per second, runs back to back.
    pub rows_per_second: f64,
    /// Median time of one run.
    pub p50: Duration,
}

/// Runs `model` (FP32 input `x` of `width` features) at `batch` rows per run for about `duration`, with the
/// session options Ferry gives an instance under `plan`.
pub fn measure(
    environment: &Environment,
    model: &Path,
    plan: &InstancePlan,
    width: usize,
    batch: usize,
    duration: Duration,
) -> Result<Reference, String> {
    let mut session = onnx::open_session(environment, model, plan, 0, None)
        .map_err(|e| e.to_string())?
        .session;
    let input = Tensor::from_array((vec![batch as i64, width as i64], vec![0.5f32; batch * width]))
        .map_err(|e| e.to_string())?;
    let mut run = || -> Result<Duration, String> {
        let started = Instant::now();
        let outputs = session
            .run(vec![("x", SessionInputValue::from(&input))])
            .map_err(|e| e.to_string())?;
        drop(outputs);
        Ok(started.elapsed())
    };
    for _ in 0..10 {
        run()?;
    }
    let mut times = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        times.push(run()?);
    }
    let total: Duration = times.iter().sum();
    times.sort_unstable();
    Ok(Reference {
        batch,
        rows_per_second: (times.len() * batch) as f64 / total.as_secs_f64(),
        p50: times[times.len() / 2],
    })
}

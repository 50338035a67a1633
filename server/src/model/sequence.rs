//! The sequence batcher of a stateful model (`sequence_batching`): requests of a sequence run one at a
//! time, in order, batched with other sequences' requests by a [`SequenceBook`]; Ferry fills the model's
//! control inputs for each batch row and carries each sequence's implicit state from one run's outputs to
//! the next run's inputs.
//!
//! The book holds each sequence's state between its runs, so any instance may run any sequence's next
//! request: the state follows the sequence, which is what Triton's "same instance" rule protects.

use std::{
    path::Path,
    sync::{
        Arc, Condvar, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use ferry_batching::{
    CorrelationId, Payload, SequenceBook, SequenceError, SequenceNext, SequencePolicy, SequenceRequest,
    SequenceRow, SequenceStrategy,
};
use tokio::sync::oneshot;

use super::instance::Engine;
use crate::{
    DataType, Error,
    config::{
        ControlKind, InitialState, MAX_QUEUED_PER_SEQUENCE, ModelSpec, SequenceSpec, SequenceStrategyConfig,
    },
    onnx::OutputTensor,
    request::{InferRequest, InputTensor, TensorData},
    stats::VersionStats,
};

/// The longest an instance waits without looking at its retired flag.
const RECHECK: Duration = Duration::from_millis(100);

/// A queued request of a sequence, with the channel its answer goes back on.
pub(super) struct SequenceJob {
    request: InferRequest,
    reply: oneshot::Sender<Result<Vec<OutputTensor>, Error>>,
    queued_at: Instant,
}

impl Payload for SequenceJob {
    fn batches_with(&self, other: &Self) -> bool {
        batches_with(&self.request, &other.request)
    }
}

/// Whether two requests can share a batch: the same inputs, agreeing in all but the batch dimension.
fn batches_with(mine: &InferRequest, theirs: &InferRequest) -> bool {
    let (mine, theirs) = (&mine.inputs, &theirs.inputs);
    mine.len() == theirs.len()
        && mine.iter().zip(theirs).all(|(a, b)| {
            a.index == b.index
                && a.shape.get(1..) == b.shape.get(1..)
                && std::mem::discriminant(&a.data) == std::mem::discriminant(&b.data)
        })
}

/// One sequence's implicit state: one row of each `state` tensor, in config order.
pub(super) type State = Vec<Bytes>;

/// The sequence batcher of one model version, shared by its request handlers and instance threads.
pub(super) struct Sequencer {
    spec: Arc<SequenceSpec>,
    /// The model's spec with the control and state tensors added as inputs (after the client's) and the
    /// state outputs the client does not see added as outputs: what the batch runner runs.
    run_spec: Arc<ModelSpec>,
    /// Positions in `run_spec.outputs` of each state's output.
    state_outputs: Vec<usize>,
    /// Each state's value at a sequence's start.
    initial: State,
    book: Mutex<SequenceBook<SequenceJob, State>>,
    changed: Condvar,
    closed: AtomicBool,
}

impl Sequencer {
    /// The sequencer of a version of `spec` with `instances` instances, reading initial states from the
    /// model folder `model_dir`.
    pub(super) fn new(spec: &ModelSpec, instances: usize, model_dir: &Path) -> Result<Option<Self>, Error> {
        let Some(sequence) = &spec.sequence else {
            return Ok(None);
        };
        let mut run_spec = spec.clone();
        run_spec.inputs.extend(sequence.extra_inputs());
        let mut state_outputs = Vec::with_capacity(sequence.states.len());
        for state in &sequence.states {
            let index = match spec.output(&state.output_name) {
                Some((index, _)) => index,
                None => {
                    run_spec.outputs.push(crate::config::TensorSpec {
                        name: state.output_name.clone(),
                        data_type: state.data_type,
                        dims: state.dims.clone(),
                        reshape: None,
                        optional: false,
                    });
                    run_spec.outputs.len() - 1
                }
            };
            state_outputs.push(index);
        }
        let initial = sequence
            .states
            .iter()
            .map(|state| match &state.initial {
                InitialState::Zeros => Ok(Bytes::from(vec![0u8; state.row_bytes()])),
                InitialState::File(file) => read_initial_state(model_dir, file, state.row_bytes()),
            })
            .collect::<Result<State, Error>>()?;
        let max_batch = spec.max_batch_size.max(1);
        let (strategy, slots) = match &sequence.strategy {
            SequenceStrategyConfig::Direct {
                minimum_slot_utilization,
            } => (
                SequenceStrategy::Direct {
                    minimum_slot_utilization: *minimum_slot_utilization,
                },
                max_batch.saturating_mul(instances.max(1)),
            ),
            SequenceStrategyConfig::Oldest {
                max_candidate_sequences,
                preferred_batch_sizes,
            } => (
                SequenceStrategy::Oldest {
                    preferred_batch_sizes: preferred_batch_sizes.clone(),
                },
                *max_candidate_sequences,
            ),
        };
        let policy = SequencePolicy {
            strategy,
            slots,
            max_batch,
            max_queue_delay: sequence.max_queue_delay,
            idle_timeout: sequence.idle_timeout,
            max_sequences: sequence.max_live_sequences(),
            max_queued_per_sequence: MAX_QUEUED_PER_SEQUENCE,
        };
        Ok(Some(Sequencer {
            spec: Arc::clone(sequence),
            run_spec: Arc::new(run_spec),
            state_outputs,
            initial,
            book: Mutex::new(SequenceBook::new(policy)),
            changed: Condvar::new(),
            closed: AtomicBool::new(false),
        }))
    }

    /// Queues `request` in its sequence and waits for its outputs. Dropping the future takes the request
    /// back if it has not started; the sequence's other requests keep their order.
    pub(super) async fn infer(&self, request: InferRequest) -> Result<Vec<OutputTensor>, Error> {
        let model = &self.run_spec.name;
        let Some(flags) = request.sequence.clone() else {
            // Triton's text (SequenceBatchScheduler::Enqueue).
            return Err(Error::invalid(format!(
                "inference request to model '{model}' must specify a non-zero or non-empty correlation ID"
            )));
        };
        if self.run_spec.max_batch_size > 0 && request.batch_size != 1 {
            return Err(Error::invalid(format!(
                "inference request to model '{model}' must specify batch-size 1 due to requirements of \
                 sequence batcher, got {}",
                request.batch_size
            )));
        }
        if let Some(control) = self
            .spec
            .controls
            .iter()
            .find(|c| c.kind == ControlKind::CorrelationId && c.data_type != DataType::Bytes)
            && matches!(flags.id, CorrelationId::Text(_))
        {
            return Err(Error::invalid(format!(
                "model '{model}' takes numeric sequence ids (its CORRID control '{}' is {}), got the string \
                 sequence_id '{}'",
                control.name,
                control.data_type.to_config().as_str_name(),
                flags.id
            )));
        }
        let (reply, answer) = oneshot::channel();
        let id = flags.id.clone();
        let submitted = SequenceRequest {
            id: flags.id,
            start: flags.start,
            end: flags.end,
            payload: SequenceJob {
                request,
                reply,
                queued_at: Instant::now(),
            },
        };
        let key = self
            .lock()
            .submit(submitted, Instant::now())
            .map_err(|error| self.refusal(error))?;
        self.changed.notify_all();
        let _withdraw = Withdraw {
            sequencer: self,
            id,
            key,
        };
        answer.await.unwrap_or_else(|_| {
            Err(Error::Execution(format!(
                "model '{model}' stopped before answering"
            )))
        })
    }

    /// Requests waiting in their sequences now.
    pub(super) fn queued(&self) -> usize {
        self.lock().queued()
    }

    /// Stops handing out batches once nothing is queued; instance threads then end.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.changed.notify_all();
    }

    /// Blocks until there is a batch for an instance to run, or `None` once the instance is retired or the
    /// version closed with nothing left queued.
    pub(super) fn next(&self, retired: &AtomicBool) -> Option<Vec<SequenceRow<SequenceJob, State>>> {
        let mut book = self.lock();
        loop {
            if retired.load(Ordering::Acquire) || (self.closed.load(Ordering::Acquire) && book.queued() == 0)
            {
                return None;
            }
            let now = Instant::now();
            let wait = match book.next_batch(now) {
                SequenceNext::Run(rows) => return Some(rows),
                SequenceNext::Wait(until) => {
                    until.map_or(RECHECK, |until| until.saturating_duration_since(now))
                }
            };
            book = self
                .changed
                .wait_timeout(book, wait.clamp(Duration::from_micros(100), RECHECK))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Runs `rows` as one batch on `engine`, answers each request, and hands each sequence its new state.
    pub(super) fn run(
        &self,
        engine: &mut Engine,
        rows: Vec<SequenceRow<SequenceJob, State>>,
        stats: &VersionStats,
    ) {
        let requests: Vec<InferRequest> = rows.iter().map(|row| self.model_request(row)).collect();
        let refs: Vec<&InferRequest> = requests.iter().collect();
        let Engine { runner, session } = engine;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runner.run(session, &self.run_spec, &refs)
        }))
        .unwrap_or_else(|_| {
            Err(Error::Execution(
                "the instance panicked while running the batch".to_owned(),
            ))
        });
        let now = Instant::now();
        let mut finished = Vec::with_capacity(rows.len());
        match result {
            Ok((outputs, times)) => {
                stats.record_batch(
                    rows.len(),
                    rows.iter().map(|row| now - row.payload.queued_at),
                    times,
                );
                for (row, outputs) in rows.into_iter().zip(outputs) {
                    let (answer, state) = self.split_state(&row, outputs);
                    let state = state.or_else(|| row.state.clone());
                    let _ = row.payload.reply.send(answer);
                    finished.push((row.id, row.end, state));
                }
            }
            Err(error) => {
                tracing::warn!(model = %self.run_spec.name, %error, rows = rows.len(), "sequence batch failed");
                for row in rows {
                    let _ = row.payload.reply.send(Err(error.clone()));
                    finished.push((row.id, row.end, row.state));
                }
            }
        }
        let mut book = self.lock();
        for (id, end, state) in finished {
            book.complete(&id, end, state, now);
        }
        drop(book);
        self.changed.notify_all();
    }

    /// The client's request with the control and state inputs added, asking for the state outputs too.
    fn model_request(&self, row: &SequenceRow<SequenceJob, State>) -> InferRequest {
        let mut request = row.payload.request.clone();
        let batched = self.run_spec.max_batch_size > 0;
        let with_batch = |dims: &[i64]| -> Vec<i64> {
            if batched {
                std::iter::once(1).chain(dims.iter().copied()).collect()
            } else {
                dims.to_vec()
            }
        };
        let mut index = self.run_spec.inputs.len() - self.spec.controls.len() - self.spec.states.len();
        for control in &self.spec.controls {
            let data = match control.kind {
                ControlKind::Start => {
                    TensorData::Fixed(Bytes::from(control.false_true[usize::from(row.start)].clone()))
                }
                ControlKind::End => {
                    TensorData::Fixed(Bytes::from(control.false_true[usize::from(row.end)].clone()))
                }
                // Batches hold only rows with a request: every row is ready.
                ControlKind::Ready => TensorData::Fixed(Bytes::from(control.false_true[1].clone())),
                ControlKind::CorrelationId => correlation_data(&row.id, control.data_type),
            };
            let shape = with_batch(&[1]);
            request.inputs.push(InputTensor {
                index,
                model_shape: shape.clone(),
                shape,
                data,
            });
            index += 1;
        }
        for (position, state) in self.spec.states.iter().enumerate() {
            let value = row
                .state
                .as_ref()
                .and_then(|values| values.get(position))
                .unwrap_or(&self.initial[position]);
            let shape = with_batch(&state.dims);
            request.inputs.push(InputTensor {
                index,
                model_shape: shape.clone(),
                shape,
                data: TensorData::Fixed(value.clone()),
            });
            index += 1;
        }
        for output in &self.state_outputs {
            if !request.outputs.contains(output) {
                request.outputs.push(*output);
            }
        }
        request
    }

    /// Splits a row's outputs into the client's answer (what it asked for) and the sequence's new state.
    fn split_state(
        &self,
        row: &SequenceRow<SequenceJob, State>,
        outputs: Vec<OutputTensor>,
    ) -> (Result<Vec<OutputTensor>, Error>, Option<State>) {
        let asked = &row.payload.request.outputs;
        let mut state = Vec::with_capacity(self.state_outputs.len());
        for (position, index) in self.state_outputs.iter().enumerate() {
            let expected = self.spec.states[position].row_bytes();
            match outputs.iter().find(|o| o.index == *index) {
                Some(output) if output.data.len() == expected => state.push(output.data.clone()),
                other => {
                    let error = Error::Execution(format!(
                        "state output '{}' of model '{}' has {} bytes, expected {expected}",
                        self.spec.states[position].output_name,
                        self.run_spec.name,
                        other.map_or(0, |o| o.data.len())
                    ));
                    return (Err(error), None);
                }
            }
        }
        let answer = outputs.into_iter().filter(|o| asked.contains(&o.index)).collect();
        (Ok(answer), Some(state))
    }

    fn refusal(&self, error: SequenceError) -> Error {
        let model = &self.run_spec.name;
        // Triton's text for a request that continues no sequence (SequenceBatchScheduler::Enqueue).
        let not_started = |id: &CorrelationId| {
            format!(
                "inference request for sequence {id} to model '{model}' must specify the START flag on the first request of the sequence"
            )
        };
        match error {
            SequenceError::NotStarted(id) => Error::invalid(not_started(&id)),
            SequenceError::IdleReleased(id) => Error::invalid(format!(
                "{}; sequence {id} was released after being idle for longer than \
                 max_sequence_idle_microseconds ({})",
                not_started(&id),
                self.spec.idle_timeout.as_micros()
            )),
            SequenceError::TooManySequences { limit } => Error::TooLarge(format!(
                "model '{model}' already has {limit} live sequences, the most it may hold; end a sequence \
                 (sequence_end) or let one idle out first"
            )),
            SequenceError::SequenceQueueFull { id, limit } => Error::TooLarge(format!(
                "sequence {id} of model '{model}' already has {limit} requests queued, the most one sequence \
                 may have"
            )),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SequenceBook<SequenceJob, State>> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Takes a request back from its sequence when its caller stops waiting before it ran.
struct Withdraw<'a> {
    sequencer: &'a Sequencer,
    id: CorrelationId,
    key: u64,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        let taken = self.sequencer.lock().cancel(&self.id, self.key, Instant::now());
        if taken.is_some() {
            self.sequencer.changed.notify_all();
        }
    }
}

/// The CORRID control's value for sequence `id` as a tensor of `data_type`: the number in that type (cut to
/// its width, as Triton does), or the id as a string for TYPE_STRING.
fn correlation_data(id: &CorrelationId, data_type: DataType) -> TensorData {
    let number = match id {
        CorrelationId::Number(n) => *n,
        CorrelationId::Text(text) => {
            return TensorData::Strings(vec![Bytes::copy_from_slice(text.as_bytes())]);
        }
    };
    let bytes = match data_type {
        DataType::Bytes => return TensorData::Strings(vec![Bytes::from(number.to_string())]),
        DataType::Uint32 | DataType::Int32 => (number as u32).to_le_bytes().to_vec(),
        _ => number.to_le_bytes().to_vec(),
    };
    TensorData::Fixed(Bytes::from(bytes))
}

/// Reads an `initial_state` data file: raw little-endian bytes, exactly one row of the state.
fn read_initial_state(model_dir: &Path, file: &str, row_bytes: usize) -> Result<Bytes, Error> {
    let path = model_dir.join("initial_state").join(file);
    let fail = |what: String| Error::ModelLoad(format!("initial_state data_file {}: {what}", path.display()));
    let size = std::fs::metadata(&path)
        .map_err(|error| fail(error.to_string()))?
        .len();
    if size != row_bytes as u64 {
        return Err(fail(format!("has {size} bytes, the state needs {row_bytes}")));
    }
    std::fs::read(&path)
        .map(Bytes::from)
        .map_err(|error| fail(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corrid_control_carries_the_id_in_the_configured_type() {
        let fixed = |data: TensorData| match data {
            TensorData::Fixed(bytes) => bytes.to_vec(),
            TensorData::Strings(_) => panic!("expected fixed-size bytes"),
        };
        let big = CorrelationId::Number(0x1_0000_0007);
        assert_eq!(
            fixed(correlation_data(&big, DataType::Uint64)),
            0x1_0000_0007u64.to_le_bytes()
        );
        assert_eq!(
            fixed(correlation_data(&big, DataType::Int64)),
            0x1_0000_0007u64.to_le_bytes()
        );
        // Cut to the width of a 32-bit control, as Triton's CORRID of TYPE_UINT32 / TYPE_INT32 is.
        assert_eq!(
            fixed(correlation_data(&big, DataType::Uint32)),
            7u32.to_le_bytes()
        );
        assert_eq!(
            correlation_data(&CorrelationId::Number(42), DataType::Bytes),
            TensorData::Strings(vec![Bytes::from_static(b"42")])
        );
        assert_eq!(
            correlation_data(&CorrelationId::Text("abc".into()), DataType::Bytes),
            TensorData::Strings(vec![Bytes::from_static(b"abc")])
        );
    }
}

"""Stateful models (sequence_batching) through NVIDIA's own clients, checked against onnxruntime.

The server serves tests/sequence_repository: `seq_gru_state` (a GRU cell whose hidden state Ferry carries,
direct strategy), `seq_gru_controls` (the same cell with START, READY and CORRID control inputs and an
initial state from a file), `seq_accumulate_oldest` (a running sum under the oldest strategy, with a BOOL
END control) and `seq_idle` (the running sum without batching and with a 0.3 s idle timeout). The
reference runs each model.onnx here in onnxruntime, one sequence alone, feeding the state back by hand:
whatever Ferry batched together, each sequence must get exactly those answers.

Triton behaviour pinned: the sequence extension's request parameters (`sequence_id` int or string,
`sequence_start`, `sequence_end`; core `infer_handler.cc` SetInferenceRequestMetadata) and the sequence
batcher's refusals (core `sequence_batch_scheduler.cc` SequenceBatchScheduler::Enqueue: no correlation id,
no START on a sequence's first request).

Environment (all required: without them the run FAILS, it is never skipped):
    FERRY_GRPC_URL, FERRY_HTTP_URL  host:port of a Ferry serving tests/sequence_repository
    FERRY_REPO_ROOT                 the repository root (set by ferry_tests::run_pytest)
"""

from __future__ import annotations

import os
import queue
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.exit(f"FAILED: {name} is not set; run this through tests/tests/sequence.rs", returncode=1)
    return value


def _repository() -> Path:
    return Path(_env("FERRY_REPO_ROOT")) / "tests" / "sequence_repository"


class Reference:
    """One sequence of `model` run alone in onnxruntime, its state fed back by hand."""

    def __init__(self, model: str):
        path = _repository() / model / "1" / "model.onnx"
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.model = model
        names = {i.name for i in self.session.get_inputs()}
        self.state_name = "h_in" if "h_in" in names else "acc_in"
        self.state_out = "h_out" if "h_in" in names else "acc_out"
        self.controls = names - {"x", self.state_name}

    def initial(self, rows: bool) -> np.ndarray:
        size = 8 if self.state_name == "h_in" else 4
        if self.model == "seq_gru_controls":
            state = np.frombuffer((_repository() / self.model / "initial_state" / "h0.bin").read_bytes(), "<f4")
        else:
            state = np.zeros(size, dtype=np.float32)
        return state.reshape(1, size) if rows else state

    def run(self, xs: list[np.ndarray], sequence_id: int, rows: bool = True) -> list[np.ndarray]:
        state = self.initial(rows)
        answers = []
        for step, x in enumerate(xs):
            feeds = {"x": x, self.state_name: state}
            controls = {
                "START": np.array([[1 if step == 0 else 0]], dtype=np.int32),
                "READY": np.array([[1]], dtype=np.int32),
                "CORRID": np.array([[sequence_id]], dtype=np.uint64),
                "END": np.array([[step == len(xs) - 1]], dtype=np.bool_),
            }
            feeds.update({name: controls[name] for name in self.controls})
            outputs = dict(zip([o.name for o in self.session.get_outputs()], self.session.run(None, feeds)))
            state = outputs[self.state_out]
            answers.append(outputs["y"])
        return answers


def _inputs(module, x: np.ndarray):
    tensor = module.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return [tensor]


def _steps(seed: int, count: int, rows: bool = True) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (1, 4) if rows else (4,)
    return [rng.normal(0.0, 1.0, size=shape).astype(np.float32) for _ in range(count)]


def _unary(protocol: str, model: str, sequence_id, xs: list[np.ndarray], extra: list[str] | None = None):
    """Runs one sequence with unary calls; returns y (and `extra` outputs) of each step."""
    module = grpcclient if protocol == "grpc" else httpclient
    client = (
        grpcclient.InferenceServerClient(_env("FERRY_GRPC_URL"))
        if protocol == "grpc"
        else httpclient.InferenceServerClient(_env("FERRY_HTTP_URL"))
    )
    names = ["y", *(extra or [])]
    answers = []
    for step, x in enumerate(xs):
        result = client.infer(
            model,
            _inputs(module, x),
            outputs=[module.InferRequestedOutput(name) for name in names],
            sequence_id=sequence_id,
            sequence_start=step == 0,
            sequence_end=step == len(xs) - 1,
        )
        answers.append({name: result.as_numpy(name) for name in names})
    client.close()
    return answers


def _streamed(model: str, sequence_id, xs: list[np.ndarray], extra: list[str] | None = None):
    """Runs one sequence on one ModelStreamInfer stream, waiting for each answer before the next request."""
    client = grpcclient.InferenceServerClient(_env("FERRY_GRPC_URL"))
    answers_queue: queue.Queue = queue.Queue()
    client.start_stream(callback=partial(lambda q, result, error: q.put((result, error)), answers_queue))
    names = ["y", *(extra or [])]
    answers = []
    try:
        for step, x in enumerate(xs):
            client.async_stream_infer(
                model,
                _inputs(grpcclient, x),
                outputs=[grpcclient.InferRequestedOutput(name) for name in names],
                sequence_id=sequence_id,
                sequence_start=step == 0,
                sequence_end=step == len(xs) - 1,
            )
            result, error = answers_queue.get(timeout=30)
            assert error is None, error
            answers.append({name: result.as_numpy(name) for name in names})
    finally:
        client.stop_stream()
        client.close()
    return answers


@pytest.mark.parametrize("model", ["seq_gru_state", "seq_gru_controls", "seq_accumulate_oldest"])
def test_interleaved_sequences_from_concurrent_clients_match_a_lone_run(model: str) -> None:
    reference = Reference(model)
    plans = []
    for n in range(12):
        transport = ("grpc", "stream", "http")[n % 3]
        # Numeric ids, and string ids where the model has no numeric CORRID control.
        sequence_id = 1000 + n if model == "seq_gru_controls" or n % 2 == 0 else f"seq-{model}-{n}"
        plans.append((transport, sequence_id, _steps(seed=n, count=6 + n % 4)))
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def run(index: int, transport: str, sequence_id, xs) -> None:
        extra = ["start_out", "ready_out", "corrid_out"] if model == "seq_gru_controls" else None
        if model == "seq_accumulate_oldest":
            extra = ["end_out"]
        try:
            if transport == "stream":
                results[index] = _streamed(model, sequence_id, xs, extra)
            else:
                results[index] = _unary(transport, model, sequence_id, xs, extra)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i, *plan)) for i, plan in enumerate(plans)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for index, (transport, sequence_id, xs) in enumerate(plans):
        numeric = sequence_id if isinstance(sequence_id, int) else 0
        expected = reference.run(xs, numeric)
        got = results[index]
        assert len(got) == len(xs)
        for step, (answer, want) in enumerate(zip(got, expected)):
            np.testing.assert_allclose(
                answer["y"], want, rtol=1e-5, atol=1e-6, err_msg=f"{transport} sequence {sequence_id} step {step}"
            )
            if model == "seq_gru_controls":
                assert answer["start_out"].tolist() == [[1 if step == 0 else 0]]
                assert answer["ready_out"].tolist() == [[1]]
                assert answer["corrid_out"].tolist() == [[sequence_id]]
            if model == "seq_accumulate_oldest":
                assert answer["end_out"].tolist() == [[step == len(xs) - 1]]


def test_the_state_stays_inside_unless_the_config_lists_it() -> None:
    client = grpcclient.InferenceServerClient(_env("FERRY_GRPC_URL"))
    metadata = client.get_model_metadata("seq_gru_state")
    assert [t.name for t in metadata.inputs] == ["x"]
    assert [t.name for t in metadata.outputs] == ["y"]
    # Auto-complete offers the client x and y only, not the state tensors.
    metadata = client.get_model_metadata("seq_idle")
    assert [t.name for t in metadata.inputs] == ["x"]
    assert [t.name for t in metadata.outputs] == ["y"]
    # Asking for no output in particular returns the client's outputs, without the state.
    result = client.infer("seq_gru_state", _inputs(grpcclient, _steps(1, 1)[0]), sequence_id=77, sequence_start=True,
                          sequence_end=True)
    assert result.as_numpy("h_out") is None
    assert result.as_numpy("y").shape == (1, 8)
    # seq_gru_controls lists h_out as an output: there it is the state the next request starts from.
    xs = _steps(5, 2)
    answers = _unary("grpc", "seq_gru_controls", 78, xs, ["h_out"])
    np.testing.assert_allclose(answers[0]["h_out"], answers[0]["y"])
    client.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_sequence_model_needs_a_correlation_id(protocol: str) -> None:
    module = grpcclient if protocol == "grpc" else httpclient
    client = (
        grpcclient.InferenceServerClient(_env("FERRY_GRPC_URL"))
        if protocol == "grpc"
        else httpclient.InferenceServerClient(_env("FERRY_HTTP_URL"))
    )
    with pytest.raises(InferenceServerException) as error:
        client.infer("seq_gru_state", _inputs(module, _steps(2, 1)[0]))
    assert "inference request to model 'seq_gru_state' must specify a non-zero or non-empty correlation ID" in str(
        error.value
    )
    if protocol == "grpc":
        assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    else:
        assert error.value.status() == "400"
    with pytest.raises(InferenceServerException) as error:
        client.infer("seq_gru_state", _inputs(module, _steps(2, 1)[0]), sequence_id=4242)
    assert (
        "inference request for sequence 4242 to model 'seq_gru_state' must specify the START flag on the first "
        "request of the sequence" in str(error.value)
    )


def test_an_ended_sequence_id_starts_afresh() -> None:
    reference = Reference("seq_gru_state")
    first, second = _steps(10, 3), _steps(11, 3)
    got = _unary("grpc", "seq_gru_state", 555, first)
    for answer, want in zip(got, reference.run(first, 555)):
        np.testing.assert_allclose(answer["y"], want, rtol=1e-5, atol=1e-6)
    # Ended: a request without START is refused, a new START begins from the initial state again.
    client = grpcclient.InferenceServerClient(_env("FERRY_GRPC_URL"))
    with pytest.raises(InferenceServerException) as error:
        client.infer("seq_gru_state", _inputs(grpcclient, first[0]), sequence_id=555)
    assert "must specify the START flag" in str(error.value)
    client.close()
    got = _unary("grpc", "seq_gru_state", 555, second)
    for answer, want in zip(got, reference.run(second, 555)):
        np.testing.assert_allclose(answer["y"], want, rtol=1e-5, atol=1e-6)


def test_an_idle_sequence_is_released_and_its_late_request_is_told_why() -> None:
    reference = Reference("seq_idle")
    xs = _steps(20, 3, rows=False)
    client = grpcclient.InferenceServerClient(_env("FERRY_GRPC_URL"))
    first = client.infer("seq_idle", _inputs(grpcclient, xs[0]), sequence_id="idle-1", sequence_start=True)
    second = client.infer("seq_idle", _inputs(grpcclient, xs[1]), sequence_id="idle-1")
    want = reference.run(xs[:2], 0, rows=False)
    np.testing.assert_allclose(first.as_numpy("y"), want[0])
    np.testing.assert_allclose(second.as_numpy("y"), want[1])
    time.sleep(0.8)  # past the 0.3 s max_sequence_idle_microseconds
    with pytest.raises(InferenceServerException) as error:
        client.infer("seq_idle", _inputs(grpcclient, xs[2]), sequence_id="idle-1")
    message = str(error.value)
    assert "must specify the START flag" in message and "idle" in message, message
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    client.close()


def test_a_cancelled_queued_request_never_runs_and_the_sequence_goes_on() -> None:
    """seq_accumulate_wait holds a lone request 1.5 s for a fuller batch: a client that gives up after 0.3 s
    cancels it while it is queued. It must never run (the running sum would include it), and the sequence's
    later requests run in order from where the sequence was."""
    client = grpcclient.InferenceServerClient(_env("FERRY_GRPC_URL"))
    xs = [np.full((1, 4), value, dtype=np.float32) for value in (100.0, 1.0, 2.0)]
    started = time.monotonic()
    with pytest.raises(InferenceServerException) as error:
        client.infer("seq_accumulate_wait", _inputs(grpcclient, xs[0]), sequence_id=900, sequence_start=True,
                     client_timeout=0.3)
    assert "Deadline" in str(error.value) or "DEADLINE" in str(error.value.status()), error.value
    assert time.monotonic() - started < 1.4, "the call was not cut short by its deadline"
    second = client.infer("seq_accumulate_wait", _inputs(grpcclient, xs[1]), sequence_id=900)
    third = client.infer("seq_accumulate_wait", _inputs(grpcclient, xs[2]), sequence_id=900, sequence_end=True)
    # The cancelled START never ran: the sum starts from zero at the second request.
    np.testing.assert_array_equal(second.as_numpy("y"), xs[1])
    np.testing.assert_array_equal(third.as_numpy("y"), xs[1] + xs[2])
    client.close()


def test_an_ensemble_passes_its_sequence_to_a_stateful_step() -> None:
    """Triton's EnsembleContext gives composing models the ensemble request's correlation id and flags."""
    reference = Reference("seq_gru_state")
    client = grpcclient.InferenceServerClient(_env("FERRY_GRPC_URL"))
    plans = {3100: _steps(30, 4), 3101: _steps(31, 4)}
    got: dict[int, list[np.ndarray]] = {sequence_id: [] for sequence_id in plans}
    for step in range(4):
        for sequence_id, xs in plans.items():
            tensor = grpcclient.InferInput("X", [1, 4], "FP32")
            tensor.set_data_from_numpy(xs[step])
            result = client.infer("seq_ensemble", [tensor], sequence_id=sequence_id, sequence_start=step == 0,
                                  sequence_end=step == 3)
            got[sequence_id].append(result.as_numpy("Y"))
    for sequence_id, xs in plans.items():
        for answer, want in zip(got[sequence_id], reference.run(xs, sequence_id)):
            np.testing.assert_allclose(answer, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(InferenceServerException) as error:
        tensor = grpcclient.InferInput("X", [1, 4], "FP32")
        tensor.set_data_from_numpy(plans[3100][0])
        client.infer("seq_ensemble", [tensor])
    assert "must specify a non-zero or non-empty correlation ID" in str(error.value)
    client.close()

"""Feedback and live quality (`ferry.quality.*`, `ferry.feedback.v1.Feedback`), through tritonclient and
Ferry's own gRPC service and REST routes against a real Ferry.

The `mlp_labels` classifier of the test repository (features FP32 [batch, 32] -> probabilities FP32
[batch, 10] with labels.txt, label INT64 [batch, 1]) is copied into the empty repository of a Ferry started
in explicit mode with a payload log folder and 2 KiB files, with log-loss on `probabilities` turned on, and
loaded through tritonclient. Predictions go through tritonclient over gRPC with request ids; their true
classes are posted later through the gRPC Feedback service (classes) and the REST route (labels and
classes), newest first, one before its prediction. Between the predictions and the truths the model is
loaded again with another payload log setting, so that the payload log writer restarts (and its files have
rotated): joining must not care. The quality report (gRPC and REST) and /metrics must then equal the
log-loss and calibration buckets this suite computes from the probabilities the server returned.

Feedback is Ferry's own. The one Triton behaviour pinned is the response id: Triton echoes the request's id
(gRPC: `InferResponseCompleteCommon` in `src/grpc/infer_handler.cc` sets the response's id from the
request's), which is the id truths are posted for.

Environment (all required: without them the run FAILS, it is never skipped):
    FERRY_GRPC_URL, FERRY_HTTP_URL, FERRY_METRICS_URL  host:port of the Ferry under test and its metrics
    FERRY_FEEDBACK_REPOSITORY                           the empty model repository it serves
    FERRY_PAYLOAD_LOG_DIR                               its --payload-log-dir
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc as grpclib
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_tools import protoc
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run this suite through `cargo test -p ferry-tests --test feedback`")
    return value


ROOT = Path(_env("FERRY_REPO_ROOT"))
MLP = ROOT / "tests/model_repository/mlp_labels"
REPOSITORY = Path(_env("FERRY_FEEDBACK_REPOSITORY"))
LOGS = Path(_env("FERRY_PAYLOAD_LOG_DIR"))
MODEL = "mlp_quality"
EPSILON = 1e-15
BUCKETS = 10
# labels.txt: class i is "digit i", except 4 (an empty line) and 9 (no line), which have no label.
LABELED = {i: f"digit {i}" for i in range(9) if i != 4}


def _stubs():
    """Ferry's feedback protos, compiled here from proto/ferry/feedback.proto."""
    out = tempfile.mkdtemp()
    status = protoc.main(
        ["protoc", f"-I{ROOT / 'proto/proto'}", f"--python_out={out}", f"--grpc_python_out={out}", "ferry/feedback.proto"]
    )
    assert status == 0, "protoc failed on feedback.proto"
    sys.path.insert(0, out)
    from ferry import feedback_pb2, feedback_pb2_grpc  # noqa: PLC0415

    return feedback_pb2, feedback_pb2_grpc


pb, pb_grpc = _stubs()


def _add(name: str, parameters: dict[str, str]) -> None:
    """Copies mlp_labels into the repository as `name`, with `parameters` in its config."""
    folder = REPOSITORY / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copy(MLP / "1/model.onnx", folder / "1/model.onnx")
    shutil.copy(MLP / "labels.txt", folder / "labels.txt")
    config = (MLP / "config.pbtxt").read_text().replace('name: "mlp_labels"', f'name: "{name}"')
    for key, value in parameters.items():
        config += f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
    (folder / "config.pbtxt").write_text(config)


@pytest.fixture(scope="module")
def triton():
    return grpcclient.InferenceServerClient(url=_env("FERRY_GRPC_URL"))


@pytest.fixture(scope="module")
def feedback():
    return pb_grpc.FeedbackStub(grpclib.insecure_channel(_env("FERRY_GRPC_URL")))


def _rest(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{_env('FERRY_HTTP_URL')}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _metrics() -> str:
    return urllib.request.urlopen(f"http://{_env('FERRY_METRICS_URL')}/metrics").read().decode()


def _series(text: str, name: str, labels: str = "") -> float:
    base = f'model="{MODEL}",version="1",metric="log_loss"'
    match = re.search(rf"^{name}{{{re.escape(base + labels)}}} (\S+)$", text, re.M)
    assert match, f"{name}{{{base + labels}}} missing from /metrics"
    return float(match.group(1))


def _label(value: float) -> str:
    """A bucket edge as the server writes it (Rust's shortest form: 0, 0.1, ..., 1)."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _infer(triton, rng, request_id: str | None, rows: int) -> tuple[str, np.ndarray]:
    features = rng.standard_normal((rows, 32)).astype(np.float32)
    tensor = grpcclient.InferInput("features", [rows, 32], "FP32")
    tensor.set_data_from_numpy(features)
    outputs = [grpcclient.InferRequestedOutput("probabilities")]
    if request_id is None:
        result = triton.infer(MODEL, [tensor], outputs=outputs)
    else:
        result = triton.infer(MODEL, [tensor], outputs=outputs, request_id=request_id)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (rows, 10) and probabilities.dtype == np.float32
    return result.get_response().id, probabilities


def _quality(feedback):
    (version,) = feedback.ModelQuality(pb.ModelQualityRequest(model=MODEL, version="1")).versions
    return version


def _wait(feedback, field: str, expected: int):
    deadline = time.monotonic() + 10
    while True:
        version = _quality(feedback)
        if getattr(version, field) >= expected or time.monotonic() > deadline:
            return version
        time.sleep(0.02)


def test_a_wrong_quality_parameter_refuses_the_load(triton):
    _add("mlp_bad_quality", {"ferry.quality.metric": "f1"})
    with pytest.raises(InferenceServerException) as refused:
        triton.load_model("mlp_bad_quality")
    assert "ferry.quality.metric" in str(refused.value) and "'f1'" in str(refused.value), refused.value
    _add("mlp_bad_output", {"ferry.quality.metric": "log_loss", "ferry.quality.output": "label"})
    with pytest.raises(InferenceServerException) as refused:
        triton.load_model("mlp_bad_output")
    assert "ferry.quality.output 'label'" in str(refused.value) and "INT64" in str(refused.value), refused.value


def test_truths_posted_out_of_order_match_a_hand_computation(triton, feedback):
    _add(MODEL, {"ferry.quality.metric": "log_loss", "ferry.quality.output": "probabilities", "ferry.payload_log.rate": "1"})
    triton.load_model(MODEL)
    rng = np.random.default_rng(17)

    # A truth before its prediction waits for it.
    status, body = _rest("POST", f"/v2/models/{MODEL}/feedback", {"items": [{"request_id": "early", "classes": [3]}]})
    assert status == 200 and body["results"] == [{"request_id": "early", "status": "waiting", "version": "1"}], body

    predicted: dict[str, np.ndarray] = {}
    for i in range(8):
        request_id, probabilities = _infer(triton, rng, f"p{i}", 1)
        assert request_id == f"p{i}"
        predicted[request_id] = probabilities
    for request_id, rows in (("batch", 3), ("early", 1)):
        _, predicted[request_id] = _infer(triton, rng, request_id, rows)
    # A request without an id gets one, which its truth names.
    assigned, probabilities = _infer(triton, rng, None, 2)
    assert re.fullmatch(r"[0-9a-f]{32}", assigned), assigned
    predicted[assigned] = probabilities

    # The payload log writer restarts: a changed payload log setting loads the version again (its quality
    # settings are the same, so it keeps its waiting predictions), after the files have rotated.
    version = _wait(feedback, "predictions", len(predicted))
    assert version.predictions == len(predicted) and version.feedback_joined == 1, version
    folder = LOGS / MODEL / "1"
    deadline = time.monotonic() + 10
    while len(list(folder.glob("payload-*.jsonl"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(folder.glob("payload-*.jsonl"))) >= 2, "the payload log did not rotate"
    _add(MODEL, {"ferry.quality.metric": "log_loss", "ferry.quality.output": "probabilities", "ferry.payload_log.rate": "1", "ferry.payload_log.max_bytes": "4096"})
    triton.load_model(MODEL)
    for i in range(3):
        _, predicted[f"after{i}"] = _infer(triton, rng, f"after{i}", 1)
    # The version was loaded afresh (its statistics, and its payload log writer, started over).
    (stats,) = triton.get_inference_statistics(MODEL, as_json=True)["model_stats"]
    assert int(stats["inference_stats"]["success"]["count"]) == 3, stats
    _wait(feedback, "predictions", len(predicted))

    truths = {request_id: rng.integers(0, 10, len(rows)) for request_id, rows in predicted.items()}
    truths["early"] = np.array([3])
    # Newest first, alternating gRPC (classes) and REST (labels where the class has one).
    later = [request_id for request_id in reversed(predicted) if request_id != "early"]
    grpc_ids, rest_ids = later[0::2], later[1::2]
    answer = feedback.PostFeedback(
        pb.PostFeedbackRequest(
            model=MODEL,
            version="1",
            items=[pb.FeedbackItem(request_id=i, classes=truths[i].tolist()) for i in grpc_ids],
        )
    )
    assert [(r.request_id, r.status, r.version) for r in answer.results] == [(i, "joined", "1") for i in grpc_ids]
    items = []
    for request_id in rest_ids:
        classes = truths[request_id].tolist()
        if all(c in LABELED for c in classes):
            items.append({"request_id": request_id, "labels": [LABELED[c] for c in classes]})
        else:
            items.append({"request_id": request_id, "classes": classes})
    assert any("labels" in item for item in items)
    status, body = _rest("POST", f"/v2/models/{MODEL}/feedback", {"items": items})
    assert status == 200 and [r["status"] for r in body["results"]] == ["joined"] * len(items), body

    # Again for a joined id, an unknown id, and a label the output does not have.
    answer = feedback.PostFeedback(
        pb.PostFeedbackRequest(
            model=MODEL,
            items=[
                pb.FeedbackItem(request_id="p0", classes=[1]),
                pb.FeedbackItem(request_id="ghost", classes=[1]),
                pb.FeedbackItem(request_id="p1", labels=["digit 99"]),
            ],
        )
    )
    assert [r.status for r in answer.results] == ["duplicate", "waiting", "invalid"], answer
    assert "'digit 99' is not a label of output 'probabilities'" in answer.results[2].reason

    # The hand computation, from the probabilities the server returned.
    losses, buckets = [], [[0, 0.0, 0] for _ in range(BUCKETS)]
    for request_id, rows in predicted.items():
        for row, truth in zip(rows, truths[request_id]):
            p_true = min(max(float(row[truth]), EPSILON), 1 - EPSILON)
            losses.append(-math.log(p_true))
            top = int(np.argmax(row))
            bucket = min(int(np.float32(row[top]) * np.float32(BUCKETS)), BUCKETS - 1)
            buckets[bucket][0] += 1
            buckets[bucket][1] += float(row[top])
            buckets[bucket][2] += int(top == truth)
    expected = sum(losses) / len(losses)

    version = _quality(feedback)
    assert version.metric == "log_loss" and version.output == "probabilities"
    assert version.rows == len(losses) and version.feedback_joined == len(predicted), version
    assert math.isclose(version.value, expected, rel_tol=1e-9), (version.value, expected)
    assert (version.feedback_duplicate, version.feedback_waiting, version.feedback_rejected) == (1, 1, 1)
    assert version.predictions_waiting == 0 and version.predictions_dropped == 0
    assert len(version.calibration) == BUCKETS
    for got, (count, predicted_sum, observed) in zip(version.calibration, buckets):
        assert got.count == count, (got, count)
        if count:
            assert math.isclose(got.mean_predicted, predicted_sum / count, rel_tol=1e-9)
            assert math.isclose(got.observed_frequency, observed / count, rel_tol=1e-12)
        else:
            assert not got.HasField("mean_predicted") and not got.HasField("observed_frequency")

    status, body = _rest("GET", f"/v2/models/{MODEL}/versions/1/quality")
    assert status == 200, body
    (report,) = body["versions"]
    assert report["rows"] == len(losses) and math.isclose(report["value"], expected, rel_tol=1e-9), report
    assert [b["count"] for b in report["calibration"]] == [b[0] for b in buckets]

    text = _metrics()
    # The exposition parses, and each quality family has the type the docs give it.
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    for family in ("ferry_quality_metric", "ferry_quality_feedback_waiting", "ferry_quality_calibration_count"):
        assert types[family] == "gauge", types
    for family in ("ferry_quality_feedback_joined", "ferry_quality_rows", "ferry_quality_score"):
        assert types[family] == "counter", types
    assert math.isclose(_series(text, "ferry_quality_score_total"), sum(losses), rel_tol=1e-9)
    assert math.isclose(_series(text, "ferry_quality_metric"), expected, rel_tol=1e-9)
    assert _series(text, "ferry_quality_feedback_joined_total") == len(predicted)
    assert _series(text, "ferry_quality_rows_total") == len(losses)
    assert _series(text, "ferry_quality_feedback_duplicate_total") == 1
    assert _series(text, "ferry_quality_feedback_rejected_total") == 1
    assert _series(text, "ferry_quality_feedback_waiting") == 1
    for i, (count, predicted_sum, observed) in enumerate(buckets):
        edges = f',lower="{_label(i / BUCKETS)}",upper="{_label((i + 1) / BUCKETS)}"'
        if count:
            assert _series(text, "ferry_quality_calibration_count", edges) == count
            assert math.isclose(_series(text, "ferry_quality_calibration_predicted_mean", edges), predicted_sum / count, rel_tol=1e-9)
            assert math.isclose(_series(text, "ferry_quality_calibration_observed_frequency", edges), observed / count, rel_tol=1e-12)
        else:
            assert f"ferry_quality_calibration_count{{model=\"{MODEL}\",version=\"1\",metric=\"log_loss\"{edges}}}" not in text


def test_posts_out_of_bounds_are_refused_naming_the_field(feedback):
    too_many = {"items": [{"request_id": f"r{i}", "classes": [0]} for i in range(1001)]}
    status, body = _rest("POST", f"/v2/models/{MODEL}/feedback", too_many)
    assert status == 400 and "1 to 1000 items, got 1001" in body["error"], body
    status, body = _rest("POST", f"/v2/models/{MODEL}/feedback", {"items": [{"request_id": "x" * 257, "classes": [0]}]})
    assert status == 400 and "'request_id' must be 1 to 256 bytes, got 257 bytes" in body["error"], body
    status, body = _rest("POST", f"/v2/models/{MODEL}/feedback", {"items": [{"request_id": "a", "classes": [0], "values": [1.0]}]})
    assert status == 400 and "exactly one of 'classes', 'labels' and 'values'" in body["error"], body
    with pytest.raises(grpclib.RpcError) as refused:
        feedback.PostFeedback(pb.PostFeedbackRequest(model=MODEL, items=[pb.FeedbackItem(request_id="", classes=[0])]))
    assert refused.value.code() == grpclib.StatusCode.INVALID_ARGUMENT
    assert "feedback item 0: 'request_id'" in refused.value.details()


def test_a_model_without_quality_answers_not_found(triton, feedback):
    _add("mlp_plain", {})
    triton.load_model("mlp_plain")
    status, body = _rest("GET", "/v2/models/mlp_plain/quality")
    assert status == 404 and "ferry.quality.metric" in body["error"], body
    with pytest.raises(grpclib.RpcError) as refused:
        feedback.PostFeedback(pb.PostFeedbackRequest(model="mlp_plain", items=[pb.FeedbackItem(request_id="a", classes=[0])]))
    assert refused.value.code() == grpclib.StatusCode.NOT_FOUND


def test_truths_without_a_version_go_to_the_version_holding_their_prediction(triton):
    # Two versions of one classifier scoring accuracy: each truth posted without a version joins the
    # version that answered its request; an unknown id waits in the highest version.
    name = "mlp_two"
    _add(name, {"ferry.quality.metric": "accuracy", "ferry.quality.output": "probabilities"})
    folder = REPOSITORY / name
    (folder / "2").mkdir(exist_ok=True)
    shutil.copy(MLP / "1/model.onnx", folder / "2/model.onnx")
    config = (folder / "config.pbtxt").read_text()
    (folder / "config.pbtxt").write_text(config + "version_policy { all {} }\n")
    triton.load_model(name)
    rng = np.random.default_rng(5)
    answered = {}
    for version in ("1", "2"):
        for i in range(3):
            features = rng.standard_normal((1, 32)).astype(np.float32)
            tensor = grpcclient.InferInput("features", [1, 32], "FP32")
            tensor.set_data_from_numpy(features)
            request_id = f"v{version}-{i}"
            result = triton.infer(name, [tensor], model_version=version, request_id=request_id)
            answered[request_id] = (version, int(np.argmax(result.as_numpy("probabilities")[0])))
    # Right for the first of each version, wrong for the others.
    truths = {i: (top if i.endswith("-0") else (top + 1) % 10) for i, (_, top) in answered.items()}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, body = _rest("GET", f"/v2/models/{name}/quality")
        if sum(v["predictions_waiting"] for v in body["versions"]) == len(answered):
            break
        time.sleep(0.02)
    items = [{"request_id": i, "classes": [t]} for i, t in truths.items()] + [{"request_id": "nobody", "classes": [0]}]
    status, body = _rest("POST", f"/v2/models/{name}/feedback", {"items": items})
    assert status == 200, body
    expected = [{"request_id": i, "status": "joined", "version": answered[i][0]} for i in truths]
    assert body["results"] == expected + [{"request_id": "nobody", "status": "waiting", "version": "2"}], body
    status, body = _rest("GET", f"/v2/models/{name}/quality")
    assert status == 200, body
    reports = {v["version"]: v for v in body["versions"]}
    assert set(reports) == {"1", "2"}
    for version in ("1", "2"):
        assert reports[version]["metric"] == "accuracy" and reports[version]["rows"] == 3
        assert math.isclose(reports[version]["value"], 1 / 3, rel_tol=1e-12), reports[version]
    assert (reports["1"]["feedback_waiting"], reports["2"]["feedback_waiting"]) == (0, 1)

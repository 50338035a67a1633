#!/usr/bin/env python3
"""Soak test: mixed traffic against a release `ferry` for a long while, with the server's memory sampled each second.

Starts `ferry` in poll mode on a copy of examples/model_repository (free loopback ports), then for --seconds runs,
side by side: gRPC and REST (JSON and binary) inference, gRPC streams, system shared memory cycles, bad requests
and garbage bytes, model reloads every few seconds (config rewrites, versions added and removed, a corrupt version,
a broken config, a model added and removed), a slow HTTP/1.1 reader and a gRPC stream that stops reading. Every
valid answer is checked against ONNX Runtime run in this process. Each second the server's RSS, threads and open
fds go to a CSV. At the end it writes benches/results/soak.{md,csv,svg} and exits non-zero if the server died, a
valid request failed, a bad request was not refused as it should be, or RSS grew faster than --max-growth over
the second half. Not run in CI: `make soak` (SOAK_SECONDS, default 1800).
"""

import argparse
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import np_to_triton_dtype

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
TIMEOUT = 30.0  # client timeout of a valid request, seconds


# ---------------------------------------------------------------------------------------------------------------
# Bookkeeping


class Tally:
    """Counts per traffic kind: successes, expected refusals, known-defect failures and unexpected failures."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ok = Counter()  # kind -> valid requests answered correctly (or bad requests refused correctly)
        self.expected = Counter()  # (kind, label) -> refusals of bad requests, as they should be
        self.known = Counter()  # (kind, label) -> "model is not ready" after a corrupt version (issue 8)
        self.unexpected = Counter()  # (kind, label) -> everything else that went wrong
        self.details = []  # the first unexpected failures, in full

    def success(self, kind):
        with self.lock:
            self.ok[kind] += 1

    def refused(self, kind, label):
        with self.lock:
            self.expected[(kind, label)] += 1

    def valid_failed(self, kind, error):
        """A valid request failed: "not ready" during reloads is the known defect, anything else is unexpected."""
        message = str(error)
        if "is not ready" in message:
            reason = message.split("is not ready", 1)[1].strip(": ")[:70]
            self.note_known(kind, f"not ready: {reason}")
        else:
            self.fail(kind, "valid request failed", message)

    def note_known(self, kind, label):
        with self.lock:
            self.known[(kind, label)] += 1

    def fail(self, kind, label, detail):
        with self.lock:
            self.unexpected[(kind, label)] += 1
            if len(self.details) < 40:
                self.details.append(f"{time.strftime('%H:%M:%S')} {kind}: {label}: {detail[:400]}")
                print(f"!!! UNEXPECTED {kind}: {label}: {detail[:300]}", file=sys.stderr, flush=True)

    def total(self):
        with self.lock:
            return (sum(self.ok.values()) + sum(self.expected.values()) + sum(self.known.values())
                    + sum(self.unexpected.values()))


class Soak:
    """What every worker shares: addresses, the deadline, the tally and the reference outputs."""

    def __init__(self, args, repo, ports):
        self.args = args
        self.repo = repo
        self.grpc_url = f"127.0.0.1:{ports[0]}"
        self.http_url = f"127.0.0.1:{ports[1]}"
        self.metrics_port = ports[2]
        self.ports = ports
        self.tally = Tally()
        self.stop = threading.Event()
        self.deadline = None
        self.reference = Reference(repo)
        self.reloads = []  # (step, seconds to settle or None)
        self.server_pid = None

    def running(self):
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def pause(self, seconds):
        self.stop.wait(seconds)


class Reference:
    """Valid requests and the answers ONNX Runtime gives to them here, per model file."""

    def __init__(self, repo):
        rng = np.random.default_rng(8)
        self.mlp_inputs = [rng.standard_normal((b, 32)).astype(np.float32) for b in (1, 3, 8, 64)]
        self.linear_inputs = [rng.standard_normal((b, 8)).astype(np.float32) for b in (1, 4)]
        self.answers = {}
        for version in (1, 2):
            self._run(f"mlp_classifier/{version}", repo / f"mlp_classifier/{version}/model.onnx", self.mlp_inputs)
        self._run("linear_auto/1", repo / "linear_auto/1/model.onnx", self.linear_inputs)

    def _run(self, key, path, inputs):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        feed = session.get_inputs()[0].name
        for i, x in enumerate(inputs):
            self.answers[(key, i)] = dict(zip(names, session.run(None, {feed: x})))

    def case(self, rng):
        """(model, version, inputs, expect) where expect(served_version) gives the outputs to compare with."""
        pick = rng.random()
        if pick < 0.45:
            batch = rng.randint(1, 8)
            a = np.array([rng.randrange(-1000, 1000) for _ in range(batch * 16)], dtype=np.int32).reshape(batch, 16)
            b = np.full((batch, 16), rng.randrange(-50, 50), dtype=np.int32)
            return "simple", "", {"INPUT0": a, "INPUT1": b}, lambda v: {"OUTPUT0": a + b, "OUTPUT1": a - b}
        if pick < 0.85:
            i = rng.randrange(len(self.mlp_inputs))
            version = rng.choice(["", "1", "2"])
            # Version 3, when the reloader adds it, is a copy of version 1.
            expect = lambda v: self.answers[(f"mlp_classifier/{1 if v in ('1', '3') else 2}", i)]  # noqa: E731
            return "mlp_classifier", version, {"features": self.mlp_inputs[i]}, expect
        i = rng.randrange(len(self.linear_inputs))
        return "linear_auto", "", {"x": self.linear_inputs[i]}, lambda v: self.answers[("linear_auto/1", i)]


def mismatch(expected, outputs):
    """Why the outputs differ from the expected ones, or None."""
    for name, want in expected.items():
        got = outputs.get(name)
        if got is None:
            return f"output {name} missing"
        if got.shape != want.shape:
            return f"output {name}: shape {got.shape}, expected {want.shape}"
        if want.dtype.kind == "f":
            if not np.allclose(got, want, rtol=1e-4, atol=1e-5):
                return f"output {name}: values differ by up to {np.max(np.abs(got - want))}"
        elif not np.array_equal(got, want):
            return f"output {name}: values differ"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Valid traffic


def grpc_inputs(inputs):
    tensors = []
    for name, array in inputs.items():
        t = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        t.set_data_from_numpy(array)
        tensors.append(t)
    return tensors


def grpc_infer(soak, seed):
    """Unary ModelInfer through tritonclient.grpc, on every model and version that always serves."""
    rng = random.Random(seed)
    with grpcclient.InferenceServerClient(soak.grpc_url) as client:
        while soak.running():
            model, version, inputs, expect = soak.reference.case(rng)
            try:
                result = client.infer(model, grpc_inputs(inputs), model_version=version, client_timeout=TIMEOUT)
            except Exception as e:  # noqa: BLE001
                soak.tally.valid_failed("grpc infer", e)
                continue
            served = result.get_response().model_version
            outputs = {name: result.as_numpy(name) for name in expect(served)}
            check(soak, "grpc infer", mismatch(expect(served), outputs), model, served)


def check(soak, kind, problem, model, served):
    if problem is None:
        soak.tally.success(kind)
    else:
        soak.tally.fail(kind, "wrong answer", f"{model} v{served}: {problem}")


def rest_infer(soak, seed):
    """REST inference through tritonclient.http, tensors as JSON or binary data at random."""
    rng = random.Random(seed)
    client = httpclient.InferenceServerClient(soak.http_url, connection_timeout=TIMEOUT, network_timeout=TIMEOUT)
    try:
        while soak.running():
            model, version, inputs, expect = soak.reference.case(rng)
            binary = rng.random() < 0.5
            kind = "rest binary" if binary else "rest json"
            tensors = []
            for name, array in inputs.items():
                t = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
                t.set_data_from_numpy(array, binary_data=binary)
                tensors.append(t)
            wanted = list(expect("1").keys())
            outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in wanted]
            try:
                result = client.infer(model, tensors, model_version=version, outputs=outputs)
            except Exception as e:  # noqa: BLE001
                soak.tally.valid_failed(kind, e)
                continue
            served = str(result.get_response().get("model_version", ""))
            check(soak, kind, mismatch(expect(served), {n: result.as_numpy(n) for n in wanted}), model, served)
    finally:
        client.close()


def grpc_stream(soak, seed, per_stream=50):
    """ModelStreamInfer: streams of 50 valid requests and one for an unknown model, opened and closed in turns."""
    rng = random.Random(seed)
    with grpcclient.InferenceServerClient(soak.grpc_url) as client:
        while soak.running():
            sent, answers, done = {}, [], threading.Condition()

            def callback(result, error):
                with done:
                    answers.append((result, error))
                    done.notify()

            client.start_stream(callback, stream_timeout=120)
            try:
                for i in range(per_stream):
                    model, version, inputs, expect = soak.reference.case(rng)
                    sent[str(i)] = (model, expect)
                    client.async_stream_infer(model, grpc_inputs(inputs), model_version=version, request_id=str(i))
                bogus = {"INPUT0": np.zeros((1, 16), np.int32), "INPUT1": np.zeros((1, 16), np.int32)}
                client.async_stream_infer("no_such_model", grpc_inputs(bogus), request_id="bogus")
                with done:
                    done.wait_for(lambda: len(answers) >= per_stream + 1, timeout=60)
            finally:
                # A graceful close when every answer is in: cancelling leaks tritonclient's request thread.
                client.stop_stream(cancel_requests=len(answers) < per_stream + 1)
            for result, error in answers[: per_stream + 1]:
                if error is not None:
                    if "unknown model 'no_such_model'" in str(error):
                        soak.tally.refused("grpc stream", "unknown model")
                    else:
                        soak.tally.valid_failed("grpc stream", error)
                    continue
                response = result.get_response()
                if response.id not in sent:
                    soak.tally.fail("grpc stream", "unknown model: accepted", f"answer with id {response.id!r}")
                    continue
                model, expect = sent[response.id]
                served = response.model_version
                outputs = {n: result.as_numpy(n) for n in expect(served)}
                check(soak, "grpc stream", mismatch(expect(served), outputs), model, served)
            if len(answers) < per_stream + 1:
                soak.tally.fail("grpc stream", "answers missing", f"{len(answers)} of {per_stream + 1} in 60 s")


def shared_memory(soak, seed, per_cycle=20):
    """System shared memory cycles: create, register, infer (outputs in regions or not), check, unregister."""
    rng = random.Random(seed)
    cycle = 0
    with grpcclient.InferenceServerClient(soak.grpc_url) as client:
        while soak.running():
            cycle += 1
            in_key, out_key = f"/ferry_soak_{os.getpid()}_{cycle}_in", f"/ferry_soak_{os.getpid()}_{cycle}_out"
            size = 8 * 16 * 4 * 2
            regions = [shm.create_shared_memory_region("soak_in", in_key, size),
                       shm.create_shared_memory_region("soak_out", out_key, size)]
            try:
                client.register_system_shared_memory("soak_in", in_key, size)
                client.register_system_shared_memory("soak_out", out_key, size)
                for _ in range(per_cycle):
                    shm_infer(soak, client, rng, regions)
                shm_refusals(soak, client, in_key, size)
                status = client.get_system_shared_memory_status()
                if sorted(r.name for r in status.regions.values()) != ["soak_in", "soak_out"]:
                    soak.tally.fail("shm", "status", str(status))
            except Exception as e:  # noqa: BLE001
                soak.tally.fail("shm", "region cycle failed", str(e))
            finally:
                try:
                    client.unregister_system_shared_memory()
                except Exception as e:  # noqa: BLE001
                    soak.tally.fail("shm", "unregister failed", str(e))
                for region in regions:
                    shm.destroy_shared_memory_region(region)


def shm_infer(soak, client, rng, regions):
    batch = rng.randint(1, 8)
    a = np.array([rng.randrange(-999, 999) for _ in range(batch * 16)], dtype=np.int32).reshape(batch, 16)
    b = np.full((batch, 16), 7, dtype=np.int32)
    shm.set_shared_memory_region(regions[0], [a])
    shm.set_shared_memory_region(regions[0], [b], offset=a.nbytes)
    inputs = grpc_inputs({"INPUT0": a, "INPUT1": b})
    inputs[0].set_shared_memory("soak_in", a.nbytes)
    inputs[1].set_shared_memory("soak_in", b.nbytes, offset=a.nbytes)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("soak_out", a.nbytes)
    in_region = rng.random() < 0.5  # OUTPUT1 in its region too, or over the socket
    if in_region:
        outputs[1].set_shared_memory("soak_out", a.nbytes, offset=a.nbytes)
    try:
        result = client.infer("simple", inputs, outputs=outputs, client_timeout=TIMEOUT)
    except Exception as e:  # noqa: BLE001
        soak.tally.valid_failed("shm", e)
        return
    got = {"OUTPUT0": shm.get_contents_as_numpy(regions[1], np.int32, [batch, 16])}
    got["OUTPUT1"] = (shm.get_contents_as_numpy(regions[1], np.int32, [batch, 16], offset=a.nbytes) if in_region
                      else result.as_numpy("OUTPUT1"))
    check(soak, "shm", mismatch({"OUTPUT0": a + b, "OUTPUT1": a - b}, got), "simple", "")


def shm_refusals(soak, client, key, size):
    """Region misuse that must be refused: a taken name, a missing object, a region too small for the input."""
    cases = [
        ("name taken", "ALREADY_EXISTS", lambda: client.register_system_shared_memory("soak_in", key, size)),
        ("missing object", "NOT_FOUND", lambda: client.register_system_shared_memory("x", "/ferry_soak_none", 64)),
        ("region too small", "INVALID_ARGUMENT", lambda: client.infer("simple", small_region_inputs())),
    ]
    for label, code, call in cases:
        expect_refusal(soak, "shm refusals", label, code, call)


def small_region_inputs():
    inputs = grpc_inputs({"INPUT0": np.zeros((1, 16), np.int32), "INPUT1": np.zeros((1, 16), np.int32)})
    inputs[0].set_shared_memory("soak_in", 16)
    return inputs


def expect_refusal(soak, kind, label, code, call):
    """Runs a call that must fail with the gRPC status `code` (a name) or HTTP status (a number)."""
    try:
        call()
    except Exception as e:  # noqa: BLE001
        status = e.code().name if isinstance(e, grpc.RpcError) else str(getattr(e, "status", lambda: None)())
        if code in status:
            soak.tally.refused(kind, label)
        elif "is not ready" in str(e):  # refused all the same, but for the model being down (issue 8)
            soak.tally.note_known(kind, f"{label}: refused as not ready")
        else:
            soak.tally.fail(kind, f"{label}: wrong status", f"expected {code}, got {status}: {e}")
        return
    soak.tally.fail(kind, f"{label}: accepted", "a bad request succeeded")


# ---------------------------------------------------------------------------------------------------------------
# Bad requests, garbage bytes, control calls


def raw_request(model="simple", version="", datatype="INT32", shape=(1, 16), names=("INPUT0", "INPUT1"),
                raw_bytes=64, extra_raw=0, output=None):
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for name in names:
        tensor = request.inputs.add(name=name, datatype=datatype)
        tensor.shape.extend(shape)
        request.raw_input_contents.append(bytes(raw_bytes))
    for _ in range(extra_raw):
        request.raw_input_contents.append(bytes(raw_bytes))
    if output:
        request.outputs.add(name=output)
    return request


GRPC_BAD = [
    ("wrong dtype", "INVALID_ARGUMENT", raw_request(datatype="FP32")),
    ("wrong shape", "INVALID_ARGUMENT", raw_request(shape=(1, 15), raw_bytes=60)),
    ("raw size mismatch", "INVALID_ARGUMENT", raw_request(raw_bytes=60)),
    ("batch too large", "INVALID_ARGUMENT", raw_request(shape=(9, 16), raw_bytes=9 * 64)),
    ("negative dim", "INVALID_ARGUMENT", raw_request(shape=(-1, 16))),
    ("unknown model", "NOT_FOUND", raw_request(model="no_such_model")),
    ("unknown version", "NOT_FOUND", raw_request(version="77")),
    ("unknown input", "INVALID_ARGUMENT", raw_request(names=("INPUT0", "BOGUS"))),
    ("missing input", "INVALID_ARGUMENT", raw_request(names=("INPUT0",))),
    ("extra raw contents", "INVALID_ARGUMENT", raw_request(extra_raw=1)),
    ("unknown output", "INVALID_ARGUMENT", raw_request(output="BOGUS")),
]

SIMPLE_JSON = {"inputs": [{"name": n, "shape": [1, 16], "datatype": "INT32", "data": list(range(16))}
                          for n in ("INPUT0", "INPUT1")]}


def json_body(**changes):
    body = json.loads(json.dumps(SIMPLE_JSON))
    body["inputs"][0].update(changes)
    return json.dumps(body).encode()


REST_BAD = [
    ("invalid json", "POST", "/v2/models/simple/infer", b'{"inputs": [', {}, {400}),
    ("wrong dtype", "POST", "/v2/models/simple/infer", json_body(datatype="FP32"), {}, {400}),
    ("data length mismatch", "POST", "/v2/models/simple/infer", json_body(data=list(range(15))), {}, {400}),
    ("unknown model", "POST", "/v2/models/no_such_model/infer", json_body(), {}, {404}),
    ("bad binary header length", "POST", "/v2/models/simple/infer", b'{"inputs":[]}',
     {"Inference-Header-Content-Length": "9999"}, {400}),
    ("unknown path", "GET", "/v2/no/such/path", b"", {}, {404}),
    ("wrong method", "GET", "/v2/models/simple/infer", b"", {}, {404, 405}),
]


def bad_requests(soak, seed):
    """Requests that must be refused with the right status, over gRPC (raw protos) and REST (raw HTTP)."""
    rng = random.Random(seed)
    channel = grpc.insecure_channel(soak.grpc_url, options=[("grpc.max_send_message_length", -1),
                                                           ("grpc.max_receive_message_length", -1)])
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    rounds = 0
    while soak.running():
        rounds += 1
        for label, code, request in GRPC_BAD:
            expect_refusal(soak, "bad grpc", label, code, lambda r=request: stub.ModelInfer(r, timeout=TIMEOUT))
        for label, method, path, body, headers, statuses in REST_BAD:
            rest_refusal(soak, label, method, path, body, headers, statuses)
        if rounds % 10 == 1:  # a message over --grpc-max-message-bytes, on both front ends
            big = soak.args.max_message_bytes + MIB
            expect_refusal(soak, "bad grpc", "oversized", "RESOURCE_EXHAUSTED",
                           lambda: stub.ModelInfer(raw_request(raw_bytes=big), timeout=TIMEOUT))
            rest_refusal(soak, "oversized", "POST", "/v2/models/simple/infer", b" " * big, {}, {413})
        soak.pause(0.05 + rng.random() * 0.1)
    channel.close()


def rest_refusal(soak, label, method, path, body, headers, statuses):
    connection = http.client.HTTPConnection(soak.http_url, timeout=TIMEOUT)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        text = response.read()
        if response.status in statuses:
            soak.tally.refused("bad rest", label)
        elif response.status == 503 and b"is not ready" in text:  # the model being down (issue 8)
            soak.tally.note_known("bad rest", f"{label}: refused as not ready")
        elif response.status == 200:
            soak.tally.fail("bad rest", f"{label}: accepted", "a bad request succeeded")
        else:
            soak.tally.fail("bad rest", f"{label}: wrong status", f"expected {statuses}, got {response.status}")
    except (ConnectionResetError, BrokenPipeError) as e:
        # The server may answer an oversized body early and close before reading all of it.
        if label == "oversized":
            soak.tally.refused("bad rest", "oversized (connection closed)")
        else:
            soak.tally.fail("bad rest", f"{label}: connection error", str(e))
    except Exception as e:  # noqa: BLE001
        soak.tally.fail("bad rest", f"{label}: error", repr(e))
    finally:
        connection.close()


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def garbage(soak, seed):
    """Bytes no protocol allows, on every port; afterwards the server must still answer a health check."""
    rng = random.Random(seed)
    grpc_port, http_port, metrics_port = soak.ports
    payloads = [
        ("grpc random bytes", grpc_port, lambda: rng.randbytes(rng.randint(1, 4096))),
        ("grpc preface then garbage", grpc_port, lambda: H2_PREFACE + H2_SETTINGS + rng.randbytes(512)),
        ("grpc bad hpack", grpc_port,
         lambda: H2_PREFACE + H2_SETTINGS + b"\x00\x00\x40\x01\x05\x00\x00\x00\x01" + rng.randbytes(64)),
        ("grpc huge frame header", grpc_port, lambda: H2_PREFACE + H2_SETTINGS + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01"),
        ("http random bytes", http_port, lambda: rng.randbytes(rng.randint(1, 4096))),
        ("http bad request line", http_port, lambda: b"GET /\x00\xff HTTP/9.9\r\n\r\n"),
        ("http huge header", http_port, lambda: b"GET /v2 HTTP/1.1\r\nX: " + b"a" * 200_000 + b"\r\n\r\n"),
        ("http truncated body", http_port,
         lambda: b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inputs\""),
        ("metrics random bytes", metrics_port, lambda: rng.randbytes(rng.randint(1, 2048))),
        ("connect and close", grpc_port, lambda: b""),
    ]
    with grpcclient.InferenceServerClient(soak.grpc_url) as client:
        while soak.running():
            label, port, payload = rng.choice(payloads)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(payload())
                    if rng.random() < 0.5:
                        s.shutdown(socket.SHUT_WR)
                    while s.recv(65536):  # until the server closes, or 5 s pass
                        pass
            except OSError:
                pass  # reset, timeout: all fine, as long as the server lives on
            try:
                if client.is_server_live(client_timeout=10):
                    soak.tally.refused("garbage", label)
                else:
                    soak.tally.fail("garbage", label, "server not live afterwards")
            except Exception as e:  # noqa: BLE001
                soak.tally.fail("garbage", label, f"health check failed afterwards: {e}")
            soak.pause(0.2)


def control(soak, seed):
    """Metadata, config, index, statistics, readiness and the metrics page, twice a second."""
    with grpcclient.InferenceServerClient(soak.grpc_url) as client:
        calls = [
            ("live", lambda: client.is_server_live()),
            ("ready", lambda: client.is_server_ready()),
            ("metadata", lambda: client.get_model_metadata("simple")),
            ("config", lambda: client.get_model_config("linear_auto")),
            ("index", lambda: client.get_model_repository_index()),
            ("statistics", lambda: client.get_inference_statistics()),
            ("server metadata", lambda: client.get_server_metadata()),
            ("metrics page", lambda: metrics_page(soak)),
        ]
        while soak.running():
            for label, call in calls:
                try:
                    call()
                    soak.tally.success("control")
                except Exception as e:  # noqa: BLE001
                    soak.tally.fail("control", label, str(e))
            soak.pause(0.5)


def metrics_page(soak):
    connection = http.client.HTTPConnection("127.0.0.1", soak.metrics_port, timeout=TIMEOUT)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        if response.status != 200 or b"nv_inference_request_success" not in response.read():
            raise RuntimeError(f"metrics page: status {response.status}")
    finally:
        connection.close()


# ---------------------------------------------------------------------------------------------------------------
# Slow readers


def slow_http_reader(soak, seed, pipelined=100):
    """HTTP/1.1 with a tiny receive buffer: 100 pipelined batch-64 requests, nothing read for 5 s, then slowly."""
    body = json.dumps({"inputs": [{"name": "features", "shape": [64, 32], "datatype": "FP32",
                                   "data": soak.reference.mlp_inputs[3].ravel().tolist()}]}).encode()
    request = (f"POST /v2/models/mlp_classifier/versions/1/infer HTTP/1.1\r\nHost: soak\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    want = soak.reference.answers[("mlp_classifier/1", 3)]
    while soak.running():
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(60)
            s.connect(("127.0.0.1", soak.ports[1]))
            sender = threading.Thread(target=s.sendall, args=(request * pipelined,), daemon=True)
            sender.start()  # the server stops reading when its writes block: send from a thread of its own
            soak.pause(5)
            buffer, answered, started = b"", 0, time.monotonic()
            while answered < pipelined and time.monotonic() - started < 180:
                chunk = s.recv(2048)
                if not chunk:
                    break
                buffer += chunk
                buffer, answered = parse_responses(soak, buffer, answered, want)
                time.sleep(0.02)
            if answered < pipelined:
                soak.tally.fail("slow http", "answers missing", f"{answered} of {pipelined} pipelined answers")
        except Exception as e:  # noqa: BLE001
            soak.tally.fail("slow http", "connection failed", repr(e))
        finally:
            s.close()


def parse_responses(soak, buffer, answered, want):
    """Takes every complete HTTP/1.1 response off the front of buffer and checks it."""
    while b"\r\n\r\n" in buffer:
        head, rest = buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "-1"))
        if length < 0:
            raise RuntimeError(f"response without content-length: {lines[0]}")
        if len(rest) < length:
            break
        body, buffer = rest[:length], rest[length:]
        answered += 1
        if not lines[0].startswith("HTTP/1.1 200"):
            soak.tally.valid_failed("slow http", f"{lines[0]}: {body[:200].decode('utf-8', 'replace')}")
            continue
        outputs = {o["name"]: np.array(o["data"], dtype=want[o["name"]].dtype).reshape(o["shape"])
                   for o in json.loads(body)["outputs"]}
        check(soak, "slow http", mismatch(want, outputs), "mlp_classifier", "1")
    return buffer, answered


def slow_stream_reader(soak, seed, requests=1500):
    """A gRPC stream whose reader stalls for 15 s while 1500 batch-64 requests go in, then reads everything."""
    want = soak.reference.answers[("mlp_classifier/2", 3)]
    x = soak.reference.mlp_inputs[3]
    while soak.running():
        gate, answers, done = threading.Event(), [], threading.Condition()

        def callback(result, error):
            gate.wait()  # the stream is not read while this waits: HTTP/2 flow control fills up
            with done:
                answers.append((result, error))
                done.notify()

        with grpcclient.InferenceServerClient(soak.grpc_url) as client:
            client.start_stream(callback, stream_timeout=300)
            try:
                for i in range(requests):
                    client.async_stream_infer("mlp_classifier", grpc_inputs({"features": x}), model_version="2",
                                              request_id=str(i))
                soak.pause(15)
                gate.set()
                with done:
                    done.wait_for(lambda: len(answers) >= requests, timeout=180)
            finally:
                gate.set()
                client.stop_stream(cancel_requests=len(answers) < requests)
        for result, error in answers[:requests]:
            if error is not None:
                soak.tally.valid_failed("slow stream", error)
            else:
                outputs = {n: result.as_numpy(n) for n in want}
                check(soak, "slow stream", mismatch(want, outputs), "mlp_classifier", "2")
        if len(answers) < requests:
            soak.tally.fail("slow stream", "answers missing", f"{len(answers)} of {requests}")


# ---------------------------------------------------------------------------------------------------------------
# Reloads


def reload_steps(soak):
    """The reloader's round: (what, change the repository, has it shown?, what must hold once it has)."""
    repo = soak.repo
    mlp, simple = repo / "mlp_classifier", repo / "simple"
    mlp_config, simple_config = (mlp / "config.pbtxt").read_text(), (simple / "config.pbtxt").read_text()
    staging = repo.parent / "staging"

    def put_dir(source, target):  # a whole folder appears at once, as `mv` would do it
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        staging.rename(target)

    def corrupt_version(target):
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        (staging / "model.onnx").write_bytes(b"\x08\x07 this is not an ONNX model " + os.urandom(512))
        staging.rename(target)

    def write(path, text):
        staging.with_suffix(".txt").write_text(text)
        os.replace(staging.with_suffix(".txt"), path)

    def ready(client, model, version=""):
        try:
            return client.is_model_ready(model, version)
        except Exception:  # noqa: BLE001
            return False

    def index_state(client, model, version):
        states = [e.state for e in client.get_model_repository_index().models
                  if e.name == model and e.version == version]
        return states[0] if states else None

    def mlp_threads():  # each model instance runs on a thread named after its model
        names = []
        for task in Path(f"/proc/{soak.server_pid}/task").iterdir():
            try:
                names.append((task / "comm").read_text())
            except OSError:
                pass
        return sum(name.startswith("mlp_classifier") for name in names)

    def config_instances(client, want):
        # The new config is published once every version has its instances, a moment after the threads start.
        deadline = time.monotonic() + 5
        while True:
            groups = client.get_model_config("mlp_classifier").config.instance_group
            got = sum(g.count for g in groups)
            if got == want:
                return None
            if time.monotonic() > deadline:
                return ("unexpected", f"ModelConfig of mlp_classifier says {got} instances "
                                      f"(instance_group {list(groups)}) 5 s after {want} started running")
            time.sleep(0.05)

    def still_serving(client, model, versions):
        down = [v for v in versions if not ready(client, model, v)]
        return ("known", f"{model} versions {down} not ready after a corrupt new version") if down else None

    def restore():  # the repository as it was, so that the last samples see the models at rest
        for extra in (mlp / "3", simple / "2", repo / "linear_copy"):
            shutil.rmtree(extra, ignore_errors=True)
        write(mlp / "config.pbtxt", mlp_config)
        write(simple / "config.pbtxt", simple_config)

    default_threads = mlp_threads()  # 2 versions x the default instance count
    batching = simple_config + "\ndynamic_batching { max_queue_delay_microseconds: 200 }\n"
    three_instances = mlp_config + "\ninstance_group [ { count: 3, kind: KIND_CPU } ]\n"

    def nothing(client):
        return None

    steps = [
        ("mlp: add version 3 (copy of 1)", lambda: put_dir(mlp / "1", mlp / "3"),
         lambda c: ready(c, "mlp_classifier", "3"), nothing),
        ("mlp: remove version 3", lambda: shutil.rmtree(mlp / "3"),
         lambda c: not ready(c, "mlp_classifier", "3"), nothing),
        ("simple: config adds dynamic_batching", lambda: write(simple / "config.pbtxt", batching),
         lambda c: c.get_model_config("simple").config.HasField("dynamic_batching"), nothing),
        ("simple: add version 2 (copy of 1)", lambda: put_dir(simple / "1", simple / "2"),
         lambda c: ready(c, "simple", "2"), nothing),
        ("simple: config drops dynamic_batching", lambda: write(simple / "config.pbtxt", simple_config),
         lambda c: not c.get_model_config("simple").config.HasField("dynamic_batching"), nothing),
        ("simple: remove version 2", lambda: shutil.rmtree(simple / "2"),
         lambda c: ready(c, "simple", "1") and not ready(c, "simple", "2"), nothing),
        ("mlp: config with 3 instances", lambda: write(mlp / "config.pbtxt", three_instances),
         lambda c: mlp_threads() == 6, lambda c: config_instances(c, 3)),
        ("mlp: config back to default instances", lambda: write(mlp / "config.pbtxt", mlp_config),
         lambda c: mlp_threads() == default_threads, nothing),
        ("mlp: corrupt version 3", lambda: corrupt_version(mlp / "3"),
         lambda c: index_state(c, "mlp_classifier", "3") == "UNAVAILABLE",
         lambda c: still_serving(c, "mlp_classifier", ["1", "2"])),
        ("mlp: remove corrupt version 3", lambda: shutil.rmtree(mlp / "3"),
         lambda c: index_state(c, "mlp_classifier", "3") != "UNAVAILABLE" and ready(c, "mlp_classifier"), nothing),
        ("simple: corrupt version 2 (policy latest 1)", lambda: corrupt_version(simple / "2"),
         lambda c: index_state(c, "simple", "2") == "UNAVAILABLE", lambda c: still_serving(c, "simple", ["1"])),
        ("simple: remove corrupt version 2", lambda: shutil.rmtree(simple / "2"),
         lambda c: index_state(c, "simple", "2") != "UNAVAILABLE" and ready(c, "simple", "1"), nothing),
        ("mlp: broken config.pbtxt", lambda: write(mlp / "config.pbtxt", mlp_config + "\nno_such_field: 1\n"),
         lambda c: "no_such_field" in index_reasons(c, "mlp_classifier"),
         lambda c: still_serving(c, "mlp_classifier", ["1", "2"])),
        ("mlp: config restored", lambda: write(mlp / "config.pbtxt", mlp_config),
         lambda c: "no_such_field" not in index_reasons(c, "mlp_classifier"), nothing),
        ("add model linear_copy", lambda: put_dir(repo / "linear_auto", repo / "linear_copy"),
         lambda c: ready(c, "linear_copy"), nothing),
        ("remove model linear_copy", lambda: shutil.rmtree(repo / "linear_copy"),
         lambda c: not ready(c, "linear_copy"), nothing),
    ]
    return steps, restore


def index_reasons(client, model):
    return " ".join(e.reason for e in client.get_model_repository_index().models if e.name == model)


def reloader(soak, seed):
    """Changes the repository every --reload-every seconds, waits (at most 30 s) for each change to show, then
    checks what must hold after it."""
    steps, restore = reload_steps(soak)
    with grpcclient.InferenceServerClient(soak.grpc_url) as client:
        i = 0
        while soak.running():
            label, change, shown, verify = steps[i % len(steps)]
            i += 1
            change()
            started, took = time.monotonic(), None
            while time.monotonic() - started < 30 and not soak.stop.is_set():
                try:
                    if shown(client):
                        took = time.monotonic() - started
                        break
                except Exception:  # noqa: BLE001
                    pass
                time.sleep(0.1)
            soak.reloads.append((label, took))
            if took is None:
                if not soak.stop.is_set():
                    soak.tally.fail("reload", label, "the change did not show within 30 s")
            else:
                problem = verify(client)
                if problem is None:
                    soak.tally.success("reload")
                elif problem[0] == "known":
                    soak.tally.note_known("reload", problem[1])
                else:
                    soak.tally.fail("reload", label, problem[1])
            soak.pause(soak.args.reload_every)
        restore()


# ---------------------------------------------------------------------------------------------------------------
# The server and its memory


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_server(args, repo, ports, log):
    command = [str(args.ferry), "--model-repository", str(repo), "--model-control-mode", "poll",
               "--repository-poll-secs", "1", "--grpc-address", "127.0.0.1", "--grpc-port", str(ports[0]),
               "--http-address", "127.0.0.1", "--http-port", str(ports[1]), "--metrics-address", "127.0.0.1",
               "--metrics-port", str(ports[2]), "--grpc-max-message-bytes", str(args.max_message_bytes),
               "--exit-timeout-secs", "5"]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    with grpcclient.InferenceServerClient(f"127.0.0.1:{ports[0]}") as client:
        for _ in range(600):
            if server.poll() is not None:
                raise SystemExit(f"ferry exited with {server.returncode} while starting; log: {log.name}")
            try:
                if client.is_server_ready():
                    return server
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.1)
    server.kill()
    raise SystemExit(f"ferry was not ready after 60 s; log: {log.name}")


def proc_sample(pid):
    """(RSS MiB, threads, open fds) of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    rss = int(fields["VmRSS"][0]) / 1024
    return rss, int(fields["Threads"][0]), len(os.listdir(f"/proc/{pid}/fd"))


def sampler(soak, server, samples, started):
    """Once a second: the server's RSS, threads and fds, and the requests so far; stops everything if it died."""
    while not soak.stop.is_set():
        if server.poll() is not None:
            soak.tally.fail("server", "died", f"ferry exited with status {server.returncode}")
            soak.stop.set()
            return
        try:
            rss, threads, fds = proc_sample(server.pid)
        except (OSError, KeyError):
            soak.pause(0.1)
            continue
        t = time.monotonic() - started
        samples.append((round(t, 1), round(rss, 2), threads, fds, soak.tally.total()))
        if time.monotonic() >= soak.deadline:
            return
        soak.pause(1.0 - (time.monotonic() - started) % 1.0)


def slope_per_hour(samples, since):
    """Least-squares slope of RSS against time, in MiB per hour, over the samples at or after `since` seconds."""
    points = [(t, rss) for t, rss, *_ in samples if t >= since]
    if len(points) < 2:
        return float("nan")
    t = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    return float(np.polyfit(t, y, 1)[0] * 3600)


# ---------------------------------------------------------------------------------------------------------------
# The report


def svg_plot(samples, warmup, half):
    """RSS over time as a small SVG line chart, with the warm-up and the second half marked."""
    width, height, left, bottom, top, right = 720, 300, 60, 40, 20, 20
    ts = [s[0] for s in samples]
    ys = [s[1] for s in samples]
    t_max = max(ts[-1], 1.0)
    y_lo, y_hi = min(ys), max(ys)
    pad = max((y_hi - y_lo) * 0.1, 1.0)
    y_lo, y_hi = max(0.0, y_lo - pad), y_hi + pad

    def x(t):
        return left + (width - left - right) * t / t_max

    def y(v):
        return height - bottom - (height - top - bottom) * (v - y_lo) / (y_hi - y_lo)

    points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(ts, ys))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11">', f'<rect width="{width}" height="{height}" fill="white"/>']
    for label, t in (("warm-up", warmup), ("second half", half)):
        parts.append(f'<line x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{height - bottom}" stroke="#bbb" '
                     f'stroke-dasharray="4 3"/><text x="{x(t) + 3:.1f}" y="{top + 10}" fill="#888">{label}</text>')
    for i in range(5):
        v = y_lo + (y_hi - y_lo) * i / 4
        parts.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{width - right}" y2="{y(v):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 5}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    for i in range(6):
        t = t_max * i / 5
        parts.append(f'<text x="{x(t):.1f}" y="{height - bottom + 15}" text-anchor="middle">{t / 60:.0f}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 5}" text-anchor="middle">minutes</text>')
    parts.append(f'<text x="12" y="{(top + height - bottom) / 2}" transform="rotate(-90 12 '
                 f'{(top + height - bottom) / 2})" text-anchor="middle">RSS MiB</text>')
    parts.append(f'<polyline points="{points}" fill="none" stroke="#1f77b4" stroke-width="1"/>')
    late = [(t, v) for t, v in zip(ts, ys) if t >= half]
    if len(late) >= 2:  # the least-squares line the growth check uses
        k, c = np.polyfit([p[0] for p in late], [p[1] for p in late], 1)
        parts.append(f'<line x1="{x(half):.1f}" y1="{y(k * half + c):.1f}" x2="{x(t_max):.1f}" y2="{y(k * t_max + c):.1f}" '
                     f'stroke="#d62728" stroke-width="1.5" stroke-dasharray="6 3"/>'
                     f'<text x="{x(t_max) - 2:.1f}" y="{y(k * t_max + c) - 6:.1f}" text-anchor="end" fill="#d62728">'
                     f'{k * 3600:+.1f} MiB/h</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def summarize(soak, samples, warmup):
    after = [s for s in samples if s[0] >= warmup] or samples
    half = samples[-1][0] / 2 if samples else 0
    return {
        "start": after[0][1], "min": min(s[1] for s in after), "max": max(s[1] for s in after), "end": after[-1][1],
        "first": samples[0][1], "slope_half": slope_per_hour(samples, half), "slope_all": slope_per_hour(samples, warmup),
        "threads": (after[0][2], max(s[2] for s in after), after[-1][2]),
        "fds": (after[0][3], max(s[3] for s in after), after[-1][3]), "half": half,
    }


def write_report(soak, samples, summary, verdicts, run, out_dir):
    tally = soak.tally
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "soak.csv", "w") as f:
        f.write("t_s,rss_mib,threads,fds,requests\n")
        f.writelines(",".join(map(str, s)) + "\n" for s in samples)
    (out_dir / "soak.svg").write_text(svg_plot(samples, run["warmup"], summary["half"]))
    kinds = sorted(set(tally.ok) | {k for k, _ in tally.expected} | {k for k, _ in tally.known}
                   | {k for k, _ in tally.unexpected})
    lines = [
        "# Soak test", "",
        f"{run['seconds'] / 60:.0f} minutes of mixed traffic against a release `ferry` in poll mode "
        f"(`make soak SOAK_SECONDS={run['seconds']}`, script `benches/soak/soak.py`), {run['when']}, commit "
        f"{run['commit']}, {run['machine']}. RSS, threads and open fds of the server were sampled each second "
        f"(`soak.csv`). Traffic kinds left out: {run['skipped']}.", "",
        f"**Verdict: {'PASS' if not verdicts else 'FAIL'}**" + "".join(f"\n- {v}" for v in verdicts), "",
        "## Requests", "",
        "| kind | answered correctly | refused as expected | known defect (not ready) | unexpected |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind in kinds:
        lines.append(f"| {kind} | {tally.ok[kind]} | {sum(n for (k, _), n in tally.expected.items() if k == kind)} | "
                     f"{sum(n for (k, _), n in tally.known.items() if k == kind)} | "
                     f"{sum(n for (k, _), n in tally.unexpected.items() if k == kind)} |")
    lines.append(f"| **all** | {sum(tally.ok.values())} | {sum(tally.expected.values())} | "
                 f"{sum(tally.known.values())} | {sum(tally.unexpected.values())} |")
    for title, counter in (("Unexpected failures", tally.unexpected), ("Known defect (issue 8): not ready after a "
                           "corrupt new version", tally.known), ("Refusals, by case", tally.expected)):
        if counter:
            lines += ["", f"## {title}", "", "| kind | case | count |", "|---|---|---:|"]
            lines += [f"| {k} | {label} | {n} |" for (k, label), n in sorted(counter.items())]
    if tally.details:
        lines += ["", "First unexpected failures:", "", "```", *tally.details, "```"]
    settled = [t for _, t in soak.reloads if t is not None]
    lines += [
        "", "## Reloads", "",
        f"{len(soak.reloads)} repository changes, one every {soak.args.reload_every} s after the previous one "
        f"showed; time for a change to show (poll every 1 s, two equal looks): mean "
        f"{np.mean(settled) if settled else float('nan'):.1f} s, max {max(settled, default=float('nan')):.1f} s.",
        "", "## Server memory", "",
        f"Warm-up: first {run['warmup']:.0f} s (RSS right after start: {summary['first']:.1f} MiB).", "",
        "| RSS after warm-up | min | max | end | slope, second half | slope, after warm-up |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {summary['start']:.1f} MiB | {summary['min']:.1f} MiB | {summary['max']:.1f} MiB | {summary['end']:.1f} MiB"
        f" | {summary['slope_half']:+.1f} MiB/h | {summary['slope_all']:+.1f} MiB/h |", "",
        f"Threads after warm-up / max / end: {'/'.join(map(str, summary['threads']))}; open fds: "
        f"{'/'.join(map(str, summary['fds']))}.", "",
        "![RSS over time](soak.svg)", "", "| minute | RSS MiB | threads | fds | requests so far |",
        "|---:|---:|---:|---:|---:|",
    ]
    step = max(1, len(samples) // 15)
    for s in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        lines.append(f"| {s[0] / 60:.1f} | {s[1]:.1f} | {s[2]} | {s[3]} | {s[4]} |")
    lines += ["", "## Server", "", f"Shutdown on SIGINT: {run['shutdown']}. Log lines: {run['log']}.", ""]
    (out_dir / "soak.md").write_text("\n".join(lines))
    return "\n".join(lines)


def git_commit():
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def log_summary(path):
    text = Path(path).read_text(errors="replace")
    counts = Counter()
    for line in text.splitlines():
        for level in ("ERROR", "WARN", "panicked"):
            if level in line:
                counts[level] += 1
    return counts, [line for line in text.splitlines() if "panicked" in line][:5]


# ---------------------------------------------------------------------------------------------------------------


# The traffic kinds (--skip leaves some out, to find which one a leak follows) and their threads.
WORKERS = {
    "grpc": [grpc_infer, grpc_infer], "rest": [rest_infer, rest_infer], "stream": [grpc_stream],
    "shm": [shared_memory], "bad": [bad_requests], "garbage": [garbage], "control": [control],
    "reload": [reloader], "slow-http": [slow_http_reader], "slow-stream": [slow_stream_reader],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 1800)))
    parser.add_argument("--ferry", type=Path, default=ROOT / "target/release/ferry")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benches/results")
    parser.add_argument("--warmup", type=float, help="seconds left out of the RSS summary (default: 10%%, at most 60)")
    parser.add_argument("--max-growth", type=float, default=10.0,
                        help="MiB/hour of RSS growth over the second half that fails the run (default 10)")
    parser.add_argument("--growth-check-after", type=float, default=600,
                        help="check growth only in runs at least this long, in seconds (default 600)")
    parser.add_argument("--allow-known", action="store_true",
                        help="do not fail on valid requests refused as 'not ready' during reloads (issue 8)")
    parser.add_argument("--reload-every", type=float, default=3.0, help="seconds between repository changes")
    parser.add_argument("--max-message-bytes", type=int, default=4 * MIB, help="the server's message limit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repository and server log")
    parser.add_argument("--skip", default="", help=f"traffic kinds to leave out, comma-separated: {', '.join(WORKERS)}")
    args = parser.parse_args()
    if unknown := {k.strip() for k in args.skip.split(",") if k.strip()} - set(WORKERS):
        parser.error(f"unknown traffic kinds in --skip: {', '.join(sorted(unknown))}")
    if not args.ferry.exists():
        raise SystemExit(f"{args.ferry} not found: cargo build --release -p ferry-server --bin ferry")
    warmup = args.warmup if args.warmup is not None else min(60.0, args.seconds / 10)

    tmp = Path(tempfile.mkdtemp(prefix="ferry-soak-"))
    repo = tmp / "models"
    shutil.copytree(ROOT / "examples/model_repository", repo)
    ports = free_ports(3)
    log = open(tmp / "ferry.log", "w")
    server = start_server(args, repo, ports, log)
    print(f"ferry pid {server.pid}: gRPC {ports[0]}, REST {ports[1]}, metrics {ports[2]}; log {log.name}; "
          f"{args.seconds:.0f} s of traffic", flush=True)
    soak = Soak(args, repo, ports)
    soak.server_pid = server.pid
    samples, started = [], time.monotonic()
    soak.deadline = started + args.seconds
    skipped = {k.strip() for k in args.skip.split(",") if k.strip()}
    workers = [(sampler, (soak, server, samples, started))]
    for seed, (kind, worker) in enumerate((k, w) for k, ws in WORKERS.items() if k not in skipped for w in ws):
        workers.append((worker, (soak, seed)))
    threads = [threading.Thread(target=run_worker, args=(soak, w, a), name=w.__name__, daemon=True)
               for w, a in workers]
    for t in threads:
        t.start()
    try:
        while soak.running():
            soak.pause(min(60.0, max(0.0, soak.deadline - time.monotonic())))
            print(f"{time.monotonic() - started:6.0f} s: {soak.tally.total()} requests, RSS "
                  f"{samples[-1][1] if samples else 0:.1f} MiB, {sum(soak.tally.unexpected.values())} unexpected, "
                  f"{sum(soak.tally.known.values())} not ready", flush=True)
    except KeyboardInterrupt:
        print("interrupted: stopping the traffic", flush=True)
    soak.stop.set()
    end = time.monotonic() + 240  # the cycles in flight are bounded: let them finish
    for t in threads:
        t.join(timeout=max(0.0, end - time.monotonic()))
        if t.is_alive():
            soak.tally.fail(t.name, "worker did not stop", "still running 240 s after the end")

    died = server.poll() is not None
    if died:
        shutdown = f"not needed: the server had died with status {server.returncode}"
    else:
        t0 = time.monotonic()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
            shutdown = f"exited with status {server.returncode} after {time.monotonic() - t0:.1f} s"
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            shutdown = "did not exit within 30 s, killed"
    log.close()
    counts, panics = log_summary(log.name)
    run = {"skipped": ", ".join(sorted(skipped)) or "none", "seconds": args.seconds, "warmup": warmup, "commit": git_commit(), "shutdown": shutdown,
           "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), shared with other work",
           "log": f"{counts['ERROR']} ERROR, {counts['WARN']} WARN, {counts['panicked']} panics"
                  + "".join(f"\n\n    {p}" for p in panics)}
    summary = summarize(soak, samples, warmup) if samples else None
    verdicts = []
    if died:
        verdicts.append(f"the server died (status {server.returncode})")
    if "killed" in shutdown:
        verdicts.append("the server did not shut down on SIGINT")
    if counts["panicked"]:
        verdicts.append(f"{counts['panicked']} panics in the server log")
    if soak.tally.unexpected:
        verdicts.append(f"{sum(soak.tally.unexpected.values())} unexpected failures")
    if soak.tally.known and not args.allow_known:
        verdicts.append(f"{sum(soak.tally.known.values())} failures of the known defect: not ready (issue 8)")
    if summary and args.seconds >= args.growth_check_after and summary["slope_half"] > args.max_growth:
        verdicts.append(f"RSS grew {summary['slope_half']:+.1f} MiB/h over the second half (limit {args.max_growth})")
    if summary:
        print(write_report(soak, samples, summary, verdicts, run, args.out_dir))
    if args.keep or verdicts:
        print(f"kept {tmp} (server log: {log.name})")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    if verdicts:
        print("SOAK FAILED:\n  " + "\n  ".join(verdicts), file=sys.stderr)
        return 1
    print("soak passed")
    return 0


def run_worker(soak, worker, args):
    """Runs one traffic loop; an exception that escapes it is a failure of the soak itself, reported as such."""
    try:
        worker(*args)
    except Exception as e:  # noqa: BLE001
        soak.tally.fail(worker.__name__, "worker crashed", repr(e))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Generate the ONNX models used by Ferry's examples and tests.

Run from anywhere:

    python3 examples/generate_models.py            # writes into the repo
    python3 examples/generate_models.py --check    # also runs each model with onnxruntime

It (over)writes only the model files (`<model>/<version>/model.onnx`); the
`config.pbtxt` files next to them are hand-written and committed as they are.
Everything is deterministic: weights come from fixed numpy seeds and the
output bytes are identical from run to run.

Models written
--------------
examples/model_repository/
  simple/1/model.onnx           INPUT0, INPUT1 INT32 [batch, 16] -> OUTPUT0 = sum, OUTPUT1 = difference
  mlp_classifier/{1,2}/model.onnx
                                features FP32 [batch, 32] -> Relu(64) -> 10 logits
                                -> probabilities FP32 [batch, 10] (Softmax), label INT64 [batch, 1] (ArgMax)
  linear_auto/1/model.onnx      x FP32 [batch, 8] -> y FP32 [batch, 3] = x @ W + b   (no config.pbtxt)
tests/model_repository/
  identity_types/1/model.onnx   IN_<DT> -> Identity -> OUT_<DT> for every Triton datatype except BF16, dims [n]
  identity_typed/1/model.onnx   the same, limited to the datatypes that have a typed `contents` field
  identity_bf16/1/model.onnx    IN_BF16 -> Identity -> OUT_BF16
  corrupt/1/model.onnx          garbage bytes (not a protobuf model)
  bad_config/1/model.onnx       the linear model again (its config.pbtxt is the broken part)
  add_one_batched/1/model.onnx  x FP32 [batch, 4] -> y = x + 1
  simple_int8/1/model.onnx      Triton's `simple_int8` twin: `simple` on INT8 (sums and differences wrap)
  simple_string/1/model.onnx    Triton's `simple_string` twin: BYTES decimal strings, parsed, added and
                                subtracted as INT32, written back as strings
  simple_identity/1/model.onnx  Triton's `simple_identity` twin: BYTES INPUT0 [batch, n] -> OUTPUT0
  densenet_onnx/1/model.onnx    an image classifier with densenet_onnx's tensors: data_0 FP32 [batch, 3, 224, 224]
                                -> mean per channel -> 1x1 convolution -> fc6_1 FP32 [batch, 1000, 1, 1]
                                (densenet_labels.txt: one made-up label per class)
  mlp_labels/1/model.onnx       mlp_classifier version 2 with labels.txt on `probabilities`, for the classification
  mlp_labels_flat/1/model.onnx  extension; the same without batching (max_batch_size 0). labels.txt names classes
                                0-8, leaves class 4's line empty and has no line for class 9
tests/ensemble_repository/      the members of the ensembles `pipeline` and `diamond` (whose configs and empty
                                version folders are hand-written), all FP32 [batch, 4] unless said:
  scale_pre/1/model.onnx        x -> y = 2x + 1
  relu_shift/1/model.onnx       x -> y = Relu(x - 4)
  row_sum/1/model.onnx          x -> y = sum of each row, FP32 [batch, 1]
  add_pair/1/model.onnx         a, b -> sum = a + b
tests/sequence_repository/      stateful models served with sequence_batching (hand-written configs):
  seq_gru_state/1/model.onnx    a GRU cell x FP32 [batch, 4], h_in [batch, 8] -> y, h_out [batch, 8]; implicit
                                state h_in <- h_out, direct strategy
  seq_gru_controls/1/model.onnx the same cell with START, READY (INT32) and CORRID (UINT64) control inputs
                                echoed as outputs; initial state from initial_state/h0.bin
  seq_accumulate_oldest/1/...   y = acc_out = acc_in + x FP32 [batch, 4], END (BOOL) echoed; oldest strategy
  seq_idle/1/model.onnx         the accumulator without a batch dimension, a short idle timeout, and a config
                                that lists no tensors (auto-complete must leave the state out)
  seq_accumulate_wait/1/...     the batched accumulator under a direct strategy that waits 1.5 s for full
                                batches, so that a request stays queued long enough to be cancelled
tests/ragged_repository/        requests of different lengths sharing batches (configs hand-written):
  ragged_sum/1/model.onnx       ragged INPUT FP32 [n] (every request's elements back to back) with batch inputs
                                INDEX INT32 [k] (accumulated element counts), COUNT FP32 [k] (element counts) and
                                MAXLEN INT32 [longest] (only its shape counts) -> per request SUM, MEAN FP32
                                [k, 1] and LONGEST INT64 [k, 1] (the longest request of its batch)
  bucket_tokens/1/model.onnx    x FP32 [batch, len, 8] -> y = tanh(x @ W) per token [batch, len, 8] and
                                pooled = sum of y over the tokens [batch, 8] (zero tokens add nothing)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # loadable by onnxruntime >= 1.10 and by Triton's ORT backend of the same era
PRODUCER = "ferry-generate_models"

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples" / "model_repository"
TESTS = REPO_ROOT / "tests" / "model_repository"
ASSETS = REPO_ROOT / "tests" / "assets"
ENSEMBLES = REPO_ROOT / "tests" / "ensemble_repository"
SEQUENCES = REPO_ROOT / "tests" / "sequence_repository"
RAGGED = REPO_ROOT / "tests" / "ragged_repository"

# Triton datatype -> ONNX element type, in the order of Triton's DataType enum.
TRITON_TO_ONNX = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}
# Datatypes with no field in InferTensorContents: they can only travel as raw bytes.
RAW_ONLY = {"FP16", "BF16"}


# --------------------------------------------------------------------------- helpers


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version="1",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _write(model_or_bytes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model_or_bytes if isinstance(model_or_bytes, bytes) else model_or_bytes.SerializeToString()
    path.write_bytes(data)
    return path


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name=name)


def _weights(seed: int, *shapes) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 0.5, size=s).astype(np.float32) for s in shapes]


# --------------------------------------------------------------------------- models


def _add_sub(name: str, element: int) -> onnx.ModelProto:
    """The `simple` graph (OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1) on vectors of `element`."""
    shape = ["batch", 16]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"], name="add"),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"], name="sub"),
        ],
        name,
        inputs=[helper.make_tensor_value_info(n, element, shape) for n in ("INPUT0", "INPUT1")],
        outputs=[helper.make_tensor_value_info(n, element, shape) for n in ("OUTPUT0", "OUTPUT1")],
    )
    return _model(graph)


def simple() -> onnx.ModelProto:
    """Triton's classic `simple` model: element-wise sum and difference of two INT32 vectors."""
    return _add_sub("simple", TensorProto.INT32)


def simple_int8() -> onnx.ModelProto:
    """Triton's `simple_int8`: the `simple` graph on INT8 vectors (ONNX Runtime's Add and Sub wrap around)."""
    return _add_sub("simple_int8", TensorProto.INT8)


def simple_string() -> onnx.ModelProto:
    """Triton's `simple_string`: strings holding integers in, their sums and differences out as strings."""
    shape = ["batch", 16]
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["INPUT0"], ["a"], name="parse0", to=TensorProto.INT32),
            helper.make_node("Cast", ["INPUT1"], ["b"], name="parse1", to=TensorProto.INT32),
            helper.make_node("Add", ["a", "b"], ["sum"], name="add"),
            helper.make_node("Sub", ["a", "b"], ["difference"], name="sub"),
            helper.make_node("Cast", ["sum"], ["OUTPUT0"], name="format0", to=TensorProto.STRING),
            helper.make_node("Cast", ["difference"], ["OUTPUT1"], name="format1", to=TensorProto.STRING),
        ],
        "simple_string",
        inputs=[helper.make_tensor_value_info(n, TensorProto.STRING, shape) for n in ("INPUT0", "INPUT1")],
        outputs=[helper.make_tensor_value_info(n, TensorProto.STRING, shape) for n in ("OUTPUT0", "OUTPUT1")],
    )
    return _model(graph)


def simple_identity() -> onnx.ModelProto:
    """Triton's `simple_identity`: a BYTES tensor of any length per batch item, returned as it came."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"], name="identity")],
        "simple_identity",
        inputs=[helper.make_tensor_value_info("INPUT0", TensorProto.STRING, ["batch", "n"])],
        outputs=[helper.make_tensor_value_info("OUTPUT0", TensorProto.STRING, ["batch", "n"])],
    )
    return _model(graph)


DENSENET_CLASSES = 1000


def densenet_twin(seed: int = 11) -> onnx.ModelProto:
    """An image classifier with the tensors of Triton's `densenet_onnx` example (not its weights): the mean of
    each colour channel goes through a 1x1 convolution to 1000 class scores."""
    (w,) = _weights(seed, (DENSENET_CLASSES, 3, 1, 1))
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["data_0"], ["channel_means"], name="pool", axes=[2, 3], keepdims=1),
            helper.make_node("Conv", ["channel_means", "W"], ["fc6_1"], name="classify"),
        ],
        "densenet_twin",
        inputs=[helper.make_tensor_value_info("data_0", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        outputs=[helper.make_tensor_value_info("fc6_1", TensorProto.FLOAT, ["batch", DENSENET_CLASSES, 1, 1])],
        initializer=[_init("W", w)],
    )
    return _model(graph)


def densenet_labels() -> bytes:
    """One made-up label per class of the densenet twin, one per line, as Triton's label files are."""
    return "".join(f"class {i:04d}\n" for i in range(DENSENET_CLASSES)).encode()


MLP_CLASSES = 10


def mlp_labels() -> bytes:
    """Labels for the classes of mlp_classifier, with the two gaps Triton's label files may have: an empty
    line (class 4) and no line at all (class 9). Neither class gets a label in classification results."""
    return "".join("\n" if i == 4 else f"digit {i}\n" for i in range(MLP_CLASSES - 1)).encode()


def mlp_classifier(seed: int) -> onnx.ModelProto:
    """32 features -> 64 hidden (Relu) -> 10 logits -> softmax probabilities and argmax label."""
    w1, b1, w2, b2 = _weights(seed, (32, 64), (64,), (64, 10), (10,))
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W1"], ["h_mm"], name="fc1"),
            helper.make_node("Add", ["h_mm", "B1"], ["h_pre"], name="fc1_bias"),
            helper.make_node("Relu", ["h_pre"], ["hidden"], name="relu"),
            helper.make_node("MatMul", ["hidden", "W2"], ["l_mm"], name="fc2"),
            helper.make_node("Add", ["l_mm", "B2"], ["logits"], name="fc2_bias"),
            helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1),
            helper.make_node("ArgMax", ["logits"], ["label"], name="argmax", axis=1, keepdims=1),
        ],
        "mlp_classifier",
        inputs=[helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 32])],
        outputs=[
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch", 1]),
        ],
        initializer=[_init("W1", w1), _init("B1", b1), _init("W2", w2), _init("B2", b2)],
    )
    return _model(graph)


def linear(seed: int = 7) -> onnx.ModelProto:
    """y = x @ W + b with x FP32 [batch, 8] and y FP32 [batch, 3]."""
    w, b = _weights(seed, (8, 3), (3,))
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"], name="matmul"),
            helper.make_node("Add", ["xw", "b"], ["y"], name="bias"),
        ],
        "linear",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[_init("W", w), _init("b", b)],
    )
    return _model(graph)


def identity(datatypes: list[str], name: str) -> onnx.ModelProto:
    """One IN_<DT> -> Identity -> OUT_<DT> pair per datatype, each a 1-D tensor of any length."""
    nodes, inputs, outputs = [], [], []
    for dt in datatypes:
        elem = TensorProto.BFLOAT16 if dt == "BF16" else TRITON_TO_ONNX[dt]
        dim = [f"n_{dt.lower()}"]  # independent lengths: each pair may be sized on its own
        inputs.append(helper.make_tensor_value_info(f"IN_{dt}", elem, dim))
        outputs.append(helper.make_tensor_value_info(f"OUT_{dt}", elem, dim))
        nodes.append(helper.make_node("Identity", [f"IN_{dt}"], [f"OUT_{dt}"], name=f"identity_{dt.lower()}"))
    return _model(helper.make_graph(nodes, name, inputs, outputs))


def add_one_batched(k: float = 1.0) -> onnx.ModelProto:
    """y = x + k with x FP32 [batch, 4] (k = 1 unless given)."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"], name="add_one")],
        "add_one_batched",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[_init("one", np.array(k, dtype=np.float32))],
    )
    return _model(graph)


def gather_table() -> onnx.ModelProto:
    """y = table[index] for a constant table of 10 values: an index outside 0..9 fails inside ONNX Runtime."""
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "index"], ["y"], name="lookup", axis=0)],
        "gather_table",
        inputs=[helper.make_tensor_value_info("index", TensorProto.INT64, ["batch", 1])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        initializer=[_init("table", np.arange(10, dtype=np.float32) * 10.0)],
    )
    return _model(graph)


def _rows(name: str, nodes, initializers, inputs=("x",), output=("y", 4)) -> onnx.ModelProto:
    """A graph over FP32 [batch, 4] inputs with one FP32 [batch, n] output."""
    graph = helper.make_graph(
        nodes,
        name,
        inputs=[helper.make_tensor_value_info(i, TensorProto.FLOAT, ["batch", 4]) for i in inputs],
        outputs=[helper.make_tensor_value_info(output[0], TensorProto.FLOAT, ["batch", output[1]])],
        initializer=initializers,
    )
    return _model(graph)


def scale_pre() -> onnx.ModelProto:
    """The ensembles' pre-processing step: y = 2x + 1."""
    return _rows(
        "scale_pre",
        [helper.make_node("Mul", ["x", "two"], ["doubled"]), helper.make_node("Add", ["doubled", "one"], ["y"])],
        [_init("two", np.array(2.0, dtype=np.float32)), _init("one", np.array(1.0, dtype=np.float32))],
    )


def relu_shift() -> onnx.ModelProto:
    """The ensembles' model step: y = Relu(x - 4), so that some elements become 0."""
    return _rows(
        "relu_shift",
        [helper.make_node("Sub", ["x", "four"], ["shifted"]), helper.make_node("Relu", ["shifted"], ["y"])],
        [_init("four", np.array(4.0, dtype=np.float32))],
    )


def row_sum() -> onnx.ModelProto:
    """The pipeline's post-processing step: the sum of each row, FP32 [batch, 1]."""
    return _rows(
        "row_sum",
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
        [_init("axes", np.array([1], dtype=np.int64))],
        output=("y", 1),
    )


def add_pair() -> onnx.ModelProto:
    """The diamond's join: sum = a + b."""
    return _rows("add_pair", [helper.make_node("Add", ["a", "b"], ["sum"])], [], inputs=("a", "b"), output=("sum", 4))


def gru_cell(controls: bool, seed: int = 21) -> onnx.ModelProto:
    """A GRU cell with explicit state: x FP32 [batch, 4], h_in FP32 [batch, 8] -> y = h_out FP32 [batch, 8].

    z = sigmoid(x Wz + h Uz + bz), r = sigmoid(x Wr + h Ur + br), n = tanh(x Wn + (r * h) Un + bn),
    h_out = (1 - z) * n + z * h. With `controls`, the sequence batcher's control inputs START, READY (INT32
    [batch, 1]) and CORRID (UINT64 [batch, 1]) come in too and go back out unchanged as start_out, ready_out
    and corrid_out, so that a test sees what the batcher fed each row.
    """
    wz, wr, wn = _weights(seed, (4, 8), (4, 8), (4, 8))
    uz, ur, un = _weights(seed + 1, (8, 8), (8, 8), (8, 8))
    bz, br, bn = _weights(seed + 2, (8,), (8,), (8,))
    nodes = [
        helper.make_node("MatMul", ["x", "Wz"], ["xz"]),
        helper.make_node("MatMul", ["h_in", "Uz"], ["hz"]),
        helper.make_node("Sum", ["xz", "hz", "bz"], ["z_pre"]),
        helper.make_node("Sigmoid", ["z_pre"], ["z"]),
        helper.make_node("MatMul", ["x", "Wr"], ["xr"]),
        helper.make_node("MatMul", ["h_in", "Ur"], ["hr"]),
        helper.make_node("Sum", ["xr", "hr", "br"], ["r_pre"]),
        helper.make_node("Sigmoid", ["r_pre"], ["r"]),
        helper.make_node("Mul", ["r", "h_in"], ["rh"]),
        helper.make_node("MatMul", ["x", "Wn"], ["xn"]),
        helper.make_node("MatMul", ["rh", "Un"], ["hn"]),
        helper.make_node("Sum", ["xn", "hn", "bn"], ["n_pre"]),
        helper.make_node("Tanh", ["n_pre"], ["n"]),
        helper.make_node("Sub", ["one", "z"], ["keep_new"]),
        helper.make_node("Mul", ["keep_new", "n"], ["new_part"]),
        helper.make_node("Mul", ["z", "h_in"], ["old_part"]),
        helper.make_node("Add", ["new_part", "old_part"], ["h_out"]),
        helper.make_node("Identity", ["h_out"], ["y"]),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
        helper.make_tensor_value_info("h_in", TensorProto.FLOAT, ["batch", 8]),
    ]
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8]),
        helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["batch", 8]),
    ]
    if controls:
        for name, kind in (("START", TensorProto.INT32), ("READY", TensorProto.INT32), ("CORRID", TensorProto.UINT64)):
            inputs.append(helper.make_tensor_value_info(name, kind, ["batch", 1]))
            outputs.append(helper.make_tensor_value_info(f"{name.lower()}_out", kind, ["batch", 1]))
            nodes.append(helper.make_node("Identity", [name], [f"{name.lower()}_out"]))
    initializers = [
        _init(name, value)
        for name, value in (
            ("Wz", wz), ("Wr", wr), ("Wn", wn), ("Uz", uz), ("Ur", ur), ("Un", un), ("bz", bz), ("br", br), ("bn", bn),
            ("one", np.array(1.0, dtype=np.float32)),
        )
    ]
    name = "gru_cell_controls" if controls else "gru_cell"
    return _model(helper.make_graph(nodes, name, inputs, outputs, initializer=initializers))


def accumulator(batched: bool) -> onnx.ModelProto:
    """A running sum with explicit state: y = acc_out = acc_in + x, FP32 [batch, 4] (or [4] without
    `batched`). The batched one also takes the sequence batcher's END control (BOOL [batch, 1]) and returns
    it as end_out."""
    shape = ["batch", 4] if batched else [4]
    nodes = [helper.make_node("Add", ["acc_in", "x"], ["acc_out"]), helper.make_node("Identity", ["acc_out"], ["y"])]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
        helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, shape),
    ]
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, shape),
        helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, shape),
    ]
    if batched:
        inputs.append(helper.make_tensor_value_info("END", TensorProto.BOOL, ["batch", 1]))
        outputs.append(helper.make_tensor_value_info("end_out", TensorProto.BOOL, ["batch", 1]))
        nodes.append(helper.make_node("Identity", ["END"], ["end_out"]))
    return _model(helper.make_graph(nodes, "accumulator", inputs, outputs))


def gru_initial_state() -> bytes:
    """The initial state file of seq_gru_controls: h = 0.5, 0.25, ... for the 8 state elements."""
    return (0.5 ** np.arange(1, 9)).astype("<f4").tobytes()
def ragged_sum() -> onnx.ModelProto:
    """Sums and means of each request's stretch of a ragged input, found from Ferry's batch inputs."""
    i64 = TensorProto.INT64
    nodes = [
        # Positions 0..n-1 of the flat input, and each request's [start, end) from its end and its count.
        helper.make_node("Shape", ["INPUT"], ["n"]),
        helper.make_node("Squeeze", ["n", "axis0"], ["n_scalar"]),
        helper.make_node("Range", ["zero", "n_scalar", "one"], ["positions"]),
        helper.make_node("Cast", ["INDEX"], ["ends"], to=i64),
        helper.make_node("Cast", ["COUNT"], ["counts"], to=i64),
        helper.make_node("Sub", ["ends", "counts"], ["starts"]),
        helper.make_node("Unsqueeze", ["starts", "axis1"], ["starts_col"]),
        helper.make_node("Unsqueeze", ["ends", "axis1"], ["ends_col"]),
        helper.make_node("GreaterOrEqual", ["positions", "starts_col"], ["after_start"]),
        helper.make_node("Less", ["positions", "ends_col"], ["before_end"]),
        helper.make_node("And", ["after_start", "before_end"], ["inside"]),
        helper.make_node("Cast", ["inside"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["INPUT", "axis1"], ["input_col"]),
        helper.make_node("MatMul", ["mask", "input_col"], ["SUM"]),
        helper.make_node("Unsqueeze", ["COUNT", "axis1"], ["count_col"]),
        helper.make_node("Div", ["SUM", "count_col"], ["MEAN"]),
        # The longest request of the batch, from the shape of MAXLEN, repeated for each request.
        helper.make_node("Shape", ["MAXLEN"], ["longest"]),
        helper.make_node("Reshape", ["longest", "one_by_one"], ["longest_cell"]),
        helper.make_node("Shape", ["INDEX"], ["k"]),
        helper.make_node("Concat", ["k", "one_list"], ["k_by_one"], axis=0),
        helper.make_node("Expand", ["longest_cell", "k_by_one"], ["LONGEST"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ragged_sum",
        inputs=[
            helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("INDEX", TensorProto.INT32, ["k"]),
            helper.make_tensor_value_info("COUNT", TensorProto.FLOAT, ["k"]),
            helper.make_tensor_value_info("MAXLEN", TensorProto.INT32, ["longest"]),
        ],
        outputs=[
            helper.make_tensor_value_info("SUM", TensorProto.FLOAT, ["k", 1]),
            helper.make_tensor_value_info("MEAN", TensorProto.FLOAT, ["k", 1]),
            helper.make_tensor_value_info("LONGEST", i64, ["k", 1]),
        ],
        initializer=[
            _init("axis0", np.array([0], dtype=np.int64)),
            _init("axis1", np.array([1], dtype=np.int64)),
            _init("zero", np.array(0, dtype=np.int64)),
            _init("one", np.array(1, dtype=np.int64)),
            _init("one_by_one", np.array([1, 1], dtype=np.int64)),
            _init("one_list", np.array([1], dtype=np.int64)),
        ],
    )
    return _model(graph)


def bucket_tokens(seed: int = 13, width: int = 8) -> onnx.ModelProto:
    """A per-token layer over sequences of any length, and a pooled sum that padding with zeros leaves alone."""
    (w,) = _weights(seed, (width, width))
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["projected"]),
            helper.make_node("Tanh", ["projected"], ["y"]),
            helper.make_node("ReduceSum", ["y", "axes"], ["pooled"], keepdims=0),
        ],
        "bucket_tokens",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "len", width])],
        outputs=[
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "len", width]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", width]),
        ],
        initializer=[_init("w", w), _init("axes", np.array([1], dtype=np.int64))],
    )
    return _model(graph)


def corrupt_bytes() -> bytes:
    """Deterministic bytes that are not a parseable ONNX ModelProto."""
    rng = np.random.default_rng(1234)
    return b"this is not an onnx model\n\xff\xff\xff\xff" + rng.integers(0, 256, size=200, dtype=np.uint8).tobytes()


def generate() -> list[Path]:
    typed = [dt for dt in TRITON_TO_ONNX if dt not in RAW_ONLY]
    written = [
        _write(simple(), EXAMPLES / "simple" / "1" / "model.onnx"),
        _write(mlp_classifier(seed=1), EXAMPLES / "mlp_classifier" / "1" / "model.onnx"),
        _write(mlp_classifier(seed=2), EXAMPLES / "mlp_classifier" / "2" / "model.onnx"),
        _write(linear(), EXAMPLES / "linear_auto" / "1" / "model.onnx"),
        _write(identity(list(TRITON_TO_ONNX), "identity_types"), TESTS / "identity_types" / "1" / "model.onnx"),
        _write(identity(typed, "identity_typed"), TESTS / "identity_typed" / "1" / "model.onnx"),
        _write(identity(["BF16"], "identity_bf16"), TESTS / "identity_bf16" / "1" / "model.onnx"),
        _write(corrupt_bytes(), TESTS / "corrupt" / "1" / "model.onnx"),
        _write(linear(), TESTS / "bad_config" / "1" / "model.onnx"),
        _write(add_one_batched(), TESTS / "add_one_batched" / "1" / "model.onnx"),
        # The same graph under batching configs: a fixed long delay, a bounded queue with timeouts, greedy, and
        # the long delay made adaptive.
        _write(add_one_batched(), TESTS / "add_one_dynamic" / "1" / "model.onnx"),
        _write(add_one_batched(), TESTS / "add_one_queue" / "1" / "model.onnx"),
        _write(add_one_batched(), TESTS / "add_one_greedy" / "1" / "model.onnx"),
        _write(add_one_batched(), TESTS / "add_one_adaptive" / "1" / "model.onnx"),
        _write(add_one_batched(), TESTS / "add_one_lone" / "1" / "model.onnx"),
        _write(gather_table(), TESTS / "gather_table" / "1" / "model.onnx"),
        # Twins of the models in Triton's docs/examples/model_repository that its client examples call.
        _write(simple_int8(), TESTS / "simple_int8" / "1" / "model.onnx"),
        _write(simple_string(), TESTS / "simple_string" / "1" / "model.onnx"),
        _write(simple_identity(), TESTS / "simple_identity" / "1" / "model.onnx"),
        _write(densenet_twin(), TESTS / "densenet_onnx" / "1" / "model.onnx"),
        _write(densenet_labels(), TESTS / "densenet_onnx" / "densenet_labels.txt"),
        # The classification extension with labels, batched and not, on mlp_classifier's version 2.
        _write(mlp_classifier(seed=2), TESTS / "mlp_labels" / "1" / "model.onnx"),
        _write(mlp_labels(), TESTS / "mlp_labels" / "labels.txt"),
        _write(mlp_classifier(seed=2), TESTS / "mlp_labels_flat" / "1" / "model.onnx"),
        _write(mlp_labels(), TESTS / "mlp_labels_flat" / "labels.txt"),
        # The members of the ensembles in tests/ensemble_repository.
        _write(scale_pre(), ENSEMBLES / "scale_pre" / "1" / "model.onnx"),
        _write(relu_shift(), ENSEMBLES / "relu_shift" / "1" / "model.onnx"),
        _write(row_sum(), ENSEMBLES / "row_sum" / "1" / "model.onnx"),
        _write(add_pair(), ENSEMBLES / "add_pair" / "1" / "model.onnx"),
        # The stateful models of tests/sequence_repository (sequence_batching).
        _write(gru_cell(controls=False), SEQUENCES / "seq_gru_state" / "1" / "model.onnx"),
        _write(gru_cell(controls=True), SEQUENCES / "seq_gru_controls" / "1" / "model.onnx"),
        _write(gru_initial_state(), SEQUENCES / "seq_gru_controls" / "initial_state" / "h0.bin"),
        _write(accumulator(batched=True), SEQUENCES / "seq_accumulate_oldest" / "1" / "model.onnx"),
        _write(accumulator(batched=False), SEQUENCES / "seq_idle" / "1" / "model.onnx"),
        _write(accumulator(batched=True), SEQUENCES / "seq_accumulate_wait" / "1" / "model.onnx"),
        # Requests of different lengths: ragged batching, and padding to buckets (with batching off as well).
        _write(ragged_sum(), RAGGED / "ragged_sum" / "1" / "model.onnx"),
        _write(bucket_tokens(), RAGGED / "bucket_tokens" / "1" / "model.onnx"),
        _write(bucket_tokens(), RAGGED / "bucket_tokens_unbatched" / "1" / "model.onnx"),
        # Files the lifecycle tests copy into repositories of their own: y = x + k tells which file answered.
        *[_write(add_one_batched(float(k)), ASSETS / f"add_{k}.onnx") for k in (1, 2, 3, 20)],
    ]
    return written


# --------------------------------------------------------------------------- optional self-check


def _run_bf16(sess, feeds_u16: dict) -> None:
    """Run a session whose tensors are BF16 through IO binding.

    onnxruntime's Python `run()` cannot take or return bfloat16 arrays
    ("Numpy_type 256 can't be converted to MLDataType"), but its CPU kernels
    run BF16 fine when the data is handed over as OrtValues of type BFLOAT16.
    """
    import onnxruntime as ort

    binding = sess.io_binding()
    for name, arr in feeds_u16.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy_with_onnx_type(arr, TensorProto.BFLOAT16))
    for out in sess.get_outputs():
        binding.bind_output(out.name, "cpu")
    sess.run_with_iobinding(binding)


def check(paths: list[Path]) -> int:
    """Load every generated model with onnxruntime (CPU) and run it once on zeros.

    `corrupt` must fail to load; every other model must load and run.
    """
    import onnxruntime as ort

    ort_np = {
        "tensor(bool)": np.bool_, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
        "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(int8)": np.int8,
        "tensor(int16)": np.int16, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
        "tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64,
        "tensor(string)": np.object_,
    }
    failures = 0
    for path in (p for p in paths if p.suffix == ".onnx"):
        rel = path.relative_to(REPO_ROOT)
        expect_failure = path.parent.parent.name == "corrupt"
        try:
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            feeds, bf16_feeds = {}, {}
            for i in sess.get_inputs():
                shape = [d if isinstance(d, int) else 2 for d in i.shape]
                if i.type == "tensor(bfloat16)":
                    bf16_feeds[i.name] = np.zeros(shape, dtype=np.uint16)
                elif i.type == "tensor(string)":
                    feeds[i.name] = np.full(shape, "1", dtype=np.object_)
                else:
                    feeds[i.name] = np.zeros(shape, dtype=ort_np[i.type])
            if bf16_feeds:
                _run_bf16(sess, bf16_feeds)
            else:
                sess.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - report and continue
            if expect_failure:
                print(f"ok      {rel} fails to load as intended ({type(exc).__name__})")
            else:
                failures += 1
                print(f"FAILED  {rel}: {type(exc).__name__}: {exc}")
            continue
        if expect_failure:
            failures += 1
            print(f"FAILED  {rel}: loaded although it should be garbage")
        else:
            print(f"ok      {rel}")
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="run each model once with onnxruntime (CPU)")
    args = parser.parse_args(argv)
    paths = generate()
    for p in paths:
        print(f"wrote   {p.relative_to(REPO_ROOT)} ({p.stat().st_size} bytes)")
    return check(paths) if args.check else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

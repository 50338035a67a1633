#!/usr/bin/env python3
"""Write the model repository that the serving benchmark runs against (not committed: ~24 MB).

    python3 benches/generate_bench_models.py <output-dir>

Two MLPs, each served twice from the same ONNX file, with batching on and off:

  compute_mlp_{batched,unbatched}  x FP32 [batch, 512] -> 2048 -> 2048 -> 512, Relu between: 6.3 M weights
                                   (24 MiB), about 12.6 MFLOP per row: the model's own compute dominates.
  small_mlp_{batched,unbatched}    x FP32 [batch, 32] -> 64 -> 10: a few microseconds of compute per row, so
                                   the serving path (gRPC, queueing, copies) dominates.

Every variant runs one instance; its ONNX Runtime threads are Ferry's default (all cores for one instance)
unless FERRY_BENCH_THREADS sets `intra_op_thread_count`. The in-process reference uses the same session
options as the served model.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODELS = {
    "compute_mlp": [512, 2048, 2048, 512],
    "small_mlp": [32, 64, 10],
}
MAX_BATCH_SIZE = 64
# Threads per ONNX Runtime session; the in-process reference uses the same. Override with FERRY_BENCH_THREADS.
THREADS = int(os.environ.get("FERRY_BENCH_THREADS", "0"))


def config(widths: list[int], batched: bool) -> str:
    """A complete config: listing the tensors keeps auto-complete from adding a scheduler to the unbatched one."""
    text = f"""max_batch_size: {MAX_BATCH_SIZE}
input [ {{ name: "x", data_type: TYPE_FP32, dims: [ {widths[0]} ] }} ]
output [ {{ name: "y", data_type: TYPE_FP32, dims: [ {widths[-1]} ] }} ]
instance_group [ {{ count: 1, kind: KIND_CPU }} ]
"""
    if THREADS:
        text += f'parameters {{ key: "intra_op_thread_count" value {{ string_value: "{THREADS}" }} }}\n'
    if batched:
        text += "dynamic_batching { }\n"
    return text


def mlp(name: str, widths: list[int], seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = "x"
    for layer, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = np.zeros(fan_out, dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"W{layer}"), numpy_helper.from_array(b, f"B{layer}")]
        nodes.append(helper.make_node("MatMul", [current, f"W{layer}"], [f"mm{layer}"]))
        last = layer == len(widths) - 2
        nodes.append(helper.make_node("Add", [f"mm{layer}", f"B{layer}"], ["y" if last else f"pre{layer}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"pre{layer}"], [f"h{layer}"]))
            current = f"h{layer}"
    graph = helper.make_graph(
        nodes,
        name,
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", widths[0]])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", widths[-1]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="ferry-bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(sys.argv[1])
    for seed, (name, widths) in enumerate(MODELS.items()):
        model = mlp(name, widths, seed)
        for variant, batched in (("batched", True), ("unbatched", False)):
            folder = out / f"{name}_{variant}"
            (folder / "1").mkdir(parents=True, exist_ok=True)
            onnx.save(model, folder / "1" / "model.onnx")
            (folder / "config.pbtxt").write_text(config(widths, batched))
            print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Triton's response cache through NVIDIA's own clients, over gRPC and REST.

A request sent twice to a model with `response_cache { enable: true }` on a server with a cache gets the
same outputs both times, and ModelStatistics counts the second as a cache hit without an execution, as
Triton's core does (`InferenceStatsAggregator::UpdateSuccessCacheHit` in `infer_stats.cc`). tritonclient
reads `cache_hit` and `cache_miss` from the statistics as Triton sends them.

Environment (all required: without them the run FAILS, it is never skipped):
    FERRY_GRPC_URL, FERRY_HTTP_URL  host:port of a Ferry serving tests/tests/cache.rs's repository, whose
                                    model `cached` is Triton's `simple` with the cache on
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.exit(f"FAILED: {name} is not set; run this through tests/tests/cache.rs", returncode=1)
    return value


def _counts(stats: dict) -> tuple[int, int, int]:
    """(cache hits, cache misses, executions) of the one version in a statistics answer (JSON form)."""
    [model] = stats["model_stats"]
    inference = model["inference_stats"]
    return (
        int(inference.get("cache_hit", {}).get("count", 0)),
        int(inference.get("cache_miss", {}).get("count", 0)),
        int(model.get("execution_count", 0)),
    )


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_repeated_request_is_answered_from_the_cache(protocol: str) -> None:
    if protocol == "grpc":
        module, client = grpcclient, grpcclient.InferenceServerClient(_env("FERRY_GRPC_URL"))

        def stats() -> tuple[int, int, int]:
            return _counts(client.get_inference_statistics("cached", "1", as_json=True))
    else:
        module, client = httpclient, httpclient.InferenceServerClient(_env("FERRY_HTTP_URL"))

        def stats() -> tuple[int, int, int]:
            return _counts(client.get_inference_statistics("cached", "1"))

    # Each protocol sends inputs of its own, so the two runs do not hit each other's entries.
    offset = 1000 if protocol == "grpc" else 2000
    a = (np.arange(16, dtype=np.int32) + offset).reshape(1, 16)
    b = np.full((1, 16), 7, dtype=np.int32)
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)

    before = stats()
    first = client.infer("cached", inputs, model_version="1")
    second = client.infer("cached", inputs, model_version="1")
    after = stats()

    for name, expected in (("OUTPUT0", a + b), ("OUTPUT1", a - b)):
        np.testing.assert_array_equal(first.as_numpy(name), expected)
        assert first.as_numpy(name).tobytes() == second.as_numpy(name).tobytes()
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (1, 1, 1), (before, after)

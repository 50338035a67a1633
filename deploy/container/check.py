"""Calls Ferry in a container over its published ports with tritonclient, then stops it under load.

1. gRPC and REST: server metadata, model metadata, and an inference of `simple` checked against numpy.
2. Load: WORKERS gRPC clients infer in a loop; SIGTERM goes to the container (PID 1 is ferry); a watcher polls
   readiness. Ferry must turn not ready at once and still serve for the drain (--shutdown-drain-secs, at
   least DRAIN_SECS), so the workers go on for half the drain after the signal, then stop: every request
   sent up to then, all of them to a server that was still listening, must have succeeded, and some must
   have been answered while ferry reported not ready, when the image's HEALTHCHECK must fail.

Usage: check.py --grpc HOST:PORT --http HOST:PORT --container NAME (test.sh runs it).
"""

import argparse
import subprocess
import sys
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

WORKERS = 8
# The shortest --shutdown-drain-secs test.sh passes; the load goes on for half of it after the signal.
DRAIN_SECS = 3


def simple_inputs(module, values):
    inputs = [module.InferInput(name, [1, 16], "INT32") for name in ("INPUT0", "INPUT1")]
    inputs[0].set_data_from_numpy(values)
    inputs[1].set_data_from_numpy(np.ones_like(values))
    return inputs


def check_calls(grpc_url, http_url):
    values = np.arange(16, dtype=np.int32).reshape(1, 16)
    for module, url in ((grpcclient, grpc_url), (httpclient, http_url)):
        client = module.InferenceServerClient(url)
        assert client.is_server_live() and client.is_server_ready(), url
        assert client.is_model_ready("simple"), url
        metadata = client.get_server_metadata()
        name = metadata.name if module is grpcclient else metadata["name"]
        assert name == "ferry", metadata
        model = client.get_model_metadata("simple")
        inputs = model.inputs if module is grpcclient else model["inputs"]
        assert len(inputs) == 2, model
        result = client.infer("simple", simple_inputs(module, values))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values + 1)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), values - 1)
        client.close()
        print(f"check: {module.__name__.split('.')[-1]} on {url}: live, ready, metadata, infer ok")


def stop_under_load(grpc_url, container):
    stop = threading.Event()
    signalled = threading.Event()
    lock = threading.Lock()
    not_ready = threading.Event()
    counts = {"before": 0, "after": 0, "not ready": 0}
    failures = []

    def work(seed):
        client = grpcclient.InferenceServerClient(grpc_url)
        values = np.full((1, 16), seed, dtype=np.int32)
        while not stop.is_set():
            phase = "not ready" if not_ready.is_set() else "after" if signalled.is_set() else "before"
            try:
                result = client.infer("simple", simple_inputs(grpcclient, values), client_timeout=30)
                np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values + 1)
            except Exception as error:  # every failure is a defect: the server was listening when it was sent
                with lock:
                    failures.append(f"{type(error).__name__}: {error}")
                continue
            with lock:
                counts[phase] += 1
        client.close()

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(WORKERS)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    watcher = grpcclient.InferenceServerClient(grpc_url)
    subprocess.run(
        ["podman", "--runtime", "/usr/sbin/runc", "kill", "--signal", "TERM", container],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    signalled.set()
    signalled_at = time.monotonic()
    while watcher.is_server_ready():
        if time.monotonic() - signalled_at > 10:
            stop.set()
            sys.exit("check: ferry still reports ready 10 s after SIGTERM")
        time.sleep(0.05)
    not_ready_after = time.monotonic() - signalled_at
    not_ready.set()
    # The image's HEALTHCHECK follows readiness: unhealthy now, while ferry still serves.
    health = subprocess.run(
        ["podman", "--runtime", "/usr/sbin/runc", "healthcheck", "run", container],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Not ready, still serving until the drain ends: stop well before it, so that every request was sent
    # while the listeners were open.
    time.sleep(max(0.0, DRAIN_SECS / 2 - not_ready_after))
    stop.set()
    for thread in threads:
        thread.join()
    watcher.close()
    print(
        f"check: SIGTERM under load ({WORKERS} clients): not ready after {not_ready_after:.2f} s; "
        f"requests answered: {counts['before']} before the signal, {counts['after']} after it, "
        f"{counts['not ready']} while not ready; {len(failures)} failed"
    )
    if failures:
        sys.exit("check: accepted requests failed:\n  " + "\n  ".join(failures[:10]))
    if health.returncode == 0:
        sys.exit("check: the HEALTHCHECK passed while ferry reported not ready")
    print("check: the HEALTHCHECK failed while ferry drained, as it should")
    if counts["before"] == 0 or counts["not ready"] == 0:
        sys.exit("check: the load did not go on through the signal into the drain")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpc", required=True)
    parser.add_argument("--http", required=True)
    parser.add_argument("--container", required=True)
    args = parser.parse_args()
    check_calls(args.grpc, args.http)
    stop_under_load(args.grpc, args.container)


if __name__ == "__main__":
    main()

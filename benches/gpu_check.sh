#!/usr/bin/env bash
# The GPU check (docs/gpu.md): builds Ferry in release, serves a KIND_GPU model, and checks with tritonclient
# the GPU path, CUDA shared memory end to end, Ferry against in-process ONNX Runtime CUDA at the batch sizes
# Ferry forms, host-to-device staging from pageable and pinned memory, and the GPU metrics.
# Output: benches/results/gpu.md. Sized to finish in under 8 minutes on one GPU with the repository copied.
#
#   bash benches/gpu_check.sh              # builds target/release/ferry (needs the crates: cargo --offline)
#   FERRY_BIN=/path/to/ferry bash benches/gpu_check.sh   # uses a binary built elsewhere
#   PYTHON=/path/to/python3 ...            # a Python with onnxruntime-gpu, tritonclient, numpy, onnx, cuda-python
#
# It has not been run yet: the machines Ferry was written on have no GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
out=benches/results/gpu.md
mkdir -p benches/results
say() { echo "gpu_check: $*"; }
missing=()

# 1. What the machine has.
command -v curl >/dev/null || missing+=("curl")
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader \
  || missing+=("nvidia-smi (the NVIDIA driver)")
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
python_lacks=$("$PYTHON" - 2>&1 <<'EOF'

import importlib, sys
lacking = []
for module, package in [("numpy", "numpy"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime-gpu"),
                        ("tritonclient.grpc", "tritonclient[grpc]"), ("cuda.bindings.runtime", "cuda-python")]:
    try:
        importlib.import_module(module)
    except Exception as error:
        lacking.append(f"{package} ({error.__class__.__name__})")
if not lacking:
    import onnxruntime
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        lacking.append("onnxruntime-gpu (the installed onnxruntime has no CUDAExecutionProvider)")
if lacking:
    print("Python packages in " + sys.executable + ": " + ", ".join(lacking))
EOF
) || python_lacks="a working Python ($PYTHON)"
[ -n "$python_lacks" ] && missing+=("$python_lacks")
FERRY_BIN=${FERRY_BIN:-}
if [ -z "$FERRY_BIN" ]; then
  if command -v cargo >/dev/null; then
    say "building Ferry (release)"
    if cargo build --release --offline -p ferry-server --bin ferry 2>&1 | tail -3; then
      FERRY_BIN=target/release/ferry
    else
      missing+=("the crates to build Ferry offline (or set FERRY_BIN to a release binary built elsewhere)")
    fi
  else
    missing+=("cargo (the Rust toolchain; or set FERRY_BIN)")
  fi
fi
[ -n "$FERRY_BIN" ] && [ ! -x "$FERRY_BIN" ] && missing+=("FERRY_BIN=$FERRY_BIN is not an executable")
if [ ${#missing[@]} -gt 0 ]; then
  {
    echo "# GPU check (benches/gpu_check.sh)"
    echo
    echo "Not run on $(date -u '+%Y-%m-%d %H:%M UTC'): this machine lacks:"
    for item in "${missing[@]}"; do echo "- $item"; done
  } > "$out"
  say "cannot run; missing:"; printf '  - %s\n' "${missing[@]}"
  exit 2
fi
say "ready after $(( $(date +%s) - started )) s"

# 2. A KIND_GPU repository and a running Ferry.
work=$(mktemp -d)
ferry_pid=""
trap '[ -n "$ferry_pid" ] && kill "$ferry_pid" 2>/dev/null && wait "$ferry_pid" 2>/dev/null; rm -rf "$work"' EXIT
"$PYTHON" benches/gpu_check.py prepare "$work/repository" || exit 1
grpc=18801; http=18800; metrics=18802
ONNX_LIB=$("$PYTHON" -c 'import onnxruntime, os, glob; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")), key=len)[-1])')
"$FERRY_BIN" --model-repository "$work/repository" --grpc-port $grpc --http-port $http --metrics-port $metrics \
  --onnxruntime-lib "$ONNX_LIB" > "$work/ferry.log" 2>&1 &
ferry_pid=$!
for _ in $(seq 1 240); do
  curl -sf "http://localhost:$http/v2/health/ready" >/dev/null 2>&1 && break
  kill -0 "$ferry_pid" 2>/dev/null || break
  sleep 0.5
done
if ! curl -sf "http://localhost:$http/v2/health/ready" >/dev/null 2>&1; then
  say "Ferry did not become ready:"; tail -20 "$work/ferry.log"
  { echo "# GPU check (benches/gpu_check.sh)"; echo; echo "FAILED: Ferry did not become ready."; echo;
    echo '```'; tail -40 "$work/ferry.log"; echo '```'; } > "$out"
  exit 1
fi
say "Ferry ready after $(( $(date +%s) - started )) s"

# 3-6. The client-side steps, each reported.
"$PYTHON" benches/gpu_check.py check "$work/repository" $grpc $metrics "$work/ferry.log" "$out"
status=$?
{ echo; echo "Ferry log (first lines):"; echo; echo '```'; head -20 "$work/ferry.log"; echo '```';
  echo; echo "Total time: $(( $(date +%s) - started )) s."; } >> "$out"
say "done in $(( $(date +%s) - started )) s; report in $out"
exit $status

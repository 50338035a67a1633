#!/usr/bin/env bash
# Runs Ferry's fuzz targets with cargo fuzz (libFuzzer), then minimizes their corpora.
#
#   fuzz/run.sh [target...]     every target when none is named
#   fuzz/run.sh seeds           (re)writes the seed inputs under fuzz/corpus/
#
# FUZZ_SECONDS  seconds per target (default 600)
# FUZZ_JOBS     targets fuzzed at the same time (default 1)
# FUZZ_SANITIZER  address (default) or none; a change rebuilds everything
#
# Every target, `services` with ONNX Runtime loaded as a shared library included, runs under
# AddressSanitizer on the stable toolchain pinned by rust-toolchain.toml: RUSTC_BOOTSTRAP=1 lets cargo fuzz
# pass its -Z flags (see docs/fuzzing.md). Reproducers in
# fuzz/regressions/<target>/ are replayed before each run; new crashes land in fuzz/artifacts/<target>/,
# logs in fuzz/logs/<target>.log. The exit status is non-zero when any target found something.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTC_BOOTSTRAP=1
FUZZ_SECONDS=${FUZZ_SECONDS:-600}
FUZZ_JOBS=${FUZZ_JOBS:-1}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-address}
ALL=(model_infer bytes_elements config_pbtxt rest_infer shm_parameters services)
LIBFUZZER_FLAGS=(-rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -print_final_stats=1)

build() {
    cargo fuzz build --sanitizer "$FUZZ_SANITIZER" "$1"
}

if [ "${1:-}" = seeds ]; then
    cargo fuzz build --sanitizer "$FUZZ_SANITIZER" seeds
    fuzz/target/x86_64-unknown-linux-gnu/release/seeds fuzz/corpus
    exit 0
fi

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")
mkdir -p fuzz/logs
for target in "${targets[@]}"; do
    build "$target"
done

# Fuzzes one target, replaying its committed reproducers first, then merges its corpus down to the
# inputs that add coverage. Prints one summary line.
fuzz() {
    local target=$1 log="fuzz/logs/$1.log" status=0
    local corpora=("fuzz/corpus/$target")
    mkdir -p "fuzz/corpus/$target"
    [ -d "fuzz/regressions/$target" ] && corpora+=("fuzz/regressions/$target")
    cargo fuzz run --sanitizer "$FUZZ_SANITIZER" "$target" "${corpora[@]}" -- \
        "${LIBFUZZER_FLAGS[@]}" -max_total_time="$FUZZ_SECONDS" >"$log" 2>&1 || status=$?
    cargo fuzz cmin --sanitizer "$FUZZ_SANITIZER" "$target" "fuzz/corpus/$target" -- \
        "${LIBFUZZER_FLAGS[@]}" >"fuzz/logs/$target.cmin.log" 2>&1 || true
    local last runs speed
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | head -n 1 | grep -o '[0-9]*$' || true)
    speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | head -n 1 | grep -o '[0-9]*$' || true)
    printf '%-15s status %s, %s runs, %s exec/s, corpus %s files (%s bytes), last: %s\n' "$target" \
        "$status" "${runs:-?}" "${speed:-?}" "$(find "fuzz/corpus/$target" -type f | wc -l)" \
        "$(find "fuzz/corpus/$target" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')" "$last"
    return "$status"
}

failed=()
running=0
for target in "${targets[@]}"; do
    if [ "$running" -ge "$FUZZ_JOBS" ]; then
        wait -n || failed+=("a target")
        running=$((running - 1))
    fi
    fuzz "$target" &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
    wait -n || failed+=("a target")
    running=$((running - 1))
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "${#failed[@]} target(s) found something: see fuzz/artifacts/ and fuzz/logs/" >&2
    exit 1
fi

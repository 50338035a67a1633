#!/usr/bin/env bash
# Builds Ferry's image (build.sh), runs it with examples/model_repository mounted read-only at /models, a
# read-only root file system (as deploy/k8s runs it) and its ports published on loopback, and checks it from
# outside with tritonclient (check.py): calls over gRPC and REST, then SIGTERM under load with no accepted
# request failing. Then checks that the container exited 0 after each shutdown phase, and what the image
# promises: ferry is PID 1 as the non-root user, the HEALTHCHECK passes, /bin/sleep exists for deploy/k8s's
# preStop hook.
#
#   deploy/container/test.sh                  # FERRY_BIN and the rest as for build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${IMAGE:-localhost/ferry:latest}
export IMAGE
PODMAN=(podman --runtime /usr/sbin/runc)
# The limits these machines need spelled out (the defaults are refused); ferry lowers its connection cap to fit.
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
NAME=ferry-test-$$
EARLY=ferry-test-early-$$
DRAIN_SECS=3 # check.py's DRAIN_SECS

deploy/container/build.sh

models=$(mktemp -d)
cleanup() {
    "${PODMAN[@]}" rm --force --ignore "$NAME" "$EARLY" >/dev/null 2>&1 || true
    rm -rf "$models" "$models.err"
}
trap cleanup EXIT
cp -r examples/model_repository/. "$models"
chmod -R a+rX "$models"

fail() {
    echo "test: $*" >&2
    "${PODMAN[@]}" logs "$NAME" 2>&1 | tail -n 40 >&2 || true
    exit 1
}

# --health-interval=disable: no systemd timer here; the loop below runs the image's HEALTHCHECK itself.
# --read-only: as deploy/k8s/deployment.yaml runs it (readOnlyRootFilesystem, a writable /tmp).
"${PODMAN[@]}" run -d --name "$NAME" "${LIMITS[@]}" --health-interval=disable --read-only \
    -v "$models:/models:ro" -p 127.0.0.1::8000 -p 127.0.0.1::8001 -p 127.0.0.1::8002 \
    "$IMAGE" --model-repository=/models --shutdown-drain-secs=$DRAIN_SECS --exit-timeout-secs=20 \
    --log-format=json >/dev/null 2>"$models.err" || fail "podman run failed: $(cat "$models.err")"
port() { "${PODMAN[@]}" port "$NAME" "$1/tcp" | head -n 1; }
grpc=$(port 8001)
http=$(port 8000)
metrics=$(port 8002)

# The image's own HEALTHCHECK turns healthy once the models have loaded.
for attempt in $(seq 1 60); do
    if "${PODMAN[@]}" healthcheck run "$NAME" >/dev/null 2>&1; then
        break
    fi
    [[ $attempt == 60 ]] && fail "the HEALTHCHECK did not pass within 60 s"
    [[ $("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$NAME") == true ]] || fail "ferry exited at start"
    sleep 1
done
echo "test: healthy; gRPC $grpc, REST $http, metrics $metrics"

user=$("${PODMAN[@]}" exec "$NAME" id -u)
[[ $user == 10001 ]] || fail "runs as uid $user, not 10001"
pid1=$("${PODMAN[@]}" exec "$NAME" cat /proc/1/cmdline | tr '\0' ' ')
[[ $pid1 == /usr/local/bin/ferry* ]] || fail "PID 1 is '$pid1', not ferry"
"${PODMAN[@]}" exec "$NAME" /bin/sleep 0 || fail "/bin/sleep (the Kubernetes preStop hook) is missing"
"${PODMAN[@]}" exec "$NAME" touch /models/x 2>/dev/null && fail "/models is writable"
scraped=$(curl -sf "http://$metrics/metrics") || fail "GET /metrics on the published metrics port failed"
grep -q '^nv_inference_pending_request_count{' <<<"$scraped" || fail "no queue metrics on the metrics port"
echo "test: uid 10001, ferry is PID 1, /bin/sleep present, /models read-only, metrics served"

.venv/bin/python deploy/container/check.py --grpc "$grpc" --http "$http" --container "$NAME" ||
    fail "check.py failed"

code=$(timeout 60 "${PODMAN[@]}" wait "$NAME") || fail "ferry did not exit within 60 s of SIGTERM"
[[ $code == 0 ]] || fail "ferry exited $code after SIGTERM"
logs=$("${PODMAN[@]}" logs "$NAME" 2>&1)
for phase in "shutdown 1/3" "shutdown 2/3" "shutdown 3/3" "shutdown complete"; do
    grep -q "$phase" <<<"$logs" || fail "no '$phase' line in the log"
done
echo "test: exit 0 after the drain, every shutdown phase logged"

# SIGTERM straight after start, while the models load: PID 1 without a handler would ignore it and keep
# running; ferry exits at once, or drains at once if it was already serving.
"${PODMAN[@]}" run -d --name "$EARLY" "${LIMITS[@]}" --health-interval=disable --read-only \
    -v "$models:/models:ro" "$IMAGE" --model-repository=/models --log-format=json >/dev/null 2>&1 ||
    fail "podman run failed"
"${PODMAN[@]}" kill --signal TERM "$EARLY" >/dev/null
code=$(timeout 20 "${PODMAN[@]}" wait "$EARLY") || fail "ferry ignored SIGTERM at start"
[[ $code == 0 ]] || fail "ferry exited $code on SIGTERM at start"
if "${PODMAN[@]}" logs "$EARLY" 2>&1 | grep -q "signal while the models load"; then
    echo "test: SIGTERM while the models load: exit 0 at once"
else
    echo "test: SIGTERM at start (after the models loaded): exit 0 at once"
fi

#!/usr/bin/env bash
# Builds Ferry's container image with podman from the Containerfile beside this script: the base from
# build-base.sh, then a context holding the host-built `ferry` (debug info stripped) and the onnxruntime
# wheel's libonnxruntime.so from .venv (make setup).
#
#   deploy/container/build.sh                 # localhost/ferry:latest from target/release/ferry
#
# Environment: IMAGE (localhost/ferry:latest), FERRY_BIN (target/release/ferry, built with cargo when
# missing; CI passes the debug binary `make test` already built), and build-base.sh's variables.
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${IMAGE:-localhost/ferry:latest}
FERRY_BIN=${FERRY_BIN:-target/release/ferry}
BASE_IMAGE=${BASE_IMAGE:-localhost/ferry-base:${SUITE:-bookworm}}
export BASE_IMAGE
PODMAN=(podman --runtime /usr/sbin/runc)

if [[ ! -x $FERRY_BIN ]]; then
    if [[ $FERRY_BIN != target/release/ferry ]]; then
        echo "build: FERRY_BIN=$FERRY_BIN is not an executable" >&2
        exit 1
    fi
    cargo build --release -p ferry-server --bin ferry
fi
library=$(.venv/bin/python -c 'import onnxruntime, pathlib
found = sorted(pathlib.Path(onnxruntime.__file__).parent.glob("capi/libonnxruntime.so*"))
print(found[0] if found else "")')
if [[ -z $library ]]; then
    echo "build: no libonnxruntime.so in .venv's onnxruntime package: run make setup" >&2
    exit 1
fi

deploy/container/build-base.sh

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
strip --strip-debug -o "$context/ferry" "$FERRY_BIN"
cp "$library" "$context/libonnxruntime.so"
chmod 0755 "$context/ferry" "$context/libonnxruntime.so"
"${PODMAN[@]}" build --quiet --format docker --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    -f deploy/container/Containerfile -t "$IMAGE" "$context" >/dev/null
size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
echo "build: $IMAGE ($((size / 1024 / 1024)) MiB; ferry from $FERRY_BIN, $(basename "$library"))"

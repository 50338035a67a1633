#!/usr/bin/env bash
# Installs what the client tests of other languages need (tests/tests/clients.rs), at pinned versions:
# protoc's Go plugins and ghz (`go install`, from the Go module proxy) into target/tools/bin, the Go suite's
# modules, and the Node client's packages (`npm ci`, from clients/node/package-lock.json). protoc itself comes
# from Debian's `protobuf-compiler` package (CI installs it; see .ci/run). Run again, it installs only what
# changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
GHZ=github.com/bojand/ghz/cmd/ghz@v0.121.0

tools="$PWD/target/tools/bin"
mkdir -p "$tools"

command -v protoc >/dev/null || echo "clients/setup.sh: protoc is missing: install Debian's protobuf-compiler" >&2

# go install each pinned tool unless the same version is already there (a stamp file per tool).
for package in "$PROTOC_GEN_GO" "$PROTOC_GEN_GO_GRPC" "$GHZ"; do
  name="$(basename "${package%@*}")"
  stamp="$tools/.$name.version"
  if [ -x "$tools/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$package" ]; then
    continue
  fi
  echo "clients/setup.sh: go install $package"
  GOBIN="$tools" go install "$package"
  echo "$package" >"$stamp"
done

# The Go suite's modules, so that `go test` finds them in the module cache.
(cd clients/go && go mod download)

# npm ci unless node_modules already matches the committed lock file.
lock=clients/node/package-lock.json
if ! cmp -s "$lock" clients/node/node_modules/.ferry-lock 2>/dev/null; then
  echo "clients/setup.sh: npm ci in clients/node"
  (cd clients/node && npm ci --no-audit --no-fund --loglevel=error)
  cp "$lock" clients/node/node_modules/.ferry-lock
fi

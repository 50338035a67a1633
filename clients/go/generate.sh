#!/usr/bin/env bash
# Generates the Go stubs of Ferry's inference API from proto/proto/inference/*.proto into clients/go/inference
# (not committed: they are made fresh from the protos before each run of the Go suite). Needs protoc and the
# protoc-gen-go / protoc-gen-go-grpc plugins that clients/setup.sh installs into target/tools/bin.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/target/tools/bin:$PATH"
module=ferry.local/clients/go
out=clients/go/inference
rm -rf "$out"
mkdir -p "$out"
# The protos name no go_package (they mirror Triton's, which name none): map each file to the Go package here.
map=""
for file in inference/grpc_service.proto inference/model_config.proto; do
  map="$map,M$file=$module/inference"
done
protoc -I proto/proto \
  --go_out=clients/go --go_opt="module=$module${map}" \
  --go-grpc_out=clients/go --go-grpc_opt="module=$module${map}" \
  inference/grpc_service.proto inference/model_config.proto

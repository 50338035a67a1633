// Ferry called from Node.js: @grpc/grpc-js with Ferry's .proto files loaded at run time by @grpc/proto-loader,
// and a short interop suite run against a live server: health, metadata, inference in several datatypes and
// an error.
//
// Run (tests/tests/clients.rs does this against a server it starts):
//
//   npm ci && FERRY_GRPC_URL=127.0.0.1:8001 node --test

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const protoRoot = path.join(path.dirname(fileURLToPath(import.meta.url)), "../../proto/proto");
const definition = protoLoader.loadSync("inference/grpc_service.proto", {
  includeDirs: [protoRoot],
  keepCase: true,
  longs: Number,
  defaults: true,
});
const { inference } = grpc.loadPackageDefinition(definition);

let client;
// Each RPC as a promise-returning function, with a deadline.
const call = (method, request) =>
  promisify(client[method].bind(client))(request, { deadline: Date.now() + 30_000 });

before(() => {
  const address = process.env.FERRY_GRPC_URL;
  assert.ok(address, "FERRY_GRPC_URL is not set: start Ferry and set it to host:port of its gRPC endpoint");
  client = new inference.GRPCInferenceService(address, grpc.credentials.createInsecure());
});

after(() => client?.close());

function output(response, name) {
  const index = response.outputs.findIndex((o) => o.name === name);
  assert.notEqual(index, -1, `output ${name} missing from ${JSON.stringify(response.outputs)}`);
  return { tensor: response.outputs[index], raw: response.raw_output_contents[index] };
}

// A raw BYTES tensor: each element a 4-byte little-endian length, then that many bytes.
function readBytes(raw) {
  const elements = [];
  for (let at = 0; at < raw.length; ) {
    const length = raw.readUInt32LE(at);
    assert.ok(at + 4 + length <= raw.length, "BYTES element overruns the tensor");
    elements.push(raw.subarray(at + 4, at + 4 + length).toString());
    at += 4 + length;
  }
  return elements;
}

test("health", async () => {
  assert.equal((await call("ServerLive", {})).live, true);
  assert.equal((await call("ServerReady", {})).ready, true);
  assert.equal((await call("ModelReady", { name: "simple" })).ready, true);
  // Triton answers ModelReady for an unknown model with ready false, not an error
  // (InferenceServer::ModelIsReady in core/src/server.cc).
  assert.equal((await call("ModelReady", { name: "no_such_model" })).ready, false);
});

test("server and model metadata", async () => {
  const server = await call("ServerMetadata", {});
  assert.equal(server.name, "ferry");
  assert.ok(server.extensions.includes("model_repository"), server.extensions.join(","));
  const model = await call("ModelMetadata", { name: "mlp_classifier" });
  assert.equal(model.platform, "onnxruntime_onnx");
  assert.deepEqual(model.versions, ["2", "1"]);
  assert.deepEqual(
    model.inputs.map((t) => [t.name, t.datatype, t.shape]),
    [["features", "FP32", [-1, 32]]],
  );
});

test("INT32 inference, raw and typed", async () => {
  const a = Int32Array.from({ length: 16 }, (_, i) => i);
  const b = Int32Array.from({ length: 16 }, (_, i) => 3 * i - 7);
  const shape = [1, 16];
  const raw = {
    model_name: "simple",
    id: "node-raw",
    inputs: [
      { name: "INPUT0", datatype: "INT32", shape },
      { name: "INPUT1", datatype: "INT32", shape },
    ],
    raw_input_contents: [Buffer.from(a.buffer), Buffer.from(b.buffer)],
  };
  const typed = {
    model_name: "simple",
    id: "node-typed",
    inputs: [
      { name: "INPUT0", datatype: "INT32", shape, contents: { int_contents: [...a] } },
      { name: "INPUT1", datatype: "INT32", shape, contents: { int_contents: [...b] } },
    ],
  };
  for (const request of [raw, typed]) {
    const response = await call("ModelInfer", request);
    assert.equal(response.id, request.id);
    const sum = output(response, "OUTPUT0");
    const difference = output(response, "OUTPUT1");
    assert.equal(sum.tensor.datatype, "INT32");
    assert.deepEqual(sum.tensor.shape, shape);
    for (let i = 0; i < 16; i++) {
      assert.equal(sum.raw.readInt32LE(4 * i), a[i] + b[i], `${request.id} OUTPUT0[${i}]`);
      assert.equal(difference.raw.readInt32LE(4 * i), a[i] - b[i], `${request.id} OUTPUT1[${i}]`);
    }
  }
});

test("BYTES inference", async () => {
  // simple_string (Triton's example twin): decimal strings in, their sums and differences out as strings.
  const a = Array.from({ length: 16 }, (_, i) => Buffer.from(String(i)));
  const b = Array.from({ length: 16 }, () => Buffer.from("2"));
  const response = await call("ModelInfer", {
    model_name: "simple_string",
    inputs: [
      { name: "INPUT0", datatype: "BYTES", shape: [1, 16], contents: { bytes_contents: a } },
      { name: "INPUT1", datatype: "BYTES", shape: [1, 16], contents: { bytes_contents: b } },
    ],
  });
  const sum = output(response, "OUTPUT0");
  assert.equal(sum.tensor.datatype, "BYTES");
  assert.deepEqual(readBytes(sum.raw), a.map((_, i) => String(i + 2)));
  assert.deepEqual(readBytes(output(response, "OUTPUT1").raw), a.map((_, i) => String(i - 2)));
});

test("FP32 inference with an INT64 output", async () => {
  const rows = 3;
  const features = Float32Array.from({ length: rows * 32 }, (_, i) => Math.sin(i));
  const response = await call("ModelInfer", {
    model_name: "mlp_classifier",
    inputs: [{ name: "features", datatype: "FP32", shape: [rows, 32] }],
    raw_input_contents: [Buffer.from(features.buffer)],
  });
  const probabilities = output(response, "probabilities");
  const label = output(response, "label");
  assert.deepEqual([probabilities.tensor.datatype, probabilities.tensor.shape], ["FP32", [rows, 10]]);
  assert.deepEqual([label.tensor.datatype, label.tensor.shape], ["INT64", [rows, 1]]);
  // A softmax row sums to 1 and the label is its arg max.
  for (let row = 0; row < rows; row++) {
    const p = Array.from({ length: 10 }, (_, k) => probabilities.raw.readFloatLE(4 * (10 * row + k)));
    assert.ok(Math.abs(p.reduce((x, y) => x + y) - 1) < 1e-4, `row ${row} sums to ${p}`);
    assert.equal(label.raw.readBigInt64LE(8 * row), BigInt(p.indexOf(Math.max(...p))), `row ${row} label`);
  }
});

test("errors carry Triton's status", async () => {
  // Triton: an unknown model is NOT_FOUND, a datatype the model does not take INVALID_ARGUMENT.
  await assert.rejects(call("ModelInfer", { model_name: "no_such_model" }), (error) => {
    assert.equal(error.code, grpc.status.NOT_FOUND);
    assert.match(error.details, /no_such_model/);
    return true;
  });
  const zeros = Buffer.alloc(64);
  const wrongType = {
    model_name: "simple",
    inputs: [
      { name: "INPUT0", datatype: "FP32", shape: [1, 16] },
      { name: "INPUT1", datatype: "INT32", shape: [1, 16] },
    ],
    raw_input_contents: [zeros, zeros],
  };
  await assert.rejects(call("ModelInfer", wrongType), (error) => {
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
    assert.match(error.details, /INPUT0/);
    return true;
  });
});

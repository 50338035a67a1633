// Package interop is a Go client of Ferry generated from its .proto files (see generate.sh), and a short
// interop suite run against a live server: health, metadata, inference in several datatypes and an error.
//
// Run (tests/tests/clients.rs does this against a server it starts):
//
//	./generate.sh && FERRY_GRPC_URL=127.0.0.1:8001 go test -count=1 ./...
package interop

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "ferry.local/clients/go/inference"
)

// client dials the server named by FERRY_GRPC_URL; the test fails (never skips) when it is not set.
func client(t *testing.T) (pb.GRPCInferenceServiceClient, context.Context) {
	t.Helper()
	address := os.Getenv("FERRY_GRPC_URL")
	if address == "" {
		t.Fatal("FERRY_GRPC_URL is not set: start Ferry and set it to host:port of its gRPC endpoint")
	}
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", address, err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return pb.NewGRPCInferenceServiceClient(conn), ctx
}

func TestHealth(t *testing.T) {
	c, ctx := client(t)
	live, err := c.ServerLive(ctx, &pb.ServerLiveRequest{})
	if err != nil || !live.Live {
		t.Fatalf("ServerLive: %v, %v", live, err)
	}
	ready, err := c.ServerReady(ctx, &pb.ServerReadyRequest{})
	if err != nil || !ready.Ready {
		t.Fatalf("ServerReady: %v, %v", ready, err)
	}
	// Triton answers ModelReady for an unknown model with ready false, not an error
	// (InferenceServer::ModelIsReady in core/src/server.cc).
	for model, want := range map[string]bool{"simple": true, "no_such_model": false} {
		got, err := c.ModelReady(ctx, &pb.ModelReadyRequest{Name: model})
		if err != nil || got.Ready != want {
			t.Errorf("ModelReady(%s) = %v, %v; want ready %v", model, got, err, want)
		}
	}
}

func TestMetadata(t *testing.T) {
	c, ctx := client(t)
	server, err := c.ServerMetadata(ctx, &pb.ServerMetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if server.Name != "ferry" || !slices.Contains(server.Extensions, "model_repository") {
		t.Errorf("ServerMetadata = %v", server)
	}
	model, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "mlp_classifier"})
	if err != nil {
		t.Fatal(err)
	}
	if model.Platform != "onnxruntime_onnx" || !slices.Equal(model.Versions, []string{"2", "1"}) {
		t.Errorf("ModelMetadata(mlp_classifier) = %v", model)
	}
	if len(model.Inputs) != 1 || model.Inputs[0].Name != "features" || model.Inputs[0].Datatype != "FP32" ||
		!slices.Equal(model.Inputs[0].Shape, []int64{-1, 32}) {
		t.Errorf("mlp_classifier inputs = %v", model.Inputs)
	}
}

func int32s(values []int32) []byte {
	raw := make([]byte, 0, 4*len(values))
	for _, v := range values {
		raw = binary.LittleEndian.AppendUint32(raw, uint32(v))
	}
	return raw
}

// output finds `name` among the answer's outputs and returns its tensor and raw bytes.
func output(t *testing.T, response *pb.ModelInferResponse, name string) (*pb.ModelInferResponse_InferOutputTensor, []byte) {
	t.Helper()
	for i, out := range response.Outputs {
		if out.Name == name {
			if i >= len(response.RawOutputContents) {
				t.Fatalf("output %s has no raw contents", name)
			}
			return out, response.RawOutputContents[i]
		}
	}
	t.Fatalf("output %s missing from %v", name, response.Outputs)
	return nil, nil
}

func TestInferInt32RawAndTyped(t *testing.T) {
	c, ctx := client(t)
	a := make([]int32, 16)
	b := make([]int32, 16)
	for i := range a {
		a[i], b[i] = int32(i), int32(3*i-7)
	}
	shape := []int64{1, 16}
	raw := &pb.ModelInferRequest{
		ModelName: "simple",
		Id:        "go-raw",
		Inputs: []*pb.ModelInferRequest_InferInputTensor{
			{Name: "INPUT0", Datatype: "INT32", Shape: shape},
			{Name: "INPUT1", Datatype: "INT32", Shape: shape},
		},
		RawInputContents: [][]byte{int32s(a), int32s(b)},
	}
	typed := &pb.ModelInferRequest{
		ModelName: "simple",
		Id:        "go-typed",
		Inputs: []*pb.ModelInferRequest_InferInputTensor{
			{Name: "INPUT0", Datatype: "INT32", Shape: shape, Contents: &pb.InferTensorContents{IntContents: a}},
			{Name: "INPUT1", Datatype: "INT32", Shape: shape, Contents: &pb.InferTensorContents{IntContents: b}},
		},
	}
	for _, request := range []*pb.ModelInferRequest{raw, typed} {
		response, err := c.ModelInfer(ctx, request)
		if err != nil {
			t.Fatalf("%s: %v", request.Id, err)
		}
		if response.Id != request.Id || response.ModelName != "simple" {
			t.Errorf("%s: answer id %q model %q", request.Id, response.Id, response.ModelName)
		}
		sum, sumRaw := output(t, response, "OUTPUT0")
		_, difference := output(t, response, "OUTPUT1")
		if sum.Datatype != "INT32" || !slices.Equal(sum.Shape, shape) {
			t.Errorf("%s: OUTPUT0 is %s %v", request.Id, sum.Datatype, sum.Shape)
		}
		for i := range a {
			if got := int32(binary.LittleEndian.Uint32(sumRaw[4*i:])); got != a[i]+b[i] {
				t.Errorf("%s: OUTPUT0[%d] = %d, want %d", request.Id, i, got, a[i]+b[i])
			}
			if got := int32(binary.LittleEndian.Uint32(difference[4*i:])); got != a[i]-b[i] {
				t.Errorf("%s: OUTPUT1[%d] = %d, want %d", request.Id, i, got, a[i]-b[i])
			}
		}
	}
}

// strings reads a raw BYTES tensor: each element a 4-byte little-endian length, then that many bytes.
func readBytes(t *testing.T, raw []byte) []string {
	t.Helper()
	var elements []string
	for len(raw) > 0 {
		if len(raw) < 4 {
			t.Fatalf("BYTES tensor ends inside a length prefix")
		}
		n := binary.LittleEndian.Uint32(raw)
		if uint64(len(raw)-4) < uint64(n) {
			t.Fatalf("BYTES element of %d bytes overruns the tensor", n)
		}
		elements = append(elements, string(raw[4:4+n]))
		raw = raw[4+n:]
	}
	return elements
}

func TestInferBytes(t *testing.T) {
	c, ctx := client(t)
	// simple_string (Triton's example twin): decimal strings in, their sums and differences out as strings.
	var a, b [][]byte
	for i := 0; i < 16; i++ {
		a = append(a, []byte(strconv.Itoa(i)))
		b = append(b, []byte("2"))
	}
	response, err := c.ModelInfer(ctx, &pb.ModelInferRequest{
		ModelName: "simple_string",
		Inputs: []*pb.ModelInferRequest_InferInputTensor{
			{Name: "INPUT0", Datatype: "BYTES", Shape: []int64{1, 16}, Contents: &pb.InferTensorContents{BytesContents: a}},
			{Name: "INPUT1", Datatype: "BYTES", Shape: []int64{1, 16}, Contents: &pb.InferTensorContents{BytesContents: b}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	sum, raw := output(t, response, "OUTPUT0")
	if sum.Datatype != "BYTES" {
		t.Errorf("OUTPUT0 is %s", sum.Datatype)
	}
	got := readBytes(t, raw)
	_, rawDifference := output(t, response, "OUTPUT1")
	difference := readBytes(t, rawDifference)
	if len(got) != 16 || len(difference) != 16 {
		t.Fatalf("OUTPUT0 %q, OUTPUT1 %q: want 16 elements each", got, difference)
	}
	for i := range got {
		if got[i] != strconv.Itoa(i+2) || difference[i] != strconv.Itoa(i-2) {
			t.Errorf("element %d: %q, %q", i, got[i], difference[i])
		}
	}
}

func TestInferFP32AndInt64(t *testing.T) {
	c, ctx := client(t)
	const rows = 3
	features := make([]byte, 0, rows*32*4)
	for i := 0; i < rows*32; i++ {
		features = binary.LittleEndian.AppendUint32(features, math.Float32bits(float32(math.Sin(float64(i)))))
	}
	response, err := c.ModelInfer(ctx, &pb.ModelInferRequest{
		ModelName:        "mlp_classifier",
		Inputs:           []*pb.ModelInferRequest_InferInputTensor{{Name: "features", Datatype: "FP32", Shape: []int64{rows, 32}}},
		RawInputContents: [][]byte{features},
	})
	if err != nil {
		t.Fatal(err)
	}
	probabilities, rawProbabilities := output(t, response, "probabilities")
	label, rawLabel := output(t, response, "label")
	if probabilities.Datatype != "FP32" || !slices.Equal(probabilities.Shape, []int64{rows, 10}) {
		t.Fatalf("probabilities is %s %v", probabilities.Datatype, probabilities.Shape)
	}
	if label.Datatype != "INT64" || !slices.Equal(label.Shape, []int64{rows, 1}) {
		t.Fatalf("label is %s %v", label.Datatype, label.Shape)
	}
	// A softmax row sums to 1 and the label is its arg max.
	for row := 0; row < rows; row++ {
		var total float64
		best, bestAt := float32(-1), int64(-1)
		for k := 0; k < 10; k++ {
			p := math.Float32frombits(binary.LittleEndian.Uint32(rawProbabilities[4*(10*row+k):]))
			total += float64(p)
			if p > best {
				best, bestAt = p, int64(k)
			}
		}
		if math.Abs(total-1) > 1e-4 {
			t.Errorf("row %d: probabilities sum to %f", row, total)
		}
		if got := int64(binary.LittleEndian.Uint64(rawLabel[8*row:])); got != bestAt {
			t.Errorf("row %d: label %d, arg max %d", row, got, bestAt)
		}
	}
}

func TestErrorsCarryTritonsStatus(t *testing.T) {
	c, ctx := client(t)
	input := func(datatype string) *pb.ModelInferRequest_InferInputTensor {
		return &pb.ModelInferRequest_InferInputTensor{Name: "INPUT0", Datatype: datatype, Shape: []int64{1, 16}}
	}
	zeros := make([]byte, 64)
	cases := []struct {
		request *pb.ModelInferRequest
		code    codes.Code
		needle  string
	}{
		// Triton: an unknown model is NOT_FOUND, a datatype the model does not take INVALID_ARGUMENT.
		{&pb.ModelInferRequest{ModelName: "no_such_model"}, codes.NotFound, "no_such_model"},
		{&pb.ModelInferRequest{
			ModelName:        "simple",
			Inputs:           []*pb.ModelInferRequest_InferInputTensor{input("FP32"), {Name: "INPUT1", Datatype: "INT32", Shape: []int64{1, 16}}},
			RawInputContents: [][]byte{zeros, zeros},
		}, codes.InvalidArgument, "INPUT0"},
	}
	for _, tc := range cases {
		_, err := c.ModelInfer(ctx, tc.request)
		got := status.Convert(err)
		if got.Code() != tc.code || !strings.Contains(got.Message(), tc.needle) {
			t.Errorf("ModelInfer(%s): %v %q; want %v naming %q", tc.request.ModelName, got.Code(), got.Message(), tc.code, tc.needle)
		}
	}
}

//! Cost of turning a wire request into a validated request: constant in the tensor size, because raw
//! contents are sliced, not copied. Run with `cargo bench -p ferry-benches --bench request_parsing`.

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented public function"
)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferry_benches::{fp32_request, fp32_spec};
use ferry_server::request::InferRequest;

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_infer_request");
    for (rows, width) in [(1, 16), (64, 16), (64, 16_384)] {
        let spec = fp32_spec(width, 64);
        let request = fp32_request(rows, width);
        group.throughput(Throughput::Bytes((rows * width * 4) as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{rows}x{width}")),
            &request,
            |b, request| {
                // Cloning the wire request clones `Bytes` handles, not tensor data.
                b.iter(|| InferRequest::parse(request.clone(), &spec).map(|parsed| parsed.batch_size));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);

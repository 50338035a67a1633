//! The Rust client SDK against the real server: typed inputs in, typed outputs out.

use ferry_client::{Client, InferInput, InferRequest, half::bf16, ndarray};
use ferry_tests::TestServer;

#[tokio::test]
async fn the_typed_client_runs_every_example_model() {
    let server = TestServer::with_all_models().await.expect("server");
    let client = Client::connect(server.url()).await.expect("connect");
    assert!(client.server_live().await.expect("live"));
    assert!(client.server_ready().await.expect("ready"));

    let a: Vec<i32> = (0..16).collect();
    let b = vec![5i32; 16];
    let request = InferRequest::new("simple")
        .with_id("typed-1")
        .with_input(InferInput::new("INPUT0", [1, 16]).with_data(&a))
        .with_input(InferInput::new("INPUT1", [1, 16]).with_data(&b));
    let result = client.infer(request).await.expect("simple");
    assert_eq!(result.id(), "typed-1");
    let sum: Vec<i32> = result.output_as("OUTPUT0").expect("sum");
    assert_eq!(sum, (5..21).collect::<Vec<i32>>());

    let features = ndarray::Array2::<f32>::from_shape_fn((3, 32), |(r, c)| (r * 32 + c) as f32 / 96.0);
    let request = InferRequest::new("mlp_classifier")
        .with_version("1")
        .with_input(InferInput::from_array("features", &features));
    let result = client.infer(request).await.expect("mlp");
    assert_eq!(result.model_version(), "1");
    let probabilities = result
        .output_array::<f32>("probabilities")
        .expect("probabilities");
    assert_eq!(probabilities.shape(), [3, 10]);
    for row in probabilities.rows() {
        assert!((row.sum() - 1.0).abs() < 1e-4, "softmax rows sum to 1");
    }
    let labels: Vec<i64> = result.output_as("label").expect("label");
    for (row, label) in probabilities.rows().into_iter().zip(&labels) {
        let best = row
            .iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .map(|(i, _)| i as i64);
        assert_eq!(best, Some(*label));
    }

    let values = [bf16::from_f32(-1.5), bf16::from_f32(0.25), bf16::from_f32(3.0e38)];
    let request =
        InferRequest::new("identity_bf16").with_input(InferInput::new("IN_BF16", [3]).with_data(&values));
    let echoed: Vec<bf16> = client
        .infer(request)
        .await
        .expect("bf16")
        .output_as("OUT_BF16")
        .expect("out");
    assert_eq!(echoed, values);
    server.stop().await;
}

#[tokio::test]
async fn the_typed_client_surfaces_statuses() {
    let server = TestServer::with_all_models().await.expect("server");
    let client = Client::connect(server.url()).await.expect("connect");
    let error = client
        .infer(InferRequest::new("nope").with_input(InferInput::new("x", [1]).with_data(&[1.0f32])))
        .await
        .expect_err("unknown model");
    assert_eq!(error.status().map(|s| s.code()), Some(tonic::Code::NotFound));
    let index = client.repository_index().await.expect("index");
    assert!(
        index
            .iter()
            .any(|m| m.name == "linear_auto" && m.state == "READY")
    );
    server.stop().await;
}

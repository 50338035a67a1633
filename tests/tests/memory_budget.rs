//! The memory budget (`--model-memory-budget`) counts the sessions that a version's later instances open
//! after its load, end to end: a real server in explicit mode with `--load-on-demand`, real ONNX Runtime,
//! requests over gRPC. Ferry's own (Triton has no memory budget and opens every session at load).
//!
//! A test binary of its own: each version's memory is measured as the growth of the process's resident
//! memory, which other tests' servers in the same process would add to.

use std::{path::Path, time::Duration};

use ferry_proto::inference::ModelInferRequest;
use ferry_server::repository::{ControlMode, RepositoryOptions};
use ferry_tests::{
    TestServer, example_repository, matmul_request, repo_root, simple_request, write_matmul_model,
};

const BUDGET: u64 = 128 * 1024 * 1024;

/// `wide`'s size: Y = X·W·W with W of 1024 by 1024 (4 MiB of weights) and X of 256 rows, tens of
/// milliseconds a request.
const N: usize = 1024;
const ROWS: usize = 256;

/// Writes a copy of Triton's `simple` named `name`, its file padded with `padding` bytes of weights that no
/// node uses (ONNX Runtime drops them at load, so the model counts its file's size), pinned if asked.
fn write_padded_simple(repository: &Path, name: &str, padding: u64, pinned: bool) {
    let simple = example_repository().join("simple");
    let folder = repository.join(name);
    std::fs::create_dir_all(folder.join("1")).expect("version folder");
    let script = "import sys, numpy as np, onnx\n\
        from onnx import numpy_helper\n\
        m = onnx.load(sys.argv[1])\n\
        m.graph.initializer.append(numpy_helper.from_array(np.zeros(int(sys.argv[3]) // 4, np.float32), 'PADDING'))\n\
        onnx.save(m, sys.argv[2])\n";
    let status = std::process::Command::new(repo_root().join(".venv/bin/python"))
        .args(["-c", script])
        .arg(simple.join("1/model.onnx"))
        .arg(folder.join("1/model.onnx"))
        .arg(padding.to_string())
        .status()
        .expect("python starts");
    assert!(status.success(), "writing {name} failed");
    let config = std::fs::read_to_string(simple.join("config.pbtxt")).expect("simple's config");
    let mut config = config.replace("name: \"simple\"", &format!("name: \"{name}\""));
    if pinned {
        config.push_str("parameters { key: \"ferry.pinned\" value { string_value: \"true\" } }\n");
    }
    std::fs::write(folder.join("config.pbtxt"), config).expect("config");
}

fn file_bytes(repository: &Path, name: &str) -> u64 {
    std::fs::metadata(repository.join(name).join("1/model.onnx"))
        .expect("model file")
        .len()
}

fn wide_request() -> ModelInferRequest {
    matmul_request("wide", N, ROWS)
}

/// `wide` (two CPU instances, the second opening its session when concurrent requests first need it) and
/// `lru` load on demand; concurrent requests to `wide` then open its second instance, whose session adds
/// to `wide`'s memory. `next` is sized so that the models fit the budget with room to spare (half of
/// `wide`'s file) as they were before that growth, and do not after it: its load on demand evicts `lru`,
/// the least recently used, or, when `lru` is pinned, fails with RESOURCE_EXHAUSTED naming the budget.
/// Counted only at load, the growth would go unseen and `next` would load beside `lru`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_opened_after_load_counts_against_the_budget_of_the_next_load() {
    for lru_pinned in [false, true] {
        let case = format!("lru pinned: {lru_pinned}");
        let repository = tempfile::tempdir().expect("temp dir");
        let repo = repository.path();
        write_matmul_model(repo, "wide", N, ROWS);
        let options = RepositoryOptions {
            control_mode: ControlMode::Explicit,
            load_on_demand: true,
            load_on_demand_timeout: Duration::from_secs(60),
            memory_budget: Some(BUDGET),
            strict_readiness: false,
            ..RepositoryOptions::new(vec![repo.to_owned()])
        };
        let server = TestServer::start_with(options, ferry_server::MAX_MESSAGE_BYTES)
            .await
            .expect("server");
        let registry = server.registry();
        let client = server.raw_client().await.expect("client");
        client
            .clone()
            .model_infer(wide_request())
            .await
            .expect("wide loads on its first request");
        // Held to the end, so that `wide` itself is never the one evicted.
        let wide = registry.resolve("wide", "1").expect("wide serves");
        assert_eq!(wide.opened_instances(), 1, "{case}: one session at load");
        let wide_at_load = wide.memory_bytes();
        let wide_file = file_bytes(repo, "wide");

        // `lru` counts at least its file, more than `wide`'s second instance can add.
        write_padded_simple(repo, "lru", wide_at_load, lru_pinned);
        client
            .clone()
            .model_infer(simple_request("lru", 2, 2))
            .await
            .expect("lru loads on its first request");
        let before_growth = registry.model_memory_bytes();

        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let mut client = client.clone();
                tokio::spawn(async move { client.model_infer(wide_request()).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect("answered");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while wide.opened_instances() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "{case}: the second instance never opened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after_growth = registry.model_memory_bytes();
        assert!(
            after_growth >= before_growth + wide_file,
            "{case}: wide's second session counts: {before_growth} bytes before, {after_growth} after"
        );

        let target = BUDGET
            .checked_sub(before_growth + wide_file / 2)
            .expect("the first two models leave room in the budget");
        let base = {
            write_padded_simple(repo, "next", 0, false);
            file_bytes(repo, "next")
        };
        write_padded_simple(repo, "next", target.saturating_sub(base + 64), false);
        let next_file = file_bytes(repo, "next");
        assert!(
            before_growth + next_file <= BUDGET - wide_file / 4 && after_growth + next_file > BUDGET,
            "{case}: next ({next_file} bytes) fits beside {before_growth} bytes, not beside {after_growth}"
        );
        let answer = client.clone().model_infer(simple_request("next", 2, 2)).await;
        let lru_ready = registry.resolve("lru", "1").is_ok();
        if lru_pinned {
            let refused = answer.expect_err("no room, and nothing to evict");
            assert_eq!(
                refused.code(),
                tonic::Code::ResourceExhausted,
                "{case}: {refused:?}"
            );
            assert!(
                refused.message().contains("--model-memory-budget")
                    && refused.message().contains(&BUDGET.to_string()),
                "{case}: {refused:?}"
            );
            assert!(lru_ready, "{case}: a pinned model stays");
        } else {
            answer.expect("next loads once lru is evicted");
            assert!(!lru_ready, "{case}: the least recently used model was evicted");
            assert!(registry.resolve("next", "1").is_ok(), "{case}");
        }
        drop((wide, client));
        server.stop().await;
    }
}

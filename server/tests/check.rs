//! `ferry check`, the real binary on real repositories with real ONNX Runtime: what a deployment pipeline
//! runs before it ships a model. Each test copies the models it needs into a repository of its own, adds
//! or breaks what it checks, and reads the exit status, the one line per failure, or the JSON report.
//!
//! The repository layout is Triton's; a `tests/` folder in a model folder is not a version to Triton
//! either (`VersionsToLoad` in core's `model_repository_manager.cc` ignores sub-folders whose names are not
//! integers), so the same repository still serves on Triton.

use std::{
    path::Path,
    process::{Command, Output},
};

#[path = "support/bundled.rs"]
mod bundled;

use bundled::{repo_root, repository};

/// `ferry check` with `args`, run from the repository root so that ONNX Runtime is found in `.venv` as
/// the server finds it.
fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("check")
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("ferry runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// The line of `text` (1-based) that holds `needle` after the line holding `after`.
fn line_of(text: &str, after: &str, needle: &str) -> usize {
    let start = text.lines().position(|l| l.contains(after)).expect("after");
    start
        + 1
        + text
            .lines()
            .skip(start)
            .position(|l| l.contains(needle))
            .expect("needle")
}

/// `simple`'s sample with OUTPUT0's fourth element made wrong.
fn wrong_simple_sample() -> String {
    let good =
        std::fs::read_to_string(repo_root().join("examples/model_repository/simple/tests/add_sub.json"))
            .expect("the bundled sample");
    let wrong = good.replacen("\"data\": [1, 2, 3, 4, 5,", "\"data\": [1, 2, 3, 99, 5,", 1);
    assert_ne!(good, wrong, "the sample changed");
    wrong
}

#[test]
fn the_bundled_examples_pass_with_their_samples() {
    let output = check(&["examples/model_repository"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert_eq!(
        stdout(&output),
        "ferry check: 3 models, 4 versions, 2 sample runs: passed\n",
        "no failure lines, one summary"
    );
}

#[test]
fn a_malformed_config_fails_with_its_file_and_line() {
    let repo = repository(&["simple", "bad_config"]);
    let output = check(&[repo.path().to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    let config = repo.path().join("bad_config/config.pbtxt");
    let expected = format!(
        "{}:3: field 'max_batch_sise' not found for message 'inference.ModelConfig'",
        config.display()
    );
    assert_eq!(text.lines().next(), Some(expected.as_str()), "{text}");
    assert!(text.ends_with(": 1 failure\n"), "simple passes: {text}");
}

#[test]
fn a_wrong_expected_output_names_the_output_the_element_and_both_values() {
    let repo = repository(&["simple"]);
    let sample = repo.path().join("simple/tests/add_sub.json");
    let wrong = wrong_simple_sample();
    write(&sample, &wrong);
    let output = check(&[repo.path().to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1));
    let line = line_of(&wrong, "\"outputs\"", "\"OUTPUT0\"");
    let expected = format!(
        "{}:{line}: version 1: output 'OUTPUT0' [0, 3]: expected 99, got 4 (1 of 16 elements differ)",
        sample.display()
    );
    assert_eq!(stdout(&output).lines().next(), Some(expected.as_str()));
}

/// y = x + 1 in FP32: a sample 0.004 off passes with an absolute tolerance of 0.005 and fails with 0.003.
#[test]
fn floats_pass_within_the_tolerance_and_fail_outside_it() {
    let repo = repository(&["add_one_batched"]);
    let sample = |absolute: f64| {
        format!(
            r#"{{
  "inputs": [ {{ "name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0.5, 1.5, 2.5, 3.5] }} ],
  "outputs": [ {{ "name": "y", "datatype": "FP32", "shape": [1, 4], "data": [1.504, 2.504, 3.504, 4.504] }} ],
  "tolerance": {{ "absolute": {absolute}, "relative": 0 }}
}}"#
        )
    };
    let path = repo.path().join("add_one_batched/tests/near.json");
    write(&path, &sample(0.005));
    let output = check(&[repo.path().to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));

    write(&path, &sample(0.003));
    let output = check(&[repo.path().to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1));
    let expected = format!(
        "{}:3: version 1: output 'y' [0, 0]: expected 1.504, got 1.5 (4 of 4 elements differ; tolerance: \
         absolute 0.003, relative 0)",
        path.display()
    );
    assert_eq!(stdout(&output).lines().next(), Some(expected.as_str()));
}

#[test]
fn json_reports_every_model_version_and_sample() {
    let repo = repository(&["simple", "bad_config", "mlp_classifier"]);
    write(
        &repo.path().join("simple/tests/wrong.json"),
        &wrong_simple_sample(),
    );
    let output = check(&[repo.path().to_str().expect("utf-8"), "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(report["status"], "failed");
    assert_eq!(report["failure_count"], 2);
    let models = report["models"].as_array().expect("models");
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["bad_config", "mlp_classifier", "simple"]);

    let bad = &models[0];
    assert_eq!(bad["status"], "failed");
    assert_eq!(
        bad["versions"],
        serde_json::json!([]),
        "no version loads without a config"
    );
    let failure = &bad["failures"][0];
    assert_eq!(
        failure["file"],
        repo.path().join("bad_config/config.pbtxt").display().to_string()
    );
    assert_eq!(failure["line"], 3);
    assert!(
        failure["message"]
            .as_str()
            .expect("message")
            .contains("max_batch_sise")
    );

    let mlp = &models[1];
    assert_eq!(mlp["status"], "passed");
    let versions: Vec<(u64, usize)> = mlp["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().expect("number"),
                v["samples"].as_array().expect("samples").len(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [(1, 0), (2, 1)],
        "the sample names version 2 and runs only there"
    );

    let simple = &models[2];
    assert_eq!(simple["status"], "failed");
    let samples = simple["versions"][0]["samples"].as_array().expect("samples");
    let outcome: Vec<(&str, &str)> = samples
        .iter()
        .map(|s| {
            let file = s["file"].as_str().expect("file");
            (
                file.rsplit('/').next().expect("name"),
                s["status"].as_str().expect("status"),
            )
        })
        .collect();
    assert_eq!(outcome, [("add_sub.json", "passed"), ("wrong.json", "failed")]);
    let failure = &samples[1]["failures"][0];
    assert!(failure["line"].as_u64().is_some_and(|line| line > 1));
    assert!(
        failure["message"]
            .as_str()
            .expect("message")
            .contains("expected 99, got 4")
    );
}

#[test]
fn model_limits_the_check_to_the_named_models() {
    let repo = repository(&["simple", "bad_config"]);
    let root = repo.path().to_str().expect("utf-8");
    let output = check(&[root, "--model", "simple", "--json"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "bad_config is not checked: {}",
        stdout(&output)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["models"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["models"][0]["name"], "simple");

    let output = check(&[root, "--model", "bad_config"]);
    assert_eq!(output.status.code(), Some(1));

    let output = check(&[root, "--model", "missing"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("no model folder named 'missing' in the model repositories"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn sample_mistakes_are_failures_naming_the_file() {
    let repo = repository(&["mlp_classifier"]);
    let tests = repo.path().join("mlp_classifier/tests");
    write(
        &tests.join("broken.json"),
        "{\n  \"inputs\": [\n    {\"name\": \"features\",,}\n  ]\n}\n",
    );
    let unselected = std::fs::read_to_string(tests.join("version_2.json"))
        .expect("bundled sample")
        .replace("\"version\": 2", "\"version\": 3");
    write(&tests.join("version_3.json"), &unselected);
    write(
        &tests.join("wrong_input.json"),
        r#"{ "version": 1, "inputs": [ { "name": "nope", "datatype": "FP32", "shape": [1, 1], "data": [1] } ], "outputs": [] }"#,
    );
    let output = check(&[repo.path().to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "three failures and the summary: {text}");
    assert!(
        lines[0].starts_with(&format!(
            "{}:3: not a valid sample file: ",
            tests.join("broken.json").display()
        )),
        "{text}"
    );
    assert_eq!(
        lines[1],
        format!(
            "{}:3: version 3 is not one the version policy selects (selected: 1, 2)",
            tests.join("version_3.json").display()
        )
    );
    assert!(
        lines[2].starts_with(&format!(
            "{}: version 1: the request failed: ",
            tests.join("wrong_input.json").display()
        )) && lines[2].contains("nope"),
        "the server's own message for the request: {text}"
    );
}

#[test]
fn a_failing_warm_up_fails_the_version() {
    let repo = repository(&["simple"]);
    let config = repo.path().join("simple/config.pbtxt");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(
        "model_warmup [ { name: \"wrong_type\" batch_size: 1 inputs { key: \"INPUT0\" value { data_type: \
         TYPE_FP32 dims: [ 16 ] zero_data: true } } inputs { key: \"INPUT1\" value { data_type: TYPE_INT32 \
         dims: [ 16 ] zero_data: true } } } ]\n",
    );
    write(&config, &text);
    let output = check(&[repo.path().to_str().expect("utf-8"), "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let version = &report["models"][0]["versions"][0];
    assert_eq!(version["status"], "failed");
    assert_eq!(
        version["samples"],
        serde_json::json!([]),
        "samples do not run on a version that failed"
    );
    let message = version["failures"][0]["message"].as_str().expect("message");
    assert!(message.contains("model_warmup 'wrong_type'"), "{message}");
}

#[test]
fn a_check_that_cannot_run_exits_2() {
    let output = check(&["/nonexistent/models"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("ferry check: cannot read model repository /nonexistent/models"),
        "{stderr}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["check", "examples/model_repository", "--json"])
        .args(["--onnxruntime-lib", "/nonexistent/libonnxruntime.so"])
        .current_dir(repo_root())
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .expect("ferry runs");
    assert_eq!(output.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["status"], "error");
    assert!(
        report["error"]
            .as_str()
            .expect("error")
            .contains("/nonexistent/libonnxruntime.so"),
        "{report}"
    );

    let output = check(&[]);
    assert_eq!(output.status.code(), Some(2), "a repository is required");
}

/// `check` is recognised only as the first argument; every server command line parses as before.
#[test]
fn the_subcommand_leaves_the_server_flags_alone() {
    let output = check(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = stdout(&output);
    for flag in [
        "<REPOSITORY>",
        "--model",
        "--json",
        "--onnxruntime-lib",
        "--max-model-threads",
    ] {
        assert!(help.contains(flag), "ferry check --help lacks {flag}: {help}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--help")
        .output()
        .expect("ferry runs");
    let help = stdout(&output);
    assert!(
        help.contains("--model-repository") && help.contains("ferry check --help"),
        "{help}"
    );
    // A server command line that mentions `check` later is still the server's: here a missing repository.
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "--model-repository",
            "check",
            "--grpc-port",
            "0",
            "--http-port",
            "0",
        ])
        .args(["--metrics-port", "0"])
        .current_dir(repo_root())
        .output()
        .expect("ferry runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read model repository check"));
}

/// A report that cannot be written (a full disk, a closed pipe) used to panic in `println!`; now the check
/// says so and exits 2, so that a truncated report never passes for a clean check.
#[test]
fn a_report_that_cannot_be_written_exits_2_without_a_panic() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["check", "examples/model_repository", "--model", "simple"])
        .current_dir(repo_root())
        .stdout(full)
        .output()
        .expect("ferry runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "ferry check: cannot write the report: No space left on device (os error 28)\n"
    );
}

/// A model that logs payloads (`ferry.payload_log.*`) used to fail the check for want of the server's
/// `--payload-log-dir`, which the check has no reason to ask for; its parameters are still checked.
#[test]
fn a_model_that_logs_payloads_passes_and_its_bad_parameters_fail() {
    let repository = repository(&["simple"]);
    let config = repository.path().join("simple/config.pbtxt");
    let text = std::fs::read_to_string(&config).expect("config");
    let with = |key: &str, value: &str| {
        format!(
            "{text}parameters {{ key: \"ferry.payload_log.{key}\" value {{ string_value: \"{value}\" }} }}\n"
        )
    };
    std::fs::write(&config, with("rate", "1")).expect("write");
    let output = check(&[repository.path().to_str().expect("utf-8")]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(&config, with("redact", "NOPE")).expect("write");
    let output = check(&[repository.path().to_str().expect("utf-8")]);
    assert!(!output.status.success());
    assert!(
        stdout(&output).contains("ferry.payload_log.redact") && stdout(&output).contains("'NOPE'"),
        "{}",
        stdout(&output)
    );
}

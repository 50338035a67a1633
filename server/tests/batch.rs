//! `ferry batch`, the real binary on the bundled models with real ONNX Runtime: input files written by
//! numpy itself (`np.save`, `np.savez`) and by hand (JSON lines), outputs checked against the models' math
//! (`simple`: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1) and against onnxruntime's Python API
//! run on the same file (`mlp_classifier`), a resume after a run cut short, and files that are refused.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `ferry batch` on the bundled example repository with `args`, from the repository root so that ONNX
/// Runtime is found in `.venv` as the server finds it.
fn batch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("batch")
        .args([
            "--model-repository",
            "examples/model_repository",
            "--quiet",
            "--summary-json",
        ])
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("ferry runs")
}

/// `ferry batch` of `model` from `input` into `output`, with `extra` flags.
fn batch_of(model: &str, input: &Path, output: &Path, extra: &[&str]) -> Output {
    let (input, output) = (input.to_str().expect("path"), output.to_str().expect("path"));
    batch(&[&["--model", model, "--input", input, "--output", output], extra].concat())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The JSON summary `--summary-json` prints on stdout.
fn summary(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "no JSON summary ({error}): stdout {:?}, stderr {}",
            output.stdout,
            stderr(output)
        )
    })
}

/// Runs `code` with the project's Python (numpy, onnxruntime) and `args`; its stdout.
fn python(code: &str, args: &[&Path]) -> String {
    let output = Command::new(repo_root().join(".venv/bin/python"))
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `rows` rows of `simple`'s two inputs, as numpy writes them with `np.savez`: INPUT0[i][j] = 16 i + j,
/// INPUT1[i][j] = 7 - i.
fn simple_npz(dir: &Path, rows: usize) -> PathBuf {
    let path = dir.join("simple.npz");
    python(
        "import sys, numpy as np\n\
         n = int(sys.argv[2])\n\
         a = np.arange(16 * n, dtype=np.int32).reshape(n, 16)\n\
         b = np.repeat((7 - np.arange(n, dtype=np.int32))[:, None], 16, axis=1)\n\
         np.savez(sys.argv[1], INPUT0=a, INPUT1=b)\n",
        &[&path, Path::new(&rows.to_string())],
    );
    path
}

/// The output's lines as JSON: the header, then one per row.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// Checks that `rows` are `simple`'s answers for [`simple_npz`]'s rows, in order.
fn assert_simple_rows(rows: &[Value]) {
    for (i, line) in rows.iter().enumerate() {
        assert_eq!(line["row"], i, "{line}");
        let sum: Vec<i64> = (0..16).map(|j| (16 * i + j) as i64 + 7 - i as i64).collect();
        let difference: Vec<i64> = (0..16).map(|j| (16 * i + j) as i64 - (7 - i as i64)).collect();
        assert_eq!(line["outputs"]["OUTPUT0"], serde_json::json!(sum), "row {i}");
        assert_eq!(
            line["outputs"]["OUTPUT1"],
            serde_json::json!(difference),
            "row {i}"
        );
    }
}

#[test]
fn npz_rows_run_through_the_batcher_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = simple_npz(dir.path(), 37);
    let out = dir.path().join("out.jsonl");
    let run = batch_of("simple", &input, &out, &["--concurrency", "3"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let summary = summary(&run);
    // 37 rows in requests of max_batch_size (8) rows: 5 requests, the last of 5 rows.
    assert_eq!(summary["rows"], 37);
    assert_eq!(summary["written"], 37);
    assert_eq!(summary["skipped"], 0);
    assert_eq!(summary["requests"], 5);
    assert_eq!(summary["rows_per_request"], 8);
    assert!(
        stderr(&run).contains("37 rows written (0 already there)"),
        "{}",
        stderr(&run)
    );
    let lines = lines(&out);
    assert_eq!(lines[0]["ferry_batch"], 1);
    assert_eq!(lines[0]["model"], "simple");
    assert_eq!(lines[0]["rows"], 37);
    assert_eq!(lines.len(), 38);
    assert_simple_rows(&lines[1..]);
    // Run again: everything is there already, nothing runs.
    let again = batch_of("simple", &input, &out, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(self::summary(&again)["written"], 0);
    assert_eq!(self::summary(&again)["skipped"], 37);
    assert_eq!(self::lines(&out).len(), 38);
}

#[test]
fn a_run_cut_short_resumes_after_its_last_complete_row() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = simple_npz(dir.path(), 40);
    let out = dir.path().join("out.jsonl");
    let args = |out: &Path| {
        vec![
            "--model".to_owned(),
            "simple".to_owned(),
            "--input".to_owned(),
            input.display().to_string(),
            "--output".to_owned(),
            out.display().to_string(),
            "--rows-per-request".to_owned(),
            "3".to_owned(),
        ]
    };
    let full = dir.path().join("full.jsonl");
    let run = batch(&args(&full).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(run.status.success(), "{}", stderr(&run));
    let complete = std::fs::read(&full).expect("output");
    // As a run killed while writing leaves it: the header, rows 0 to 10, and half of row 11's line.
    let cut = complete
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(12)
        .map(|(i, _)| i - 20)
        .expect("13 lines");
    std::fs::write(&out, &complete[..cut]).expect("write");
    let resumed = batch(&args(&out).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let summary = summary(&resumed);
    assert_eq!(summary["skipped"], 11);
    assert_eq!(summary["written"], 29);
    // Rows 11..40 in requests of 3: 10 requests.
    assert_eq!(summary["requests"], 10);
    assert_eq!(
        std::fs::read(&out).expect("output"),
        complete,
        "the resumed output differs from a whole run"
    );
    assert_simple_rows(&lines(&out)[1..]);
}

#[test]
fn outputs_match_onnxruntime_on_the_same_npy_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("features.npy");
    python(
        "import sys, numpy as np\n\
         np.save(sys.argv[1], np.random.default_rng(7).standard_normal((100, 32)).astype(np.float32))\n",
        &[&input],
    );
    let out = dir.path().join("out.jsonl");
    let run = batch_of("mlp_classifier", &input, &out, &["--rows-per-request", "16"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(summary(&run)["version"], 2);
    // The same file through onnxruntime's own Python API, version 2's model file.
    let model = repo_root().join("examples/model_repository/mlp_classifier/2/model.onnx");
    let expected: Value = serde_json::from_str(&python(
        "import sys, json, numpy as np, onnxruntime as ort\n\
         s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
         x = np.load(sys.argv[2])\n\
         outs = s.run(None, {s.get_inputs()[0].name: x})\n\
         print(json.dumps({o.name: v.tolist() for o, v in zip(s.get_outputs(), outs)}))\n",
        &[&model, &input],
    ))
    .expect("JSON");
    let rows = lines(&out);
    assert_eq!(rows.len(), 101);
    for (i, row) in rows[1..].iter().enumerate() {
        assert_eq!(row["outputs"]["label"], expected["label"][i], "row {i}");
        let got = row["outputs"]["probabilities"].as_array().expect("list");
        let want = expected["probabilities"][i].as_array().expect("list");
        assert_eq!(got.len(), 10);
        for (g, w) in got.iter().zip(want) {
            let (g, w) = (g.as_f64().expect("number"), w.as_f64().expect("number"));
            assert!((g - w).abs() <= 1e-6, "row {i}: {g} vs onnxruntime {w}");
        }
    }
}

#[test]
fn json_lines_rows_are_converted_to_the_models_types() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("rows.jsonl");
    let row = |i: i64| {
        serde_json::json!({"INPUT0": (0..16).map(|j| 16 * i + j).collect::<Vec<_>>(), "INPUT1": vec![7 - i; 16]})
            .to_string()
    };
    // No final newline on the last line.
    std::fs::write(&input, format!("{}\n{}\n{}", row(0), row(1), row(2))).expect("write");
    let out = dir.path().join("out.jsonl");
    let run = batch_of("simple", &input, &out, &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(summary(&run)["requests"], 1);
    assert_simple_rows(&lines(&out)[1..]);

    // Row 3 holds 1.5 where INT32 is expected: rows 0 to 2 are written, the run stops at row 3 (exit 1),
    // and once the file is mended the same command resumes at row 3.
    let bad = dir.path().join("bad.jsonl");
    let mut text = format!("{}\n{}\n{}\n", row(0), row(1), row(2));
    text.push_str(&row(3).replacen("48", "1.5", 1));
    text.push('\n');
    text.push_str(&row(4));
    std::fs::write(&bad, &text).expect("write");
    let out = dir.path().join("bad_out.jsonl");
    let run = batch_of("simple", &bad, &out, &["--rows-per-request", "1"]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("row 3: input 'INPUT0': INT32 values, got 1.5"),
        "{}",
        stderr(&run)
    );
    assert!(
        stderr(&run).contains("the first 3 rows are written"),
        "{}",
        stderr(&run)
    );
    assert_eq!(lines(&out).len(), 4);
    std::fs::write(
        &bad,
        format!("{}\n{}\n{}\n{}\n{}\n", row(0), row(1), row(2), row(3), row(4)),
    )
    .expect("write");
    let run = batch_of("simple", &bad, &out, &["--rows-per-request", "1"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(summary(&run)["skipped"], 3);
    assert_eq!(summary(&run)["written"], 2);
    assert_simple_rows(&lines(&out)[1..]);
}

#[test]
fn bad_files_and_requests_are_refused_naming_what_is_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.jsonl");
    let out = out.as_path();
    let refused = |input: &Path, model: &str, expected: &str, code: i32| {
        let run = batch_of(model, input, out, &[]);
        assert_eq!(run.status.code(), Some(code), "{expected}: {}", stderr(&run));
        assert!(
            stderr(&run).contains(expected),
            "expected {expected:?} in {}",
            stderr(&run)
        );
        let _ = std::fs::remove_file(out);
    };
    let not_npy = dir.path().join("x.npy");
    std::fs::write(&not_npy, b"PK\x03\x04 not numpy").expect("write");
    refused(&not_npy, "mlp_classifier", "magic string", 2);
    // A model of two inputs cannot take one .npy.
    refused(
        &not_npy,
        "simple",
        "a .npy file holds one array, and model 'simple' has 2 inputs",
        2,
    );
    let floats = dir.path().join("floats.npz");
    python(
        "import sys, numpy as np\n\
         np.savez(sys.argv[1], INPUT0=np.zeros((2, 16)), INPUT1=np.zeros((2, 16), dtype=np.int32))\n\
         np.savez(sys.argv[2], INPUT0=np.zeros((2, 16), dtype=np.int32), INPUT9=np.zeros((2, 16), dtype=np.int32))\n\
         np.savez(sys.argv[3], INPUT0=np.zeros((2, 16), dtype=np.int32), INPUT1=np.zeros((3, 16), dtype=np.int32))\n\
         np.savez(sys.argv[4], INPUT0=np.zeros((2, 15), dtype=np.int32), INPUT1=np.zeros((2, 15), dtype=np.int32))\n",
        &[
            &floats,
            &dir.path().join("extra.npz"),
            &dir.path().join("rows.npz"),
            &dir.path().join("short.npz"),
        ],
    );
    refused(
        &floats,
        "simple",
        "array 'INPUT0' holds FP64 elements, and input 'INPUT0' of model 'simple' is INT32",
        2,
    );
    refused(
        &dir.path().join("extra.npz"),
        "simple",
        "array 'INPUT9' names no input of model 'simple'",
        2,
    );
    refused(
        &dir.path().join("rows.npz"),
        "simple",
        "array 'INPUT1' has 3 rows and array 'INPUT0' 2",
        2,
    );
    // The core's own shape check, as a gRPC client would get it (Triton's text), stops the run.
    refused(
        &dir.path().join("short.npz"),
        "simple",
        "rows 0 to 1: [request id: <id_unknown>] unexpected shape for input 'INPUT0' for model 'simple'. Expected [-1,16], got [2,15]",
        1,
    );
    refused(
        &dir.path().join("rows.csv"),
        "simple",
        "known by its extension",
        2,
    );
    refused(
        &floats,
        "nope",
        "no model folder named 'nope' in the model repositories",
        2,
    );
    // Over the size limit (a sparse file): refused before it is read.
    let huge = dir.path().join("huge.npy");
    std::fs::File::create(&huge)
        .and_then(|file| file.set_len(ferry_server::batch::MAX_INPUT_BYTES as u64 + 1))
        .expect("sparse file");
    refused(&huge, "mlp_classifier", "over the limit of 1073741824 bytes", 2);
    let blank = dir.path().join("blank.jsonl");
    std::fs::write(&blank, "{}\n\n{}\n").expect("write");
    refused(&blank, "simple", "line 2 is blank", 2);
    // An output of another run is not resumed.
    let input = simple_npz(dir.path(), 4);
    std::fs::write(
        out,
        "{\"ferry_batch\":1,\"model\":\"simple\",\"rows\":5,\"input\":\"x\"}\n",
    )
    .expect("write");
    let run = batch_of("simple", &input, out, &[]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        stderr(&run)
            .contains("written for model 'simple' over 5 rows, and this run is model 'simple' over 4 rows"),
        "{}",
        stderr(&run)
    );
    std::fs::write(
        out,
        "{\"ferry_batch\":1,\"model\":\"simple\",\"rows\":4,\"input\":\"x\"}\n{\"row\":1}\n",
    )
    .expect("write");
    let run = batch_of("simple", &input, out, &[]);
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("line 2 is not row 0"), "{}", stderr(&run));
}

#[test]
fn json_lines_carry_every_type_to_a_model_that_does_not_batch() {
    // identity_types (tests/model_repository): max_batch_size 0, one identity per data type, so each row is
    // one request without a batch dimension and every output must read back as its input was written.
    let dir = tempfile::tempdir().expect("temp dir");
    let row = serde_json::json!({
        "IN_BOOL": [true, false], "IN_UINT8": [0, 255], "IN_UINT16": [65535], "IN_UINT32": [4000000000u32],
        "IN_UINT64": [18446744073709551615u64], "IN_INT8": [-128, 127], "IN_INT16": [-300],
        "IN_INT32": [-70000], "IN_INT64": [-9007199254740993i64], "IN_FP16": [1.5, -2.0],
        "IN_FP32": [0.1, 1e-7], "IN_FP64": [0.1], "IN_BYTES": ["héllo", ""],
    });
    let input = dir.path().join("types.jsonl");
    std::fs::write(&input, format!("{row}\n{row}\n")).expect("write");
    let out = dir.path().join("out.jsonl");
    let run = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("batch")
        .args([
            "--model-repository",
            "tests/model_repository",
            "--model",
            "identity_types",
            "--quiet",
        ])
        .args([
            "--summary-json",
            "--input",
            input.to_str().expect("path"),
            "--output",
            out.to_str().expect("path"),
        ])
        .current_dir(repo_root())
        .output()
        .expect("ferry runs");
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(summary(&run)["requests"], 2);
    assert_eq!(summary(&run)["rows_per_request"], 1);
    let lines = lines(&out);
    assert_eq!(lines.len(), 3);
    for line in &lines[1..] {
        for (name, value) in row.as_object().expect("object") {
            let output = name.replace("IN_", "OUT_");
            // FP32 0.1 is written as the shortest text that reads back as the same f32.
            assert_eq!(&line["outputs"][&output], value, "{output}");
        }
    }
    // Out of an integer type's range: refused naming the row, the input and the type.
    let wide = dir.path().join("wide.jsonl");
    std::fs::write(
        &wide,
        format!("{row}\n{}\n", row.to_string().replace("[0,255]", "[0,256]")),
    )
    .expect("write");
    let run = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("batch")
        .args([
            "--model-repository",
            "tests/model_repository",
            "--model",
            "identity_types",
            "--quiet",
        ])
        .args([
            "--input",
            wide.to_str().expect("path"),
            "--output",
            dir.path().join("wide_out.jsonl").to_str().expect("path"),
        ])
        .current_dir(repo_root())
        .output()
        .expect("ferry runs");
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("row 1: input 'IN_UINT8': 256 is out of the range of UINT8"),
        "{}",
        stderr(&run)
    );
}

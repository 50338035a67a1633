//! Sample requests with expected outputs: the files `ferry check` runs against each model version.
//!
//! A model folder may hold `tests/*.json`, one sample per file:
//!
//! ```json
//! {
//!   "description": "adds and subtracts",
//!   "version": 1,
//!   "inputs": [ { "name": "INPUT0", "datatype": "INT32", "shape": [1, 2], "data": [1, 2] } ],
//!   "outputs": [ { "name": "OUTPUT0", "datatype": "INT32", "shape": [1, 2], "data": [2, 4] } ],
//!   "tolerance": { "absolute": 1e-6, "relative": 1e-5 }
//! }
//! ```
//!
//! `inputs` (and the optional request `parameters`) are a KServe v2 inference request body, decoded by the
//! REST front end's own decoder; `outputs` are what a KServe v2 response would carry, compared element by
//! element (floats within the tolerance, everything else exactly). The format is documented in
//! `docs/operations.md`.

use std::{
    collections::HashSet,
    io::Read,
    path::{Path, PathBuf},
};

use serde::{Deserialize, de::IgnoredAny};
use serde_json::{Map, Value};

use super::report::Failure;
use crate::{config::locate_line, repository::files::contained_file};

/// The folder of a model that holds its sample files.
pub const SAMPLES_FOLDER: &str = "tests";

/// The largest sample file read: checked on the file's size before it is read, and again while reading.
/// At this size a file holds at most some four million JSON values, within what one REST request may hold.
pub const MAX_SAMPLE_BYTES: u64 = 8 * 1024 * 1024;

/// The most sample files one model may have; a folder with more fails the check before any is read.
pub const MAX_SAMPLE_FILES: usize = 256;

/// The tolerance floats get when a sample gives none: the absolute and relative tolerances numpy's
/// `isclose` is commonly used with for float32 models, loose enough for the rounding differences between
/// ONNX Runtime builds and CPUs, tight enough to catch a wrong model.
pub const DEFAULT_TOLERANCE: Tolerance = Tolerance {
    absolute: 1e-6,
    relative: 1e-5,
};

/// How far a float output may be from its expected value: `|got - expected| <= absolute + relative *
/// |expected|` (numpy's `isclose`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    /// The absolute part.
    #[serde(default = "default_absolute")]
    pub absolute: f64,
    /// The part relative to the expected value.
    #[serde(default = "default_relative")]
    pub relative: f64,
}

fn default_absolute() -> f64 {
    DEFAULT_TOLERANCE.absolute
}

fn default_relative() -> f64 {
    DEFAULT_TOLERANCE.relative
}

impl Tolerance {
    /// Whether `got` is close enough to `expected`; NaN never is.
    pub fn accepts(&self, expected: f64, got: f64) -> bool {
        (got - expected).abs() <= self.absolute + self.relative * expected.abs()
    }
}

/// A sample file as written, before its parts are checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SampleFile {
    /// Free text for the reader of the file; not used.
    #[serde(default, rename = "description")]
    _description: IgnoredAny,
    version: Option<u64>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<Value>,
    outputs: Vec<ExpectedOutput>,
    tolerance: Option<Tolerance>,
}

/// One output a sample expects, in the KServe v2 response form.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedOutput {
    /// The output's name.
    pub name: String,
    /// Its datatype (`INT32`, `FP32`, ...), checked when given.
    pub datatype: Option<String>,
    /// Its shape, batch dimension included, checked when given.
    pub shape: Option<Vec<i64>>,
    /// Its elements in row-major order, flat or nested like the shape.
    pub data: Value,
    /// The tolerance for this output's floats; the sample's when absent.
    pub tolerance: Option<Tolerance>,
}

/// A sample file, read and checked: ready to run against a model version.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The file, as a path under the model folder.
    pub path: PathBuf,
    /// The file's text, to point failures at the line of the output they concern.
    pub text: String,
    /// The only version it runs on; every version the policy selects when `None`.
    pub version: Option<u64>,
    /// The request body for the REST decoder: `inputs` and `parameters`.
    pub request: Vec<u8>,
    /// The expected outputs, each with its tolerance settled.
    pub outputs: Vec<(ExpectedOutput, Tolerance)>,
}

impl Sample {
    /// The line of the file where output `name` is listed, if it can be found.
    pub fn output_line(&self, name: &str) -> Option<usize> {
        let line = locate_line(&self.text, &["\"outputs\"", &format!("\"{name}\"")]);
        (line > 0).then_some(line)
    }

    /// The line of the file's `version` member, if it has one.
    pub fn version_line(&self) -> Option<usize> {
        let line = locate_line(&self.text, &["\"version\""]);
        (line > 0).then_some(line)
    }
}

/// The sample files of the model in `model_dir`, sorted by name: every `tests/*.json`. A folder without
/// `tests/` has none. A file that cannot be read or is not a valid sample is a failure naming it (and the
/// line, where the JSON parser tells one); the others are still returned.
pub fn read_samples(model_dir: &Path) -> (Vec<Sample>, Vec<Failure>) {
    let folder = model_dir.join(SAMPLES_FOLDER);
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), Vec::new()),
        Err(error) => {
            let message = format!("cannot list the sample files: {error}");
            return (Vec::new(), vec![Failure::at(&folder, None, message)]);
        }
    };
    let mut paths = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_some_and(|extension| extension == "json") {
            if paths.len() == MAX_SAMPLE_FILES {
                let message = format!(
                    "more than {MAX_SAMPLE_FILES} sample files; a model may have at most {MAX_SAMPLE_FILES}"
                );
                return (Vec::new(), vec![Failure::at(&folder, None, message)]);
            }
            paths.push(path);
        }
    }
    paths.sort();
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    for path in paths {
        match read_sample(model_dir, &path) {
            Ok(sample) => samples.push(sample),
            Err(failure) => failures.push(failure),
        }
    }
    (samples, failures)
}

/// Reads and checks one sample file, bounded by [`MAX_SAMPLE_BYTES`] before and while it is read.
fn read_sample(model_dir: &Path, path: &Path) -> Result<Sample, Failure> {
    let fail = |line: Option<usize>, message: String| Failure::at(path, line, message);
    let path = contained_file(model_dir, path).map_err(|message| fail(None, message))?;
    let unreadable = |error: std::io::Error| fail(None, format!("cannot read the sample file: {error}"));
    let file = std::fs::File::open(&path).map_err(unreadable)?;
    let size = file.metadata().map_err(unreadable)?.len();
    let too_large = |size: u64| {
        fail(
            None,
            format!(
                "the sample file is {size} bytes, more than the {MAX_SAMPLE_BYTES} a sample file may have"
            ),
        )
    };
    if size > MAX_SAMPLE_BYTES {
        return Err(too_large(size));
    }
    let mut text = String::new();
    file.take(MAX_SAMPLE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(unreadable)?;
    if text.len() as u64 > MAX_SAMPLE_BYTES {
        return Err(too_large(text.len() as u64));
    }
    let file: SampleFile = serde_json::from_str(&text)
        .map_err(|error| fail(Some(error.line()), format!("not a valid sample file: {error}")))?;
    let default = match file.tolerance {
        Some(tolerance) => checked(tolerance).map_err(|message| fail(None, message))?,
        None => DEFAULT_TOLERANCE,
    };
    let mut names = HashSet::new();
    let mut outputs = Vec::with_capacity(file.outputs.len());
    for output in file.outputs {
        let quoted = format!("\"{}\"", output.name);
        let line = || {
            let line = locate_line(&text, &["\"outputs\"", &quoted]);
            (line > 0).then_some(line)
        };
        if !names.insert(output.name.clone()) {
            let second = locate_line(&text, &["\"outputs\"", &quoted, &quoted]);
            let message = format!("output '{}' is listed twice", output.name);
            return Err(fail((second > 0).then_some(second), message));
        }
        let tolerance = match output.tolerance {
            Some(tolerance) => checked(tolerance)
                .map_err(|message| fail(line(), format!("output '{}': {message}", output.name)))?,
            None => default,
        };
        outputs.push((output, tolerance));
    }
    let mut body = Map::new();
    body.insert("inputs".to_owned(), Value::Array(file.inputs));
    if !file.parameters.is_empty() {
        body.insert("parameters".to_owned(), Value::Object(file.parameters));
    }
    let request = serde_json::to_vec(&Value::Object(body))
        .map_err(|error| fail(None, format!("cannot encode the request: {error}")))?;
    Ok(Sample {
        path,
        text,
        version: file.version,
        request,
        outputs,
    })
}

/// A tolerance whose parts are finite and not negative.
fn checked(tolerance: Tolerance) -> Result<Tolerance, String> {
    for (part, value) in [("absolute", tolerance.absolute), ("relative", tolerance.relative)] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(format!(
                "tolerance '{part}' must be a finite number of at least 0, got {value}"
            ));
        }
    }
    Ok(tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join(SAMPLES_FOLDER)).expect("mkdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(SAMPLES_FOLDER).join(name), text).expect("write");
        }
        dir
    }

    const GOOD: &str = r#"{
  "version": 2,
  "inputs": [ { "name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2] } ],
  "outputs": [
    { "name": "y", "data": [[2, 3]], "tolerance": { "absolute": 0.5 } },
    { "name": "z", "datatype": "INT64", "shape": [1], "data": [1] }
  ],
  "tolerance": { "relative": 0 }
}"#;

    #[test]
    fn a_sample_becomes_a_rest_body_and_expected_outputs_with_their_tolerances() {
        let model = model_with(&[("b.json", GOOD), ("a.json", GOOD), ("notes.txt", "not a sample")]);
        let (samples, failures) = read_samples(model.path());
        assert!(failures.is_empty(), "{failures:?}");
        let names: Vec<_> = samples
            .iter()
            .map(|s| s.path.file_name().expect("name"))
            .collect();
        assert_eq!(names, ["a.json", "b.json"], "json files only, sorted");
        let sample = &samples[0];
        assert_eq!(sample.version, Some(2));
        let body: Value = serde_json::from_slice(&sample.request).expect("json");
        assert_eq!(body["inputs"][0]["name"], "x");
        assert!(body.get("parameters").is_none());
        let (y, y_tolerance) = &sample.outputs[0];
        assert_eq!(y.name, "y");
        // A missing part takes the default; the file's tolerance is the default for outputs without one.
        assert_eq!(
            *y_tolerance,
            Tolerance {
                absolute: 0.5,
                relative: DEFAULT_TOLERANCE.relative
            }
        );
        assert_eq!(
            sample.outputs[1].1,
            Tolerance {
                absolute: DEFAULT_TOLERANCE.absolute,
                relative: 0.0
            }
        );
        assert_eq!(sample.output_line("z"), Some(6));
        assert_eq!(sample.version_line(), Some(2));
    }

    #[test]
    fn no_samples_folder_means_no_samples() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (samples, failures) = read_samples(dir.path());
        assert!(samples.is_empty() && failures.is_empty());
    }

    #[test]
    fn mistakes_name_the_file_and_the_line() {
        let typo = GOOD.replace("\"tolerance\": { \"relative\"", "\"tolerence\": { \"relative\"");
        let negative = GOOD.replace("\"absolute\": 0.5", "\"absolute\": -1");
        let twice = GOOD.replace("\"name\": \"z\"", "\"name\": \"y\"");
        let model = model_with(&[
            ("typo.json", &typo),
            ("negative.json", &negative),
            ("twice.json", &twice),
        ]);
        let (samples, failures) = read_samples(model.path());
        assert!(samples.is_empty());
        let lines: Vec<String> = failures.iter().map(ToString::to_string).collect();
        assert!(
            lines[0].contains("negative.json:5: output 'y': tolerance 'absolute'"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("twice.json:6: output 'y' is listed twice"),
            "{lines:?}"
        );
        assert!(
            lines[2].contains("typo.json:8: not a valid sample file: unknown field `tolerence`"),
            "{lines:?}"
        );
    }

    #[test]
    fn sizes_are_bounded_before_reading() {
        let model = model_with(&[]);
        let big = std::fs::File::create(model.path().join(SAMPLES_FOLDER).join("big.json")).expect("create");
        big.set_len(MAX_SAMPLE_BYTES + 1).expect("sparse file");
        let (_, failures) = read_samples(model.path());
        assert!(
            failures[0].to_string().contains(&format!(
                "more than the {MAX_SAMPLE_BYTES} a sample file may have"
            )),
            "{failures:?}"
        );

        let many = model_with(&[]);
        for i in 0..=MAX_SAMPLE_FILES {
            std::fs::write(many.path().join(SAMPLES_FOLDER).join(format!("{i}.json")), "{}").expect("write");
        }
        let (samples, failures) = read_samples(many.path());
        assert!(samples.is_empty());
        assert!(
            failures[0].to_string().contains("more than 256 sample files"),
            "{failures:?}"
        );
    }

    #[test]
    fn sample_files_must_stay_inside_the_model_folder() {
        let outside = tempfile::tempdir().expect("temp dir");
        std::fs::write(outside.path().join("secret.json"), GOOD).expect("write");
        let model = model_with(&[]);
        std::os::unix::fs::symlink(
            outside.path().join("secret.json"),
            model.path().join(SAMPLES_FOLDER).join("link.json"),
        )
        .expect("symlink");
        let (samples, failures) = read_samples(model.path());
        assert!(samples.is_empty());
        assert!(
            failures[0].to_string().contains("outside its model folder"),
            "{failures:?}"
        );
    }

    #[test]
    fn tolerances_are_numpy_isclose() {
        let tolerance = Tolerance {
            absolute: 0.1,
            relative: 0.01,
        };
        assert!(tolerance.accepts(100.0, 101.1));
        assert!(!tolerance.accepts(100.0, 101.2));
        assert!(tolerance.accepts(0.0, -0.1));
        assert!(!tolerance.accepts(0.0, f64::NAN));
        let exact = Tolerance {
            absolute: 0.0,
            relative: 0.0,
        };
        assert!(exact.accepts(0.5, 0.5) && !exact.accepts(0.5, 0.5000001));
    }
}

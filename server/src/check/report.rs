//! What `ferry check` found, per model and version, written as one line per failure for people and CI logs,
//! or as one JSON document for machines.

use std::path::Path;

use serde::Serialize;

/// One thing wrong, where it is: `file:line: message`, or `file: message` when no line applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The file or folder at fault.
    pub file: String,
    /// The 1-based line in `file`, when one is known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl Failure {
    /// A failure of `path` (at `line`, when known).
    pub fn at(path: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        Failure {
            file: path.display().to_string(),
            line,
            message: message.into(),
        }
    }

    /// A failure the loader reported as text. Its messages name the file at fault first, as
    /// `<file>:<line>: <message>` (config errors) or `<file>: <message>`: when that file is inside `folder`
    /// it is split off, so that the file and line stand apart. Any other text is a failure of `fallback`.
    pub fn from_load_error(folder: &Path, fallback: &Path, text: &str) -> Self {
        let folder_text = folder.display().to_string();
        let split = text
            .strip_prefix(&folder_text)
            .filter(|rest| rest.starts_with('/'))
            .and_then(|rest| rest.find(": "))
            .map(|end| text.split_at(folder_text.len() + end));
        let Some((location, message)) = split else {
            return Failure::at(fallback, None, text);
        };
        let message = message[2..].to_owned();
        match location.rsplit_once(':') {
            Some((file, line)) if !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) => Failure {
                file: file.to_owned(),
                line: line.parse().ok().filter(|line| *line > 0),
                message,
            },
            _ => Failure {
                file: location.to_owned(),
                line: None,
                message,
            },
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Whether a model, version or sample passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// No failure.
    Passed,
    /// At least one failure.
    Failed,
}

impl Status {
    fn of(failures: usize) -> Self {
        if failures == 0 {
            Status::Passed
        } else {
            Status::Failed
        }
    }
}

/// One sample file run on one version.
#[derive(Debug, Clone, Serialize)]
pub struct SampleReport {
    /// The sample file.
    pub file: String,
    /// Passed when every expected output matched.
    pub status: Status,
    /// What did not match, or why the request failed.
    pub failures: Vec<Failure>,
}

impl SampleReport {
    /// The outcome of running the sample at `file`.
    pub fn new(file: &Path, failures: Vec<Failure>) -> Self {
        SampleReport {
            file: file.display().to_string(),
            status: Status::of(failures.len()),
            failures,
        }
    }
}

/// One version the policy selects.
#[derive(Debug, Clone, Serialize)]
pub struct VersionReport {
    /// The version number.
    pub version: u64,
    /// Passed when it loaded (warm-up included) and every sample passed.
    pub status: Status,
    /// Why it did not load, if it did not.
    pub failures: Vec<Failure>,
    /// The samples run on it.
    pub samples: Vec<SampleReport>,
}

impl VersionReport {
    /// A version with its load failures and sample outcomes.
    pub fn new(version: u64, failures: Vec<Failure>, samples: Vec<SampleReport>) -> Self {
        let failed = failures.len() + samples.iter().filter(|s| s.status == Status::Failed).count();
        VersionReport {
            version,
            status: Status::of(failed),
            failures,
            samples,
        }
    }
}

/// One model of the repositories.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// The model's name (its folder's name).
    pub name: String,
    /// Its folder, when exactly one repository has it.
    pub path: Option<String>,
    /// Passed when its config, every selected version and every sample passed.
    pub status: Status,
    /// Failures of the model as a whole: its config, its folder, a sample file that cannot be read.
    pub failures: Vec<Failure>,
    /// The versions the policy selects, by number.
    pub versions: Vec<VersionReport>,
}

impl ModelReport {
    /// Model `name` in folder `path`, with its own failures and its versions' reports.
    pub fn new(
        name: &str,
        path: Option<&Path>,
        failures: Vec<Failure>,
        versions: Vec<VersionReport>,
    ) -> Self {
        let failed = failures.len() + versions.iter().filter(|v| v.status == Status::Failed).count();
        ModelReport {
            name: name.to_owned(),
            path: path.map(|path| path.display().to_string()),
            status: Status::of(failed),
            failures,
            versions,
        }
    }

    /// Every failure of the model, its versions and their samples, in report order.
    pub fn all_failures(&self) -> impl Iterator<Item = &Failure> {
        self.failures
            .iter()
            .chain(self.versions.iter().flat_map(|version| {
                version
                    .failures
                    .iter()
                    .chain(version.samples.iter().flat_map(|sample| sample.failures.iter()))
            }))
    }
}

/// Everything `ferry check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Passed when every model passed.
    pub status: Status,
    /// How many failures there are in all.
    pub failure_count: usize,
    /// Failures of the repositories as a whole (no model in them).
    pub failures: Vec<Failure>,
    /// The models checked, by name.
    pub models: Vec<ModelReport>,
}

impl Report {
    /// The report of `models`, with `failures` of the repositories themselves.
    pub fn new(failures: Vec<Failure>, models: Vec<ModelReport>) -> Self {
        let failure_count = failures.len()
            + models
                .iter()
                .map(|model| model.all_failures().count())
                .sum::<usize>();
        Report {
            status: Status::of(failure_count),
            failure_count,
            failures,
            models,
        }
    }

    /// The text report: one line per failure, then one summary line.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let failures = self
            .failures
            .iter()
            .chain(self.models.iter().flat_map(ModelReport::all_failures));
        for failure in failures {
            text.push_str(&failure.to_string());
            text.push('\n');
        }
        let versions: usize = self.models.iter().map(|model| model.versions.len()).sum();
        let samples: usize = self
            .models
            .iter()
            .flat_map(|model| &model.versions)
            .map(|version| version.samples.len())
            .sum();
        let outcome = match self.failure_count {
            0 => "passed".to_owned(),
            1 => "1 failure".to_owned(),
            n => format!("{n} failures"),
        };
        text.push_str(&format!(
            "ferry check: {} {}, {versions} {}, {samples} sample {}: {outcome}\n",
            self.models.len(),
            plural(self.models.len(), "model", "models"),
            plural(versions, "version", "versions"),
            plural(samples, "run", "runs"),
        ));
        text
    }
}

fn plural(count: usize, one: &'static str, many: &'static str) -> &'static str {
    if count == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_errors_are_split_into_file_line_and_message() {
        let folder = Path::new("repo/m");
        let split = |text: &str| Failure::from_load_error(folder, Path::new("repo/m/1"), text);
        let with_line = split("repo/m/config.pbtxt:3: unknown field");
        assert_eq!(
            (
                with_line.file.as_str(),
                with_line.line,
                with_line.message.as_str()
            ),
            ("repo/m/config.pbtxt", Some(3), "unknown field")
        );
        assert_eq!(with_line.to_string(), "repo/m/config.pbtxt:3: unknown field");
        assert_eq!(
            split("repo/m/config.pbtxt:0: bad").to_string(),
            "repo/m/config.pbtxt: bad"
        );
        let no_line = split("repo/m/1/model.onnx: Load model failed: Protobuf parsing failed");
        assert_eq!(
            (no_line.file.as_str(), no_line.line, no_line.message.as_str()),
            (
                "repo/m/1/model.onnx",
                None,
                "Load model failed: Protobuf parsing failed"
            )
        );
        assert_eq!(
            split("warm-up failed: x").to_string(),
            "repo/m/1: warm-up failed: x"
        );
        assert_eq!(
            split("repo/model: elsewhere").to_string(),
            "repo/m/1: repo/model: elsewhere",
            "only files inside the folder are split off"
        );
    }

    #[test]
    fn statuses_and_counts_follow_the_failures() {
        let failure = Failure::at(Path::new("f.json"), Some(2), "wrong");
        let sample = SampleReport::new(Path::new("f.json"), vec![failure.clone()]);
        let version = VersionReport::new(1, Vec::new(), vec![sample]);
        assert_eq!(version.status, Status::Failed);
        let passing = ModelReport::new(
            "ok",
            None,
            Vec::new(),
            vec![VersionReport::new(1, Vec::new(), Vec::new())],
        );
        let failing = ModelReport::new("bad", None, Vec::new(), vec![version]);
        let report = Report::new(Vec::new(), vec![passing, failing]);
        assert_eq!((report.status, report.failure_count), (Status::Failed, 1));
        assert_eq!(
            report.to_text(),
            "f.json:2: wrong\nferry check: 2 models, 2 versions, 1 sample run: 1 failure\n"
        );
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(
            json["models"][1]["versions"][0]["samples"][0]["failures"][0]["line"],
            2
        );
        assert_eq!(json["models"][0]["status"], "passed");
    }
}

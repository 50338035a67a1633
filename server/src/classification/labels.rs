//! Class labels: the lines of an output's `label_filename`, read once when the model loads (Triton's
//! `LabelProvider` in core `src/label_provider.cc`, filled in `Model::Init` of core `src/model.cc`).

use std::{
    io::Read as _,
    path::{Component, Path},
    sync::Arc,
};

use crate::config::ModelSpec;

/// The largest label file Ferry reads: ImageNet-21k's labels take under 1 MiB, a large tokenizer's
/// vocabulary a few.
pub const MAX_LABEL_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The class labels of one output: the lines of its label file, kept as bytes (Triton reads the file
/// as it is, so a label may hold any bytes but a newline).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    bytes: Vec<u8>,
    /// Where each line ends in `bytes`; line `i` starts after line `i - 1`'s newline.
    ends: Vec<u32>,
}

impl Labels {
    /// Splits a label file into lines as C++'s `std::getline` does: on `\n` only, with no empty last line
    /// after a final newline. `bytes` must be shorter than 4 GiB (the caller bounds it far below).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let mut ends: Vec<u32> = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(at, _)| at as u32)
            .collect();
        if bytes.last().is_some_and(|last| *last != b'\n') {
            ends.push(bytes.len() as u32);
        }
        Labels { bytes, ends }
    }

    /// Labels from a list, one per class; a newline inside a label, which a label file cannot hold either,
    /// becomes a space.
    pub fn from_texts(texts: &[String]) -> Self {
        let mut bytes = Vec::new();
        for text in texts {
            bytes.extend(text.bytes().map(|b| if b == b'\n' { b' ' } else { b }));
            bytes.push(b'\n');
        }
        Labels::from_bytes(bytes)
    }

    /// The label of `class`; `None` when the file has no such line or the line is empty, as Triton then
    /// adds no label.
    pub fn get(&self, class: usize) -> Option<&[u8]> {
        let end = *self.ends.get(class)? as usize;
        let start = match class {
            0 => 0,
            _ => self.ends[class - 1] as usize + 1,
        };
        self.bytes.get(start..end).filter(|label| !label.is_empty())
    }

    /// The number of lines.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the file has no lines.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// The labels of a model's outputs, read from their `label_filename`s once when the model loads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputLabels(Vec<Option<Arc<Labels>>>);

impl OutputLabels {
    /// Reads the label file of each output of `spec` that names one, from `model_dir`. A file that is
    /// missing, leads outside the folder, is not a regular file or is over [`MAX_LABEL_FILE_BYTES`] fails
    /// the load; the first two with Triton's messages.
    ///
    /// An output without a label file takes the class labels of its config parameter
    /// ([`crate::config::CLASS_LABELS_PREFIX`]), which auto-complete writes for a `ZipMap` output.
    pub fn load(model_dir: &Path, spec: &ModelSpec) -> Result<Self, String> {
        let mut listed = crate::config::labels_from_parameters(&spec.config)?;
        let mut labels = Vec::with_capacity(spec.config.output.len());
        for output in &spec.config.output {
            labels.push(match output.label_filename.as_str() {
                "" => listed
                    .remove(&output.name)
                    .map(|texts| Arc::new(Labels::from_texts(&texts))),
                file => Some(Arc::new(read_labels(model_dir, file, &output.name, &spec.name)?)),
            });
        }
        Ok(OutputLabels(labels))
    }

    /// Labels for a spec's outputs in order, for tests that build a spec by hand.
    #[cfg(test)]
    pub(crate) fn from_labels(labels: Vec<Option<Labels>>) -> Self {
        OutputLabels(labels.into_iter().map(|l| l.map(Arc::new)).collect())
    }

    /// The labels of the output at position `output` in the spec, when it has a label file.
    pub fn of(&self, output: usize) -> Option<&Labels> {
        self.0.get(output)?.as_deref()
    }
}

fn read_labels(model_dir: &Path, file: &str, output: &str, model: &str) -> Result<Labels, String> {
    let path = model_dir.join(file);
    let unreadable = |error: std::io::Error| {
        // Triton's ReadTextFile message, with strerror's wording for the common case.
        let reason = match error.kind() {
            std::io::ErrorKind::NotFound => "No such file or directory".to_owned(),
            _ => error.to_string(),
        };
        format!("failed to open text file for read {}: {reason}", path.display())
    };
    let outside = || {
        format!(
            "label file path '{}' for output '{output}' in model '{model}' is outside model directory",
            path.display()
        )
    };
    // Triton checks the path before reading it, as written and then as its links resolve.
    if climbs_out(Path::new(file)) {
        return Err(outside());
    }
    let resolved = path.canonicalize().map_err(unreadable)?;
    let folder = model_dir.canonicalize().map_err(unreadable)?;
    if !resolved.starts_with(&folder) {
        return Err(outside());
    }
    let path = crate::repository::files::contained_file(model_dir, &path)?;
    let file = std::fs::File::open(&path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    std::io::Read::take(file, MAX_LABEL_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_LABEL_FILE_BYTES {
        return Err(format!(
            "label file {} of output '{output}' is larger than the {MAX_LABEL_FILE_BYTES} bytes a label file \
             may have",
            path.display()
        ));
    }
    Ok(Labels::from_bytes(bytes))
}

/// Whether a relative path, read without following links, leaves the folder it is relative to.
fn climbs_out(path: &Path) -> bool {
    let mut depth = 0usize;
    for component in path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return true,
            },
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines split as `std::getline` splits them in Triton's `LabelProvider::AddLabels`.
    #[test]
    fn lines_are_split_like_getline() {
        let labels = Labels::from_bytes(b"cat\n\ndog\r\n\xffbird".to_vec());
        assert_eq!(labels.len(), 4);
        assert_eq!(labels.get(0), Some(&b"cat"[..]));
        assert_eq!(labels.get(1), None, "an empty line is no label");
        assert_eq!(labels.get(2), Some(&b"dog\r"[..]), "a carriage return stays");
        assert_eq!(
            labels.get(3),
            Some(&b"\xffbird"[..]),
            "a last line without newline counts"
        );
        assert_eq!(labels.get(4), None);
        assert_eq!(
            Labels::from_bytes(b"a\n".to_vec()).len(),
            1,
            "no empty line after the last newline"
        );
        assert!(Labels::from_bytes(Vec::new()).is_empty());
    }

    fn spec_with_label_file(file: &str) -> ModelSpec {
        let mut spec = crate::classification::tests::spec(4);
        spec.config.output[0].label_filename = file.to_owned();
        spec
    }

    /// Triton's load errors: `ReadTextFile` for a missing file, `Model::Init` for a path outside the folder.
    #[test]
    fn label_files_load_with_the_model_and_bad_ones_fail_it() {
        let outside = tempfile::tempdir().expect("temp dir");
        std::fs::write(outside.path().join("secret.txt"), b"no\n").expect("write");
        let dir = tempfile::tempdir().expect("temp dir");
        let model = dir.path();
        std::fs::create_dir(model.join("sub")).expect("mkdir");
        std::fs::write(model.join("sub/labels.txt"), b"a\nb\n").expect("write");

        let loaded = OutputLabels::load(model, &spec_with_label_file("sub/labels.txt")).expect("loads");
        assert_eq!(loaded.of(0).and_then(|l| l.get(1)), Some(&b"b"[..]));
        assert!(loaded.of(1).is_none() && loaded.of(9).is_none());

        let missing = OutputLabels::load(model, &spec_with_label_file("labels.txt")).expect_err("missing");
        assert_eq!(
            missing,
            format!(
                "failed to open text file for read {}: No such file or directory",
                model.join("labels.txt").display()
            )
        );
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), model.join("link.txt"))
            .expect("symlink");
        let absolute = outside.path().join("secret.txt").display().to_string();
        for escaping in ["../secret.txt", "sub/../../x.txt", &absolute, "link.txt"] {
            let text = OutputLabels::load(model, &spec_with_label_file(escaping)).expect_err(escaping);
            assert!(
                text.starts_with("label file path '")
                    && text.ends_with("for output 'p' in model 'm' is outside model directory"),
                "{text}"
            );
        }
        let big = vec![b'x'; MAX_LABEL_FILE_BYTES as usize + 1];
        std::fs::write(model.join("big.txt"), big).expect("write");
        let text = OutputLabels::load(model, &spec_with_label_file("big.txt")).expect_err("too big");
        assert!(
            text.contains("larger than the 4194304 bytes a label file may have"),
            "{text}"
        );
        let text = OutputLabels::load(model, &spec_with_label_file("sub")).expect_err("a folder");
        assert!(text.contains("not a regular file"), "{text}");
    }
}

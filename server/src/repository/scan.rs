//! What is on disk: model folders, version folders, and fingerprints of their files for change detection.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

/// The files under a folder with their sizes and modification times, and its subfolders, sorted by path.
/// Two equal fingerprints mean nothing under the folder changed (as far as sizes and times can tell).
/// Folders count on their own so that an emptied version folder and a removed one differ: a poll that saw
/// a version folder whose model file was already deleted sees the change when the folder goes too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, Entry)>);

/// One path under a fingerprinted folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Entry {
    /// A folder.
    Folder,
    /// A file of this size, last modified then (when the file system says).
    File(u64, Option<SystemTime>),
}

impl Fingerprint {
    /// Reads the fingerprint of everything under `dir` (empty when `dir` cannot be read).
    pub fn of(dir: &Path) -> Self {
        let mut files = Vec::new();
        collect(dir, dir, &mut files);
        files.sort();
        Fingerprint(files)
    }
}

fn collect(root: &Path, dir: &Path, entries_found: &mut Vec<(PathBuf, Entry)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        let relative = || {
            path.strip_prefix(root)
                .map_or_else(|_| path.clone(), Path::to_path_buf)
        };
        if metadata.is_dir() {
            entries_found.push((relative(), Entry::Folder));
            collect(root, &path, entries_found);
        } else if dir == root && is_traffic_file(&entry.file_name()) {
            // The traffic policy is followed on its own (`crate::traffic`): a change of it reloads no model.
            continue;
        } else {
            entries_found.push((relative(), Entry::File(metadata.len(), metadata.modified().ok())));
        }
    }
}

/// Whether a file at the top of a model folder is its traffic policy, or the policy's temporary file.
fn is_traffic_file(name: &std::ffi::OsStr) -> bool {
    name == crate::traffic::FILE_NAME || name == crate::traffic::TEMP_NAME
}

/// The model folders of the repositories, by model name; a name found in several repositories maps to all
/// its folders, which makes that model unavailable.
pub fn model_folders(repositories: &[PathBuf]) -> Result<BTreeMap<String, Vec<PathBuf>>, String> {
    let mut folders: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for repository in repositories {
        let entries = std::fs::read_dir(repository)
            .map_err(|error| format!("cannot read model repository {}: {error}", repository.display()))?;
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            // A link that cannot be followed (a loop, a dangling target) is listed too, so that its load
            // fails with the reason instead of the model silently missing from the index.
            let path = entry.path();
            let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
            let folder = match std::fs::metadata(&path) {
                Ok(metadata) => metadata.is_dir(),
                Err(_) => is_link,
            };
            if folder && !name.starts_with('.') {
                folders.entry(name).or_default().push(path);
            }
        }
    }
    Ok(folders)
}

/// Numeric version folders; Triton ignores other names and names with a leading zero.
pub fn version_folders(model_dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(model_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            (!name.starts_with('0'))
                .then(|| name.parse::<u64>().ok())
                .flatten()
        })
        .collect()
}

/// Tells when a folder's contents have settled: a change is acted on only once two looks in a row agree, so
/// that a file still being copied is never loaded half-written.
#[derive(Debug, Default)]
pub struct ChangeDetector {
    /// What the previous look saw, per key.
    seen: BTreeMap<String, Fingerprint>,
    /// What was last acted on (loaded, or failed to load), per key.
    acted: BTreeMap<String, Fingerprint>,
}

/// What a look at one key calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing new, or not settled yet.
    None,
    /// New or changed, and unchanged since the previous look: (re)load it.
    Settled,
    /// Gone for two looks in a row: unload it.
    Removed,
}

impl ChangeDetector {
    /// Records that `key` was acted on as it is now (loaded at start, or loaded on request).
    pub fn acted_on(&mut self, key: &str, fingerprint: Fingerprint) {
        self.seen.insert(key.to_owned(), fingerprint.clone());
        self.acted.insert(key.to_owned(), fingerprint);
    }

    /// Looks at `key`, which now has `fingerprint` (`None` when it is gone), and says what to do. A settled
    /// change is recorded as acted on: a load that fails is not retried until the files change again.
    pub fn look(&mut self, key: &str, fingerprint: Option<Fingerprint>) -> Change {
        let Some(fingerprint) = fingerprint else {
            if self.seen.remove(key).is_some() {
                return Change::None;
            }
            return if self.acted.remove(key).is_some() {
                Change::Removed
            } else {
                Change::None
            };
        };
        let settled = self.seen.insert(key.to_owned(), fingerprint.clone()).as_ref() == Some(&fingerprint);
        if settled && self.acted.get(key) != Some(&fingerprint) {
            self.acted.insert(key.to_owned(), fingerprint);
            return Change::Settled;
        }
        Change::None
    }

    /// The keys acted on so far.
    pub fn known(&self) -> impl Iterator<Item = &String> {
        self.acted.keys()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn only_numeric_folders_without_leading_zeros_are_versions() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in ["1", "2", "10", "01", "0", "latest", "3a"] {
            std::fs::create_dir(dir.path().join(name)).expect("mkdir");
        }
        std::fs::write(dir.path().join("4"), b"a file, not a folder").expect("write");
        let mut versions = version_folders(dir.path());
        versions.sort_unstable();
        assert_eq!(versions, [1, 2, 10]);
    }

    #[test]
    fn fingerprints_change_with_size_and_new_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("1")).expect("mkdir");
        std::fs::write(dir.path().join("1/model.onnx"), b"abc").expect("write");
        let before = Fingerprint::of(dir.path());
        assert_eq!(before, Fingerprint::of(dir.path()));
        std::fs::write(dir.path().join("1/model.onnx"), b"abcd").expect("write");
        assert_ne!(before, Fingerprint::of(dir.path()));
        let grown = Fingerprint::of(dir.path());
        std::fs::write(dir.path().join("config.pbtxt"), b"").expect("write");
        assert_ne!(grown, Fingerprint::of(dir.path()));
    }

    #[test]
    fn an_emptied_version_folder_and_a_removed_one_differ() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.pbtxt"), b"").expect("write");
        std::fs::create_dir(dir.path().join("2")).expect("mkdir");
        let emptied = Fingerprint::of(dir.path());
        std::fs::remove_dir(dir.path().join("2")).expect("rmdir");
        assert_ne!(emptied, Fingerprint::of(dir.path()));
    }

    #[test]
    fn a_file_still_growing_is_not_acted_on_until_it_settles() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut detector = ChangeDetector::default();
        let path = dir.path().join("model.onnx");
        let mut file = std::fs::File::create(&path).expect("create");
        file.write_all(b"part one").expect("write");
        file.flush().expect("flush");
        assert_eq!(
            detector.look("m", Some(Fingerprint::of(dir.path()))),
            Change::None,
            "first sight"
        );
        file.write_all(b" and part two").expect("write");
        file.flush().expect("flush");
        assert_eq!(
            detector.look("m", Some(Fingerprint::of(dir.path()))),
            Change::None,
            "still growing"
        );
        assert_eq!(
            detector.look("m", Some(Fingerprint::of(dir.path()))),
            Change::Settled,
            "settled"
        );
        assert_eq!(
            detector.look("m", Some(Fingerprint::of(dir.path()))),
            Change::None,
            "already acted on"
        );
    }

    #[test]
    fn a_failed_load_is_retried_only_when_the_files_change_again() {
        let mut detector = ChangeDetector::default();
        let broken = Fingerprint(vec![(PathBuf::from("model.onnx"), Entry::File(3, None))]);
        let fixed = Fingerprint(vec![(PathBuf::from("model.onnx"), Entry::File(9, None))]);
        detector.look("m", Some(broken.clone()));
        assert_eq!(detector.look("m", Some(broken.clone())), Change::Settled);
        // The load failed; the same files are not tried again.
        assert_eq!(detector.look("m", Some(broken)), Change::None);
        assert_eq!(detector.look("m", Some(fixed.clone())), Change::None);
        assert_eq!(detector.look("m", Some(fixed)), Change::Settled);
    }

    #[test]
    fn a_folder_is_removed_after_two_looks_without_it() {
        let mut detector = ChangeDetector::default();
        detector.acted_on("m", Fingerprint::default());
        assert_eq!(detector.look("m", None), Change::None);
        assert_eq!(detector.look("m", None), Change::Removed);
        assert_eq!(detector.look("m", None), Change::None);
    }
}

//! The project's bundled model repositories, for tests that serve or check copies of their models
//! (included by `#[path]` where needed).

use std::path::{Path, PathBuf};

/// The project's root, where `examples/` and `tests/` are.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A temporary repository holding copies of `models` (from the example or the test repository), so that a
/// test may change them without touching the bundled ones.
pub fn repository(models: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for model in models {
        let source = ["examples/model_repository", "tests/model_repository"]
            .iter()
            .map(|repository| repo_root().join(repository).join(model))
            .find(|path| path.is_dir())
            .expect("a bundled model");
        copy(&source, &dir.path().join(model));
    }
    dir
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

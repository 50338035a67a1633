//! Reading a model's files safely: every file Ferry opens for a model is a regular file inside that model's
//! folder (symbolic links are followed, but must not lead out of it), and is read with a size bound, so a
//! FIFO, a device, a link to `/etc/shadow` or a huge config can neither block, leak nor exhaust the server.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

/// The largest `config.pbtxt` Ferry reads; Triton's own configs are a few kilobytes.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Reads `name` (such as `config.pbtxt`) from `model_dir`: `None` when it does not exist, an error when it
/// is not a regular file inside the folder or is larger than `limit` bytes.
pub fn read_text(model_dir: &Path, name: &str, limit: u64) -> Result<Option<String>, String> {
    let path = model_dir.join(name);
    match std::fs::symlink_metadata(&path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        Ok(_) => {}
    }
    let path = contained_file(model_dir, &path)?;
    let file =
        std::fs::File::open(&path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    if text.len() as u64 > limit {
        return Err(format!(
            "{} is larger than the {limit} bytes a config may have",
            path.display()
        ));
    }
    Ok(Some(text))
}

/// Checks that `path` names a regular file inside `model_dir` once links are resolved, and returns it. The
/// message never says what lies outside the folder, only that the path leads there.
pub fn contained_file(model_dir: &Path, path: &Path) -> Result<PathBuf, String> {
    let folder = model_dir
        .canonicalize()
        .map_err(|error| format!("cannot read model folder {}: {error}", model_dir.display()))?;
    let resolved = match path.canonicalize() {
        Ok(resolved) => resolved,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("model file {} does not exist", path.display()));
        }
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    if !resolved.starts_with(&folder) {
        return Err(format!(
            "{} leads outside its model folder {}; model files must stay inside it",
            path.display(),
            model_dir.display()
        ));
    }
    let metadata =
        std::fs::metadata(&resolved).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    if !metadata.is_file() {
        return Err(format!(
            "{} is not a regular file (a folder, FIFO, socket or device); model files must be regular files",
            path.display()
        ));
    }
    Ok(path.to_path_buf())
}

/// Whether `name` is a plain file name: one path component, not `.` or `..`, no separator and no NUL.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_inside_the_folder_are_read() {
        let outside = tempfile::tempdir().expect("temp dir");
        std::fs::write(outside.path().join("secret"), b"no").expect("write");
        let dir = tempfile::tempdir().expect("temp dir");
        let model = dir.path();
        std::fs::write(model.join("config.pbtxt"), b"max_batch_size: 1").expect("write");
        assert_eq!(
            read_text(model, "config.pbtxt", 100).expect("reads").as_deref(),
            Some("max_batch_size: 1")
        );
        assert_eq!(read_text(model, "missing.pbtxt", 100).expect("absent"), None);
        let too_big = read_text(model, "config.pbtxt", 4).expect_err("over the bound");
        assert!(too_big.contains("larger than the 4 bytes"), "{too_big}");

        std::os::unix::fs::symlink(outside.path().join("secret"), model.join("link")).expect("symlink");
        let escape = read_text(model, "link", 100).expect_err("outside");
        assert!(escape.contains("outside its model folder"), "{escape}");

        let fifo = model.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success(), "mkfifo");
        let blocked = read_text(model, "fifo", 100).expect_err("not regular");
        assert!(blocked.contains("not a regular file"), "{blocked}");

        std::os::unix::fs::symlink(model.join("loop"), model.join("loop")).expect("symlink loop");
        assert!(read_text(model, "loop", 100).is_err());
    }

    #[test]
    fn plain_file_names_have_one_component() {
        for good in ["model.onnx", "model.v2.onnx", "..onnx"] {
            assert!(is_plain_file_name(good), "{good}");
        }
        for bad in ["", ".", "..", "../x", "/etc/shadow", "a/b", "a\\b", "a\0b"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }
}

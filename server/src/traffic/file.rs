//! `traffic.json`, a model's policy on disk, next to its `config.pbtxt`: read strictly and bounded, written
//! whole (a temporary file, synced, renamed over the old one, the folder synced) so that a crash leaves the
//! old policy or the new one, never half of either.

use std::{
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::policy::PolicySpec;

/// The policy file's name in a model's folder.
pub const FILE_NAME: &str = "traffic.json";
/// The temporary file a write goes through.
pub const TEMP_NAME: &str = ".traffic.json.tmp";
/// The largest policy file Ferry reads, in bytes.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// What tells a changed file from an unchanged one: its size and modification time (`None`: no file).
pub type Stamp = Option<(u64, Option<SystemTime>)>;

/// The policy file of the model in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// The file's stamp now.
pub fn stamp(dir: &Path) -> Stamp {
    fs::metadata(path(dir)).ok().map(|m| (m.len(), m.modified().ok()))
}

/// Reads the policy of the model in `dir`: `Ok(None)` without a file, an error naming the file and the
/// field otherwise.
pub fn read(dir: &Path) -> Result<Option<PolicySpec>, String> {
    let path = path(dir);
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("{}: cannot read: {error}", path.display())),
    };
    let mut text = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|error| format!("{}: cannot read: {error}", path.display()))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{}: larger than the {MAX_FILE_BYTES} bytes a traffic file may have",
            path.display()
        ));
    }
    let spec: PolicySpec =
        serde_json::from_slice(&text).map_err(|error| format!("{}: {error}", path.display()))?;
    spec.check()
        .map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(Some(spec))
}

/// Writes `spec` as the policy of the model in `dir`, atomically and durably.
pub fn write(dir: &Path, spec: &PolicySpec) -> Result<(), String> {
    let mut text =
        serde_json::to_vec_pretty(spec).map_err(|error| format!("cannot write the policy: {error}"))?;
    text.push(b'\n');
    let temp = dir.join(TEMP_NAME);
    let target = path(dir);
    let fail = |what: &str, error: std::io::Error| format!("{}: cannot {what}: {error}", target.display());
    let mut file = fs::File::create(&temp).map_err(|e| fail("create its temporary file", e))?;
    file.write_all(&text).map_err(|e| fail("write", e))?;
    file.sync_all().map_err(|e| fail("sync", e))?;
    drop(file);
    fs::rename(&temp, &target).map_err(|e| fail("rename the temporary file over it", e))?;
    // The rename is durable once the folder is synced.
    fs::File::open(dir)
        .and_then(|folder| folder.sync_all())
        .map_err(|e| fail("sync its folder", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_policy_reads_back_and_a_bad_one_names_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(read(dir.path()), Ok(None));
        let spec: PolicySpec =
            serde_json::from_str(r#"{"labels": {"stable": 1}, "split": {"stable": 100}}"#).expect("spec");
        write(dir.path(), &spec).expect("write");
        assert_eq!(read(dir.path()), Ok(Some(spec)));
        assert!(!dir.path().join(TEMP_NAME).exists());
        fs::write(path(dir.path()), r#"{"labels": {"stable": "one"}}"#).expect("bad file");
        let error = read(dir.path()).expect_err("bad file");
        assert!(error.contains("traffic.json: invalid type"), "{error}");
        fs::write(path(dir.path()), vec![b' '; MAX_FILE_BYTES as usize + 1]).expect("big file");
        let error = read(dir.path()).expect_err("big file");
        assert!(error.contains("larger than the 65536 bytes"), "{error}");
    }
}

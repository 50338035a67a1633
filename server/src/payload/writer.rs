//! The writer thread of one version's payload log: takes records from the queue, turns them into JSON lines
//! and appends them to `<dir>/<model>/<version>/payload-<n>.jsonl`. A file that would pass the size limit with
//! the next line is flushed, fsynced and closed first, so a record is never split across files; past the
//! file count the oldest file is deleted. Numbering continues after the highest file already there, so a
//! restart or a reload appends new files instead of overwriting old ones, and a file is only ever created
//! new, so two writers of one version (the old one draining during a reload) never share one. The thread
//! ends, flushing and fsyncing its file, when the version is dropped.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Component, Path, PathBuf},
    sync::{atomic::Ordering, mpsc::Receiver},
};

use super::{PayloadLogOptions, Record, Shared};
use crate::Error;

/// The log files of one version.
pub(super) struct Files {
    dir: PathBuf,
    max_file_bytes: u64,
    max_files: usize,
    /// The number of the file being written, and the numbers of the older ones still there.
    number: u64,
    older: std::collections::VecDeque<u64>,
    file: Option<BufWriter<File>>,
    size: u64,
}

impl Files {
    /// The files of version `version` of model `model` under `options.dir`, whose folder is created here
    /// so that a folder Ferry cannot write fails the load, not every request.
    pub(super) fn open(options: &PayloadLogOptions, model: &str, version: u64) -> Result<Self, Error> {
        // A model name is one folder name; anything else must not choose where files go.
        let plain = matches!(
            Path::new(model).components().collect::<Vec<_>>().as_slice(),
            [Component::Normal(_)]
        );
        if !plain {
            return Err(Error::ModelLoad(format!(
                "model name '{model}' cannot name a payload log folder"
            )));
        }
        let dir = options.dir.join(model).join(version.to_string());
        std::fs::create_dir_all(&dir).map_err(|error| {
            Error::ModelLoad(format!(
                "cannot create the payload log folder {}: {error}",
                dir.display()
            ))
        })?;
        let mut numbers: Vec<u64> = std::fs::read_dir(&dir)
            .map_err(|error| Error::ModelLoad(format!("cannot read {}: {error}", dir.display())))?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name();
                name.to_str()?
                    .strip_prefix("payload-")?
                    .strip_suffix(".jsonl")?
                    .parse()
                    .ok()
            })
            .collect();
        numbers.sort_unstable();
        let number = numbers.last().map_or(0, |last| last + 1);
        Ok(Files {
            dir,
            max_file_bytes: options.max_file_bytes,
            max_files: options.max_files.max(1),
            number,
            older: numbers.into(),
            file: None,
            size: 0,
        })
    }

    fn path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("payload-{number}.jsonl"))
    }

    /// Appends `line` (newline included), starting the next file first when it would pass the size limit.
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.file.is_some() && self.size > 0 && self.size + line.len() as u64 > self.max_file_bytes {
            self.close()?;
            self.older.push_back(self.number);
            self.number += 1;
        }
        if self.file.is_none() {
            // Room for the new file: the oldest go.
            while self.older.len() + 1 > self.max_files {
                if let Some(oldest) = self.older.pop_front() {
                    let _ = std::fs::remove_file(self.path(oldest));
                }
            }
            // Each file belongs to one writer: a number another writer took meanwhile (the version being
            // replaced by a reload still drains its queue) is skipped.
            let file = loop {
                match File::options()
                    .write(true)
                    .create_new(true)
                    .open(self.path(self.number))
                {
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => self.number += 1,
                    other => break other?,
                }
            };
            self.size = 0;
            self.file = Some(BufWriter::new(file));
        }
        if let Some(file) = &mut self.file {
            file.write_all(line)?;
            self.size += line.len() as u64;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }

    /// Flushes, fsyncs and closes the file being written.
    fn close(&mut self) -> std::io::Result<()> {
        if let Some(file) = self.file.take() {
            let file = file.into_inner().map_err(|error| error.into_error())?;
            file.sync_all()?;
        }
        Ok(())
    }
}

/// The writer loop: every record the queue holds is written, then the file flushed, until the version ends.
pub(super) fn run(shared: &Shared, mut files: Files, receiver: Receiver<Record>) {
    let mut warned = false;
    let report = |result: std::io::Result<()>, warned: &mut bool| {
        if let Err(error) = result
            && !*warned
        {
            *warned = true;
            tracing::warn!(model = %shared.model, version = shared.version, %error, "payload log write failed");
        }
    };
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(record) = next {
            shared.queued.taken(record.capture.held);
            let mut line =
                serde_json::to_vec(&super::record::to_json(&shared.model, shared.version, &record))
                    .unwrap_or_default();
            line.push(b'\n');
            drop(record);
            let result = files.append(&line);
            let counter = if result.is_ok() {
                &shared.written
            } else {
                &shared.dropped
            };
            counter.fetch_add(1, Ordering::Relaxed);
            report(result, &mut warned);
            next = receiver.try_recv().ok();
        }
        report(files.flush(), &mut warned);
    }
    report(files.close(), &mut warned);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path, max_file_bytes: u64, max_files: usize) -> PayloadLogOptions {
        PayloadLogOptions {
            dir: dir.to_path_buf(),
            max_file_bytes,
            max_files,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("m/3"))
            .expect("folder")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn files_rotate_whole_lines_keep_the_newest_and_continue_after_a_restart() {
        let root = tempfile::tempdir().expect("temp dir");
        let mut files = Files::open(&options(root.path(), 25, 2), "m", 3).expect("opens");
        for line in [
            "0123456789\n",
            "abcdefghij\n",
            "ABCDEFGHIJ\n",
            "klmnopqrst\n",
            "KLMNOPQRST\n",
        ] {
            files.append(line.as_bytes()).expect("written");
        }
        files.close().expect("closed");
        // Two lines of 11 bytes fit 25; the third starts a new file; past two files the oldest goes.
        assert_eq!(names(root.path()), ["payload-1.jsonl", "payload-2.jsonl"]);
        let read = |n: u64| std::fs::read_to_string(root.path().join(format!("m/3/payload-{n}.jsonl")));
        assert_eq!(read(1).expect("file"), "ABCDEFGHIJ\nklmnopqrst\n");
        assert_eq!(read(2).expect("file"), "KLMNOPQRST\n");
        // A new writer for the same version appends a new file instead of overwriting.
        let mut files = Files::open(&options(root.path(), 25, 2), "m", 3).expect("opens");
        files.append(b"again\n").expect("written");
        files.close().expect("closed");
        assert_eq!(names(root.path()), ["payload-2.jsonl", "payload-3.jsonl"]);
        // Two writers of the same version, as during a reload, each get files of their own.
        let mut old = Files::open(&options(root.path(), 25, 10), "m", 3).expect("opens");
        let mut new = Files::open(&options(root.path(), 25, 10), "m", 3).expect("opens");
        old.append(b"old\n").expect("written");
        new.append(b"new\n").expect("written");
        old.close().expect("closed");
        new.close().expect("closed");
        assert_eq!(read(4).expect("file"), "old\n");
        assert_eq!(read(5).expect("file"), "new\n");
    }

    #[test]
    fn a_model_name_cannot_leave_the_log_folder() {
        let root = tempfile::tempdir().expect("temp dir");
        for name in ["..", "a/b", "/abs", ""] {
            assert!(
                Files::open(&options(root.path(), 25, 2), name, 1).is_err(),
                "{name}"
            );
        }
    }
}

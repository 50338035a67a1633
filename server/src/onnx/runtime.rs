//! Finding `libonnxruntime.so` and starting ONNX Runtime once per process.
//!
//! Ferry links ONNX Runtime dynamically so that no binary is downloaded at build time. The library is looked
//! for, in order: the `--onnxruntime-lib` flag or `ORT_DYLIB_PATH`; a `.venv` in the working directory or
//! above the `ferry` executable; the `onnxruntime` package that `python3` imports; the system library path.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use ort::{
    environment::{Environment, GlobalThreadPoolOptions},
    logging::LogLevel,
};

/// What to do when no ONNX Runtime library can be found; printed as the single line `ferry` exits with.
pub const MISSING_LIBRARY_HELP: &str = "ONNX Runtime was not found: run `make setup` (or `pip install onnxruntime`, \
     or `pip install onnxruntime-gpu` for CUDA), or pass --onnxruntime-lib /path/to/libonnxruntime.so";

/// The name the dynamic loader searches the system path for.
const SYSTEM_LIBRARY: &str = "libonnxruntime.so";

/// Where the ONNX Runtime library was found, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibrarySource {
    /// The path handed to the dynamic loader.
    pub path: PathBuf,
    /// Which rule of the search order found it, for the start-up log.
    pub found_by: &'static str,
}

/// Runs the search order; `explicit` is the flag's value or `ORT_DYLIB_PATH`.
pub fn find_library(explicit: Option<&Path>) -> Option<LibrarySource> {
    if let Some(path) = explicit {
        return Some(LibrarySource {
            path: path.to_path_buf(),
            found_by: "--onnxruntime-lib / ORT_DYLIB_PATH",
        });
    }
    let mut roots: Vec<PathBuf> = std::env::current_dir().into_iter().collect();
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    if let Some(path) = roots.iter().find_map(|root| library_in_venv(&root.join(".venv"))) {
        return Some(LibrarySource {
            path,
            found_by: "the project's .venv",
        });
    }
    if let Some(path) = library_from_python() {
        return Some(LibrarySource {
            path,
            found_by: "the onnxruntime package of python3",
        });
    }
    system_library_exists().then(|| LibrarySource {
        path: PathBuf::from(SYSTEM_LIBRARY),
        found_by: "the system library path",
    })
}

/// The library inside `<venv>/lib/python3.*/site-packages/onnxruntime/capi/`.
fn library_in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("python3"))
        .find_map(|entry| library_in_package(&entry.path().join("site-packages/onnxruntime")))
}

/// The `libonnxruntime.so*` file in an installed `onnxruntime` Python package.
fn library_in_package(package: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(package.join("capi"))
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("libonnxruntime.so"))
        })
        .collect();
    // Prefer the fully versioned file name, which is the real library rather than a link to it.
    candidates.sort_by_key(|path| std::cmp::Reverse(path.as_os_str().len()));
    candidates.into_iter().next()
}

fn library_from_python() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let package = String::from_utf8(output.stdout).ok()?;
    library_in_package(Path::new(package.trim()))
}

fn system_library_exists() -> bool {
    let listed = Command::new("ldconfig")
        .arg("-p")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains(SYSTEM_LIBRARY))
        .unwrap_or(false);
    listed
        || ["/usr/lib", "/usr/local/lib", "/usr/lib/x86_64-linux-gnu"]
            .iter()
            .any(|dir| Path::new(dir).join(SYSTEM_LIBRARY).exists())
}

/// Loads the library and creates the process-wide ONNX Runtime environment, with ONNX Runtime's global
/// thread pools: one intra-op thread per core, shared by every session that does not ask for threads of
/// its own (`super::session::shares_threads`), so that a server of a thousand models runs as many ONNX
/// Runtime threads as one of a single model.
///
/// A process holds one ONNX Runtime library and one environment: later calls (several servers in one test
/// process) get the environment the first call made, whatever their `source`.
pub fn start(source: &LibrarySource) -> Result<Environment, String> {
    static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);
    let mut started = ENVIRONMENT
        .lock()
        .map_err(|_| "ONNX Runtime start-up panicked earlier".to_owned())?;
    if let Some(environment) = started.as_ref() {
        return Ok(environment.clone());
    }
    let builder = ort::init_from(&source.path).map_err(|error| {
        format!(
            "cannot load ONNX Runtime from {} (found by {}): {error}. {MISSING_LIBRARY_HELP}",
            source.path.display(),
            source.found_by
        )
    })?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let shared = GlobalThreadPoolOptions::default()
        .with_intra_threads(cores)
        .and_then(|options| options.with_inter_threads(1))
        // As the sessions' own pools by default (`ferry.intra_op_spinning`): idle threads sleep.
        .and_then(|options| options.with_spin_control(false))
        .map_err(|error| format!("configuring ONNX Runtime's shared thread pool: {error}"))?;
    let environment = builder
        .with_name("ferry")
        .with_global_thread_pool(shared)
        .build()
        .map_err(|error| format!("starting ONNX Runtime: {error}"))?;
    environment.set_log_level(log_level());
    *started = Some(environment.clone());
    Ok(environment)
}

/// The most detailed ONNX Runtime messages the process's log shows. The `ort` crate starts ONNX Runtime
/// at its most verbose level and leaves filtering to `tracing`; ONNX Runtime then formats every verbose
/// message (dozens for each session it opens) only for it to be dropped, which took about a fifth of the
/// CPU time of loading a thousand small models. Asked once, at start: a log level raised later (the
/// logging API) shows ONNX Runtime's messages from this level up.
fn log_level() -> LogLevel {
    use tracing::Level;
    // The target of the events `ort` turns ONNX Runtime's messages into.
    const TARGET: &str = "ort::logging";
    if tracing::enabled!(target: TARGET, Level::TRACE) {
        LogLevel::Verbose
    } else if tracing::enabled!(target: TARGET, Level::INFO) {
        LogLevel::Info
    } else if tracing::enabled!(target: TARGET, Level::WARN) {
        LogLevel::Warning
    } else {
        LogLevel::Error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_path_wins() {
        let found = find_library(Some(Path::new("/opt/ort/libonnxruntime.so.1.24.4")));
        assert_eq!(
            found.map(|s| s.path),
            Some(PathBuf::from("/opt/ort/libonnxruntime.so.1.24.4"))
        );
    }

    #[test]
    fn a_venv_library_is_found_by_layout() {
        let venv = tempfile::tempdir().expect("temp dir");
        let capi = venv.path().join("lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).expect("mkdir");
        std::fs::write(capi.join("libonnxruntime.so.1.24.4"), b"").expect("write");
        std::fs::write(capi.join("onnxruntime_pybind11_state.so"), b"").expect("write");
        assert_eq!(
            library_in_venv(venv.path()),
            Some(capi.join("libonnxruntime.so.1.24.4"))
        );
        assert_eq!(library_in_venv(&venv.path().join("missing")), None);
    }
}

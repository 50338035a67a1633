//! The deployment manifests in `deploy/k8s` and `deploy/kserve`, checked by `tests/python/test_deploy.py`
//! against the Kubernetes and KServe API schemas (the typed models of the `kubernetes` and `kserve` Python
//! packages, refusing unknown fields) and against this crate's `ferry` binary: its `--help` flags, a real
//! server started with each container's arguments, its gRPC health services and its metric names.

use std::{path::Path, process::Command};

#[test]
fn manifests_fit_the_kubernetes_and_kserve_schemas_and_ferry() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup` to create the Python environment with kubernetes and kserve",
        python.display()
    );
    let status = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/python/test_deploy.py",
        ])
        .current_dir(&root)
        .env("FERRY_BINARY", env!("CARGO_BIN_EXE_ferry"))
        .env("FERRY_REPO_ROOT", &root)
        .stdin(std::process::Stdio::null())
        .status()
        .expect("pytest starts");
    assert!(status.success(), "tests/python/test_deploy.py failed: {status}");
}

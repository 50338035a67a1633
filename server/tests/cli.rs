//! The `ferry` binary's command line: help text and the one-line errors a user sees at start-up.

use std::process::Command;

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

#[test]
fn help_explains_the_triton_flags() {
    let output = ferry().arg("--help").output().expect("ferry runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--model-repository",
        "--grpc-port",
        "--http-port",
        "--metrics-port",
        "--grpc-address",
        "--log-verbose",
        "--onnxruntime-lib",
        "--http-address",
        "--metrics-address",
        "--allow-metrics",
        "--model-control-mode",
        "--repository-poll-secs",
        "--load-model",
        "--strict-readiness",
        "--log-format",
        "--otlp-endpoint",
        "--exit-timeout-secs",
        "--shutdown-drain-secs",
        "--max-connections",
        "--max-concurrent-streams",
        "--header-read-timeout-secs",
        "--connection-idle-timeout-secs",
        "--grpc-infer-response-compression-level",
        "--grpc-use-ssl",
        "--grpc-use-ssl-mutual",
        "--grpc-server-cert",
        "--grpc-server-key",
        "--grpc-root-cert",
        "--http-use-ssl",
        "--http-use-ssl-mutual",
        "--http-server-cert",
        "--http-server-key",
        "--http-root-cert",
        "--metrics-use-ssl",
        "--metrics-use-ssl-mutual",
        "--metrics-server-cert",
        "--metrics-server-key",
        "--metrics-root-cert",
        "--tls-handshake-timeout-secs",
        "--tls-reload-poll-secs",
        "--cache-config",
        "--response-cache-byte-size",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    assert!(!help.contains("not served yet"), "every port is served now");
}

#[test]
fn poll_mode_needs_a_poll_interval() {
    let repository = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/model_repository");
    let output = ferry()
        .args([
            "--model-repository",
            repository,
            "--model-control-mode",
            "poll",
            "--repository-poll-secs",
            "0",
        ])
        .output()
        .expect("ferry runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--repository-poll-secs"));
}

#[test]
fn an_unloadable_onnxruntime_library_is_one_line_naming_the_fix() {
    let repository = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/model_repository");
    let output = ferry()
        .args([
            "--model-repository",
            repository,
            "--onnxruntime-lib",
            "/nonexistent/libonnxruntime.so",
        ])
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .expect("ferry runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].contains("/nonexistent/libonnxruntime.so"), "{stderr}");
    assert!(lines[0].contains("pip install onnxruntime"), "{stderr}");
}

#[test]
fn a_missing_repository_is_reported() {
    let output = ferry()
        .args(["--model-repository", "/nonexistent/models", "--grpc-port", "0"])
        .output()
        .expect("ferry runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/models"), "{stderr}");
}

/// Triton's `--cache-config <cache>,<key>=<value>`: Ferry has the `local` cache and its `size` only, and
/// refuses anything else at start, as a usage error naming it; with Triton's deprecated
/// `--response-cache-byte-size` too it is Triton's "Incompatible flags" (`command_line_parser.cc`).
#[test]
fn a_cache_config_ferry_cannot_honour_is_refused_at_start() {
    for (flags, named) in [
        (&["--cache-config", "redis,host=localhost"][..], "'redis'"),
        (&["--cache-config", "local,size=1G"][..], "'1G'"),
        (
            &[
                "--cache-config",
                "local,size=1024",
                "--response-cache-byte-size",
                "1024",
            ][..],
            "--response-cache-byte-size",
        ),
    ] {
        let output = ferry()
            .args(["--model-repository", "/nonexistent/models"])
            .args(flags)
            .output()
            .expect("ferry runs");
        assert_eq!(output.status.code(), Some(2), "{flags:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{flags:?}: {stderr}");
    }
}

//! Ferry called from other languages' stacks, each against a real server on loopback ports: KServe's own Python
//! clients (`tests/python/test_kserve.py`), a Go client generated from Ferry's `.proto` files (`clients/go`), a
//! Node.js client on `@grpc/grpc-js` (`clients/node`), and `ghz` running the docs' load command through server
//! reflection. `make clients-setup` installs the Go tools and Node packages (CI runs it); where a toolchain is
//! missing on a developer's machine the test says so loudly and passes, but under CI (`CI` set) it fails.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use ferry_tests::{HttpFrontEnd, TestServer, repo_root, run_pytest};
use serde_json::Value;
use tokio::{process::Command, sync::Mutex};

/// One client suite at a time: each starts its own server and its own toolchain, and the machines are small.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Where `clients/setup.sh` installs the Go binaries (protoc plugins, ghz).
fn tools_bin() -> PathBuf {
    repo_root().join("target/tools/bin")
}

/// `name` from the project's tools folder or from `PATH`; `None` (after a loud message, or a failure under CI)
/// when it is on neither.
fn tool(name: &str, install: &str) -> Option<PathBuf> {
    let local = tools_bin().join(name);
    if local.is_file() {
        return Some(local);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if on_path.is_none() {
        let message = format!("`{name}` is not installed ({install}), so this client test cannot run");
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("\n!!!!!!!! SKIPPED: {message} !!!!!!!!\n");
    }
    on_path
}

/// `PATH` with the tools folder first.
fn path_with_tools() -> std::ffi::OsString {
    std::env::join_paths(
        std::iter::once(tools_bin()).chain(std::env::var_os("PATH").iter().flat_map(std::env::split_paths)),
    )
    .expect("PATH joins")
}

async fn start() -> (TestServer, HttpFrontEnd) {
    let server = TestServer::with_all_models().await.expect("server");
    let http = server.start_http().await.expect("REST front end");
    (server, http)
}

async fn stop(server: TestServer, http: HttpFrontEnd) {
    http.stop().await;
    server.stop().await;
}

/// Runs `command` in `dir` with the servers' addresses in the environment and says whether it passed, with
/// what it printed going to the test's output.
async fn run_suite(
    program: &Path,
    args: &[&str],
    dir: &Path,
    server: &TestServer,
    http: &HttpFrontEnd,
) -> bool {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("PATH", path_with_tools())
        .env("FERRY_GRPC_URL", server.url())
        .env("FERRY_HTTP_URL", http.url())
        .env("FERRY_REPO_ROOT", repo_root())
        .stdin(Stdio::null())
        .status()
        .await
        .unwrap_or_else(|error| panic!("{} does not start: {error}", program.display()))
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_grpc_and_rest_clients_get_the_answers_onnxruntime_gives() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (server, http) = start().await;
    let status = run_pytest(
        "test_kserve.py",
        &[("FERRY_GRPC_URL", server.url()), ("FERRY_HTTP_URL", http.url())],
    )
    .await;
    stop(server, http).await;
    assert!(status.success(), "the KServe client suite failed: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_generated_from_the_protos_passes_its_interop_suite() {
    let setup = "`make clients-setup`";
    let (Some(go), Some(_), Some(_), Some(_)) = (
        tool("go", "the Go toolchain"),
        tool("protoc", "Debian's protobuf-compiler"),
        tool("protoc-gen-go", setup),
        tool("protoc-gen-go-grpc", setup),
    ) else {
        return;
    };
    let _turn = ONE_AT_A_TIME.lock().await;
    // The stubs are generated afresh from proto/proto, so the suite always speaks the protos as they are.
    let generated = Command::new("bash")
        .arg(repo_root().join("clients/go/generate.sh"))
        .env("PATH", path_with_tools())
        .status()
        .await
        .expect("generate.sh starts");
    assert!(generated.success(), "clients/go/generate.sh failed: {generated}");
    let (server, http) = start().await;
    let passed = run_suite(
        &go,
        &["test", "-count=1", "-v", "./..."],
        &repo_root().join("clients/go"),
        &server,
        &http,
    )
    .await;
    stop(server, http).await;
    assert!(passed, "the Go client suite (clients/go) failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_passes_its_interop_suite() {
    let Some(node) = tool("node", "Node.js") else {
        return;
    };
    let packages = repo_root().join("clients/node/node_modules/@grpc/grpc-js");
    if !packages.is_dir() {
        let message =
            "clients/node has no node_modules (run `make clients-setup`), so the Node suite cannot run";
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("\n!!!!!!!! SKIPPED: {message} !!!!!!!!\n");
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let (server, http) = start().await;
    let passed = run_suite(
        &node,
        &["--test", "interop.test.js"],
        &repo_root().join("clients/node"),
        &server,
        &http,
    )
    .await;
    stop(server, http).await;
    assert!(passed, "the Node.js client suite (clients/node) failed");
}

/// The address every documented command dials, replaced by the test server's.
const DOCUMENTED_ADDRESS: &str = "127.0.0.1:8001";

/// Every `ghz` command in README.md and docs/*.md, as written (continuation lines joined, the quoted `-d`
/// document whole), with the file it is in.
fn documented_ghz_commands() -> Vec<(String, String)> {
    let mut files = vec![repo_root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo_root().join("docs"))
        .expect("docs/ lists")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut commands = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("markdown reads");
        let mut command: Option<String> = None;
        for line in text.lines() {
            match command.as_mut() {
                Some(open) => open.push_str(&format!("\n{line}")),
                None if line.starts_with("ghz ") => command = Some(line.to_owned()),
                None => continue,
            }
            let open = command.as_deref().expect("a command is open");
            // A command ends at a line with no continuation, outside single quotes.
            if !line.ends_with('\\') && open.matches('\'').count().is_multiple_of(2) {
                let name = file
                    .strip_prefix(repo_root())
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                commands.push((name, command.take().expect("a command is open")));
            }
        }
        assert!(command.is_none(), "{}: a ghz command never ends", file.display());
    }
    commands
}

/// `command` made to run here: JSON output, the test server's address and, for a timed run (`-z`), two
/// seconds in place of the documented duration (the CI machine is small and shared).
fn runnable_here(command: &str, address: &str) -> String {
    assert!(
        command.contains(DOCUMENTED_ADDRESS),
        "a documented ghz command should dial {DOCUMENTED_ADDRESS}: {command}"
    );
    let mut words: Vec<String> = command.split(' ').map(str::to_owned).collect();
    let duration = words.iter().position(|word| word == "-z").map(|at| at + 1);
    match duration {
        Some(at) if at < words.len() => {
            // Without it ghz closes its connections at the deadline and counts the calls then in flight as
            // Unavailable or Canceled: errors of its own making that the summary could not tell from Ferry's.
            assert!(
                command.contains("--duration-stop wait"),
                "a timed ghz command should say --duration-stop wait: {command}"
            );
            words[at] = "2s".into();
        }
        _ => assert!(
            words.iter().any(|word| word == "-n"),
            "a documented ghz command should be bounded by -z or -n: {command}"
        ),
    }
    let command = words.join(" ").replace(DOCUMENTED_ADDRESS, address);
    format!("ghz --format json {}", &command["ghz ".len()..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghz_runs_the_documented_load_commands_through_reflection_with_no_errors() {
    let commands = documented_ghz_commands();
    assert!(
        !commands.is_empty(),
        "README.md and docs/ should show a ghz load command"
    );
    if tool("ghz", "`make clients-setup`").is_none() {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let server = TestServer::with_all_models().await.expect("server");
    for (file, documented) in &commands {
        let command = runnable_here(documented, &server.url());
        let output = Command::new("bash")
            .args(["-c", &command])
            .env("PATH", path_with_tools())
            .stdin(Stdio::null())
            .output()
            .await
            .expect("bash starts");
        assert!(
            output.status.success(),
            "{file}: `{command}` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let summary: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("{file}: ghz's summary is not JSON ({error})"));
        let count = summary["count"].as_u64().expect("count");
        assert!(count > 0, "{file}: ghz sent no request: {summary}");
        assert_eq!(
            summary["statusCodeDistribution"],
            serde_json::json!({ "OK": count }),
            "{file}: every request should succeed"
        );
        assert!(
            summary["errorDistribution"]
                .as_object()
                .is_none_or(|errors| errors.is_empty()),
            "{file}: ghz saw errors: {}",
            summary["errorDistribution"]
        );
        eprintln!(
            "{file}: ghz sent {count} requests, all OK, {:.0} per second",
            summary["rps"].as_f64().unwrap_or(0.0)
        );
    }
    server.stop().await;
}

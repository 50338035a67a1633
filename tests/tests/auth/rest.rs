//! Every REST route of Triton's HTTP protocol, for every caller of the table.

use ferry_tests::{ShmObject, rest_request_with_headers};

use super::{Caller, start};

/// Every REST route (Triton's paths, with and without versions, repository names and regions): the scope
/// it needs and the admin's status.
fn rest_routes(shm_key: &str) -> Vec<(&'static str, String, String, Option<&'static str>, u16)> {
    let infer = serde_json::json!({"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": vec![1; 16]},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": vec![2; 16]},
    ]})
    .to_string();
    let register = serde_json::json!({"key": shm_key, "offset": 0, "byte_size": 64}).to_string();
    let none = String::new;
    vec![
        ("GET", "/v2/health/live".into(), none(), None, 200),
        ("GET", "/v2/health/ready".into(), none(), None, 200),
        ("GET", "/v2/models/simple/ready".into(), none(), None, 200),
        (
            "GET",
            "/v2/models/simple/versions/1/ready".into(),
            none(),
            None,
            200,
        ),
        ("GET", "/v2".into(), none(), Some("metadata"), 200),
        ("GET", "/v2/models/simple".into(), none(), Some("metadata"), 200),
        (
            "GET",
            "/v2/models/simple/versions/1".into(),
            none(),
            Some("metadata"),
            200,
        ),
        (
            "GET",
            "/v2/models/simple/config".into(),
            none(),
            Some("metadata"),
            200,
        ),
        (
            "GET",
            "/v2/models/simple/versions/1/config".into(),
            none(),
            Some("metadata"),
            200,
        ),
        ("GET", "/v2/models/stats".into(), none(), Some("stats"), 200),
        (
            "GET",
            "/v2/models/simple/stats".into(),
            none(),
            Some("stats"),
            200,
        ),
        (
            "GET",
            "/v2/models/simple/versions/1/stats".into(),
            none(),
            Some("stats"),
            200,
        ),
        (
            "POST",
            "/v2/models/simple/infer".into(),
            infer.clone(),
            Some("infer"),
            200,
        ),
        (
            "POST",
            "/v2/models/simple/versions/1/infer".into(),
            infer,
            Some("infer"),
            200,
        ),
        // Ferry's drift routes: `simple` does not monitor drift, so an admitted caller gets 404.
        (
            "GET",
            "/v2/models/simple/drift".into(),
            none(),
            Some("stats"),
            404,
        ),
        (
            "POST",
            "/v2/models/simple/versions/1/drift/baseline".into(),
            none(),
            Some("repository"),
            404,
        ),
        (
            "POST",
            "/v2/repository/index".into(),
            none(),
            Some("repository"),
            200,
        ),
        (
            "POST",
            "/v2/repository/other/index".into(),
            none(),
            Some("repository"),
            200,
        ),
        (
            "POST",
            "/v2/repository/models/linear_auto/load".into(),
            none(),
            Some("repository"),
            200,
        ),
        (
            "POST",
            "/v2/repository/models/linear_auto/unload".into(),
            none(),
            Some("repository"),
            200,
        ),
        // Triton refuses a repository name on load and unload (501) once the caller is admitted.
        (
            "POST",
            "/v2/repository/other/models/linear_auto/load".into(),
            none(),
            Some("repository"),
            501,
        ),
        (
            "POST",
            "/v2/repository/other/models/linear_auto/unload".into(),
            none(),
            Some("repository"),
            501,
        ),
        (
            "GET",
            "/v2/systemsharedmemory/status".into(),
            none(),
            Some("shm"),
            200,
        ),
        (
            "POST",
            "/v2/systemsharedmemory/region/rest_region/register".into(),
            register,
            Some("shm"),
            200,
        ),
        (
            "GET",
            "/v2/systemsharedmemory/region/rest_region/status".into(),
            none(),
            Some("shm"),
            200,
        ),
        (
            "POST",
            "/v2/systemsharedmemory/region/rest_region/unregister".into(),
            none(),
            Some("shm"),
            200,
        ),
        (
            "POST",
            "/v2/systemsharedmemory/unregister".into(),
            none(),
            Some("shm"),
            200,
        ),
        // Register needs a region name (400) once the caller is admitted.
        (
            "POST",
            "/v2/systemsharedmemory/register".into(),
            none(),
            Some("shm"),
            400,
        ),
        (
            "GET",
            "/v2/cudasharedmemory/status".into(),
            none(),
            Some("shm"),
            200,
        ),
        (
            "GET",
            "/v2/cudasharedmemory/region/c/status".into(),
            none(),
            Some("shm"),
            404,
        ),
        (
            "POST",
            "/v2/cudasharedmemory/region/c/register".into(),
            "{}".into(),
            Some("shm"),
            400,
        ),
        (
            "POST",
            "/v2/cudasharedmemory/region/c/unregister".into(),
            none(),
            Some("shm"),
            200,
        ),
        (
            "POST",
            "/v2/cudasharedmemory/unregister".into(),
            none(),
            Some("shm"),
            200,
        ),
        (
            "POST",
            "/v2/cudasharedmemory/register".into(),
            none(),
            Some("shm"),
            400,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_route_admits_only_callers_with_its_scope() {
    let secured = start(|_| {}).await;
    let shm = ShmObject::new("auth_rest", 64);
    let routes = rest_routes(&shm.key);
    for caller in Caller::ALL {
        for (method, path, body, scope, admin_status) in &routes {
            let (method, path, body, scope, admin_status) = (*method, path, body, *scope, *admin_status);
            let headers: Vec<(&str, String)> = caller.header().into_iter().collect();
            let reply =
                rest_request_with_headers(secured.http.address, method, path, &headers, body.as_bytes())
                    .await
                    .expect("reply");
            let case = format!("{method} {path} as {caller:?}: {} {}", reply.status, reply.text());
            let error = || -> String {
                serde_json::from_slice::<serde_json::Value>(&reply.body).expect(&case)["error"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            };
            match (scope, caller) {
                (None, _) => assert_eq!(reply.status, 200, "{case}"),
                (Some(scope), Caller::Nobody) => {
                    assert_eq!(reply.status, 401, "{case}");
                    assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{case}");
                    assert!(error().contains(&format!("needs the '{scope}' scope")), "{case}");
                }
                (Some(_), caller) if caller.unauthenticated().is_some() => {
                    assert_eq!(reply.status, 401, "{case}");
                    assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{case}");
                    assert_eq!(Some(error().as_str()), caller.unauthenticated(), "{case}");
                }
                (Some(scope), Caller::Outsider) => {
                    assert_eq!(reply.status, 403, "{case}");
                    assert!(
                        error().starts_with(&format!("identity 'outsider' lacks the '{scope}' scope")),
                        "{case}"
                    );
                }
                (Some(_), _) => assert_eq!(reply.status, admin_status, "{case}"),
            }
        }
    }
    secured.http.stop().await;
    secured.server.stop().await;
}

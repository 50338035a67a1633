//! Identity and authorisation end to end: a real server with an API keys file, a JWKS file and a policy,
//! called over real gRPC (tonic) and real REST on every RPC and route, without credentials, with a wrong key,
//! with an expired, not yet valid, wrong-audience or badly signed token, as an identity without the scope,
//! and as one with it (by key and by token). Also: listings filtered per model, closed APIs, model file
//! uploads, the mTLS identity extension, the audit log, and Triton's restricted groups over tritonclient.
//! Abuse limits (rate and in flight per identity) are in [`limits`].

use std::{
    io::Write,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
};

use ferry_server::{
    ServerOptions,
    auth::{Access, AccessOptions, JwtOptions, keys::hash_key},
    repository::{ControlMode, RepositoryOptions},
};
use ferry_tests::{HttpFrontEnd, TestServer, example_repository};

mod grpc;
mod limits;
mod policies;
mod rest;

const ADMIN_KEY: &str = "admin-key-0123456789";
const OUTSIDER_KEY: &str = "outsider-key-0123456789";
const VIEWER_KEY: &str = "viewer-key-0123456789";
const WRONG_KEY: &str = "wrong-key-0123456789";

/// admin holds every scope; outsider holds `infer` for a model that does not exist, so it passes the layer
/// for inference and is refused by the core once the model is known; viewer sees `simple` only.
const POLICY: &str = r#"
[[grant]]
identity = "admin"
scopes = ["infer", "metadata", "stats", "repository", "shm", "settings"]

[[grant]]
identity = "outsider"
scopes = ["infer"]
models = ["no_such_model"]

[[grant]]
identity = "viewer"
scopes = ["metadata", "stats", "repository"]
models = ["simple"]
"#;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "ferry";

/// The keys tokens are signed with, made once per test run (no private key is committed): an HS256 secret
/// and an ES256 key pair, with the JWKS of their public halves.
struct Tokens {
    hs: jsonwebtoken::EncodingKey,
    es: jsonwebtoken::EncodingKey,
    jwks: String,
}

fn tokens() -> &'static Tokens {
    static TOKENS: OnceLock<Tokens> = OnceLock::new();
    TOKENS.get_or_init(|| {
        use base64::Engine as _;
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let secret = b"the e2e HS256 secret, 32 bytes ok";
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("pair");
        let point = pair.public_key().as_ref();
        let jwks = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "hs", "k": b64(secret)},
            {"kty": "EC", "crv": "P-256", "kid": "es", "x": b64(&point[1..33]), "y": b64(&point[33..65])},
        ]});
        Tokens {
            hs: jsonwebtoken::EncodingKey::from_secret(secret),
            es: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwks: jwks.to_string(),
        }
    })
}

/// A token for `sub`, signed with the ES256 key (`es`) or the HS256 one, with the claims changed by `claims`.
fn token(sub: &str, es256: bool, claims: impl FnOnce(&mut serde_json::Value)) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut body = serde_json::json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600});
    claims(&mut body);
    let keys = tokens();
    let (algorithm, kid, key) = if es256 {
        (jsonwebtoken::Algorithm::ES256, "es", &keys.es)
    } else {
        (jsonwebtoken::Algorithm::HS256, "hs", &keys.hs)
    };
    let mut header = jsonwebtoken::Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &body, key).expect("token")
}

/// The audit lines (JSON) of every server in this test binary.
fn audit_log() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&log);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                ferry_server::auth::AUDIT_TARGET,
            ))
            .with_writer(move || SharedWriter(Arc::clone(&writer)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        log
    })
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The audit lines written so far, as JSON objects' `fields`.
fn audit_lines() -> Vec<serde_json::Value> {
    let log = audit_log().lock().expect("log").clone();
    String::from_utf8_lossy(&log)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|line| line["fields"].clone())
        .collect()
}

/// A secured server: its keys and policy files live as long as it does.
struct Secured {
    server: TestServer,
    http: HttpFrontEnd,
    _files: tempfile::TempDir,
}

fn repository(upload: bool) -> RepositoryOptions {
    RepositoryOptions {
        control_mode: ControlMode::Explicit,
        startup_models: vec!["simple".into(), "mlp_classifier".into()],
        strict_readiness: false,
        allow_model_file_upload: upload,
        ..RepositoryOptions::new(vec![example_repository()])
    }
}

fn server_options(upload: bool) -> ServerOptions {
    TestServer::options(repository(upload), ferry_server::MAX_MESSAGE_BYTES).expect("options")
}

async fn start(change: impl FnOnce(&mut AccessOptions)) -> Secured {
    audit_log();
    let files = tempfile::tempdir().expect("dir");
    let keys: PathBuf = files.path().join("keys");
    let policy: PathBuf = files.path().join("policy.toml");
    let entries = format!(
        "# test identities\nadmin {}\noutsider {}\nviewer {}\n",
        hash_key(ADMIN_KEY.as_bytes()),
        hash_key(OUTSIDER_KEY.as_bytes()),
        hash_key(VIEWER_KEY.as_bytes())
    );
    std::fs::write(&keys, entries).expect("keys");
    std::fs::write(&policy, POLICY).expect("policy");
    let jwks = files.path().join("jwks.json");
    std::fs::write(&jwks, &tokens().jwks).expect("jwks");
    let mut options = AccessOptions {
        api_keys_file: Some(keys),
        policy_file: Some(policy),
        jwt: Some(JwtOptions {
            jwks_file: jwks,
            issuer: Some(ISSUER.to_owned()),
            audience: Some(AUDIENCE.to_owned()),
            leeway_secs: 5,
        }),
        ..AccessOptions::default()
    };
    change(&mut options);
    let access = Access::load(&options).expect("access");
    let server = TestServer::start_with_access(server_options(false), access)
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST");
    Secured {
        server,
        http,
        _files: files,
    }
}

/// Who calls, in the table's cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Nobody,
    WrongKey,
    ExpiredToken,
    NotYetValidToken,
    WrongAudienceToken,
    BadlySignedToken,
    Outsider,
    Admin,
    AdminToken,
}

impl Caller {
    const ALL: [Caller; 9] = [
        Caller::Nobody,
        Caller::WrongKey,
        Caller::ExpiredToken,
        Caller::NotYetValidToken,
        Caller::WrongAudienceToken,
        Caller::BadlySignedToken,
        Caller::Outsider,
        Caller::Admin,
        Caller::AdminToken,
    ];

    /// The header that carries the credential: `authorization` for some keys, `x-api-key` for others, so
    /// both are used; tokens are bearer tokens.
    fn header(self) -> Option<(&'static str, String)> {
        let bearer = |credential: String| Some(("authorization", format!("Bearer {credential}")));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        match self {
            Caller::Nobody => None,
            Caller::WrongKey => Some(("x-api-key", WRONG_KEY.to_owned())),
            Caller::ExpiredToken => bearer(token("admin", false, |c| c["exp"] = (now - 60).into())),
            Caller::NotYetValidToken => bearer(token("admin", true, |c| c["nbf"] = (now + 60).into())),
            Caller::WrongAudienceToken => bearer(token("admin", false, |c| c["aud"] = "other".into())),
            Caller::BadlySignedToken => {
                // The admin's token with the signature of another token.
                let good = token("admin", true, |_| {});
                let other = token("outsider", true, |_| {});
                let (head, _) = good.rsplit_once('.').expect("jwt");
                let (_, signature) = other.rsplit_once('.').expect("jwt");
                bearer(format!("{head}.{signature}"))
            }
            Caller::Outsider => bearer(OUTSIDER_KEY.to_owned()),
            Caller::Admin => bearer(ADMIN_KEY.to_owned()),
            Caller::AdminToken => bearer(token("admin", true, |_| {})),
        }
    }

    /// What the refusal of a credential that identifies no one says, if this caller's does not.
    fn unauthenticated(self) -> Option<&'static str> {
        match self {
            Caller::WrongKey => Some("the API key is not valid"),
            Caller::ExpiredToken => Some("the bearer token has expired ('exp')"),
            Caller::NotYetValidToken => Some("the bearer token is not valid yet ('nbf')"),
            Caller::WrongAudienceToken => {
                Some("the bearer token is not for this server ('aud' is not --jwt-audience)")
            }
            Caller::BadlySignedToken => Some("the bearer token has a signature that does not verify"),
            _ => None,
        }
    }
}

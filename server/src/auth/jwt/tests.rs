use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header, encode};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

use super::*;

const SECRET: &[u8] = b"an HS256 secret of thirty-two bytes!";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// An ES256 key made for the test: the private key to sign with and the JWK of its public half.
fn es256_key(kid: &str) -> (EncodingKey, Value) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("pair");
    let point = pair.public_key().as_ref();
    let jwk =
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..65])});
    (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
}

/// An RS256 key made for the test by the `openssl` command: the private key and the JWK of its public half.
fn rs256_key(dir: &Path, kid: &str) -> (EncodingKey, Value) {
    let pem = dir.join("rsa.pem");
    let der = dir.join("rsa.der");
    let run = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let pem_path = pem.to_str().expect("path");
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        pem_path,
    ]);
    run(&[
        "rsa",
        "-in",
        pem_path,
        "-traditional",
        "-outform",
        "DER",
        "-out",
        der.to_str().expect("path"),
    ]);
    let modulus = run(&["rsa", "-in", pem_path, "-noout", "-modulus"]);
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    let jwk = json!({"kty": "RSA", "kid": kid, "n": b64(&n), "e": "AQAB"});
    (EncodingKey::from_rsa_der(&std::fs::read(der).expect("der")), jwk)
}

fn verifier(dir: &Path, keys: Vec<Value>, audience: Option<&str>) -> JwtVerifier {
    let path = dir.join("jwks.json");
    std::fs::write(&path, json!({"keys": keys}).to_string()).expect("jwks");
    JwtVerifier::load(JwtOptions {
        jwks_file: path,
        issuer: Some("https://issuer.example".to_owned()),
        audience: audience.map(str::to_owned),
        leeway_secs: 30,
    })
    .expect("verifier")
}

fn claims(extra: Value) -> Value {
    let mut claims = json!({
        "sub": "ci-bot",
        "iss": "https://issuer.example",
        "aud": "ferry",
        "exp": now() + 600,
    });
    for (key, value) in extra.as_object().expect("object") {
        if value.is_null() {
            claims.as_object_mut().expect("object").remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

fn token(algorithm: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    encode(&header, claims, key).expect("token")
}

#[test]
fn hs256_rs256_and_es256_tokens_name_their_subject() {
    let dir = tempfile::tempdir().expect("dir");
    let (es, es_jwk) = es256_key("es");
    let (rs, rs_jwk) = rs256_key(dir.path(), "rs");
    let hs_jwk = json!({"kty": "oct", "kid": "hs", "k": b64(SECRET)});
    let verifier = verifier(dir.path(), vec![hs_jwk, es_jwk, rs_jwk], Some("ferry"));
    let hs = EncodingKey::from_secret(SECRET);
    for (algorithm, kid, key) in [
        (Algorithm::HS256, "hs", &hs),
        (Algorithm::ES256, "es", &es),
        (Algorithm::RS256, "rs", &rs),
    ] {
        let token = token(algorithm, kid, key, &claims(json!({})));
        assert_eq!(verifier.verify(&token).as_deref(), Ok("ci-bot"), "{algorithm:?}");
    }
}

#[test]
fn each_failed_check_is_named_and_the_token_never_echoed() {
    let dir = tempfile::tempdir().expect("dir");
    let (es, es_jwk) = es256_key("es");
    let hs_jwk = json!({"kty": "oct", "kid": "hs", "k": b64(SECRET)});
    let verifier = verifier(dir.path(), vec![hs_jwk, es_jwk], Some("ferry"));
    let hs = EncodingKey::from_secret(SECRET);
    let other = EncodingKey::from_secret(b"another secret, not in the key set");
    let cases = [
        (
            token(Algorithm::HS256, "hs", &hs, &claims(json!({"exp": now() - 120}))),
            "has expired ('exp')",
        ),
        (
            token(Algorithm::HS256, "hs", &hs, &claims(json!({"nbf": now() + 120}))),
            "is not valid yet ('nbf')",
        ),
        (
            token(Algorithm::HS256, "hs", &hs, &claims(json!({"aud": "another"}))),
            "is not for this server",
        ),
        (
            token(Algorithm::HS256, "hs", &hs, &claims(json!({"aud": null}))),
            "has no 'aud' claim",
        ),
        (
            token(
                Algorithm::HS256,
                "hs",
                &hs,
                &claims(json!({"iss": "https://evil.example"})),
            ),
            "is from another issuer",
        ),
        (
            token(Algorithm::HS256, "hs", &hs, &claims(json!({"exp": null}))),
            "has no 'exp' claim",
        ),
        (
            token(Algorithm::HS256, "hs", &other, &claims(json!({}))),
            "has a signature that does not verify",
        ),
        (
            token(Algorithm::HS256, "nope", &hs, &claims(json!({}))),
            "names no key of --jwt-jwks",
        ),
        // The HMAC key's algorithm is HS256: a token may not pick another for it.
        (
            token(Algorithm::HS384, "hs", &hs, &claims(json!({}))),
            "is signed with another algorithm",
        ),
        (
            token(Algorithm::ES256, "hs", &es, &claims(json!({}))),
            "is signed with another algorithm",
        ),
        (
            token(Algorithm::HS256, "hs", &hs, &claims(json!({"sub": "two words"}))),
            "cannot name an identity",
        ),
        ("not.a.token".to_owned(), "is not a JWT"),
    ];
    for (token, expected) in cases {
        let error = verifier.verify(&token).expect_err(expected);
        let Error::Unauthenticated(message) = &error else {
            panic!("{error:?}");
        };
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains(&token), "{message}");
    }
    // Within the leeway, a token just expired still passes.
    let just = token(Algorithm::HS256, "hs", &hs, &claims(json!({"exp": now() - 5})));
    assert!(verifier.verify(&just).is_ok());
}

#[test]
fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_keys() {
    let dir = tempfile::tempdir().expect("dir");
    let verifier = verifier(
        dir.path(),
        vec![json!({"kty": "oct", "kid": "hs", "k": b64(SECRET)})],
        None,
    );
    let hs = EncodingKey::from_secret(SECRET);
    let no_aud = claims(json!({"aud": null}));
    let first = token(Algorithm::HS256, "hs", &hs, &no_aud);
    assert!(verifier.verify(&first).is_ok());
    // A new key replaces the old one (mtime granularity and the recheck interval: wait them out).
    std::thread::sleep(RECHECK_INTERVAL + Duration::from_millis(100));
    let new_secret = b"the rotated HS256 secret, 32 byte";
    let path = dir.path().join("jwks.json");
    std::fs::write(
        &path,
        json!({"keys": [{"kty": "oct", "kid": "hs2", "k": b64(new_secret)}]}).to_string(),
    )
    .expect("rotate");
    let second = token(
        Algorithm::HS256,
        "hs2",
        &EncodingKey::from_secret(new_secret),
        &no_aud,
    );
    assert!(verifier.verify(&second).is_ok());
    assert!(verifier.verify(&first).is_err(), "the old key is gone");
    std::thread::sleep(RECHECK_INTERVAL + Duration::from_millis(100));
    std::fs::write(&path, "{ not json").expect("break");
    assert!(
        verifier.verify(&second).is_ok(),
        "a broken file keeps the keys in force"
    );
}

#[test]
fn refuses_unusable_key_sets() {
    let cases = [
        (json!({"keys": []}), "has no keys"),
        (
            json!({"keys": [{"kty": "oct", "k": "AA"}, {"kty": "oct", "k": "AQ"}]}),
            "needs a 'kid' on each",
        ),
        (
            json!({"keys": [{"kty": "oct", "kid": "a", "k": "AA"}, {"kty": "oct", "kid": "a", "k": "AQ"}]}),
            "another key's too",
        ),
        (
            json!({"keys": [{"kty": "oct", "alg": "RS256", "k": "AA"}]}),
            "is not supported for this key type",
        ),
    ];
    for (set, expected) in cases {
        let error = parse_keys(&set.to_string()).err().expect(expected);
        assert!(error.contains(expected), "{error}");
    }
}

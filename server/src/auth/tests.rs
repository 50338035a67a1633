use http::HeaderValue;

use super::*;

fn access(keys: &str, policy: Option<&str>) -> Access {
    Access {
        keys: Some(KeyStore::parse(keys).expect("keys")),
        policy: policy.map(|p| Policy::from_toml(p).expect("policy")),
        ..Access::default()
    }
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_str(value).expect("value"));
    }
    map
}

fn bot_keys() -> String {
    format!("bot {}\n", keys::hash_key(b"bot-key"))
}

#[test]
fn open_by_default() {
    let open = Access::open();
    assert!(!open.authenticates());
    for scope in Scope::ALL {
        assert!(open.allows(&Identity::Anonymous, scope, Target::Model("m")));
    }
    // Credentials are ignored, not refused: a proxy in front may want them.
    let identity = open
        .authenticate(&headers(&[("authorization", "Basic xyz")]), None)
        .expect("ignored");
    assert_eq!(identity, Identity::Anonymous);
}

#[test]
fn keys_are_read_from_either_header() {
    let access = access(&bot_keys(), None);
    let bot = Identity::Named(Arc::from("bot"));
    for pair in [
        ("authorization", "Bearer bot-key"),
        ("authorization", "bearer   bot-key "),
        ("x-api-key", "bot-key"),
    ] {
        assert_eq!(
            access.authenticate(&headers(&[pair]), None),
            Ok(bot.clone()),
            "{pair:?}"
        );
    }
    let wrong = access
        .authenticate(&headers(&[("x-api-key", "bot-kez")]), None)
        .expect_err("wrong key");
    assert_eq!(
        wrong,
        Error::Unauthenticated("the API key is not valid".to_owned())
    );
    let basic = access
        .authenticate(&headers(&[("authorization", "Basic Ym90LWtleQ==")]), None)
        .expect_err("basic");
    assert!(!basic.to_string().contains("Ym90"), "{basic}");
    let long = "k".repeat(MAX_CREDENTIAL_BYTES + 1);
    let error = access
        .authenticate(&headers(&[("x-api-key", &long)]), None)
        .expect_err("long");
    assert!(error.to_string().contains("longer than 4096 bytes"), "{error}");
    assert_eq!(
        access.authenticate(&HeaderMap::new(), None),
        Ok(Identity::Anonymous)
    );
}

#[test]
fn the_transport_identity_stands_when_no_key_is_sent() {
    let access = access(&bot_keys(), None);
    let transport = TransportIdentity("client.example".to_owned());
    assert_eq!(
        access.authenticate(&HeaderMap::new(), Some(&transport)),
        Ok(Identity::Named(Arc::from("client.example")))
    );
    assert_eq!(
        access.authenticate(&headers(&[("x-api-key", "bot-key")]), Some(&transport)),
        Ok(Identity::Named(Arc::from("bot"))),
        "a key decides"
    );
}

#[test]
fn keys_without_a_policy_allow_every_identity_everything() {
    let access = access(&bot_keys(), None);
    let bot = Identity::Named(Arc::from("bot"));
    for scope in Scope::ALL {
        assert!(access.authorize(&bot, "X", scope, Target::Model("m")).is_ok());
        let refused = access
            .authorize(&Identity::Anonymous, "X", scope, Target::Server)
            .expect_err("anonymous");
        assert!(matches!(refused, Error::Unauthenticated(_)), "{refused:?}");
    }
}

#[test]
fn refusals_name_the_scope_model_and_remedy() {
    let access = access(
        &bot_keys(),
        Some("[[grant]]\nidentity = \"bot\"\nscopes = [\"infer\"]\nmodels = [\"simple\"]\n"),
    );
    let bot = Identity::Named(Arc::from("bot"));
    assert!(
        access
            .authorize(&bot, "ModelInfer", Scope::Infer, Target::Model("simple"))
            .is_ok()
    );
    let denied = access
        .authorize(&bot, "ModelInfer", Scope::Infer, Target::Model("other"))
        .expect_err("other model");
    assert_eq!(
        denied,
        Error::PermissionDenied(
            "identity 'bot' lacks the 'infer' scope for model 'other' that ModelInfer needs; grant it in \
             the --auth-policy file"
                .to_owned()
        )
    );
    let anonymous = access
        .authorize(&Identity::Anonymous, "ModelInfer", Scope::Infer, Target::Server)
        .expect_err("anonymous");
    assert!(
        anonymous
            .to_string()
            .starts_with("ModelInfer needs the 'infer' scope, which callers without credentials do not have"),
        "{anonymous}"
    );
}

#[test]
fn disabled_apis_are_closed_to_everyone_and_say_which_flag() {
    let access = Access::load(&AccessOptions {
        disabled: vec![Scope::Repository],
        ..AccessOptions::default()
    })
    .expect("access");
    let refused = access
        .admit(
            Front::Http,
            "/v2/repository/models/simple/load",
            &HeaderMap::new(),
            None,
        )
        .expect_err("closed");
    assert!(matches!(refused, Error::PermissionDenied(_)));
    assert!(
        refused.to_string().contains("--disable-api repository"),
        "{refused}"
    );
    assert!(
        access
            .admit(Front::Http, "/v2/models/simple/infer", &HeaderMap::new(), None)
            .is_ok()
    );
    let error = Access::load(&AccessOptions {
        disabled: vec![Scope::Infer],
        ..AccessOptions::default()
    })
    .expect_err("infer cannot be closed");
    assert!(error.contains("not 'infer'"), "{error}");
}

#[test]
fn health_stays_open_to_callers_and_restricted_groups_apply_first() {
    let access = Access::load(&AccessOptions {
        grpc_restricted: vec!["health:k=v".to_owned()],
        ..AccessOptions::default()
    })
    .expect("access");
    let keyed = access.clone();
    let keyed = Access {
        keys: Some(KeyStore::parse(&bot_keys()).expect("keys")),
        ..keyed
    };
    let live = "/inference.GRPCInferenceService/ServerLive";
    let refused = keyed
        .admit(Front::Grpc, live, &HeaderMap::new(), None)
        .expect_err("restricted");
    assert_eq!(
        refused,
        Error::Restricted(
            "This protocol is restricted, expecting header 'triton-grpc-protocol-k'".to_owned()
        )
    );
    let with_header = headers(&[("triton-grpc-protocol-k", "v")]);
    assert_eq!(
        keyed.admit(Front::Grpc, live, &with_header, None),
        Ok(Some(Identity::Anonymous)),
        "health needs no key"
    );
    // The same group is not restricted over HTTP: each protocol has its own flag.
    assert!(
        keyed
            .admit(Front::Http, "/v2/health/live", &HeaderMap::new(), None)
            .is_ok()
    );
    assert_eq!(
        keyed.admit(
            Front::Grpc,
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            &HeaderMap::new(),
            None
        ),
        Ok(None)
    );
}

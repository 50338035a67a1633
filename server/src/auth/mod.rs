//! Identity and authorisation, one code path for gRPC and REST.
//!
//! A request is admitted in two steps, so that nothing is decoded twice and nothing is decoded for a
//! caller who is refused anyway:
//!
//! 1. [`AuthLayer`], a tower layer in front of both front ends, reads only the request's head. It names
//!    the action from the gRPC method or the REST route ([`grpc_action`], [`http_action`]), applies
//!    Triton's restricted groups ([`restricted`]) and `--disable-api`, authenticates the caller (an API
//!    key, a bearer JWT ([`jwt`]), or the identity the transport proved with a client certificate,
//!    [`TransportIdentity`]), and refuses a caller who holds the action's scope for no model at all. The
//!    caller's [`Identity`] goes into the request's extensions.
//! 2. The transport-free core ([`crate::core::InferenceService`]) decodes the request once, as it always
//!    did, and so knows the model: each front end hands it the caller (`acting_for`), and the core checks
//!    the scope for that model ([`Access::authorize`]) before it resolves the model, so that a caller
//!    learns nothing of models it may not use. Listings (statistics of every model, the repository index)
//!    are filtered to the models the caller may see. The core also writes the audit log ([`audit`]).
//!
//! When `--rate-limit` or `--max-in-flight-per-identity` is given, the layer then holds the caller to its
//! limits ([`quota`]) before anything reads the request's body.
//!
//! With no `--api-keys-file`, `--jwt-jwks` or `--auth-policy`, every scope is open, as in Triton: only the
//! restricted groups and `--disable-api` apply. Health (liveness, readiness) is open to all but Triton's
//! `health` group.

mod actions;
pub mod jwt;
pub mod keys;
mod layer;
pub mod policy;
pub mod quota;
pub mod restricted;

use std::{fmt, path::PathBuf, sync::Arc};

pub use actions::{Action, grpc_action, http_action};
use http::{HeaderMap, header::AUTHORIZATION};
pub use jwt::{JwtOptions, JwtVerifier};
pub use keys::KeyStore;
pub use layer::{AuthLayer, AuthService, Front};
pub use policy::Policy;
pub use quota::{QuotaOptions, Quotas, Rate};
pub use restricted::{Restrictions, TritonGroup};

use crate::Error;

/// The `tracing` target of the audit log: one line for each administrative change, allowed or not.
pub const AUDIT_TARGET: &str = "ferry::audit";
/// The longest credential header Ferry reads, in bytes; a longer one is refused before it is hashed.
pub const MAX_CREDENTIAL_BYTES: usize = 4096;
/// The header that carries an API key when `authorization` does not.
pub const API_KEY_HEADER: &str = "x-api-key";

/// What a caller may be allowed to do. Each RPC and REST route needs one (health needs none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// ModelInfer, ModelStreamInfer, REST infer.
    Infer,
    /// Server and model metadata, model configs.
    Metadata,
    /// ModelStatistics.
    Stats,
    /// The repository index, model load and unload.
    Repository,
    /// System and CUDA shared memory regions: status, register, unregister.
    Shm,
    /// Trace and log settings.
    Settings,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 6] = [
        Scope::Infer,
        Scope::Metadata,
        Scope::Stats,
        Scope::Repository,
        Scope::Shm,
        Scope::Settings,
    ];

    /// The scope's name in policies, flags and messages.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Infer => "infer",
            Scope::Metadata => "metadata",
            Scope::Stats => "stats",
            Scope::Repository => "repository",
            Scope::Shm => "shm",
            Scope::Settings => "settings",
        }
    }

    /// The scope named `name`; the error lists the names.
    pub fn parse(name: &str) -> Result<Self, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Scope::ALL.iter().map(|s| s.name()).collect();
                format!("unknown scope '{name}', expected one of {}", names.join(", "))
            })
    }

    /// Whether grants of the scope can be limited to models (shared memory and settings concern none).
    pub fn per_model(self) -> bool {
        !matches!(self, Scope::Shm | Scope::Settings)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Identity {
    /// No credential was presented.
    #[default]
    Anonymous,
    /// An API key's or a client certificate's identity.
    Named(Arc<str>),
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("anonymous"),
            Identity::Named(name) => f.write_str(name),
        }
    }
}

/// The action a request on `front` asks for, read from its path; `None` outside Triton's protocol.
pub fn action_of(front: Front, path: &str) -> Option<Action> {
    match front {
        Front::Grpc => grpc_action(path),
        Front::Http => http_action(path),
    }
}

/// The identity the transport proved, such as a verified client certificate's subject or SAN: the TLS
/// layer inserts it into each request's extensions, and the caller is then this identity without an API
/// key. An API key, when one is presented, decides the identity instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportIdentity(pub String);

impl TransportIdentity {
    /// The identity a verified client certificate proves: its subject's common name, or, without one, its
    /// first subject alternative name as OpenSSL prints it (`URI:spiffe://example.org/alice`), or its whole
    /// subject. Policies name callers by that string.
    pub fn of_certificate(certificate: &crate::tls::ClientCertificate) -> Self {
        let name = certificate
            .common_name()
            .map(str::to_owned)
            .or_else(|| certificate.sans().first().map(ToString::to_string))
            .unwrap_or_else(|| certificate.subject().to_owned());
        TransportIdentity(name)
    }
}

/// What a permission is asked for: the server as a whole, or one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// Nothing model-specific (server metadata, shared memory, settings), or a listing of models that is
    /// then filtered: any grant of the scope suffices.
    Server,
    /// One model, by name.
    Model(&'a str),
}

/// The API groups `--disable-api` can close: the administrative ones.
pub const DISABLEABLE: [Scope; 4] = [Scope::Repository, Scope::Shm, Scope::Settings, Scope::Stats];

/// How access is configured: the security flags of the `ferry` binary.
#[derive(Debug, Clone, Default)]
pub struct AccessOptions {
    /// `--api-keys-file`: identities and the digests of their keys.
    pub api_keys_file: Option<PathBuf>,
    /// `--auth-policy`: which identity holds which scopes.
    pub policy_file: Option<PathBuf>,
    /// `--disable-api`: scopes closed to everyone.
    pub disabled: Vec<Scope>,
    /// `--grpc-restricted-protocol` values, as Triton takes them.
    pub grpc_restricted: Vec<String>,
    /// `--http-restricted-api` values, as Triton takes them.
    pub http_restricted: Vec<String>,
    /// `--jwt-*`: bearer JWTs, if accepted.
    pub jwt: Option<JwtOptions>,
    /// `--rate-limit`, `--max-in-flight-per-identity`: abuse limits per identity, off by default.
    pub quotas: QuotaOptions,
}

/// Who may do what: loaded once at start and shared by both front ends and the core.
#[derive(Debug, Clone, Default)]
pub struct Access {
    keys: Option<KeyStore>,
    jwt: Option<Arc<JwtVerifier>>,
    policy: Option<Policy>,
    disabled: Vec<Scope>,
    grpc_restricted: Restrictions,
    http_restricted: Restrictions,
    quotas: Option<Arc<Quotas>>,
}

impl Access {
    /// Everything open, as Triton is by default.
    pub fn open() -> Self {
        Access::default()
    }

    /// Reads the key and policy files and parses the flags; the error names the file or flag at fault.
    pub fn load(options: &AccessOptions) -> Result<Self, String> {
        let keys = options.api_keys_file.as_deref().map(KeyStore::load).transpose()?;
        let policy = options.policy_file.as_deref().map(Policy::load).transpose()?;
        let jwt = options
            .jwt
            .clone()
            .map(JwtVerifier::load)
            .transpose()?
            .map(Arc::new);
        if let Some(scope) = options.disabled.iter().find(|s| !DISABLEABLE.contains(s)) {
            return Err(format!(
                "--disable-api closes repository, shm, settings or stats, not '{scope}'"
            ));
        }
        let mut grpc_restricted = Restrictions::default();
        for flag in &options.grpc_restricted {
            grpc_restricted.add(
                flag,
                "grpc-restricted-protocol",
                restricted::GRPC_HEADER_PREFIX,
                "protocol",
            )?;
        }
        let mut http_restricted = Restrictions::default();
        for flag in &options.http_restricted {
            http_restricted.add(flag, "http-restricted-api", "", "api")?;
        }
        Ok(Access {
            keys,
            jwt,
            policy,
            disabled: options.disabled.clone(),
            grpc_restricted,
            http_restricted,
            quotas: Quotas::new(options.quotas).map(Arc::new),
        })
    }

    /// The rate and in-flight limits per identity, when any is on ([`quota`]).
    pub fn quotas(&self) -> Option<&Arc<Quotas>> {
        self.quotas.as_ref()
    }

    /// Whether callers are authenticated at all (an API keys file, a JWKS file or a policy was given); if
    /// not, every scope is open.
    pub fn authenticates(&self) -> bool {
        self.keys.is_some() || self.jwt.is_some() || self.policy.is_some()
    }

    /// Admits the head of a request on `front`: applies the restricted groups, `--disable-api`, and the
    /// caller's scope for some model. Returns the caller, or `None` for a path outside Triton's protocol
    /// (reflection, unknown paths), which the front end answers as it would anyway.
    pub fn admit(
        &self,
        front: Front,
        path: &str,
        headers: &HeaderMap,
        transport: Option<&TransportIdentity>,
    ) -> Result<Option<Identity>, Error> {
        match action_of(front, path) {
            Some(action) => self.admit_action(front, action, headers, transport).map(Some),
            None => Ok(None),
        }
    }

    /// [`Access::admit`] for a request whose action is already known (the layer reads it once for admission
    /// and limits alike).
    pub(crate) fn admit_action(
        &self,
        front: Front,
        action: Action,
        headers: &HeaderMap,
        transport: Option<&TransportIdentity>,
    ) -> Result<Identity, Error> {
        // A refused administrative action is audited here, before its body (so its model or region) is read.
        let refuse = |who: &dyn fmt::Display, error: Error| {
            if action.audited {
                tracing::warn!(
                    target: AUDIT_TARGET,
                    identity = %who,
                    action = action.name,
                    object = "",
                    outcome = outcome_name(&error),
                    reason = %error,
                    "admin action"
                );
            }
            error
        };
        let restrictions = match front {
            Front::Grpc => self.grpc_restricted.check(action.group, headers, "protocol"),
            Front::Http => self.http_restricted.check(action.group, headers, "API"),
        };
        restrictions.map_err(|error| refuse(&"unverified", error))?;
        let Some(scope) = action.scope else {
            return Ok(Identity::Anonymous);
        };
        self.check_enabled(action.name, scope)
            .map_err(|error| refuse(&"unverified", error))?;
        let identity = self
            .authenticate(headers, transport)
            .map_err(|error| refuse(&"unverified", error))?;
        self.authorize(&identity, action.name, scope, Target::Server)
            .map_err(|error| refuse(&identity, error))?;
        Ok(identity)
    }

    /// The caller a request's headers and transport identify. Credentials are ignored when the server
    /// authenticates no one (clients may send them for a proxy in front of Ferry).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        transport: Option<&TransportIdentity>,
    ) -> Result<Identity, Error> {
        if !self.authenticates() {
            return Ok(transport.map_or(Identity::Anonymous, |t| Identity::Named(Arc::from(t.0.as_str()))));
        }
        let Some((key, bearer)) = presented_key(headers)? else {
            return Ok(match transport {
                Some(identity) => Identity::Named(Arc::from(identity.0.as_str())),
                None => Identity::Anonymous,
            });
        };
        if let Some(jwt) = &self.jwt
            && bearer
            && looks_like_jwt(key)
        {
            let token = std::str::from_utf8(key)
                .map_err(|_| Error::Unauthenticated("the bearer token is not a JWT".to_owned()))?;
            return jwt.verify(token).map(Identity::Named);
        }
        let Some(keys) = &self.keys else {
            return Err(Error::Unauthenticated(
                "this server accepts no API keys (no --api-keys-file); call without one".to_owned(),
            ));
        };
        keys.identify(key)
            .map(Identity::Named)
            .ok_or_else(|| Error::Unauthenticated("the API key is not valid".to_owned()))
    }

    /// Refuses `action` (an RPC name) when its scope is closed by `--disable-api`.
    pub fn check_enabled(&self, action: &str, scope: Scope) -> Result<(), Error> {
        if self.disabled.contains(&scope) {
            Err(Error::PermissionDenied(format!(
                "{action} is part of the '{scope}' API, which this server closed (--disable-api {scope}); \
                 start it without that to allow it"
            )))
        } else {
            Ok(())
        }
    }

    /// Refuses `identity` the `scope` of `action` on `target` unless its grants hold it: an anonymous
    /// caller is `UNAUTHENTICATED` (credentials might allow it), a known one `PERMISSION_DENIED`. The
    /// message names the scope and model, and where it would be granted.
    pub fn authorize(
        &self,
        identity: &Identity,
        action: &str,
        scope: Scope,
        target: Target<'_>,
    ) -> Result<(), Error> {
        self.check_enabled(action, scope)?;
        if self.allows(identity, scope, target) {
            return Ok(());
        }
        let on = match target {
            Target::Server => String::new(),
            Target::Model(model) => format!(
                " for model '{}'",
                crate::limits::bounded_message(model.to_owned())
            ),
        };
        Err(match identity {
            Identity::Anonymous => Error::Unauthenticated(format!(
                "{action} needs the '{scope}' scope{on}, which callers without credentials do not have: \
                 send an API key as 'authorization: Bearer <key>' or '{API_KEY_HEADER}: <key>'"
            )),
            Identity::Named(name) => Error::PermissionDenied(format!(
                "identity '{name}' lacks the '{scope}' scope{on} that {action} needs; grant it in the \
                 --auth-policy file"
            )),
        })
    }

    /// Whether `identity` holds `scope` on `target`; used to filter listings.
    pub fn allows(&self, identity: &Identity, scope: Scope, target: Target<'_>) -> bool {
        if self.disabled.contains(&scope) {
            return false;
        }
        let model = match target {
            Target::Server => None,
            Target::Model(model) => Some(model),
        };
        match (&self.policy, identity) {
            (Some(policy), _) => policy.allows(identity, scope, model),
            // Keys but no policy: every authenticated caller may do everything, others nothing.
            (None, Identity::Named(_)) => true,
            (None, Identity::Anonymous) => !self.authenticates(),
        }
    }
}

/// The credential a request presents, and whether it came as a bearer token: `authorization: Bearer <key or
/// JWT>`, else `x-api-key: <key>`. Refuses another authorization scheme and credentials over
/// [`MAX_CREDENTIAL_BYTES`], without repeating them.
fn presented_key(headers: &HeaderMap) -> Result<Option<(&[u8], bool)>, Error> {
    let too_long = |header: &str| {
        Error::Unauthenticated(format!(
            "the '{header}' header is longer than {MAX_CREDENTIAL_BYTES} bytes"
        ))
    };
    if let Some(value) = headers.get(AUTHORIZATION) {
        let value = value.as_bytes();
        if value.len() > MAX_CREDENTIAL_BYTES {
            return Err(too_long("authorization"));
        }
        let scheme = value.split(|&b| b == b' ').next().unwrap_or_default();
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return Err(Error::Unauthenticated(
                "the 'authorization' header must be 'Bearer <key>'".to_owned(),
            ));
        }
        let key = value[scheme.len()..].trim_ascii();
        return Ok(Some((key, true)));
    }
    match headers.get(API_KEY_HEADER) {
        Some(value) if value.len() > MAX_CREDENTIAL_BYTES => Err(too_long(API_KEY_HEADER)),
        Some(value) => Ok(Some((value.as_bytes().trim_ascii(), false))),
        None => Ok(None),
    }
}

/// Whether a bearer credential has a JWT's shape: three non-empty parts joined by dots. API keys (random
/// hex or base64) never do.
fn looks_like_jwt(credential: &[u8]) -> bool {
    let mut parts = credential.split(|&b| b == b'.');
    parts.by_ref().take(3).filter(|part| !part.is_empty()).count() == 3 && parts.next().is_none()
}

/// Writes one audit line on [`AUDIT_TARGET`]: who did which administrative action to what, and how it
/// ended. `object` is the model or region name (empty when the action names none).
pub fn audit(identity: &Identity, action: &str, object: &str, outcome: Result<(), &Error>) {
    match outcome {
        Ok(()) => tracing::info!(
            target: AUDIT_TARGET,
            identity = %identity,
            action,
            object,
            outcome = "ok",
            "admin action"
        ),
        Err(error) => tracing::warn!(
            target: AUDIT_TARGET,
            identity = %identity,
            action,
            object,
            outcome = outcome_name(error),
            reason = %error,
            "admin action"
        ),
    }
}

fn outcome_name(error: &Error) -> &'static str {
    match error {
        Error::Unauthenticated(_) | Error::PermissionDenied(_) | Error::Restricted(_) => "refused",
        _ => "failed",
    }
}

#[cfg(test)]
mod tests;

//! The caller a request acts for, and the checks the core makes once it knows the model a request concerns
//! (the auth layer in front has already admitted the caller for the action; see [`crate::auth`]).

use std::sync::Arc;

use super::InferenceService;
use crate::{
    Error,
    auth::{self, Access, Identity, Scope, Target},
};

impl InferenceService {
    /// The same service checking callers against `access`.
    pub fn with_access(self, access: Arc<Access>) -> Self {
        Self { access, ..self }
    }

    /// Who may do what on this service.
    pub fn access(&self) -> &Arc<Access> {
        &self.access
    }

    /// The service acting for the caller the auth layer left in a request's `extensions`: an anonymous
    /// caller when it left none, so that a request that reached a handler without passing the layer gets
    /// nothing a caller without credentials would not. This service itself when it already acts for that
    /// caller (every request of an open server): a copy would cost each request a few shared reference
    /// counts, bumped and dropped by every worker.
    pub fn acting_for(&self, extensions: &http::Extensions) -> std::borrow::Cow<'_, Self> {
        let caller = extensions.get::<Identity>();
        if caller.unwrap_or(&Identity::Anonymous) == &self.caller {
            return std::borrow::Cow::Borrowed(self);
        }
        std::borrow::Cow::Owned(Self {
            caller: caller.cloned().unwrap_or_default(),
            ..self.clone()
        })
    }

    /// The caller this copy acts for.
    pub fn caller(&self) -> &Identity {
        &self.caller
    }

    /// Refuses the caller `action` (an RPC name) unless it holds `scope` on `target`.
    pub(super) fn authorize(&self, action: &str, scope: Scope, target: Target<'_>) -> Result<(), Error> {
        self.access.authorize(&self.caller, action, scope, target)
    }

    /// Whether the caller may see `model` under `scope`, for listings that are filtered.
    pub(super) fn may_see(&self, scope: Scope, model: &str) -> bool {
        self.access.allows(&self.caller, scope, Target::Model(model))
    }

    /// Runs an administrative `action` on `object` (a model or region name) once the caller holds `scope`
    /// for it, and writes the audit line with how it ended.
    pub(super) async fn audited<T>(
        &self,
        action: &str,
        scope: Scope,
        object: &str,
        run: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let outcome = match self.authorize_on(action, scope, object) {
            Ok(()) => run.await,
            Err(error) => Err(error),
        };
        auth::audit(&self.caller, action, object, outcome.as_ref().map(|_| ()));
        outcome
    }

    /// [`InferenceService::audited`] for an action that does not wait.
    pub(super) fn audited_now<T>(
        &self,
        action: &str,
        scope: Scope,
        object: &str,
        run: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let outcome = self.authorize_on(action, scope, object).and_then(|()| run());
        auth::audit(&self.caller, action, object, outcome.as_ref().map(|_| ()));
        outcome
    }

    /// Checks `scope` for the model `object` names, or for the server when the scope concerns no model.
    fn authorize_on(&self, action: &str, scope: Scope, object: &str) -> Result<(), Error> {
        let target = if scope.per_model() {
            Target::Model(object)
        } else {
            Target::Server
        };
        self.authorize(action, scope, target)
    }
}

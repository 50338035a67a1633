//! Trace and log settings through the core, so that they need the caller's `settings` scope and every
//! change is audited; [`crate::settings`] does the work.

use ferry_proto::inference as pb;

use super::InferenceService;
use crate::{
    Error,
    auth::{Scope, Target},
};

impl InferenceService {
    /// TraceSetting: reads the trace settings, or changes them when the request carries any (audited).
    pub fn trace_settings(
        &self,
        request: pb::TraceSettingRequest,
    ) -> Result<pb::TraceSettingResponse, Error> {
        const ACTION: &str = "TraceSetting";
        if request.settings.is_empty() {
            self.authorize(ACTION, Scope::Settings, Target::Server)?;
            return crate::settings::trace_setting(request);
        }
        let object = request.model_name.clone();
        self.audited_now(ACTION, Scope::Settings, &object, || {
            crate::settings::trace_setting(request)
        })
    }

    /// LogSettings: reads the log settings, or changes them when the request carries any (audited).
    pub fn log_settings(&self, request: pb::LogSettingsRequest) -> Result<pb::LogSettingsResponse, Error> {
        const ACTION: &str = "LogSettings";
        if request.settings.is_empty() {
            self.authorize(ACTION, Scope::Settings, Target::Server)?;
            return crate::settings::log_settings(request);
        }
        self.audited_now(ACTION, Scope::Settings, "", || {
            crate::settings::log_settings(request)
        })
    }
}

//! `POST /v3/apps/:guid/sidecars` and `PATCH /v3/sidecars/:guid` (Cloud
//! Controller's `SidecarCreateMessage` and `SidecarUpdateMessage`), with
//! its limits and words.

use crate::error::{ApiError, ApiResult};
use serde::Deserialize;

/// CC's column limits.
const NAME_MAX: usize = 255;
const COMMAND_MAX: usize = 4096;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarBody {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub process_types: Option<Vec<String>>,
    #[serde(default)]
    pub memory_in_mb: Option<i64>,
}

impl SidecarBody {
    /// A create needs a name, a command and at least one process type.
    pub fn validate_create(&self) -> ApiResult<()> {
        if self.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
            return Err(ApiError::unprocessable("Name can't be blank"));
        }
        if self.command.as_deref().is_none_or(|c| c.trim().is_empty()) {
            return Err(ApiError::unprocessable("Command can't be blank"));
        }
        if self.process_types.is_none() {
            return Err(ApiError::unprocessable(
                "Process types must have at least 1 process_type",
            ));
        }
        self.validate_update()
    }

    /// Whatever is given is checked; what is left out stays.
    pub fn validate_update(&self) -> ApiResult<()> {
        if let Some(name) = &self.name {
            if name.trim().is_empty() {
                return Err(ApiError::unprocessable("Name can't be blank"));
            }
            if name.len() > NAME_MAX {
                return Err(ApiError::unprocessable(
                    "Name is too long (maximum is 255 characters)",
                ));
            }
        }
        if let Some(command) = &self.command {
            if command.trim().is_empty() {
                return Err(ApiError::unprocessable("Command can't be blank"));
            }
            if command.len() > COMMAND_MAX {
                return Err(ApiError::unprocessable(
                    "Command is too long (maximum is 4096 characters)",
                ));
            }
        }
        if let Some(types) = &self.process_types {
            if types.is_empty() {
                return Err(ApiError::unprocessable(
                    "Process types must have at least 1 process_type",
                ));
            }
            if types
                .iter()
                .any(|t| t.trim().is_empty() || t.len() > NAME_MAX)
            {
                return Err(ApiError::unprocessable(
                    "Process types must be names of 1 to 255 characters",
                ));
            }
        }
        if self.memory_in_mb.is_some_and(|m| m < 1) {
            return Err(ApiError::unprocessable(
                "Memory in mb must be greater than 0",
            ));
        }
        Ok(())
    }

    /// The process types, each once, sorted (CC presents them so).
    pub fn process_types(&self) -> Option<Vec<String>> {
        self.process_types.as_ref().map(|types| {
            let mut t: Vec<String> = types.iter().map(|t| t.trim().to_string()).collect();
            t.sort();
            t.dedup();
            t
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: serde_json::Value) -> SidecarBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn creates_need_a_name_a_command_and_process_types() {
        let ok = body(json!({"name": "s", "command": "./s", "process_types": ["web", "web"]}));
        ok.validate_create().unwrap();
        assert_eq!(ok.process_types(), Some(vec!["web".to_string()]));
        for bad in [
            json!({"command": "./s", "process_types": ["web"]}),
            json!({"name": "s", "process_types": ["web"]}),
            json!({"name": "s", "command": "./s"}),
            json!({"name": "s", "command": "./s", "process_types": []}),
            json!({"name": "s", "command": "./s", "process_types": [""]}),
            json!({"name": "s", "command": "./s", "process_types": ["web"], "memory_in_mb": 0}),
            json!({"name": "x".repeat(256), "command": "./s", "process_types": ["web"]}),
        ] {
            assert!(body(bad.clone()).validate_create().is_err(), "{bad}");
        }
        assert!(body(json!({"memory_in_mb": 5})).validate_update().is_ok());
        assert!(
            serde_json::from_value::<SidecarBody>(json!({"origin": "user"})).is_err(),
            "unknown fields are refused"
        );
    }
}

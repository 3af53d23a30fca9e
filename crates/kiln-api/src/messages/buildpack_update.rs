//! `PATCH /v3/buildpacks/:guid`: CC's `BuildpackUpdateMessage`.

use crate::error::{ApiError, ApiResult};
use serde::Deserialize;

/// CC's limits on a buildpack's name and stack.
const MAX_NAME_LENGTH: usize = 250;
const MAX_STACK_LENGTH: usize = 250;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBuildpack {
    #[serde(default)]
    pub name: Option<String>,
    /// `Some(None)`: `"stack": null` was sent (requested, unassigned).
    #[serde(default, deserialize_with = "super::present")]
    pub stack: Option<Option<String>>,
    #[serde(default)]
    pub position: Option<i64>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub locked: Option<bool>,
    #[serde(default)]
    pub metadata: Option<crate::messages::metadata::MetadataPatch>,
}

impl UpdateBuildpack {
    pub fn validate(&self) -> ApiResult<()> {
        if let Some(name) = &self.name {
            if name.chars().count() > MAX_NAME_LENGTH {
                return Err(ApiError::unprocessable(format!(
                    "Name is too long (maximum is {MAX_NAME_LENGTH} characters)"
                )));
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_alphanumeric() || "-_".contains(c))
            {
                return Err(ApiError::unprocessable("Name is invalid"));
            }
        }
        if let Some(Some(stack)) = &self.stack
            && stack.chars().count() > MAX_STACK_LENGTH
        {
            return Err(ApiError::unprocessable(format!(
                "Stack is too long (maximum is {MAX_STACK_LENGTH} characters)"
            )));
        }
        if self.position.is_some_and(|p| p < 1) {
            return Err(ApiError::unprocessable(
                "Position must be greater than or equal to 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn msg(v: Value) -> Result<UpdateBuildpack, String> {
        let m: UpdateBuildpack = serde_json::from_value(v).map_err(|e| e.to_string())?;
        m.validate().map_err(|e| e.to_string())?;
        Ok(m)
    }

    #[test]
    fn requested_fields_and_cc_checks() {
        let m = msg(json!({"stack": null, "position": 2})).unwrap();
        assert_eq!((m.stack, m.position, m.name), (Some(None), Some(2), None));
        assert_eq!(msg(json!({})).unwrap().stack, None);
        for bad in [
            json!({"position": 0}),
            json!({"name": "has space"}),
            json!({"name": ""}),
            json!({"name": "x".repeat(251)}),
            json!({"enabled": "yes"}),
            json!({"filename": "x.zip"}),
        ] {
            assert!(msg(bad.clone()).is_err(), "{bad}");
        }
    }
}

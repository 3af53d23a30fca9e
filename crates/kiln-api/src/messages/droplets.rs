//! `POST /v3/droplets` bodies with Cloud Controller's checks
//! (`droplet_create_message.rb`, `droplet_copy_message.rb`).

use super::ToOne;
use crate::error::{ApiError, ApiResult};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropletRelationships {
    pub app: ToOne,
}

/// A droplet made by hand (`process_types` given or CC's `web: ""`), or,
/// with `?source_guid=`, a copy (no `process_types`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDroplet {
    pub relationships: DropletRelationships,
    #[serde(default)]
    pub process_types: Option<Value>,
}

impl CreateDroplet {
    pub fn app_guid(&self) -> &str {
        &self.relationships.app.data.guid
    }

    /// The process types, checked in CC's words; CC's default when none.
    pub fn process_types(&self) -> ApiResult<BTreeMap<String, String>> {
        let Some(given) = &self.process_types else {
            return Ok(BTreeMap::from([("web".to_string(), String::new())]));
        };
        let Some(map) = given.as_object() else {
            return Err(ApiError::unprocessable("Process types must be an object"));
        };
        if map.keys().any(String::is_empty) {
            return Err(ApiError::unprocessable(
                "Process types key must not be empty",
            ));
        }
        map.iter()
            .map(|(k, v)| match v.as_str() {
                Some(cmd) => Ok((k.clone(), cmd.to_string())),
                None => Err(ApiError::unprocessable(
                    "Process types value must be a string",
                )),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> ApiResult<CreateDroplet> {
        crate::web::from_value(v)
    }

    #[test]
    fn process_types_follow_ccs_rules() {
        let app = json!({"app": {"data": {"guid": "a"}}});
        let d = body(json!({"relationships": app})).unwrap();
        assert_eq!(d.process_types().unwrap()["web"], "");
        let d = body(json!({"relationships": app, "process_types": {"worker": "run"}})).unwrap();
        assert_eq!(d.process_types().unwrap()["worker"], "run");
        for (bad, words) in [
            (json!([]), "must be an object"),
            (json!({"": "x"}), "key must not be empty"),
            (json!({"web": 1}), "value must be a string"),
        ] {
            let d = body(json!({"relationships": app, "process_types": bad})).unwrap();
            let e = d.process_types().unwrap_err().to_string();
            assert!(e.contains(words), "{e}");
        }
        assert!(body(json!({"relationships": app, "state": "STAGED"})).is_err());
        assert!(body(json!({"process_types": {}})).is_err());
    }
}

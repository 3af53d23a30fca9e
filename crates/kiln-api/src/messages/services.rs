//! Bodies of `/v3/service_instances` and `/v3/service_credential_bindings`
//! with Cloud Controller's checks and words
//! (`service_instance_create_user_provided_message.rb`,
//! `service_instance_update_user_provided_message.rb`,
//! `service_credential_binding_create_message.rb`).

use super::{ToOne, validate_name};
use crate::error::{ApiError, ApiResult};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// A field that may be given as null (clears) or left out (keeps).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceRelationships {
    pub space: ToOne,
    /// Only a managed instance names a plan; Kiln has none (refused).
    #[serde(default)]
    pub service_plan: Option<ToOne>,
}

/// `POST /v3/service_instances`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateServiceInstance {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Value,
    pub relationships: InstanceRelationships,
    #[serde(default)]
    pub tags: Option<Value>,
    #[serde(default)]
    pub credentials: Option<Value>,
    #[serde(default)]
    pub syslog_drain_url: Option<Value>,
    #[serde(default)]
    pub route_service_url: Option<Value>,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub metadata: Option<crate::messages::metadata::MetadataPatch>,
}

/// A user-provided instance's fields, checked.
#[derive(Debug, Clone, Default)]
pub struct UserProvided {
    pub name: String,
    pub tags: Vec<String>,
    pub credentials: Map<String, Value>,
    pub syslog_drain_url: Option<String>,
    pub route_service_url: Option<String>,
}

/// What a create asks for, once its type is known.
#[derive(Debug, Clone)]
pub enum InstanceRequest {
    UserProvided(UserProvided),
    Managed,
}

impl CreateServiceInstance {
    pub fn space_guid(&self) -> &str {
        &self.relationships.space.data.guid
    }

    pub fn validate(&self) -> ApiResult<InstanceRequest> {
        let name = string_field("Name", &self.name)?;
        if name.trim().is_empty() {
            return Err(ApiError::unprocessable("Name can't be blank"));
        }
        validate_name(&name)?;
        match self.kind.as_str() {
            "user-provided" => {}
            "managed" => return Ok(InstanceRequest::Managed),
            _ => {
                return Err(ApiError::unprocessable(
                    "Type must be one of 'managed', 'user-provided'",
                ));
            }
        }
        if self.relationships.service_plan.is_some() {
            return Err(ApiError::unprocessable(
                "Relationships Unknown field(s): 'service_plan'",
            ));
        }
        if self.parameters.is_some() {
            return Err(ApiError::unprocessable("Unknown field(s): 'parameters'"));
        }
        Ok(InstanceRequest::UserProvided(UserProvided {
            name,
            tags: tags(self.tags.as_ref())?,
            credentials: credentials(self.credentials.as_ref())?,
            syslog_drain_url: url_field("Syslog drain url", self.syslog_drain_url.as_ref())?,
            route_service_url: route_service_url(self.route_service_url.as_ref())?,
        }))
    }
}

/// `PATCH /v3/service_instances/:guid` on a user-provided instance: each
/// field given replaces the stored one (null clears it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateServiceInstance {
    #[serde(default, deserialize_with = "present")]
    pub name: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub tags: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub credentials: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub syslog_drain_url: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub route_service_url: Option<Value>,
    #[serde(default)]
    pub metadata: Option<crate::messages::metadata::MetadataPatch>,
}

/// The changes of an update, checked: `None` = not asked for.
#[derive(Debug, Clone, Default)]
pub struct InstanceChanges {
    pub name: Option<String>,
    pub tags: Option<Vec<String>>,
    pub credentials: Option<Map<String, Value>>,
    pub syslog_drain_url: Option<Option<String>>,
    pub route_service_url: Option<Option<String>>,
}

impl UpdateServiceInstance {
    pub fn validate(&self) -> ApiResult<InstanceChanges> {
        let name = match &self.name {
            None | Some(Value::Null) => None,
            Some(v) => {
                let name = string_field("Name", v)?;
                validate_name(&name)?;
                Some(name)
            }
        };
        Ok(InstanceChanges {
            name,
            tags: self.tags.as_ref().map(|t| tags(Some(t))).transpose()?,
            credentials: self
                .credentials
                .as_ref()
                .map(|c| credentials(Some(c)))
                .transpose()?,
            syslog_drain_url: self
                .syslog_drain_url
                .as_ref()
                .map(|u| url_field("Syslog drain url", Some(u)))
                .transpose()?,
            route_service_url: self
                .route_service_url
                .as_ref()
                .map(|u| route_service_url(Some(u)))
                .transpose()?,
        })
    }
}

fn string_field(what: &str, v: &Value) -> ApiResult<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| ApiError::unprocessable(format!("{what} must be a string")))
}

fn tags(v: Option<&Value>) -> ApiResult<Vec<String>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::unprocessable("Tags must be a list of strings"))
            })
            .collect(),
        Some(_) => Err(ApiError::unprocessable("Tags must be an array")),
    }
}

fn credentials(v: Option<&Value>) -> ApiResult<Map<String, Value>> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(ApiError::unprocessable("Credentials must be an object")),
    }
}

/// CC's UriValidator: a scheme, a colon and the rest, no blanks.
fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn url_field(what: &str, v: Option<&Value>) -> ApiResult<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if is_uri(s) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::unprocessable(format!(
            "{what} must be a valid URI"
        ))),
    }
}

fn route_service_url(v: Option<&Value>) -> ApiResult<Option<String>> {
    let url = url_field("Route service url", v)?;
    if url.as_deref().is_some_and(|u| !u.starts_with("https:")) {
        return Err(ApiError::unprocessable("Route service url must be https"));
    }
    Ok(url)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingRelationships {
    pub service_instance: ToOne,
    #[serde(default)]
    pub app: Option<ToOne>,
}

/// `POST /v3/service_credential_bindings`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBinding {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    pub relationships: BindingRelationships,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub metadata: Option<crate::messages::metadata::MetadataPatch>,
}

impl CreateBinding {
    /// CC's checks; returns the app's guid (only app bindings are made).
    pub fn validate(&self) -> ApiResult<String> {
        match self.kind.as_str() {
            "app" => {}
            "key" => {
                return Err(ApiError::unprocessable(
                    "Service keys are not supported: Kiln has user-provided service instances only",
                ));
            }
            _ => return Err(ApiError::unprocessable("Type must be 'app' or 'key'")),
        }
        if let Some(s) = &self.strategy
            && s != "single"
            && s != "multiple"
        {
            return Err(ApiError::unprocessable(
                "Strategy must be 'single' or 'multiple'",
            ));
        }
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        if self.parameters.as_ref().is_some_and(|p| !p.is_object()) {
            return Err(ApiError::unprocessable("Parameters must be an object"));
        }
        self.relationships
            .app
            .as_ref()
            .map(|a| a.data.guid.clone())
            .ok_or_else(|| ApiError::unprocessable("Relationships app can't be blank"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(body: Value) -> ApiResult<InstanceRequest> {
        crate::web::from_value::<CreateServiceInstance>(body)?.validate()
    }

    fn detail(e: ApiError) -> String {
        match e {
            ApiError::Cf { detail, .. } => detail,
            other => other.to_string(),
        }
    }

    #[test]
    fn user_provided_bodies_are_checked_as_cc_checks_them() {
        let space = json!({"space": {"data": {"guid": "s"}}});
        let ok = create(
            json!({"type": "user-provided", "name": "db", "relationships": space,
            "credentials": {"u": "p"}, "tags": ["a"], "syslog_drain_url": "syslog://h:1",
            "route_service_url": "https://rs.example"}),
        )
        .unwrap();
        let InstanceRequest::UserProvided(up) = ok else {
            panic!("not user-provided")
        };
        assert_eq!(up.credentials["u"], "p");
        assert_eq!(up.tags, ["a"]);
        for (body, want) in [
            (
                json!({"type": "x", "name": "db"}),
                "Type must be one of 'managed', 'user-provided'",
            ),
            (
                json!({"type": "user-provided", "name": ""}),
                "Name can't be blank",
            ),
            (
                json!({"type": "user-provided", "name": 5}),
                "Name must be a string",
            ),
            (
                json!({"type": "user-provided", "name": "d", "credentials": [1]}),
                "Credentials must be an object",
            ),
            (
                json!({"type": "user-provided", "name": "d", "tags": [1]}),
                "Tags must be a list of strings",
            ),
            (
                json!({"type": "user-provided", "name": "d", "syslog_drain_url": "no uri"}),
                "Syslog drain url must be a valid URI",
            ),
            (
                json!({"type": "user-provided", "name": "d", "route_service_url": "http://a"}),
                "Route service url must be https",
            ),
        ] {
            let mut body = body;
            body["relationships"] = space.clone();
            assert_eq!(detail(create(body).unwrap_err()), want);
        }
        let unknown =
            create(json!({"type": "user-provided", "name": "d", "relationships": space, "x": 1}));
        assert_eq!(detail(unknown.unwrap_err()), "Unknown field(s): 'x'");
    }

    #[test]
    fn an_update_tells_null_from_absent() {
        let u: UpdateServiceInstance =
            crate::web::from_value(json!({"syslog_drain_url": null})).unwrap();
        let c = u.validate().unwrap();
        assert_eq!(c.syslog_drain_url, Some(None));
        assert!(c.route_service_url.is_none() && c.credentials.is_none());
    }
}

//! `POST /v3/domains` and a domain's `shared_organizations` bodies, with
//! Cloud Controller's name rules and texts (`DomainCreateMessage`).

use super::{GuidRef, ToOne, metadata};
use crate::error::{ApiError, ApiResult};
use serde::Deserialize;
use serde_json::Value;

/// CC's limits: a fully qualified name of 3 to 253 characters, labels of
/// at most 63.
const MIN_NAME: usize = 3;
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

/// A to-many relationship: `{"data": [{"guid": …}, …]}`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ToMany {
    pub data: Vec<GuidRef>,
}

impl ToMany {
    pub fn guids(&self) -> Vec<String> {
        self.data.iter().map(|g| g.guid.clone()).collect()
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DomainRelationships {
    #[serde(default)]
    pub organization: Option<ToOne>,
    #[serde(default)]
    pub shared_organizations: Option<ToMany>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDomain {
    pub name: String,
    #[serde(default)]
    pub internal: Option<bool>,
    #[serde(default)]
    pub relationships: Option<DomainRelationships>,
    #[serde(default)]
    pub router_group: Option<Value>,
    #[serde(default)]
    pub metadata: Option<metadata::MetadataPatch>,
}

/// A label of letters, digits and inner hyphens (RFC 1035, as CC's
/// `DOMAIN_REGEX` takes it: digits may lead).
fn rfc1035_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// CC's name errors, all of them, in its order.
fn name_errors(name: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if name.is_empty() {
        errors.push("Name can't be blank".to_string());
    }
    if name.len() < MIN_NAME {
        errors.push(format!(
            "Name is too short (minimum is {MIN_NAME} characters)"
        ));
    }
    if name.len() > MAX_NAME {
        errors.push(format!(
            "Name is too long (maximum is {MAX_NAME} characters)"
        ));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 || !labels.iter().all(|l| rfc1035_label(l)) {
        errors.push("Name does not comply with RFC 1035 standards".into());
    }
    if !name.contains('.') {
        errors.push("Name must contain at least one \".\"".into());
    }
    if labels.iter().any(|l| l.len() > MAX_LABEL) {
        errors.push("Name subdomains must each be at most 63 characters".into());
    }
    if name
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    {
        errors.push("Name must consist of alphanumeric characters and hyphens".into());
    }
    errors
}

/// A checked create: the name (lowercase: DNS names have no case), the
/// owning org (none: a shared domain), the orgs to share it with.
#[derive(Debug, Clone)]
pub struct DomainCreate {
    pub name: String,
    pub internal: bool,
    pub organization: Option<String>,
    pub shared_organizations: Vec<String>,
    pub metadata: crate::db::metadata::Patch,
}

impl CreateDomain {
    pub fn validate(self) -> ApiResult<DomainCreate> {
        let mut errors = name_errors(&self.name);
        // Relationships of nulls (as the Python client sends for a shared
        // domain) scope nothing.
        let rels = self.relationships.clone().unwrap_or_default();
        let scoped = rels.organization.is_some();
        if self.internal == Some(true) && scoped {
            errors.push("Cannot associate an internal domain with an organization".into());
        }
        if rels.shared_organizations.is_some() && rels.organization.is_none() {
            errors.push(
                "Relationships cannot contain shared_organizations without an owning organization."
                    .into(),
            );
        }
        if scoped && self.router_group.is_some() {
            errors.push(
                "Domains scoped to an organization cannot be associated to a router group.".into(),
            );
        }
        if !errors.is_empty() {
            return Err(ApiError::unprocessable(errors.join(", ")));
        }
        // Kiln has no routing API, so no router group exists (CC's answer
        // for a group it cannot find).
        if let Some(group) = &self.router_group {
            let guid = group.get("guid").and_then(Value::as_str).unwrap_or("");
            return Err(ApiError::unprocessable(format!(
                "Router group with guid '{guid}' not found."
            )));
        }
        Ok(DomainCreate {
            name: self.name.to_ascii_lowercase(),
            internal: self.internal.unwrap_or(false),
            organization: rels.organization.map(|o| o.data.guid),
            shared_organizations: rels
                .shared_organizations
                .map(|s| s.guids())
                .unwrap_or_default(),
            metadata: metadata::patch_of(&self.metadata),
        })
    }
}

/// Whether `name` is itself a public suffix (`com`, `co.uk`,
/// `github.io`): a known rule of the public suffix list leaves nothing of it
/// to register. CC's `PrivateDomain#reserved?`; names the list does not
/// know (`*.test`, `localhost`) are not reserved.
pub fn is_public_suffix(name: &str) -> bool {
    psl::suffix(name.as_bytes()).is_some_and(|s| s.is_known() && s.as_bytes() == name.as_bytes())
}

/// CC's words for a private domain that is a public suffix.
pub fn reserved(name: &str) -> ApiError {
    ApiError::unprocessable(format!(
        "The \"{name}\" domain is reserved and cannot be used for org-scoped domains."
    ))
}

/// The parent domains of `name`, nearest first (`a.b.c` → `b.c`, `c`);
/// CC's `DomainDecorator#intermediate_domains`.
pub fn parents(name: &str) -> Vec<&str> {
    name.match_indices('.')
        .map(|(i, _)| &name[i + 1..])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(v: Value) -> ApiResult<DomainCreate> {
        crate::web::from_value::<CreateDomain>(v)?.validate()
    }

    fn detail(r: ApiResult<DomainCreate>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn names_follow_ccs_rules_and_words() {
        let ok = create(serde_json::json!({"name": "Apps.Example.COM"})).unwrap();
        assert_eq!(ok.name, "apps.example.com");
        assert!(ok.organization.is_none());
        let e = detail(create(serde_json::json!({"name": "localhost"})));
        assert!(e.contains("Name must contain at least one \".\""), "{e}");
        let e = detail(create(serde_json::json!({"name": "a_b.com"})));
        assert!(
            e.contains("Name must consist of alphanumeric characters and hyphens"),
            "{e}"
        );
        assert!(e.contains("does not comply with RFC 1035"), "{e}");
        let long = format!("{}.com", "a".repeat(64));
        let e = detail(create(serde_json::json!({ "name": long })));
        assert!(e.contains("at most 63 characters"), "{e}");
        let e = detail(create(serde_json::json!({"name": "x."})));
        assert!(e.contains("too short"), "{e}");
        let e = detail(create(serde_json::json!({"name": 7})));
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn relationships_and_internal_exclude_each_other() {
        let org = serde_json::json!({"data": {"guid": "o"}});
        let e = detail(create(serde_json::json!({
            "name": "a.com", "internal": true, "relationships": {"organization": org}
        })));
        assert!(e.contains("Cannot associate an internal domain"), "{e}");
        let e = detail(create(serde_json::json!({
            "name": "a.com", "relationships": {"shared_organizations": {"data": [{"guid": "x"}]}}
        })));
        assert!(e.contains("without an owning organization"), "{e}");
        let e = detail(create(serde_json::json!({"name": "a.com", "kiln": 1})));
        assert!(e.contains("Unknown field(s): 'kiln'"), "{e}");
        let ok = create(serde_json::json!({
            "name": "a.com", "relationships": {"organization": org,
                "shared_organizations": {"data": [{"guid": "s1"}, {"guid": "s2"}]}}
        }))
        .unwrap();
        assert_eq!(ok.organization.as_deref(), Some("o"));
        assert_eq!(ok.shared_organizations, ["s1", "s2"]);
    }

    #[test]
    fn public_suffixes_are_known_ones_only() {
        for reserved in ["co.uk", "github.io", "com.au", "s3.amazonaws.com"] {
            assert!(is_public_suffix(reserved), "{reserved}");
        }
        for free in [
            "example.co.uk",
            "apps.example.com",
            "shop.private.test",
            "localhost",
        ] {
            assert!(!is_public_suffix(free), "{free}");
        }
    }

    #[test]
    fn parents_are_nearest_first() {
        assert_eq!(
            parents("a.b.example.com"),
            ["b.example.com", "example.com", "com"]
        );
        assert!(parents("com").is_empty());
    }
}

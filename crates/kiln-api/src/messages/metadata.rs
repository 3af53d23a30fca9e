//! `metadata` in request bodies and `label_selector` in list queries, with
//! Cloud Controller's rules and error texts (its `MetadataValidator`,
//! `MetadataValidatorHelper` and `LabelSelectorRequirementValidator`).

use crate::db::metadata::{Entry, LabelOp, LabelRequirement, Patch};
use crate::error::{ApiError, ApiResult};
use serde::Deserialize;
use serde_json::Value;

const MAX_KEY: usize = 63;
const MAX_PREFIX: usize = 253;
const MAX_LABEL_VALUE: usize = 63;
const MAX_ANNOTATION_VALUE: usize = 5000;
const MAX_REQUIREMENTS: usize = 50;

/// A request's `metadata`, checked when the body is read: a bad key or
/// value refuses the whole request before anything changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Value")]
pub struct MetadataPatch(pub Patch);

impl TryFrom<Value> for MetadataPatch {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        parse(&v).map(MetadataPatch)
    }
}

/// The first `n` characters and an ellipsis, as CC quotes long input.
fn head(s: &str) -> String {
    s.chars().take(8).collect()
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
}

fn starts_ends_alnum(s: &str) -> bool {
    let ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    ok(s.chars().next()) && ok(s.chars().last())
}

fn is_dns(prefix: &str) -> bool {
    prefix.split('.').all(|l| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    })
}

/// A key's prefix ('' when none) and name, or CC's key error.
pub fn split_key(key: &str) -> Result<(String, String), String> {
    if key.is_empty() {
        return Err("key cannot be empty string".into());
    }
    if key.matches('/').count() > 1 {
        return Err("key has more than one '/'".into());
    }
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (p, n),
        None => ("", key),
    };
    if key.contains('/') {
        if !is_dns(prefix) {
            return Err(format!("prefix '{prefix}' must be in valid dns format"));
        }
        if prefix.len() > MAX_PREFIX {
            return Err(format!(
                "prefix '{}...' is greater than {MAX_PREFIX} characters",
                head(prefix)
            ));
        }
        if prefix.eq_ignore_ascii_case("cloudfoundry.org") {
            return Err("prefix 'cloudfoundry.org' is reserved".into());
        }
    }
    if name.is_empty() {
        return Err("key cannot be empty string".into());
    }
    word_error(name, MAX_KEY)?;
    Ok((prefix.to_string(), name.to_string()))
}

/// CC's rule for a label key's name and a label value.
fn word_error(s: &str, max: usize) -> Result<(), String> {
    if !s.chars().all(is_word) {
        return Err(format!("'{s}' contains invalid characters"));
    }
    if !starts_ends_alnum(s) {
        return Err(format!("'{s}' starts or ends with invalid characters"));
    }
    if s.chars().count() > max {
        return Err(format!("'{}...' is greater than {max} characters", head(s)));
    }
    Ok(())
}

fn label_value_error(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    word_error(v, MAX_LABEL_VALUE)
}

/// A value as CC takes it (`to_s`): null deletes the key.
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Parses and checks a `metadata` object; the error is CC's 422 text.
pub fn parse(v: &Value) -> Result<Patch, String> {
    let Some(obj) = v.as_object() else {
        return Err("Metadata must be an object".into());
    };
    let mut errors = Vec::new();
    let unexpected: Vec<String> = obj
        .keys()
        .filter(|k| *k != "labels" && *k != "annotations")
        .map(|k| format!("'{k}'"))
        .collect();
    if !unexpected.is_empty() {
        errors.push(format!(
            "Metadata has unexpected field(s): {}",
            unexpected.join(" ")
        ));
    }
    let mut patch = Patch::default();
    match obj.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (key, value) in labels {
                let text = value_text(value);
                let entry = split_key(key)
                    .map_err(|e| errors.push(format!("Metadata label key error: {e}")))
                    .ok();
                if let Err(e) = label_value_error(text.as_deref().unwrap_or("")) {
                    errors.push(format!("Metadata label value error: {e}"));
                }
                if let Some((prefix, name)) = entry {
                    patch.labels.push(Entry {
                        prefix,
                        name,
                        value: text,
                    });
                }
            }
        }
        Some(_) => errors.push("Metadata 'labels' is not an object".into()),
    }
    match obj.get("annotations") {
        None | Some(Value::Null) => {}
        Some(Value::Object(annotations)) => {
            for (key, value) in annotations {
                let text = value_text(value);
                let entry = split_key(key)
                    .map_err(|e| errors.push(format!("Metadata annotation key error: {e}")))
                    .ok();
                if let Some(t) = &text
                    && t.chars().count() > MAX_ANNOTATION_VALUE
                {
                    errors.push(format!(
                        "Metadata annotation value error: '{}...' is greater than {MAX_ANNOTATION_VALUE} characters",
                        head(t)
                    ));
                }
                if let Some((prefix, name)) = entry {
                    patch.annotations.push(Entry {
                        prefix,
                        name,
                        value: text,
                    });
                }
            }
        }
        Some(_) => errors.push("Metadata 'annotations' is not an object".into()),
    }
    if errors.is_empty() {
        Ok(patch)
    } else {
        Err(errors.join(", "))
    }
}

/// The patch a message carries (none: nothing to change).
pub fn patch_of(m: &Option<MetadataPatch>) -> Patch {
    m.as_ref().map(|m| m.0.clone()).unwrap_or_default()
}

/// Splits a selector on the commas outside parentheses.
fn requirements(selector: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&selector[start..]);
    out.into_iter().filter(|r| !r.is_empty()).collect()
}

fn is_key(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| is_word(c) || c == '/')
}

fn values(s: &str) -> Vec<String> {
    s.split(',').map(str::to_string).collect()
}

/// One requirement's key, operator and values (CC's patterns, in its order).
fn requirement(r: &str) -> Option<(String, LabelOp, Vec<String>)> {
    for (word, op) in [(" in (", LabelOp::In), (" notin (", LabelOp::NotIn)] {
        if let Some((key, rest)) = r.split_once(word)
            && let Some(vals) = rest.strip_suffix(')')
        {
            return Some((key.to_string(), op, values(vals)));
        }
    }
    let key_end = r
        .find(|c: char| !(is_word(c) || c == '/'))
        .unwrap_or(r.len());
    let (key, rest) = r.split_at(key_end);
    if key.is_empty() {
        let negated = r.strip_prefix('!').filter(|k| is_key(k))?;
        return Some((negated.to_string(), LabelOp::NotExists, Vec::new()));
    }
    if rest.is_empty() {
        return Some((key.to_string(), LabelOp::Exists, Vec::new()));
    }
    if let Some(v) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
        return Some((key.to_string(), LabelOp::In, values(v)));
    }
    rest.strip_prefix("!=")
        .map(|v| (key.to_string(), LabelOp::NotIn, values(v)))
}

/// A list's `label_selector` as requirements (none when not given), or
/// CC's 400 CF-BadQueryParameter.
pub fn label_selector(selector: Option<&str>) -> ApiResult<Vec<LabelRequirement>> {
    let Some(selector) = selector else {
        return Ok(Vec::new());
    };
    let parts = requirements(selector);
    if parts.is_empty() {
        return Err(ApiError::bad_query("Missing label_selector value"));
    }
    if parts.len() > MAX_REQUIREMENTS {
        return Err(ApiError::bad_query(format!(
            "Too many label_selector requirements (maximum is {MAX_REQUIREMENTS})"
        )));
    }
    parts
        .into_iter()
        .map(|p| {
            let (key, op, values) = requirement(p)
                .ok_or_else(|| ApiError::bad_query("Invalid label_selector value"))?;
            let (prefix, name) = split_key(&key).map_err(ApiError::bad_query)?;
            for v in &values {
                label_value_error(v).map_err(ApiError::bad_query)?;
            }
            Ok(LabelRequirement {
                prefix,
                name,
                op,
                values,
            })
        })
        .collect()
}

/// CC's rule for environment variable names (`attribute` is the field's
/// name as its message starts, e.g. "Environment variables").
pub fn env_keys_error<'a>(
    attribute: &str,
    keys: impl IntoIterator<Item = &'a String>,
) -> ApiResult<()> {
    for key in keys {
        let upper = key.to_ascii_uppercase();
        let problem = if key.is_empty() {
            "key must be a minimum length of 1"
        } else if upper.starts_with("VCAP_") {
            "cannot start with VCAP_"
        } else if upper.starts_with("VMC") {
            "cannot start with VMC_"
        } else if upper == "PORT" {
            "cannot set PORT"
        } else {
            continue;
        };
        return Err(ApiError::unprocessable(format!("{attribute} {problem}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_follow_cc_rules() {
        assert_eq!(split_key("env").unwrap(), ("".into(), "env".into()));
        assert_eq!(
            split_key("example.com/team").unwrap(),
            ("example.com".into(), "team".into())
        );
        for (key, err) in [
            ("", "key cannot be empty string"),
            ("a/b/c", "key has more than one '/'"),
            ("-x.com/a", "prefix '-x.com' must be in valid dns format"),
            (
                "cloudfoundry.org/a",
                "prefix 'cloudfoundry.org' is reserved",
            ),
            ("x.com/", "key cannot be empty string"),
            ("a!b", "'a!b' contains invalid characters"),
            ("_ab", "'_ab' starts or ends with invalid characters"),
        ] {
            assert_eq!(split_key(key).unwrap_err(), err, "{key}");
        }
        let long = "a".repeat(64);
        assert_eq!(
            split_key(&long).unwrap_err(),
            "'aaaaaaaa...' is greater than 63 characters"
        );
    }

    #[test]
    fn a_patch_names_every_error() {
        let e = parse(&json!({"labels": {"a b": "x", "ok": "-bad"}, "other": 1})).unwrap_err();
        assert_eq!(
            e,
            "Metadata has unexpected field(s): 'other', \
             Metadata label key error: 'a b' contains invalid characters, \
             Metadata label value error: '-bad' starts or ends with invalid characters"
        );
        let p = parse(&json!({"labels": {"env": "prod", "gone": null}, "annotations": {"note": "any text at all"}}))
            .unwrap();
        assert_eq!(p.labels[1].value, None);
        assert_eq!(p.annotations[0].value.as_deref(), Some("any text at all"));
    }

    #[test]
    fn selectors_parse_as_cc_reads_them() {
        let ops = |s: &str| {
            label_selector(Some(s))
                .unwrap()
                .into_iter()
                .map(|r| (r.name, r.op, r.values))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ops("env=prod,tier==web,x!=y,team in (a,b),z notin (c),has,!not"),
            vec![
                ("env".into(), LabelOp::In, vec!["prod".to_string()]),
                ("tier".into(), LabelOp::In, vec!["web".into()]),
                ("x".into(), LabelOp::NotIn, vec!["y".into()]),
                ("team".into(), LabelOp::In, vec!["a".into(), "b".into()]),
                ("z".into(), LabelOp::NotIn, vec!["c".into()]),
                ("has".into(), LabelOp::Exists, vec![]),
                ("not".into(), LabelOp::NotExists, vec![]),
            ]
        );
        let err = |s: &str| label_selector(Some(s)).unwrap_err().to_string();
        assert!(err("").contains("Missing label_selector value"));
        assert!(err("a=>b").contains("'>b' contains invalid characters"));
        assert!(err("a<b").contains("Invalid label_selector value"));
    }
}

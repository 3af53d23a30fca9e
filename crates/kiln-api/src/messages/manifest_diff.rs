//! `manifest_diff` (CC's `SpaceDiffManifest`): the pushed manifest against
//! the space's apps as `GET /v3/apps/:guid/manifest` shows them, as a list
//! of JSON-patch-like operations (`add` a key the app lacks, `replace` one
//! that differs with its old value in `was`). Web process fields given at
//! an app's top level are compared as its `web` process's.

use super::manifest::megabytes;
use crate::error::ApiResult;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

const PROCESS_KEYS: [&str; 7] = [
    "instances",
    "memory",
    "disk_quota",
    "command",
    "health-check-type",
    "health-check-http-endpoint",
    "timeout",
];

/// Sizes as the presented manifest spells them (`1024M`).
fn normalized_process(p: &Map<String, Value>) -> ApiResult<Map<String, Value>> {
    let mut out = p.clone();
    if let Some(v) = out.remove("disk-quota") {
        out.insert("disk_quota".into(), v);
    }
    for key in ["memory", "disk_quota"] {
        if let Some(v) = p.get(key) {
            out.insert(key.into(), json!(format!("{}M", megabytes(v, key)?)));
        }
    }
    Ok(out)
}

/// One requested app with its top-level web fields moved into `processes`.
fn normalized_app(raw: &Map<String, Value>) -> ApiResult<Map<String, Value>> {
    let mut app = raw.clone();
    if let Some(v) = app.remove("disk-quota") {
        app.insert("disk_quota".into(), v);
    }
    let mut web = Map::new();
    for key in PROCESS_KEYS {
        if let Some(v) = app.remove(key) {
            web.insert(key.into(), v);
        }
    }
    let mut processes: Vec<Map<String, Value>> = app
        .remove("processes")
        .and_then(|p| p.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.as_object().cloned())
        .collect();
    if !web.is_empty() {
        match processes.iter_mut().find(|p| p["type"] == "web") {
            Some(p) => {
                for (k, v) in web {
                    p.entry(k).or_insert(v);
                }
            }
            None => {
                web.insert("type".into(), json!("web"));
                processes.insert(0, web);
            }
        }
    }
    if !processes.is_empty() {
        let normalized = processes
            .iter()
            .map(normalized_process)
            .collect::<ApiResult<Vec<_>>>()?;
        app.insert(
            "processes".into(),
            Value::Array(normalized.into_iter().map(Value::Object).collect()),
        );
    }
    Ok(app)
}

fn op(path: String, was: Option<&Value>, value: &Value) -> Option<Value> {
    match was {
        None => Some(json!({"op": "add", "path": path, "value": value})),
        Some(old) if old != value => {
            Some(json!({"op": "replace", "path": path, "was": old, "value": value}))
        }
        Some(_) => None,
    }
}

/// The operations that take the space's apps (`existing`, by name) to the
/// manifest's `applications` (already validated).
pub fn diff(applications: &[Value], existing: &HashMap<String, Value>) -> ApiResult<Vec<Value>> {
    let mut ops = Vec::new();
    let empty = json!({});
    for (i, raw) in applications.iter().enumerate() {
        let Some(raw) = raw.as_object() else { continue };
        let app = normalized_app(raw)?;
        let name = app.get("name").and_then(Value::as_str).unwrap_or_default();
        let have = existing.get(name).unwrap_or(&empty);
        for (key, value) in &app {
            let path = format!("/applications/{i}/{key}");
            if key != "processes" {
                ops.extend(op(path, have.get(key), value));
                continue;
            }
            let old_procs = have.get("processes").and_then(Value::as_array);
            for (j, p) in value.as_array().into_iter().flatten().enumerate() {
                let old = old_procs.and_then(|ps| ps.iter().find(|o| o["type"] == p["type"]));
                let Some(old) = old else {
                    ops.extend(op(format!("{path}/{j}"), None, p));
                    continue;
                };
                for (k, v) in p.as_object().into_iter().flatten() {
                    ops.extend(op(format!("{path}/{j}/{k}"), old.get(k), v));
                }
            }
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_replaced_and_new_ones_added() {
        let existing = HashMap::from([(
            "a".to_string(),
            json!({"name": "a", "stack": "s", "processes": [
                {"type": "web", "instances": 1, "memory": "1024M", "disk_quota": "1024M"}]}),
        )]);
        let requested = vec![
            json!({"name": "a", "memory": "1G", "instances": 3, "env": {"K": "v"}}),
            json!({"name": "b", "instances": 2}),
        ];
        let ops = diff(&requested, &existing).unwrap();
        assert_eq!(
            ops,
            vec![
                json!({"op": "add", "path": "/applications/0/env", "value": {"K": "v"}}),
                json!({"op": "replace", "path": "/applications/0/processes/0/instances", "was": 1, "value": 3}),
                json!({"op": "add", "path": "/applications/1/name", "value": "b"}),
                json!({"op": "add", "path": "/applications/1/processes/0", "value": {"type": "web", "instances": 2}}),
            ]
        );
    }
}

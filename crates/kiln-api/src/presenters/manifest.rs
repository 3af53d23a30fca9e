//! An app as a manifest (`GET /v3/apps/:guid/manifest`, CC's
//! `AppManifestPresenter`): what `cf create-app-manifest` writes, and what
//! `manifest_diff` compares a pushed manifest with.

use crate::db::metadata::Metadata;
use crate::db::{App, Process};
use serde_json::{Map, Value, json};

/// One `applications` entry.
pub fn app_manifest(
    app: &App,
    processes: &[Process],
    uris: &[String],
    docker_image: Option<&str>,
    meta: Option<&Metadata>,
) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(app.name));
    if app.lifecycle_type == "docker" {
        if let Some(image) = docker_image {
            m.insert("docker".into(), json!({ "image": image }));
        }
    } else {
        m.insert("stack".into(), json!(app.stack));
        if !app.buildpacks.is_empty() {
            m.insert("buildpacks".into(), json!(app.buildpacks));
        }
    }
    if !app.environment_variables.is_empty() {
        m.insert("env".into(), json!(app.environment_variables));
    }
    if !uris.is_empty() {
        let routes: Vec<Value> = uris.iter().map(|u| json!({ "route": u })).collect();
        m.insert("routes".into(), Value::Array(routes));
    }
    if let Some(meta) = meta.filter(|m| !m.labels.is_empty() || !m.annotations.is_empty()) {
        m.insert(
            "metadata".into(),
            json!({"labels": meta.labels, "annotations": meta.annotations}),
        );
    }
    let procs: Vec<Value> = processes.iter().map(process_manifest).collect();
    m.insert("processes".into(), Value::Array(procs));
    Value::Object(m)
}

fn process_manifest(p: &Process) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!(p.r#type));
    m.insert("instances".into(), json!(p.instances));
    m.insert("memory".into(), json!(format!("{}M", p.memory_in_mb)));
    m.insert("disk_quota".into(), json!(format!("{}M", p.disk_in_mb)));
    if let Some(c) = &p.command {
        m.insert("command".into(), json!(c));
    }
    m.insert("health-check-type".into(), json!(p.health_check_type));
    if let Some(e) = &p.health_check_endpoint {
        m.insert("health-check-http-endpoint".into(), json!(e));
    }
    if let Some(t) = p.health_check_timeout {
        m.insert("timeout".into(), json!(t));
    }
    Value::Object(m)
}

/// The manifest document of some apps.
pub fn manifest(apps: Vec<Value>) -> Value {
    json!({ "applications": apps })
}

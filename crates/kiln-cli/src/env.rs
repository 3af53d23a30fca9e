//! `env`, `set-env`, `unset-env`: an app's environment variables, through
//! `/v3/apps/:guid/env` and `/v3/apps/:guid/environment_variables`.

use crate::app::{require_app, whereabouts};
use crate::client::Client;
use serde_json::{Map, Value, json};

pub async fn show(client: &mut Client, name: &str) -> anyhow::Result<()> {
    let app = require_app(client, name).await?;
    println!(
        "Getting env variables for app {name} {}...\n",
        whereabouts(client)
    );
    let env: Value = client.get(&format!("/v3/apps/{}/env", app.guid)).await?;
    let section = |title: &str, value: &Value| {
        let mut out = format!("{title}:\n");
        match value.as_object() {
            Some(map) if !map.is_empty() => {
                for (key, v) in map {
                    out.push_str(&format!("{key}: {}\n", display(v)));
                }
            }
            _ => out.push_str("No variables have been set\n"),
        }
        out
    };
    let mut system = Map::new();
    for key in ["system_env_json", "application_env_json"] {
        if let Some(map) = env[key].as_object() {
            system.extend(map.clone());
        }
    }
    println!("{}", section("System-Provided", &Value::Object(system)));
    println!(
        "{}",
        section("User-Provided", &env["environment_variables"])
    );
    println!(
        "{}",
        section(
            "Running Environment Variable Groups",
            &env["running_env_json"]
        )
    );
    print!(
        "{}",
        section(
            "Staging Environment Variable Groups",
            &env["staging_env_json"]
        )
    );
    Ok(())
}

/// Strings as they are, structures as pretty JSON (as the cf CLI shows
/// `VCAP_APPLICATION`).
fn display(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Object(_) | Value::Array(_) => {
            serde_json::to_string_pretty(value).unwrap_or_default()
        }
        other => other.to_string(),
    }
}

pub async fn set(client: &mut Client, name: &str, var: &str, value: &str) -> anyhow::Result<()> {
    let app = require_app(client, name).await?;
    println!(
        "Setting env variable {var} for app {name} {}...",
        whereabouts(client)
    );
    patch(client, &app.guid, json!({ var: value })).await?;
    println!(
        "OK\n\nTIP: Use 'kiln restage {name}' to ensure your env variable changes take effect."
    );
    Ok(())
}

pub async fn unset(client: &mut Client, name: &str, var: &str) -> anyhow::Result<()> {
    let app = require_app(client, name).await?;
    println!(
        "Removing env variable {var} from app {name} {}...",
        whereabouts(client)
    );
    let env: Value = client
        .get(&format!("/v3/apps/{}/environment_variables", app.guid))
        .await?;
    if env["var"].get(var).is_none() {
        println!("Env variable {var} was not set.\nOK");
        return Ok(());
    }
    patch(client, &app.guid, json!({ var: null })).await?;
    println!(
        "OK\n\nTIP: Use 'kiln restage {name}' to ensure your env variable changes take effect."
    );
    Ok(())
}

async fn patch(client: &mut Client, app_guid: &str, var: Value) -> anyhow::Result<()> {
    let _: Value = client
        .patch(
            &format!("/v3/apps/{app_guid}/environment_variables"),
            json!({ "var": var }),
        )
        .await?;
    Ok(())
}

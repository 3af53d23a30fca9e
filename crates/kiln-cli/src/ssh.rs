//! `kiln ssh-enabled`, `enable-ssh`, `disable-ssh`: the app's `ssh` feature
//! (`/v3/apps/:guid/features/ssh`) and whether SSH is possible at all
//! (`/v3/apps/:guid/ssh_enabled`), with the cf CLI's words.

use crate::app::require_app;
use crate::client::Client;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
struct Feature {
    enabled: bool,
}

#[derive(Debug, Deserialize)]
struct SshEnabled {
    enabled: bool,
    #[serde(default)]
    reason: String,
}

/// What `ssh-enabled` prints for the API's answer.
fn status_lines(app: &str, status: &SshEnabled) -> String {
    if status.enabled {
        format!("ssh support is enabled for app '{app}'.")
    } else {
        format!(
            "ssh support is disabled for app '{app}'.\n{}",
            status.reason
        )
    }
}

pub async fn ssh_enabled(client: &mut Client, name: &str) -> anyhow::Result<()> {
    client.config.require_space()?;
    let app = require_app(client, name).await?;
    let status: SshEnabled = client
        .get(&format!("/v3/apps/{}/ssh_enabled", app.guid))
        .await?;
    println!("{}", status_lines(name, &status));
    Ok(())
}

/// `enable-ssh` / `disable-ssh`: set the feature, then say what the
/// platform allows.
pub async fn set(client: &mut Client, name: &str, enable: bool) -> anyhow::Result<()> {
    client.config.require_space()?;
    let verb = if enable { "Enabling" } else { "Disabling" };
    println!(
        "{verb} ssh support for app {name} as {}...",
        client.config.user
    );
    let app = require_app(client, name).await?;
    let path = format!("/v3/apps/{}/features/ssh", app.guid);
    let before: Feature = client.get(&path).await?;
    if before.enabled == enable {
        let state = if enable { "enabled" } else { "disabled" };
        println!("ssh support for app '{name}' is already {state}.");
    }
    let _: Feature = client.patch(&path, json!({"enabled": enable})).await?;
    if !enable {
        println!("OK");
        return Ok(());
    }
    let status: SshEnabled = client
        .get(&format!("/v3/apps/{}/ssh_enabled", app.guid))
        .await?;
    println!("OK");
    if !status.enabled {
        println!("TIP: Ensure ssh is also enabled on the space and global level.");
    } else if before.enabled {
        println!("TIP: An app restart may be required for the change to take effect.");
    } else {
        println!("TIP: An app restart is required for the change to take effect.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_says_why() {
        let off = SshEnabled {
            enabled: false,
            reason: "ssh is disabled globally".into(),
        };
        assert_eq!(
            status_lines("web", &off),
            "ssh support is disabled for app 'web'.\nssh is disabled globally"
        );
        let on = SshEnabled {
            enabled: true,
            reason: String::new(),
        };
        assert_eq!(
            status_lines("web", &on),
            "ssh support is enabled for app 'web'."
        );
    }
}

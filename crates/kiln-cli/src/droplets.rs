//! `download-droplet` (cf v8): an app's current droplet, or one named by
//! guid, saved as a tgz through `GET /v3/droplets/:guid/download`.

use crate::app::{require_app, whereabouts};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct DownloadDropletArgs {
    /// The app's name
    pub name: String,
    /// The droplet to download (default: the app's current droplet)
    #[arg(long = "droplet")]
    pub droplet: Option<String>,
    /// Where to save it: a file, or a directory for droplet_GUID.tgz
    #[arg(long = "path")]
    pub path: Option<PathBuf>,
}

/// Where the droplet goes: `--path` as a file, or `droplet_GUID.tgz` in
/// it (or in the working directory) when it is a directory.
fn destination(path: Option<&Path>, guid: &str) -> PathBuf {
    let file = format!("droplet_{guid}.tgz");
    match path {
        Some(p) if p.is_dir() => p.join(file),
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(file),
    }
}

pub async fn download(
    client: &mut crate::client::Client,
    a: DownloadDropletArgs,
) -> anyhow::Result<()> {
    let which = if a.droplet.is_some() {
        "droplet"
    } else {
        "current droplet"
    };
    println!(
        "Downloading {which} for app {} {}...",
        a.name,
        whereabouts(client)
    );
    let app = require_app(client, &a.name).await?;
    let guid = match a.droplet {
        Some(guid) => guid,
        None => {
            let current: Value = client
                .get(&format!("/v3/apps/{}/droplets/current", app.guid))
                .await
                .map_err(|_| {
                    anyhow::anyhow!("App '{}' does not have a current droplet.", a.name)
                })?;
            current["guid"].as_str().unwrap_or_default().to_string()
        }
    };
    let dest = destination(a.path.as_deref(), &guid);
    client
        .download_to(&format!("/v3/droplets/{guid}/download"), &dest)
        .await?;
    let shown = std::path::absolute(&dest).unwrap_or(dest);
    println!("Droplet downloaded successfully at {}", shown.display());
    println!("OK");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_gets_the_droplets_file_name() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            destination(Some(dir.path()), "g"),
            dir.path().join("droplet_g.tgz")
        );
        let file = dir.path().join("mine.tgz");
        assert_eq!(destination(Some(&file), "g"), file);
        assert_eq!(destination(None, "g"), PathBuf::from("droplet_g.tgz"));
    }
}

//! `kiln create-buildpack` and `kiln buildpacks`: admin buildpacks are a
//! record (`POST /v3/buildpacks`) plus a zip uploaded into it, processed by
//! an asynchronous job.

use crate::client::{Body, Client};
use crate::files;
use crate::resources::Buildpack;
use crate::summary::{human_bytes, table};
use anyhow::Context;
use reqwest::Method;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct CreateBuildpackArgs {
    /// The buildpack's name
    pub name: String,
    /// A buildpack directory (zipped with its file modes) or a .zip file
    pub path: PathBuf,
    /// Its place in the detection order (1 is tried first)
    pub position: u32,
    /// Create it disabled
    #[arg(long)]
    pub disable: bool,
}

/// The bits to upload and the file name they are sent under: a zip's own
/// name (as the cf CLI sends it), or `<buildpack name>.zip` for a directory.
fn buildpack_bits(name: &str, path: &std::path::Path) -> anyhow::Result<(Vec<u8>, String)> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        let dir = path
            .canonicalize()
            .with_context(|| format!("reading {}", path.display()))?;
        return Ok((files::zip_dir(&dir)?, format!("{name}.zip")));
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06"),
        "{} is neither a directory nor a zip file",
        path.display()
    );
    let name = path
        .file_name()
        .map_or("buildpack.zip".into(), |n| n.to_string_lossy().into_owned());
    Ok((bytes, name))
}

pub async fn create(client: &mut Client, args: CreateBuildpackArgs) -> anyhow::Result<()> {
    client.config.require_login()?;
    let (bits, filename) = buildpack_bits(&args.name, &args.path)?;
    let user = client.config.user.clone();
    println!("Creating buildpack {}...", args.name);
    let buildpack: Buildpack = client
        .post(
            "/v3/buildpacks",
            json!({"name": args.name, "position": args.position, "enabled": !args.disable}),
        )
        .await?;
    anyhow::ensure!(
        !buildpack.guid.is_empty(),
        "the API returned no buildpack guid"
    );
    println!("OK\n\nUploading buildpack {} as {user}...", args.name);
    let size = bits.len();
    let part = crate::progress::upload_part(bits, "Uploading buildpack")
        .file_name(filename)
        .mime_str("application/zip")?;
    let reply = client
        .call(
            Method::POST,
            &format!("/v3/buildpacks/{}/upload", buildpack.guid),
            Body::Multipart(reqwest::multipart::Form::new().part("bits", part)),
        )
        .await?;
    println!(" {} uploaded", human_bytes(size as u64));
    if let Some(job) = reply.location() {
        println!("\nProcessing uploaded buildpack {}...", args.name);
        client.wait_for_job(&job).await?;
    }
    println!("OK");
    Ok(())
}

pub async fn list(client: &mut Client) -> anyhow::Result<()> {
    println!("Getting buildpacks as {}...\n", client.config.user);
    let mut buildpacks: Vec<Buildpack> = client.list("/v3/buildpacks?order_by=position").await?;
    if buildpacks.is_empty() {
        println!("No buildpacks found");
        return Ok(());
    }
    buildpacks.sort_by_key(|b| b.position);
    let rows: Vec<Vec<String>> = buildpacks
        .into_iter()
        .map(|b| {
            vec![
                b.position.to_string(),
                b.name,
                b.stack.unwrap_or_default(),
                b.enabled.to_string(),
                b.locked.to_string(),
                b.state.to_lowercase(),
                b.filename.unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "position", "name", "stack", "enabled", "locked", "state", "filename"
            ],
            &rows,
            ""
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildpack_bits_from_a_directory_or_a_zip() {
        let dir = tempfile::tempdir().unwrap();
        let bp = dir.path().join("my_bp");
        std::fs::create_dir_all(bp.join("bin")).unwrap();
        std::fs::write(bp.join("bin/detect"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            bp.join("bin/detect"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let (bytes, name) = buildpack_bits("python", &bp).unwrap();
        assert_eq!(name, "python.zip");
        let archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.clone())).unwrap();
        let mut archive = archive;
        let mut names: Vec<String> = (0..archive.len())
            .map(|i| archive.by_index(i).unwrap().name().unwrap().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["bin/", "bin/detect"]);
        let detect = archive.by_name("bin/detect").unwrap();
        assert_eq!(detect.unix_mode().unwrap() & 0o777, 0o755);
        drop(detect);
        let zip_path = dir.path().join("given.zip");
        std::fs::write(&zip_path, &bytes).unwrap();
        let (again, name) = buildpack_bits("python", &zip_path).unwrap();
        assert_eq!((again, name.as_str()), (bytes, "given.zip"));
        std::fs::write(dir.path().join("x.txt"), "text").unwrap();
        let error = buildpack_bits("python", &dir.path().join("x.txt")).unwrap_err();
        assert!(error.to_string().contains("neither a directory nor a zip"));
    }
}

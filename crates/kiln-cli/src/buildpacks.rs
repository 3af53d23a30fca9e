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
    println!("OK\n");
    upload(client, &buildpack.guid, &args.name, bits, filename).await
}

/// Uploads a zip into a buildpack record and waits for its job.
async fn upload(
    client: &mut Client,
    guid: &str,
    name: &str,
    bits: Vec<u8>,
    filename: String,
) -> anyhow::Result<()> {
    println!("Uploading buildpack {name} as {}...", client.config.user);
    let size = bits.len();
    let part = crate::progress::upload_part(bits, "Uploading buildpack")
        .file_name(filename)
        .mime_str("application/zip")?;
    let reply = client
        .call(
            Method::POST,
            &format!("/v3/buildpacks/{guid}/upload"),
            Body::Multipart(reqwest::multipart::Form::new().part("bits", part)),
        )
        .await?;
    println!(" {} uploaded", human_bytes(size as u64));
    if let Some(job) = reply.location() {
        println!("\nProcessing uploaded buildpack {name}...");
        client.wait_for_job(&job).await?;
    }
    println!("OK");
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct UpdateBuildpackArgs {
    /// The buildpack's name
    pub name: String,
    /// A new zip or directory for it
    #[arg(short = 'p')]
    pub path: Option<PathBuf>,
    /// Its new place in the detection order (1 is tried first)
    #[arg(short = 'i')]
    pub position: Option<u32>,
    /// Which of the buildpacks of that name (by stack)
    #[arg(short = 's')]
    pub stack: Option<String>,
    /// Give a buildpack with no stack this stack
    #[arg(long = "assign-stack", conflicts_with = "stack")]
    pub assign_stack: Option<String>,
    /// Use it for staging again
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Do not use it for staging
    #[arg(long)]
    pub disable: bool,
    /// Refuse new zips for it
    #[arg(long, conflicts_with = "unlock")]
    pub lock: bool,
    /// Accept new zips for it again
    #[arg(long)]
    pub unlock: bool,
    /// Its new name
    #[arg(long)]
    pub rename: Option<String>,
}

impl UpdateBuildpackArgs {
    /// The PATCH body: only what the flags ask for (cf's `requested?`).
    fn patch(&self) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        let flag = |on: bool, off: bool| (on || off).then_some(on);
        if let Some(p) = self.position {
            body.insert("position".into(), p.into());
        }
        if let Some(enabled) = flag(self.enable, self.disable) {
            body.insert("enabled".into(), enabled.into());
        }
        if let Some(locked) = flag(self.lock, self.unlock) {
            body.insert("locked".into(), locked.into());
        }
        if let Some(name) = &self.rename {
            body.insert("name".into(), name.as_str().into());
        }
        if let Some(stack) = &self.assign_stack {
            body.insert("stack".into(), stack.as_str().into());
        }
        body.into()
    }
}

/// The buildpack called `name` (of `stack`, when there are several).
async fn find(
    client: &mut Client,
    name: &str,
    stack: Option<&str>,
) -> anyhow::Result<Option<Buildpack>> {
    let path = format!("/v3/buildpacks?names={}", crate::client::q(name));
    let found: Vec<Buildpack> = client.list(&path).await?;
    let mut matching = found
        .into_iter()
        .filter(|b| stack.is_none_or(|s| b.stack.as_deref() == Some(s)));
    let first = matching.next();
    anyhow::ensure!(
        matching.next().is_none(),
        "Multiple buildpacks named {name} found. Specify a stack name by using the '-s' flag."
    );
    Ok(first)
}

pub async fn update(client: &mut Client, args: UpdateBuildpackArgs) -> anyhow::Result<()> {
    client.config.require_login()?;
    // Read the bits first: a bad path changes nothing.
    let bits = match &args.path {
        Some(path) => Some(buildpack_bits(&args.name, path)?),
        None => None,
    };
    println!(
        "Updating buildpack {} as {}...",
        args.name, client.config.user
    );
    let Some(bp) = find(client, &args.name, args.stack.as_deref()).await? else {
        anyhow::bail!("Buildpack '{}' not found", args.name);
    };
    let body = args.patch();
    if body.as_object().is_some_and(|b| !b.is_empty()) {
        let _: Buildpack = client
            .patch(&format!("/v3/buildpacks/{}", bp.guid), body)
            .await?;
    }
    println!("OK\n");
    if let Some((bits, filename)) = bits {
        let name = args.rename.as_deref().unwrap_or(&args.name);
        upload(client, &bp.guid, name, bits, filename).await?;
    }
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct DeleteBuildpackArgs {
    /// The buildpack's name
    pub name: String,
    /// Do not ask for confirmation
    #[arg(short = 'f')]
    pub force: bool,
    /// Which of the buildpacks of that name (by stack)
    #[arg(short = 's')]
    pub stack: Option<String>,
}

pub async fn delete(client: &mut Client, args: DeleteBuildpackArgs) -> anyhow::Result<()> {
    client.config.require_login()?;
    let question = format!("Really delete the buildpack {}?", args.name);
    if !args.force && !crate::app::confirmed(&question) {
        println!("Delete cancelled");
        return Ok(());
    }
    println!("Deleting buildpack {}...", args.name);
    let Some(bp) = find(client, &args.name, args.stack.as_deref()).await? else {
        println!("Buildpack '{}' does not exist.\nOK", args.name);
        return Ok(());
    };
    client
        .delete_and_wait(&format!("/v3/buildpacks/{}", bp.guid))
        .await?;
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
    fn update_sends_only_what_the_flags_ask_for() {
        let args = |extra: &[&str]| {
            let mut v = vec!["x"];
            v.extend_from_slice(extra);
            let mut a = UpdateBuildpackArgs {
                name: "py".into(),
                path: None,
                position: None,
                stack: None,
                assign_stack: None,
                enable: false,
                disable: false,
                lock: false,
                unlock: false,
                rename: None,
            };
            for f in extra {
                match *f {
                    "--disable" => a.disable = true,
                    "--unlock" => a.unlock = true,
                    "-i" => a.position = Some(3),
                    _ => unreachable!(),
                }
            }
            a.patch()
        };
        assert_eq!(args(&[]), json!({}));
        assert_eq!(
            args(&["--disable", "--unlock", "-i"]),
            json!({"enabled": false, "locked": false, "position": 3})
        );
    }

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

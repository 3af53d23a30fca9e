//! The docker lifecycle (Cloud Controller's `diego/docker/`): staging
//! resolves the package's image on the cell, on the host side, into a
//! digest and the image's execution metadata; running starts the image
//! pinned by that digest with its ENTRYPOINT + CMD, or `/bin/sh -c` and the
//! process's command when it has one.

use super::{LifecycleActions, StagingDetails};
use crate::context::Ctx;
use crate::db::{self, Droplet, Package, Process};
use crate::error::{ApiError, ApiResult};
use kiln_model::bbs::{EnvVar, ResolveImageAction, RunAction};
use kiln_model::rootfs::{RootFs, Secret};
use kiln_model::staging::DockerExecutionMetadata;

fn image_of(package: &Package) -> String {
    package.docker_image.clone().unwrap_or_default()
}

/// The package's registry password, opened from its sealed column (the
/// only place besides its migration where the CCDB's key is used to read).
fn password_of(ctx: &Ctx, package: &Package) -> ApiResult<Secret> {
    match &package.docker_password {
        Some(stored) if !stored.expose().is_empty() => {
            ctx.cipher.decrypt(&package.guid, stored.expose())
        }
        _ => Ok(Secret::default()),
    }
}

/// The staging Task resolves the image and nothing else: no container
/// runs (the registry may be on the cell's loopback, which containers
/// cannot reach), and the Task's result is the staging result.
pub fn staging_actions(ctx: &Ctx, s: &StagingDetails<'_>) -> ApiResult<LifecycleActions> {
    let image = image_of(s.package);
    Ok(LifecycleActions {
        rootfs: RootFs::docker(&image),
        downloads: Vec::new(),
        run: RunAction::default(),
        uploads: Vec::new(),
        resolve_image: Some(ResolveImageAction {
            image,
            username: s.package.docker_username.clone().unwrap_or_default(),
            password: password_of(ctx, s.package)?,
        }),
        image_username: String::new(),
        image_password: Secret::default(),
        ports: Vec::new(),
    })
}

/// The droplet's execution metadata (written by staging completion).
pub fn execution_metadata(droplet: &Droplet) -> ApiResult<DockerExecutionMetadata> {
    serde_json::from_str(&droplet.execution_metadata).map_err(|e| {
        ApiError::Internal(format!(
            "droplet {} has malformed docker execution metadata: {e}",
            droplet.guid
        ))
    })
}

/// The start command: the process's own (`-c`, or a manifest `command`)
/// through `/bin/sh -c`, else the image's ENTRYPOINT + CMD as they are.
fn start_args(p: &Process, meta: &DockerExecutionMetadata) -> Vec<String> {
    match &p.command {
        Some(c) if !c.is_empty() => vec!["/bin/sh".into(), "-c".into(), c.clone()],
        _ => meta.start_args(),
    }
}

/// Env: the image's ENV first, then the platform's and the app's (which
/// win, being later; the cell adds the instance's own variables).
fn image_env(meta: &DockerExecutionMetadata, env: Vec<EnvVar>) -> Vec<EnvVar> {
    let mut all: Vec<EnvVar> = meta
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| EnvVar::new(k, v))
        .collect();
    all.extend(env);
    all
}

/// Runs the image pinned at staging with the package's credentials.
pub async fn run_actions(
    ctx: &Ctx,
    p: &Process,
    droplet: &Droplet,
    env: Vec<EnvVar>,
) -> ApiResult<LifecycleActions> {
    let meta = execution_metadata(droplet)?;
    let image = droplet.docker_image.clone().unwrap_or_default();
    let package = db::find::<Package>(&ctx.pool, &droplet.package_guid).await?;
    let (username, password) = match package {
        Some(p) => (
            p.docker_username.clone().unwrap_or_default(),
            password_of(ctx, &p)?,
        ),
        None => Default::default(),
    };
    let mut args = start_args(p, &meta).into_iter();
    Ok(LifecycleActions {
        rootfs: RootFs::docker(image),
        downloads: Vec::new(),
        run: RunAction {
            path: args.next().unwrap_or_default(),
            args: args.collect(),
            env: image_env(&meta, env),
            dir: Some(if meta.workdir.is_empty() {
                "/".into()
            } else {
                meta.workdir.clone()
            }),
            user: meta.user.clone(),
        },
        uploads: Vec::new(),
        resolve_image: None,
        image_username: username,
        image_password: password,
        ports: vec![meta.app_port()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::staging::ExposedPort;

    #[test]
    fn image_env_comes_first_so_later_values_win() {
        let meta = DockerExecutionMetadata {
            env: vec!["A=image".into(), "PATH=/bin".into(), "broken".into()],
            ports: vec![
                ExposedPort {
                    port: 53,
                    protocol: "udp".into(),
                },
                ExposedPort {
                    port: 9000,
                    protocol: "tcp".into(),
                },
            ],
            ..Default::default()
        };
        let env = image_env(&meta, vec![EnvVar::new("A", "app")]);
        let names: Vec<_> = env
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(names, [("A", "image"), ("PATH", "/bin"), ("A", "app")]);
        assert_eq!(meta.app_port(), 9000);
        assert_eq!(DockerExecutionMetadata::default().app_port(), 8080);
    }
}

//! The buildpack lifecycle: `kiln lifecycle builder` stages a package with
//! admin buildpacks into a droplet tarball, `kiln lifecycle launcher` runs
//! a process from it (Cloud Foundry's `diego/buildpack/` staging action
//! builder and desired LRP builder).

use super::{LifecycleActions, StagingBuildpack, StagingDetails};
use crate::context::Ctx;
use crate::db::{Droplet, Process};
use crate::error::ApiResult;
use crate::signing;
use crate::uploads::{build_cache_key, droplet_key};
use kiln_model::LIFECYCLE_BINARY_PATH;
use kiln_model::bbs::{
    ArtifactKind, Checksum, DownloadAction, EnvVar, RunAction, UploadAction, UploadMethod,
};
use kiln_model::rootfs::{RootFs, Secret};
use kiln_store::Access;

/// How the staging task gets one buildpack: admin buildpacks and cloned
/// git ones from the blobstore over signed URLs, a zip by URL straight
/// from where it is (no cache: its content may change under the URL).
fn buildpack_download(ctx: &Ctx, bp: &StagingBuildpack, ttl: i64) -> DownloadAction {
    let to = format!("/tmp/buildpacks/{}", bp.key());
    let blob = |path: String, sha: &str, cache_key: Option<String>| DownloadAction {
        artifact: format!("buildpack {}", bp.name()),
        from: signing::sign(ctx, "GET", &path, ttl),
        to: to.clone(),
        kind: ArtifactKind::Zip,
        cache_key,
        checksum: Some(Checksum {
            algorithm: "sha256".into(),
            value: sha.to_string(),
        }),
        optional: false,
    };
    match bp {
        StagingBuildpack::Admin(b) => {
            let sha = b.sha256.clone().unwrap_or_default();
            let path = format!("/internal/v4/buildpacks/{}/download", b.guid);
            blob(path, &sha, Some(format!("buildpack-{}-{sha}", b.guid)))
        }
        StagingBuildpack::Git { id, sha256, .. } => {
            let path = format!("/internal/v4/custom_buildpacks/{id}/download");
            blob(path, sha256, None)
        }
        StagingBuildpack::Zip { url } => DownloadAction {
            artifact: format!("buildpack {url}"),
            from: url.clone(),
            to,
            kind: ArtifactKind::Zip,
            cache_key: None,
            checksum: None,
            optional: false,
        },
    }
}

/// How the staging task stores the droplet and the new build cache: PUT
/// straight into the blobstore under the keys the API chose, through its
/// own signed URLs, where it can sign them (S3), the droplet then reported
/// to the API, which checks it; otherwise POSTed to the API, which stores
/// them (a directory blobstore).
async fn staging_uploads(
    ctx: &Ctx,
    droplet_guid: &str,
    app_guid: &str,
    ttl: i64,
) -> ApiResult<Vec<UploadAction>> {
    let store_ttl = std::time::Duration::from_secs(ttl.max(0) as u64);
    let droplet_put = ctx
        .blobstore
        .signed_url(Access::Upload, &droplet_key(droplet_guid), store_ttl)
        .await?;
    let cache_put = ctx
        .blobstore
        .signed_url(Access::Upload, &build_cache_key(app_guid), store_ttl)
        .await?;
    let api_post = |path: String| signing::sign(ctx, "POST", &path, ttl);
    let droplet = match droplet_put {
        Some(url) => UploadAction {
            artifact: "droplet".into(),
            from: "/tmp/droplet".into(),
            to: url,
            method: UploadMethod::Put,
            report_to: Some(api_post(format!(
                "/internal/v4/droplets/{droplet_guid}/uploaded"
            ))),
        },
        None => UploadAction {
            artifact: "droplet".into(),
            from: "/tmp/droplet".into(),
            to: api_post(format!("/internal/v4/droplets/{droplet_guid}/upload")),
            ..Default::default()
        },
    };
    let cache = match cache_put {
        Some(url) => UploadAction {
            artifact: "build artifacts cache".into(),
            from: "/tmp/output-cache".into(),
            to: url,
            method: UploadMethod::Put,
            report_to: None,
        },
        None => UploadAction {
            artifact: "build artifacts cache".into(),
            from: "/tmp/output-cache".into(),
            to: api_post(format!("/internal/v4/build_cache/{app_guid}/upload")),
            ..Default::default()
        },
    };
    Ok(vec![droplet, cache])
}

/// Downloads the package, the buildpacks and the build cache, runs the
/// builder, uploads the droplet and the new build cache.
pub async fn staging_actions(
    ctx: &Ctx,
    s: &StagingDetails<'_>,
    buildpacks: &[StagingBuildpack],
    skip_detect: bool,
    env: Vec<EnvVar>,
) -> ApiResult<LifecycleActions> {
    let ttl = signing::staging_ttl(ctx);
    let uploads = staging_uploads(ctx, s.droplet_guid, &s.app.guid, ttl).await?;
    let (app, package) = (s.app, s.package);
    let mut downloads = vec![DownloadAction {
        artifact: "app package".into(),
        from: signing::sign(
            ctx,
            "GET",
            &format!("/internal/v4/packages/{}/download", package.guid),
            ttl,
        ),
        to: "/tmp/app".into(),
        kind: ArtifactKind::Zip,
        cache_key: None,
        checksum: package.sha256.as_ref().map(|v| Checksum {
            algorithm: "sha256".into(),
            value: v.clone(),
        }),
        optional: false,
    }];
    for bp in buildpacks {
        downloads.push(buildpack_download(ctx, bp, ttl));
    }
    downloads.push(DownloadAction {
        artifact: "build artifacts cache".into(),
        from: signing::sign(
            ctx,
            "GET",
            &format!("/internal/v4/build_cache/{}/download", app.guid),
            ttl,
        ),
        to: "/tmp/cache".into(),
        kind: ArtifactKind::Tgz,
        cache_key: None,
        checksum: None,
        optional: true,
    });
    let order: Vec<String> = buildpacks.iter().map(StagingBuildpack::key).collect();
    Ok(LifecycleActions {
        rootfs: RootFs::preloaded(s.stack),
        resolve_image: None,
        image_username: String::new(),
        image_password: Secret::default(),
        ports: Vec::new(),
        downloads,
        run: RunAction {
            path: LIFECYCLE_BINARY_PATH.into(),
            args: vec![
                "lifecycle".into(),
                "builder".into(),
                "--build-dir=/tmp/app".into(),
                "--buildpacks-dir=/tmp/buildpacks".into(),
                format!("--buildpack-order={}", order.join(",")),
                format!("--skip-detect={skip_detect}"),
                "--output-droplet=/tmp/droplet".into(),
                "--output-metadata=/tmp/result.json".into(),
                "--build-artifacts-cache-dir=/tmp/cache".into(),
                "--output-build-artifacts-cache=/tmp/output-cache".into(),
            ],
            env,
            // Diego runs the builder, and so every buildpack script, in the
            // user's home: what a buildpack leaves in its working directory
            // stays out of the droplet.
            dir: Some("/home/vcap".into()),
            user: kiln_model::CONTAINER_USER.into(),
        },
        uploads,
    })
}

/// Downloads the droplet into `/home/vcap` and runs the launcher with the
/// process's command (empty: the droplet's `web` start command).
pub fn run_actions(
    ctx: &Ctx,
    p: &Process,
    droplet: &Droplet,
    env: Vec<EnvVar>,
) -> LifecycleActions {
    let command = match &p.command {
        Some(c) => c.clone(),
        None if p.r#type == "web" => String::new(),
        None => droplet
            .process_types
            .get(&p.r#type)
            .cloned()
            .unwrap_or_default(),
    };
    LifecycleActions {
        rootfs: RootFs::preloaded(&droplet.stack),
        resolve_image: None,
        image_username: String::new(),
        image_password: Secret::default(),
        ports: Vec::new(),
        downloads: vec![DownloadAction {
            artifact: "droplet".into(),
            from: signing::sign(
                ctx,
                "GET",
                &format!("/internal/v4/droplets/{}/download", droplet.guid),
                signing::LRP_URL_SECS,
            ),
            to: "/home/vcap".into(),
            kind: ArtifactKind::Tgz,
            cache_key: Some(format!("droplet-{}", droplet.guid)),
            checksum: droplet.sha256.as_ref().map(|v| Checksum {
                algorithm: "sha256".into(),
                value: v.clone(),
            }),
            optional: false,
        }],
        run: RunAction {
            path: LIFECYCLE_BINARY_PATH.into(),
            args: vec![
                "lifecycle".into(),
                "launcher".into(),
                "app".into(),
                command,
                String::new(),
            ],
            env,
            dir: Some("/home/vcap".into()),
            user: kiln_model::CONTAINER_USER.into(),
        },
        uploads: Vec::new(),
    }
}

//! `Registry::resolve` against a real registry (and a hand-written one for
//! bearer tokens and stalls).

use super::{client, registry_client};
use kiln_image::testing::{
    LayerBuilder, ManifestFormat, TestImage, TestRegistry, registry_available,
};
use kiln_image::{Credentials, ImageError};
use std::time::Duration;

fn app_image() -> TestImage {
    let mut image = TestImage::new(vec![
        LayerBuilder::new()
            .dir("app/")
            .file("app/a.txt", b"a")
            .gzip(),
        LayerBuilder::new().file("app/b.txt", b"b").docker_gzip(),
    ]);
    image.entrypoint = vec!["/bin/sh".into(), "-c".into()];
    image.cmd = vec!["echo hi".into()];
    image.env = vec!["A=1".into(), "PATH=/bin".into()];
    image.working_dir = "/app".into();
    image.user = "1000:1000".into();
    image.exposed_ports = vec!["9090/tcp".into(), "53/udp".into(), "8080/tcp".into()];
    image
}

#[tokio::test]
async fn resolves_a_tag_to_its_digest_config_and_layers() {
    if !registry_available("resolves_a_tag_to_its_digest_config_and_layers") {
        return;
    }
    let registry = TestRegistry::start();
    let image = app_image();
    let digest = registry.push("team/app", "v1", &image).await;
    let reference = registry.reference("team/app", "v1");

    let resolved = client().resolve(&reference, None).await.unwrap();

    assert_eq!(resolved.reference, reference);
    assert_eq!(resolved.registry, registry.host());
    assert_eq!(resolved.repository, "team/app");
    assert_eq!(resolved.digest, digest);
    assert_eq!(
        resolved.pinned,
        format!("{}/team/app@{digest}", registry.host())
    );
    let config = &resolved.config;
    assert_eq!(config.entrypoint, vec!["/bin/sh", "-c"]);
    assert_eq!(config.cmd, vec!["echo hi"]);
    assert_eq!(config.env, vec!["A=1", "PATH=/bin"]);
    assert_eq!(config.working_dir.as_deref(), Some("/app"));
    assert_eq!(config.user.as_deref(), Some("1000:1000"));
    assert_eq!(config.exposed_ports, vec![8080, 9090]);
    assert_eq!(resolved.layers.len(), 2);
    assert_eq!(
        resolved.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        resolved.layers[1].media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(resolved.layers[0].size, image.layers[0].blob.len() as u64);
}

#[tokio::test]
async fn resolves_by_digest_and_refuses_a_digest_the_registry_does_not_have() {
    if !registry_available("resolves_by_digest") {
        return;
    }
    let registry = TestRegistry::start();
    let digest = registry.push("app", "v1", &app_image()).await;
    let pinned = format!("{}/app@{digest}", registry.host());

    let resolved = client().resolve(&pinned, None).await.unwrap();
    assert_eq!(resolved.digest, digest);
    assert_eq!(resolved.pinned, pinned);

    let other = format!("{}/app@sha256:{}", registry.host(), "0".repeat(64));
    let err = client().resolve(&other, None).await.unwrap_err();
    assert!(matches!(err, ImageError::ManifestUnknown { .. }), "{err}");
}

#[tokio::test]
async fn an_index_resolves_to_its_linux_amd64_image() {
    if !registry_available("an_index_resolves_to_its_linux_amd64_image") {
        return;
    }
    let registry = TestRegistry::start();
    let mut arm = TestImage::new(vec![LayerBuilder::new().file("arm", b"arm").gzip()]);
    arm.architecture = "arm64".into();
    let amd = TestImage::new(vec![LayerBuilder::new().file("amd", b"amd").gzip()]);
    let amd_digest = registry.push("amd-only", "v1", &amd).await;
    let index = registry
        .push_index(
            "multi",
            "v1",
            &[("linux", "arm64", &arm), ("linux", "amd64", &amd)],
        )
        .await;

    let resolved = client()
        .resolve(&registry.reference("multi", "v1"), None)
        .await
        .unwrap();
    assert_ne!(resolved.digest, index, "the index itself is not what runs");
    assert_eq!(resolved.digest, amd_digest);
    assert_eq!(resolved.layers.len(), 1);
}

#[tokio::test]
async fn docker_schema_2_manifests_and_manifest_lists_resolve_too() {
    if !registry_available("docker_schema_2_manifests_and_manifest_lists_resolve_too") {
        return;
    }
    let registry = TestRegistry::start();
    let image = app_image();
    let digest = registry
        .push_as("docker", "v1", &image, ManifestFormat::Docker)
        .await;
    let resolved = client()
        .resolve(&registry.reference("docker", "v1"), None)
        .await
        .unwrap();
    assert_eq!(resolved.digest, digest);
    assert_eq!(resolved.config.exposed_ports, vec![8080, 9090]);

    let mut arm = image.clone();
    arm.architecture = "arm64".into();
    registry
        .push_index_as(
            "dockerlist",
            "v1",
            &[("linux", "arm64", &arm), ("linux", "amd64", &image)],
            ManifestFormat::Docker,
        )
        .await;
    let resolved = client()
        .resolve(&registry.reference("dockerlist", "v1"), None)
        .await
        .unwrap();
    assert_eq!(
        resolved.digest, digest,
        "the amd64 entry, the same manifest"
    );
}

#[tokio::test]
async fn an_image_for_another_platform_only_is_refused() {
    if !registry_available("an_image_for_another_platform_only_is_refused") {
        return;
    }
    let registry = TestRegistry::start();
    let mut arm = TestImage::new(vec![LayerBuilder::new().file("arm", b"arm").gzip()]);
    arm.architecture = "arm64".into();
    registry
        .push_index("armonly", "v1", &[("linux", "arm64", &arm)])
        .await;
    registry.push("armsingle", "v1", &arm).await;

    for repo in ["armonly", "armsingle"] {
        let err = client()
            .resolve(&registry.reference(repo, "v1"), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ImageError::WrongPlatform { .. }),
            "{repo}: {err}"
        );
        let message = err.to_string();
        assert!(message.contains("no linux/amd64 image"), "{message}");
        assert!(message.contains("linux/arm64"), "{message}");
    }
}

#[tokio::test]
async fn basic_auth_right_wrong_and_missing_credentials() {
    if !registry_available("basic_auth_right_wrong_and_missing_credentials") {
        return;
    }
    let registry = TestRegistry::start_with_basic_auth("alice", "s3cret");
    registry.push("private", "v1", &app_image()).await;
    let reference = registry.reference("private", "v1");

    // One client for all three: a right login must not let a later wrong
    // or missing one through.
    let client = client();
    let right = Credentials {
        username: "alice".into(),
        password: "s3cret".into(),
    };
    let resolved = client.resolve(&reference, Some(&right)).await.unwrap();
    assert_eq!(resolved.layers.len(), 2);

    let wrong = Credentials {
        username: "alice".into(),
        password: "nope".into(),
    };
    let err = client.resolve(&reference, Some(&wrong)).await.unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("credentials"), "{err}");
    assert!(
        !err.to_string().contains("nope"),
        "the password never shows: {err}"
    );

    let err = client.resolve(&reference, None).await.unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("anonymous"), "{err}");
}

#[tokio::test]
async fn unknown_image_and_unknown_tag_say_which() {
    if !registry_available("unknown_image_and_unknown_tag_say_which") {
        return;
    }
    let registry = TestRegistry::start();
    registry.push("app", "v1", &app_image()).await;

    let err = client()
        .resolve(&registry.reference("nothing-here", "v1"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::ImageNotFound { .. }), "{err}");
    assert!(err.to_string().contains("not found"), "{err}");

    let err = client()
        .resolve(&registry.reference("app", "v2"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::ManifestUnknown { .. }), "{err}");
    assert!(err.to_string().contains("v2"), "{err}");
}

#[tokio::test]
async fn a_corrupted_config_blob_is_a_digest_mismatch() {
    if !registry_available("a_corrupted_config_blob_is_a_digest_mismatch") {
        return;
    }
    let registry = TestRegistry::start();
    let image = app_image();
    registry.push("app", "v1", &image).await;
    let config = image.config_bytes();
    let digest = format!("sha256:{}", sha256_hex(&config));
    // Same length, other bytes: only the digest can tell.
    let path = registry.blob_path(&digest);
    std::fs::write(&path, vec![b'x'; config.len()]).unwrap();

    let err = client()
        .resolve(&registry.reference("app", "v1"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn a_corrupted_manifest_is_a_digest_mismatch_by_tag_and_by_digest() {
    if !registry_available("a_corrupted_manifest_is_a_digest_mismatch") {
        return;
    }
    let registry = TestRegistry::start();
    let digest = registry.push("app", "v1", &app_image()).await;
    let path = registry.blob_path(&digest);
    let mut manifest = std::fs::read(&path).unwrap();
    // Still valid JSON of the same length: only the digest can tell.
    let at = manifest.iter().position(|b| *b == b'2').unwrap();
    manifest[at] = b'3';
    std::fs::write(&path, manifest).unwrap();

    for reference in [
        registry.reference("app", "v1"),
        format!("{}/app@{digest}", registry.host()),
    ] {
        let err = client().resolve(&reference, None).await.unwrap_err();
        assert!(
            matches!(err, ImageError::DigestMismatch { .. }),
            "{reference}: {err}"
        );
        assert!(
            err.to_string().contains(&digest),
            "names the expected digest: {err}"
        );
    }
}

#[tokio::test]
async fn layers_and_manifests_over_the_limits_are_refused() {
    if !registry_available("layers_and_manifests_over_the_limits_are_refused") {
        return;
    }
    let registry = TestRegistry::start();
    let big = TestImage::new(vec![
        LayerBuilder::new().file("big", &vec![7u8; 4096]).plain(),
    ]);
    registry.push("big", "v1", &big).await;
    let reference = registry.reference("big", "v1");

    let err = registry_client(1024, 1 << 20)
        .resolve(&reference, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("layer"), "{err}");

    let err = registry_client(1 << 20, 64)
        .resolve(&reference, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("manifest"), "{err}");
}

#[tokio::test]
async fn an_unreachable_registry_and_a_silent_one_say_which() {
    // Nothing listens on a port bound and never listening (held for the
    // test: a port just released could be given to another test's server).
    let dead = tokio::net::TcpSocket::new_v4().unwrap();
    dead.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let port = dead.local_addr().unwrap().port();
    let err = client()
        .resolve(&format!("127.0.0.1:{port}/app:v1"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Unreachable { .. }), "{err}");

    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let silent = kiln_image::Registry::new(kiln_image::RegistryConfig {
        timeout: Duration::from_secs(1),
        ..Default::default()
    });
    let err = silent
        .resolve(&format!("{addr}/app:v1"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    holder.abort();
}

#[tokio::test]
async fn a_malformed_reference_is_refused_before_any_request() {
    let err = client().resolve("Not A Reference", None).await.unwrap_err();
    assert!(matches!(err, ImageError::InvalidReference { .. }), "{err}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A registry that only speaks bearer tokens, written here: Debian's
/// docker-registry needs a token server with certificates for that, so
/// this one serves one image through the distribution API's token flow
/// (`/v2/` challenge, `/token` with basic credentials, bearer requests).
mod bearer {
    use super::*;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use std::sync::Arc;

    const TOKEN: &str = "tok-kiln-123";

    struct Served {
        realm: String,
        manifest: Vec<u8>,
        config: Vec<u8>,
        config_digest: String,
    }

    fn challenge(served: &Served) -> Response {
        let value = format!(
            "Bearer realm=\"{}\",service=\"kiln-test\",scope=\"repository:app:pull\"",
            served.realm
        );
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, value)],
            "",
        )
            .into_response()
    }

    fn has_token(headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"))
    }

    async fn start(config: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config_digest = format!("sha256:{}", sha256_hex(&config));
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [],
        }))
        .unwrap();
        let served = Arc::new(Served {
            realm: format!("http://{addr}/token"),
            manifest,
            config,
            config_digest,
        });
        let app = axum::Router::new()
            .route(
                "/v2/",
                get(|State(s): State<Arc<Served>>| async move { challenge(&s) }),
            )
            .route(
                "/token",
                get(|headers: HeaderMap| async move {
                    // alice:s3cret
                    let want = "Basic YWxpY2U6czNjcmV0";
                    let auth = headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    if auth == Some(want) {
                        axum::Json(serde_json::json!({"token": TOKEN})).into_response()
                    } else {
                        StatusCode::UNAUTHORIZED.into_response()
                    }
                }),
            )
            .route(
                "/v2/app/manifests/{reference}",
                get(
                    |State(s): State<Arc<Served>>, headers: HeaderMap| async move {
                        if !has_token(&headers) {
                            return challenge(&s);
                        }
                        (
                            [(
                                header::CONTENT_TYPE,
                                "application/vnd.docker.distribution.manifest.v2+json",
                            )],
                            s.manifest.clone(),
                        )
                            .into_response()
                    },
                ),
            )
            .route(
                "/v2/app/blobs/{digest}",
                get(
                    |State(s): State<Arc<Served>>,
                     Path(digest): Path<String>,
                     headers: HeaderMap| async move {
                        if !has_token(&headers) {
                            return challenge(&s);
                        }
                        if digest != s.config_digest {
                            return StatusCode::NOT_FOUND.into_response();
                        }
                        s.config.clone().into_response()
                    },
                ),
            )
            .with_state(served);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr.to_string()
    }

    #[tokio::test]
    async fn bearer_tokens_from_the_challenge_with_right_and_wrong_credentials() {
        let mut image = TestImage::new(Vec::new());
        image.cmd = vec!["/bin/app".into()];
        let host = start(image.config_bytes()).await;
        let reference = format!("{host}/app:v1");

        let client = client();
        let right = Credentials {
            username: "alice".into(),
            password: "s3cret".into(),
        };
        let resolved = client.resolve(&reference, Some(&right)).await.unwrap();
        assert_eq!(resolved.config.cmd, vec!["/bin/app"]);

        let wrong = Credentials {
            username: "alice".into(),
            password: "wrong".into(),
        };
        let err = client.resolve(&reference, Some(&wrong)).await.unwrap_err();
        assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");

        let err = client.resolve(&reference, None).await.unwrap_err();
        assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
    }
}

#[tokio::test]
async fn tls_unless_loopback_or_listed_as_insecure() {
    if !registry_available("tls_unless_loopback_or_listed_as_insecure") {
        return;
    }
    let registry = TestRegistry::start();
    registry.push("app", "v1", &app_image()).await;
    let port = registry.host().rsplit_once(':').unwrap().1;
    // 127.0.0.1 written as one decimal number (URLs read it as that
    // address): the same socket, but not a loopback name, so Kiln must speak
    // TLS to it (and fail against this plain HTTP registry) unless the
    // operator lists it as insecure.
    let host = format!("2130706433:{port}");
    let reference = format!("{host}/app:v1");

    let err = client().resolve(&reference, None).await.unwrap_err();
    assert!(matches!(err, ImageError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("https://"), "{err}");

    let insecure = kiln_image::Registry::new(kiln_image::RegistryConfig {
        insecure_registries: vec![host.clone()],
        timeout: Duration::from_secs(5),
        ..Default::default()
    });
    let resolved = insecure.resolve(&reference, None).await.unwrap();
    assert_eq!(resolved.registry, host);
}

//! `LayerCache` against a real registry: pulled once, unpacked once,
//! verified, mounted as an overlay, collected.

use super::client;
use kiln_image::testing::{
    LayerBuilder, TestImage, TestRegistry, is_root, registry_available, skip_or_fail,
};
use kiln_image::{ImageError, LayerCache, ResolvedImage, mount_overlay, unmount};
use std::collections::HashSet;
use std::fs;
use std::sync::Arc;
use std::time::Duration;

/// Three layers: a base, one that deletes a file and makes a dir opaque,
/// one that adds a file.
fn layered_image() -> TestImage {
    TestImage::new(vec![
        LayerBuilder::new()
            .file("etc/keep", b"keep")
            .file("etc/gone", b"gone")
            .file("var/cache/old", b"old")
            .gzip(),
        LayerBuilder::new()
            .whiteout("etc/gone")
            .opaque("var/cache")
            .file("var/cache/new", b"new")
            .gzip(),
        LayerBuilder::new().file("app/top", b"top").gzip(),
    ])
}

async fn pushed(registry: &TestRegistry, repo: &str, image: &TestImage) -> ResolvedImage {
    registry.push(repo, "v1", image).await;
    client()
        .resolve(&registry.reference(repo, "v1"), None)
        .await
        .unwrap()
}

fn cache_at(dir: &std::path::Path) -> LayerCache {
    LayerCache::new(dir.join("cache"), 64 << 20, 0).unwrap()
}

#[tokio::test]
async fn a_second_rootfs_is_served_from_disk_without_the_registry() {
    if !registry_available("a_second_rootfs_is_served_from_disk") {
        return;
    }
    let registry = TestRegistry::start();
    let image = TestImage::new(vec![
        LayerBuilder::new().file("a", b"a").gzip(),
        LayerBuilder::new().file("b", b"b").gzip(),
    ]);
    let resolved = pushed(&registry, "app", &image).await;
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_at(tmp.path());

    let first = cache.rootfs(&client(), &resolved, None).await.unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(fs::read_to_string(first[0].join("a")).unwrap(), "a");
    assert_eq!(fs::read_to_string(first[1].join("b")).unwrap(), "b");
    let blob_requests = registry.requests("/blobs/");
    assert_eq!(cache.stats().pulls, 2);

    let second = cache.rootfs(&client(), &resolved, None).await.unwrap();
    assert_eq!(second, first);
    assert_eq!(
        registry.requests("/blobs/"),
        blob_requests,
        "no blob requested again"
    );
    assert_eq!(cache.stats().pulls, 2);
    assert_eq!(cache.stats().unpacks, 2);

    // By pinned reference: the manifest seen before is not asked for again.
    let manifest_requests = registry.requests("/manifests/");
    let pinned = cache
        .rootfs_pinned(&client(), &resolved.pinned, None)
        .await
        .unwrap();
    assert_eq!(pinned, first);
    assert_eq!(registry.requests("/manifests/"), manifest_requests);

    // A new cache on the same directory (a cell restart) finds them too.
    drop(cache);
    let reopened = cache_at(tmp.path());
    reopened.rootfs(&client(), &resolved, None).await.unwrap();
    assert_eq!(reopened.stats().pulls, 0);
}

#[tokio::test]
async fn concurrent_rootfs_of_one_image_pulls_and_unpacks_each_layer_once() {
    if !registry_available("concurrent_rootfs_of_one_image") {
        return;
    }
    let registry = TestRegistry::start();
    let image = TestImage::new(vec![
        LayerBuilder::new()
            .file("big", &vec![1u8; 256 << 10])
            .gzip(),
        LayerBuilder::new().file("small", b"s").gzip(),
    ]);
    let resolved = Arc::new(pushed(&registry, "app", &image).await);
    let tmp = tempfile::tempdir().unwrap();
    let cache = Arc::new(cache_at(tmp.path()));

    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (cache, resolved) = (cache.clone(), resolved.clone());
            tokio::spawn(async move { cache.rootfs(&client(), &resolved, None).await.unwrap() })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(cache.stats().unpacks, 2);
    assert_eq!(cache.stats().pulls, 2);
    assert_eq!(
        registry.requests("/blobs/sha256:") - 1,
        2,
        "config once, each layer once"
    );
}

#[tokio::test]
async fn a_corrupted_layer_is_refused_and_leaves_nothing_in_the_cache() {
    if !registry_available("a_corrupted_layer_is_refused") {
        return;
    }
    let registry = TestRegistry::start();
    let image = TestImage::new(vec![LayerBuilder::new().file("a", b"a").gzip()]);
    let resolved = pushed(&registry, "app", &image).await;
    let layer = &resolved.layers[0];
    fs::write(
        registry.blob_path(&layer.digest),
        vec![0u8; layer.size as usize],
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_at(tmp.path());

    let err = cache.rootfs(&client(), &resolved, None).await.unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(!cache.layer_dir(&layer.digest).exists());
    assert_eq!(fs::read_dir(cache.root().join("tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn a_layer_with_an_escaping_path_fails_the_pull() {
    if !registry_available("a_layer_with_an_escaping_path_fails_the_pull") {
        return;
    }
    let registry = TestRegistry::start();
    // A good layer of 1 MB beside the bad one: its pull is under way when
    // the bad one fails, and must not be left half-done.
    let image = TestImage::new(vec![
        LayerBuilder::new().file("big", &vec![9u8; 1 << 20]).plain(),
        LayerBuilder::new().file("../x", b"x").gzip(),
    ]);
    let resolved = pushed(&registry, "evil", &image).await;
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_at(tmp.path());
    let err = cache.rootfs(&client(), &resolved, None).await.unwrap_err();
    assert!(matches!(err, ImageError::BadLayer { .. }), "{err}");
    assert!(!cache.layer_dir(&resolved.layers[1].digest).exists());
    assert!(!cache.root().join("x").exists() && !tmp.path().join("x").exists());
    let scratch: Vec<_> = fs::read_dir(cache.root().join("tmp")).unwrap().collect();
    assert!(scratch.is_empty(), "no scratch left: {scratch:?}");
    assert_eq!(
        cache.layers_of(&resolved.digest),
        None,
        "a failed image is not remembered"
    );
}

#[tokio::test]
async fn the_overlay_shows_the_merged_view_with_whiteouts_applied() {
    let test = "the_overlay_shows_the_merged_view_with_whiteouts_applied";
    if !registry_available(test) {
        return;
    }
    if !is_root() {
        skip_or_fail(test, "not root (overlay mounts, whiteouts)");
        return;
    }
    let registry = TestRegistry::start();
    let resolved = pushed(&registry, "layered", &layered_image()).await;
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_at(tmp.path());
    let lowers = cache.rootfs(&client(), &resolved, None).await.unwrap();
    let (upper, work, target) = (
        tmp.path().join("upper"),
        tmp.path().join("work"),
        tmp.path().join("rootfs"),
    );
    for dir in [&upper, &work, &target] {
        fs::create_dir(dir).unwrap();
    }

    mount_overlay(&lowers, &upper, &work, &target).unwrap();
    let merged = || {
        assert_eq!(fs::read_to_string(target.join("etc/keep")).unwrap(), "keep");
        assert!(
            !target.join("etc/gone").exists(),
            "whiteout hides the lower file"
        );
        assert!(
            !target.join("var/cache/old").exists(),
            "opaque dir hides lower content"
        );
        assert_eq!(
            fs::read_to_string(target.join("var/cache/new")).unwrap(),
            "new"
        );
        assert_eq!(fs::read_to_string(target.join("app/top")).unwrap(), "top");
        // Writes go to the container's upper, never to a shared layer.
        fs::write(target.join("etc/keep"), "changed").unwrap();
        assert_eq!(
            fs::read_to_string(lowers[0].join("etc/keep")).unwrap(),
            "keep"
        );
        assert_eq!(
            fs::read_to_string(upper.join("etc/keep")).unwrap(),
            "changed"
        );

        // A mounted layer is never collected, whatever the caller says.
        let cache = LayerCache::new(cache.root().to_path_buf(), 0, 0)
            .unwrap()
            .with_gc_grace(Duration::ZERO);
        let report = cache.gc(&HashSet::new());
        assert!(report.removed.is_empty(), "{report:?}");
        assert_eq!(report.kept_busy.len(), 3);
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(merged));
    unmount(&target).unwrap();
    assert!(!fs::read_dir(&target).unwrap().any(|_| true), "unmounted");
    unmount(&target).unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn gc_keeps_what_desired_work_needs_and_honours_the_limit_otherwise() {
    if !registry_available("gc_keeps_what_desired_work_needs") {
        return;
    }
    let registry = TestRegistry::start();
    let layer = |name: &str, byte: u8| LayerBuilder::new().file(name, &vec![byte; 1000]).gzip();
    let (one, two, three) = (
        pushed(&registry, "one", &TestImage::new(vec![layer("one", 1)])).await,
        pushed(&registry, "two", &TestImage::new(vec![layer("two", 2)])).await,
        pushed(&registry, "three", &TestImage::new(vec![layer("three", 3)])).await,
    );
    let digest = |image: &ResolvedImage| image.layers[0].digest.clone();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");

    // Recently used, under the limit: nothing goes. Over the limit: the
    // least recently used unneeded layer goes, and only as many as needed.
    {
        let cache = LayerCache::new(root.clone(), 1 << 20, 0).unwrap();
        for image in [&two, &three, &one] {
            cache.rootfs(&client(), image, None).await.unwrap();
        }
        let report = cache.gc(&HashSet::new());
        assert!(report.removed.is_empty(), "{report:?}");
        assert!(!report.over_limit);
    }
    {
        let cache = LayerCache::new(root.clone(), 2500, 0).unwrap();
        let report = cache.gc(&HashSet::new());
        assert_eq!(report.removed, vec![digest(&two)], "least recently used");
        assert_eq!(report.kept_bytes, 2000);
        cache.rootfs(&client(), &two, None).await.unwrap();
    }

    // What desired work needs stays, even mounted by nothing, unused past
    // the grace period and over the limit (an instance restarting).
    let cache = LayerCache::new(root, 1500, 0)
        .unwrap()
        .with_gc_grace(Duration::ZERO);
    assert_eq!(cache.layers_of(&one.digest), Some(vec![digest(&one)]));
    assert_eq!(cache.layers_of(&format!("sha256:{}", "0".repeat(64))), None);
    let needed: HashSet<String> = [&one, &two, &three]
        .iter()
        .flat_map(|image| cache.layers_of(&image.digest).unwrap())
        .collect();
    let report = cache.gc(&needed);
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(report.kept_bytes, 3000);
    assert!(report.over_limit, "needed layers exceed the limit");

    // Once `two` and `three` are no longer desired they are garbage.
    let needed: HashSet<String> = cache.layers_of(&one.digest).unwrap().into_iter().collect();
    let mut report = cache.gc(&needed);
    report.removed.sort();
    let mut expected = vec![digest(&two), digest(&three)];
    expected.sort();
    assert_eq!(report.removed, expected);
    assert_eq!(report.freed_bytes, 2000);
    assert!(!report.over_limit);
    assert!(cache.layer_dir(&digest(&one)).exists());
    assert!(!cache.layer_dir(&digest(&two)).exists());

    // A collected layer comes back when asked for.
    cache.rootfs(&client(), &two, None).await.unwrap();
    assert!(cache.layer_dir(&digest(&two)).exists());
}

/// A registry that sends the first bytes of a layer and then nothing: the
/// pull must end with a time-out, not hang, and leave nothing behind.
#[tokio::test]
async fn a_layer_that_stalls_mid_stream_times_out() {
    use axum::routing::get;
    use futures_util::StreamExt;
    let content = vec![5u8; 4096];
    let digest = format!("sha256:{}", {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&content))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/v2/", get(|| async { "{}" }))
        .route(
            "/v2/app/blobs/{digest}",
            get(|| async {
                let first = futures_util::stream::once(async {
                    Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[5u8; 16]))
                });
                let stalled = first.chain(futures_util::stream::pending());
                axum::body::Body::from_stream(stalled)
            }),
        );
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let image = ResolvedImage {
        reference: format!("{addr}/app@{digest}"),
        registry: addr.to_string(),
        repository: "app".into(),
        digest: digest.clone(),
        pinned: format!("{addr}/app@{digest}"),
        config: Default::default(),
        layers: vec![kiln_image::LayerDescriptor {
            digest: digest.clone(),
            size: content.len() as u64,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        }],
    };
    let registry = kiln_image::Registry::new(kiln_image::RegistryConfig {
        timeout: Duration::from_secs(1),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_at(tmp.path());

    let err = cache.rootfs(&registry, &image, None).await.unwrap_err();
    assert!(matches!(err, ImageError::Timeout { .. }), "{err}");
    assert!(!cache.layer_dir(&digest).exists());
    assert_eq!(fs::read_dir(cache.root().join("tmp")).unwrap().count(), 0);
    server.abort();
}

//! Docker images pushed by tag and digest, and the clear failures of bad ones.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_images_push_by_tag_and_digest_and_fail_clearly() {
    let test = "docker_images_push_by_tag_and_digest_and_fail_clearly";
    if !runnable()
        || !kiln_image::testing::registry_available(test)
        || !kiln_image::testing::busybox_available(test)
    {
        return;
    }
    let _one_at_a_time = SERIAL.lock().await;
    let registry = kiln_image::testing::TestRegistry::start();
    let image = probe_image();
    let digest = registry.push("probe", "v1", &image).await;
    let layer_pulls = || -> usize {
        use sha2::Digest;
        image
            .layers
            .iter()
            .map(|l| format!("sha256:{}", hex::encode(sha2::Sha256::digest(&l.blob))))
            .map(|d| registry.requests(&format!("/blobs/{d}")))
            .sum()
    };
    let scratch = tempfile::tempdir().unwrap();
    let (server, home, router_port) = logged_in_server(scratch.path()).await;

    // By tag, from a manifest with `docker:` and an env var that wins
    // over the image's.
    let dir = scratch.path().join("dimg");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("manifest.yml"),
        format!(
            "applications:\n- name: dimg\n  docker: {{image: {}}}\n  memory: 128M\n  env: {{OVERRIDE: app}}\n",
            registry.reference("probe", "v1")
        ),
    )
    .unwrap();
    let out = cli_in(&home, &dir, &["push"]).await;
    assert!(out.success, "docker push failed\n{out}\n{}", server.log());
    assert!(
        out.stdout.contains(&format!("resolved to {digest}")),
        "staging must say what it resolved\n{out}"
    );
    assert_eq!(
        route_text(router_port, "dimg.localhost", "/index.html").await,
        "hello from an image\n"
    );
    let id = route_text(router_port, "dimg.localhost", "/id.txt").await;
    assert!(
        id.starts_with("uid=1234(app) gid=1234(app)"),
        "USER app: {id}"
    );
    let pwd = route_text(router_port, "dimg.localhost", "/pwd.txt").await;
    assert_eq!(pwd.trim(), "/www", "WORKDIR");
    let env = route_text(router_port, "dimg.localhost", "/env.txt").await;
    for want in [
        "FROM_IMAGE=image",
        "OVERRIDE=app",
        "PORT=9000",
        "CF_INSTANCE_INDEX=0",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing:\n{env}");
    }
    assert!(env.contains("VCAP_APPLICATION="), "{env}");
    // The whiteout of the second layer hides the first layer's file.
    let hidden = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{router_port}/secret.txt"))
        .header("Host", "dimg.localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 404);

    // The droplet pins the digest; the password-free package shows no password.
    let app_out = cli(&home, &["curl", "/v3/apps?names=dimg"]).await;
    assert!(app_out.stdout.contains("\"docker\""), "{app_out}");

    // By digest, a second app: its layers are cached, nothing is pulled again.
    let pulls_before = layer_pulls();
    assert!(pulls_before >= image.layers.len(), "every layer was pulled");
    let pinned = format!("{}/probe@{digest}", registry.host());
    let out = cli(&home, &["push", "ddig", "-o", &pinned, "-m", "128M"]).await;
    assert!(
        out.success,
        "push by digest failed\n{out}\n{}",
        server.log()
    );
    assert_eq!(
        route_text(router_port, "ddig.localhost", "/index.html").await,
        "hello from an image\n"
    );
    assert_eq!(
        layer_pulls(),
        pulls_before,
        "a cached layer is not pulled again"
    );

    // A tag that does not exist: a FAILED build that says so, no app runs.
    let missing = registry.reference("probe", "nope");
    let out = cli(&home, &["push", "dmissing", "-o", &missing]).await;
    assert!(!out.success, "an unknown tag must fail\n{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("manifest unknown"),
        "the reason must say which\n{out}"
    );

    // An unreachable registry.
    let gone = format!("127.0.0.1:{}/probe:v1", free_port());
    let out = cli(&home, &["push", "dgone", "-o", &gone]).await;
    assert!(!out.success, "an unreachable registry must fail\n{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("unreachable"),
        "the reason must say which\n{out}"
    );
}

//! `bench/image-pull.sh`'s driver: pulls one image from a local registry
//! the Kiln way (resolve + `LayerCache::rootfs`, cold then warm) and the
//! floor's way (`skopeo copy` to an OCI layout + `umoci unpack`), side by
//! side in one run, and prints the medians and ratios.
//!
//! The image: busybox (about 2 MB) and a 16 MiB layer of incompressible
//! bytes, plus three small layers. Everything stays on 127.0.0.1.
//! Usage: pull_bench [ROUNDS]

use kiln_image::testing::{LayerBuilder, TestImage, TestRegistry, busybox_image};
use kiln_image::{LayerCache, Registry, RegistryConfig};
use std::process::Command;
use std::time::{Duration, Instant};

fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn image() -> TestImage {
    let mut image = busybox_image();
    image.layers.push(
        LayerBuilder::new()
            .file("data/noise", &noise(16 << 20))
            .gzip(),
    );
    for i in 0..3 {
        let layer = LayerBuilder::new().file(&format!("etc/layer{i}"), b"small");
        image.layers.push(layer.gzip());
    }
    image
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn run(command: &mut Command) {
    let output = command.output().expect("command runs");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let registry = TestRegistry::start();
    registry.push("bench", "v1", &image()).await;
    let reference = registry.reference("bench", "v1");
    let client = Registry::new(RegistryConfig::default());
    let work = tempfile::tempdir().unwrap();
    let (mut floor, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());

    for round in 0..rounds {
        let dir = work.path().join(format!("round{round}"));
        std::fs::create_dir_all(&dir).unwrap();

        let start = Instant::now();
        let layout = format!("oci:{}:v1", dir.join("layout").display());
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &layout,
        ]));
        run(Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:v1", dir.join("layout").display()))
            .arg(dir.join("bundle")));
        floor.push(start.elapsed());

        let start = Instant::now();
        let cache = LayerCache::new(dir.join("cache"), 1 << 30, 0).unwrap();
        let resolved = client.resolve(&reference, None).await.unwrap();
        cache.rootfs(&client, &resolved, None).await.unwrap();
        cold.push(start.elapsed());

        let start = Instant::now();
        let resolved = client.resolve(&reference, None).await.unwrap();
        cache.rootfs(&client, &resolved, None).await.unwrap();
        warm.push(start.elapsed());
    }

    let (floor, cold, warm) = (median(floor), median(cold), median(warm));
    let ratio = |d: Duration| d.as_secs_f64() / floor.as_secs_f64();
    println!("image: {reference} (5 layers, ~18 MB), {rounds} rounds, medians");
    println!("floor  skopeo copy + umoci unpack       {floor:>10.1?}  1.00");
    println!(
        "kiln   resolve + rootfs, cold cache     {cold:>10.1?}  {:.2}",
        ratio(cold)
    );
    println!(
        "kiln   resolve + rootfs, warm cache     {warm:>10.1?}  {:.2}",
        ratio(warm)
    );
}

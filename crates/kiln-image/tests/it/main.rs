//! kiln-image's integration tests: a real `docker-registry` on 127.0.0.1
//! (started per test by `kiln_image::testing`), real files, real overlay
//! mounts. Tests that need the registry, busybox-static or root skip
//! loudly without them and fail instead under `KILN_REQUIRE_RUNC=1`.

mod cache;
mod resolve;
mod unpack;

use kiln_image::{Registry, RegistryConfig};
use std::time::Duration;

/// A registry client with short timeouts and the given limits.
fn registry_client(max_layer_bytes: u64, max_manifest_bytes: u64) -> Registry {
    Registry::new(RegistryConfig {
        insecure_registries: Vec::new(),
        timeout: Duration::from_secs(5),
        max_layer_bytes,
        max_manifest_bytes,
    })
}

fn client() -> Registry {
    registry_client(64 << 20, 1 << 20)
}

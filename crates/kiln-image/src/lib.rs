//! Docker images for Kiln (issue 12): everything that talks to a registry or
//! touches image layers on disk.
//!
//! - [`Registry::resolve`] turns a reference as a user types it into a
//!   [`ResolvedImage`]: the linux/amd64 manifest's digest (what a droplet
//!   pins), the runtime config (entrypoint, cmd, env, working dir, user,
//!   exposed ports) and the layers, every digest verified. Staging calls it.
//! - [`LayerCache`] keeps unpacked layers on a cell, one directory per layer
//!   digest shared by every container and app, pulled and unpacked once;
//!   [`mount_overlay`] assembles a container's root from them; [`LayerCache::gc`]
//!   removes what nothing uses; [`lookup_user`] turns the image's `USER`
//!   into a uid and gid from the image's own `/etc/passwd`.
//!
//! The registry protocol is oci-client's (maintained by the ORAS project,
//! rustls, no OpenSSL); see `registry.rs` for what Kiln adds to it and why.
//!
//! With the `test-support` feature, [`testing`] starts Debian's
//! `docker-registry` on 127.0.0.1 and pushes images built by the test.

mod cache;
mod error;
mod overlay;
mod reference;
mod registry;
mod unpack;
mod user;

pub use cache::{CacheStats, GcReport, LayerCache};
pub use overlay::{MAX_LOWERS, mount_overlay, unmount};
pub use unpack::{UnpackOptions, UnpackStats, unpack_layer};
pub use user::{ImageUser, lookup_user};

pub use error::ImageError;
pub use reference::ImageReference;
pub use registry::{
    Credentials, ImageConfig, LAYER_MEDIA_TYPES, LayerDescriptor, Registry, RegistryConfig,
    ResolvedImage,
};

#[cfg(feature = "test-support")]
pub mod testing;

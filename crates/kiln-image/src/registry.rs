//! Talking to a registry through the OCI distribution API: resolving a
//! reference to a manifest digest, its config and its layers, and streaming
//! blobs with their digests verified as they arrive.
//!
//! oci-client does the protocol (the `/v2/` challenge, bearer tokens from a
//! `WWW-Authenticate: Bearer realm=…` challenge with the user's credentials
//! sent to the realm, basic auth, the digest header). This module adds what
//! it leaves to its callers:
//! - **Plain HTTP per registry**: loopback registries (`127.0.0.0/8` as
//!   dotted addresses, `localhost`; Docker's reference grammar has no IPv6
//!   hosts) and the operator's `insecure_registries`; TLS for every other,
//!   including other spellings of a loopback address.
//! - **Platform choice with a clear error**: an image index or manifest list
//!   is read here so that "no linux/amd64 image" names the platforms there
//!   are, and a single-platform image built for another platform is refused
//!   from its config.
//! - **Digests checked here, not trusted**: the manifest's sha256 is computed
//!   from its bytes (and must equal a digest in the reference), the config's
//!   and every layer's while they stream, never taken from a header.
//! - **Size limits**: layers and configs by their descriptor and by the bytes
//!   that actually arrive; manifests by their length (oci-client reads a
//!   manifest body whole before we see it, so that limit bounds what is kept
//!   and parsed, not what is received).
//! - **Foreign layer URLs are ignored**: a descriptor's `urls` would send
//!   requests to hosts the image author chose; only the registry is asked.
//! - **One oci-client `Client` per registry and credentials**: its
//!   credential store keeps the first credentials it saw for a registry, so
//!   a client shared across credentials would let a later push with wrong
//!   credentials ride on an earlier right login. Clients are kept (keyed by
//!   a hash of the credentials, never the password itself) because building
//!   one costs tens of milliseconds (its TLS set-up), and its token cache
//!   saves a token round trip per blob.

use crate::{ImageError, ImageReference};
use futures_util::StreamExt;
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const ACCEPTED_MANIFESTS: &[&str] = &[
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    OCI_INDEX,
];

/// Layer media types Kiln unpacks: gzip-compressed or plain tar.
pub const LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

/// How Kiln speaks to registries. Built once from the operator's config.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Registries (`host` or `host:port`, as in image references) spoken to
    /// over plain HTTP, like Cloud Foundry's `--insecure-docker-registries`.
    /// Loopback registries always are.
    pub insecure_registries: Vec<String>,
    /// Bounds resolving an image as a whole, connecting, and every wait for
    /// bytes while a blob streams (a big layer may take longer in total,
    /// but it may never stall for longer).
    pub timeout: Duration,
    /// The largest layer, compressed, as the registry sends it.
    pub max_layer_bytes: u64,
    /// The largest manifest, image index or image config.
    pub max_manifest_bytes: u64,
}

impl Default for RegistryConfig {
    fn default() -> RegistryConfig {
        RegistryConfig {
            insecure_registries: Vec::new(),
            timeout: Duration::from_secs(60),
            max_layer_bytes: 2 << 30,
            max_manifest_bytes: 4 << 20,
        }
    }
}

/// A user's registry credentials (`--docker-username` and
/// `CF_DOCKER_PASSWORD`). The password never appears in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"[PRIVATE DATA HIDDEN]")
            .finish()
    }
}

/// An image reference resolved to the manifest it names now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedImage {
    /// The reference as the user gave it.
    pub reference: String,
    /// The registry host (`registry-1.docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// The repository within it (`library/busybox`).
    pub repository: String,
    /// `sha256:…` of the image manifest (for an index: of the linux/amd64
    /// manifest chosen from it), what a droplet pins.
    pub digest: String,
    /// `registry/repository@digest`: what instances run.
    pub pinned: String,
    pub config: ImageConfig,
    /// Bottom layer first.
    pub layers: Vec<LayerDescriptor>,
}

/// The parts of an image's config that say how to run it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value`, in the image's order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// Exposed TCP ports, sorted.
    pub exposed_ports: Vec<u16>,
}

impl ImageConfig {
    /// The environment as `(name, value)` pairs; an entry without `=` is a
    /// name with an empty value, as Docker treats it.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|entry| match entry.split_once('=') {
                Some((name, value)) => (name.to_string(), value.to_string()),
                None => (entry.clone(), String::new()),
            })
            .collect()
    }
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LayerDescriptor {
    /// `sha256:…` of the compressed blob.
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// Resolves references and streams blobs. Cheap to clone (clones share
/// their clients).
#[derive(Clone)]
pub struct Registry {
    config: RegistryConfig,
    /// oci-client clients by registry and credentials (see the module
    /// comment); cleared when it grows past [`MAX_CLIENTS`].
    clients: Arc<Mutex<HashMap<String, oci_client::Client>>>,
}

const MAX_CLIENTS: usize = 64;

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.config)
            .finish()
    }
}

impl Registry {
    pub fn new(config: RegistryConfig) -> Registry {
        Registry {
            config,
            clients: Arc::default(),
        }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// True when `registry` is spoken to over plain HTTP.
    pub fn is_plain_http(&self, registry: &str) -> bool {
        is_loopback(registry)
            || self
                .config
                .insecure_registries
                .iter()
                .any(|r| r == registry)
    }

    /// Resolves `reference` (as a user types it) to its linux/amd64 image
    /// manifest, verified, with its config and layers.
    pub async fn resolve(
        &self,
        reference: &str,
        credentials: Option<&Credentials>,
    ) -> Result<ResolvedImage, ImageError> {
        let image: ImageReference = reference.parse()?;
        let session = self.session(&image, credentials)?;
        let timeout = self.config.timeout;
        match tokio::time::timeout(timeout, self.resolve_in(&session, reference, &image)).await {
            Ok(result) => result,
            Err(_) => Err(ImageError::Timeout {
                registry: image.registry().to_string(),
                seconds: timeout.as_secs(),
            }),
        }
    }

    /// Streams the blob `layer` of `image` into `out`, checking its sha256
    /// and size as bytes arrive. Returns the number of bytes written. On an
    /// error `out` holds a partial blob that the caller must discard.
    pub async fn pull_blob<W: AsyncWrite + Unpin>(
        &self,
        image: &ResolvedImage,
        layer: &LayerDescriptor,
        credentials: Option<&Credentials>,
        out: &mut W,
    ) -> Result<u64, ImageError> {
        let reference =
            ImageReference::pinned_parts(&image.registry, &image.repository, &image.digest);
        let session = self.session(&reference, credentials)?;
        let limit = self.config.max_layer_bytes;
        session
            .stream_blob(&layer.digest, layer.size, limit, "layer", out)
            .await
    }

    fn session(
        &self,
        image: &ImageReference,
        credentials: Option<&Credentials>,
    ) -> Result<Session, ImageError> {
        let key = match credentials {
            Some(c) => format!(
                "{} {}",
                image.registry(),
                sha256_digest(format!("{}\0{}", c.username, c.password).as_bytes())
            ),
            None => format!("{} anonymous", image.registry()),
        };
        let cached = self.lock_clients().get(&key).cloned();
        let client = match cached {
            Some(client) => client,
            None => {
                let client = self.client_for(image)?;
                let mut clients = self.lock_clients();
                if clients.len() >= MAX_CLIENTS {
                    clients.clear();
                }
                clients.entry(key).or_insert(client).clone()
            }
        };
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Session {
            client,
            auth,
            image: image.clone(),
            has_credentials: credentials.is_some(),
            timeout: self.config.timeout,
            max_manifest_bytes: self.config.max_manifest_bytes,
        })
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<String, oci_client::Client>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn client_for(&self, image: &ImageReference) -> Result<oci_client::Client, ImageError> {
        let protocol = if self.is_plain_http(image.registry()) {
            oci_client::client::ClientProtocol::Http
        } else {
            oci_client::client::ClientProtocol::Https
        };
        let config = oci_client::client::ClientConfig {
            protocol,
            // The index is read here (see the module comment).
            platform_resolver: None,
            read_timeout: Some(self.config.timeout),
            connect_timeout: Some(self.config.timeout),
            user_agent: concat!("kiln/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        oci_client::Client::try_from(config).map_err(|e| ImageError::Registry {
            registry: image.registry().to_string(),
            detail: format!("building the client: {e}"),
        })
    }

    async fn resolve_in(
        &self,
        session: &Session,
        given: &str,
        image: &ImageReference,
    ) -> Result<ResolvedImage, ImageError> {
        let (digest, manifest) = match session.image_manifest(image).await {
            // A registry answers MANIFEST_UNKNOWN for a repository it does
            // not have too; its tag list tells the two apart.
            Err(ImageError::ManifestUnknown { .. }) if !session.repository_exists().await => {
                Err(ImageError::ImageNotFound {
                    registry: image.registry().to_string(),
                    repository: image.repository().to_string(),
                })
            }
            other => other,
        }?;
        let layers = self.layers_of(image, &manifest)?;
        let config = session.config(&manifest).await?;
        check_platform(given, &config)?;
        Ok(ResolvedImage {
            reference: given.to_string(),
            registry: image.registry().to_string(),
            repository: image.repository().to_string(),
            pinned: image.pinned(&digest).to_string(),
            digest,
            config: config.runtime(),
            layers,
        })
    }

    fn layers_of(
        &self,
        image: &ImageReference,
        manifest: &ImageManifest,
    ) -> Result<Vec<LayerDescriptor>, ImageError> {
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for layer in &manifest.layers {
            check_digest_syntax(&layer.digest, image)?;
            if !LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str()) {
                return Err(ImageError::BadManifest {
                    reference: image.to_string(),
                    why: format!(
                        "layer {} has media type {:?}; Kiln unpacks gzip or plain tar layers",
                        layer.digest, layer.media_type
                    ),
                });
            }
            if layer.size > self.config.max_layer_bytes {
                return Err(ImageError::TooLarge {
                    what: format!("layer {}", layer.digest),
                    size: layer.size,
                    limit: self.config.max_layer_bytes,
                });
            }
            layers.push(LayerDescriptor {
                digest: layer.digest.clone(),
                size: layer.size,
                media_type: layer.media_type.clone(),
            });
        }
        Ok(layers)
    }
}

/// One operation against one registry, with the client for its credentials.
struct Session {
    client: oci_client::Client,
    auth: RegistryAuth,
    image: ImageReference,
    has_credentials: bool,
    timeout: Duration,
    max_manifest_bytes: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestProbe {
    schema_version: Option<i64>,
    media_type: Option<String>,
    manifests: Option<Vec<IndexEntry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    digest: String,
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
    variant: Option<String>,
}

#[derive(Deserialize)]
struct ImageManifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
}

/// The config blob: the platform and the runtime config (`config`).
#[derive(Deserialize, Default)]
struct ConfigBlob {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<RuntimeConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RuntimeConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

impl ConfigBlob {
    fn runtime(self) -> ImageConfig {
        let c = self.config.unwrap_or_default();
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let mut exposed_ports: Vec<u16> = c
            .exposed_ports
            .unwrap_or_default()
            .keys()
            .filter_map(|key| tcp_port(key))
            .collect();
        exposed_ports.sort_unstable();
        exposed_ports.dedup();
        ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: non_empty(c.working_dir),
            user: non_empty(c.user),
            exposed_ports,
        }
    }
}

/// `8080/tcp` and `8080` are TCP port 8080; `53/udp` is not TCP.
fn tcp_port(key: &str) -> Option<u16> {
    let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
    if !protocol.eq_ignore_ascii_case("tcp") {
        return None;
    }
    port.parse().ok().filter(|p| *p != 0)
}

impl Session {
    /// The image manifest `image` names, choosing linux/amd64 from an index.
    async fn image_manifest(
        &self,
        image: &ImageReference,
    ) -> Result<(String, ImageManifest), ImageError> {
        let (digest, body) = self.manifest_bytes(image).await?;
        let probe: ManifestProbe = self.parse(image, &body)?;
        let Some(entries) = probe.manifests else {
            return Ok((digest, self.parse(image, &body)?));
        };
        let chosen = choose_linux_amd64(image, &entries)?;
        let child = image.pinned(&chosen);
        let (child_digest, child_body) = self.manifest_bytes(&child).await?;
        let child_probe: ManifestProbe = self.parse(&child, &child_body)?;
        if child_probe.manifests.is_some() {
            return Err(ImageError::BadManifest {
                reference: child.to_string(),
                why: "an image index inside an image index".into(),
            });
        }
        Ok((child_digest, self.parse(&child, &child_body)?))
    }

    /// False only when the registry says the repository does not exist.
    async fn repository_exists(&self) -> bool {
        let listed = self
            .client
            .list_tags(&self.image.to_oci(), &self.auth, Some(1), None)
            .await;
        match listed {
            Err(OciDistributionError::RegistryError { envelope, .. }) => !envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::NameUnknown | OciErrorCode::NotFound)),
            Err(OciDistributionError::ServerError { code: 404, .. }) => false,
            _ => true,
        }
    }

    /// A manifest's bytes and their sha256, checked against the digest in
    /// the reference when it has one.
    async fn manifest_bytes(
        &self,
        image: &ImageReference,
    ) -> Result<(String, Vec<u8>), ImageError> {
        let (body, _header_digest) = self
            .client
            .pull_manifest_raw(&image.to_oci(), &self.auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| self.error(e, Some(image)))?;
        if body.len() as u64 > self.max_manifest_bytes {
            return Err(ImageError::TooLarge {
                what: format!("manifest {image}"),
                size: body.len() as u64,
                limit: self.max_manifest_bytes,
            });
        }
        let digest = sha256_digest(&body);
        if let Some(expected) = image.digest()
            && expected != digest
        {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest {image}"),
                expected: expected.to_string(),
                actual: digest,
            });
        }
        Ok((digest, body.to_vec()))
    }

    fn parse<T: for<'de> Deserialize<'de>>(
        &self,
        image: &ImageReference,
        body: &[u8],
    ) -> Result<T, ImageError> {
        let bad = |why: String| ImageError::BadManifest {
            reference: image.to_string(),
            why,
        };
        let probe: ManifestProbe =
            serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
        if probe.schema_version != Some(2) {
            return Err(bad(format!(
                "schema version {:?}; Kiln reads Docker schema 2 and OCI manifests",
                probe.schema_version
            )));
        }
        if let Some(media_type) = &probe.media_type
            && !ACCEPTED_MANIFESTS.contains(&media_type.as_str())
        {
            return Err(bad(format!("unsupported media type {media_type:?}")));
        }
        serde_json::from_slice(body).map_err(|e| bad(e.to_string()))
    }

    async fn config(&self, manifest: &ImageManifest) -> Result<ConfigBlob, ImageError> {
        let descriptor = &manifest.config;
        check_digest_syntax(&descriptor.digest, &self.image)?;
        let limit = self.max_manifest_bytes;
        let mut body = Vec::new();
        self.stream_blob(
            &descriptor.digest,
            descriptor.size,
            limit,
            "image config",
            &mut body,
        )
        .await?;
        serde_json::from_slice(&body).map_err(|e| ImageError::BadManifest {
            reference: self.image.to_string(),
            why: format!("image config {} is not valid: {e}", descriptor.digest),
        })
    }

    /// Streams blob `digest` into `out`: refuses a declared size over
    /// `limit`, stops as soon as more than the declared size arrives, and
    /// compares the sha256 of what arrived with `digest` at the end.
    async fn stream_blob<W: AsyncWrite + Unpin>(
        &self,
        digest: &str,
        declared_size: u64,
        limit: u64,
        what: &str,
        out: &mut W,
    ) -> Result<u64, ImageError> {
        let what = format!("{what} {digest}");
        if declared_size > limit {
            return Err(ImageError::TooLarge {
                what,
                size: declared_size,
                limit,
            });
        }
        let oci = self.image.to_oci();
        self.client
            .store_auth_if_needed(oci.resolve_registry(), &self.auth)
            .await;
        // Our own descriptor: no foreign `urls`.
        let layer = oci_client::client::LayerDescriptor {
            digest,
            urls: &None,
        };
        let response = self.client.pull_blob_stream(&oci, &layer).await;
        let mut stream = response.map_err(|e| self.blob_error(e, digest))?;
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                // oci-client verifies too and reports a mismatch as the
                // stream's last item; ours below says it with the sizes.
                Err(e) if is_digest_error(&e) => break,
                Err(e) => return Err(self.stream_error(e, digest)),
            };
            received += chunk.len() as u64;
            if received > declared_size {
                return Err(ImageError::TooLarge {
                    what: format!("{what} (more bytes than its descriptor's {declared_size})"),
                    size: received,
                    limit: declared_size,
                });
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| self.local_write_error(e, digest))?;
        }
        out.flush()
            .await
            .map_err(|e| self.local_write_error(e, digest))?;
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest || received != declared_size {
            return Err(ImageError::DigestMismatch {
                what,
                expected: format!("{digest} ({declared_size} bytes)"),
                actual: format!("{actual} ({received} bytes)"),
            });
        }
        Ok(received)
    }

    fn blob_error(&self, e: OciDistributionError, digest: &str) -> ImageError {
        match self.error(e, None) {
            ImageError::ManifestUnknown { .. } => ImageError::BlobUnknown {
                registry: self.image.registry().to_string(),
                repository: self.image.repository().to_string(),
                digest: digest.to_string(),
            },
            other => other,
        }
    }

    /// An error while bytes stream (other than oci-client's digest check):
    /// the transport.
    fn stream_error(&self, e: std::io::Error, digest: &str) -> ImageError {
        let text = error_chain(&e);
        if text.contains("timed out") || text.contains("Timeout") {
            return ImageError::Timeout {
                registry: self.image.registry().to_string(),
                seconds: self.timeout.as_secs(),
            };
        }
        ImageError::Unreachable {
            registry: self.image.registry().to_string(),
            reason: format!("while receiving blob {digest}: {text}"),
        }
    }

    fn local_write_error(&self, e: std::io::Error, digest: &str) -> ImageError {
        ImageError::Io {
            action: "writing blob",
            path: digest.into(),
            source: e,
        }
    }

    /// Turns oci-client's error into the outcome it means.
    fn error(&self, e: OciDistributionError, manifest: Option<&ImageReference>) -> ImageError {
        let registry = self.image.registry().to_string();
        let unauthorized = |registry: String| ImageError::Unauthorized {
            registry,
            why: if self.has_credentials {
                "the credentials given (wrong username or password?)".into()
            } else {
                "anonymous access: the image does not exist there or needs credentials".into()
            },
        };
        match e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => unauthorized(registry),
            OciDistributionError::RegistryError { envelope, .. } => {
                let code = envelope.errors.first().map(|e| &e.code);
                match code {
                    Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => {
                        unauthorized(registry)
                    }
                    Some(OciErrorCode::NameUnknown) => ImageError::ImageNotFound {
                        registry,
                        repository: self.image.repository().to_string(),
                    },
                    Some(OciErrorCode::ManifestUnknown | OciErrorCode::NotFound) => {
                        ImageError::ManifestUnknown {
                            registry,
                            reference: manifest.unwrap_or(&self.image).to_string(),
                        }
                    }
                    Some(OciErrorCode::BlobUnknown) => ImageError::BlobUnknown {
                        registry,
                        repository: self.image.repository().to_string(),
                        digest: String::new(),
                    },
                    _ => ImageError::Registry {
                        registry,
                        detail: envelope.to_string(),
                    },
                }
            }
            OciDistributionError::ServerError { code: 404, .. } => ImageError::ManifestUnknown {
                registry,
                reference: manifest.unwrap_or(&self.image).to_string(),
            },
            OciDistributionError::ServerError { code, message, .. } => ImageError::Registry {
                registry,
                detail: format!("HTTP {code}: {}", truncate(&message, 200)),
            },
            OciDistributionError::RequestError(e) if e.is_timeout() => ImageError::Timeout {
                registry,
                seconds: self.timeout.as_secs(),
            },
            OciDistributionError::RequestError(e) => ImageError::Unreachable {
                registry,
                reason: error_chain(&e),
            },
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected,
                actual,
            }) => ImageError::DigestMismatch {
                what: format!("manifest {}", manifest.unwrap_or(&self.image)),
                expected,
                actual,
            },
            OciDistributionError::DigestError(e) => ImageError::BadManifest {
                reference: manifest.unwrap_or(&self.image).to_string(),
                why: format!("its digest header: {e}"),
            },
            other => ImageError::Registry {
                registry,
                detail: other.to_string(),
            },
        }
    }
}

fn choose_linux_amd64(
    image: &ImageReference,
    entries: &[IndexEntry],
) -> Result<String, ImageError> {
    let is_amd64 = |p: &Platform| {
        p.os == "linux"
            && p.architecture == "amd64"
            && p.variant.as_deref().is_none_or(|v| v == "v1")
    };
    if let Some(entry) = entries
        .iter()
        .find(|e| e.platform.as_ref().is_some_and(is_amd64))
    {
        check_digest_syntax(&entry.digest, image)?;
        return Ok(entry.digest.clone());
    }
    let available: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    Err(ImageError::WrongPlatform {
        reference: image.to_string(),
        available: if available.is_empty() {
            "none named".into()
        } else {
            available.join(", ")
        },
    })
}

fn check_platform(given: &str, config: &ConfigBlob) -> Result<(), ImageError> {
    // Old images may leave these empty; only a named other platform is refused.
    let os_ok = config.os.is_empty() || config.os == "linux";
    let arch_ok = config.architecture.is_empty() || config.architecture == "amd64";
    if os_ok && arch_ok {
        return Ok(());
    }
    Err(ImageError::WrongPlatform {
        reference: given.to_string(),
        available: format!("{}/{}", config.os, config.architecture),
    })
}

fn check_digest_syntax(digest: &str, image: &ImageReference) -> Result<(), ImageError> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    });
    if ok {
        return Ok(());
    }
    Err(ImageError::BadManifest {
        reference: image.to_string(),
        why: format!("{digest:?} is not a sha256 digest"),
    })
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `127.0.0.0/8`, `localhost` and `[::1]`, with or without a port.
fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_digest_error(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| {
        inner
            .downcast_ref::<oci_client::errors::DigestError>()
            .is_some()
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http_others_only_when_listed() {
        let registry = Registry::new(RegistryConfig {
            insecure_registries: vec!["registry.internal:5000".into()],
            ..Default::default()
        });
        for plain in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "registry.internal:5000",
        ] {
            assert!(registry.is_plain_http(plain), "{plain}");
        }
        for tls in [
            "registry-1.docker.io",
            "registry.internal",
            "10.0.0.1:5000",
            "localhost.example.com",
            "128.0.0.1",
        ] {
            assert!(!registry.is_plain_http(tls), "{tls}");
        }
    }

    #[test]
    fn exposed_ports_are_tcp_only_and_sorted() {
        let blob: ConfigBlob = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"ExposedPorts":{"9000/tcp":{},"53/udp":{},"8080":{},"x/tcp":{}},"User":"","WorkingDir":"/app"}}"#,
        )
        .unwrap();
        let config = blob.runtime();
        assert_eq!(config.exposed_ports, vec![8080, 9000]);
        assert_eq!(config.user, None);
        assert_eq!(config.working_dir.as_deref(), Some("/app"));
    }

    #[test]
    fn env_pairs_split_at_the_first_equals() {
        let config = ImageConfig {
            env: vec!["A=b=c".into(), "EMPTY=".into(), "BARE".into()],
            ..Default::default()
        };
        assert_eq!(
            config.env_pairs(),
            vec![
                ("A".into(), "b=c".into()),
                ("EMPTY".into(), String::new()),
                ("BARE".into(), String::new())
            ]
        );
    }

    #[test]
    fn credentials_never_show_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}

#[cfg(test)]
mod client_cache_tests {
    use super::*;

    #[test]
    fn clients_are_shared_per_registry_and_credentials_only() {
        let registry = Registry::new(RegistryConfig::default());
        let image: ImageReference = "example.com/app:v1".parse().unwrap();
        let other: ImageReference = "example.org/app:v1".parse().unwrap();
        let alice = Credentials {
            username: "alice".into(),
            password: "right".into(),
        };
        let wrong = Credentials {
            password: "wrong".into(),
            ..alice.clone()
        };
        registry.session(&image, None).unwrap();
        registry.session(&image, None).unwrap();
        registry.session(&image, Some(&alice)).unwrap();
        registry.session(&image, Some(&alice)).unwrap();
        registry.session(&image, Some(&wrong)).unwrap();
        registry.session(&other, Some(&alice)).unwrap();
        let clients = registry.lock_clients();
        assert_eq!(clients.len(), 4);
        assert!(
            clients
                .keys()
                .all(|k| !k.contains("right") && !k.contains("wrong"))
        );
    }
}

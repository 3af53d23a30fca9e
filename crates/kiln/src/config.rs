//! The server's configuration, parsed once: command-line flags (with
//! `KILN_*` environment fallbacks), then an optional TOML file for whatever
//! the flags leave unset, then defaults. Nothing below `main` reads the
//! environment.

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Default)]
pub struct ServerArgs {
    /// TOML file with any of the settings below (flags win over the file)
    #[arg(long, env = "KILN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the databases, blobs, stack and containers live
    #[arg(long, env = "KILN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the Cloud Controller API (and UAA and log cache)
    #[arg(long, env = "KILN_API_LISTEN")]
    pub api_listen: Option<SocketAddr>,
    /// Address of the HTTP router that serves the apps
    #[arg(long, env = "KILN_ROUTER_LISTEN")]
    pub router_listen: Option<SocketAddr>,
    /// Threads the router serves connections on (default: one per CPU)
    #[arg(long, env = "KILN_ROUTER_WORKERS")]
    pub router_workers: Option<usize>,
    /// Address of the router's status port (`GET /health`; default: none)
    #[arg(long, env = "KILN_ROUTER_STATUS_LISTEN")]
    pub router_status_listen: Option<SocketAddr>,
    /// Requests in flight per app instance through the router, at most; 0: no limit (default 500)
    #[arg(long, env = "KILN_ROUTER_MAX_CONNS_PER_BACKEND")]
    pub router_max_conns_per_backend: Option<usize>,
    /// The shared domain app routes are created in
    #[arg(long, env = "KILN_DOMAIN")]
    pub domain: Option<String>,
    /// The API's URL as clients and cells reach it (default: http://<api-listen>)
    #[arg(long, env = "KILN_EXTERNAL_URL")]
    pub external_url: Option<String>,
    /// The admin user's password on first start (default: generated and printed once)
    #[arg(long, env = "KILN_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// This cell's id
    #[arg(long, env = "KILN_CELL_ID")]
    pub cell_id: Option<String>,
    /// The address instances on this cell are reached at
    #[arg(long, env = "KILN_CELL_ADDRESS")]
    pub cell_address: Option<String>,
    /// Memory this cell offers to instances and tasks, in MB
    #[arg(long, env = "KILN_CELL_MEMORY_MB")]
    pub cell_memory_mb: Option<u64>,
    /// Disk this cell offers, in MB
    #[arg(long, env = "KILN_CELL_DISK_MB")]
    pub cell_disk_mb: Option<u64>,
    /// The cell's container network, an IPv4 CIDR (default 10.254.0.0/22),
    /// or `none` to run containers in the host's network (no isolation)
    #[arg(long, env = "KILN_CELL_NETWORK")]
    pub cell_network: Option<String>,
    /// The runc binary
    #[arg(long, env = "KILN_RUNC")]
    pub runc: Option<PathBuf>,
    /// Staging time limit in seconds (Cloud Foundry: 900)
    #[arg(long, env = "KILN_STAGING_TIMEOUT")]
    pub staging_timeout: Option<u64>,
    /// Docker registries (`host[:port]`, comma-separated) spoken to over
    /// plain HTTP; loopback ones always are
    #[arg(long, env = "KILN_INSECURE_DOCKER_REGISTRIES", value_delimiter = ',')]
    pub insecure_docker_registries: Option<Vec<String>>,
    /// Size the cell's image layer cache is kept under, in MB (default 10240)
    #[arg(long, env = "KILN_IMAGE_CACHE_MB")]
    pub image_cache_mb: Option<u64>,
    /// The largest image layer a cell pulls, compressed, in MB (default 2048)
    #[arg(long, env = "KILN_IMAGE_MAX_LAYER_MB")]
    pub image_max_layer_mb: Option<u64>,
    /// Seconds a registry may take to answer (or stall a layer) (default 60)
    #[arg(long, env = "KILN_DOCKER_REGISTRY_TIMEOUT")]
    pub docker_registry_timeout: Option<u64>,
}

/// The same settings as a TOML file holds them.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    api_listen: Option<SocketAddr>,
    router_listen: Option<SocketAddr>,
    router_workers: Option<usize>,
    router_status_listen: Option<SocketAddr>,
    router_max_conns_per_backend: Option<usize>,
    domain: Option<String>,
    external_url: Option<String>,
    admin_password: Option<String>,
    cell_id: Option<String>,
    cell_address: Option<String>,
    cell_memory_mb: Option<u64>,
    cell_disk_mb: Option<u64>,
    cell_network: Option<String>,
    runc: Option<PathBuf>,
    staging_timeout: Option<u64>,
    insecure_docker_registries: Option<Vec<String>>,
    image_cache_mb: Option<u64>,
    image_max_layer_mb: Option<u64>,
    docker_registry_timeout: Option<u64>,
}

/// The validated values the roles use.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub api_listen: SocketAddr,
    pub router_listen: SocketAddr,
    /// 0: one per CPU.
    pub router_workers: usize,
    pub router_status_listen: Option<SocketAddr>,
    /// 0: no limit.
    pub router_max_conns_per_backend: usize,
    pub domain: String,
    pub external_url: String,
    pub admin_password: Option<String>,
    pub cell_id: String,
    pub cell_address: String,
    pub cell_memory_mb: u64,
    pub cell_disk_mb: u64,
    /// `None`: containers share the host's network.
    pub cell_network: Option<kiln_cell::network::Subnet>,
    pub runc: PathBuf,
    pub staging_timeout_ms: u64,
    /// The cell's docker image settings.
    pub images: kiln_cell::image::ImageSettings,
}

impl ServerConfig {
    pub fn resolve(args: ServerArgs) -> anyhow::Result<ServerConfig> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let images = image_settings(&args, &file)?;
        let api_listen = args
            .api_listen
            .or(file.api_listen)
            .unwrap_or(([127, 0, 0, 1], 9022).into());
        let external_url = args
            .external_url
            .or(file.external_url)
            .unwrap_or_else(|| format!("http://{api_listen}"))
            .trim_end_matches('/')
            .to_string();
        let domain = args
            .domain
            .or(file.domain)
            .unwrap_or_else(|| "localhost".into());
        anyhow::ensure!(
            !domain.is_empty()
                && domain
                    .split('.')
                    .all(|l| !l.is_empty()
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')),
            "invalid domain {domain:?}"
        );
        let cell_network = match args
            .cell_network
            .or(file.cell_network)
            .as_deref()
            .unwrap_or(kiln_cell::network::DEFAULT_SUBNET)
        {
            "none" => None,
            cidr => Some(cidr.parse().context("--cell-network")?),
        };
        let staging_timeout = args.staging_timeout.or(file.staging_timeout).unwrap_or(900);
        anyhow::ensure!(staging_timeout > 0, "staging timeout must be positive");
        Ok(ServerConfig {
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| "/var/lib/kiln".into()),
            api_listen,
            router_listen: args
                .router_listen
                .or(file.router_listen)
                .unwrap_or(([127, 0, 0, 1], 8080).into()),
            router_workers: args.router_workers.or(file.router_workers).unwrap_or(0),
            router_status_listen: args.router_status_listen.or(file.router_status_listen),
            router_max_conns_per_backend: args
                .router_max_conns_per_backend
                .or(file.router_max_conns_per_backend)
                .unwrap_or(500),
            domain,
            external_url,
            admin_password: args.admin_password.or(file.admin_password),
            cell_id: args
                .cell_id
                .or(file.cell_id)
                .unwrap_or_else(|| "cell-0".into()),
            cell_address: args
                .cell_address
                .or(file.cell_address)
                .unwrap_or_else(|| "127.0.0.1".into()),
            cell_memory_mb: args.cell_memory_mb.or(file.cell_memory_mb).unwrap_or(8192),
            cell_disk_mb: args.cell_disk_mb.or(file.cell_disk_mb).unwrap_or(65536),
            cell_network,
            runc: find_program(&args.runc.or(file.runc).unwrap_or_else(|| "runc".into()))?,
            staging_timeout_ms: staging_timeout * 1000,
            images,
        })
    }
}

/// The docker image settings, checked: registries are `host[:port]`,
/// sizes and the time-out positive.
fn image_settings(
    args: &ServerArgs,
    file: &FileConfig,
) -> anyhow::Result<kiln_cell::image::ImageSettings> {
    const MB: u64 = 1 << 20;
    let registries: Vec<String> = args
        .insecure_docker_registries
        .clone()
        .or(file.insecure_docker_registries.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect();
    for r in &registries {
        anyhow::ensure!(
            !r.contains('/') && !r.contains("://") && !r.contains(char::is_whitespace),
            "--insecure-docker-registries: {r:?} is not host[:port]"
        );
    }
    let positive = |v: Option<u64>, default: u64, flag: &str| -> anyhow::Result<u64> {
        let v = v.unwrap_or(default);
        anyhow::ensure!(v > 0, "{flag} must be positive");
        Ok(v)
    };
    Ok(kiln_cell::image::ImageSettings {
        insecure_registries: registries,
        cache_max_bytes: positive(
            args.image_cache_mb.or(file.image_cache_mb),
            10240,
            "--image-cache-mb",
        )? * MB,
        max_layer_bytes: positive(
            args.image_max_layer_mb.or(file.image_max_layer_mb),
            2048,
            "--image-max-layer-mb",
        )? * MB,
        timeout: std::time::Duration::from_secs(positive(
            args.docker_registry_timeout
                .or(file.docker_registry_timeout),
            60,
            "--docker-registry-timeout",
        )?),
    })
}

/// An absolute path for `program`: as given when it has a `/`, else the
/// first match on `PATH` (the cell runs it by absolute path).
fn find_program(program: &Path) -> anyhow::Result<PathBuf> {
    if program.components().count() > 1 {
        return Ok(program.to_path_buf());
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!(
                "{} not found on PATH; install it (apt-get install runc) or pass --runc",
                program.display()
            )
        })
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kiln.toml");
        std::fs::write(
            &file,
            "domain = \"apps.test\"\nrouter_listen = \"127.0.0.1:9999\"\ndata_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        let args = ServerArgs {
            config: Some(file),
            domain: Some("flag.test".into()),
            ..Default::default()
        };
        let config = ServerConfig::resolve(args).unwrap();
        assert_eq!(config.domain, "flag.test", "a flag wins over the file");
        assert_eq!(
            config.router_listen.port(),
            9999,
            "the file wins over the default"
        );
        assert_eq!(config.api_listen.port(), 9022);
        assert_eq!(config.external_url, "http://127.0.0.1:9022");
        assert_eq!(config.staging_timeout_ms, 900_000);
        assert_eq!(
            config.cell_network.map(|s| s.to_string()).as_deref(),
            Some("10.254.0.0/22")
        );
    }

    #[test]
    fn the_cell_network_is_a_cidr_or_none() {
        let resolve = |value: &str| {
            ServerConfig::resolve(ServerArgs {
                cell_network: Some(value.into()),
                runc: Some("/usr/sbin/runc".into()),
                ..Default::default()
            })
        };
        assert!(resolve("none").unwrap().cell_network.is_none());
        assert_eq!(
            resolve("10.200.4.0/24")
                .unwrap()
                .cell_network
                .unwrap()
                .to_string(),
            "10.200.4.0/24"
        );
        let err = resolve("10.200.4.1/24").unwrap_err();
        assert!(format!("{err:#}").contains("host bits"), "{err:#}");
    }

    #[test]
    fn unknown_keys_and_bad_domains_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kiln.toml");
        std::fs::write(&file, "domian = \"typo\"\n").unwrap();
        let err = ServerConfig::resolve(ServerArgs {
            config: Some(file),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("domian"), "{err:#}");
        let err = ServerConfig::resolve(ServerArgs {
            domain: Some("a..b".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("invalid domain"));
    }
}

//! The server's configuration, parsed once: command-line flags (with
//! `KILN_*` environment fallbacks), then an optional TOML file for whatever
//! the flags leave unset, then defaults. Nothing below `main` reads the
//! environment.

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `kiln bbs ...`: the BBS's credentials, run on the BBS's machine.
#[derive(clap::Subcommand, Debug)]
pub enum BbsCommand {
    /// Write credentials for one cell, valid for a limited time: the token
    /// names the cell, and a cell may act only for the id it names
    IssueToken {
        /// The BBS's data directory (its keys are in <data-dir>/bbs)
        #[arg(long, env = "KILN_DATA_DIR", default_value = "/var/lib/kiln")]
        data_dir: PathBuf,
        /// The cell the token is for (its --cell-id)
        #[arg(long)]
        cell_id: String,
        /// How long the token is valid: 30s, 90m, 24h, 7d
        #[arg(long, default_value = "24h", value_parser = kiln_bbs::auth::parse_duration)]
        ttl: std::time::Duration,
        /// Where to write the credentials file (mode 0600; the cell's
        /// --bbs-credentials)
        #[arg(long)]
        output: PathBuf,
    },
    /// Replace the BBS's signing key; tokens signed by the old one stay
    /// accepted for the grace period, so running cells are not cut off
    /// while they are given new credentials. A running BBS picks the new
    /// key up at once; <data-dir>/bbs/credentials is re-issued.
    RotateKey {
        #[arg(long, env = "KILN_DATA_DIR", default_value = "/var/lib/kiln")]
        data_dir: PathBuf,
        /// How long the old key stays accepted: 30s, 90m, 24h, 7d
        #[arg(long, default_value = "1h", value_parser = kiln_bbs::auth::parse_duration)]
        grace: std::time::Duration,
    },
}

impl BbsCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            BbsCommand::IssueToken {
                data_dir,
                cell_id,
                ttl,
                output,
            } => {
                let dir = data_dir.join("bbs");
                let credentials = kiln_bbs::auth::issue_credentials(&dir, &cell_id, ttl)
                    .with_context(|| {
                        format!("issuing a token with the keys in {}", dir.display())
                    })?;
                credentials
                    .write(&output)
                    .with_context(|| format!("writing {}", output.display()))?;
                println!(
                    "Wrote credentials for cell {cell_id}, valid for {} s, to {}",
                    ttl.as_secs(),
                    output.display()
                );
            }
            BbsCommand::RotateKey { data_dir, grace } => {
                let dir = data_dir.join("bbs");
                kiln_bbs::auth::rotate_key(&dir, grace)
                    .with_context(|| format!("rotating the key in {}", dir.display()))?;
                println!(
                    "Rotated the BBS key in {}; the old key is accepted for {} s more. \
                     Re-issue cells' credentials within that time.",
                    dir.display(),
                    grace.as_secs()
                );
            }
        }
        Ok(())
    }
}

#[derive(Args, Debug, Default)]
pub struct ServerArgs {
    /// The roles this process plays, comma-separated: api, bbs, cell,
    /// router (default: all four)
    #[arg(long, env = "KILN_ROLES", value_delimiter = ',')]
    pub roles: Option<Vec<String>>,
    /// Serve the BBS over HTTP on this address, for cells and routers in
    /// other processes (bbs role; default: not served)
    #[arg(long, env = "KILN_BBS_LISTEN")]
    pub bbs_listen: Option<SocketAddr>,
    /// The URL other nodes reach this node's BBS at, on a cluster
    /// (PostgreSQL): written in the BBS lock row while this node is
    /// active, so standbys forward there (default: http://<--bbs-listen>)
    #[arg(long, env = "KILN_BBS_ADVERTISE_URL")]
    pub bbs_advertise_url: Option<String>,
    /// The BBS to join, for a process without the bbs role (default: the
    /// URL in the credentials file); a cluster's nodes as `A,B` or the flag
    /// repeated: the process moves to the next when one cannot be reached
    #[arg(long, env = "KILN_BBS_URL", value_delimiter = ',')]
    pub bbs_url: Vec<String>,
    /// The credentials file the BBS wrote (<data-dir>/bbs/credentials on
    /// its machine), for a process without the bbs role
    #[arg(long, env = "KILN_BBS_CREDENTIALS")]
    pub bbs_credentials: Option<PathBuf>,
    /// How long an evacuating cell waits for its instances' replacements
    /// to run elsewhere before it stops them anyway, in seconds (Diego: 600)
    #[arg(long, env = "KILN_EVACUATION_TIMEOUT")]
    pub evacuation_timeout: Option<u64>,
    /// How often a cell re-reads its whole work from the BBS, in seconds
    /// (Diego's rep: 30); new work reaches it at once by the BBS's events,
    /// so this is the backstop, and each re-read costs the BBS the cell's work
    #[arg(long, env = "KILN_BULK_SYNC_INTERVAL")]
    pub bulk_sync_interval: Option<u64>,
    /// TOML file with any of the settings below (flags win over the file)
    #[arg(long, env = "KILN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the databases, blobs, stack and containers live
    #[arg(long, env = "KILN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where packages, droplets and buildpacks live: a directory (a path or
    /// file:///PATH; default DATA_DIR/blobs) or an S3 bucket
    /// (s3://BUCKET?endpoint=URL&region=REGION, credentials from
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)
    #[arg(long, env = "KILN_BLOBSTORE_URL")]
    pub blobstore_url: Option<String>,
    /// Where the CCDB and the BBS database live: SQLite files in a
    /// directory (sqlite://DIR: DIR/ccdb.sqlite and DIR/bbs.sqlite; default:
    /// the data dir's) or one PostgreSQL database
    /// (postgres://USER:PASS@HOST:PORT/DB; the CCDB in schema ccdb, the BBS
    /// in schema bbs)
    #[arg(long, env = "KILN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Connections each database pool (CCDB, BBS) opens at most (default 8)
    #[arg(long, env = "KILN_DATABASE_MAX_CONNECTIONS")]
    pub database_max_connections: Option<u32>,
    /// Address of the Cloud Controller API (and UAA and log cache)
    #[arg(long, env = "KILN_API_LISTEN")]
    pub api_listen: Option<SocketAddr>,
    /// Memory the log cache keeps log lines in, across all apps, at most
    /// (MB, default 64); past it the apps with the most history lose their
    /// oldest lines first
    #[arg(long, env = "KILN_LOG_CACHE_MAX_MB")]
    pub log_cache_max_mb: Option<usize>,
    /// Log lines the log cache keeps for each app, at most (default
    /// 10000; log cache's `max_per_source`); a follower reads lines two
    /// seconds old, so an app writing more than this in two seconds loses
    /// lines to `kiln logs`
    #[arg(long, env = "KILN_LOG_CACHE_MAX_PER_SOURCE")]
    pub log_cache_max_per_source: Option<usize>,
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
    /// Seconds a kept-alive client connection to the router may wait for its
    /// next request before it is closed (Gorouter's frontend_idle_timeout: 900)
    #[arg(long, env = "KILN_ROUTER_CLIENT_IDLE_TIMEOUT")]
    pub router_client_idle_timeout: Option<u64>,
    /// Address of the router's HTTPS listener (default: none; needs --router-tls-cert)
    #[arg(long, env = "KILN_ROUTER_TLS_LISTEN")]
    pub router_tls_listen: Option<SocketAddr>,
    /// A PEM certificate chain and its key, as CERT_FILE:KEY_FILE; repeat for
    /// several (chosen by SNI, the first is the default). Reread on SIGHUP
    #[arg(
        long = "router-tls-cert",
        env = "KILN_ROUTER_TLS_CERTS",
        value_delimiter = ','
    )]
    pub router_tls_certs: Vec<kiln_router::CertKeyPair>,
    /// Send Strict-Transport-Security with this max-age (seconds) on HTTPS responses
    #[arg(long, env = "KILN_ROUTER_HSTS_MAX_AGE")]
    pub router_hsts_max_age: Option<u64>,
    /// Add includeSubDomains to Strict-Transport-Security
    #[arg(long, env = "KILN_ROUTER_HSTS_INCLUDE_SUBDOMAINS")]
    pub router_hsts_include_subdomains: bool,
    /// Add preload to Strict-Transport-Security
    #[arg(long, env = "KILN_ROUTER_HSTS_PRELOAD")]
    pub router_hsts_preload: bool,
    /// Replace a client's X-Forwarded-Proto with the scheme it connected by
    #[arg(long, env = "KILN_ROUTER_SANITIZE_FORWARDED_PROTO")]
    pub router_sanitize_forwarded_proto: bool,
    /// A session cookie name that starts a sticky session; repeat for several (default JSESSIONID)
    #[arg(
        long = "router-sticky-cookie",
        env = "KILN_ROUTER_STICKY_COOKIES",
        value_delimiter = ','
    )]
    pub router_sticky_cookies: Vec<String>,
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
    /// The address this cell advertises: routers and process stats reach
    /// its instances there (CF_INSTANCE_IP)
    #[arg(long, visible_alias = "listen", env = "KILN_CELL_ADDRESS")]
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
    /// A file whose content keys the CCDB's secrets at rest (Cloud
    /// Controller's db_encryption_key); default: <data-dir>/api/db-encryption-key,
    /// generated on first start
    #[arg(long, env = "KILN_DB_ENCRYPTION_KEY_FILE")]
    pub db_encryption_key_file: Option<PathBuf>,
}

/// The same settings as a TOML file holds them.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    roles: Option<Vec<String>>,
    bbs_listen: Option<SocketAddr>,
    bbs_advertise_url: Option<String>,
    bbs_url: Option<String>,
    bbs_credentials: Option<PathBuf>,
    evacuation_timeout: Option<u64>,
    bulk_sync_interval: Option<u64>,
    data_dir: Option<PathBuf>,
    blobstore_url: Option<String>,
    database_url: Option<String>,
    database_max_connections: Option<u32>,
    api_listen: Option<SocketAddr>,
    log_cache_max_mb: Option<usize>,
    log_cache_max_per_source: Option<usize>,
    router_listen: Option<SocketAddr>,
    router_workers: Option<usize>,
    router_status_listen: Option<SocketAddr>,
    router_max_conns_per_backend: Option<usize>,
    router_client_idle_timeout: Option<u64>,
    router_tls_listen: Option<SocketAddr>,
    /// `CERT_FILE:KEY_FILE` each.
    router_tls_certs: Option<Vec<String>>,
    router_hsts_max_age: Option<u64>,
    router_hsts_include_subdomains: Option<bool>,
    router_hsts_preload: Option<bool>,
    router_sanitize_forwarded_proto: Option<bool>,
    router_sticky_cookies: Option<Vec<String>>,
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
    db_encryption_key_file: Option<PathBuf>,
}

/// Which roles one process plays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    pub bbs: bool,
    pub cell: bool,
    pub router: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        api: true,
        bbs: true,
        cell: true,
        router: true,
    };

    fn parse(names: &[String]) -> anyhow::Result<Roles> {
        let mut roles = Roles::default();
        for name in names {
            match name.trim() {
                "api" => roles.api = true,
                "bbs" => roles.bbs = true,
                "cell" => roles.cell = true,
                "router" => roles.router = true,
                other => anyhow::bail!(
                    "unknown role {other:?} in --roles (the roles are api, bbs, cell, router)"
                ),
            }
        }
        anyhow::ensure!(roles != Roles::default(), "--roles names no role");
        // The API's log cache is where remote cells' and routers' logs go,
        // through the BBS server's ingress: the two run together.
        anyhow::ensure!(
            roles.api == roles.bbs,
            "the api and bbs roles run together (remote cells send their logs through the bbs to the api's log cache)"
        );
        Ok(roles)
    }
}

/// How a process without the bbs role reaches the BBS.
#[derive(Debug, Clone)]
pub struct RemoteBbs {
    pub credentials: kiln_bbs_client::Credentials,
    /// Read again when the BBS refuses the token (a re-issued one).
    pub credentials_file: PathBuf,
    /// `--bbs-url` (one URL, or several separated by commas), or the
    /// credentials file's hint.
    pub url: String,
}

/// The validated values the roles use.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub roles: Roles,
    pub bbs_listen: Option<SocketAddr>,
    /// `--bbs-advertise-url`: how other nodes reach this node's BBS.
    pub bbs_advertise_url: Option<String>,
    /// Set exactly when the bbs role is not.
    pub remote_bbs: Option<RemoteBbs>,
    pub evacuation_timeout: std::time::Duration,
    pub bulk_sync_interval: std::time::Duration,
    pub data_dir: PathBuf,
    /// `None`: DATA_DIR/blobs.
    pub blobstore_url: Option<String>,
    /// `None`: SQLite files in the data dir (DATA_DIR/api/ccdb.sqlite,
    /// DATA_DIR/bbs.sqlite).
    pub database_url: Option<kiln_store::DatabaseUrl>,
    pub database_max_connections: u32,
    pub api_listen: SocketAddr,
    /// The log cache's memory budget, in bytes.
    pub log_cache_max_bytes: usize,
    /// Log lines kept per app, at most.
    pub log_cache_max_per_source: usize,
    pub router_listen: SocketAddr,
    /// 0: one per CPU.
    pub router_workers: usize,
    pub router_status_listen: Option<SocketAddr>,
    /// 0: no limit.
    pub router_max_conns_per_backend: usize,
    pub router_client_idle_timeout: std::time::Duration,
    /// The HTTPS listener and its certificates, if configured.
    pub router_tls: Option<(SocketAddr, Vec<kiln_router::CertKeyPair>)>,
    pub router_hsts: Option<kiln_router::Hsts>,
    pub router_sanitize_forwarded_proto: bool,
    pub router_sticky_cookies: Vec<String>,
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
    /// `None`: the API's generated key in its data dir.
    pub db_encryption_key_file: Option<PathBuf>,
    /// The cell's docker image settings.
    pub images: kiln_cell::image::ImageSettings,
}

impl ServerConfig {
    /// The log cache this node keeps: each app's newest lines, within the
    /// configured memory.
    pub fn log_store(&self) -> kiln_logs::LogStore {
        kiln_logs::LogStore::with_max_bytes(self.log_cache_max_per_source, self.log_cache_max_bytes)
    }

    pub fn resolve(args: ServerArgs) -> anyhow::Result<ServerConfig> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let router_tls = router_tls(&args, &file)?;
        let router_hsts = router_hsts(&args, &file)?;
        let router_sticky_cookies = router_sticky_cookies(&args, &file)?;
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
        let network_arg = args.cell_network.or(file.cell_network);
        let explicit_network = network_arg.is_some();
        let cell_network = match network_arg
            .as_deref()
            .unwrap_or(kiln_cell::network::DEFAULT_SUBNET)
        {
            "none" => None,
            cidr => Some(cidr.parse().context("--cell-network")?),
        };
        let roles = match args.roles.or(file.roles) {
            Some(names) => Roles::parse(&names)?,
            None => Roles::ALL,
        };
        let bbs_listen = args.bbs_listen.or(file.bbs_listen);
        anyhow::ensure!(
            roles.bbs || bbs_listen.is_none(),
            "--bbs-listen needs the bbs role"
        );
        let bbs_advertise_url = args.bbs_advertise_url.or(file.bbs_advertise_url);
        if let Some(url) = &bbs_advertise_url {
            anyhow::ensure!(
                roles.bbs && (url.starts_with("http://") || url.starts_with("https://")),
                "--bbs-advertise-url needs the bbs role and an http:// URL, not {url:?}"
            );
        }
        let remote_bbs = remote_bbs(
            roles,
            Some(args.bbs_url)
                .filter(|urls| !urls.is_empty())
                .map(|urls| urls.join(","))
                .or(file.bbs_url),
            args.bbs_credentials.or(file.bbs_credentials),
        )?;
        let cell_id = args.cell_id.or(file.cell_id);
        if roles.cell && !roles.bbs {
            // Two cells on one machine must not share a bridge subnet, and
            // only the operator knows which subnets are free: a joining
            // cell names its own (the all-in-one server keeps the default).
            anyhow::ensure!(
                cell_id.is_some(),
                "a cell that joins a remote bbs needs --cell-id"
            );
            anyhow::ensure!(
                explicit_network,
                "a cell that joins a remote bbs needs --cell-network (a subnet no other cell on this machine uses, or none)"
            );
        }
        let router_client_idle_timeout = args
            .router_client_idle_timeout
            .or(file.router_client_idle_timeout)
            .unwrap_or(900);
        anyhow::ensure!(
            router_client_idle_timeout > 0,
            "router client idle timeout must be positive"
        );
        let database_url = args
            .database_url
            .or(file.database_url)
            .map(|u| kiln_store::DatabaseUrl::parse(&u))
            .transpose()
            .context("--database-url")?;
        let database_max_connections = positive(
            args.database_max_connections
                .or(file.database_max_connections),
            kiln_store::DEFAULT_MAX_CONNECTIONS,
            "--database-max-connections",
        )?;
        let staging_timeout = args.staging_timeout.or(file.staging_timeout).unwrap_or(900);
        anyhow::ensure!(staging_timeout > 0, "staging timeout must be positive");
        let bulk_sync_interval = args.bulk_sync_interval.or(file.bulk_sync_interval).map_or(
            kiln_cell::DEFAULT_BULK_SYNC_INTERVAL,
            std::time::Duration::from_secs,
        );
        anyhow::ensure!(
            !bulk_sync_interval.is_zero(),
            "the bulk sync interval must be positive"
        );
        let log_cache_max_mb = positive(
            args.log_cache_max_mb.or(file.log_cache_max_mb),
            kiln_logs::DEFAULT_MAX_BYTES >> 20,
            "--log-cache-max-mb",
        )?;
        let log_cache_max_per_source = positive(
            args.log_cache_max_per_source
                .or(file.log_cache_max_per_source),
            kiln_logs::DEFAULT_ENVELOPES_PER_SOURCE,
            "--log-cache-max-per-source",
        )?;
        Ok(ServerConfig {
            roles,
            bbs_listen,
            bbs_advertise_url,
            remote_bbs,
            evacuation_timeout: std::time::Duration::from_secs(
                args.evacuation_timeout
                    .or(file.evacuation_timeout)
                    .unwrap_or(600),
            ),
            bulk_sync_interval,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| "/var/lib/kiln".into()),
            blobstore_url: args.blobstore_url.or(file.blobstore_url),
            database_url,
            database_max_connections,
            api_listen,
            log_cache_max_bytes: log_cache_max_mb.saturating_mul(1 << 20),
            log_cache_max_per_source,
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
            router_client_idle_timeout: std::time::Duration::from_secs(router_client_idle_timeout),
            router_tls,
            router_hsts,
            router_sanitize_forwarded_proto: args.router_sanitize_forwarded_proto
                || file.router_sanitize_forwarded_proto.unwrap_or(false),
            router_sticky_cookies,
            domain,
            external_url,
            admin_password: args.admin_password.or(file.admin_password),
            cell_id: cell_id.unwrap_or_else(|| "cell-0".into()),
            cell_address: args
                .cell_address
                .or(file.cell_address)
                .unwrap_or_else(|| "127.0.0.1".into()),
            cell_memory_mb: args.cell_memory_mb.or(file.cell_memory_mb).unwrap_or(8192),
            cell_disk_mb: args.cell_disk_mb.or(file.cell_disk_mb).unwrap_or(65536),
            cell_network,
            runc: find_program(&args.runc.or(file.runc).unwrap_or_else(|| "runc".into()))?,
            staging_timeout_ms: staging_timeout * 1000,
            db_encryption_key_file: args.db_encryption_key_file.or(file.db_encryption_key_file),
            images,
        })
    }
}

/// A process without the bbs role needs credentials; one with it must not
/// be pointed at another BBS.
fn remote_bbs(
    roles: Roles,
    url: Option<String>,
    credentials: Option<PathBuf>,
) -> anyhow::Result<Option<RemoteBbs>> {
    if roles.bbs {
        anyhow::ensure!(
            url.is_none() && credentials.is_none(),
            "--bbs-url and --bbs-credentials are for a process without the bbs role"
        );
        return Ok(None);
    }
    let path = credentials.context(
        "a process without the bbs role needs --bbs-credentials FILE (the bbs writes it to <data-dir>/bbs/credentials)",
    )?;
    let credentials = kiln_bbs_client::Credentials::read(&path)?;
    let urls: Vec<String> = url
        .unwrap_or_else(|| credentials.bbs_url.clone())
        .split(',')
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .collect();
    for url in &urls {
        anyhow::ensure!(
            url.starts_with("http://") || url.starts_with("https://"),
            "--bbs-url {url:?} is not an http URL"
        );
    }
    let url = urls.join(",");
    Ok(Some(RemoteBbs {
        credentials,
        url,
        credentials_file: path,
    }))
}

/// The router's HTTPS listener: an address and at least one certificate,
/// or neither.
fn router_tls(
    args: &ServerArgs,
    file: &FileConfig,
) -> anyhow::Result<Option<(SocketAddr, Vec<kiln_router::CertKeyPair>)>> {
    let certs = if args.router_tls_certs.is_empty() {
        file.router_tls_certs
            .iter()
            .flatten()
            .map(|pair| pair.parse().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()
            .context("router_tls_certs")?
    } else {
        args.router_tls_certs.clone()
    };
    match (
        args.router_tls_listen.or(file.router_tls_listen),
        certs.is_empty(),
    ) {
        (None, true) => Ok(None),
        (Some(addr), false) => Ok(Some((addr, certs))),
        (Some(_), true) => {
            anyhow::bail!("--router-tls-listen needs at least one --router-tls-cert")
        }
        (None, false) => anyhow::bail!("--router-tls-cert needs --router-tls-listen"),
    }
}

/// `Strict-Transport-Security`, when a max-age is given.
fn router_hsts(args: &ServerArgs, file: &FileConfig) -> anyhow::Result<Option<kiln_router::Hsts>> {
    let include_subdomains =
        args.router_hsts_include_subdomains || file.router_hsts_include_subdomains.unwrap_or(false);
    let preload = args.router_hsts_preload || file.router_hsts_preload.unwrap_or(false);
    match args.router_hsts_max_age.or(file.router_hsts_max_age) {
        Some(max_age_secs) => Ok(Some(kiln_router::Hsts {
            max_age_secs,
            include_subdomains,
            preload,
        })),
        None if include_subdomains || preload => {
            anyhow::bail!(
                "--router-hsts-include-subdomains and --router-hsts-preload need --router-hsts-max-age"
            )
        }
        None => Ok(None),
    }
}

/// The session cookie names of sticky sessions (default `JSESSIONID`).
fn router_sticky_cookies(args: &ServerArgs, file: &FileConfig) -> anyhow::Result<Vec<String>> {
    let names = if args.router_sticky_cookies.is_empty() {
        file.router_sticky_cookies.clone().unwrap_or_default()
    } else {
        args.router_sticky_cookies.clone()
    };
    if names.is_empty() {
        return Ok(vec!["JSESSIONID".to_string()]);
    }
    // A cookie name is an RFC 6265 token.
    for name in &names {
        anyhow::ensure!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|c| c.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&c)),
            "invalid sticky session cookie name {name:?}"
        );
    }
    Ok(names)
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

/// A setting's value (or its default), which must be above zero.
fn positive<T: Default + PartialOrd>(
    value: Option<T>,
    default: T,
    flag: &str,
) -> anyhow::Result<T> {
    let value = value.unwrap_or(default);
    anyhow::ensure!(value > T::default(), "{flag} must be positive");
    Ok(value)
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
            "domain = \"apps.test\"\nrouter_listen = \"127.0.0.1:9999\"\ndata_dir = \"/tmp/x\"\n\
             log_cache_max_mb = 16\nlog_cache_max_per_source = 50000\n",
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
        assert_eq!(config.log_cache_max_bytes, 16 << 20);
        assert_eq!(config.log_cache_max_per_source, 50_000);
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
    fn the_bbs_advertise_url_is_an_http_url_of_a_bbs_node() {
        let resolve = |roles: &str, url: &str| {
            let joins = !roles.contains("bbs");
            ServerConfig::resolve(ServerArgs {
                roles: Some(roles.split(',').map(String::from).collect()),
                bbs_advertise_url: Some(url.into()),
                bbs_credentials: joins.then(|| "/nonexistent/credentials".into()),
                runc: Some("/usr/sbin/runc".into()),
                ..Default::default()
            })
        };
        let ok = resolve("api,bbs,cell,router", "http://10.0.0.1:8889").unwrap();
        assert_eq!(
            ok.bbs_advertise_url.as_deref(),
            Some("http://10.0.0.1:8889")
        );
        let err = resolve("api,bbs", "10.0.0.1:8889").unwrap_err();
        assert!(err.to_string().contains("--bbs-advertise-url"), "{err}");
        let err = resolve("router", "http://10.0.0.1:8889").unwrap_err();
        assert!(err.to_string().contains("--bbs-advertise-url"), "{err}");
    }

    #[test]
    fn roles_and_what_a_joining_node_needs() {
        let resolve = |roles: &str, credentials: Option<PathBuf>| {
            ServerConfig::resolve(ServerArgs {
                roles: Some(roles.split(',').map(String::from).collect()),
                bbs_credentials: credentials,
                runc: Some("/usr/sbin/runc".into()),
                ..Default::default()
            })
        };
        assert_eq!(
            resolve("api,bbs,cell,router", None).unwrap().roles,
            Roles::ALL
        );
        let err = resolve("api,cel", None).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown role \"cel\""),
            "{err:#}"
        );
        let err = resolve("api,cell", None).unwrap_err();
        assert!(format!("{err:#}").contains("run together"), "{err:#}");
        let err = resolve("router", None).unwrap_err();
        assert!(format!("{err:#}").contains("--bbs-credentials"), "{err:#}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        kiln_bbs_client::Credentials {
            bbs_url: "http://127.0.0.1:8889/".into(),
            token: "kbbs1.0.00".into(),
        }
        .write(&file)
        .unwrap();
        let router = resolve("router", Some(file.clone())).unwrap();
        assert_eq!(router.remote_bbs.unwrap().url, "http://127.0.0.1:8889");
        // A cluster's nodes, as a list or the flag repeated.
        for urls in [
            vec!["http://127.0.0.1:8889/,http://127.0.0.2:8889".to_string()],
            vec![
                "http://127.0.0.1:8889/".to_string(),
                "http://127.0.0.2:8889".to_string(),
            ],
        ] {
            let router = ServerConfig::resolve(ServerArgs {
                roles: Some(vec!["router".into()]),
                bbs_credentials: Some(file.clone()),
                bbs_url: urls
                    .iter()
                    .flat_map(|u| u.split(','))
                    .map(str::to_string)
                    .collect(),
                ..Default::default()
            })
            .unwrap();
            assert_eq!(
                router.remote_bbs.unwrap().url,
                "http://127.0.0.1:8889,http://127.0.0.2:8889"
            );
        }
        let err = ServerConfig::resolve(ServerArgs {
            roles: Some(vec!["router".into()]),
            bbs_credentials: Some(file.clone()),
            bbs_url: vec!["http://127.0.0.1:8889".into(), "127.0.0.2:8889".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("not an http URL"), "{err:#}");
        // A joining cell names its id and its subnet.
        let err = resolve("cell", Some(file.clone())).unwrap_err();
        assert!(format!("{err:#}").contains("--cell-id"), "{err:#}");
        let err = ServerConfig::resolve(ServerArgs {
            roles: Some(vec!["cell".into()]),
            bbs_credentials: Some(file.clone()),
            cell_id: Some("c1".into()),
            runc: Some("/usr/sbin/runc".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("--cell-network"), "{err:#}");
        let err = ServerConfig::resolve(ServerArgs {
            bbs_credentials: Some(file),
            runc: Some("/usr/sbin/runc".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("without the bbs role"),
            "{err:#}"
        );
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

    #[test]
    fn the_bulk_sync_interval_is_diegos_by_default_and_never_zero() {
        let base = || ServerArgs {
            runc: Some("/usr/sbin/runc".into()),
            ..Default::default()
        };
        let config = ServerConfig::resolve(base()).unwrap();
        assert_eq!(
            config.bulk_sync_interval,
            std::time::Duration::from_secs(30)
        );
        let config = ServerConfig::resolve(ServerArgs {
            bulk_sync_interval: Some(5),
            ..base()
        })
        .unwrap();
        assert_eq!(config.bulk_sync_interval, std::time::Duration::from_secs(5));
        let err = ServerConfig::resolve(ServerArgs {
            bulk_sync_interval: Some(0),
            ..base()
        })
        .unwrap_err();
        assert!(err.to_string().contains("bulk sync interval"), "{err:#}");
    }

    #[test]
    fn the_router_client_idle_timeout_is_gorouters_by_default_and_never_zero() {
        let base = || ServerArgs {
            runc: Some("/usr/sbin/runc".into()),
            ..Default::default()
        };
        let config = ServerConfig::resolve(base()).unwrap();
        assert_eq!(
            config.router_client_idle_timeout,
            std::time::Duration::from_secs(900)
        );
        let config = ServerConfig::resolve(ServerArgs {
            router_client_idle_timeout: Some(30),
            ..base()
        })
        .unwrap();
        assert_eq!(
            config.router_client_idle_timeout,
            std::time::Duration::from_secs(30)
        );
        let err = ServerConfig::resolve(ServerArgs {
            router_client_idle_timeout: Some(0),
            ..base()
        })
        .unwrap_err();
        assert!(err.to_string().contains("idle timeout"), "{err:#}");
    }

    #[test]
    fn router_tls_hsts_and_sticky_cookies() {
        let base = || ServerArgs {
            runc: Some("/usr/sbin/runc".into()),
            ..Default::default()
        };
        let config = ServerConfig::resolve(base()).unwrap();
        assert!(config.router_tls.is_none() && config.router_hsts.is_none());
        assert_eq!(config.router_sticky_cookies, ["JSESSIONID"]);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kiln.toml");
        std::fs::write(
            &file,
            "router_tls_listen = \"127.0.0.1:8443\"\nrouter_tls_certs = [\"/c.pem:/k.pem\"]\n\
             router_hsts_max_age = 60\nrouter_hsts_preload = true\n\
             router_sticky_cookies = [\"SESSION\", \"JSESSIONID\"]\n",
        )
        .unwrap();
        let config = ServerConfig::resolve(ServerArgs {
            config: Some(file),
            ..base()
        })
        .unwrap();
        let (addr, certs) = config.router_tls.unwrap();
        assert_eq!(addr.port(), 8443);
        assert_eq!(certs, ["/c.pem:/k.pem".parse().unwrap()]);
        let hsts = config.router_hsts.unwrap();
        assert!(hsts.max_age_secs == 60 && hsts.preload && !hsts.include_subdomains);
        assert_eq!(config.router_sticky_cookies, ["SESSION", "JSESSIONID"]);

        for (args, why) in [
            (
                ServerArgs {
                    router_tls_listen: Some(([127, 0, 0, 1], 8443).into()),
                    ..base()
                },
                "needs at least one",
            ),
            (
                ServerArgs {
                    router_tls_certs: vec!["/c:/k".parse().unwrap()],
                    ..base()
                },
                "needs --router-tls-listen",
            ),
            (
                ServerArgs {
                    router_hsts_preload: true,
                    ..base()
                },
                "need --router-hsts-max-age",
            ),
            (
                ServerArgs {
                    router_sticky_cookies: vec!["a;b".into()],
                    ..base()
                },
                "invalid sticky",
            ),
        ] {
            let err = ServerConfig::resolve(args).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{err:#}");
        }
    }

    #[test]
    fn bbs_issue_token_and_rotate_key_work_on_a_bbs_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("bbs");
        let output = dir.path().join("cell-2.credentials");
        let issue = |cell_id: &str| BbsCommand::IssueToken {
            data_dir: dir.path().into(),
            cell_id: cell_id.into(),
            ttl: std::time::Duration::from_secs(60),
            output: output.clone(),
        };
        // No BBS has run here: a clear error, nothing written.
        let err = issue("cell-2").run().unwrap_err();
        assert!(format!("{err:#}").contains("issuing a token"), "{err:#}");
        assert!(!output.exists());

        kiln_bbs::auth::ensure_credentials(&keys, "http://127.0.0.1:1").unwrap();
        issue("cell-2").run().unwrap();
        let credentials = kiln_bbs_client::Credentials::read(&output).unwrap();
        let ring = kiln_bbs::auth::Keys::from_dir(&keys).unwrap();
        let now = kiln_bbs::auth::unix_now();
        let verified = ring.verify(&credentials.token, now).unwrap();
        assert_eq!(verified.subject.as_deref(), Some("cell-2"));
        assert!(verified.expires > now && verified.expires <= now + 60);
        assert!(issue("not/a cell").run().is_err());

        BbsCommand::RotateKey {
            data_dir: dir.path().into(),
            grace: std::time::Duration::from_secs(60),
        }
        .run()
        .unwrap();
        assert!(ring.verify(&credentials.token, now).is_ok(), "in grace");
        assert_eq!(
            ring.verify(&credentials.token, now + 3600).unwrap_err(),
            kiln_bbs::auth::Refusal::KeyRetired
        );
    }
}

//! `kiln server`: the platform's roles, by default all in one process over
//! one data directory.
//!
//! The roles are the BBS (with auctioneer and converger, and its HTTP
//! server with `--bbs-listen`), the API (Cloud Controller, UAA, log cache),
//! one cell, and the router (`--roles` picks some). Each is a library `run`
//! taking the shared cancellation token; they reach each other only through
//! `BbsClient` and `LogSink`: in process when the BBS is here, over HTTP
//! (`HttpBbsClient`, `HttpLogSink`) when it is not. The first role to stop
//! (or fail) stops the others.

use crate::config::{ServerArgs, ServerConfig};
use anyhow::Context;
use kiln_bbs::{Bbs, BbsClient};
use kiln_logs::{LogSink, LogStore};
use kiln_store::Blobstore;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod cluster;

/// How long roles get to finish in-flight work after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = ServerConfig::resolve(args)?;
    if config.roles.cell && !is_root() {
        anyhow::bail!("the cell role runs app containers with runc and must run as root");
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    restrict_permissions(&config.data_dir)?;

    // Before anything else takes a port (the BBS's loopback port, the
    // connections to the databases): one the kernel picks may be one the
    // operator named, free until it is bound (a restarted node once lost
    // its router port to its own BBS so).
    let listeners = Listeners::bind(&config).await?;

    let shutdown = CancellationToken::new();
    // A cell that joined a remote BBS evacuates on the first signal; the
    // all-in-one server has nowhere to evacuate to and stops.
    let evacuate = (config.roles.cell && !config.roles.bbs).then(CancellationToken::new);
    watch_signals(shutdown.clone(), evacuate.clone());

    let mut roles: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    // A cluster node's cell heartbeats under a session of its own, as a
    // joined cell does (see `cell_session`).
    let mut cell_bbs: Option<Arc<dyn BbsClient>> = None;
    let (bbs_client, log_sink) = match &config.remote_bbs {
        None if cluster::is_cluster(&config) => {
            let (client, sink) =
                cluster::start(&config, listeners.api, listeners.bbs, &shutdown, &mut roles)
                    .await?;
            if config.roles.cell {
                let session = cell_session(&config.data_dir)?;
                cell_bbs = Some(Arc::new(client.clone().with_session(session)));
            }
            let bbs: Arc<dyn BbsClient> = Arc::new(client);
            (bbs, sink)
        }
        None => {
            start_bbs_and_api(&config, listeners.api, listeners.bbs, &shutdown, &mut roles).await?
        }
        Some(remote) => {
            let client = kiln_bbs_client::HttpBbsClient::from_credentials(
                &remote.credentials,
                Some(&remote.url),
            )?
            .with_credentials_file(remote.credentials_file.clone());
            let client = match config.roles.cell {
                true => client.with_session(cell_session(&config.data_dir)?),
                false => client,
            };
            check_bbs(&client).await?;
            let sink: Arc<dyn LogSink> =
                Arc::new(kiln_bbs_client::HttpLogSink::new(client.clone()));
            let bbs: Arc<dyn BbsClient> = Arc::new(client);
            (bbs, sink)
        }
    };
    if config.roles.cell {
        start_cell(
            &config,
            cell_bbs.as_ref().unwrap_or(&bbs_client),
            &log_sink,
            evacuate,
            &shutdown,
            &mut roles,
        )?;
    }
    if let Some(router) = listeners.router {
        start_router(
            &config,
            router,
            &bbs_client,
            &log_sink,
            &shutdown,
            &mut roles,
        )?;
    }

    if config.roles.api {
        println!(
            "Kiln is up: API {} (stack {}), apps at http://<app>.{}:{}",
            config.external_url,
            kiln_cell::stack::host_stack_name(),
            config.domain,
            config.router_listen.port()
        );
    } else {
        println!(
            "Kiln {} joined the bbs at {}",
            role_names(&config),
            config.remote_bbs.as_ref().map_or("", |r| r.url.as_str())
        );
    }

    // The first role to return stops the rest.
    let mut failure = None;
    if let Some(joined) = roles.join_next().await {
        failure = role_outcome(joined);
    }
    shutdown.cancel();
    let drain = async {
        while let Some(joined) = roles.join_next().await {
            if let Some(error) = role_outcome(joined) {
                failure.get_or_insert(error);
            }
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!("roles did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

type Seams = (Arc<dyn BbsClient>, Arc<dyn LogSink>);

/// The ports this node is told to listen on, for its roles here.
struct Listeners {
    /// With the api role (and so the bbs role).
    api: Option<tokio::net::TcpListener>,
    /// `--bbs-listen`'s (a cluster node without it takes a loopback port
    /// of its own later).
    bbs: Option<tokio::net::TcpListener>,
    router: Option<RouterListeners>,
}

struct RouterListeners {
    plain: tokio::net::TcpListener,
    status: Option<tokio::net::TcpListener>,
    tls: Option<tokio::net::TcpListener>,
}

impl Listeners {
    async fn bind(config: &ServerConfig) -> anyhow::Result<Listeners> {
        let api = match config.roles.api {
            true => Some(listen(config.api_listen, "the api").await?),
            false => None,
        };
        let bbs = match config.bbs_listen {
            Some(addr) => Some(listen(addr, "the bbs").await?),
            None => None,
        };
        let router = match config.roles.router {
            true => Some(RouterListeners {
                plain: listen(config.router_listen, "the router").await?,
                status: match config.router_status_listen {
                    Some(addr) => Some(listen(addr, "the router's status").await?),
                    None => None,
                },
                tls: match &config.router_tls {
                    Some((addr, _)) => Some(listen(*addr, "the router's HTTPS").await?),
                    None => None,
                },
            }),
            false => None,
        };
        Ok(Listeners { api, bbs, router })
    }
}

async fn listen(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for {what} on {addr}"))
}

/// The BBS (and its HTTP server when `--bbs-listen` is set) and the API,
/// in this process; the other roles here reach them in process.
/// Where the CCDB and the BBS database are: `--database-url`, or SQLite
/// files in the data dir where they always were.
fn databases(config: &ServerConfig) -> (kiln_store::Database, kiln_store::Database) {
    match &config.database_url {
        Some(url) => (
            url.component("ccdb.sqlite", "ccdb"),
            url.component("bbs.sqlite", "bbs"),
        ),
        None => (
            kiln_store::Database::Sqlite(config.data_dir.join("api").join("ccdb.sqlite")),
            kiln_store::Database::Sqlite(config.data_dir.join("bbs.sqlite")),
        ),
    }
}

/// The API's settings, the same on every kind of node.
fn api_config(config: &ServerConfig) -> kiln_api::ApiConfig {
    kiln_api::ApiConfig {
        data_dir: config.data_dir.join("api"),
        external_url: config.external_url.clone(),
        domain: config.domain.clone(),
        stack: kiln_cell::stack::host_stack_name(),
        admin_password: config.admin_password.clone(),
        max_package_bytes: 1024 * 1024 * 1024,
        staging_timeout_ms: config.staging_timeout_ms,
        db_encryption_key_file: config.db_encryption_key_file.clone(),
    }
}

/// The API on the CCDB, with the blobstore the config names; prints the
/// admin password when it was generated.
async fn open_api(
    config: &ServerConfig,
    ccdb: &kiln_store::Database,
    bbs: Arc<dyn kiln_bbs::BbsClient>,
    logs: Arc<LogStore>,
) -> anyhow::Result<kiln_api::Api> {
    let blobstore: Arc<dyn Blobstore> =
        kiln_store::open_blobstore(config.blobstore_url.as_deref(), &config.data_dir)
            .await
            .context("opening the blobstore")?;
    let api = kiln_api::Api::open_on(
        ccdb,
        kiln_store::OpenOptions {
            max_connections: config.database_max_connections,
            ..Default::default()
        },
        api_config(config),
        kiln_api::ApiDeps {
            bbs,
            blobstore,
            logs,
        },
    )
    .await
    .context("opening the api")?;
    if let Some(password) = api.generated_admin_password() {
        println!(
            "Generated the admin password (shown once, kept in {}): {password}",
            config.data_dir.join("api").join("admin-password").display()
        );
    }
    Ok(api)
}

async fn start_bbs_and_api(
    config: &ServerConfig,
    api_listener: Option<tokio::net::TcpListener>,
    bbs_listener: Option<tokio::net::TcpListener>,
    shutdown: &CancellationToken,
    roles: &mut JoinSet<(&'static str, anyhow::Result<()>)>,
) -> anyhow::Result<Seams> {
    let (ccdb, bbs_db) = databases(config);
    tracing::info!(ccdb = %ccdb.redacted(), bbs = %bbs_db.redacted(), "databases");
    let bbs = Bbs::open_on(
        &bbs_db,
        config.database_max_connections,
        kiln_bbs::BbsConfig::default(),
    )
    .await
    .context("opening the bbs database")?;
    let logs = Arc::new(config.log_store());
    let api = open_api(config, &ccdb, Arc::new(bbs.clone()), logs.clone()).await?;
    let api_listener = api_listener.context("the bbs role runs with the api role")?;
    let log_sink: Arc<dyn LogSink> = logs.clone();

    if let Some(listener) = bbs_listener {
        let url = format!("http://{}", listener.local_addr()?);
        let dir = config.data_dir.join("bbs");
        kiln_bbs::auth::ensure_credentials(&dir, &url)
            .with_context(|| format!("writing the bbs credentials in {}", dir.display()))?;
        // Read again whenever they change: `kiln bbs rotate-key` takes
        // effect without a restart.
        let keys = kiln_bbs::auth::Keys::from_dir(&dir)
            .with_context(|| format!("reading the bbs keys in {}", dir.display()))?;
        println!(
            "BBS listening at {url}; joining nodes need {}",
            dir.join("credentials").display()
        );
        let (bbs, logs, token) = (bbs.clone(), log_sink.clone(), shutdown.clone());
        roles.spawn(async move {
            (
                "bbs server",
                kiln_bbs::server::serve(listener, bbs, logs, keys, token)
                    .await
                    .map_err(Into::into),
            )
        });
    }
    {
        let (bbs, token) = (bbs.clone(), shutdown.clone());
        roles.spawn(async move { ("bbs", bbs.run(token).await.map_err(Into::into)) });
    }
    {
        let token = shutdown.clone();
        roles.spawn(async move {
            (
                "api",
                api.run(api_listener, token).await.map_err(Into::into),
            )
        });
    }
    Ok((Arc::new(bbs), log_sink))
}

fn start_cell(
    config: &ServerConfig,
    bbs: &Arc<dyn BbsClient>,
    logs: &Arc<dyn LogSink>,
    evacuate: Option<CancellationToken>,
    shutdown: &CancellationToken,
    roles: &mut JoinSet<(&'static str, anyhow::Result<()>)>,
) -> anyhow::Result<()> {
    let cell_config = kiln_cell::CellConfig {
        cell_id: config.cell_id.clone(),
        data_dir: config.data_dir.join("cell"),
        address: config.cell_address.clone(),
        capacity: kiln_model::bbs::CellCapacity {
            memory_mb: config.cell_memory_mb,
            disk_mb: config.cell_disk_mb,
            containers: 250,
        },
        stack_name: kiln_cell::stack::host_stack_name(),
        lifecycle_binary: std::env::current_exe().context("locating the kiln binary")?,
        runc: config.runc.clone(),
        port_range: kiln_cell::DEFAULT_PORT_RANGE,
        heartbeat_interval: kiln_cell::DEFAULT_HEARTBEAT_INTERVAL,
        bulk_sync_interval: config.bulk_sync_interval,
        network: config
            .cell_network
            .map(|subnet| kiln_cell::network::NetworkConfig {
                subnet,
                dns_servers: Vec::new(),
            }),
        evacuation_timeout: config.evacuation_timeout,
        images: config.images.clone(),
    };
    let (bbs, logs, token) = (bbs.clone(), logs.clone(), shutdown.clone());
    let evacuate = evacuate.unwrap_or_default();
    roles.spawn(async move {
        (
            "cell",
            kiln_cell::run_evacuating(cell_config, bbs, logs, evacuate, token)
                .await
                .map_err(Into::into),
        )
    });
    Ok(())
}

fn start_router(
    config: &ServerConfig,
    listeners: RouterListeners,
    bbs: &Arc<dyn BbsClient>,
    logs: &Arc<dyn LogSink>,
    shutdown: &CancellationToken,
    roles: &mut JoinSet<(&'static str, anyhow::Result<()>)>,
) -> anyhow::Result<()> {
    let router_tls = match (listeners.tls, &config.router_tls) {
        (Some(listener), Some((_, pairs))) => Some(kiln_router::TlsListener {
            listener,
            certs: kiln_router::CertStore::load(pairs.clone())
                .context("loading the router's certificates")?,
        }),
        _ => None,
    };
    let router_config = kiln_router::RouterConfig {
        workers: config.router_workers,
        max_conns_per_backend: config.router_max_conns_per_backend,
        client_idle_timeout: config.router_client_idle_timeout,
        hsts: config.router_hsts.clone(),
        sanitize_forwarded_proto: config.router_sanitize_forwarded_proto,
        sticky_session_cookies: config.router_sticky_cookies.clone(),
        ..kiln_router::RouterConfig::default()
    };
    let (bbs, logs, token) = (bbs.clone(), logs.clone(), shutdown.clone());
    roles.spawn(async move {
        (
            "router",
            kiln_router::run_with_tls(
                router_config,
                listeners.plain,
                router_tls,
                listeners.status,
                bbs,
                logs,
                token,
            )
            .await
            .map_err(Into::into),
        )
    });
    Ok(())
}

/// One authenticated call before the roles start, so that a node with a
/// wrong URL or refused credentials says so at once and exits.
async fn check_bbs(client: &kiln_bbs_client::HttpBbsClient) -> anyhow::Result<()> {
    match client.cells().await {
        Ok(_) => Ok(()),
        Err(error @ kiln_bbs_client::BbsError::Unauthorized(_)) => Err(anyhow::anyhow!(
            "the bbs at {} refused this node's credentials: {error}",
            client.base_url()
        )),
        Err(error) => Err(anyhow::anyhow!(
            "cannot reach the bbs at {}: {error}",
            client.base_url()
        )),
    }
}

/// The cell's session with the BBS, kept in its data dir: the same cell
/// restarted (even after `kill -9`) takes its id back at once, while
/// another process under the same id is refused while this one lives.
fn cell_session(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("cell-session");
    if let Ok(session) = std::fs::read_to_string(&path)
        && !session.trim().is_empty()
    {
        return Ok(session.trim().to_string());
    }
    let session = uuid::Uuid::new_v4().to_string();
    std::fs::write(&path, &session).with_context(|| format!("writing {}", path.display()))?;
    Ok(session)
}

fn role_names(config: &ServerConfig) -> String {
    let r = config.roles;
    [
        (r.api, "api"),
        (r.bbs, "bbs"),
        (r.cell, "cell"),
        (r.router, "router"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| *name)
    .collect::<Vec<_>>()
    .join(",")
}

fn role_outcome(
    joined: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
) -> Option<anyhow::Error> {
    match joined {
        Ok((role, Ok(()))) => {
            tracing::info!(role, "role stopped");
            None
        }
        Ok((role, Err(error))) => {
            tracing::error!(role, error = format!("{error:#}"), "role failed");
            Some(error.context(format!("{role} failed")))
        }
        Err(error) => Some(anyhow::anyhow!("a role panicked: {error}")),
    }
}

/// SIGTERM or SIGINT stops gracefully (a joined cell evacuates first); the
/// next one stops at once (an evacuating cell stops its containers), and
/// the one after that exits.
fn watch_signals(shutdown: CancellationToken, evacuate: Option<CancellationToken>) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        for n in 0.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            match (n, &evacuate) {
                (0, Some(evacuate)) => {
                    tracing::info!("evacuating; send the signal again to stop at once");
                    evacuate.cancel();
                }
                (0, None) | (1, Some(_)) => {
                    tracing::info!("stopping; send the signal again to exit at once");
                    shutdown.cancel();
                }
                _ => std::process::exit(130),
            }
        }
    });
}

fn is_root() -> bool {
    // The effective uid of this process, without unsafe code.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn restrict_permissions(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))
}

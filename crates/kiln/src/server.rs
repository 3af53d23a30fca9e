//! `kiln server`: every role in one process, over one data directory.
//!
//! The roles are the BBS (with auctioneer and converger), the API (Cloud
//! Controller, UAA, log cache), one cell, and the router. Each is a library
//! `run` taking the shared cancellation token; they reach each other only
//! through `BbsClient` and `LogSink`, the same seams a split deployment uses.
//! The first role to stop (or fail) stops the others.

use crate::config::{ServerArgs, ServerConfig};
use anyhow::Context;
use kiln_bbs::{Bbs, BbsClient};
use kiln_logs::{LogSink, LogStore};
use kiln_store::{Blobstore, FsBlobstore};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long roles get to finish in-flight work after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = ServerConfig::resolve(args)?;
    if !is_root() {
        anyhow::bail!("kiln server runs app containers with runc and must run as root");
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    restrict_permissions(&config.data_dir)?;

    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone());

    let bbs = Bbs::open(&config.data_dir.join("bbs.sqlite"))
        .await
        .context("opening the bbs database")?;
    let logs = Arc::new(LogStore::default());
    let blobstore: Arc<dyn Blobstore> = Arc::new(
        FsBlobstore::new(config.data_dir.join("blobs"))
            .await
            .context("opening the blobstore")?,
    );
    let stack = kiln_cell::stack::host_stack_name();

    let api = kiln_api::Api::open(
        kiln_api::ApiConfig {
            data_dir: config.data_dir.join("api"),
            external_url: config.external_url.clone(),
            domain: config.domain.clone(),
            stack: stack.clone(),
            admin_password: config.admin_password.clone(),
            max_package_bytes: 1024 * 1024 * 1024,
            staging_timeout_ms: config.staging_timeout_ms,
        },
        kiln_api::ApiDeps {
            bbs: Arc::new(bbs.clone()),
            blobstore,
            logs: logs.clone(),
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

    let api_listener = tokio::net::TcpListener::bind(config.api_listen)
        .await
        .with_context(|| format!("listening for the api on {}", config.api_listen))?;
    let router_listener = tokio::net::TcpListener::bind(config.router_listen)
        .await
        .with_context(|| format!("listening for the router on {}", config.router_listen))?;
    let router_status_listener = match config.router_status_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for the router's status on {addr}"))?,
        ),
        None => None,
    };

    let bbs_client: Arc<dyn BbsClient> = Arc::new(bbs.clone());
    let log_sink: Arc<dyn LogSink> = logs.clone();
    let lifecycle_binary = std::env::current_exe().context("locating the kiln binary")?;

    let mut roles: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
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
    {
        let cell_config = kiln_cell::CellConfig {
            cell_id: config.cell_id.clone(),
            data_dir: config.data_dir.join("cell"),
            address: config.cell_address.clone(),
            capacity: kiln_model::bbs::CellCapacity {
                memory_mb: config.cell_memory_mb,
                disk_mb: config.cell_disk_mb,
                containers: 250,
            },
            stack_name: stack.clone(),
            lifecycle_binary,
            runc: config.runc.clone(),
            port_range: 61000..62000,
            sync_interval: Duration::from_secs(2),
            network: config
                .cell_network
                .map(|subnet| kiln_cell::network::NetworkConfig {
                    subnet,
                    dns_servers: Vec::new(),
                }),
            images: config.images.clone(),
        };
        let (bbs, logs, token) = (bbs_client.clone(), log_sink.clone(), shutdown.clone());
        roles.spawn(async move {
            (
                "cell",
                kiln_cell::run(cell_config, bbs, logs, token)
                    .await
                    .map_err(Into::into),
            )
        });
    }
    {
        let router_config = kiln_router::RouterConfig {
            workers: config.router_workers,
            max_conns_per_backend: config.router_max_conns_per_backend,
            ..kiln_router::RouterConfig::default()
        };
        let (bbs, logs, token) = (bbs_client.clone(), log_sink.clone(), shutdown.clone());
        roles.spawn(async move {
            (
                "router",
                kiln_router::run(
                    router_config,
                    router_listener,
                    router_status_listener,
                    bbs,
                    logs,
                    token,
                )
                .await
                .map_err(Into::into),
            )
        });
    }

    println!(
        "Kiln is up: API {} (stack {stack}), apps at http://<app>.{}:{}",
        config.external_url,
        config.domain,
        config.router_listen.port()
    );

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

/// SIGTERM or SIGINT stops gracefully; a second one exits at once.
fn watch_signals(shutdown: CancellationToken) {
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
            if n == 0 {
                tracing::info!("stopping; send the signal again to exit at once");
                shutdown.cancel();
            } else {
                std::process::exit(130);
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

//! A cluster node: `kiln server` with the bbs role on PostgreSQL. Several
//! such nodes on one database (and one blobstore) are one platform: every
//! node serves the API, its router and its cell; one node's BBS is active,
//! chosen by the BBS lock in the database (`kiln_bbs::lock`), and every
//! role of every node reaches it through this node's BBS server, which
//! serves or forwards (`kiln_bbs::standby`). The API's background loops run
//! on the node that holds the lock only.
//!
//! What nodes must agree on and would otherwise generate per data dir (the
//! API's token signing key, the BBS's key, and the CCDB's encryption key
//! when no `--db-encryption-key-file` is given) is kept in the database:
//! the first node writes its own (or new ones), the others take them.

use crate::config::ServerConfig;
use anyhow::Context;
use kiln_bbs::lock::{BbsLock, LEASE_TTL, LockState};
use kiln_bbs_client::HttpBbsClient;
use kiln_logs::LogSink;
use std::path::Path;
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

type Roles = JoinSet<(&'static str, anyhow::Result<()>)>;

/// Whether this node is a cluster node: it runs the BBS on PostgreSQL.
pub fn is_cluster(config: &ServerConfig) -> bool {
    config.roles.bbs
        && matches!(
            config.database_url,
            Some(kiln_store::DatabaseUrl::Postgres(_))
        )
}

/// The BBS (active or standby) and the API of a cluster node; returns the
/// client the other roles here use (this node's BBS server, over HTTP) and
/// the log sink.
pub async fn start(
    config: &ServerConfig,
    api_listener: Option<tokio::net::TcpListener>,
    bbs_listener: Option<tokio::net::TcpListener>,
    shutdown: &CancellationToken,
    roles: &mut Roles,
) -> anyhow::Result<(HttpBbsClient, Arc<dyn LogSink>)> {
    let (ccdb, bbs_db) = super::databases(config);
    tracing::info!(ccdb = %ccdb.redacted(), bbs = %bbs_db.redacted(), "databases (cluster node)");
    let (listener, url) = bbs_listener_and_url(config, bbs_listener).await?;
    let lock = BbsLock::open(&bbs_db, &url, LEASE_TTL)
        .await
        .context("opening the bbs lock")?;
    share_secrets(lock.pool(), config).await?;
    let lock_pool = &lock.pool().clone();
    let dir = config.data_dir.join("bbs");
    let (_, credentials) = kiln_bbs::auth::ensure_credentials(&dir, &url)
        .with_context(|| format!("writing the bbs credentials in {}", dir.display()))?;
    println!(
        "BBS listening at {url} (active while this node holds the bbs lock); joining nodes need {}",
        dir.join("credentials").display()
    );
    let client = HttpBbsClient::from_credentials(&credentials, Some(&url))?;
    let logs = Arc::new(config.log_store());
    let log_sink: Arc<dyn LogSink> = logs.clone();

    let lease_stop = CancellationToken::new();
    let (lease, lease_task) = lock.spawn(lease_stop.clone());
    {
        let bbs = kiln_bbs::standby::ClusterBbs {
            database: bbs_db,
            max_connections: config.database_max_connections,
            config: kiln_bbs::BbsConfig::default(),
            logs: log_sink.clone(),
            keys_dir: dir,
        };
        let (lease, token) = (lease.clone(), shutdown.clone());
        roles.spawn(async move {
            let served = bbs.run(lease, listener, token).await;
            // The BBS has stopped: give the lock up so another node's
            // takes over at once.
            lease_stop.cancel();
            let _ = lease_task.await;
            ("bbs", served.map_err(Into::into))
        });
    }
    // Nodes starting at once on an empty database would each bootstrap the
    // admin user and the default org: one at a time, the later ones find
    // them.
    let api = kiln_bbs::lock::one_node_at_a_time(
        lock_pool,
        "api-bootstrap",
        super::open_api(config, &ccdb, Arc::new(client.clone()), logs),
    )
    .await
    .context("waiting for other nodes' api to open")??;
    let api_listener = api_listener.context("the bbs role runs with the api role")?;
    let leader = leader_watch(lease);
    let token = shutdown.clone();
    roles.spawn(async move {
        (
            "api",
            api.run_singletons_while(api_listener, token, Some(leader))
                .await
                .map_err(Into::into),
        )
    });
    Ok((client, log_sink))
}

/// This node's BBS listener (`--bbs-listen`'s, bound at start, or a
/// loopback port of its own) and the URL other nodes reach it at.
async fn bbs_listener_and_url(
    config: &ServerConfig,
    configured: Option<tokio::net::TcpListener>,
) -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let listener = match configured {
        Some(listener) => listener,
        None => tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("listening for the bbs on a loopback port")?,
    };
    let local = listener.local_addr()?;
    let url = match &config.bbs_advertise_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None if local.ip().is_unspecified() => anyhow::bail!(
            "--bbs-listen {local} is every address: say which one other nodes reach this node's bbs at with --bbs-advertise-url"
        ),
        None => format!("http://{local}"),
    };
    Ok((listener, url))
}

/// True while this node holds the BBS lock.
fn leader_watch(mut lease: kiln_bbs::lock::Lease) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(lease.state() == LockState::Active);
    tokio::spawn(async move {
        while let Some(state) = lease.changed().await {
            if tx.send(state == LockState::Active).is_err() {
                return;
            }
        }
        let _ = tx.send(false);
    });
    rx
}

/// The secrets every node must share, from the database into the files
/// the API and the BBS read them from. A node's own file is the candidate
/// when no node has stored one yet (a single node becoming a cluster keeps
/// its tokens valid).
async fn share_secrets(pool: &kiln_store::Pool, config: &ServerConfig) -> anyhow::Result<()> {
    let api_dir = config.data_dir.join("api");
    let bbs_dir = config.data_dir.join("bbs");
    let mut files = vec![
        ("api-signing-key", api_dir.join("signing-key")),
        ("bbs-key", bbs_dir.join("key")),
    ];
    if config.db_encryption_key_file.is_none() {
        // Without the operator's file the key would differ per node, and
        // no node could read what another encrypted. Kept beside the data
        // it protects, it protects little: the README says to pass
        // --db-encryption-key-file on a cluster.
        tracing::warn!(
            "no --db-encryption-key-file: the CCDB's encryption key is shared through the database"
        );
        files.push(("ccdb-encryption-key", api_dir.join("db-encryption-key")));
    }
    for (name, path) in files {
        let local = std::fs::read_to_string(&path)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let shared = kiln_bbs::lock::shared_secret(pool, name, || {
            local.clone().unwrap_or_else(random_hex_key)
        })
        .await
        .with_context(|| format!("sharing the {name} through the database"))?;
        if local.as_deref() != Some(shared.as_str()) {
            if local.is_some() {
                tracing::warn!(path = %path.display(), "replacing this node's {name} with the cluster's");
            }
            write_private(&path, &shared)?;
        }
    }
    Ok(())
}

/// 64 hex digits, 244 of their bits from the OS's random source (two
/// version-4 UUIDs), as the API and the BBS generate their keys.
fn random_hex_key() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A shared secret into this node's data dir (created 0700 when missing),
/// written the way the BBS writes its own key.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    kiln_bbs::auth::write_private(path, text).with_context(|| format!("writing {}", path.display()))
}

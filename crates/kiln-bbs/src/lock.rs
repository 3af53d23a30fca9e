//! The BBS lock, as Diego's Locket holds it for the BBS: on a cluster of
//! Kiln nodes sharing one PostgreSQL database, exactly one node's BBS is
//! active (runs the auctioneer, the converger and the writes); the others
//! stand by and forward to it ([`crate::standby`]).
//!
//! A lease row (`bbs_lock`, migration 4) names the holder, the URL of its
//! BBS server and when its lease ends. The end is written and compared on
//! the *database's* clock only (`now_millis` in kiln-store's
//! `engine_specific`), so a node whose clock is off by seconds neither
//! steals a live lease nor keeps one too long. The holder, in turn, counts
//! its lease locally on the monotonic clock from the moment it *sent* the
//! renewal that succeeded: that instant precedes the database's `now` of
//! the renewal, so the holder always gives up before the row expires for
//! anyone else, whatever the wall clocks say.
//!
//! A lease row rather than a session advisory lock: an advisory lock lives
//! as long as its connection, and a partitioned holder cannot tell when
//! the server dropped it, nor the server when the holder is gone (TCP
//! timeouts of minutes); a TTL bounds both.

use crate::BbsError;
use kiln_store::{Pool, engine_specific};
use sqlx::Row as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a lease lasts after its last renewal (Locket's TTL is 15 s;
/// Kiln's nodes renew every second, so a dead holder is replaced within
/// a few seconds).
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often the holder renews and a standby tries to take over.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(1);

/// Whether this node's BBS is the active one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// This node holds the lease: its BBS is active.
    Active,
    /// Another node (at `holder_url`, when known and live) holds it.
    Standby { holder_url: Option<String> },
}

/// Who holds the lease and for how much longer (on the database's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub owner: String,
    pub url: String,
    pub remaining_ms: i64,
}

/// One node's claim on the BBS lock.
#[derive(Clone)]
pub struct BbsLock {
    pool: Pool,
    owner_id: uuid::Uuid,
    owner: String,
    url: String,
    ttl: Duration,
}

fn db(e: sqlx::Error) -> BbsError {
    if kiln_store::is_unavailable(&e) || matches!(e, sqlx::Error::PoolTimedOut) {
        BbsError::Unavailable(e.to_string())
    } else {
        BbsError::Store(e.to_string())
    }
}

impl BbsLock {
    /// The lock in the BBS database (migrated here if it is new), for a
    /// node whose BBS server answers at `url`. Each process is an owner of
    /// its own: a restarted node waits for its old lease to end.
    pub async fn open(
        database: &kiln_store::Database,
        url: &str,
        ttl: Duration,
    ) -> Result<BbsLock, BbsError> {
        let options = kiln_store::OpenOptions {
            durability: kiln_store::Durability::Normal,
            // The lease loop and the shared secrets, one at a time.
            max_connections: 2,
            lease_owner: None,
            ..Default::default()
        };
        let pool = kiln_store::open(database, crate::MIGRATIONS, options)
            .await
            .map_err(|e| BbsError::Unavailable(e.to_string()))?;
        Ok(BbsLock::on_pool(pool, url, ttl))
    }

    pub fn on_pool(pool: Pool, url: &str, ttl: Duration) -> BbsLock {
        let owner_id = uuid::Uuid::new_v4();
        BbsLock {
            pool,
            owner_id,
            owner: owner_id.to_string(),
            url: url.to_string(),
            ttl,
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The owner as the BBS's writes are fenced by ([`crate::Bbs::open_fenced`]).
    pub fn owner_id(&self) -> uuid::Uuid {
        self.owner_id
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    fn now(&self) -> &'static str {
        engine_specific::now_millis(kiln_store::engine(&self.pool))
    }

    /// Takes the lease if it is free or expired, or renews it if this
    /// owner holds it, in one compare-and-set statement; whether this
    /// owner holds it now.
    pub async fn try_acquire(&self) -> Result<bool, BbsError> {
        let now = self.now();
        let sql = format!(
            "UPDATE bbs_lock SET owner = $1, url = $2, expires_ms = {now} + $3 \
             WHERE id = 1 AND (owner = $1 OR expires_ms < {now})"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&self.owner)
            .bind(&self.url)
            .bind(self.ttl.as_millis() as i64)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    /// The live holder, if any.
    pub async fn holder(&self) -> Result<Option<Holder>, BbsError> {
        let sql = format!(
            "SELECT owner, url, expires_ms - {} AS remaining_ms FROM bbs_lock WHERE id = 1",
            self.now()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let holder = Holder {
            owner: row.try_get("owner").map_err(db)?,
            url: row.try_get("url").map_err(db)?,
            remaining_ms: row.try_get("remaining_ms").map_err(db)?,
        };
        Ok((holder.remaining_ms > 0 && !holder.owner.is_empty()).then_some(holder))
    }

    /// Ends this owner's lease at once (a clean stop), so a standby takes
    /// over without waiting for it to expire.
    pub async fn release(&self) -> Result<(), BbsError> {
        sqlx::query("UPDATE bbs_lock SET expires_ms = 0 WHERE id = 1 AND owner = $1")
            .bind(&self.owner)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Runs the lease until `shutdown` (then releases it if held), in a
    /// task of its own; the returned [`Lease`] follows it.
    pub fn spawn(self, shutdown: CancellationToken) -> (Lease, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(LockState::Standby { holder_url: None });
        let deadline = Arc::new(Mutex::new(None));
        let lease = Lease {
            state: rx,
            deadline: deadline.clone(),
            owner: self.owner_id,
        };
        let task = tokio::spawn(async move { self.run(tx, deadline, shutdown).await });
        (lease, task)
    }

    async fn run(
        self,
        tx: watch::Sender<LockState>,
        deadline: Arc<Mutex<Option<Instant>>>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(RENEW_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let held_until = *deadline.lock().unwrap_or_else(|e| e.into_inner());
            let state = self.round(held_until, &deadline).await;
            tx.send_if_modified(|current| {
                let changed = *current != state;
                *current = state;
                changed
            });
        }
        let held = deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some();
        let _ = tx.send(LockState::Standby { holder_url: None });
        if held {
            match self.release().await {
                Ok(()) => tracing::info!("bbs lock released"),
                Err(error) => tracing::warn!(%error, "releasing the bbs lock"),
            }
        }
    }

    /// One renewal (or attempt to take over); the state after it.
    async fn round(
        &self,
        held_until: Option<Instant>,
        deadline: &Mutex<Option<Instant>>,
    ) -> LockState {
        let sent = Instant::now();
        // A holder's attempt may not outlast its lease: past that, another
        // node may hold it.
        let budget = held_until.map_or(self.ttl, |d| d.saturating_duration_since(sent));
        let outcome = tokio::time::timeout(budget, self.try_acquire()).await;
        let set = |value: Option<Instant>| {
            *deadline.lock().unwrap_or_else(|e| e.into_inner()) = value;
        };
        match outcome {
            Ok(Ok(true)) => {
                set(Some(sent + self.ttl - self.ttl / 10));
                if held_until.is_none() {
                    tracing::info!(owner = %self.owner, url = %self.url, "bbs lock acquired: this node's bbs is active");
                }
                LockState::Active
            }
            Ok(Ok(false)) => {
                set(None);
                if held_until.is_some() {
                    tracing::warn!("bbs lock lost: another node holds it");
                }
                let holder_url = match self.holder().await {
                    Ok(holder) => holder.map(|h| h.url).filter(|url| *url != self.url),
                    Err(_) => None,
                };
                LockState::Standby { holder_url }
            }
            Ok(Err(_)) | Err(_) if held_until.is_some_and(|d| Instant::now() < d) => {
                // The lease is still ours for a while: try again next tick.
                tracing::warn!("renewing the bbs lock failed; retrying");
                LockState::Active
            }
            Ok(Err(error)) => {
                set(None);
                self.log_unreachable(held_until, &error.to_string());
                LockState::Standby { holder_url: None }
            }
            Err(_) => {
                set(None);
                self.log_unreachable(held_until, "timed out");
                LockState::Standby { holder_url: None }
            }
        }
    }

    fn log_unreachable(&self, held_until: Option<Instant>, error: &str) {
        if held_until.is_some() {
            tracing::error!(
                error,
                "bbs lock lost: the lease could not be renewed in time"
            );
        } else {
            tracing::debug!(error, "bbs lock: database unreachable");
        }
    }
}

/// This node's view of the lease.
#[derive(Clone)]
pub struct Lease {
    state: watch::Receiver<LockState>,
    deadline: Arc<Mutex<Option<Instant>>>,
    owner: uuid::Uuid,
}

impl Lease {
    /// Whether this node may act as the active BBS right now: its lease has
    /// not run out on the local monotonic clock, even if the lease task
    /// has not run since (a pause, a stuck database call).
    pub fn is_held(&self) -> bool {
        self.deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|d| Instant::now() < d)
    }

    pub fn state(&self) -> LockState {
        self.state.borrow().clone()
    }

    /// The lock owner this lease is held as.
    pub fn owner(&self) -> uuid::Uuid {
        self.owner
    }

    /// Waits for the next change of state; `None` once the lease task is
    /// gone.
    pub async fn changed(&mut self) -> Option<LockState> {
        self.state.changed().await.ok()?;
        Some(self.state.borrow_and_update().clone())
    }
}

/// Reads a secret every node must share, creating it from `make` if no
/// node has yet: the first writer wins, and everyone reads what won.
pub async fn shared_secret(
    pool: &Pool,
    name: &str,
    make: impl FnOnce() -> String,
) -> Result<String, BbsError> {
    if let Some(value) = read_secret(pool, name).await? {
        return Ok(value);
    }
    // ON CONFLICT DO NOTHING: both engines (SQLite since 3.24).
    let insert =
        "INSERT INTO cluster_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
    sqlx::query(insert)
        .bind(name)
        .bind(make())
        .execute(pool)
        .await
        .map_err(db)?;
    read_secret(pool, name)
        .await?
        .ok_or_else(|| BbsError::Store(format!("the shared secret {name} vanished")))
}

async fn read_secret(pool: &Pool, name: &str) -> Result<Option<String>, BbsError> {
    let row = sqlx::query("SELECT value FROM cluster_secrets WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    row.map(|r| r.try_get("value").map_err(db)).transpose()
}

/// Runs `work` while this node holds the row lock on `name` in the
/// database, so that nodes starting at once do one at a time what would
/// race otherwise (the API's first bootstrap: the admin user, the org).
/// The lock is a transaction's: a node that dies lets the next one in.
pub async fn one_node_at_a_time<F: std::future::Future>(
    pool: &Pool,
    name: &str,
    work: F,
) -> Result<F::Output, BbsError> {
    let row = format!("mutex:{name}");
    sqlx::query(
        "INSERT INTO cluster_secrets (name, value) VALUES ($1, '') ON CONFLICT (name) DO NOTHING",
    )
    .bind(&row)
    .execute(pool)
    .await
    .map_err(db)?;
    let mut tx = pool.begin().await.map_err(db)?;
    let sql = format!(
        "SELECT value FROM cluster_secrets WHERE name = $1{}",
        engine_specific::for_update(kiln_store::engine(pool))
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&row)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    let output = work.await;
    tx.commit().await.map_err(db)?;
    Ok(output)
}

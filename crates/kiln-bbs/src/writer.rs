//! The connection the BBS's batched writes use.
//!
//! In WAL mode a SQLite connection drops its whole page cache when it
//! begins a transaction after another connection has committed. The pool
//! hands out its connections in turn, so every batch of a re-placement
//! (a thousand rows scattered over the table) began with a cold cache and
//! read its pages back from the file. On SQLite, the batched writes (the
//! auction's, convergence's, the cells' reports and the desires) all go
//! through one connection kept aside for them, whose cache stays warm
//! from one batch to the next; they are serialized by the write lock
//! already. PostgreSQL keeps its cache in the server: there, and for every
//! other write, a pooled connection serves.

use crate::BbsError;
use crate::store::db;
use kiln_store::{Connection, Db, Pool};
use sqlx::pool::PoolConnection;
use std::ops::{Deref, DerefMut};
use tokio::sync::{Mutex, MutexGuard};

/// The connection kept aside for batched writes (SQLite only).
#[derive(Default)]
pub(crate) struct Writer {
    kept: Option<Mutex<Option<PoolConnection<Db>>>>,
}

/// A connection for one batch: the kept one, or one from the pool.
pub(crate) enum WriteConn<'a> {
    Kept(MutexGuard<'a, Option<PoolConnection<Db>>>),
    Pooled(PoolConnection<Db>),
}

impl Writer {
    /// One kept aside on SQLite, none on PostgreSQL.
    pub(crate) fn for_database(database: &kiln_store::Database) -> Writer {
        Writer {
            kept: matches!(database, kiln_store::Database::Sqlite(_)).then(|| Mutex::new(None)),
        }
    }

    /// The connection for the next batch; the kept one is taken from the
    /// pool at first use (and again if it was dropped after an error).
    pub(crate) async fn conn(&self, pool: &Pool) -> Result<WriteConn<'_>, BbsError> {
        let Some(kept) = &self.kept else {
            return Ok(WriteConn::Pooled(pool.acquire().await.map_err(db)?));
        };
        let mut guard = kept.lock().await;
        if guard.is_none() {
            *guard = Some(pool.acquire().await.map_err(db)?);
        }
        Ok(WriteConn::Kept(guard))
    }
}

impl Deref for WriteConn<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            // Set by `Writer::conn` before the guard is handed out.
            WriteConn::Kept(guard) => guard.as_deref().expect("the kept connection is set"),
            WriteConn::Pooled(conn) => conn,
        }
    }
}

impl DerefMut for WriteConn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        match self {
            WriteConn::Kept(guard) => guard.as_deref_mut().expect("the kept connection is set"),
            WriteConn::Pooled(conn) => conn,
        }
    }
}

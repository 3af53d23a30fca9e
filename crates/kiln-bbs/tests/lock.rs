//! The BBS lock on a real PostgreSQL server (the cluster's engine), and its
//! SQL on SQLite too: one holder at a time, takeover once the holder stops
//! renewing, at once after a release, a holder cut off from the database
//! stops being active within its lease, its writes are fenced, and shared
//! secrets agree.

mod common;

use kiln_bbs::lock::{self, BbsLock, LockState};
use kiln_store::Database;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const TTL: Duration = Duration::from_secs(2);

async fn pg_database() -> Option<(&'static kiln_store::testing::Postgres, Database)> {
    let pg = kiln_store::testing::Postgres::shared().await?;
    let url = pg.fresh_database().await;
    Some((pg, url.component("bbs.sqlite", "bbs")))
}

async fn two_contenders(database: &Database) -> (BbsLock, BbsLock) {
    let a = BbsLock::open(database, "http://127.0.0.1:1", TTL)
        .await
        .unwrap();
    let b = BbsLock::open(database, "http://127.0.0.1:2", TTL)
        .await
        .unwrap();
    (a, b)
}

/// The lease's life on `database`: exclusive while renewed, free once
/// not renewed for its TTL (on the database's clock), free at once after a
/// release.
async fn one_holder_at_a_time(database: &Database) {
    let (a, b) = two_contenders(database).await;
    assert!(a.try_acquire().await.unwrap(), "a free lock is taken");
    assert!(!b.try_acquire().await.unwrap(), "a held lock is not");
    let holder = b.holder().await.unwrap().expect("a live holder");
    assert_eq!(holder.owner, a.owner());
    assert_eq!(holder.url, "http://127.0.0.1:1");
    assert!(
        holder.remaining_ms > 0 && holder.remaining_ms <= TTL.as_millis() as i64,
        "the lease ends within its TTL on the database's clock: {holder:?}"
    );

    // Renewed for longer than a TTL: still a's.
    let until = Instant::now() + TTL + Duration::from_millis(500);
    while Instant::now() < until {
        assert!(a.try_acquire().await.unwrap(), "the holder renews");
        assert!(
            !b.try_acquire().await.unwrap(),
            "b never gets a renewed lease"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // a stops renewing: b takes over after the TTL, not before.
    let stopped = Instant::now();
    let taken = loop {
        if b.try_acquire().await.unwrap() {
            break stopped.elapsed();
        }
        assert!(stopped.elapsed() < TTL * 3, "b never took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        taken >= TTL - Duration::from_millis(300),
        "taken over after {taken:?}, before the lease ended"
    );
    assert!(!a.try_acquire().await.unwrap(), "a lost it for good");

    // A release frees it at once.
    b.release().await.unwrap();
    assert!(b.holder().await.unwrap().is_none());
    assert!(a.try_acquire().await.unwrap());
}

#[tokio::test]
async fn one_holder_at_a_time_on_postgres() {
    let Some((_pg, database)) = pg_database().await else {
        return;
    };
    one_holder_at_a_time(&database).await;
}

#[tokio::test]
async fn one_holder_at_a_time_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    one_holder_at_a_time(&Database::Sqlite(dir.path().join("bbs.sqlite"))).await;
}

/// Two lease tasks race for the lock: exactly one is active; when it
/// stops (and releases), the other becomes active.
#[tokio::test]
async fn two_lease_tasks_take_turns() {
    let Some((_pg, database)) = pg_database().await else {
        return;
    };
    let (a, b) = two_contenders(&database).await;
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let (lease_a, task_a) = a.spawn(stop_a.clone());
    let (lease_b, _task_b) = b.spawn(stop_b.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(lease_a.is_held() || lease_b.is_held()) {
        assert!(Instant::now() < deadline, "nobody took the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..20 {
        assert!(
            !(lease_a.is_held() && lease_b.is_held()),
            "two holders at once"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (winner_stop, winner_task, other) = if lease_a.is_held() {
        (stop_a, task_a, lease_b)
    } else {
        (stop_b, _task_b, lease_a)
    };
    assert!(matches!(
        other.state(),
        LockState::Standby {
            holder_url: Some(_)
        }
    ));
    winner_stop.cancel();
    winner_task.await.unwrap();
    let released = Instant::now();
    while !other.is_held() {
        assert!(
            released.elapsed() < TTL,
            "a released lock is taken before its lease would have ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The holder loses the database: it stops being active within its
/// lease, on its own monotonic clock, without the database telling it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_from_the_database_stops_within_its_lease() {
    let Some(pg) = kiln_store::testing::Postgres::start().await else {
        return;
    };
    let database = pg.database("bbs");
    let a = BbsLock::open(&database, "http://127.0.0.1:1", TTL)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let (lease, _task) = a.spawn(stop.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lease.is_held() {
        assert!(Instant::now() < deadline, "the lock was not taken");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::task::block_in_place(|| pg.stop());
    let cut = Instant::now();
    while lease.is_held() {
        assert!(
            cut.elapsed() <= TTL,
            "still active {:?} after the database went away",
            cut.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "holder stopped {:?} after losing the database",
        cut.elapsed()
    );
    stop.cancel();
}

/// Nodes starting at once agree on each shared secret: the first writer's.
#[tokio::test]
async fn shared_secrets_are_the_first_writers() {
    let Some((_pg, database)) = pg_database().await else {
        return;
    };
    let (a, b) = two_contenders(&database).await;
    let (pa, pb) = (a.pool().clone(), b.pool().clone());
    let (x, y) = tokio::join!(
        lock::shared_secret(&pa, "k", || "from-a".to_string()),
        lock::shared_secret(&pb, "k", || "from-b".to_string()),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x, y);
    assert!(x == "from-a" || x == "from-b");
    let again = lock::shared_secret(&pa, "k", || "later".to_string())
        .await
        .unwrap();
    assert_eq!(again, x, "a stored secret is never replaced");
}

/// Fencing: a holder cut off mid-round (it renews no more, another node
/// takes the lease once it ends) goes on with its round, and its writes do
/// not land: the database refuses them, and the new holder sees only what
/// was written while the lease was live. Every BBS table is fenced but the
/// lock's own.
#[tokio::test]
async fn writes_of_a_holder_cut_off_mid_round_do_not_land() {
    use kiln_bbs::{Bbs, BbsClient, BbsConfig};
    let Some((_pg, database)) = pg_database().await else {
        return;
    };
    let (a, b) = two_contenders(&database).await;
    assert!(a.try_acquire().await.unwrap());
    let fenced = Bbs::open_fenced(&database, 2, BbsConfig::default(), a.owner_id())
        .await
        .unwrap();
    fenced
        .desire_lrp(common::desired("while-held", 1))
        .await
        .unwrap();

    // a is cut off: it renews no more, and b takes the lease once it ends.
    let deadline = Instant::now() + TTL * 5;
    while !b.try_acquire().await.unwrap() {
        assert!(Instant::now() < deadline, "b never took the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // a's round goes on: a new desire, a removal; neither lands.
    let refused = fenced
        .desire_lrp(common::desired("after-the-loss", 1))
        .await
        .expect_err("a write after the lease was lost landed");
    assert!(refused.to_string().contains("bbs lock"), "{refused}");
    assert!(fenced.remove_desired_lrp("while-held").await.is_err());

    let unfenced = Bbs::open_on(&database, 2, BbsConfig::default())
        .await
        .unwrap();
    let listed: Vec<String> = unfenced
        .desired_lrps(None)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.process_guid)
        .collect();
    assert_eq!(listed, ["while-held"], "only what the live lease wrote");

    // b, the holder now, writes as itself.
    let b_bbs = Bbs::open_fenced(&database, 2, BbsConfig::default(), b.owner_id())
        .await
        .unwrap();
    b_bbs.desire_lrp(common::desired("by-b", 1)).await.unwrap();

    let pool = kiln_store::connect(&database, kiln_store::OpenOptions::default())
        .await
        .unwrap();
    let unfenced_tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
         AND table_name NOT IN ('bbs_lock', 'cluster_secrets', '_sqlx_migrations') \
         AND table_name NOT IN (SELECT event_object_table FROM information_schema.triggers \
         WHERE trigger_schema = current_schema() AND trigger_name = event_object_table || '_fence')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(unfenced_tables.is_empty(), "{unfenced_tables:?}");
    pool.close().await;
}

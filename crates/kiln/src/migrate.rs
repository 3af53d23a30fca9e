//! `kiln migrate`: moves a single-machine platform (the CCDB and the BBS
//! database in SQLite files, blobs in a directory) onto shared stores
//! (PostgreSQL, an S3 bucket), so that the same data dir's apps run on a
//! cluster. The server must be stopped while it runs.
//!
//! Phases: check every argument, open both sides (each at its current
//! migration), refuse a target that holds more than its migrations seed,
//! copy the blobs (re-runnable: a blob's key names one content), copy each
//! database in one transaction and check its counts, then commit both.
//! Any failure before the commits leaves the target's tables as they were.

use anyhow::{Context, bail};
use kiln_store::{Database, DatabaseUrl, OpenOptions, Pool};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// The data dir of the platform being moved (its SQLite files and blob
    /// directory, unless --from / --blobs-from say otherwise)
    #[arg(long, env = "KILN_DATA_DIR", default_value = "/var/lib/kiln")]
    data_dir: PathBuf,
    /// Where the databases are now, as the server's --database-url named
    /// them (sqlite://DIR); by default the data dir's own
    #[arg(long)]
    from: Option<String>,
    /// Where the databases go: postgres://USER:PASS@HOST:PORT/DATABASE
    /// (the server's --database-url afterwards)
    #[arg(long)]
    to: Option<String>,
    /// Where the blobs are now: a directory (or file:///DIR); by default
    /// DATA_DIR/blobs
    #[arg(long)]
    blobs_from: Option<String>,
    /// Where the blobs go: s3://BUCKET?endpoint=URL&region=REGION (the
    /// server's --blobstore-url afterwards)
    #[arg(long)]
    blobs_to: Option<String>,
    /// Replace the rows a target database already holds, instead of
    /// refusing it
    #[arg(long)]
    overwrite: bool,
}

/// What one run was asked to move, checked before anything is opened.
struct Plan {
    from_ccdb: Database,
    from_bbs: Database,
    to: Option<(Database, Database)>,
    blobs: Option<(PathBuf, String)>,
    overwrite: bool,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let plan = plan(args)?;
    let to = match &plan.to {
        Some((ccdb, bbs)) => Some(open_targets(ccdb, bbs).await?),
        None => None,
    };
    let from = match &to {
        Some(_) => Some(open_sources(&plan.from_ccdb, &plan.from_bbs).await?),
        None => None,
    };
    if let Some((ccdb, bbs)) = &to {
        refuse_non_empty(ccdb, bbs, plan.overwrite).await?;
    }
    if let Some((dir, url)) = &plan.blobs {
        copy_blobs(dir, url).await?;
    }
    if let (Some((from_ccdb, from_bbs)), Some((to_ccdb, to_bbs))) = (&from, &to) {
        let ccdb = kiln_store::copy::copy_database(from_ccdb, to_ccdb)
            .await
            .context("copying the CCDB")?;
        let bbs = kiln_store::copy::copy_database(from_bbs, to_bbs)
            .await
            .context("copying the BBS database")?;
        report("ccdb", &ccdb.counts);
        report("bbs", &bbs.counts);
        // Both copies are whole and counted; only now does either become
        // visible.
        ccdb.transaction
            .commit()
            .await
            .context("committing the CCDB")?;
        bbs.transaction
            .commit()
            .await
            .context("committing the BBS database")?;
        let (ccdb_to, _) = plan.to.as_ref().expect("a target");
        println!("Databases moved to {}", ccdb_to.redacted());
    }
    println!("OK");
    Ok(())
}

/// Every argument checked (schemes, paths, that the source exists) before
/// anything is opened, so that bad input changes nothing.
fn plan(args: MigrateArgs) -> anyhow::Result<Plan> {
    if args.to.is_none() && args.blobs_to.is_none() {
        bail!("nothing to move: give --to (databases) and/or --blobs-to (blobs)");
    }
    let (from_ccdb, from_bbs) = match &args.from {
        Some(url) => match DatabaseUrl::parse(url)? {
            DatabaseUrl::SqliteDir(dir) => (dir.join("ccdb.sqlite"), dir.join("bbs.sqlite")),
            DatabaseUrl::Postgres(_) => {
                bail!("--from: Kiln migrates from SQLite (sqlite://DIR); the source is PostgreSQL")
            }
        },
        None => (
            args.data_dir.join("api").join("ccdb.sqlite"),
            args.data_dir.join("bbs.sqlite"),
        ),
    };
    let to = match &args.to {
        Some(url) => {
            let url = DatabaseUrl::parse(url).context("--to")?;
            if let DatabaseUrl::SqliteDir(_) = url {
                bail!("--to: the target is SQLite; Kiln migrates to PostgreSQL (postgres://…)");
            }
            for file in [&from_ccdb, &from_bbs] {
                if !file.is_file() {
                    bail!(
                        "no database at {}: is {} a Kiln data dir (or give --from sqlite://DIR)?",
                        file.display(),
                        args.data_dir.display()
                    );
                }
            }
            Some((
                url.component("ccdb.sqlite", "ccdb"),
                url.component("bbs.sqlite", "bbs"),
            ))
        }
        None => None,
    };
    let blobs = match &args.blobs_to {
        Some(to) => Some((blob_dir(&args)?, blob_target(to)?)),
        None => None,
    };
    Ok(Plan {
        from_ccdb: Database::Sqlite(from_ccdb),
        from_bbs: Database::Sqlite(from_bbs),
        to,
        blobs,
        overwrite: args.overwrite,
    })
}

fn blob_dir(args: &MigrateArgs) -> anyhow::Result<PathBuf> {
    let dir = match args.blobs_from.as_deref() {
        None => args.data_dir.join("blobs"),
        Some(u) if u.starts_with("file://") => url_path(u)?,
        Some(u) if u.contains("://") => {
            bail!("--blobs-from {u:?}: Kiln moves blobs from a directory (a path or file:///DIR)")
        }
        Some(path) => PathBuf::from(path),
    };
    if !dir.is_dir() {
        bail!("--blobs-from: no blob directory at {}", dir.display());
    }
    Ok(dir)
}

fn url_path(u: &str) -> anyhow::Result<PathBuf> {
    let rest = u.trim_start_matches("file://");
    if !rest.starts_with('/') {
        bail!("{u:?}: a file URL is file:///ABSOLUTE/PATH");
    }
    Ok(PathBuf::from(rest))
}

fn blob_target(url: &str) -> anyhow::Result<String> {
    if !url.starts_with("s3://") {
        bail!("--blobs-to {url:?}: Kiln moves blobs to S3 (s3://BUCKET?endpoint=URL&region=R)");
    }
    kiln_store::S3Location::parse(url)?;
    // Checked here too, so that a missing credential stops the run before
    // any database is touched.
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        if !std::env::var(var).is_ok_and(|v| !v.is_empty()) {
            bail!("--blobs-to: set {var} (the bucket's credentials)");
        }
    }
    Ok(url.to_string())
}

fn options() -> OpenOptions {
    OpenOptions {
        max_connections: 2,
        ..OpenOptions::default()
    }
}

/// A database at its owner's newest migration, and a plain pool on it.
/// The BBS keeps its schema steps to itself: opening it applies them.
async fn open_pair(ccdb: &Database, bbs: &Database, side: &str) -> anyhow::Result<(Pool, Pool)> {
    let ccdb_pool = kiln_store::open(ccdb, kiln_api::MIGRATIONS, options())
        .await
        .with_context(|| format!("opening the {side} CCDB"))?;
    drop(
        kiln_bbs::Bbs::open_on(bbs, 2, kiln_bbs::BbsConfig::default())
            .await
            .with_context(|| format!("opening the {side} BBS database {}", bbs.redacted()))?,
    );
    let bbs_pool = kiln_store::connect(bbs, options())
        .await
        .with_context(|| format!("opening the {side} BBS database"))?;
    Ok((ccdb_pool, bbs_pool))
}

async fn open_targets(ccdb: &Database, bbs: &Database) -> anyhow::Result<(Pool, Pool)> {
    open_pair(ccdb, bbs, "target").await
}

async fn open_sources(ccdb: &Database, bbs: &Database) -> anyhow::Result<(Pool, Pool)> {
    open_pair(ccdb, bbs, "source").await
}

/// A target is empty when no table holds more rows than Kiln's own
/// migrations put there (the environment variable groups): the counts of
/// a fresh SQLite pair migrated the same way.
async fn refuse_non_empty(ccdb: &Pool, bbs: &Pool, overwrite: bool) -> anyhow::Result<()> {
    let fresh = tempfile::tempdir().context("a scratch dir for the seed counts")?;
    let (fresh_ccdb, fresh_bbs) = open_pair(
        &Database::Sqlite(fresh.path().join("ccdb.sqlite")),
        &Database::Sqlite(fresh.path().join("bbs.sqlite")),
        "scratch",
    )
    .await?;
    let mut held = Vec::new();
    for (name, target, seeded) in [("ccdb", ccdb, &fresh_ccdb), ("bbs", bbs, &fresh_bbs)] {
        let seeded = kiln_store::copy::row_counts(seeded).await?;
        for (table, rows) in kiln_store::copy::row_counts(target).await? {
            if rows > seeded.get(&table).copied().unwrap_or(0) {
                held.push(format!("{name}.{table} ({rows} rows)"));
            }
        }
    }
    fresh_ccdb.close().await;
    fresh_bbs.close().await;
    match (held.is_empty(), overwrite) {
        (true, _) => Ok(()),
        (false, true) => {
            println!("Replacing the target's rows in {}", held.join(", "));
            Ok(())
        }
        (false, false) => bail!(
            "the target database is not empty: {}; nothing was copied \
             (--overwrite replaces those rows)",
            held.join(", ")
        ),
    }
}

async fn copy_blobs(dir: &Path, url: &str) -> anyhow::Result<()> {
    let from = kiln_store::FsBlobstore::new(dir)
        .await
        .with_context(|| format!("opening the blob directory {}", dir.display()))?;
    let scratch = tempfile::tempdir().context("a scratch dir for the blobs")?;
    let to = kiln_store::open_blobstore(Some(url), scratch.path())
        .await
        .context("opening the target blobstore")?;
    let copied = kiln_store::copy::copy_blobs(&from, to.as_ref())
        .await
        .context("copying the blobs")?;
    println!(
        "Blobs: {} ({} bytes) copied from {} to {}",
        copied.blobs,
        copied.bytes,
        dir.display(),
        url.split('?').next().unwrap_or(url)
    );
    Ok(())
}

/// Rows per table, both sides (they are equal, or the copy failed).
fn report(name: &str, counts: &[kiln_store::copy::TableCount]) {
    let total: u64 = counts.iter().map(|c| c.source).sum();
    println!(
        "{name}: {} tables, {total} rows, the same count in each table on both sides",
        counts.len()
    );
    let by_table: BTreeMap<&str, u64> = counts.iter().map(|c| (&*c.table, c.target)).collect();
    for (table, rows) in by_table.iter().filter(|(_, rows)| **rows > 0) {
        println!("  {table:<32} {rows}");
    }
}

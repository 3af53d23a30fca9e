//! A real PostgreSQL server for tests: Debian's `postgresql` binaries
//! (`initdb`, `pg_ctl`), an unprivileged cluster in a temp dir listening
//! on 127.0.0.1 on a free port, stopped and removed on drop. One `initdb`
//! per build is kept as a template beside the test binaries and copied per
//! server, so a server costs a copy and a start.

use crate::{Database, DatabaseUrl};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The test cluster's superuser and its password (SCRAM on TCP).
pub const USER: &str = "kiln";
pub const PASSWORD: &str = "kiln-test-pw";

/// The newest `/usr/lib/postgresql/*/bin` (`KILN_PG_BIN` overrides it).
fn pg_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("KILN_PG_BIN") {
        return Some(PathBuf::from(dir)).filter(|d| d.join("initdb").is_file());
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A PostgreSQL server of a test's own.
pub struct Postgres {
    bin: PathBuf,
    /// Owned by the user the server runs as; removed on drop.
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl Postgres {
    /// `None`, loudly, when PostgreSQL is not installed — unless the run
    /// requires everything (`KILN_REQUIRE_RUNC=1`, as CI sets), then it
    /// panics.
    pub async fn start() -> Option<Postgres> {
        let Some(bin) = pg_bin() else {
            let msg = "PostgreSQL not found in /usr/lib/postgresql/*/bin \
                       (run scripts/install-deps.sh, or set KILN_PG_BIN)";
            if std::env::var("KILN_REQUIRE_RUNC").as_deref() == Ok("1") {
                panic!("{msg}");
            }
            eprintln!("\n!!!!!!!! SKIPPING the PostgreSQL part of this test: {msg} !!!!!!!!\n");
            return None;
        };
        let server = tokio::task::spawn_blocking(move || {
            let server = Postgres::create(bin);
            server.pg_ctl_start();
            server.reap_after_exit();
            server
        })
        .await
        .expect("creating the test PostgreSQL");
        Some(server)
    }

    /// One server for the whole test process (started on first use), for
    /// suites that take a fresh database per test
    /// ([`Postgres::fresh_database`]). A watcher stops it and removes its
    /// files when the process exits, however it exits.
    pub async fn shared() -> Option<&'static Postgres> {
        static SHARED: tokio::sync::OnceCell<Option<Postgres>> = tokio::sync::OnceCell::const_new();
        SHARED.get_or_init(Postgres::start).await.as_ref()
    }

    /// A new, empty database on this server, as a `--database-url`.
    pub async fn fresh_database(&self) -> DatabaseUrl {
        let name = format!("t{}", uuid::Uuid::new_v4().simple());
        DatabaseUrl::Postgres(self.create_database(&name).await)
    }

    /// The database of a test's data dir: fresh the first time, the same
    /// one when the test opens the dir again (a restart), as a SQLite file
    /// in the dir would be.
    pub async fn database_for(&self, dir: &Path) -> DatabaseUrl {
        let note = dir.join("kiln-test-database-url");
        if let Ok(url) = std::fs::read_to_string(&note) {
            return DatabaseUrl::Postgres(url);
        }
        let url = self.fresh_database().await;
        if let DatabaseUrl::Postgres(u) = &url {
            std::fs::write(&note, u).expect("note the test's database");
        }
        url
    }

    /// Stops the server and removes its files once this process is gone,
    /// even if it never drops the server (a static, a panic, a kill).
    fn reap_after_exit(&self) {
        let stop = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-m", "immediate", "stop"])
            .get_args()
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        let program = shell_quote(&self.command("pg_ctl").get_program().to_string_lossy());
        super::after_this_process_exits(&format!(
            "{program} {stop} >/dev/null 2>&1; rm -rf {dir}",
            dir = shell_quote(&self.dir.path().to_string_lossy()),
        ));
    }

    fn create(bin: PathBuf) -> Postgres {
        // root may not run a server: the cluster runs as `postgres`.
        let as_postgres = is_root();
        let template = template(&bin, as_postgres);
        let dir = tempfile::Builder::new()
            .prefix("kiln-pg-")
            .tempdir()
            .expect("a temp dir");
        let data = dir.path().join("data");
        run(Command::new("cp").arg("-a").arg(&template).arg(&data));
        if as_postgres {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(dir.path()));
        }
        let port = super::free_port();
        Postgres {
            bin,
            dir,
            port,
            as_postgres,
        }
    }

    fn command(&self, tool: &str) -> Command {
        command(&self.bin, tool, self.as_postgres)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again, after [`Postgres::stop`]) and waits until
    /// it accepts connections.
    pub fn pg_ctl_start(&self) {
        // Loopback only; the socket in our own dir (not /var/run); no
        // fsync: a test cluster is thrown away, and fsync costs seconds.
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=60 \
             -c shared_buffers=16MB",
            self.port,
            self.dir.path().display()
        );
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]));
    }

    /// Stops the server as an operator would for a restart (`pg_ctl stop
    /// -m fast`: sessions are ended, transactions rolled back).
    pub fn stop(&self) {
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-m", "fast", "stop"]));
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` on this server.
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// The URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// A `--database-url` naming this server's `postgres` database.
    pub fn database_url(&self) -> DatabaseUrl {
        DatabaseUrl::Postgres(self.url())
    }

    /// One component's database on this server (its tables in `schema`).
    pub fn database(&self, schema: &str) -> Database {
        Database::Postgres {
            url: self.url(),
            schema: schema.to_string(),
        }
    }

    /// Creates another database on this server; returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&self.url())
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        self.url_for(name)
    }

    /// The server's log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate: nothing of a test cluster needs to be kept.
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn command(bin: &Path, tool: &str, as_postgres: bool) -> Command {
    let mut cmd = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    };
    // The server's user may not read the test's working directory.
    cmd.current_dir("/");
    cmd
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `initdb` output every server copies, made once per build directory
/// (beside the test binaries) and per PostgreSQL version. Concurrent test
/// processes each may make one; the first rename wins.
fn template(bin: &Path, as_postgres: bool) -> PathBuf {
    let version = bin
        .parent()
        .and_then(Path::file_name)
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    let owner = if as_postgres { "postgres" } else { "user" };
    let exe = std::env::current_exe().expect("the test binary's path");
    let base = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "deps"))
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let template = base.join(format!("kiln-pg-template-{version}-{owner}"));
    if template.join("PG_VERSION").is_file() {
        return template;
    }
    let work = tempfile::Builder::new()
        .prefix("kiln-pg-initdb-")
        .tempdir()
        .expect("a temp dir");
    if as_postgres {
        run(Command::new("chown")
            .arg("postgres:postgres")
            .arg(work.path()));
    }
    let pwfile = work.path().join("pw");
    std::fs::write(&pwfile, PASSWORD).expect("write the password file");
    if as_postgres {
        run(Command::new("chown").arg("postgres:postgres").arg(&pwfile));
    }
    let data = work.path().join("data");
    run(command(bin, "initdb", as_postgres)
        .arg("-D")
        .arg(&data)
        .args(["-U", USER, "-E", "UTF8", "--locale=C", "--no-sync"])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display())));
    // Copied next to the target, then renamed into place whole.
    let staging = base.join(format!(
        "kiln-pg-template-{version}-{owner}.{}",
        std::process::id()
    ));
    run(Command::new("cp").arg("-a").arg(&data).arg(&staging));
    if std::fs::rename(&staging, &template).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        template.join("PG_VERSION").is_file(),
        "no PostgreSQL template at {}",
        template.display()
    );
    template
}

/// Waits (bounded) until `pool` answers again after a restart.
pub async fn wait_until_answering(pool: &crate::Pool) {
    for _ in 0..100 {
        if sqlx::query("SELECT 1").execute(pool).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the database did not answer within 10 s");
}

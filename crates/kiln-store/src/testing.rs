//! Test support: a real S3-compatible server (moto's, from PyPI) and a
//! real PostgreSQL server ([`Postgres`]) on 127.0.0.1, started per test and
//! stopped on drop. Enabled by the `test-support` feature.

mod postgres;
pub use postgres::{PASSWORD as PG_PASSWORD, Postgres, USER as PG_USER, wait_until_answering};

use crate::{S3Blobstore, S3Location, StoreError};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback port nothing listens on, for a server a test starts next (and
/// may restart on the same port). Picked below the kernel's ephemeral range
/// (32768–60999): a port the kernel hands out for `:0` may go to any test's
/// outgoing connection before the server binds it (moto takes a second or
/// two to start) or while it restarts, and the server then cannot bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const PORTS: std::ops::Range<u32> = 28000..32000;
    static PICKED: AtomicU32 = AtomicU32::new(0);
    // Tests run in processes of their own (nextest): the pid spreads the
    // picks of tests running at once.
    let seed = std::process::id()
        .wrapping_mul(2654435761)
        .wrapping_add(PICKED.fetch_add(7919, Ordering::Relaxed));
    let len = PORTS.len() as u32;
    (0..len)
        .map(|i| (PORTS.start + seed.wrapping_add(i) % len) as u16)
        .find(|&port| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok())
        .expect("a free port in 28000..32000")
}

/// Any key and secret: moto checks neither.
pub const ACCESS_KEY_ID: &str = "kiln-test";
pub const SECRET_ACCESS_KEY: &str = "kiln-test-secret";

/// Where `install-deps.sh` puts moto; `KILN_MOTO_SERVER` overrides it.
fn moto_server() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("KILN_MOTO_SERVER").map(PathBuf::from),
        Some(PathBuf::from("/opt/kiln-py/bin/moto_server")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// A moto S3 server on a loopback port of its own.
pub struct MotoS3 {
    child: Option<Child>,
    addr: SocketAddr,
}

impl MotoS3 {
    /// `None`, loudly, when moto is not installed — unless the run
    /// requires everything (`KILN_REQUIRE_RUNC=1`, as CI sets), then it
    /// panics.
    pub async fn start() -> Option<MotoS3> {
        let Some(bin) = moto_server() else {
            let msg =
                "moto_server not found (run scripts/install-deps.sh, or set KILN_MOTO_SERVER)";
            if std::env::var("KILN_REQUIRE_RUNC").as_deref() == Ok("1") {
                panic!("{msg}");
            }
            eprintln!("SKIPPING the S3 part of this test: {msg}");
            return None;
        };
        let port = free_port();
        let mut moto = MotoS3 {
            child: None,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        };
        moto.child = Some(moto.spawn(&bin));
        moto.wait_ready().await;
        Some(moto)
    }

    fn spawn(&self, bin: &std::path::Path) -> Child {
        Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server")
    }

    async fn wait_ready(&self) {
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto_server did not listen on {} within 15 s", self.addr);
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `--blobstore-url` of `bucket` on this server.
    pub fn url(&self, bucket: &str) -> String {
        format!(
            "s3://{bucket}?endpoint={}&region=us-east-1",
            self.endpoint()
        )
    }

    /// Creates `bucket` (S3's `PUT /BUCKET`; moto needs no signature).
    pub async fn create_bucket(&self, bucket: &str) {
        let mut conn = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let req = format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        );
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "create bucket: {answer}"
        );
    }

    /// A blobstore on `bucket` (created here) with the test credentials.
    pub async fn blobstore(
        &self,
        bucket: &str,
        scratch: PathBuf,
    ) -> Result<S3Blobstore, StoreError> {
        self.create_bucket(bucket).await;
        blobstore_at(&self.url(bucket), scratch).await
    }

    /// One server for the whole test process (started on first use), for
    /// suites that take a fresh bucket per test ([`MotoS3::blobstore_for`]).
    /// A watcher kills it when the process exits, however it exits.
    pub async fn shared() -> Option<&'static MotoS3> {
        static SHARED: tokio::sync::OnceCell<Option<MotoS3>> = tokio::sync::OnceCell::const_new();
        SHARED
            .get_or_init(|| async {
                let moto = MotoS3::start().await?;
                moto.kill_after_exit();
                Some(moto)
            })
            .await
            .as_ref()
    }

    /// The blobstore of a test's data dir: a fresh bucket the first time,
    /// the same one when the test opens the dir again (a restart), as a
    /// blob directory in the dir would be. Its scratch space is in `dir`.
    pub async fn blobstore_for(&self, dir: &std::path::Path) -> Result<S3Blobstore, StoreError> {
        let note = dir.join("kiln-test-bucket");
        let bucket = match std::fs::read_to_string(&note) {
            Ok(bucket) => bucket,
            Err(_) => {
                let bucket = format!("t{}", uuid::Uuid::new_v4().simple());
                self.create_bucket(&bucket).await;
                std::fs::write(&note, &bucket).expect("note the test's bucket");
                bucket
            }
        };
        blobstore_at(&self.url(&bucket), dir.join("s3-scratch")).await
    }

    /// Kills the server once this process is gone, even if it never drops
    /// the server (a static, a panic, a kill).
    fn kill_after_exit(&self) {
        let Some(child) = self.child.as_ref() else {
            return;
        };
        after_this_process_exits(&format!("kill {} 2>/dev/null", child.id()));
    }

    /// Kills the server (its objects are in memory: they are gone).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MotoS3 {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback TCP relay in front of a server, which a test can cut (new
/// connections are refused, open ones dropped) and restore on the same
/// port: a store that goes away and comes back with its contents, as a
/// restarted S3 endpoint would (moto keeps objects in memory only).
pub struct Relay {
    addr: SocketAddr,
    to: SocketAddr,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    /// A relay to `to` on a free loopback port.
    pub async fn start(to: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("a loopback port for the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let mut relay = Relay {
            addr,
            to,
            running: None,
        };
        relay.running = Some(tokio::spawn(relay_loop(listener, to)));
        relay
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// New connections are refused and open ones are dropped.
    pub async fn cut(&mut self) {
        if let Some(task) = self.running.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listening again, on the same port.
    pub async fn restore(&mut self) {
        if self.running.is_some() {
            return;
        }
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("the relay's port again");
        self.running = Some(tokio::spawn(relay_loop(listener, self.to)));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(task) = self.running.take() {
            task.abort();
        }
    }
}

/// Accepts and pipes connections; aborting it drops every pipe with it.
async fn relay_loop(listener: tokio::net::TcpListener, to: SocketAddr) {
    let mut pipes = tokio::task::JoinSet::new();
    while let Ok((mut inbound, _)) = listener.accept().await {
        pipes.spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

impl MotoS3 {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `--blobstore-url` of `bucket` reached through `relay`.
    pub fn url_through(&self, relay: &Relay, bucket: &str) -> String {
        format!(
            "s3://{bucket}?endpoint=http://{}&region=us-east-1",
            relay.addr()
        )
    }
}

/// The S3 blobstore at `url` (a `--blobstore-url` of a moto bucket, maybe
/// through a [`Relay`]) with the test credentials.
pub async fn blobstore_at(url: &str, scratch: PathBuf) -> Result<S3Blobstore, StoreError> {
    let location = S3Location::parse(url)?;
    S3Blobstore::with_credentials(&location, ACCESS_KEY_ID, SECRET_ACCESS_KEY, scratch).await
}

/// Runs the shell `command` once this process is gone, however it ends (a
/// static never dropped, a panic, a kill): how the servers tests start are
/// stopped for sure.
fn after_this_process_exits(command: &str) {
    let script = format!(
        "while [ -e /proc/{pid} ]; do sleep 1; done; {command}",
        pid = std::process::id(),
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

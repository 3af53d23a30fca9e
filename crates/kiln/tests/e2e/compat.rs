//! The unmodified PyPI `cloudfoundry-client` driving Kiln's v3 API.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::Command;

/// The interpreter of the compatibility suite's venv (`scripts/install-deps.sh`
/// puts the pinned PyPI `cloudfoundry-client` there); `None` when it is not
/// installed, which fails the test where it must run (KILN_REQUIRE_RUNC=1).
fn cf_python() -> Option<PathBuf> {
    let python = std::env::var_os("KILN_CF_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/kiln-compat/bin/python"));
    let ok = std::process::Command::new(&python)
        .args(["-c", "import cloudfoundry_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    let why = format!("{} cannot import cloudfoundry_client", python.display());
    if std::env::var("KILN_REQUIRE_RUNC").as_deref() == Ok("1") {
        panic!(
            "the compatibility suite must run here (KILN_REQUIRE_RUNC=1) but cannot: {why}; run scripts/install-deps.sh"
        );
    }
    eprintln!("\n\n*** SKIPPING the cloudfoundry-client suite: {why} ***\n\n");
    None
}

/// The unmodified PyPI `cloudfoundry-client` drives a real server
/// (`tests/compat/cf_python_client.py`): org, spaces, user and roles, a push
/// through the raw v3 calls, a user-provided service bound and read from
/// inside the instance, audit events, and a developer of another space who
/// sees and changes none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_cloudfoundry_client_drives_kiln() {
    if !runnable() {
        return;
    }
    let Some(python) = cf_python() else {
        return;
    };
    let _one_at_a_time = SERIAL.lock().await;
    let scratch = tempfile::tempdir().unwrap();
    let (mut server, home, router_port) = logged_in_server(scratch.path()).await;
    create_legacy_buildpack(&home).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/cf_python_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .env("KILN_API", server.api_url())
        .env("KILN_ROUTER", format!("127.0.0.1:{router_port}"))
        .env("KILN_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("KILN_APP_DIR", fixture("apps/envprobe"))
        .env("KILN_SCRATCH", scratch.path())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running the compatibility script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("compat: OK"),
        "the cloudfoundry-client suite failed\n{stdout}\n{stderr}\n--- server log ---\n{}",
        server.log()
    );
    eprintln!("{stdout}");
    server.stop().await;
}

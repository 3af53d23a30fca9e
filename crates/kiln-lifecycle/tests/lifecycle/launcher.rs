//! The launcher's command, spawned (never exec'd over the test process)
//! against droplet layouts written by the test.

use crate::support::write_executable;
use kiln_lifecycle::LauncherArgs;
use kiln_lifecycle::launcher::{self, LauncherError};
use std::ffi::OsString;
use std::fs;
use std::path::Path;

/// An extracted droplet in a temp `/home/vcap`.
fn droplet(staging_info: Option<&str>) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let root = home.path();
    for dir in ["app/.profile.d", "profile.d", "deps/0", "tmp", "logs"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    // Sourced in this order: droplet profile.d (sorted), the app's
    // .profile.d, then .profile; files not ending in .sh are not sourced.
    for (path, content) in [
        ("profile.d/b.sh", "ORDER=\"$ORDER b\""),
        ("profile.d/a.sh", "ORDER=\"$ORDER a\""),
        ("profile.d/README", "ORDER=\"$ORDER readme\""),
        ("app/.profile.d/c.sh", "ORDER=\"$ORDER c\""),
        ("app/.profile", "export ORDER=\"$ORDER profile\""),
    ] {
        fs::write(root.join(path), format!("{content}\n")).unwrap();
    }
    if let Some(info) = staging_info {
        fs::write(root.join("staging_info.yml"), info).unwrap();
    }
    home
}

fn base_env() -> Vec<(OsString, OsString)> {
    [
        ("PATH", std::env::var("PATH").unwrap()),
        ("PORT", "61001".into()),
        ("INSTANCE_GUID", "instance-guid-1".into()),
        ("INSTANCE_INDEX", "3".into()),
        ("HOME", "/home/vcap".into()),
        (
            "VCAP_APPLICATION",
            r#"{"application_name":"hello","limits":{"mem":256}}"#.into(),
        ),
        (
            "VCAP_SERVICES",
            r#"{"db":[{"credentials":{"uri":"postgresql://u@h/d"}}]}"#.into(),
        ),
        ("VCAP_PLATFORM_OPTIONS", "{}".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect()
}

fn args(start_command: &str) -> LauncherArgs {
    LauncherArgs {
        app_dir: "app".into(),
        start_command: start_command.into(),
        execution_metadata: String::new(),
    }
}

/// Spawn the launch command; (success, stdout, stderr).
fn launch(home: &Path, args: &LauncherArgs) -> (bool, String, String) {
    let output = launcher::command(args, base_env(), home)
        .expect("launch command")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn profile_scripts_are_sourced_in_order_and_the_environment_is_derived() {
    let home = droplet(None);
    let root = home.path();
    let command = r#"echo "order:$ORDER"; echo "port:$PORT"; echo "home:$HOME"; echo "pwd:$PWD"
echo "deps:$DEPS_DIR"; echo "tmp:$TMPDIR"; echo "db:$DATABASE_URL"
echo "options:${VCAP_PLATFORM_OPTIONS-unset}"; echo "vcap:$VCAP_APPLICATION""#;
    let (ok, stdout, stderr) = launch(root, &args(command));
    assert!(ok, "{stdout}\n{stderr}");
    let line = |key: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in {stdout}"))
            .to_owned()
    };
    assert_eq!(line("order"), " a b c profile");
    assert_eq!(line("port"), "61001");
    let app = root.join("app").display().to_string();
    assert_eq!(line("home"), app);
    assert_eq!(line("pwd"), app);
    assert_eq!(line("deps"), root.join("deps").display().to_string());
    assert_eq!(line("tmp"), root.join("tmp").display().to_string());
    assert_eq!(line("db"), "postgres://u@h/d");
    assert_eq!(line("options"), "unset");
    let vcap: serde_json::Value = serde_json::from_str(&line("vcap")).unwrap();
    assert_eq!(
        vcap,
        serde_json::json!({
            "application_name": "hello", "limits": {"mem": 256},
            "host": "0.0.0.0", "instance_id": "instance-guid-1",
            "instance_index": 3, "port": 61001,
        })
    );
    assert!(
        stdout.starts_with("Invoking pre-start scripts.\nInvoking start command.\n"),
        "{stdout}"
    );
}

#[test]
fn start_commands_reach_bash_unchanged() {
    let home = droplet(None);
    let cases = [
        (
            r#"printf '%s|' "it's" 'a "b"' '$HOME' "$PORT""#,
            r#"it's|a "b"|$HOME|61001|"#,
        ),
        (
            r#"echo "$(echo nested) \$PORT" ; echo `echo back`"#,
            "nested $PORT\nback",
        ),
        (
            "x='a  b'; echo \"$x\" && false || echo recovered",
            "a  b\nrecovered",
        ),
        ("-n 'x' 2>/dev/null || echo dash", "dash"),
    ];
    for (command, expected) in cases {
        let (ok, stdout, stderr) = launch(home.path(), &args(command));
        assert!(ok, "{command}: {stderr}");
        let output = stdout
            .strip_prefix("Invoking pre-start scripts.\nInvoking start command.\n")
            .unwrap();
        assert_eq!(output.trim_end(), expected, "{command}");
    }
}

#[test]
fn the_staged_command_is_the_fallback() {
    let cases = [
        // No argv command: staging_info's start_command.
        (
            Some(r#"{"detected_buildpack":"x","start_command":"echo staged $PORT"}"#),
            "",
            Ok("staged 61001"),
        ),
        // The argv command wins.
        (
            Some(r#"{"start_command":"echo staged"}"#),
            "echo given",
            Ok("given"),
        ),
        // YAML works too (older droplets).
        (Some("start_command: echo from yaml\n"), "", Ok("from yaml")),
        // An entrypoint prefix replaces `bash -c`.
        (
            Some(
                r#"{"start_command":"echo \"prefixed:$PREFIXED\"","config":{"entrypoint_prefix":"env PREFIXED=yes bash -c"}}"#,
            ),
            "",
            Ok("prefixed:yes"),
        ),
        (Some(r#"{"start_command":""}"#), "", Err(1)),
        (None, "", Err(1)),
        (Some("{not: [valid"), "", Err(1)),
    ];
    for (staging_info, start_command, expected) in cases {
        let home = droplet(staging_info);
        match (
            launcher::command(&args(start_command), base_env(), home.path()),
            expected,
        ) {
            (Ok(mut command), Ok(expected)) => {
                let output = command.output().unwrap();
                let stdout = String::from_utf8_lossy(&output.stdout);
                assert!(output.status.success(), "{staging_info:?}");
                assert_eq!(stdout.lines().last(), Some(expected), "{staging_info:?}");
            }
            (Err(error), Err(code)) => {
                assert_eq!(error.exit_code(), code, "{staging_info:?}: {error}")
            }
            (Ok(_), Err(_)) => panic!("{staging_info:?}: expected an error"),
            (Err(error), Ok(_)) => panic!("{staging_info:?}: {error}"),
        }
    }
    let home = droplet(None);
    let error = launcher::command(&args(""), base_env(), home.path()).unwrap_err();
    assert!(matches!(error, LauncherError::NoStartCommand));
    assert_eq!(
        error.to_string(),
        "no start command specified or detected in droplet"
    );
}

#[test]
fn the_app_sees_its_own_exit_status_and_signals_pass_through_exec() {
    let home = droplet(None);
    write_executable(&home.path().join("app/server"), "#!/bin/bash\nexit 42\n");
    let status = launcher::command(&args("./server"), base_env(), home.path())
        .unwrap()
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(42));

    // `exec` all the way down: the process spawned is the app itself, so
    // the cell's signals reach it.
    let mut child = launcher::command(&args("exec sleep 30"), base_env(), home.path())
        .unwrap()
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    crate::support::wait_for(
        std::time::Duration::from_secs(10),
        "the app to start",
        || fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "sleep"),
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

//! The builder against real bash buildpacks: detection, multi-buildpack
//! supply/finalize, legacy compile/release, process types, failures and
//! their exit codes, the droplet and cache archives, live output.

use crate::support::{Entry, SharedBuf, Staging, file_content, read_tar_gz, wait_for};
use kiln_lifecycle::{Console, LifecycleCommand};
use kiln_model::staging::{BuildpackMetadata, BuildpackSidecar, StagingFailure};
use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

/// A legacy (v2) buildpack: detects when `$DETECT` says so, compiles by
/// leaving a marker, releases `web: <command>`.
fn legacy_buildpack(staging: &Staging, key: &str, detect: &str, web: &str) {
    staging.buildpack(
        key,
        &[
            ("detect", detect),
            (
                "compile",
                &format!("echo compiled-by-{key} > \"$1/compiled-by-{key}\""),
            ),
            (
                "release",
                &format!("echo '---'\necho 'default_process_types:'\necho '  web: {web}'"),
            ),
        ],
    );
}

fn types(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn detect_picks_the_first_buildpack_that_detects() {
    let staging = Staging::new();
    legacy_buildpack(&staging, "no", "echo not me >&2; exit 1", "no-web");
    legacy_buildpack(&staging, "yes", "echo Yes-Lang 1.0", "./yes-web");
    legacy_buildpack(&staging, "also", "echo Also", "./also-web");
    // Not a buildpack (no bin/): skipped with a message, not an error.
    fs::create_dir_all(staging.path("buildpacks/broken/lib")).unwrap();

    let outcome = staging.stage(&["broken", "no", "yes", "also"], false);
    let result = outcome.result.expect("staging succeeds");

    assert!(staging.build_dir().join("compiled-by-yes").exists());
    assert!(!staging.build_dir().join("compiled-by-also").exists());
    assert_eq!(result.lifecycle_type, "buildpack");
    assert_eq!(result.lifecycle_metadata.buildpack_key, "yes");
    // A legacy buildpack has no config.yml: the detect output names it.
    assert_eq!(result.lifecycle_metadata.detected_buildpack, "Yes-Lang 1.0");
    assert_eq!(
        result.lifecycle_metadata.buildpacks,
        vec![BuildpackMetadata {
            key: "yes".into(),
            name: "Yes-Lang 1.0".into(),
            version: String::new(),
        }]
    );
    assert_eq!(result.process_types, types(&[("web", "./yes-web")]));
    assert_eq!(staging.result_json(), result);
    assert!(
        outcome.stderr.contains("not me"),
        "detect stderr streams: {}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("skipping buildpack broken"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome
            .stdout
            .contains("-----> Detected buildpack yes: Yes-Lang 1.0")
    );
    assert!(outcome.stdout.contains("-----> Running compile for yes"));
    assert!(outcome.stdout.contains("-----> Running release for yes"));
}

#[test]
fn nothing_detected_is_exit_222() {
    let staging = Staging::new();
    legacy_buildpack(&staging, "a", "exit 1", "a");
    legacy_buildpack(&staging, "b", "exit 7", "b");
    for order in [&["a", "b"][..], &[], &["missing"]] {
        let error = staging.stage(order, false).result.unwrap_err();
        assert_eq!(error.failure(), StagingFailure::NoAppDetected, "{order:?}");
        assert_eq!(error.failure().exit_code(), 222);
        assert_eq!(
            error.report(),
            "None of the buildpacks detected a compatible application"
        );
    }
    // The same through the entry point the `kiln` binary calls.
    let args = staging.args(&["a", "b"], false);
    assert_eq!(kiln_lifecycle::run(LifecycleCommand::Builder(args)), 222);
}

/// Buildpack key → its scripts (name, body).
type Buildpacks<'a> = &'a [(&'a str, &'a [(&'a str, &'a str)])];

/// (case, buildpacks, order, skip detect, exit code, part of the report)
type FailureCase<'a> = (&'a str, Buildpacks<'a>, &'a [&'a str], bool, i32, &'a str);

/// Every way a phase can fail, the exit code it gives and the phase named
/// in the report line.
#[test]
fn failing_phases_give_their_exit_codes() {
    let ok_release = "echo 'default_process_types: {web: ./web}'";
    let cases: &[FailureCase] = &[
        (
            "compile fails",
            &[(
                "bp",
                &[
                    ("detect", "true"),
                    ("compile", "echo boom >&2; exit 3"),
                    ("release", ok_release),
                ],
            )],
            &["bp"],
            false,
            223,
            "Failed to compile droplet",
        ),
        (
            "release fails",
            &[(
                "bp",
                &[
                    ("detect", "true"),
                    ("compile", "true"),
                    ("release", "exit 1"),
                ],
            )],
            &["bp"],
            false,
            224,
            "Failed to build droplet release",
        ),
        (
            "release prints no YAML map",
            &[(
                "bp",
                &[
                    ("detect", "true"),
                    ("compile", "true"),
                    ("release", "echo '[web'"),
                ],
            )],
            &["bp"],
            false,
            224,
            "Failed to build droplet release",
        ),
        (
            "supply fails",
            &[
                ("s", &[("supply", "exit 2")]),
                ("f", &[("finalize", "true"), ("release", ok_release)]),
            ],
            &["s", "f"],
            true,
            225,
            "Failed to run all supply scripts",
        ),
        (
            "a non-final buildpack cannot supply",
            &[
                ("s", &[("compile", "true")]),
                ("f", &[("finalize", "true"), ("release", ok_release)]),
            ],
            &["s", "f"],
            true,
            225,
            "does not support multi-buildpack apps",
        ),
        (
            "a named buildpack is missing",
            &[("f", &[("finalize", "true")])],
            &["gone", "f"],
            true,
            225,
            "buildpack gone not found",
        ),
        (
            "finalize fails",
            &[(
                "f",
                &[
                    ("supply", "true"),
                    ("finalize", "exit 9"),
                    ("release", ok_release),
                ],
            )],
            &["f"],
            true,
            226,
            "Failed to run finalize script",
        ),
        (
            "the final buildpack's own supply fails",
            &[("f", &[("supply", "exit 1"), ("finalize", "true")])],
            &["f"],
            true,
            225,
            "Failed to run all supply scripts",
        ),
        (
            "named mode without buildpacks",
            &[],
            &[],
            true,
            1,
            "--skip-detect needs at least one buildpack",
        ),
    ];
    for (case, buildpacks, order, skip_detect, exit_code, report) in cases {
        let staging = Staging::new();
        for (key, scripts) in *buildpacks {
            staging.buildpack(key, scripts);
        }
        let outcome = staging.stage(order, *skip_detect);
        let error = outcome.result.expect_err(case);
        assert_eq!(error.failure().exit_code(), *exit_code, "{case}: {error}");
        assert!(
            error.report().contains(report),
            "{case}: {}",
            error.report()
        );
        assert!(!staging.path("droplet").exists(), "{case}: no droplet");
    }
}

#[test]
fn failed_compile_still_records_the_buildpack_metadata() {
    let staging = Staging::new();
    staging.buildpack(
        "bp",
        &[
            ("detect", "echo Thing"),
            ("compile", "echo compile went wrong >&2; exit 1"),
        ],
    );
    let outcome = staging.stage(&["bp"], false);
    let error = outcome.result.unwrap_err();
    assert_eq!(error.failure(), StagingFailure::BuildpackCompileFailed);
    assert!(outcome.stderr.contains("compile went wrong"));
    let result = staging.result_json();
    assert_eq!(result.lifecycle_metadata.buildpack_key, "bp");
    assert_eq!(result.lifecycle_metadata.detected_buildpack, "Thing");
    assert!(result.process_types.is_empty());
}

#[test]
fn buildpack_sidecars_from_launch_yml_reach_the_staging_result() {
    let staging = Staging::new();
    staging.app_file("Procfile", "web: ./serve\nshadow: ./not-a-sidecar\n");
    // Supply declares two sidecars; the final buildpack replaces one of
    // them by name, and the Procfile turns another into a process.
    staging.buildpack(
        "first",
        &[(
            "supply",
            r#"cat > "$3/$4/launch.yml" <<'YML'
processes:
- type: agent
  command: ./agent --old
  platforms:
    cloudfoundry:
      sidecar_for: [web]
- type: shadow
  command: ./shadow
  platforms:
    cloudfoundry:
      sidecar_for: [web]
YML"#,
        )],
    );
    staging.buildpack(
        "second",
        &[
            ("supply", "true"),
            (
                "finalize",
                r#"cat > "$3/$4/launch.yml" <<'YML'
processes:
- type: web
  command: ./start
- type: agent
  command: ./agent --port 9000
  limits:
    memory: 32
  platforms:
    cloudfoundry:
      sidecar_for: [web, worker]
YML"#,
            ),
        ],
    );

    let outcome = staging.stage(&["first", "second"], true);
    let result = outcome.result.expect("staging succeeds");
    assert_eq!(
        result.process_types,
        types(&[("web", "./serve"), ("shadow", "./not-a-sidecar")])
    );
    assert_eq!(
        result.sidecars,
        [BuildpackSidecar {
            name: "agent".into(),
            process_types: vec!["web".into(), "worker".into()],
            command: "./agent --port 9000".into(),
            memory: Some(32),
        }]
    );
    // The result.json says it as buildpackapplifecycle does.
    let json = serde_json::to_value(&result).unwrap();
    assert_eq!(
        json["sidecars"][0],
        serde_json::json!({"name": "agent", "process_types": ["web", "worker"],
                           "command": "./agent --port 9000", "memory": 32})
    );
}

#[test]
fn named_buildpacks_supply_then_finalize() {
    let staging = Staging::new();
    staging.app_file("server.sh", "echo serving");
    // Stale cache of a buildpack no longer used, and the previous caches of
    // the ones used now.
    fs::create_dir_all(staging.cache_dir().join("stale")).unwrap();
    fs::create_dir_all(staging.cache_dir().join("final")).unwrap();
    fs::write(staging.cache_dir().join("final/previous"), "kept").unwrap();

    staging.buildpack(
        "first",
        &[(
            "supply",
            r#"echo "supply args: $*" > "$3/$4/args"
mkdir -p "$3/$4/bin"
printf '#!/bin/bash\necho tool-ran\n' > "$3/$4/bin/tool"
chmod +x "$3/$4/bin/tool"
printf 'name: first\nversion: "1.0"\n' > "$3/$4/config.yml"
printf 'processes:\n- type: worker\n  command: ./worker\n- type: web\n  command: ./supplied-web\n' > "$3/$4/launch.yml"
echo "first cache" > "$2/first-cache"
echo "supplying first"
echo "first warns" >&2"#,
        )],
    );
    staging.buildpack(
        "second",
        &[
            (
                "supply",
                r#"printf 'name: second\nversion: 2.0.1\n' > "$3/$4/config.yml""#,
            ),
            (
                "finalize",
                r#"echo "finalize args: $*" > "$3/$4/args"
test -x "$3/0/bin/tool"
echo 'export FROM_PROFILE_D="$DEPS_DIR/0/bin"' > "$5/second.sh"
mkdir -p "$1/.profile.d"
echo 'export FROM_APP_PROFILE_D=yes' > "$1/.profile.d/app.sh"
ln -s server.sh "$1/start"
chmod +x "$1/server.sh"
echo "second cache" > "$2/second-cache"
printf 'processes:\n- type: web\n  command: ./start\n' > "$3/$4/launch.yml""#,
            ),
            // Not run: the final buildpack has a launch.yml.
            ("release", "exit 1"),
        ],
    );

    let outcome = staging.stage(&["first", "second"], true);
    let result = outcome.result.expect("staging succeeds");

    assert_eq!(
        result.process_types,
        types(&[("web", "./start"), ("worker", "./worker")])
    );
    assert_eq!(result.lifecycle_metadata.buildpack_key, "second");
    assert_eq!(result.lifecycle_metadata.detected_buildpack, "second");
    assert_eq!(
        result.lifecycle_metadata.buildpacks,
        vec![
            BuildpackMetadata {
                key: "first".into(),
                name: "first".into(),
                version: "1.0".into()
            },
            BuildpackMetadata {
                key: "second".into(),
                name: "second".into(),
                version: "2.0.1".into()
            },
        ]
    );
    let supply_at = outcome
        .stdout
        .find("-----> Running supply for first")
        .unwrap();
    let supply_output_at = outcome.stdout.find("supplying first").unwrap();
    let finalize_at = outcome
        .stdout
        .find("-----> Running finalize for second")
        .unwrap();
    assert!(
        supply_at < supply_output_at && supply_output_at < finalize_at,
        "{}",
        outcome.stdout
    );
    assert!(outcome.stderr.contains("first warns"));
    assert!(!outcome.stdout.contains("Running release"));

    let droplet = read_tar_gz(&staging.path("droplet"));
    for dir in [
        "app",
        "deps",
        "deps/0",
        "deps/1",
        "profile.d",
        "tmp",
        "logs",
    ] {
        assert_eq!(
            droplet.get(dir),
            Some(&Entry::Dir),
            "{dir} in {:?}",
            droplet.keys()
        );
    }
    let build_dir = staging.build_dir().display().to_string();
    let deps_args = file_content(&droplet, "deps/0/args");
    assert!(
        deps_args.starts_with(&format!(
            "supply args: {build_dir} {}/",
            staging.cache_dir().display()
        )),
        "{deps_args}"
    );
    assert!(deps_args.trim_end().ends_with("/deps 0"), "{deps_args}");
    let finalize_args = file_content(&droplet, "deps/1/args");
    assert!(finalize_args.contains("/deps 1 "), "{finalize_args}");
    assert!(finalize_args.contains(&format!("{}/final ", staging.cache_dir().display())));
    assert!(
        finalize_args.trim_end().ends_with("/profile.d"),
        "{finalize_args}"
    );
    assert!(matches!(
        droplet.get("deps/0/bin/tool"),
        Some(Entry::File { mode: 0o755, .. })
    ));
    assert!(matches!(
        droplet.get("app/server.sh"),
        Some(Entry::File { mode: 0o755, .. })
    ));
    assert_eq!(
        droplet.get("app/start"),
        Some(&Entry::Symlink("server.sh".into()))
    );
    assert!(droplet.contains_key("profile.d/second.sh"));
    assert!(droplet.contains_key("app/.profile.d/app.sh"));
    let staging_info: serde_json::Value =
        serde_json::from_str(&file_content(&droplet, "staging_info.yml")).unwrap();
    assert_eq!(
        staging_info,
        serde_json::json!({"detected_buildpack": "second", "start_command": "./start"})
    );

    let cache = read_tar_gz(&staging.path("output-cache"));
    assert_eq!(file_content(&cache, "final/previous"), "kept");
    assert_eq!(file_content(&cache, "final/second-cache"), "second cache\n");
    assert!(!cache.contains_key("stale"), "{:?}", cache.keys());
    assert!(
        cache
            .iter()
            .any(|(name, entry)| name.ends_with("/first-cache")
                && matches!(entry, Entry::File { content, .. } if content == "first cache\n")),
        "{:?}",
        cache.keys()
    );

    // The droplet runs: extract it like the cell does and launch it.
    let home = tempfile::tempdir().unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(
        fs::File::open(staging.path("droplet")).unwrap(),
    ))
    .unpack(home.path())
    .unwrap();
    fs::write(
        home.path().join("app/server.sh"),
        "#!/bin/bash\necho \"serving $FROM_PROFILE_D $FROM_APP_PROFILE_D\"\n\"$FROM_PROFILE_D/tool\"\n",
    )
    .unwrap();
    let args = kiln_lifecycle::LauncherArgs {
        app_dir: "app".into(),
        start_command: String::new(),
        execution_metadata: String::new(),
    };
    let env = [("PATH".into(), std::env::var_os("PATH").unwrap())];
    let output = kiln_lifecycle::launcher::command(&args, env, home.path())
        .unwrap()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deps = home.path().join("deps");
    assert!(
        stdout.contains(&format!("serving {}/0/bin yes\ntool-ran\n", deps.display())),
        "{stdout}"
    );
}

#[test]
fn legacy_compile_and_release() {
    let staging = Staging::new();
    staging.app_file("index.txt", "hello");
    staging.buildpack(
        "legacy",
        &[
            ("detect", "exit 1"), // not consulted in named mode
            (
                "compile",
                r#"test "$#" = 2
test "$2" = "$(dirname "$1")/cache/final"
printf '#!/bin/sh\necho hi\n' > "$1/run.sh"
chmod 750 "$1/run.sh"
ln -s index.txt "$1/link"
echo compiling"#,
            ),
            (
                "release",
                r#"cat <<'YAML'
---
config_vars:
  RACK_ENV: production
default_process_types:
  web: ./run.sh --port $PORT
  rake: rake "do it"
YAML"#,
            ),
        ],
    );
    let outcome = staging.stage(&["legacy"], true);
    let result = outcome.result.expect("staging succeeds");
    assert_eq!(
        result.process_types,
        types(&[("web", "./run.sh --port $PORT"), ("rake", "rake \"do it\"")])
    );
    assert_eq!(result.lifecycle_metadata.buildpack_key, "legacy");
    // Named mode, no config.yml: no name, as in Cloud Foundry.
    assert_eq!(result.lifecycle_metadata.detected_buildpack, "");

    let droplet = read_tar_gz(&staging.path("droplet"));
    // A legacy final buildpack gets no deps dir.
    assert!(!droplet.contains_key("deps/0"), "{:?}", droplet.keys());
    assert_eq!(droplet.get("deps"), Some(&Entry::Dir));
    assert_eq!(
        droplet.get("app/run.sh"),
        Some(&Entry::File {
            mode: 0o750,
            content: "#!/bin/sh\necho hi\n".into()
        })
    );
    assert_eq!(
        droplet.get("app/link"),
        Some(&Entry::Symlink("index.txt".into()))
    );
    assert_eq!(file_content(&droplet, "app/index.txt"), "hello");
    let staging_info: serde_json::Value =
        serde_json::from_str(&file_content(&droplet, "staging_info.yml")).unwrap();
    assert_eq!(staging_info["start_command"], "./run.sh --port $PORT");
}

#[test]
fn procfile_overrides_buildpack_process_types() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "web: ./from-procfile\nclock: ./clock\n",
            &[
                ("web", "./from-procfile"),
                ("worker", "./w"),
                ("clock", "./clock"),
            ],
        ),
        (
            "clock: ./clock\n",
            &[
                ("web", "./release-web"),
                ("worker", "./w"),
                ("clock", "./clock"),
            ],
        ),
        ("", &[("web", "./release-web"), ("worker", "./w")]),
    ];
    for (procfile, expected) in cases {
        let staging = Staging::new();
        staging.app_file("Procfile", procfile);
        staging.buildpack(
            "bp",
            &[
                ("compile", "true"),
                (
                    "release",
                    "printf 'default_process_types:\\n  web: ./release-web\\n  worker: ./w\\n'",
                ),
            ],
        );
        let result = staging
            .stage(&["bp"], true)
            .result
            .expect("staging succeeds");
        assert_eq!(
            result.process_types,
            types(expected),
            "Procfile {procfile:?}"
        );
    }

    let staging = Staging::new();
    staging.app_file("Procfile", "web: [not yaml\n");
    staging.buildpack("bp", &[("compile", "true"), ("release", "true")]);
    let error = staging.stage(&["bp"], true).result.unwrap_err();
    assert_eq!(error.failure(), StagingFailure::Other);
    assert!(error.to_string().contains("Procfile"), "{error}");
}

#[test]
fn missing_web_command_warns_but_succeeds() {
    let staging = Staging::new();
    staging.buildpack(
        "bp",
        &[
            ("compile", "true"),
            ("release", "echo 'default_process_types: {worker: ./w}'"),
        ],
    );
    let outcome = staging.stage(&["bp"], true);
    let result = outcome.result.expect("staging succeeds");
    assert_eq!(result.process_types, types(&[("worker", "./w")]));
    assert!(
        outcome.stderr.contains("No start command specified"),
        "{}",
        outcome.stderr
    );
    let droplet = read_tar_gz(&staging.path("droplet"));
    let staging_info: serde_json::Value =
        serde_json::from_str(&file_content(&droplet, "staging_info.yml")).unwrap();
    assert_eq!(staging_info["start_command"], "");
}

#[test]
fn buildpack_nested_in_a_single_top_level_directory() {
    let staging = Staging::new();
    staging.buildpack(
        "zipped/ruby-buildpack-1.2.3",
        &[
            ("detect", "echo Ruby"),
            ("compile", "true"),
            ("release", "echo '{}'"),
        ],
    );
    let result = staging
        .stage(&["zipped"], false)
        .result
        .expect("staging succeeds");
    assert_eq!(result.lifecycle_metadata.detected_buildpack, "Ruby");
}

#[test]
fn buildpack_output_streams_while_the_buildpack_runs() {
    let staging = Staging::new();
    let go = staging.path("go");
    staging.buildpack(
        "slow",
        &[
            (
                "compile",
                &format!(
                    "echo compile started\necho on stderr too >&2\n\
                     for i in $(seq 1000); do [ -e {go} ] && break; sleep 0.01; done\n\
                     [ -e {go} ]\necho compile finished",
                    go = go.display()
                ),
            ),
            ("release", "true"),
        ],
    );
    let (stdout, stderr) = (SharedBuf::default(), SharedBuf::default());
    let console = Console::new(stdout.clone(), stderr.clone());
    let args = staging.args(&["slow"], true);
    let build = std::thread::spawn(move || kiln_lifecycle::builder::build(&args, &console));

    // The compile script only finishes once the test has seen its first
    // lines, which therefore cannot have been buffered until it exited.
    wait_for(Duration::from_secs(10), "the first compile line", || {
        stdout.text().contains("compile started\n") && stderr.text().contains("on stderr too\n")
    });
    assert!(!stdout.text().contains("compile finished"));
    fs::write(&go, "").unwrap();
    build.join().unwrap().expect("staging succeeds");
    assert!(stdout.text().contains("compile finished\n"));
}

//! The command line the cell and the API put in Task and LRP definitions
//! parses into the arguments the lifecycle expects.

use clap::Parser;
use kiln_lifecycle::{BuilderArgs, LauncherArgs, LifecycleCommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: LifecycleCommand,
}

fn parse(argv: &[&str]) -> LifecycleCommand {
    Cli::try_parse_from(std::iter::once("lifecycle").chain(argv.iter().copied()))
        .unwrap_or_else(|error| panic!("{argv:?}: {error}"))
        .command
}

#[test]
fn builder_flags() {
    let staging_task = [
        "builder",
        "--build-dir=/tmp/app",
        "--buildpacks-dir=/tmp/buildpacks",
        "--buildpack-order=guid-1,guid-2",
        "--skip-detect=true",
        "--output-droplet=/tmp/droplet",
        "--output-metadata=/tmp/result.json",
        "--build-artifacts-cache-dir=/tmp/cache",
        "--output-build-artifacts-cache=/tmp/output-cache",
    ];
    let with_order = |order: &[&str], skip_detect| {
        LifecycleCommand::Builder(BuilderArgs {
            buildpack_order: order.iter().map(|k| k.to_string()).collect(),
            skip_detect,
            ..BuilderArgs::default()
        })
    };
    let cases: [(&[&str], LifecycleCommand); 6] = [
        (&staging_task, with_order(&["guid-1", "guid-2"], true)),
        (&["builder"], with_order(&[], false)),
        (&["builder", "--skip-detect"], with_order(&[], true)),
        (
            &["builder", "--skip-detect=false", "--buildpack-order=a"],
            with_order(&["a"], false),
        ),
        (
            &["builder", "--buildpack-order", "a,b,c"],
            with_order(&["a", "b", "c"], false),
        ),
        (
            &["builder", "--build-dir", "/x", "--output-droplet=/y"],
            LifecycleCommand::Builder(BuilderArgs {
                build_dir: "/x".into(),
                output_droplet: "/y".into(),
                ..BuilderArgs::default()
            }),
        ),
    ];
    for (argv, expected) in cases {
        assert_eq!(parse(argv), expected, "{argv:?}");
    }
}

#[test]
fn launcher_arguments() {
    let launcher = |app: &str, command: &str, metadata: &str| {
        LifecycleCommand::Launcher(LauncherArgs {
            app_dir: app.into(),
            start_command: command.into(),
            execution_metadata: metadata.into(),
        })
    };
    for (argv, expected) in [
        (&["launcher", "app", "", ""][..], launcher("app", "", "")),
        (
            &["launcher", "app", "bundle exec rackup -p $PORT", ""],
            launcher("app", "bundle exec rackup -p $PORT", ""),
        ),
        (
            &["launcher", "app", "--weird -x", "{}"],
            launcher("app", "--weird -x", "{}"),
        ),
        (&["launcher", "app"], launcher("app", "", "")),
    ] {
        assert_eq!(parse(argv), expected, "{argv:?}");
    }
}

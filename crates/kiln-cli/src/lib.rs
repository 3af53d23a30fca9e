//! `kiln`'s user verbs: the cf CLI's everyday commands (login, target,
//! create-buildpack, push, apps, app, start, stop, delete, logs, curl)
//! against a Cloud Foundry v3 API.
//!
//! Architecture invariant: only the public HTTP API is used (`GET /`,
//! `/v3/...`, `{login}/oauth/token`, `{log_cache}/api/v1/read`), with the
//! base URLs taken from the saved config, so every verb works the same
//! against a remote Kiln — and mostly against a real Cloud Foundry. No
//! other Kiln crate is used but `kiln-model` (its state names).
//!
//! Entry points: [`run`] (config in `$KILN_HOME`, default `~/.kiln`) and
//! [`run_with_home`]. Errors are `anyhow` at this edge; the binary prints
//! them as `FAILED` and the message.

mod app;
mod buildpacks;
mod client;
mod config;
mod curl;
mod files;
mod login;
mod logs;
mod manifest;
mod push;
mod resources;
mod summary;

pub use buildpacks::CreateBuildpackArgs;
pub use curl::CurlArgs;
pub use login::{LoginArgs, TargetArgs};
pub use push::PushArgs;

use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Log in to a Kiln (or Cloud Foundry) API and target an org and space
    Login(LoginArgs),
    /// Forget the saved tokens and target
    Logout,
    /// Show or set the targeted org and space
    Target(TargetArgs),
    /// Upload an admin buildpack from a directory or a .zip
    CreateBuildpack(CreateBuildpackArgs),
    /// List the admin buildpacks
    Buildpacks,
    /// Push an app: upload, stage, start, and wait until it runs
    Push(PushArgs),
    /// List the apps in the targeted space
    Apps,
    /// Show an app's state, routes, droplet and instances
    App(AppArgs),
    /// Start an app and wait until it runs
    Start(AppArgs),
    /// Stop an app
    Stop(AppArgs),
    /// Delete an app
    Delete(DeleteArgs),
    /// Show an app's logs (follows them until Ctrl-C unless --recent)
    Logs(LogsArgs),
    /// Make an authenticated request to the API and print the answer
    Curl(CurlArgs),
}

#[derive(Args, Debug, Clone)]
pub struct AppArgs {
    /// The app's name
    pub name: String,
}

#[derive(Args, Debug, Clone)]
pub struct DeleteArgs {
    /// The app's name
    pub name: String,
    /// Do not ask for confirmation
    #[arg(short = 'f')]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct LogsArgs {
    /// The app's name
    pub name: String,
    /// Print the recent logs and exit
    #[arg(long)]
    pub recent: bool,
}

/// Runs one verb with the config in `$KILN_HOME` (default `~/.kiln`).
pub async fn run(command: Command) -> anyhow::Result<()> {
    run_with_home(command, &config::default_home()).await
}

/// Runs one verb with the config in `home` (for tests and embedding; the
/// binary calls [`run`]).
pub async fn run_with_home(command: Command, home: &Path) -> anyhow::Result<()> {
    match command {
        Command::Login(args) => login::login(home, args).await,
        Command::Logout => login::logout(home),
        Command::Target(args) => login::target(&mut session(home)?, args).await,
        Command::CreateBuildpack(args) => buildpacks::create(&mut session(home)?, args).await,
        Command::Buildpacks => buildpacks::list(&mut session(home)?).await,
        Command::Push(args) => push::push(&mut session(home)?, args).await,
        Command::Apps => app::apps(&mut session(home)?).await,
        Command::App(args) => app::app(&mut session(home)?, &args.name).await,
        Command::Start(args) => app::start(&mut session(home)?, &args.name).await,
        Command::Stop(args) => app::stop(&mut session(home)?, &args.name).await,
        Command::Delete(args) => app::delete(&mut session(home)?, &args.name, args.force).await,
        Command::Logs(args) => app::show_logs(&mut session(home)?, &args.name, args.recent).await,
        Command::Curl(args) => curl::curl(&mut session(home)?, args).await,
    }
}

/// A client for the saved, logged-in target.
fn session(home: &Path) -> anyhow::Result<client::Client> {
    let config = config::Config::load(home)?;
    config.require_login()?;
    client::Client::new(config, PathBuf::from(home))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// The `kiln` binary flattens [`Command`] next to its own verbs.
    #[derive(Parser)]
    #[command(name = "kiln")]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[test]
    fn verbs_parse_like_the_cf_cli() {
        Cli::command().debug_assert();
        let push = Cli::try_parse_from([
            "kiln",
            "push",
            "hello",
            "-p",
            "app",
            "-b",
            "python",
            "-b",
            "binary",
            "-m",
            "1G",
            "-k",
            "512",
            "-i",
            "2",
            "-c",
            "run",
            "--no-route",
        ])
        .unwrap();
        let Command::Push(args) = push.command else {
            panic!("not a push")
        };
        assert_eq!(args.buildpacks, ["python", "binary"]);
        assert_eq!(
            (args.memory, args.disk, args.instances),
            (Some(1024), Some(512), Some(2))
        );
        assert!(args.no_route && !args.no_start);
        assert!(Cli::try_parse_from(["kiln", "push", "x", "-m", "lots"]).is_err());
        let bp = Cli::try_parse_from(["kiln", "create-buildpack", "py", "dir", "1", "--disable"])
            .unwrap();
        assert!(matches!(bp.command, Command::CreateBuildpack(a) if a.disable && a.position == 1));
        for verb in [
            "login",
            "logout",
            "target",
            "create-buildpack",
            "buildpacks",
            "push",
            "apps",
            "app",
            "start",
            "stop",
            "delete",
            "logs",
            "curl",
        ] {
            let help = Cli::try_parse_from(["kiln", verb, "--help"]).err().unwrap();
            assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp, "{verb}");
        }
    }
}

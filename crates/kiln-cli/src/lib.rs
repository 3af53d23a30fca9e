//! `kiln`'s user verbs: the cf CLI's everyday commands (login, target,
//! push, apps, app, start, stop, restart, restage, scale, rename, delete,
//! env, set-env, unset-env, routes, map-route, domains, stacks, logs, curl,
//! run-task, tasks, terminate-task, events, cups, services, bind-service,
//! update-buildpack, delete-buildpack, ssh-enabled, ...) against a Cloud
//! Foundry v3 API.
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
mod deployments;
mod domains;
mod droplets;
mod env;
mod files;
mod login;
mod logs;
mod manifest;
mod platform;
mod progress;
mod push;
mod quotas;
mod resources;
mod routes;
mod services;
mod space_quotas;
mod ssh;
mod summary;
mod tasks;
mod users;

pub use buildpacks::{CreateBuildpackArgs, DeleteBuildpackArgs, UpdateBuildpackArgs};
pub use curl::CurlArgs;
pub use domains::{CheckRouteArgs, CreateSharedDomainArgs, DeleteDomainArgs, OrgDomainArgs};
pub use droplets::DownloadDropletArgs;
pub use login::{LoginArgs, TargetArgs};
pub use push::PushArgs;
pub use quotas::{CreateOrgQuotaArgs, SetOrgQuotaArgs};
pub use routes::RouteArgs;
pub use services::{BindArgs, DeleteServiceArgs, ServiceArgs, UnbindArgs, UserProvidedArgs};
pub use space_quotas::{
    CreateSpaceQuotaArgs, DeleteSpaceQuotaArgs, SetSpaceQuotaArgs, SpaceQuotaArgs,
    UpdateSpaceQuotaArgs,
};
pub use tasks::{RunTaskArgs, TerminateTaskArgs};
pub use users::{CreateUserArgs, SetOrgRoleArgs, SetSpaceRoleArgs, SpaceUsersArgs};

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
    /// Change an admin buildpack: its zip, place, name, stack, enabled or locked
    #[command(
        after_help = "EXAMPLES:\n   kiln update-buildpack python -i 1 --enable\n   kiln update-buildpack python -p ./python_buildpack.zip --unlock\n   kiln update-buildpack python --rename python_v2 --assign-stack cflinuxfs4"
    )]
    UpdateBuildpack(UpdateBuildpackArgs),
    /// Delete an admin buildpack
    #[command(after_help = "EXAMPLE:\n   kiln delete-buildpack python -f")]
    DeleteBuildpack(DeleteBuildpackArgs),
    /// Push apps from manifest.yml or flags: upload, stage, start, wait until they run
    #[command(after_help = PUSH_EXAMPLES)]
    Push(Box<PushArgs>),
    /// List the apps in the targeted space
    Apps,
    /// Show an app's state, routes, droplet and instances
    App(AppArgs),
    /// Start an app and wait until it runs
    Start(AppArgs),
    /// Stop an app
    Stop(AppArgs),
    /// Stop and start an app with its current droplet (`--strategy rolling`: without downtime)
    #[command(
        after_help = "EXAMPLES:\n   kiln restart myapp\n   kiln restart myapp --strategy rolling --max-in-flight 2"
    )]
    Restart(RestartArgs),
    /// Cancel an app's deployment: its previous droplet runs again
    CancelDeployment(AppArgs),
    /// Continue a paused canary deployment
    ContinueDeployment(ContinueArgs),
    /// Stage an app's newest package again, then run the new droplet
    Restage(AppArgs),
    /// Change an app's instances, memory or disk
    #[command(after_help = "EXAMPLES:\n   kiln scale myapp -i 5\n   kiln scale myapp -m 512M -f")]
    Scale(ScaleArgs),
    /// Rename an app
    Rename(RenameArgs),
    /// Delete an app (and with -r its routes)
    Delete(DeleteArgs),
    /// Show an app's environment variables
    Env(AppArgs),
    /// Set an app's environment variable (restage to apply it)
    #[command(after_help = "EXAMPLE:\n   kiln set-env myapp GREETING hello && kiln restage myapp")]
    SetEnv(SetEnvArgs),
    /// Remove an app's environment variable (restage to apply it)
    UnsetEnv(UnsetEnvArgs),
    /// List the routes in the targeted space
    Routes,
    /// Create a route in the targeted space
    #[command(
        after_help = "EXAMPLE:\n   kiln create-route example.com --hostname shop --path /api"
    )]
    CreateRoute(RouteArgs),
    /// Delete a route
    DeleteRoute(DeleteRouteArgs),
    /// Map a route to an app, creating the route if needed
    #[command(after_help = "EXAMPLE:\n   kiln map-route myapp example.com --hostname shop")]
    MapRoute(MapRouteArgs),
    /// Unmap a route from an app
    UnmapRoute(MapRouteArgs),
    /// List the domains
    Domains,
    /// List the stacks
    Stacks,
    /// List the orgs
    Orgs,
    /// List the spaces of the targeted org
    Spaces,
    /// Create a user (UAA and Cloud Controller)
    CreateUser(CreateUserArgs),
    /// Give a user a role in an org
    SetOrgRole(SetOrgRoleArgs),
    /// Give a user a role in a space (and membership of its org)
    SetSpaceRole(SetSpaceRoleArgs),
    /// List a space's users by role
    SpaceUsers(SpaceUsersArgs),
    /// Say whether an app can be reached over SSH (Kiln runs no SSH proxy: never)
    SshEnabled(AppArgs),
    /// Turn an app's ssh feature on
    EnableSsh(AppArgs),
    /// Turn an app's ssh feature off
    DisableSsh(AppArgs),
    /// Print the client's version
    Version,
    /// Run a one-off task with an app's droplet and environment
    #[command(
        after_help = "EXAMPLES:\n   kiln run-task myapp --command \"bundle exec rake db:migrate\" --name migrate\n   kiln run-task myapp --process web -m 512M"
    )]
    RunTask(RunTaskArgs),
    /// List an app's tasks
    Tasks(AppArgs),
    /// Cancel a running task of an app
    #[command(after_help = "EXAMPLE:\n   kiln terminate-task myapp 3")]
    TerminateTask(TerminateTaskArgs),
    /// Show an app's recent events (audit events)
    Events(AppArgs),
    /// Show an app's logs (follows them until Ctrl-C unless --recent)
    Logs(LogsArgs),
    /// Make an authenticated request to the API and print the answer
    Curl(CurlArgs),
    /// Make a user-provided service instance available to apps
    #[command(
        visible_alias = "cups",
        after_help = "EXAMPLES:\n   kiln cups mydb -p '{\"user\":\"admin\",\"password\":\"s3cret\"}' -t pg,sql\n   kiln cups mydb -p host,port   # prompts for each\n   kiln cups logs -l syslog://logs.example.com:514"
    )]
    CreateUserProvidedService(UserProvidedArgs),
    /// Update a user-provided service instance (restage bound apps to apply)
    #[command(visible_alias = "uups")]
    UpdateUserProvidedService(UserProvidedArgs),
    /// List the service instances in the targeted space
    #[command(visible_alias = "s")]
    Services,
    /// Show a service instance and the apps bound to it
    Service(ServiceArgs),
    /// Bind a service instance to an app (restage or restart it to apply)
    #[command(visible_alias = "bs")]
    BindService(BindArgs),
    /// Unbind a service instance from an app
    #[command(visible_alias = "us")]
    UnbindService(UnbindArgs),
    /// Delete a service instance and its bindings
    #[command(visible_alias = "ds")]
    DeleteService(DeleteServiceArgs),
    /// Define a new quota for organizations
    #[command(after_help = "EXAMPLE:\n   kiln create-org-quota small -m 2G -i 512M -r 10 -a 8")]
    CreateOrgQuota(CreateOrgQuotaArgs),
    /// List the organization quotas
    OrgQuotas,
    /// Assign a quota to an org
    SetOrgQuota(SetOrgQuotaArgs),
    /// Define a new quota for spaces of the targeted org
    #[command(after_help = "EXAMPLE:\n   kiln create-space-quota small -m 1G -i 256M -r 5 -a 4")]
    CreateSpaceQuota(CreateSpaceQuotaArgs),
    /// List the targeted org's space quotas
    SpaceQuotas,
    /// Show a space quota's limits
    SpaceQuota(SpaceQuotaArgs),
    /// Change a space quota's limits or name (-1: unlimited)
    UpdateSpaceQuota(UpdateSpaceQuotaArgs),
    /// Assign a space quota to a space
    SetSpaceQuota(SetSpaceQuotaArgs),
    /// Remove a space quota from a space
    UnsetSpaceQuota(SetSpaceQuotaArgs),
    /// Delete a space quota (no space may have it)
    DeleteSpaceQuota(DeleteSpaceQuotaArgs),
    /// Download an app's droplet (its current one unless --droplet)
    #[command(after_help = "EXAMPLE:\n   kiln download-droplet hello --path /tmp")]
    DownloadDroplet(DownloadDropletArgs),
    /// Create a private domain for an org
    #[command(after_help = "EXAMPLE:\n   kiln create-private-domain my-org example.com")]
    CreatePrivateDomain(OrgDomainArgs),
    /// Create a domain every org can use (admins)
    #[command(after_help = "EXAMPLE:\n   kiln create-shared-domain example.com")]
    CreateSharedDomain(CreateSharedDomainArgs),
    /// Delete a private domain (and its routes)
    DeletePrivateDomain(DeleteDomainArgs),
    /// Delete a shared domain (and its routes)
    DeleteSharedDomain(DeleteDomainArgs),
    /// Share a private domain with another org
    #[command(after_help = "EXAMPLE:\n   kiln share-private-domain other-org example.com")]
    SharePrivateDomain(OrgDomainArgs),
    /// Stop sharing a private domain with an org
    UnsharePrivateDomain(OrgDomainArgs),
    /// Say whether a route exists
    #[command(after_help = "EXAMPLE:\n   kiln check-route shop example.com --path /api")]
    CheckRoute(CheckRouteArgs),
}

#[derive(Args, Debug, Clone)]
pub struct AppArgs {
    /// The app's name
    pub name: String,
}

#[derive(Args, Debug, Clone)]
pub struct RestartArgs {
    /// The app's name
    pub name: String,
    #[command(flatten)]
    pub deploy: deployments::StrategyArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ContinueArgs {
    /// The app's name
    pub name: String,
    /// Do not wait for the deployment to finish
    #[arg(long = "no-wait")]
    pub no_wait: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DeleteArgs {
    /// The app's name
    pub name: String,
    /// Do not ask for confirmation
    #[arg(short = 'f')]
    pub force: bool,
    /// Also delete the routes mapped to the app
    #[arg(short = 'r')]
    pub routes: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ScaleArgs {
    /// The app's name
    pub name: String,
    /// Number of instances
    #[arg(short = 'i')]
    pub instances: Option<u32>,
    /// Memory limit, e.g. 256M or 1G (restarts the app)
    #[arg(short = 'm', value_parser = push::parse_megabytes)]
    pub memory: Option<u64>,
    /// Disk limit, e.g. 1G (restarts the app)
    #[arg(short = 'k', value_parser = push::parse_megabytes)]
    pub disk: Option<u64>,
    /// Do not ask before restarting
    #[arg(short = 'f')]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RenameArgs {
    /// The app's current name
    pub name: String,
    /// The new name
    pub new_name: String,
}

#[derive(Args, Debug, Clone)]
pub struct SetEnvArgs {
    /// The app's name
    pub name: String,
    /// The variable's name
    pub var: String,
    /// The variable's value
    pub value: String,
}

#[derive(Args, Debug, Clone)]
pub struct UnsetEnvArgs {
    /// The app's name
    pub name: String,
    /// The variable's name
    pub var: String,
}

#[derive(Args, Debug, Clone)]
pub struct MapRouteArgs {
    /// The app's name
    pub app: String,
    #[command(flatten)]
    pub route: RouteArgs,
}

#[derive(Args, Debug, Clone)]
pub struct DeleteRouteArgs {
    #[command(flatten)]
    pub route: RouteArgs,
    /// Do not ask for confirmation
    #[arg(short = 'f')]
    pub force: bool,
}

const PUSH_EXAMPLES: &str = "EXAMPLES:
   kiln push                                  # every app of ./manifest.yml
   kiln push -f deploy/manifest.yml --vars-file prod.yml --var release=42
   kiln push myapp                            # only myapp of ./manifest.yml
   kiln push myapp -p ./build -b python -i 2 -m 512M --no-manifest
   kiln push myapp --strategy rolling         # new instances start before old ones stop";

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
        Command::UpdateBuildpack(a) => buildpacks::update(&mut session(home)?, a).await,
        Command::DeleteBuildpack(a) => buildpacks::delete(&mut session(home)?, a).await,
        Command::Push(args) => push::push(&mut session(home)?, *args).await,
        Command::Apps => app::apps(&mut session(home)?).await,
        Command::App(args) => app::app(&mut session(home)?, &args.name).await,
        Command::Start(args) => app::start(&mut session(home)?, &args.name).await,
        Command::Stop(args) => app::stop(&mut session(home)?, &args.name).await,
        Command::Restart(args) => {
            let mut client = session(home)?;
            match args.deploy.strategy {
                Some(_) => deployments::restart(&mut client, &args.name, &args.deploy).await,
                None => app::restart(&mut client, &args.name).await,
            }
        }
        Command::CancelDeployment(args) => {
            deployments::cancel(&mut session(home)?, &args.name).await
        }
        Command::ContinueDeployment(a) => {
            deployments::continue_(&mut session(home)?, &a.name, a.no_wait).await
        }
        Command::Restage(args) => push::restage(&mut session(home)?, &args.name).await,
        Command::Scale(a) => {
            let mut client = session(home)?;
            app::scale(&mut client, &a.name, a.instances, a.memory, a.disk, a.force).await
        }
        Command::Rename(args) => app::rename(&mut session(home)?, &args.name, &args.new_name).await,
        Command::Delete(args) => {
            app::delete(&mut session(home)?, &args.name, args.force, args.routes).await
        }
        Command::Env(args) => env::show(&mut session(home)?, &args.name).await,
        Command::SetEnv(a) => env::set(&mut session(home)?, &a.name, &a.var, &a.value).await,
        Command::UnsetEnv(a) => env::unset(&mut session(home)?, &a.name, &a.var).await,
        Command::Routes => routes::list(&mut session(home)?).await,
        Command::CreateRoute(args) => routes::create_route(&mut session(home)?, args).await,
        Command::DeleteRoute(a) => {
            routes::delete_route(&mut session(home)?, a.route, a.force).await
        }
        Command::MapRoute(a) => routes::map_route(&mut session(home)?, &a.app, a.route).await,
        Command::UnmapRoute(a) => routes::unmap_route(&mut session(home)?, &a.app, a.route).await,
        Command::Domains => platform::domains(&mut session(home)?).await,
        Command::Stacks => platform::stacks(&mut session(home)?).await,
        Command::Orgs => platform::orgs(&mut session(home)?).await,
        Command::Spaces => platform::spaces(&mut session(home)?).await,
        Command::CreateUser(a) => users::create_user(&mut session(home)?, a).await,
        Command::SetOrgRole(a) => users::set_org_role(&mut session(home)?, a).await,
        Command::SetSpaceRole(a) => users::set_space_role(&mut session(home)?, a).await,
        Command::SpaceUsers(a) => users::space_users(&mut session(home)?, a).await,
        Command::SshEnabled(a) => ssh::ssh_enabled(&mut session(home)?, &a.name).await,
        Command::EnableSsh(a) => ssh::set(&mut session(home)?, &a.name, true).await,
        Command::DisableSsh(a) => ssh::set(&mut session(home)?, &a.name, false).await,
        Command::Version => {
            platform::version();
            Ok(())
        }
        Command::RunTask(args) => tasks::run_task(&mut session(home)?, args).await,
        Command::Tasks(args) => tasks::tasks(&mut session(home)?, &args.name).await,
        Command::TerminateTask(args) => tasks::terminate(&mut session(home)?, args).await,
        Command::Events(args) => tasks::events(&mut session(home)?, &args.name).await,
        Command::Logs(args) => app::show_logs(&mut session(home)?, &args.name, args.recent).await,
        Command::Curl(args) => curl::curl(&mut session(home)?, args).await,
        Command::CreateUserProvidedService(a) => services::create(&mut session(home)?, a).await,
        Command::UpdateUserProvidedService(a) => services::update(&mut session(home)?, a).await,
        Command::Services => services::list(&mut session(home)?).await,
        Command::Service(a) => services::show(&mut session(home)?, &a.name).await,
        Command::BindService(a) => services::bind(&mut session(home)?, a).await,
        Command::UnbindService(a) => services::unbind(&mut session(home)?, a).await,
        Command::DeleteService(a) => services::delete(&mut session(home)?, a).await,
        Command::CreateOrgQuota(a) => quotas::create(&mut session(home)?, a).await,
        Command::OrgQuotas => quotas::list(&mut session(home)?).await,
        Command::SetOrgQuota(a) => quotas::set(&mut session(home)?, a).await,
        Command::CreateSpaceQuota(a) => space_quotas::create(&mut session(home)?, a).await,
        Command::SpaceQuotas => space_quotas::list(&mut session(home)?).await,
        Command::SpaceQuota(a) => space_quotas::show(&mut session(home)?, a).await,
        Command::UpdateSpaceQuota(a) => space_quotas::update(&mut session(home)?, a).await,
        Command::SetSpaceQuota(a) => space_quotas::set(&mut session(home)?, a).await,
        Command::UnsetSpaceQuota(a) => space_quotas::unset(&mut session(home)?, a).await,
        Command::DeleteSpaceQuota(a) => space_quotas::delete(&mut session(home)?, a).await,
        Command::DownloadDroplet(a) => droplets::download(&mut session(home)?, a).await,
        Command::CreatePrivateDomain(a) => domains::create_private(&mut session(home)?, a).await,
        Command::CreateSharedDomain(a) => domains::create_shared(&mut session(home)?, a).await,
        Command::DeletePrivateDomain(a) => domains::delete(&mut session(home)?, a, true).await,
        Command::DeleteSharedDomain(a) => domains::delete(&mut session(home)?, a, false).await,
        Command::SharePrivateDomain(a) => domains::share(&mut session(home)?, a).await,
        Command::UnsharePrivateDomain(a) => domains::unshare(&mut session(home)?, a).await,
        Command::CheckRoute(a) => domains::check_route(&mut session(home)?, a).await,
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
            "--no-manifest",
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
        let docker =
            Cli::try_parse_from(["kiln", "push", "x", "-o", "r/i:1", "--docker-username", "u"])
                .unwrap();
        let Command::Push(d) = docker.command else {
            panic!("not a push")
        };
        assert_eq!(
            (d.docker_image.as_deref(), d.docker_username.as_deref()),
            (Some("r/i:1"), Some("u"))
        );
        for bad in [
            &["kiln", "push", "x", "-o", "i", "-p", "."][..],
            &["kiln", "push", "x", "-o", "i", "-b", "python"],
            &["kiln", "push", "x", "--docker-username", "u"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        let restart = Cli::try_parse_from([
            "kiln",
            "restart",
            "x",
            "--strategy",
            "rolling",
            "--max-in-flight",
            "2",
        ])
        .unwrap();
        let Command::Restart(r) = restart.command else {
            panic!("not a restart")
        };
        assert_eq!(r.deploy.strategy.as_deref(), Some("rolling"));
        assert_eq!(r.deploy.max_in_flight, Some(2));
        let push = Cli::try_parse_from(["kiln", "push", "x", "--strategy", "canary"]).unwrap();
        assert!(
            matches!(push.command, Command::Push(a) if a.deploy.strategy.as_deref() == Some("canary"))
        );
        for bad in [
            &["kiln", "restart", "x", "--strategy", "blue-green"][..],
            &["kiln", "restart", "x", "--max-in-flight", "2"],
            &[
                "kiln",
                "push",
                "x",
                "--strategy",
                "rolling",
                "--max-in-flight",
                "0",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        let task = Cli::try_parse_from([
            "kiln",
            "run-task",
            "x",
            "--command",
            "rake",
            "--name",
            "m",
            "-m",
            "1G",
            "-k",
            "512M",
        ])
        .unwrap();
        let Command::RunTask(t) = task.command else {
            panic!("not a run-task")
        };
        assert_eq!(
            (
                t.command.as_deref(),
                t.task_name.as_deref(),
                t.memory,
                t.disk
            ),
            (Some("rake"), Some("m"), Some(1024), Some(512))
        );
        assert!(Cli::try_parse_from(["kiln", "terminate-task", "x"]).is_err());
        let bp = Cli::try_parse_from(["kiln", "create-buildpack", "py", "dir", "1", "--disable"])
            .unwrap();
        assert!(matches!(bp.command, Command::CreateBuildpack(a) if a.disable && a.position == 1));
        let up = Cli::try_parse_from([
            "kiln",
            "update-buildpack",
            "py",
            "-i",
            "2",
            "--disable",
            "--lock",
            "--rename",
            "py2",
        ])
        .unwrap();
        let Command::UpdateBuildpack(u) = up.command else {
            panic!("not an update-buildpack")
        };
        assert_eq!(
            (u.position, u.disable, u.lock, u.rename.as_deref()),
            (Some(2), true, true, Some("py2"))
        );
        for bad in [
            &["kiln", "update-buildpack", "py", "--enable", "--disable"][..],
            &["kiln", "update-buildpack", "py", "--lock", "--unlock"],
            &[
                "kiln",
                "update-buildpack",
                "py",
                "-s",
                "a",
                "--assign-stack",
                "b",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        let del = Cli::try_parse_from(["kiln", "delete-buildpack", "py", "-f"]).unwrap();
        assert!(matches!(del.command, Command::DeleteBuildpack(a) if a.force));
        for verb in [
            "login",
            "logout",
            "target",
            "create-buildpack",
            "buildpacks",
            "update-buildpack",
            "delete-buildpack",
            "push",
            "apps",
            "app",
            "start",
            "stop",
            "delete",
            "logs",
            "curl",
            "restart",
            "cancel-deployment",
            "continue-deployment",
            "restage",
            "scale",
            "rename",
            "env",
            "set-env",
            "unset-env",
            "routes",
            "create-route",
            "delete-route",
            "map-route",
            "unmap-route",
            "domains",
            "create-private-domain",
            "create-shared-domain",
            "delete-private-domain",
            "delete-shared-domain",
            "share-private-domain",
            "unshare-private-domain",
            "check-route",
            "stacks",
            "orgs",
            "spaces",
            "version",
            "ssh-enabled",
            "enable-ssh",
            "disable-ssh",
            "run-task",
            "tasks",
            "terminate-task",
            "events",
        ] {
            let help = Cli::try_parse_from(["kiln", verb, "--help"]).err().unwrap();
            assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp, "{verb}");
        }
    }
}

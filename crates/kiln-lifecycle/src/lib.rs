//! What runs inside Kiln's containers: `kiln lifecycle builder` stages an
//! app with buildpacks in the staging container, and `kiln lifecycle
//! launcher` starts an app instance from its droplet. Together they play
//! Cloud Foundry's buildpackapplifecycle (`builder` and `launcher`), with
//! the same flags, directory layout, buildpack contract and exit codes.
//!
//! Architecture invariant: this crate depends on no Kiln crate but
//! `kiln-model`, starts no async runtime and opens no database. It is plain
//! blocking std code, because it runs as the container's process: the
//! `kiln` binary dispatches `lifecycle` to [`run`] before building anything
//! else.

mod archive;
pub mod builder;
mod buildpack;
pub mod console;
mod env;
pub mod launcher;
pub mod process_types;

pub use builder::{BuilderArgs, BuilderError};
pub use console::Console;
pub use launcher::{LauncherArgs, LauncherError};

/// `kiln lifecycle <builder|launcher>`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum LifecycleCommand {
    /// Stage an app with buildpacks (inside the staging container)
    Builder(BuilderArgs),
    /// Start an app instance from its droplet (inside the instance container)
    Launcher(LauncherArgs),
}

/// Run a lifecycle program; returns its exit code. The launcher replaces
/// the process with the app, so it only returns when that fails.
pub fn run(command: LifecycleCommand) -> i32 {
    match command {
        LifecycleCommand::Builder(args) => {
            let console = Console::stdio();
            match builder::build(&args, &console) {
                Ok(_) => 0,
                Err(error) => {
                    console.warn(&error.report());
                    error.failure().exit_code()
                }
            }
        }
        LifecycleCommand::Launcher(args) => {
            let error = launcher::launch(&args);
            eprintln!("launcher: {error}");
            error.exit_code()
        }
    }
}

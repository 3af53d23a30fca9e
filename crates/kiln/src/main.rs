//! The one `kiln` binary: `kiln server` (the platform's roles), `kiln
//! lifecycle ...` (the programs that run inside containers) and the user's
//! verbs (`kiln login`, `kiln push`, ...).
//!
//! Architecture invariant: no domain logic lives here. `main` parses the
//! command line once, dispatches `lifecycle` before anything else (it runs
//! inside a container: no runtime, no log files, no server config), and
//! otherwise builds one tokio runtime for the server or the CLI.

mod config;
mod migrate;
mod server;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// jemalloc, with its background thread: memory freed after a burst (the
/// router's connections and buffers under load) goes back to the system
/// within seconds. glibc's malloc kept it in its per-thread arenas (68 MB
/// after a load, 66 MB ten seconds later, in `bench/router-proxy.sh`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "A Cloud Foundry-compatible application platform in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the platform: API, BBS, cell, router and logs, in one process
    /// (or some of these roles, joining the others)
    Server(Box<config::ServerArgs>),
    /// Move a single-machine platform's databases and blobs to PostgreSQL
    /// and S3 (with the server stopped)
    Migrate(migrate::MigrateArgs),
    /// The BBS's credentials: tokens for cells, key rotation
    #[command(subcommand)]
    Bbs(config::BbsCommand),
    /// Programs that run inside containers (builder, launcher)
    #[command(subcommand, hide = true)]
    Lifecycle(kiln_lifecycle::LifecycleCommand),
    #[command(flatten)]
    User(kiln_cli::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Lifecycle(command) => {
            let code = kiln_lifecycle::run(command);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Command::Server(args) => {
            init_tracing("info");
            let result = runtime().and_then(|rt| rt.block_on(server::run(*args)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("kiln server: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Migrate(args) => {
            init_tracing("warn");
            let result = runtime().and_then(|rt| rt.block_on(migrate::run(args)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("kiln migrate: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bbs(command) => match command.run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("kiln bbs: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::User(command) => {
            die_quietly_on_broken_pipe();
            init_tracing("warn");
            let result = runtime().and_then(|rt| rt.block_on(kiln_cli::run(command)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("FAILED\n{error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// A verb whose output pipe closes early (`kiln curl /v3/apps | head`)
/// ends quietly, as other Unix tools do. Rust ignores SIGPIPE so that a
/// server sees EPIPE as an error; for the CLI that turns into a panic in
/// `println!`, so the default disposition is restored, for verbs only.
#[allow(unsafe_code)]
fn die_quietly_on_broken_pipe() {
    // SAFETY: called on the main thread before any other thread exists;
    // it changes only how this process reacts to SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Logs go to stderr; `RUST_LOG` overrides the default level.
fn init_tracing(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

//! End to end, as a user does it: the real `kiln` binary runs the server
//! (real SQLite, blobstore on disk, real runc containers, real router), and
//! the same binary as the CLI logs in, creates buildpacks and pushes apps;
//! then the apps are reached over HTTP through the router. The server is
//! killed with SIGKILL and started again, and nothing is lost.
//!
//! One module per capability, each test a user's whole story with it;
//! `support` holds the server, the CLI and the clean-up they all use.
//!
//! Needs root and runc. Without them it skips with a loud message, unless
//! `KILN_REQUIRE_RUNC=1` (CI sets it), where it fails instead.

mod buildpacks;
mod cells;
mod cluster;
mod compat;
mod docker;
mod docker_failures;
mod manifests;
mod push;
mod rolling;
mod storage;
mod support;
mod tasks;

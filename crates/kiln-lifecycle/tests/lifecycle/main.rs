//! The crate's one integration test binary: the builder with real bash
//! buildpacks, the launcher's command spawned for real, and the command
//! line as Task and LRP definitions spell it.

mod builder;
mod cli;
mod launcher;
mod support;

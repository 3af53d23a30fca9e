//! kiln-cell's integration tests, one binary: the stack, the runc runtime,
//! and the cell end to end (tasks, LRP instances, restarts) against the
//! real in-process BBS, real HTTP on 127.0.0.1 and real runc. Tests that
//! need root and runc skip loudly without them, or fail when
//! `KILN_REQUIRE_RUNC=1`.

mod full_disk;
mod limits;
mod lrps;
mod network;
mod runtime;
mod stack;
mod support;
mod tasks;

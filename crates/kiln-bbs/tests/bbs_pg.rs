//! The BBS suite of `tests/bbs.rs` again, with the BBS database on a real
//! PostgreSQL server (a fresh database per test) instead of a SQLite file:
//! `bbs.rs` tells the two binaries apart by crate name.

#[path = "bbs.rs"]
mod bbs;

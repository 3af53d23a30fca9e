//! The integration suite of `tests/it` again, with the CCDB and the BBS
//! database on a real PostgreSQL server (a fresh database per test) and
//! blobs in a real S3 server (moto, a fresh bucket per test) instead of
//! SQLite files and a blob directory: `it/main.rs` tells the two binaries
//! apart by crate name.

#[path = "it/main.rs"]
mod it;

//! Kiln's BBS: Diego's bulletin board.
//!
//! Owns desired versus actual state for LRPs and tasks, placement of work on
//! cells (the auctioneer) and convergence. It sees process guids, domains
//! and actions, exactly like Diego; it knows nothing of apps, spaces or
//! buildpacks.

pub mod client;

pub use client::{ActualLrpFilter, BbsClient, BbsError};

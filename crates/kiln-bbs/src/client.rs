//! **API Boundary.** The `BbsClient` trait, its filter and its closed error
//! live in `kiln-bbs-client`, so roles outside this process need not link
//! the BBS's storage; they are re-exported here for the API's convenience.

pub use kiln_bbs_client::{ActualLrpFilter, BbsClient, BbsError};

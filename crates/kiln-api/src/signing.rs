//! Signed URLs for cells, like Cloud Controller's signed blobstore URLs: an
//! HMAC-SHA256 over method, path and expiry with the API's signing key, so
//! a cell can fetch or store exactly one blob until the URL expires,
//! without credentials of its own.

use crate::Ctx;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Margin added to the staging timeout for signed staging URLs.
pub const EXPIRY_MARGIN_SECS: i64 = 10 * 60;
/// Droplet downloads in DesiredLrps must keep working for as long as the
/// LRP runs (instances restart at any time), so they expire far away.
pub const LRP_URL_SECS: i64 = 10 * 365 * 24 * 3600;

fn mac(key: &[u8], method: &str, path: &str, expires: i64) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(format!("{method}\n{path}\n{expires}").as_bytes());
    mac
}

/// An absolute signed URL for `method` on `path`, valid `ttl_secs`.
pub fn sign(ctx: &Ctx, method: &str, path: &str, ttl_secs: i64) -> String {
    let expires = crate::util::unix_now() + ttl_secs;
    let signature = hex::encode(
        mac(&ctx.signing_key, method, path, expires)
            .finalize()
            .into_bytes(),
    );
    format!("{}{path}?expires={expires}&signature={signature}", ctx.base)
}

/// How long staging URLs live.
pub fn staging_ttl(ctx: &Ctx) -> i64 {
    (ctx.config.staging_timeout_ms / 1000) as i64 + EXPIRY_MARGIN_SECS
}

/// Checks `?expires=&signature=` for `method` on `path`.
pub fn verify(ctx: &Ctx, method: &str, path: &str, query: Option<&str>) -> bool {
    let pairs = crate::web::parse_query(query.unwrap_or(""));
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let (Some(expires), Some(signature)) = (get("expires"), get("signature")) else {
        return false;
    };
    let Ok(expires) = expires.parse::<i64>() else {
        return false;
    };
    if expires < crate::util::unix_now() {
        return false;
    }
    let Ok(signature) = hex::decode(signature) else {
        return false;
    };
    mac(&ctx.signing_key, method, path, expires)
        .verify_slice(&signature)
        .is_ok()
}

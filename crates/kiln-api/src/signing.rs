//! Signed URLs for cells, like Cloud Controller's signed blobstore URLs: an
//! HMAC-SHA256 over method, path and expiry with the API's signing key, so
//! a cell can fetch or store exactly one blob until the URL expires,
//! without credentials of its own.

use crate::context::Ctx;
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

/// `<base><path>?expires=<expires>&signature=<hex hmac>`.
fn signed_url(key: &[u8], base: &str, method: &str, path: &str, expires: i64) -> String {
    let signature = hex::encode(mac(key, method, path, expires).finalize().into_bytes());
    format!("{base}{path}?expires={expires}&signature={signature}")
}

/// Whether `query` carries a signature of `method` on `path` by `key` that
/// has not expired at `now` (unix seconds).
fn verify_at(key: &[u8], method: &str, path: &str, query: Option<&str>, now: i64) -> bool {
    let pairs = crate::util::parse_query(query.unwrap_or(""));
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
    if expires < now {
        return false;
    }
    let Ok(signature) = hex::decode(signature) else {
        return false;
    };
    mac(key, method, path, expires)
        .verify_slice(&signature)
        .is_ok()
}

/// An absolute signed URL for `method` on `path`, valid `ttl_secs`.
pub fn sign(ctx: &Ctx, method: &str, path: &str, ttl_secs: i64) -> String {
    let expires = crate::util::unix_now() + ttl_secs;
    signed_url(&ctx.signing_key, &ctx.base, method, path, expires)
}

/// How long staging URLs live.
pub fn staging_ttl(ctx: &Ctx) -> i64 {
    (crate::config::staging_timeout_ms(&ctx.config) / 1000) as i64 + EXPIRY_MARGIN_SECS
}

/// Checks `?expires=&signature=` for `method` on `path`.
pub fn verify(ctx: &Ctx, method: &str, path: &str, query: Option<&str>) -> bool {
    verify_at(
        &ctx.signing_key,
        method,
        path,
        query,
        crate::util::unix_now(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"test signing key";
    const PATH: &str = "/internal/v4/droplets/d1/download";

    fn query_of(url: &str) -> &str {
        url.split_once('?').unwrap().1
    }

    #[test]
    fn a_signed_url_holds_until_it_expires() {
        let url = signed_url(KEY, "http://127.0.0.1:9022", "GET", PATH, 1_000);
        assert!(url.starts_with("http://127.0.0.1:9022/internal/v4/droplets/d1/download?"));
        let q = Some(query_of(&url));
        assert!(verify_at(KEY, "GET", PATH, q, 999));
        assert!(verify_at(KEY, "GET", PATH, q, 1_000));
        assert!(!verify_at(KEY, "GET", PATH, q, 1_001), "expired");
    }

    #[test]
    fn a_signature_binds_key_method_path_and_expiry() {
        let url = signed_url(KEY, "", "GET", PATH, 1_000);
        let q = query_of(&url);
        assert!(!verify_at(b"another key", "GET", PATH, Some(q), 0));
        assert!(!verify_at(KEY, "POST", PATH, Some(q), 0));
        assert!(!verify_at(
            KEY,
            "GET",
            "/internal/v4/droplets/d2/download",
            Some(q),
            0
        ));
        // Pushing the expiry out invalidates the signature.
        let later = q.replace("expires=1000", "expires=9999");
        assert!(!verify_at(KEY, "GET", PATH, Some(&later), 0));
        assert!(!verify_at(KEY, "GET", PATH, None, 0));
        assert!(!verify_at(KEY, "GET", PATH, Some("expires=1000"), 0));
        assert!(!verify_at(
            KEY,
            "GET",
            PATH,
            Some("expires=1000&signature=zz"),
            0
        ));
    }
}

//! Small shared helpers: guids, timestamps, randomness, absolute links.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Now as RFC 3339 UTC with second precision (`2026-01-02T03:04:05Z`).
pub fn now() -> String {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Unix seconds of a timestamp written by [`now`].
pub fn parse_time(rfc3339: &str) -> Option<i64> {
    OffsetDateTime::parse(rfc3339, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

pub fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    // The OS RNG failing leaves no safe way to continue.
    getrandom::fill(&mut buf).expect("the operating system random number generator failed");
    buf
}

/// `n` random alphanumeric characters.
pub fn random_password(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    random_bytes(n * 2)
        .chunks(2)
        .map(|c| {
            let v = u16::from_le_bytes([c[0], c[1]]) as usize;
            ALPHABET[v % ALPHABET.len()] as char
        })
        .collect()
}

/// `{"href": "<base><path>"}`.
pub fn link(base: &str, path: &str) -> serde_json::Value {
    serde_json::json!({ "href": format!("{base}{path}") })
}

/// `{"href": .., "method": ..}`.
pub fn link_method(base: &str, path: &str, method: &str) -> serde_json::Value {
    serde_json::json!({ "href": format!("{base}{path}"), "method": method })
}

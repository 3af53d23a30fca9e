//! Small shared helpers: guids, timestamps, randomness, absolute links.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
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

/// `application/x-www-form-urlencoded` pairs (a query string or form body).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn hash_password(password: &str) -> crate::error::ApiResult<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| crate::error::ApiError::Internal(format!("hashing the password: {e}")))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

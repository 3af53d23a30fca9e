//! Who may talk to the BBS server: holders of a token signed with the
//! BBS's key. Diego uses mutual TLS for this; Kiln signs bearer tokens so
//! that one credentials file is all a joining node needs, and a stolen
//! token can be made to expire without changing the key:
//!
//! - `kbbs1.<expires>.<hex hmac-sha256>`: any node (the all-in-one
//!   credentials file; expiry 0 for none);
//! - `kbbs2.<expires>.<subject>.<hex hmac-sha256>`: one node
//!   (`kiln bbs issue-token --cell-id X --ttl 24h`); a cell may act only
//!   for the cell id it names.
//!
//! The key stays in `<data-dir>/bbs/key` on the BBS's machine; the
//! credentials file a node receives holds only a token, so a node cannot
//! mint tokens of its own. `kiln bbs rotate-key --grace 1h` replaces the
//! key and keeps the old one in `retired-keys`, accepted until the grace
//! period ends, so cells that hold tokens signed by it keep working while
//! they are given new ones; the running server notices both files change.

use hmac::{Hmac, KeyInit, Mac};
use kiln_bbs_client::Credentials;
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const PREFIX_ANY: &str = "kbbs1";
const PREFIX_ONE: &str = "kbbs2";
const KEY_FILE: &str = "key";
const RETIRED_FILE: &str = "retired-keys";
const CREDENTIALS_FILE: &str = "credentials";

/// Why a token was refused, in words for the refused node's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    Expired,
    Forged,
    /// Signed by a key whose grace period after a rotation is over.
    KeyRetired,
    /// A token for one cell used to act for another.
    WrongCell,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Missing => "no bbs credentials sent (Authorization: Bearer <token>)",
            Refusal::Malformed => "the bbs token is malformed",
            Refusal::Expired => {
                "the bbs token has expired; get new credentials (kiln bbs issue-token)"
            }
            Refusal::Forged => "the bbs token was not signed by this bbs",
            Refusal::KeyRetired => {
                "the bbs token was signed by a key this bbs has rotated out; get new credentials (kiln bbs issue-token)"
            }
            Refusal::WrongCell => "the bbs token was issued for another cell",
        })
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The node the token was issued for; `None`: any node.
    pub subject: Option<String>,
    /// Unix seconds; 0: never.
    pub expires: i64,
}

/// A token taken apart, before its signature is checked.
struct Parsed<'t> {
    payload: &'t str,
    subject: Option<&'t str>,
    expires: i64,
    signature: Vec<u8>,
}

fn parse(token: &str) -> Result<Parsed<'_>, Refusal> {
    let (payload, signature) = token.rsplit_once('.').ok_or(Refusal::Malformed)?;
    let parts: Vec<&str> = payload.split('.').collect();
    let (expires, subject) = match parts.as_slice() {
        [PREFIX_ANY, expires] => (*expires, None),
        [PREFIX_ONE, expires, subject] if valid_subject(subject) => (*expires, Some(*subject)),
        _ => return Err(Refusal::Malformed),
    };
    Ok(Parsed {
        payload,
        subject,
        expires: expires.parse().map_err(|_| Refusal::Malformed)?,
        signature: hex::decode(signature).map_err(|_| Refusal::Malformed)?,
    })
}

/// A subject is a cell id: letters, digits, `-` and `_`.
fn valid_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The node a (valid) token names, read without checking it again: the
/// server's authentication has checked it already.
pub fn token_subject(token: &str) -> Option<&str> {
    parse(token).ok().and_then(|p| p.subject)
}

/// The BBS's signing key.
#[derive(Clone)]
pub struct BbsKey(Vec<u8>);

impl BbsKey {
    pub fn from_bytes(bytes: &[u8]) -> BbsKey {
        BbsKey(bytes.to_vec())
    }

    pub fn generate() -> BbsKey {
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).expect("the operating system random number generator failed");
        BbsKey(key)
    }

    fn sign(&self, payload: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("hmac takes any key length");
        mac.update(payload.as_bytes());
        format!("{payload}.{}", hex::encode(mac.finalize().into_bytes()))
    }

    fn signed(&self, parsed: &Parsed<'_>) -> bool {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("hmac takes any key length");
        mac.update(parsed.payload.as_bytes());
        mac.verify_slice(&parsed.signature).is_ok()
    }

    /// A token for any node, valid until `expires` (unix seconds; 0: no
    /// expiry).
    pub fn issue(&self, expires: i64) -> String {
        self.sign(&format!("{PREFIX_ANY}.{expires}"))
    }

    /// A token for one node (a cell id), valid until `expires`.
    pub fn issue_for(&self, subject: &str, expires: i64) -> Result<String, String> {
        if !valid_subject(subject) {
            return Err(format!(
                "{subject:?} is not a cell id (letters, digits, '-' and '_')"
            ));
        }
        Ok(self.sign(&format!("{PREFIX_ONE}.{expires}.{subject}")))
    }

    pub fn verify(&self, token: &str, now: i64) -> Result<Verified, Refusal> {
        KeyRing::single(self.clone()).verify(token, now)
    }

    fn hex(&self) -> String {
        hex::encode(&self.0)
    }

    fn from_hex(text: &str, path: &Path) -> std::io::Result<BbsKey> {
        hex::decode(text.trim()).map(BbsKey).map_err(|e| {
            std::io::Error::other(format!(
                "{} holds a key that is not hex: {e}",
                path.display()
            ))
        })
    }
}

/// The current key and the rotated-out ones still inside their grace
/// period (each with the unix second it ends).
#[derive(Clone)]
pub struct KeyRing {
    current: BbsKey,
    retired: Vec<(BbsKey, i64)>,
}

impl KeyRing {
    pub fn single(current: BbsKey) -> KeyRing {
        KeyRing {
            current,
            retired: Vec::new(),
        }
    }

    /// Checks the signature (an expiry the BBS never signed is a forgery)
    /// by the current key, then by the retired ones, then the expiry.
    pub fn verify(&self, token: &str, now: i64) -> Result<Verified, Refusal> {
        let parsed = parse(token)?;
        if !self.current.signed(&parsed) {
            let retired = self
                .retired
                .iter()
                .find(|(key, _)| key.signed(&parsed))
                .ok_or(Refusal::Forged)?;
            if retired.1 < now {
                return Err(Refusal::KeyRetired);
            }
        }
        if parsed.expires != 0 && parsed.expires < now {
            return Err(Refusal::Expired);
        }
        Ok(Verified {
            subject: parsed.subject.map(str::to_string),
            expires: parsed.expires,
        })
    }

    /// Reads `<dir>/key` and `<dir>/retired-keys` (lines of `<hex key>
    /// <grace end, unix seconds>`; absent: none).
    pub fn read(dir: &Path) -> std::io::Result<KeyRing> {
        let key_path = dir.join(KEY_FILE);
        let current = BbsKey::from_hex(&std::fs::read_to_string(&key_path)?, &key_path)?;
        let retired_path = dir.join(RETIRED_FILE);
        let retired = match std::fs::read_to_string(&retired_path) {
            Ok(text) => text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|line| {
                    let bad = || {
                        std::io::Error::other(format!(
                            "{}: a line is not '<hex key> <unix seconds>': {line:?}",
                            retired_path.display()
                        ))
                    };
                    let (key, until) = line.trim().split_once(' ').ok_or_else(bad)?;
                    let until: i64 = until.trim().parse().map_err(|_| bad())?;
                    Ok((BbsKey::from_hex(key, &retired_path)?, until))
                })
                .collect::<std::io::Result<Vec<_>>>()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(KeyRing { current, retired })
    }
}

/// The keys the server checks tokens with: fixed, or read from a
/// directory and read again whenever its key files change (a rotation
/// takes effect without a restart).
pub struct Keys {
    source: Option<PathBuf>,
    state: Mutex<(Arc<KeyRing>, Option<Stamp>)>,
}

/// The key files' modification times, to tell when they changed.
type Stamp = (Option<SystemTime>, Option<SystemTime>);

impl From<BbsKey> for Keys {
    fn from(key: BbsKey) -> Keys {
        Keys {
            source: None,
            state: Mutex::new((Arc::new(KeyRing::single(key)), None)),
        }
    }
}

impl Keys {
    pub fn from_dir(dir: &Path) -> std::io::Result<Keys> {
        let stamp = stamp(dir);
        Ok(Keys {
            source: Some(dir.to_path_buf()),
            state: Mutex::new((Arc::new(KeyRing::read(dir)?), Some(stamp))),
        })
    }

    /// The current ring, re-read first if the files changed (a stat of two
    /// files per request: far below the cost of the request itself). A
    /// file that cannot be read keeps the ring in use.
    pub fn ring(&self) -> Arc<KeyRing> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dir) = &self.source {
            let now = stamp(dir);
            if state.1 != Some(now) {
                match KeyRing::read(dir) {
                    Ok(ring) => {
                        tracing::info!(dir = %dir.display(), retired = ring.retired.len(), "bbs keys reloaded");
                        *state = (Arc::new(ring), Some(now));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "bbs keys changed but cannot be read; keeping the ones in use")
                    }
                }
            }
        }
        state.0.clone()
    }

    pub fn verify(&self, token: &str, now: i64) -> Result<Verified, Refusal> {
        self.ring().verify(token, now)
    }
}

fn stamp(dir: &Path) -> Stamp {
    let modified = |name| {
        std::fs::metadata(dir.join(name))
            .and_then(|m| m.modified())
            .ok()
    };
    (modified(KEY_FILE), modified(RETIRED_FILE))
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Writes `text` to `path` (mode 0600) through a scratch file and a rename,
/// so a reader sees the old file or the new one, never half of one.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let scratch = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&scratch)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&scratch, path)
}

/// Loads the key at `<dir>/key` and the credentials at `<dir>/credentials`,
/// creating both (mode 0600) on first start. `bbs_url` is written into the
/// credentials as the hint for joining nodes.
pub fn ensure_credentials(dir: &Path, bbs_url: &str) -> std::io::Result<(BbsKey, Credentials)> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let key_path = dir.join(KEY_FILE);
    let key = match std::fs::read_to_string(&key_path) {
        Ok(text) => BbsKey::from_hex(&text, &key_path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = BbsKey::generate();
            write_private(&key_path, &key.hex())?;
            key
        }
        Err(e) => return Err(e),
    };
    let credentials_path = dir.join(CREDENTIALS_FILE);
    // Kept while the current key signed it and it has not expired.
    let token = match Credentials::read(&credentials_path) {
        Ok(c)
            if KeyRing::single(key.clone())
                .verify(&c.token, unix_now())
                .is_ok() =>
        {
            c.token
        }
        _ => key.issue(0),
    };
    let credentials = Credentials {
        bbs_url: bbs_url.to_string(),
        token,
    };
    credentials
        .write(&credentials_path)
        .map_err(std::io::Error::other)?;
    Ok((key, credentials))
}

/// Credentials for one cell, valid for `ttl`, signed by the current key in
/// `dir` (a BBS's `<data-dir>/bbs`); the BBS's URL is taken from the
/// credentials file there.
pub fn issue_credentials(dir: &Path, cell_id: &str, ttl: Duration) -> std::io::Result<Credentials> {
    let ring = KeyRing::read(dir)?;
    let all = Credentials::read(&dir.join(CREDENTIALS_FILE)).map_err(std::io::Error::other)?;
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2).max(1);
    let token = ring
        .current
        .issue_for(cell_id, unix_now() + ttl)
        .map_err(std::io::Error::other)?;
    Ok(Credentials {
        bbs_url: all.bbs_url,
        token,
    })
}

/// Replaces the key in `dir` with a new one; the old one stays accepted for
/// `grace` (retired keys whose grace is over are dropped). The all-in-one
/// credentials file is re-issued under the new key. A running server picks
/// the change up on its next request.
pub fn rotate_key(dir: &Path, grace: Duration) -> std::io::Result<()> {
    let ring = KeyRing::read(dir)?;
    let now = unix_now();
    let until = now + i64::try_from(grace.as_secs()).unwrap_or(i64::MAX / 2);
    let mut retired: Vec<String> = ring
        .retired
        .iter()
        .filter(|(_, end)| *end >= now)
        .map(|(key, end)| format!("{} {end}\n", key.hex()))
        .collect();
    retired.push(format!("{} {until}\n", ring.current.hex()));
    // The old key is retired before the new one replaces it: a server that
    // reads between the two writes still accepts every token.
    write_private(&dir.join(RETIRED_FILE), &retired.concat())?;
    let key = BbsKey::generate();
    write_private(&dir.join(KEY_FILE), &key.hex())?;
    let credentials_path = dir.join(CREDENTIALS_FILE);
    if let Ok(mut credentials) = Credentials::read(&credentials_path) {
        credentials.token = key.issue(0);
        credentials
            .write(&credentials_path)
            .map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// `30s`, `90m`, `24h`, `7d`: a token's lifetime or a grace period.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 90m, 24h or 7d"))?;
    let seconds = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is one of s, m, h, d")),
    };
    if n == 0 {
        return Err(format!("{text:?}: a duration must be more than zero"));
    }
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_expire_and_resist_forgery() {
        let key = BbsKey::from_bytes(b"k1");
        let forever = key.issue(0);
        assert!(key.verify(&forever, 2_000_000_000).is_ok());
        let until = key.issue(1000);
        assert!(key.verify(&until, 999).is_ok());
        assert_eq!(key.verify(&until, 1001), Err(Refusal::Expired));
        // Pushing the expiry out breaks the signature.
        let stretched = until.replacen(".1000.", ".9999999999.", 1);
        assert_eq!(key.verify(&stretched, 1001), Err(Refusal::Forged));
        let other = BbsKey::from_bytes(b"k2").issue(0);
        assert_eq!(key.verify(&other, 0), Err(Refusal::Forged));
        for bad in [
            "",
            "kbbs1",
            "kbbs1.x.00",
            "kbbs1.0.zz",
            "x.0.00",
            "kbbs1.0.00.1",
            "kbbs2.0.00",
            "kbbs2.0.a b.00",
        ] {
            assert_eq!(key.verify(bad, 0), Err(Refusal::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn a_token_for_one_cell_names_it_and_its_subject_is_signed() {
        let key = BbsKey::from_bytes(b"k1");
        let token = key.issue_for("cell-7", 1000).unwrap();
        assert_eq!(
            key.verify(&token, 10),
            Ok(Verified {
                subject: Some("cell-7".into()),
                expires: 1000
            })
        );
        assert_eq!(token_subject(&token), Some("cell-7"));
        assert_eq!(key.verify(&token, 1001), Err(Refusal::Expired));
        let renamed = token.replacen("cell-7", "cell-8", 1);
        assert_eq!(key.verify(&renamed, 10), Err(Refusal::Forged));
        assert!(key.issue_for("a.b", 0).is_err());
        assert!(key.issue_for("", 0).is_err());
    }

    #[test]
    fn a_retired_key_is_accepted_until_its_grace_ends() {
        let old = BbsKey::from_bytes(b"old");
        let new = BbsKey::from_bytes(b"new");
        let ring = KeyRing {
            current: new.clone(),
            retired: vec![(old.clone(), 500)],
        };
        assert!(ring.verify(&new.issue(0), 600).is_ok());
        assert!(ring.verify(&old.issue(0), 499).is_ok());
        assert_eq!(ring.verify(&old.issue(0), 501), Err(Refusal::KeyRetired));
        assert_eq!(ring.verify(&old.issue(400), 450), Err(Refusal::Expired));
        let stranger = BbsKey::from_bytes(b"x");
        assert_eq!(ring.verify(&stranger.issue(0), 0), Err(Refusal::Forged));
    }

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "h", "0h", "5w", "-1h", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_are_made_once_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bbs = dir.path().join("bbs");
        let (key, first) = ensure_credentials(&bbs, "http://127.0.0.1:1").unwrap();
        assert!(key.verify(&first.token, 0).is_ok());
        for name in ["key", "credentials"] {
            let mode = std::fs::metadata(bbs.join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let (_, again) = ensure_credentials(&bbs, "http://127.0.0.1:2").unwrap();
        assert_eq!(again.token, first.token, "a restart keeps the token");
        assert_eq!(again.bbs_url, "http://127.0.0.1:2");
    }

    #[test]
    fn rotation_keeps_the_old_key_for_its_grace_and_reissues_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bbs = dir.path().join("bbs");
        let (old, first) = ensure_credentials(&bbs, "http://127.0.0.1:1").unwrap();
        let keys = Keys::from_dir(&bbs).unwrap();
        let cell = issue_credentials(&bbs, "cell-1", Duration::from_secs(3600)).unwrap();
        assert_eq!(cell.bbs_url, "http://127.0.0.1:1");
        assert!(keys.verify(&cell.token, unix_now()).is_ok());

        rotate_key(&bbs, Duration::from_secs(60)).unwrap();
        let now = unix_now();
        // The running server's keys see the rotation without a restart.
        assert!(keys.verify(&first.token, now).is_ok(), "old key in grace");
        assert!(keys.verify(&cell.token, now).is_ok());
        assert_eq!(
            keys.verify(&first.token, now + 120),
            Err(Refusal::KeyRetired)
        );
        let reissued = Credentials::read(&bbs.join("credentials")).unwrap();
        assert_ne!(reissued.token, first.token);
        assert!(keys.verify(&reissued.token, now + 120).is_ok());
        assert_eq!(
            old.verify(&reissued.token, now),
            Err(Refusal::Forged),
            "signed by the new key"
        );
        // A second rotation keeps the first retired key while in grace.
        rotate_key(&bbs, Duration::from_secs(60)).unwrap();
        let ring = KeyRing::read(&bbs).unwrap();
        assert_eq!(ring.retired.len(), 2);
        assert!(keys.verify(&first.token, now).is_ok());
    }
}

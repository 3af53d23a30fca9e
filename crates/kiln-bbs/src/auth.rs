//! Who may talk to the BBS server: holders of a token signed with the
//! BBS's key. Diego uses mutual TLS for this; Kiln signs bearer tokens
//! (`kbbs1.<expires>.<hex hmac-sha256>`, expiry in unix seconds, 0 for
//! none) so that one credentials file is all a joining node needs, and a
//! stolen token can be made to expire without changing the key.
//!
//! The key stays in `<data-dir>/bbs/key` on the BBS's machine; the
//! credentials file a node receives holds only a token, so a node cannot
//! mint tokens of its own.

use hmac::{Hmac, KeyInit, Mac};
use kiln_bbs_client::Credentials;
use sha2::Sha256;
use std::path::Path;

const PREFIX: &str = "kbbs1";

/// Why a token was refused, in words for the refused node's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    Expired,
    Forged,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Missing => "no bbs credentials sent (Authorization: Bearer <token>)",
            Refusal::Malformed => "the bbs token is malformed",
            Refusal::Expired => "the bbs token has expired",
            Refusal::Forged => "the bbs token was not signed by this bbs",
        })
    }
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

    fn mac(&self, expires: i64) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("hmac takes any key length");
        mac.update(format!("{PREFIX}.{expires}").as_bytes());
        mac
    }

    /// A token valid until `expires` (unix seconds; 0: no expiry).
    pub fn issue(&self, expires: i64) -> String {
        let signature = hex::encode(self.mac(expires).finalize().into_bytes());
        format!("{PREFIX}.{expires}.{signature}")
    }

    pub fn verify(&self, token: &str, now: i64) -> Result<(), Refusal> {
        let mut parts = token.split('.');
        let (Some(PREFIX), Some(expires), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refusal::Malformed);
        };
        let expires: i64 = expires.parse().map_err(|_| Refusal::Malformed)?;
        let signature = hex::decode(signature).map_err(|_| Refusal::Malformed)?;
        // Signature first: an expiry the BBS never signed is a forgery.
        self.mac(expires)
            .verify_slice(&signature)
            .map_err(|_| Refusal::Forged)?;
        if expires != 0 && expires < now {
            return Err(Refusal::Expired);
        }
        Ok(())
    }
}

/// Loads the key at `<dir>/key` and the credentials at `<dir>/credentials`,
/// creating both (mode 0600) on first start. `bbs_url` is written into the
/// credentials as the hint for joining nodes.
pub fn ensure_credentials(dir: &Path, bbs_url: &str) -> std::io::Result<(BbsKey, Credentials)> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let key_path = dir.join("key");
    let key = match std::fs::read_to_string(&key_path) {
        Ok(text) => BbsKey(hex::decode(text.trim()).map_err(|e| {
            std::io::Error::other(format!("{} is not hex: {e}", key_path.display()))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = BbsKey::generate();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)?;
            std::io::Write::write_all(&mut file, hex::encode(&key.0).as_bytes())?;
            file.sync_all()?;
            key
        }
        Err(e) => return Err(e),
    };
    let credentials_path = dir.join("credentials");
    let token = match Credentials::read(&credentials_path) {
        Ok(c) if key.verify(&c.token, 0).is_ok() => c.token,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_expire_and_resist_forgery() {
        let key = BbsKey::from_bytes(b"k1");
        let forever = key.issue(0);
        assert_eq!(key.verify(&forever, 2_000_000_000), Ok(()));
        let until = key.issue(1000);
        assert_eq!(key.verify(&until, 999), Ok(()));
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
        ] {
            assert_eq!(key.verify(bad, 0), Err(Refusal::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn credentials_are_made_once_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bbs = dir.path().join("bbs");
        let (key, first) = ensure_credentials(&bbs, "http://127.0.0.1:1").unwrap();
        assert_eq!(key.verify(&first.token, 0), Ok(()));
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
}

//! Secrets at rest in the CCDB (Cloud Controller's `db_encryption_key`):
//! a docker package's registry password is stored encrypted, and decrypted
//! only where a staging Task or a DesiredLrp is built.
//!
//! ChaCha20-Poly1305 from `ring` (already built for rustls, so no second
//! crypto crate). The key is SHA-256 of the operator's key material (the
//! generated `<data>/db-encryption-key`, or `--db-encryption-key-file`),
//! so any string works as Cloud Controller's does. A stored value reads
//! `kiln-enc:v1:<label>:<base64(nonce ‖ ciphertext ‖ tag)>`: the label
//! (Cloud Controller's `encryption_key_label`) names the key, so a value
//! sealed under another key fails with that said instead of "bad tag";
//! the row's guid is the associated data, so a value copied to another row
//! does not open.

use crate::error::ApiError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kiln_model::rootfs::Secret;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};

const PREFIX: &str = "kiln-enc:v1:";

/// The CCDB's encryption key.
pub struct DbCipher {
    key: LessSafeKey,
    label: String,
}

impl std::fmt::Debug for DbCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbCipher")
            .field("label", &self.label)
            .finish()
    }
}

impl DbCipher {
    /// The cipher of `material` (the key file's content, trimmed; never
    /// empty).
    pub fn new(material: &str) -> Result<DbCipher, ApiError> {
        let material = material.trim();
        if material.is_empty() {
            return Err(ApiError::Internal("the db encryption key is empty".into()));
        }
        let key = Sha256::digest(material.as_bytes());
        let label = hex::encode(&Sha256::digest(key)[..4]);
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key)
            .map_err(|_| ApiError::Internal("the db encryption key is unusable".into()))?;
        Ok(DbCipher {
            key: LessSafeKey::new(unbound),
            label,
        })
    }

    /// Whether `stored` is a value this module wrote (under any key).
    pub fn is_encrypted(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }

    /// Seals `plain` for the row `row_guid`.
    pub fn encrypt(&self, row_guid: &str, plain: &Secret) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system random number generator failed");
        let mut sealed = plain.expose().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(row_guid.as_bytes()),
                &mut sealed,
            )
            .expect("sealing fits in memory");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", self.label, STANDARD.encode(blob))
    }

    /// Opens `stored` of the row `row_guid`.
    pub fn decrypt(&self, row_guid: &str, stored: &str) -> Result<Secret, ApiError> {
        let broken =
            |why: &str| ApiError::Internal(format!("encrypted value of {row_guid}: {why}"));
        let rest = stored
            .strip_prefix(PREFIX)
            .ok_or_else(|| broken("not encrypted"))?;
        let (label, encoded) = rest.split_once(':').ok_or_else(|| broken("malformed"))?;
        if label != self.label {
            return Err(broken(&format!(
                "sealed with another db encryption key (label {label}, this key's is {})",
                self.label
            )));
        }
        let mut blob = STANDARD.decode(encoded).map_err(|_| broken("malformed"))?;
        if blob.len() < NONCE_LEN {
            return Err(broken("malformed"));
        }
        let mut sealed = blob.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&blob).map_err(|_| broken("malformed"))?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(row_guid.as_bytes()), &mut sealed)
            .map_err(|_| broken("does not open (altered, or not this row's)"))?;
        let plain = String::from_utf8(plain.to_vec()).map_err(|_| broken("not UTF-8"))?;
        Ok(Secret(plain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_for_its_row_and_key_only() {
        let cipher = DbCipher::new("key material\n").unwrap();
        let secret = Secret("hunter2-registry".into());
        let stored = cipher.encrypt("pkg-1", &secret);
        assert!(DbCipher::is_encrypted(&stored));
        assert!(!stored.contains("hunter2"), "{stored}");
        assert_ne!(
            stored,
            cipher.encrypt("pkg-1", &secret),
            "a fresh nonce each time"
        );
        assert_eq!(
            cipher.decrypt("pkg-1", &stored).unwrap().expose(),
            "hunter2-registry"
        );

        let err = cipher.decrypt("pkg-2", &stored).unwrap_err().to_string();
        assert!(err.contains("not this row's"), "{err}");
        let other = DbCipher::new("another key").unwrap();
        let err = other.decrypt("pkg-1", &stored).unwrap_err().to_string();
        assert!(err.contains("another db encryption key"), "{err}");
        let mut altered = stored.clone();
        altered.pop();
        altered.push(if stored.ends_with('A') { 'B' } else { 'A' });
        assert!(cipher.decrypt("pkg-1", &altered).is_err());
        assert!(cipher.decrypt("pkg-1", "hunter2-registry").is_err());
        assert!(DbCipher::new("  \n").is_err());
    }
}

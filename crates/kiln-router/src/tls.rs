//! HTTPS for the router: certificates and keys from PEM files, one chosen
//! per connection by the client's SNI name as Gorouter (Go's `crypto/tls`)
//! chooses: a certificate naming the host exactly, else one whose wildcard
//! `*.rest` covers the host's first label only, else the first configured
//! (also for clients that send no SNI). ALPN offers `h2` and `http/1.1`.
//!
//! The files are read again on [`CertStore::reload`] (the `kiln` binary
//! calls it on SIGHUP); the new set replaces the old whole (`arc-swap`) and
//! serves new connections. A file that does not load leaves the old set in
//! place.

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// One certificate chain file and its private key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKeyPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl FromStr for CertKeyPair {
    type Err = String;

    /// `CERT:KEY`, two paths (a path with a colon of its own cannot be given).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            Some((cert, key)) if !cert.is_empty() && !key.is_empty() && !key.contains(':') => {
                Ok(CertKeyPair {
                    cert: cert.into(),
                    key: key.into(),
                })
            }
            _ => Err(format!(
                "expected CERT_FILE:KEY_FILE (two PEM files), got {text:?}"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate configured")]
    NoCertificates,
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{path}: no certificate in the file")]
    NoCertificate { path: PathBuf },
    #[error("{cert} with {key}: {message}")]
    Key {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("TLS settings: {0}")]
    Config(#[from] rustls::Error),
}

/// The certificates in force: by exact DNS name, by the domain of a
/// wildcard name, and the default.
struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl CertSet {
    /// Reads every pair; the first is the default. Any error fails the whole.
    fn load(pairs: &[CertKeyPair], provider: &CryptoProvider) -> Result<CertSet, TlsError> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        for pair in pairs {
            let (key, names) = load_pair(pair, provider)?;
            for name in names {
                let name = name.to_ascii_lowercase();
                // The first pair naming a host wins, as in Go's NameToCertificate.
                match name.strip_prefix("*.") {
                    Some(domain) => wildcard.entry(domain.to_string()),
                    None => exact.entry(name),
                }
                .or_insert_with(|| key.clone());
            }
            default.get_or_insert(key);
        }
        Ok(CertSet {
            exact,
            wildcard,
            default: default.ok_or(TlsError::NoCertificates)?,
        })
    }

    fn choose(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return key.clone();
        }
        // A wildcard covers exactly one label.
        name.split_once('.')
            .and_then(|(_, domain)| self.wildcard.get(domain))
            .unwrap_or(&self.default)
            .clone()
    }
}

/// A certificate chain and key that belong together, and the DNS names
/// (subject alternative names) the certificate is for.
fn load_pair(
    pair: &CertKeyPair,
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, Vec<String>), TlsError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.clone(),
            source,
        })
    };
    let cert_pem = read(&pair.cert)?;
    let key_pem = read(&pair.key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: pair.cert.clone(),
            message: e.to_string(),
        })?;
    let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate {
        path: pair.cert.clone(),
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: pair.key.clone(),
        message: format!("no private key read: {e}"),
    })?;
    let key_error = |message: String| TlsError::Key {
        cert: pair.cert.clone(),
        key: pair.key.clone(),
        message,
    };
    let names = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| key_error(format!("certificate not understood: {e}")))?
        .valid_dns_names()
        .map(str::to_string)
        .collect();
    // Also checks that the key is the certificate's.
    let certified = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| key_error(format!("key does not fit the certificate: {e}")))?;
    Ok((Arc::new(certified), names))
}

/// The router's certificates, replaceable while serving.
pub struct CertStore {
    pairs: Vec<CertKeyPair>,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertSet>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("pairs", &self.pairs)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Reads `pairs` (the first is the default certificate).
    pub fn load(pairs: Vec<CertKeyPair>) -> Result<Arc<CertStore>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let set = CertSet::load(&pairs, &provider)?;
        Ok(Arc::new(CertStore {
            pairs,
            provider,
            current: ArcSwap::from_pointee(set),
        }))
    }

    /// Reads the same files again and, if all load, serves new connections
    /// with them. On error the certificates in force stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let set = CertSet::load(&self.pairs, &self.provider)?;
        self.current.store(Arc::new(set));
        Ok(())
    }

    /// The TLS settings of the router's HTTPS listener.
    pub(crate) fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().choose(hello.server_name()))
    }
}

/// `Strict-Transport-Security` on responses over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hsts {
    pub max_age_secs: u64,
    pub include_subdomains: bool,
    pub preload: bool,
}

impl Hsts {
    pub(crate) fn header_value(&self) -> http::HeaderValue {
        let mut text = format!("max-age={}", self.max_age_secs);
        if self.include_subdomains {
            text.push_str("; includeSubDomains");
        }
        if self.preload {
            text.push_str("; preload");
        }
        http::HeaderValue::from_str(&text).expect("digits and ASCII words")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_key_pairs_parse() {
        assert_eq!(
            "/a/c.pem:/a/k.pem".parse::<CertKeyPair>().unwrap(),
            CertKeyPair {
                cert: "/a/c.pem".into(),
                key: "/a/k.pem".into()
            }
        );
        for bad in ["", "c.pem", ":k.pem", "c.pem:", "a:b:c"] {
            assert!(bad.parse::<CertKeyPair>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hsts_header_names_its_options() {
        let mut hsts = Hsts {
            max_age_secs: 60,
            include_subdomains: false,
            preload: false,
        };
        assert_eq!(hsts.header_value(), "max-age=60");
        hsts.include_subdomains = true;
        hsts.preload = true;
        assert_eq!(
            hsts.header_value(),
            "max-age=60; includeSubDomains; preload"
        );
    }
}

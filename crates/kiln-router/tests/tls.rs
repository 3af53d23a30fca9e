//! The router's HTTPS listener, over real TLS on loopback, with
//! certificates made here (rcgen): the certificate chosen by SNI (exact,
//! wildcard, default), HTTP/2 from the client to an HTTP/1.1 instance,
//! `X-Forwarded-Proto`, HSTS, and reloading certificates while serving.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kiln_bbs::{Bbs, BbsClient};
use kiln_logs::LogStore;
use kiln_model::bbs::*;
use kiln_router::{CertKeyPair, CertStore, Hsts, RouterConfig, TlsListener, run_with_tls};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// A self-signed certificate for `names`, written as `stem.crt`/`stem.key`.
struct TestCert {
    der: Vec<u8>,
    pair: CertKeyPair,
}

fn make_cert(dir: &Path, stem: &str, names: &[&str]) -> TestCert {
    let made =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let pair = CertKeyPair {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    std::fs::write(&pair.cert, made.cert.pem()).unwrap();
    std::fs::write(&pair.key, made.signing_key.serialize_pem()).unwrap();
    TestCert {
        der: made.cert.der().to_vec(),
        pair,
    }
}

/// An HTTP/1.1-only instance answering with the headers and version it got.
async fn backend() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: hyper::Request<_>| async move {
                    let headers: serde_json::Map<String, serde_json::Value> = request
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                        .collect();
                    let json = serde_json::json!({
                        "version": format!("{:?}", request.version()),
                        "headers": headers,
                    });
                    let mut response =
                        hyper::Response::new(Full::new(Bytes::from(json.to_string())));
                    if request.uri().path() == "/own-hsts" {
                        response
                            .headers_mut()
                            .insert("strict-transport-security", "max-age=5".parse().unwrap());
                    }
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

struct Fixture {
    _dir: tempfile::TempDir,
    tls_port: u16,
    http_port: u16,
    certs: Arc<CertStore>,
    shutdown: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A router serving `host` (one backend) over HTTP and HTTPS with `pairs`.
async fn fixture(
    dir: tempfile::TempDir,
    pairs: Vec<CertKeyPair>,
    hsts: Option<Hsts>,
    host: &str,
) -> Fixture {
    let bbs = Bbs::open(&dir.path().join("bbs.sqlite")).await.unwrap();
    let port = backend().await;
    let lrp = DesiredLrp {
        routes: vec![host.into()],
        ..kiln_model::testing::desired_lrp("pg", 1)
    };
    bbs.desire_lrp(lrp).await.unwrap();
    bbs.start_actual_lrp(
        &ActualLrpKey {
            process_guid: "pg".into(),
            index: 0,
            domain: "cf-apps".into(),
        },
        &ActualLrpInstanceKey {
            instance_guid: "pg-ig-0".into(),
            cell_id: "cell".into(),
        },
        ActualLrpNetInfo {
            address: "127.0.0.1".into(),
            ports: vec![PortMapping {
                container_port: port,
                host_port: port,
            }],
            instance_address: "127.0.0.1".into(),
        },
    )
    .await
    .unwrap();
    let certs = CertStore::load(pairs).unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fixture = Fixture {
        _dir: dir,
        http_port: http.local_addr().unwrap().port(),
        tls_port: tls.local_addr().unwrap().port(),
        certs: certs.clone(),
        shutdown: CancellationToken::new(),
    };
    let config = RouterConfig {
        hsts,
        ..RouterConfig::default()
    };
    tokio::spawn(run_with_tls(
        config,
        http,
        Some(TlsListener {
            listener: tls,
            certs,
        }),
        None,
        Arc::new(bbs),
        Arc::new(LogStore::default()),
        fixture.shutdown.clone(),
    ));
    fixture
}

/// Accepts any certificate: the tests look at which one the router chose.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS connection to the router; `sni` None sends no server name.
async fn connect(
    port: u16,
    sni: Option<&str>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = sni.is_some();
    let name = ServerName::try_from(sni.unwrap_or("no-sni.invalid").to_string()).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake")
}

/// The leaf certificate the router presented for `sni`.
async fn served_cert(port: u16, sni: Option<&str>) -> Vec<u8> {
    let stream = connect(port, sni, &[b"http/1.1"]).await;
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// GET `path` for `host` over one new TLS connection, HTTP/2 if `h2`.
async fn get(
    port: u16,
    host: &str,
    path: &str,
    h2: bool,
) -> (hyper::http::response::Parts, serde_json::Value, bool) {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let stream = connect(port, Some(host), alpn).await;
    let negotiated_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let request = hyper::Request::get(format!("https://{host}{path}"));
    let response = if negotiated_h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(connection);
        sender
            .send_request(request.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        sender
            .send_request(
                request
                    .header("host", host)
                    .body(Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap()
    };
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts, json, negotiated_h2)
}

/// Polls until the route answers over HTTPS (the table loads at start).
async fn wait_routed(port: u16, host: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (parts, _, _) = get(port, host, "/", false).await;
        if parts.status == 200 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "route never came up: {}",
            parts.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sni_chooses_exact_then_wildcard_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let default = make_cert(dir.path(), "default", &["default.test"]);
    let exact = make_cert(dir.path(), "exact", &["api.apps.test"]);
    let wildcard = make_cert(dir.path(), "wildcard", &["*.apps.test"]);
    let f = fixture(
        dir,
        vec![
            default.pair.clone(),
            exact.pair.clone(),
            wildcard.pair.clone(),
        ],
        None,
        "app.apps.test",
    )
    .await;
    assert_eq!(
        served_cert(f.tls_port, Some("api.apps.test")).await,
        exact.der
    );
    assert_eq!(
        served_cert(f.tls_port, Some("API.Apps.Test")).await,
        exact.der
    );
    assert_eq!(
        served_cert(f.tls_port, Some("app.apps.test")).await,
        wildcard.der
    );
    // One label only, as Gorouter's wildcard matching.
    assert_eq!(
        served_cert(f.tls_port, Some("a.b.apps.test")).await,
        default.der
    );
    assert_eq!(
        served_cert(f.tls_port, Some("apps.test")).await,
        default.der
    );
    assert_eq!(
        served_cert(f.tls_port, Some("other.test")).await,
        default.der
    );
    assert_eq!(served_cert(f.tls_port, None).await, default.der);
}

#[tokio::test]
async fn h2_and_http1_over_tls_reach_an_http1_instance_as_https() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "apps", &["*.apps.test"]);
    let f = fixture(dir, vec![cert.pair], None, "app.apps.test").await;
    wait_routed(f.tls_port, "app.apps.test").await;

    let (parts, json, h2) = get(f.tls_port, "app.apps.test", "/", true).await;
    assert!(h2, "ALPN agreed on h2");
    assert_eq!(parts.status, 200);
    assert_eq!(parts.version, hyper::Version::HTTP_2);
    assert_eq!(json["version"], "HTTP/1.1", "the instance speaks HTTP/1.1");
    assert_eq!(json["headers"]["x-forwarded-proto"], "https");
    assert_eq!(json["headers"]["host"], "app.apps.test");
    assert_eq!(json["headers"]["x-cf-instanceid"], "pg-ig-0");
    assert!(parts.headers.contains_key("x-vcap-request-id"));
    assert!(
        !parts.headers.contains_key("strict-transport-security"),
        "no HSTS unless configured"
    );

    let (parts, json, h2) = get(f.tls_port, "app.apps.test", "/", false).await;
    assert!(!h2);
    assert_eq!(parts.version, hyper::Version::HTTP_11);
    assert_eq!(json["headers"]["x-forwarded-proto"], "https");

    // Plain HTTP stays on its own listener, as http.
    let plain: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/", f.http_port))
        .header("host", "app.apps.test")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plain["headers"]["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn hsts_when_configured_on_https_only_and_the_apps_own_wins() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "apps", &["*.apps.test"]);
    let hsts = Hsts {
        max_age_secs: 31_536_000,
        include_subdomains: true,
        preload: false,
    };
    let f = fixture(dir, vec![cert.pair], Some(hsts), "app.apps.test").await;
    wait_routed(f.tls_port, "app.apps.test").await;
    for h2 in [true, false] {
        let (parts, _, _) = get(f.tls_port, "app.apps.test", "/", h2).await;
        assert_eq!(
            parts.headers["strict-transport-security"],
            "max-age=31536000; includeSubDomains"
        );
    }
    // The router's own answers carry it too.
    let (parts, _, _) = get(f.tls_port, "nowhere.apps.test", "/", true).await;
    assert_eq!(parts.status, 404);
    assert!(parts.headers.contains_key("strict-transport-security"));
    let (parts, _, _) = get(f.tls_port, "app.apps.test", "/own-hsts", true).await;
    assert_eq!(parts.headers["strict-transport-security"], "max-age=5");
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/", f.http_port))
        .header("host", "app.apps.test")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    assert!(!plain.headers().contains_key("strict-transport-security"));
}

#[tokio::test]
async fn reload_swaps_certificates_for_new_connections_and_a_bad_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_cert(dir.path(), "apps", &["*.apps.test"]);
    let pair = first.pair.clone();
    let f = fixture(dir, vec![pair.clone()], None, "app.apps.test").await;
    wait_routed(f.tls_port, "app.apps.test").await;
    assert_eq!(
        served_cert(f.tls_port, Some("app.apps.test")).await,
        first.der
    );
    // A connection made before the reload keeps working after it.
    let old = connect(f.tls_port, Some("app.apps.test"), &[b"http/1.1"]).await;

    // Renewed in place, as an operator's rotation does.
    let dir = pair.cert.parent().unwrap();
    let second = make_cert(dir, "apps", &["*.apps.test"]);
    assert_ne!(first.der, second.der);
    f.certs.reload().unwrap();
    assert_eq!(
        served_cert(f.tls_port, Some("app.apps.test")).await,
        second.der
    );
    let (parts, json, _) = get(f.tls_port, "app.apps.test", "/", true).await;
    assert_eq!(parts.status, 200);
    assert_eq!(json["headers"]["x-forwarded-proto"], "https");
    drop(old);

    // A broken key: the reload fails, saying why, and the certificates in
    // force stay.
    std::fs::write(&pair.key, "not a key").unwrap();
    let error = f.certs.reload().unwrap_err().to_string();
    assert!(error.contains("apps.key"), "{error}");
    assert_eq!(
        served_cert(f.tls_port, Some("app.apps.test")).await,
        second.der
    );
    // A key that is not the certificate's fails too.
    let other = make_cert(dir, "other", &["x.test"]);
    std::fs::copy(&other.pair.key, &pair.key).unwrap();
    let error = f.certs.reload().unwrap_err().to_string();
    assert!(error.contains("does not fit"), "{error}");
    let (parts, _, _) = get(f.tls_port, "app.apps.test", "/", false).await;
    assert_eq!(parts.status, 200);
    assert_eq!(
        served_cert(f.tls_port, Some("app.apps.test")).await,
        second.der
    );
}

/// The binary's way: the files are rotated, then SIGHUP (this test runs
/// in a process of its own under nextest; the router watches SIGHUP from
/// its start, so the signal never ends the process).
#[tokio::test]
async fn sighup_rereads_the_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_cert(dir.path(), "apps", &["*.apps.test"]);
    let pair = first.pair.clone();
    let f = fixture(dir, vec![pair.clone()], None, "app.apps.test").await;
    wait_routed(f.tls_port, "app.apps.test").await;
    let second = make_cert(pair.cert.parent().unwrap(), "apps", &["*.apps.test"]);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + WAIT;
    while served_cert(f.tls_port, Some("app.apps.test")).await != second.der {
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn bad_certificate_files_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let good = make_cert(dir.path(), "good", &["a.test"]);
    assert!(CertStore::load(vec![]).is_err());
    let missing = CertKeyPair {
        cert: dir.path().join("missing.crt"),
        key: good.pair.key.clone(),
    };
    let error = CertStore::load(vec![good.pair.clone(), missing])
        .unwrap_err()
        .to_string();
    assert!(error.contains("missing.crt"), "{error}");
    let swapped = CertKeyPair {
        cert: good.pair.key.clone(),
        key: good.pair.cert.clone(),
    };
    assert!(CertStore::load(vec![swapped]).is_err());
}

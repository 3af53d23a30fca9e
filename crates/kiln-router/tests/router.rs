//! The router against the real in-process BBS and real TCP backends on
//! loopback: routing by host, round-robin, Gorouter's headers and errors,
//! retries only before a backend was reached, streaming both ways,
//! keep-alive to backends, upgrades, table updates from events, access
//! lines and graceful shutdown.

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use kiln_bbs::{ActualLrpFilter, Bbs, BbsClient};
use kiln_logs::{LogStore, ReadQuery};
use kiln_model::bbs::*;
use kiln_model::logs::LogEnvelope;
use kiln_router::{RouterConfig, RouterError, run};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// A test instance: answers with JSON naming itself, the headers it got,
/// and how many body bytes arrived; `/download?bytes=N` streams N bytes;
/// `/gated` sends `first`, waits for `gate`, then sends `second`; `/slow`
/// waits for `gate` before answering; an `Upgrade` request is switched and
/// echoed.
#[derive(Clone)]
struct Backend {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// Body bytes received so far, over all requests.
    received: Arc<AtomicUsize>,
    gate: Arc<Notify>,
}

type TestBody = BoxBody<Bytes, Infallible>;

fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into()).boxed()
}

async fn backend(name: &'static str) -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = Backend {
        port: listener.local_addr().unwrap().port(),
        connections: Arc::default(),
        requests: Arc::default(),
        received: Arc::default(),
        gate: Arc::default(),
    };
    let shared = b.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let b = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let b = b.clone();
                    async move { Ok::<_, Infallible>(answer(name, b, request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    b
}

async fn answer(
    name: &str,
    b: Backend,
    mut request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<TestBody> {
    b.requests.fetch_add(1, Ordering::SeqCst);
    let path = request.uri().path().to_string();
    if request.headers().contains_key(hyper::header::UPGRADE) {
        let on_upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let mut io = TokioIo::new(on_upgrade.await.unwrap());
            let mut buf = [0u8; 1024];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        return hyper::Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(full(""))
            .unwrap();
    }
    match path.as_str() {
        "/download" => {
            let total: usize = request
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("bytes="))
                .unwrap()
                .parse()
                .unwrap();
            let chunk = Bytes::from(vec![b'd'; 64 * 1024]);
            let chunks = (0..total.div_ceil(chunk.len())).map(move |i| {
                let len = chunk.len().min(total - i * chunk.len());
                Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
            });
            hyper::Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
                chunks,
            ))))
        }
        "/gated" => {
            let gate = b.gate.clone();
            let frames = futures_util::stream::once(async { Bytes::from("first") }).chain(
                futures_util::stream::once(async move {
                    gate.notified().await;
                    Bytes::from("second")
                }),
            );
            hyper::Response::new(BodyExt::boxed(StreamBody::new(
                frames.map(|d| Ok::<_, Infallible>(Frame::data(d))),
            )))
        }
        _ => {
            if path == "/slow" {
                b.gate.notified().await;
            }
            let headers: serde_json::Map<String, serde_json::Value> = request
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                .collect();
            let mut body = request.into_body();
            let mut received = 0usize;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    received += data.len();
                    b.received.fetch_add(data.len(), Ordering::SeqCst);
                }
            }
            let json = serde_json::json!({"backend": name, "headers": headers, "received": received, "path": path});
            let mut response = hyper::Response::new(full(json.to_string()));
            if path == "/session" {
                // An app starting a session, as a Java app's JSESSIONID does.
                response.headers_mut().insert(
                    "set-cookie",
                    "JSESSIONID=s1; Path=/; Secure; SameSite=Lax"
                        .parse()
                        .unwrap(),
                );
            }
            response
        }
    }
}

/// A port nothing listens on: bound but never listening, and kept so for
/// the rest of the test, so a dial is refused at once and no other test's
/// server can be given the port meanwhile (as a port just released could).
fn dead_port() -> u16 {
    static HELD: std::sync::Mutex<Vec<tokio::net::TcpSocket>> = std::sync::Mutex::new(Vec::new());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let port = socket.local_addr().unwrap().port();
    HELD.lock().unwrap().push(socket);
    port
}

/// An instance that reads a request's headers and hangs up without an
/// answer; `requests` counts the requests that reached it.
async fn hang_up_backend(requests: Arc<AtomicUsize>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let requests = requests.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                requests.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    port
}

/// An instance that accepts and reads but never answers.
async fn silent_backend() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn desired(process_guid: &str, instances: u32, host: &str) -> DesiredLrp {
    DesiredLrp {
        routes: vec![host.into()],
        ..kiln_model::testing::desired_lrp(process_guid, instances)
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    bbs: Bbs,
    logs: Arc<LogStore>,
    router_port: u16,
    status_port: u16,
    shutdown: CancellationToken,
    router: Option<JoinHandle<Result<(), RouterError>>>,
    http: reqwest::Client,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn fixture() -> Fixture {
    fixture_with(RouterConfig {
        resync_interval: Duration::from_secs(60),
        ..Default::default()
    })
    .await
}

async fn fixture_with(config: RouterConfig) -> Fixture {
    fixture_with_logs(config, LogStore::default()).await
}

async fn fixture_with_logs(config: RouterConfig, logs: LogStore) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let bbs = Bbs::open(&dir.path().join("bbs.sqlite")).await.unwrap();
    let logs = Arc::new(logs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router_port = listener.local_addr().unwrap().port();
    let status = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let status_port = status.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    let router = tokio::spawn(run(
        config,
        listener,
        Some(status),
        Arc::new(bbs.clone()),
        logs.clone(),
        shutdown.clone(),
    ));
    Fixture {
        _dir: dir,
        bbs,
        logs,
        router_port,
        status_port,
        shutdown,
        router: Some(router),
        http: reqwest::Client::new(),
    }
}

fn instance_keys(process_guid: &str, index: usize) -> (ActualLrpKey, ActualLrpInstanceKey) {
    (
        ActualLrpKey {
            process_guid: process_guid.into(),
            index: index as u32,
            domain: "cf-apps".into(),
        },
        ActualLrpInstanceKey {
            instance_guid: format!("{process_guid}-ig-{index}"),
            cell_id: "cell".into(),
        },
    )
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.router_port)
    }

    /// Desires `process_guid` with one instance per port and reports each
    /// RUNNING there, as a cell does after the health check passes.
    async fn app(&self, process_guid: &str, host: &str, ports: &[u16]) {
        self.app_with_guid(&format!("app-{process_guid}"), process_guid, host, ports)
            .await;
    }

    /// As [`Fixture::app`], for the app `app_guid`.
    async fn app_with_guid(&self, app_guid: &str, process_guid: &str, host: &str, ports: &[u16]) {
        let mut lrp = desired(process_guid, ports.len() as u32, host);
        lrp.log_guid = app_guid.into();
        self.bbs.desire_lrp(lrp).await.unwrap();
        for (index, port) in ports.iter().enumerate() {
            let (key, instance_key) = instance_keys(process_guid, index);
            let net_info = ActualLrpNetInfo {
                address: "127.0.0.1".into(),
                ports: vec![PortMapping {
                    container_port: *port,
                    host_port: *port,
                }],
                instance_address: "127.0.0.1".into(),
            };
            self.bbs
                .start_actual_lrp(&key, &instance_key, net_info)
                .await
                .unwrap();
        }
    }

    async fn get(&self, host: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("Host", host)
            .send()
            .await
            .unwrap()
    }

    /// Polls until `host` answers `status` (the table follows events).
    async fn wait_for(&self, host: &str, status: u16) -> reqwest::Response {
        let deadline = Instant::now() + WAIT;
        loop {
            let response = self.get(host, "/").await;
            if response.status() == status {
                return response;
            }
            assert!(
                Instant::now() < deadline,
                "{host} never answered {status}, last {}",
                response.status()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until instance `index` of `app_guid` is in the router's table
    /// (`X-Cf-App-Instance` for it stops answering 404), and so every
    /// instance desired and started before it.
    async fn wait_for_instance(&self, host: &str, app_guid: &str, index: u32) {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self
                .http
                .get(self.url("/"))
                .header("Host", host)
                .header("X-CF-App-Instance", format!("{app_guid}:{index}"))
                .send()
                .await
                .unwrap()
                .status();
            if status != 404 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "instance {index} of {host} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the app's log stream until an `RTR` line satisfies `matches`.
    async fn rtr_line(&self, app_guid: &str, matches: impl Fn(&str) -> bool) -> LogEnvelope {
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = self.logs.read(
                app_guid,
                &ReadQuery {
                    start_time: 0,
                    end_time: None,
                    limit: 10_000,
                    descending: false,
                },
            );
            if let Some(line) = lines
                .into_iter()
                .find(|l| l.source_type == "RTR" && matches(&l.message))
            {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no matching RTR line for {app_guid}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn json(response: reqwest::Response) -> serde_json::Value {
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn poll_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn routes_by_host_round_robin_with_gorouter_headers() {
    let f = fixture().await;
    let (a, b, other) = (
        backend("a").await,
        backend("b").await,
        backend("other").await,
    );
    let guid = "8a4b3c6d-1e0f-4a5b-8c43-556677889900";
    f.app_with_guid(guid, "p1", "app.test", &[a.port, b.port])
        .await;
    f.app("p2", "other.test", &[other.port]).await;
    f.wait_for_instance("app.test", guid, 1).await;
    f.wait_for("other.test", 200).await;

    let mut order = Vec::new();
    for host in ["APP.test:8080", "app.test", "app.test:80", "app.test"] {
        let response = f
            .http
            .get(f.url("/some/path?q=1"))
            .header("Host", host)
            .header("X-CF-InstanceID", "client-forged")
            .header("X-CF-ApplicationID", "client-forged")
            .header("X-Forwarded-For", "10.1.2.3")
            .header("X-Vcap-Request-Id", "client-chosen")
            .send()
            .await
            .unwrap();
        let request_id = response.headers()["x-vcap-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let json = json(response).await;
        let headers = &json["headers"];
        let backend = json["backend"].as_str().unwrap().to_string();
        let index = if backend == "a" { "0" } else { "1" };
        assert_eq!(headers["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-cf-applicationid"], guid);
        assert_eq!(headers["x-cf-instanceindex"], index);
        assert_eq!(
            headers["x-cf-instanceid"],
            format!("p1-ig-{index}"),
            "the client's X-CF-InstanceID is replaced by the real one"
        );
        assert_eq!(
            headers["x-vcap-request-id"], request_id,
            "a fresh request id, the same one the client is told"
        );
        assert_ne!(request_id, "client-chosen");
        assert!(
            headers["x-request-start"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .is_ok()
        );
        assert_eq!(
            headers["host"], host,
            "the Host header reaches the app unchanged"
        );
        assert_eq!(json["path"], "/some/path");
        order.push(backend);
    }
    assert!(
        order.windows(2).all(|w| w[0] != w[1]),
        "round-robin alternates between the two instances: {order:?}"
    );
    assert_eq!(
        json(f.get("other.test", "/").await).await["backend"],
        "other"
    );
}

#[tokio::test]
async fn unknown_hosts_404_routes_without_instances_503_and_empty_host_400() {
    let f = fixture().await;
    let response = f.get("nobody.test", "/").await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-cf-routererror"], "unknown_route");
    assert!(response.headers().contains_key("x-vcap-request-id"));
    assert_eq!(
        response.text().await.unwrap(),
        "404 Not Found: Requested route ('nobody.test') does not exist.\n"
    );

    f.bbs
        .desire_lrp(desired("p1", 1, "starting.test"))
        .await
        .unwrap();
    let response = f.wait_for("starting.test", 503).await;
    assert_eq!(response.headers()["x-cf-routererror"], "no_endpoints");
    assert_eq!(
        response.text().await.unwrap(),
        "503 Service Unavailable: Requested route ('starting.test') has no available endpoints.\n"
    );

    // HTTP/1.0 without a Host header.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", f.router_port))
        .await
        .unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.0 400"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("x-cf-routererror: empty_host"),
        "{raw}"
    );
    assert!(
        raw.ends_with("400 Bad Request: Request had empty Host header\n"),
        "{raw}"
    );

    // A Host that is the client's own address counts as empty (Gorouter).
    let response = f.http.get(f.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-cf-routererror"], "empty_host");
}

#[tokio::test]
async fn a_refused_instance_is_retried_on_another_with_the_body_and_all_dead_is_502() {
    let f = fixture_with(RouterConfig {
        // No skipping, so the dead instance keeps coming first every other time.
        retry_after_failure: Duration::ZERO,
        resync_interval: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let live = backend("live").await;
    let guid = "9b5c4d7e-2f1a-4b6c-9d54-667788990011";
    f.app_with_guid(guid, "p1", "mixed.test", &[dead_port(), live.port])
        .await;
    f.wait_for_instance("mixed.test", guid, 1).await;
    // Both round-robin orders: the dead instance first every other time.
    for _ in 0..4 {
        let response = f
            .http
            .post(f.url("/upload"))
            .header("Host", "mixed.test")
            .body(vec![1u8; 1024 * 1024])
            .send()
            .await
            .unwrap();
        let json = json(response).await;
        assert_eq!(json["backend"], "live", "a dial error is retried");
        assert_eq!(
            json["received"],
            1024 * 1024,
            "the body reaches the instance tried second"
        );
    }

    f.app("p2", "dead.test", &[dead_port(), dead_port()]).await;
    let response = f.wait_for("dead.test", 502).await;
    let router_error = response.headers()["x-cf-routererror"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        router_error.starts_with("endpoint_failure (dial tcp 127.0.0.1:"),
        "{router_error}"
    );
    assert_eq!(
        response.text().await.unwrap(),
        "502 Bad Gateway: Registered endpoint failed to handle the request.\n"
    );
    let line = f.rtr_line("app-p2", |m| m.contains("\" 502 ")).await;
    assert!(
        line.message
            .contains("x_cf_routererror:\"endpoint_failure (dial tcp")
    );
}

#[tokio::test]
async fn a_request_that_reached_an_instance_is_not_resent_unless_idempotent() {
    let f = fixture().await;
    let requests = Arc::new(AtomicUsize::new(0));
    let ports = [
        hang_up_backend(requests.clone()).await,
        hang_up_backend(requests.clone()).await,
    ];
    f.app("p1", "hangup.test", &ports).await;
    f.wait_for("hangup.test", 502).await;

    // With a body and without one (an empty body is never read, so only
    // the method keeps it from being resent).
    for body in ["charge the card", ""] {
        requests.store(0, Ordering::SeqCst);
        let response = f
            .http
            .post(f.url("/pay"))
            .header("Host", "hangup.test")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 502);
        assert_eq!(
            requests.load(Ordering::SeqCst),
            1,
            "a POST that reached an instance is never sent to another (body {body:?})"
        );
    }

    // Fresh instances, so nothing the POSTs left behind (a spare pooled
    // connection, say) plays a part.
    let get_requests = Arc::new(AtomicUsize::new(0));
    let ports = [
        hang_up_backend(get_requests.clone()).await,
        hang_up_backend(get_requests.clone()).await,
    ];
    let guid = "5d1e0f3a-8b7c-4d2e-9f10-223344556677";
    f.app_with_guid(guid, "p2", "hangup-get.test", &ports).await;
    // Until instance 1 is in the table, so the request below has both
    // instances to try.
    f.wait_for_instance("hangup-get.test", guid, 1).await;
    let requests = get_requests;
    requests.store(0, Ordering::SeqCst);
    let response = f.get("hangup-get.test", "/").await;
    assert_eq!(response.status(), 502);
    assert_eq!(
        requests.load(Ordering::SeqCst),
        2,
        "a GET closed before any response is tried on each instance (Gorouter's idempotent retry); last error {:?}",
        response.headers().get("x-cf-routererror")
    );
}

#[tokio::test]
async fn retries_stop_at_max_attempts() {
    let f = fixture_with(RouterConfig {
        max_attempts: 2,
        resync_interval: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let requests = Arc::new(AtomicUsize::new(0));
    let mut ports = Vec::new();
    for _ in 0..4 {
        ports.push(hang_up_backend(requests.clone()).await);
    }
    let guid = "6e2f1a4b-9c8d-4e3f-8a21-334455667788";
    f.app_with_guid(guid, "p1", "many.test", &ports).await;
    f.wait_for_instance("many.test", guid, 3).await;
    requests.store(0, Ordering::SeqCst);
    assert_eq!(f.get("many.test", "/").await.status(), 502);
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_instance_that_never_answers_times_out_with_502() {
    let f = fixture_with(RouterConfig {
        request_timeout: Duration::from_millis(300),
        resync_interval: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    f.app("p1", "silent.test", &[silent_backend().await]).await;
    let started = Instant::now();
    let response = f.wait_for("silent.test", 502).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let router_error = response.headers()["x-cf-routererror"].to_str().unwrap();
    assert!(router_error.contains("within"), "{router_error}");
}

#[tokio::test]
async fn large_bodies_stream_both_ways_and_are_logged() {
    let f = fixture().await;
    let sink = backend("sink").await;
    f.app("p1", "big.test", &[sink.port]).await;
    f.wait_for("big.test", 200).await;

    const SIZE: usize = 20 * 1024 * 1024;
    let response = f
        .http
        .post(f.url("/upload"))
        .header("Host", "big.test")
        .body(vec![7u8; SIZE])
        .send()
        .await
        .unwrap();
    assert_eq!(json(response).await["received"], SIZE);

    let response = f.get("big.test", &format!("/download?bytes={SIZE}")).await;
    assert_eq!(response.status(), 200);
    let mut got = 0;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        got += chunk.unwrap().len();
    }
    assert_eq!(got, SIZE);

    let up = f
        .rtr_line("app-p1", |m| m.contains("\"POST /upload HTTP/1.1\" 200"))
        .await;
    assert!(
        up.message.contains(&format!("200 {SIZE} ")),
        "{}",
        up.message
    );
    let down = f.rtr_line("app-p1", |m| m.contains("/download")).await;
    assert!(
        down.message.contains(&format!("200 0 {SIZE} ")),
        "{}",
        down.message
    );
}

#[tokio::test]
async fn bodies_are_not_buffered_whole() {
    let f = fixture().await;
    let b = backend("streamer").await;
    f.app("p1", "stream.test", &[b.port]).await;
    f.wait_for("stream.test", 200).await;

    // Response: the first chunk reaches the client while the instance is
    // still holding back the second.
    let mut response = f.get("stream.test", "/gated").await;
    let first = tokio::time::timeout(WAIT, response.chunk())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.as_deref(), Some(&b"first"[..]));
    b.gate.notify_one();
    assert_eq!(response.text().await.unwrap(), "second");

    // Request: the instance receives the first chunk before the client
    // has produced the second.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    });
    let request = f
        .http
        .post(f.url("/upload"))
        .header("Host", "stream.test")
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let pending = tokio::spawn(request);
    let before = b.received.load(Ordering::SeqCst);
    tx.send(Bytes::from(vec![1u8; 100_000])).await.unwrap();
    let received = b.received.clone();
    poll_until("the first chunk at the instance", || {
        received.load(Ordering::SeqCst) >= before + 100_000
    })
    .await;
    tx.send(Bytes::from(vec![2u8; 100_000])).await.unwrap();
    drop(tx);
    let json = json(pending.await.unwrap().unwrap()).await;
    assert_eq!(json["received"], 200_000);
}

#[tokio::test]
async fn connections_to_instances_are_kept_alive() {
    let f = fixture().await;
    let b = backend("pooled").await;
    f.app("p1", "pool.test", &[b.port]).await;
    f.wait_for("pool.test", 200).await;
    let before = b.connections.load(Ordering::SeqCst);
    for _ in 0..20 {
        json(f.get("pool.test", "/").await).await;
    }
    let opened = b.connections.load(Ordering::SeqCst) - before;
    assert!(opened <= 3, "20 requests opened {opened} connections");
}

#[tokio::test]
async fn upgrade_requests_are_tunnelled() {
    let f = fixture().await;
    f.app("p1", "ws.test", &[backend("ws").await.port]).await;
    f.wait_for("ws.test", 200).await;

    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", f.router_port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /socket HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for message in [&b"ping"[..], b"and again"] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(WAIT, stream.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
}

#[tokio::test]
async fn instances_leave_and_join_the_table_with_bbs_events() {
    let f = fixture().await;
    let (one, two) = (backend("one").await, backend("two").await);
    f.app("p1", "crashy.test", &[one.port]).await;
    f.wait_for("crashy.test", 200).await;

    // A second process mapped to the same host starts: its instance joins the pool.
    f.app("p2", "crashy.test", &[two.port]).await;
    let deadline = Instant::now() + WAIT;
    while json(f.get("crashy.test", "/").await).await["backend"] != "two" {
        assert!(
            Instant::now() < deadline,
            "the new instance never got traffic"
        );
    }

    // A route mapped to a running process takes traffic at once.
    f.bbs
        .update_desired_lrp(
            "p1",
            DesiredLrpUpdate {
                routes: Some(vec!["crashy.test".into(), "renamed.test".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        json(f.wait_for("renamed.test", 200).await).await["backend"],
        "one"
    );

    // Every instance crashes: the route stays known but has no endpoints.
    for process_guid in ["p1", "p2"] {
        let filter = ActualLrpFilter {
            process_guid: Some(process_guid.into()),
            ..Default::default()
        };
        for actual in f.bbs.actual_lrps(filter).await.unwrap() {
            f.bbs
                .crash_actual_lrp(
                    &actual.key,
                    actual.instance_key.as_ref().unwrap(),
                    "APP/PROC/WEB: Exited with status 1",
                )
                .await
                .unwrap();
        }
    }
    f.wait_for("crashy.test", 503).await;
    f.bbs.remove_desired_lrp("p1").await.unwrap();
    f.bbs.remove_desired_lrp("p2").await.unwrap();
    f.wait_for("crashy.test", 404).await;
    f.wait_for("renamed.test", 404).await;
}

#[tokio::test]
async fn each_request_leaves_one_rtr_line_in_the_app_log() {
    let f = fixture().await;
    f.app("p1", "logged.test", &[backend("a").await.port]).await;
    f.wait_for("logged.test", 200).await;
    let response = f
        .http
        .get(f.url("/some/path?q=1"))
        .header("Host", "logged.test")
        .header("User-Agent", "kiln-test/1")
        .header("Referer", "http://from.test/")
        .send()
        .await
        .unwrap();
    let request_id = response.headers()["x-vcap-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body_len = response.bytes().await.unwrap().len();
    let line = f.rtr_line("app-p1", |m| m.contains(&request_id)).await;
    assert_eq!(line.instance_id, "0");
    assert_eq!(line.message_type, kiln_model::logs::MessageType::Out);
    let m = &line.message;
    assert!(m.starts_with("logged.test - ["), "{m}");
    for part in [
        format!(
            "] \"GET /some/path?q=1 HTTP/1.1\" 200 0 {body_len} \"http://from.test/\" \"kiln-test/1\" \"127.0.0.1:"
        ),
        format!(
            "x_forwarded_for:\"127.0.0.1\" x_forwarded_proto:\"http\" vcap_request_id:\"{request_id}\" response_time:"
        ),
        " gorouter_time:".to_string(),
        "app_id:\"app-p1\" app_index:\"0\" instance_id:\"p1-ig-0\" x_cf_routererror:\"-\""
            .to_string(),
    ] {
        assert!(m.contains(&part), "{part:?} missing from {m}");
    }
    let lines = f.logs.read(
        "app-p1",
        &ReadQuery {
            start_time: 0,
            end_time: None,
            limit: 10_000,
            descending: false,
        },
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.message.contains(&request_id))
            .count(),
        1
    );
}

/// A time field of an RTR line (`NAME:SECONDS`), in seconds.
fn seconds_field(line: &str, name: &str) -> f64 {
    let at = line.find(&format!(" {name}:")).unwrap() + name.len() + 2;
    let text = line[at..].split(' ').next().unwrap();
    text.parse()
        .unwrap_or_else(|_| panic!("{name} is not seconds in {line}"))
}

#[tokio::test]
async fn gorouter_time_is_the_response_time_less_the_apps() {
    let f = fixture().await;
    let b = backend("a").await;
    f.app("p1", "timed.test", &[b.port]).await;
    f.wait_for("timed.test", 200).await;
    // A GET (the one pass) and a POST with a body (the phases): each is
    // held by the app for 300 ms, which counts in response_time only.
    for (method, body) in [
        (reqwest::Method::GET, ""),
        (reqwest::Method::POST, "a body"),
    ] {
        let before = b.requests.load(Ordering::SeqCst);
        let request = f
            .http
            .request(method.clone(), f.url("/slow"))
            .header("Host", "timed.test")
            .body(body)
            .send();
        let release = async {
            poll_until("the app has the request", || {
                b.requests.load(Ordering::SeqCst) > before
            })
            .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            b.gate.notify_one();
        };
        let (response, ()) = tokio::join!(request, release);
        let response = response.unwrap();
        assert_eq!(response.status(), 200);
        let request_id = response.headers()["x-vcap-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        response.bytes().await.unwrap();
        let line = f.rtr_line("app-p1", |m| m.contains(&request_id)).await;
        let m = &line.message;
        let total = seconds_field(m, "response_time");
        let router = seconds_field(m, "gorouter_time");
        assert!(total >= 0.3, "{method}: {m}");
        assert!(
            router < total - 0.25,
            "{method}: the app's 300 ms left in: {m}"
        );
    }
}

#[tokio::test]
async fn a_busy_apps_rtr_lines_stay_within_the_log_budget_and_leave_a_quiet_apps_lines() {
    // Room for about 150 RTR lines in all (~700 bytes each).
    let budget = 100 * 1024;
    let f = fixture_with_logs(
        RouterConfig {
            resync_interval: Duration::from_secs(60),
            ..Default::default()
        },
        LogStore::with_max_bytes(10_000, budget),
    )
    .await;
    f.app("quiet", "quiet.test", &[backend("q").await.port])
        .await;
    f.app("busy", "busy.test", &[backend("b").await.port]).await;
    f.wait_for("quiet.test", 200).await;
    f.wait_for("busy.test", 200).await;
    for _ in 0..3 {
        assert_eq!(f.get("quiet.test", "/quiet").await.status(), 200);
    }
    f.rtr_line("app-quiet", |m| m.contains("GET /quiet ")).await;
    for i in 0..600 {
        let response = f.get("busy.test", &format!("/busy/{i}")).await;
        assert_eq!(response.status(), 200);
    }
    f.rtr_line("app-busy", |m| m.contains("GET /busy/599 "))
        .await;
    assert!(f.logs.bytes() <= budget, "{} > {budget}", f.logs.bytes());
    let all = ReadQuery {
        start_time: 0,
        end_time: None,
        limit: 10_000,
        descending: false,
    };
    let quiet = f.logs.read("app-quiet", &all);
    assert_eq!(
        quiet
            .iter()
            .filter(|l| l.message.contains("GET /quiet "))
            .count(),
        3
    );
    // The busy app keeps its newest lines, and far fewer than it sent.
    let busy = f.logs.read("app-busy", &all);
    assert!((50..400).contains(&busy.len()), "{}", busy.len());
    assert!(busy.last().unwrap().message.contains("GET /busy/599 "));
    assert!(f.logs.dropped() >= 200, "{}", f.logs.dropped());
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_requests_in_flight_finish() {
    let mut f = fixture().await;
    let b = backend("slow").await;
    f.app("p1", "slow.test", &[b.port]).await;
    f.wait_for("slow.test", 200).await;

    let before = b.requests.load(Ordering::SeqCst);
    let request = f
        .http
        .get(f.url("/slow"))
        .header("Host", "slow.test")
        .send();
    let in_flight = tokio::spawn(request);
    let requests = b.requests.clone();
    poll_until("the request at the instance", || {
        requests.load(Ordering::SeqCst) > before
    })
    .await;

    let health = format!("http://127.0.0.1:{}/health", f.status_port);
    let ok = f.http.get(&health).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "ok\n");
    assert_eq!(
        f.http
            .get(format!("http://127.0.0.1:{}/other", f.status_port))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    f.shutdown.cancel();
    // While draining, the status port tells load balancers to stop sending.
    let draining = f.http.get(&health).send().await.unwrap();
    assert_eq!(draining.status(), 503);
    let port = f.router_port;
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "the router kept accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    b.gate.notify_one();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(json(response).await["path"], "/slow");
    let router = f.router.take().unwrap();
    tokio::time::timeout(WAIT, router)
        .await
        .expect("the router returns once drained")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn path_routes_take_the_longest_matching_prefix() {
    let f = fixture().await;
    let (root, api, v2) = (
        backend("root").await,
        backend("api").await,
        backend("v2").await,
    );
    f.app("root", "shop.test", &[root.port]).await;
    // As the API sends them: host and path apart.
    f.app("api", "shop.test/api", &[api.port]).await;
    f.app("v2", "shop.test/api/v2", &[v2.port]).await;
    f.app("gone", "gone.test/only", &[]).await;
    // Desired last, so once it is in the table the others are too.
    let deadline = Instant::now() + WAIT;
    while f.get("gone.test", "/only").await.status() != 503 {
        assert!(Instant::now() < deadline, "the path routes never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for (path, expected) in [
        ("/", "root"),
        ("/apis", "root"),
        ("/api", "api"),
        ("/API/orders?id=1", "api"),
        ("/api/v2", "v2"),
        ("/api/v2/x/y", "v2"),
        ("/api/v3", "api"),
    ] {
        let json = json(f.get("shop.test", path).await).await;
        assert_eq!(json["backend"], expected, "{path}");
        assert_eq!(
            json["path"],
            path.split('?').next().unwrap(),
            "the path reaches the app whole"
        );
    }
    let response = f.get("gone.test", "/only/x").await;
    assert_eq!(response.status(), 503, "a path route without instances");
    assert_eq!(f.get("gone.test", "/").await.status(), 404);
}

#[tokio::test]
async fn x_cf_app_instance_picks_one_instance_or_says_why_not() {
    let f = fixture().await;
    let (a, b) = (backend("a").await, backend("b").await);
    let guid = "0f2ab3c4-1234-4abc-9def-00112233aabb";
    f.app_with_guid(guid, "p1", "pick.test", &[a.port, b.port])
        .await;
    let get = |value: String| {
        f.http
            .get(f.url("/"))
            .header("Host", "pick.test")
            .header("X-CF-App-Instance", value)
            .send()
    };
    // Until instance 1 is in the table.
    let deadline = Instant::now() + WAIT;
    while get(format!("{guid}:1")).await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "instance 1 never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..4 {
        let json = json(get(format!("{guid}:1")).await.unwrap()).await;
        assert_eq!(json["backend"], "b", "always instance 1");
    }

    let invalid = get(format!("{guid}:one")).await.unwrap();
    assert_eq!(invalid.status(), 400);
    assert_eq!(
        invalid.headers()["x-cf-routererror"],
        "invalid_cf_app_instance_header"
    );
    assert_eq!(
        invalid.text().await.unwrap(),
        "400 Bad Request: Invalid X-CF-App-Instance Header\n"
    );

    let missing = get(format!("{guid}:7")).await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["x-cf-routererror"], "unknown_route");
    assert_eq!(
        missing.text().await.unwrap(),
        format!(
            "404 Not Found: Requested instance ('7') with guid ('{guid}') does not exist for route ('pick.test')\n"
        )
    );
    let other_app = get("11111111-2222-4333-8444-555555555555:0".into())
        .await
        .unwrap();
    assert_eq!(other_app.status(), 404);
}

#[tokio::test]
async fn an_instance_that_failed_to_dial_is_skipped_for_a_while() {
    let f = fixture_with(RouterConfig {
        // One attempt per request, so a dial to the dead instance shows as a 502.
        max_attempts: 1,
        // Long enough for the requests below even on a busy machine.
        retry_after_failure: Duration::from_millis(1500),
        resync_interval: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let live = backend("live").await;
    let guid = "7f3a2b5c-0d9e-4f4a-9b32-445566778899";
    f.app_with_guid(guid, "p1", "skip.test", &[dead_port(), live.port])
        .await;
    f.wait_for_instance("skip.test", guid, 1).await;
    // Round-robin reaches the dead instance within two requests...
    f.wait_for("skip.test", 502).await;
    // ...then leaves it out while the others take the traffic.
    for _ in 0..6 {
        assert_eq!(json(f.get("skip.test", "/").await).await["backend"], "live");
    }
    // Once the skip is over it is tried again.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(f.get("skip.test", "/").await.status().as_u16());
    }
    assert!(statuses.contains(&502), "tried again: {statuses:?}");
}

#[tokio::test]
async fn an_instance_at_its_connection_limit_gets_no_more_requests() {
    let f = fixture_with(RouterConfig {
        max_conns_per_backend: 1,
        resync_interval: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let b = backend("only").await;
    f.app("p1", "limit.test", &[b.port]).await;
    f.wait_for("limit.test", 200).await;
    let before = b.requests.load(Ordering::SeqCst);

    let slow = tokio::spawn(
        f.http
            .get(f.url("/slow"))
            .header("Host", "limit.test")
            .send(),
    );
    poll_until("the slow request to reach the instance", || {
        b.requests.load(Ordering::SeqCst) == before + 1
    })
    .await;
    let refused = f.get("limit.test", "/").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.headers()["x-cf-routererror"],
        "Connection Limit Reached"
    );
    assert_eq!(
        refused.text().await.unwrap(),
        "503 Service Unavailable: Requested route ('limit.test') has reached the connection limit.\n"
    );
    assert_eq!(b.requests.load(Ordering::SeqCst), before + 1);

    b.gate.notify_one();
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    // The finished request no longer counts.
    assert_eq!(f.get("limit.test", "/").await.status(), 200);
}

#[tokio::test]
async fn sticky_sessions_pin_an_instance_and_move_when_it_is_gone() {
    let f = fixture().await;
    let (a, b) = (backend("a").await, backend("b").await);
    f.app("p1", "sticky.test", &[a.port, b.port]).await;
    f.wait_for("sticky.test", 200).await;

    let started = f.get("sticky.test", "/session").await;
    let pins: Vec<String> = started
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .filter(|c| c.starts_with("__VCAP_ID__="))
        .collect();
    let first = json(started).await["backend"].as_str().unwrap().to_string();
    let index = if first == "a" { 0 } else { 1 };
    assert_eq!(
        pins,
        [format!(
            "__VCAP_ID__=p1-ig-{index}; Path=/; HttpOnly; Secure; SameSite=Lax"
        )]
    );

    let with_cookies = |instance: String| {
        f.http
            .get(f.url("/"))
            .header("Host", "sticky.test")
            .header("Cookie", format!("JSESSIONID=s1; __VCAP_ID__={instance}"))
            .send()
    };
    for _ in 0..6 {
        let response = with_cookies(format!("p1-ig-{index}")).await.unwrap();
        assert!(
            response.headers().get("set-cookie").is_none(),
            "already pinned there"
        );
        assert_eq!(json(response).await["backend"], first.as_str());
    }

    // The pinned instance crashes: the next request goes to the other one,
    // which the response pins.
    let filter = ActualLrpFilter {
        process_guid: Some("p1".into()),
        ..Default::default()
    };
    let pinned = f
        .bbs
        .actual_lrps(filter)
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.key.index == index)
        .unwrap();
    f.bbs
        .crash_actual_lrp(
            &pinned.key,
            pinned.instance_key.as_ref().unwrap(),
            "APP/PROC/WEB: Exited with status 1",
        )
        .await
        .unwrap();
    let other = 1 - index;
    let deadline = Instant::now() + WAIT;
    loop {
        let response = with_cookies(format!("p1-ig-{index}")).await.unwrap();
        let pin = response
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_string());
        let backend = json(response).await["backend"]
            .as_str()
            .unwrap()
            .to_string();
        if backend != first {
            assert_eq!(
                pin.as_deref(),
                Some(format!("__VCAP_ID__=p1-ig-{other}; Path=/; HttpOnly").as_str())
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never moved off the crashed instance"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `raw` on a fresh connection and returns the status line of the
/// answer (empty if the router just closed the connection).
async fn raw_exchange(port: u16, raw: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // The router may answer and close before it read everything.
    let _ = stream.write_all(raw).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or("").to_string()
}

#[tokio::test]
async fn malformed_requests_are_refused_and_never_reach_an_instance() {
    let f = fixture().await;
    let b = backend("b").await;
    f.app("p1", "bad.test", &[b.port]).await;
    f.wait_for("bad.test", 200).await;
    let before = b.requests.load(Ordering::SeqCst);

    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: bad.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: bad.test\r\n\r\n",
        "a".repeat(70_000)
    );
    let cases: [(&str, &[u8], &str); 4] = [
        ("oversized headers", huge_header.as_bytes(), "431"),
        ("oversized URI", long_uri.as_bytes(), "414"),
        ("a bad request line", b"NOT A REQUEST\r\n\r\n", "400"),
        (
            "two different Content-Lengths",
            b"POST / HTTP/1.1\r\nHost: bad.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            "400",
        ),
    ];
    for (what, raw, status) in cases {
        let line = raw_exchange(f.router_port, raw).await;
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {line:?}"
        );
    }
    assert_eq!(
        b.requests.load(Ordering::SeqCst),
        before,
        "nothing reached the instance"
    );

    // Content-Length next to Transfer-Encoding: chunked, the smuggling
    // shape. The router frames it as RFC 9112 says (chunked wins), sends the
    // instance a request framed its own way, and closes the connection
    // after answering, so the bytes behind it are never read as a request.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", f.router_port))
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /first HTTP/1.1\r\nHost: bad.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /second HTTP/1.1\r\nHost: bad.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(
        text.contains(r#""path":"/first""#) && text.contains(r#""received":0"#),
        "{text}"
    );
    assert_eq!(b.requests.load(Ordering::SeqCst), before + 1);
    assert_eq!(
        b.received.load(Ordering::SeqCst),
        0,
        "no body bytes reached the instance"
    );

    // Other requests are unaffected.
    assert_eq!(f.get("bad.test", "/").await.status(), 200);
}

#[tokio::test]
async fn a_slow_loris_client_is_cut_off() {
    let f = fixture_with(RouterConfig {
        header_read_timeout: Duration::from_millis(300),
        resync_interval: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let b = backend("b").await;
    f.app("p1", "loris.test", &[b.port]).await;
    f.wait_for("loris.test", 200).await;

    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", f.router_port))
        .await
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: loris.test\r\nX-A: 1\r\n")
        .await
        .unwrap();
    // Never finishes its headers: the router closes the connection.
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the router closed the connection")
        .ok();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text:?}"
    );
    // Others are served.
    let response = reqwest::Client::new()
        .get(f.url("/"))
        .header("Host", "loris.test")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Reads one response with a `Content-Length` body off `stream`; returns
/// its status line.
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "connection closed before a whole response");
        data.extend_from_slice(&buf[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .expect("a content-length");
        if data.len() >= end + 4 + length {
            assert_eq!(data.len(), end + 4 + length, "nothing after the response");
            return head.lines().next().unwrap().to_string();
        }
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_close_after_the_idle_timeout_not_the_header_timeout() {
    let header_read = Duration::from_millis(300);
    let idle = Duration::from_secs(4);
    let f = fixture_with(RouterConfig {
        header_read_timeout: header_read,
        client_idle_timeout: idle,
        resync_interval: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let b = backend("b").await;
    f.app("p1", "idle.test", &[b.port]).await;
    f.wait_for("idle.test", 200).await;
    let request = b"GET / HTTP/1.1\r\nHost: idle.test\r\n\r\n";

    // A gap longer than the header read timeout (and shorter than the idle
    // timeout) between two requests on one connection.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", f.router_port))
        .await
        .unwrap();
    stream.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut stream).await, "HTTP/1.1 200 OK");
    tokio::time::sleep(header_read * 3).await;
    stream.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut stream).await, "HTTP/1.1 200 OK");

    // Then nothing: the router closes it once the idle timeout is over.
    let idle_from = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(idle + WAIT, stream.read_to_end(&mut rest))
        .await
        .expect("the router closed the idle connection")
        .ok();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    let waited = idle_from.elapsed();
    assert!(
        waited >= idle - Duration::from_millis(200),
        "closed after {waited:?}, before the idle timeout"
    );

    // A request whose head stalls after an idle gap is cut off by the
    // header read timeout, counted from its first byte, long before the
    // idle timeout would end the connection.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", f.router_port))
        .await
        .unwrap();
    stream.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut stream).await, "HTTP/1.1 200 OK");
    tokio::time::sleep(header_read * 2).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: idle.test\r\n")
        .await
        .unwrap();
    let stalled_from = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut rest))
        .await
        .expect("the router closed the stalled connection")
        .ok();
    let waited = stalled_from.elapsed();
    assert!(
        waited < idle - header_read * 2,
        "a stalled head was cut off only after {waited:?}"
    );
}

/// An `nc`-style instance: writes its whole response as soon as a client
/// connects, before reading anything, then reads what came and closes (as
/// Cloud Foundry's binary-buildpack fixtures do with `nc -l`).
async fn early_answering_backend() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nearly\n",
                    )
                    .await;
                let mut buf = [0u8; 4096];
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_response_that_arrives_before_the_request_is_read_is_delivered() {
    let f = fixture().await;
    let port = early_answering_backend().await;
    f.app("p1", "early.test", &[port]).await;
    f.wait_for("early.test", 200).await;
    let mut failures = Vec::new();
    for _ in 0..60 {
        let response = f.get("early.test", "/").await;
        let status = response.status();
        let router_error = response
            .headers()
            .get("x-cf-routererror")
            .map(|v| v.to_str().unwrap().to_string());
        let body = response.text().await.unwrap();
        if status != 200 || body != "early\n" {
            failures.push((status, router_error, body));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 60 failed: {:?}",
        failures.len(),
        failures.first()
    );
}

/// An instance that answers every connection with `reply` and closes.
async fn scripted_backend(reply: &'static [u8]) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(reply).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_garbage_answer_is_a_502_and_a_cut_response_ends_the_body() {
    let f = fixture_with(RouterConfig {
        max_attempts: 1,
        resync_interval: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let garbage = scripted_backend(b"this is not http\r\n\r\n").await;
    let cut = scripted_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b").await;
    f.app("p1", "garbage.test", &[garbage]).await;
    f.app("p2", "cut.test", &[cut]).await;
    f.wait_for("cut.test", 200).await;

    let response = f.wait_for("garbage.test", 502).await;
    assert!(
        response.headers()["x-cf-routererror"]
            .to_str()
            .unwrap()
            .starts_with("endpoint_failure ("),
        "{:?}",
        response.headers()
    );
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        response.text().await.unwrap(),
        "502 Bad Gateway: Registered endpoint failed to handle the request.\n"
    );

    // Headers already went out: the client sees the body end early, not a
    // made-up complete response.
    let response = f.get("cut.test", "/").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.bytes().await.is_err(),
        "the body must not look complete"
    );

    // Neither affects the next request.
    let b = backend("fine").await;
    f.app("p3", "fine.test", &[b.port]).await;
    f.wait_for("fine.test", 200).await;
}

#[tokio::test]
async fn connection_close_is_honoured_and_a_client_that_leaves_mid_stream_is_logged() {
    let f = fixture().await;
    let b = backend("b").await;
    f.app("p1", "close.test", &[b.port]).await;
    f.wait_for("close.test", 200).await;

    // `Connection: close`: one answer, then the router closes.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", f.router_port))
        .await
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: close.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the router closed the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("connection: close"), "{text}");

    // A client that goes away while the instance is still streaming: the
    // router drops the response (and logs it) and goes on serving.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", f.router_port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /gated HTTP/1.1\r\nHost: close.test\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 512];
    let n = stream.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200 OK"));
    drop(stream);
    // The RTR line is written once the abandoned response is dropped.
    f.rtr_line("app-p1", |l| l.contains("\"GET /gated HTTP/1.1\" 200"))
        .await;
    assert_eq!(f.get("close.test", "/").await.status(), 200);
    b.gate.notify_one();
}

#[tokio::test]
async fn chunked_answers_are_decoded_informational_ones_skipped_and_closed_connections_redialled() {
    let f = fixture().await;
    // Keep-alive by its headers, yet the instance closes each connection
    // after one answer: every request after the first meets a pooled
    // connection the instance has closed.
    let port = scripted_backend(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
    )
    .await;
    f.app("p1", "chunked.test", &[port]).await;
    f.wait_for("chunked.test", 200).await;
    for round in 0..20 {
        let response = f.get("chunked.test", "/").await;
        assert_eq!(response.status(), 200, "round {round}");
        assert!(response.headers().get("content-length").is_none());
        assert_eq!(
            response.text().await.unwrap(),
            "hello world",
            "round {round}"
        );
    }
}

/// Writes `raw` on a new connection and reads until the router closes it.
async fn exchange_to_close(port: u16, raw: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // The router may answer and close before it read everything.
    let _ = stream.write_all(raw).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the router closed the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn smuggling_shapes_are_refused_and_nothing_behind_them_is_served() {
    let f = fixture().await;
    let b = backend("b").await;
    f.app("p1", "smuggle.test", &[b.port]).await;
    f.wait_for("smuggle.test", 200).await;
    let before = b.requests.load(Ordering::SeqCst);

    // Refused from the head alone: 400, the connection closed, the request
    // behind it never read, and nothing reaches the instance.
    let behind = "GET /second HTTP/1.1\r\nHost: smuggle.test\r\n\r\n";
    for (what, head) in [
        (
            "a transfer coding other than chunked last",
            "POST / HTTP/1.1\r\nHost: smuggle.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        (
            "an unknown transfer coding",
            "POST / HTTP/1.1\r\nHost: smuggle.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "chunked twice",
            "POST / HTTP/1.1\r\nHost: smuggle.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            "POST / HTTP/1.0\r\nHost: smuggle.test\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "a Content-Length list that disagrees",
            "POST / HTTP/1.1\r\nHost: smuggle.test\r\nContent-Length: 0, 5\r\n\r\nhello",
        ),
        (
            "a signed Content-Length",
            "POST / HTTP/1.1\r\nHost: smuggle.test\r\nContent-Length: +5\r\n\r\nhello",
        ),
        (
            "two Hosts",
            "GET / HTTP/1.1\r\nHost: smuggle.test\r\nHost: other.test\r\n\r\n",
        ),
        (
            "an obs-fold",
            "GET / HTTP/1.1\r\nHost: smuggle.test\r\nX-A: 1\r\n folded\r\n\r\n",
        ),
        (
            "a space before the colon",
            "GET / HTTP/1.1\r\nHost: smuggle.test\r\nContent-Length : 5\r\n\r\nhello",
        ),
    ] {
        let text = exchange_to_close(f.router_port, format!("{head}{behind}").as_bytes()).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{what}: {text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{what}: {text}");
    }
    assert_eq!(
        b.requests.load(Ordering::SeqCst),
        before,
        "nothing reached the instance"
    );

    // Bad chunked framing found while the body streams: the request
    // fails, the connection closes, the request behind it is never read.
    for (what, body) in [
        (
            "a chunk size past 64 bits",
            "10000000000000000\r\nhello\r\n0\r\n\r\n",
        ),
        ("a chunk size with a sign", "+5\r\nhello\r\n0\r\n\r\n"),
        ("a chunk size after whitespace", " 5\r\nhello\r\n0\r\n\r\n"),
        (
            "a control character in an extension",
            "5;a=\u{1}\r\nhello\r\n0\r\n\r\n",
        ),
        ("a bare CR in an extension", "5;a=\rb\r\nhello\r\n0\r\n\r\n"),
        ("data longer than its chunk", "3\r\nhello\r\n0\r\n\r\n"),
    ] {
        let raw = format!(
            "POST /first HTTP/1.1\r\nHost: smuggle.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}{behind}"
        );
        let text = exchange_to_close(f.router_port, raw.as_bytes()).await;
        assert!(!text.starts_with("HTTP/1.1 200"), "{what}: {text}");
        assert!(text.matches("HTTP/1.1 ").count() <= 1, "{what}: {text}");
        assert!(!text.contains("/second"), "{what}: {text}");
    }

    // Other requests are unaffected.
    assert_eq!(f.get("smuggle.test", "/").await.status(), 200);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let f = fixture().await;
    let b = backend("b").await;
    f.app("p1", "pipe.test", &[b.port]).await;
    f.wait_for("pipe.test", 200).await;
    let raw = concat!(
        "GET /one HTTP/1.1\r\nHost: pipe.test\r\n\r\n",
        "POST /two HTTP/1.1\r\nHost: pipe.test\r\nContent-Length: 5\r\n\r\nhello",
        "POST /three HTTP/1.1\r\nHost: pipe.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "GET /four HTTP/1.1\r\nHost: unknown.test\r\n\r\n",
        "GET /five HTTP/1.1\r\nHost: pipe.test\r\nConnection: close\r\n\r\n",
    );
    let text = exchange_to_close(f.router_port, raw.as_bytes()).await;
    let responses: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(responses.len(), 5, "{text}");
    let expected = [
        ("200", r#""path":"/one""#, r#""received":0"#),
        ("200", r#""path":"/two""#, r#""received":5"#),
        ("200", r#""path":"/three""#, r#""received":3"#),
        ("404", "Requested route ('unknown.test') does not exist", ""),
        ("200", r#""path":"/five""#, r#""received":0"#),
    ];
    for (response, (status, path, received)) in responses.iter().zip(expected) {
        assert!(response.starts_with(status), "{path}: {response}");
        assert!(response.contains(path), "{path}: {response}");
        assert!(response.contains(received), "{path}: {response}");
    }
    assert!(text.contains("connection: close"), "{text}");
}

#[tokio::test]
async fn expect_100_continue_gets_its_interim_answer_before_the_body_is_read() {
    let f = fixture().await;
    let b = backend("b").await;
    f.app("p1", "expect.test", &[b.port]).await;
    f.wait_for("expect.test", 200).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", f.router_port))
        .await
        .unwrap();
    stream
        .write_all(b"POST /up HTTP/1.1\r\nHost: expect.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await
        .unwrap();
    let mut interim = vec![0u8; b"HTTP/1.1 100 Continue\r\n\r\n".len()];
    tokio::time::timeout(WAIT, stream.read_exact(&mut interim))
        .await
        .expect("100 Continue before the body")
        .unwrap();
    assert_eq!(interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").await.unwrap();
    let status = read_response(&mut stream).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(b.received.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn http_1_0_clients_get_close_delimited_bodies_and_keep_alive_when_asked() {
    let f = fixture().await;
    let b = backend("b").await;
    f.app("p1", "old.test", &[b.port]).await;
    f.wait_for("old.test", 200).await;

    // A streamed body of unknown length: no chunked to HTTP/1.0, the end
    // of the connection ends it.
    let text = exchange_to_close(
        f.router_port,
        b"GET /download?bytes=100000 HTTP/1.0\r\nHost: old.test\r\n\r\n",
    )
    .await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert_eq!(body.len(), 100_000);

    // `Connection: keep-alive`: a known length, and the connection stays.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", f.router_port))
        .await
        .unwrap();
    for _ in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: old.test\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut stream).await, "HTTP/1.0 200 OK");
    }
}

//! The router against the real in-process BBS and real TCP backends on
//! loopback: routing by host, round-robin, Gorouter's headers and errors,
//! retries only before a backend was reached, streaming, table updates.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kiln_bbs::{ActualLrpFilter, Bbs, BbsClient};
use kiln_logs::{LogStore, ReadQuery};
use kiln_model::bbs::*;
use kiln_router::{RouterConfig, run};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A backend that answers with JSON naming itself, the headers it got and
/// how many body bytes arrived.
async fn backend(name: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| async move {
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
                            }
                        }
                        let json = serde_json::json!({"backend": name, "headers": headers, "received": received});
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(json.to_string()),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn desired(process_guid: &str, instances: u32, host: &str) -> DesiredLrp {
    DesiredLrp {
        process_guid: process_guid.into(),
        domain: "cf-apps".into(),
        instances,
        rootfs: "preloaded:s".into(),
        memory_mb: 64,
        disk_mb: 64,
        env: vec![],
        setup: vec![],
        action: RunAction {
            path: "x".into(),
            args: vec![],
            env: vec![],
            dir: None,
            user: "vcap".into(),
        },
        health_check: HealthCheck::Port,
        start_timeout_ms: 60_000,
        routes: vec![host.into()],
        log_guid: format!("app-{process_guid}"),
        log_source: "APP/PROC/WEB".into(),
        annotation: String::new(),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    bbs: Bbs,
    logs: Arc<LogStore>,
    router_port: u16,
    shutdown: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let bbs = Bbs::open(&dir.path().join("bbs.sqlite")).await.unwrap();
    let logs = Arc::new(LogStore::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router_port = listener.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    let config = RouterConfig {
        resync_interval: Duration::from_secs(60),
        ..Default::default()
    };
    tokio::spawn(run(
        config,
        listener,
        Arc::new(bbs.clone()),
        logs.clone(),
        shutdown.clone(),
    ));
    Fixture {
        _dir: dir,
        bbs,
        logs,
        router_port,
        shutdown,
    }
}

impl Fixture {
    /// Desires `process_guid` with one instance per port and reports each RUNNING there.
    async fn app(&self, process_guid: &str, host: &str, ports: &[u16]) {
        self.bbs
            .desire_lrp(desired(process_guid, ports.len() as u32, host))
            .await
            .unwrap();
        for (index, port) in ports.iter().enumerate() {
            let key = ActualLrpKey {
                process_guid: process_guid.into(),
                index: index as u32,
                domain: "cf-apps".into(),
            };
            let instance_key = ActualLrpInstanceKey {
                instance_guid: format!("{process_guid}-ig-{index}"),
                cell_id: "cell".into(),
            };
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

    async fn get(&self, host: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!(
                "http://127.0.0.1:{}/some/path?q=1",
                self.router_port
            ))
            .header("Host", host)
            .header("X-CF-InstanceID", "client-forged")
            .send()
            .await
            .unwrap()
    }

    /// Polls until `host` answers `status` (the table follows events).
    async fn wait_for(&self, host: &str, status: u16) -> reqwest::Response {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let response = self.get(host).await;
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
}

#[tokio::test]
async fn routes_by_host_round_robin_with_gorouter_headers() {
    let f = fixture().await;
    let (a, b, other) = (
        backend("a").await,
        backend("b").await,
        backend("other").await,
    );
    f.app("p1", "app.test", &[a, b]).await;
    f.app("p2", "other.test", &[other]).await;
    f.wait_for("app.test", 200).await;

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let json: serde_json::Value = f.get("APP.test:8080").await.json().await.unwrap();
        seen.insert(json["backend"].as_str().unwrap().to_string());
        let headers = &json["headers"];
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-cf-applicationid"], "app-p1");
        assert!(
            headers["x-cf-instanceid"]
                .as_str()
                .unwrap()
                .starts_with("p1-ig-"),
            "client's forged id replaced: {headers}"
        );
        assert!(headers["x-cf-instanceindex"].is_string());
        assert_eq!(headers["x-vcap-request-id"].as_str().unwrap().len(), 36);
        assert!(headers["x-request-start"].is_string());
        assert_eq!(
            headers["host"], "APP.test:8080",
            "the Host header reaches the app unchanged"
        );
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["a", "b"],
        "round-robin over both instances"
    );
    let json: serde_json::Value = f.get("other.test").await.json().await.unwrap();
    assert_eq!(json["backend"], "other");

    let response = f.get("app.test").await;
    assert!(response.headers().contains_key("x-vcap-request-id"));

    // One RTR access line per request, tagged with the app.
    let lines = f.logs.read(
        "app-p1",
        &ReadQuery {
            start_time: 0,
            end_time: None,
            limit: 100,
            descending: false,
        },
    );
    assert!(lines.iter().any(
        |l| l.source_type == "RTR" && l.message.contains("\"GET /some/path?q=1 HTTP/1.1\" 200")
    ));
}

#[tokio::test]
async fn unknown_hosts_get_404_and_routes_without_instances_503() {
    let f = fixture().await;
    let response = f.get("nobody.test").await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-cf-routererror"], "unknown_route");
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
        "Requested route ('starting.test') has no available endpoints.\n"
    );
}

#[tokio::test]
async fn a_refused_instance_is_retried_on_another_and_all_dead_is_502() {
    let f = fixture().await;
    let live = backend("live").await;
    f.app("p1", "mixed.test", &[dead_port(), live]).await;
    f.wait_for("mixed.test", 200).await;
    for _ in 0..4 {
        let response = f.get("mixed.test").await;
        assert_eq!(
            response.status(),
            200,
            "a dial error is retried on the live instance"
        );
    }

    f.app("p2", "dead.test", &[dead_port(), dead_port()]).await;
    let response = f.wait_for("dead.test", 502).await;
    assert!(
        response.headers()["x-cf-routererror"]
            .to_str()
            .unwrap()
            .starts_with("endpoint_failure (")
    );
    assert_eq!(
        response.text().await.unwrap(),
        "502 Bad Gateway: Registered endpoint failed to handle the request.\n"
    );
}

#[tokio::test]
async fn a_large_body_streams_through() {
    let f = fixture().await;
    f.app("p1", "upload.test", &[backend("sink").await]).await;
    f.wait_for("upload.test", 200).await;
    let body = vec![7u8; 20 * 1024 * 1024];
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/upload", f.router_port))
        .header("Host", "upload.test")
        .body(body)
        .send()
        .await
        .unwrap();
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(json["received"], 20 * 1024 * 1024);
}

#[tokio::test]
async fn a_crashed_instance_leaves_the_table() {
    let f = fixture().await;
    f.app("p1", "crashy.test", &[backend("only").await]).await;
    f.wait_for("crashy.test", 200).await;
    let filter = ActualLrpFilter {
        process_guid: Some("p1".into()),
        ..Default::default()
    };
    let actual = f.bbs.actual_lrps(filter).await.unwrap().remove(0);
    f.bbs
        .crash_actual_lrp(
            &actual.key,
            actual.instance_key.as_ref().unwrap(),
            "APP/PROC/WEB: Exited with status 1",
        )
        .await
        .unwrap();
    f.wait_for("crashy.test", 503).await;
    f.bbs.remove_desired_lrp("p1").await.unwrap();
    f.wait_for("crashy.test", 404).await;
}

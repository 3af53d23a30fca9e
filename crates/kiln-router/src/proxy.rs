//! The request path: host lookup, instance choice, forwarding, errors.
//!
//! Each request is streamed: the client's body goes to the instance as it
//! arrives and the instance's response goes back as it is produced; nothing
//! is buffered whole. Connections to instances are kept alive and reused
//! (hyper-util's pooled client), as Gorouter's BOSH job configures it.
//! WebSocket (and other `Upgrade`) requests are tunnelled once the instance
//! answers `101 Switching Protocols`.
//!
//! Architecture invariant: nothing here reads the BBS or a database; a
//! request reads one snapshot of the [`RouteTable`](crate::RouteTable).

use crate::RouterConfig;
use crate::access_log::{AccessRecord, LoggedBody};
use crate::sync::SharedTable;
use crate::table::{Endpoint, normalize_host};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use kiln_logs::LogSink;
use std::convert::Infallible;
use std::error::Error as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// What the proxy answers with: an instance's streamed body or a router error.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

const X_VCAP_REQUEST_ID: &str = "x-vcap-request-id";
const X_CF_ROUTER_ERROR: &str = "x-cf-routererror";
const X_CF_APPLICATION_ID: &str = "x-cf-applicationid";
const X_CF_INSTANCE_ID: &str = "x-cf-instanceid";
const X_CF_INSTANCE_INDEX: &str = "x-cf-instanceindex";
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_REQUEST_START: &str = "x-request-start";

/// Headers that describe one connection, not the message, and so are not
/// forwarded (RFC 9110 §7.6.1). hyper frames each side's body itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Idle connections to instances are closed after this (Go's transport default).
const BACKEND_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per instance (Gorouter's BOSH template: 100).
const BACKEND_MAX_IDLE: usize = 100;

/// The proxy: a table to route by, a pool of connections to instances, and
/// the log sink for access lines.
pub struct Proxy {
    config: RouterConfig,
    table: SharedTable,
    logs: Arc<dyn LogSink>,
    client: Client<HttpConnector, ForwardBody>,
    /// Cancelled when the drain after shutdown is over: ends connections and
    /// tunnels that are still open.
    hard_stop: CancellationToken,
}

impl Proxy {
    pub fn new(config: RouterConfig, table: SharedTable, logs: Arc<dyn LogSink>) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.dial_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(BACKEND_IDLE_TIMEOUT)
            .pool_max_idle_per_host(BACKEND_MAX_IDLE)
            // The client's own Host header is forwarded, never the instance's address.
            .set_host(false)
            .build(connector);
        Proxy {
            config,
            table,
            logs,
            client,
            hard_stop: CancellationToken::new(),
        }
    }

    /// Ends every connection and tunnel still open (after the drain).
    pub(crate) fn stop_now(&self) {
        self.hard_stop.cancel();
    }

    /// Serves one client connection (HTTP/1.1 with keep-alive) until it
    /// closes. On `shutdown` the request in flight is finished first, unless
    /// the drain runs out.
    pub(crate) async fn serve_connection(
        self: Arc<Self>,
        stream: TcpStream,
        client_addr: SocketAddr,
        shutdown: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        let proxy = self.clone();
        let service = hyper::service::service_fn(move |request| {
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(proxy.handle(request, client_addr).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    result = connection.as_mut() => result,
                    _ = self.hard_stop.cancelled() => return,
                }
            }
        };
        if let Err(error) = result {
            tracing::debug!(%error, %client_addr, "router client connection ended with an error");
        }
    }

    pub(crate) async fn handle(
        &self,
        mut request: Request<Incoming>,
        client_addr: SocketAddr,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let received_at = time::OffsetDateTime::now_utc();
        let request_id = uuid::Uuid::new_v4().to_string();
        // Like Go's net/http: an absolute-form target names the host,
        // otherwise the Host header does.
        let raw_host = request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                request
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let host = normalize_host(&raw_host);
        // A Host equal to the client's own address is what some load
        // balancers fill in for HTTP/1.0 requests without one; Gorouter
        // treats it as empty rather than reveal the balancer's address.
        if host.is_empty() || host == normalize_host(&client_addr.ip().to_string()) {
            return error_response(
                StatusCode::BAD_REQUEST,
                "empty_host",
                "400 Bad Request: Request had empty Host header\n".into(),
                Some("public,max-age=2"),
                &request_id,
            );
        }
        let table = self.table.snapshot();
        let Some(pool) = table.lookup(&host) else {
            return error_response(
                StatusCode::NOT_FOUND,
                "unknown_route",
                format!("404 Not Found: Requested route ('{raw_host}') does not exist.\n"),
                Some("no-cache, no-store"),
                &request_id,
            );
        };
        if pool.endpoints.is_empty() {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_endpoints",
                format!(
                    "503 Service Unavailable: Requested route ('{raw_host}') has no available endpoints.\n"
                ),
                Some("public,max-age=2"),
                &request_id,
            );
        }

        let upgrade = upgrade_protocol(request.headers())
            .map(|protocol| (protocol, hyper::upgrade::on(&mut request)));
        let (parts, body) = request.into_parts();
        let headers = forwarded_headers(
            &parts.headers,
            &raw_host,
            client_addr,
            &request_id,
            upgrade.as_ref().map(|(protocol, _)| protocol),
        );
        let request_bytes = Arc::new(AtomicU64::new(0));
        let record = |endpoint: &Endpoint, router_error: Option<String>| AccessRecord {
            host: raw_host.clone(),
            received_at,
            started,
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            proto: format!("{:?}", parts.version),
            referer: header_str(&parts.headers, header::REFERER),
            user_agent: header_str(&parts.headers, header::USER_AGENT),
            client_addr,
            x_forwarded_for: header_str(&headers, HeaderName::from_static(X_FORWARDED_FOR))
                .unwrap_or_default(),
            x_forwarded_proto: header_str(&headers, HeaderName::from_static(X_FORWARDED_PROTO))
                .unwrap_or_default(),
            request_id: request_id.clone(),
            request_bytes: request_bytes.clone(),
            endpoint: endpoint.clone(),
            router_error,
        };

        // The body waits here between attempts: an attempt that fails
        // before hyper read any of it hands it back (see `ForwardBody`).
        let slot = Arc::new(Mutex::new(Some(body)));
        let mut failure: Option<(Endpoint, String)> = None;
        let max_attempts = self.config.max_attempts.max(1);
        for endpoint in pool.attempt_order().take(max_attempts) {
            let Some(body) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                break;
            };
            let body = ForwardBody {
                inner: Some(body),
                started: false,
                slot: slot.clone(),
                bytes: request_bytes.clone(),
            };
            let outgoing =
                match outgoing_request(&parts.method, &parts.uri, &headers, endpoint, body) {
                    Ok(outgoing) => outgoing,
                    Err(error) => {
                        failure = Some((endpoint.clone(), error));
                        break;
                    }
                };
            let error = match tokio::time::timeout(
                self.config.request_timeout,
                self.client.request(outgoing),
            )
            .await
            {
                Ok(Ok(response)) => {
                    return self.respond(
                        response,
                        upgrade.map(|(_, on_upgrade)| on_upgrade),
                        record(endpoint, None),
                        &request_id,
                    );
                }
                Ok(Err(error)) => error,
                Err(_) => {
                    let why = format!(
                        "no response from {} within {}s",
                        endpoint.addr,
                        self.config.request_timeout.as_secs()
                    );
                    failure = Some((endpoint.clone(), why));
                    break;
                }
            };
            let why = describe(&error, endpoint);
            // Retry on another instance only when the request cannot have
            // reached this one: the connection was never made (a dial
            // error). Once bytes may have reached an app, sending them
            // again could repeat a non-idempotent request (a POST that
            // charges a card, say) without the client knowing, so it gets
            // a 502 and decides itself. Gorouter's one exception is kept:
            // an idempotent request whose connection was closed before any
            // response (typically a kept-alive connection the app had just
            // timed out) and whose body was never read. Either way the body
            // must be back in `slot`, or there is nothing to resend.
            let body_back = slot.lock().unwrap_or_else(|e| e.into_inner()).is_some();
            let retryable = body_back
                && (error.is_connect()
                    || (is_idempotent(&parts.method, &parts.headers)
                        && is_closed_before_response(&error)));
            tracing::debug!(host, endpoint = %endpoint.addr, error = %why, retryable, "instance failed the request");
            failure = Some((endpoint.clone(), why));
            if !retryable {
                break;
            }
        }

        let (endpoint, why) = failure.unwrap_or_else(|| {
            // Unreachable: a non-empty pool gives at least one attempt.
            (pool.endpoints[0].clone(), "no attempt made".to_string())
        });
        let router_error = format!("endpoint_failure ({why})");
        tracing::info!(host, endpoint = %endpoint.addr, error = %why, "no instance could handle the request");
        record(&endpoint, Some(router_error.clone())).emit(
            self.logs.as_ref(),
            StatusCode::BAD_GATEWAY.as_u16(),
            0,
        );
        error_response(
            StatusCode::BAD_GATEWAY,
            &router_error,
            "502 Bad Gateway: Registered endpoint failed to handle the request.\n".into(),
            None,
            &request_id,
        )
    }

    /// The instance's response as the client gets it. A `101` to an upgrade
    /// request also starts the tunnel between the two upgraded connections.
    fn respond(
        &self,
        mut response: Response<Incoming>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        record: AccessRecord,
        request_id: &str,
    ) -> Response<ProxyBody> {
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let tunnel = match client_upgrade {
            Some(client_upgrade) if switching => {
                Some((client_upgrade, hyper::upgrade::on(&mut response)))
            }
            _ => None,
        };
        let (mut head, body) = response.into_parts();
        let upgrade = head.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut head.headers);
        if let (Some(_), Some(protocol)) = (&tunnel, upgrade) {
            head.headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            head.headers.insert(header::UPGRADE, protocol);
        }
        head.headers
            .insert(X_VCAP_REQUEST_ID, header_value(request_id));
        if let Some((client_upgrade, backend_upgrade)) = tunnel {
            let hard_stop = self.hard_stop.clone();
            let endpoint = record.endpoint.addr.clone();
            tokio::spawn(async move {
                let (client, backend) = match tokio::join!(client_upgrade, backend_upgrade) {
                    (Ok(client), Ok(backend)) => (client, backend),
                    (client, backend) => {
                        tracing::debug!(
                            endpoint,
                            client_ok = client.is_ok(),
                            backend_ok = backend.is_ok(),
                            "upgrade did not complete"
                        );
                        return;
                    }
                };
                let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
                tokio::select! {
                    _ = hard_stop.cancelled() => {}
                    result = tokio::io::copy_bidirectional(&mut client, &mut backend) => {
                        if let Err(error) = result {
                            tracing::debug!(endpoint, %error, "upgraded connection ended with an error");
                        }
                    }
                }
            });
        }
        let status = head.status.as_u16();
        Response::from_parts(
            head,
            LoggedBody::new(body, status, record, self.logs.clone()).boxed(),
        )
    }
}

/// The client's request body on its way to an instance. It counts the bytes
/// (for the access log) and, if it is dropped before hyper read any of it —
/// the connection to the instance never came up — it puts the client's body
/// back into `slot`, so the next attempt can send it.
pub(crate) struct ForwardBody {
    inner: Option<Incoming>,
    started: bool,
    slot: Arc<Mutex<Option<Incoming>>>,
    bytes: Arc<AtomicU64>,
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.started = true;
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for ForwardBody {
    fn drop(&mut self) {
        if !self.started
            && let Some(body) = self.inner.take()
        {
            *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
        }
    }
}

/// The protocol a client asks to switch to (`Connection: upgrade` plus
/// `Upgrade: <protocol>`), if it does.
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// The client's headers as every instance receives them: Gorouter's
/// additions, the client's claims about instances removed. The per-instance
/// headers are added by [`outgoing_request`].
fn forwarded_headers(
    client: &HeaderMap,
    raw_host: &str,
    client_addr: SocketAddr,
    request_id: &str,
    upgrade: Option<&HeaderValue>,
) -> HeaderMap {
    let mut headers = client.clone();
    strip_hop_by_hop(&mut headers);
    for name in [X_CF_APPLICATION_ID, X_CF_INSTANCE_ID, X_CF_INSTANCE_INDEX] {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    headers.insert(header::HOST, header_value(raw_host));

    let client_ip = client_addr.ip().to_string();
    let existing: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .collect();
    let forwarded_for = if existing.is_empty() {
        client_ip
    } else {
        format!("{}, {client_ip}", existing.join(", "))
    };
    headers.insert(X_FORWARDED_FOR, header_value(&forwarded_for));
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(X_REQUEST_START) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        headers.insert(X_REQUEST_START, header_value(&ms.to_string()));
    }
    headers.insert(X_VCAP_REQUEST_ID, header_value(request_id));
    headers
}

fn outgoing_request(
    method: &Method,
    client_uri: &Uri,
    headers: &HeaderMap,
    endpoint: &Endpoint,
    body: ForwardBody,
) -> Result<Request<ForwardBody>, String> {
    let path = client_uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let uri = Uri::builder()
        .scheme("http")
        .authority(endpoint.addr.as_str())
        .path_and_query(path)
        .build()
        .map_err(|e| format!("request target for {}: {e}", endpoint.addr))?;
    let mut headers = headers.clone();
    headers.insert(X_CF_APPLICATION_ID, header_value(&endpoint.app_guid));
    headers.insert(X_CF_INSTANCE_ID, header_value(&endpoint.instance_guid));
    headers.insert(
        X_CF_INSTANCE_INDEX,
        header_value(&endpoint.index.to_string()),
    );
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    // Instances always get HTTP/1.1, whatever the client spoke.
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Go's notion (which Gorouter uses): safe methods, or a request carrying
/// an idempotency key.
fn is_idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) || headers.contains_key("idempotency-key")
        || headers.contains_key("x-idempotency-key")
}

/// The instance closed the connection before sending any response.
fn is_closed_before_response(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
            return hyper_error.is_incomplete_message() || hyper_error.is_canceled();
        }
        source = cause.source();
    }
    false
}

/// A short description for `X-Cf-Routererror: endpoint_failure (...)`, in
/// the spirit of Go's error strings (`dial tcp 10.0.0.1:61001: ...`).
fn describe(error: &hyper_util::client::legacy::Error, endpoint: &Endpoint) -> String {
    let mut innermost: &dyn std::error::Error = error;
    while let Some(cause) = innermost.source() {
        innermost = cause;
    }
    if error.is_connect() {
        format!("dial tcp {}: {innermost}", endpoint.addr)
    } else {
        format!("{}: {innermost}", endpoint.addr)
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .filter(|s| !s.is_empty())
        .collect();
    for name in HOP_BY_HOP.iter().copied().map(str::to_string).chain(named) {
        headers.remove(name.as_str());
    }
}

fn header_str(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A header value from text that may hold characters a header cannot
/// (error messages): those become spaces.
fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| {
        let cleaned: String = value
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
            .collect();
        HeaderValue::from_str(&cleaned).unwrap_or_else(|_| HeaderValue::from_static("-"))
    })
}

/// A router-generated error, as Gorouter writes it: plain text, the
/// `X-Cf-Routererror` reason, the request id.
fn error_response(
    status: StatusCode,
    router_error: &str,
    body: String,
    cache_control: Option<&'static str>,
    request_id: &str,
) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if let Some(cache_control) = cache_control {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        );
    }
    headers.insert(X_CF_ROUTER_ERROR, header_value(router_error));
    headers.insert(X_VCAP_REQUEST_ID, header_value(request_id));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn forwarded_headers_follow_gorouter() {
        let client = map(&[
            ("host", "App.test:8080"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-vcap-request-id", "client-chosen"),
            ("x-cf-instanceid", "forged"),
            ("x-cf-applicationid", "forged"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "hop"),
            ("x-request-start", "123"),
        ]);
        let addr: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let headers = forwarded_headers(&client, "App.test:8080", addr, "rid", None);
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 192.0.2.7");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-vcap-request-id"], "rid");
        assert_eq!(headers["x-request-start"], "123");
        assert_eq!(headers["host"], "App.test:8080");
        for gone in [
            "x-cf-instanceid",
            "x-cf-applicationid",
            "connection",
            "x-secret",
        ] {
            assert!(!headers.contains_key(gone), "{gone} must not be forwarded");
        }

        let bare = forwarded_headers(&HeaderMap::new(), "a.test", addr, "rid", None);
        assert_eq!(bare["x-forwarded-for"], "192.0.2.7");
        assert_eq!(bare["x-forwarded-proto"], "http");
        assert!(
            bare["x-request-start"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .is_ok()
        );
    }

    #[test]
    fn upgrades_are_recognized_and_kept() {
        let client = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        let protocol = upgrade_protocol(&client).unwrap();
        assert_eq!(protocol, "websocket");
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let headers = forwarded_headers(&client, "a.test", addr, "rid", Some(&protocol));
        assert_eq!(headers["connection"], "upgrade");
        assert_eq!(headers["upgrade"], "websocket");
        assert!(upgrade_protocol(&map(&[("upgrade", "websocket")])).is_none());
    }

    #[test]
    fn idempotency_follows_go() {
        assert!(is_idempotent(&Method::GET, &HeaderMap::new()));
        assert!(!is_idempotent(&Method::POST, &HeaderMap::new()));
        assert!(is_idempotent(
            &Method::POST,
            &map(&[("idempotency-key", "k")])
        ));
    }

    #[test]
    fn header_values_survive_odd_text() {
        assert_eq!(header_value("a\nb"), "a b");
    }
}

//! The request path: host lookup, instance choice, forwarding, errors.
//!
//! Each request is streamed: the client's body goes to the instance as it
//! arrives and the instance's response goes back as it is produced; nothing
//! is buffered whole.

use crate::table::{Endpoint, normalize_host};
use crate::{RouterConfig, SharedTable};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kiln_logs::LogSink;
use kiln_model::LOG_SOURCE_ROUTER;
use kiln_model::logs::{LogEnvelope, MessageType};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

const X_VCAP_REQUEST_ID: &str = "x-vcap-request-id";
const X_CF_ROUTER_ERROR: &str = "x-cf-routererror";
const X_CF_APPLICATION_ID: &str = "x-cf-applicationid";
const X_CF_INSTANCE_ID: &str = "x-cf-instanceid";
const X_CF_INSTANCE_INDEX: &str = "x-cf-instanceindex";

/// Headers that describe one connection, not the message, and so are not
/// forwarded (RFC 9110 §7.6.1). hyper frames each side's body itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub struct Proxy {
    config: RouterConfig,
    table: SharedTable,
    logs: Arc<dyn LogSink>,
}

impl Proxy {
    pub fn new(config: RouterConfig, table: SharedTable, logs: Arc<dyn LogSink>) -> Proxy {
        Proxy {
            config,
            table,
            logs,
        }
    }

    /// Serves one client connection (HTTP/1.1 with keep-alive) until it
    /// closes, or until `shutdown`, when the request in flight is finished
    /// first.
    pub async fn serve_connection(
        self: Arc<Self>,
        stream: TcpStream,
        client_addr: SocketAddr,
        shutdown: CancellationToken,
    ) {
        let proxy = self.clone();
        let service = hyper::service::service_fn(move |request| {
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(proxy.handle(request, client_addr).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(%error, %client_addr, "router client connection ended with an error");
        }
    }

    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client_addr: SocketAddr,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let request_id = uuid::Uuid::new_v4().to_string();
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| request.uri().authority().map(|a| a.to_string()))
            .map(|h| normalize_host(&h))
            .unwrap_or_default();
        if host.is_empty() {
            return error_response(
                StatusCode::BAD_REQUEST,
                "empty_host",
                "400 Bad Request: Request had empty Host header\n",
                &request_id,
            );
        }
        let table = self.table.snapshot();
        let Some(pool) = table.lookup(&host) else {
            return error_response(
                StatusCode::NOT_FOUND,
                "unknown_route",
                &format!("404 Not Found: Requested route ('{host}') does not exist.\n"),
                &request_id,
            );
        };
        if pool.endpoints.is_empty() {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_endpoints",
                &format!("Requested route ('{host}') has no available endpoints.\n"),
                &request_id,
            );
        }

        let (parts, body) = request.into_parts();
        let request_line = format!("{} {} {:?}", parts.method, parts.uri, parts.version);
        let mut body = Some(body);
        let mut last_error = String::from("no endpoint tried");
        let attempts = self.config.max_attempts.max(1);
        for endpoint in pool.attempt_order().take(attempts) {
            // Only a failure to connect is retried on another instance. Once
            // the connection is up the request may reach the app, and a
            // non-idempotent request (a payment, say) must never be sent
            // twice without the client knowing — so later failures are
            // answered with a 502 instead. It also keeps the body unread
            // until the one instance that will get it is chosen.
            let stream = match tokio::time::timeout(
                self.config.dial_timeout,
                TcpStream::connect(&endpoint.addr),
            )
            .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    last_error = format!("dial {}: {error}", endpoint.addr);
                    tracing::debug!(host, endpoint = %endpoint.addr, %error, "instance refused; trying the next one");
                    continue;
                }
                Err(_) => {
                    last_error = format!("dial {}: timed out", endpoint.addr);
                    continue;
                }
            };
            let Some(body) = body.take() else { break };
            let outgoing = forwarded_request(&parts, body, endpoint, client_addr, &request_id);
            let result =
                tokio::time::timeout(self.config.request_timeout, send(stream, outgoing)).await;
            let response = match result {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => {
                    last_error = error;
                    break;
                }
                Err(_) => {
                    last_error = format!("no response within {:?}", self.config.request_timeout);
                    break;
                }
            };
            let (mut head, body) = response.into_parts();
            strip_hop_by_hop(&mut head.headers);
            head.headers
                .insert(X_VCAP_REQUEST_ID, header_value(&request_id));
            self.access_log(
                &host,
                &request_line,
                &parts.headers,
                head.status,
                &head.headers,
                client_addr,
                endpoint,
                &request_id,
                started,
            );
            return Response::from_parts(head, body.boxed());
        }
        tracing::info!(host, error = %last_error, "no instance could handle the request");
        error_response(
            StatusCode::BAD_GATEWAY,
            &format!("endpoint_failure ({last_error})"),
            "502 Bad Gateway: Registered endpoint failed to handle the request.\n",
            &request_id,
        )
    }

    /// One `RTR` line per request, in the shape of Gorouter's access log.
    #[allow(clippy::too_many_arguments)]
    fn access_log(
        &self,
        host: &str,
        request_line: &str,
        request_headers: &HeaderMap,
        status: StatusCode,
        response_headers: &HeaderMap,
        client_addr: SocketAddr,
        endpoint: &Endpoint,
        request_id: &str,
        started: Instant,
    ) {
        let h = |headers: &HeaderMap, name: HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let now = time::OffsetDateTime::now_utc();
        let stamp = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let message = format!(
            "{host} - [{stamp}] \"{request_line}\" {} {} {} \"{}\" \"{}\" \"{client_addr}\" \"{}\" x_forwarded_for:\"{}\" x_forwarded_proto:\"{}\" vcap_request_id:\"{request_id}\" response_time:{:.6} app_id:\"{}\" app_index:\"{}\"",
            status.as_u16(),
            h(request_headers, header::CONTENT_LENGTH).replace('-', "0"),
            h(response_headers, header::CONTENT_LENGTH),
            h(request_headers, header::REFERER),
            h(request_headers, header::USER_AGENT),
            endpoint.addr,
            h(request_headers, HeaderName::from_static("x-forwarded-for")),
            h(
                request_headers,
                HeaderName::from_static("x-forwarded-proto")
            ),
            started.elapsed().as_secs_f64(),
            endpoint.app_guid,
            endpoint.index,
        );
        self.logs.emit(LogEnvelope {
            timestamp: unix_nanos(),
            source_id: endpoint.app_guid.clone(),
            instance_id: endpoint.index.to_string(),
            source_type: LOG_SOURCE_ROUTER.to_string(),
            message_type: MessageType::Out,
            message,
        });
    }
}

async fn send(stream: TcpStream, request: Request<Incoming>) -> Result<Response<Incoming>, String> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "instance connection ended with an error");
        }
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// The request as the instance receives it: the client's, with Gorouter's
/// headers added and the client's claims about instances removed.
fn forwarded_request(
    parts: &http::request::Parts,
    body: Incoming,
    endpoint: &Endpoint,
    client_addr: SocketAddr,
    request_id: &str,
) -> Request<Incoming> {
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    for name in [X_CF_APPLICATION_ID, X_CF_INSTANCE_ID, X_CF_INSTANCE_INDEX] {
        headers.remove(name);
    }
    let client_ip = client_addr.ip().to_string();
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing}, {client_ip}"),
        _ => client_ip,
    };
    headers.insert("x-forwarded-for", header_value(&forwarded_for));
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if !headers.contains_key("x-request-start") {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        headers.insert("x-request-start", header_value(&ms.to_string()));
    }
    headers.insert(X_VCAP_REQUEST_ID, header_value(request_id));
    headers.insert(X_CF_APPLICATION_ID, header_value(&endpoint.app_guid));
    headers.insert(X_CF_INSTANCE_ID, header_value(&endpoint.instance_guid));
    headers.insert(
        X_CF_INSTANCE_INDEX,
        header_value(&endpoint.index.to_string()),
    );

    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = path.parse().unwrap_or_default();
    *request.headers_mut() = headers;
    request
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    for name in HOP_BY_HOP.iter().copied().map(str::to_string).chain(named) {
        headers.remove(name.as_str());
    }
}

fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

fn error_response(
    status: StatusCode,
    router_error: &str,
    body: &str,
    request_id: &str,
) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(X_CF_ROUTER_ERROR, header_value(router_error));
    headers.insert(X_VCAP_REQUEST_ID, header_value(request_id));
    response
}

fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

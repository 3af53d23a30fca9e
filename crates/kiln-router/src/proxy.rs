//! The request path, in named phases: find the route (`route`), rewrite the
//! headers (`forwarded_headers`), try instances (`forward`), answer
//! (`respond`). Each request is streamed: the client's body goes to the
//! instance as it arrives and the instance's response goes back as it is
//! produced; nothing is buffered whole. Connections to instances are kept
//! alive and reused (`backend_io::Backends`, one per worker thread, so a
//! request and its instance connection stay on one thread). WebSocket (and
//! other `Upgrade`) requests are tunnelled once the instance answers
//! `101 Switching Protocols`.
//!
//! Per request the proxy copies no header text: header values are shared
//! (`Bytes`), per-instance values are made when the table is built, and the
//! access line is formatted by the log writer, off the request path.
//!
//! Architecture invariant: nothing here reads the BBS or a database; a
//! request reads one snapshot of the [`RouteTable`](crate::RouteTable).

use crate::RouterConfig;
use crate::access_log::{AccessLog, AccessRecord, LoggedBody};
use crate::backend_io::{BackendError, Backends, Outgoing};
use crate::client_conn::{Activity, ClientBody, Timed, Timeouts};
use crate::front::{ClientUpgrade, RequestSource, TunnelConn};
use crate::h1::{self, Conn, InstanceBody, Owner, RequestBody, RequestHead, ResponseHead};
use crate::sticky;
use crate::sync::SharedTable;
use crate::table::{Endpoint, InFlight, Pool, RouteTable, clock_ms, normalize_host};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::cell::Cell;
use std::convert::Infallible;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// What the proxy answers with: an instance's streamed body or a router error.
pub type ProxyBody = BoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

const X_VCAP_REQUEST_ID: HeaderName = HeaderName::from_static("x-vcap-request-id");
const X_CF_ROUTER_ERROR: HeaderName = HeaderName::from_static("x-cf-routererror");
pub(crate) const X_CF_APPLICATION_ID: HeaderName = HeaderName::from_static("x-cf-applicationid");
pub(crate) const X_CF_INSTANCE_ID: HeaderName = HeaderName::from_static("x-cf-instanceid");
pub(crate) const X_CF_INSTANCE_INDEX: HeaderName = HeaderName::from_static("x-cf-instanceindex");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REQUEST_START: HeaderName = HeaderName::from_static("x-request-start");
const X_CF_APP_INSTANCE: HeaderName = HeaderName::from_static("x-cf-app-instance");

/// Headers that describe one connection, not the message, and so are not
/// forwarded (RFC 9110 §7.6.1). hyper frames each side's body itself.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The proxy of one worker thread: a table to route by, its own pool of
/// connections to instances, and the access log.
pub struct Proxy {
    config: RouterConfig,
    table: SharedTable,
    log: AccessLog,
    backends: Arc<Backends>,
    /// Cancelled when the drain after shutdown is over: ends connections and
    /// tunnels that are still open.
    hard_stop: CancellationToken,
}

/// One request as the phases pass it on.
struct Forward {
    method: Method,
    path: PathAndQuery,
    headers: HeaderMap,
    body: RequestSource,
    record: AccessRecord,
    upgrade: Option<ClientUpgrade>,
    /// The instance guid of the request's `__VCAP_ID__` (sticky session).
    sticky: Option<String>,
}

impl Proxy {
    pub(crate) fn new(
        config: RouterConfig,
        table: SharedTable,
        log: AccessLog,
        hard_stop: CancellationToken,
    ) -> Proxy {
        Proxy {
            backends: Backends::new(config.dial_timeout),
            config,
            table,
            log,
            hard_stop,
        }
    }

    pub(crate) fn config(&self) -> &RouterConfig {
        &self.config
    }

    pub(crate) fn hard_stop(&self) -> &CancellationToken {
        &self.hard_stop
    }

    /// Closes the worker's connections to instances that were idle too long.
    pub(crate) fn sweep_idle_backends(&self) {
        self.backends.sweep();
    }

    /// The service answering a connection's requests. Each request counts
    /// as in progress on `activity` until its response body is dropped.
    fn service(
        self: &Arc<Self>,
        client_addr: SocketAddr,
        tls: bool,
        activity: Arc<Activity>,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<ClientBody<ProxyBody>>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<ClientBody<ProxyBody>>, Infallible>>
                 + Send
                 + 'static,
    > + Clone
    + Send
    + 'static {
        // Made once per connection, not per request.
        let client_ip = Arc::new(header_value(&client_addr.ip().to_string()));
        let proxy = self.clone();
        let hsts = tls
            .then(|| self.config.hsts.as_ref().map(|h| h.header_value()))
            .flatten();
        hyper::service::service_fn(move |request| {
            let proxy = proxy.clone();
            let client_ip = client_ip.clone();
            let hsts = hsts.clone();
            let in_progress = activity.start_request();
            let activity = activity.clone();
            async move {
                let (parts, body) = request.into_parts();
                let mut response = proxy
                    .handle(
                        parts,
                        RequestSource::Hyper(body),
                        client_addr,
                        &client_ip,
                        tls,
                    )
                    .await;
                if let Some(hsts) = hsts {
                    // An app's own policy wins, as with Gorouter's
                    // add_headers_if_not_present.
                    response
                        .headers_mut()
                        .entry(header::STRICT_TRANSPORT_SECURITY)
                        .or_insert(hsts);
                }
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    activity.upgraded();
                }
                Ok::<_, Infallible>(response.map(|body| ClientBody::new(body, in_progress)))
            }
        })
    }

    /// Serves one HTTPS client connection: the TLS handshake (bounded by
    /// the header read timeout, so a silent client is cut off), then
    /// HTTP/2 if ALPN agreed on `h2`, HTTP/1.1 otherwise. On `shutdown`
    /// the requests in flight are finished first, unless the drain runs out.
    pub(crate) async fn serve_tls_connection(
        self: Arc<Self>,
        stream: TcpStream,
        client_addr: SocketAddr,
        acceptor: tokio_rustls::TlsAcceptor,
        shutdown: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        let stream = Timed::new(stream, self.timeouts());
        let activity = stream.activity();
        let handshake = tokio::select! {
            handshake = tokio::time::timeout(self.config.header_read_timeout, acceptor.accept(stream)) => handshake,
            _ = shutdown.cancelled() => return,
        };
        let mut stream = match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%error, %client_addr, "router TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%client_addr, "router TLS handshake timed out");
                return;
            }
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        if h2 {
            stream.get_mut().0.set_h2();
        }
        let service = self.service(client_addr, true, activity);
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder.http1().header_read_timeout(None);
        builder.http2().timer(TokioTimer::new());
        let builder = if h2 {
            builder.http2_only()
        } else {
            builder.http1_only()
        };
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
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
            tracing::debug!(%error, %client_addr, h2, "router HTTPS client connection ended with an error");
        }
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            header_read: self.config.header_read_timeout,
            idle: self.config.client_idle_timeout,
        }
    }

    /// One request, from either front: its head and its body.
    pub(crate) async fn handle(
        &self,
        mut request: http::request::Parts,
        body: RequestSource,
        client_addr: SocketAddr,
        client_ip: &HeaderValue,
        tls: bool,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let received_at = SystemTime::now();
        let request_id = request_id();
        let raw_host = request_host(&request);
        let table = self.table.snapshot();
        let mut target = match route(
            &table,
            &raw_host,
            &request.uri,
            &request.headers,
            client_addr.ip(),
        ) {
            Ok(target) => target,
            Err(refusal) => return refusal.response(&raw_host, &request_id),
        };
        if target.pinned.is_none() {
            target.sticky =
                sticky::requested_instance(&request.headers, &self.config.sticky_session_cookies);
        }
        let upgrade = upgrade_protocol(&request.headers).map(|protocol| {
            let client = match body {
                // hyper hands the connection over through the request.
                RequestSource::Hyper(_) => request
                    .extensions
                    .remove::<hyper::upgrade::OnUpgrade>()
                    .map(ClientUpgrade::Hyper),
                RequestSource::Front(_) => Some(ClientUpgrade::Front),
            };
            (protocol, client)
        });
        let http::request::Parts {
            method,
            uri,
            version,
            mut headers,
            ..
        } = request;
        let referer = headers.get(header::REFERER).cloned();
        let user_agent = headers.get(header::USER_AGENT).cloned();
        forwarded_headers(
            &mut headers,
            &raw_host,
            client_ip,
            &request_id,
            upgrade.as_ref().map(|(protocol, _)| protocol),
            ForwardedProto {
                tls,
                sanitize: self.config.sanitize_forwarded_proto,
            },
        );
        let record = AccessRecord {
            host: raw_host,
            received_at,
            started,
            method: method.clone(),
            uri: uri.clone(),
            version,
            referer,
            user_agent,
            client_addr,
            x_forwarded_for: headers.get(X_FORWARDED_FOR).cloned(),
            x_forwarded_proto: headers.get(X_FORWARDED_PROTO).cloned(),
            request_id,
            request_bytes: Arc::default(),
            // Replaced by the instance that handles the request.
            endpoint: target.pool.endpoints[0].clone(),
            router_error: None,
        };
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let forward = Forward {
            method,
            path,
            headers,
            body,
            record,
            upgrade: upgrade.and_then(|(_, client)| client),
            sticky: target.sticky.clone(),
        };
        self.forward(target, forward).await
    }

    /// Tries the route's instances in turn (see the retry rule below) and
    /// answers with the first response, or with 502.
    async fn forward(&self, target: Target<'_>, forward: Forward) -> Response<ProxyBody> {
        let Forward {
            method,
            path,
            headers,
            body,
            mut record,
            upgrade,
            sticky,
        } = forward;
        let idempotent = is_idempotent(&method, &headers);
        let chosen = match self.choose(&target) {
            Ok(chosen) => chosen,
            Err(refusal) => return refusal.response(&record.host, &record.request_id),
        };
        // The head is made once; each attempt adds its instance's headers.
        let framing = h1::Outgoing::of(&headers, &body);
        let mut head = RequestHead::new(&method, path.as_str(), &headers);
        drop(headers);
        let mut body = RequestBody::new(body, framing, record.request_bytes.clone());
        let mut failure: Option<(Arc<Endpoint>, String)> = None;
        for endpoint in chosen {
            if endpoint.wire.authority.is_none() {
                let why = format!("request target for {}: not a host and port", endpoint.addr);
                failure = Some((endpoint.clone(), why));
                break;
            }
            let wire = &endpoint.wire;
            let attempt_head = head.for_attempt(
                [
                    (&X_CF_APPLICATION_ID, &wire.app_id),
                    (&X_CF_INSTANCE_ID, &wire.instance_id),
                    (&X_CF_INSTANCE_INDEX, &wire.index),
                ],
                body.framing(),
            );
            let in_flight = endpoint
                .state
                .start_request(self.config.max_conns_per_backend);
            let outgoing = Outgoing {
                head: attempt_head,
                body: &mut body,
                head_request: method == Method::HEAD,
                idempotent,
            };
            let error = match tokio::time::timeout(
                self.config.request_timeout,
                self.backends.send(&endpoint.addr, outgoing),
            )
            .await
            {
                Ok(Ok((response, conn))) => {
                    record.endpoint = endpoint.clone();
                    return self.respond(
                        response,
                        conn,
                        body,
                        upgrade,
                        record,
                        in_flight,
                        sticky.as_deref(),
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
            drop(in_flight);
            let connect_failed = matches!(error, BackendError::Connect(_));
            if connect_failed {
                endpoint.state.mark_failed(self.config.retry_after_failure);
            }
            let why = describe(&error, endpoint);
            // Retry on another instance only when the request cannot have
            // reached this one: the connection was never made (a dial
            // error). Once bytes may have reached an app, sending them
            // again could repeat a non-idempotent request (a POST that
            // charges a card, say) without the client knowing, so it gets
            // a 502 and decides itself. Gorouter's one exception is kept:
            // an idempotent request whose connection was closed before any
            // response (typically a kept-alive connection the app had just
            // timed out). Either way no byte of the body may have been
            // taken from the client, or there is nothing to resend.
            let retryable = !body.started()
                && (connect_failed || (idempotent && is_closed_before_response(&error)));
            tracing::debug!(endpoint = %endpoint.addr, error = %why, retryable, "instance failed the request");
            failure = Some((endpoint.clone(), why));
            if !retryable {
                break;
            }
        }
        self.bad_gateway(record, failure)
    }

    /// The instances to try, in order: the pinned one, or up to
    /// `max_attempts` round-robin, skipping those at the connection limit
    /// and those that failed to dial recently — unless every one that is
    /// not at the limit failed, then those are tried anyway (Gorouter
    /// resets their failures too).
    fn choose<'t>(&self, target: &Target<'t>) -> Result<Vec<&'t Arc<Endpoint>>, Refusal> {
        let limit = self.config.max_conns_per_backend;
        if let Some(endpoint) = target.pinned {
            if endpoint.state.at_limit(limit) {
                return Err(Refusal::ConnectionLimit);
            }
            return Ok(vec![endpoint]);
        }
        let max = self.config.max_attempts.max(1);
        let now = clock_ms();
        let mut chosen = Vec::with_capacity(max.min(target.pool.endpoints.len()));
        // A live sticky instance goes first; the others remain the fallback.
        let sticky = target.sticky.as_deref().and_then(|guid| {
            target
                .pool
                .endpoints
                .iter()
                .find(|e| e.instance_guid == guid && !e.state.at_limit(limit))
        });
        chosen.extend(sticky);
        let mut available = 0;
        for endpoint in target.pool.attempt_order() {
            if endpoint.state.at_limit(limit) {
                continue;
            }
            available += 1;
            if chosen.len() < max
                && !endpoint.state.recently_failed(now)
                && !sticky.is_some_and(|s| Arc::ptr_eq(s, endpoint))
            {
                chosen.push(endpoint);
            }
        }
        if available == 0 {
            return Err(Refusal::ConnectionLimit);
        }
        if chosen.is_empty() {
            chosen.extend(
                target
                    .pool
                    .attempt_order()
                    .filter(|e| !e.state.at_limit(limit))
                    .take(max),
            );
        }
        Ok(chosen)
    }

    /// No instance could handle the request: 502, and its access line.
    fn bad_gateway(
        &self,
        mut record: AccessRecord,
        failure: Option<(Arc<Endpoint>, String)>,
    ) -> Response<ProxyBody> {
        // `None` is unreachable: a non-empty pool gives at least one attempt.
        let why = match failure {
            Some((endpoint, why)) => {
                record.endpoint = endpoint;
                why
            }
            None => "no attempt made".to_string(),
        };
        let router_error = format!("endpoint_failure ({why})");
        tracing::info!(endpoint = %record.endpoint.addr, error = %why, "no instance could handle the request");
        let request_id = record.request_id.clone();
        record.router_error = Some(router_error.clone());
        self.log.emit(record, StatusCode::BAD_GATEWAY.as_u16(), 0);
        error_response(
            StatusCode::BAD_GATEWAY,
            &router_error,
            "502 Bad Gateway: Registered endpoint failed to handle the request.\n".into(),
            None,
            &request_id,
        )
    }

    /// The instance's response as the client gets it. A `101` to an upgrade
    /// request also starts the tunnel between the client's upgraded
    /// connection and the instance's.
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &self,
        head: ResponseHead,
        conn: Conn,
        request: RequestBody,
        client_upgrade: Option<ClientUpgrade>,
        record: AccessRecord,
        in_flight: InFlight,
        sticky: Option<&str>,
    ) -> Response<ProxyBody> {
        let switching = head.status == StatusCode::SWITCHING_PROTOCOLS;
        let mut tunnel_conn = None;
        let body = if switching {
            // An upgraded connection is the tunnel's now, never the pool's.
            match client_upgrade {
                Some(ClientUpgrade::Hyper(client_upgrade)) => self.tunnel(
                    async move {
                        let client = client_upgrade.await?;
                        Ok::<_, BoxError>((TokioIo::new(client), Bytes::new()))
                    },
                    conn,
                ),
                // The front writes the head, then starts the tunnel.
                Some(ClientUpgrade::Front) => tunnel_conn = Some(TunnelConn::new(conn)),
                None => drop(conn),
            }
            InstanceBody::empty()
        } else {
            let owner = Owner {
                backends: self.backends.clone(),
                endpoint: record.endpoint.clone(),
            };
            InstanceBody::new(conn, &head, request, owner)
        };
        let ResponseHead {
            status,
            mut headers,
            ..
        } = head;
        let upgrade = headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut headers);
        if let Some(pin) = sticky::pin_cookie(
            &headers,
            sticky,
            &record.endpoint.instance_guid,
            &self.config.sticky_session_cookies,
        ) {
            headers.append(header::SET_COOKIE, pin);
        }
        if let (true, Some(protocol)) = (switching, upgrade) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol);
        }
        headers.insert(X_VCAP_REQUEST_ID, record.request_id.clone());
        let mut response = Response::new(
            LoggedBody::new(body, status.as_u16(), record, self.log.clone(), in_flight)
                .map_err(BoxError::from)
                .boxed(),
        );
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        if let Some(tunnel_conn) = tunnel_conn {
            response.extensions_mut().insert(tunnel_conn);
        }
        response
    }

    /// Copies bytes both ways between the upgraded client connection and
    /// the instance's until either closes (or the drain is over); first
    /// what each side sent past the `101` exchange (`client` gives the
    /// connection and the bytes its front had read past the request head).
    pub(crate) fn tunnel<C>(
        &self,
        client: impl Future<Output = Result<(C, Bytes), BoxError>> + Send + 'static,
        backend: Conn,
    ) where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let hard_stop = self.hard_stop.clone();
        tokio::spawn(async move {
            let (mut client, client_early) = match client.await {
                Ok(client) => client,
                Err(error) => {
                    tracing::debug!(%error, "upgrade did not complete");
                    return;
                }
            };
            let (mut backend, early) = backend.into_parts();
            let endpoint = backend
                .peer_addr()
                .map_or_else(|_| "-".to_string(), |a| a.to_string());
            let copy = async {
                client.write_all(&early).await?;
                backend.write_all(&client_early).await?;
                tokio::io::copy_bidirectional(&mut client, &mut backend).await
            };
            tokio::select! {
                _ = hard_stop.cancelled() => {}
                result = copy => {
                    if let Err(error) = result {
                        tracing::debug!(endpoint, %error, "upgraded connection ended with an error");
                    }
                }
            }
        });
    }
}

/// Why a request is answered by the router itself, before any instance.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    EmptyHost,
    UnknownRoute,
    NoEndpoints,
    InvalidAppInstance,
    /// The `X-Cf-App-Instance` app guid and index.
    UnknownInstance(String, u32),
    ConnectionLimit,
}

impl Refusal {
    /// Gorouter's response for it.
    fn response(self, raw_host: &HeaderValue, request_id: &HeaderValue) -> Response<ProxyBody> {
        let host = String::from_utf8_lossy(raw_host.as_bytes());
        match self {
            Refusal::EmptyHost => error_response(
                StatusCode::BAD_REQUEST,
                "empty_host",
                "400 Bad Request: Request had empty Host header\n".into(),
                Some("public,max-age=2"),
                request_id,
            ),
            Refusal::UnknownRoute => error_response(
                StatusCode::NOT_FOUND,
                "unknown_route",
                format!("404 Not Found: Requested route ('{host}') does not exist.\n"),
                Some("no-cache, no-store"),
                request_id,
            ),
            Refusal::InvalidAppInstance => error_response(
                StatusCode::BAD_REQUEST,
                "invalid_cf_app_instance_header",
                "400 Bad Request: Invalid X-CF-App-Instance Header\n".into(),
                Some("no-cache, no-store"),
                request_id,
            ),
            Refusal::UnknownInstance(app_guid, index) => error_response(
                StatusCode::NOT_FOUND,
                "unknown_route",
                format!(
                    "404 Not Found: Requested instance ('{index}') with guid ('{app_guid}') does not exist for route ('{host}')\n"
                ),
                Some("no-cache, no-store"),
                request_id,
            ),
            Refusal::ConnectionLimit => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "Connection Limit Reached",
                format!(
                    "503 Service Unavailable: Requested route ('{host}') has reached the connection limit.\n"
                ),
                None,
                request_id,
            ),
            Refusal::NoEndpoints => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_endpoints",
                format!(
                    "503 Service Unavailable: Requested route ('{host}') has no available endpoints.\n"
                ),
                Some("public,max-age=2"),
                request_id,
            ),
        }
    }
}

/// The host a request names: like Go's net/http, an absolute-form target's
/// authority, otherwise the Host header.
fn request_host(request: &http::request::Parts) -> HeaderValue {
    match request.uri.authority() {
        Some(authority) => header_value(authority.as_str()),
        None => request
            .headers
            .get(header::HOST)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("")),
    }
}

/// Where a request may go: a route's pool, and the one instance the
/// client asked for with `X-Cf-App-Instance`, if it did.
struct Target<'t> {
    pool: &'t Pool,
    pinned: Option<&'t Arc<Endpoint>>,
    /// The instance guid a sticky session asks for (it may be gone).
    sticky: Option<String>,
}

/// The pool (and instance) a request goes to, or why there is none.
fn route<'t>(
    table: &'t RouteTable,
    raw_host: &HeaderValue,
    uri: &Uri,
    headers: &HeaderMap,
    client_ip: IpAddr,
) -> Result<Target<'t>, Refusal> {
    let host = normalize_host(raw_host.to_str().unwrap_or(""));
    // A Host equal to the client's own address is what some load
    // balancers fill in for HTTP/1.0 requests without one; Gorouter
    // treats it as empty rather than reveal the balancer's address.
    if host.is_empty() || host.parse::<IpAddr>().is_ok_and(|ip| ip == client_ip) {
        return Err(Refusal::EmptyHost);
    }
    let pool = table
        .lookup(&host, uri.path())
        .ok_or(Refusal::UnknownRoute)?;
    let pinned = match headers.get(X_CF_APP_INSTANCE) {
        None => None,
        Some(value) => {
            let (app_guid, index) = parse_app_instance(value).ok_or(Refusal::InvalidAppInstance)?;
            let endpoint = pool
                .endpoints
                .iter()
                .find(|e| e.app_guid == app_guid && e.index == index)
                .ok_or_else(|| Refusal::UnknownInstance(app_guid.to_string(), index))?;
            Some(endpoint)
        }
    };
    if pool.endpoints.is_empty() {
        return Err(Refusal::NoEndpoints);
    }
    Ok(Target {
        pool,
        pinned,
        sticky: None,
    })
}

/// `X-Cf-App-Instance: APP_GUID:INDEX`, as Gorouter accepts it: a lower-case
/// UUID, a colon, decimal digits.
fn parse_app_instance(value: &HeaderValue) -> Option<(&str, u32)> {
    let (guid, index) = value.to_str().ok()?.split_once(':')?;
    let groups: Vec<&str> = guid.split('-').collect();
    let shape_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && guid
            .bytes()
            .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    if !shape_ok || index.is_empty() || !index.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((guid, index.parse().ok()?))
}

/// A fresh `X-Vcap-Request-Id`: a version 4 UUID from a per-thread
/// generator seeded from the OS, so a request costs no system call. It
/// names requests in logs; it is not a secret.
fn request_id() -> HeaderValue {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::collections::hash_map::RandomState::new().hash_one(0u64) | 1,
        );
    }
    // wyrand: one multiply per 64 bits.
    let next = || {
        STATE.with(|state| {
            let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
            state.set(s);
            let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
            ((t >> 64) ^ t) as u64
        })
    };
    let bits = (u128::from(next()) << 64) | u128::from(next());
    let uuid = uuid::Builder::from_random_bytes(bits.to_be_bytes()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    header_value(uuid.hyphenated().encode_lower(&mut text))
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

/// How `X-Forwarded-Proto` is set: the scheme the request came by, unless
/// the client sent one and the operator did not ask to replace it.
#[derive(Debug, Clone, Copy)]
struct ForwardedProto {
    tls: bool,
    sanitize: bool,
}

/// Turns the client's headers into what every instance receives:
/// Gorouter's additions, the client's claims about instances removed. The
/// per-instance headers are added by [`outgoing_request`].
fn forwarded_headers(
    headers: &mut HeaderMap,
    raw_host: &HeaderValue,
    client_ip: &HeaderValue,
    request_id: &HeaderValue,
    upgrade: Option<&HeaderValue>,
    proto: ForwardedProto,
) {
    strip_hop_by_hop(headers);
    let instance_headers = [X_CF_APPLICATION_ID, X_CF_INSTANCE_ID, X_CF_INSTANCE_INDEX];
    if headers.keys().any(|name| instance_headers.contains(name)) {
        for name in instance_headers {
            headers.remove(name);
        }
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    headers.insert(header::HOST, raw_host.clone());
    let forwarded_for = forwarded_for(headers, client_ip);
    headers.insert(X_FORWARDED_FOR, forwarded_for);
    if proto.sanitize || !headers.contains_key(X_FORWARDED_PROTO) {
        let scheme = if proto.tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    }
    if !headers.contains_key(X_REQUEST_START) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        headers.insert(X_REQUEST_START, HeaderValue::from(ms as u64));
    }
    headers.insert(X_VCAP_REQUEST_ID, request_id.clone());
}

/// `X-Forwarded-For`: the client's list, if any, then the client's address.
fn forwarded_for(headers: &HeaderMap, client_ip: &HeaderValue) -> HeaderValue {
    let mut existing = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter(|v| !v.as_bytes().trim_ascii().is_empty())
        .peekable();
    if existing.peek().is_none() {
        return client_ip.clone();
    }
    let mut joined = Vec::with_capacity(64);
    for value in existing {
        joined.extend_from_slice(value.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(client_ip.as_bytes());
    HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client_ip.clone())
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
fn is_closed_before_response(error: &BackendError) -> bool {
    match error {
        BackendError::Connect(_) => false,
        BackendError::Request(error) => error.closed_before_response(),
    }
}

/// A short description for `X-Cf-Routererror: endpoint_failure (...)`, in
/// the spirit of Go's error strings (`dial tcp 10.0.0.1:61001: ...`).
fn describe(error: &BackendError, endpoint: &Endpoint) -> String {
    match error {
        BackendError::Connect(error) => format!("dial tcp {}: {error}", endpoint.addr),
        BackendError::Request(error) => format!("{}: {error}", endpoint.addr),
    }
}

/// Removes the hop-by-hop headers, and those the `Connection` header names.
/// Allocates nothing unless `Connection` names some. Most messages carry
/// none of them, and removing a name costs a hash and a probe even when it
/// is absent, so the names present are looked at first.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| {
            !token.is_empty()
                && !token.eq_ignore_ascii_case("close")
                && !token.eq_ignore_ascii_case("keep-alive")
        })
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    for name in named {
        headers.remove(name);
    }
}

/// A header value from text that may hold characters a header cannot
/// (error messages): those become spaces.
pub(crate) fn header_value(value: &str) -> HeaderValue {
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
    request_id: &HeaderValue,
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
    headers.insert(X_VCAP_REQUEST_ID, request_id.clone());
    response
}

#[cfg(test)]
pub(crate) mod tests {
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

    fn forwarded(client: &HeaderMap, host: &str, upgrade: Option<&HeaderValue>) -> HeaderMap {
        let mut headers = client.clone();
        forwarded_headers(
            &mut headers,
            &HeaderValue::from_str(host).unwrap(),
            &HeaderValue::from_static("192.0.2.7"),
            &HeaderValue::from_static("rid"),
            upgrade,
            ForwardedProto {
                tls: false,
                sanitize: false,
            },
        );
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
        let headers = forwarded(&client, "App.test:8080", None);
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

        let bare = forwarded(&HeaderMap::new(), "a.test", None);
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
    fn forwarded_proto_follows_the_connection_and_gorouters_sanitize_option() {
        let proto = |client: &[(&str, &str)], tls, sanitize| {
            let mut headers = map(client);
            forwarded_headers(
                &mut headers,
                &HeaderValue::from_static("a.test"),
                &HeaderValue::from_static("192.0.2.7"),
                &HeaderValue::from_static("rid"),
                None,
                ForwardedProto { tls, sanitize },
            );
            let all: Vec<_> = headers.get_all(X_FORWARDED_PROTO).iter().cloned().collect();
            assert_eq!(all.len(), 1);
            all[0].to_str().unwrap().to_string()
        };
        assert_eq!(proto(&[], true, false), "https");
        assert_eq!(proto(&[], false, false), "http");
        // A client's (a load balancer's) value is kept unless sanitizing.
        assert_eq!(
            proto(&[("x-forwarded-proto", "https")], false, false),
            "https"
        );
        assert_eq!(
            proto(&[("x-forwarded-proto", "https")], false, true),
            "http"
        );
        assert_eq!(proto(&[("x-forwarded-proto", "http")], true, true), "https");
    }

    #[test]
    fn upgrades_are_recognized_and_kept() {
        let client = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        let protocol = upgrade_protocol(&client).unwrap();
        assert_eq!(protocol, "websocket");
        let headers = forwarded(&client, "a.test", Some(&protocol));
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
    fn app_instance_headers_follow_gorouters_pattern() {
        let guid = "0f2ab3c4-1234-4abc-9def-00112233aabb";
        let parse = |v: &str| {
            parse_app_instance(&HeaderValue::from_str(v).unwrap()).map(|(g, i)| (g.to_string(), i))
        };
        assert_eq!(parse(&format!("{guid}:3")), Some((guid.to_string(), 3)));
        for bad in [
            guid.to_string(),
            format!("{guid}:"),
            format!("{guid}:x"),
            format!("{guid}:-1"),
            format!("{}:0", guid.to_uppercase()),
            format!("{guid}-:0"),
            "not-a-guid:0".to_string(),
            format!("{guid}:99999999999"),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
    }

    /// A small deterministic generator (xorshift), so a failing case is
    /// reproducible from its seed (the loop index). `h1`'s tests use it too.
    pub(crate) fn generator(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed | 1;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    #[test]
    fn header_rewriting_keeps_its_invariants_for_any_headers() {
        let names = [
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-cf-instanceid",
            "x-cf-applicationid",
            "x-cf-instanceindex",
            "x-vcap-request-id",
            "x-request-start",
            "host",
            "cookie",
            "x-custom",
            "x-named",
        ];
        let values = [
            "",
            "a",
            "keep-alive, x-named",
            "close",
            "Upgrade",
            "10.0.0.1",
            " ",
            "x-custom ,TE",
            "\t1,2",
        ];
        let mut next = generator(0x9e37_79b9_7f4a_7c15);
        for case in 0..3000 {
            let mut client = HeaderMap::new();
            for _ in 0..next() % 12 {
                let name = names[next() as usize % names.len()];
                let value = values[next() as usize % values.len()];
                client.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            let named: Vec<String> = client
                .get_all(header::CONNECTION)
                .iter()
                .flat_map(|v| v.to_str().unwrap().split(','))
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .collect();
            let headers = forwarded(&client, "app.test", None);

            for gone in HOP_BY_HOP.iter().chain(&[
                X_CF_APPLICATION_ID,
                X_CF_INSTANCE_ID,
                X_CF_INSTANCE_INDEX,
            ]) {
                assert!(!headers.contains_key(gone), "case {case}: {gone} kept");
            }
            for name in &named {
                assert!(
                    !headers.contains_key(name.as_str()),
                    "case {case}: {name} kept"
                );
            }
            assert_eq!(headers.get_all(X_VCAP_REQUEST_ID).iter().count(), 1);
            assert_eq!(headers[X_VCAP_REQUEST_ID], "rid", "case {case}");
            assert_eq!(headers.get_all(header::HOST).iter().count(), 1);
            assert_eq!(headers[header::HOST], "app.test");
            let xff: Vec<_> = headers.get_all(X_FORWARDED_FOR).iter().collect();
            assert_eq!(xff.len(), 1, "case {case}");
            assert!(
                xff[0].to_str().unwrap().ends_with("192.0.2.7"),
                "case {case}"
            );
            assert!(headers.contains_key(X_FORWARDED_PROTO));
            // What is not the router's business passes untouched, in order.
            for kept in ["cookie", "x-custom"] {
                if !named.iter().any(|n| n == kept) {
                    let before: Vec<_> = client.get_all(kept).iter().collect();
                    let after: Vec<_> = headers.get_all(kept).iter().collect();
                    assert_eq!(before, after, "case {case}: {kept}");
                }
            }
        }
    }

    #[test]
    fn parsing_odd_hosts_and_instance_headers_never_panics() {
        let alphabet = b"aZ09.-:[]_ *%/?\x7f\xff";
        let mut next = generator(42);
        for _ in 0..5000 {
            let bytes: Vec<u8> = (0..next() % 40)
                .map(|_| alphabet[next() as usize % alphabet.len()])
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let host = normalize_host(&text);
            assert!(!host.bytes().any(|c| c.is_ascii_uppercase()));
            assert!(!host.ends_with('.'));
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                let _ = parse_app_instance(&value);
            }
        }
    }

    #[test]
    fn header_values_survive_odd_text() {
        assert_eq!(header_value("a\nb"), "a b");
    }

    #[test]
    fn request_ids_are_distinct_v4_uuids() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(a.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }
}

//! The request path, in named phases: find the route (`route`), write the
//! head every instance gets (`forward_head`), try instances (`forward`),
//! answer (`respond`). Each request is streamed: the client's body goes to the
//! instance as it arrives and the instance's response goes back as it is
//! produced; nothing is buffered whole. Connections to instances are kept
//! alive and reused (`backend_io::Backends`, one per worker thread, so a
//! request and its instance connection stay on one thread). WebSocket (and
//! other `Upgrade`) requests are tunnelled once the instance answers
//! `101 Switching Protocols`.
//!
//! Per request no header map is built: the client's header lines are
//! copied once into the instance's request head (less the hop-by-hop ones,
//! plus Gorouter's), the instance's lines go back to the client with a
//! skip mask and the router's few additions ([`ResponseHeaders`]),
//! per-instance values are made when the table is built, and the access
//! line is formatted by the log writer, off the request path. hyper's side
//! (HTTPS) converts its maps to lines and back.
//!
//! Architecture invariant: nothing here reads the BBS or a database; a
//! request reads one snapshot of the [`RouteTable`](crate::RouteTable).

use crate::RouterConfig;
use crate::access_log::{AccessLog, AccessRecord, LoggedBody};
use crate::backend_io::{BackendError, Backends, Outgoing};
use crate::client_conn::{Activity, ClientBody, Timed, Timeouts};
use crate::front::{ClientUpgrade, RequestSource, Timer};
use crate::h1::{self, Conn, InstanceBody, Owner, RequestBody, RequestHead, ResponseHead};
use crate::head::{Headers, Name, names, push_header, skipped};
use crate::sticky;
use crate::sync::{Held, SharedTable, WorkerTable};
use crate::table::{Counted, Endpoint, Pool, RouteTable, strip_host};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::cell::Cell;
use std::convert::Infallible;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

const X_VCAP_REQUEST_ID: HeaderName = HeaderName::from_static("x-vcap-request-id");
const X_CF_ROUTER_ERROR: HeaderName = HeaderName::from_static("x-cf-routererror");

/// Where a request came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer<'a> {
    pub addr: SocketAddr,
    /// Its address as `X-Forwarded-For` text, made once per connection.
    pub ip: &'a HeaderValue,
    /// It came over HTTPS.
    pub tls: bool,
}

/// A client's request head, from either front.
#[derive(Debug)]
pub(crate) struct ClientRequest {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: Headers,
}

/// What the proxy answers with: its head, and the instance's streamed
/// body or a router error's text.
pub(crate) struct ProxyResponse {
    pub status: StatusCode,
    pub headers: ResponseHeaders,
    pub body: ProxyBody,
    /// After `101` to the plain front: the instance's connection, for the
    /// front to tunnel to once it wrote the head.
    pub tunnel: Option<Conn>,
}

/// A response's header lines: the instance's as it sent them, less those
/// the router does not pass on, then the router's own.
pub(crate) struct ResponseHeaders {
    /// The instance's lines (none in the router's own answers).
    pub lines: Headers,
    /// Lines of `lines` left out (a bit per line).
    pub skip: u128,
    /// The router's headers (a sticky session's cookie, an upgrade's, an
    /// error's).
    pub added: Vec<(HeaderName, HeaderValue)>,
    /// `X-Vcap-Request-Id`, on every response.
    pub request_id: RequestId,
    /// The lines that go out carry a `Content-Length`, a `Date`.
    pub has_length: bool,
    pub has_date: bool,
}

impl ResponseHeaders {
    /// The lines as HTTP/1 writes them, without the blank line.
    pub fn write(&self, out: &mut Vec<u8>) {
        self.lines.write(out, self.skip);
        for (name, value) in &self.added {
            push_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
        push_header(
            out,
            Name::XVcapRequestId.as_str().as_bytes(),
            self.request_id.as_bytes(),
        );
    }

    /// As hyper's map (the HTTPS side).
    fn into_map(self) -> HeaderMap {
        let mut map = self.lines.to_map(self.skip, self.added.len() + 1);
        for (name, value) in self.added {
            map.append(name, value);
        }
        if let Ok(id) = HeaderValue::from_bytes(self.request_id.as_bytes()) {
            map.insert(X_VCAP_REQUEST_ID, id);
        }
        map
    }
}

impl ProxyResponse {
    /// As hyper's response (the HTTPS side, which has no plain tunnel).
    fn into_http(self) -> Response<ProxyBody> {
        let mut response = Response::new(self.body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.into_map();
        response
    }
}

/// A response body: an instance's, streamed (and logged when done), or
/// the router's own text.
pub(crate) enum ProxyBody {
    /// Boxed: a response's head and body move a few times on their way.
    Instance(Box<LoggedBody>),
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// The whole rest of the body appended to `out` when it is here already
    /// and at most `max` bytes (the plain front then writes head and body
    /// at once without polling frames); false when it has to be polled.
    pub fn take_whole(&mut self, out: &mut Vec<u8>, max: usize) -> bool {
        match self {
            ProxyBody::Instance(body) => body.take_whole(out, max),
            ProxyBody::Full(data) if data.as_ref().is_none_or(|d| d.len() <= max) => {
                out.extend_from_slice(&data.take().unwrap_or_default());
                true
            }
            ProxyBody::Full(_) => false,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Instance(body) => Pin::new(&mut **body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(BoxError::from))),
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Instance(body) => body.is_end_stream(),
            ProxyBody::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Instance(body) => body.size_hint(),
            ProxyBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// The proxy of one worker thread: a table to route by, its own pool of
/// connections to instances, and the access log.
pub struct Proxy {
    config: RouterConfig,
    table: WorkerTable,
    log: AccessLog,
    backends: Arc<Backends>,
    /// Cancelled when the drain after shutdown is over: ends tunnels that
    /// are still open.
    hard_stop: CancellationToken,
    /// Set when the router stops accepting: responses end their connection
    /// (a flag, not the shutdown token, whose check takes a lock).
    draining: AtomicBool,
}

/// One request as the phases pass it on.
pub(crate) struct Forward {
    method: Method,
    /// The head as every instance gets it, less each one's own headers.
    head: RequestHead,
    framing: h1::Outgoing,
    idempotent: bool,
    body: RequestSource,
    record: Box<AccessRecord>,
    upgrade: Option<ClientUpgrade>,
    /// The instance guid of the request's `__VCAP_ID__` (sticky session).
    sticky: Option<String>,
}

impl Forward {
    /// A bodiless `GET` or `HEAD` whose head is written (the plain front's
    /// one pass, when its first attempt failed).
    pub(crate) fn common(
        method: Method,
        head: RequestHead,
        body: RequestSource,
        record: Box<AccessRecord>,
    ) -> Forward {
        Forward {
            method,
            head,
            framing: h1::Outgoing::Empty,
            idempotent: true,
            body,
            record,
            upgrade: None,
            sticky: None,
        }
    }
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
            table: WorkerTable::new(table),
            log,
            hard_stop,
            draining: AtomicBool::new(false),
        }
    }

    pub(crate) fn backends(&self) -> &Arc<Backends> {
        &self.backends
    }

    pub(crate) fn log(&self) -> &AccessLog {
        &self.log
    }

    pub(crate) fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// From now on each response is its connection's last.
    pub(crate) fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Closes the worker's connections to instances that were idle too
    /// long, and lets go of a replaced table.
    pub(crate) fn sweep(&self) {
        self.backends.sweep();
        drop(self.table.snapshot());
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
                let (mut parts, body) = request.into_parts();
                let upgrade = parts
                    .extensions
                    .remove::<hyper::upgrade::OnUpgrade>()
                    .map(ClientUpgrade::Hyper);
                let request = ClientRequest {
                    headers: Headers::from_map(&parts.headers),
                    method: parts.method,
                    uri: parts.uri,
                    version: parts.version,
                };
                let response = proxy
                    .handle(
                        request,
                        RequestSource::Hyper(body),
                        upgrade,
                        Peer {
                            addr: client_addr,
                            ip: &client_ip,
                            tls,
                        },
                        &mut Timer::default(),
                    )
                    .await;
                let mut response = response.into_http();
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

    /// One request, from either front: its head and its body, and how
    /// the client's connection is handed over if it asks to upgrade.
    pub(crate) async fn handle(
        &self,
        request: ClientRequest,
        body: RequestSource,
        client_upgrade: Option<ClientUpgrade>,
        peer: Peer<'_>,
        timer: &mut Timer,
    ) -> ProxyResponse {
        let table = self.table();
        match self.prepare(&table, request, body, client_upgrade, peer) {
            Ok((chosen, forward)) => self.forward(chosen, forward, timer, None).await,
            Err(response) => *response,
        }
    }

    /// The table requests are routed by now.
    pub(crate) fn table(&self) -> Arc<Held> {
        self.table.snapshot()
    }

    /// A request up to its first attempt: its route and the instances to
    /// try, the head they get and its access record — or the router's own
    /// answer (boxed: the rare way). Apart from [`Proxy::forward`] so that
    /// a front awaits one future per request, not one holding the other.
    pub(crate) fn prepare<'t>(
        &self,
        table: &'t RouteTable,
        request: ClientRequest,
        body: RequestSource,
        client_upgrade: Option<ClientUpgrade>,
        peer: Peer<'_>,
    ) -> Result<(Attempts<'t>, Forward), Box<ProxyResponse>> {
        let Peer {
            addr: client_addr,
            ip: client_ip,
            tls,
        } = peer;
        let started = Instant::now();
        let received_at = SystemTime::now();
        let request_id = RequestId::new();
        let raw_host = request_host(&request);
        let mut target = match route(
            table,
            &raw_host,
            &request.uri,
            &request.headers,
            client_addr.ip(),
        ) {
            Ok(target) => target,
            Err(refusal) => return Err(Box::new(refusal.response(&raw_host, request_id))),
        };
        let ClientRequest {
            method,
            uri,
            version,
            headers,
        } = request;
        if target.pinned.is_none() {
            target.sticky = sticky::requested_instance(
                headers.get_all(Name::Cookie),
                &self.config.sticky_session_cookies,
            );
        }
        let chosen = match self.choose(&target) {
            Ok(chosen) => chosen,
            Err(refusal) => return Err(Box::new(refusal.response(&raw_host, request_id))),
        };
        let upgrade = upgrade_protocol(&headers);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut head = RequestHead::new(&method, path, headers.byte_len());
        let forwarded = forward_head(
            head.shared(),
            &headers,
            &Additions {
                raw_host: &raw_host,
                client_ip,
                request_id: &request_id,
                upgrade: upgrade.as_ref(),
                proto: ForwardedProto {
                    tls,
                    sanitize: self.config.sanitize_forwarded_proto,
                },
                received_at,
            },
        );
        let record = Box::new(AccessRecord {
            host: raw_host,
            received_at,
            started,
            forwarded_at: None,
            method: method.clone(),
            uri,
            version,
            referer: headers.value(Name::Referer),
            user_agent: headers.value(Name::UserAgent),
            client_addr,
            x_forwarded_for: Some(forwarded.x_forwarded_for),
            x_forwarded_proto: Some(forwarded.x_forwarded_proto),
            request_id,
            request_bytes: 0,
            // The first to try; replaced if another handles the request.
            endpoint: chosen[0].clone(),
            router_error: None,
        });
        let forward = Forward {
            framing: body.outgoing(&headers),
            idempotent: is_idempotent(&method, &headers),
            method,
            head,
            body,
            record,
            upgrade: upgrade.and(client_upgrade),
            sticky: target.sticky,
        };
        Ok((chosen, forward))
    }

    /// Tries the route's instances in turn (see the retry rule below) and
    /// answers with the first response, or with 502 (`failure`: why an
    /// attempt made before failed, if none of these is made).
    pub(crate) async fn forward(
        &self,
        chosen: Attempts<'_>,
        forward: Forward,
        timer: &mut Timer,
        mut failure: Option<(Arc<Endpoint>, String)>,
    ) -> ProxyResponse {
        let Forward {
            method,
            mut head,
            framing,
            idempotent,
            body,
            mut record,
            upgrade,
            sticky,
        } = forward;
        let mut body = RequestBody::new(body, framing);
        for endpoint in chosen {
            if endpoint.wire.authority.is_none() {
                let why = format!("request target for {}: not a host and port", endpoint.addr);
                failure = Some((endpoint.clone(), why));
                break;
            }
            // The app's time starts with the first attempt (the one pass's,
            // when it handed the request over after it).
            record.forwarded_at.get_or_insert_with(Instant::now);
            let wire = &endpoint.wire;
            let attempt_head = head.for_attempt(&wire.lines, body.framing());
            let in_flight = endpoint
                .state
                .start_request(self.config.max_conns_per_backend);
            let outgoing = Outgoing {
                head: attempt_head,
                body: &mut body,
                head_request: method == Method::HEAD,
                idempotent,
            };
            // From the request's start: the clock was read then.
            let deadline =
                tokio::time::Instant::from_std(record.started + self.config.request_timeout);
            let sent = tokio::select! {
                biased;
                sent = self.backends.send(&endpoint.addr, outgoing) => Ok(sent),
                () = timer.until(deadline) => Err(()),
            };
            let error = match sent {
                Ok(Ok((response, conn))) => {
                    if !Arc::ptr_eq(&record.endpoint, endpoint) {
                        record.endpoint = endpoint.clone();
                    }
                    // The record's endpoint is this one: its response ends
                    // the count.
                    return self.respond(
                        response,
                        conn,
                        body,
                        upgrade,
                        record,
                        in_flight.hand_over(),
                        sticky.as_deref(),
                    );
                }
                Ok(Err(error)) => error,
                Err(_) => {
                    let why = no_response(endpoint, self.config.request_timeout);
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
        record.request_bytes = body.bytes();
        self.bad_gateway(record, failure)
    }

    /// The instances to try, in order: the pinned one, or up to
    /// `max_attempts` round-robin, skipping those at the connection limit
    /// and those that failed to dial recently — unless every one that is
    /// not at the limit failed, then those are tried anyway (Gorouter
    /// resets their failures too).
    pub(crate) fn choose<'t>(&self, target: &Target<'t>) -> Result<Attempts<'t>, Refusal> {
        let limit = self.config.max_conns_per_backend;
        if let Some(endpoint) = target.pinned {
            if endpoint.state.at_limit(limit) {
                return Err(Refusal::ConnectionLimit);
            }
            return Ok(smallvec::smallvec![endpoint]);
        }
        let max = self.config.max_attempts.max(1);
        let mut chosen = Attempts::new();
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
                && !endpoint.state.recently_failed()
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
    pub(crate) fn bad_gateway(
        &self,
        mut record: Box<AccessRecord>,
        failure: Option<(Arc<Endpoint>, String)>,
    ) -> ProxyResponse {
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
        let request_id = record.request_id;
        record.router_error = Some(router_error.clone());
        self.log.emit(record, StatusCode::BAD_GATEWAY.as_u16(), 0);
        error_response(
            StatusCode::BAD_GATEWAY,
            &router_error,
            "502 Bad Gateway: Registered endpoint failed to handle the request.\n".into(),
            None,
            request_id,
        )
    }

    /// The instance's response as the client gets it. A `101` to an upgrade
    /// request also starts the tunnel between the client's upgraded
    /// connection and the instance's (hyper's side; the plain front starts
    /// it itself once it wrote the head).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn respond(
        &self,
        head: ResponseHead,
        conn: Conn,
        request: RequestBody,
        client_upgrade: Option<ClientUpgrade>,
        mut record: Box<AccessRecord>,
        in_flight: Counted,
        sticky: Option<&str>,
    ) -> ProxyResponse {
        let switching = head.status == StatusCode::SWITCHING_PROTOCOLS;
        let mut tunnel = None;
        let body = if switching {
            record.request_bytes = request.bytes();
            // An upgraded connection is the tunnel's now, never the pool's.
            match client_upgrade {
                Some(ClientUpgrade::Hyper(client_upgrade)) => self.tunnel(
                    async move {
                        let client = client_upgrade.await?;
                        Ok::<_, BoxError>((TokioIo::new(client), Bytes::new()))
                    },
                    conn,
                ),
                Some(ClientUpgrade::Front) => tunnel = Some(conn),
                None => drop(conn),
            }
            InstanceBody::empty()
        } else {
            let owner = Owner {
                backends: self.backends.clone(),
            };
            InstanceBody::new(conn, &head, request, owner)
        };
        let ResponseHead {
            status,
            headers: lines,
            skip: framing_skip,
            ..
        } = head;
        let headers = response_headers(
            lines,
            framing_skip,
            switching,
            sticky,
            &record.endpoint.instance_guid,
            &self.config.sticky_session_cookies,
            record.request_id,
        );
        ProxyResponse {
            status,
            headers,
            body: ProxyBody::Instance(Box::new(LoggedBody::new(
                body,
                status.as_u16(),
                record,
                self.log.clone(),
                in_flight,
            ))),
            tunnel,
        }
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

/// An instance's header lines as the client gets them: less the lines
/// about the instance's connection, its own request id and a length beside
/// a transfer coding (`framing_skip`); plus a sticky session's cookie and
/// an upgrade's headers.
pub(crate) fn response_headers(
    lines: Headers,
    framing_skip: u128,
    switching: bool,
    sticky: Option<&str>,
    instance_guid: &str,
    session_cookies: &[String],
    request_id: RequestId,
) -> ResponseHeaders {
    let skip = framing_skip | lines.connection_lines() | lines.mask(names(&[Name::XVcapRequestId]));
    // Whether the framing and `Date` are among the lines kept.
    let kept = |name| lines.mask(names(&[name])) & !skip != 0;
    let (has_length, has_date) = (kept(Name::ContentLength), kept(Name::Date));
    let mut added = Vec::new();
    if let Some(pin) = sticky::pin_cookie(
        lines.get_all(Name::SetCookie),
        sticky,
        instance_guid,
        session_cookies,
    ) {
        added.push((header::SET_COOKIE, pin));
    }
    if switching && let Some(protocol) = lines.value(Name::Upgrade) {
        added.push((header::CONNECTION, HeaderValue::from_static("upgrade")));
        added.push((header::UPGRADE, protocol));
    }
    ResponseHeaders {
        lines,
        skip,
        added,
        request_id,
        has_length,
        has_date,
    }
}

/// The instances a request tries, in order (Gorouter's default is 3 tries;
/// more spill to the heap).
pub(crate) type Attempts<'t> = smallvec::SmallVec<[&'t Arc<Endpoint>; 4]>;

/// Why a request is answered by the router itself, before any instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
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
    fn response(self, raw_host: &HeaderValue, request_id: RequestId) -> ProxyResponse {
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
fn request_host(request: &ClientRequest) -> HeaderValue {
    match request.uri.authority() {
        Some(authority) => header_value(authority.as_str()),
        None => request
            .headers
            .value(Name::Host)
            .unwrap_or_else(|| HeaderValue::from_static("")),
    }
}

/// Where a request may go: a route's pool, and the one instance the
/// client asked for with `X-Cf-App-Instance`, if it did.
pub(crate) struct Target<'t> {
    pub pool: &'t Pool,
    pub pinned: Option<&'t Arc<Endpoint>>,
    /// The instance guid a sticky session asks for (it may be gone).
    pub sticky: Option<String>,
}

/// The pool (and instance) a request goes to, or why there is none.
fn route<'t>(
    table: &'t RouteTable,
    raw_host: &HeaderValue,
    uri: &Uri,
    headers: &Headers,
    client_ip: IpAddr,
) -> Result<Target<'t>, Refusal> {
    let host =
        routable_host(raw_host.to_str().unwrap_or(""), client_ip).ok_or(Refusal::EmptyHost)?;
    let pool = table
        .lookup_stripped(host, uri.path())
        .ok_or(Refusal::UnknownRoute)?;
    let pinned = match headers.get(Name::XCfAppInstance) {
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

/// The host a Host header names, without its port; `None` when it is empty
/// — or the client's own address, which is what some load balancers fill
/// in for HTTP/1.0 requests without one: Gorouter treats it as empty
/// rather than reveal the balancer's address.
pub(crate) fn routable_host(raw_host: &str, client_ip: IpAddr) -> Option<&str> {
    let host = strip_host(raw_host);
    // Only a host with a digit first or a colon can be an address.
    let may_be_address =
        host.starts_with(|c: char| c.is_ascii_digit()) || host.bytes().any(|c| c == b':');
    if host.is_empty() || may_be_address && host.parse::<IpAddr>().is_ok_and(|ip| ip == client_ip) {
        return None;
    }
    Some(host)
}

/// `X-Cf-App-Instance: APP_GUID:INDEX`, as Gorouter accepts it: a lower-case
/// UUID, a colon, decimal digits.
fn parse_app_instance(value: &[u8]) -> Option<(&str, u32)> {
    let (guid, index) = std::str::from_utf8(value).ok()?.split_once(':')?;
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

/// A request's `X-Vcap-Request-Id`: a version 4 UUID's text, held by
/// value (it goes to the instance, into the response and the access line,
/// and is never shared, so it costs no allocation or reference count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; uuid::fmt::Hyphenated::LENGTH]);

impl RequestId {
    /// A fresh one, from a per-thread generator seeded from the OS, so a
    /// request costs no system call. It names requests in logs; it is not
    /// a secret.
    #[allow(clippy::new_without_default)] // a fresh random id, not a default
    pub fn new() -> RequestId {
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
        uuid.hyphenated().encode_lower(&mut text);
        RequestId(text)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text (hex digits and dashes).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The protocol a client asks to switch to (`Connection: upgrade` plus
/// `Upgrade: <protocol>`), if it does.
fn upgrade_protocol(headers: &Headers) -> Option<HeaderValue> {
    if headers.connection_has(b"upgrade") {
        headers.value(Name::Upgrade)
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

/// What the router adds to every request it forwards.
struct Additions<'a> {
    /// The Host as the client sent it.
    raw_host: &'a HeaderValue,
    client_ip: &'a HeaderValue,
    request_id: &'a RequestId,
    /// The protocol of an upgrade the client asked for.
    upgrade: Option<&'a HeaderValue>,
    proto: ForwardedProto,
    received_at: SystemTime,
}

/// The `X-Forwarded-*` values as the instance gets them (for the access
/// line).
pub(crate) struct Forwarded {
    pub x_forwarded_for: HeaderValue,
    pub x_forwarded_proto: HeaderValue,
}

/// Writes the client's header lines as every instance receives them:
/// the hop-by-hop ones and the client's claims about instances left out,
/// Gorouter's additions after them. The lines are copied as they came; the
/// per-instance headers and the framing are added per attempt
/// ([`RequestHead::for_attempt`]).
fn forward_head(out: &mut Vec<u8>, headers: &Headers, add: &Additions<'_>) -> Forwarded {
    let connection = headers.connection_lines();
    // The lines the router writes itself (or leaves out).
    let mut replaced = names(&[
        Name::Host,
        Name::ContentLength,
        Name::XForwardedFor,
        Name::XVcapRequestId,
        Name::XCfApplicationId,
        Name::XCfInstanceId,
        Name::XCfInstanceIndex,
    ]);
    if add.proto.sanitize {
        replaced |= names(&[Name::XForwardedProto]);
    }
    let skip = connection | headers.mask(replaced);
    // The client's own values, from lines not about its connection.
    let client = |name| {
        headers
            .get_all_indexed(name)
            .filter(move |&(i, _)| !skipped(connection, i))
            .map(|(_, value)| value)
    };
    let client_proto = client(Name::XForwardedProto).next();
    let request_start = client(Name::XRequestStart).next().is_some();
    headers.write(out, skip);
    if let Some(protocol) = add.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
        push_header(out, b"upgrade", protocol.as_bytes());
    }
    push_header(out, b"host", add.raw_host.as_bytes());
    let x_forwarded_for = push_forwarded_for(out, client(Name::XForwardedFor), add.client_ip);
    let x_forwarded_proto = match client_proto {
        Some(proto) if !add.proto.sanitize => {
            HeaderValue::from_bytes(proto).unwrap_or(HeaderValue::from_static("http"))
        }
        _ => {
            let scheme = HeaderValue::from_static(if add.proto.tls { "https" } else { "http" });
            push_header(
                out,
                Name::XForwardedProto.as_str().as_bytes(),
                scheme.as_bytes(),
            );
            scheme
        }
    };
    push_start_and_id(out, !request_start, add.received_at, add.request_id);
    Forwarded {
        x_forwarded_for,
        x_forwarded_proto,
    }
}

/// `X-Forwarded-For` as the instance gets it, written to `out`: the
/// client's non-empty values in order, then the client's address.
pub(crate) fn push_forwarded_for<'a>(
    out: &mut Vec<u8>,
    client_values: impl Iterator<Item = &'a [u8]>,
    client_ip: &HeaderValue,
) -> HeaderValue {
    let mut joined: Option<Vec<u8>> = None;
    for value in client_values.filter(|v| !v.trim_ascii().is_empty()) {
        let joined = joined.get_or_insert_with(|| Vec::with_capacity(64));
        joined.extend_from_slice(value);
        joined.extend_from_slice(b", ");
    }
    let x_forwarded_for = match joined {
        None => client_ip.clone(),
        Some(mut joined) => {
            joined.extend_from_slice(client_ip.as_bytes());
            HeaderValue::from_maybe_shared(Bytes::from(joined))
                .unwrap_or_else(|_| client_ip.clone())
        }
    };
    push_header(
        out,
        Name::XForwardedFor.as_str().as_bytes(),
        x_forwarded_for.as_bytes(),
    );
    x_forwarded_for
}

/// The router's last lines of every forwarded head: `X-Request-Start`
/// (milliseconds since the epoch, unless the client sent one) and
/// `X-Vcap-Request-Id`.
pub(crate) fn push_start_and_id(
    out: &mut Vec<u8>,
    request_start: bool,
    received_at: SystemTime,
    request_id: &RequestId,
) {
    if request_start {
        let ms = received_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64;
        push_header(
            out,
            Name::XRequestStart.as_str().as_bytes(),
            itoa::Buffer::new().format(ms).as_bytes(),
        );
    }
    push_header(
        out,
        Name::XVcapRequestId.as_str().as_bytes(),
        request_id.as_bytes(),
    );
}

/// Go's notion (which Gorouter uses): safe methods, or a request carrying
/// an idempotency key.
fn is_idempotent(method: &Method, headers: &Headers) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) || headers.iter().any(|(name, _)| {
        name.eq_ignore_ascii_case(b"idempotency-key")
            || name.eq_ignore_ascii_case(b"x-idempotency-key")
    })
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
/// Why a request that timed out failed, in the access line and the log.
pub(crate) fn no_response(endpoint: &Endpoint, timeout: Duration) -> String {
    format!(
        "no response from {} within {}s",
        endpoint.addr,
        timeout.as_secs()
    )
}

pub(crate) fn describe(error: &BackendError, endpoint: &Endpoint) -> String {
    match error {
        BackendError::Connect(error) => format!("dial tcp {}: {error}", endpoint.addr),
        BackendError::Request(error) => format!("{}: {error}", endpoint.addr),
    }
}

/// The headers naming the instance a request goes to (Gorouter's
/// `X-Cf-ApplicationID`, `X-Cf-InstanceID`, `X-Cf-InstanceIndex`), as the
/// lines every request to it carries.
pub(crate) fn instance_lines(app_guid: &str, instance_guid: &str, index: u32) -> Box<[u8]> {
    let mut lines = Vec::new();
    for (name, value) in [
        (Name::XCfApplicationId, header_value(app_guid)),
        (Name::XCfInstanceId, header_value(instance_guid)),
        (Name::XCfInstanceIndex, HeaderValue::from(index)),
    ] {
        push_header(&mut lines, name.as_str().as_bytes(), value.as_bytes());
    }
    lines.into_boxed_slice()
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
    request_id: RequestId,
) -> ProxyResponse {
    let mut added = vec![
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        ),
        (
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if let Some(cache_control) = cache_control {
        added.push((
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        ));
    }
    added.push((X_CF_ROUTER_ERROR, header_value(router_error)));
    ProxyResponse {
        status,
        headers: ResponseHeaders {
            lines: Headers::default(),
            skip: 0,
            added,
            request_id,
            has_length: false,
            has_date: false,
        },
        body: ProxyBody::Full(Some(Bytes::from(body))),
        tunnel: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::table::normalize_host;

    const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const X_CF_APPLICATION_ID: HeaderName = HeaderName::from_static("x-cf-applicationid");
    const X_CF_INSTANCE_ID: HeaderName = HeaderName::from_static("x-cf-instanceid");
    const X_CF_INSTANCE_INDEX: HeaderName = HeaderName::from_static("x-cf-instanceindex");

    /// A request id for tests, with its text.
    pub(crate) const RID: RequestId = RequestId(*b"0e7c1f5a-3b2d-4c8e-9f10-a1b2c3d4e5f6");
    pub(crate) const RID_TEXT: &str = "0e7c1f5a-3b2d-4c8e-9f10-a1b2c3d4e5f6";

    /// Headers that describe one connection, not the message (RFC 9110
    /// §7.6.1), listed apart from `head::HOP_BY_HOP` for the test below.
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

    /// The head an instance gets for a request with `client`'s headers,
    /// read back (as the instance would) into a map.
    fn forwarded_with(
        client: &HeaderMap,
        host: &str,
        upgrade: Option<&HeaderValue>,
        proto: ForwardedProto,
    ) -> HeaderMap {
        let mut head = RequestHead::new(&Method::GET, "/", 0);
        forward_head(
            head.shared(),
            &Headers::from_map(client),
            &Additions {
                raw_host: &HeaderValue::from_str(host).unwrap(),
                client_ip: &HeaderValue::from_static("192.0.2.7"),
                request_id: &RID,
                upgrade,
                proto,
                received_at: SystemTime::now(),
            },
        );
        let wire = head.for_attempt(&instance_lines("app", "instance", 0), h1::Outgoing::Empty);
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut slots);
        assert!(parsed.parse(wire).unwrap().is_complete());
        let mut headers = HeaderMap::new();
        for h in parsed.headers.iter() {
            headers.append(
                HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(h.value).unwrap(),
            );
        }
        // The instance's own headers are the router's, added per attempt.
        for (name, value) in [
            (X_CF_APPLICATION_ID, "app"),
            (X_CF_INSTANCE_ID, "instance"),
            (X_CF_INSTANCE_INDEX, "0"),
        ] {
            let all: Vec<_> = headers.get_all(&name).iter().collect();
            assert_eq!(all, [value], "{name}");
            headers.remove(&name);
        }
        headers
    }

    fn forwarded(client: &HeaderMap, host: &str, upgrade: Option<&HeaderValue>) -> HeaderMap {
        let proto = ForwardedProto {
            tls: false,
            sanitize: false,
        };
        forwarded_with(client, host, upgrade, proto)
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
        assert_eq!(headers["x-vcap-request-id"], RID_TEXT);
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
            let headers = forwarded_with(
                &map(client),
                "a.test",
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
        let protocol = upgrade_protocol(&Headers::from_map(&client)).unwrap();
        assert_eq!(protocol, "websocket");
        let headers = forwarded(&client, "a.test", Some(&protocol));
        assert_eq!(headers["connection"], "upgrade");
        assert_eq!(headers["upgrade"], "websocket");
        assert!(upgrade_protocol(&Headers::from_map(&map(&[("upgrade", "websocket")]))).is_none());
    }

    #[test]
    fn idempotency_follows_go() {
        let none = Headers::default();
        assert!(is_idempotent(&Method::GET, &none));
        assert!(!is_idempotent(&Method::POST, &none));
        let keyed = Headers::from_map(&map(&[("Idempotency-Key", "k")]));
        assert!(is_idempotent(&Method::POST, &keyed));
    }

    #[test]
    fn app_instance_headers_follow_gorouters_pattern() {
        let guid = "0f2ab3c4-1234-4abc-9def-00112233aabb";
        let parse = |v: &str| parse_app_instance(v.as_bytes()).map(|(g, i)| (g.to_string(), i));
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
            assert_eq!(headers[X_VCAP_REQUEST_ID], RID_TEXT, "case {case}");
            assert_eq!(headers.get_all(header::HOST).iter().count(), 1);
            assert_eq!(headers[header::HOST], "app.test");
            let xff: Vec<_> = headers.get_all(X_FORWARDED_FOR).iter().collect();
            assert_eq!(xff.len(), 1, "case {case}");
            assert!(
                xff[0].to_str().unwrap().ends_with("192.0.2.7"),
                "case {case}"
            );
            assert!(headers.contains_key(X_FORWARDED_PROTO));
            // What is not the router's business passes untouched, in order
            // (as the instance reads it: without whitespace around values).
            for kept in ["cookie", "x-custom"] {
                if !named.iter().any(|n| n == kept) {
                    let values = |map: &HeaderMap| -> Vec<Vec<u8>> {
                        let all = map.get_all(kept).iter();
                        all.map(|v| v.as_bytes().trim_ascii().to_vec()).collect()
                    };
                    let (before, after) = (values(&client), values(&headers));
                    assert_eq!(before, after, "case {case}: {kept}");
                }
            }
        }
    }

    /// The plain front's one pass (`fast.rs`) writes a common request's
    /// head byte for byte as the phases do, whatever its lines.
    #[test]
    fn the_one_pass_rewrites_common_requests_as_the_phases_do() {
        let names = [
            "x-forwarded-for",
            "X-Forwarded-For",
            "x-request-start",
            "x-vcap-request-id",
            "x-cf-instanceid",
            "X-CF-ApplicationID",
            "x-cf-instanceindex",
            "referer",
            "user-agent",
            "accept",
            "cookie",
            "x-custom",
        ];
        let values = ["", "a", "10.0.0.1", " ", "\t1,2", "x y", "192.0.2.1, ::1"];
        let separators = [": ", ":", ":  "];
        let ends = ["\r\n", "  \r\n", "\t\r\n"];
        let client_ip = HeaderValue::from_static("192.0.2.7");
        let received_at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut next = generator(0x51f1_5eed_0b5e_55ed);
        for case in 0..3000 {
            let mut text = String::from("GET /p/a?q=1 HTTP/1.1\r\n");
            let host_at = next() as usize % 4;
            for i in 0..next() % 10 {
                if i as usize == host_at {
                    text.push_str("Host: App.test:80\r\n");
                }
                let pick = |list: &[&'static str], n: u64| list[n as usize % list.len()];
                text.push_str(pick(&names, next()));
                text.push_str(pick(&separators, next()));
                text.push_str(pick(&values, next()));
                text.push_str(pick(&ends, next()));
            }
            if !text.contains("Host:") {
                text.push_str("Host: App.test:80\r\n");
            }
            text.push_str("\r\n");

            // The phases: the front's parse, then `forward_head`.
            let mut buf = bytes::BytesMut::from(text.as_str());
            let head = crate::front::take_head(&mut buf).unwrap().unwrap();
            let raw_host = head.request.headers.value(Name::Host).unwrap();
            let mut general = RequestHead::new(&Method::GET, "/p/a?q=1", 0);
            let forwarded = forward_head(
                general.shared(),
                &head.request.headers,
                &Additions {
                    raw_host: &raw_host,
                    client_ip: &client_ip,
                    request_id: &RID,
                    upgrade: None,
                    proto: ForwardedProto {
                        tls: false,
                        sanitize: false,
                    },
                    received_at,
                },
            );

            // The one pass: the head parsed in place.
            let bytes = text.as_bytes();
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Request::new(&mut slots);
            assert!(parsed.parse(bytes).unwrap().is_complete());
            let base = bytes.as_ptr() as usize;
            let spans: Vec<_> = parsed
                .headers
                .iter()
                .map(|h| crate::head::span_of(base, h))
                .collect();
            let mut one_pass = RequestHead::new(&Method::GET, "/p/a?q=1", 0);
            let rewritten = crate::fast::write_request(
                one_pass.shared(),
                bytes,
                &spans,
                raw_host.as_bytes(),
                &client_ip,
                &RID,
                received_at,
            );

            let lines = instance_lines("app", "instance", 0);
            assert_eq!(
                String::from_utf8_lossy(one_pass.for_attempt(&lines, h1::Outgoing::Empty)),
                String::from_utf8_lossy(general.for_attempt(&lines, h1::Outgoing::Empty)),
                "case {case}: {text:?}"
            );
            assert_eq!(rewritten.x_forwarded_for, forwarded.x_forwarded_for);
            assert_eq!(rewritten.x_forwarded_proto, forwarded.x_forwarded_proto);
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
            let _ = parse_app_instance(&bytes);
        }
    }

    #[test]
    fn header_values_survive_odd_text() {
        assert_eq!(header_value("a\nb"), "a b");
    }

    #[test]
    fn request_ids_are_distinct_v4_uuids() {
        let a = RequestId::new();
        let b = RequestId::new();
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(a.as_str()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }
}

//! The plain listener's HTTP/1.1 server side, built for the router: hyper's
//! server stays for HTTPS (HTTP/1.1 and HTTP/2 by ALPN) and `/health`.
//!
//! Per connection there is one read buffer. A request head is parsed in
//! place with `httparse` ([`take_head`]); the URI and the header lines
//! ([`crate::head::Headers`]) share the head's bytes, as the instance side
//! does with response heads ([`crate::h1`]). Framing follows RFC 9112
//! strictly: a transfer coding other than `chunked` last,
//! `Transfer-Encoding` in HTTP/1.0, differing `Content-Length`s, a second
//! `Host`, obs-fold or a bad request line are answered 400 and the
//! connection closed; a head over hyper's limits (the
//! router's until now) is 431, a URI over them 414. `Content-Length` next
//! to `Transfer-Encoding: chunked` is served as chunked (the length is not
//! passed on) and the connection closed after it, as RFC 9112 §6.3 allows
//! and as the router always did. Pipelined requests are answered in order,
//! one at a time.
//!
//! Sharing with the HTTPS path: both fronts hand the proxy a
//! [`ClientRequest`] and a [`RequestSource`] (hyper's `Incoming`, or
//! [`FrontBody`] reading this connection) and get a [`ProxyResponse`]
//! back, whose head this side writes from the instance's own lines
//! ([`ResponseHeaders::write`]), so route lookup, header
//! rewriting, sticky sessions, retries, limits, error responses and the
//! access log exist once, in [`crate::proxy`]. The one thing that differs,
//! taking over the connection after `101`, is a [`ClientUpgrade`]. The
//! body reads the connection while the proxy's response may still be
//! pumping it (an `nc`-style app that answers early), so the connection's
//! socket and buffer sit behind a mutex only this connection's task ever
//! takes, for a poll at a time.
//!
//! A response goes out as its head and, when the body's data is there
//! already (a small response read with its head), that data in the same
//! write. Longer bodies stream: with the instance's `Content-Length`,
//! chunked to HTTP/1.1 clients when the length is unknown, and delimited
//! by closing the connection for HTTP/1.0.
//!
//! Timeouts are Go's `http.Server`'s as the HTTPS side keeps them
//! ([`crate::client_conn`]): a head is due within the header read timeout
//! of the connection's start or of its first byte; a kept-alive connection
//! with no request is closed after the idle timeout. One timer per
//! connection, only ever moved earlier (a later deadline is taken up when
//! it fires), so a request costs no timer update.

use crate::fast::{self, Answer, Fast};
use crate::h1::{self, Chunk, Outgoing};
use crate::head::{Headers, Name, Span, span_of, tokens};
use crate::proxy::{
    BoxError, ClientRequest, Peer, Proxy, ProxyResponse, ResponseHeaders, header_value,
};
use bytes::{Buf, Bytes, BytesMut};
use http::{Method, StatusCode, Uri, Version};
use hyper::body::Body;
use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::SystemTime;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A request head larger than this is refused with 431: hyper's server's
/// default buffer limit, the router's limit before this module.
pub(crate) const MAX_HEAD: usize = 8192 + 4096 * 100;
/// A request target longer than this is refused with 414 (hyper's limit).
pub(crate) const MAX_URI: usize = u16::MAX as usize - 1;
/// Header lines in a request head, at most (hyper's default); more is 431.
pub(crate) const MAX_HEADERS: usize = 100;
/// Bytes read from a client at a time, at least room for.
const READ_CHUNK: usize = 8 * 1024;
/// Response data up to this much is copied behind what waits to be written
/// (the head, a chunk-size line) so that both go out in one write.
pub(crate) const COALESCE: usize = 16 * 1024;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A client's request body, as either front reads it.
pub(crate) enum RequestSource {
    /// From hyper's server (HTTPS).
    Hyper(hyper::body::Incoming),
    /// From a plain connection served here.
    Front(FrontBody),
}

impl RequestSource {
    /// How the body goes to the instance: with the client's length,
    /// chunked when its length is unknown, or none.
    pub fn outgoing(&self, headers: &Headers) -> Outgoing {
        match self {
            RequestSource::Hyper(body) => match body.size_hint().exact() {
                Some(n) if headers.has(Name::ContentLength) => Outgoing::Length(n),
                _ if body.is_end_stream() => Outgoing::Empty,
                _ => Outgoing::Chunked,
            },
            RequestSource::Front(body) => lock(&body.client).body.outgoing(headers),
        }
    }

    /// The next piece of the body's data; trailers are dropped.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        match self {
            RequestSource::Hyper(body) => loop {
                match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                    None => return Poll::Ready(None),
                    Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Poll::Ready(Some(Ok(data)));
                        }
                    }
                }
            },
            RequestSource::Front(body) => body.poll_data(cx),
        }
    }
}

/// How the connection is handed over after `101 Switching Protocols`.
pub(crate) enum ClientUpgrade {
    Hyper(hyper::upgrade::OnUpgrade),
    /// The front takes the instance's connection from the response
    /// ([`crate::proxy::ProxyResponse::tunnel`]) once the head is written.
    Front,
}

/// How much of a request body is still to come from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyState {
    /// `Content-Length`: this many bytes (0: no body, or all of it read).
    Length(u64),
    Chunked(Chunk),
}

impl BodyState {
    /// How a body in this state from the start goes to the instance (the
    /// lines are its request's).
    fn outgoing(self, headers: &Headers) -> Outgoing {
        match self {
            BodyState::Chunked(_) => Outgoing::Chunked,
            BodyState::Length(n) if headers.has(Name::ContentLength) => Outgoing::Length(n),
            BodyState::Length(_) => Outgoing::Empty,
        }
    }

    fn done(self) -> bool {
        matches!(self, BodyState::Length(0) | BodyState::Chunked(Chunk::Done))
    }
}

/// A client connection's socket, with what was read and not yet used.
pub(crate) struct Client {
    stream: TcpStream,
    buf: BytesMut,
    body: BodyState,
    /// What is left to write of a `100 Continue` the client asked for,
    /// written before the body is first read (as hyper does).
    interim: &'static [u8],
}

pub(crate) type Shared = Arc<Mutex<Client>>;

fn lock(client: &Shared) -> MutexGuard<'_, Client> {
    client.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request body read from the client's connection as the instance takes it.
pub(crate) struct FrontBody {
    client: Shared,
}

impl FrontBody {
    /// The request body of the request at the front of `client`'s buffer.
    pub fn source(client: &Shared) -> RequestSource {
        RequestSource::Front(FrontBody {
            client: client.clone(),
        })
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        let mut guard = lock(&self.client);
        let client = &mut *guard;
        while !client.interim.is_empty() {
            match ready!(Pin::new(&mut client.stream).poll_write(cx, client.interim)) {
                Ok(0) => {
                    return Poll::Ready(Some(
                        Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                    ));
                }
                Ok(n) => client.interim = &client.interim[n..],
                Err(error) => return Poll::Ready(Some(Err(error.into()))),
            }
        }
        loop {
            match &mut client.body {
                BodyState::Length(0) => return Poll::Ready(None),
                BodyState::Length(left) => {
                    if !client.buf.is_empty() {
                        let take = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(client.buf.len());
                        *left -= take as u64;
                        return Poll::Ready(Some(Ok(client.buf.split_to(take).freeze())));
                    }
                }
                BodyState::Chunked(state) => match h1::decode_chunked(state, &mut client.buf) {
                    Err(error) => return Poll::Ready(Some(Err(error.into()))),
                    Ok(Some(data)) => return Poll::Ready(Some(Ok(data))),
                    Ok(None) if *state == Chunk::Done => return Poll::Ready(None),
                    Ok(None) => {}
                },
            }
            h1::reserve(&mut client.buf, READ_CHUNK);
            match ready!(poll_read_buf(
                Pin::new(&mut client.stream),
                cx,
                &mut client.buf
            )) {
                Ok(0) => {
                    return Poll::Ready(Some(Err(
                        "the client closed its connection in the middle of the request body".into(),
                    )));
                }
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(error.into()))),
            }
        }
    }
}

/// Takes what the buffer holds of the rest of a request body the proxy did
/// not read (a refused request's, say); true if that was all of it.
fn discard_buffered(client: &mut Client) -> bool {
    match &mut client.body {
        BodyState::Length(left) => {
            let take = usize::try_from(*left)
                .unwrap_or(usize::MAX)
                .min(client.buf.len());
            client.buf.advance(take);
            *left -= take as u64;
        }
        BodyState::Chunked(state) => {
            while let Ok(Some(_)) = h1::decode_chunked(state, &mut client.buf) {}
        }
    }
    client.body.done()
}

/// Why a request head is refused before it reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    BadRequest(&'static str),
    UriTooLong,
    HeadTooLarge,
}

impl Refused {
    fn status(self) -> StatusCode {
        match self {
            Refused::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refused::UriTooLong => StatusCode::URI_TOO_LONG,
            Refused::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }
}

/// A parsed request head and how its connection goes on.
#[derive(Debug)]
pub(crate) struct Head {
    pub request: ClientRequest,
    pub body: BodyState,
    /// The client keeps the connection open after the response (its
    /// version and `Connection`, and the framing allows it).
    pub keep_alive: bool,
    /// `Expect: 100-continue` from an HTTP/1.1 client.
    pub expect_continue: bool,
}

/// Takes a complete request head off the front of `buf`, if there is one.
pub(crate) fn take_head(buf: &mut BytesMut) -> Result<Option<Head>, Refused> {
    let bad = Refused::BadRequest;
    let (len, method, target, version, spans) = {
        // Uninitialized: filling 100 slots first cost more than parsing.
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut []);
        let len = match parsed.parse_with_uninit_headers(buf, &mut slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    // Not even the request line in the limit: the target is
                    // what is too long.
                    return Err(if buf.contains(&b'\n') {
                        Refused::HeadTooLarge
                    } else {
                        Refused::UriTooLong
                    });
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => return Err(Refused::HeadTooLarge),
            Err(_) => return Err(bad("malformed request head")),
        };
        let (Some(method), Some(target), Some(version)) =
            (parsed.method, parsed.path, parsed.version)
        else {
            return Err(bad("malformed request head"));
        };
        if target.len() > MAX_URI {
            return Err(Refused::UriTooLong);
        }
        if len > MAX_HEAD {
            return Err(Refused::HeadTooLarge);
        }
        let base = buf.as_ptr() as usize;
        let span = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            (start, start + s.len())
        };
        // Each header's place in `buf`, as the instance side keeps them.
        let spans: Vec<Span> = parsed.headers.iter().map(|h| span_of(base, h)).collect();
        (
            len,
            span(method.as_bytes()),
            span(target.as_bytes()),
            version,
            spans,
        )
    };
    let bytes = buf.split_to(len).freeze();
    let method = Method::from_bytes(&bytes[method.0..method.1]).map_err(|_| bad("bad method"))?;
    let uri = Uri::from_maybe_shared(bytes.slice(target.0..target.1))
        .map_err(|_| bad("bad request target"))?;
    let headers = Headers::from_spans(bytes, spans);
    let version = if version == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let mut keep_alive = h1::keep_alive(version == Version::HTTP_10, &headers);
    // The instance gets the framing from the body's state, not from these
    // lines (see `Outgoing`): a chunked body's stray length is not passed on.
    let body = if headers.has(Name::TransferEncoding) {
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if !chunked_once_and_last(&headers) {
            return Err(bad("a transfer coding other than chunked last"));
        }
        if headers.has(Name::ContentLength) {
            // The smuggling shape: framed as chunked, and nothing after it
            // on this connection is trusted.
            keep_alive = false;
        }
        BodyState::Chunked(Chunk::Size)
    } else {
        match h1::content_length(&headers).map_err(bad)? {
            None => BodyState::Length(0),
            Some(length) => BodyState::Length(length),
        }
    };
    if headers.get_all(Name::Host).nth(1).is_some() {
        return Err(bad("more than one Host"));
    }
    let expect_continue = version == Version::HTTP_11
        && headers
            .get(Name::Expect)
            .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    Ok(Some(Head {
        request: ClientRequest {
            method,
            uri,
            version,
            headers,
        },
        body,
        keep_alive,
        expect_continue,
    }))
}

/// `Transfer-Encoding`'s codings, over all its lines, end with `chunked`,
/// which is not applied twice (RFC 9112 §6.1).
fn chunked_once_and_last(headers: &Headers) -> bool {
    let mut chunked = 0;
    let mut last_chunked = false;
    for coding in tokens(headers, Name::TransferEncoding) {
        last_chunked = coding.eq_ignore_ascii_case(b"chunked");
        chunked += usize::from(last_chunked);
    }
    last_chunked && chunked == 1
}

/// The connection's single timer, moved only to an earlier deadline: the
/// head's and idle timeouts and the request's wait for the instance take
/// turns on it, so a request costs no timer-wheel update. One task polls
/// it (the connection's, or one request's on the HTTPS side), so once the
/// sleep has that task's waker it need not be polled again until it fires
/// or moves: a request's wait costs a look at its state, not a poll.
#[derive(Default)]
pub(crate) struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
    armed: Option<Instant>,
    /// The sleep holds the polling task's waker for `armed`.
    registered: bool,
}

impl Timer {
    /// Ready at `deadline`.
    pub async fn until(&mut self, deadline: Instant) {
        poll_fn(|cx| self.poll_until(cx, deadline)).await
    }

    fn poll_until(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if self.armed.is_none_or(|armed| armed > deadline) {
            sleep.as_mut().reset(deadline);
            self.armed = Some(deadline);
            self.registered = false;
        }
        loop {
            if self.registered && !sleep.is_elapsed() {
                return Poll::Pending;
            }
            if sleep.as_mut().poll(cx).is_pending() {
                self.registered = true;
                return Poll::Pending;
            }
            // Fired: at `deadline`, or at an earlier one taken up now.
            if Instant::now() >= deadline {
                self.registered = false;
                return Poll::Ready(());
            }
            sleep.as_mut().reset(deadline);
            self.armed = Some(deadline);
            self.registered = false;
        }
    }
}

/// Serves one plain client connection until it closes, the client breaks
/// the protocol, a timeout ends it, or the router shuts down (the request
/// in flight is finished first; when the drain runs out, the worker's
/// runtime is dropped with the connection in it, rather than every
/// connection watching for that at each wake-up).
pub(crate) async fn serve(
    proxy: Arc<Proxy>,
    stream: TcpStream,
    client_addr: SocketAddr,
    shutdown: CancellationToken,
) {
    if let Err(error) = connection(&proxy, stream, client_addr, &shutdown).await {
        tracing::debug!(%error, %client_addr, "router client connection ended with an error");
    }
}

async fn connection(
    proxy: &Arc<Proxy>,
    stream: TcpStream,
    client_addr: SocketAddr,
    shutdown: &CancellationToken,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let started = Instant::now();
    let client_ip = header_value(&client_addr.ip().to_string());
    let client: Shared = Arc::new(Mutex::new(Client {
        stream,
        buf: BytesMut::with_capacity(READ_CHUNK),
        body: BodyState::Length(0),
        interim: b"",
    }));
    let mut timer = Timer::default();
    // Watched while waiting for a request; made once per connection, so
    // that it registers with the token once, not per request.
    let mut stopping = pin!(shutdown.clone().cancelled_owned());
    let mut out = Vec::with_capacity(1024);
    let mut idle_since = None;
    // Room for the one pass's header lines, the request's and the
    // response's, kept from request to request.
    let (mut request_lines, mut response_lines) = (Vec::new(), Vec::new());
    let peer = Peer {
        addr: client_addr,
        ip: &client_ip,
        tls: false,
    };
    loop {
        let read = read_head(
            proxy,
            &client,
            &mut timer,
            started,
            idle_since,
            stopping.as_mut(),
            &peer,
            &mut request_lines,
        )
        .await?;
        let (response, version, head_request, keep_alive) = match read {
            None => return close(&client).await,
            Some(Ok(Parsed::Fast(fast))) => {
                let head_request = fast.head_request;
                let answer = fast::serve(
                    proxy,
                    &client,
                    peer,
                    fast,
                    &request_lines,
                    &mut response_lines,
                    &mut out,
                    &mut timer,
                );
                match answer.await? {
                    Answer::Written { keep_alive: true } => {
                        idle_since = Some(Instant::now());
                        continue;
                    }
                    Answer::Written { keep_alive: false } => return close(&client).await,
                    // The phases' response, written as theirs is (a common
                    // request is HTTP/1.1 with no `Connection` of its own).
                    Answer::Phases(response) => (*response, Version::HTTP_11, head_request, true),
                }
            }
            Some(Ok(Parsed::General(head))) => {
                let Head {
                    request,
                    body,
                    keep_alive,
                    expect_continue,
                } = head;
                {
                    let mut client = lock(&client);
                    client.body = body;
                    client.interim = if expect_continue && !body.done() {
                        CONTINUE
                    } else {
                        b""
                    };
                }
                let version = request.version;
                let head_request = request.method == Method::HEAD;
                let body = FrontBody::source(&client);
                // `Proxy::handle`'s two halves, so that this future holds
                // the attempts' future directly.
                let table = proxy.table();
                let upgrade = Some(ClientUpgrade::Front);
                let response = match proxy.prepare(&table, request, body, upgrade, peer) {
                    Ok((chosen, forward)) => proxy.forward(chosen, forward, &mut timer, None).await,
                    Err(response) => *response,
                };
                (response, version, head_request, keep_alive)
            }
            Some(Err(refused)) => {
                tracing::debug!(?refused, %client_addr, "router refused a request head");
                out.clear();
                write_refusal(&mut out, refused);
                write_all(&client, &out).await?;
                return close(&client).await;
            }
        };
        if response.status == StatusCode::SWITCHING_PROTOCOLS {
            out.clear();
            write_head(&mut out, version, response.status, &response.headers, None);
            write_all(&client, &out).await?;
            drop(response.body);
            if let Some(backend) = response.tunnel
                && let Ok(client) = Arc::try_unwrap(client)
            {
                let Client { stream, buf, .. } =
                    client.into_inner().unwrap_or_else(|e| e.into_inner());
                proxy.tunnel(
                    async move { Ok::<_, BoxError>((stream, buf.freeze())) },
                    backend,
                );
            }
            return Ok(());
        }
        // A request body neither read nor here whole (a refused request's,
        // an early answer's) would have to be waited for before the next
        // request: the client is told the connection ends instead.
        // Shutting down: this is the connection's last response (a later
        // cancellation is seen by the wait for the next request).
        let keep_alive = keep_alive && !proxy.draining() && {
            let client = lock(&client);
            match client.body {
                BodyState::Length(left) => left <= client.buf.len() as u64,
                BodyState::Chunked(state) => state == Chunk::Done,
            }
        };
        let keep_alive = write_response(
            &client,
            &mut out,
            version,
            head_request,
            keep_alive,
            response,
        )
        .await?;
        // What is left of the request body is here whole (see above), or
        // the connection ends.
        let body_done = {
            let mut client = lock(&client);
            client.interim = b"";
            discard_buffered(&mut client)
        };
        if !keep_alive || !body_done {
            return close(&client).await;
        }
        idle_since = Some(Instant::now());
    }
}

/// Ends the connection: what was written goes out, then the FIN.
async fn close(client: &Shared) -> io::Result<()> {
    poll_fn(|cx| Pin::new(&mut lock(client).stream).poll_shutdown(cx)).await
}

/// Reads until a whole request head is in the buffer: taken by the one
/// pass if it is common ([`fast::take`], its lines in `lines`), else by
/// [`take_head`]. `None` when the connection is to end without an answer:
/// the client closed it, a timeout passed, or the router is shutting down.
#[allow(clippy::too_many_arguments)]
async fn read_head(
    proxy: &Proxy,
    client: &Shared,
    timer: &mut Timer,
    started: Instant,
    idle_since: Option<Instant>,
    mut stopping: Pin<&mut WaitForCancellationFutureOwned>,
    peer: &Peer<'_>,
    lines: &mut Vec<Span>,
) -> io::Result<Option<Result<Parsed, Refused>>> {
    let config = proxy.config();
    // When the head's first byte came: the connection's start for its
    // first request, else when it arrives.
    let mut head_since = match idle_since {
        None => Some(started),
        Some(_) if !lock(client).buf.is_empty() => Some(Instant::now()),
        Some(_) => None,
    };
    loop {
        {
            let mut client = lock(client);
            if !client.buf.is_empty() {
                if let Some(fast) = fast::take(proxy, &mut client.buf, peer, lines) {
                    // No body: nothing of this request is left to read.
                    client.body = BodyState::Length(0);
                    client.interim = b"";
                    return Ok(Some(Ok(Parsed::Fast(fast))));
                }
                match take_head(&mut client.buf) {
                    Ok(None) => {}
                    Ok(Some(head)) => return Ok(Some(Ok(Parsed::General(head)))),
                    Err(refused) => return Ok(Some(Err(refused))),
                }
            }
        }
        let mut read = pin!(poll_fn(|cx| {
            let mut guard = lock(client);
            let client = &mut *guard;
            h1::reserve(&mut client.buf, READ_CHUNK);
            poll_read_buf(Pin::new(&mut client.stream), cx, &mut client.buf)
        }));
        // Most heads are there at once: no timer or shutdown watch for them.
        let read = match poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
            Poll::Ready(read) => read,
            Poll::Pending => {
                // Part of a head came (with the last read): its clock starts
                // now, read only when the rest has to be waited for.
                if head_since.is_none() && !lock(client).buf.is_empty() {
                    head_since = Some(Instant::now());
                }
                let deadline = match (head_since, idle_since) {
                    (Some(since), _) => since + config.header_read_timeout,
                    (None, Some(idle)) => idle + config.client_idle_timeout,
                    (None, None) => started + config.header_read_timeout,
                };
                tokio::select! {
                    biased;
                    read = read.as_mut() => read,
                    _ = stopping.as_mut() => return Ok(None),
                    _ = timer.until(deadline) => return Ok(None),
                }
            }
        };
        match read {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(error) => return Err(error),
        }
    }
}

/// A request head as read: a common one taken by the one pass
/// ([`fast`]), or any other.
pub(crate) enum Parsed {
    General(Head),
    Fast(Fast),
}

/// A refused head's answer; the connection closes after it.
fn write_refusal(out: &mut Vec<u8>, refused: Refused) {
    let status = refused.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, status);
    out.extend_from_slice(b"content-length: 0\r\nconnection: close\r\ndate: ");
    push_date(out);
    out.extend_from_slice(b"\r\n\r\n");
}

pub(crate) fn push_status(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// How a response body is framed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// HEAD, 1xx, 204, 304: no body (a HEAD's `Content-Length` kept).
    None,
    Length(u64),
    Chunked,
    /// HTTP/1.0 with no length: until the connection closes.
    Close,
}

/// The status line and headers, with the framing and connection headers
/// the response needs (`connection` only for a keep-alive decision that
/// differs from the version's default).
pub(crate) fn write_head(
    out: &mut Vec<u8>,
    version: Version,
    status: StatusCode,
    headers: &ResponseHeaders,
    framing: Option<(Framing, bool)>,
) {
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    push_status(out, status);
    headers.write(out);
    if let Some((framing, keep_alive)) = framing {
        match framing {
            Framing::Length(n) if !headers.has_length => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            _ => {}
        }
        match (keep_alive, version) {
            (false, Version::HTTP_11) => out.extend_from_slice(b"connection: close\r\n"),
            (true, Version::HTTP_10) => out.extend_from_slice(b"connection: keep-alive\r\n"),
            _ => {}
        }
    }
    if !headers.has_date {
        out.extend_from_slice(b"date: ");
        push_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `Date`, formatted once a second per thread.
pub(crate) fn push_date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// Writes the response; false if the connection cannot carry another
/// (the client's wish, a close-delimited or broken body).
async fn write_response(
    client: &Shared,
    out: &mut Vec<u8>,
    version: Version,
    head_request: bool,
    mut keep_alive: bool,
    response: ProxyResponse,
) -> io::Result<bool> {
    let ProxyResponse {
        status,
        headers,
        mut body,
        ..
    } = response;
    let headers = &headers;
    let framing = if h1::bodiless(status, head_request) {
        Framing::None
    } else if let Some(length) = body.size_hint().exact() {
        // The instance's `Content-Length` (its body counts it down) or
        // the router's own text.
        Framing::Length(length)
    } else if version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        Framing::Close
    };
    if framing == Framing::Close {
        keep_alive = false;
    }
    out.clear();
    write_head(out, version, status, headers, Some((framing, keep_alive)));
    // Most bodies came with their head: head and body go out in one write.
    if framing == Framing::None || body.take_whole(out, COALESCE) {
        write_all(client, out).await?;
        out.clear();
        return Ok(keep_alive);
    }
    let mut sent = 0u64;
    loop {
        // Data that is ready joins what waits to be written; otherwise
        // that goes out while the body waits.
        let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    write_all(client, out).await?;
                    out.clear();
                }
                // Meanwhile a client that goes away ends the response (and
                // so frees the instance's connection and writes the
                // access line) rather than wait for the instance.
                let mut watching = true;
                let next = poll_fn(|cx| {
                    if let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(cx) {
                        return Poll::Ready(Some(frame));
                    }
                    if watching {
                        match poll_client_gone(client, cx) {
                            Poll::Ready(true) => return Poll::Ready(None),
                            Poll::Ready(false) => watching = false,
                            Poll::Pending => {}
                        }
                    }
                    Poll::Pending
                })
                .await;
                match next {
                    Some(frame) => frame,
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "the client closed the connection during the response",
                        ));
                    }
                }
            }
        };
        match frame {
            None => break,
            Some(Err(error)) => {
                // The head went out (or goes now): the client sees the body
                // end early, not a made-up complete response.
                tracing::debug!(%error, "response body ended with an error");
                write_all(client, out).await?;
                return Ok(false);
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                sent += data.len() as u64;
                if framing == Framing::Chunked {
                    h1::push_chunk_size(out, data.len());
                }
                if out.len() + data.len() <= COALESCE {
                    out.extend_from_slice(&data);
                } else {
                    write_all(client, out).await?;
                    out.clear();
                    write_all(client, &data).await?;
                }
                if framing == Framing::Chunked {
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    write_all(client, out).await?;
    out.clear();
    if let Framing::Length(length) = framing
        && sent != length
    {
        return Ok(false);
    }
    Ok(keep_alive)
}

/// Ready(true) when the client closed its connection; Ready(false) when
/// that cannot be watched now: the request body is still being read (its
/// reader sees the end itself) or the buffer holds all it may of the next
/// requests. What arrives meanwhile (pipelined requests) is kept.
fn poll_client_gone(client: &Shared, cx: &mut Context<'_>) -> Poll<bool> {
    let mut guard = lock(client);
    let client = &mut *guard;
    if !client.body.done() {
        return Poll::Ready(false);
    }
    loop {
        if client.buf.len() >= MAX_HEAD {
            return Poll::Ready(false);
        }
        h1::reserve(&mut client.buf, READ_CHUNK);
        match ready!(poll_read_buf(
            Pin::new(&mut client.stream),
            cx,
            &mut client.buf
        )) {
            Ok(0) | Err(_) => return Poll::Ready(true),
            Ok(_) => {}
        }
    }
}

pub(crate) async fn write_all(client: &Shared, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut lock(client).stream).poll_write(cx, bytes)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::generator;

    fn parse(text: &[u8]) -> Result<Option<Head>, Refused> {
        take_head(&mut BytesMut::from(text))
    }

    fn head(text: &str) -> Head {
        parse(text.as_bytes()).unwrap().unwrap()
    }

    fn refused(text: &str) -> Refused {
        parse(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn request_framing_follows_rfc_9112() {
        let get = head("GET /a?b HTTP/1.1\r\nHost: a.test\r\n\r\n");
        assert_eq!(get.body, BodyState::Length(0));
        assert!(get.keep_alive);
        assert_eq!(get.request.uri, "/a?b");
        assert_eq!(get.request.headers.get(Name::Host), Some(&b"a.test"[..]));

        let post = head("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(post.body, BodyState::Length(5));
        let same = head("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(same.body, BodyState::Length(5));
        // The instance gets one length, whatever the client repeated.
        assert_eq!(
            same.body.outgoing(&same.request.headers),
            Outgoing::Length(5)
        );
        let chunked = head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n");
        assert_eq!(chunked.body, BodyState::Chunked(Chunk::Size));
        assert!(chunked.keep_alive);

        // Chunked wins over a length, which is dropped, and the connection
        // ends after the response.
        let both =
            head("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(both.body, BodyState::Chunked(Chunk::Size));
        assert_eq!(both.body.outgoing(&both.request.headers), Outgoing::Chunked);
        assert!(!both.keep_alive);

        assert!(!head("GET / HTTP/1.1\r\nConnection: x, Close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n").expect_continue);
        assert!(!head("GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);

        for bad in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A : 1\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "NOT A REQUEST\r\n\r\n",
        ] {
            assert!(
                matches!(refused(bad), Refused::BadRequest(_)),
                "{bad:?} gave {:?}",
                parse(bad.as_bytes())
            );
        }
    }

    #[test]
    fn oversized_targets_are_414_and_heads_431() {
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_URI));
        assert_eq!(refused(&long), Refused::UriTooLong);
        let endless = format!("GET /{}", "a".repeat(MAX_HEAD));
        assert_eq!(refused(&endless), Refused::UriTooLong);
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(refused(&big), Refused::HeadTooLarge);
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("x-{i}: v\r\n"))
            .collect();
        assert_eq!(
            refused(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Refused::HeadTooLarge
        );
        let fits = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_URI - 1));
        assert!(parse(fits.as_bytes()).unwrap().is_some());
    }

    /// Pipelined heads come off the buffer one at a time, whatever pieces
    /// they arrive in, with their bodies' bytes left behind each.
    #[test]
    fn pipelined_heads_parse_whole_only_and_in_order() {
        let mut next = generator(0xf00d);
        let names = ["x-a", "cookie", "accept", "x-forwarded-for", "user-agent"];
        for case in 0..500 {
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for i in 0..1 + next() % 4 {
                let body = "b".repeat((next() % 20) as usize);
                let mut text = format!("POST /{case}/{i} HTTP/1.1\r\nHost: h{i}.test\r\n");
                for _ in 0..next() % 6 {
                    let name = names[next() as usize % names.len()];
                    text.push_str(&format!("{name}: v{}\r\n", next() % 100));
                }
                text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
                wire.extend_from_slice(text.as_bytes());
                expected.push((format!("/{case}/{i}"), body));
            }
            let mut buf = BytesMut::new();
            let mut fed = 0;
            for (path, body) in expected {
                let head = loop {
                    if let Some(head) = take_head(&mut buf).unwrap() {
                        break head;
                    }
                    assert!(fed < wire.len(), "case {case}: never complete");
                    let n = (1 + next() as usize % 50).min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                };
                assert_eq!(head.request.uri.path(), path, "case {case}");
                assert_eq!(head.body, BodyState::Length(body.len() as u64));
                while buf.len() < body.len() {
                    let n = (1 + next() as usize % 50).min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
                assert_eq!(&buf[..body.len()], body.as_bytes(), "case {case}");
                buf.advance(body.len());
            }
        }
    }

    /// Mutated heads: never a panic, and whatever is accepted is framed
    /// one way only — a length or chunked, never both, no length that
    /// differs from another, and no transfer coding but chunked last.
    #[test]
    fn any_head_is_refused_or_framed_one_way() {
        let mut next = generator(0x5a5a);
        let seeds: [&[u8]; 4] = [
            b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 10\r\nContent-Length: 10\r\n\r\n",
            b"PUT /y?z HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-continue\r\nHost: b\r\n\r\n",
            b"GET http://a.test/p HTTP/1.1\r\nConnection: close\r\nHost: c\r\n\r\n",
        ];
        let alphabet = b" ,:;\r\n\t0123456789abcdefchunkedCLTE-/?\x00\x7f\xff";
        for case in 0..30_000 {
            let mut bytes = seeds[case % seeds.len()].to_vec();
            for _ in 0..1 + next() % 5 {
                let at = next() as usize % bytes.len();
                let byte = alphabet[next() as usize % alphabet.len()];
                match next() % 3 {
                    0 => bytes[at] = byte,
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, byte),
                }
            }
            let Ok(Some(head)) = parse(&bytes) else {
                continue;
            };
            let headers = &head.request.headers;
            let te = headers.has(Name::TransferEncoding);
            let outgoing = head.body.outgoing(headers);
            match head.body {
                BodyState::Chunked(_) => {
                    assert!(te, "case {case}");
                    assert_eq!(outgoing, Outgoing::Chunked, "case {case}");
                    // A stray length beside chunked ends the connection.
                    if headers.has(Name::ContentLength) {
                        assert!(!head.keep_alive, "case {case}");
                    }
                    assert!(chunked_once_and_last(headers), "case {case}");
                    assert_eq!(head.request.version, Version::HTTP_11, "case {case}");
                }
                BodyState::Length(n) => {
                    assert!(!te, "case {case}");
                    for value in headers.get_all(Name::ContentLength) {
                        for part in value.split(|&c| c == b',') {
                            let part = std::str::from_utf8(part).unwrap().trim();
                            assert_eq!(part.parse::<u64>().unwrap(), n, "case {case}");
                        }
                    }
                    if headers.has(Name::ContentLength) {
                        assert_eq!(outgoing, Outgoing::Length(n), "case {case}");
                    } else {
                        assert_eq!(n, 0, "case {case}");
                        assert_eq!(outgoing, Outgoing::Empty, "case {case}");
                    }
                }
            }
            assert!(headers.get_all(Name::Host).count() <= 1, "case {case}");
        }
    }
}

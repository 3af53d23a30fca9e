//! The plain front's one pass for the common request: a `GET` or `HEAD`
//! over HTTP/1.1 with no body, no hop-by-hop header, no `Expect`, no
//! `X-Forwarded-Proto`, no `X-Cf-App-Instance` and no sticky session, to a
//! route the table knows.
//!
//! Such a request is not turned into the phases' values (`ClientRequest`,
//! `Forward`, `ProxyResponse` with its body): its head is parsed in place
//! and rewritten for the instance straight from the client's bytes
//! ([`write_request`]), sent on a pooled (or new) connection, and a common
//! answer — a response whose body came whole with its head and which asks
//! nothing of the router ([`relay_head`]) — is parsed in place and written
//! to the client with the head and body in one write. Both rewrites are
//! the phases' rules for such messages; a test holds each to the phases'
//! output byte for byte. Anything else joins the phases where it differs:
//! - a request that is not common is left to [`front::take_head`];
//! - a failed first attempt goes on as [`Proxy::forward`] goes on (the
//!   same instance's other connections after a pooled one closed before
//!   any response, else the next instance chosen; 502 when the rule says
//!   so), a timeout or a broken response is its 502;
//! - any other response (streamed, chunked, an upgrade, a cookie to pin,
//!   informational) is read and answered by [`Proxy::respond`].
//!
//! In those cases [`serve`] gives the front the phases' response
//! ([`Answer::Phases`]), which it writes as it writes theirs.
//!
//! Measured (issue 16): ~16% fewer instructions per request than the
//! phases, ~8% more requests per second in front of an app's container.

use crate::access_log::AccessRecord;
use crate::backend_io::BackendError;
use crate::front::{self, FrontBody, Shared, Timer};
use crate::h1::{self, Conn, InstanceError, Outgoing, RequestBody, RequestHead};
use crate::head::{HOP_BY_HOP, Name, Span, names, push_header, span_of, write_lines};
use crate::proxy::{
    Attempts, Forward, Forwarded, Peer, Proxy, ProxyResponse, RequestId, Target, describe,
    no_response, push_forwarded_for, push_start_and_id, routable_host,
};
use crate::sticky;
use crate::table::Endpoint;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, StatusCode, Uri, Version};
use smallvec::SmallVec;
use std::io;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::io::AsyncWriteExt;
use tokio_util::io::poll_read_buf;

/// Header lines a common request has, at most (more: the phases).
const LINES: usize = 24;

/// A common request, taken off the client's buffer, with the instance it
/// goes to and an idle connection to it.
pub(crate) struct Fast {
    head: Bytes,
    pub head_request: bool,
    uri: Uri,
    /// The Host value's place in `head`.
    host: (u32, u32),
    /// The instances to try, in order ([`Proxy::choose`]).
    chosen: Chosen,
    /// An idle connection to the first, if the pool has one.
    conn: Option<Conn>,
}

type Chosen = SmallVec<[Arc<Endpoint>; 4]>;

/// The headers the instance never gets from the client: the router
/// writes them itself.
const REPLACED: u32 = names(&[
    Name::Host,
    Name::XForwardedFor,
    Name::XVcapRequestId,
    Name::XCfApplicationId,
    Name::XCfInstanceId,
    Name::XCfInstanceIndex,
]);

/// Names that make a request not common: the hop-by-hop ones, and those
/// whose framing asks something of the router, whose route is not the
/// table's choice, or whose `X-Forwarded-Proto` may be kept.
const UNCOMMON: u32 = names(&HOP_BY_HOP)
    | names(&[
        Name::ContentLength,
        Name::Expect,
        Name::XCfAppInstance,
        Name::XForwardedProto,
    ]);

/// Takes a common request's head off `buf`, if the buffer starts with one
/// whole (see the module's text); `None` leaves `buf` as it was.
pub(crate) fn take(
    proxy: &Proxy,
    buf: &mut BytesMut,
    peer: &Peer<'_>,
    lines: &mut Vec<Span>,
) -> Option<Fast> {
    let mut slots = [const { MaybeUninit::uninit() }; LINES];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return None,
    };
    let head_request = match parsed.method? {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    let target = parsed.path?;
    let common = parsed.version == Some(1)
        && target.starts_with('/')
        && target.len() <= front::MAX_URI
        && len <= front::MAX_HEAD;
    if !common {
        return None;
    }
    let base = buf.as_ptr() as usize;
    lines.clear();
    let mut host = None;
    let mut cookies = false;
    for header in parsed.headers.iter() {
        let span = span_of(base, header);
        match span.known {
            Some(Name::Host) if host.is_some() => return None,
            Some(Name::Host) => host = Some(span.value),
            Some(Name::Cookie) => cookies = true,
            Some(name) if UNCOMMON & name.bit() != 0 => return None,
            _ => {}
        }
        lines.push(span);
    }
    let host = host?;
    let config = proxy.config();
    let cookie_values = || {
        lines
            .iter()
            .filter(|s| s.known == Some(Name::Cookie))
            .map(|s| &buf[s.value.0 as usize..s.value.1 as usize])
    };
    if cookies
        && sticky::requested_instance(cookie_values(), &config.sticky_session_cookies).is_some()
    {
        return None;
    }
    let target_at = target.as_ptr() as usize - base;
    let target_end = target_at + target.len();
    let head = buf.split_to(len).freeze();
    let fast =
        route(proxy, &head, (target_at, target_end), host, peer).map(|(uri, chosen, conn)| Fast {
            head_request,
            uri,
            host,
            chosen,
            conn,
            head: head.clone(),
        });
    if fast.is_none() {
        put_back(buf, &head);
    }
    fast
}

/// The target as a `Uri`, the instances the table chooses for it (in the
/// order to try them) and an idle connection to the first, if the
/// worker's pool has one.
fn route(
    proxy: &Proxy,
    head: &Bytes,
    target: (usize, usize),
    host: (u32, u32),
    peer: &Peer<'_>,
) -> Option<(Uri, Chosen, Option<Conn>)> {
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.1)).ok()?;
    let raw_host = std::str::from_utf8(&head[host.0 as usize..host.1 as usize]).ok()?;
    let host = routable_host(raw_host, peer.addr.ip())?;
    let table = proxy.table();
    let pool = table.lookup_stripped(host, uri.path())?;
    if pool.endpoints.is_empty() {
        return None;
    }
    let target = Target {
        pool,
        pinned: None,
        sticky: None,
    };
    let chosen = proxy.choose(&target).ok()?;
    // Chosen: the table's round-robin moved on, so from here on the request
    // is this pass's, failures included.
    let first = chosen.first()?;
    let conn = match first.wire.authority {
        Some(_) => proxy.backends().take_idle(&first.addr),
        None => None,
    };
    Some((uri, chosen.into_iter().cloned().collect(), conn))
}

/// `head` back in front of what `buf` holds.
fn put_back(buf: &mut BytesMut, head: &[u8]) {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(buf);
    *buf = whole;
}

/// Writes a common request's header lines as every instance gets them
/// (after the request line, before each instance's own lines): its lines
/// less those the router replaces, then the router's own — what
/// `proxy::forward_head` writes for such a request.
pub(crate) fn write_request(
    out: &mut Vec<u8>,
    head: &[u8],
    lines: &[Span],
    raw_host: &[u8],
    client_ip: &HeaderValue,
    request_id: &RequestId,
    received_at: SystemTime,
) -> Forwarded {
    let mut skip = 0u128;
    let mut request_start = false;
    for (i, span) in lines.iter().enumerate() {
        let Some(name) = span.known else { continue };
        if REPLACED & name.bit() != 0 {
            skip |= 1 << i;
        }
        request_start |= name == Name::XRequestStart;
    }
    write_lines(out, head, lines, skip);
    push_header(out, b"host", raw_host);
    let client_values = lines
        .iter()
        .filter(|s| s.known == Some(Name::XForwardedFor))
        .map(|s| &head[s.value.0 as usize..s.value.1 as usize]);
    let x_forwarded_for = push_forwarded_for(out, client_values, client_ip);
    // A common request has no `X-Forwarded-Proto` of its own (and came in
    // plain).
    let x_forwarded_proto = HeaderValue::from_static("http");
    push_header(
        out,
        Name::XForwardedProto.as_str().as_bytes(),
        x_forwarded_proto.as_bytes(),
    );
    push_start_and_id(out, !request_start, received_at, request_id);
    Forwarded {
        x_forwarded_for,
        x_forwarded_proto,
    }
}

/// How a common request was answered.
pub(crate) enum Answer {
    /// The one pass wrote the instance's response; whether the connection
    /// may carry another request.
    Written { keep_alive: bool },
    /// The phases' response, for the front to write as it writes theirs
    /// (boxed: the rare way).
    Phases(Box<ProxyResponse>),
}

fn phases(response: ProxyResponse) -> Answer {
    Answer::Phases(Box::new(response))
}

/// Sends a common request: the first attempt is this pass's, what follows
/// a failure or an uncommon response the phases' (see the module's text).
/// `lines`: the request's, as [`take`] left them; `spans`: room for the
/// response's.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve(
    proxy: &Proxy,
    client: &Shared,
    peer: Peer<'_>,
    fast: Fast,
    lines: &[Span],
    spans: &mut Vec<Span>,
    out: &mut Vec<u8>,
    timer: &mut Timer,
) -> io::Result<Answer> {
    let Fast {
        head,
        head_request,
        uri,
        host,
        chosen,
        conn,
    } = fast;
    let started = Instant::now();
    let received_at = SystemTime::now();
    let request_id = RequestId::new();
    let config = proxy.config();
    let raw_host = head.slice(host.0 as usize..host.1 as usize);
    let method = if head_request {
        Method::HEAD
    } else {
        Method::GET
    };
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = RequestHead::new(&method, target, head.len());
    let rewritten = write_request(
        request.shared(),
        &head,
        lines,
        &raw_host,
        peer.ip,
        &request_id,
        received_at,
    );
    let value = |name| {
        let span = lines.iter().find(|s| s.known == Some(name))?;
        HeaderValue::from_maybe_shared(head.slice(span.value.0 as usize..span.value.1 as usize))
            .ok()
    };
    let endpoint = &chosen[0];
    let mut record = Box::new(AccessRecord {
        host: HeaderValue::from_maybe_shared(raw_host.clone())
            .unwrap_or_else(|_| HeaderValue::from_static("")),
        received_at,
        started,
        forwarded_at: None,
        method: method.clone(),
        uri,
        version: Version::HTTP_11,
        referer: value(Name::Referer),
        user_agent: value(Name::UserAgent),
        client_addr: peer.addr,
        x_forwarded_for: Some(rewritten.x_forwarded_for),
        x_forwarded_proto: Some(rewritten.x_forwarded_proto),
        request_id,
        request_bytes: 0,
        endpoint: endpoint.clone(),
        router_error: None,
    });
    // The first attempt is this pass's; what follows a failure is the
    // general way's (`Proxy::forward`), from the instance it would try next.
    let general = |request, record, from: usize| {
        let forward = Forward::common(method.clone(), request, FrontBody::source(client), record);
        let rest: Attempts<'_> = chosen[from..].iter().collect();
        (rest, forward)
    };
    if endpoint.wire.authority.is_none() {
        let (rest, forward) = general(request, record, 0);
        return Ok(phases(proxy.forward(rest, forward, timer, None).await));
    }
    let deadline = tokio::time::Instant::from_std(started + config.request_timeout);
    record.forwarded_at = Some(Instant::now());
    // What failed the attempt (`None`: the request timed out), unless it
    // was answered or went on to the phases.
    let failure = 'attempt: {
        let dialed = match conn {
            Some(conn) => Some(Ok((conn, true))),
            None => tokio::select! {
                biased;
                dialed = Box::pin(proxy.backends().dial(&endpoint.addr)) => Some(dialed.map(|c| (c, false))),
                () = timer.until(deadline) => None,
            },
        };
        let (mut conn, pooled) = match dialed {
            Some(Ok(dialed)) => dialed,
            None => break 'attempt None,
            Some(Err(error)) => {
                endpoint.state.mark_failed(config.retry_after_failure);
                let why = describe(&error, endpoint);
                tracing::debug!(endpoint = %endpoint.addr, error = %why, retryable = true, "instance failed the request");
                let (rest, forward) = general(request, record, 1);
                let failure = Some((endpoint.clone(), why));
                return Ok(phases(proxy.forward(rest, forward, timer, failure).await));
            }
        };
        let in_flight = endpoint.state.start_request(config.max_conns_per_backend);
        let sent = {
            let bytes = request.for_attempt(&endpoint.wire.lines, Outgoing::Empty);
            tokio::select! {
                biased;
                sent = async {
                    conn.stream.write_all(bytes).await.map_err(|e| InstanceError::Closed(Some(e)))?;
                    read_head(&mut conn, spans).await
                } => Some(sent),
                () = timer.until(deadline) => None,
            }
        };
        match sent {
            Some(Ok(parsed)) => {
                // The one pass's answer, when the response is common.
                let keep_alive = !proxy.draining();
                out.clear();
                if let Some((status, head_len)) = parsed
                    && let Some(relay) = relay_head(
                        out,
                        &conn.buf[..head_len],
                        status,
                        spans,
                        head_request,
                        keep_alive,
                        &request_id,
                    )
                    && relay.length <= conn.buf.len() - head_len
                    && relay.length <= front::COALESCE
                {
                    let counted = in_flight.hand_over();
                    let end = head_len + relay.length;
                    out.extend_from_slice(&conn.buf[head_len..end]);
                    bytes::Buf::advance(&mut conn.buf, end);
                    if relay.instance_keep_alive && conn.buf.is_empty() {
                        proxy.backends().give_back(conn);
                    }
                    let written = front::write_all(client, out).await;
                    out.clear();
                    counted.end(&record.endpoint.state);
                    proxy
                        .log()
                        .emit(record, status.as_u16(), relay.length as u64);
                    written?;
                    return Ok(Answer::Written { keep_alive });
                }
                // Any other (or one not whole yet): read as the general way
                // reads it, which says what is wrong with it if anything is.
                out.clear();
                let got = tokio::select! {
                    biased;
                    got = h1::receive(&mut conn, head_request, true) => Some(got),
                    () = timer.until(deadline) => None,
                };
                match got {
                    Some(Ok(response)) => {
                        let counted = in_flight.hand_over();
                        let body = RequestBody::new(FrontBody::source(client), Outgoing::Empty);
                        let response =
                            proxy.respond(response, conn, body, None, record, counted, None);
                        return Ok(phases(response));
                    }
                    Some(Err(error)) => Some(error),
                    None => None,
                }
            }
            Some(Err(error)) if error.closed_before_response() => {
                // Typically a kept-alive connection the instance had just timed
                // out: tried again as any idempotent request is — on the same
                // instance's other connections after a pooled one, else on the
                // next instance.
                drop(in_flight);
                let error = BackendError::Request(error);
                let why = describe(&error, endpoint);
                tracing::debug!(endpoint = %endpoint.addr, error = %why, retryable = true, "instance failed the request");
                let from = if pooled { 0 } else { 1 };
                let (rest, forward) = general(request, record, from);
                let failure = Some((endpoint.clone(), why));
                return Ok(phases(proxy.forward(rest, forward, timer, failure).await));
            }
            Some(Err(error)) => Some(error),
            None => None,
        }
    };
    let why = match failure {
        Some(error) => describe(&BackendError::Request(error), endpoint),
        None => no_response(endpoint, config.request_timeout),
    };
    Ok(phases(
        proxy.bad_gateway(record, Some((endpoint.clone(), why))),
    ))
}

/// The response lines the client never gets: those about the instance's
/// connection and the instance's own request id.
const NOT_RELAYED: u32 = names(&HOP_BY_HOP) | Name::XVcapRequestId.bit();

/// Header lines of a response the one pass relays, at most.
const RESPONSE_LINES: usize = 32;

/// Reads until the buffer starts with a whole response head and parses it
/// in place: its status and length, its lines in `spans`. `None` when it
/// is not one `httparse` takes here (the general way reads it then, and
/// says why); the errors are the general way's, as it reads.
async fn read_head(
    conn: &mut Conn,
    spans: &mut Vec<Span>,
) -> Result<Option<(StatusCode, usize)>, InstanceError> {
    let mut got_bytes = !conn.buf.is_empty();
    loop {
        if !conn.buf.is_empty() {
            let mut slots = [const { MaybeUninit::uninit() }; RESPONSE_LINES];
            let mut parsed = httparse::Response::new(&mut []);
            match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut parsed,
                &conn.buf,
                &mut slots,
            ) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = parsed.code.and_then(|c| StatusCode::from_u16(c).ok());
                    let (Some(status), Some(1)) = (status, parsed.version) else {
                        return Ok(None);
                    };
                    let base = conn.buf.as_ptr() as usize;
                    spans.clear();
                    spans.extend(parsed.headers.iter().map(|h| span_of(base, h)));
                    return Ok(Some((status, len)));
                }
                Ok(httparse::Status::Partial) if conn.buf.len() <= h1::MAX_HEAD => {}
                _ => return Ok(None),
            }
        }
        h1::reserve(&mut conn.buf, 16 * 1024);
        match std::future::poll_fn(|cx| {
            poll_read_buf(std::pin::Pin::new(&mut conn.stream), cx, &mut conn.buf)
        })
        .await
        {
            Ok(0) if !got_bytes => return Err(InstanceError::Closed(None)),
            Ok(0) => return Err(InstanceError::UnexpectedEof),
            Ok(_) => got_bytes = true,
            Err(e) if !got_bytes => return Err(InstanceError::Closed(Some(e))),
            Err(e) => return Err(InstanceError::Read(e)),
        }
    }
}

/// What the one pass relays of a common response.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Relay {
    /// Body bytes that follow the head.
    pub length: usize,
    /// The instance keeps its connection open.
    pub instance_keep_alive: bool,
}

/// Writes the client's response head for a common response into `out` —
/// what `front::write_head` writes for it from `proxy::response_headers` —
/// or `None` if the response is not common: an informational status,
/// `Connection` naming more than `keep-alive` or `close`, a transfer
/// coding, no or an odd `Content-Length` where a body follows, a
/// `Set-Cookie` (a sticky session may pin it).
pub(crate) fn relay_head(
    out: &mut Vec<u8>,
    head: &[u8],
    status: StatusCode,
    spans: &[Span],
    head_request: bool,
    keep_alive: bool,
    request_id: &RequestId,
) -> Option<Relay> {
    if status.is_informational() {
        return None;
    }
    let mut skip = 0u128;
    let mut length = None;
    let mut has_date = false;
    let mut instance_keep_alive = true;
    for (i, span) in spans.iter().enumerate() {
        let Some(name) = span.known else { continue };
        let value = &head[span.value.0 as usize..span.value.1 as usize];
        match name {
            Name::TransferEncoding | Name::SetCookie => return None,
            Name::Connection => {
                for token in value.split(|&c| c == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        instance_keep_alive = false;
                    } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                        return None;
                    }
                }
            }
            // One plain number (a list goes the phases' way, which checks it).
            Name::ContentLength if length.is_some() => return None,
            Name::ContentLength => length = Some(h1::length_value(value)?),
            Name::Date => has_date = true,
            _ => {}
        }
        if NOT_RELAYED & name.bit() != 0 {
            skip |= 1 << i;
        }
    }
    let length = match (h1::bodiless(status, head_request), length) {
        (true, _) => 0,
        (false, Some(n)) => usize::try_from(n).ok()?,
        (false, None) => return None,
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    front::push_status(out, status);
    write_lines(out, head, spans, skip);
    push_header(
        out,
        Name::XVcapRequestId.as_str().as_bytes(),
        request_id.as_bytes(),
    );
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        front::push_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Some(Relay {
        length,
        instance_keep_alive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::{RID, generator};

    /// What the phases write for a response: `h1::take_head`, then
    /// `proxy::response_headers` and `front::write_head`, then the body.
    fn general(text: &[u8], head_request: bool, keep_alive: bool) -> Option<Vec<u8>> {
        let mut buf = BytesMut::from(text);
        let head = h1::take_head(&mut buf, head_request).ok()??;
        let length = match head.framing {
            h1::Framing::Empty => 0,
            h1::Framing::Length(n) => n as usize,
            _ => return None,
        };
        let headers = crate::proxy::response_headers(
            head.headers,
            head.skip,
            false,
            None,
            "instance",
            &["JSESSIONID".to_string()],
            RID,
        );
        let framing = if h1::bodiless(head.status, head_request) {
            front::Framing::None
        } else {
            front::Framing::Length(length as u64)
        };
        let mut out = Vec::new();
        front::write_head(
            &mut out,
            Version::HTTP_11,
            head.status,
            &headers,
            Some((framing, keep_alive)),
        );
        out.extend_from_slice(&buf[..length]);
        Some(out)
    }

    /// What the one pass writes for it, if it takes it.
    fn one_pass(text: &[u8], head_request: bool, keep_alive: bool) -> Option<Vec<u8>> {
        let mut slots = [httparse::EMPTY_HEADER; RESPONSE_LINES];
        let mut parsed = httparse::Response::new(&mut slots);
        let httparse::Status::Complete(len) = parsed.parse(text).ok()? else {
            return None;
        };
        let status = StatusCode::from_u16(parsed.code?).ok()?;
        let base = text.as_ptr() as usize;
        let spans: Vec<Span> = parsed.headers.iter().map(|h| span_of(base, h)).collect();
        let mut out = Vec::new();
        let relay = relay_head(
            &mut out,
            &text[..len],
            status,
            &spans,
            head_request,
            keep_alive,
            &RID,
        )?;
        out.extend_from_slice(&text[len..len + relay.length]);
        Some(out)
    }

    fn without_date(bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let lines: Vec<&str> = head
            .split("\r\n")
            .filter(|l| !l.starts_with("date: "))
            .collect();
        format!("{}\r\n\r\n{body}", lines.join("\r\n"))
    }

    /// The one pass answers a common response byte for byte as the phases
    /// do (but for the `Date` it makes, which is the clock's), and takes
    /// the common ones.
    #[test]
    fn the_one_pass_relays_common_responses_as_the_phases_do() {
        let statuses = [
            "200 OK",
            "201 Created",
            "204 No Content",
            "304 Not Modified",
            "404 Not Found",
            "503 Whatever",
        ];
        let lines = [
            "Server: nginx/1.22.1",
            "Date: Mon, 30 Nov 2026 23:00:00 GMT",
            "Content-Type: text/html",
            "Connection: keep-alive",
            "Connection: close",
            "connection: Keep-Alive, close",
            "Connection: upgrade",
            "Keep-Alive: timeout=5",
            "TE: trailers",
            "Trailer: x",
            "X-Vcap-Request-Id: theirs",
            "ETag: \"abc\"",
            "X-Custom:value",
            "X-Spaced:  value  ",
            "Set-Cookie: a=b",
            "Transfer-Encoding: chunked",
        ];
        let mut next = generator(0x0de1_1ee7_5a1e_0001);
        let mut taken = 0;
        for case in 0..5000 {
            let status = statuses[next() as usize % statuses.len()];
            let mut text = format!("HTTP/1.1 {status}\r\n");
            for _ in 0..next() % 8 {
                text.push_str(lines[next() as usize % lines.len()]);
                text.push_str("\r\n");
            }
            let body = "hello";
            match next() % 4 {
                0 => {}
                1 => text.push_str("Content-Length: 5\r\n"),
                2 => text.push_str("Content-Length:  5 \r\n"),
                _ => text.push_str("Content-Length: 5\r\nContent-Length: 5\r\n"),
            }
            text.push_str("\r\n");
            text.push_str(body);
            let (head_request, keep_alive) = (next().is_multiple_of(3), !next().is_multiple_of(4));
            let Some(fast) = one_pass(text.as_bytes(), head_request, keep_alive) else {
                continue;
            };
            taken += 1;
            let general = general(text.as_bytes(), head_request, keep_alive)
                .unwrap_or_else(|| panic!("case {case}: the one pass took {text:?}"));
            assert_eq!(
                without_date(&fast),
                without_date(&general),
                "case {case}: {text:?} (HEAD {head_request}, keep-alive {keep_alive})"
            );
            assert_eq!(
                fast.windows(6).any(|w| w == b"date: "),
                general.windows(6).any(|w| w == b"date: "),
                "case {case}"
            );
        }
        assert!(taken > 500, "only {taken} cases were common");
    }
}

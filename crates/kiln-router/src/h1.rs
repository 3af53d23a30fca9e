//! HTTP/1.1 to instances, in the request's own task: no client connection
//! task, no channel between the request and its connection.
//!
//! A request goes out as one write of its head ([`RequestHead`]) and its
//! body streamed after it ([`RequestBody`], `Content-Length` or chunked).
//! The response head is parsed with `httparse` from the connection's read
//! buffer; header values share that buffer (no copy per header). The
//! response body ([`InstanceBody`]) is read by the client side (the plain
//! front, `crate::front`, or hyper's server for HTTPS) straight from the
//! instance's socket, and the connection goes back to the worker's pool the
//! moment the body's last byte was read.
//!
//! Chunked bodies are decoded, not passed through: the client may speak
//! HTTP/2 or HTTP/1.0 and its side frames what it sends itself, so it needs
//! the data, not the instance's framing. The same decoder reads chunked
//! request bodies on the plain front.
//!
//! Reading only starts once the request head is written, so an instance
//! that answers as soon as a connection opens (an `nc -l` app) has that
//! answer taken as the response to the request, which it is.

use crate::backend_io::Backends;
use crate::front::RequestSource;
use crate::head::{Headers, Name, Span, names, span_of};
use bytes::{Buf, Bytes, BytesMut};
use http::{Method, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

/// A response head larger than this is refused (Go's transport allows
/// 10 MB; hyper's client about 400 KB; heads that large are not seen from
/// real apps).
pub(crate) const MAX_HEAD: usize = 1024 * 1024;
/// Header lines in a response head, at most.
const MAX_HEADERS: usize = 128;
/// Bytes read from an instance at a time, at most.
const READ_CHUNK: usize = 16 * 1024;
/// A chunk-size line (with extensions) or the trailer section, at most.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;

/// Why an exchange with an instance failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InstanceError {
    /// The connection ended before any byte of a response (`EOF`, as Go
    /// says), possibly because writing the request failed first.
    #[error("{}", match .0 { Some(e) => e.to_string(), None => "EOF".to_string() })]
    Closed(Option<io::Error>),
    #[error("malformed HTTP response {0:?}")]
    Malformed(String),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("{0}")]
    Write(io::Error),
    #[error("{0}")]
    Read(io::Error),
    #[error("unexpected EOF")]
    UnexpectedEof,
    #[error("reading the client's request body: {0}")]
    RequestBody(crate::proxy::BoxError),
}

impl InstanceError {
    /// No response began: the instance may have closed a kept-alive
    /// connection while it was idle.
    pub fn closed_before_response(&self) -> bool {
        matches!(self, InstanceError::Closed(_))
    }
}

/// One connection to an instance, with what was read but not yet used.
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: BytesMut,
    /// The instance's address, its pool's key.
    addr: Box<str>,
}

impl Conn {
    pub fn new(stream: TcpStream, addr: &str) -> Conn {
        Conn {
            stream,
            buf: BytesMut::new(),
            addr: addr.into(),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// An idle connection has nothing to read; if it has (end of stream,
    /// an error, stray bytes), the instance closed it or broke it. Costs a
    /// system call only when the reactor saw the socket readable, and
    /// registers no waker.
    pub fn still_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// The socket and the bytes read past the response head (a tunnel's
    /// first bytes).
    pub fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.buf)
    }
}

/// How a request body is framed on the way to the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// No body.
    Empty,
    /// The client's `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked` (a client body of unknown length).
    Chunked,
}

/// A request head as bytes: the part every attempt shares, then the
/// instance's own headers per attempt.
pub(crate) struct RequestHead {
    bytes: Vec<u8>,
    shared: usize,
}

impl RequestHead {
    /// The request line (origin form, always HTTP/1.1), with room for
    /// `headers` bytes of header lines.
    pub fn new(method: &Method, target: &str, headers: usize) -> RequestHead {
        let mut bytes = Vec::with_capacity(headers + target.len() + 384);
        bytes.extend_from_slice(method.as_str().as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(target.as_bytes());
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        RequestHead { bytes, shared: 0 }
    }

    /// The bytes every attempt shares, to append header lines to.
    pub fn shared(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// The whole head for one attempt: the shared part, the instance's
    /// own header lines (`instance`), the framing header and the blank line.
    pub fn for_attempt(&mut self, instance: &[u8], framing: Outgoing) -> &[u8] {
        if self.shared == 0 {
            self.shared = self.bytes.len();
        }
        self.bytes.truncate(self.shared);
        self.bytes.extend_from_slice(instance);
        match framing {
            Outgoing::Empty => {}
            Outgoing::Length(n) => {
                self.bytes.extend_from_slice(b"content-length: ");
                self.bytes
                    .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                self.bytes.extend_from_slice(b"\r\n");
            }
            Outgoing::Chunked => self
                .bytes
                .extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        self.bytes.extend_from_slice(b"\r\n");
        &self.bytes
    }
}

/// The client's request body on its way to an instance. It counts the
/// bytes (for the access log) and knows whether any were taken from the
/// client, in which case the request cannot be sent again.
pub(crate) struct RequestBody {
    inner: RequestSource,
    framing: Outgoing,
    /// The client's body ended.
    eof: bool,
    /// Data was taken from the client's body.
    started: bool,
    /// Everything, the chunked terminator included, is queued or written.
    done: bool,
    pending: Bytes,
    /// Bytes taken from the client's body, for the access log.
    bytes: u64,
}

impl RequestBody {
    pub fn new(inner: RequestSource, framing: Outgoing) -> RequestBody {
        RequestBody {
            inner,
            framing,
            eof: false,
            started: false,
            done: false,
            pending: Bytes::new(),
            bytes: 0,
        }
    }

    /// The bytes taken from the client's body so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn started(&self) -> bool {
        self.started
    }

    pub fn framing(&self) -> Outgoing {
        self.framing
    }

    fn finished(&self) -> bool {
        self.done && self.pending.is_empty()
    }

    /// Ready for another attempt (only while nothing was taken).
    fn rewind(&mut self) {
        debug_assert!(!self.started);
        self.pending = Bytes::new();
        self.done = false;
    }

    /// Writes what the client sent so far; ready when all of it is written.
    fn poll_pump(
        &mut self,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), InstanceError>> {
        loop {
            while !self.pending.is_empty() {
                match ready!(Pin::new(&mut *io).poll_write(cx, &self.pending)) {
                    Ok(0) => {
                        return Poll::Ready(Err(InstanceError::Write(
                            io::ErrorKind::WriteZero.into(),
                        )));
                    }
                    Ok(n) => self.pending.advance(n),
                    Err(e) => return Poll::Ready(Err(InstanceError::Write(e))),
                }
            }
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if self.framing == Outgoing::Empty || self.eof {
                self.done = true;
                if self.framing == Outgoing::Chunked {
                    self.pending = Bytes::from_static(b"0\r\n\r\n");
                }
                continue;
            }
            match ready!(self.inner.poll_data(cx)) {
                None => self.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(InstanceError::RequestBody(e))),
                Some(Ok(data)) => {
                    // Trailers are not forwarded (Gorouter's neither).
                    if !data.is_empty() {
                        self.started = true;
                        self.bytes += data.len() as u64;
                        self.pending = match self.framing {
                            Outgoing::Chunked => chunk(&data),
                            _ => data,
                        };
                    }
                }
            }
        }
    }
}

fn chunk(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 20);
    push_chunk_size(&mut out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out.into()
}

/// How a response body is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (HEAD, 1xx, 204, 304) or the body was read whole.
    Empty,
    /// `Content-Length`: this many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the instance closes the connection.
    Close,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
    Done,
}

/// A parsed response head.
pub(crate) struct ResponseHead {
    pub status: StatusCode,
    /// The instance's header lines as it sent them.
    pub headers: Headers,
    /// Lines not to pass on (a bit per line, see [`Headers::write`]).
    pub skip: u128,
    pub framing: Framing,
    /// The instance keeps the connection open after the response.
    pub keep_alive: bool,
}

/// Sends a request on `conn` and reads the response head: the head, then
/// the body as far as the instance takes it before answering.
pub(crate) async fn exchange(
    conn: &mut Conn,
    head: &[u8],
    body: &mut RequestBody,
    head_request: bool,
) -> Result<ResponseHead, InstanceError> {
    body.rewind();
    let mut written = 0;
    let mut write_failed: Option<io::Error> = None;
    let mut got_bytes = false;
    std::future::poll_fn(|cx| {
        send_phase(conn, head, &mut written, body, &mut write_failed, cx)?;
        receive_phase(conn, head_request, &mut got_bytes, &mut write_failed, cx)
    })
    .await
}

/// Reads the response head to a request already written whole (and with
/// no body to send); `got_bytes`: some of the response was read already.
pub(crate) async fn receive(
    conn: &mut Conn,
    head_request: bool,
    mut got_bytes: bool,
) -> Result<ResponseHead, InstanceError> {
    let mut write_failed = None;
    std::future::poll_fn(|cx| {
        receive_phase(conn, head_request, &mut got_bytes, &mut write_failed, cx)
    })
    .await
}

/// Writes as much of the request as the socket takes now. A failed write
/// is remembered, not returned: the instance may have answered already.
fn send_phase(
    conn: &mut Conn,
    head: &[u8],
    written: &mut usize,
    body: &mut RequestBody,
    write_failed: &mut Option<io::Error>,
    cx: &mut Context<'_>,
) -> Result<(), InstanceError> {
    if write_failed.is_some() {
        return Ok(());
    }
    while *written < head.len() {
        match Pin::new(&mut conn.stream).poll_write(cx, &head[*written..]) {
            Poll::Ready(Ok(0)) => {
                *write_failed = Some(io::ErrorKind::WriteZero.into());
                return Ok(());
            }
            Poll::Ready(Ok(n)) => *written += n,
            Poll::Ready(Err(e)) => {
                *write_failed = Some(e);
                return Ok(());
            }
            Poll::Pending => return Ok(()),
        }
    }
    match body.poll_pump(&mut conn.stream, cx) {
        Poll::Ready(Err(InstanceError::Write(e))) => *write_failed = Some(e),
        Poll::Ready(Err(e)) => return Err(e),
        Poll::Ready(Ok(())) | Poll::Pending => {}
    }
    Ok(())
}

fn receive_phase(
    conn: &mut Conn,
    head_request: bool,
    got_bytes: &mut bool,
    write_failed: &mut Option<io::Error>,
    cx: &mut Context<'_>,
) -> Poll<Result<ResponseHead, InstanceError>> {
    loop {
        if !conn.buf.is_empty() {
            if let Some(head) = take_head(&mut conn.buf, head_request)? {
                // hyper's server cannot pass other 1xx on; the final
                // response follows.
                if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS
                {
                    continue;
                }
                return Poll::Ready(Ok(head));
            }
            if conn.buf.len() > MAX_HEAD {
                return Poll::Ready(Err(InstanceError::HeadTooLarge));
            }
        }
        reserve(&mut conn.buf, READ_CHUNK);
        match ready!(poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf)) {
            Ok(0) if !*got_bytes => {
                return Poll::Ready(Err(InstanceError::Closed(write_failed.take())));
            }
            Ok(0) => return Poll::Ready(Err(InstanceError::UnexpectedEof)),
            Ok(_) => *got_bytes = true,
            Err(e) if !*got_bytes => return Poll::Ready(Err(InstanceError::Closed(Some(e)))),
            Err(e) => return Poll::Ready(Err(InstanceError::Read(e))),
        }
    }
}

/// Room in `buf` for the next read: `chunk` more bytes when less than
/// 1 KiB is left (both sides of the router read this way).
pub(crate) fn reserve(buf: &mut BytesMut, chunk: usize) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(chunk);
    }
}

/// Takes a complete response head off the front of `buf`, if there is one.
/// Header values share the head's bytes.
pub(crate) fn take_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, InstanceError> {
    let (len, code, version, spans) = {
        // Uninitialized: filling 100 slots first cost more than parsing.
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(malformed(buf)),
        };
        let base = buf.as_ptr() as usize;
        let spans: Vec<Span> = parsed.headers.iter().map(|h| span_of(base, h)).collect();
        (
            len,
            parsed.code.unwrap_or(0),
            parsed.version.unwrap_or(1),
            spans,
        )
    };
    let bytes = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code)
        .ok()
        .filter(|s| s.as_u16() >= 100)
        .ok_or_else(|| malformed(&bytes))?;
    let headers = Headers::from_spans(bytes, spans);
    let (framing, skip) = framing(status, &headers, head_request)?;
    let keep_alive = keep_alive(version == 0, &headers)
        && framing != Framing::Close
        && status != StatusCode::SWITCHING_PROTOCOLS;
    Ok(Some(ResponseHead {
        status,
        headers,
        skip,
        framing,
        keep_alive,
    }))
}

/// Go's words for a response that is not HTTP, with its first line.
fn malformed(buf: &[u8]) -> InstanceError {
    let line = buf.split(|&c| c == b'\n').next().unwrap_or_default();
    let line = &line[..line.len().min(64)];
    InstanceError::Malformed(String::from_utf8_lossy(line.trim_ascii_end()).into_owned())
}

/// The body's framing, and the lines not to pass on: a `Content-Length`
/// next to a transfer coding is not to be trusted (and the client's side
/// frames the body anew).
fn framing(
    status: StatusCode,
    headers: &Headers,
    head_request: bool,
) -> Result<(Framing, u128), InstanceError> {
    if bodiless(status, head_request) {
        return Ok((Framing::Empty, 0));
    }
    if headers.has(Name::TransferEncoding) {
        let chunked_last = headers
            .get_all(Name::TransferEncoding)
            .last()
            .and_then(|v| v.rsplit(|&c| c == b',').next())
            .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        let skip = headers.mask(names(&[Name::ContentLength]));
        return Ok((
            if chunked_last {
                Framing::Chunked(Chunk::Size)
            } else {
                Framing::Close
            },
            skip,
        ));
    }
    let framing =
        match content_length(headers).map_err(|why| InstanceError::Malformed(why.into()))? {
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        };
    Ok((framing, 0))
}

/// A response to `HEAD`, an informational one, 204 and 304 have no body,
/// whatever their head says (RFC 9112 §6.3).
pub(crate) fn bodiless(status: StatusCode, head_request: bool) -> bool {
    head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// One `Content-Length` value: digits only (no sign, blanks around
/// allowed), and no more than a u64 holds.
pub(crate) fn length_value(text: &[u8]) -> Option<u64> {
    let text = text.trim_ascii();
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(c - b'0')))?
    })
}

/// A head's `Content-Length`: every value (lines and comma-separated lists
/// alike) must be the same number, in requests and responses alike
/// (RFC 9112 §6.3).
pub(crate) fn content_length(headers: &Headers) -> Result<Option<u64>, &'static str> {
    let mut length: Option<u64> = None;
    for value in headers.get_all(Name::ContentLength) {
        for part in value.split(|&c| c == b',') {
            let n = length_value(part).ok_or("invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length");
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Whether a head's `Connection` lets the connection carry another
/// request: HTTP/1.0 only with `keep-alive`, HTTP/1.1 unless `close`.
pub(crate) fn keep_alive(http_1_0: bool, headers: &Headers) -> bool {
    if http_1_0 {
        headers.connection_has(b"keep-alive")
    } else {
        !headers.connection_has(b"close")
    }
}

/// A chunk's size line, in hex.
pub(crate) fn push_chunk_size(out: &mut Vec<u8>, len: usize) {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[(len >> (4 * i)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

/// Decodes what `buf` holds of a chunked body: the next piece of data, or
/// `None` when more bytes are needed or the body is done (`*state ==
/// Chunk::Done`).
pub(crate) fn decode_chunked(
    state: &mut Chunk,
    buf: &mut BytesMut,
) -> Result<Option<Bytes>, InstanceError> {
    let bad = |what: &str| InstanceError::Malformed(format!("chunked body: {what}"));
    loop {
        match *state {
            Chunk::Done => return Ok(None),
            Chunk::Size => {
                let Some(end) = buf.iter().position(|&c| c == b'\n') else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(bad("chunk-size line too long"));
                    }
                    return Ok(None);
                };
                let line = &buf[..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let (digits, extensions) = match line.iter().position(|&c| c == b';') {
                    Some(at) => line.split_at(at),
                    None => (line, &[][..]),
                };
                // Whitespace only after the size (RFC 9112's BWS): a size
                // read one way here and another way elsewhere is how
                // requests are smuggled.
                let digits = digits.trim_ascii_end();
                if digits.is_empty()
                    || digits.len() > 16
                    || !digits.iter().all(u8::is_ascii_hexdigit)
                {
                    return Err(bad("invalid chunk size"));
                }
                // Extensions are skipped, but never with control characters
                // (a bare CR, say) in them.
                if extensions
                    .iter()
                    .any(|&c| (c < b' ' && c != b'\t') || c == 0x7f)
                {
                    return Err(bad("invalid chunk extension"));
                }
                let size = digits.iter().fold(0u64, |n, &c| {
                    (n << 4) | u64::from((c as char).to_digit(16).unwrap_or(0))
                });
                buf.advance(end + 1);
                *state = if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(take).freeze();
                let left = left - take as u64;
                *state = if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                };
                return Ok(Some(data));
            }
            Chunk::DataEnd => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                } else if buf.starts_with(b"\n") {
                    buf.advance(1);
                } else if buf.is_empty() || buf[..] == b"\r"[..] {
                    return Ok(None);
                } else {
                    return Err(bad("missing CRLF after chunk data"));
                }
                *state = Chunk::Size;
            }
            Chunk::Trailers => {
                // Trailer lines are read and dropped, up to the blank line.
                let Some(end) = buf.iter().position(|&c| c == b'\n') else {
                    if buf.len() > MAX_TRAILERS {
                        return Err(bad("trailers too long"));
                    }
                    return Ok(None);
                };
                let blank = end == 0 || (end == 1 && buf[0] == b'\r');
                buf.advance(end + 1);
                if blank {
                    *state = Chunk::Done;
                }
            }
        }
    }
}

/// What the instance's connection goes back to when a response is done:
/// its worker's pool.
pub(crate) struct Owner {
    pub backends: Arc<Backends>,
}

/// An instance's response body, read from its socket as hyper's server
/// side asks for it. A request body the instance had not taken whole when
/// it answered keeps going out meanwhile.
pub(crate) struct InstanceBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    request: Option<RequestBody>,
    /// What `request` took from the client, once it is done.
    request_bytes: u64,
    owner: Option<Owner>,
    /// An error met right after data: given to hyper on the next poll, so
    /// that what it buffered (the head, the data) goes out first and the
    /// client sees a cut body rather than nothing.
    failed: Option<InstanceError>,
}

impl InstanceBody {
    pub fn new(
        conn: Conn,
        head: &ResponseHead,
        request: RequestBody,
        owner: Owner,
    ) -> InstanceBody {
        let request_bytes = request.bytes();
        let request = (!request.finished()).then_some(request);
        let mut body = InstanceBody {
            conn: Some(conn),
            framing: head.framing,
            keep_alive: head.keep_alive,
            request,
            request_bytes,
            owner: Some(owner),
            failed: None,
        };
        if matches!(body.framing, Framing::Empty | Framing::Length(0)) {
            body.finish();
        }
        body
    }

    /// A body with nothing to read (the connection went elsewhere).
    pub fn empty() -> InstanceBody {
        InstanceBody {
            conn: None,
            framing: Framing::Empty,
            keep_alive: false,
            request: None,
            request_bytes: 0,
            owner: None,
            failed: None,
        }
    }

    /// The response was read whole: the connection goes back to the pool
    /// if the instance keeps it open and nothing is left over on it.
    fn finish(&mut self) {
        self.framing = Framing::Empty;
        let (Some(conn), Some(owner)) = (self.conn.take(), self.owner.take()) else {
            return;
        };
        if self.keep_alive && self.request.is_none() && conn.buf.is_empty() {
            owner.backends.give_back(conn);
        }
    }

    /// The connection is broken: dropped, and the error handed over on
    /// the next poll (see `failed`).
    fn fail(
        &mut self,
        error: InstanceError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, InstanceError>>> {
        self.conn = None;
        self.framing = Framing::Close;
        self.failed = Some(error);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The rest of the body, up to `max` bytes, when it is here already (a
    /// small response comes with its head): appended to `out`, and the
    /// body done. `None` when it has to be read (or a request body is
    /// still going out): then the body is polled as usual.
    pub fn take_whole(&mut self, out: &mut Vec<u8>, max: usize) -> Option<u64> {
        if self.failed.is_some() || self.request.is_some() {
            return None;
        }
        let Some(conn) = self.conn.as_mut() else {
            return (self.framing == Framing::Empty).then_some(0);
        };
        match self.framing {
            Framing::Empty => {
                self.finish();
                Some(0)
            }
            Framing::Length(left) if left <= conn.buf.len().min(max) as u64 => {
                let left = left as usize;
                out.extend_from_slice(&conn.buf[..left]);
                conn.buf.advance(left);
                self.finish();
                Some(left as u64)
            }
            _ => None,
        }
    }

    /// The bytes of the request body taken from the client so far.
    pub fn request_bytes(&self) -> u64 {
        self.request
            .as_ref()
            .map_or(self.request_bytes, RequestBody::bytes)
    }

    fn poll_request(&mut self, cx: &mut Context<'_>) {
        let (Some(request), Some(conn)) = (self.request.as_mut(), self.conn.as_mut()) else {
            return;
        };
        let polled = request.poll_pump(&mut conn.stream, cx);
        self.request_bytes = request.bytes();
        match polled {
            Poll::Pending => {}
            Poll::Ready(Ok(())) => self.request = None,
            Poll::Ready(Err(error)) => {
                tracing::debug!(%error, "request body stopped after the instance answered");
                self.request = None;
                self.keep_alive = false;
            }
        }
    }
}

impl Body for InstanceBody {
    type Data = Bytes;
    type Error = InstanceError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, InstanceError>>> {
        let this = &mut *self;
        if let Some(error) = this.failed.take() {
            return Poll::Ready(Some(Err(error)));
        }
        this.poll_request(cx);
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.framing {
                Framing::Empty => return Poll::Ready(None),
                Framing::Length(left) => {
                    if !conn.buf.is_empty() {
                        let take = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.buf.len());
                        let data = conn.buf.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked(state) => {
                    let decoded = decode_chunked(state, &mut conn.buf);
                    let done = *state == Chunk::Done;
                    match decoded {
                        Err(error) => return this.fail(error, cx),
                        Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Ok(None) if done => {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Ok(None) => {}
                    }
                }
                Framing::Close => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            reserve(&mut conn.buf, READ_CHUNK);
            match ready!(poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf)) {
                Ok(0) if this.framing == Framing::Close => {
                    this.keep_alive = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(InstanceError::UnexpectedEof, cx),
                Ok(_) => {}
                Err(error) => return this.fail(InstanceError::Read(error), cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none() && (self.conn.is_none() || self.framing == Framing::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Empty => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::generator;

    /// Feeds `wire` to the decoder in pieces of random size; returns the
    /// data and what was left in the buffer after the body.
    fn decode_in_pieces(wire: &[u8], next: &mut impl FnMut() -> u64) -> (Vec<u8>, Vec<u8>) {
        let mut state = Chunk::Size;
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut fed = 0;
        loop {
            while let Some(piece) = decode_chunked(&mut state, &mut buf).unwrap() {
                assert!(!piece.is_empty());
                data.extend_from_slice(&piece);
            }
            if state == Chunk::Done {
                return (data, buf.to_vec());
            }
            assert!(fed < wire.len(), "the decoder wants more than the body");
            let n = (1 + next() as usize % 40).min(wire.len() - fed);
            buf.extend_from_slice(&wire[fed..fed + n]);
            fed += n;
        }
    }

    #[test]
    fn chunked_bodies_decode_to_their_data_however_they_arrive() {
        let mut next = generator(0x5eed);
        for case in 0..2000 {
            let original: Vec<u8> = (0..next() % 300).map(|_| next() as u8).collect();
            let mut wire = Vec::new();
            let mut rest = &original[..];
            while !rest.is_empty() {
                let n = (1 + next() as usize % 64).min(rest.len());
                let size = if next().is_multiple_of(2) {
                    format!("{n:x}")
                } else {
                    format!("{n:X}")
                };
                let extension = if next().is_multiple_of(4) {
                    ";name=value"
                } else {
                    ""
                };
                let eol: &[u8] = if next().is_multiple_of(5) {
                    b"\n"
                } else {
                    b"\r\n"
                };
                wire.extend_from_slice(size.as_bytes());
                wire.extend_from_slice(extension.as_bytes());
                wire.extend_from_slice(eol);
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(eol);
                rest = &rest[n..];
            }
            wire.extend_from_slice(b"0\r\n");
            if next().is_multiple_of(3) {
                wire.extend_from_slice(b"x-checksum: abc\r\n");
            }
            wire.extend_from_slice(b"\r\n");
            let after = b"HTTP/1.1 200 OK\r\n";
            let take_after = next().is_multiple_of(2);
            if take_after {
                wire.extend_from_slice(after);
            }
            let (data, left) = decode_in_pieces(&wire, &mut next);
            assert_eq!(data, original, "case {case}");
            // What follows the body (the next response) is left alone,
            // at least the part that was fed.
            assert!(after.starts_with(&left), "case {case}: {left:?}");
        }
    }

    #[test]
    fn bad_chunked_framing_is_an_error_and_never_a_panic() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"\r\n",
            b"fffffffffffffffff\r\n",
            b"-1\r\n",
            b" 5\r\nhello\r\n",
            b"5;a=\rb\r\nhello\r\n",
            b"5;\x00\r\nhello\r\n",
        ] {
            let mut state = Chunk::Size;
            let mut buf = BytesMut::from(bad);
            let mut result = Ok(None);
            for _ in 0..4 {
                result = decode_chunked(&mut state, &mut buf);
                if !matches!(result, Ok(Some(_))) {
                    break;
                }
            }
            assert!(result.is_err(), "{bad:?} gave {result:?}");
        }
        let mut next = generator(7);
        let alphabet = b"0123456789abcdefABCDEF;=\r\n xg";
        for _ in 0..5000 {
            let bytes: Vec<u8> = (0..next() % 60)
                .map(|_| alphabet[next() as usize % alphabet.len()])
                .collect();
            let mut state = Chunk::Size;
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode_chunked(&mut state, &mut buf) {}
        }
    }

    fn head(text: &str, head_request: bool) -> Result<Option<ResponseHead>, InstanceError> {
        take_head(&mut BytesMut::from(text.as_bytes()), head_request)
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let framing = |text: &str| head(text, false).unwrap().unwrap().framing;
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            Framing::Length(5)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"),
            Framing::Length(5)
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), Framing::Close);
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
            Framing::Empty
        );
        assert_eq!(framing("HTTP/1.1 304 Not Modified\r\n\r\n"), Framing::Empty);
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Framing::Close
        );
        let chunked = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(chunked.framing, Framing::Chunked(Chunk::Size));
        // The length beside it is not passed on.
        assert_eq!(chunked.skip, 1);
        let to_head = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(to_head.framing, Framing::Empty);
        assert_eq!(to_head.headers.get(Name::ContentLength), Some(&b"5"[..]));
        assert_eq!(to_head.skip, 0);

        let keep_alive = |text: &str| head(text, false).unwrap().unwrap().keep_alive;
        assert!(keep_alive("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep_alive(
            "HTTP/1.1 200 OK\r\nConnection: x, Close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keep_alive("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(keep_alive(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keep_alive("HTTP/1.1 101 Switching Protocols\r\n\r\n"));

        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
            "this is not http\r\n\r\n",
        ] {
            assert!(head(bad, false).is_err(), "{bad:?}");
        }
        let Err(InstanceError::Malformed(line)) = head("this is not http\r\n\r\n", false) else {
            panic!("garbage must be malformed");
        };
        assert_eq!(line, "this is not http");
    }

    #[test]
    fn response_heads_parse_whole_only_and_keep_what_follows() {
        let mut next = generator(0xfeed);
        let names = ["content-type", "x-app", "set-cookie", "etag", "server"];
        for case in 0..1000 {
            // Statuses that have bodies (204 and 304 never do).
            let statuses = [200, 201, 206, 301, 302, 400, 404, 418, 500, 503];
            let status = statuses[next() as usize % statuses.len()];
            let mut text = format!("HTTP/1.1 {status} Whatever\r\n");
            let mut expected = Vec::new();
            for _ in 0..next() % 8 {
                let name = names[next() as usize % names.len()];
                let value = format!("v{}", next() % 1000);
                text.push_str(&format!("{name}: {value}\r\n"));
                expected.push((name, value));
            }
            text.push_str("content-length: 3\r\n\r\nabc");
            let wire = text.as_bytes();
            let mut buf = BytesMut::new();
            let mut fed = 0;
            let parsed = loop {
                if let Some(parsed) = take_head(&mut buf, false).unwrap() {
                    break parsed;
                }
                assert!(fed < wire.len(), "case {case}: never complete");
                let n = (1 + next() as usize % 30).min(wire.len() - fed);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
            };
            assert_eq!(parsed.status.as_u16(), status, "case {case}");
            for (name, value) in &expected {
                assert!(
                    parsed
                        .headers
                        .get_all_named(name.as_bytes())
                        .any(|v| v == value.as_bytes()),
                    "case {case}: {name}"
                );
            }
            assert_eq!(parsed.framing, Framing::Length(3));
            buf.extend_from_slice(&wire[fed..]);
            assert_eq!(&buf[..], b"abc", "case {case}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_head_parser() {
        let mut next = generator(0xbad);
        let seed = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        for _ in 0..20_000 {
            let mut bytes = seed.to_vec();
            for _ in 0..1 + next() % 6 {
                let at = next() as usize % bytes.len();
                match next() % 3 {
                    0 => bytes[at] = next() as u8,
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, next() as u8),
                }
            }
            let _ = take_head(&mut BytesMut::from(&bytes[..]), next().is_multiple_of(2));
        }
    }
}

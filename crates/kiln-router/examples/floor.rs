//! The floor: the leanest HTTP/1.1 proxy this stack (tokio on the kernel's
//! loopback TCP) allows, as a **measuring instrument** for issue 16, not
//! product code. It answers "how fast could a purpose-built client side
//! make the router at best?" before anyone writes one.
//!
//!   cargo build --release -p kiln-router --example floor
//!   PROXY=$CARGO_TARGET_DIR/release/examples/floor CPU=1 CONNS=64 bench/router-proxy.sh
//!
//! Same command line as `examples/proxy.rs`: `floor LISTEN INSTANCE HOST`
//! serves `LISTEN`, routing `HOST` to `INSTANCE`. What it does per request
//! is what the router must do at least, and nothing else:
//! - one current-thread runtime per thread (`WORKERS=N`, one per CPU by
//!   default), given connections round-robin by one accepting thread, as
//!   `workers.rs` does; or with `ACCEPT=reuseport` each with its own
//!   listening socket (`SO_REUSEPORT`), the kernel spreading connections;
//! - per connection one reusable read buffer; the head parsed in place
//!   with `httparse`; the Host looked up in a one-entry map;
//! - the head rewritten as the router does (hop-by-hop headers dropped;
//!   `Host`, `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Request-Start`,
//!   `X-Vcap-Request-Id`, `X-Cf-ApplicationID`, `X-Cf-InstanceID`,
//!   `X-Cf-InstanceIndex` set) and sent in **one** write on a kept-alive
//!   instance connection from a per-thread pool;
//! - the response head parsed with `httparse`, its `Content-Length` body,
//!   head and body written to the client in one write;
//! - no allocation per request, no timers, no access log — unless
//!   `ACCESS_LOG=1`, which formats a Gorouter-shaped `RTR` line per request
//!   into a per-thread buffer, to know what the log costs on top.
//!
//! Left out on purpose: chunked bodies, limits, timeouts, errors beyond
//! closing the connection, retries other than one fresh connection when a
//! pooled one turns out closed. It is correct for the benchmark's GETs.

use kiln_router::RequestId;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A client's read buffer and an instance connection's, in bytes.
const BUF: usize = 16 * 1024;
/// Header lines parsed per head, at most.
const HEADERS: usize = 64;
/// Request headers the router replaces or drops (lower case).
const REPLACED: [&[u8]; 13] = [
    b"host",
    b"content-length",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"upgrade",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-vcap-request-id",
    b"x-cf-applicationid",
    b"x-cf-instanceid",
    b"x-cf-instanceindex",
];

/// Where a route goes, with the header values precomputed as the route
/// table does.
struct Route {
    addr: SocketAddr,
    addr_text: String,
    app_guid: &'static str,
    instance_guid: &'static str,
    index: &'static str,
}

struct Config {
    routes: HashMap<Box<[u8]>, Route, foldhash::fast::RandomState>,
    access_log: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, instance, host] = args.as_slice() else {
        return Err("usage: floor LISTEN INSTANCE HOST".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let addr: SocketAddr = instance.parse()?;
    let mut routes = HashMap::with_hasher(foldhash::fast::RandomState::default());
    routes.insert(
        host.to_ascii_lowercase().into_bytes().into_boxed_slice(),
        Route {
            addr,
            addr_text: addr.to_string(),
            app_guid: "process",
            instance_guid: "instance",
            index: "0",
        },
    );
    let config: &'static Config = Box::leak(Box::new(Config {
        routes,
        access_log: std::env::var("ACCESS_LOG").is_ok_and(|v| v == "1"),
    }));
    let workers = match std::env::var("WORKERS") {
        Ok(n) => n.parse()?,
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if std::env::var("ACCEPT").is_ok_and(|v| v == "reuseport") {
        accept_per_thread(listen, workers, config)
    } else {
        accept_round_robin(listen, workers, config)
    }
}

fn current_thread() -> io::Result<tokio::runtime::Runtime> {
    // IO only: the floor has no timers.
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
}

/// Each thread listens on its own `SO_REUSEPORT` socket: the kernel spreads
/// connections, nothing crosses threads.
fn accept_per_thread(
    listen: SocketAddr,
    workers: usize,
    config: &'static Config,
) -> Result<(), Box<dyn std::error::Error>> {
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            std::thread::spawn(move || -> io::Result<()> {
                current_thread()?.block_on(async move {
                    let socket = if listen.is_ipv4() {
                        TcpSocket::new_v4()?
                    } else {
                        TcpSocket::new_v6()?
                    };
                    socket.set_reuseaddr(true)?;
                    socket.set_reuseport(true)?;
                    socket.bind(listen)?;
                    accept_loop(socket.listen(1024)?, config).await
                })
            })
        })
        .collect();
    for thread in threads {
        thread.join().map_err(|_| "a worker panicked")??;
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, config: &'static Config) -> io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        tokio::spawn(serve(stream, peer, config));
    }
}

/// One accepting thread, connections handed round-robin to the workers'
/// runtimes (what `workers.rs` does).
fn accept_round_robin(
    listen: SocketAddr,
    workers: usize,
    config: &'static Config,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let runtime = current_thread()?;
        handles.push(runtime.handle().clone());
        std::thread::spawn(move || runtime.block_on(std::future::pending::<()>()));
    }
    current_thread()?.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        for next in 0.. {
            let (stream, peer) = listener.accept().await?;
            let stream = stream.into_std()?;
            handles[next % workers].spawn(async move {
                // Registered with the worker's reactor, on its thread.
                if let Ok(stream) = TcpStream::from_std(stream) {
                    serve(stream, peer, config).await;
                }
            });
        }
        Ok(())
    })
}

/// A kept-alive connection to the instance with its read buffer.
struct Backend {
    stream: TcpStream,
    buf: Box<[u8]>,
    filled: usize,
}

thread_local! {
    /// The thread's idle instance connections (one instance here).
    static POOL: RefCell<Vec<Backend>> = const { RefCell::new(Vec::new()) };
    static LOG: RefCell<String> = RefCell::new(String::with_capacity(128 * 1024));
}

async fn backend(addr: SocketAddr) -> io::Result<(Backend, bool)> {
    if let Some(pooled) = POOL.with(|pool| pool.borrow_mut().pop()) {
        return Ok((pooled, true));
    }
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let fresh = Backend {
        stream,
        buf: vec![0; BUF].into_boxed_slice(),
        filled: 0,
    };
    Ok((fresh, false))
}

/// What the request head said, once rewritten into the outgoing head.
struct Request {
    head_len: usize,
    body_len: usize,
    route: &'static Route,
    keep_alive: bool,
    head_method: bool,
    // For the access log only.
    method_end: usize,
    target: (usize, usize),
}

async fn serve(client: TcpStream, peer: SocketAddr, config: &'static Config) {
    let _ = client.set_nodelay(true);
    let _ = serve_requests(client, peer, config).await;
}

async fn serve_requests(
    mut client: TcpStream,
    peer: SocketAddr,
    config: &'static Config,
) -> io::Result<()> {
    let client_ip = peer.ip().to_string();
    let mut input = vec![0u8; BUF].into_boxed_slice();
    let mut filled = 0;
    let mut outgoing = Vec::with_capacity(BUF);
    let mut response = Vec::with_capacity(BUF);
    loop {
        // Read phase: a whole head, parsed in place.
        let request = loop {
            if filled > 0 {
                outgoing.clear();
                match rewrite(&input[..filled], config, &client_ip, &mut outgoing) {
                    Some(Ok(request)) => break request,
                    Some(Err(())) => return Ok(()),
                    None => {}
                }
            }
            if filled == input.len() {
                return Ok(()); // head too large: the floor just closes
            }
            let n = client.read(&mut input[filled..]).await?;
            if n == 0 {
                return Ok(());
            }
            filled += n;
        };
        let started = Instant::now();
        // Body phase: what came with the head goes in the same write.
        let with_head = request.body_len.min(filled - request.head_len);
        let body_end = request.head_len + with_head;
        outgoing.extend_from_slice(&input[request.head_len..body_end]);
        let (mut be, mut reused) = backend(request.route.addr).await?;
        // Exchange phase: one write of the head; a pooled connection the
        // instance closed meanwhile is replaced once (bodiless requests only).
        let (status, sent) = loop {
            match exchange(
                &mut be,
                &mut client,
                &outgoing,
                &request,
                body_end,
                &mut response,
            )
            .await
            {
                Ok((status, sent, keep_alive)) => {
                    if keep_alive {
                        POOL.with(|pool| pool.borrow_mut().push(be));
                    }
                    break (status, sent);
                }
                Err(Exchange::Closed) if reused && request.body_len == 0 => {
                    (be, reused) = backend(request.route.addr).await?;
                }
                Err(Exchange::Closed) => return Ok(()),
                Err(Exchange::Io(e)) => return Err(e),
            }
        };
        if config.access_log {
            log_line(&input, &request, &client_ip, status, sent, started);
        }
        // Keep what the client pipelined after this request.
        let consumed = request.head_len + request.body_len;
        input.copy_within(consumed.min(filled)..filled, 0);
        filled -= consumed.min(filled);
        if !request.keep_alive {
            return Ok(());
        }
    }
}

enum Exchange {
    /// The instance closed before any byte of a response.
    Closed,
    Io(io::Error),
}

impl From<io::Error> for Exchange {
    fn from(e: io::Error) -> Exchange {
        Exchange::Io(e)
    }
}

/// Sends the request, relays the response; returns the status, the body
/// bytes sent and whether the instance keeps the connection open.
async fn exchange(
    be: &mut Backend,
    client: &mut TcpStream,
    outgoing: &[u8],
    request: &Request,
    body_end: usize,
    response: &mut Vec<u8>,
) -> Result<(u16, u64, bool), Exchange> {
    if be.stream.write_all(outgoing).await.is_err() {
        return Err(Exchange::Closed);
    }
    // The rest of a Content-Length request body, streamed through the
    // response buffer (the client's buffer still holds the head the
    // access log reads).
    let mut left = request.body_len - (body_end - request.head_len);
    if left > 0 {
        response.resize(BUF, 0);
    }
    while left > 0 {
        let n = client.read(&mut response[..left.min(BUF)]).await?;
        if n == 0 {
            return Err(Exchange::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        be.stream.write_all(&response[..n]).await?;
        left -= n;
    }
    // Response head, parsed in place in the instance connection's buffer.
    let (status, head_len, body_len, keep_alive) = loop {
        if be.filled > 0 {
            response.clear();
            match relay_head(&be.buf[..be.filled], request.head_method, response) {
                Some(Ok(head)) => break head,
                Some(Err(())) => return Err(Exchange::Io(io::ErrorKind::InvalidData.into())),
                None => {}
            }
        }
        if be.filled == be.buf.len() {
            return Err(Exchange::Io(io::ErrorKind::InvalidData.into()));
        }
        let n = be.stream.read(&mut be.buf[be.filled..]).await?;
        if n == 0 {
            return Err(if be.filled == 0 {
                Exchange::Closed
            } else {
                Exchange::Io(io::ErrorKind::UnexpectedEof.into())
            });
        }
        be.filled += n;
    };
    // Body: what came with the head goes out with it, in one write.
    let with_head = body_len.min(be.filled - head_len);
    response.extend_from_slice(&be.buf[head_len..head_len + with_head]);
    client.write_all(response).await?;
    let mut left = body_len - with_head;
    let consumed = head_len + with_head;
    be.buf.copy_within(consumed..be.filled, 0);
    be.filled -= consumed;
    while left > 0 {
        let n = be.stream.read(&mut be.buf[..left.min(BUF)]).await?;
        if n == 0 {
            return Err(Exchange::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        client.write_all(&be.buf[..n]).await?;
        left -= n;
    }
    Ok((status, body_len as u64, keep_alive))
}

/// Parses a request head in `input` and writes the outgoing head into
/// `out`. `None`: not whole yet; `Some(Err)`: not something the floor serves.
fn rewrite(
    input: &[u8],
    config: &'static Config,
    client_ip: &str,
    out: &mut Vec<u8>,
) -> Option<Result<Request, ()>> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(Err(())),
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Some(Err(()));
    };
    let mut host: &[u8] = b"";
    let mut body_len = 0;
    let mut keep_alive = version == 1;
    let mut forwarded_for: Option<&[u8]> = None;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            host = h.value;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            body_len = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
        } else if name.eq_ignore_ascii_case(b"connection") {
            if h.value.eq_ignore_ascii_case(b"close") {
                keep_alive = false;
            } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            forwarded_for = Some(h.value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Some(Err(())); // no chunked request bodies in the floor
        }
    }
    let bare_host = match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    };
    // The router lower-cases only when it must; so does the floor.
    let route = if bare_host.iter().any(u8::is_ascii_uppercase) {
        config.routes.get(bare_host.to_ascii_lowercase().as_slice())
    } else {
        config.routes.get(bare_host)
    };
    let Some(route) = route else {
        return Some(Err(()));
    };
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_request_start = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if REPLACED.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            continue;
        }
        has_request_start |= name.eq_ignore_ascii_case(b"x-request-start");
        push_header(out, name, h.value);
    }
    push_header(out, b"Host", host);
    out.extend_from_slice(b"X-Forwarded-For: ");
    if let Some(list) = forwarded_for {
        out.extend_from_slice(list);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: http\r\n");
    if !has_request_start {
        out.extend_from_slice(b"X-Request-Start: ");
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        push_u64(out, ms);
        out.extend_from_slice(b"\r\n");
    }
    // The router's own generator (a per-thread wyrand, no system call).
    push_header(out, b"X-Vcap-Request-Id", RequestId::new().as_bytes());
    push_header(out, b"X-Cf-ApplicationID", route.app_guid.as_bytes());
    push_header(out, b"X-Cf-InstanceID", route.instance_guid.as_bytes());
    push_header(out, b"X-Cf-InstanceIndex", route.index.as_bytes());
    if body_len > 0 {
        out.extend_from_slice(b"Content-Length: ");
        push_u64(out, body_len as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let method_end = method.len();
    let target_start = method_end + 1;
    Some(Ok(Request {
        head_len,
        body_len,
        route,
        keep_alive,
        head_method: method == "HEAD",
        method_end,
        target: (target_start, target_start + path.len()),
    }))
}

/// Parses a response head and writes what the client gets into `out`:
/// status line, headers without hop-by-hop ones, `Content-Length`.
/// Returns (status, head length, body length, instance keeps the connection).
fn relay_head(
    input: &[u8],
    head_method: bool,
    out: &mut Vec<u8>,
) -> Option<Result<(u16, usize, usize, bool), ()>> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(Err(())),
    };
    let (Some(code), Some(version)) = (res.code, res.version) else {
        return Some(Err(()));
    };
    let mut body_len = None;
    let mut keep_alive = version == 1;
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(code));
    out.push(b' ');
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if name.eq_ignore_ascii_case(b"connection") {
            keep_alive &= !h.value.eq_ignore_ascii_case(b"close");
            continue;
        } else if name.eq_ignore_ascii_case(b"keep-alive") {
            continue;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Some(Err(())); // no chunked response bodies in the floor
        }
        push_header(out, name, h.value);
    }
    out.extend_from_slice(b"\r\n");
    let bodiless = head_method || code == 204 || code == 304 || (100..200).contains(&code);
    let body_len = match (bodiless, body_len) {
        (true, _) => 0,
        (false, Some(n)) => n,
        (false, None) => return Some(Err(())), // read-until-close: not in the floor
    };
    Some(Ok((code, head_len, body_len, keep_alive)))
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `ACCESS_LOG=1`: a Gorouter-shaped `RTR` line per request, formatted on
/// the request path into the thread's buffer (dropped when full: the
/// floor measures the formatting, not a sink).
fn log_line(
    input: &[u8],
    request: &Request,
    client_ip: &str,
    status: u16,
    sent: u64,
    started: Instant,
) {
    let method = String::from_utf8_lossy(&input[..request.method_end]);
    let target = String::from_utf8_lossy(&input[request.target.0..request.target.1]);
    let now = time::OffsetDateTime::now_utc();
    let micros = started.elapsed().as_micros();
    let route = request.route;
    LOG.with(|log| {
        let mut out = log.borrow_mut();
        if out.len() > 120 * 1024 {
            out.clear();
        }
        let _ = writeln!(
            out,
            "static.bench.test - [{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z] \"{method} {target} HTTP/1.1\" {status} 0 {sent} \"-\" \"-\" \"{client_ip}\" \"{}\" x_forwarded_for:\"{client_ip}\" x_forwarded_proto:\"http\" vcap_request_id:\"-\" response_time:{}.{:06} gorouter_time:{}.{:06} app_id:\"{}\" app_index:\"{}\" instance_id:\"{}\" x_cf_routererror:\"-\"",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.nanosecond(),
            route.addr_text,
            micros / 1_000_000,
            micros % 1_000_000,
            // The router's share, as the shape of the field's cost.
            micros / 1_000_000,
            micros % 1_000_000,
            route.app_guid,
            route.index,
            route.instance_guid,
        );
    });
}

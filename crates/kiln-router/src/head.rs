//! Header lines as the router reads them: the head's bytes as received and
//! where each name and value lies ([`Headers`]). Both sides of the plain
//! path parse heads in place with `httparse` and keep them this way, so a
//! request or response passes through with the few edits the router makes
//! and no header map is built or serialized again; only hyper's side
//! (HTTPS, HTTP/2) converts, once each way ([`Headers::from_map`],
//! [`Headers::to_map`]).
//!
//! Names are compared ignoring ASCII case; lines keep the case and order
//! they came in. The names the router itself reads or rewrites ([`Name`])
//! are recognized once per line as the head is parsed; lookups and masks
//! go by them.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header names the router itself reads or rewrites. Each line's name
/// is matched against them once, when the head is parsed, so that asking
/// for one of them costs a bit test when it is absent (as most are) and a
/// byte compare per line when present, not a case-insensitive compare of
/// every line's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Name {
    Te,
    Host,
    Date,
    Cookie,
    Expect,
    Upgrade,
    Referer,
    Trailer,
    KeepAlive,
    Connection,
    SetCookie,
    UserAgent,
    ContentLength,
    XForwardedFor,
    XRequestStart,
    XCfInstanceId,
    ProxyConnection,
    TransferEncoding,
    XForwardedProto,
    XVcapRequestId,
    XCfAppInstance,
    ProxyAuthenticate,
    XCfApplicationId,
    XCfInstanceIndex,
    ProxyAuthorization,
}

impl Name {
    /// The name as `http` spells it (lower case).
    #[inline]
    pub fn as_str(self) -> &'static str {
        NAME_TEXT[self as usize]
    }

    /// Which of these `name` is, in any case. The length and one byte
    /// narrow it to one candidate, compared whole.
    pub fn of(name: &[u8]) -> Option<Name> {
        let at = |i: usize| name.get(i).map_or(0, u8::to_ascii_lowercase);
        let candidate = match (name.len(), at(0)) {
            (2, _) => Name::Te,
            (4, b'h') => Name::Host,
            (4, b'd') => Name::Date,
            (6, b'c') => Name::Cookie,
            (6, b'e') => Name::Expect,
            (7, b'u') => Name::Upgrade,
            (7, b'r') => Name::Referer,
            (7, b't') => Name::Trailer,
            (10, b'k') => Name::KeepAlive,
            (10, b'c') => Name::Connection,
            (10, b's') => Name::SetCookie,
            (10, b'u') => Name::UserAgent,
            (14, _) => Name::ContentLength,
            (15, b'x') => match at(2) {
                b'f' => Name::XForwardedFor,
                b'r' => Name::XRequestStart,
                _ => Name::XCfInstanceId,
            },
            (16, _) => Name::ProxyConnection,
            (17, b't') => Name::TransferEncoding,
            (17, b'x') => match at(2) {
                b'f' => Name::XForwardedProto,
                b'v' => Name::XVcapRequestId,
                _ => Name::XCfAppInstance,
            },
            (18, b'p') => Name::ProxyAuthenticate,
            (18, b'x') => match at(5) {
                b'a' => Name::XCfApplicationId,
                _ => Name::XCfInstanceIndex,
            },
            (19, _) => Name::ProxyAuthorization,
            _ => return None,
        };
        eq_lower(name, candidate.as_str().as_bytes()).then_some(candidate)
    }

    pub(crate) const fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// Each [`Name`]'s text, in the enum's order.
const NAME_TEXT: [&str; 25] = [
    "te",
    "host",
    "date",
    "cookie",
    "expect",
    "upgrade",
    "referer",
    "trailer",
    "keep-alive",
    "connection",
    "set-cookie",
    "user-agent",
    "content-length",
    "x-forwarded-for",
    "x-request-start",
    "x-cf-instanceid",
    "proxy-connection",
    "transfer-encoding",
    "x-forwarded-proto",
    "x-vcap-request-id",
    "x-cf-app-instance",
    "proxy-authenticate",
    "x-cf-applicationid",
    "x-cf-instanceindex",
    "proxy-authorization",
];

/// `name` is `lower` (lower-case letters and `-`) in any case: `b | 0x20`
/// equals a lower-case letter only for that letter in either case, and
/// equals `-` only for `-` or CR, which no name or value `httparse`
/// passed holds. So the compare needs no branch per byte.
fn eq_lower(name: &[u8], lower: &[u8]) -> bool {
    if name.len() != lower.len() {
        return false;
    }
    // Eight bytes at a time (the last eight overlapping the others) for the
    // longer names, most of the known ones.
    let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    let len = name.len();
    if len >= 8 {
        let mut differ = 0;
        let mut at = 0;
        while at + 8 < len {
            differ |= (word(name, at) | 0x2020_2020_2020_2020) ^ word(lower, at);
            at += 8;
        }
        differ |= (word(name, len - 8) | 0x2020_2020_2020_2020) ^ word(lower, len - 8);
        return differ == 0;
    }
    name.iter()
        .zip(lower)
        .fold(0, |differ, (&b, &c)| differ | ((b | 0x20) ^ c))
        == 0
}

/// A set of [`Name`]s (a `const fn`, so that a fixed set is a constant).
pub(crate) const fn names(names: &[Name]) -> u32 {
    let (mut set, mut i) = (0, 0);
    while i < names.len() {
        set |= names[i].bit();
        i += 1;
    }
    set
}

/// Hop-by-hop headers (RFC 9110 §7.6.1, and those Go's proxy drops): they
/// describe the connection, not the message.
pub(crate) const HOP_BY_HOP: [Name; 9] = [
    Name::Connection,
    Name::KeepAlive,
    Name::ProxyConnection,
    Name::ProxyAuthenticate,
    Name::ProxyAuthorization,
    Name::Te,
    Name::Trailer,
    Name::TransferEncoding,
    Name::Upgrade,
];

/// Where a header's name and value are in a head's buffer (start and end
/// of each), so they can be cut from the frozen head once `httparse`'s
/// borrow has ended, and which [`Name`] it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub(crate) name: (u32, u32),
    pub(crate) value: (u32, u32),
    pub(crate) known: Option<Name>,
}

/// `header`'s [`Span`] in the buffer that starts at `base`.
pub(crate) fn span_of(base: usize, header: &httparse::Header<'_>) -> Span {
    let name = header.name.as_ptr() as usize - base;
    let value = header.value.as_ptr() as usize - base;
    Span {
        name: (name as u32, (name + header.name.len()) as u32),
        value: (value as u32, (value + header.value.len()) as u32),
        known: Name::of(header.name.as_bytes()),
    }
}

/// A message's header lines, in order, sharing the head's bytes. Names
/// and values were checked by `httparse` (tokens; no control bytes).
#[derive(Debug, Clone, Default)]
pub(crate) struct Headers {
    bytes: Bytes,
    spans: Vec<Span>,
    /// The [`Name`]s some line has.
    present: u32,
    /// What the `Connection` lines list, read once with the head: both
    /// sides ask it two or three things per message.
    connection: ConnectionList,
}

/// The tokens of a head's `Connection` lines, by kind.
#[derive(Debug, Clone, Copy, Default)]
struct ConnectionList {
    /// The [`Name`]s listed.
    names: u32,
    /// `close` is listed.
    close: bool,
    /// Some other name is listed (looked for by text when asked).
    others: bool,
}

impl Headers {
    /// The lines at `spans` in `bytes`.
    pub fn from_spans(bytes: Bytes, spans: Vec<Span>) -> Headers {
        let present = spans
            .iter()
            .fold(0, |set, s| set | s.known.map_or(0, Name::bit));
        let mut headers = Headers {
            bytes,
            spans,
            present,
            connection: ConnectionList::default(),
        };
        if headers.has(Name::Connection) {
            // Line by line rather than through `tokens`, whose iterator
            // chain cost twice as much here.
            let mut list = ConnectionList::default();
            for span in &headers.spans {
                if span.known != Some(Name::Connection) {
                    continue;
                }
                for token in headers.value_of(span).split(|&c| c == b',') {
                    let token = token.trim_ascii();
                    match Name::of(token) {
                        Some(name) => list.names |= name.bit(),
                        None if token.is_empty() => {}
                        None if eq_lower(token, b"close") => list.close = true,
                        None => list.others = true,
                    }
                }
            }
            headers.connection = list;
        }
        headers
    }

    /// hyper's map as lines (its side's requests).
    pub fn from_map(map: &HeaderMap) -> Headers {
        let size: usize = map
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        let mut bytes = Vec::with_capacity(size);
        let mut spans = Vec::with_capacity(map.len());
        for (name, value) in map {
            let name_start = bytes.len() as u32;
            bytes.extend_from_slice(name.as_str().as_bytes());
            let value_start = bytes.len() as u32 + 2;
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(value.as_bytes());
            spans.push(Span {
                name: (name_start, value_start - 2),
                value: (value_start, bytes.len() as u32),
                known: Name::of(name.as_str().as_bytes()),
            });
            bytes.extend_from_slice(b"\r\n");
        }
        Headers::from_spans(bytes.into(), spans)
    }

    /// The lines whose bit is not set in `skip` as hyper's map (its side's
    /// responses); values share the head's bytes. Lines `httparse` took
    /// that `http` would not are left out.
    pub fn to_map(&self, skip: u128, capacity: usize) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.spans.len() + capacity);
        for (i, span) in self.spans.iter().enumerate() {
            if skipped(skip, i) {
                continue;
            }
            let name = HeaderName::from_bytes(self.name(span));
            let value = HeaderValue::from_maybe_shared(self.bytes.slice(range(span.value)));
            if let (Ok(name), Ok(value)) = (name, value) {
                map.append(name, value);
            }
        }
        map
    }

    fn name(&self, span: &Span) -> &[u8] {
        &self.bytes[range(span.name)]
    }

    fn value_of(&self, span: &Span) -> &[u8] {
        &self.bytes[range(span.value)]
    }

    /// Each line's name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans
            .iter()
            .map(|span| (self.name(span), self.value_of(span)))
    }

    /// Some line is named `name`.
    pub fn has(&self, name: Name) -> bool {
        self.present & name.bit() != 0
    }

    /// The values of the lines named `name`, in order.
    pub fn get_all(&self, name: Name) -> impl Iterator<Item = &[u8]> + '_ {
        self.get_all_indexed(name).map(|(_, value)| value)
    }

    /// [`Headers::get_all`], with each line's place (its bit in a mask).
    pub fn get_all_indexed(&self, name: Name) -> impl Iterator<Item = (usize, &[u8])> + '_ {
        // None to look at when no line has the name.
        let lines = if self.has(name) { &self.spans[..] } else { &[] };
        lines
            .iter()
            .enumerate()
            .filter(move |(_, span)| span.known == Some(name))
            .map(|(i, span)| (i, self.value_of(span)))
    }

    /// The values of the lines named `name`, any name, in order.
    #[cfg(test)]
    pub fn get_all_named<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value named `name`.
    pub fn get(&self, name: Name) -> Option<&[u8]> {
        self.get_all(name).next()
    }

    /// The bytes the lines take written out, about.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The first value named `name`, sharing the head's bytes.
    pub fn value(&self, name: Name) -> Option<HeaderValue> {
        let value = self.get(name)?;
        HeaderValue::from_maybe_shared(self.bytes.slice_ref(value)).ok()
    }

    /// Writes the lines whose bit is not set in `skip`. Kept lines that
    /// lie one after the other in the head, each ending in CRLF right after
    /// its value, are copied as one run; others are written out anew.
    pub fn write(&self, out: &mut Vec<u8>, skip: u128) {
        write_lines(out, &self.bytes, &self.spans, skip);
    }

    /// The bit of each line named one of `names` (a [`names`] set): a
    /// skip mask for [`Headers::write`].
    pub fn mask(&self, names: u32) -> u128 {
        if self.present & names == 0 {
            return 0;
        }
        let mut mask = 0u128;
        for (i, span) in self.spans.iter().enumerate().take(128) {
            if span.known.is_some_and(|name| names & name.bit() != 0) {
                mask |= 1 << i;
            }
        }
        mask
    }

    /// The bit of each line `drop` picks by name: a skip mask for
    /// [`Headers::write`].
    pub fn mask_named(&self, mut drop: impl FnMut(&[u8]) -> bool) -> u128 {
        let mut mask = 0u128;
        for (i, (name, _)) in self.iter().enumerate().take(128) {
            if drop(name) {
                mask |= 1 << i;
            }
        }
        mask
    }

    /// `Connection` lists `token` (in any case).
    pub fn connection_has(&self, token: &[u8]) -> bool {
        if !self.has(Name::Connection) {
            return false;
        }
        match Name::of(token) {
            Some(name) => self.connection.names & name.bit() != 0,
            None if token.eq_ignore_ascii_case(b"close") => self.connection.close,
            None => {
                self.connection.others
                    && tokens(self, Name::Connection).any(|t| t.eq_ignore_ascii_case(token))
            }
        }
    }

    /// The lines that describe the connection rather than the message:
    /// hop-by-hop ones and those the message's `Connection` names.
    pub fn connection_lines(&self) -> u128 {
        let mut known = names(&HOP_BY_HOP);
        if self.present & known == 0 {
            return 0;
        }
        known |= self.connection.names;
        let mut mask = self.mask(known);
        // Names `Connection` lists that are not among the known ones: rare,
        // so looked for only when there are some.
        if self.connection.others {
            let listed: Vec<&[u8]> = tokens(self, Name::Connection)
                .filter(|t| !t.eq_ignore_ascii_case(b"close") && Name::of(t).is_none())
                .collect();
            mask |= self.mask_named(|name| listed.iter().any(|t| name.eq_ignore_ascii_case(t)));
        }
        mask
    }
}

/// Writes the lines at `spans` in `bytes` whose bit is not set in `skip`
/// ([`Headers::write`]; the plain front's one pass writes a request's
/// lines with it too).
pub(crate) fn write_lines(out: &mut Vec<u8>, bytes: &[u8], spans: &[Span], skip: u128) {
    // The run of kept lines not yet copied: where it starts and ends.
    let mut run: Option<(usize, usize)> = None;
    for (i, span) in spans.iter().enumerate() {
        let (ns, ve) = (span.name.0 as usize, span.value.1 as usize);
        let kept = !skipped(skip, i);
        if kept && bytes.get(ve..ve + 2) == Some(b"\r\n") {
            run = match run {
                Some((start, end)) if end == ns => Some((start, ve + 2)),
                Some((start, end)) => {
                    out.extend_from_slice(&bytes[start..end]);
                    Some((ns, ve + 2))
                }
                None => Some((ns, ve + 2)),
            };
            continue;
        }
        if let Some((start, end)) = run.take() {
            out.extend_from_slice(&bytes[start..end]);
        }
        if kept {
            push_header(out, &bytes[range(span.name)], &bytes[range(span.value)]);
        }
    }
    if let Some((start, end)) = run {
        out.extend_from_slice(&bytes[start..end]);
    }
}

fn range((start, end): (u32, u32)) -> std::ops::Range<usize> {
    start as usize..end as usize
}

/// Line `i` is one `skip` leaves out. Heads hold at most 128 lines.
pub(crate) fn skipped(skip: u128, i: usize) -> bool {
    i < 128 && skip & (1 << i) != 0
}

/// `name: value` and the line's end. Inlined, so that a known name's
/// text is copied as a constant.
#[inline]
pub(crate) fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The comma-separated tokens of every `name` line, trimmed, empty ones
/// left out (`Connection`, `Transfer-Encoding`).
pub(crate) fn tokens(headers: &Headers, name: Name) -> impl Iterator<Item = &[u8]> + '_ {
    headers
        .get_all(name)
        .flat_map(|v| v.split(|&c| c == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn parsed(text: &str) -> Headers {
        let bytes = Bytes::copy_from_slice(text.as_bytes());
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut spans = Vec::new();
        let base = bytes.as_ptr() as usize;
        httparse::parse_headers(&bytes, &mut slots).unwrap();
        for h in slots.iter().take_while(|h| !h.name.is_empty()) {
            spans.push(span_of(base, h));
        }
        Headers::from_spans(bytes.clone(), spans)
    }

    #[test]
    fn connection_tokens_are_known_in_any_case_whatever_their_kind() {
        let h = parsed("Connection: Keep-Alive, X-Foo\r\nconnection: CLOSE\r\n\r\n");
        for token in [&b"keep-alive"[..], b"close", b"x-foo", b"X-FOO"] {
            assert!(h.connection_has(token), "{}", token.escape_ascii());
        }
        for token in [&b"upgrade"[..], b"x-bar", b"te"] {
            assert!(!h.connection_has(token), "{}", token.escape_ascii());
        }
        let none = parsed("Host: a.test\r\nX-Foo: close\r\n\r\n");
        assert!(!none.connection_has(b"close") && !none.connection_has(b"x-foo"));
        assert_eq!(none.connection_lines(), 0);
    }

    #[test]
    fn lines_are_found_by_name_in_any_case_and_kept_as_they_came() {
        let h = parsed("Host: a.test\r\nX-A: 1\r\nx-a: 2\r\nConnection: x, Close\r\n\r\n");
        assert_eq!(h.iter().count(), 4);
        assert_eq!(h.get(Name::Host), Some(&b"a.test"[..]));
        assert_eq!(h.get_all_named(b"x-a").collect::<Vec<_>>(), [b"1", b"2"]);
        assert_eq!(
            tokens(&h, Name::Connection).collect::<Vec<_>>(),
            [&b"x"[..], b"Close"]
        );
        // Empty items, spaces and several lines, as RFC 9110's list rule
        // allows them.
        let list = parsed("Connection: , a ,,b,\r\nconnection:\r\nConnection:  c\t, \r\n\r\n");
        assert_eq!(
            tokens(&list, Name::Connection).collect::<Vec<_>>(),
            [&b"a"[..], b"b", b"c"]
        );
        assert_eq!(h.value(Name::Host).unwrap(), "a.test");
        let mut out = Vec::new();
        h.write(&mut out, h.mask_named(|n| n.eq_ignore_ascii_case(b"x-a")));
        assert_eq!(out, b"Host: a.test\r\nConnection: x, Close\r\n");
    }

    #[test]
    fn kept_lines_are_copied_in_runs_and_odd_ones_written_anew() {
        let h = parsed("A: 1\r\nB: 2\r\nC: 3  \r\nD:4\r\nE: 5\r\n\r\n");
        let write = |skip| {
            let mut out = Vec::new();
            h.write(&mut out, skip);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(write(0), "A: 1\r\nB: 2\r\nC: 3\r\nD:4\r\nE: 5\r\n");
        assert_eq!(write(0b00010), "A: 1\r\nC: 3\r\nD:4\r\nE: 5\r\n");
        assert_eq!(write(0b11111), "");
        assert_eq!(write(0b10001), "B: 2\r\nC: 3\r\nD:4\r\n");
        let lf = parsed("A: 1\nB: 2\n\n");
        let mut out = Vec::new();
        lf.write(&mut out, 0);
        assert_eq!(out, b"A: 1\r\nB: 2\r\n");
    }

    #[test]
    fn maps_convert_both_ways() {
        let mut map = HeaderMap::new();
        map.append(header::HOST, HeaderValue::from_static("a.test"));
        map.append(header::COOKIE, HeaderValue::from_static("a=1"));
        map.append(header::COOKIE, HeaderValue::from_static("b=2"));
        let h = Headers::from_map(&map);
        assert_eq!(h.iter().count(), 3);
        assert_eq!(h.get_all(Name::Cookie).count(), 2);
        assert_eq!(h.to_map(0, 0), map);
        let without_host = h.to_map(h.mask(names(&[Name::Host])), 0);
        assert!(!without_host.contains_key(header::HOST));
        assert_eq!(without_host.len(), 2);
    }

    const ALL: [Name; 25] = [
        Name::Te,
        Name::Host,
        Name::Date,
        Name::Cookie,
        Name::Expect,
        Name::Upgrade,
        Name::Referer,
        Name::Trailer,
        Name::KeepAlive,
        Name::Connection,
        Name::SetCookie,
        Name::UserAgent,
        Name::ContentLength,
        Name::XForwardedFor,
        Name::XRequestStart,
        Name::XCfInstanceId,
        Name::ProxyConnection,
        Name::TransferEncoding,
        Name::XForwardedProto,
        Name::XVcapRequestId,
        Name::XCfAppInstance,
        Name::ProxyAuthenticate,
        Name::XCfApplicationId,
        Name::XCfInstanceIndex,
        Name::ProxyAuthorization,
    ];

    #[test]
    fn known_names_are_told_apart_in_any_case_and_others_are_not_taken_for_them() {
        for name in ALL {
            let text = name.as_str();
            assert_eq!(HeaderName::from_static(text).as_str(), text);
            assert_eq!(Name::of(text.as_bytes()), Some(name), "{text}");
            assert_eq!(
                Name::of(text.to_uppercase().as_bytes()),
                Some(name),
                "{text}"
            );
            // Any one byte changed makes it another name.
            for at in 0..text.len() {
                let mut other = text.as_bytes().to_vec();
                other[at] = b'z' + u8::from(other[at] == b'z');
                assert_ne!(Name::of(&other), Some(name), "{text} at {at}");
            }
        }
        for other in [
            "",
            "x",
            "hosts",
            "content-type",
            "x-forwarded-fo",
            "x-cf-instanceidx",
            "idempotency-key",
        ] {
            assert_eq!(Name::of(other.as_bytes()), None, "{other}");
        }
        assert_eq!(names(&ALL).count_ones(), 25);
    }

    #[test]
    fn connection_lines_are_the_hop_by_hop_ones_and_those_connection_names() {
        let h = parsed(
            "Connection: keep-alive, X-Foo, close\r\nKeep-Alive: 5\r\nX-Foo: 1\r\nDate: d\r\n\
             Close: y\r\nTE: trailers\r\nx-forwarded-for: a\r\n\r\n",
        );
        assert_eq!(h.connection_lines(), 0b0100111);
        let h = parsed("Connection: Date\r\nDate: d\r\nHost: a\r\n\r\n");
        assert_eq!(h.connection_lines(), 0b011);
        let h = parsed("Host: a\r\nX-Foo: 1\r\n\r\n");
        assert_eq!(h.connection_lines(), 0);
        assert!(h.has(Name::Host) && !h.has(Name::Connection));
        assert_eq!(h.get(Name::Connection), None);
    }
}

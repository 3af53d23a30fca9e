//! Header lines as the router reads them: the head's bytes as received and
//! where each name and value lies ([`Headers`]). Both sides of the plain
//! path parse heads in place with `httparse` and keep them this way, so a
//! request or response passes through with the few edits the router makes
//! and no header map is built or serialized again; only hyper's side
//! (HTTPS, HTTP/2) converts, once each way ([`Headers::from_map`],
//! [`Headers::to_map`]).
//!
//! Names are compared ignoring ASCII case; lines keep the case and order
//! they came in.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Where a header's name and value are in a head's buffer (start and end
/// of each), so they can be cut from the frozen head once `httparse`'s
/// borrow has ended.
pub(crate) type Span = (u32, u32, u32, u32);

/// `header`'s [`Span`] in the buffer that starts at `base`.
pub(crate) fn span_of(base: usize, header: &httparse::Header<'_>) -> Span {
    let name = header.name.as_ptr() as usize - base;
    let value = header.value.as_ptr() as usize - base;
    (
        name as u32,
        (name + header.name.len()) as u32,
        value as u32,
        (value + header.value.len()) as u32,
    )
}

/// A message's header lines, in order, sharing the head's bytes. Names
/// and values were checked by `httparse` (tokens; no control bytes).
#[derive(Debug, Clone, Default)]
pub(crate) struct Headers {
    bytes: Bytes,
    spans: Vec<Span>,
}

impl Headers {
    /// The lines at `spans` in `bytes`.
    pub fn from_spans(bytes: Bytes, spans: Vec<Span>) -> Headers {
        Headers { bytes, spans }
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
            spans.push((name_start, value_start - 2, value_start, bytes.len() as u32));
            bytes.extend_from_slice(b"\r\n");
        }
        Headers {
            bytes: bytes.into(),
            spans,
        }
    }

    /// The lines whose bit is not set in `skip` as hyper's map (its side's
    /// responses); values share the head's bytes. Lines `httparse` took
    /// that `http` would not are left out.
    pub fn to_map(&self, skip: u128, capacity: usize) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.spans.len() + capacity);
        for (i, &(name_start, name_end, value_start, value_end)) in self.spans.iter().enumerate() {
            if skipped(skip, i) {
                continue;
            }
            let name = HeaderName::from_bytes(&self.bytes[name_start as usize..name_end as usize]);
            let value = HeaderValue::from_maybe_shared(
                self.bytes.slice(value_start as usize..value_end as usize),
            );
            if let (Ok(name), Ok(value)) = (name, value) {
                map.append(name, value);
            }
        }
        map
    }

    /// Each line's name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans.iter().map(|&(ns, ne, vs, ve)| {
            (
                &self.bytes[ns as usize..ne as usize],
                &self.bytes[vs as usize..ve as usize],
            )
        })
    }

    /// The values of the lines named `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        let name = name.as_str().as_bytes();
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value named `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        let name = name.as_str().as_bytes();
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The bytes the lines take written out, about.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    pub fn contains(&self, name: &HeaderName) -> bool {
        self.get(name).is_some()
    }

    /// The first value named `name`, sharing the head's bytes.
    pub fn value(&self, name: &HeaderName) -> Option<HeaderValue> {
        let value = self.get(name)?;
        HeaderValue::from_maybe_shared(self.bytes.slice_ref(value)).ok()
    }

    /// Writes the lines whose bit is not set in `skip`. Kept lines that
    /// lie one after the other in the head, each ending in CRLF right after
    /// its value, are copied as one run; others are written out anew.
    pub fn write(&self, out: &mut Vec<u8>, skip: u128) {
        let bytes = &self.bytes[..];
        // The run of kept lines not yet copied: where it starts and ends.
        let mut run: Option<(usize, usize)> = None;
        for (i, &(ns, ne, vs, ve)) in self.spans.iter().enumerate() {
            let (ns, ne, vs, ve) = (ns as usize, ne as usize, vs as usize, ve as usize);
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
                push_header(out, &bytes[ns..ne], &bytes[vs..ve]);
            }
        }
        if let Some((start, end)) = run {
            out.extend_from_slice(&bytes[start..end]);
        }
    }

    /// The bit of each line `drop` picks: a skip mask for [`Headers::write`].
    pub fn mask(&self, mut drop: impl FnMut(&[u8]) -> bool) -> u128 {
        self.mask_lines(|name, _| drop(name))
    }

    /// [`Headers::mask`], picking by name and value.
    pub fn mask_lines<'a>(&'a self, mut drop: impl FnMut(&'a [u8], &'a [u8]) -> bool) -> u128 {
        let mut mask = 0u128;
        for (i, (name, value)) in self.iter().enumerate().take(128) {
            if drop(name, value) {
                mask |= 1 << i;
            }
        }
        mask
    }
}

/// Line `i` is one `skip` leaves out. Heads hold at most 128 lines.
fn skipped(skip: u128, i: usize) -> bool {
    i < 128 && skip & (1 << i) != 0
}

/// `name: value` and the line's end.
pub(crate) fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The comma-separated tokens of every `name` line, trimmed, empty ones
/// left out (`Connection`, `Transfer-Encoding`).
pub(crate) fn tokens<'a>(
    headers: &'a Headers,
    name: &'a HeaderName,
) -> impl Iterator<Item = &'a [u8]> + 'a {
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
    fn lines_are_found_by_name_in_any_case_and_kept_as_they_came() {
        let h = parsed("Host: a.test\r\nX-A: 1\r\nx-a: 2\r\nConnection: x, Close\r\n\r\n");
        assert_eq!(h.iter().count(), 4);
        assert_eq!(h.get(&header::HOST), Some(&b"a.test"[..]));
        let x_a = HeaderName::from_static("x-a");
        assert_eq!(h.get_all(&x_a).collect::<Vec<_>>(), [b"1", b"2"]);
        assert_eq!(
            tokens(&h, &header::CONNECTION).collect::<Vec<_>>(),
            [&b"x"[..], b"Close"]
        );
        assert_eq!(h.value(&header::HOST).unwrap(), "a.test");
        let mut out = Vec::new();
        h.write(&mut out, h.mask(|n| n.eq_ignore_ascii_case(b"x-a")));
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
        assert_eq!(h.get_all(&header::COOKIE).count(), 2);
        assert_eq!(h.to_map(0, 0), map);
        let without_host = h.to_map(h.mask(|n| n == b"host"), 0);
        assert!(!without_host.contains_key(header::HOST));
        assert_eq!(without_host.len(), 2);
    }
}

//! HTTP plumbing shared by every handler: the JSON and multipart body
//! extractors with Cloud Controller's errors, list query parameters with
//! filters, ordering and pagination, and the request id header.

use crate::error::Limit;
use crate::error::{ApiError, ApiResult};
use axum::extract::multipart::MultipartError;
use axum::extract::{FromRequest, FromRequestParts, Multipart, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A JSON request body. Malformed JSON → 400 CF-MessageParseError; a shape
/// mismatch or unknown field → 422 CF-UnprocessableEntity.
pub struct CfJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for CfJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::cf(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    10004,
                    "CF-InvalidRequest",
                    "The request is invalid: the request body is too large",
                )
            } else {
                ApiError::parse_error()
            }
        })?;
        let value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(&bytes).map_err(|_| ApiError::parse_error())?
        };
        from_value(value).map(CfJson)
    }
}

/// Deserializes a parsed body with CF's 422 messages.
pub fn from_value<T: DeserializeOwned>(value: Value) -> ApiResult<T> {
    serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            let field = rest.split('`').next().unwrap_or_default();
            ApiError::unprocessable(format!("Unknown field(s): '{field}'"))
        } else {
            ApiError::unprocessable(msg)
        }
    })
}

/// A `multipart/form-data` body; anything else is a 400 in CF's envelope.
pub struct CfMultipart(pub Multipart);

impl<S: Send + Sync> FromRequest<S> for CfMultipart {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Multipart::from_request(req, state)
            .await
            .map(CfMultipart)
            .map_err(|e| {
                ApiError::cf(
                    StatusCode::BAD_REQUEST,
                    1003,
                    "CF-InvalidContentType",
                    format!(
                        "Invalid content type, expected: multipart/form-data ({})",
                        e.body_text()
                    ),
                )
            })
    }
}

/// Maps an error reading a multipart body: the body limit becomes the
/// endpoint's too-large error, anything else a 400.
pub fn multipart_error(limit: Limit) -> impl Fn(MultipartError) -> ApiError {
    move |e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            (limit.1)(limit.0)
        } else {
            ApiError::bad_request(format!("reading the multipart body: {}", e.body_text()))
        }
    }
}

/// Query parameters of a list endpoint.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub pairs: Vec<(String, String)>,
    pub page: usize,
    pub per_page: usize,
}

impl<S: Send + Sync> FromRequestParts<S> for ListParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let pairs = crate::util::parse_query(parts.uri.query().unwrap_or(""));
        ListParams::new(pairs)
    }
}

impl ListParams {
    pub fn new(pairs: Vec<(String, String)>) -> ApiResult<Self> {
        let number = |key: &str, default: usize, max: usize| -> ApiResult<usize> {
            match pairs.iter().rev().find(|(k, _)| k == key) {
                None => Ok(default),
                Some((_, v)) => match v.parse::<usize>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(n),
                    _ => Err(ApiError::bad_query(format!(
                        "{key} must be between 1 and {max}"
                    ))),
                },
            }
        };
        let page = number("page", 1, usize::MAX)?;
        let per_page = number("per_page", 50, 5000)?;
        Ok(ListParams {
            pairs,
            page,
            per_page,
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A comma-separated filter's values, `None` when not given.
    pub fn list(&self, key: &str) -> Option<Vec<String>> {
        self.get(key).map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
    }
}

pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Orders (by `order_by`, `-` = descending, on the presented field) and
/// pages `resources` into CF's paginated list shape. `url` is the absolute
/// URL of the list without query.
pub fn paginate(url: &str, params: &ListParams, mut resources: Vec<Value>) -> Value {
    if let Some(order) = params.get("order_by") {
        let (field, descending) = match order.strip_prefix('-') {
            Some(f) => (f, true),
            None => (order.strip_prefix('+').unwrap_or(order), false),
        };
        // Resources come oldest first; ties keep that order ascending and
        // the reverse descending, so `order_by=-created_at&per_page=1`
        // finds the newest even within one second.
        if descending {
            resources.reverse();
            resources.sort_by(|a, b| compare(&b[field], &a[field]));
        } else {
            resources.sort_by(|a, b| compare(&a[field], &b[field]));
        }
    }
    let total = resources.len();
    let start = (params.page - 1)
        .saturating_mul(params.per_page.max(1))
        .min(total);
    let end = start.saturating_add(params.per_page.max(1)).min(total);
    let items: Vec<Value> = resources.drain(start..end).collect();
    page_json(url, params, total, items)
}

/// CF's paginated list shape for one page, `items`, of `total` resources
/// (paged already, in SQL or in memory).
pub fn page_json(url: &str, params: &ListParams, total: usize, items: Vec<Value>) -> Value {
    let per_page = params.per_page.max(1);
    let total_pages = total.div_ceil(per_page).max(1);
    let page = params.page;
    let others: String = params
        .pairs
        .iter()
        .filter(|(k, _)| k != "page" && k != "per_page")
        .map(|(k, v)| format!("&{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    let href = |p: usize| json!({"href": format!("{url}?page={p}&per_page={per_page}{others}")});
    json!({
        "pagination": {
            "total_results": total,
            "total_pages": total_pages,
            "first": href(1),
            "last": href(total_pages),
            "next": if page < total_pages { href(page + 1) } else { Value::Null },
            "previous": if page > 1 { href((page - 1).min(total_pages)) } else { Value::Null },
        },
        "resources": items,
    })
}

fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&y.as_f64().unwrap_or(0.0)),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Gives every response an `X-VCAP-Request-ID` (the caller's, else a new one).
pub async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-vcap-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(crate::util::new_guid);
    let mut response = next.run(req).await;
    if let Ok(value) = http::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-vcap-request-id", value);
    }
    response
}

/// Accepts an optional trailing slash on every path (the cf CLI sends some).
pub async fn strip_trailing_slash(mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let rebuilt = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        if let Ok(uri) = rebuilt.parse() {
            *req.uri_mut() = uri;
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::parse_query;

    fn params(query: &str) -> ListParams {
        ListParams::new(parse_query(query)).unwrap()
    }

    #[test]
    fn descending_order_puts_the_newest_of_equal_timestamps_first() {
        let rows: Vec<Value> = ["a", "b", "c"]
            .iter()
            .map(|g| json!({"guid": g, "created_at": "2026-01-02T03:04:05Z"}))
            .collect();
        let page = paginate(
            "http://h/v3/packages",
            &params("order_by=-created_at&per_page=1"),
            rows.clone(),
        );
        assert_eq!(page["resources"][0]["guid"], "c");
        let page = paginate("http://h/v3/packages", &params("order_by=created_at"), rows);
        let guids: Vec<_> = page["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["guid"].clone())
            .collect();
        assert_eq!(guids, ["a", "b", "c"]);
    }

    #[test]
    fn page_links_keep_filters_and_are_absolute() {
        let rows: Vec<Value> = (0..5).map(|i| json!({"guid": i})).collect();
        let page = paginate(
            "http://h/v3/apps",
            &params("names=a%2Cb&per_page=2&page=2"),
            rows,
        );
        let p = &page["pagination"];
        assert_eq!(p["total_results"], 5);
        assert_eq!(p["total_pages"], 3);
        assert_eq!(
            p["next"]["href"],
            "http://h/v3/apps?page=3&per_page=2&names=a,b"
        );
        assert_eq!(
            p["previous"]["href"],
            "http://h/v3/apps?page=1&per_page=2&names=a,b"
        );
        assert_eq!(
            p["last"]["href"],
            "http://h/v3/apps?page=3&per_page=2&names=a,b"
        );
        assert_eq!(page["resources"], json!([{"guid": 2}, {"guid": 3}]));
        assert!(ListParams::new(parse_query("per_page=5001")).is_err());
        assert!(ListParams::new(parse_query("page=0")).is_err());
    }
}

/// The longest a `Prefer: wait` request is held.
pub const MAX_PREFER_WAIT_SECS: u64 = 30;

/// `Prefer: wait=N` (RFC 7240): the client would rather get its answer
/// when the resource changes, within N seconds, than at once. Kiln's CLI
/// asks it of builds and process stats to see staging end and instances
/// start without sleeping between polls; other clients never send it and
/// are answered at once.
pub fn prefer_wait(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get_all(http::header::HeaderName::from_static("prefer"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .find_map(|p| p.trim().strip_prefix("wait=")?.trim().parse::<u64>().ok())
        .map(|n| n.min(MAX_PREFER_WAIT_SECS))
}

/// `Preference-Applied: wait=N`, telling the client the answer was held.
pub fn preference_applied(secs: u64) -> (http::HeaderName, http::HeaderValue) {
    (
        http::header::HeaderName::from_static("preference-applied"),
        http::HeaderValue::from_str(&format!("wait={secs}"))
            .unwrap_or(http::HeaderValue::from_static("wait")),
    )
}

#[cfg(test)]
mod prefer_tests {
    use super::*;

    #[test]
    fn prefer_wait_is_read_and_capped() {
        let mut h = http::HeaderMap::new();
        assert_eq!(prefer_wait(&h), None);
        h.insert("prefer", "respond-async, wait=5".parse().unwrap());
        assert_eq!(prefer_wait(&h), Some(5));
        h.insert("prefer", "wait=600".parse().unwrap());
        assert_eq!(prefer_wait(&h), Some(MAX_PREFER_WAIT_SECS));
        h.insert("prefer", "wait=soon".parse().unwrap());
        assert_eq!(prefer_wait(&h), None);
    }
}

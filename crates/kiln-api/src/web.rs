//! HTTP plumbing shared by every handler: the JSON body extractor with
//! Cloud Controller's parse/unknown-field errors, list query parameters with
//! filters, ordering and pagination, and the request id header.

use crate::error::{ApiError, ApiResult};
use axum::extract::{FromRequest, FromRequestParts, Request};
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
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::parse_error())?;
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
        let pairs = parse_query(parts.uri.query().unwrap_or(""));
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

    /// True when the filter is absent or names `value`.
    pub fn matches(&self, key: &str, value: &str) -> bool {
        self.list(key).is_none_or(|l| l.iter().any(|v| v == value))
    }

    /// Like `matches` for a value that may be absent.
    pub fn matches_opt(&self, key: &str, value: Option<&str>) -> bool {
        self.list(key)
            .is_none_or(|l| value.is_some_and(|v| l.iter().any(|x| x == v)))
    }
}

pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        resources.sort_by(|a, b| {
            let ord = compare(&a[field], &b[field]);
            if descending { ord.reverse() } else { ord }
        });
    }
    let total = resources.len();
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
    let start = (page - 1).saturating_mul(per_page).min(total);
    let end = start.saturating_add(per_page).min(total);
    let items: Vec<Value> = resources.drain(start..end).collect();
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

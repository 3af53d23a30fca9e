//! UAA's part: users with argon2 password hashes, the `/login` prompts, the
//! `/oauth/token` password and refresh grants issuing HS256 JWTs with UAA's
//! claim names and each user's scopes, the bearer-token check in front of
//! `/v3` and log reads (a token of an older token generation, or of a
//! deleted user, is revoked), and [`authorize`], which holds every
//! authenticated route to its rule in `permissions`.

use crate::context::{CurrentUser, Shared};
use crate::db::{self, User};
use crate::error::{ApiError, ApiResult};
use crate::permissions::{self, Need, Permissions, Target};
use crate::util;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;

pub const ACCESS_TOKEN_SECONDS: i64 = 1199;
pub const REFRESH_TOKEN_SECONDS: i64 = 30 * 24 * 3600;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    jti: String,
    sub: String,
    user_name: String,
    user_id: String,
    origin: String,
    email: String,
    exp: i64,
    iat: i64,
    scope: Vec<String>,
    client_id: String,
    cid: String,
    azp: String,
    grant_type: String,
    iss: String,
    zid: String,
    aud: Vec<String>,
    /// `access` or `refresh`: a refresh token is never accepted as access.
    kiln_token: String,
    /// The user's token generation when issued: a password change bumps
    /// it, revoking every token issued before.
    #[serde(default)]
    kiln_gen: i64,
}

fn scopes_of(user: &User) -> Vec<String> {
    user.scopes.split_whitespace().map(str::to_string).collect()
}

fn issue(ctx: &Shared, user: &User, grant_type: &str, kind: &str) -> ApiResult<(String, String)> {
    let now = util::unix_now();
    let lifetime = if kind == "access" {
        ACCESS_TOKEN_SECONDS
    } else {
        REFRESH_TOKEN_SECONDS
    };
    let jti = if kind == "access" {
        util::new_guid().replace('-', "")
    } else {
        format!("{}-r", util::new_guid().replace('-', ""))
    };
    let claims = Claims {
        jti: jti.clone(),
        sub: user.guid.clone(),
        user_name: user.username.clone(),
        user_id: user.guid.clone(),
        origin: "uaa".into(),
        email: user.email.clone(),
        exp: now + lifetime,
        iat: now,
        scope: scopes_of(user),
        client_id: "cf".into(),
        cid: "cf".into(),
        azp: "cf".into(),
        grant_type: grant_type.into(),
        iss: format!("{}/oauth/token", ctx.base),
        zid: "uaa".into(),
        aud: ["cloud_controller", "password", "cf", "uaa", "openid"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        kiln_token: kind.into(),
        kiln_gen: user.token_generation,
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&ctx.signing_key),
    )
    .map_err(|e| ApiError::Internal(format!("signing a token: {e}")))?;
    Ok((token, jti))
}

fn verify(ctx: &Shared, token: &str, kind: &str) -> Option<Claims> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&["cloud_controller"]);
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(&ctx.signing_key),
        &validation,
    )
    .ok()?;
    (data.claims.kiln_token == kind).then_some(data.claims)
}

fn bad_credentials() -> ApiError {
    ApiError::Uaa {
        status: StatusCode::UNAUTHORIZED,
        error: "unauthorized",
        description: "Bad credentials".into(),
    }
}

fn invalid_client() -> ApiError {
    ApiError::Uaa {
        status: StatusCode::UNAUTHORIZED,
        error: "invalid_client",
        description: "Bad client credentials".into(),
    }
}

/// The only client is UAA's `cf` with an empty secret, sent as HTTP Basic
/// (the cf CLI, the python client) or as form fields (a client configured
/// with no secret), or not at all.
fn check_client(headers: &HeaderMap, form: &HashMap<String, String>) -> ApiResult<()> {
    use base64::Engine;
    let basic = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, credentials) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(credentials)
        });
    let (id, secret) = match basic {
        Some(credentials) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(credentials.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(invalid_client)?;
            let (id, secret) = decoded.split_once(':').ok_or_else(invalid_client)?;
            (id.to_string(), secret.to_string())
        }
        None => (
            form.get("client_id")
                .cloned()
                .unwrap_or_else(|| "cf".into()),
            form.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    if id == "cf" && secret.is_empty() {
        Ok(())
    } else {
        Err(invalid_client())
    }
}

/// `POST /oauth/token` (form-encoded, like UAA).
pub async fn token(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> ApiResult<Response> {
    let form: HashMap<String, String> = util::parse_query(&String::from_utf8_lossy(&body))
        .into_iter()
        .collect();
    check_client(&headers, &form)?;
    let grant_type = form.get("grant_type").map(String::as_str).unwrap_or("");
    let user = match grant_type {
        "password" => {
            let username = form.get("username").map(String::as_str).unwrap_or("");
            let password = form.get("password").map(String::as_str).unwrap_or("");
            let user = db::where_eq::<User>(&ctx.pool, "username", username)
                .await?
                .into_iter()
                .next()
                .ok_or_else(bad_credentials)?;
            let hash = user.password_hash.clone();
            let password = password.to_string();
            let ok = tokio::task::spawn_blocking(move || util::verify_password(&password, &hash))
                .await
                .unwrap_or(false);
            if !ok {
                return Err(bad_credentials());
            }
            user
        }
        "refresh_token" => {
            let token = form.get("refresh_token").map(String::as_str).unwrap_or("");
            let claims = verify(&ctx, token, "refresh").ok_or_else(|| ApiError::Uaa {
                status: StatusCode::UNAUTHORIZED,
                error: "invalid_token",
                description: "Invalid refresh token".into(),
            })?;
            db::find::<User>(&ctx.pool, &claims.user_id)
                .await?
                .filter(|u| u.token_generation == claims.kiln_gen)
                .ok_or_else(|| ApiError::Uaa {
                    status: StatusCode::UNAUTHORIZED,
                    error: "invalid_token",
                    description: "Invalid refresh token".into(),
                })?
        }
        other => {
            return Err(ApiError::Uaa {
                status: StatusCode::BAD_REQUEST,
                error: "unsupported_grant_type",
                description: format!("Unsupported grant type: {other}"),
            });
        }
    };
    let (access, jti) = issue(&ctx, &user, grant_type, "access")?;
    let (refresh, _) = issue(&ctx, &user, grant_type, "refresh")?;
    Ok(Json(json!({
        "access_token": access,
        "token_type": "bearer",
        "refresh_token": refresh,
        "expires_in": ACCESS_TOKEN_SECONDS,
        "scope": user.scopes,
        "jti": jti,
    }))
    .into_response())
}

/// `GET /login`: the prompts the cf CLI asks for.
pub async fn login() -> Json<serde_json::Value> {
    Json(json!({
        "app": {"version": "77.0.0"},
        "prompts": {"username": ["text", "Email"], "password": ["password", "Password"]},
        "zone_name": "uaa",
    }))
}

fn bearer(headers: &HeaderMap) -> Option<Option<String>> {
    let value = headers.get(http::header::AUTHORIZATION)?;
    let value = value.to_str().ok().unwrap_or("").trim();
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            Some(token.trim().to_string())
        }
        _ => None,
    };
    Some(token)
}

/// Middleware: a valid access token, else 401 in CF's envelope.
pub async fn require_token(State(ctx): State<Shared>, mut req: Request, next: Next) -> Response {
    let claims = match bearer(req.headers()) {
        None => return ApiError::not_authenticated().into_response(),
        Some(None) => return ApiError::invalid_token().into_response(),
        Some(Some(token)) => match verify(&ctx, &token, "access") {
            Some(c) => c,
            None => return ApiError::invalid_token().into_response(),
        },
    };
    match db::find::<User>(&ctx.pool, &claims.user_id).await {
        Ok(Some(u)) if u.token_generation == claims.kiln_gen => {}
        Ok(_) => return ApiError::invalid_token().into_response(),
        Err(e) => return e.into_response(),
    }
    let user = CurrentUser {
        guid: claims.user_id,
        name: claims.user_name,
        email: claims.email,
        scopes: claims.scope,
    };
    req.extensions_mut().insert(user.clone());
    crate::context::REQUEST_USER
        .scope(user, next.run(req))
        .await
}

/// Middleware after [`require_token`]: the caller's [`Permissions`] into
/// the request, and the route's rule checked against them before the
/// handler runs (a route with no rule is for admins only).
pub async fn authorize(
    State(ctx): State<Shared>,
    matched: axum::extract::MatchedPath,
    req: Request,
    next: Next,
) -> Response {
    match authorized(&ctx, matched.as_str(), req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn authorized(ctx: &Shared, route: &str, req: Request) -> ApiResult<Request> {
    let user = req
        .extensions()
        .get::<CurrentUser>()
        .cloned()
        .ok_or_else(ApiError::not_authenticated)?;
    let perms = Permissions::of(ctx, &user).await?;
    let Some(policy) = permissions::policy(req.method().as_str(), route) else {
        permissions::check_global(&perms, Need::Admin)?;
        return Ok(with_perms(req, perms));
    };
    let req = match policy.target {
        Target::None => {
            permissions::check_global(&perms, policy.need)?;
            req
        }
        Target::Path(kind) => {
            let guid = first_param(route, req.uri().path()).unwrap_or_default();
            if let Some((org, space)) = permissions::owner(ctx, kind, &guid).await? {
                permissions::check(&perms, policy.need, kind, &org, space.as_deref())?;
            } else if !perms.is_admin() && route.starts_with("/api/v1/read/") {
                // Only an app's logs are read through here.
                return Err(ApiError::not_found(kind.resource()));
            }
            req
        }
        Target::Body(kind, pointer) => {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, 1024 * 1024)
                .await
                .map_err(|_| ApiError::parse_error())?;
            let guid = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.pointer(pointer)
                        .and_then(|g| g.as_str())
                        .map(str::to_string)
                });
            if let Some(guid) = guid
                && let Some((org, space)) = permissions::owner(ctx, kind, &guid).await?
            {
                // CC answers a create naming what the caller cannot see
                // with 422 (it cannot tell missing from hidden).
                match permissions::check(&perms, policy.need, kind, &org, space.as_deref()) {
                    Err(ApiError::Cf { code: 10010, .. }) => {
                        let what = kind.resource().to_lowercase();
                        return Err(ApiError::unprocessable(format!(
                            "Invalid {what}. Ensure that the {what} exists and you have access to it."
                        )));
                    }
                    other => other?,
                }
            }
            Request::from_parts(parts, axum::body::Body::from(bytes))
        }
    };
    Ok(with_perms(req, perms))
}

fn with_perms(mut req: Request, perms: Permissions) -> Request {
    req.extensions_mut().insert(perms);
    req
}

/// The value of a route template's first `{param}` in `path`.
fn first_param(route: &str, path: &str) -> Option<String> {
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(t, _)| t.starts_with('{'))
        .map(|(_, v)| v.to_string())
}

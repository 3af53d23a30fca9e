//! Sticky sessions, as Gorouter keeps them. When an app's response sets a
//! session cookie (`JSESSIONID`, or another name the operator configures),
//! the router adds a `__VCAP_ID__` cookie naming the instance. A later
//! request carrying both cookies goes to that instance while it is in the
//! route; otherwise to another, and the response pins the client to the
//! new one.

use http::header::HeaderValue;

pub(crate) const VCAP_ID: &str = "__VCAP_ID__";

/// The instance guid a request asks to stick to: its `__VCAP_ID__`, when
/// it also carries one of the session cookies (Gorouter ignores a lone
/// `__VCAP_ID__`).
pub(crate) fn requested_instance<'a>(
    cookies: impl Iterator<Item = &'a [u8]>,
    session_cookies: &[String],
) -> Option<String> {
    let mut vcap_id = None;
    let mut has_session = false;
    for value in cookies {
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        for pair in text.split(';') {
            let (name, value) = pair.trim().split_once('=').unwrap_or((pair.trim(), ""));
            if name == VCAP_ID {
                vcap_id = Some(value.trim_matches('"').to_string());
            } else if session_cookies.iter().any(|c| c == name) {
                has_session = true;
            }
        }
    }
    vcap_id.filter(|id| has_session && !id.is_empty())
}

/// The `Set-Cookie` value that pins the client to `instance_guid`, if this
/// response calls for one: it sets a session cookie, or the request asked
/// for another instance than the one that answered. `Secure`, `SameSite`,
/// `Partitioned`, `Expires` and a deleting `Max-Age` follow the session
/// cookie. None if the app set `__VCAP_ID__` itself.
pub(crate) fn pin_cookie<'a>(
    set_cookies: impl Iterator<Item = &'a [u8]>,
    requested: Option<&str>,
    instance_guid: &str,
    session_cookies: &[String],
) -> Option<HeaderValue> {
    let mut pin = requested.is_some_and(|r| r != instance_guid);
    let mut session: Option<SetCookie<'_>> = None;
    for value in set_cookies {
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        let cookie = SetCookie::parse(text);
        if cookie.name == VCAP_ID {
            return None;
        }
        if session.is_none() && session_cookies.iter().any(|c| c == cookie.name) {
            pin = true;
            session = Some(cookie);
        }
    }
    if !pin {
        return None;
    }
    let mut text = format!("{VCAP_ID}={instance_guid}; Path=/");
    if let Some(s) = &session {
        if let Some(expires) = s.expires {
            text.push_str("; Expires=");
            text.push_str(expires);
        }
        if s.deleting {
            text.push_str("; Max-Age=0");
        }
    }
    text.push_str("; HttpOnly");
    if let Some(s) = &session {
        if s.secure {
            text.push_str("; Secure");
        }
        if let Some(same_site) = s.same_site {
            text.push_str("; SameSite=");
            text.push_str(same_site);
        }
        if s.partitioned {
            text.push_str("; Partitioned");
        }
    }
    HeaderValue::from_str(&text).ok()
}

/// The parts of a `Set-Cookie` the pin copies.
#[derive(Debug, Default, PartialEq, Eq)]
struct SetCookie<'a> {
    name: &'a str,
    secure: bool,
    /// `Lax`, `Strict` or `None`, normalized.
    same_site: Option<&'static str>,
    expires: Option<&'a str>,
    /// `Max-Age` zero or negative: the cookie is being removed.
    deleting: bool,
    partitioned: bool,
}

impl<'a> SetCookie<'a> {
    fn parse(text: &'a str) -> SetCookie<'a> {
        let mut parts = text.split(';');
        let name = parts
            .next()
            .and_then(|pair| pair.split_once('='))
            .map_or("", |(name, _)| name.trim());
        let mut cookie = SetCookie {
            name,
            ..SetCookie::default()
        };
        for attribute in parts {
            let (key, value) = attribute
                .trim()
                .split_once('=')
                .unwrap_or((attribute.trim(), ""));
            let value = value.trim();
            match key.to_ascii_lowercase().as_str() {
                "secure" => cookie.secure = true,
                "partitioned" => cookie.partitioned = true,
                "expires" if !value.is_empty() => cookie.expires = Some(value),
                "max-age" => cookie.deleting = value.parse::<i64>().is_ok_and(|s| s <= 0),
                "samesite" => {
                    cookie.same_site = match value.to_ascii_lowercase().as_str() {
                        "lax" => Some("Lax"),
                        "strict" => Some("Strict"),
                        "none" => Some("None"),
                        _ => None,
                    }
                }
                _ => {}
            }
        }
        cookie
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use http::header::{COOKIE, SET_COOKIE};

    fn cookies(map: &HeaderMap) -> impl Iterator<Item = &[u8]> {
        map.get_all(COOKIE).iter().map(|v| v.as_bytes())
    }

    fn set_cookies(map: &HeaderMap) -> impl Iterator<Item = &[u8]> {
        map.get_all(SET_COOKIE).iter().map(|v| v.as_bytes())
    }

    fn names() -> Vec<String> {
        vec!["JSESSIONID".to_string()]
    }

    fn headers(name: http::HeaderName, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn a_request_sticks_only_with_a_session_cookie() {
        let both = headers(COOKIE, &["a=1; JSESSIONID=s; __VCAP_ID__=ig-1"]);
        assert_eq!(
            requested_instance(cookies(&both), &names()).as_deref(),
            Some("ig-1")
        );
        let split = headers(COOKIE, &["__VCAP_ID__=ig-2", "JSESSIONID=s"]);
        assert_eq!(
            requested_instance(cookies(&split), &names()).as_deref(),
            Some("ig-2")
        );
        let lone = headers(COOKIE, &["__VCAP_ID__=ig-1"]);
        assert_eq!(requested_instance(cookies(&lone), &names()), None);
        assert_eq!(
            requested_instance(cookies(&HeaderMap::new()), &names()),
            None
        );
    }

    #[test]
    fn the_pin_follows_the_session_cookies_attributes() {
        let set = headers(
            SET_COOKIE,
            &[
                "other=x; Secure",
                "JSESSIONID=s; Path=/app; Secure; SameSite=none; Partitioned; Expires=Wed, 21 Oct 2037 07:28:00 GMT",
            ],
        );
        assert_eq!(
            pin_cookie(set_cookies(&set), None, "ig-1", &names()).unwrap(),
            "__VCAP_ID__=ig-1; Path=/; Expires=Wed, 21 Oct 2037 07:28:00 GMT; HttpOnly; Secure; SameSite=None; Partitioned"
        );
        let deleted = headers(SET_COOKIE, &["JSESSIONID=; Max-Age=0"]);
        assert_eq!(
            pin_cookie(set_cookies(&deleted), None, "ig-1", &names()).unwrap(),
            "__VCAP_ID__=ig-1; Path=/; Max-Age=0; HttpOnly"
        );
    }

    #[test]
    fn a_pin_is_added_only_when_needed() {
        let none = HeaderMap::new();
        assert_eq!(pin_cookie(set_cookies(&none), None, "ig-1", &names()), None);
        assert_eq!(
            pin_cookie(set_cookies(&none), Some("ig-1"), "ig-1", &names()),
            None,
            "already pinned there"
        );
        assert_eq!(
            pin_cookie(set_cookies(&none), Some("gone"), "ig-1", &names()).unwrap(),
            "__VCAP_ID__=ig-1; Path=/; HttpOnly",
            "re-pinned after the instance went away"
        );
        let own = headers(SET_COOKIE, &["JSESSIONID=s", "__VCAP_ID__=mine"]);
        assert_eq!(
            pin_cookie(set_cookies(&own), None, "ig-1", &names()),
            None,
            "the app's own pin wins"
        );
    }
}

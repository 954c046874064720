//! Which requests the worker captures: the `captureRoutes` of the config, and matching a
//! request URL against them. Pure, so the rules are tested natively.
//!
//! A route is one of:
//! - a path pattern, `"/api/sync/*"`: requests to the page's own origin or the sync server's;
//! - a full URL pattern, `"http://localhost:3000/api/sync/*"`: requests to that origin;
//! - `{ "origin": "http://localhost:3000", "path": "/api/sync/*" }`: the same, spelled out.
//!
//! `*` matches any run of characters (slashes included). Matching looks at the path only: a
//! query string never keeps a request from matching, and one trailing slash is ignored on both
//! sides (`/api/sync/chat/` matches `/api/sync/chat`). Origins compare as browsers print them
//! (scheme and host lower-cased, default ports dropped).

use serde::{Deserialize, Serialize};

/// One entry of `captureRoutes`: a JSON string, or `{ "origin", "path" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CaptureRoute {
    /// A path pattern, or a full URL pattern (`http(s)://host[:port]/path`).
    Pattern(String),
    /// `{ origin?, path, secretHeaders? }`: a path pattern, for `origin` (absent: the page's or
    /// the sync server's), with the headers besides [`CREDENTIAL_HEADERS`] that are secrets.
    At {
        #[serde(skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
        path: String,
        #[serde(rename = "secretHeaders", skip_serializing_if = "Vec::is_empty")]
        secret_headers: Vec<String>,
    },
}

/// Headers of a captured call that are credentials: kept in the outbox to replay the call, and
/// never written into an export, a backup or a dead-letter copy (named in `redacted` there).
pub const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// Read through a `serde_json::Value` rather than `#[serde(untagged)]`: the untagged
/// deserializer buffers any input and is a large share of a wasm module that has `Value`
/// anyway.
impl<'de> Deserialize<'de> for CaptureRoute {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Self::Pattern(s)),
            serde_json::Value::Object(map) => {
                const KNOWN: [&str; 3] = ["origin", "path", "secretHeaders"];
                if let Some(extra) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
                    return Err(D::Error::custom(format!(
                        "unknown field {extra:?} in a capture route (known: origin, path, secretHeaders)"
                    )));
                }
                let string = |name: &str| match map.get(name) {
                    None => Ok(None),
                    Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(D::Error::custom(format!(
                        "a capture route's {name:?} must be a string"
                    ))),
                };
                let path = string("path")?
                    .ok_or_else(|| D::Error::custom("a capture route needs a string \"path\""))?;
                let secret_headers = match map.get("secretHeaders") {
                    None => Vec::new(),
                    Some(serde_json::Value::Array(names)) => names
                        .iter()
                        .map(|n| {
                            n.as_str()
                                .filter(|n| is_header_name(n))
                                .map(str::to_ascii_lowercase)
                                .ok_or_else(|| {
                                    D::Error::custom(format!(
                                        "secretHeaders holds header names (got {n})"
                                    ))
                                })
                        })
                        .collect::<Result<_, _>>()?,
                    Some(_) => {
                        return Err(D::Error::custom(
                            "a capture route's secretHeaders is a list of header names",
                        ))
                    }
                };
                Ok(Self::At {
                    origin: string("origin")?,
                    path,
                    secret_headers,
                })
            }
            _ => Err(D::Error::custom(
                "a capture route is a string or { origin?, path, secretHeaders? }",
            )),
        }
    }
}

impl From<&str> for CaptureRoute {
    fn from(s: &str) -> Self {
        Self::Pattern(s.to_owned())
    }
}

/// A route split into the origin it is for (`None`: the page's or the sync server's) and its
/// path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteParts {
    pub origin: Option<String>,
    pub path: String,
}

impl CaptureRoute {
    /// The route's origin and path pattern, or why it is not a valid route.
    pub fn parts(&self) -> Result<RouteParts, String> {
        match self {
            Self::Pattern(p) if p.starts_with('/') => Ok(RouteParts {
                origin: None,
                path: p.clone(),
            }),
            Self::Pattern(p) => {
                let (origin, path) = split_url(p).ok_or_else(|| {
                    format!(
                        "capture route {p:?} must be a path starting with / or an http(s) URL (e.g. \"http://localhost:3000/api/sync/*\")"
                    )
                })?;
                Ok(RouteParts {
                    origin: Some(origin),
                    path,
                })
            }
            Self::At {
                origin: None, path, ..
            } => {
                if !path.starts_with('/') {
                    return Err(format!("capture route path {path:?} must start with /"));
                }
                Ok(RouteParts {
                    origin: None,
                    path: path.clone(),
                })
            }
            Self::At {
                origin: Some(origin),
                path,
                ..
            } => {
                let (o, rest) = split_url(origin).ok_or_else(|| {
                    format!("capture route origin {origin:?} must be an http(s) origin such as \"http://localhost:3000\"")
                })?;
                if rest != "/" {
                    return Err(format!(
                        "capture route origin {origin:?} must not have a path (put it in \"path\")"
                    ));
                }
                if !path.starts_with('/') {
                    return Err(format!("capture route path {path:?} must start with /"));
                }
                Ok(RouteParts {
                    origin: Some(o),
                    path: path.clone(),
                })
            }
        }
    }

    /// The headers of a call this route captures that are secrets: [`CREDENTIAL_HEADERS`] and
    /// the route's `secretHeaders`, lower-cased.
    pub fn secret_headers(&self) -> Vec<String> {
        let mut names: Vec<String> = CREDENTIAL_HEADERS.iter().map(|h| (*h).to_owned()).collect();
        if let Self::At { secret_headers, .. } = self {
            for h in secret_headers {
                if !names.contains(h) {
                    names.push(h.clone());
                }
            }
        }
        names
    }
}

/// An HTTP header name (RFC 9110 token characters).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An HTTP header value a `Headers` object takes (no CR, LF or NUL).
pub fn is_header_value(value: &str) -> bool {
    !value.contains(['\r', '\n', '\0'])
}

/// The secret headers of a call to `url`: those of the route that captures it, or
/// [`CREDENTIAL_HEADERS`] when no route does (any more).
pub fn secret_headers_for(
    routes: &[CaptureRoute],
    url: &str,
    own_origin: &str,
    server_origin: Option<&str>,
) -> Vec<String> {
    match matching_route(routes, url, own_origin, server_origin) {
        Some(i) => routes[i].secret_headers(),
        None => CaptureRoute::Pattern(String::new()).secret_headers(),
    }
}

/// Take the `secret` headers (lower-case names) out of `headers`; returns the names taken,
/// lower-cased, once each, in order.
pub fn redact(headers: &mut Vec<(String, String)>, secret: &[String]) -> Vec<String> {
    let mut taken: Vec<String> = Vec::new();
    headers.retain(|(name, _)| {
        let lower = name.to_ascii_lowercase();
        if secret.contains(&lower) {
            if !taken.contains(&lower) {
                taken.push(lower);
            }
            false
        } else {
            true
        }
    });
    taken
}

/// [`redact`] on an outbox record kept as JSON (a dead letter's copy): its `headers`, a list of
/// `[name, value]` pairs. Returns the names taken.
pub fn redact_record(record: &mut serde_json::Value, secret: &[String]) -> Vec<String> {
    let Some(list) = record
        .get_mut("headers")
        .and_then(serde_json::Value::as_array_mut)
    else {
        return Vec::new();
    };
    let mut taken: Vec<String> = Vec::new();
    list.retain(|pair| {
        let name = pair
            .get(0)
            .and_then(serde_json::Value::as_str)
            .map(str::to_ascii_lowercase);
        match name {
            Some(lower) if secret.contains(&lower) => {
                if !taken.contains(&lower) {
                    taken.push(lower);
                }
                false
            }
            _ => true,
        }
    });
    taken
}

/// `http(s)://host[:port]<path>` → (normalized origin, path or `/`). `None` when not such a
/// URL.
pub fn split_url(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = rest[..end].to_ascii_lowercase();
    if host.is_empty() || host.contains(['@', ' ']) || host.chars().any(char::is_control) {
        return None;
    }
    let default_port = if scheme == "http" { ":80" } else { ":443" };
    let host = host.strip_suffix(default_port).unwrap_or(&host);
    let after = &rest[end..];
    let path = after.split(['?', '#']).next().unwrap_or("");
    let path = if path.is_empty() { "/" } else { path };
    Some((format!("{scheme}://{host}"), path.to_owned()))
}

/// Whether a URL path matches a pattern (`*` matches any run of characters; one trailing
/// slash ignored on both sides).
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let trim = |s: &str| -> String {
        if s.len() > 1 {
            s.strip_suffix('/').unwrap_or(s).to_owned()
        } else {
            s.to_owned()
        }
    };
    let (pattern, path) = (trim(pattern), trim(path));
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == path;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !path.starts_with(first) || path.len() < first.len() + last.len() || !path.ends_with(last) {
        return false;
    }
    let mut rest = &path[first.len()..path.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The index of the first route that captures `url`, or `None`. `own_origin` is the worker's
/// (the page's) origin, `server_origin` the sync server's (if any): path-only routes apply to
/// those two.
pub fn matching_route(
    routes: &[CaptureRoute],
    url: &str,
    own_origin: &str,
    server_origin: Option<&str>,
) -> Option<usize> {
    let (origin, path) = split_url(url)?;
    routes.iter().position(|r| {
        let Ok(parts) = r.parts() else { return false };
        let origin_ok = match &parts.origin {
            Some(o) => *o == origin,
            None => origin == own_origin || server_origin == Some(origin.as_str()),
        };
        origin_ok && path_matches(&parts.path, &path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(list: &[&str]) -> Vec<CaptureRoute> {
        list.iter().map(|s| CaptureRoute::from(*s)).collect()
    }

    const OWN: &str = "http://localhost:5173";

    #[test]
    fn a_path_route_captures_the_pages_origin_and_the_sync_servers_only() {
        let r = routes(&["/api/sync/*"]);
        let server = Some("http://127.0.0.1:8787");
        assert_eq!(
            matching_route(&r, "http://localhost:5173/api/sync/chat", OWN, server),
            Some(0)
        );
        assert_eq!(
            matching_route(&r, "http://127.0.0.1:8787/api/sync/chat", OWN, server),
            Some(0)
        );
        assert_eq!(
            matching_route(&r, "http://evil.example/api/sync/chat", OWN, server),
            None
        );
    }

    #[test]
    fn a_full_url_or_an_origin_and_path_route_captures_another_api_origin() {
        let r = vec![
            CaptureRoute::from("http://localhost:3000/api/sync/chat"),
            CaptureRoute::At {
                origin: Some("HTTP://LocalHost:3000".into()),
                path: "/api/sync/settings".into(),
                secret_headers: Vec::new(),
            },
        ];
        assert_eq!(
            matching_route(&r, "http://localhost:3000/api/sync/chat", OWN, None),
            Some(0)
        );
        assert_eq!(
            matching_route(&r, "http://localhost:3000/api/sync/settings", OWN, None),
            Some(1)
        );
        assert_eq!(
            matching_route(&r, "http://localhost:5173/api/sync/chat", OWN, None),
            None
        );
        assert_eq!(
            matching_route(&r, "http://localhost:3001/api/sync/chat", OWN, None),
            None
        );
    }

    #[test]
    fn trailing_slashes_query_strings_and_default_ports_match_as_a_user_expects() {
        let r = routes(&["http://example.com:80/api/sync/chat/"]);
        for url in [
            "http://example.com/api/sync/chat",
            "http://example.com/api/sync/chat/",
            "http://example.com/api/sync/chat?x=1",
            "http://example.com/api/sync/chat/#frag",
        ] {
            assert_eq!(matching_route(&r, url, OWN, None), Some(0), "{url}");
        }
        assert_eq!(
            matching_route(&r, "http://example.com/api/sync/chats", OWN, None),
            None
        );
        assert!(path_matches("/api/*/x", "/api/a/b/x"));
        assert!(path_matches("/", "/"));
    }

    #[test]
    fn invalid_routes_say_what_is_wrong() {
        for bad in ["api/*", "*", "ftp://x/a", "http:///a"] {
            assert!(CaptureRoute::from(bad).parts().is_err(), "{bad}");
        }
        let with_path = CaptureRoute::At {
            origin: Some("http://x:3000/api".into()),
            path: "/a".into(),
            secret_headers: Vec::new(),
        };
        assert!(with_path
            .parts()
            .unwrap_err()
            .contains("must not have a path"));
        let relative = CaptureRoute::At {
            origin: Some("http://x:3000".into()),
            path: "a".into(),
            secret_headers: Vec::new(),
        };
        assert!(relative.parts().is_err());
    }

    #[test]
    fn routes_read_from_json_strings_or_objects() {
        let r: Vec<CaptureRoute> = serde_json::from_str(
            r#"["/a/*", "http://h:1/b", {"origin": "http://h:1", "path": "/c"}]"#,
        )
        .unwrap();
        assert_eq!(r.len(), 3);
        assert!(matches!(r[2], CaptureRoute::At { .. }));
        for bad in [
            r#"[5]"#,
            r#"[{"origin": "http://h"}]"#,
            r#"[{"origin": "http://h", "path": "/a", "x": 1}]"#,
        ] {
            assert!(
                serde_json::from_str::<Vec<CaptureRoute>>(bad).is_err(),
                "{bad}"
            );
        }
        let back = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Vec<CaptureRoute>>(&back).unwrap(), r);
    }

    #[test]
    fn credentials_and_a_routes_secret_headers_are_taken_out_and_named() {
        let routes: Vec<CaptureRoute> = serde_json::from_str(
            r#"[{"path": "/api/*", "secretHeaders": ["X-Api-Key"]}, "/other/*"]"#,
        )
        .unwrap();
        let secret = secret_headers_for(&routes, "http://localhost:5173/api/chat", OWN, None);
        let mut headers = vec![
            ("Authorization".to_string(), "Bearer s3cret".to_string()),
            ("content-type".to_string(), "application/json".to_string()),
            ("x-api-key".to_string(), "k".to_string()),
            ("Cookie".to_string(), "sid=1".to_string()),
        ];
        let taken = redact(&mut headers, &secret);
        assert_eq!(taken, ["authorization", "x-api-key", "cookie"]);
        assert_eq!(
            headers,
            [("content-type".to_string(), "application/json".to_string())]
        );
        // Another route keeps only the credential headers secret.
        let other = secret_headers_for(&routes, "http://localhost:5173/other/a", OWN, None);
        assert_eq!(other, CREDENTIAL_HEADERS);
    }

    #[test]
    fn a_dead_letters_stored_record_loses_its_credentials_too() {
        let mut record = serde_json::json!({
            "kind": "request",
            "headers": [["authorization", "Bearer s3cret"], ["accept", "*/*"]],
        });
        let taken = redact_record(&mut record, &CaptureRoute::from("/a").secret_headers());
        assert_eq!(taken, ["authorization"]);
        assert_eq!(record["headers"], serde_json::json!([["accept", "*/*"]]));
        assert!(!record.to_string().contains("s3cret"));
    }

    #[test]
    fn secret_headers_must_be_header_names() {
        for bad in [
            r#"[{"path": "/a", "secretHeaders": "x-key"}]"#,
            r#"[{"path": "/a", "secretHeaders": ["bad name"]}]"#,
            r#"[{"path": "/a", "secretHeaders": [1]}]"#,
            r#"[{"secretHeaders": ["x"]}]"#,
        ] {
            assert!(
                serde_json::from_str::<Vec<CaptureRoute>>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn capture_patterns_match_paths_with_stars() {
        assert!(path_matches("/api/sync/chat", "/api/sync/chat"));
        assert!(!path_matches("/api/sync/chat", "/api/sync/chats"));
        assert!(path_matches("/api/sync/*", "/api/sync/settings"));
        assert!(path_matches("/api/*/chat", "/api/v2/sync/chat"));
        assert!(!path_matches("/api/*/chat", "/api/chat"));
        assert!(path_matches("*", "/anything"));
        assert!(!path_matches("/a*b*c", "/ac"));
    }
}

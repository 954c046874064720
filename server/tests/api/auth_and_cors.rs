//! Bearer auth and CORS.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn with_a_token_api_routes_need_it_and_health_stays_open() {
    let s = TestServer::start("auth", |o| o.token = Some("s3cret-token".into())).await;
    let body = json!({"client_id": "c1", "mutations": [put("c1", 1, "a", json!(1), T0)]});

    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cret-toke"),
        Some("Basic s3cret-token"),
    ] {
        let mut req = s.http.post(s.at("/api/sync/push")).json(&body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(code(&err), "unauthorized");
        assert!(
            !err.to_string().contains("s3cret"),
            "the token is never echoed"
        );
    }
    for path in [
        "/api/sync/pull",
        "/api/export",
        "/api/backups",
        "/api/test/stats",
        "/api/nope",
    ] {
        let resp = s.http.get(s.at(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }

    let resp = s
        .http
        .post(s.at("/api/sync/push"))
        .bearer_auth("s3cret-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = s
        .http
        .get(s.at("/api/sync/pull"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let (status, health) = s.get_json("/api/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    s.stop().await;
}

/// A JSON text body with its content type.
fn json_body(req: reqwest::RequestBuilder, text: &str) -> reqwest::RequestBuilder {
    req.header("content-type", "application/json")
        .body(text.to_owned())
}

#[tokio::test]
async fn with_a_token_uploading_listing_fetching_and_restoring_backups_need_it() {
    let s = TestServer::start("auth-backups", |o| o.token = Some("s3cret-token".into())).await;
    let text = json_of(&client_snapshot(
        "client-a",
        T0,
        vec![snap_entity("k", json!(1), false)],
        0,
    ));
    let requests = |token: Option<&str>| {
        let with = |req: reqwest::RequestBuilder| match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        vec![
            with(json_body(s.http.post(s.at("/api/backups")), &text)),
            with(s.http.get(s.at("/api/backups"))),
            with(s.http.get(s.at(&format!("/api/backups/{NO_SUCH_BACKUP}")))),
            with(json_body(
                s.http.post(s.at("/api/restore?dry_run=true")),
                &text,
            )),
            with(json_body(
                s.http.post(s.at("/api/restore?dry_run=false")),
                &text,
            )),
        ]
    };
    for token in [None, Some("wrong")] {
        for req in requests(token) {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{token:?}");
            let err: Value = resp.json().await.unwrap();
            assert_eq!(code(&err), "unauthorized");
        }
    }
    let (_, feed) = {
        let resp = s
            .http
            .get(s.at("/api/sync/pull"))
            .bearer_auth("s3cret-token")
            .send()
            .await
            .unwrap();
        (resp.status(), resp.json::<Value>().await.unwrap())
    };
    assert_eq!(
        feed["changes"],
        json!([]),
        "refused requests changed nothing"
    );

    let statuses: Vec<StatusCode> = {
        let mut out = Vec::new();
        for req in requests(Some("s3cret-token")) {
            out.push(req.send().await.unwrap().status());
        }
        out
    };
    assert_eq!(
        statuses,
        vec![
            StatusCode::CREATED,
            StatusCode::OK,
            StatusCode::NOT_FOUND, // ids are unguessable: this one names no backup
            StatusCode::OK,
            StatusCode::OK
        ]
    );
    let authed = s.as_user("s3cret-token");
    let stored = authed.backups("").await;
    let (status, _) = authed
        .get_json(&format!("/api/backups/{}", id_of(&stored[0])))
        .await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}

async fn preflight(s: &TestServer, origin: &str) -> reqwest::Response {
    s.http
        .request(reqwest::Method::OPTIONS, s.at("/api/sync/push"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,authorization,idempotency-key",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_gets_cors_headers_and_another_origin_does_not() {
    let s = TestServer::start("cors", |o| {
        o.allow_origins = vec!["http://127.0.0.1:8080".into()];
        o.token = Some("tok".into());
    })
    .await;
    let resp = preflight(&s, "http://127.0.0.1:8080").await;
    assert!(
        resp.status().is_success(),
        "a preflight needs no token: {}",
        resp.status()
    );
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "http://127.0.0.1:8080");
    let methods = h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_ascii_uppercase();
    // PUT with Content-Range: a blob chunk from a page on another origin.
    for m in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "content-type",
        "authorization",
        "idempotency-key",
        "content-range",
    ] {
        assert!(headers.contains(name), "{headers}");
    }

    let resp = preflight(&s, "http://evil.example").await;
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    // Actual requests (and their errors) carry the headers, and expose Retry-After.
    let resp = s
        .http
        .get(s.at("/api/sync/pull"))
        .header("origin", "http://127.0.0.1:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://127.0.0.1:8080"
    );
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("retry-after"), "{exposed}");
    s.stop().await;
}

#[tokio::test]
async fn allow_origin_star_mirrors_any_origin() {
    let s = TestServer::start("cors-star", |o| o.allow_origins = vec!["*".into()]).await;
    let resp = preflight(&s, "http://localhost:41234").await;
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://localhost:41234"
    );
    s.stop().await;
}

#[tokio::test]
async fn without_allowed_origins_no_cors_headers_are_sent() {
    let s = TestServer::default("cors-none").await;
    let resp = s
        .http
        .get(s.at("/api/health"))
        .header("origin", "http://a.example")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    s.stop().await;
}

//! No CSRF, no DNS rebinding: the content type, `Origin` and `Host` a request must carry,
//! and the refusal to listen beyond loopback without auth.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

/// The stored `notes/k` value, from the feed.
async fn value_of_k(s: &TestServer) -> Value {
    let (changes, _) = s.pull_all("").await;
    changes
        .iter()
        .find(|c| c["key"] == "k")
        .map(|c| c["value"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_cross_site_form_post_to_restore_is_refused_and_changes_nothing() {
    let s = TestServer::default("csrf-restore").await;
    s.push_ok("c1", vec![put("c1", 1, "k", json!("mine"), T0)])
        .await;
    let forged = json_of(&client_snapshot(
        "attacker",
        T0,
        vec![snap_entity("k", json!("forged"), false)],
        0,
    ));
    for (origin, content_type) in [
        (Some("http://evil.example"), "text/plain"),
        (None, "text/plain"),
        (None, "application/x-www-form-urlencoded"),
        (None, "multipart/form-data; boundary=x"),
        (Some("http://evil.example"), "application/json"),
    ] {
        let mut req = s
            .http
            .post(s.at("/api/restore?dry_run=false"))
            .header("content-type", content_type)
            .body(forged.clone());
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        let expected = if origin.is_some() {
            (StatusCode::FORBIDDEN, "forbidden_origin")
        } else {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        };
        assert_eq!((status, code(&body)), expected, "{origin:?} {content_type}");
    }
    assert_eq!(value_of_k(&s).await, json!("mine"), "nothing was restored");
    s.stop().await;
}

#[tokio::test]
async fn a_push_from_a_foreign_origin_is_refused_and_changes_nothing() {
    let s = TestServer::default("foreign-origin-push").await;
    s.push_ok("c1", vec![put("c1", 1, "k", json!("mine"), T0)])
        .await;
    let resp = s
        .http
        .post(s.at("/api/sync/push"))
        .header("origin", "http://evil.example")
        .json(&json!({"client_id": "evil", "mutations": [put("evil", 1, "k", json!("theirs"), T0 + 1000)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(code(&resp.json().await.unwrap()), "forbidden_origin");
    assert_eq!(value_of_k(&s).await, json!("mine"));
    assert!(s.mutations_of("evil").await.is_empty(), "not even recorded");
    s.stop().await;
}

#[tokio::test]
async fn the_servers_own_origin_and_an_allowed_origin_may_push() {
    let s = TestServer::start("own-origin", |o| {
        o.allow_origins = vec!["http://localhost:5173".into()];
    })
    .await;
    for (seq, origin) in [(1, s.url.clone()), (2, "http://localhost:5173".to_owned())] {
        let resp = s
            .http
            .post(s.at("/api/sync/push"))
            .header("origin", origin.as_str())
            .json(&json!({"client_id": "c1", "mutations": [put("c1", seq, "k", json!(seq), T0 + seq as i64)]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{origin}");
    }
    assert_eq!(value_of_k(&s).await, json!(2));
    s.stop().await;
}

#[tokio::test]
async fn without_auth_a_request_to_a_foreign_host_name_is_refused() {
    let s = TestServer::default("foreign-host").await;
    s.push_ok("c1", vec![put("c1", 1, "k", json!("secret"), T0)])
        .await;
    let port = s.server.as_ref().unwrap().addr().port();
    for path in ["/api/export", "/api/sync/pull", "/api/backups"] {
        let resp = s
            .http
            .get(s.at(path))
            .header("host", format!("rebind.evil.example:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("forbidden_host"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
    let resp = s
        .http
        .get(s.at("/api/export"))
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "localhost is loopback");
    s.stop().await;

    let allowed = TestServer::start("allowed-host", |o| {
        o.allow_hosts = vec!["sync.lan".into()];
    })
    .await;
    let resp = allowed
        .http
        .get(allowed.at("/api/export"))
        .header("host", "sync.lan:8787")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "an --allow-host name");
    allowed.stop().await;
}

#[tokio::test]
async fn with_a_token_the_host_is_not_checked() {
    let s = TestServer::start("host-with-auth", |o| o.token = Some("tok".into())).await;
    let resp = s
        .http
        .get(s.at("/api/sync/pull"))
        .header("host", "sync.example.com")
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn a_non_loopback_listen_address_without_auth_is_refused_at_start() {
    let dir = TempDir::new("listen-any");
    let opts = rangersync_server::ServerOptions {
        listen: "0.0.0.0:0".parse().unwrap(),
        db: fresh_db(&dir).await,
        www: None,
        ..rangersync_server::ServerOptions::default()
    };
    let err = rangersync_server::start(opts.clone())
        .await
        .expect_err("no auth on 0.0.0.0");
    let text = err.to_string();
    assert!(text.contains("without auth"), "{text}");
    assert!(text.contains("--insecure-no-auth"), "{text}");

    for tweak in [
        (|o: &mut rangersync_server::ServerOptions| o.insecure_no_auth = true)
            as fn(&mut rangersync_server::ServerOptions),
        |o| o.token = Some("tok".into()),
    ] {
        let mut opts = opts.clone();
        tweak(&mut opts);
        let server = rangersync_server::start(opts).await.expect("starts");
        server.stop().await;
    }
}

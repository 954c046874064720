//! Who is calling: users from a tokens file (re-read on SIGHUP) and from JWTs (HS256 and
//! EdDSA), `--token` as the one admin user, and the refusals.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

/// The status and error code (if any) of a pull with this bearer token.
async fn pull_as(s: &TestServer, token: &str) -> (StatusCode, Option<String>) {
    let (status, body) = s.as_user(token).get_json("/api/sync/pull").await;
    (status, body["error"]["code"].as_str().map(str::to_owned))
}

/// base64url without padding.
fn b64url(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn users_from_a_tokens_file_and_from_jwts_are_let_in_and_others_get_401() {
    let s = TestServer::with_users("users-in", |_| {}).await;
    for token in [
        "alice-token-0123456789".to_owned(),
        "root-token-0123456789".to_owned(),
        hs256_jwt(&user_claims("carol"), HS256_SECRET),
        eddsa_jwt(&user_claims("dave"), ED25519_PRIVATE),
    ] {
        assert_eq!(pull_as(&s, &token).await, (StatusCode::OK, None), "{token}");
    }
    let unauthorized = (StatusCode::UNAUTHORIZED, Some("unauthorized".to_owned()));
    assert_eq!(pull_as(&s, "alice-token-012345678").await, unauthorized);
    let (status, _) = s.get_json("/api/sync/pull").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no credential");
    s.stop().await;
}

#[tokio::test]
async fn expired_wrong_key_alg_none_and_subless_jwts_are_refused() {
    let s = TestServer::with_users("users-bad-jwt", |o| {
        o.jwt_issuer = Some("https://login.example".into());
        o.jwt_audience = Some("rangersync".into());
    })
    .await;
    let good = json!({"sub": "carol", "exp": unix_now() + 3600,
                      "iss": "https://login.example", "aud": "rangersync"});
    assert_eq!(
        pull_as(&s, &hs256_jwt(&good, HS256_SECRET)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        pull_as(&s, &eddsa_jwt(&good, ED25519_PRIVATE)).await.0,
        StatusCode::OK
    );

    let with = |key: &str, value: Value| {
        let mut c = good.clone();
        c[key] = value;
        c
    };
    let mut no_sub = good.clone();
    no_sub.as_object_mut().unwrap().remove("sub");
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let alg_none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(good.to_string().as_bytes())
    );
    // An HS256 token signed with the PEM public key as its secret (key confusion).
    let confused = hs256_jwt(&good, ED25519_PUBLIC);
    let refused = [
        (
            "expired",
            hs256_jwt(&with("exp", json!(unix_now() - 3600)), HS256_SECRET),
        ),
        ("no exp", hs256_jwt(&no_exp, HS256_SECRET)),
        ("no sub", hs256_jwt(&no_sub, HS256_SECRET)),
        (
            "empty sub",
            hs256_jwt(&with("sub", json!("")), HS256_SECRET),
        ),
        (
            "wrong secret",
            hs256_jwt(&good, "another-secret-of-at-least-32-bytes!!"),
        ),
        ("wrong key", eddsa_jwt(&good, ED25519_OTHER_PRIVATE)),
        ("alg none", alg_none),
        ("public key as HMAC secret", confused),
        (
            "wrong issuer",
            hs256_jwt(&with("iss", json!("https://evil.example")), HS256_SECRET),
        ),
        (
            "wrong audience",
            hs256_jwt(&with("aud", json!("other")), HS256_SECRET),
        ),
    ];
    for (what, token) in refused {
        assert_eq!(
            pull_as(&s, &token).await,
            (StatusCode::UNAUTHORIZED, Some("unauthorized".to_owned())),
            "{what}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn only_an_admin_may_restore_and_a_refused_restore_changes_nothing() {
    let s = TestServer::with_users("users-restore", |_| {}).await;
    let alice = s.as_user("alice-token-0123456789");
    alice
        .push_ok("a1", vec![put("a1", 1, "k", json!("mine"), T0)])
        .await;
    let text = json_of(&client_snapshot(
        "a1",
        T0,
        vec![snap_entity("k", json!("restored"), false)],
        0,
    ));
    let admin_jwt = hs256_jwt(
        &json!({"sub": "ops", "exp": unix_now() + 3600, "rangersync_admin": true}),
        HS256_SECRET,
    );
    let not_admin_jwt = hs256_jwt(
        &json!({"sub": "ops", "exp": unix_now() + 3600, "rangersync_admin": "true"}),
        HS256_SECRET,
    );
    for token in ["alice-token-0123456789", &not_admin_jwt] {
        for query in ["?dry_run=true", "?dry_run=false"] {
            let (status, _, body) = s
                .as_user(token)
                .post_text(
                    &format!("/api/restore{query}"),
                    text.clone(),
                    "application/json",
                )
                .await;
            assert_eq!(
                (status, code(&body)),
                (StatusCode::FORBIDDEN, "forbidden"),
                "{query}"
            );
        }
    }
    let (changes, _) = alice.pull_all("").await;
    assert_eq!(changes[0]["value"], json!("mine"));
    for token in ["root-token-0123456789", &admin_jwt] {
        let (status, _, body) = s
            .as_user(token)
            .post_text(
                "/api/restore?dry_run=true",
                text.clone(),
                "application/json",
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    s.stop().await;
}

#[tokio::test]
async fn the_tokens_file_is_read_again_on_sighup() {
    let s = TestServer::with_users("users-sighup", |_| {}).await;
    assert_eq!(
        pull_as(&s, "alice-token-0123456789").await.0,
        StatusCode::OK
    );
    let file = s.opts.tokens_file.clone().unwrap();
    std::fs::write(&file, "alice-rotated-0123456789 alice\n").unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rotated = false;
    for _ in 0..100 {
        if pull_as(&s, "alice-rotated-0123456789").await.0 == StatusCode::OK {
            rotated = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(rotated, "the new token is accepted after SIGHUP");
    assert_eq!(
        pull_as(&s, "alice-token-0123456789").await.0,
        StatusCode::UNAUTHORIZED,
        "the old one is not"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_tokens_file_with_a_bad_line_refuses_to_start_without_showing_a_token() {
    let dir = TempDir::new("users-bad-file");
    let file = dir.path().join("tokens");
    std::fs::write(
        &file,
        "good-token-0123456789 alice\nsecret-token-xyz alice root\n",
    )
    .unwrap();
    let opts = rangersync_server::ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: fresh_db(&dir).await,
        www: None,
        tokens_file: Some(file),
        ..rangersync_server::ServerOptions::default()
    };
    let err = rangersync_server::start(opts)
        .await
        .expect_err("a bad line")
        .to_string();
    assert!(err.contains("line 2"), "{err}");
    assert!(
        !err.contains("secret-token-xyz") && !err.contains("good-token"),
        "{err}"
    );
}

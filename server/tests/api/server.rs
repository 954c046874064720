//! Lifecycle, health, static files, unknown routes.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn a_server_restarted_on_the_same_port_keeps_its_data() {
    let mut s = TestServer::default("restart").await;
    s.push_ok("c1", vec![put("c1", 1, "a", json!("kept"), T0)])
        .await;
    s.post_json("/api/sync/chat", &json!({"m": 1})).await;
    let url = s.url.clone();

    s.restart().await;
    assert_eq!(s.url, url);
    let (_, pull) = s.get_json("/api/sync/pull").await;
    assert_eq!(pull["changes"][0]["value"], "kept");
    let again = s
        .push_ok("c1", vec![put("c1", 1, "a", json!("kept"), T0)])
        .await;
    assert_eq!(statuses(&again), ["duplicate"], "dedup survives a restart");
    assert_eq!(s.stats().await["captured"].as_array().unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn health_answers_ok_with_the_version_and_time() {
    let s = TestServer::default("health").await;
    let (status, body) = s.get_json("/api/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["time"].as_i64().unwrap() > T0);
    s.stop().await;
}

#[tokio::test]
async fn unknown_api_routes_and_methods_get_json_error_bodies() {
    let s = TestServer::default("unknown").await;
    let (status, body) = s.get_json("/api/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "not_found");
    let (status, body) = s.get_json("/api/sync/push").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(code(&body), "method_not_allowed");
    s.stop().await;
}

#[tokio::test]
async fn the_www_directory_is_served_with_no_cache_for_the_worker_and_wasm() {
    let www = TempDir::new("www");
    std::fs::create_dir_all(www.path().join("pkg")).unwrap();
    std::fs::write(
        www.path().join("index.html"),
        "<!doctype html><title>app</title>",
    )
    .unwrap();
    std::fs::write(
        www.path().join("sw.js"),
        "self.addEventListener('install', () => {});",
    )
    .unwrap();
    std::fs::write(www.path().join("pkg/app_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(www.path().join("style.css"), "body{}").unwrap();
    let dir = www.path().to_owned();
    let s = TestServer::start("static", move |o| o.www = Some(dir)).await;

    let resp = s.http.get(s.at("/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("<title>app</title>"));

    let resp = s.http.get(s.at("/sw.js")).send().await.unwrap();
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));

    let resp = s.http.get(s.at("/pkg/app_bg.wasm")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/wasm");
    assert_eq!(resp.headers()["cache-control"], "no-cache");

    let resp = s.http.get(s.at("/style.css")).send().await.unwrap();
    assert!(resp.headers().get("cache-control").is_none());

    let resp = s.http.get(s.at("/missing.js")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let (status, body): (StatusCode, Value) = s.get_json("/api/missing").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "/api is never served from www"
    );
    assert_eq!(code(&body), "not_found");
    s.stop().await;
}

#[tokio::test]
async fn the_binary_prints_its_address_and_stops_cleanly_on_sigterm_without_logging_the_token() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};

    let dir = TempDir::new("binary");
    let db = match fresh_db(&dir).await {
        rangersync_server::DbLocation::Sqlite(path) => path.display().to_string(),
        rangersync_server::DbLocation::Postgres(url) => url,
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_rangersync-server"))
        .args(["--listen", "127.0.0.1:0", "--no-www"])
        .env("RANGERSYNC_DB", db)
        .env("RANGERSYNC_TOKEN", "very-secret-token")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("rangersync-server listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let http = reqwest::Client::new();
    let health = http.get(format!("{url}/api/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let pull = http
        .get(format!("{url}/api/sync/pull"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        pull.status(),
        StatusCode::UNAUTHORIZED,
        "the token came from RANGERSYNC_TOKEN"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut out = line;
    stdout.read_to_string(&mut out).unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(!out.contains("very-secret-token"), "{out}");
}

#[test]
fn the_binary_refuses_a_database_url_it_cannot_serve_and_never_prints_its_password() {
    use std::process::Command;

    let run = |db: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_rangersync-server"))
            .args(["--listen", "127.0.0.1:0", "--no-www", "--db", db])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{db} must not start");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let mysql = run("mysql://app:hunter2@db.local/app");
    assert!(
        mysql.contains("unsupported database URL scheme `mysql://`"),
        "{mysql}"
    );
    assert!(!mysql.contains("hunter2"), "{mysql}");
    // Port 1 on loopback: nothing listens, the connection is refused.
    let unreachable = run("postgres://app:hunter2@127.0.0.1:1/app");
    assert!(
        unreachable.contains("postgres://app:***@127.0.0.1:1/app"),
        "{unreachable}"
    );
    assert!(!unreachable.contains("hunter2"), "{unreachable}");
}

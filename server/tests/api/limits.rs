//! The request limits (`rangersync_server::limits`): a request beyond the concurrency limit is
//! refused at once with `503 overloaded` and `Retry-After`, the health check stays answerable,
//! and a request that outlasts the timeout gets a typed answer (`408 body_timeout` for a body
//! still arriving, `503 timeout` for a handler still working) instead of holding on.
//!
//! A held request is written by hand over a raw TCP connection, so the test decides when (and
//! whether) its body ends.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::common::*;

/// The status, the headers (lower-case names) and the JSON body of a raw answer.
type RawAnswer = (u16, Vec<(String, String)>, Value);

/// Send a request's head and the first bytes of its `Content-Length`-long body; the body's
/// rest goes through the returned writer, and the answer is read (to the connection's close)
/// by the returned task.
async fn open_request(
    s: &TestServer,
    path: &str,
    content_length: usize,
    first: &[u8],
) -> (OwnedWriteHalf, JoinHandle<RawAnswer>) {
    let addr = s.server.as_ref().expect("a running server").addr();
    let (mut read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
    );
    write.write_all(head.as_bytes()).await.unwrap();
    write.write_all(first).await.unwrap();
    let answer = tokio::spawn(async move {
        let mut raw = Vec::new();
        // The server may close while a refused body is still being written; what it answered
        // before is what counts.
        let _ = read.read_to_end(&mut raw).await;
        parse_answer(&raw)
    });
    (write, answer)
}

fn parse_answer(raw: &[u8]) -> RawAnswer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (
        status,
        headers,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// An answer's `Retry-After` in whole seconds, which must be there.
fn retry_after_secs(headers: &reqwest::header::HeaderMap) -> u64 {
    headers
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds")
}

#[tokio::test]
async fn beyond_max_concurrent_requests_a_request_is_answered_503_overloaded_with_retry_after_at_once_while_health_still_answers(
) {
    let s = TestServer::start("overloaded", |o| o.max_concurrent_requests = 1).await;
    let body = json!({ "client_id": "held", "mutations": [put("held", 1, "k", json!("v"), T0)] })
        .to_string();
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);

    // The held push takes the only permit once it arrives; a probe sent before that is
    // admitted (200), and a held push arriving while a probe runs is itself refused: then it is
    // sent again. A probe answered 503 proves the held push holds the permit.
    let (mut held, held_answer, refused) = 'admitted: {
        for _attempt in 0..50 {
            let (held, held_answer) = open_request(&s, "/api/sync/push", body.len(), first).await;
            for _probe in 0..500 {
                if held_answer.is_finished() {
                    break;
                }
                let probe = s.http.get(s.at("/api/sync/pull")).send().await.unwrap();
                if probe.status() == StatusCode::SERVICE_UNAVAILABLE {
                    break 'admitted (held, held_answer, probe);
                }
                assert_eq!(probe.status(), StatusCode::OK);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(
                held_answer.is_finished(),
                "every probe was admitted while the held push was open: no limit"
            );
            let (status, _, answer) = held_answer.await.unwrap();
            assert_eq!(
                status, 503,
                "the held push was refused, nothing else: {answer}"
            );
        }
        panic!("the held push never held the permit");
    };

    assert!(retry_after_secs(refused.headers()) >= 1);
    let answer: Value = refused.json().await.unwrap();
    assert_eq!(code(&answer), "overloaded", "{answer}");
    let (status, answer) = s
        .push("other", vec![put("other", 1, "o", json!(1), T0)])
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(code(&answer), "overloaded");
    let (status, health) = s.get_json("/api/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "ok");

    held.write_all(rest).await.unwrap();
    let (status, _, answer) = held_answer.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(statuses(answer["results"].as_array().unwrap()), ["applied"]);
    // The permit is back: the refused push goes through now, and was never half-applied.
    assert!(s.mutations_of("other").await.is_empty());
    let results = s
        .push_ok("other", vec![put("other", 1, "o", json!(1), T0)])
        .await;
    assert_eq!(statuses(&results), ["applied"]);
}

#[tokio::test]
async fn a_body_trickling_in_slower_than_the_request_timeout_is_answered_408_body_timeout_and_nothing_is_stored(
) {
    let s = TestServer::start("body-timeout", |o| {
        o.request_timeout = Duration::from_secs(2);
    })
    .await;
    // A push body that starts well and then comes one space (JSON whitespace) at a time.
    let start = br#"{"client_id":"slow","mutations":[{"client_id":"slow","seq":1,"#;
    let (mut trickle, answer) = open_request(&s, "/api/sync/push", 10_000, start).await;
    let dripping = tokio::spawn(async move {
        for _ in 0..2_000 {
            if trickle.write_all(b" ").await.is_err() {
                return; // the server answered and closed
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Only a guard against a hang: the server answers long before.
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(60), answer)
        .await
        .expect("an answer while the body still trickles")
        .unwrap();
    dripping.abort();
    assert_eq!(status, 408, "{body}");
    assert_eq!(code(&body), "body_timeout");
    assert!(s.mutations_of("slow").await.is_empty());
    // The server is not wedged by it.
    let results = s
        .push_ok("slow", vec![put("slow", 1, "k", json!(1), T0)])
        .await;
    assert_eq!(statuses(&results), ["applied"]);
}

#[tokio::test]
async fn a_push_whose_handler_outlasts_the_request_timeout_is_answered_503_timeout_and_its_resend_is_a_duplicate(
) {
    let s = TestServer::start("handler-timeout", |o| {
        o.request_timeout = Duration::from_secs(2);
    })
    .await;
    // The push is applied and committed, then its answer is held far past the timeout.
    let (status, body) = s
        .post_json(
            "/api/test/faults",
            &json!({ "rules": [{ "path": "/api/sync/push", "delay_ms": 600_000 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let batch = vec![put("late", 1, "k", json!("v"), T0)];
    // Only a guard against a hang: the timeout answers long before.
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(60), s.push("late", batch.clone()))
            .await
            .expect("an answer before the held one");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(code(&body), "timeout");
    let recorded = s.mutations_of("late").await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["status"], "applied");
    assert_eq!(statuses(&s.push_ok("late", batch).await), ["duplicate"]);
}

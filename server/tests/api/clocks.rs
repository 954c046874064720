//! `--max-clock-skew-ms`: a device whose clock runs ahead cannot win every later conflict.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::common::*;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// 9999-12-31T23:59:59Z, the latest stamp validation accepts.
const YEAR_9999: i64 = 253_402_300_799_000;

#[tokio::test]
async fn a_year_9999_stamp_loses_to_a_later_write_from_a_right_clock() {
    let skew = 200;
    let s = TestServer::start("clock-9999", |o| o.max_clock_skew_ms = skew).await;
    let before = now_ms();
    let results = s
        .push_ok(
            "fast-clock",
            vec![put("fast-clock", 1, "k", json!("from 9999"), YEAR_9999)],
        )
        .await;
    let after = now_ms();
    assert_eq!(statuses(&results), ["applied"]);
    let stamped = results[0]["stamped_at"]
        .as_i64()
        .expect("the client is told its stamp");
    assert!(
        (before + skew..=after + skew).contains(&stamped),
        "{stamped} is the server's clock plus the skew ({before}..{after} + {skew})"
    );

    tokio::time::sleep(std::time::Duration::from_millis(skew as u64 + 100)).await;
    let results = s
        .push_ok(
            "right-clock",
            vec![put("right-clock", 1, "k", json!("later"), now_ms())],
        )
        .await;
    assert_eq!(statuses(&results), ["applied"], "{results:?}");
    assert!(
        results[0].get("stamped_at").is_none(),
        "a right clock is not restamped"
    );
    let (changes, _) = s.pull_all("").await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["value"], json!("later"));
    s.stop().await;
}

#[tokio::test]
async fn a_stamp_within_the_default_skew_is_stored_as_sent() {
    let s = TestServer::default("clock-default").await;
    let ahead = now_ms() + 60_000;
    let results = s
        .push_ok(
            "c1",
            vec![
                put("c1", 1, "k", json!(1), ahead),
                put("c1", 2, "j", json!(2), YEAR_9999),
            ],
        )
        .await;
    assert!(results[0].get("stamped_at").is_none(), "{results:?}");
    let stamped = results[1]["stamped_at"].as_i64().unwrap();
    assert!(
        stamped <= now_ms() + 300_000 && stamped > now_ms() + 290_000,
        "{stamped}"
    );
    let (changes, _) = s.pull_all("").await;
    let k = changes.iter().find(|c| c["key"] == "k").unwrap();
    assert_eq!(k["updated_at"], ahead);
    let j = changes.iter().find(|c| c["key"] == "j").unwrap();
    assert_eq!(
        j["updated_at"], stamped,
        "stored under the stamp it was given"
    );
    s.stop().await;
}

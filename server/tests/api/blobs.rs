//! Blobs: chunked, resumable, content-addressed uploads and streamed downloads, each blob its
//! user's own (PROTOCOL.md, "Blobs").

use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::*;

const MIB: usize = 1024 * 1024;
const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789";

/// `len` bytes that differ with `seed`.
fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + usize::from(seed) * 7) % 251) as u8)
        .collect()
}

fn sha256_of(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `bytes START-END/TOTAL` of `bytes[start..start + len]`.
fn range_of(start: usize, len: usize, total: usize) -> String {
    if total == 0 {
        "bytes */0".to_owned()
    } else {
        format!("bytes {start}-{}/{total}", start + len - 1)
    }
}

impl TestServer {
    /// PUT one chunk with these headers; the status and the JSON answer.
    async fn put_raw(
        &self,
        sha: &str,
        content_range: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .put(self.at(&format!("/api/blobs/{sha}")))
            .header("content-type", content_type)
            .body(body);
        if let Some(range) = content_range {
            req = req.header("content-range", range);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// PUT `blob[start..start + len]` of a blob hashed as `sha`.
    async fn put_chunk(
        &self,
        sha: &str,
        blob: &[u8],
        start: usize,
        len: usize,
    ) -> (StatusCode, Value) {
        let len = len.min(blob.len() - start);
        self.put_raw(
            sha,
            Some(&range_of(start, len, blob.len())),
            "application/octet-stream",
            blob[start..start + len].to_vec(),
        )
        .await
    }

    /// Upload all of `blob` in chunks of `chunk` bytes, expecting 200s; the last answer.
    async fn upload_blob(&self, sha: &str, blob: &[u8], chunk: usize) -> Value {
        let mut start = 0;
        loop {
            let (status, body) = self.put_chunk(sha, blob, start, chunk).await;
            assert_eq!(status, StatusCode::OK, "at {start}: {body}");
            start = (start + chunk).min(blob.len());
            if start == blob.len() {
                return body;
            }
            assert_eq!(body["complete"], false, "{body}");
            assert_eq!(body["received"], start, "{body}");
        }
    }

    async fn upload_state(&self, sha: &str) -> (StatusCode, Value) {
        self.get_json(&format!("/api/blobs/{sha}/upload")).await
    }

    /// GET a blob: the status, the headers and the bytes.
    async fn download(&self, sha: &str) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        let resp = self
            .http
            .get(self.at(&format!("/api/blobs/{sha}")))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.bytes().await.unwrap().to_vec())
    }

    /// The directory the test server keeps blob bytes in.
    fn blob_dir(&self) -> PathBuf {
        match (&self.opts.blob_dir, &self.opts.db) {
            (Some(dir), _) => dir.clone(),
            (None, rangersync_server::DbLocation::Sqlite(path)) => {
                path.parent().unwrap().join("blobs")
            }
            (None, _) => panic!("no blob directory"),
        }
    }
}

/// Every file under `dir`.
fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn a_blob_uploaded_in_chunks_downloads_byte_identical_with_the_contracts_headers() {
    let s = TestServer::default("blob-roundtrip").await;
    let blob = data(2 * MIB + 12_345, 1);
    let sha = sha256_of(&blob);
    let last = s.upload_blob(&sha, &blob, MIB).await;
    assert_eq!(
        last,
        json!({ "sha256": sha, "size": blob.len(), "received": blob.len(), "complete": true })
    );
    let (status, headers, bytes) = s.download(&sha).await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == blob, "the download is byte-identical");
    for (name, value) in [
        ("content-type", "application/octet-stream"),
        ("content-length", blob.len().to_string().as_str()),
        ("etag", format!("\"{sha}\"").as_str()),
        ("cache-control", "private, max-age=31536000, immutable"),
        ("x-content-type-options", "nosniff"),
        ("content-disposition", "attachment"),
    ] {
        assert_eq!(headers[name], value, "{name}");
    }
    let (status, state) = s.upload_state(&sha).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["complete"], true);
    // The parts are gone: one object, the blob, and it is not named by the user id.
    let files = files_under(&s.blob_dir());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with(&sha));
    assert!(!files[0].display().to_string().contains("default"));
    assert_eq!(
        s.stats().await["blobs"],
        json!({ "complete": 1, "uploading": 0, "bytes": blob.len() })
    );

    // A test reset forgets blobs and deletes their bytes.
    let (status, _) = s.post_json("/api/test/reset", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.download(&sha).await.0, StatusCode::NOT_FOUND);
    assert!(files_under(&s.blob_dir()).is_empty());
    s.stop().await;
}

#[tokio::test]
async fn an_empty_blob_uploads_as_bytes_star_slash_zero() {
    let s = TestServer::default("blob-empty").await;
    let sha = sha256_of(b"");
    let (status, body) = s
        .put_raw(
            &sha,
            Some("bytes */0"),
            "application/octet-stream",
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["complete"], true);
    let (status, headers, bytes) = s.download(&sha).await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes.is_empty());
    assert_eq!(headers["content-length"], "0");
    s.stop().await;
}

#[tokio::test]
async fn an_upload_resumes_from_the_received_offset_after_a_restart() {
    let mut s = TestServer::default("blob-resume").await;
    let blob = data(3 * MIB + 5, 2);
    let sha = sha256_of(&blob);
    for start in [0, MIB] {
        let (status, body) = s.put_chunk(&sha, &blob, start, MIB).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    s.restart().await;
    let (status, state) = s.upload_state(&sha).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(
        state,
        json!({ "sha256": sha, "size": blob.len(), "received": 2 * MIB, "complete": false })
    );
    let from = state["received"].as_u64().unwrap() as usize;
    let (status, body) = s.put_chunk(&sha, &blob, from, MIB).await;
    assert_eq!(
        (status, body["complete"].clone()),
        (StatusCode::OK, json!(false))
    );
    let (status, body) = s.put_chunk(&sha, &blob, 3 * MIB, MIB).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["complete"], true);
    assert!(s.download(&sha).await.2 == blob);
    s.stop().await;
}

#[tokio::test]
async fn a_chunk_at_the_wrong_offset_gets_409_with_received_and_changes_nothing() {
    let s = TestServer::default("blob-offset").await;
    let blob = data(3 * MIB, 3);
    let sha = sha256_of(&blob);
    // No upload yet: anything but 0 is told to start at 0, and starts nothing.
    let (status, body) = s.put_chunk(&sha, &blob, MIB, MIB).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "blob_range_mismatch");
    assert_eq!(body["received"], 0);
    assert_eq!(s.upload_state(&sha).await.0, StatusCode::NOT_FOUND);

    assert_eq!(s.put_chunk(&sha, &blob, 0, MIB).await.0, StatusCode::OK);
    for (start, why) in [(2 * MIB, "a gap"), (0, "a resend"), (MIB / 2, "an overlap")] {
        let (status, body) = s.put_chunk(&sha, &blob, start, MIB).await;
        assert_eq!(status, StatusCode::CONFLICT, "{why}: {body}");
        assert_eq!(code(&body), "blob_range_mismatch", "{why}");
        assert_eq!(body["received"], MIB, "{why}");
    }
    let (_, state) = s.upload_state(&sha).await;
    assert_eq!(state["received"], MIB);
    // The upload goes on from where it was, and nothing refused got into it.
    for start in [MIB, 2 * MIB] {
        assert_eq!(s.put_chunk(&sha, &blob, start, MIB).await.0, StatusCode::OK);
    }
    assert!(s.download(&sha).await.2 == blob);
    s.stop().await;
}

#[tokio::test]
async fn two_requests_racing_at_one_offset_on_two_instances_append_it_once() {
    let a = TestServer::default("blob-race").await;
    let b = a.another_instance().await;
    let blob = data(3 * MIB, 4);
    let sha = sha256_of(&blob);
    assert_eq!(a.put_chunk(&sha, &blob, 0, MIB).await.0, StatusCode::OK);
    let (first, second) = tokio::join!(
        a.put_chunk(&sha, &blob, MIB, MIB),
        b.put_chunk(&sha, &blob, MIB, MIB)
    );
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{} {}",
        first.1,
        second.1
    );
    let conflict = if first.0 == StatusCode::CONFLICT {
        &first.1
    } else {
        &second.1
    };
    assert_eq!(conflict["received"], 2 * MIB, "{conflict}");
    assert_eq!(b.upload_state(&sha).await.1["received"], 2 * MIB);
    assert_eq!(
        files_under(&a.blob_dir()).len(),
        2,
        "two parts: the loser deleted its own"
    );
    assert_eq!(
        b.put_chunk(&sha, &blob, 2 * MIB, MIB).await.0,
        StatusCode::OK
    );
    assert!(a.download(&sha).await.2 == blob);
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_wrong_hash_gets_422_and_the_upload_starts_again_from_zero() {
    let s = TestServer::default("blob-hash").await;
    let blob = data(MIB + 10, 5);
    let claimed = sha256_of(&data(MIB + 10, 6));
    assert_eq!(s.put_chunk(&claimed, &blob, 0, MIB).await.0, StatusCode::OK);
    let (status, body) = s.put_chunk(&claimed, &blob, MIB, MIB).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "blob_hash_mismatch");
    assert_eq!(body["received"], 0);
    assert_eq!(s.upload_state(&claimed).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.download(&claimed).await.0, StatusCode::NOT_FOUND);
    assert!(files_under(&s.blob_dir()).is_empty(), "nothing is kept");
    assert_eq!(s.stats().await["blobs"]["bytes"], 0, "no quota is held");
    // It starts again from 0.
    let (status, body) = s.put_chunk(&claimed, &blob, MIB, MIB).await;
    assert_eq!(
        (status, body["received"].clone()),
        (StatusCode::CONFLICT, json!(0))
    );
    assert_eq!(s.put_chunk(&claimed, &blob, 0, MIB).await.0, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn a_blob_over_max_blob_bytes_is_413_blob_too_large() {
    let s = TestServer::start("blob-too-large", |o| o.max_blob_bytes = 1000).await;
    let blob = data(1001, 7);
    let sha = sha256_of(&blob);
    let (status, body) = s.put_chunk(&sha, &blob, 0, 1001).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(code(&body), "blob_too_large");
    assert_eq!(s.upload_state(&sha).await.0, StatusCode::NOT_FOUND);
    let fits = data(1000, 7);
    let last = s.upload_blob(&sha256_of(&fits), &fits, 600).await;
    assert_eq!(last["complete"], true);
    s.stop().await;
}

#[tokio::test]
async fn a_chunk_over_8_mib_is_413_payload_too_large() {
    let s = TestServer::default("blob-chunk-limit").await;
    let blob = data(8 * MIB + 1, 8);
    let sha = sha256_of(&blob);
    let (status, body) = s.put_chunk(&sha, &blob, 0, blob.len()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(code(&body), "payload_too_large");
    assert_eq!(s.upload_state(&sha).await.0, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn an_upload_past_the_quota_is_413_blob_quota_exceeded_counting_uploads_in_progress() {
    let s = TestServer::start("blob-quota", |o| o.blob_quota_bytes = 3000).await;
    let first = data(2000, 9);
    s.upload_blob(&sha256_of(&first), &first, 2000).await;
    let over = data(1001, 10);
    let (status, body) = s.put_chunk(&sha256_of(&over), &over, 0, 500).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(code(&body), "blob_quota_exceeded");
    assert_eq!(
        s.upload_state(&sha256_of(&over)).await.0,
        StatusCode::NOT_FOUND
    );
    // 1000 fit; once that upload is in progress, nothing more does.
    let fits = data(1000, 11);
    let (status, _) = s.put_chunk(&sha256_of(&fits), &fits, 0, 500).await;
    assert_eq!(status, StatusCode::OK);
    let one = data(1, 12);
    let (status, body) = s.put_chunk(&sha256_of(&one), &one, 0, 1).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "blob_quota_exceeded")
    );
    // The upload in progress goes on.
    let (status, body) = s.put_chunk(&sha256_of(&fits), &fits, 500, 500).await;
    assert_eq!(
        (status, body["complete"].clone()),
        (StatusCode::OK, json!(true))
    );
    s.stop().await;
}

#[tokio::test]
async fn another_user_cannot_read_resume_or_learn_of_a_users_blob() {
    let s = TestServer::with_users("blob-users", |_| {}).await;
    let (alice, bob) = (s.as_user(ALICE), s.as_user(BOB));
    let done = data(MIB + 1, 13);
    let done_sha = sha256_of(&done);
    alice.upload_blob(&done_sha, &done, MIB).await;
    let partial = data(2 * MIB, 14);
    let partial_sha = sha256_of(&partial);
    assert_eq!(
        alice.put_chunk(&partial_sha, &partial, 0, MIB).await.0,
        StatusCode::OK
    );

    for sha in [&done_sha, &partial_sha] {
        let (status, headers, bytes) = bob.download(sha).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!headers.contains_key("etag"));
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(code(&body), "blob_not_found");
        let (status, body) = bob.upload_state(sha).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "blob_not_found")
        );
        // Resuming where alice got to: bob has no upload, so he is told 0.
        let (status, body) = bob.put_chunk(sha, &partial, MIB, MIB).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["received"], 0);
    }
    // Sending the first chunk of alice's complete blob is bob's own new upload, not a
    // "you already have it".
    let (status, body) = bob.put_chunk(&done_sha, &done, 0, MIB).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["received"].clone(), body["complete"].clone()),
        (json!(MIB), json!(false))
    );
    // Alice's are as they were.
    assert!(alice.download(&done_sha).await.2 == done);
    assert_eq!(alice.upload_state(&partial_sha).await.1["received"], MIB);
    // Without a token: 401.
    let (status, _) = s.upload_state(&done_sha).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

#[tokio::test]
async fn a_second_upload_of_a_complete_blob_by_the_same_user_answers_complete_without_storing_again(
) {
    let s = TestServer::default("blob-dedup").await;
    let blob = data(MIB + 100, 15);
    let sha = sha256_of(&blob);
    s.upload_blob(&sha, &blob, MIB).await;
    let before = files_under(&s.blob_dir());
    let modified = std::fs::metadata(&before[0]).unwrap().modified().unwrap();
    for start in [0, MIB] {
        let (status, body) = s.put_chunk(&sha, &blob, start, MIB).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            json!({ "sha256": sha, "size": blob.len(), "received": blob.len(), "complete": true })
        );
    }
    assert_eq!(files_under(&s.blob_dir()), before, "no part was stored");
    assert_eq!(
        std::fs::metadata(&before[0]).unwrap().modified().unwrap(),
        modified,
        "the blob was not written again"
    );
    assert_eq!(s.stats().await["blobs"]["complete"], 1);
    s.stop().await;
}

#[tokio::test]
async fn a_hostile_origin_is_refused_and_a_chunk_must_be_octet_stream() {
    let s = TestServer::default("blob-guard").await;
    let blob = data(100, 16);
    let sha = sha256_of(&blob);
    let resp = s
        .http
        .put(s.at(&format!("/api/blobs/{sha}")))
        .header("origin", "http://evil.example")
        .header("content-type", "application/octet-stream")
        .header("content-range", "bytes 0-99/100")
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(code(&resp.json().await.unwrap()), "forbidden_origin");
    let resp = s
        .http
        .get(s.at(&format!("/api/blobs/{sha}/upload")))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    for content_type in ["text/plain", "application/json", "multipart/form-data"] {
        let (status, body) = s
            .put_raw(&sha, Some("bytes 0-99/100"), content_type, blob.clone())
            .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type}");
        assert_eq!(code(&body), "unsupported_media_type");
    }
    assert_eq!(
        s.upload_state(&sha).await.0,
        StatusCode::NOT_FOUND,
        "nothing stored"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_malformed_sha_or_content_range_is_400_bad_blob_request_and_changes_nothing() {
    let s = TestServer::default("blob-malformed").await;
    let blob = data(1000, 17);
    let sha = sha256_of(&blob);
    let octets = "application/octet-stream";
    for bad_sha in [sha.to_uppercase(), sha[..63].to_owned(), format!("{sha}0")] {
        let (status, body) = s
            .put_raw(&bad_sha, Some("bytes 0-999/1000"), octets, blob.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad_sha}: {body}");
        assert_eq!(code(&body), "bad_blob_request");
        let (status, body) = s.upload_state(&bad_sha).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "bad_blob_request")
        );
        assert_eq!(s.download(&bad_sha).await.0, StatusCode::BAD_REQUEST);
    }
    for (range, body) in [
        (None, blob.clone()),
        (Some("bytes 0-999"), blob.clone()),
        (Some("bytes=0-999/1000"), blob.clone()),
        (Some("bytes 0-1000/1000"), blob.clone()),
        (Some("bytes 0-499/1000"), blob.clone()),
        (Some("bytes 0-999/1000"), blob[..999].to_vec()),
        (Some("bytes */1000"), Vec::new()),
    ] {
        let (status, answer) = s.put_raw(&sha, range, octets, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{range:?}: {answer}");
        assert_eq!(code(&answer), "bad_blob_request", "{range:?}");
    }
    assert_eq!(s.upload_state(&sha).await.0, StatusCode::NOT_FOUND);
    // A TOTAL that differs from the upload in progress.
    assert_eq!(s.put_chunk(&sha, &blob, 0, 500).await.0, StatusCode::OK);
    let (status, body) = s
        .put_raw(
            &sha,
            Some("bytes 500-999/2000"),
            octets,
            blob[500..].to_vec(),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_blob_request")
    );
    assert_eq!(s.upload_state(&sha).await.1["received"], 500);
    s.stop().await;
}

#[tokio::test]
async fn sqlite_keeps_blobs_beside_its_file_by_default_and_postgresql_without_a_store_answers_501()
{
    let blob = data(10, 18);
    let sha = sha256_of(&blob);
    match crate::BACKEND {
        Backend::Sqlite => {
            let s = TestServer::default("blob-default-dir").await;
            assert_eq!(s.opts.blob_dir, None);
            s.upload_blob(&sha, &blob, 10).await;
            let rangersync_server::DbLocation::Sqlite(db) = &s.opts.db else {
                unreachable!()
            };
            let files = files_under(&db.parent().unwrap().join("blobs"));
            assert_eq!(files.len(), 1, "{files:?}");
            s.stop().await;
        }
        Backend::Postgres => {
            let s = TestServer::start("blob-no-store", |o| o.blob_dir = None).await;
            let (status, body) = s.put_chunk(&sha, &blob, 0, 10).await;
            assert_eq!(
                (status, code(&body)),
                (StatusCode::NOT_IMPLEMENTED, "blobs_not_configured")
            );
            let (status, body) = s.upload_state(&sha).await;
            assert_eq!(
                (status, code(&body)),
                (StatusCode::NOT_IMPLEMENTED, "blobs_not_configured")
            );
            assert_eq!(s.download(&sha).await.0, StatusCode::NOT_IMPLEMENTED);
            // Everything else works as ever.
            s.push_ok("c1", vec![put("c1", 1, "k", json!(1), T0)]).await;
            s.stop().await;
        }
    }
}

#[tokio::test]
async fn an_upload_whose_assembly_failed_is_finished_by_sending_the_last_chunk_again() {
    let s = TestServer::default("blob-assembly-retry").await;
    let blob = data(MIB + 3, 19);
    let sha = sha256_of(&blob);
    assert_eq!(s.put_chunk(&sha, &blob, 0, MIB).await.0, StatusCode::OK);
    // The final object cannot be written: a file stands where the user's folder goes.
    let user_dir = s
        .blob_dir()
        .join("blobs")
        .join(rangersync_server::blob_store::user_dir("default"));
    std::fs::create_dir_all(user_dir.parent().unwrap()).unwrap();
    std::fs::write(&user_dir, b"in the way").unwrap();
    let (status, body) = s.put_chunk(&sha, &blob, MIB, MIB).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let (_, state) = s.upload_state(&sha).await;
    assert_eq!(
        (state["received"].clone(), state["complete"].clone()),
        (json!(blob.len()), json!(false)),
        "every byte arrived, nothing was lost"
    );
    assert_eq!(s.download(&sha).await.0, StatusCode::NOT_FOUND);
    std::fs::remove_file(&user_dir).unwrap();
    let (status, body) = s.put_chunk(&sha, &blob, MIB, MIB).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["complete"], true);
    assert!(s.download(&sha).await.2 == blob);
    s.stop().await;
}

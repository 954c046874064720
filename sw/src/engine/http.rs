//! Requests to the server: the sync push, the replay of a captured request, blob chunks, GETs. Every
//! outcome is an [`HttpOutcome`] for `shared::classify` to judge; nothing here decides.
//!
//! Every request goes through `gloo-net` with an `AbortSignal`: after the configured
//! `request_timeout_ms` (body included) it is aborted and becomes a network failure, so a
//! server that accepts the connection and never answers cannot hold the flusher.

use std::cell::Cell;
use std::rc::Rc;

use gloo_net::http::{Headers, Method, RequestBuilder};
use js_sys::Uint8Array;
use rangersync_shared::classify::HttpOutcome;
use rangersync_shared::outbox::CapturedRequest;
use rangersync_shared::protocol::PushRequest;
use wasm_bindgen::JsValue;

use super::Engine;
use crate::js::Timeout;

fn network(message: impl Into<String>) -> HttpOutcome {
    HttpOutcome::Network {
        message: message.into(),
    }
}

/// Aborts its request when the timer fires; dropping it (the answer came) clears the timer.
struct Deadline {
    controller: web_sys::AbortController,
    fired: Rc<Cell<bool>>,
    _timer: Timeout,
}

impl Deadline {
    fn start(ms: u64) -> Option<Self> {
        let controller = web_sys::AbortController::new().ok()?;
        let fired = Rc::new(Cell::new(false));
        let (c, f) = (controller.clone(), fired.clone());
        let timer = Timeout::new(i64::try_from(ms).unwrap_or(i64::MAX), move || {
            f.set(true);
            c.abort();
        });
        Some(Self {
            controller,
            fired,
            _timer: timer,
        })
    }
}

/// No answer: aborted by the deadline, or the request failed.
fn no_answer(
    deadline: Option<&Deadline>,
    url: &str,
    timeout_ms: u64,
    error: gloo_net::Error,
) -> HttpOutcome {
    if deadline.is_some_and(|d| d.fired.get()) {
        network(format!("no answer from {url} within {timeout_ms} ms"))
    } else {
        network(error.to_string())
    }
}

impl Engine {
    pub(super) fn base_url(&self) -> String {
        self.config
            .borrow()
            .server_url
            .trim_end_matches('/')
            .to_owned()
    }

    /// The URL pushes go to.
    pub(super) fn push_url(&self) -> String {
        format!("{}/api/sync/push", self.base_url())
    }

    fn auth_headers(&self) -> Headers {
        let headers = Headers::new();
        if let Some(token) = self.config.borrow().token.as_deref() {
            headers.set("authorization", &format!("Bearer {token}"));
        }
        headers
    }

    /// Send one request; the answer's head, or no answer. `deadline` aborts it (body
    /// included) after `request_timeout_ms`.
    async fn send_raw(
        &self,
        method: Method,
        url: &str,
        headers: Headers,
        body: Option<JsValue>,
        deadline: Option<&Deadline>,
    ) -> Result<gloo_net::http::Response, HttpOutcome> {
        let timeout_ms = self.config.borrow().request_timeout_ms;
        let builder = RequestBuilder::new(url)
            .method(method)
            .headers(headers)
            .abort_signal(deadline.map(|d| d.controller.signal()).as_ref());
        let request = match body {
            Some(b) => builder.body(b),
            None => builder.build(),
        };
        match request {
            Ok(r) => r
                .send()
                .await
                .map_err(|e| no_answer(deadline, url, timeout_ms, e)),
            Err(e) => Err(network(e.to_string())),
        }
    }

    async fn send_http(
        &self,
        method: Method,
        url: &str,
        headers: Headers,
        body: Option<JsValue>,
    ) -> HttpOutcome {
        let timeout_ms = self.config.borrow().request_timeout_ms;
        let deadline = Deadline::start(timeout_ms);
        let response = match self
            .send_raw(method, url, headers, body, deadline.as_ref())
            .await
        {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        let retry_after = response.headers().get("retry-after");
        let body = match response.text().await {
            Ok(text) => text,
            // The status came, the body did not (cut off or too slow): no answer to judge.
            Err(e) => return no_answer(deadline.as_ref(), url, timeout_ms, e),
        };
        HttpOutcome::Response {
            status: response.status(),
            retry_after,
            body,
        }
    }

    /// `GET url` with the configured credentials, its body as bytes on a `200`; any other
    /// answer (or none) as an [`HttpOutcome`].
    pub(super) async fn get_bytes(&self, url: &str) -> Result<Vec<u8>, HttpOutcome> {
        let timeout_ms = self.config.borrow().request_timeout_ms;
        let deadline = Deadline::start(timeout_ms);
        let response = self
            .send_raw(
                Method::GET,
                url,
                self.auth_headers(),
                None,
                deadline.as_ref(),
            )
            .await?;
        if response.status() == 200 {
            return response
                .binary()
                .await
                .map_err(|e| no_answer(deadline.as_ref(), url, timeout_ms, e));
        }
        let retry_after = response.headers().get("retry-after");
        let body = response.text().await.unwrap_or_default();
        Err(HttpOutcome::Response {
            status: response.status(),
            retry_after,
            body,
        })
    }

    /// `PUT url` with `body` and these extra headers, with the configured credentials.
    pub(super) async fn put_bytes(
        &self,
        url: &str,
        extra: &[(&str, &str)],
        body: JsValue,
    ) -> HttpOutcome {
        let headers = self.auth_headers();
        for (name, value) in extra {
            headers.set(name, value);
        }
        self.send_http(Method::PUT, url, headers, Some(body)).await
    }

    /// `GET url` with the configured credentials.
    pub(super) async fn get(&self, url: &str) -> HttpOutcome {
        self.send_http(Method::GET, url, self.auth_headers(), None)
            .await
    }

    /// `POST /api/sync/push` with one batch.
    pub(super) async fn push(&self, body: &PushRequest) -> HttpOutcome {
        self.pushes.set(self.pushes.get() + 1);
        let text = match serde_json::to_string(body) {
            Ok(t) => t,
            Err(e) => return network(e.to_string()),
        };
        let headers = self.auth_headers();
        headers.set("content-type", "application/json");
        self.send_http(
            Method::POST,
            &self.push_url(),
            headers,
            Some(JsValue::from_str(&text)),
        )
        .await
    }

    /// `POST /api/backups` with a snapshot text.
    pub(super) async fn upload_backup(&self, text: String) -> HttpOutcome {
        let headers = self.auth_headers();
        headers.set("content-type", "application/json");
        let url = format!("{}/api/backups", self.base_url());
        self.send_http(Method::POST, &url, headers, Some(JsValue::from(text)))
            .await
    }

    /// Send a captured request again, as it was, with its `Idempotency-Key`.
    pub(super) async fn replay(
        &self,
        request: &CapturedRequest,
        idempotency_key: &str,
    ) -> HttpOutcome {
        let headers = Headers::new();
        for (k, v) in &request.headers {
            headers.append(k, v);
        }
        if !request.redacted.is_empty() {
            // A restored call: its secret headers come from the page, never from a snapshot.
            let given = self.capture_credentials.borrow();
            let missing: Vec<&str> = request
                .redacted
                .iter()
                .filter(|name| !given.contains_key(name.as_str()))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return network(format!(
                    "a restored call to {} waits for its {} header(s), which backups never hold: open the app (its captureCredentials gives them)",
                    request.url,
                    missing.join(", ")
                ));
            }
            for name in &request.redacted {
                if let Some(value) = given.get(name) {
                    headers.set(name, value);
                }
            }
        }
        headers.set("idempotency-key", idempotency_key);
        let method_name = request.method.to_ascii_uppercase();
        let Ok(method) = Method::from_bytes(method_name.as_bytes()) else {
            return network(format!("{method_name:?} is not an HTTP method"));
        };
        let body: Option<JsValue> = if matches!(method_name.as_str(), "GET" | "HEAD") {
            None
        } else {
            Some(Uint8Array::from(&request.body[..]).into())
        };
        self.send_http(method, &request.url, headers, body).await
    }
}

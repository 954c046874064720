//! Requests to the server: the sync push, the replay of a captured request, GETs. Every
//! outcome is an [`HttpOutcome`] for `shared::classify` to judge; nothing here decides.

use js_sys::Uint8Array;
use rangersync_shared::classify::HttpOutcome;
use rangersync_shared::outbox::CapturedRequest;
use rangersync_shared::protocol::PushRequest;
use wasm_bindgen::JsValue;

use super::Engine;
use crate::error::SwError;
use crate::js;

fn network(message: impl Into<String>) -> HttpOutcome {
    HttpOutcome::Network {
        message: message.into(),
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

    fn auth_headers(&self) -> Result<web_sys::Headers, JsValue> {
        let headers = web_sys::Headers::new()?;
        if let Some(token) = self.config.borrow().token.as_deref() {
            headers.set("authorization", &format!("Bearer {token}"))?;
        }
        Ok(headers)
    }

    async fn send_http(
        &self,
        method: &str,
        url: &str,
        headers: &web_sys::Headers,
        body: Option<&JsValue>,
    ) -> HttpOutcome {
        let init = web_sys::RequestInit::new();
        init.set_method(method);
        init.set_headers(headers);
        if let Some(b) = body {
            init.set_body(b);
        }
        let request = match web_sys::Request::new_with_str_and_init(url, &init) {
            Ok(r) => r,
            Err(e) => return network(SwError::from_js(&e).to_string()),
        };
        match js::fetch(&request).await {
            Err(message) => network(message),
            Ok(resp) => {
                let retry_after = resp.headers().get("retry-after").ok().flatten();
                let body = match resp.text() {
                    Ok(p) => js::await_promise(p)
                        .await
                        .ok()
                        .and_then(|v| v.as_string())
                        .unwrap_or_default(),
                    Err(_) => String::new(),
                };
                HttpOutcome::Response {
                    status: resp.status(),
                    retry_after,
                    body,
                }
            }
        }
    }

    /// `GET url` with the configured credentials.
    pub(super) async fn get(&self, url: &str) -> HttpOutcome {
        match self.auth_headers() {
            Ok(headers) => self.send_http("GET", url, &headers, None).await,
            Err(e) => network(SwError::from_js(&e).to_string()),
        }
    }

    /// `POST /api/sync/push` with one batch.
    pub(super) async fn push(&self, body: &PushRequest) -> HttpOutcome {
        self.pushes.set(self.pushes.get() + 1);
        let url = format!("{}/api/sync/push", self.base_url());
        let text = match serde_json::to_string(body) {
            Ok(t) => t,
            Err(e) => return network(e.to_string()),
        };
        let headers = match self.auth_headers() {
            Ok(h) => h,
            Err(e) => return network(SwError::from_js(&e).to_string()),
        };
        let _ = headers.set("content-type", "application/json");
        self.send_http("POST", &url, &headers, Some(&JsValue::from_str(&text)))
            .await
    }

    /// Send a captured request again, as it was, with its `Idempotency-Key`.
    pub(super) async fn replay(
        &self,
        request: &CapturedRequest,
        idempotency_key: &str,
    ) -> HttpOutcome {
        let Ok(headers) = web_sys::Headers::new() else {
            return network("Headers unavailable");
        };
        for (k, v) in &request.headers {
            let _ = headers.append(k, v);
        }
        let _ = headers.set("idempotency-key", idempotency_key);
        let method = request.method.to_ascii_uppercase();
        let body: Option<JsValue> = if matches!(method.as_str(), "GET" | "HEAD") {
            None
        } else {
            Some(Uint8Array::from(&request.body[..]).into())
        };
        self.send_http(&method, &request.url, &headers, body.as_ref())
            .await
    }
}

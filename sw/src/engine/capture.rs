//! Fetch capture: which requests the worker's fetch handler takes over, and queueing one when
//! the network does not answer.

use std::rc::Rc;

use js_sys::Array;
use rangersync_shared::outbox::{route_matches, CapturedRequest};
use rangersync_shared::protocol::ErrorDetail;

use super::Engine;
use crate::js;
use crate::store::NewEntry;

impl Engine {
    /// Whether the fetch handler should capture this request: a non-GET to a configured route,
    /// of this worker's own origin or the configured server's (never a third party's: its
    /// `Authorization` header would be stored and replayed).
    pub fn wants(&self, url: &str, method: &str) -> bool {
        if matches!(
            method.to_ascii_uppercase().as_str(),
            "GET" | "HEAD" | "OPTIONS"
        ) {
            return false;
        }
        let config = self.config.borrow();
        if config.capture_routes.is_empty() {
            return false;
        }
        let Ok(u) = web_sys::Url::new(url) else {
            return false;
        };
        let origin = u.origin();
        let own = js::global_prop("location")
            .and_then(|l| js_sys::Reflect::get(&l, &"origin".into()).ok())
            .and_then(|o| o.as_string());
        let server = web_sys::Url::new(&config.server_url)
            .ok()
            .map(|s| s.origin());
        if own.as_deref() != Some(origin.as_str()) && server.as_deref() != Some(origin.as_str()) {
            return false;
        }
        let path = u.pathname();
        config
            .capture_routes
            .iter()
            .any(|p| route_matches(p, &path))
    }

    /// Queue a captured REST request (the fetch handler's offline path). Returns its seq.
    pub async fn capture(self: &Rc<Self>, request: CapturedRequest) -> Result<u64, ErrorDetail> {
        self.write_one(NewEntry::Captured(request))
            .await
            .map_err(|e| e.detail())
    }
}

/// Whether a client URL has the worker's origin.
pub fn same_origin(client_url: &str, origin: &str) -> bool {
    web_sys::Url::new(client_url)
        .map(|u| u.origin() == origin)
        .unwrap_or(false)
}

/// Convert a list of headers from a JS `Headers` object.
pub fn headers_to_vec(headers: &web_sys::Headers) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(Some(iter)) = js_sys::try_iter(headers) {
        for pair in iter.flatten() {
            let pair = Array::from(&pair);
            if let (Some(k), Some(v)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                out.push((k, v));
            }
        }
    }
    out
}

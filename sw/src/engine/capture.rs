//! Fetch capture: which requests the worker's fetch handler takes over, keeping them in order
//! behind queued ones, and queueing one when the network does not answer.

use std::rc::Rc;

use js_sys::Array;
use rangersync_shared::capture::{matching_route, split_url};
use rangersync_shared::outbox::CapturedRequest;
use rangersync_shared::protocol::ErrorDetail;

use super::Engine;
use crate::js;
use crate::store::NewEntry;

/// This worker's (or page's) origin.
pub fn own_origin() -> String {
    js::global_prop("location")
        .and_then(|l| js_sys::Reflect::get(&l, &"origin".into()).ok())
        .and_then(|o| o.as_string())
        .unwrap_or_default()
}

impl Engine {
    /// The index of the capture route `url` falls under, if any: path routes apply to this
    /// worker's own origin and the configured sync server's, URL and `{origin, path}` routes to
    /// their own origin (never anything else: a third party's `Authorization` header must not
    /// be stored and replayed).
    fn route_of(&self, url: &str) -> Option<usize> {
        let config = self.config.borrow();
        if config.capture_routes.is_empty() {
            return None;
        }
        let server = split_url(&config.server_url).map(|(origin, _)| origin);
        matching_route(
            &config.capture_routes,
            url,
            &own_origin(),
            server.as_deref(),
        )
    }

    /// Whether the fetch handler should capture this request: a non-GET to a configured route.
    pub fn wants(&self, url: &str, method: &str) -> bool {
        if matches!(
            method.to_ascii_uppercase().as_str(),
            "GET" | "HEAD" | "OPTIONS"
        ) {
            return false;
        }
        self.route_of(url).is_some()
    }

    /// The largest captured body that is queued (`captureMaxBodyBytes`).
    pub fn capture_max_body_bytes(&self) -> u64 {
        self.config.borrow().capture_max_body_bytes
    }

    /// Whether a captured request of the same route is still waiting in the outbox: then a new
    /// call to that route must queue behind it instead of passing through (else the newer call
    /// reaches the API first and the older one, replayed later, overwrites it).
    pub fn must_queue_behind(&self, url: &str) -> bool {
        let Some(route) = self.route_of(url) else {
            return false;
        };
        self.captured
            .borrow()
            .values()
            .any(|queued| self.route_of(queued) == Some(route))
    }

    /// Queue a captured REST request (the fetch handler's offline path). Returns its seq.
    pub async fn capture(self: &Rc<Self>, request: CapturedRequest) -> Result<u64, ErrorDetail> {
        let url = request.url.clone();
        let seq = self
            .write_one(NewEntry::Captured(request))
            .await
            .map_err(|e| e.detail())?;
        self.captured.borrow_mut().insert(seq, url);
        Ok(seq)
    }

    /// Re-read which captured requests wait (after a restore or corrupt records).
    pub(super) async fn reload_captured(&self) {
        if let Ok(list) = self.store.captured_requests().await {
            *self.captured.borrow_mut() = list.into_iter().collect();
        }
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

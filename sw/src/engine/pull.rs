//! The change feed: pages of server changes after the stored cursor, into the local copy.

use std::rc::Rc;

use rangersync_shared::classify::HttpOutcome;
use rangersync_shared::protocol::PullResponse;

use super::Engine;

/// Changes asked for per pull request.
const PULL_PAGE: u32 = 500;
/// Pages read per flush at most (the rest comes with the next one).
const PULL_PAGES_PER_FLUSH: usize = 100;

impl Engine {
    pub(super) async fn pull(self: &Rc<Self>) -> Result<(), String> {
        let mut cursor = self.store.cursor().await.map_err(|e| e.to_string())?;
        for _ in 0..PULL_PAGES_PER_FLUSH {
            let since: String = js_sys::encode_uri_component(&cursor).into();
            let url = format!(
                "{}/api/sync/pull?since={since}&limit={PULL_PAGE}",
                self.base_url()
            );
            let body = match self.get(&url).await {
                HttpOutcome::Network { message } => return Err(message),
                HttpOutcome::Response { status, body, .. } if (200..300).contains(&status) => body,
                HttpOutcome::Response { status, .. } => {
                    return Err(format!("pull answered HTTP {status}"))
                }
            };
            let page: PullResponse = serde_json::from_str(&body)
                .map_err(|e| format!("pull answer is malformed: {e}"))?;
            let (changed, skipped) = self
                .store
                .apply_pull(&page.changes, &page.cursor)
                .await
                .map_err(|e| e.to_string())?;
            for (collection, key) in changed {
                self.broadcast_change(&collection, &key);
            }
            // A skipped change (its entity had a pending write) is fetched again next time:
            // the stored cursor stays before it, so stop here.
            if skipped || !page.has_more {
                break;
            }
            cursor = page.cursor;
        }
        Ok(())
    }
}

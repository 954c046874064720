//! The change feed: pages of server changes after the stored cursor, into the local copy.

use std::rc::Rc;

use rangersync_shared::classify::{classify_pull, pull_unreadable};
use rangersync_shared::messages::codes;
use rangersync_shared::protocol::PullResponse;

use super::Engine;
use crate::js::now;

/// Changes asked for per pull request.
const PULL_PAGE: u32 = 500;
/// Pages read per flush at most (the rest comes with the next one).
const PULL_PAGES_PER_FLUSH: usize = 100;

impl Engine {
    /// `Err((code, message))` as [`classify_pull`] says, or a storage error. A `410
    /// cursor_expired` starts a full re-pull (`rangersync_shared::resync`) instead of failing.
    pub(super) async fn pull(self: &Rc<Self>) -> Result<(), (&'static str, String)> {
        let storage = |e: crate::error::SwError| (codes::STORAGE_ERROR, e.to_string());
        let (mut cursor, mut resync) = self.store.pull_position().await.map_err(storage)?;
        for _ in 0..PULL_PAGES_PER_FLUSH {
            let since: String = js_sys::encode_uri_component(&cursor).into();
            let url = format!(
                "{}/api/sync/pull?since={since}&limit={PULL_PAGE}",
                self.base_url()
            );
            let body = match classify_pull(self.get(&url).await, &url) {
                Err((codes::CURSOR_EXPIRED, _)) if !cursor.is_empty() => {
                    let local_only = self.config.borrow().local_only.clone();
                    let epoch = self.store.begin_resync(now(), &local_only).await;
                    resync = Some(epoch.map_err(storage)?);
                    cursor = String::new();
                    continue;
                }
                answer => answer?,
            };
            let page: PullResponse = serde_json::from_str(&body)
                .map_err(|e| pull_unreadable(&url, &body, &e.to_string()))?;
            let (changed, skipped) = self
                .store
                .apply_pull(&page.changes, &page.cursor)
                .await
                .map_err(storage)?;
            for (collection, key) in changed {
                self.broadcast_change(&collection, &key);
            }
            // A skipped change (its entity had a pending write) is fetched again next time:
            // the stored cursor stays before it, so stop here (a re-pull goes on from there).
            if skipped {
                break;
            }
            if !page.has_more {
                if let Some(epoch) = resync {
                    let dropped = self.store.finish_resync(epoch).await.map_err(storage)?;
                    for (collection, key) in dropped {
                        self.broadcast_change(&collection, &key);
                    }
                }
                break;
            }
            cursor = page.cursor;
        }
        Ok(())
    }
}

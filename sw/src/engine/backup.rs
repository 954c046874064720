//! Snapshots of the local state: export (manual and scheduled) and restore with a dry run.

use std::collections::HashMap;
use std::rc::Rc;

use rangersync_shared::messages::ExportFormat;
use rangersync_shared::outbox::Item;
use rangersync_shared::protocol::{Entity, ErrorDetail, Op};
use rangersync_shared::snapshot::{self, SnapshotSource};
use serde_json::Value;

use super::Engine;
use crate::error::SwError;
use crate::js::now;
use crate::schema::meta;
use crate::store::NewEntry;

impl Engine {
    pub(super) async fn export(
        &self,
        format: ExportFormat,
    ) -> Result<(snapshot::Snapshot, String), SwError> {
        let at = now();
        let entities = self
            .store
            .entities(None)
            .await?
            .iter()
            .map(|e| e.to_entity())
            .collect();
        let outbox = self
            .store
            .outbox_records()
            .await?
            .iter()
            .filter_map(|r| r.to_entry(&self.client_id).ok())
            .filter_map(|e| match e.item {
                Item::Mutation(m) => Some(m),
                Item::Request(_) => None,
            })
            .collect();
        let snap = snapshot::build(
            SnapshotSource::Client,
            Some(self.client_id.clone()),
            env!("CARGO_PKG_VERSION"),
            at,
            entities,
            outbox,
        );
        let text = snapshot::encode(&snap, format);
        self.store
            .put_meta(meta::LAST_EXPORTED_AT, &(at as f64).into())
            .await?;
        self.update_counts(|c| c.last_exported_at = Some(at));
        self.broadcast_status();
        Ok((snap, text))
    }

    /// Check a snapshot, plan its restore against the local copy, and (unless `dry_run`) apply
    /// the plan as ordinary writes, so they sync like any other.
    pub(super) async fn restore(
        self: &Rc<Self>,
        text: &str,
        dry_run: bool,
    ) -> Result<Value, SwError> {
        let snap = snapshot::decode(text)?;
        let current: HashMap<(String, String), Entity> = self
            .store
            .entities(None)
            .await?
            .into_iter()
            .map(|e| ((e.collection.clone(), e.key.clone()), e.to_entity()))
            .collect();
        let lookup = |c: &str, k: &str| current.get(&(c.to_owned(), k.to_owned())).cloned();
        let report = snapshot::plan_restore(&snap, &lookup, dry_run);
        if !dry_run {
            let by_key: HashMap<(&str, &str), &Entity> = snap
                .entities
                .iter()
                .map(|e| ((e.collection.as_str(), e.key.as_str()), e))
                .collect();
            let at = now();
            let entries: Vec<NewEntry> = report
                .added
                .iter()
                .chain(&report.replaced)
                .filter_map(|r| by_key.get(&(r.collection.as_str(), r.key.as_str())))
                .map(|e| NewEntry::Write {
                    collection: e.collection.clone(),
                    key: e.key.clone(),
                    op: if e.deleted { Op::Delete } else { Op::Put },
                    value: if e.deleted {
                        Value::Null
                    } else {
                        e.value.clone()
                    },
                    updated_at: at,
                })
                .collect();
            if !entries.is_empty() {
                self.write(entries).await?;
            }
        }
        Ok(serde_json::to_value(report).unwrap_or(Value::Null))
    }

    /// A scheduled export (`config.export_interval_ms`), kept in the `snapshots` store (last 3).
    /// Runs on periodic sync and at start when due.
    pub async fn scheduled_export(self: &Rc<Self>) -> Result<bool, ErrorDetail> {
        let Some(interval) = self.config.borrow().export_interval_ms else {
            return Ok(false);
        };
        let last = self.counts.get().last_exported_at.unwrap_or(0);
        if now() - last < interval as i64 {
            return Ok(false);
        }
        let (snap, text) = self
            .export(ExportFormat::Json)
            .await
            .map_err(|e| e.detail())?;
        self.store
            .keep_snapshot(snap.exported_at, &text)
            .await
            .map_err(|e| e.detail())?;
        Ok(true)
    }
}

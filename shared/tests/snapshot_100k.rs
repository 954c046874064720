//! Measures building, encoding and verifying a snapshot of 100,000 entities: time and peak
//! heap (a counting allocator), so the numbers in BENCHMARKS.md can be reproduced:
//! `cargo test --release -p rangersync-shared --test snapshot_100k -- --ignored --nocapture`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rangersync_shared::messages::ExportFormat;
use rangersync_shared::protocol::Entity;
use rangersync_shared::snapshot::{self, SnapshotSource};
use serde_json::json;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Reset the peak to what is live now; returns it.
fn reset_peak() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}

#[test]
#[ignore = "a measurement: run with --release --ignored --nocapture"]
fn a_snapshot_of_100k_entities_is_built_encoded_and_verified_within_bounded_memory() {
    let n = 100_000;
    let entities: Vec<Entity> = (0..n)
        .map(|i| Entity {
            collection: "notes".into(),
            key: format!("note-{i:06}"),
            value: json!({ "title": format!("Note {i}"), "body": "x".repeat(60), "n": i }),
            deleted: false,
            updated_at: 1_764_000_000_000 + i as i64,
            version: i as u64,
        })
        .collect();
    let base = reset_peak();
    let t = Instant::now();
    let snap = snapshot::build(
        SnapshotSource::Client,
        Some("c1".into()),
        "bench",
        1_764_000_000_000,
        entities,
        Vec::new(),
    );
    let build_ms = t.elapsed().as_millis();
    let build_peak = PEAK.load(Ordering::Relaxed) - base;
    let held = LIVE.load(Ordering::Relaxed);

    reset_peak();
    let t = Instant::now();
    let text = snapshot::encode(&snap, ExportFormat::Json);
    let encode_ms = t.elapsed().as_millis();
    let encode_peak = PEAK.load(Ordering::Relaxed) - held;

    drop(snap);
    let before_decode = reset_peak();
    let t = Instant::now();
    let back = snapshot::decode(&text).expect("verifies");
    let decode_ms = t.elapsed().as_millis();
    let decode_peak = PEAK.load(Ordering::Relaxed) - before_decode;
    assert_eq!(back.entities.len(), n);
    println!(
        "100k entities: the data {:.1} MiB; build (sort, counts, checksum) {build_ms} ms, \
         {:.1} MiB over the data; JSON text {:.1} MiB, encode {encode_ms} ms, {:.1} MiB over; \
         decode + verify {decode_ms} ms, {:.1} MiB over the text",
        mib(base),
        mib(build_peak),
        mib(text.len()),
        mib(encode_peak),
        mib(decode_peak)
    );
}

//! The Flask service lost 94-95% of concurrent posts (objects named by the second
//! overwrote each other). Here every acknowledged record must be in the bucket
//! exactly once, and grouping must cut the number of objects.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::helpers::{Backend, ROBOT, spawn};

async fn concurrent_senders_lose_nothing(backend: Backend) {
    let app = Arc::new(spawn(backend).await);
    const SENDERS: u64 = 32;
    const POSTS: u64 = 25;
    const PER_POST: u64 = 4;
    let procedures: Vec<String> = (0..4).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let acknowledged = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let app = Arc::clone(&app);
            let acknowledged = Arc::clone(&acknowledged);
            let procedure = procedures[(sender % 4) as usize].clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for post in 0..POSTS {
                    let records: Vec<Value> = (0..PER_POST)
                        .map(|i| {
                            json!({"procedure_id": procedure, "robot_id": ROBOT,
                                        "timestamp": "2026-11-28 10:00:00.000",
                                        "id": format!("{sender}-{post}-{i}")})
                        })
                        .collect();
                    let reply = app.post_telemetry(&Value::Array(records)).await;
                    assert_eq!(reply.status, 201, "{}", reply.text);
                    acknowledged.fetch_add(PER_POST, Ordering::Relaxed);
                    acked.extend((0..PER_POST).map(|i| format!("{sender}-{post}-{i}")));
                }
                acked
            })
        })
        .collect();
    let mut expected = Vec::new();
    for t in tasks {
        expected.extend(t.await.expect("sender"));
    }
    let (records, objects) = app.stored_records("telemetry/").await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in &records {
        *seen
            .entry(r["id"].as_str().expect("id").to_owned())
            .or_default() += 1;
    }
    let sent = SENDERS * POSTS * PER_POST;
    let duplicates = seen.values().filter(|n| **n > 1).count();
    let missing = expected.iter().filter(|id| !seen.contains_key(*id)).count();
    println!(
        "{backend:?}: sent {sent} records in {} posts from {SENDERS} senders; acknowledged {}; found {} \
         ({} distinct, {duplicates} duplicated, {missing} missing) in {objects} objects = {:.1} objects per 1000 records",
        SENDERS * POSTS,
        acknowledged.load(Ordering::Relaxed),
        records.len(),
        seen.len(),
        objects as f64 * 1000.0 / records.len() as f64
    );
    assert_eq!(acknowledged.load(Ordering::Relaxed), sent);
    assert_eq!(missing, 0);
    assert_eq!(duplicates, 0);
    assert_eq!(records.len() as u64, sent);
    assert!(
        objects < (SENDERS * POSTS) as usize / 2,
        "grouping: {objects} objects for {} posts",
        SENDERS * POSTS
    );
}

on_both_backends!(concurrent_senders_lose_nothing);

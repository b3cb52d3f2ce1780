//! A robot simulator, so a newcomer sees data flow end to end: picks operational
//! robots from the api-service (or invents ids), opens a procedure for each, streams
//! telemetry arrays with an `Idempotency-Key` per request (retrying 503/409 as a
//! robot would), then closes the procedures and prints a summary. Every request it
//! gives up on is logged and counted, with its records, in the summary: in
//! particular a 422 for an `Idempotency-Key` (keys are scoped to the caller's API
//! key, so a 422 means the simulator reused one of its own keys: a bug, reported as
//! such rather than dropped).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

/// `data-ingestion simulate` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// data-ingestion base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub ingest_url: String,
    /// api-service base URL, to pick real robots (falls back to invented ids).
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    pub api_url: String,
    /// Robots streaming at once.
    #[arg(long, default_value_t = 3)]
    pub robots: usize,
    /// How long to stream.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Samples per second per robot.
    #[arg(long, default_value_t = 20)]
    pub rate: u32,
    /// Samples per request.
    #[arg(long, default_value_t = 10)]
    pub per_request: usize,
}

#[derive(Debug, Default)]
struct RobotReport {
    requests: u64,
    records: u64,
    failed: u64,
    records_not_stored: u64,
    key_conflicts: u64,
    keys: BTreeSet<String>,
}

/// How a POST ended.
enum Posted {
    /// 201 with this answer.
    Stored(Value),
    /// 422: the `Idempotency-Key` was used for a different body.
    KeyConflict,
    /// Another final answer, or retries exhausted.
    Failed,
}

async fn pick_robots(client: &reqwest::Client, args: &SimulateArgs) -> (Vec<String>, bool) {
    let url = format!("{}/api/robots?status=operational", args.api_url);
    let found: Option<Vec<String>> = async {
        let body: Value = client.get(url).send().await.ok()?.json().await.ok()?;
        Some(
            body["robots"]
                .as_array()?
                .iter()
                .filter_map(|r| r["robot_id"].as_str().map(str::to_owned))
                .take(args.robots)
                .collect(),
        )
    }
    .await;
    match found {
        Some(ids) if !ids.is_empty() => (ids, true),
        _ => (
            (0..args.robots)
                .map(|_| Uuid::new_v4().to_string())
                .collect(),
            false,
        ),
    }
}

/// POSTs `body`, retrying what a robot should retry.
async fn post(client: &reqwest::Client, url: &str, body: &Value, key: &str) -> Posted {
    let mut delay = Duration::from_millis(100);
    for _ in 0..8 {
        let res = client
            .post(url)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await;
        match res {
            Ok(r) if r.status().as_u16() == 201 => {
                return r.json().await.map_or(Posted::Failed, Posted::Stored);
            }
            // 409 with Retry-After: the same key is in progress; without it the
            // stored procedure differs, which no retry changes.
            Ok(r) if matches!(r.status().as_u16(), 429 | 503) => {}
            Ok(r) if r.status().as_u16() == 409 && r.headers().contains_key("retry-after") => {}
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                if status.as_u16() == 422 && text.contains("Idempotency-Key") {
                    eprintln!(
                        "simulate: BUG: {url} refused Idempotency-Key {key} as reused for a different body \
                         (keys are per API key, so the simulator repeated one of its own); not stored: {text}"
                    );
                    return Posted::KeyConflict;
                }
                eprintln!("simulate: {url} answered {status}; not stored: {text}");
                return Posted::Failed;
            }
            Err(_) => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    eprintln!("simulate: {url} gave up after retries (Idempotency-Key {key}); not stored");
    Posted::Failed
}

impl RobotReport {
    /// Counts a request that was not stored, with its records.
    fn lost(&mut self, posted: &Posted, records: u64) {
        self.failed += 1;
        self.records_not_stored += records;
        if matches!(posted, Posted::KeyConflict) {
            self.key_conflicts += 1;
        }
    }
}

const INSTRUMENTS: [&str; 3] = ["needle_driver", "bipolar_forceps", "monopolar_scissors"];

fn sample(procedure: &str, robot: &str, seq: u64) -> Value {
    let t = seq as f64 / 10.0;
    json!({
        "procedure_id": procedure,
        "robot_id": robot,
        "timestamp": Utc::now().format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        "sequence": seq,
        "arm_positions": (1..=4).map(|arm| json!({
            "arm": arm,
            "x_mm": (t + f64::from(arm)).sin() * 120.0,
            "y_mm": (t * 0.7 + f64::from(arm)).cos() * 80.0,
            "z_mm": 40.0 + (t * 0.3).sin() * 5.0,
        })).collect::<Vec<_>>(),
        "force_feedback_n": 1.5 + (t * 1.3).sin().abs() * 2.0,
        "instrument": INSTRUMENTS[(seq / 50 % 3) as usize],
        "camera": {"zoom": 1.0 + (t * 0.1).sin().abs(), "fps": 60},
        "system_temp_c": 36.5 + (t * 0.05).sin(),
        "network_latency_ms": 4 + seq % 3,
    })
}

async fn run_robot(
    client: reqwest::Client,
    args: SimulateArgs,
    robot: String,
    register: bool,
) -> RobotReport {
    let mut report = RobotReport::default();
    let procedure = Uuid::new_v4().to_string();
    let started = Utc::now();
    let procedure_url = format!("{}/ingest/procedure", args.ingest_url);
    let mut row = json!({
        "procedure_id": procedure, "robot_id": robot, "procedure_type": "Cholecystectomy",
        "procedure_category": "General Surgery", "start_time": started.to_rfc3339(),
        "end_time": started.to_rfc3339(), "duration_minutes": 0, "surgeon_id": "SURG-SIM",
        "surgeon_name": "Dr. Simulator", "patient_id": format!("PAT-SIM-{}", &procedure[..8]),
        "patient_age": 52, "patient_gender": "female", "complexity_score": 2.5, "status": "in_progress",
    });
    if register {
        let posted = post(
            &client,
            &procedure_url,
            &row,
            &format!("sim-open-{procedure}"),
        )
        .await;
        if !matches!(posted, Posted::Stored(_)) {
            report.lost(&posted, 1);
        }
    }
    let telemetry_url = format!("{}/ingest/telemetry", args.ingest_url);
    let interval = Duration::from_secs_f64(args.per_request as f64 / f64::from(args.rate.max(1)));
    let mut tick = tokio::time::interval(interval);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut seq = 0u64;
    while Instant::now() < deadline {
        tick.tick().await;
        let batch: Vec<Value> = (0..args.per_request)
            .map(|_| {
                seq += 1;
                sample(&procedure, &robot, seq)
            })
            .collect();
        report.requests += 1;
        let key = format!("sim-{procedure}-{seq}");
        match post(&client, &telemetry_url, &Value::Array(batch), &key).await {
            Posted::Stored(answer) => {
                report.records += args.per_request as u64;
                if let Some(k) = answer["s3_key"].as_str() {
                    report.keys.insert(k.to_owned());
                }
            }
            lost => report.lost(&lost, args.per_request as u64),
        }
    }
    if register {
        let ended = Utc::now();
        row["end_time"] = json!(ended.to_rfc3339());
        row["duration_minutes"] = json!((ended - started).num_minutes());
        row["status"] = json!("completed");
        let posted = post(
            &client,
            &procedure_url,
            &row,
            &format!("sim-close-{procedure}"),
        )
        .await;
        if !matches!(posted, Posted::Stored(_)) {
            report.lost(&posted, 1);
        }
    }
    report
}

/// Runs the simulation and prints a one-line JSON summary.
pub async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let (robots, registered) = pick_robots(&client, &args).await;
    if !registered {
        eprintln!(
            "simulate: api-service not reachable at {}; streaming telemetry for invented robots without procedure rows",
            args.api_url
        );
    }
    let tasks: Vec<_> = robots
        .into_iter()
        .map(|robot| tokio::spawn(run_robot(client.clone(), args.clone(), robot, registered)))
        .collect();
    let mut total = RobotReport::default();
    for task in tasks {
        let r = task.await?;
        total.requests += r.requests;
        total.records += r.records;
        total.failed += r.failed;
        total.records_not_stored += r.records_not_stored;
        total.key_conflicts += r.key_conflicts;
        total.keys.extend(r.keys);
    }
    println!(
        "{}",
        json!({
            "robots": args.robots,
            "requests": total.requests,
            "records_acknowledged": total.records,
            "failed_requests": total.failed,
            "records_not_stored": total.records_not_stored,
            "idempotency_key_conflicts": total.key_conflicts,
            "objects": total.keys.len(),
            "procedures_registered": registered,
        })
    );
    anyhow::ensure!(total.failed == 0, "{} requests failed", total.failed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 422 for a reused `Idempotency-Key` (against the real app, embedded backend)
    /// is reported as the simulator's own bug and counted with its records.
    #[tokio::test]
    async fn a_reused_key_is_counted_with_its_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let env: std::collections::HashMap<String, String> = [
            ("APP_SERVER__HOST", "127.0.0.1".to_owned()),
            ("APP_SERVER__PORT", "0".to_owned()),
            ("APP_SERVER__DRAIN_DELAY_SECS", "0".to_owned()),
            ("APP_DATABASE__MIGRATE_ON_START", "true".to_owned()),
            ("APP_DATABASE__SQLITE_PATH", path("sim.db")),
            ("APP_STORAGE__LOCAL_DIR", path("bucket")),
            ("APP_INGEST__GROUP_WINDOW_MS", "10".to_owned()),
            ("APP_AUTH__ENABLED", "false".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let settings =
            common::Settings::from_env(common::Service::Ingestion, &env).expect("settings");
        let app = crate::Application::build(settings).await.expect("app");
        let url = format!("http://127.0.0.1:{}/ingest/telemetry", app.port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let (procedure, robot) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
        let first = json!([sample(&procedure, &robot, 1)]);
        let stored = post(&client, &url, &first, "sim-key").await;
        assert!(matches!(stored, Posted::Stored(_)));
        let other = json!([sample(&procedure, &robot, 2), sample(&procedure, &robot, 3)]);
        let refused = post(&client, &url, &other, "sim-key").await;
        assert!(matches!(refused, Posted::KeyConflict));
        let mut report = RobotReport::default();
        report.lost(&refused, 2);
        assert_eq!(
            (
                report.failed,
                report.records_not_stored,
                report.key_conflicts
            ),
            (1, 2, 1)
        );
        let _ = stop.send(());
        server.await.expect("join").expect("server");
    }
}

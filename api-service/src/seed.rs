//! Deterministic demo data: 10 facilities, 50 robots, about 200 maintenance logs,
//! 5000 procedures over the two years before an anchor date, and an outcome for
//! every completed procedure, all inside the schema's CHECK constraints. The same
//! anchor date always produces the same rows (ids included). Patients and surgeons
//! are synthetic.

use chrono::{Datelike, Duration, NaiveDate, NaiveTime};
use common::{Arg, Db, DbError, Query};
use uuid::Uuid;

/// How much demo data to create.
#[derive(Debug, Clone, Copy)]
pub struct SeedPlan {
    /// Robots (spread over the facilities).
    pub robots: usize,
    /// Procedures over the two years before the anchor.
    pub procedures: usize,
    /// Maintenance logs per robot.
    pub maintenance_per_robot: usize,
}

impl Default for SeedPlan {
    fn default() -> Self {
        Self {
            robots: 50,
            procedures: 5000,
            maintenance_per_robot: 4,
        }
    }
}

/// What the seed wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeedReport {
    /// Robots inserted.
    pub robots: usize,
    /// Maintenance logs inserted.
    pub maintenance_logs: usize,
    /// Procedures inserted.
    pub procedures: usize,
    /// Outcomes inserted.
    pub outcomes: usize,
}

const FACILITIES: [(&str, &str); 10] = [
    ("FAC-001", "St. Mary's Medical Center"),
    ("FAC-002", "Riverside General Hospital"),
    ("FAC-003", "Lakeview University Hospital"),
    ("FAC-004", "Northgate Regional Medical Center"),
    ("FAC-005", "Mercy Heart Institute"),
    ("FAC-006", "Summit Orthopedic Hospital"),
    ("FAC-007", "Bayside Children's and Women's Hospital"),
    ("FAC-008", "Pinecrest Community Hospital"),
    ("FAC-009", "Harborview Surgical Center"),
    ("FAC-010", "Valley Medical Center"),
];

const MODELS: [(&str, &str, &str); 5] = [
    ("da Vinci Xi", "Intuitive Surgical", "4.2"),
    ("da Vinci SP", "Intuitive Surgical", "3.1"),
    ("Hugo RAS", "Medtronic", "2.4"),
    ("Versius", "CMR Surgical", "5.0"),
    ("Mako SmartRobotics", "Stryker", "4.0"),
];

const CATEGORIES: [(&str, &[&str]); 5] = [
    (
        "Urology",
        &[
            "Radical Prostatectomy",
            "Partial Nephrectomy",
            "Pyeloplasty",
        ],
    ),
    (
        "Gynecology",
        &["Hysterectomy", "Myomectomy", "Sacrocolpopexy"],
    ),
    (
        "General Surgery",
        &["Cholecystectomy", "Inguinal Hernia Repair", "Colectomy"],
    ),
    ("Cardiothoracic", &["Lobectomy", "Mitral Valve Repair"]),
    (
        "Orthopedics",
        &["Total Knee Arthroplasty", "Total Hip Arthroplasty"],
    ),
];

const SURGEONS: [&str; 12] = [
    "Dr. Amelia Hart",
    "Dr. Rajiv Menon",
    "Dr. Sofia Alvarez",
    "Dr. Daniel Okafor",
    "Dr. Hannah Lindqvist",
    "Dr. Marcus Chen",
    "Dr. Priya Raman",
    "Dr. Tomasz Nowak",
    "Dr. Grace Whitfield",
    "Dr. Kenji Watanabe",
    "Dr. Leila Haddad",
    "Dr. Owen Gallagher",
];

const TECHNICIANS: [&str; 6] = [
    "Jordan Blake",
    "Sam Rivera",
    "Alex Morgan",
    "Casey Nguyen",
    "Taylor Brooks",
    "Riley Patel",
];

/// SplitMix64: tiny, fast and deterministic; demo data needs no more.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
    fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next().to_be_bytes());
        bytes[8..].copy_from_slice(&self.next().to_be_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

struct RobotRow {
    id: Uuid,
    serial: String,
    model: usize,
    installed: NaiveDate,
    facility: usize,
    status: &'static str,
    last_maintenance: Option<NaiveDate>,
    procedures: i64,
}

/// Fills an empty database; does nothing (and says so) when robots already exist.
pub async fn seed(
    db: &Db,
    anchor: NaiveDate,
    plan: SeedPlan,
) -> Result<Option<SeedReport>, DbError> {
    let existing = db
        .fetch_all(Query::new("SELECT COUNT(*) AS n FROM surgical_robots"))
        .await?
        .get_i64(0, "n")?
        .unwrap_or(0);
    if existing > 0 {
        return Ok(None);
    }
    let mut rng = Rng(0x5EED_0000 ^ anchor.num_days_from_ce() as u64);
    let window_start = anchor - Duration::days(730);

    let mut robots: Vec<RobotRow> = (0..plan.robots)
        .map(|i| {
            let facility = i % FACILITIES.len();
            let model = rng.range(0, MODELS.len() as i64 - 1) as usize;
            let status = match rng.range(0, 99) {
                0..=79 => "operational",
                80..=93 => "maintenance",
                _ => "retired",
            };
            RobotRow {
                id: rng.uuid(),
                serial: format!("MR-{}-{:04}", &FACILITIES[facility].0[4..], 1000 + i),
                model,
                installed: window_start - Duration::days(rng.range(30, 1500)),
                facility,
                status,
                last_maintenance: None,
                procedures: 0,
            }
        })
        .collect();

    let mut maintenance = Vec::new();
    for (r, robot) in robots.iter_mut().enumerate() {
        for _ in 0..plan.maintenance_per_robot {
            let date = anchor - Duration::days(rng.range(1, 729));
            robot.last_maintenance = robot.last_maintenance.max(Some(date));
            maintenance.push((r, date, rng.next()));
        }
    }

    // Procedures: spread over the window, none on a robot before its installation.
    let mut procedures = Vec::with_capacity(plan.procedures);
    for _ in 0..plan.procedures {
        let r = rng.range(0, robots.len() as i64 - 1) as usize;
        let minute = rng.range(0, 730 * 24 * 60 - 1);
        let start = window_start.and_time(NaiveTime::MIN) + Duration::minutes(minute);
        let recent = anchor.and_time(NaiveTime::MIN) - start < Duration::days(1);
        let status = if recent && rng.chance(50) {
            "in_progress"
        } else {
            match rng.range(0, 99) {
                0..=84 => "completed",
                85..=88 => "aborted",
                _ => "cancelled",
            }
        };
        robots[r].procedures += 1;
        procedures.push((r, start, status, rng.next()));
    }

    let robot_q = robots_insert(&robots);
    db.execute(robot_q).await?;
    let mut report = SeedReport {
        robots: robots.len(),
        ..SeedReport::default()
    };

    for chunk in maintenance.chunks(200) {
        let mut q = Query::new(
            "INSERT INTO robot_maintenance_logs (maintenance_id, robot_id, maintenance_date, \
             maintenance_type, technician_id, technician_name, issues_found, actions_taken, \
             parts_replaced, downtime_hours, next_maintenance_date, cost) VALUES ",
        );
        for (n, (r, date, seed)) in chunk.iter().enumerate() {
            let mut rng = Rng(*seed);
            let kind = *rng.pick(&["routine", "routine", "calibration", "upgrade", "emergency"]);
            let tech = rng.range(0, TECHNICIANS.len() as i64 - 1) as usize;
            let (issues, actions, parts) = match kind {
                "emergency" => (
                    Some("Instrument arm fault during pre-op check"),
                    "Replaced arm joint encoder",
                    Some("Joint encoder (arm 2)"),
                ),
                "upgrade" => (None, "Installed firmware update", None),
                "calibration" => (
                    Some("Camera drift above tolerance"),
                    "Recalibrated endoscope and arms",
                    None,
                ),
                _ => (None, "Preventive maintenance checklist completed", None),
            };
            let downtime = f64::from(rng.range(50, 2400) as i32) / 100.0;
            let cost = f64::from(rng.range(25_000, 2_500_000) as i32) / 100.0;
            if n > 0 {
                q.push(",");
            }
            q.push("(");
            push_values(
                &mut q,
                [
                    Arg::Uuid(rng.uuid()),
                    Arg::Uuid(robots[*r].id),
                    Arg::Date(*date),
                    kind.into(),
                    format!("TECH-{:03}", tech + 1).into(),
                    TECHNICIANS[tech].into(),
                    issues.map(str::to_owned).into(),
                    actions.into(),
                    parts.map(str::to_owned).into(),
                    Arg::Float(downtime),
                    Arg::Date(*date + Duration::days(90)),
                    Arg::Float(cost),
                ],
            );
            q.push(")");
        }
        db.execute(q).await?;
        report.maintenance_logs += chunk.len();
    }

    for chunk in procedures.chunks(250) {
        let mut pq = Query::new(
            "INSERT INTO surgical_procedures (procedure_id, robot_id, procedure_type, \
             procedure_category, start_time, end_time, duration_minutes, surgeon_id, surgeon_name, \
             patient_id, patient_age, patient_gender, complexity_score, status) VALUES ",
        );
        let mut oq = Query::new(
            "INSERT INTO procedure_outcomes (outcome_id, procedure_id, success_status, blood_loss_ml, \
             complications, hospital_stay_days, readmission_30day, patient_satisfaction_score, \
             surgeon_notes, recovery_score, follow_up_required) VALUES ",
        );
        let mut outcomes = 0;
        for (n, (r, start, status, seed)) in chunk.iter().enumerate() {
            let mut rng = Rng(*seed);
            let id = rng.uuid();
            let (category, types) = *rng.pick(&CATEGORIES);
            let procedure_type = *rng.pick(types);
            let duration = rng.range(45, 360);
            let end = *start + Duration::minutes(if *status == "cancelled" { 0 } else { duration });
            let surgeon = rng.range(0, SURGEONS.len() as i64 - 1) as usize;
            let complexity = f64::from(rng.range(100, 500) as i32) / 100.0;
            if n > 0 {
                pq.push(",");
            }
            pq.push("(");
            push_values(
                &mut pq,
                [
                    Arg::Uuid(id),
                    Arg::Uuid(robots[*r].id),
                    procedure_type.into(),
                    category.into(),
                    Arg::Timestamp(*start),
                    Arg::Timestamp(end),
                    Arg::Int(if *status == "cancelled" { 0 } else { duration }),
                    format!("SURG-{:03}", surgeon + 1).into(),
                    SURGEONS[surgeon].into(),
                    format!("PAT-{:06}", rng.range(1, 999_999)).into(),
                    Arg::Int(rng.range(18, 92)),
                    (*rng.pick(&["female", "male", "female", "male", "other"])).into(),
                    Arg::Float(complexity),
                    (*status).into(),
                ],
            );
            pq.push(")");
            if *status == "completed" {
                let success = match rng.range(0, 99) {
                    0..=84 => "successful",
                    85..=96 => "complicated",
                    _ => "failed",
                };
                let complications = match success {
                    "complicated" => Some(*rng.pick(&[
                        "Post-operative ileus",
                        "Minor bleeding, managed conservatively",
                        "Surgical site infection",
                    ])),
                    "failed" => Some("Conversion to open surgery"),
                    _ => None,
                };
                if outcomes > 0 {
                    oq.push(",");
                }
                oq.push("(");
                push_values(
                    &mut oq,
                    [
                        Arg::Uuid(rng.uuid()),
                        Arg::Uuid(id),
                        success.into(),
                        Arg::Int(rng.range(0, if success == "successful" { 300 } else { 900 })),
                        complications.map(str::to_owned).into(),
                        Arg::Int(rng.range(0, if success == "successful" { 4 } else { 14 })),
                        Arg::Bool(success != "successful" && rng.chance(30)),
                        Arg::Int(rng.range(if success == "successful" { 6 } else { 1 }, 10)),
                        (*rng.pick(&[
                            "Uneventful procedure",
                            "Good visualisation throughout",
                            "Adhesiolysis required",
                            "Docking took longer than usual",
                        ]))
                        .into(),
                        Arg::Int(rng.range(if success == "successful" { 60 } else { 10 }, 100)),
                        Arg::Bool(success != "successful" || rng.chance(20)),
                    ],
                );
                oq.push(")");
                outcomes += 1;
            }
        }
        db.execute(pq).await?;
        report.procedures += chunk.len();
        if outcomes > 0 {
            db.execute(oq).await?;
            report.outcomes += outcomes;
        }
    }
    Ok(Some(report))
}

fn robots_insert(robots: &[RobotRow]) -> Query {
    let mut q = Query::new(
        "INSERT INTO surgical_robots (robot_id, robot_serial_number, robot_model, manufacturer, \
         installation_date, facility_id, facility_name, status, last_maintenance_date, \
         total_procedures, firmware_version) VALUES ",
    );
    for (n, robot) in robots.iter().enumerate() {
        let (model, manufacturer, firmware) = MODELS[robot.model];
        let (facility_id, facility_name) = FACILITIES[robot.facility];
        if n > 0 {
            q.push(",");
        }
        q.push("(");
        push_values(
            &mut q,
            [
                Arg::Uuid(robot.id),
                robot.serial.as_str().into(),
                model.into(),
                manufacturer.into(),
                Arg::Date(robot.installed),
                facility_id.into(),
                facility_name.into(),
                robot.status.into(),
                robot.last_maintenance.into(),
                Arg::Int(robot.procedures),
                format!("{firmware}.{}", n % 7).into(),
            ],
        );
        q.push(")");
    }
    q
}

fn push_values<const N: usize>(q: &mut Query, values: [Arg; N]) {
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            q.push(",");
        }
        q.push_bind(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic() {
        let mut a = Rng(42);
        let mut b = Rng(42);
        assert_eq!(a.uuid(), b.uuid());
        assert_eq!(a.range(1, 6), b.range(1, 6));
        assert_eq!(a.uuid().get_version_num(), 4);
    }

    #[test]
    fn ranges_stay_inside_their_bounds() {
        let mut rng = Rng(7);
        for _ in 0..10_000 {
            let v = rng.range(18, 92);
            assert!((18..=92).contains(&v));
        }
    }
}

use common::Db;

use crate::helpers::{Backend, create_pg_database, spawn_on, test_settings};

async fn scalar(db: &Db, sql: &str) -> i64 {
    db.fetch_all(common::Query::new(sql))
        .await
        .expect("query")
        .get_i64(0, "n")
        .expect("decode")
        .expect("row")
}

async fn schema_counts(db: &Db) -> (i64, i64, i64, i64, i64) {
    (
        scalar(db, "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name NOT LIKE '\\_sqlx%' AND table_name NOT LIKE 'ingest\\_%'").await,
        scalar(db, "SELECT COUNT(*) AS n FROM information_schema.views WHERE table_schema = 'public'").await,
        scalar(db, "SELECT COUNT(*) AS n FROM pg_trigger WHERE NOT tgisinternal").await,
        scalar(db, "SELECT COUNT(*) AS n FROM pg_indexes WHERE schemaname = 'public' AND indexname LIKE 'idx\\_%' AND indexname NOT LIKE 'idx\\_ingest%'").await,
        scalar(db, "SELECT COUNT(*) AS n FROM information_schema.check_constraints c JOIN information_schema.constraint_column_usage u USING (constraint_name) WHERE u.table_schema = 'public' AND u.table_name NOT LIKE 'ingest\\_%'").await,
    )
}

#[tokio::test]
async fn migrations_create_the_schema_on_an_empty_database_and_rerun_cleanly() {
    let url = create_pg_database().await;
    let db = Db::connect(&test_settings(&url, &[]).database, "tests")
        .await
        .expect("connect");
    db.migrate().await.expect("first run");
    let created = schema_counts(&db).await;
    assert_eq!(
        (created.0, created.1, created.2, created.3),
        (4, 3, 2, 14),
        "tables, views, triggers, indexes"
    );
    assert!(created.4 >= 10, "CHECK constraints: {}", created.4);
    db.migrate().await.expect("second run is a no-op");
    assert_eq!(schema_counts(&db).await, created);
}

#[tokio::test]
async fn migrations_adopt_the_legacy_database_without_changing_it() {
    let url = create_pg_database().await;
    let db = Db::connect(&test_settings(&url, &[]).database, "tests")
        .await
        .expect("connect");
    db.execute_script(include_str!("../fixtures/legacy_schema.sql"))
        .await
        .expect("legacy DDL");
    let before = schema_counts(&db).await;

    db.migrate().await.expect("adopt");
    assert_eq!(
        schema_counts(&db).await,
        before,
        "nothing of the old schema added, dropped or duplicated"
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_name LIKE 'ingest\\_%'"
        )
        .await,
        2,
        "the ingestion tables are new"
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) AS n FROM _sqlx_migrations WHERE success"
        )
        .await,
        3,
        "schema, ingestion tables, idempotency fencing columns"
    );

    // The app reads the old rows back, and production's extra view column survives.
    let app = spawn_on(Backend::Postgres, &url, &url, &[], None).await;
    let robot = app
        .get_robot("5f0c0c6e-54e4-4f3b-9c1b-3a2d8e1e7a10")
        .await
        .json();
    assert_eq!(robot["procedure_count"], 1);
    assert_eq!(robot["robot"]["robot_serial_number"], "LEGACY-0001");
    let procedure = app
        .get_procedure("6a1d2e3f-4b5c-4d6e-8f70-8192a3b4c5d6")
        .await
        .json();
    assert_eq!(procedure["procedure"]["complexity_score"], "4.25");
    assert_eq!(procedure["outcome"]["blood_loss_ml"], 80);
    let util = app.get("/api/analytics/robot-utilization").await.json();
    assert_eq!(util["utilization"][0]["facility_id"], "FAC-L");

    // The adopted trigger still maintains updated_at.
    app.sql("UPDATE surgical_robots SET status = 'maintenance'")
        .await;
    let after = app
        .get_robot("5f0c0c6e-54e4-4f3b-9c1b-3a2d8e1e7a10")
        .await
        .json();
    assert_ne!(after["robot"]["updated_at"], robot["robot"]["updated_at"]);
}

#[tokio::test]
async fn sqlite_triggers_maintain_updated_at() {
    let app = crate::helpers::spawn_app(Backend::Sqlite).await;
    app.load_small_fleet().await;
    app.sql("UPDATE surgical_robots SET status = 'retired' WHERE robot_serial_number = 'SN-A-001'")
        .await;
    let robot = app
        .get_robot("11111111-1111-4111-8111-111111111111")
        .await
        .json();
    assert_ne!(
        robot["robot"]["updated_at"],
        "Mon, 06 May 2024 09:00:00 GMT"
    );
    assert_eq!(robot["robot"]["status"], "retired");
}

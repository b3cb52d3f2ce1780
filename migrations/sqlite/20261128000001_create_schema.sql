-- The embedded (local) database: the same tables, columns, constraints, indexes,
-- triggers and views as PostgreSQL, in SQLite's types. UUIDs are lowercase
-- hyphenated TEXT; dates 'YYYY-MM-DD'; timestamps 'YYYY-MM-DD HH:MM:SS[.ffffff]' UTC;
-- NUMERIC columns REAL. The services render both backends into the same JSON shapes.

CREATE TABLE IF NOT EXISTS surgical_robots (
    robot_id              TEXT PRIMARY KEY NOT NULL,
    robot_serial_number   VARCHAR(50) UNIQUE NOT NULL,
    robot_model           VARCHAR(100) NOT NULL,
    manufacturer          VARCHAR(100) NOT NULL,
    installation_date     DATE NOT NULL,
    facility_id           VARCHAR(50) NOT NULL,
    facility_name         VARCHAR(200) NOT NULL,
    status                VARCHAR(20) NOT NULL CHECK (status IN ('operational', 'maintenance', 'retired')),
    last_maintenance_date DATE,
    total_procedures      INTEGER DEFAULT 0,
    firmware_version      VARCHAR(20),
    created_at            TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at            TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_robots_facility ON surgical_robots (facility_id);
CREATE INDEX IF NOT EXISTS idx_robots_status ON surgical_robots (status);
CREATE INDEX IF NOT EXISTS idx_robots_model ON surgical_robots (robot_model);

CREATE TABLE IF NOT EXISTS robot_maintenance_logs (
    maintenance_id        TEXT PRIMARY KEY NOT NULL,
    robot_id              TEXT NOT NULL REFERENCES surgical_robots (robot_id) ON DELETE CASCADE,
    maintenance_date      DATE NOT NULL,
    maintenance_type      VARCHAR(50) NOT NULL CHECK (maintenance_type IN ('routine', 'emergency', 'upgrade', 'calibration')),
    technician_id         VARCHAR(50) NOT NULL,
    technician_name       VARCHAR(200) NOT NULL,
    issues_found          TEXT,
    actions_taken         TEXT,
    parts_replaced        TEXT,
    downtime_hours        REAL,
    next_maintenance_date DATE,
    cost                  REAL,
    created_at            TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_maintenance_robot ON robot_maintenance_logs (robot_id);
CREATE INDEX IF NOT EXISTS idx_maintenance_date ON robot_maintenance_logs (maintenance_date);
CREATE INDEX IF NOT EXISTS idx_maintenance_type ON robot_maintenance_logs (maintenance_type);

CREATE TABLE IF NOT EXISTS surgical_procedures (
    procedure_id       TEXT PRIMARY KEY NOT NULL,
    robot_id           TEXT NOT NULL REFERENCES surgical_robots (robot_id) ON DELETE CASCADE,
    procedure_type     VARCHAR(100) NOT NULL,
    procedure_category VARCHAR(50) NOT NULL,
    start_time         TIMESTAMP NOT NULL,
    end_time           TIMESTAMP NOT NULL,
    duration_minutes   INTEGER NOT NULL,
    surgeon_id         VARCHAR(50) NOT NULL,
    surgeon_name       VARCHAR(200) NOT NULL,
    patient_id         VARCHAR(50) NOT NULL,
    patient_age        INTEGER NOT NULL CONSTRAINT surgical_procedures_patient_age_check CHECK (patient_age >= 0 AND patient_age <= 120),
    patient_gender     VARCHAR(20),
    complexity_score   REAL CONSTRAINT surgical_procedures_complexity_score_check CHECK (complexity_score >= 1.0 AND complexity_score <= 5.0),
    status             VARCHAR(20) NOT NULL CONSTRAINT surgical_procedures_status_check CHECK (status IN ('completed', 'in_progress', 'aborted', 'cancelled')),
    created_at         TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT check_end_after_start CHECK (end_time >= start_time)
);

CREATE INDEX IF NOT EXISTS idx_procedures_robot ON surgical_procedures (robot_id);
CREATE INDEX IF NOT EXISTS idx_procedures_start_time ON surgical_procedures (start_time);
CREATE INDEX IF NOT EXISTS idx_procedures_category ON surgical_procedures (procedure_category);
CREATE INDEX IF NOT EXISTS idx_procedures_surgeon ON surgical_procedures (surgeon_id);
CREATE INDEX IF NOT EXISTS idx_procedures_status ON surgical_procedures (status);

CREATE TABLE IF NOT EXISTS procedure_outcomes (
    outcome_id                 TEXT PRIMARY KEY NOT NULL,
    procedure_id               TEXT UNIQUE NOT NULL REFERENCES surgical_procedures (procedure_id) ON DELETE CASCADE,
    success_status             VARCHAR(20) NOT NULL CHECK (success_status IN ('successful', 'complicated', 'failed')),
    blood_loss_ml              INTEGER CHECK (blood_loss_ml >= 0),
    complications              TEXT,
    hospital_stay_days         INTEGER CHECK (hospital_stay_days >= 0),
    readmission_30day          BOOLEAN DEFAULT FALSE,
    patient_satisfaction_score INTEGER CHECK (patient_satisfaction_score >= 1 AND patient_satisfaction_score <= 10),
    surgeon_notes              TEXT,
    recovery_score             INTEGER CHECK (recovery_score >= 1 AND recovery_score <= 100),
    follow_up_required         BOOLEAN DEFAULT FALSE,
    created_at                 TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at                 TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_outcomes_procedure ON procedure_outcomes (procedure_id);
CREATE INDEX IF NOT EXISTS idx_outcomes_success ON procedure_outcomes (success_status);
CREATE INDEX IF NOT EXISTS idx_outcomes_readmission ON procedure_outcomes (readmission_30day);

CREATE TRIGGER IF NOT EXISTS update_robots_updated_at
    AFTER UPDATE ON surgical_robots FOR EACH ROW
    WHEN NEW.updated_at = OLD.updated_at
BEGIN
    UPDATE surgical_robots SET updated_at = CURRENT_TIMESTAMP WHERE robot_id = NEW.robot_id;
END;

CREATE TRIGGER IF NOT EXISTS update_outcomes_updated_at
    AFTER UPDATE ON procedure_outcomes FOR EACH ROW
    WHEN NEW.updated_at = OLD.updated_at
BEGIN
    UPDATE procedure_outcomes SET updated_at = CURRENT_TIMESTAMP WHERE outcome_id = NEW.outcome_id;
END;

CREATE VIEW IF NOT EXISTS vw_robot_utilization AS
SELECT
    r.robot_id,
    r.robot_serial_number,
    r.robot_model,
    r.facility_name,
    r.status,
    COUNT(p.procedure_id) AS procedure_count,
    AVG(p.duration_minutes) AS avg_procedure_duration,
    MAX(p.start_time) AS last_procedure_date
FROM surgical_robots r
LEFT JOIN surgical_procedures p ON r.robot_id = p.robot_id
GROUP BY r.robot_id, r.robot_serial_number, r.robot_model, r.facility_name, r.status;

CREATE VIEW IF NOT EXISTS vw_procedure_outcomes_summary AS
SELECT
    p.procedure_id,
    p.procedure_type,
    p.procedure_category,
    p.start_time,
    p.duration_minutes,
    p.complexity_score,
    r.robot_model,
    r.facility_name,
    o.success_status,
    o.blood_loss_ml,
    o.hospital_stay_days,
    o.patient_satisfaction_score
FROM surgical_procedures p
JOIN surgical_robots r ON p.robot_id = r.robot_id
LEFT JOIN procedure_outcomes o ON p.procedure_id = o.procedure_id
WHERE p.status = 'completed';

CREATE VIEW IF NOT EXISTS vw_maintenance_costs AS
SELECT
    r.robot_id,
    r.robot_serial_number,
    r.robot_model,
    r.facility_name,
    COUNT(m.maintenance_id) AS maintenance_count,
    SUM(m.cost) AS total_cost,
    AVG(m.cost) AS avg_cost,
    SUM(m.downtime_hours) AS total_downtime_hours
FROM surgical_robots r
LEFT JOIN robot_maintenance_logs m ON r.robot_id = m.robot_id
GROUP BY r.robot_id, r.robot_serial_number, r.robot_model, r.facility_name;

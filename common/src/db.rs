//! One connection pool per process, over PostgreSQL (production) or the embedded
//! SQLite file (local default), plus the migrations for both.
//!
//! Queries are plain SQL with `$1..$n` placeholders, which both backends accept, and
//! owned [`Arg`]s that each backend binds natively (a UUID is a `uuid` on PostgreSQL
//! and its hyphenated text on SQLite). Every query acquires its connection through
//! [`Db`], which times the wait for the pool metrics and turns pool exhaustion and
//! outages into [`DbError::Unavailable`] (503 with `Retry-After`), never a hang.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use secrecy::ExposeSecret;
use sqlx::error::ErrorKind;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Postgres, SqlSafeStr, Sqlite};
use tracing::Instrument;
use tracing::log::LevelFilter;
use uuid::Uuid;

use crate::config::{DatabaseSettings, DatabaseTarget, SslMode};

/// The migrations, embedded in the binary (the runtime image has no source tree).
/// `sqlx::migrate!` would need sqlx's proc-macro stack, which doubles the cold
/// build; a unit test keeps this list equal to the files in `migrations/`.
macro_rules! embedded_migrations {
    ($dir:literal: $(($version:literal, $name:literal)),* $(,)?) => {
        vec![$(Migration::new(
            $version,
            Cow::Borrowed($name),
            MigrationType::Simple,
            include_str!(concat!("../../migrations/", $dir, "/", stringify!($version), "_", $name, ".sql"))
                .into_sql_str(),
            false,
        )),*]
    };
}

fn pg_migrations() -> Vec<Migration> {
    embedded_migrations!("postgres":
        (20261128000001, "create_schema"),
        (20261128000002, "create_ingest_idempotency"),
        (20261206000001, "fence_ingest_idempotency"),
    )
}

fn sqlite_migrations() -> Vec<Migration> {
    embedded_migrations!("sqlite":
        (20261128000001, "create_schema"),
        (20261128000002, "create_ingest_idempotency"),
        (20261206000001, "fence_ingest_idempotency"),
    )
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// SQL NULL of the given type (PostgreSQL needs the type to assign it).
    Null(NullOf),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float (PostgreSQL assigns it to `numeric` columns).
    Float(f64),
    /// Text.
    Text(String),
    /// A UUID.
    Uuid(Uuid),
    /// A timestamp without time zone (UTC by convention).
    Timestamp(NaiveDateTime),
    /// A date.
    Date(NaiveDate),
}

/// The type of a NULL argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullOf {
    /// `boolean`
    Bool,
    /// `bigint`
    Int,
    /// `double precision` (assignable to `numeric`)
    Float,
    /// `text`
    Text,
    /// `uuid`
    Uuid,
    /// `timestamp`
    Timestamp,
    /// `date`
    Date,
}

/// A Rust type that binds as an [`Arg`], with the type of its NULL.
pub trait ArgType: Into<Arg> {
    /// The NULL of this type.
    const NULL: NullOf;
}

macro_rules! arg_from {
    ($($t:ty => $v:ident),* $(,)?) => {
        $(impl From<$t> for Arg {
            fn from(v: $t) -> Self {
                Arg::$v(v.into())
            }
        }
        impl ArgType for $t {
            const NULL: NullOf = NullOf::$v;
        })*
    };
}
arg_from!(bool => Bool, i64 => Int, i32 => Int, f64 => Float, String => Text, &str => Text,
    Uuid => Uuid, NaiveDateTime => Timestamp, NaiveDate => Date);

impl<T: ArgType> From<Option<T>> for Arg {
    fn from(v: Option<T>) -> Self {
        v.map_or(Arg::Null(T::NULL), Into::into)
    }
}

/// SQL text with numbered placeholders and the values bound to them.
#[derive(Debug, Clone, Default)]
pub struct Query {
    sql: String,
    args: Vec<Arg>,
}

impl Query {
    /// A query whose SQL refers to its arguments as `$1..$n`.
    pub fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_owned(),
            args: Vec::new(),
        }
    }

    /// Binds the next placeholder.
    pub fn bind(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends SQL text. Only ever pass SQL written in this code base: values go
    /// through [`Query::push_bind`].
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder for `arg`.
    pub fn push_bind(&mut self, arg: impl Into<Arg>) -> &mut Self {
        self.args.push(arg.into());
        self.sql.push('$');
        self.sql.push_str(&self.args.len().to_string());
        self
    }

    /// The SQL text (for logs and tests).
    pub fn sql(&self) -> &str {
        &self.sql
    }
}

/// Rows as the backend returned them; callers decode or render them.
pub enum Rows {
    /// PostgreSQL rows.
    Postgres(Vec<PgRow>),
    /// SQLite rows.
    Sqlite(Vec<SqliteRow>),
}

impl Rows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Rows::Postgres(r) => r.len(),
            Rows::Sqlite(r) => r.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Column `column` of row `row`, decoded as `T`; `None` when there is no such
    /// row or the value is NULL.
    pub fn get<T: Decodable>(&self, row: usize, column: &str) -> Result<Option<T>, DbError> {
        use sqlx::Row;
        let value = match self {
            Rows::Postgres(r) => r.get(row).map(|r| r.try_get::<Option<T>, _>(column)),
            Rows::Sqlite(r) => r.get(row).map(|r| r.try_get::<Option<T>, _>(column)),
        };
        Ok(value.transpose().map_err(DbError::Other)?.flatten())
    }

    /// An integer column of any width (see [`Rows::get`]).
    pub fn get_i64(&self, row: usize, column: &str) -> Result<Option<i64>, DbError> {
        use sqlx::Row;
        match self {
            Rows::Postgres(rows) => {
                let Some(r) = rows.get(row) else {
                    return Ok(None);
                };
                r.try_get::<Option<i64>, _>(column)
                    .or_else(|_| {
                        r.try_get::<Option<i32>, _>(column)
                            .map(|v| v.map(i64::from))
                    })
                    .or_else(|_| {
                        r.try_get::<Option<i16>, _>(column)
                            .map(|v| v.map(i64::from))
                    })
                    .map_err(DbError::Other)
            }
            Rows::Sqlite(_) => self.get(row, column),
        }
    }

    /// A text column (see [`Rows::get`]).
    pub fn get_string(&self, row: usize, column: &str) -> Result<Option<String>, DbError> {
        self.get(row, column)
    }

    /// A boolean column (see [`Rows::get`]).
    pub fn get_bool(&self, row: usize, column: &str) -> Result<Option<bool>, DbError> {
        self.get(row, column)
    }

    /// A timestamp-without-time-zone column (see [`Rows::get`]).
    pub fn get_timestamp(
        &self,
        row: usize,
        column: &str,
    ) -> Result<Option<NaiveDateTime>, DbError> {
        self.get(row, column)
    }
}

/// A Rust type both backends decode.
pub trait Decodable:
    for<'r> sqlx::Decode<'r, Postgres>
    + sqlx::Type<Postgres>
    + for<'r> sqlx::Decode<'r, Sqlite>
    + sqlx::Type<Sqlite>
{
}

impl<T> Decodable for T where
    T: for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
        + for<'r> sqlx::Decode<'r, Sqlite>
        + sqlx::Type<Sqlite>
{
}

/// What kind of constraint a write violated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintKind {
    /// UNIQUE or primary key.
    Unique,
    /// FOREIGN KEY.
    ForeignKey,
    /// NOT NULL.
    NotNull,
    /// CHECK.
    Check,
    /// A value the column type cannot hold (too long, out of range).
    InvalidValue,
}

/// A database failure, classified for the HTTP layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Pool exhausted, server down or restarting, statement timeout: retry later (503).
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// A write violated a constraint (4xx, named by the service from `constraint`/`column`).
    #[error("constraint violation ({kind:?}, constraint {constraint:?}, column {column:?})")]
    Constraint {
        /// Kind of constraint.
        kind: ConstraintKind,
        /// Constraint name when the backend reports it.
        constraint: Option<String>,
        /// Column name when the backend reports it.
        column: Option<String>,
        /// The backend's error, for the log only (may contain row values).
        #[source]
        source: sqlx::Error,
    },
    /// Anything else: a bug or a schema mismatch (500).
    #[error("database error")]
    Other(#[source] sqlx::Error),
}

impl From<sqlx::Error> for DbError {
    fn from(err: sqlx::Error) -> Self {
        classify(err)
    }
}

fn classify(err: sqlx::Error) -> DbError {
    use sqlx::Error as E;
    match &err {
        E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
            DbError::Unavailable(err)
        }
        E::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let kind = match db.kind() {
                ErrorKind::UniqueViolation => Some(ConstraintKind::Unique),
                ErrorKind::ForeignKeyViolation => Some(ConstraintKind::ForeignKey),
                ErrorKind::NotNullViolation => Some(ConstraintKind::NotNull),
                ErrorKind::CheckViolation => Some(ConstraintKind::Check),
                _ if code.starts_with("22") => Some(ConstraintKind::InvalidValue),
                _ => None,
            };
            if let Some(kind) = kind {
                let constraint = db
                    .constraint()
                    .map(str::to_owned)
                    .or_else(|| sqlite_check_name(db.message()));
                let column = db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .and_then(|pg| pg.column().map(str::to_owned))
                    .or_else(|| sqlite_column(db.message()));
                return DbError::Constraint {
                    kind,
                    constraint,
                    column,
                    source: err,
                };
            }
            // PostgreSQL: 57014 statement timeout, 57P0x shutdown/restart, 08xxx
            // connection, 53xxx resources, 40001/40P01 retryable. SQLite: 5 BUSY, 6 LOCKED.
            let retryable = code == "57014"
                || code.starts_with("57P")
                || code.starts_with("08")
                || code.starts_with("53")
                || code == "40001"
                || code == "40P01"
                || code == "5"
                || code == "6"
                || code == "517"
                || code == "262";
            if retryable {
                DbError::Unavailable(err)
            } else {
                DbError::Other(err)
            }
        }
        _ => DbError::Other(err),
    }
}

/// SQLite names a failed CHECK in its message: `CHECK constraint failed: name`.
fn sqlite_check_name(message: &str) -> Option<String> {
    let name = message.strip_prefix("CHECK constraint failed: ")?;
    Some(name.trim().to_owned())
}

/// SQLite names the column in its message: `NOT NULL constraint failed: t.col`.
fn sqlite_column(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("constraint failed: ")?;
    let first = rest.split([',', ' ']).next()?;
    first.rsplit_once('.').map(|(_, col)| col.to_owned())
}

#[derive(Clone)]
enum Pool {
    Postgres {
        pool: PgPool,
        /// A one-connection pool for readiness, so a saturated main pool does not
        /// make a healthy pod look unready.
        probe: PgPool,
    },
    Sqlite(SqlitePool),
}

/// Pool metrics: acquire wait and failures; sizes are read at scrape time.
#[derive(Clone, Debug)]
pub struct DbMetrics {
    acquire: Histogram,
    acquire_errors: Counter,
}

impl DbMetrics {
    fn new() -> Self {
        Self {
            acquire: Histogram::new(crate::metrics::latency_buckets()),
            acquire_errors: Counter::default(),
        }
    }
}

/// The process's database handle: cheap to clone, one pool underneath.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    metrics: DbMetrics,
    ready_timeout: Duration,
    max_connections: u32,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend())
            .finish()
    }
}

/// Settings could not be turned into a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL or options are malformed.
    #[error("invalid database settings: {0}")]
    Options(String),
    /// The embedded database could not be created or opened.
    #[error("cannot open the embedded database {path}: {source}")]
    Embedded {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
}

impl Db {
    /// Builds the pool. PostgreSQL connects lazily: the process starts and answers
    /// `/health` while the database is down, and `/ready` reports it. The embedded
    /// SQLite file (and its folder) is created on first start.
    pub async fn connect(
        settings: &DatabaseSettings,
        app_name: &str,
    ) -> Result<Self, ConnectError> {
        let acquire_timeout = settings.acquire_timeout();
        let ready_timeout = Duration::from_millis(settings.ready_timeout_ms);
        let pool = match settings.target() {
            DatabaseTarget::Postgres => {
                let options = pg_options(settings, app_name)?;
                let pool = PgPoolOptions::new()
                    .max_connections(settings.max_connections)
                    .min_connections(settings.min_connections)
                    .acquire_timeout(acquire_timeout)
                    .idle_timeout(Duration::from_secs(settings.idle_timeout_secs))
                    .max_lifetime(Duration::from_secs(settings.max_lifetime_secs))
                    .acquire_slow_threshold(Duration::from_secs(1))
                    .connect_lazy_with(options.clone());
                let probe = PgPoolOptions::new()
                    .max_connections(1)
                    .min_connections(0)
                    .acquire_timeout(ready_timeout)
                    .idle_timeout(Duration::from_secs(60))
                    .max_lifetime(Duration::from_secs(settings.max_lifetime_secs))
                    .connect_lazy_with(options);
                Pool::Postgres { pool, probe }
            }
            DatabaseTarget::Sqlite => {
                let path = match &settings.url {
                    Some(url) => url
                        .expose_secret()
                        .trim_start_matches("sqlite://")
                        .trim_start_matches("sqlite:")
                        .to_owned(),
                    None => settings.sqlite_path.to_string_lossy().into_owned(),
                };
                if let Some(parent) = std::path::Path::new(&path)
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(parent).map_err(|e| ConnectError::Embedded {
                        path: path.clone(),
                        source: sqlx::Error::Io(e),
                    })?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(acquire_timeout)
                    .foreign_keys(true)
                    .log_statements(LevelFilter::Trace)
                    .log_slow_statements(LevelFilter::Warn, Duration::from_secs(1));
                let pool = SqlitePoolOptions::new()
                    .max_connections(settings.max_connections)
                    .min_connections(settings.min_connections)
                    .acquire_timeout(acquire_timeout)
                    .idle_timeout(Duration::from_secs(settings.idle_timeout_secs))
                    .connect_with(options)
                    .await
                    .map_err(|source| ConnectError::Embedded { path, source })?;
                Pool::Sqlite(pool)
            }
        };
        Ok(Self {
            pool,
            metrics: DbMetrics::new(),
            ready_timeout,
            max_connections: settings.max_connections,
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> DatabaseTarget {
        match self.pool {
            Pool::Postgres { .. } => DatabaseTarget::Postgres,
            Pool::Sqlite(_) => DatabaseTarget::Sqlite,
        }
    }

    /// Registers the pool metrics (sizes are read from the pool at scrape time).
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "db_pool_acquire_duration_seconds",
            "Time spent waiting for a pooled database connection",
            self.metrics.acquire.clone(),
        );
        registry.register(
            "db_pool_acquire_errors",
            "Connection acquisitions that failed (pool timeout or database down)",
            self.metrics.acquire_errors.clone(),
        );
        registry.register_collector(Box::new(PoolCollector { db: self.clone() }));
    }

    /// Applies the migrations of this backend. On an existing production database
    /// they adopt what the old DDL created and change nothing. Migrations a newer
    /// release applied are tolerated, so rolling back one release still starts.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match &self.pool {
            Pool::Postgres { pool, .. } => tolerant(pg_migrations()).run(pool).await,
            Pool::Sqlite(pool) => tolerant(sqlite_migrations()).run(pool).await,
        }
    }

    /// Checks that the database answers, within the readiness timeout.
    pub async fn ping(&self) -> Result<(), DbError> {
        let check = async {
            match &self.pool {
                Pool::Postgres { probe, .. } => {
                    sqlx::query("SELECT 1").execute(probe).await.map(|_| ())
                }
                Pool::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
            }
        };
        match tokio::time::timeout(self.ready_timeout, check).await {
            Ok(result) => result.map_err(classify),
            Err(_) => Err(DbError::Unavailable(sqlx::Error::PoolTimedOut)),
        }
    }

    /// Runs a query and returns its rows.
    pub async fn fetch_all(&self, query: Query) -> Result<Rows, DbError> {
        let span = self.span(&query);
        self.fetch_all_inner(query).instrument(span).await
    }

    async fn fetch_all_inner(&self, query: Query) -> Result<Rows, DbError> {
        match &self.pool {
            Pool::Postgres { pool, .. } => {
                let mut conn = self.acquire(pool).await?;
                let q = bind_pg(sqlx::query(AssertSqlSafe(query.sql)), query.args);
                Ok(Rows::Postgres(q.fetch_all(&mut *conn).await?))
            }
            Pool::Sqlite(pool) => {
                let mut conn = self.acquire(pool).await?;
                let q = bind_sqlite(sqlx::query(AssertSqlSafe(query.sql)), query.args);
                Ok(Rows::Sqlite(q.fetch_all(&mut *conn).await?))
            }
        }
    }

    /// Runs a statement and returns the number of rows it affected.
    pub async fn execute(&self, query: Query) -> Result<u64, DbError> {
        let span = self.span(&query);
        self.execute_inner(query).instrument(span).await
    }

    /// The trace span of one statement (`crate::telemetry_otel`; disabled unless exported).
    fn span(&self, query: &Query) -> tracing::Span {
        let system = match &self.pool {
            Pool::Postgres { .. } => "postgresql",
            Pool::Sqlite(_) => "sqlite",
        };
        crate::telemetry_otel::db_span(system, &query.sql)
    }

    async fn execute_inner(&self, query: Query) -> Result<u64, DbError> {
        match &self.pool {
            Pool::Postgres { pool, .. } => {
                let mut conn = self.acquire(pool).await?;
                let q = bind_pg(sqlx::query(AssertSqlSafe(query.sql)), query.args);
                Ok(q.execute(&mut *conn).await?.rows_affected())
            }
            Pool::Sqlite(pool) => {
                let mut conn = self.acquire(pool).await?;
                let q = bind_sqlite(sqlx::query(AssertSqlSafe(query.sql)), query.args);
                Ok(q.execute(&mut *conn).await?.rows_affected())
            }
        }
    }

    /// Runs SQL with no arguments and possibly several statements (seeding, tests).
    pub async fn execute_script(&self, sql: &str) -> Result<(), DbError> {
        use sqlx::Executor;
        match &self.pool {
            Pool::Postgres { pool, .. } => {
                let mut conn = self.acquire(pool).await?;
                conn.execute(AssertSqlSafe(sql.to_owned())).await?;
            }
            Pool::Sqlite(pool) => {
                let mut conn = self.acquire(pool).await?;
                conn.execute(AssertSqlSafe(sql.to_owned())).await?;
            }
        }
        Ok(())
    }

    /// Closes the pool, waiting for checked-out connections to return.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Postgres { pool, probe } => {
                probe.close().await;
                pool.close().await;
            }
            Pool::Sqlite(pool) => pool.close().await,
        }
    }

    async fn acquire<DB: sqlx::Database>(
        &self,
        pool: &sqlx::Pool<DB>,
    ) -> Result<PoolConnection<DB>, DbError> {
        let started = Instant::now();
        let result = pool.acquire().await;
        self.metrics
            .acquire
            .observe(started.elapsed().as_secs_f64());
        result.map_err(|err| {
            self.metrics.acquire_errors.inc();
            classify(err)
        })
    }

    fn sizes(&self) -> (u32, usize) {
        match &self.pool {
            Pool::Postgres { pool, .. } => (pool.size(), pool.num_idle()),
            Pool::Sqlite(pool) => (pool.size(), pool.num_idle()),
        }
    }
}

fn tolerant(migrations: Vec<Migration>) -> Migrator {
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.set_ignore_missing(true);
    migrator
}

fn pg_options(
    settings: &DatabaseSettings,
    app_name: &str,
) -> Result<PgConnectOptions, ConnectError> {
    let mut options = match &settings.url {
        Some(url) => PgConnectOptions::from_str(url.expose_secret()).map_err(|_| {
            ConnectError::Options("database.url is not a valid postgres URL".into())
        })?,
        None => {
            let mut o = PgConnectOptions::new_without_pgpass()
                .host(settings.host.as_deref().unwrap_or("localhost"))
                .port(settings.port)
                .database(&settings.name)
                .username(&settings.user);
            if let Some(pw) = &settings.password {
                o = o.password(pw.expose_secret());
            }
            o
        }
    };
    if let Some(mode) = settings.ssl_mode {
        options = options.ssl_mode(match mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        });
    }
    if let Some(ca) = &settings.ssl_root_cert {
        options = options.ssl_root_cert(ca);
    }
    Ok(options
        .application_name(app_name)
        .options([(
            "statement_timeout",
            settings.statement_timeout_ms.to_string(),
        )])
        .log_statements(LevelFilter::Trace)
        .log_slow_statements(LevelFilter::Warn, Duration::from_secs(1)))
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;
type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind_pg(mut q: PgQuery<'_>, args: Vec<Arg>) -> PgQuery<'_> {
    for arg in args {
        q = match arg {
            Arg::Null(kind) => match kind {
                NullOf::Bool => q.bind(None::<bool>),
                NullOf::Int => q.bind(None::<i64>),
                NullOf::Float => q.bind(None::<f64>),
                NullOf::Text => q.bind(None::<String>),
                NullOf::Uuid => q.bind(None::<Uuid>),
                NullOf::Timestamp => q.bind(None::<NaiveDateTime>),
                NullOf::Date => q.bind(None::<NaiveDate>),
            },
            Arg::Bool(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::Float(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
            Arg::Uuid(v) => q.bind(v),
            Arg::Timestamp(v) => q.bind(v),
            Arg::Date(v) => q.bind(v),
        };
    }
    q
}

/// SQLite stores UUIDs as lowercase hyphenated text, timestamps as
/// `YYYY-MM-DD HH:MM:SS[.ffffff]` and dates as `YYYY-MM-DD`, so text comparisons
/// order them correctly.
fn bind_sqlite(mut q: SqliteQuery<'_>, args: Vec<Arg>) -> SqliteQuery<'_> {
    for arg in args {
        q = match arg {
            Arg::Null(_) => q.bind(None::<String>),
            Arg::Bool(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::Float(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
            Arg::Uuid(v) => q.bind(v.hyphenated().to_string()),
            Arg::Timestamp(v) => q.bind(sqlite_timestamp(v)),
            Arg::Date(v) => q.bind(v.format("%Y-%m-%d").to_string()),
        };
    }
    q
}

/// The text form SQLite columns hold timestamps in.
pub fn sqlite_timestamp(ts: NaiveDateTime) -> String {
    ts.format("%Y-%m-%d %H:%M:%S%.f").to_string()
}

#[derive(Debug)]
struct PoolCollector {
    db: Db,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (size, idle) = self.db.sizes();
        let idle = idle as i64;
        let in_use = i64::from(size) - idle;
        let family = encoder.encode_descriptor(
            "db_pool_connections",
            "Open pooled database connections by state",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        let mut family = family;
        for (state, value) in [("idle", idle), ("in_use", in_use.max(0))] {
            let gauge = ConstGauge::new(value);
            let labels = [("state", state)];
            gauge.encode(family.encode_family(&labels)?)?;
        }
        let max = ConstGauge::new(i64::from(self.db.max_connections));
        max.encode(encoder.encode_descriptor(
            "db_pool_max_connections",
            "Configured pool size",
            None,
            max.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Shared handle type for services that keep the database behind an `Arc`.
pub type SharedDb = Arc<Db>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_bind_numbers_placeholders_in_order() {
        let mut q = Query::new("SELECT * FROM t WHERE 1=1");
        q.push(" AND a = ")
            .push_bind("x")
            .push(" AND b = ")
            .push_bind(3_i64);
        assert_eq!(q.sql(), "SELECT * FROM t WHERE 1=1 AND a = $1 AND b = $2");
        assert_eq!(q.args, vec![Arg::Text("x".into()), Arg::Int(3)]);
    }

    #[test]
    fn sqlite_messages_name_the_column() {
        assert_eq!(
            sqlite_column("NOT NULL constraint failed: surgical_procedures.patient_age").as_deref(),
            Some("patient_age")
        );
        assert_eq!(
            sqlite_column("UNIQUE constraint failed: idempotency_keys.key").as_deref(),
            Some("key")
        );
        assert_eq!(sqlite_column("FOREIGN KEY constraint failed"), None);
    }

    #[test]
    fn embedded_migrations_match_the_migration_folders() {
        for (dir, embedded) in [
            ("postgres", pg_migrations()),
            ("sqlite", sqlite_migrations()),
        ] {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/").to_owned() + dir;
            let mut files: Vec<String> = std::fs::read_dir(&path)
                .expect("migrations folder")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            let listed: Vec<String> = embedded
                .iter()
                .map(|m| format!("{}_{}.sql", m.version, m.description))
                .collect();
            assert_eq!(
                files, listed,
                "{dir}: list every file in embedded_migrations!"
            );
        }
    }

    #[test]
    fn sqlite_timestamps_sort_as_text() {
        let a = NaiveDate::from_ymd_opt(2024, 1, 2)
            .and_then(|d| d.and_hms_micro_opt(3, 4, 5, 600))
            .expect("valid");
        assert_eq!(sqlite_timestamp(a), "2024-01-02 03:04:05.000600");
    }
}

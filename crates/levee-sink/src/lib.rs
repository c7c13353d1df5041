//! Sinks: where workers write messages. One trait, [`Sink`], and one implementation over
//! sqlx for the three SQL dialects (SQLite, PostgreSQL, MySQL/MariaDB).
//!
//! A stream maps to a table: every row holds the message `id` (primary key), `received_at`
//! and the whole `payload` as JSON, plus one column per configured JSON pointer. Writes are
//! idempotent by id (`ON CONFLICT DO NOTHING`, MySQL's `ON DUPLICATE KEY UPDATE id = id`), so
//! a message delivered twice is one row. Failures come back classified: [`SinkError::Transient`]
//! (the database is down, busy or read-only: retry later, the data is fine) or
//! [`SinkError::Rejected`] (the data itself cannot be written: a constraint, a type).

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::format::{Item, StrftimeItems};
use serde_json::Value;
use sqlx::AssertSqlSafe;
use sqlx::mysql::{MySqlDatabaseError, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// How a stream's messages become rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mapping {
    pub table: String,
    /// (column, JSON pointer into the payload), in a stable order.
    pub columns: Vec<(String, String)>,
}

/// One message to write.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    pub id: &'a str,
    pub received_at: SystemTime,
    /// The payload, parsed: the columns are read from it.
    pub payload: &'a Value,
    /// The same payload as the JSON text it arrived as: stored as is in the payload
    /// column, not serialized again.
    pub json: &'a str,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SinkError {
    /// The database cannot take writes right now; the rows are fine. Retry later.
    #[error("database unavailable: {0}")]
    Transient(String),
    /// These rows cannot be written as they are.
    #[error("rejected by the database: {0}")]
    Rejected(String),
    /// The table does not fit the mapping, or the sink is misconfigured.
    #[error("{0}")]
    Schema(String),
}

/// What `levee migrate` found or did for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migration {
    Created,
    Fits,
}

/// Where workers write. Every implementation must pass the suite in `tests/`.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Insert all rows in one transaction, skipping ids already present.
    async fn write(&self, mapping: &Mapping, rows: &[Row<'_>]) -> Result<(), SinkError>;
    /// Whether the row with this id exists.
    async fn contains(&self, table: &str, id: &str) -> Result<bool, SinkError>;
    /// Create the table if missing; if it exists, check that it has every column needed and
    /// say exactly which are missing.
    async fn migrate(&self, mapping: &Mapping) -> Result<Migration, SinkError>;
    /// Check that the table exists and fits, without changing anything.
    async fn check(&self, mapping: &Mapping) -> Result<(), SinkError>;
}

/// Most INSERT statements kept built (see `SqlSink::insert`).
const MAX_CACHED_INSERTS: usize = 32;

/// The columns every table has before the mapped ones.
const FIXED: [&str; 3] = ["id", "received_at", "payload"];

/// Connection limits of a sink.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    pub max_connections: u32,
    /// How long a write may wait for a connection (a down database fails after this).
    pub acquire_timeout: Duration,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

/// Run `$body` with `$p` bound to whichever pool this is; the body is compiled once per
/// dialect, so it can use sqlx generically without trait bounds.
macro_rules! with_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
            Pool::MySql($p) => $body,
        }
    };
}

/// A SQL database reached through sqlx.
pub struct SqlSink {
    pool: Pool,
    /// PostgreSQL only: each table's column types, for the casts that let every value be
    /// bound as text (PostgreSQL will not assign a text parameter to an integer column).
    pg_types: Mutex<HashMap<String, HashMap<String, String>>>,
    /// The INSERT for each mapping and number of rows seen: built once, not per write.
    inserts: Mutex<HashMap<(Mapping, usize), Arc<str>>>,
    /// How many times the caches above were emptied for a rejected write: what was read
    /// before one of those is not cached after it.
    forgotten: AtomicU64,
}

impl SqlSink {
    /// Connect lazily: a database that is down at start is not an error until a write.
    pub fn connect(url: &str, options: &SinkOptions) -> Result<SqlSink, SinkError> {
        let config = |e: sqlx::Error| SinkError::Schema(format!("database.url: {e}"));
        let pool = if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url).map_err(config)?;
            // A new data directory: SQLite creates the file, but not the folder it goes in.
            if let Some(dir) = connect.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|e| {
                    SinkError::Schema(format!(
                        "database.url: cannot create {}: {e}",
                        dir.display()
                    ))
                })?;
            }
            let connect = connect
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(options.max_connections.min(4))
                    .acquire_timeout(options.acquire_timeout)
                    .connect_lazy_with(connect),
            )
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(options.max_connections)
                    .min_connections(0)
                    .acquire_timeout(options.acquire_timeout)
                    .connect_lazy(url)
                    .map_err(config)?,
            )
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            let url = url.replacen("mariadb:", "mysql:", 1);
            Pool::MySql(
                MySqlPoolOptions::new()
                    .max_connections(options.max_connections)
                    .min_connections(0)
                    .acquire_timeout(options.acquire_timeout)
                    .connect_lazy(&url)
                    .map_err(config)?,
            )
        } else {
            return Err(SinkError::Schema(
                "database.url must start with sqlite:, postgres: or mysql:".into(),
            ));
        };
        Ok(SqlSink {
            pool,
            pg_types: Mutex::new(HashMap::new()),
            inserts: Mutex::new(HashMap::new()),
            forgotten: AtomicU64::new(0),
        })
    }

    fn quote(&self, name: &str) -> String {
        // Names are checked by config (lowercase letters, digits, '_'), so quoting is enough.
        match self.pool {
            Pool::MySql(_) => format!("`{name}`"),
            _ => format!("\"{name}\""),
        }
    }

    /// The table's columns (and their types), or an empty map if it does not exist.
    async fn columns(&self, table: &str) -> Result<HashMap<String, String>, SinkError> {
        let rows: Vec<(String, String)> = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_as("SELECT name, type FROM pragma_table_info(?1)")
                    .bind(table)
                    .fetch_all(p)
                    .await
            }
            Pool::Postgres(p) => {
                sqlx::query_as(
                    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
                 FROM pg_attribute a
                 WHERE a.attrelid = to_regclass(quote_ident($1)) AND a.attnum > 0
                   AND NOT a.attisdropped",
                )
                .bind(table)
                .fetch_all(p)
                .await
            }
            Pool::MySql(p) => {
                sqlx::query_as(
                    "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR)
                 FROM information_schema.columns
                 WHERE table_schema = DATABASE() AND table_name = ?",
                )
                .bind(table)
                .fetch_all(p)
                .await
            }
        }
        .map_err(classify)?;
        Ok(rows.into_iter().collect())
    }

    fn missing(mapping: &Mapping, columns: &HashMap<String, String>) -> Vec<String> {
        FIXED
            .iter()
            .map(|c| (c.to_string(), None))
            .chain(
                mapping
                    .columns
                    .iter()
                    .map(|(c, p)| (c.clone(), Some(p.clone()))),
            )
            .filter(|(c, _)| !columns.contains_key(c))
            .map(|(c, pointer)| match pointer {
                Some(p) => format!("{c} (mapped from {p:?})"),
                None => c,
            })
            .collect()
    }

    fn create_sql(&self, mapping: &Mapping) -> String {
        let (id, at, payload, text) = match self.pool {
            Pool::Sqlite(_) => (
                "TEXT NOT NULL PRIMARY KEY",
                "TEXT NOT NULL",
                "TEXT NOT NULL",
                "TEXT",
            ),
            Pool::Postgres(_) => (
                "text PRIMARY KEY",
                "timestamptz NOT NULL",
                "jsonb NOT NULL",
                "text",
            ),
            Pool::MySql(_) => (
                "VARCHAR(64) NOT NULL PRIMARY KEY",
                "DATETIME(6) NOT NULL",
                "JSON NOT NULL",
                "TEXT",
            ),
        };
        let mut columns = vec![
            format!("{} {id}", self.quote("id")),
            format!("{} {at}", self.quote("received_at")),
            format!("{} {payload}", self.quote("payload")),
        ];
        columns.extend(
            mapping
                .columns
                .iter()
                .map(|(c, _)| format!("{} {text}", self.quote(c))),
        );
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.quote(&mapping.table),
            columns.join(", ")
        )
    }

    /// PostgreSQL column types of `table`, cached.
    async fn pg_types(&self, table: &str) -> Result<HashMap<String, String>, SinkError> {
        if let Some(types) = self.pg_types.lock().unwrap().get(table) {
            return Ok(types.clone());
        }
        let forgotten = self.forgotten.load(Ordering::Acquire);
        let types = self.columns(table).await?;
        if types.is_empty() {
            return Err(SinkError::Schema(format!(
                "table {table} does not exist; run `levee migrate`"
            )));
        }
        let mut cache = self.pg_types.lock().unwrap();
        if self.forgotten.load(Ordering::Acquire) == forgotten {
            cache.insert(table.to_owned(), types.clone());
        }
        Ok(types)
    }

    /// One multi-row INSERT, idempotent by id.
    fn insert_sql(
        &self,
        mapping: &Mapping,
        rows: usize,
        pg_types: Option<&HashMap<String, String>>,
    ) -> String {
        let names: Vec<&str> = FIXED
            .iter()
            .copied()
            .chain(mapping.columns.iter().map(|(c, _)| c.as_str()))
            .collect();
        let quoted: Vec<String> = names.iter().map(|c| self.quote(c)).collect();
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            self.quote(&mapping.table),
            quoted.join(", ")
        );
        let mut n = 0;
        for r in 0..rows {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                match pg_types {
                    Some(types) => {
                        let ty = types.get(*name).map_or("text", String::as_str);
                        sql.push_str(&format!("CAST(${n} AS {ty})"));
                    }
                    None => sql.push('?'),
                }
            }
            sql.push(')');
        }
        sql.push_str(match self.pool {
            Pool::MySql(_) => " ON DUPLICATE KEY UPDATE `id` = `id`",
            _ => " ON CONFLICT (\"id\") DO NOTHING",
        });
        sql
    }

    /// The INSERT for `rows` rows of `mapping`, from the cache or built and cached.
    async fn insert(&self, mapping: &Mapping, rows: usize) -> Result<Arc<str>, SinkError> {
        let key = (mapping.clone(), rows);
        if let Some(sql) = self.inserts.lock().unwrap().get(&key) {
            return Ok(sql.clone());
        }
        let forgotten = self.forgotten.load(Ordering::Acquire);
        let pg_types = match self.pool {
            Pool::Postgres(_) => Some(self.pg_types(&mapping.table).await?),
            _ => None,
        };
        let sql: Arc<str> = self.insert_sql(mapping, rows, pg_types.as_ref()).into();
        let mut inserts = self.inserts.lock().unwrap();
        if self.forgotten.load(Ordering::Acquire) != forgotten {
            // Built from column types read before a rejected write: used once, not kept.
            return Ok(sql);
        }
        // Partial batches come in every size: keep the cache small, the full batch's
        // INSERT is back after one write.
        if inserts.len() >= MAX_CACHED_INSERTS {
            inserts.clear();
        }
        inserts.insert(key, sql.clone());
        Ok(sql)
    }

    /// The values of the rows, all as text (NULL where a pointer finds nothing), row after
    /// row; borrowed from the rows where they can be.
    fn values<'r>(&self, mapping: &Mapping, rows: &[Row<'r>]) -> Vec<Option<Cow<'r, str>>> {
        // The formats, parsed once.
        static POSTGRES: LazyLock<Vec<Item<'static>>> =
            LazyLock::new(|| StrftimeItems::new("%Y-%m-%d %H:%M:%S%.6f+00").collect());
        static OTHERS: LazyLock<Vec<Item<'static>>> =
            LazyLock::new(|| StrftimeItems::new("%Y-%m-%d %H:%M:%S%.6f").collect());
        let format = match self.pool {
            Pool::Postgres(_) => &POSTGRES,
            _ => &OTHERS,
        };
        let pointers: Vec<Option<Vec<String>>> = mapping
            .columns
            .iter()
            .map(|(_, pointer)| pointer_tokens(pointer))
            .collect();
        let mut values = Vec::with_capacity(rows.len() * (FIXED.len() + pointers.len()));
        for row in rows {
            let at = chrono::DateTime::<chrono::Utc>::from(row.received_at);
            values.push(Some(Cow::Borrowed(row.id)));
            values.push(Some(Cow::Owned(
                at.format_with_items(format.iter()).to_string(),
            )));
            values.push(Some(Cow::Borrowed(row.json)));
            for tokens in &pointers {
                let found = tokens.as_deref().and_then(|t| lookup(row.payload, t));
                values.push(match found {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(Cow::Borrowed(s.as_str())),
                    Some(other) => Some(Cow::Owned(other.to_string())),
                });
            }
        }
        values
    }
}

/// A JSON pointer's reference tokens, unescaped (RFC 6901); `None` if it is not a pointer.
/// Split once per write: `Value::pointer` splits and unescapes again for every row, 165 ns
/// a lookup against 37 ns (4 million lookups of a one-token pointer, measured 2026-12-04):
/// ~0.5 CPU s of a million-message drain.
fn pointer_tokens(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let tokens = pointer.strip_prefix('/')?.split('/');
    Some(
        tokens
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// What `Value::pointer` finds, from the pointer's tokens.
fn lookup<'v>(mut value: &'v Value, tokens: &[String]) -> Option<&'v Value> {
    for token in tokens {
        value = match value {
            Value::Object(map) => map.get(token)?,
            // An array index is digits without a leading zero (RFC 6901).
            Value::Array(list) => {
                if token.starts_with('+') || (token.starts_with('0') && token.len() > 1) {
                    return None;
                }
                list.get(token.parse::<usize>().ok()?)?
            }
            _ => return None,
        };
    }
    Some(value)
}

#[async_trait]
impl Sink for SqlSink {
    async fn write(&self, mapping: &Mapping, rows: &[Row<'_>]) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = self.insert(mapping, rows.len()).await?;
        let values = self.values(mapping, rows);
        let inserted = with_pool!(&self.pool, p => {
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for value in values {
                query = query.bind(value);
            }
            query.execute(p).await.map(|done| done.rows_affected())
        })
        .map_err(classify);
        let mut result = inserted.clone().map(|_| ());
        // MySQL's ON DUPLICATE KEY also swallows a clash on any other unique key: a row
        // neither inserted nor already there was refused, and must not be acked.
        if let (Pool::MySql(_), Ok(n)) = (&self.pool, &inserted)
            && (*n as usize) < rows.len()
        {
            for row in rows {
                if !self.contains(&mapping.table, row.id).await? {
                    result = Err(SinkError::Rejected(format!(
                        "message {} clashes with a unique key of table {}",
                        row.id, mapping.table
                    )));
                    break;
                }
            }
        }
        if matches!(result, Err(SinkError::Rejected(_))) {
            // The table may have been altered (that is how a bad row gets fixed): read its
            // column types again before the next try.
            self.forgotten.fetch_add(1, Ordering::AcqRel);
            self.pg_types.lock().unwrap().remove(&mapping.table);
            self.inserts
                .lock()
                .unwrap()
                .retain(|(m, _), _| m.table != mapping.table);
        }
        result
    }

    async fn contains(&self, table: &str, id: &str) -> Result<bool, SinkError> {
        let sql = format!(
            "SELECT 1 FROM {} WHERE {} = {}",
            self.quote(table),
            self.quote("id"),
            if matches!(self.pool, Pool::Postgres(_)) {
                "$1"
            } else {
                "?"
            }
        );
        let found = with_pool!(&self.pool, p => {
            sqlx::query(AssertSqlSafe(sql)).bind(id).fetch_optional(p).await.map(|r| r.is_some())
        });
        found.map_err(classify)
    }

    async fn migrate(&self, mapping: &Mapping) -> Result<Migration, SinkError> {
        let existing = self.columns(&mapping.table).await?;
        if existing.is_empty() {
            let sql = self.create_sql(mapping);
            with_pool!(&self.pool, p => sqlx::query(AssertSqlSafe(sql)).execute(p).await.map(|_| ()))
                .map_err(classify)?;
            return Ok(Migration::Created);
        }
        self.check(mapping).await.map(|()| Migration::Fits)
    }

    async fn check(&self, mapping: &Mapping) -> Result<(), SinkError> {
        let existing = self.columns(&mapping.table).await?;
        if existing.is_empty() {
            return Err(SinkError::Schema(format!(
                "table {} does not exist; `levee migrate` creates it",
                mapping.table
            )));
        }
        let missing = Self::missing(mapping, &existing);
        if !missing.is_empty() {
            return Err(SinkError::Schema(format!(
                "table {} lacks the columns {}",
                mapping.table,
                missing.join(", ")
            )));
        }
        if !self.id_is_unique(&mapping.table).await? {
            // Without it, a message delivered twice would be two rows.
            return Err(SinkError::Schema(format!(
                "table {}: column id must be its primary key (or unique)",
                mapping.table
            )));
        }
        Ok(())
    }
}

impl SqlSink {
    /// Whether `id` alone is the table's primary key or a unique key.
    async fn id_is_unique(&self, table: &str) -> Result<bool, SinkError> {
        let found: Option<(i64,)> = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_as(
                    "SELECT 1 FROM pragma_table_info(?1) WHERE name = 'id' AND pk = 1
                   AND (SELECT COUNT(*) FROM pragma_table_info(?1) WHERE pk > 0) = 1
                 UNION ALL
                 SELECT 1 FROM pragma_index_list(?1) AS l
                 WHERE l.\"unique\" = 1
                   AND (SELECT COUNT(*) FROM pragma_index_info(l.name)) = 1
                   AND (SELECT name FROM pragma_index_info(l.name)) = 'id'
                 LIMIT 1",
                )
                .bind(table)
                .fetch_optional(p)
                .await
            }
            Pool::Postgres(p) => {
                sqlx::query_as(
                    "SELECT 1::int8 FROM pg_index i
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                 WHERE i.indrelid = to_regclass(quote_ident($1)) AND i.indisunique
                   AND i.indnatts = 1 AND a.attname = 'id'
                 LIMIT 1",
                )
                .bind(table)
                .fetch_optional(p)
                .await
            }
            Pool::MySql(p) => {
                sqlx::query_as(
                    "SELECT CAST(1 AS SIGNED) FROM information_schema.statistics s
                 WHERE s.table_schema = DATABASE() AND s.table_name = ? AND s.non_unique = 0
                   AND s.column_name = 'id'
                   AND (SELECT COUNT(*) FROM information_schema.statistics t
                        WHERE t.table_schema = s.table_schema AND t.table_name = s.table_name
                          AND t.index_name = s.index_name) = 1
                 LIMIT 1",
                )
                .bind(table)
                .fetch_optional(p)
                .await
            }
        }
        .map_err(classify)?;
        Ok(found.is_some())
    }
}

/// Sort an error: the data's fault ([`SinkError::Rejected`]), the operator's
/// ([`SinkError::Schema`]: a missing table, column or key) or passing
/// ([`SinkError::Transient`]: the connection, load, a read-only server in a failover, a full
/// disk, a cancelled statement). Codes are read per driver: a PostgreSQL SQLSTATE such as
/// 40001 is digits too, and must not be taken for a SQLite code.
pub fn classify(e: sqlx::Error) -> SinkError {
    enum Kind {
        Transient,
        Schema,
        Rejected,
    }
    let kind = match &e {
        sqlx::Error::Database(db) => {
            if let Some(my) = db.try_downcast_ref::<MySqlDatabaseError>() {
                match my.number() {
                    // no such table / column
                    1146 | 1054 => Kind::Schema,
                    // deadlock, lock wait timeout, too many connections, read-only, server
                    // shutting down, lost connection, disk full, query killed
                    1205 | 1213 | 1040 | 1203 | 1290 | 1792 | 1053 | 2006 | 2013 | 1114 | 1021
                    | 1317 | 1927 => Kind::Transient,
                    _ => Kind::Rejected,
                }
            } else if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                let code = pg.code();
                match code {
                    // undefined table / column; no unique key matching ON CONFLICT (id)
                    "42P01" | "42703" | "42P10" => Kind::Schema,
                    // connection, insufficient resources, operator intervention, system
                    // error, serialization failure, deadlock, read-only transaction, lock
                    // not available, statement timeout or cancel, bad login or database
                    // while a server is being moved
                    c if c.starts_with("08")
                        || c.starts_with("53")
                        || c.starts_with("57")
                        || c.starts_with("58")
                        || matches!(
                            c,
                            "40001" | "40P01" | "25006" | "55P03" | "28P01" | "28000" | "3D000"
                        ) =>
                    {
                        Kind::Transient
                    }
                    _ => Kind::Rejected,
                }
            } else {
                // SQLite: primary result code of the extended code.
                let code: u32 = db.code().and_then(|c| c.parse().ok()).unwrap_or(0);
                let message = db.message();
                match code & 0xff {
                    // BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN
                    5 | 6 | 7 | 8 | 10 | 13 | 14 => Kind::Transient,
                    1 if message.starts_with("no such table")
                        || message.starts_with("no such column")
                        || message.contains("has no column named")
                        || message.contains("ON CONFLICT clause does not match") =>
                    {
                        Kind::Schema
                    }
                    _ => Kind::Rejected,
                }
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => Kind::Transient,
        _ => Kind::Rejected,
    };
    match kind {
        Kind::Schema => SinkError::Schema(e.to_string()),
        Kind::Transient => SinkError::Transient(e.to_string()),
        Kind::Rejected => SinkError::Rejected(e.to_string()),
    }
}

/// For the tests of levee's crates: which databases to run against, and raw SQL.
#[cfg(feature = "testing")]
pub mod testing {
    use super::*;

    /// The URL of a test database: SQLite always (a new temp file), PostgreSQL and MySQL
    /// when LEVEE_TEST_POSTGRES_URL / LEVEE_TEST_MYSQL_URL are set. With
    /// LEVEE_TEST_REQUIRE_SERVICES=1 a missing one fails the test instead of skipping it.
    pub fn database_url(dialect: &str) -> Option<String> {
        let var = match dialect {
            "postgres" => "LEVEE_TEST_POSTGRES_URL",
            "mysql" => "LEVEE_TEST_MYSQL_URL",
            _ => {
                let dir = tempfile::tempdir().unwrap().keep();
                return Some(format!("sqlite://{}/test.db", dir.display()));
            }
        };
        match std::env::var(var) {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var("LEVEE_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") => {
                panic!("{var} is not set and LEVEE_TEST_REQUIRE_SERVICES=1")
            }
            _ => {
                eprintln!("skipped: {var} is not set");
                None
            }
        }
    }

    /// A table name no other test uses.
    pub fn unique_table() -> String {
        format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..20])
    }

    impl SqlSink {
        /// Run a statement.
        pub async fn execute(&self, sql: &str) -> Result<(), sqlx::Error> {
            let sql = sql.to_owned();
            with_pool!(&self.pool, p => sqlx::query(AssertSqlSafe(sql)).execute(p).await.map(|_| ()))
        }

        /// The first column of every row of a query, as text.
        pub async fn strings(&self, sql: &str) -> Result<Vec<Option<String>>, sqlx::Error> {
            use sqlx::Row as _;
            let sql = sql.to_owned();
            with_pool!(&self.pool, p => {
                let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(p).await?;
                rows.iter().map(|r| r.try_get::<Option<String>, _>(0)).collect()
            })
        }

        /// How many rows a table has.
        pub async fn count(&self, table: &str) -> Result<i64, sqlx::Error> {
            use sqlx::Row as _;
            let sql = format!("SELECT COUNT(*) FROM {}", self.quote(table));
            with_pool!(&self.pool, p => sqlx::query(AssertSqlSafe(sql)).fetch_one(p).await?.try_get::<i64, _>(0))
        }

        /// `"name"` or `` `name` ``, as this dialect quotes identifiers.
        pub fn quoted(&self, name: &str) -> String {
            self.quote(name)
        }

        pub fn is_postgres(&self) -> bool {
            matches!(self.pool, Pool::Postgres(_))
        }

        pub fn is_mysql(&self) -> bool {
            matches!(self.pool, Pool::MySql(_))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_tokens_find_what_value_pointer_finds() {
        let doc = serde_json::json!({
            "zip": "37415",
            "a": {"b": [10, {"c": "deep"}], "": "empty key"},
            "a/b": "slash", "m~n": "tilde", "list": [1, 2, 3],
        });
        for pointer in [
            "", "/zip", "/a/b/0", "/a/b/1/c", "/a/", "/a~1b", "/m~0n", "/list/2", "/list/02",
            "/list/+1", "/list/-", "/list/3", "/missing", "/zip/0", "zip", "/a/b/x",
        ] {
            let found = pointer_tokens(pointer).and_then(|t| lookup(&doc, &t).cloned());
            assert_eq!(found.as_ref(), doc.pointer(pointer), "{pointer:?}");
        }
    }
}

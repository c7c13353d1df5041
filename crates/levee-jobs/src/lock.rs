//! Which node runs the scheduled jobs: the one holding the database's own lock —
//! `pg_try_advisory_lock` on PostgreSQL, `GET_LOCK` on MySQL/MariaDB — or, with SQLite (one
//! machine), a lock on a file beside it. The lock belongs to a connection (or an open file):
//! if the node dies, the database lets go of it and a standby node takes over.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::{Connection, MySqlConnection, PgConnection};

/// The lock's name; every levee node of a database competes for the same one.
const LOCK_NAME: &str = "levee:scheduler";
/// How long a connect or a check may take. A connection left hanging by a failover would
/// otherwise keep "holding" the lock for as long as TCP takes to give up.
const TIMEOUT: Duration = Duration::from_secs(2);

async fn within<T>(
    what: &str,
    work: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, work).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("{what} took more than {} s", TIMEOUT.as_secs())),
    }
}

#[derive(Debug, Clone)]
pub enum Lock {
    Postgres(String),
    MySql(String),
    File(PathBuf),
}

/// The lock, held for as long as this lives.
pub enum Held {
    Postgres(PgConnection),
    MySql(MySqlConnection),
    File(std::fs::File),
}

impl Lock {
    /// The lock that goes with the database at `url`; SQLite's is `lock_file`.
    pub fn for_database(url: &str, lock_file: PathBuf) -> Lock {
        if url.starts_with("postgres") {
            Lock::Postgres(url.to_owned())
        } else if url.starts_with("mysql") || url.starts_with("mariadb") {
            Lock::MySql(url.replacen("mariadb:", "mysql:", 1))
        } else {
            Lock::File(lock_file)
        }
    }

    /// Take the lock if nobody holds it; `None` if another node does.
    pub async fn try_acquire(&self) -> Result<Option<Held>, String> {
        match self {
            Lock::Postgres(url) => {
                let mut conn = within("connecting", PgConnection::connect(url)).await?;
                let got: bool = within(
                    "taking the lock",
                    sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                        .bind(LOCK_NAME)
                        .fetch_one(&mut conn),
                )
                .await?;
                Ok(got.then_some(Held::Postgres(conn)))
            }
            Lock::MySql(url) => {
                let mut conn = within("connecting", MySqlConnection::connect(url)).await?;
                // MySQL's lock names are server-wide: name the database, so deployments
                // sharing a server do not take each other's lock.
                let got: Option<i64> = within(
                    "taking the lock",
                    sqlx::query_scalar("SELECT GET_LOCK(LEFT(CONCAT(?, ':', DATABASE()), 64), 0)")
                        .bind(LOCK_NAME)
                        .fetch_one(&mut conn),
                )
                .await?;
                Ok((got == Some(1)).then_some(Held::MySql(conn)))
            }
            Lock::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                match file.try_lock() {
                    Ok(()) => Ok(Some(Held::File(file))),
                    Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                    Err(std::fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
                }
            }
        }
    }
}

impl Held {
    /// Whether the lock is still ours: its connection still answers, within a deadline.
    pub async fn still_held(&mut self) -> bool {
        match self {
            Held::Postgres(conn) => within("checking the lock", conn.ping()).await.is_ok(),
            Held::MySql(conn) => within("checking the lock", conn.ping()).await.is_ok(),
            Held::File(_) => true,
        }
    }
}

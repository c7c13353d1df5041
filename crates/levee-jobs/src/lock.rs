//! Which node runs the scheduled jobs: the one holding the database's own lock —
//! `pg_try_advisory_lock` on PostgreSQL, `GET_LOCK` on MySQL/MariaDB — or, with SQLite (one
//! machine), a lock on a file beside it. The lock belongs to a connection (or an open file):
//! if the node dies, the database lets go of it and a standby node takes over.

use std::path::PathBuf;

use sqlx::{Connection, MySqlConnection, PgConnection};

/// The lock's name; every levee node of a database competes for the same one.
const LOCK_NAME: &str = "levee:scheduler";

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
                let mut conn = PgConnection::connect(url)
                    .await
                    .map_err(|e| e.to_string())?;
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                    .bind(LOCK_NAME)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(got.then_some(Held::Postgres(conn)))
            }
            Lock::MySql(url) => {
                let mut conn = MySqlConnection::connect(url)
                    .await
                    .map_err(|e| e.to_string())?;
                let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
                    .bind(LOCK_NAME)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
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
    /// Whether the lock is still ours: its connection still answers.
    pub async fn still_held(&mut self) -> bool {
        match self {
            Held::Postgres(conn) => conn.ping().await.is_ok(),
            Held::MySql(conn) => conn.ping().await.is_ok(),
            Held::File(_) => true,
        }
    }
}

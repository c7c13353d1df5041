//! Where a job's data comes from: an HTTP GET, a SQL query on the database, or a file. Each
//! gives one JSON document; CSV becomes an array of objects, one per row.

use std::path::PathBuf;
use std::time::Duration;

use levee_config::{DataFormat, JobSource};
use serde_json::{Map, Value};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Column, Row};
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

/// The most a source may return. A vendor sending more is treated as a failure, not read
/// into memory.
pub const MAX_SOURCE_BYTES: usize = 64 * 1024 * 1024;

pub enum Source {
    Http {
        url: String,
        headers: reqwest::header::HeaderMap,
        format: Option<DataFormat>,
    },
    Sql {
        query: String,
    },
    File {
        path: PathBuf,
        format: Option<DataFormat>,
    },
}

impl Source {
    pub fn from_config(config: &JobSource) -> Result<Source, String> {
        if let Some(url) = &config.http {
            let mut headers = reqwest::header::HeaderMap::new();
            for (name, value) in &config.headers {
                let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| format!("header {name}: {e}"))?;
                let value = reqwest::header::HeaderValue::from_str(value)
                    .map_err(|e| format!("header {name}: {e}"))?;
                headers.insert(name, value);
            }
            return Ok(Source::Http {
                url: url.clone(),
                headers,
                format: config.format,
            });
        }
        if let Some(query) = &config.sql {
            return Ok(Source::Sql {
                query: query.clone(),
            });
        }
        if let Some(path) = &config.file {
            return Ok(Source::File {
                path: path.clone(),
                format: config.format,
            });
        }
        Err("must have exactly one of http, sql and file".into())
    }
}

/// What the sources share: one HTTP client and, once a SQL job first runs, a small pool.
pub struct Fetcher {
    http: reqwest::Client,
    database_url: String,
    pool: OnceCell<AnyPool>,
}

impl Fetcher {
    pub fn new(database_url: String) -> Fetcher {
        Fetcher {
            http: reqwest::Client::builder()
                .user_agent(concat!("levee/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("the HTTP client builds"),
            database_url,
            pool: OnceCell::new(),
        }
    }

    /// The source's data, within `timeout`.
    pub async fn fetch(&self, source: &Source, timeout: Duration) -> Result<Value, String> {
        match tokio::time::timeout(timeout, self.fetch_inner(source)).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {} s", timeout.as_secs())),
        }
    }

    async fn fetch_inner(&self, source: &Source) -> Result<Value, String> {
        match source {
            Source::Http {
                url,
                headers,
                format,
            } => {
                let mut response = self
                    .http
                    .get(url)
                    .headers(headers.clone())
                    .send()
                    .await
                    .map_err(|e| format!("GET {url}: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!("GET {url}: HTTP {}", response.status()));
                }
                let csv = match format {
                    Some(f) => *f == DataFormat::Csv,
                    None => response
                        .headers()
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("text/csv")),
                };
                let mut body = Vec::new();
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|e| format!("GET {url}: {e}"))?
                {
                    if body.len() + chunk.len() > MAX_SOURCE_BYTES {
                        return Err(format!("GET {url}: more than {MAX_SOURCE_BYTES} bytes"));
                    }
                    body.extend_from_slice(&chunk);
                }
                parse_blocking(body, csv).await
            }
            Source::File { path, format } => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                let mut body = Vec::new();
                file.take(MAX_SOURCE_BYTES as u64 + 1)
                    .read_to_end(&mut body)
                    .await
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                if body.len() > MAX_SOURCE_BYTES {
                    return Err(format!(
                        "{} is more than {MAX_SOURCE_BYTES} bytes",
                        path.display()
                    ));
                }
                let csv = match format {
                    Some(f) => *f == DataFormat::Csv,
                    None => path.extension().is_some_and(|e| e == "csv"),
                };
                parse_blocking(body, csv).await
            }
            Source::Sql { query } => {
                let pool = self
                    .pool
                    .get_or_try_init(|| connect(&self.database_url))
                    .await
                    .map_err(|e| format!("connecting to the database: {e}"))?;
                let rows = sqlx::query(AssertSqlSafe(query.as_str()))
                    .fetch_all(pool)
                    .await
                    .map_err(|e| format!("the query failed: {e}"))?;
                rows.iter()
                    .map(row_json)
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
        }
    }
}

async fn connect(url: &str) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(2)
        .connect(&url.replacen("mariadb:", "mysql:", 1))
        .await
}

/// Parsing up to [`MAX_SOURCE_BYTES`] takes a while: off the async threads.
async fn parse_blocking(body: Vec<u8>, csv: bool) -> Result<Value, String> {
    tokio::task::spawn_blocking(move || parse(&body, csv))
        .await
        .map_err(|e| format!("parsing failed: {e}"))?
}

fn parse(body: &[u8], csv: bool) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("the source returned nothing".into());
    }
    if !csv {
        return serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"));
    }
    let mut reader = csv::Reader::from_reader(body);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format!("not CSV: {e}"))?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("not CSV: {e}"))?;
        let row: Map<String, Value> = header
            .iter()
            .zip(record.iter())
            .map(|(name, cell)| (name.clone(), levee_publish::shard::typed(cell)))
            .collect();
        rows.push(Value::Object(row));
    }
    Ok(Value::Array(rows))
}

/// A row as a JSON object by column name. The portable types only (integers, floats, text,
/// booleans, NULL): cast others in the query, e.g. `received_at::text` on PostgreSQL.
fn row_json(row: &AnyRow) -> Result<Value, String> {
    let mut object = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let value = if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
            v.map_or(Value::Null, Value::from)
        } else if let Ok(v) = row.try_get::<Option<i32>, _>(i) {
            v.map_or(Value::Null, Value::from)
        } else if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
            v.map_or(Value::Null, Value::from)
        } else if let Ok(v) = row.try_get::<Option<f32>, _>(i) {
            // Through its shortest decimal form, so 0.1f32 reads 0.1, not 0.10000000149.
            v.map_or(Value::Null, |v| {
                Value::from(v.to_string().parse::<f64>().unwrap_or(f64::from(v)))
            })
        } else if let Ok(v) = row.try_get::<Option<String>, _>(i) {
            v.map_or(Value::Null, Value::from)
        } else if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
            v.map_or(Value::Null, Value::from)
        } else {
            return Err(format!(
                "column {:?} has a type levee cannot read; cast it to text in the query",
                column.name()
            ));
        };
        object.insert(column.name().to_owned(), value);
    }
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_become_objects_with_numbers_kept() {
        let value = parse(b"zip,city,lat\n37415,Chattanooga,35.1\n", true).unwrap();
        assert_eq!(
            value,
            serde_json::json!([{"zip": 37415, "city": "Chattanooga", "lat": 35.1}])
        );
    }

    #[test]
    fn empty_and_garbage_bodies_are_errors() {
        assert_eq!(
            parse(b"  \n", false).unwrap_err(),
            "the source returned nothing"
        );
        assert!(
            parse(b"<html>oops", false)
                .unwrap_err()
                .starts_with("not JSON")
        );
    }
}

//! The sink suite, run against SQLite, and against PostgreSQL and MariaDB when their URLs
//! are set (`LEVEE_TEST_POSTGRES_URL`, `LEVEE_TEST_MYSQL_URL`).

use std::time::SystemTime;

use levee_sink::testing::{database_url, unique_table};
use levee_sink::{Mapping, Migration, Row, Sink, SinkError, SinkOptions, SqlSink};
use serde_json::{Value, json};

fn mapping(table: &str) -> Mapping {
    Mapping {
        table: table.to_owned(),
        columns: vec![
            ("email".into(), "/email".into()),
            ("zip".into(), "/zip".into()),
            ("extra".into(), "/extra".into()),
        ],
    }
}

fn row<'a>(id: &'a str, payload: &'a Value) -> Row<'a> {
    Row {
        id,
        received_at: SystemTime::now(),
        payload,
        // A test's rows live as long as the test: leaking their text is harmless.
        json: Box::leak(payload.to_string().into_boxed_str()),
    }
}

async fn sink(dialect: &str) -> Option<SqlSink> {
    let url = database_url(dialect)?;
    Some(SqlSink::connect(&url, &SinkOptions::default()).unwrap())
}

async fn column(sink: &SqlSink, table: &str, column: &str, id: &str) -> Option<String> {
    let sql = format!(
        "SELECT CAST({} AS {}) FROM {} WHERE {} = '{id}'",
        sink.quoted(column),
        if sink.is_mysql() { "CHAR" } else { "TEXT" },
        sink.quoted(table),
        sink.quoted("id"),
    );
    sink.strings(&sql)
        .await
        .unwrap()
        .into_iter()
        .next()
        .flatten()
}

async fn migrate_creates_then_fits(dialect: &str) {
    let Some(sink) = sink(dialect).await else {
        return;
    };
    let m = mapping(&unique_table());
    assert!(sink.check(&m).await.is_err());
    assert_eq!(sink.migrate(&m).await.unwrap(), Migration::Created);
    assert_eq!(sink.migrate(&m).await.unwrap(), Migration::Fits);
    sink.check(&m).await.unwrap();
}

async fn check_names_what_is_missing(dialect: &str) {
    let Some(sink) = sink(dialect).await else {
        return;
    };
    let table = unique_table();
    sink.execute(&format!(
        "CREATE TABLE {} (id VARCHAR(64) PRIMARY KEY, email TEXT)",
        sink.quoted(&table)
    ))
    .await
    .unwrap();
    let Err(SinkError::Schema(message)) = sink.migrate(&mapping(&table)).await else {
        panic!("an unfit table must be reported");
    };
    assert!(message.contains("received_at"), "{message}");
    assert!(message.contains("payload"), "{message}");
    assert!(message.contains(r#"zip (mapped from "/zip")"#), "{message}");
    assert!(!message.contains("email"), "{message}");
}

async fn check_wants_id_as_the_key(dialect: &str) {
    let Some(sink) = sink(dialect).await else {
        return;
    };
    let table = unique_table();
    let json_type = match dialect {
        "postgres" => "jsonb",
        "mysql" => "JSON",
        _ => "TEXT",
    };
    sink.execute(&format!(
        "CREATE TABLE {} (id VARCHAR(64) NOT NULL, received_at VARCHAR(40), payload {json_type}, email TEXT, zip TEXT, extra TEXT)",
        sink.quoted(&table)
    ))
    .await
    .unwrap();
    let Err(SinkError::Schema(message)) = sink.check(&mapping(&table)).await else {
        panic!("a table without a key on id must be refused");
    };
    assert!(message.contains("primary key"), "{message}");
    sink.execute(&format!(
        "CREATE UNIQUE INDEX {} ON {} (id)",
        sink.quoted(&format!("{table}_id")),
        sink.quoted(&table)
    ))
    .await
    .unwrap();
    sink.check(&mapping(&table)).await.unwrap();
}

async fn rows_are_mapped_with_id_time_and_payload(dialect: &str) {
    let Some(sink) = sink(dialect).await else {
        return;
    };
    let m = mapping(&unique_table());
    sink.migrate(&m).await.unwrap();
    let payload = json!({"email": "ada@example.org", "zip": "37415", "extra": {"n": 1}});
    let sparse = json!({"email": "bob@example.org"});
    sink.write(&m, &[row("a1", &payload), row("b2", &sparse)])
        .await
        .unwrap();

    assert_eq!(
        column(&sink, &m.table, "email", "a1").await.as_deref(),
        Some("ada@example.org")
    );
    assert_eq!(
        column(&sink, &m.table, "zip", "a1").await.as_deref(),
        Some("37415")
    );
    let extra: Value =
        serde_json::from_str(&column(&sink, &m.table, "extra", "a1").await.unwrap()).unwrap();
    assert_eq!(extra, json!({"n": 1}));
    assert_eq!(
        column(&sink, &m.table, "zip", "b2").await,
        None,
        "a missing pointer is NULL"
    );
    let stored: Value =
        serde_json::from_str(&column(&sink, &m.table, "payload", "a1").await.unwrap()).unwrap();
    assert_eq!(stored, payload);
    assert!(
        column(&sink, &m.table, "received_at", "a1")
            .await
            .unwrap()
            .starts_with("20")
    );
    assert!(sink.contains(&m.table, "a1").await.unwrap());
    assert!(!sink.contains(&m.table, "nope").await.unwrap());
}

async fn a_message_written_twice_is_one_row(dialect: &str) {
    let Some(sink) = sink(dialect).await else {
        return;
    };
    let m = mapping(&unique_table());
    sink.migrate(&m).await.unwrap();
    let payload = json!({"email": "ada@example.org", "zip": "37415"});
    sink.write(&m, &[row("same", &payload)]).await.unwrap();
    sink.write(&m, &[row("same", &payload), row("other", &payload)])
        .await
        .unwrap();
    assert_eq!(sink.count(&m.table).await.unwrap(), 2);
}

async fn a_bad_row_rejects_its_whole_batch(dialect: &str) {
    let Some(sink) = sink(dialect).await else {
        return;
    };
    let m = mapping(&unique_table());
    sink.migrate(&m).await.unwrap();
    // The operator's own rule: a zip is five characters.
    let constraint = format!(
        "ALTER TABLE {} ADD CONSTRAINT {} CHECK (zip IS NULL OR LENGTH(zip) = 5)",
        sink.quoted(&m.table),
        sink.quoted(&format!("{}_zip", m.table))
    );
    if dialect == "sqlite" {
        // SQLite cannot add a constraint to a table: make the table with it instead.
        sink.execute(&format!("DROP TABLE {}", sink.quoted(&m.table)))
            .await
            .unwrap();
        sink.execute(&format!(
            "CREATE TABLE {} (id TEXT PRIMARY KEY, received_at TEXT NOT NULL, payload TEXT NOT NULL, email TEXT, zip TEXT CHECK (zip IS NULL OR LENGTH(zip) = 5), extra TEXT)",
            sink.quoted(&m.table)
        ))
        .await
        .unwrap();
    } else {
        sink.execute(&constraint).await.unwrap();
    }
    let good = json!({"email": "ada@example.org", "zip": "37415"});
    let bad = json!({"email": "eve@example.org", "zip": "123"});
    let result = sink.write(&m, &[row("g", &good), row("b", &bad)]).await;
    assert!(matches!(result, Err(SinkError::Rejected(_))), "{result:?}");
    assert_eq!(
        sink.count(&m.table).await.unwrap(),
        0,
        "nothing of a failed batch is kept"
    );
    sink.write(&m, &[row("g", &good)]).await.unwrap();
    assert_eq!(sink.count(&m.table).await.unwrap(), 1);
}

async fn a_down_database_is_transient(dialect: &str) {
    if dialect == "sqlite" || database_url(dialect).is_none() {
        return;
    }
    // Nothing listens on port 1.
    let url = match dialect {
        "postgres" => "postgres://postgres@127.0.0.1:1/test",
        _ => "mysql://root@127.0.0.1:1/test",
    };
    let options = SinkOptions {
        acquire_timeout: std::time::Duration::from_secs(1),
        ..SinkOptions::default()
    };
    let sink = SqlSink::connect(url, &options).unwrap();
    let payload = json!({"email": "ada@example.org"});
    let result = sink.write(&mapping("signups"), &[row("x", &payload)]).await;
    assert!(matches!(result, Err(SinkError::Transient(_))), "{result:?}");
}

async fn a_value_the_database_refuses_is_rejected_not_transient(dialect: &str) {
    if dialect != "postgres" {
        return;
    }
    let Some(sink) = sink(dialect).await else {
        return;
    };
    let m = mapping(&unique_table());
    sink.migrate(&m).await.unwrap();
    // PostgreSQL refuses NUL in text with SQLSTATE 22021: all digits, yet not a SQLite code.
    let payload = json!({"email": "a\u{0}b"});
    let result = sink.write(&m, &[row("nul", &payload)]).await;
    assert!(matches!(result, Err(SinkError::Rejected(_))), "{result:?}");
}

macro_rules! suite {
    ($($dialect:ident),*) => {$(
        mod $dialect {
            #[tokio::test]
            async fn migrate_creates_then_fits() { super::migrate_creates_then_fits(stringify!($dialect)).await }
            #[tokio::test]
            async fn check_wants_id_as_the_key() { super::check_wants_id_as_the_key(stringify!($dialect)).await }
            #[tokio::test]
            async fn check_names_what_is_missing() { super::check_names_what_is_missing(stringify!($dialect)).await }
            #[tokio::test]
            async fn rows_are_mapped_with_id_time_and_payload() { super::rows_are_mapped_with_id_time_and_payload(stringify!($dialect)).await }
            #[tokio::test]
            async fn a_message_written_twice_is_one_row() { super::a_message_written_twice_is_one_row(stringify!($dialect)).await }
            #[tokio::test]
            async fn a_bad_row_rejects_its_whole_batch() { super::a_bad_row_rejects_its_whole_batch(stringify!($dialect)).await }
            #[tokio::test]
            async fn a_down_database_is_transient() { super::a_down_database_is_transient(stringify!($dialect)).await }
            #[tokio::test]
            async fn a_value_the_database_refuses_is_rejected_not_transient() { super::a_value_the_database_refuses_is_rejected_not_transient(stringify!($dialect)).await }
        }
    )*};
}

suite!(sqlite, postgres, mysql);

mod missing_table {
    use super::*;

    /// A table that does not exist is the operator's problem, never the message's.
    #[tokio::test]
    async fn is_a_schema_error_on_every_dialect() {
        for dialect in ["sqlite", "postgres", "mysql"] {
            let Some(sink) = sink(dialect).await else {
                continue;
            };
            let payload = json!({"email": "ada@example.org"});
            let result = sink
                .write(&mapping(&unique_table()), &[row("x", &payload)])
                .await;
            assert!(
                matches!(result, Err(SinkError::Schema(_))),
                "{dialect}: {result:?}"
            );
        }
    }
}

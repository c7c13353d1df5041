//! Workers against real databases: SQLite always, PostgreSQL and MariaDB when their URLs
//! are set. The queue is the embedded one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use levee_queue::{EmbeddedOptions, EmbeddedQueue, NewMessage, Queue, QueueSpec};
use levee_sink::testing::{database_url, unique_table};
use levee_sink::{Mapping, Sink, SinkOptions, SqlSink};
use levee_worker::{Control, Drain, StreamDrain};
use tokio_util::sync::CancellationToken;

struct Setup {
    queue: Arc<EmbeddedQueue>,
    sink: Arc<SqlSink>,
    stream: StreamDrain,
    dir: tempfile::TempDir,
}

async fn setup(dialect: &str) -> Option<Setup> {
    let url = database_url(dialect)?;
    let sink = Arc::new(SqlSink::connect(&url, &SinkOptions::default()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(
        EmbeddedQueue::open(
            &dir.path().join("queue"),
            EmbeddedOptions {
                min_free_disk_bytes: 0,
                max_size_bytes: None,
            },
        )
        .unwrap(),
    );
    queue
        .declare(&QueueSpec {
            name: "signups".into(),
            max_attempts: 2,
            max_depth: 1_000_000,
        })
        .await
        .unwrap();
    let mapping = Mapping {
        table: unique_table(),
        columns: vec![
            ("email".into(), "/email".into()),
            ("zip".into(), "/zip".into()),
        ],
    };
    sink.migrate(&mapping).await.unwrap();
    let stream = StreamDrain {
        name: "signups".into(),
        mapping,
        workers: 2,
        batch_size: 100,
        lease: Duration::from_secs(30),
        retry_delay: Duration::ZERO,
    };
    Some(Setup {
        queue,
        sink,
        stream,
        dir,
    })
}

impl Setup {
    fn control(&self) -> Arc<Control> {
        Arc::new(
            Control::open(
                &self.dir.path().join("control.json"),
                vec!["signups".into()],
            )
            .unwrap(),
        )
    }

    fn drain(&self, control: Arc<Control>) -> Arc<Drain> {
        Arc::new(Drain::new(
            self.queue.clone(),
            self.sink.clone(),
            control,
            vec![self.stream.clone()],
        ))
    }

    async fn send(&self, messages: Vec<(String, String)>) {
        let messages = messages
            .into_iter()
            .map(|(id, zip)| NewMessage {
                payload: format!(r#"{{"email":"{id}@example.org","zip":"{zip}"}}"#).into_bytes(),
                id,
            })
            .collect();
        self.queue.send("signups", messages).await.unwrap();
    }

    /// Wait until the queue holds nothing but dead letters.
    async fn drained(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stats = self.queue.stats("signups").await.unwrap();
            if stats.depth == 0 && stats.in_flight == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "not drained: {stats:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn table(&self) -> &str {
        &self.stream.mapping.table
    }

    /// Make a zip of any length but five a database error: the "bug" to fix later.
    async fn add_zip_rule(&self) {
        let t = self.sink.quoted(self.table());
        if self.sink.is_postgres() || self.sink.is_mysql() {
            let name = self.sink.quoted(&format!("{}_zip", self.table()));
            self.sink
                .execute(&format!(
                    "ALTER TABLE {t} ADD CONSTRAINT {name} CHECK (LENGTH(zip) = 5)"
                ))
                .await
                .unwrap();
        } else {
            // SQLite cannot add a constraint: rebuild the table with it.
            self.sink.execute(&format!("DROP TABLE {t}")).await.unwrap();
            self.sink
                .execute(&format!(
                    "CREATE TABLE {t} (id TEXT PRIMARY KEY, received_at TEXT NOT NULL, payload TEXT NOT NULL, email TEXT, zip TEXT CHECK (LENGTH(zip) = 5))"
                ))
                .await
                .unwrap();
        }
    }

    async fn drop_zip_rule(&self) {
        let t = self.sink.quoted(self.table());
        if self.sink.is_postgres() || self.sink.is_mysql() {
            let name = self.sink.quoted(&format!("{}_zip", self.table()));
            self.sink
                .execute(&format!("ALTER TABLE {t} DROP CONSTRAINT {name}"))
                .await
                .unwrap();
        } else {
            let old = self.sink.quoted(&format!("{}_old", self.table()));
            for sql in [
                format!("ALTER TABLE {t} RENAME TO {old}"),
                format!(
                    "CREATE TABLE {t} (id TEXT PRIMARY KEY, received_at TEXT NOT NULL, payload TEXT NOT NULL, email TEXT, zip TEXT)"
                ),
                format!("INSERT INTO {t} SELECT * FROM {old}"),
                format!("DROP TABLE {old}"),
            ] {
                self.sink.execute(&sql).await.unwrap();
            }
        }
    }
}

async fn one_poison_message_in_100_gives_99_rows_and_1_dead_letter(dialect: &str) {
    let Some(s) = setup(dialect).await else {
        return;
    };
    s.add_zip_rule().await;
    let mut messages: Vec<(String, String)> = (0..100)
        .map(|i| (format!("m{i:03}"), "37415".to_string()))
        .collect();
    messages[42].1 = "123".into();
    s.send(messages).await;

    let shutdown = CancellationToken::new();
    let drain = s.drain(s.control());
    let workers = drain.spawn(&shutdown);
    s.drained().await;
    assert_eq!(s.sink.count(s.table()).await.unwrap(), 99);
    let dead = s.queue.dead("signups", 10, None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "m042");
    assert_eq!(dead[0].attempts, 2);
    assert!(!dead[0].error.is_empty());
    assert!(!s.sink.contains(s.table(), "m042").await.unwrap());

    // Fix the table, redrive: the message is stored, once.
    s.drop_zip_rule().await;
    assert_eq!(s.queue.redrive("signups", None).await.unwrap(), 1);
    s.drained().await;
    assert_eq!(s.sink.count(s.table()).await.unwrap(), 100);
    assert!(s.sink.contains(s.table(), "m042").await.unwrap());
    assert_eq!(drain.stored("signups"), 100);

    shutdown.cancel();
    for w in workers {
        w.await.unwrap();
    }
}

async fn a_message_delivered_twice_is_one_row(dialect: &str) {
    let Some(s) = setup(dialect).await else {
        return;
    };
    let shutdown = CancellationToken::new();
    let drain = s.drain(s.control());
    let workers = drain.spawn(&shutdown);
    s.send(vec![("once".into(), "37415".into())]).await;
    s.drained().await;
    // The same id again, as after a lost ack: the queue takes it, the table keeps one row.
    s.send(vec![
        ("once".into(), "37415".into()),
        ("twice".into(), "10001".into()),
    ])
    .await;
    s.drained().await;
    assert_eq!(s.sink.count(s.table()).await.unwrap(), 2);
    shutdown.cancel();
    for w in workers {
        w.await.unwrap();
    }
}

async fn pause_holds_resume_drains_and_pause_survives_a_restart(dialect: &str) {
    let Some(s) = setup(dialect).await else {
        return;
    };
    let control = s.control();
    control
        .pause(Some("signups"), Some("moving the database".into()))
        .unwrap();

    // A restart: the pause is read back from disk.
    drop(control);
    let control = s.control();
    assert_eq!(
        control.paused("signups").unwrap().message.as_deref(),
        Some("moving the database")
    );

    let shutdown = CancellationToken::new();
    let drain = s.drain(control.clone());
    let workers = drain.spawn(&shutdown);
    s.send((0..10).map(|i| (format!("p{i}"), "37415".into())).collect())
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        s.sink.count(s.table()).await.unwrap(),
        0,
        "paused: nothing is written"
    );
    assert_eq!(s.queue.stats("signups").await.unwrap().depth, 10);

    control.resume(None).unwrap();
    s.drained().await;
    assert_eq!(s.sink.count(s.table()).await.unwrap(), 10);
    assert!(
        s.control().paused("signups").is_none(),
        "the resume is durable too"
    );
    shutdown.cancel();
    for w in workers {
        w.await.unwrap();
    }
}

macro_rules! suite {
    ($($dialect:ident),*) => {$(
        mod $dialect {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_poison_message_in_100_gives_99_rows_and_1_dead_letter() {
                super::one_poison_message_in_100_gives_99_rows_and_1_dead_letter(stringify!($dialect)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_message_delivered_twice_is_one_row() {
                super::a_message_delivered_twice_is_one_row(stringify!($dialect)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pause_holds_resume_drains_and_pause_survives_a_restart() {
                super::pause_holds_resume_drains_and_pause_survives_a_restart(stringify!($dialect)).await
            }
        }
    )*};
}

suite!(sqlite, postgres, mysql);

/// A drain of one worker, batches of 10, into a PostgreSQL table that takes a second per
/// statement (a trigger sleeps), with 30 messages queued. Drop with [`drop_slow`].
async fn slow_drain(s: &Setup, control: Arc<Control>) -> Arc<Drain> {
    let t = s.sink.quoted(s.table());
    let slow = s.sink.quoted(&format!("{}_slow", s.table()));
    s.sink
        .execute(&format!(
            "CREATE FUNCTION {slow}() RETURNS trigger AS $$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$ LANGUAGE plpgsql"
        ))
        .await
        .unwrap();
    s.sink
        .execute(&format!(
            "CREATE TRIGGER {slow} AFTER INSERT ON {t} FOR EACH STATEMENT EXECUTE FUNCTION {slow}()"
        ))
        .await
        .unwrap();
    let mut stream = s.stream.clone();
    stream.workers = 1;
    stream.batch_size = 10;
    let drain = Arc::new(Drain::new(
        s.queue.clone(),
        s.sink.clone(),
        control,
        vec![stream],
    ));
    s.send(
        (0..30)
            .map(|i| (format!("s{i:02}"), "37415".into()))
            .collect(),
    )
    .await;
    drain
}

async fn drop_slow(s: &Setup) {
    let t = s.sink.quoted(s.table());
    let slow = s.sink.quoted(&format!("{}_slow", s.table()));
    s.sink.execute(&format!("DROP TABLE {t}")).await.unwrap();
    s.sink
        .execute(&format!("DROP FUNCTION {slow}"))
        .await
        .unwrap();
}

/// Shutdown in the middle of a slow write: the batch in hand is finished and acked, and
/// nothing more is taken (the batch received meanwhile is handed back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_batch_in_hand() {
    let Some(s) = setup("postgres").await else {
        return;
    };
    let drain = slow_drain(&s, s.control()).await;
    let shutdown = CancellationToken::new();
    let workers = drain.spawn(&shutdown);
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    for w in workers {
        w.await.unwrap();
    }
    let stats = s.queue.stats("signups").await.unwrap();
    assert_eq!(
        s.sink.count(s.table()).await.unwrap(),
        10,
        "the batch in hand was written"
    );
    assert_eq!(
        (stats.depth, stats.in_flight),
        (20, 0),
        "it was acked, and nothing more was taken"
    );
    drop_slow(&s).await;
}

/// A pause in the middle of a slow write: the batch in hand is finished, the one received
/// meanwhile is handed back at once (not held, not written), and resume drains the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_mid_write_hands_back_the_next_batch() {
    let Some(s) = setup("postgres").await else {
        return;
    };
    let control = s.control();
    let drain = slow_drain(&s, control.clone()).await;
    let shutdown = CancellationToken::new();
    let workers = drain.spawn(&shutdown);
    tokio::time::sleep(Duration::from_millis(300)).await;
    control.pause(Some("signups"), None).unwrap();
    // The write in hand takes a second; then the worker sees the pause.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stats = s.queue.stats("signups").await.unwrap();
    assert_eq!(
        s.sink.count(s.table()).await.unwrap(),
        10,
        "only the batch in hand was written"
    );
    assert_eq!(
        (stats.depth, stats.in_flight),
        (20, 0),
        "the batch received ahead was handed back"
    );
    control.resume(None).unwrap();
    s.drained().await;
    assert_eq!(s.sink.count(s.table()).await.unwrap(), 30);
    shutdown.cancel();
    for w in workers {
        w.await.unwrap();
    }
    drop_slow(&s).await;
}

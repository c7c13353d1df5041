//! The database goes down under steady load (a fault proxy cuts every connection to
//! PostgreSQL): intake keeps answering 202, the workers back off instead of hammering, and
//! once the proxy heals the backlog drains by itself with every acknowledged write stored
//! exactly once.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use levee_sink::testing::{database_url, unique_table};
use levee_sink::{Mapping, Sink, SinkOptions, SqlSink};
use support::proxy::FaultProxy;
use support::{Levee, Load, assert_exactly_once, table_ids, write_config_with};

/// `postgres://user@host:port/db` → (host:port, the URL with `addr` in its place).
fn through(url: &str, addr: SocketAddr) -> (SocketAddr, String) {
    let start = url
        .find('@')
        .map_or(url.find("//").unwrap() + 2, |at| at + 1);
    let end = start + url[start..].find('/').unwrap_or(url.len() - start);
    let upstream = url[start..end]
        .replace("localhost", "127.0.0.1")
        .parse()
        .unwrap();
    (upstream, format!("{}{addr}{}", &url[..start], &url[end..]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_load_loses_nothing_and_drains_by_itself() {
    let Some(url) = database_url("postgres") else {
        return;
    };
    let table = unique_table();
    let db = SqlSink::connect(&url, &SinkOptions::default()).unwrap();
    let columns = ["email", "name", "zip", "message"];
    db.migrate(&Mapping {
        table: table.clone(),
        columns: columns
            .iter()
            .map(|c| (c.to_string(), format!("/{c}")))
            .collect(),
    })
    .await
    .unwrap();

    let (upstream, _) = through(&url, "127.0.0.1:1".parse().unwrap());
    let proxy = FaultProxy::start(upstream).await;
    let (_, proxied) = through(&url, proxy.addr);
    let dir = tempfile::tempdir().unwrap();
    write_config_with(dir.path(), |t| {
        t.replace("table = \"signups\"", &format!("table = \"{table}\""))
            .replace(
                "url = \"sqlite://levee-data/levee.db\"",
                &format!("url = \"{proxied}\""),
            )
    });
    let levee = Levee::start(dir.path());

    let load = Load::start(&levee.url, 8, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stored_before = db.count(&table).await.unwrap();
    assert!(stored_before > 0, "workers drain while the database is up");

    proxy.cut();
    let before = proxy.connections();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let attempts = proxy.connections() - before;
    proxy.heal();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (acked, refused) = load.stop().await;

    assert_eq!(
        refused, 0,
        "intake answered something other than 202 during the outage"
    );
    // A hot loop would make thousands of attempts in 10 s; backoff makes a handful.
    assert!(
        attempts <= 40,
        "{attempts} connection attempts in a 10 s outage"
    );
    let ids = table_ids(&db, &table, &acked).await;
    assert_exactly_once(&acked, &ids);
    assert_eq!(ids.len(), acked.len());
    eprintln!(
        "accepted {}, connection attempts during the outage {attempts}",
        acked.len()
    );
    db.execute(&format!("DROP TABLE {table}")).await.unwrap();
}

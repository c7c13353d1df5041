//! CLI commands that talk to a running node over the admin API: status, pause, resume,
//! dead, job run. The node is found from `--url`, or the config's listen address; the token from
//! `LEVEE_ADMIN_TOKEN`, or the one the node keeps in its data directory.

use std::path::Path;

use anyhow::{Context, bail};
use levee_config::Config;
use reqwest::Method;
use serde_json::{Value, json};

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(config_path: Option<&Path>, url: Option<&str>) -> anyhow::Result<Client> {
        let config = Config::load(config_path)?;
        let base = match url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let mut addr = config.server.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip([127, 0, 0, 1].into());
                }
                format!("http://{addr}")
            }
        };
        let token = crate::token::read_token(&config.server.data_dir).context(
            "no admin token: set LEVEE_ADMIN_TOKEN (or run this where the node's data directory is)",
        )?;
        Ok(Client {
            base,
            token,
            http: reqwest::Client::new(),
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach levee at {}", self.base))?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"]["message"].as_str().unwrap_or("no details");
            bail!("{status}: {message}");
        }
        Ok(value)
    }
}

pub async fn status(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let status = client.call(Method::GET, "/v1/admin/status", None).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<8} {:>9} {:>9} {:>6} {:>10} {:>8} {:>8}  DATABASE",
        "STREAM", "STATE", "DEPTH", "IN FLIGHT", "DEAD", "OLDEST", "IN/S", "OUT/S"
    );
    for (name, s) in status["streams"].as_object().into_iter().flatten() {
        let state = if s["paused"].as_bool() == Some(true) {
            "paused"
        } else {
            "running"
        };
        let oldest = s["oldest_age_seconds"]
            .as_f64()
            .map_or("-".to_owned(), |a| format!("{a:.0}s"));
        let sink = if s["sink"]["healthy"].as_bool() == Some(true) {
            "ok".to_owned()
        } else {
            format!(
                "failing: {}",
                s["sink"]["last_error"].as_str().unwrap_or("?")
            )
        };
        println!(
            "{:<16} {:<8} {:>9} {:>9} {:>6} {:>10} {:>8.1} {:>8.1}  {}",
            name,
            state,
            s["depth"].as_u64().unwrap_or(0),
            s["in_flight"].as_u64().unwrap_or(0),
            s["dead"].as_u64().unwrap_or(0),
            oldest,
            s["intake_per_second"].as_f64().unwrap_or(0.0),
            s["drain_per_second"].as_f64().unwrap_or(0.0),
            sink
        );
        if let Some(message) = s["pause_message"].as_str() {
            println!("{:<16} message: {message}", "");
        }
    }
    let jobs = status["jobs"]["jobs"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if !jobs.is_empty() {
        println!();
        println!(
            "{:<24} {:<21} {:<21} LAST RUN",
            "JOB", "LAST SUCCESS", "NEXT RUN"
        );
    }
    for job in jobs {
        let last = &job["runs"][0];
        let outcome = match (last["ok"].as_bool(), last["error"].as_str()) {
            (None, _) => "not run yet".to_owned(),
            (Some(true), _) => format!("ok, {} items", last["items"].as_u64().unwrap_or(0)),
            (Some(false), error) => format!("failed: {}", error.unwrap_or("?")),
        };
        println!(
            "{:<24} {:<21} {:<21} {outcome}",
            job["name"].as_str().unwrap_or("?"),
            job["last_success"].as_str().unwrap_or("-"),
            job["next_run"].as_str().unwrap_or("-"),
        );
    }
    Ok(())
}

/// `levee job run NAME`: run a job now on the node and say how it went.
pub async fn job_run(client: &Client, name: &str) -> anyhow::Result<()> {
    let result = client
        .call(Method::POST, &format!("/v1/admin/jobs/{name}/run"), None)
        .await?;
    let run = &result["run"];
    if run["ok"].as_bool() != Some(true) {
        bail!(
            "job {name} failed (the last good file stays): {}",
            run["error"].as_str().unwrap_or("no details")
        );
    }
    println!(
        "job {name}: ok, {} items, {} in {} ms",
        run["items"].as_u64().unwrap_or(0),
        if run["changed"].as_bool() == Some(true) {
            "published"
        } else {
            "unchanged"
        },
        run["duration_ms"].as_u64().unwrap_or(0)
    );
    Ok(())
}

pub async fn pause(
    client: &Client,
    stream: Option<&str>,
    message: Option<String>,
) -> anyhow::Result<()> {
    let path = match stream {
        Some(s) => format!("/v1/admin/streams/{s}/pause"),
        None => "/v1/admin/pause".into(),
    };
    let result = client
        .call(Method::POST, &path, Some(json!({ "message": message })))
        .await?;
    println!("paused: {}", list(&result["streams"]));
    Ok(())
}

pub async fn resume(client: &Client, stream: Option<&str>) -> anyhow::Result<()> {
    let path = match stream {
        Some(s) => format!("/v1/admin/streams/{s}/resume"),
        None => "/v1/admin/resume".into(),
    };
    let result = client.call(Method::POST, &path, None).await?;
    println!("resumed: {}", list(&result["streams"]));
    Ok(())
}

/// `levee dead list|show|redrive|purge STREAM [IDS]`
pub async fn dead(
    client: &Client,
    action: &str,
    stream: &str,
    ids: &[String],
) -> anyhow::Result<()> {
    let base = format!("/v1/admin/streams/{stream}/dead");
    let ids_body = (!ids.is_empty()).then(|| json!({ "ids": ids }));
    match action {
        "list" => {
            let result = client.call(Method::GET, &base, None).await?;
            for d in result["dead"].as_array().into_iter().flatten() {
                println!(
                    "{}  attempts {}  {}",
                    d["id"].as_str().unwrap_or("?"),
                    d["attempts"],
                    d["error"].as_str().unwrap_or("")
                );
            }
        }
        "show" => {
            let [id] = ids else {
                bail!("levee dead show STREAM ID")
            };
            let result = client
                .call(Method::GET, &format!("{base}/{id}"), None)
                .await?;
            println!("{}", serde_json::to_string_pretty(&result)?);
        }
        "redrive" => {
            let result = client
                .call(Method::POST, &format!("{base}/redrive"), ids_body)
                .await?;
            println!("redriven: {}", result["redriven"]);
        }
        "purge" => {
            let result = client.call(Method::DELETE, &base, ids_body).await?;
            println!("purged: {}", result["purged"]);
        }
        other => bail!("unknown action {other:?}: list, show, redrive or purge"),
    }
    Ok(())
}

fn list(streams: &Value) -> String {
    streams
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// `levee migrate`: create missing tables, or say exactly what an existing one lacks.
pub async fn migrate(config_path: Option<&Path>) -> anyhow::Result<()> {
    use levee_sink::{Migration, Sink, SinkOptions, SqlSink};
    let config = Config::load(config_path)?;
    let sink = SqlSink::connect(&config.database_url(), &SinkOptions::default())?;
    let mut failed = false;
    for stream in &config.streams {
        let mapping = levee_worker::mapping(stream);
        match sink.migrate(&mapping).await {
            Ok(Migration::Created) => println!("{}: created table {}", stream.name, mapping.table),
            Ok(Migration::Fits) => println!("{}: table {} fits", stream.name, mapping.table),
            Err(e) => {
                failed = true;
                println!("{}: {e}", stream.name);
            }
        }
    }
    if failed {
        bail!("some tables do not fit their streams");
    }
    Ok(())
}

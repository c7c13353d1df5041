//! `levee serve`: open the queue, build the HTTP app for the chosen roles, serve until
//! SIGTERM or SIGINT, then shut down in order: stop accepting, finish the requests in
//! flight, flush the queue.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use levee_admin::Admin;
use levee_admin::status_file::{StatusFile, StatusStream};
use levee_config::Config;
use levee_intake::{ApiError, Intake};
use levee_publish::Publisher;
use levee_queue::{EmbeddedOptions, EmbeddedQueue, Queue};
use levee_sink::{Sink, SinkOptions, SqlSink};
use levee_static::{StaticFiles, StaticOptions};
use levee_worker::{Control, Drain, StreamDrain};
use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// How long requests in flight may take to finish once shutdown has begun.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What a node runs (`--roles`). Every node is the same binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The write API.
    Intake,
    /// Drains queues into the database.
    Worker,
    /// Admin API and UI.
    Admin,
    /// Serves the local store.
    Static,
    /// Runs scheduled jobs.
    Scheduler,
}

pub fn run(config_path: Option<&Path>, roles: &[Role]) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    if config_path.is_none() {
        tracing::info!("no --config given: running the built-in demo");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config, roles, config_path.is_none()))
}

/// Check that every stream's table fits. The demo creates its tables; a configured node
/// only warns, and its workers back off until `levee migrate` has run.
async fn prepare_tables(sink: &SqlSink, drains: &[StreamDrain], demo: bool) {
    for d in drains {
        let result = if demo {
            sink.migrate(&d.mapping).await.map(|_| ())
        } else {
            sink.check(&d.mapping).await
        };
        if let Err(e) = result {
            tracing::warn!(stream = d.name, error = %e, "the stream's table is not ready; run `levee migrate`");
        }
    }
}

async fn serve(config: Config, roles: &[Role], demo: bool) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let queue_dir = config
        .queue
        .embedded
        .path
        .clone()
        .unwrap_or_else(|| config.server.data_dir.join("queue"));
    let queue = Arc::new(
        EmbeddedQueue::open(
            &queue_dir,
            EmbeddedOptions {
                min_free_disk_bytes: config.queue.embedded.min_free_disk_bytes,
                max_size_bytes: config.queue.embedded.max_size_bytes,
            },
        )
        .with_context(|| format!("cannot open the queue in {}", queue_dir.display()))?,
    );
    let sink = Arc::new(SqlSink::connect(
        &config.database_url(),
        &SinkOptions::default(),
    )?);
    let drains: Vec<StreamDrain> = config
        .streams
        .iter()
        .map(StreamDrain::from_config)
        .collect();
    prepare_tables(&sink, &drains, demo).await;
    let intake = Arc::new(
        Intake::new(
            &config.streams,
            queue.clone(),
            config.server.trust_forwarded_for,
        )
        .await?
        .with_sink(sink.clone()),
    );
    let control = Arc::new(Control::open(
        &config.server.data_dir.join("control.json"),
        config.streams.iter().map(|s| s.name.clone()).collect(),
    )?);
    let (store, rules) = crate::files::configured_store(&config)?;
    let publisher = Publisher::new(store.clone(), rules.clone());
    if roles.contains(&Role::Worker) || roles.contains(&Role::Admin) {
        let streams = config
            .streams
            .iter()
            .map(|s| StatusStream {
                name: s.name.clone(),
                max_depth: s.max_depth,
                delayed_after: Duration::from_secs(s.delayed_after_seconds),
            })
            .collect();
        let status = StatusFile::new(queue.clone(), control.clone(), streams, publisher.clone());
        tokio::spawn(Arc::new(status).run(shutdown.clone()));
    }
    let static_files = if roles.contains(&Role::Static) {
        let options = StaticOptions {
            store: store.local_root().map(Path::to_owned),
            site: config.static_files.site_dir.clone(),
            not_found: config.static_files.not_found.clone(),
            rules: rules.clone(),
            cache_bytes: None,
        };
        Some(Arc::new(
            StaticFiles::new(options).context("cannot serve static files")?,
        ))
    } else {
        None
    };
    let cms = if roles.contains(&Role::Admin) {
        Some(crate::content::open(&config, publisher.clone()).await?)
    } else {
        None
    };
    if demo {
        crate::demo::spawn(cms.clone(), store.clone(), rules);
    }
    let jobs = crate::jobs::open(&config, publisher.clone())?;
    let scheduler = roles
        .contains(&Role::Scheduler)
        .then(|| tokio::spawn(jobs.clone().run(shutdown.clone())));
    let drain = Arc::new(Drain::new(queue.clone(), sink, control.clone(), drains));
    let workers = if roles.contains(&Role::Worker) {
        drain.spawn(&shutdown)
    } else {
        Vec::new()
    };

    let mut app = Router::new();
    if roles.contains(&Role::Intake) {
        app = app.merge(levee_intake::router(
            intake.clone(),
            config.server.noop_route,
        ));
    }
    if roles.contains(&Role::Admin) {
        let admin = Arc::new(
            Admin::new(
                crate::token::admin_token(&config.server.data_dir)?,
                queue.clone(),
                intake,
                drain,
                config
                    .streams
                    .iter()
                    .map(|s| (s.name.clone(), s.max_depth))
                    .collect(),
            )
            .with_jobs(jobs.clone()),
        );
        tokio::spawn(admin.clone().sample_rates(shutdown.clone()));
        app = app.merge(levee_admin::router(admin));
        if let Some(cms) = cms {
            let token = crate::token::admin_token(&config.server.data_dir)?;
            app = app.merge(crate::content::routers(cms, token, control, jobs, &shutdown).await?);
        }
    }
    if roles.contains(&Role::Static) {
        // levee.js, and the demo page at `/` unless a site is configured.
        app = app.merge(crate::kit::router(config.static_files.site_dir.is_none()));
    }
    let app = with_limits(app, static_files, &config);

    let listeners = bind(config.server.listen)?;
    let addr = listeners[0].local_addr()?;
    // On stdout, for people and for the tests that start levee on port 0.
    println!("levee listening on http://{addr}");
    tracing::info!(%addr, streams = config.streams.len(), "levee is up");

    let servers = listeners
        .into_iter()
        .enumerate()
        .map(|(i, listener)| serve_http(i, listener, app.clone(), shutdown.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let all_done = async {
        for server in servers {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(anyhow::Error::from(e).context("the HTTP server failed")),
                Err(_) => anyhow::bail!("an HTTP thread panicked"),
            }
        }
        Ok(())
    };
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = all_done => result?,
        () = grace => tracing::warn!("requests still running after the shutdown grace period"),
    }
    // Workers finish the batch in hand; then nothing uses the queue: flush and close it.
    shutdown.cancel();
    for worker in workers {
        let _ = worker.await;
    }
    // A job run in progress finishes and publishes.
    if let Some(scheduler) = scheduler {
        let _ = scheduler.await;
    }
    queue.close().await;
    tracing::info!("levee stopped");
    Ok(())
}

/// One listening socket per core, all on the same port (`SO_REUSEPORT`): the kernel
/// spreads connections across them, as it does for nginx's workers.
fn bind(addr: SocketAddr) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut listeners: Vec<std::net::TcpListener> = Vec::with_capacity(threads);
    for _ in 0..threads {
        // Port 0 means "any": the first socket picks it, the others share it.
        let addr = listeners.first().map_or(Ok(addr), |l| l.local_addr())?;
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket
            .bind(&addr.into())
            .with_context(|| format!("cannot listen on {addr}"))?;
        socket.listen(1024)?;
        listeners.push(socket.into());
    }
    Ok(listeners)
}

/// Serve HTTP on `listener` from a thread of its own with a single-threaded runtime: a
/// connection's work then never hops between threads, which on two cores measured
/// faster than one shared multi-threaded runtime (bench/static). Finishes the requests
/// in flight once `shutdown` is cancelled.
fn serve_http(
    i: usize,
    listener: std::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>> {
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("levee-http-{i}"))
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|runtime| {
                    runtime.block_on(async {
                        let listener = TcpListener::from_std(listener)?;
                        axum::serve(
                            listener,
                            app.into_make_service_with_connect_info::<SocketAddr>(),
                        )
                        .with_graceful_shutdown(shutdown.cancelled_owned())
                        .await
                    })
                });
            let _ = done.send(result);
        })?;
    Ok(finished)
}

/// Explicit limits around every route, each with its answer when full: at most
/// `max_concurrent_requests` at once (503 past it, at once), a body must arrive within
/// `request_timeout_seconds` (408). What no route takes goes to the static files, except
/// under `/v1/`, which answers a JSON 404/405.
fn with_limits(app: Router, static_files: Option<Arc<StaticFiles>>, config: &Config) -> Router {
    let fallback = |request: Request| async move {
        let path = request.uri().path();
        match static_files {
            Some(files) if !path.starts_with("/v1/") => {
                levee_static::serve(State(files), request).await
            }
            _ => {
                tracing::debug!(uri = %request.uri(), "no route");
                ApiError::not_found().into_response()
            }
        }
    };
    app.fallback(fallback)
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not allowed here",
            )
        })
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(
            config.server.request_timeout_seconds,
        )))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    ApiError::unavailable("levee is at its limit of concurrent requests", 1)
                }))
                .load_shed()
                // Global: `Router::layer` wraps each route apart, and the limit is for all.
                .layer(GlobalConcurrencyLimitLayer::new(
                    config.server.max_concurrent_requests,
                )),
        )
}

/// Cancel `token` on SIGINT or SIGTERM.
async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = ctrl_c.await;
            token.cancel();
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
    token.cancel();
}

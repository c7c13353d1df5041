//! Wiring of the CMS: its database, its scheduler, the content API and the admin UI, the
//! first admin user, and the `levee user add` and `levee publish` commands.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use levee_cms::api::{self, ContentState};
use levee_cms::auth::{self, Auth, Role};
use levee_cms::db::User;
use levee_cms::ui::{self, Streams, UiState};
use levee_cms::{Clock, Cms, CmsDb};
use levee_config::Config;
use levee_jobs::Jobs;
use levee_publish::Publisher;
use levee_worker::Control;
use tokio_util::sync::CancellationToken;

/// The CMS over the configured database, publishing through `publisher`.
pub async fn open(config: &Config, publisher: Publisher) -> anyhow::Result<Arc<Cms>> {
    let db = CmsDb::connect(&config.database_url())
        .await
        .context("cannot open the CMS tables in the database")?;
    let mut collections = BTreeMap::new();
    for c in &config.collections {
        let validator = levee_config::compile_schema(c.schema_json())
            .map_err(|e| anyhow::anyhow!("collection {}: {e}", c.name))?;
        collections.insert(c.name.clone(), validator);
    }
    Ok(Cms::new(db, publisher, Clock::system(), collections))
}

/// The content API and the admin UI; starts the CMS's scheduler and makes sure someone can
/// log in (`LEVEE_ADMIN_PASSWORD`, or a one-time setup link printed now).
pub async fn routers(
    cms: Arc<Cms>,
    token: String,
    control: Arc<Control>,
    jobs: Arc<Jobs>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Router> {
    let auth = Arc::new(Auth::new(token));
    tokio::spawn(cms.clone().run(shutdown.clone()));
    if cms.db().user_count().await? == 0 {
        match std::env::var("LEVEE_ADMIN_PASSWORD") {
            Ok(password) if !password.is_empty() => {
                add_user(cms.db(), "admin", Role::Admin, &password, cms.now()).await?;
                tracing::info!("created the admin user \"admin\" from LEVEE_ADMIN_PASSWORD");
            }
            _ => {
                let setup = auth.new_setup_token();
                // On stdout, like the listening address: the operator needs to see it.
                println!("no admin user yet: create one at /admin/setup?token={setup}");
            }
        }
    }
    let streams: Arc<dyn Streams> = Arc::new(ControlStreams(control));
    let content = api::router(ContentState {
        cms: cms.clone(),
        auth: auth.clone(),
    });
    let ui_state = UiState::new(cms, auth, Some(streams)).with_jobs(jobs);
    Ok(content.merge(ui::router(ui_state)))
}

struct ControlStreams(Arc<Control>);

impl Streams for ControlStreams {
    fn list(&self) -> Vec<(String, bool, Option<String>)> {
        self.0
            .streams()
            .iter()
            .map(|s| {
                let pause = self.0.paused(s);
                (s.clone(), pause.is_some(), pause.and_then(|p| p.message))
            })
            .collect()
    }

    fn pause(&self, stream: &str, message: Option<String>) -> Result<(), String> {
        self.0
            .pause(Some(stream), message)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn resume(&self, stream: &str) -> Result<(), String> {
        self.0
            .resume(Some(stream))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

async fn add_user(
    db: &CmsDb,
    name: &str,
    role: Role,
    password: &str,
    now: i64,
) -> anyhow::Result<()> {
    if password.chars().count() < 8 {
        bail!("the password must have at least 8 characters");
    }
    let user = User {
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        password_hash: auth::hash_password(password),
    };
    db.upsert_user(&user, now).await?;
    Ok(())
}

/// `levee user add NAME --role …`: the password comes from `LEVEE_USER_PASSWORD` or the
/// first line of stdin.
pub async fn user_add(config: Option<&Path>, name: &str, role: &str) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let Some(role) = Role::parse(role) else {
        bail!("--role must be admin or editor");
    };
    let password = match std::env::var("LEVEE_USER_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            eprintln!("password for {name}:");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let db = CmsDb::connect(&config.database_url()).await?;
    add_user(&db, name, role, &password, Clock::system().now()).await?;
    println!("user {name} ({}) saved", role.as_str());
    Ok(())
}

/// `levee publish`: render and publish every CMS file again.
pub async fn publish_all(config: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let (store, rules) = crate::files::configured_store(&config)?;
    let cms = open(&config, Publisher::new(store, rules)).await?;
    let count = cms.publish_all().await.map_err(anyhow::Error::msg)?;
    println!("published {count} targets");
    Ok(())
}

//! The real service on port 0, built by the same composition root as `lethe serve`
//! ([`lethe::app::Application`]) from a configuration in a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lethe::app::{Application, Options};
use lethe::audit::{AuditLog, KeySource};
use lethe::config::Config;
use lethe::notify::Mailer;
use lethe::policy::Policy;
use lethe::store::Store;
use secrecy::SecretString;

/// A running service. Dropping it stops the server.
pub struct TestApp {
    /// `http://127.0.0.1:port`.
    pub base: String,
    pub store: Store,
    pub audit: AuditLog,
    pub mailer: Arc<Mailer>,
    pub policy: Arc<Policy>,
    pub settings: lethe::requests::Settings,
    pub keys: KeySource,
    pub webhooks: Option<Arc<lethe::notify::webhook::Delivery>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The configuration of a test service kept in `dir`: the policies in `dir/policies`,
/// a SQLite store `dir/lethe.db`, keys in `dir/.lethe`, mail as `.eml` files in
/// `dir/outbox`, no jobs, no demo data, no rate limit, a free port on 127.0.0.1.
pub fn config(dir: &Path) -> Config {
    Config {
        policies: dir.join("policies"),
        database: SecretString::from(format!(
            "sqlite://{}?mode=rwc",
            dir.join("lethe.db").display()
        )),
        bind: "127.0.0.1:0".into(),
        jobs: dir.join("jobs"),
        demo_data: false,
        key_dir: dir.join(".lethe"),
        outbox: dir.join("outbox"),
        rate_limit: 0,
        ..Config::default()
    }
}

/// Sends `config`'s mail to the test SMTP server when `LETHE_TEST_SMTP` and
/// `LETHE_TEST_SMTP_MAILDIR` are set; returns the folder where the sent mail lands
/// (the server's maildir, else the `.eml` outbox).
pub fn use_smtp(config: &mut Config, test: &str) -> PathBuf {
    match (
        std::env::var("LETHE_TEST_SMTP"),
        std::env::var("LETHE_TEST_SMTP_MAILDIR"),
    ) {
        (Ok(smtp), Ok(maildir)) => {
            config.smtp_url = Some(SecretString::from(smtp));
            Path::new(&maildir).join("new")
        }
        _ => {
            super::skipped(
                &format!("{test} (reading mail from SMTP; using the .eml outbox)"),
                "SMTP",
                "LETHE_TEST_SMTP",
            );
            config.outbox.clone()
        }
    }
}

/// Copies the demo policies into `dir/policies` with the application database at
/// `app_db`, passing each file's text through `edit(file name, text)`.
pub fn demo_policies(dir: &Path, app_db: &str, edit: impl Fn(&str, String) -> String) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dst = dir.join("policies");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("sqlite://demo-app.db?mode=rwc", app_db);
        std::fs::write(dst.join(&name), edit(&name, text)).unwrap();
    }
}

/// The demo application database `dir/app.db` with `people` synthetic people; its URL.
pub async fn demo_app_db(dir: &Path, people: u32) -> String {
    use sqlx::Connection;
    let url = format!("sqlite://{}?mode=rwc", dir.join("app.db").display());
    let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
        .unwrap()
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    lethe::sources::demo::seed(&mut conn, people).await.unwrap();
    conn.close().await.unwrap();
    url
}

impl TestApp {
    /// The demo policies (application database `dir/app.db`, not created) on the store at
    /// `database`, else a SQLite store in `dir`.
    pub async fn demo(dir: &Path, database: Option<&SecretString>) -> Self {
        let app_db = format!("sqlite://{}?mode=rwc", dir.join("app.db").display());
        demo_policies(dir, &app_db, |_, t| t);
        let mut config = config(dir);
        if let Some(url) = database {
            config.database = url.clone();
        }
        let options = Options {
            live_checks: None,
            ..Options::default()
        };
        Self::start(&config, options).await
    }

    /// Builds the service from `config` as `lethe serve` does, with `options`, and serves.
    pub async fn start(config: &Config, options: Options) -> Self {
        let app = Application::build_with(config, options)
            .await
            .expect("the application builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let (store, audit, mailer, policy) = (
            app.store().clone(),
            app.audit().clone(),
            app.mailer().clone(),
            app.policy().clone(),
        );
        let settings = app.settings().clone();
        let webhooks = app.webhooks();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        // Serving: what the start does first (sealing what was left in clear) is done.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while reqwest::get(format!("{base}/healthz")).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Self {
            base,
            store,
            audit,
            mailer,
            policy,
            settings,
            keys: config.key_source(),
            webhooks,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// The request service over this application's store, audit log and mailer.
    pub fn service(&self) -> lethe::requests::Service<'_> {
        lethe::requests::Service {
            store: &self.store,
            audit: &self.audit,
            mailer: &self.mailer,
            settings: self.settings.clone(),
        }
    }

    /// Stops the server and waits until it has freed what it held.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(d) = self.done.take() {
            d.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

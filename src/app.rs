//! The composition root: `lethe serve` and the tests build the running service the same
//! way, from a [`Config`]. [`Application::build`] opens the store and the audit log, loads
//! the policy, wires the mailer, the request workers, webhook delivery and the job
//! scheduler, and binds the listener; [`Application::run_until`] serves and, at the end,
//! stops each part and frees what this instance held.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::audit::{Actor, AuditLog, NewEntry};
use crate::config::Config;
use crate::http::{Parts, Server, TrustedProxies};
use crate::notify::Mailer;
use crate::notify::target::{Lookup, SystemLookup};
use crate::notify::webhook::Delivery;
use crate::policy::diagnostic::Severity;
use crate::policy::{Policy, jobs::JobSpec};
use crate::requests::Settings;
use crate::sources::db::Sources;
use crate::store::Store;

/// People the demo application database is filled with.
pub const DEMO_PEOPLE: u32 = 200;

/// How often `serve` checks the systems' live schemas against the policy.
pub const LIVE_CHECK_EVERY: Duration = Duration::from_secs(300);

/// What differs from `lethe serve` when a test builds the application. `Default` is
/// exactly what `serve` runs.
pub struct Options {
    /// Run verified requests in the background (off: a test executes them itself).
    pub run_requests: bool,
    /// How often the worker looks for work nobody announced.
    pub worker_poll: Duration,
    /// How often the webhook sender looks for webhooks nobody announced.
    pub webhook_poll: Duration,
    /// Leave webhook delivery to the caller ([`Application::webhooks`]).
    pub manual_webhooks: bool,
    /// Resolves webhook host names (a stub in tests of address rules).
    pub lookup: Arc<dyn Lookup>,
    /// Check the live schemas at start and then this often (None: never).
    pub live_checks: Option<Duration>,
    /// Run the jobs of `config.jobs` on their schedules.
    pub jobs: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            run_requests: true,
            worker_poll: crate::http::worker::POLL,
            webhook_poll: crate::notify::webhook::POLL,
            manual_webhooks: false,
            lookup: Arc::new(SystemLookup),
            live_checks: Some(LIVE_CHECK_EVERY),
            jobs: true,
        }
    }
}

/// The running service, before and while it serves.
pub struct Application {
    server: Server,
    store: Store,
    audit: AuditLog,
    mailer: Arc<Mailer>,
    policy: Arc<Policy>,
    sources: Arc<Sources>,
    jobs: Option<Jobs>,
    database: String,
}

/// The scheduler and the lease on the jobs it runs.
struct Jobs {
    scheduler: tokio_cron_scheduler::JobScheduler,
    lease: tokio::task::JoinHandle<()>,
}

impl Application {
    /// What `lethe serve` runs.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        Self::build_with(config, Options::default()).await
    }

    /// The application with `options` (tests); every part is built as `serve` builds it.
    pub async fn build_with(config: &Config, options: Options) -> anyhow::Result<Self> {
        let proxies = TrustedProxies::from_config(config)?;
        let policy = Arc::new(load_policy(config)?);
        let settings = Settings::from_config(config, &policy)?;
        let (specs, job_diags) = crate::policy::jobs::load_jobs(&config.jobs);
        if let Some(e) = job_diags.iter().find(|d| d.severity == Severity::Error) {
            anyhow::bail!("{e}");
        }
        let store = Store::open(&config.database).await?;
        let keys = config.key_source();
        let audit = AuditLog::open(store.clone(), &keys).await?;
        let signer = Arc::new(
            crate::audit::keys::load_or_create_signer(&keys)
                .context("the signing key for checkpoints and OpenDSR answers")?,
        );
        record_policy_load(&audit, &policy, "serve").await?;
        if config.demo_data {
            crate::sources::demo::ensure(&policy, DEMO_PEOPLE).await?;
        }
        let sources = Arc::new(Sources::default());
        let mailer = Arc::new(mailer(config, &policy, &audit)?);
        let declared = specs.clone();
        let jobs = if options.jobs {
            Some(start_jobs(config, &policy, &store, &audit, &sources, &mailer, specs).await?)
        } else {
            None
        };
        let public_url_missing = settings.public_url.is_none();
        let mut server = Server::bind(
            &config.bind,
            Parts {
                store: store.clone(),
                policy: policy.clone(),
                audit: audit.clone(),
                signer,
                mailer: mailer.clone(),
                settings,
                jobs: declared,
            },
        )
        .await?;
        if public_url_missing {
            let base = crate::requests::link_base(server.local_addr()?);
            tracing::warn!(
                links = %base,
                "public_url is not set: links in e-mails point at the address lethe listens on; set public_url (LETHE_PUBLIC_URL) to the address people reach"
            );
            server = server.with_listen_url(base);
        }
        server = server
            .with_rate_limit(config.rate_limit)
            .with_trusted_proxies(proxies)
            .with_webhooks(&config.webhooks, options.lookup)?
            .with_workers(
                config
                    .workers
                    .unwrap_or_else(crate::http::worker::default_workers),
            )
            .with_worker_poll(options.worker_poll)
            .with_webhook_poll(options.webhook_poll);
        if options.manual_webhooks {
            server = server.manual_webhooks();
        }
        if options.run_requests {
            server = server.with_request_worker(sources.clone());
        }
        if let Some(every) = options.live_checks {
            server = server.with_live_checks(every).await;
        }
        Ok(Self {
            server,
            store,
            audit,
            mailer,
            policy,
            sources,
            jobs,
            database: config.database_display(),
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.server.local_addr()
    }

    /// `http://host:port`, as people open it.
    pub fn url(&self) -> String {
        self.local_addr()
            .map(crate::requests::link_base)
            .unwrap_or_default()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    pub fn mailer(&self) -> &Arc<Mailer> {
        &self.mailer
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// How requests are handled, links included.
    pub fn settings(&self) -> &Settings {
        &self.server.state().settings
    }

    /// The webhook delivery, for tests that run it by hand.
    pub fn webhooks(&self) -> Option<Arc<Delivery>> {
        self.server.webhooks()
    }

    /// Serves until `shutdown` completes; then stops the jobs, frees what this instance
    /// still holds for the others, and closes the connections.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let address = self.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(
            address = %address,
            url = %format!("{}/", self.url()),
            store = %self.database,
            policy_hash = %self.policy.hash,
            "lethe is serving"
        );
        self.server.run_until(shutdown).await?;
        if let Some(mut jobs) = self.jobs {
            let _ = jobs.scheduler.shutdown().await;
            jobs.lease.abort();
        }
        // What this instance still held is free for the others at once.
        self.store
            .stop_instance(crate::store::lease::this(), chrono::Utc::now())
            .await?;
        self.sources.close().await;
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The policy set of `config.policies`, its findings logged; an error stops the start.
fn load_policy(config: &Config) -> anyhow::Result<Policy> {
    let mut checked = Policy::load(&config.policies)?;
    let rules = crate::notify::target::Rules::from_config(&config.webhooks)?;
    let findings = crate::notify::target::policy_findings(&checked.policy, &rules);
    checked.diagnostics.extend(findings);
    for d in &checked.diagnostics {
        match d.severity {
            Severity::Error => tracing::error!(target: "lethe::policy", "{d}"),
            Severity::Warning => tracing::warn!(target: "lethe::policy", "{d}"),
        }
    }
    Ok(checked.into_valid()?)
}

/// Holds the lease on the jobs and schedules them.
async fn start_jobs(
    config: &Config,
    policy: &Arc<Policy>,
    store: &Store,
    audit: &AuditLog,
    sources: &Arc<Sources>,
    mailer: &Arc<Mailer>,
    specs: Vec<JobSpec>,
) -> anyhow::Result<Jobs> {
    let ctx = crate::jobs::JobContext {
        policy: policy.clone(),
        store: store.clone(),
        audit: audit.clone(),
        sources: sources.clone(),
        keys: config.key_source(),
        holder: crate::store::lease::this().id.clone(),
        progress: None,
        mailer: mailer.clone(),
    };
    let count = specs.len();
    let lease = crate::jobs::hold_lease(ctx.clone(), specs.clone()).await?;
    let scheduler = crate::jobs::schedule(ctx, specs).await?;
    tracing::info!(jobs = count, "scheduled the jobs");
    Ok(Jobs { scheduler, lease })
}

/// The mailer: SMTP when `LETHE_SMTP_URL` is set, else `.eml` files in the outbox
/// folder; queued mail sealed under the audit log's outbox key.
pub fn mailer(config: &Config, policy: &Policy, audit: &AuditLog) -> anyhow::Result<Mailer> {
    let contact = policy
        .controller
        .as_ref()
        .map(|c| c.contact_email.to_string());
    let m = Mailer::from_config(config, contact.as_deref(), config.outbox.clone())?
        .with_outbox_key(audit.outbox_key());
    if config.smtp_url.is_none() {
        tracing::info!(
            outbox = %config.outbox.display(),
            "no SMTP configured (LETHE_SMTP_URL): e-mails are written to the outbox folder as .eml files"
        );
    }
    Ok(m)
}

/// Records the policy set in force, with its audit entry, in one transaction.
async fn record_policy_load(audit: &AuditLog, policy: &Policy, by: &str) -> anyhow::Result<()> {
    let mut tx = audit.store().begin().await?;
    let entry = NewEntry::new(Actor::System, "policy.loaded").summary(serde_json::json!({
        "policy_hash": policy.hash,
        "files": policy.files.len(),
        "purposes": policy.purposes.len(),
        "systems": policy.systems.len(),
        "loaded_by": by,
    }));
    audit.append_in(&mut tx, &[entry]).await?;
    Store::record_policy_load_in(
        &mut tx,
        &policy.hash,
        policy.files.len(),
        by,
        chrono::Utc::now(),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

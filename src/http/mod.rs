//! `lethe serve`: the HTTP service. [`Server::bind`] binds the listener first, so tests
//! start the real server on port 0 and read the port back.

mod admin;
mod error;
mod json_only;
mod limit;
pub mod openapi;
mod opendsr;
mod origin;
mod portal;
mod requests;
pub mod worker;
mod workspace;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use limit::TrustedProxies;

use crate::audit::AuditLog;
use crate::notice;
use crate::notify::Mailer;
use crate::notify::webhook::Delivery;
use crate::policy::Policy;
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub policy: Arc<Policy>,
    /// The notice is rendered once per policy load, not per request.
    pub notice_html: Arc<String>,
    pub audit: AuditLog,
    /// The Ed25519 key signing checkpoints and OpenDSR answers, loaded once.
    pub signer: Arc<crate::crypto::Signer>,
    pub mailer: Arc<Mailer>,
    /// How requests are handled (approvals, links in e-mails).
    pub settings: Arc<crate::requests::Settings>,
    /// The per-IP limit on the public routes.
    pub limiter: Arc<limit::RateLimiter>,
    /// The proxies whose `X-Forwarded-For` names the client.
    pub proxies: Arc<TrustedProxies>,
    /// Where webhooks may go: OpenDSR callback URLs are checked against it at intake.
    pub webhook_rules: Arc<crate::notify::target::Rules>,
    /// Wakes the request worker: work exists.
    pub wake: Arc<tokio::sync::Notify>,
    /// Wakes the webhook sender: webhooks were queued.
    pub webhook_wake: Arc<tokio::sync::Notify>,
    /// What the last check of the systems' live schemas found wrong (none: ready).
    pub live_problems: Arc<std::sync::RwLock<Vec<String>>>,
    /// The scheduled jobs, as declared.
    pub jobs: Arc<Vec<crate::policy::jobs::JobSpec>>,
}

impl AppState {
    /// The supervisory authority a rejected person may complain to (Art. 12(4)), by name.
    pub fn authority(&self) -> Option<String> {
        self.policy
            .controller
            .as_ref()
            .and_then(|c| c.supervisory_authority.as_ref())
            .map(|a| a.name.clone())
    }

    /// Work for the workers exists (a request verified, approved, retried, a restriction
    /// lifted): this instance's worker starts on it now, and the others on the store are
    /// told.
    pub fn work_queued(&self) {
        // Every idle worker looks; one busy worker finds it when it looks again.
        self.wake.notify_waiters();
        self.wake.notify_one();
        // What the DPO did may have queued callbacks.
        self.webhook_wake.notify_one();
        let store = self.store.clone();
        tokio::spawn(async move { store.announce_work().await });
    }
}

/// What the server cannot run without; [`crate::app::Application::build`] opens them
/// from the configuration.
pub struct Parts {
    pub store: Store,
    pub policy: Arc<Policy>,
    pub audit: AuditLog,
    pub signer: Arc<crate::crypto::Signer>,
    pub mailer: Arc<Mailer>,
    pub settings: crate::requests::Settings,
    /// The scheduled jobs, as `jobs/*.yaml` declares them (shown in the workspace).
    pub jobs: Vec<crate::policy::jobs::JobSpec>,
}

/// The HTTP server with its background work (request workers, webhook delivery, live
/// schema checks). Built by [`crate::app::Application`], which `lethe serve` and the
/// tests share.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    /// Webhook delivery, run by a task of its own while serving (unless `manual`).
    webhooks: Option<Arc<Delivery>>,
    manual_webhooks: bool,
    /// The request worker's sources, when this server executes requests itself.
    worker: Option<Arc<crate::sources::db::Sources>>,
    /// How often the worker looks for work nobody announced (a retry coming due).
    worker_poll: std::time::Duration,
    /// How often the webhook sender looks for webhooks nobody announced.
    webhook_poll: std::time::Duration,
    /// How often the systems' live schemas are checked for `/readyz` (None: never).
    live_checks: Option<std::time::Duration>,
    /// Requests run side by side.
    workers: usize,
}

impl Server {
    /// Renders what the routes serve and binds `bind` (`127.0.0.1:0` for a free port).
    pub async fn bind(bind: &str, parts: Parts) -> anyhow::Result<Self> {
        let notice_html = Arc::new(notice::render(&parts.policy, notice::Format::Html)?);
        let state = AppState {
            store: parts.store,
            policy: parts.policy,
            notice_html,
            audit: parts.audit,
            signer: parts.signer,
            mailer: parts.mailer,
            settings: Arc::new(parts.settings),
            limiter: Arc::new(limit::RateLimiter::new(0)),
            proxies: Arc::new(TrustedProxies::default()),
            webhook_rules: Arc::default(),
            wake: Arc::new(tokio::sync::Notify::new()),
            webhook_wake: Arc::new(tokio::sync::Notify::new()),
            live_problems: Arc::default(),
            jobs: Arc::new(parts.jobs),
        };
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
        Ok(Self {
            listener,
            state,
            webhooks: None,
            manual_webhooks: false,
            worker: None,
            worker_poll: worker::POLL,
            webhook_poll: crate::notify::webhook::POLL,
            live_checks: None,
            workers: worker::default_workers(),
        })
    }

    /// What the handlers reach.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Links in e-mails point at `base` when no `public_url` is set.
    pub fn with_listen_url(mut self, base: String) -> Self {
        let mut settings = (*self.state.settings).clone();
        settings.listen_url = Some(base);
        self.state.settings = Arc::new(settings);
        self
    }

    /// Delivers webhooks as `config` (`[webhooks]`) says, by a task of its own while
    /// serving, resolving names with `lookup` (`SystemLookup`; a stub in tests).
    pub fn with_webhooks(
        mut self,
        config: &crate::config::WebhookConfig,
        lookup: Arc<dyn crate::notify::target::Lookup>,
    ) -> anyhow::Result<Self> {
        let bind = self.local_addr()?.ip().to_string();
        let signers = crate::notify::webhook::Signers {
            audit: self.state.audit.clone(),
            ed25519: Some(self.state.signer.clone()),
            domain: crate::notify::webhook::domain(
                self.state.settings.public_url.as_deref(),
                &format!("{bind}:0"),
            ),
        };
        let delivery = Arc::new(Delivery::with_lookup(config, signers, lookup)?);
        self.state.webhook_rules = Arc::new(delivery.rules().clone());
        self.webhooks = Some(delivery);
        Ok(self)
    }

    /// Leaves webhook delivery to the caller ([`Self::webhooks`]), for tests that move
    /// the clock.
    pub fn manual_webhooks(mut self) -> Self {
        self.manual_webhooks = true;
        self
    }

    /// The webhook delivery, if configured.
    pub fn webhooks(&self) -> Option<Arc<Delivery>> {
        self.webhooks.clone()
    }

    /// Executes verified requests in the background while serving, reading the company's
    /// databases through `sources`.
    pub fn with_request_worker(mut self, sources: Arc<crate::sources::db::Sources>) -> Self {
        self.worker = Some(sources);
        self
    }

    /// Checks every system's live schema against the policy now and then every `every`;
    /// `/readyz` answers 503, naming what is at fault, while any check fails. The first
    /// check completes before this returns.
    pub async fn with_live_checks(mut self, every: std::time::Duration) -> Self {
        let problems = crate::sources::db::live_problems(&self.state.policy).await;
        for p in &problems {
            tracing::error!(problem = %p, "a system does not match the policy: not ready");
        }
        *self
            .state
            .live_problems
            .write()
            .unwrap_or_else(|e| e.into_inner()) = problems;
        self.live_checks = Some(every);
        self
    }

    /// How many requests run side by side (default [`worker::default_workers`]).
    pub fn with_workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// How often the worker looks for work nobody announced (default [`worker::POLL`]).
    pub fn with_worker_poll(mut self, every: std::time::Duration) -> Self {
        self.worker_poll = every;
        self
    }

    /// How often the webhook sender looks for webhooks nobody announced (default
    /// [`crate::notify::webhook::POLL`]).
    pub fn with_webhook_poll(mut self, every: std::time::Duration) -> Self {
        self.webhook_poll = every;
        self
    }

    /// Limits each client IP to `per_minute` requests on the public routes (0: no limit).
    pub fn with_rate_limit(mut self, per_minute: u32) -> Self {
        self.state.limiter = Arc::new(limit::RateLimiter::new(per_minute));
        self
    }

    /// Reads the client address from `X-Forwarded-For` when the peer is one of `proxies`.
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.state.proxies = Arc::new(proxies);
        self
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        seal_left_in_clear(&self.state).await;
        let mut background = Vec::new();
        if let Some(d) = self.webhooks.filter(|_| !self.manual_webhooks) {
            background.push(crate::notify::webhook::spawn(
                self.state.store.clone(),
                d,
                self.state.webhook_wake.clone(),
                self.webhook_poll,
            ));
        }
        if let Some(sources) = self.worker {
            background.extend(worker::spawn_all(
                &self.state,
                &sources,
                self.worker_poll,
                self.workers,
            ));
            background.extend(self.state.store.listen_for_work(self.state.wake.clone()));
        }
        if let Some(every) = self.live_checks {
            let (policy, problems) = (self.state.policy.clone(), self.state.live_problems.clone());
            background.push(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let now = crate::sources::db::live_problems(&policy).await;
                    let mut held = problems.write().unwrap_or_else(|e| e.into_inner());
                    if *held != now {
                        if now.is_empty() {
                            tracing::info!("every system matches the policy again: ready");
                        }
                        for p in &now {
                            tracing::error!(problem = %p, "a system does not match the policy: not ready");
                        }
                    }
                    *held = now;
                }
            }));
        }
        let app = router(self.state).into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        for h in background {
            h.abort();
        }
        served
    }
}

/// What an earlier version left in clear is sealed before anything is served: queued
/// webhook bodies, and the DPO's reasons on requests. Idempotent: a second start, or a
/// second instance, finds nothing left.
async fn seal_left_in_clear(state: &AppState) {
    match crate::notify::webhook::seal_clear_bodies(&state.store, &state.audit.outbox_key()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            webhooks = n,
            "sealed webhook bodies an earlier version queued in clear"
        ),
        Err(e) => tracing::error!(error = %e, "webhook bodies left in clear could not be sealed"),
    }
    match requests::service(state).seal_clear_reasons().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            requests = n,
            "sealed the DPO's reasons an earlier version kept in clear"
        ),
        Err(e) => tracing::error!(error = %e, "reasons left in clear could not be sealed"),
    }
}

/// Routes that keep the paths they were given, so that [`paths`] can list what the router
/// serves (the test comparing the router with `/openapi.json` walks them).
pub(crate) struct Routes {
    router: Router<AppState>,
    paths: Vec<String>,
}

impl Routes {
    pub(crate) fn new() -> Self {
        Self {
            router: Router::new(),
            paths: Vec::new(),
        }
    }

    pub(crate) fn route(
        mut self,
        path: &'static str,
        methods: axum::routing::MethodRouter<AppState>,
    ) -> Self {
        self.router = self.router.route(path, methods);
        self.paths.push(path.to_owned());
        self
    }

    /// Layers on the router; the paths stay.
    pub(crate) fn map(mut self, f: impl FnOnce(Router<AppState>) -> Router<AppState>) -> Self {
        self.router = f(self.router);
        self
    }

    fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.paths.extend(other.paths);
        self
    }

    fn nest(mut self, prefix: &str, other: Routes) -> Self {
        self.router = self.router.nest(prefix, other.router);
        self.paths
            .extend(other.paths.into_iter().map(|p| format!("{prefix}{p}")));
        self
    }
}

/// The routes with their layers; without `state` (listing the paths only), the layers
/// that need it are left out.
fn routes(state: Option<&AppState>) -> Routes {
    let with_state =
        |r: Routes, layer: &dyn Fn(Router<AppState>, AppState) -> Router<AppState>| match state {
            Some(s) => r.map(|router| layer(router, s.clone())),
            None => r,
        };
    // Portal forms are refused from other sites.
    let portal = with_state(portal::routes(), &|r, s| {
        r.route_layer(axum::middleware::from_fn_with_state(s, origin::check))
    });
    // The JSON API reads JSON only: no cross-site form reaches it.
    let api =
        requests::routes().map(|r| r.route_layer(axum::middleware::from_fn(json_only::require)));
    // The workspace's sign-in page is open to anyone; the rest needs a session.
    let workspace = with_state(workspace::routes(), &|r, s| {
        r.route_layer(axum::middleware::from_fn_with_state(s, origin::check))
    });
    let sign_in = with_state(workspace::sign_in_routes(), &|r, s| {
        r.route_layer(axum::middleware::from_fn_with_state(s, origin::check))
    });
    // What anyone may call is limited per client IP.
    let public = with_state(api.merge(portal).merge(sign_in), &|r, s| {
        r.route_layer(axum::middleware::from_fn_with_state(s, limit::limit))
    });
    Routes::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/privacy", get(privacy))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .nest(
            "/v1/admin",
            admin::routes().map(|r| r.route_layer(axum::middleware::from_fn(json_only::require))),
        )
        .merge(public)
        .merge(workspace)
        // Controller systems call OpenDSR with their token for every request they hand
        // over and every status they poll: not limited per address, like the admin API.
        .merge(opendsr::routes())
}

/// Every path the router serves (each with one or more methods).
pub fn paths() -> Vec<String> {
    routes(None).paths
}

pub fn router(state: AppState) -> Router {
    routes(Some(&state))
        .router
        .fallback(|| async {
            ApiError::client(
                axum::http::StatusCode::NOT_FOUND,
                "no_route",
                "no such route; /openapi.json lists them",
            )
        })
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(requests::BODY_LIMIT))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            // Not `no-referrer`: under it browsers send `Origin: null` with form posts, and
            // the portal checks that its forms come from its own pages. No URL (with its
            // token) leaves for another site either way.
            HeaderValue::from_static("same-origin"),
        ))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
}

/// The span of one HTTP request: method and path, never the query, which may carry a
/// link's secret or (from clients of earlier versions) a request token.
fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
}

/// Text a person or a DPO reads back: no control characters (line breaks where `lines`)
/// and no bidirectional overrides, which make text read other than it is stored.
pub(crate) fn printable(text: &str, lines: bool) -> bool {
    text.chars().all(|c| {
        let control = c.is_control() && !(lines && matches!(c, '\n' | '\r' | '\t'));
        let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        !control && !bidi
    })
}

/// The process is up.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct Health {
    #[schemars(extend("const" = "ok"))]
    status: &'static str,
}

/// The store answers, the policy is loaded and every system matches it.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct Ready {
    #[schemars(extend("const" = "ready"))]
    status: &'static str,
    /// The SHA-256 of the policy files in force.
    policy_hash: String,
    /// The store's database: `sqlite`, `postgres` or `mysql`.
    backend: String,
}

async fn healthz() -> impl IntoResponse {
    Json(Health { status: "ok" })
}

/// The store answers, the policy is loaded and every system matches it.
async fn readyz(State(state): State<AppState>) -> Result<axum::response::Response, ApiError> {
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "readiness: store unreachable");
        return Err(ApiError::Unavailable("the store is unreachable"));
    }
    let problems = state
        .live_problems
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if !problems.is_empty() {
        return Ok((
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "not_ready",
                "error": { "code": "schema_mismatch", "message": "a system does not match the policy" },
                "problems": problems,
            })),
        )
            .into_response());
    }
    let ready = Ready {
        status: "ready",
        policy_hash: state.policy.hash.clone(),
        backend: format!("{:?}", state.store.backend()).to_lowercase(),
    };
    Ok((axum::http::StatusCode::OK, Json(ready)).into_response())
}

/// Prometheus text: requests by type and status, unsent and dead mail, audit entries. The
/// counts tell how the service is used: only an admin token (an auditor's) reads them.
async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    use sqlx::Row;
    admin::admin(&state, &headers, crate::store::Role::Auditor).await?;
    let pool = state.store.pool();
    let mut out = String::from(
        "# HELP lethe_requests Data-subject requests by type and status.\n# TYPE lethe_requests gauge\n",
    );
    let rows = sqlx::query("SELECT kind, status, COUNT(*) FROM dsr_requests GROUP BY kind, status ORDER BY kind, status")
        .fetch_all(pool)
        .await
        .map_err(anyhow::Error::from)?;
    for r in rows {
        let (kind, status, n): (String, String, i64) = (
            r.try_get(0).map_err(anyhow::Error::from)?,
            r.try_get(1).map_err(anyhow::Error::from)?,
            r.try_get(2).map_err(anyhow::Error::from)?,
        );
        out.push_str(&format!(
            "lethe_requests{{type=\"{kind}\",status=\"{status}\"}} {n}\n"
        ));
    }
    let scalar = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .map_err(anyhow::Error::from)
    };
    out.push_str(&format!(
        "# HELP lethe_mail_unsent Messages in the outbox not yet delivered (dead letters aside).\n# TYPE lethe_mail_unsent gauge\nlethe_mail_unsent {}\n",
        scalar("SELECT COUNT(*) FROM mail_outbox WHERE sent_at IS NULL AND dead_at IS NULL").await?
    ));
    out.push_str(&format!(
        "# HELP lethe_mail_dead Messages the mail transport refused for good (GET /v1/admin/mail/dead).\n# TYPE lethe_mail_dead gauge\nlethe_mail_dead {}\n",
        scalar("SELECT COUNT(*) FROM mail_outbox WHERE dead_at IS NOT NULL").await?
    ));
    out.push_str(&format!(
        "# HELP lethe_webhooks_undelivered Webhooks (erasure notices, OpenDSR callbacks) not yet acknowledged and still tried.\n# TYPE lethe_webhooks_undelivered gauge\nlethe_webhooks_undelivered {}\n",
        scalar("SELECT COUNT(*) FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS NULL").await?
    ));
    out.push_str(&format!(
        "# HELP lethe_webhooks_failed Webhooks given up as failed (GET /v1/admin/webhooks/failed).\n# TYPE lethe_webhooks_failed gauge\nlethe_webhooks_failed {}\n",
        scalar("SELECT COUNT(*) FROM webhook_outbox WHERE failed_at IS NOT NULL AND delivered_at IS NULL").await?
    ));
    out.push_str(&format!(
        "# HELP lethe_restrictions Restrictions of processing in force (Art. 18).\n# TYPE lethe_restrictions gauge\nlethe_restrictions {}\n",
        scalar("SELECT COUNT(*) FROM subject_restrictions WHERE lifted_at IS NULL").await?
    ));
    out.push_str(&format!(
        "# HELP lethe_audit_entries Entries in the audit log.\n# TYPE lethe_audit_entries gauge\nlethe_audit_entries {}\n",
        scalar("SELECT next_seq FROM audit_head WHERE id = 1").await?
    ));
    // What an on-call person acts on: the law's deadlines and what waits for the DPO.
    let now = chrono::Utc::now();
    let open = crate::requests::Status::sql_in(
        "status",
        crate::requests::Status::ALL
            .into_iter()
            .filter(|s| s.is_final()),
    );
    let count_due = |until: String| {
        let sql = format!("SELECT COUNT(*) FROM dsr_requests WHERE NOT ({open}) AND due_at < $1");
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                .bind(until)
                .fetch_one(pool)
                .await
                .map_err(anyhow::Error::from)
        }
    };
    out.push_str(&format!(
        "# HELP lethe_requests_overdue Open requests past their deadline (Art. 12(3)).\n# TYPE lethe_requests_overdue gauge\nlethe_requests_overdue {}\n",
        count_due(crate::store::timestamp(now)).await?
    ));
    out.push_str(&format!(
        "# HELP lethe_requests_due_within_7_days Open requests due within 7 days, the overdue included.\n# TYPE lethe_requests_due_within_7_days gauge\nlethe_requests_due_within_7_days {}\n",
        count_due(crate::store::timestamp(now + chrono::Duration::days(7))).await?
    ));
    out.push_str(&format!(
        "# HELP lethe_requests_failed Requests that failed and wait for the DPO (retry, reject or complete).\n# TYPE lethe_requests_failed gauge\nlethe_requests_failed {}\n",
        scalar("SELECT COUNT(*) FROM dsr_requests WHERE status = 'failed'").await?
    ));
    // Each job's last successful run (the store picks it): when it ended, how long it took.
    let runs = sqlx::query(
        "SELECT job, started_at, finished_at FROM job_runs j WHERE id = \
         (SELECT MAX(id) FROM job_runs WHERE job = j.job AND status = 'completed' AND finished_at IS NOT NULL)",
    )
    .fetch_all(pool)
    .await
    .map_err(anyhow::Error::from)?;
    let mut last: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for r in &runs {
        let (job, started, finished): (String, String, String) = (
            r.try_get(0).map_err(anyhow::Error::from)?,
            r.try_get(1).map_err(anyhow::Error::from)?,
            r.try_get(2).map_err(anyhow::Error::from)?,
        );
        if let (Some(s), Some(f)) = (
            crate::policy::parse_timestamp(&started),
            crate::policy::parse_timestamp(&finished),
        ) {
            let took = (f - s).num_milliseconds() as f64 / 1000.0;
            last.insert(job, (f.timestamp_millis() as f64 / 1000.0, took));
        }
    }
    // What retention deleted and masked: only the summaries of retention runs are read.
    let summaries: Vec<String> = sqlx::query_scalar(
        "SELECT summary FROM job_runs WHERE kind = 'retention' AND status = 'completed' AND summary IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .map_err(anyhow::Error::from)?;
    let (mut deleted, mut masked) = (0u64, 0u64);
    for summary in &summaries {
        let v: serde_json::Value = serde_json::from_str(summary).unwrap_or_default();
        deleted += v["rows_deleted"].as_u64().unwrap_or(0);
        masked += v["values_masked"].as_u64().unwrap_or(0);
    }
    out.push_str("# HELP lethe_job_last_success_timestamp_seconds When each job's last successful run ended (Unix time).\n# TYPE lethe_job_last_success_timestamp_seconds gauge\n");
    for (job, (at, _)) in &last {
        out.push_str(&format!(
            "lethe_job_last_success_timestamp_seconds{{job=\"{job}\"}} {at}\n"
        ));
    }
    out.push_str("# HELP lethe_job_last_success_duration_seconds How long each job's last successful run took.\n# TYPE lethe_job_last_success_duration_seconds gauge\n");
    for (job, (_, took)) in &last {
        out.push_str(&format!(
            "lethe_job_last_success_duration_seconds{{job=\"{job}\"}} {took}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP lethe_retention_rows_deleted_total Rows retention runs deleted, over the job history kept.\n# TYPE lethe_retention_rows_deleted_total counter\nlethe_retention_rows_deleted_total {deleted}\n"
    ));
    out.push_str(&format!(
        "# HELP lethe_retention_values_masked_total Values retention runs masked, over the job history kept.\n# TYPE lethe_retention_values_masked_total counter\nlethe_retention_values_masked_total {masked}\n"
    ));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

async fn privacy(State(state): State<AppState>) -> Html<String> {
    Html(state.notice_html.as_str().to_owned())
}

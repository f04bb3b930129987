//! What each command does, on top of the library.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::{CheckFormat, Command, RegisterAction, RegisterFormat};
use crate::audit::{Actor, AuditLog, NewEntry};
use crate::config::Config;
use crate::http::Application;
use crate::policy::{Checked, Policy, Severity};
use crate::store::Store;
use crate::{notice, register, sources};

/// Synthetic people in a new demo database.
const DEMO_PEOPLE: u32 = 200;

pub async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { format, live } => check(&config, format, live).await,
        Command::Notice { format, out } => {
            let policy = load_valid(&config.policies)?;
            write_out(out.as_deref(), notice::render(&policy, format)?.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Register {
            action: RegisterAction::Export { format, out },
        } => {
            let policy = load_valid(&config.policies)?;
            let rows = register::rows(&policy);
            let bytes = match format {
                RegisterFormat::Csv => register::to_csv(&rows)?,
                RegisterFormat::Json => register::to_json(&rows)?,
            };
            write_out(out.as_deref(), &bytes)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let store = Store::open(&config.database).await?;
            store.close().await;
            eprintln!("store at {} is up to date", config.database_display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { .. } => serve(config).await,
        Command::Audit { action } => super::audit::run(action, &config).await,
        Command::Vendors { action } => super::vendors::run(action, &config),
        Command::Dsr { action } => super::dsr::run(action, &config).await,
        Command::Admin { action } => super::admin::run(action, &config).await,
        Command::Suppression { action } => super::admin::suppression(action, &config).await,
        Command::Retention { action } => super::jobs::retention(action, &config).await,
        Command::Jobs { action } => super::jobs::run(action, &config).await,
        Command::Keys {
            action: super::audit::KeysAction::Rotate { new_key_file },
        } => super::audit::rotate(new_key_file, &config).await,
    }
}

async fn check(config: &Config, format: CheckFormat, live: bool) -> anyhow::Result<ExitCode> {
    let mut checked = Policy::load(&config.policies)?;
    // Webhook URLs are checked against the configuration's rules.
    let rules = crate::notify::target::Rules::from_config(&config.webhooks)?;
    let findings = crate::notify::target::policy_findings(&checked.policy, &rules);
    checked.diagnostics.extend(findings);
    // Job files are checked with the policy: a bad schedule is a finding too.
    let (jobs, job_diags) = crate::policy::jobs::load_jobs(&config.jobs);
    checked.diagnostics.extend(job_diags);
    let errors = checked.errors().count();
    let warnings = checked.warnings().count();
    // The live schemas, when asked and when the policy itself is sound.
    let live_problems = if live && errors == 0 {
        Some(crate::sources::db::live_problems(&checked.policy).await)
    } else {
        None
    };
    let live_errors = live_problems.as_ref().map_or(0, Vec::len);
    match format {
        CheckFormat::Json => {
            let mut out = serde_json::json!({
                "policy_hash": checked.policy.hash,
                "files": checked.policy.files.len(),
                "jobs": jobs.len(),
                "errors": errors,
                "warnings": warnings,
                "diagnostics": checked.diagnostics,
            });
            if let Some(p) = &live_problems {
                out["live"] = serde_json::json!({ "problems": p });
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        CheckFormat::Text => {
            for d in &checked.diagnostics {
                println!("{d}");
            }
            println!(
                "{}: {} file(s), {} purpose(s), {} system(s), {} job(s); {errors} error(s), {warnings} warning(s)",
                config.policies.display(),
                checked.policy.files.len(),
                checked.policy.purposes.len(),
                checked.policy.systems.len(),
                jobs.len(),
            );
            if let Some(p) = &live_problems {
                for problem in p {
                    println!("live: {problem}");
                }
                println!(
                    "live schemas: {}",
                    if p.is_empty() {
                        "every connected system matches the policy".to_owned()
                    } else {
                        format!("{} system(s) do not match the policy", p.len())
                    }
                );
            }
        }
    }
    Ok(if errors > 0 || live_errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Loads the policy; on errors prints them to stderr and fails.
pub fn load_valid(dir: &Path) -> anyhow::Result<Policy> {
    let checked: Checked = Policy::load(dir)?;
    for d in checked
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
    {
        eprintln!("{d}");
    }
    Ok(checked.into_valid()?)
}

pub fn write_out(path: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match path {
        Some(p) => std::fs::write(p, bytes).with_context(|| format!("writing {}", p.display())),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(bytes)?;
            stdout.flush()?;
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let proxies = crate::http::TrustedProxies::from_config(&config)?;
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
    let policy = Arc::new(checked.into_valid()?);
    let store = Store::open(&config.database).await?;
    let audit = AuditLog::open(store.clone(), &config.key_source()).await?;
    record_policy_load(&audit, &policy, "serve").await?;
    if config.demo_data {
        sources::demo::ensure(&policy, DEMO_PEOPLE).await?;
    }
    let (specs, job_diags) = crate::policy::jobs::load_jobs(&config.jobs);
    if let Some(e) = job_diags.iter().find(|d| d.severity == Severity::Error) {
        anyhow::bail!("{e}");
    }
    let sources = Arc::new(crate::sources::db::Sources::default());
    let mailer = Arc::new(mailer(&config, &policy, &audit)?);
    let job_ctx = crate::jobs::JobContext {
        policy: policy.clone(),
        store: store.clone(),
        audit: audit.clone(),
        sources: sources.clone(),
        keys: config.key_source(),
        holder: crate::store::lease::this().id.clone(),
        progress: None,
        mailer: mailer.clone(),
    };
    let job_count = specs.len();
    let lease = crate::jobs::hold_lease(job_ctx.clone(), specs.clone()).await?;
    let mut scheduler = crate::jobs::schedule(job_ctx, specs).await?;
    tracing::info!(jobs = job_count, "scheduled the jobs");
    let mut settings = crate::requests::Settings::from_config(&config, &policy)?;
    let app = Application::build(&config.bind, store.clone(), policy.clone()).await?;
    if settings.public_url.is_none() {
        let base = crate::requests::link_base(app.local_addr()?);
        tracing::warn!(
            links = %base,
            "public_url is not set: links in e-mails point at the address lethe listens on; set public_url (LETHE_PUBLIC_URL) to the address people reach"
        );
        settings.listen_url = Some(base);
    }
    let app = app
        .with_audit(audit, config.key_source())
        .with_mailer(mailer)
        .with_settings(settings)
        .with_rate_limit(config.rate_limit)
        .with_trusted_proxies(proxies)
        .with_webhooks(
            &config.webhooks,
            Arc::new(crate::notify::target::SystemLookup),
        )?
        .with_request_worker(sources.clone())
        .with_workers(
            config
                .workers
                .unwrap_or_else(crate::http::worker::default_workers),
        )
        .with_live_checks(std::time::Duration::from_secs(300))
        .await;
    let addr = app.local_addr()?;
    tracing::info!(
        address = %addr,
        url = %settings_url(&addr),
        store = %config.database_display(),
        policy_hash = %policy.hash,
        "lethe is serving"
    );
    app.run_until(shutdown_signal()).await?;
    let _ = scheduler.shutdown().await;
    lease.abort();
    // What this instance still held is free for the others at once.
    store
        .stop_instance(crate::store::lease::this(), chrono::Utc::now())
        .await?;
    sources.close().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The mailer: SMTP when `LETHE_SMTP_URL` is set, else `.eml` files in `./outbox`;
/// queued mail sealed under the audit log's outbox key.
pub fn mailer(
    config: &Config,
    policy: &Policy,
    audit: &AuditLog,
) -> anyhow::Result<crate::notify::Mailer> {
    let contact = policy
        .controller
        .as_ref()
        .map(|c| c.contact_email.to_string());
    let m = crate::notify::Mailer::from_config(
        config,
        contact.as_deref(),
        std::path::PathBuf::from("outbox"),
    )?
    .with_outbox_key(audit.outbox_key());
    if config.smtp_url.is_none() {
        tracing::info!(
            "no SMTP configured (LETHE_SMTP_URL): e-mails are written to ./outbox as .eml files"
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

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// The URL to open for a server listening on `addr`.
fn settings_url(addr: &std::net::SocketAddr) -> String {
    format!("{}/", crate::requests::link_base(*addr))
}

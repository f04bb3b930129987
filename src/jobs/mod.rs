//! Scheduled jobs from `jobs/*.yaml`: run by `lethe serve` on their cron schedule, or now
//! with `lethe jobs run NAME`. Every run is recorded in the store; a scheduled run is
//! claimed by its tick, so several instances on one PostgreSQL run it once.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::audit::{AuditLog, KeySource, keys};
use crate::notify::{Mail, Mailer};
use crate::policy::Policy;
use crate::policy::jobs::{JobKind, JobSpec, parse_schedule};
use crate::retention::{self, RunOptions};
use crate::sources::db::Sources;
use crate::store::{Store, lease};

/// What a job needs.
#[derive(Clone)]
pub struct JobContext {
    pub policy: Arc<Policy>,
    pub store: Store,
    pub audit: AuditLog,
    pub sources: Arc<Sources>,
    pub keys: KeySource,
    /// This process, as recorded on the runs it claims.
    pub holder: String,
    /// Told the rows of each finished batch (a progress bar in the foreground).
    pub progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    pub mailer: Arc<Mailer>,
}

impl JobContext {
    /// The rows people's own requests change retention for: those of people with a
    /// restriction in force, and those an erasure kept for an obligation.
    pub async fn requested(&self) -> anyhow::Result<retention::Requested> {
        Ok(retention::requested_in(&self.policy, &self.sources, &self.audit).await?)
    }
}

/// Whether a kind does its work yet, and if not, why.
pub fn availability(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Retention | JobKind::AuditCheckpoint => "available",
        JobKind::VendorReviews => "available: e-mails the DPO about reviews due within 30 days",
        JobKind::DsrDeadlines => {
            "available: e-mails the DPO the requests due within 7 days and the overdue ones"
        }
        JobKind::PackagePurge => {
            "available: lethe's own retention: packages past their download period, expired codes, finished requests after keep_requests (3y), unconfirmed requests and sent mail after 30 days"
        }
    }
}

/// The next time `spec` fires after `now`.
pub fn next_run(spec: &JobSpec, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    parse_schedule(&spec.schedule)
        .ok()?
        .find_next_occurrence(&whole_seconds(now), false)
        .ok()
}

/// The schedule occurrence a firing at `now` serves (the one at or just before now).
pub fn tick(spec: &JobSpec, now: DateTime<Utc>) -> String {
    let t = parse_schedule(&spec.schedule)
        .ok()
        .and_then(|c| {
            c.find_next_occurrence(&whole_seconds(now - chrono::Duration::seconds(2)), true)
                .ok()
        })
        .unwrap_or(now);
    crate::store::timestamp(t)
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Timelike;
    t.with_nanosecond(0).unwrap_or(t)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub run_id: Option<i64>,
    pub status: String,
    pub summary: serde_json::Value,
}

/// Runs a job now. With a `tick`, only if no other instance claimed that tick.
pub async fn run(
    ctx: &JobContext,
    spec: &JobSpec,
    tick: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<Outcome> {
    let Some(id) = ctx
        .store
        .start_run(&spec.name, spec.kind.key(), tick, &ctx.holder, now)
        .await?
    else {
        return Ok(Outcome {
            run_id: None,
            status: "claimed by another instance".into(),
            summary: json!({}),
        });
    };
    let result = work(ctx, spec, now).await;
    let (status, summary) = match &result {
        Ok((status, summary)) => (status.clone(), summary.clone()),
        Err(e) => ("failed".to_owned(), json!({ "error": format!("{e:#}") })),
    };
    ctx.store
        .finish_run(id, &status, &summary, Utc::now())
        .await?;
    result?;
    Ok(Outcome {
        run_id: Some(id),
        status,
        summary,
    })
}

async fn work(
    ctx: &JobContext,
    spec: &JobSpec,
    now: DateTime<Utc>,
) -> anyhow::Result<(String, serde_json::Value)> {
    match spec.kind {
        JobKind::Retention if spec.options.dry_run => {
            let due =
                retention::plan(&ctx.policy, &ctx.sources, now, &ctx.requested().await?).await?;
            Ok(("dry run".into(), json!({ "due": due })))
        }
        JobKind::Retention => {
            let options = RunOptions {
                batch_size: spec.options.batch_size,
                max_duration: spec.max_duration(),
                max_batches: None,
                progress: ctx.progress.clone(),
                requested: ctx.requested().await?,
            };
            let r = retention::run(&ctx.policy, &ctx.sources, &ctx.audit, now, &options).await?;
            let status = if r.complete {
                "completed"
            } else {
                "stopped at max_duration; the next run resumes"
            };
            Ok((
                status.into(),
                json!({ "rows_deleted": r.rows_deleted, "values_masked": r.values_masked, "batches": r.batches, "longest_batch_ms": r.longest_batch_ms }),
            ))
        }
        JobKind::AuditCheckpoint => {
            let signer = keys::load_or_create_signer(&ctx.keys)?;
            let cp = ctx.audit.checkpoint(&signer).await?;
            Ok((
                "completed".into(),
                json!({ "tree_size": cp.tree_size, "root_hash": cp.root_hash }),
            ))
        }
        JobKind::VendorReviews => {
            let due = crate::vendors::reviews_due(&ctx.policy, now.date_naive(), 30);
            let list: Vec<String> = due
                .iter()
                .map(|(a, what, d)| format!("{a}: {what} on {d}"))
                .collect();
            let mailed = send_to_dpo(ctx, reviews_mail(&ctx.policy, &due)).await?;
            Ok((
                "completed".into(),
                json!({ "due_within_30_days": list, "mailed_to_dpo": mailed }),
            ))
        }
        JobKind::PackagePurge => {
            let p =
                crate::requests::purge(&ctx.store, &ctx.audit, spec.keep_requests(), now).await?;
            Ok((
                "completed".into(),
                json!({ "packages_deleted": p.packages, "purged": p }),
            ))
        }
        JobKind::DsrDeadlines => {
            let svc = crate::requests::Service {
                store: &ctx.store,
                audit: &ctx.audit,
                mailer: &ctx.mailer,
                settings: crate::requests::Settings::from_policy(&ctx.policy),
            };
            // Due within a week, and every failed request whatever its date: it waits
            // for the DPO.
            let week = crate::store::timestamp(now + chrono::Duration::days(7));
            let failed =
                |r: &crate::requests::AdminView| r.status == crate::requests::Status::Failed.key();
            let due: Vec<_> = svc
                .list_open(None, now)
                .await?
                .into_iter()
                .filter(|r| failed(r) || r.due_at <= week)
                .collect();
            let overdue = due.iter().filter(|r| r.overdue).count();
            let mailed = send_to_dpo(ctx, deadlines_mail(&ctx.policy, &due)).await?;
            Ok((
                "completed".into(),
                json!({
                    "due_within_7_days": due.iter().filter(|r| r.due_at <= week).count(),
                    "failed": due.iter().filter(|r| failed(r)).count(),
                    "overdue": overdue,
                    "mailed_to_dpo": mailed
                }),
            ))
        }
    }
}

/// Queues `mail` (if any) and delivers it; whether a message went out.
async fn send_to_dpo(ctx: &JobContext, mail: Option<Mail>) -> anyhow::Result<bool> {
    let Some(mail) = mail else { return Ok(false) };
    let mut tx = ctx.store.begin().await?;
    crate::notify::enqueue_in(&mut tx, &ctx.mailer, &mail).await?;
    tx.commit().await?;
    crate::notify::deliver_pending(&ctx.store, &ctx.mailer).await?;
    Ok(true)
}

/// A digest to the DPO (or the controller's contact): an intro, a list, an optional
/// closing line, in text and HTML. None when the list is empty.
fn digest(
    policy: &Policy,
    kind: &str,
    subject: String,
    intro: &str,
    lines: &[String],
    outro: Option<(&str, &str)>,
) -> Option<Mail> {
    if lines.is_empty() {
        return None;
    }
    let c = policy.controller.as_ref()?;
    let to = c
        .dpo
        .as_ref()
        .map_or_else(|| c.contact_email.to_string(), |d| d.email.to_string());
    let list: Vec<String> = lines.iter().map(|l| format!("- {l}")).collect();
    let items: String = lines
        .iter()
        .map(|l| format!("<li>{}</li>", crate::notify::html_escape(l)))
        .collect();
    let (outro_text, outro_html) = outro.map_or((String::new(), String::new()), |(t, h)| {
        (format!("\n{t}\n"), format!("<p>{h}</p>"))
    });
    Some(Mail {
        kind: kind.to_owned(),
        to,
        subject,
        text: format!("{intro}\n\n{}\n{outro_text}", list.join("\n")),
        html: format!(
            "<p>{}</p><ul>{items}</ul>{outro_html}",
            crate::notify::html_escape(intro)
        ),
    })
}

/// The DPO's digest of requests due soon or overdue, if there are any.
fn deadlines_mail(policy: &Policy, due: &[crate::requests::AdminView]) -> Option<Mail> {
    let lines: Vec<String> = due
        .iter()
        .map(|r| {
            format!(
                "{} ({}, {}): due {}{}",
                r.id,
                r.kind,
                r.status.replace('_', " "),
                &r.due_at[..10],
                if r.overdue { " - OVERDUE" } else { "" }
            )
        })
        .collect();
    let overdue = due.iter().filter(|r| r.overdue).count();
    let failed = due
        .iter()
        .filter(|r| r.status == crate::requests::Status::Failed.key())
        .count();
    let subject = format!(
        "{} request(s) due within 7 days or failed, {overdue} overdue, {failed} failed",
        due.len()
    );
    digest(
        policy,
        "dsr_deadlines",
        subject,
        &format!(
            "Requests due within 7 days, and failed ones waiting for you to retry, reject or complete them ({overdue} overdue, {failed} failed):"
        ),
        &lines,
        None,
    )
}

/// The DPO's digest of agreements to review, if any are due.
fn reviews_mail(
    policy: &Policy,
    due: &[(String, &'static str, chrono::NaiveDate)],
) -> Option<Mail> {
    let lines: Vec<String> = due
        .iter()
        .map(|(id, what, date)| {
            let who = policy
                .agreements
                .iter()
                .find(|a| a.id.as_str() == id)
                .map(|a| {
                    policy
                        .processor(a.counterparty.as_str())
                        .map_or_else(|| a.counterparty.to_string(), |p| p.name.clone())
                })
                .unwrap_or_default();
            format!("{id} ({who}): {what} due on {date}")
        })
        .collect();
    let subject = format!("{} agreement review(s) due within 30 days", due.len());
    digest(
        policy,
        "vendor_reviews",
        subject,
        "These agreements are due for review within 30 days:",
        &lines,
        Some((
            "Run `lethe vendors check` to see where they and our measures stand.",
            "Run <code>lethe vendors check</code> to see where they and our measures stand.",
        )),
    )
}

/// Schedules every job; returns the running scheduler.
/// Holds this instance's lease while `lethe serve` runs: registers it, takes over what
/// stopped instances held (their requests, mail and webhooks are free for the workers at
/// once; their interrupted job runs are run again here, by one instance only) and renews
/// the lease every [`lease::HEARTBEAT`].
pub async fn hold_lease(
    ctx: JobContext,
    specs: Vec<JobSpec>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let me = lease::this();
    ctx.store.register_instance(me, Utc::now()).await?;
    let taken = ctx.store.reap_instances(me, Utc::now()).await?;
    log_taken(&taken, "took over the claims of stopped instances");
    resume(&ctx, &specs, &taken.job_runs);
    Ok(tokio::spawn(async move {
        loop {
            tokio::time::sleep(lease::HEARTBEAT).await;
            let now = Utc::now();
            if let Err(e) = ctx.store.heartbeat(me, now).await {
                tracing::warn!(error = %e, "renewing the lease");
                continue;
            }
            match ctx.store.reap_instances(me, now).await {
                Ok(taken) if taken.total() > 0 => {
                    log_taken(&taken, "took over the claims of a stopped instance");
                    resume(&ctx, &specs, &taken.job_runs);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "looking for stopped instances"),
            }
        }
    }))
}

fn log_taken(taken: &lease::TakenOver, message: &str) {
    tracing::info!(
        instance = %lease::this().id,
        claims = taken.total(),
        requests = taken.requests,
        mail = taken.mail,
        webhooks = taken.webhooks,
        job_runs = taken.job_runs.len(),
        "{message}"
    );
}

/// Runs again the jobs whose runs a stopped instance left unfinished; the tick
/// `resume:<run id>` lets one instance only do it.
fn resume(ctx: &JobContext, specs: &[JobSpec], runs: &[(i64, String)]) {
    for (run_id, job) in runs {
        let Some(spec) = specs.iter().find(|s| s.name.as_str() == job) else {
            continue;
        };
        let (ctx, spec, tick) = (ctx.clone(), spec.clone(), format!("resume:{run_id}"));
        tokio::spawn(async move {
            match run(&ctx, &spec, Some(&tick), Utc::now()).await {
                Ok(o) => {
                    tracing::info!(job = %spec.name.as_str(), status = %o.status, "resumed an interrupted job")
                }
                Err(e) => {
                    tracing::error!(job = %spec.name.as_str(), error = format!("{e:#}"), "resuming an interrupted job")
                }
            }
        });
    }
}

pub async fn schedule(
    ctx: JobContext,
    specs: Vec<JobSpec>,
) -> anyhow::Result<tokio_cron_scheduler::JobScheduler> {
    let sched = tokio_cron_scheduler::JobScheduler::new().await?;
    for spec in specs {
        let ctx = ctx.clone();
        let spec = Arc::new(spec);
        let expr = spec.schedule.to_string();
        let job = tokio_cron_scheduler::Job::new_async(expr.as_str(), move |_, _| {
            let (ctx, spec) = (ctx.clone(), spec.clone());
            Box::pin(async move {
                let now = Utc::now();
                let tick = tick(&spec, now);
                match run(&ctx, &spec, Some(&tick), now).await {
                    Ok(o) => {
                        tracing::info!(job = %spec.name.as_str(), status = %o.status, "scheduled job ran")
                    }
                    Err(e) => {
                        tracing::error!(job = %spec.name.as_str(), error = format!("{e:#}"), "scheduled job failed")
                    }
                }
            })
        })?;
        sched.add(job).await?;
    }
    sched.start().await?;
    Ok(sched)
}

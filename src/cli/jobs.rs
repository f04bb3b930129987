//! `lethe retention plan|run` and `lethe jobs list|run|history`.

use super::progress::Stage;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;

use super::audit::TextOrJson;
use crate::audit::AuditLog;
use crate::config::Config;
use crate::jobs::{self, JobContext};
use crate::policy::jobs::load_jobs;
use crate::retention::{self, RunOptions};
use crate::sources::db::Sources;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum RetentionAction {
    /// Per collection, how many rows and fields are due now and the rule that makes them due
    Plan {
        #[arg(long, value_enum, default_value = "text")]
        format: TextOrJson,
        /// What a run at the end of this day (YYYY-MM-DD, UTC) would find due in today's
        /// data: read-only, changes nothing
        #[arg(long, value_name = "DATE", value_parser = parse_day)]
        as_of: Option<chrono::NaiveDate>,
    },
    /// Delete and mask what is due, in batches
    Run {
        /// Count what is due and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Rows per transaction
        #[arg(long, default_value_t = 5000)]
        batch_size: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsAction {
    /// Every job of jobs/*.yaml with its schedule and next run
    List,
    /// Run one job now, in the foreground
    Run { name: String },
    /// Past runs with their outcome and counts
    History {
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
}

fn parse_day(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("`{s}` is not a date: write it as YYYY-MM-DD"))
}

async fn context(config: &Config) -> anyhow::Result<JobContext> {
    let policy = Arc::new(super::commands::load_valid(&config.policies)?);
    let store = Store::open(&config.database).await?;
    let audit = AuditLog::open(store.clone(), &config.key_source()).await?;
    let mailer = Arc::new(crate::app::mailer(config, &policy, &audit)?);
    Ok(JobContext {
        store,
        audit,
        sources: Arc::new(Sources::default()),
        keys: config.key_source(),
        holder: format!("cli:{}", std::process::id()),
        progress: None,
        mailer,
        policy,
    })
}

fn print_due(due: &[retention::Due]) {
    for d in due {
        let what = if let Some(h) = &d.held_by {
            format!("held by {h}: nothing is deleted")
        } else {
            let mut parts = Vec::new();
            if d.deletes {
                parts.push(format!("{} row(s) due", d.rows));
            }
            let masked: Vec<String> = d
                .fields
                .iter()
                .filter(|(_, n)| *n > 0 || !d.deletes)
                .map(|(f, n)| format!("{f}: {n} value(s) due"))
                .collect();
            if !masked.is_empty() {
                let of = if d.deletes { " in rows that stay" } else { "" };
                parts.push(format!("{}{of}", masked.join(", ")));
            }
            parts.join("; ")
        };
        let restricted = if d.restricted_rows > 0 {
            format!(
                " ({} row(s) of people who restricted processing left alone, Art. 18)",
                d.restricted_rows
            )
        } else {
            String::new()
        };
        println!(
            "{}.{}: {what}{restricted}\n    rule: {}",
            d.system, d.collection, d.rule
        );
        if d.erased_rows > 0 {
            println!(
                "    {} row(s) erased on request and kept for an obligation: due when it ends",
                d.erased_rows
            );
        }
        if let Some(walk) = &d.walked_by {
            println!("    read by {walk}");
        }
    }
}

pub async fn retention(action: RetentionAction, config: &Config) -> anyhow::Result<ExitCode> {
    let ctx = context(config).await?;
    let now = match &action {
        RetentionAction::Plan {
            as_of: Some(day), ..
        } => day
            .and_hms_opt(23, 59, 59)
            .map_or_else(chrono::Utc::now, |t| t.and_utc()),
        _ => chrono::Utc::now(),
    };
    let plan_format = match &action {
        RetentionAction::Plan { format, .. } => Some(*format),
        RetentionAction::Run { dry_run: true, .. } => Some(TextOrJson::Text),
        RetentionAction::Run { .. } => None,
    };
    match (plan_format, action) {
        (Some(format), _) => {
            let due =
                retention::plan(&ctx.policy, &ctx.sources, now, &ctx.requested().await?).await?;
            match format {
                TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&due)?),
                TextOrJson::Text => print_due(&due),
            }
        }
        (None, RetentionAction::Run { batch_size, .. }) => {
            let id = ctx
                .store
                .start_run("retention (manual)", "retention", None, &ctx.holder, now)
                .await?;
            let stage = retention_stage(&ctx, now).await?;
            let options = RunOptions {
                batch_size,
                max_duration: None,
                max_batches: None,
                progress: Some(stage.ticker()),
                requested: ctx.requested().await?,
            };
            let report =
                retention::run(&ctx.policy, &ctx.sources, &ctx.audit, now, &options).await?;
            stage.finish();
            let summary = serde_json::json!({ "rows_deleted": report.rows_deleted, "values_masked": report.values_masked, "batches": report.batches, "longest_batch_ms": report.longest_batch_ms });
            if let Some(id) = id {
                ctx.store
                    .finish_run(id, "completed", &summary, chrono::Utc::now())
                    .await?;
            }
            print_due(&report.collections);
            println!(
                "{} row(s) deleted, {} value(s) masked in {} batch(es); longest batch {} ms",
                report.rows_deleted, report.values_masked, report.batches, report.longest_batch_ms
            );
        }
        (None, RetentionAction::Plan { .. }) => {}
    }
    ctx.sources.close().await;
    Ok(ExitCode::SUCCESS)
}

/// The retention run as a stage: a bar over what is due when stderr is a terminal (the
/// plan is read first to know the total), else one summary line at the end.
async fn retention_stage(
    ctx: &JobContext,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Arc<Stage>> {
    use std::io::IsTerminal;
    let total = if std::io::stderr().is_terminal() {
        let due = retention::plan(&ctx.policy, &ctx.sources, now, &ctx.requested().await?).await?;
        Some(
            due.iter()
                .map(|d| d.rows + d.fields.iter().map(|(_, n)| n).sum::<u64>())
                .sum(),
        )
    } else {
        None
    };
    Ok(Stage::start("retention", "rows and values", total))
}

pub async fn run(action: JobsAction, config: &Config) -> anyhow::Result<ExitCode> {
    let (specs, diags) = load_jobs(&config.jobs);
    if let Some(e) = diags
        .iter()
        .find(|d| d.severity == crate::policy::Severity::Error)
    {
        anyhow::bail!("{e}");
    }
    match action {
        JobsAction::List => {
            let now = chrono::Utc::now();
            for s in &specs {
                let next =
                    jobs::next_run(s, now).map_or_else(|| "-".to_owned(), crate::store::timestamp);
                println!(
                    "{:<24} {:<16} \"{}\"  next {next}  ({})",
                    s.name.as_str(),
                    s.kind.key(),
                    s.schedule.as_str(),
                    jobs::availability(s.kind)
                );
            }
            if specs.is_empty() {
                println!("no jobs under {}", config.jobs.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsAction::Run { name } => {
            let Some(spec) = specs.iter().find(|s| s.name.as_str() == name) else {
                anyhow::bail!("no job named `{name}` under {}", config.jobs.display());
            };
            let mut ctx = context(config).await?;
            let now = chrono::Utc::now();
            let stage =
                if spec.kind == crate::policy::jobs::JobKind::Retention && !spec.options.dry_run {
                    Some(retention_stage(&ctx, now).await?)
                } else {
                    None
                };
            ctx.progress = stage.as_ref().map(|s| s.ticker());
            let outcome = jobs::run(&ctx, spec, None, now).await?;
            if let Some(s) = stage {
                s.finish();
            }
            println!(
                "{}: {}\n{}",
                spec.name.as_str(),
                outcome.status,
                serde_json::to_string_pretty(&outcome.summary)?
            );
            ctx.sources.close().await;
            Ok(ExitCode::SUCCESS)
        }
        JobsAction::History { limit } => {
            let store = Store::open(&config.database).await?;
            for r in store.job_runs(limit).await? {
                println!(
                    "{:>5} {} {:<24} {:<40} {}",
                    r.id, r.started_at, r.job, r.status, r.summary
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

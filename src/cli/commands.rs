//! What each command does, on top of the library.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::{CheckFormat, Command, RegisterAction, RegisterFormat};
use crate::config::Config;
use crate::policy::{Checked, Policy, Severity};
use crate::store::Store;
use crate::{notice, register};

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
    crate::app::Application::build(&config)
        .await?
        .run_until(shutdown_signal())
        .await?;
    Ok(ExitCode::SUCCESS)
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

//! Scheduled jobs, declared in `jobs/*.yaml` and checked like the policy files.

use std::path::Path;
use std::time::Duration;

use marked_yaml::Spanned;
use serde::{Deserialize, Serialize};

use super::diagnostic::{Diagnostic, Diagnostics};
use super::load::{decode, parse_file, policy_files};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Retention,
    DsrDeadlines,
    AuditCheckpoint,
    VendorReviews,
    PackagePurge,
}

impl JobKind {
    pub fn key(self) -> &'static str {
        match self {
            Self::Retention => "retention",
            Self::DsrDeadlines => "dsr_deadlines",
            Self::AuditCheckpoint => "audit_checkpoint",
            Self::VendorReviews => "vendor_reviews",
            Self::PackagePurge => "package_purge",
        }
    }
}

fn default_batch() -> u32 {
    5000
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    /// Rows per transaction.
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    /// Stop (and resume on the next run) after this long: `90s`, `30m`, `2h`.
    #[serde(default)]
    pub max_duration: Option<Spanned<String>>,
    #[serde(default)]
    pub dry_run: bool,
    /// `package_purge`: how long finished requests are kept (`3y` by default).
    #[serde(default)]
    pub keep_requests: Option<Spanned<String>>,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            batch_size: default_batch(),
            max_duration: None,
            dry_run: false,
            keep_requests: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: Spanned<String>,
    pub kind: JobKind,
    /// `sec min hour day month weekday`.
    pub schedule: Spanned<String>,
    #[serde(default)]
    pub options: JobOptions,
}

/// Parses a cron expression with seconds, as the scheduler reads it.
pub fn parse_schedule(expr: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(expr)
        .map_err(|e| format!("`{expr}` is not a schedule ({e}); write `sec min hour day month weekday`, e.g. \"0 30 2 * * *\""))
}

/// `90s`, `30m`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: write 90s, 30m or 2h"))?;
    match unit {
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{s}` is not a duration: write 90s, 30m or 2h")),
    }
}

impl JobSpec {
    pub fn max_duration(&self) -> Option<Duration> {
        self.options
            .max_duration
            .as_ref()
            .and_then(|d| parse_duration(d).ok())
    }
}

impl JobSpec {
    /// How long finished requests are kept: `keep_requests`, else three years.
    pub fn keep_requests(&self) -> crate::policy::RetentionPeriod {
        self.options
            .keep_requests
            .as_ref()
            .and_then(|k| crate::policy::RetentionPeriod::parse(k).ok())
            .unwrap_or(crate::policy::RetentionPeriod::new(3, 0, 0))
    }
}

/// Reads `dir/*.yaml`; a missing directory means no jobs.
pub fn load_jobs(dir: &Path) -> (Vec<JobSpec>, Vec<Diagnostic>) {
    let mut diags = Diagnostics::default();
    let mut jobs: Vec<JobSpec> = Vec::new();
    let files = if dir.is_dir() {
        policy_files(dir).unwrap_or_default()
    } else {
        Vec::new()
    };
    for path in files {
        let Some((_, node, _)) = parse_file(&path, &mut diags) else {
            continue;
        };
        let Some(map) = node.as_mapping() else {
            continue;
        };
        for (key, _) in map.iter().filter(|(k, _)| k.as_str() != "jobs") {
            diags
                .error(
                    key.span(),
                    key.as_str(),
                    format!("unknown top-level key `{}` in a jobs file", key.as_str()),
                )
                .hint("a jobs file holds `jobs:` only");
        }
        let Some(items) = map.get_node("jobs") else {
            continue;
        };
        let Some(seq) = items.as_sequence() else {
            diags.error(items.span(), "jobs", "`jobs` must be a list");
            continue;
        };
        for item in seq.iter() {
            let Some(job) = decode::<JobSpec>(item, "jobs", &mut diags) else {
                continue;
            };
            let key = format!("jobs[{}]", *job.name);
            if let Some(first) = jobs.iter().find(|j| *j.name == *job.name) {
                let at = diags.location(first.name.span());
                diags
                    .error(
                        job.name.span(),
                        &key,
                        format!("duplicate job name `{}`", *job.name),
                    )
                    .hint(format!("first declared at {at}"));
            }
            if let Err(e) = parse_schedule(&job.schedule) {
                diags.error(job.schedule.span(), format!("{key}.schedule"), e);
            }
            if let Some(d) = &job.options.max_duration
                && let Err(e) = parse_duration(d)
            {
                diags.error(d.span(), format!("{key}.options.max_duration"), e);
            }
            if let Some(k) = &job.options.keep_requests
                && let Err(e) = crate::policy::RetentionPeriod::parse(k)
            {
                diags.error(k.span(), format!("{key}.options.keep_requests"), e);
            }
            if job.options.batch_size == 0 {
                diags.error(
                    job.name.span(),
                    format!("{key}.options.batch_size"),
                    "batch_size must be at least 1",
                );
            }
            jobs.push(job);
        }
    }
    (jobs, diags.into_sorted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_and_durations() {
        assert!(parse_schedule("0 30 2 * * *").is_ok());
        assert!(parse_schedule("0 30 2 * *").is_err());
        assert!(parse_schedule("every night").is_err());
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert!(parse_duration("30 minutes").is_err());
    }
}

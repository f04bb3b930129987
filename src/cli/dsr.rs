//! `lethe dsr plan|access|erase`.

use super::progress::Stage;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::audit::{Actor, AuditLog, Identity};
use crate::config::Config;
use crate::dsr::{self, AccessKind, Context, ErasureReport};
use crate::sources::db::Sources;
use crate::store::Store;

#[derive(Debug, Args)]
pub struct Target {
    /// Who the request is about, as KIND=VALUE (e.g. email=alice@example.com); repeatable
    #[arg(long = "identity", value_name = "KIND=VALUE", required = true)]
    pub identities: Vec<String>,
    /// Fail when a collection with personal data cannot be reached from the identities
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Subcommand)]
pub enum DsrAction {
    /// Show which collections are read, through which keys, and what would be erased; reads no personal data
    Plan {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value = "text")]
        format: super::audit::TextOrJson,
    },
    /// Build the access (Art. 15) or portability (Art. 20) package
    Access {
        #[command(flatten)]
        target: Target,
        /// access: a zip with data.json, one CSV per table and index.html; portability: JSON
        #[arg(long = "type", value_enum, default_value = "access")]
        kind: AccessKind,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Erase the person's data (Art. 17), keeping what the law requires, with the reason
    Erase {
        #[command(flatten)]
        target: Target,
        /// Report exactly what would happen without writing
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: super::audit::TextOrJson,
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

fn identities(t: &Target) -> anyhow::Result<Vec<Identity>> {
    t.identities
        .iter()
        .map(|s| Identity::parse(s).map_err(|e| anyhow::anyhow!("--identity: {e}")))
        .collect()
}

pub async fn run(action: DsrAction, config: &Config) -> anyhow::Result<ExitCode> {
    let policy = super::commands::load_valid(&config.policies)?;
    if let DsrAction::Plan { target, format } = &action {
        let ids = identities(target)?;
        let plan = dsr::plan_for(&policy, &ids);
        match format {
            super::audit::TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
            super::audit::TextOrJson::Text => print_plan(&plan),
        }
        let unreachable = plan.unreachable().count();
        return Ok(if target.strict && unreachable > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    let store = Store::open(&config.database).await?;
    let audit = AuditLog::open(store.clone(), &config.key_source()).await?;
    let now = chrono::Utc::now();
    let sources = Sources::default();
    let result = match action {
        DsrAction::Plan { .. } => Ok(ExitCode::SUCCESS),
        DsrAction::Access { target, kind, out } => {
            let ids = identities(&target)?;
            let ctx = cli_context(&policy, &audit, &sources, target.strict, None);
            let stage = Stage::start("finding the person's records", "records", None);
            let package = dsr::access(&ctx, &ids, kind, now).await?;
            stage.inc(package.row_counts().values().sum::<usize>() as u64);
            stage.finish();
            let bytes = match kind {
                AccessKind::Access => package.to_zip()?,
                AccessKind::Portability => package.data_json(),
            };
            // Personal data: readable by its owner only.
            crate::store::files::write_private(&out, &bytes)
                .with_context(|| format!("writing {}", out.display()))?;
            let rows: usize = package.row_counts().values().sum();
            eprintln!("{rows} record(s) written to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        DsrAction::Erase {
            target,
            dry_run,
            format,
            out,
        } => {
            let ids = identities(&target)?;
            let restriction = dsr::restriction_for(&audit, &ids).await?;
            if let Some(r) = &restriction {
                eprintln!(
                    "this person restricted processing (request {r}): everything is kept until the restriction is lifted"
                );
            }
            let ctx = cli_context(&policy, &audit, &sources, target.strict, restriction);
            let stage = Stage::start(
                if dry_run {
                    "deciding what to erase"
                } else {
                    "erasing"
                },
                "rows",
                None,
            );
            let report = dsr::erase(&ctx, &ids, dry_run, now).await?;
            stage.inc(
                report
                    .systems
                    .iter()
                    .flat_map(|s| &s.collections)
                    .map(|c| (c.rows_deleted + c.rows_masked) as u64)
                    .sum(),
            );
            stage.finish();
            // Art. 19: this command tells no recipient; it says so, and whom to tell.
            let notices = crate::requests::erasure_notices(&policy, &report);
            let to_tell: Vec<serde_json::Value> = notices
                .iter()
                .map(|n| {
                    serde_json::json!({
                        "processor": n.processor.id.as_str(),
                        "name": n.processor.name,
                        "purposes": n.purposes,
                        "categories": n.categories.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                    })
                })
                .collect();
            if !dry_run && !notices.is_empty() {
                eprintln!(
                    "Art. 19: no recipient was told of this erasure (lethe dsr erase sends no notice; an erasure requested through `lethe serve` does). Tell each of these what was erased:"
                );
                for n in &notices {
                    eprintln!(
                        "  {} ({}): for {}: {}",
                        n.processor.name,
                        n.processor.id.as_str(),
                        n.purposes.join(", "),
                        n.categories
                            .iter()
                            .map(|(_, name)| name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            let text = match format {
                super::audit::TextOrJson::Json => {
                    let mut v = serde_json::to_value(&report)?;
                    if let Some(o) = v.as_object_mut() {
                        o.insert(
                            "art19".into(),
                            serde_json::json!({ "notices_sent": false, "recipients_to_tell": to_tell }),
                        );
                    }
                    format!("{}\n", serde_json::to_string_pretty(&v)?)
                }
                super::audit::TextOrJson::Text => erasure_text(&report),
            };
            super::commands::write_out(out.as_deref(), text.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
    };
    sources.close().await;
    store.close().await;
    result
}

/// A request made at the command line.
fn cli_context<'a>(
    policy: &'a crate::policy::Policy,
    audit: &'a AuditLog,
    sources: &'a Sources,
    strict: bool,
    restriction: Option<String>,
) -> Context<'a> {
    Context {
        policy,
        audit,
        sources,
        actor: Actor::Cli,
        request_id: None,
        strict,
        restriction,
    }
}

fn print_plan(plan: &dsr::Plan) {
    println!("identities: {}", plan.identity_kinds.join(", "));
    for s in &plan.systems {
        println!("system {} ({})", s.system, s.name);
        for step in &s.steps {
            println!("  {} (erasure: {})", step.collection, step.erasure);
            for v in &step.via {
                match v {
                    dsr::Via::Identity { field, kind } => {
                        println!("    by {field} = the {kind} given")
                    }
                    dsr::Via::Reference {
                        field,
                        from_collection,
                        from_field,
                        direction,
                        why,
                    } => println!(
                        "    by {field} = {from_collection}.{from_field} (direction {direction}: {why})"
                    ),
                }
            }
            for (field, purposes) in &step.mapped {
                println!("    {field}: {}", purposes.join(", "));
            }
        }
        for c in &s.shared {
            println!(
                "  SHARED {c}: reached through rows the person's rows reference, which other people's rows may reference too; an erasure keeps such a row while they do"
            );
        }
        for k in &s.skipped {
            println!(
                "  not followed: {}.{} -> {}.{}: {}",
                k.from_collection, k.from_field, k.collection, k.field, k.why
            );
        }
        for c in &s.unreachable {
            println!(
                "  UNREACHABLE {c}: holds personal data but no identity or reference leads to it"
            );
        }
        for c in &s.cycles {
            println!("  cycle: {c}");
        }
    }
}

fn erasure_text(r: &ErasureReport) -> String {
    let mut out = String::new();
    if r.dry_run {
        out.push_str("DRY RUN: nothing was changed\n");
    }
    for s in &r.systems {
        out.push_str(&format!("system {}\n", s.system));
        for c in &s.collections {
            out.push_str(&format!(
                "  {}: {} found, {} deleted, {} masked\n",
                c.collection, c.rows_found, c.rows_deleted, c.rows_masked
            ));
            for (field, n) in &c.fields_masked {
                out.push_str(&format!("    masked {field} in {n} row(s)\n"));
            }
            for k in &c.kept {
                let until = k
                    .until
                    .as_deref()
                    .map_or("until its retention starts and runs out".to_owned(), |u| {
                        format!("until {u}")
                    });
                out.push_str(&format!(
                    "    kept {} in {} row(s): {} ({}: {}), {until}\n",
                    k.field, k.rows, k.article, k.because, k.reason
                ));
            }
        }
    }
    out
}

//! `lethe vendors matrix|obligations|check`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;
use crate::policy::Date;
use crate::vendors::{self, Table, TableFormat};

#[derive(Debug, Subcommand)]
pub enum VendorsAction {
    /// Controls × agreements: each cell the requirement, normalised
    Matrix {
        #[arg(long, value_enum, default_value = "md")]
        format: TableFormat,
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Per control parameter, the strictest requirement across agreements and who imposes it
    Obligations {
        #[arg(long, value_enum, default_value = "md")]
        format: TableFormat,
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Every obligation our measures fail, missing Art. 28(3) clauses, overdue reviews,
    /// processors without agreements and flow-down gaps; exit 1 when any is found
    Check {
        #[arg(long, value_enum, default_value = "md")]
        format: TableFormat,
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Check dates as of this day (YYYY-MM-DD) instead of today
        #[arg(long, value_name = "DATE")]
        as_of: Option<String>,
    },
}

fn render(
    format: TableFormat,
    title: &str,
    table: Table,
    json: serde_json::Value,
) -> anyhow::Result<String> {
    Ok(match format {
        TableFormat::Md => format!("# {title}\n\n{}", table.to_markdown()),
        TableFormat::Csv => table.to_csv()?,
        TableFormat::Html => table.to_html(title),
        TableFormat::Json => format!("{}\n", serde_json::to_string_pretty(&json)?),
    })
}

pub fn run(action: VendorsAction, config: &Config) -> anyhow::Result<ExitCode> {
    let policy = super::commands::load_valid(&config.policies)?;
    match action {
        VendorsAction::Matrix { format, out } => {
            let m = vendors::matrix(&policy);
            let text = render(
                format,
                "Controls by agreement",
                m.table(),
                serde_json::to_value(&m)?,
            )?;
            super::commands::write_out(out.as_deref(), text.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        VendorsAction::Obligations { format, out } => {
            let o = vendors::obligations(&policy);
            let text = render(
                format,
                "Strictest obligations per control",
                vendors::obligations_table(&o),
                serde_json::to_value(&o)?,
            )?;
            super::commands::write_out(out.as_deref(), text.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        VendorsAction::Check { format, out, as_of } => {
            let today = match as_of {
                Some(d) => Date::parse(&d)
                    .map_err(|e| anyhow::anyhow!("--as-of: {e}"))?
                    .naive(),
                None => chrono::Utc::now().date_naive(),
            };
            let findings = vendors::check(&policy, today);
            let text = render(
                format,
                "Vendor agreement check",
                vendors::findings_table(&findings),
                serde_json::to_value(&findings)?,
            )?;
            super::commands::write_out(out.as_deref(), text.as_bytes())?;
            if format != TableFormat::Json {
                eprintln!("{} finding(s)", findings.len());
            }
            Ok(if findings.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

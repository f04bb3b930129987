//! The command line. Exit codes: 0 ok, 1 findings (validation errors, failed checks),
//! 2 usage or runtime error.

mod admin;
mod audit;
mod commands;
mod dsr;
mod jobs;
mod progress;
mod vendors;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, LogFormat, Overrides};
use crate::notice;

#[derive(Debug, Parser)]
#[command(
    name = "lethe",
    version,
    about = "Privacy-compliance engine: one declarative policy drives the privacy notice, the Art. 30 register, data-subject requests, retention and vendor TOMs",
    long_about = None
)]
pub struct Cli {
    /// Policy directory [env: LETHE_POLICIES] [default: ./policies]
    #[arg(long, global = true, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// The engine's store, sqlite://... or postgres://... [env: LETHE_DATABASE] [default: sqlite://lethe.db?mode=rwc]
    #[arg(long, global = true, value_name = "URL")]
    pub database: Option<String>,
    /// Job definitions directory [env: LETHE_JOBS] [default: ./jobs]
    #[arg(long, global = true, value_name = "DIR")]
    pub jobs: Option<PathBuf>,
    /// Configuration file [default: lethe.toml when present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format on stderr [env: LETHE_LOG_FORMAT]
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service: privacy notice, request portal, admin API
    Serve {
        /// Address to listen on [env: LETHE_BIND] [default: 127.0.0.1:8080]
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
    },
    /// Validate the policy files and report every problem with file:line:column
    Check {
        #[arg(long, value_enum, default_value = "text")]
        format: CheckFormat,
        /// Also connect to every system that has a connection and check its live schema
        /// against the policy (what `serve`'s /readyz and every erasure check)
        #[arg(long)]
        live: bool,
    },
    /// Render the public privacy notice (Art. 13/14)
    Notice {
        #[arg(long, value_enum, default_value = "md")]
        format: notice::Format,
        /// Write to FILE instead of stdout
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// The record of processing activities (Art. 30)
    Register {
        #[command(subcommand)]
        action: RegisterAction,
    },
    /// Create or update the store's schema
    Migrate,
    /// The encrypted, tamper-evident audit log
    Audit {
        #[command(subcommand)]
        action: audit::AuditAction,
    },
    /// Data-subject requests across the company's databases
    Dsr {
        #[command(subcommand)]
        action: dsr::DsrAction,
    },
    /// Retention enforcement: what is due, and deleting it
    Retention {
        #[command(subcommand)]
        action: jobs::RetentionAction,
    },
    /// Scheduled jobs from jobs/*.yaml
    Jobs {
        #[command(subcommand)]
        action: jobs::JobsAction,
    },
    /// Vendor agreements and TOMs: matrix, strictest obligations, check
    Vendors {
        #[command(subcommand)]
        action: vendors::VendorsAction,
    },
    /// Admin API tokens, each processor's webhook signing secret, dead letters and failed
    /// webhooks
    Admin {
        #[command(subcommand)]
        action: admin::AdminAction,
    },
    /// The suppression list: people who objected to direct marketing (Art. 21(2)), for
    /// the systems that send it
    Suppression {
        #[command(subcommand)]
        action: admin::SuppressionAction,
    },
    /// Key management
    Keys {
        #[command(subcommand)]
        action: audit::KeysAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegisterAction {
    /// Export the register, one row per purpose
    Export {
        #[arg(long, value_enum, default_value = "csv")]
        format: RegisterFormat,
        /// Write to FILE instead of stdout
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RegisterFormat {
    Csv,
    Json,
}

/// Parses the command line, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let bind = match &cli.command {
        Command::Serve { bind } => bind.clone(),
        _ => None,
    };
    let overrides = Overrides {
        policies: cli.policies.clone(),
        database: cli.database.clone(),
        jobs: cli.jobs.clone(),
        bind,
        log_format: cli.log_format,
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config, matches!(cli.command, Command::Serve { .. }));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::run(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(config: &Config, serving: bool) {
    use tracing_subscriber::EnvFilter;
    // lethe's own lines at INFO when serving; every other crate (the scheduler, the SQL
    // drivers) only when it warns.
    let default = if serving { "warn,lethe=info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only for a person at a terminal, never into a file or a log collector.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

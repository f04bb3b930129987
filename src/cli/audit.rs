//! `lethe audit ...` and `lethe keys rotate`.

use super::progress::Stage;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};

use crate::audit::{AuditLog, Checkpoint, Filter, Identity, MasterKey, Payload, keys};
use crate::config::Config;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Recompute every leaf, MAC and checkpoint; exit 1 and name the first bad entry on tampering
    Verify {
        #[arg(long, value_enum, default_value = "text")]
        format: TextOrJson,
    },
    /// Verify, then sign and store the current tree head; print it as JSON (keep it elsewhere)
    Checkpoint,
    /// Prove that the log extends an old checkpoint (RFC 6962 consistency proof)
    Consistency {
        /// A checkpoint printed earlier by `lethe audit checkpoint`
        #[arg(long, value_name = "OLD.json")]
        from: PathBuf,
    },
    /// Show entries, decrypting what is still decryptable
    Show {
        /// Only this person's entries, e.g. email=alice@example.com
        #[arg(long, value_name = "KIND=VALUE")]
        subject: Option<String>,
        /// Only this request's entries
        #[arg(long, value_name = "ID")]
        request: Option<String>,
        /// Only entries recorded on or after this date (YYYY-MM-DD) or time (RFC 3339)
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: TextOrJson,
    },
    /// Export every entry, one JSON object per line
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Re-wrap every data key under a new master key; entries are not touched
    Rotate {
        /// Where the new master key goes (required when the current one comes from the
        /// environment); an existing file there is used as the new key
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TextOrJson {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
}

async fn open(config: &Config) -> anyhow::Result<AuditLog> {
    let store = Store::open(&config.database).await?;
    Ok(AuditLog::open(store, &config.key_source()).await?)
}

pub async fn run(action: AuditAction, config: &Config) -> anyhow::Result<ExitCode> {
    let log = open(config).await?;
    match action {
        AuditAction::Verify { format } => {
            let total: i64 = sqlx::query_scalar("SELECT next_seq FROM audit_head WHERE id = 1")
                .fetch_one(log.store().pool())
                .await?;
            let stage = Stage::start(
                "verifying the audit log",
                "entries",
                u64::try_from(total).ok(),
            );
            let report = log.verify_with(&*stage.ticker()).await?;
            stage.finish();
            match format {
                TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                TextOrJson::Text => {
                    for p in &report.problems {
                        match p.seq {
                            Some(seq) => println!("BAD seq {seq}: {}", p.message),
                            None => println!("BAD: {}", p.message),
                        }
                    }
                    println!(
                        "{} entries, root {}, {} checkpoint(s): {}",
                        report.entries,
                        report.root_hash,
                        report.checkpoints_checked,
                        if report.ok() { "OK" } else { "TAMPERED" }
                    );
                }
            }
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AuditAction::Checkpoint => {
            let signer = keys::load_or_create_signer(&config.key_source())?;
            let cp = log.checkpoint(&signer).await?;
            println!("{}", serde_json::to_string_pretty(&cp)?);
            Ok(ExitCode::SUCCESS)
        }
        AuditAction::Consistency { from } => {
            let text = std::fs::read_to_string(&from)
                .with_context(|| format!("reading {}", from.display()))?;
            let old: Checkpoint = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a checkpoint", from.display()))?;
            let signer = keys::load_or_create_signer(&config.key_source())?;
            let report = log.consistency(&old, Some(&signer.public_key())).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if report.consistent {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AuditAction::Show {
            subject,
            request,
            since,
            format,
        } => {
            let mut filter = Filter {
                request_id: request,
                since: since.map(|s| {
                    if s.len() == 10 {
                        format!("{s}T00:00:00")
                    } else {
                        s
                    }
                }),
                ..Filter::default()
            };
            if let Some(s) = subject {
                let identity =
                    Identity::parse(&s).map_err(|e| anyhow::anyhow!("--subject: {e}"))?;
                match log.find_subject(&identity).await? {
                    Some(id) => filter.subject = Some(id),
                    None => {
                        eprintln!("the audit log knows no such subject (never seen, or shredded)");
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
            let entries = log.entries(&filter).await?;
            let mut out = std::io::stdout().lock();
            for e in &entries {
                match format {
                    TextOrJson::Json => writeln!(out, "{}", serde_json::to_string(e)?)?,
                    TextOrJson::Text => {
                        let payload = match &e.payload {
                            Payload::Clear(v) if v.is_null() => String::new(),
                            Payload::Clear(v) => format!(" payload={v}"),
                            Payload::Shredded => " payload=<shredded>".to_owned(),
                        };
                        writeln!(
                            out,
                            "{:>6} {} {:<24} actor={} request={} subject={} summary={}{payload}",
                            e.header.seq,
                            e.header.recorded_at,
                            e.header.action,
                            e.header.actor,
                            e.header.request_id.as_deref().unwrap_or("-"),
                            e.header.subject_id.as_deref().unwrap_or("-"),
                            e.header.summary,
                        )?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditAction::Export {
            format: ExportFormat::Jsonl,
            out,
        } => {
            let entries = log.entries(&Filter::default()).await?;
            let mut buf = Vec::new();
            for e in &entries {
                serde_json::to_writer(&mut buf, e)?;
                buf.push(b'\n');
            }
            match out {
                Some(p) => crate::store::files::write_private(&p, &buf)
                    .with_context(|| format!("writing {}", p.display()))?,
                None => std::io::stdout().lock().write_all(&buf)?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn rotate(new_key_file: Option<PathBuf>, config: &Config) -> anyhow::Result<ExitCode> {
    let log = open(config).await?;
    let current = MasterKey::load_or_create(&config.key_source())?;
    // Where the new key is written before the store switches to it.
    let (staging, final_path): (PathBuf, Option<PathBuf>) = match (&new_key_file, &current.file) {
        (Some(p), _) => (p.clone(), None),
        (None, Some(file)) => (file.with_extension("key.next"), Some(file.clone())),
        (None, None) => anyhow::bail!(
            "the master key comes from the environment or config: give --new-key-file FILE for the new key, then point LETHE_MASTER_KEY_FILE at it"
        ),
    };
    let new = if staging.exists() && final_path.is_none() {
        MasterKey::parse(&std::fs::read_to_string(&staging)?)?
    } else {
        let k = MasterKey::generate()?;
        keys::write_key_file(&staging, &k.to_hex())?;
        k
    };
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_keys WHERE wrapped IS NOT NULL")
            .fetch_one(log.store().pool())
            .await?;
    let stage = Stage::start("re-wrapping keys", "keys", u64::try_from(total).ok());
    let count = log.rotate_master_with(&new, &*stage.ticker()).await?;
    stage.finish();
    if let Some(file) = final_path {
        std::fs::rename(&staging, &file)
            .with_context(|| format!("replacing {}", file.display()))?;
        eprintln!(
            "rotated {count} key(s); {} now holds the new master key {}",
            file.display(),
            new.id()
        );
    } else {
        eprintln!(
            "rotated {count} key(s) to master key {}; set LETHE_MASTER_KEY_FILE={} before the next start",
            new.id(),
            display(&staging)
        );
    }
    log.store().close().await;
    Ok(ExitCode::SUCCESS)
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

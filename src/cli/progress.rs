//! Progress of long work on the command line: a bar (or a spinner, when the total is not
//! known) while stderr is a terminal, and in any case one summary line per stage when it
//! ends, on stderr, so that a log file gets one line and not a redrawn bar.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// One stage of a command (verifying the log, erasing, a retention run).
pub struct Stage {
    label: String,
    unit: &'static str,
    bar: Option<indicatif::ProgressBar>,
    done: AtomicU64,
    started: Instant,
}

impl Stage {
    /// Starts `label`, counting `unit`s up to `total` when it is known.
    pub fn start(label: &str, unit: &'static str, total: Option<u64>) -> Arc<Self> {
        Self::start_on(label, unit, total, std::io::stderr().is_terminal())
    }

    fn start_on(label: &str, unit: &'static str, total: Option<u64>, terminal: bool) -> Arc<Self> {
        let bar = terminal.then(|| {
            let (bar, template) = match total {
                Some(n) => (
                    indicatif::ProgressBar::new(n),
                    format!("{label} {{bar:40}} {{pos}}/{{len}} {unit}, {{per_sec}}, eta {{eta}}"),
                ),
                None => (
                    indicatif::ProgressBar::new_spinner(),
                    format!("{{spinner}} {label}: {{pos}} {unit}, {{elapsed}}"),
                ),
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Arc::new(Self {
            label: label.to_owned(),
            unit,
            bar,
            done: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    /// `n` more units done.
    pub fn inc(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// A callback for the library's long operations.
    pub fn ticker(self: &Arc<Self>) -> Arc<dyn Fn(u64) + Send + Sync> {
        let me = self.clone();
        Arc::new(move |n| me.inc(n))
    }

    /// Ends the stage: the bar goes, the summary line stays.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        let _ = writeln!(std::io::stderr(), "{}", self.summary());
    }

    fn summary(&self) -> String {
        format!(
            "{}: {} {} in {:.1} s",
            self.label,
            self.done.load(Ordering::Relaxed),
            self.unit,
            self.started.elapsed().as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_terminal_a_stage_is_one_summary_line() {
        let s = Stage::start_on("verifying the audit log", "entries", Some(10), false);
        assert!(s.bar.is_none());
        let tick = s.ticker();
        tick(4);
        tick(6);
        let line = s.summary();
        assert!(
            line.starts_with("verifying the audit log: 10 entries in "),
            "{line}"
        );
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
    }
}

//! Problems found in a policy set, each pointing at `file:line:column`.

use std::fmt;
use std::path::{Path, PathBuf};

use marked_yaml::Span;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A position in one of the loaded files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// Where `span` starts, in one of `files` (the loaded files, in load order).
    pub fn of(files: &[PathBuf], span: &Span) -> Self {
        match span.start() {
            Some(m) => Self {
                file: files.get(m.source()).cloned().unwrap_or_default(),
                line: m.line(),
                column: m.column(),
            },
            None => Self {
                file: files.first().cloned().unwrap_or_default(),
                line: 1,
                column: 1,
            },
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub location: Location,
    /// The offending key as a path, e.g. `purposes[billing].recipients`.
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}: {sev}: {}: {}",
            self.location, self.key, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Maps marker source numbers back to file paths and collects diagnostics.
#[derive(Debug, Default)]
pub struct Diagnostics {
    files: Vec<PathBuf>,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Registers a file and returns the source number its spans will carry.
    pub fn add_file(&mut self, path: &Path) -> usize {
        self.files.push(path.to_path_buf());
        self.files.len() - 1
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn location(&self, span: &Span) -> Location {
        Location::of(&self.files, span)
    }

    pub fn file_location(&self, source: usize) -> Location {
        Location {
            file: self.files.get(source).cloned().unwrap_or_default(),
            line: 1,
            column: 1,
        }
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn error(
        &mut self,
        span: &Span,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.emit(Severity::Error, span, key, message)
    }

    pub fn warning(
        &mut self,
        span: &Span,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.emit(Severity::Warning, span, key, message)
    }

    fn emit(
        &mut self,
        severity: Severity,
        span: &Span,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        let location = self.location(span);
        self.items.push(Diagnostic {
            severity,
            location,
            key: key.into(),
            message: message.into(),
            hint: None,
        });
        let last = self.items.len() - 1;
        &mut self.items[last]
    }

    /// All diagnostics, errors first, then by position.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| {
            (a.severity, &a.location, &a.key).cmp(&(b.severity, &b.location, &b.key))
        });
        self.items.dedup();
        self.items
    }
}

impl Diagnostic {
    pub fn hint(&mut self, hint: impl Into<String>) -> &mut Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds "did you mean `x`?" when one of `known` is close to `wrong`.
    pub fn suggest<'a>(
        &mut self,
        wrong: &str,
        known: impl IntoIterator<Item = &'a str>,
    ) -> &mut Self {
        if let Some(best) = closest(wrong, known) {
            self.hint = Some(format!("did you mean `{best}`?"));
        }
        self
    }
}

/// The known name closest to `wrong`, when it is close enough to be a typo.
pub fn closest<'a>(wrong: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(wrong, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(closest("awz", ["aws", "google"]), Some("aws"));
        assert_eq!(closest("purposes", ["purposes"]), Some("purposes"));
        assert_eq!(closest("zzzzzz", ["aws", "google"]), None);
    }
}

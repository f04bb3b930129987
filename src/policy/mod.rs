//! The declarative policy model: loading `policies/**/*.yaml`, validating it, and the
//! derived views every other capability reads. No I/O beyond reading the policy files.

pub mod controls;
pub mod diagnostic;
mod fides;
pub mod jobs;
mod load;
pub mod model;
pub mod taxonomy;
pub mod types;
mod validate;

use std::path::{Path, PathBuf};

use marked_yaml::Spanned;

pub use diagnostic::{Diagnostic, Location, Severity};
pub use model::*;
pub use taxonomy::Taxonomy;
pub use types::*;

/// Subject categories every policy may use without declaring them.
pub const BUILT_IN_SUBJECTS: &[&str] = &[
    "customer",
    "user",
    "visitor",
    "prospect",
    "employee",
    "job_applicant",
    "contractor",
    "supplier_contact",
    "patient",
    "student",
    "child",
];

/// A loaded policy set. Valid only when [`Checked::errors`] is empty.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    /// SHA-256 over the files' paths and contents: identifies this exact policy set.
    pub hash: String,
    pub controller: Option<Controller>,
    pub categories: Vec<CustomCategory>,
    pub subjects: Vec<Spanned<Id>>,
    pub purposes: Vec<Purpose>,
    pub processors: Vec<Processor>,
    pub systems: Vec<System>,
    pub holds: Vec<Hold>,
    pub measures: Measures,
    pub agreements: Vec<Agreement>,
    /// Control parameters declared by the policy beyond the built-in catalogue.
    pub controls: Vec<controls::CustomControl>,
    pub taxonomy: Taxonomy,
    /// The control vocabulary in force (built-in plus `controls:`).
    pub catalogue: controls::Catalogue,
}

/// A policy with everything `lethe check` found in it.
#[derive(Debug)]
pub struct Checked {
    pub policy: Policy,
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policy directory {dir}: {source}")]
    Directory {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("no policy files (*.yaml) under {0}")]
    Empty(PathBuf),
    #[error("the policies under {dir} have {count} error(s); run `lethe check` to see them")]
    Invalid { dir: PathBuf, count: usize },
}

impl Checked {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    /// The policy, if it has no errors.
    pub fn into_valid(self) -> Result<Policy, PolicyError> {
        match self.errors().count() {
            0 => Ok(self.policy),
            count => Err(PolicyError::Invalid {
                dir: self.policy.dir,
                count,
            }),
        }
    }
}

impl Policy {
    /// Reads and validates every policy file under `dir`. I/O failures on the directory
    /// itself are errors; everything wrong inside the files is a diagnostic.
    pub fn load(dir: &Path) -> Result<Checked, PolicyError> {
        let files = load::policy_files(dir).map_err(|source| PolicyError::Directory {
            dir: dir.to_path_buf(),
            source,
        })?;
        if files.is_empty() {
            return Err(PolicyError::Empty(dir.to_path_buf()));
        }
        let mut diags = diagnostic::Diagnostics::default();
        let mut raw = load::Raw::default();
        let mut texts = Vec::new();
        for path in &files {
            if let Some((_, node, text)) = load::parse_file(path, &mut diags) {
                load::merge_file(path, &node, &mut raw, &mut diags);
                texts.push((path.clone(), text));
            } else {
                // A file that does not parse is reported once: what it would have declared
                // counts as declared, so no other file gets errors caused by it.
                raw.broken_ids.extend(load::ids_in(path));
            }
        }
        let mut policy = raw.policy;
        policy.dir = dir.to_path_buf();
        policy.hash = load::hash_files(dir, &texts);
        policy.files = files;
        validate::validate(&mut policy, &raw.broken_ids, &mut diags);
        for system in &mut policy.systems {
            system.sources = diags.files().to_vec();
        }
        Ok(Checked {
            policy,
            diagnostics: diags.into_sorted(),
        })
    }

    pub fn purpose(&self, id: &str) -> Option<&Purpose> {
        self.purposes.iter().find(|p| p.id.as_str() == id)
    }

    pub fn processor(&self, id: &str) -> Option<&Processor> {
        self.processors.iter().find(|p| p.id.as_str() == id)
    }

    pub fn system(&self, id: &str) -> Option<&System> {
        self.systems.iter().find(|s| s.id.as_str() == id)
    }

    /// The purposes a field serves: its own, else those of its collection's (else its
    /// system's) that process one of its categories. A collection's purpose is not every
    /// field's: a bookkeeping obligation over names and amounts does not keep the e-mail
    /// beside them. When none of the inherited purposes declares the field's categories
    /// (which `lethe check` warns of), the field serves them all.
    pub fn field_purposes<'a>(
        &self,
        system: &'a System,
        collection: &'a Collection,
        field: &'a Field,
    ) -> Vec<&'a Spanned<Id>> {
        if !field.purposes.is_empty() {
            return field.purposes.iter().collect();
        }
        let inherited = if !collection.purposes.is_empty() {
            &collection.purposes
        } else {
            &system.purposes
        };
        let declaring: Vec<&Spanned<Id>> = inherited
            .iter()
            .filter(|p| {
                self.purpose(p.as_str())
                    .is_some_and(|purpose| purpose.declares_any(&field.categories))
            })
            .collect();
        if declaring.is_empty() {
            inherited.iter().collect()
        } else {
            declaring
        }
    }

    /// The systems holding data for a purpose, in declaration order.
    pub fn systems_for_purpose(&self, purpose: &str) -> Vec<&System> {
        self.systems
            .iter()
            .filter(|s| {
                s.collections.iter().any(|c| {
                    c.fields.iter().any(|f| {
                        !f.categories.is_empty()
                            && self
                                .field_purposes(s, c, f)
                                .iter()
                                .any(|p| p.as_str() == purpose)
                    })
                })
            })
            .collect()
    }

    /// A subject category's wording: `job_applicant` → "Job applicants".
    pub fn subject_label(id: &str) -> String {
        let spaced = id.replace('_', " ");
        let mut chars = spaced.chars();
        let mut s: String = match chars.next() {
            Some(c) => c.to_uppercase().chain(chars).collect(),
            None => String::new(),
        };
        if !s.ends_with('s') {
            s.push('s');
        }
        s
    }
}

//! The control vocabulary for technical and organisational measures: the 17 headings of
//! Annex II of the EU Standard Contractual Clauses (Decision 2021/914), plus incident
//! handling and sub-processing, each with typed parameters whose strictness direction is
//! known. `measures:`, `requires:` and `promises:` are written in it; policies may declare
//! more parameters under `controls:`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// `(key, Annex II heading)`.
pub const FAMILIES: &[(&str, &str)] = &[
    (
        "pseudonymisation_encryption",
        "Pseudonymisation and encryption of personal data",
    ),
    (
        "confidentiality_integrity",
        "Ongoing confidentiality, integrity, availability and resilience of systems and services",
    ),
    (
        "restoration",
        "Timely restoration of availability and access after an incident",
    ),
    (
        "testing",
        "Regular testing, assessment and evaluation of the measures",
    ),
    (
        "identification_authorisation",
        "User identification and authorisation",
    ),
    ("transit", "Protection of data during transmission"),
    ("storage", "Protection of data during storage"),
    (
        "physical_security",
        "Physical security of locations where personal data are processed",
    ),
    ("events_logging", "Events logging"),
    (
        "system_configuration",
        "System configuration, including default configuration",
    ),
    (
        "it_governance",
        "Internal IT and IT security governance and management",
    ),
    (
        "certification",
        "Certification and assurance of processes and products",
    ),
    ("data_minimisation", "Data minimisation"),
    ("data_quality", "Data quality"),
    ("limited_retention", "Limited data retention"),
    ("accountability", "Accountability"),
    ("portability_erasure", "Data portability and erasure"),
    (
        "incident_management",
        "Personal data breach handling (Art. 33-34)",
    ),
    (
        "sub_processing",
        "Engaging sub-processors (Art. 28(2), 28(4))",
    ),
];

/// Which way is stricter for a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stricter {
    Lower,
    Higher,
}

/// A parameter's type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Kind {
    Number {
        stricter: Stricter,
        unit: String,
    },
    /// `true` is stricter.
    Bool,
    /// Dotted versions, higher is stricter (`1.3` > `1.2`).
    Version,
    /// Named levels, weakest first.
    Enum {
        levels: Vec<String>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Parameter {
    pub key: String,
    pub family: String,
    pub kind: Kind,
    pub label: String,
}

/// A parameter value, normalised.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Number(f64),
    Bool(bool),
    Version(Vec<u32>),
    Level(usize, String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) if n.fract() == 0.0 => write!(f, "{n:.0}"),
            Self::Number(n) => write!(f, "{n}"),
            Self::Bool(b) => write!(f, "{}", if *b { "yes" } else { "no" }),
            Self::Version(v) => {
                let parts: Vec<String> = v.iter().map(u32::to_string).collect();
                write!(f, "{}", parts.join("."))
            }
            Self::Level(_, name) => f.write_str(name),
        }
    }
}

/// `(key, family, kind, label)` of the built-in parameters.
fn built_ins() -> Vec<Parameter> {
    use Stricter::{Higher, Lower};
    let num = |s, u: &str| Kind::Number {
        stricter: s,
        unit: u.to_owned(),
    };
    let levels = |l: &[&str]| Kind::Enum {
        levels: l.iter().map(|s| s.to_string()).collect(),
    };
    let p = |key: &str, family: &str, kind: Kind, label: &str| Parameter {
        key: key.to_owned(),
        family: family.to_owned(),
        kind,
        label: label.to_owned(),
    };
    vec![
        p(
            "pseudonymisation_required",
            "pseudonymisation_encryption",
            Kind::Bool,
            "pseudonymisation where the purpose allows",
        ),
        p(
            "availability_percent",
            "confidentiality_integrity",
            num(Higher, "%"),
            "availability",
        ),
        p(
            "backup_interval_hours",
            "restoration",
            num(Lower, "hours"),
            "backups every",
        ),
        p(
            "restore_test_interval_days",
            "restoration",
            num(Lower, "days"),
            "restore tests every",
        ),
        p(
            "rto_hours",
            "restoration",
            num(Lower, "hours"),
            "recovery time objective",
        ),
        p(
            "rpo_hours",
            "restoration",
            num(Lower, "hours"),
            "recovery point objective",
        ),
        p(
            "pentest_interval_months",
            "testing",
            num(Lower, "months"),
            "penetration test every",
        ),
        p(
            "vuln_scan_interval_days",
            "testing",
            num(Lower, "days"),
            "vulnerability scans every",
        ),
        p(
            "mfa_required",
            "identification_authorisation",
            Kind::Bool,
            "multi-factor authentication",
        ),
        p(
            "access_review_interval_days",
            "identification_authorisation",
            num(Lower, "days"),
            "access rights reviewed every",
        ),
        p(
            "password_min_length",
            "identification_authorisation",
            num(Higher, "characters"),
            "minimum password length",
        ),
        p("tls_min_version", "transit", Kind::Version, "TLS"),
        p(
            "encryption_at_rest",
            "storage",
            levels(&["none", "AES-128", "AES-256"]),
            "encryption of stored data",
        ),
        p(
            "key_length_bits",
            "storage",
            num(Higher, "bits"),
            "encryption key length",
        ),
        p(
            "physical_access_control",
            "physical_security",
            Kind::Bool,
            "controlled physical access",
        ),
        p(
            "log_retention_days",
            "events_logging",
            num(Higher, "days"),
            "security logs kept",
        ),
        p(
            "log_review_interval_days",
            "events_logging",
            num(Lower, "days"),
            "logs reviewed every",
        ),
        p(
            "hardening_baseline",
            "system_configuration",
            Kind::Bool,
            "hardened default configuration",
        ),
        p(
            "patch_critical_within_days",
            "system_configuration",
            num(Lower, "days"),
            "critical patches within",
        ),
        p(
            "security_policy_review_months",
            "it_governance",
            num(Lower, "months"),
            "security policy reviewed every",
        ),
        p(
            "security_training_interval_months",
            "it_governance",
            num(Lower, "months"),
            "security training every",
        ),
        p(
            "iso27001",
            "certification",
            Kind::Bool,
            "ISO/IEC 27001 certification",
        ),
        p(
            "soc2_type2",
            "certification",
            Kind::Bool,
            "SOC 2 Type II report",
        ),
        p(
            "data_minimisation_review_months",
            "data_minimisation",
            num(Lower, "months"),
            "data minimisation review every",
        ),
        p(
            "data_quality_review_months",
            "data_quality",
            num(Lower, "months"),
            "data quality review every",
        ),
        p(
            "deletion_after_contract_days",
            "limited_retention",
            num(Lower, "days"),
            "data deleted after the contract within",
        ),
        p(
            "records_of_processing",
            "accountability",
            Kind::Bool,
            "record of processing activities kept",
        ),
        p(
            "dpo_appointed",
            "accountability",
            Kind::Bool,
            "data protection officer appointed",
        ),
        p(
            "machine_readable_export",
            "portability_erasure",
            Kind::Bool,
            "machine-readable data export",
        ),
        p(
            "erasure_within_days",
            "portability_erasure",
            num(Lower, "days"),
            "erasure on request within",
        ),
        p(
            "breach_notice_hours",
            "incident_management",
            num(Lower, "hours"),
            "breach notification within",
        ),
        p(
            "subprocessor_notice_days",
            "sub_processing",
            num(Higher, "days"),
            "notice before a new sub-processor",
        ),
        p(
            "subprocessor_approval",
            "sub_processing",
            levels(&["none", "general", "specific"]),
            "authorisation of sub-processors",
        ),
        p(
            "data_location",
            "sub_processing",
            levels(&["any", "adequate", "eea"]),
            "where data may be processed",
        ),
    ]
}

/// Built-in parameters plus the policy's own.
#[derive(Debug, Clone)]
pub struct Catalogue {
    params: BTreeMap<String, Parameter>,
}

impl Default for Catalogue {
    fn default() -> Self {
        Self {
            params: built_ins()
                .into_iter()
                .map(|p| (p.key.clone(), p))
                .collect(),
        }
    }
}

impl Catalogue {
    pub fn get(&self, key: &str) -> Option<&Parameter> {
        self.params.get(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.params.keys().map(String::as_str)
    }

    pub fn add(&mut self, p: Parameter) {
        self.params.insert(p.key.clone(), p);
    }

    /// The position of a parameter's family in Annex II order (custom families last).
    pub fn family_order(family: &str) -> usize {
        FAMILIES
            .iter()
            .position(|(k, _)| *k == family)
            .unwrap_or(FAMILIES.len())
    }

    pub fn family_label(family: &str) -> &str {
        FAMILIES
            .iter()
            .find(|(k, _)| *k == family)
            .map_or(family, |(_, l)| l)
    }
}

impl Parameter {
    /// Parses a written value into this parameter's type.
    pub fn parse(&self, raw: &str) -> Result<Value, String> {
        let raw = raw.trim();
        match &self.kind {
            Kind::Number { .. } => raw
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .map(Value::Number)
                .ok_or_else(|| format!("`{}` takes a number, not `{raw}`", self.key)),
            Kind::Bool => match raw {
                "true" | "yes" => Ok(Value::Bool(true)),
                "false" | "no" => Ok(Value::Bool(false)),
                _ => Err(format!("`{}` takes true or false, not `{raw}`", self.key)),
            },
            Kind::Version => {
                let parts: Option<Vec<u32>> = raw.split('.').map(|p| p.parse().ok()).collect();
                parts
                    .filter(|p| !p.is_empty())
                    .map(Value::Version)
                    .ok_or_else(|| format!("`{}` takes a version like 1.2, not `{raw}`", self.key))
            }
            Kind::Enum { levels } => levels
                .iter()
                .position(|l| l.eq_ignore_ascii_case(raw))
                .map(|i| Value::Level(i, levels[i].clone()))
                .ok_or_else(|| {
                    format!(
                        "`{}` takes one of {}, not `{raw}`",
                        self.key,
                        levels.join(", ")
                    )
                }),
        }
    }

    /// How `a` compares with `b` in strictness: Greater means `a` is stricter.
    pub fn strictness(&self, a: &Value, b: &Value) -> Ordering {
        let ord = match (a, b) {
            (Value::Number(x), Value::Number(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
            (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
            (Value::Version(x), Value::Version(y)) => cmp_versions(x, y),
            (Value::Level(x, _), Value::Level(y, _)) => x.cmp(y),
            _ => Ordering::Equal,
        };
        match self.kind {
            Kind::Number {
                stricter: Stricter::Lower,
                ..
            } => ord.reverse(),
            _ => ord,
        }
    }

    /// Whether `actual` meets `required` (is at least as strict).
    pub fn satisfies(&self, actual: &Value, required: &Value) -> bool {
        self.strictness(actual, required) != Ordering::Less
    }

    /// Our own measure as a statement of fact: "backups every 24 hours", "TLS 1.2 or higher".
    pub fn state(&self, v: &Value) -> String {
        match (&self.kind, v) {
            (Kind::Number { unit, .. }, _) => format!("{} {v} {unit}", self.label),
            (Kind::Bool, Value::Bool(true)) => self.label.clone(),
            (Kind::Bool, _) => format!("no {}", self.label),
            (Kind::Version, _) => format!("{} {v} or higher", self.label),
            (Kind::Enum { .. }, _) => format!("{}: {v}", self.label),
        }
    }

    /// The value as an obligation reads: "≤ 24 hours", "≥ 1.3", "required".
    pub fn describe(&self, v: &Value) -> String {
        match (&self.kind, v) {
            (
                Kind::Number {
                    stricter: Stricter::Lower,
                    unit,
                },
                _,
            ) => format!("≤ {v} {unit}"),
            (
                Kind::Number {
                    stricter: Stricter::Higher,
                    unit,
                },
                _,
            ) => format!("≥ {v} {unit}"),
            (Kind::Bool, Value::Bool(true)) => "required".to_owned(),
            (Kind::Bool, _) => "not required".to_owned(),
            (Kind::Version, _) => format!("≥ {v}"),
            (Kind::Enum { .. }, _) => format!("at least {v}"),
        }
    }
}

/// `1.2` < `1.10`; `1.2` == `1.2.0`.
fn cmp_versions(a: &[u32], b: &[u32]) -> Ordering {
    let n = a.len().max(b.len());
    for i in 0..n {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        match x.cmp(&y) {
            Ordering::Equal => continue,
            o => return o,
        }
    }
    Ordering::Equal
}

/// A parameter declared by the policy under `controls:`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomControl {
    pub id: marked_yaml::Spanned<String>,
    pub family: marked_yaml::Spanned<String>,
    #[serde(rename = "type")]
    pub kind: marked_yaml::Spanned<String>,
    #[serde(default)]
    pub stricter: Option<Stricter>,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub levels: Vec<String>,
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::*;

    fn p(key: &str) -> Parameter {
        Catalogue::default().get(key).unwrap().clone()
    }

    #[test]
    fn numbers_are_stricter_in_their_direction() {
        let breach = p("breach_notice_hours");
        let (h24, h72) = (breach.parse("24").unwrap(), breach.parse("72").unwrap());
        assert_eq!(breach.strictness(&h24, &h72), Greater);
        assert!(breach.satisfies(&h24, &h72) && !breach.satisfies(&h72, &h24));
        let logs = p("log_retention_days");
        let (d90, d365) = (logs.parse("90").unwrap(), logs.parse("365").unwrap());
        assert_eq!(logs.strictness(&d365, &d90), Greater);
        assert!(breach.parse("-1").is_err() && breach.parse("soon").is_err());
        assert_eq!(breach.describe(&h24), "≤ 24 hours");
    }

    #[test]
    fn booleans_versions_and_levels() {
        let mfa = p("mfa_required");
        assert!(mfa.satisfies(&Value::Bool(true), &Value::Bool(false)));
        assert!(!mfa.satisfies(&Value::Bool(false), &Value::Bool(true)));
        assert!(mfa.parse("maybe").is_err());
        let tls = p("tls_min_version");
        assert!(tls.satisfies(&tls.parse("1.3").unwrap(), &tls.parse("1.2").unwrap()));
        assert!(!tls.satisfies(&tls.parse("1.2").unwrap(), &tls.parse("1.3").unwrap()));
        assert!(tls.satisfies(&tls.parse("1.10").unwrap(), &tls.parse("1.9").unwrap()));
        assert_eq!(
            tls.strictness(&tls.parse("1.2").unwrap(), &tls.parse("1.2.0").unwrap()),
            Equal
        );
        assert!(tls.parse("1.x").is_err());
        let enc = p("encryption_at_rest");
        assert!(enc.satisfies(
            &enc.parse("aes-256").unwrap(),
            &enc.parse("AES-128").unwrap()
        ));
        assert!(!enc.satisfies(&enc.parse("none").unwrap(), &enc.parse("AES-128").unwrap()));
        assert!(enc.parse("rot13").is_err());
    }

    #[test]
    fn every_annex_ii_heading_has_a_family() {
        assert_eq!(FAMILIES.len(), 19);
        let cat = Catalogue::default();
        for key in cat.keys() {
            let fam = &cat.get(key).unwrap().family;
            assert!(Catalogue::family_order(fam) < FAMILIES.len(), "{key}");
        }
    }
}

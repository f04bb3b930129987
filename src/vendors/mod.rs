//! Vendor agreements and TOMs: the matrix of controls × agreements, the strictest
//! obligation per control, and the check that our measures and our processors' promises
//! keep every agreement. Pure: the policy in, typed results out (`today` is given).

mod table;

use std::collections::BTreeSet;

use chrono::NaiveDate;
use serde::Serialize;

pub use table::{Table, TableFormat};

use crate::policy::controls::{Catalogue, Parameter, Value};
use crate::policy::{Agreement, AgreementSide, Measures, Policy, ProcessorRole};

/// Art. 28(3) points (a)-(h) with what each requires.
pub const ART28: &[(&str, &str)] = &[
    ("a", "processing only on documented instructions"),
    ("b", "confidentiality of authorised persons"),
    ("c", "security measures of Art. 32"),
    ("d", "conditions for engaging sub-processors"),
    ("e", "assistance with data subjects' rights"),
    ("f", "assistance with Art. 32-36 obligations"),
    ("g", "deletion or return of data at the end"),
    ("h", "information and audits"),
];

/// One column of the matrix: our measures, or one agreement.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Column {
    pub id: String,
    pub counterparty: String,
    /// `measures` (ours), `requires` (obligations on us) or `promises` (a processor's).
    pub side: &'static str,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct MatrixRow {
    pub family: String,
    pub parameter: String,
    pub label: String,
    /// One per column, normalised ("≤ 24 hours"); None where the column is silent.
    pub cells: Vec<Option<String>>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Matrix {
    pub columns: Vec<Column>,
    pub rows: Vec<MatrixRow>,
}

/// The strictest requirement on us for one parameter.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Obligation {
    pub family: String,
    pub parameter: String,
    pub label: String,
    pub strictest: String,
    /// Every agreement that demands the strictest value.
    pub imposed_by: Vec<String>,
    /// Every agreement's demand, `(agreement, requirement)`.
    pub all: Vec<(String, String)>,
    /// Our measure, when stated.
    pub ours: Option<String>,
    pub met: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Our measures fall short of an agreement's requirement.
    MeasureFails,
    /// An agreement requires a control our measures do not state.
    MeasureMissing,
    MissingClause,
    ReviewOverdue,
    Expired,
    /// A processor in a purpose without an agreement.
    NoAgreement,
    /// A processor promises less than we promised upstream (Art. 28(4)).
    FlowDown,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Finding {
    pub kind: FindingKind,
    pub agreement: Option<String>,
    pub parameter: Option<String>,
    pub required: Option<String>,
    pub actual: Option<String>,
    pub message: String,
}

/// A parameter's typed value from a measures map, if present and valid.
fn value(cat: &Catalogue, m: &Measures, key: &str) -> Option<(Parameter, Value)> {
    let p = cat.get(key)?;
    let v = p.parse(m.get(key)?.as_scalar()?).ok()?;
    Some((p.clone(), v))
}

/// Parameters used anywhere, in Annex II order.
fn used_parameters(policy: &Policy) -> Vec<&Parameter> {
    let mut keys: BTreeSet<&str> = policy.measures.keys().map(String::as_str).collect();
    for a in &policy.agreements {
        keys.extend(a.requires.keys().map(String::as_str));
        keys.extend(a.promises.keys().map(String::as_str));
    }
    let mut params: Vec<&Parameter> = keys
        .into_iter()
        .filter_map(|k| policy.catalogue.get(k))
        .collect();
    params.sort_by(|a, b| {
        (Catalogue::family_order(&a.family), &a.key)
            .cmp(&(Catalogue::family_order(&b.family), &b.key))
    });
    params
}

fn side(a: &Agreement) -> (&'static str, &Measures) {
    match a.we_are {
        AgreementSide::Processor => ("requires", &a.requires),
        AgreementSide::Controller => ("promises", &a.promises),
    }
}

pub fn matrix(policy: &Policy) -> Matrix {
    let mut columns = vec![Column {
        id: "measures".into(),
        counterparty: "our measures".into(),
        side: "measures",
    }];
    columns.extend(policy.agreements.iter().map(|a| Column {
        id: a.id.to_string(),
        counterparty: counterparty_name(policy, a),
        side: side(a).0,
    }));
    let rows =
        used_parameters(policy)
            .into_iter()
            .map(|p| {
                let mut cells = vec![
                    value(&policy.catalogue, &policy.measures, &p.key).map(|(p, v)| p.describe(&v)),
                ];
                cells.extend(policy.agreements.iter().map(|a| {
                    value(&policy.catalogue, side(a).1, &p.key).map(|(p, v)| p.describe(&v))
                }));
                MatrixRow {
                    family: p.family.clone(),
                    parameter: p.key.clone(),
                    label: p.label.clone(),
                    cells,
                }
            })
            .collect();
    Matrix { columns, rows }
}

fn counterparty_name(policy: &Policy, a: &Agreement) -> String {
    policy
        .processor(a.counterparty.as_str())
        .map_or_else(|| a.counterparty.to_string(), |p| p.name.clone())
}

/// Agreements binding us (customer DPAs where we are the processor).
fn binding(policy: &Policy) -> impl Iterator<Item = &Agreement> {
    policy
        .agreements
        .iter()
        .filter(|a| a.we_are == AgreementSide::Processor)
}

pub fn obligations(policy: &Policy) -> Vec<Obligation> {
    let cat = &policy.catalogue;
    let mut out = Vec::new();
    for p in used_parameters(policy) {
        let demands: Vec<(String, Value)> = binding(policy)
            .filter_map(|a| value(cat, &a.requires, &p.key).map(|(_, v)| (a.id.to_string(), v)))
            .collect();
        let Some(strictest) = demands
            .iter()
            .map(|(_, v)| v)
            .max_by(|a, b| p.strictness(a, b))
            .cloned()
        else {
            continue;
        };
        let imposed_by = demands
            .iter()
            .filter(|(_, v)| p.strictness(v, &strictest) == std::cmp::Ordering::Equal)
            .map(|(a, _)| a.clone())
            .collect();
        let ours = value(cat, &policy.measures, &p.key).map(|(_, v)| v);
        out.push(Obligation {
            family: p.family.clone(),
            parameter: p.key.clone(),
            label: p.label.clone(),
            strictest: p.describe(&strictest),
            imposed_by,
            all: demands
                .iter()
                .map(|(a, v)| (a.clone(), p.describe(v)))
                .collect(),
            met: ours.as_ref().is_some_and(|o| p.satisfies(o, &strictest)),
            ours: ours.map(|o| o.to_string()),
        });
    }
    out
}

/// Everything that breaks an agreement or the policy's own promises, as of `today`.
pub fn check(policy: &Policy, today: NaiveDate) -> Vec<Finding> {
    let cat = &policy.catalogue;
    let mut out = Vec::new();
    // Our measures against every agreement binding us.
    for a in binding(policy) {
        for key in a.requires.keys() {
            let Some((p, required)) = value(cat, &a.requires, key) else {
                continue;
            };
            match value(cat, &policy.measures, key) {
                None => out.push(Finding {
                    kind: FindingKind::MeasureMissing,
                    agreement: Some(a.id.to_string()),
                    parameter: Some(key.clone()),
                    required: Some(p.describe(&required)),
                    actual: None,
                    message: format!(
                        "{} requires {key} {}, but our measures do not state it",
                        a.id.as_str(),
                        p.describe(&required)
                    ),
                }),
                Some((_, ours)) if !p.satisfies(&ours, &required) => out.push(Finding {
                    kind: FindingKind::MeasureFails,
                    agreement: Some(a.id.to_string()),
                    parameter: Some(key.clone()),
                    required: Some(p.describe(&required)),
                    actual: Some(ours.to_string()),
                    message: format!(
                        "{} requires {key} {}; our measures say {ours}",
                        a.id.as_str(),
                        p.describe(&required)
                    ),
                }),
                Some(_) => {}
            }
        }
    }
    for a in &policy.agreements {
        let missing: Vec<&str> = ART28
            .iter()
            .filter(|(c, _)| !a.art28_clauses.iter().any(|x| x.as_str() == *c))
            .map(|(c, _)| *c)
            .collect();
        if !missing.is_empty() {
            let what: Vec<String> = missing
                .iter()
                .map(|c| {
                    format!(
                        "({c}) {}",
                        ART28.iter().find(|(k, _)| k == c).map_or("", |(_, w)| w)
                    )
                })
                .collect();
            out.push(Finding {
                kind: FindingKind::MissingClause,
                agreement: Some(a.id.to_string()),
                parameter: None,
                required: Some(missing.join(", ")),
                actual: None,
                message: format!(
                    "{} lacks Art. 28(3) clause(s) {}",
                    a.id.as_str(),
                    what.join("; ")
                ),
            });
        }
        if let Some(e) = a.expires
            && e.naive() < today
        {
            out.push(dated(
                FindingKind::Expired,
                a,
                format!("{} expired on {e}", a.id.as_str()),
            ));
        }
        if let Some(r) = a.review_by
            && r.naive() < today
        {
            out.push(dated(
                FindingKind::ReviewOverdue,
                a,
                format!("{} was due for review on {r}", a.id.as_str()),
            ));
        }
    }
    for p in &policy.processors {
        if p.role == ProcessorRole::IndependentController {
            continue;
        }
        let used = policy
            .purposes
            .iter()
            .any(|pu| pu.recipients.iter().any(|r| r.as_str() == p.id.as_str()));
        if used && agreements_with(policy, p.id.as_str()).is_empty() {
            out.push(Finding {
                kind: FindingKind::NoAgreement,
                agreement: None,
                parameter: None,
                required: None,
                actual: None,
                message: format!(
                    "processor {} receives personal data without an agreement (Art. 28(3))",
                    p.id.as_str()
                ),
            });
        }
    }
    out.extend(flow_down(policy));
    out
}

/// Agreements whose review or expiry date falls within `days` from `today` (inclusive),
/// soonest first: what the `vendor_reviews` job tells the DPO about.
pub fn reviews_due(
    policy: &Policy,
    today: NaiveDate,
    days: u32,
) -> Vec<(String, &'static str, NaiveDate)> {
    let until = today + chrono::Days::new(u64::from(days));
    let mut out: Vec<(String, &'static str, NaiveDate)> = policy
        .agreements
        .iter()
        .flat_map(|a| {
            [("review", a.review_by), ("expiry", a.expires)]
                .into_iter()
                .filter_map(move |(what, d)| d.map(|d| (a.id.to_string(), what, d.naive())))
        })
        .filter(|(_, _, d)| *d >= today && *d <= until)
        .collect();
    out.sort_by_key(|(_, _, d)| *d);
    out
}

fn dated(kind: FindingKind, a: &Agreement, message: String) -> Finding {
    Finding {
        kind,
        agreement: Some(a.id.to_string()),
        parameter: None,
        required: None,
        actual: None,
        message,
    }
}

/// Agreements in which a processor commits to us.
fn agreements_with<'a>(policy: &'a Policy, processor: &str) -> Vec<&'a Agreement> {
    let named = policy
        .processor(processor)
        .and_then(|p| p.agreement.as_ref())
        .map(|a| a.as_str());
    policy
        .agreements
        .iter()
        .filter(|a| {
            a.we_are == AgreementSide::Controller
                && (a.counterparty.as_str() == processor || Some(a.id.as_str()) == named)
        })
        .collect()
}

/// Art. 28(4): what we promised a customer must bind every processor that receives the
/// data the customer's agreement covers.
fn flow_down(policy: &Policy) -> Vec<Finding> {
    let cat = &policy.catalogue;
    let mut out = Vec::new();
    for upstream in binding(policy) {
        let covered: Vec<&str> = if upstream.purposes.is_empty() {
            policy.purposes.iter().map(|p| p.id.as_str()).collect()
        } else {
            upstream.purposes.iter().map(|p| p.as_str()).collect()
        };
        let mut processors: BTreeSet<&str> = BTreeSet::new();
        for p in policy
            .purposes
            .iter()
            .filter(|p| covered.contains(&p.id.as_str()))
        {
            processors.extend(p.recipients.iter().map(|r| r.as_str()));
        }
        for x in processors {
            let Some(proc) = policy.processor(x) else {
                continue;
            };
            if proc.role == ProcessorRole::IndependentController {
                continue;
            }
            let downstream = agreements_with(policy, x);
            let Some(down) = downstream.first() else {
                continue;
            }; // reported as NoAgreement
            for key in upstream.requires.keys() {
                let Some((p, required)) = value(cat, &upstream.requires, key) else {
                    continue;
                };
                let promised = downstream
                    .iter()
                    .filter_map(|d| value(cat, &d.promises, key))
                    .map(|(_, v)| v)
                    .max_by(|a, b| p.strictness(a, b));
                let (weak, actual) = match &promised {
                    None => (true, None),
                    Some(v) => (!p.satisfies(v, &required), Some(v.to_string())),
                };
                if weak {
                    let said = actual.as_deref().map_or_else(
                        || "promises nothing on it".to_owned(),
                        |a| format!("promises {a}"),
                    );
                    out.push(Finding {
                        kind: FindingKind::FlowDown,
                        agreement: Some(upstream.id.to_string()),
                        parameter: Some(key.clone()),
                        required: Some(p.describe(&required)),
                        actual,
                        message: format!(
                            "{} requires {key} {} of us, but sub-processor {x} ({}) {said} (Art. 28(4))",
                            upstream.id.as_str(),
                            p.describe(&required),
                            down.id.as_str()
                        ),
                    });
                }
            }
        }
    }
    out
}

impl Matrix {
    pub fn table(&self) -> Table {
        let mut headers = vec!["family".to_owned(), "parameter".to_owned()];
        headers.extend(self.columns.iter().map(|c| c.id.clone()));
        let rows = self
            .rows
            .iter()
            .map(|r| {
                let mut row = vec![r.family.clone(), r.parameter.clone()];
                row.extend(r.cells.iter().map(|c| c.clone().unwrap_or_default()));
                row
            })
            .collect();
        Table { headers, rows }
    }
}

pub fn obligations_table(obligations: &[Obligation]) -> Table {
    Table {
        headers: [
            "family",
            "parameter",
            "strictest",
            "imposed_by",
            "all",
            "ours",
            "met",
        ]
        .map(String::from)
        .to_vec(),
        rows: obligations
            .iter()
            .map(|o| {
                vec![
                    o.family.clone(),
                    o.parameter.clone(),
                    o.strictest.clone(),
                    o.imposed_by.join(", "),
                    o.all
                        .iter()
                        .map(|(a, v)| format!("{a}: {v}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                    o.ours.clone().unwrap_or_default(),
                    if o.met { "yes" } else { "no" }.to_owned(),
                ]
            })
            .collect(),
    }
}

pub fn findings_table(findings: &[Finding]) -> Table {
    Table {
        headers: [
            "kind",
            "agreement",
            "parameter",
            "required",
            "actual",
            "message",
        ]
        .map(String::from)
        .to_vec(),
        rows: findings
            .iter()
            .map(|f| {
                vec![
                    serde_json::to_value(f.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    f.agreement.clone().unwrap_or_default(),
                    f.parameter.clone().unwrap_or_default(),
                    f.required.clone().unwrap_or_default(),
                    f.actual.clone().unwrap_or_default(),
                    f.message.clone(),
                ]
            })
            .collect(),
    }
}

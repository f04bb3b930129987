//! The record of processing activities (Art. 30(1)): one row per purpose, derived from the
//! policy alone. No I/O: callers write the CSV or JSON where they need it.

pub mod map;
pub mod view;

use serde::Serialize;

use crate::policy::Policy;

/// The CSV header, in this exact order.
pub const CSV_HEADER: [&str; 14] = [
    "purpose_id",
    "purpose",
    "legal_basis",
    "data_subjects",
    "data_categories",
    "recipients",
    "transfers",
    "retention",
    "security_measures",
    "source",
    "systems",
    "controller",
    "controller_contact",
    "dpo",
];

/// One processing activity. List fields are joined with `; ` in CSV.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct RegisterRow {
    pub purpose_id: String,
    /// Art. 30(1)(b)
    pub purpose: String,
    pub legal_basis: String,
    /// Art. 30(1)(c)
    pub data_subjects: Vec<String>,
    pub data_categories: Vec<String>,
    /// Art. 30(1)(d)
    pub recipients: Vec<String>,
    /// Art. 30(1)(e)
    pub transfers: Vec<String>,
    /// Art. 30(1)(f)
    pub retention: String,
    /// Art. 30(1)(g)
    pub security_measures: Vec<String>,
    pub source: String,
    pub systems: Vec<String>,
    /// Art. 30(1)(a)
    pub controller: String,
    pub controller_contact: String,
    pub dpo: String,
}

pub fn rows(policy: &Policy) -> Vec<RegisterRow> {
    let (controller, contact, dpo) = match &policy.controller {
        Some(c) => (
            c.name.clone(),
            format!("{}; {}", c.address, c.contact_email),
            c.dpo
                .as_ref()
                .map(|d| format!("{} <{}>", d.name, d.email))
                .unwrap_or_default(),
        ),
        None => Default::default(),
    };
    let measures = view::measures_text(policy);
    policy
        .purposes
        .iter()
        .map(|p| {
            let mut purpose = p.name.clone();
            if let Some(d) = &p.description {
                purpose = format!("{purpose}: {d}");
            }
            let mut legal_basis = p.legal_basis.label().to_owned();
            if let Some(interest) = &p.legitimate_interest {
                legal_basis = format!("{legal_basis}: {interest}");
            }
            if let Some(cond) = p.special_category_condition {
                legal_basis = format!("{legal_basis}; {}", cond.label());
            }
            let recipients = view::recipients(policy, p);
            let mut retention = view::retention_text(p);
            if let Some(note) = p.retention.as_ref().and_then(|r| r.note.as_ref()) {
                retention = format!("{retention} ({note})");
            }
            RegisterRow {
                purpose_id: p.id.to_string(),
                purpose,
                legal_basis,
                data_subjects: p
                    .subjects
                    .iter()
                    .map(|s| Policy::subject_label(s.as_str()))
                    .collect(),
                data_categories: view::category_names(policy, p)
                    .into_iter()
                    .map(|(name, key)| format!("{name} ({key})"))
                    .collect(),
                recipients: recipients
                    .iter()
                    .map(|r| {
                        format!(
                            "{} ({}, {})",
                            r.name,
                            r.role.label().to_lowercase(),
                            view::country_name(&r.country)
                        )
                    })
                    .collect(),
                transfers: recipients
                    .iter()
                    .flat_map(|r| {
                        view::transfers_of(r)
                            .into_iter()
                            .map(move |t| format!("{t} (via {})", r.name))
                    })
                    .collect(),
                retention,
                security_measures: measures.clone(),
                source: p.source().to_owned(),
                systems: policy
                    .systems_for_purpose(p.id.as_str())
                    .iter()
                    .map(|s| s.name.clone())
                    .collect(),
                controller: controller.clone(),
                controller_contact: contact.clone(),
                dpo: dpo.clone(),
            }
        })
        .collect()
}

/// The register as CSV with [`CSV_HEADER`]; empty lists read "none".
pub fn to_csv(rows: &[RegisterRow]) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    let list = |l: &[String]| {
        if l.is_empty() {
            "none".to_owned()
        } else {
            l.join("; ")
        }
    };
    for r in rows {
        w.write_record([
            r.purpose_id.clone(),
            r.purpose.clone(),
            r.legal_basis.clone(),
            list(&r.data_subjects),
            list(&r.data_categories),
            list(&r.recipients),
            list(&r.transfers),
            r.retention.clone(),
            list(&r.security_measures),
            r.source.clone(),
            list(&r.systems),
            r.controller.clone(),
            r.controller_contact.clone(),
            r.dpo.clone(),
        ])?;
    }
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("writing CSV: {e}"))
}

pub fn to_json(rows: &[RegisterRow]) -> anyhow::Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(rows)?;
    out.push(b'\n');
    Ok(out)
}

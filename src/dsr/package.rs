//! The access package (Art. 15) and the portability export (Art. 20): every row found,
//! only mapped fields, each value with its category; one CSV per collection; and a page
//! that explains, from the policy, what is done with the data and what the person may do.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, Utc};
use minijinja::{AutoEscape, Environment};
use serde::Serialize;

use super::AccessKind;
use crate::policy::{LegalBasis, Policy, Purpose, System};
use crate::register::view;
use crate::sources::db::Found;

#[derive(Debug, Clone, Serialize)]
pub struct Value {
    pub value: Option<String>,
    /// The field's first category ("" for a field the policy gives none: an identifier,
    /// a time), kept for readers of earlier packages; `categories` has them all.
    pub category: String,
    pub category_name: String,
    pub categories: Vec<Category>,
    pub purposes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Category {
    pub key: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CollectionData {
    pub collection: String,
    /// The fields, in the policy's order.
    pub columns: Vec<String>,
    pub rows: Vec<BTreeMap<String, Value>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SystemData {
    pub system: String,
    pub name: String,
    pub collections: Vec<CollectionData>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Data {
    pub kind: AccessKind,
    pub generated_at: String,
    pub controller: String,
    pub systems: Vec<SystemData>,
}

/// A finished package.
#[derive(Debug, Clone)]
pub struct Package {
    pub data: Data,
    /// `system.collection.csv` and its text.
    pub csvs: Vec<(String, String)>,
    pub index_html: String,
}

/// Portability covers what the person provided, processed under consent or contract.
fn portable(p: &Purpose) -> bool {
    matches!(*p.legal_basis, LegalBasis::Consent | LegalBasis::Contract)
        && p.source() == Purpose::DEFAULT_SOURCE
}

pub fn build(
    policy: &Policy,
    found: &[(String, BTreeMap<String, Found>)],
    kind: AccessKind,
    now: DateTime<Utc>,
) -> Package {
    let mut systems = Vec::new();
    let mut csvs = Vec::new();
    for (system_id, collections) in found {
        let Some(system) = policy.system(system_id) else {
            continue;
        };
        let mut out = Vec::new();
        for c in &system.collections {
            let Some(f) = collections.get(c.name.as_str()) else {
                continue;
            };
            // Access (Art. 15(3)): a copy of every field of every row found, identifiers
            // and the times of its events included. Portability (Art. 20): what the
            // person provided.
            let mut columns: Vec<Column> = c
                .fields
                .iter()
                .filter(|fl| {
                    kind == AccessKind::Access
                        || !fl.categories.is_empty()
                            && policy
                                .field_purposes(system, c, fl)
                                .iter()
                                .any(|p| policy.purpose(p.as_str()).is_some_and(portable))
                })
                .map(|fl| Column {
                    name: fl.name.to_string(),
                    categories: fl
                        .categories
                        .iter()
                        .map(|k| Category {
                            key: k.to_string(),
                            name: policy.taxonomy.name(k.as_str()).to_owned(),
                        })
                        .collect(),
                    purposes: policy
                        .field_purposes(system, c, fl)
                        .iter()
                        .map(|p| p.to_string())
                        .collect(),
                })
                .collect();
            if kind == AccessKind::Access {
                // The times of the collection's own events, by name, after its fields.
                let times: std::collections::BTreeSet<&str> = c
                    .events
                    .values()
                    .filter_map(|b| match &**b {
                        crate::policy::EventBinding::Column(col) => Some(col.as_str()),
                        _ => None,
                    })
                    .collect();
                for col in times {
                    if !columns.iter().any(|k| k.name == col) {
                        columns.push(Column {
                            name: col.to_owned(),
                            categories: Vec::new(),
                            purposes: c.purposes.iter().map(|p| p.to_string()).collect(),
                        });
                    }
                }
            }
            if columns.is_empty() || f.rows.is_empty() {
                continue;
            }
            let rows: Vec<BTreeMap<String, Value>> = f
                .rows
                .iter()
                .map(|row| {
                    columns
                        .iter()
                        .map(|k| {
                            let first = k.categories.first();
                            (
                                k.name.clone(),
                                Value {
                                    value: row.get(k.name.as_str()).cloned().flatten(),
                                    category: first.map(|c| c.key.clone()).unwrap_or_default(),
                                    category_name: first
                                        .map(|c| c.name.clone())
                                        .unwrap_or_default(),
                                    categories: k.categories.clone(),
                                    purposes: k.purposes.clone(),
                                },
                            )
                        })
                        .collect()
                })
                .collect();
            let names: Vec<String> = columns.into_iter().map(|k| k.name).collect();
            csvs.push((
                format!("{}.{}.csv", system.id.as_str(), c.name.as_str()),
                to_csv(&names, &rows),
            ));
            out.push(CollectionData {
                collection: c.name.to_string(),
                columns: names,
                rows,
            });
        }
        systems.push(SystemData {
            system: system.id.to_string(),
            name: system.name.clone(),
            collections: out,
        });
    }
    let data = Data {
        kind,
        generated_at: crate::store::timestamp(now),
        controller: policy
            .controller
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_default(),
        systems,
    };
    let index_html = render_index(policy, &data)
        .unwrap_or_else(|e| format!("<p>The explanation page could not be rendered: {e}</p>"));
    Package {
        data,
        csvs,
        index_html,
    }
}

/// A column of the package: a field, or the column of one of the collection's events.
struct Column {
    name: String,
    categories: Vec<Category>,
    purposes: Vec<String>,
}

fn to_csv(columns: &[String], rows: &[BTreeMap<String, Value>]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(columns);
    for r in rows {
        let _ = w.write_record(columns.iter().map(|f| {
            r.get(f.as_str())
                .and_then(|v| v.value.clone())
                .unwrap_or_default()
        }));
    }
    w.into_inner()
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default()
}

impl Package {
    /// Rows per `system.collection`, for the audit log (counts only).
    pub fn row_counts(&self) -> BTreeMap<String, usize> {
        self.data
            .systems
            .iter()
            .flat_map(|s| {
                s.collections
                    .iter()
                    .map(move |c| (format!("{}.{}", s.system, c.collection), c.rows.len()))
            })
            .collect()
    }

    pub fn data_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(&self.data).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// `data.json`, one CSV per collection and `index.html`, zipped.
    pub fn to_zip(&self) -> std::io::Result<Vec<u8>> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let mut add = |name: &str, bytes: &[u8]| -> std::io::Result<()> {
            zip.start_file(name, options)
                .map_err(std::io::Error::other)?;
            zip.write_all(bytes)
        };
        add("index.html", self.index_html.as_bytes())?;
        add("data.json", &self.data_json())?;
        for (name, text) in &self.csvs {
            add(name, text.as_bytes())?;
        }
        Ok(zip.finish().map_err(std::io::Error::other)?.into_inner())
    }
}

#[derive(Serialize)]
struct PurposeView {
    name: String,
    description: Option<String>,
    legal_basis: String,
    categories: Vec<String>,
    recipients: Vec<String>,
    retention: String,
    source: String,
}

fn render_index(policy: &Policy, data: &Data) -> Result<String, minijinja::Error> {
    // The purposes behind the data found, in policy order.
    let used: Vec<&str> = data
        .systems
        .iter()
        .flat_map(|s| s.collections.iter())
        .flat_map(|c| c.rows.iter())
        .flat_map(|r| r.values())
        .flat_map(|v| v.purposes.iter().map(String::as_str))
        .collect();
    let purposes: Vec<PurposeView> = policy
        .purposes
        .iter()
        .filter(|p| used.contains(&p.id.as_str()))
        .map(|p| PurposeView {
            name: p.name.clone(),
            description: p.description.clone(),
            legal_basis: p.legal_basis.label().to_owned(),
            categories: view::category_names(policy, p)
                .into_iter()
                .map(|(n, _)| n.to_owned())
                .collect(),
            recipients: view::recipients(policy, p)
                .into_iter()
                .map(|r| {
                    let mut s = format!("{} ({})", r.name, view::country_name(&r.country));
                    for t in view::transfers_of(r) {
                        s.push_str(&format!("; transfer to {t}"));
                    }
                    s
                })
                .collect(),
            retention: view::retention_text(p),
            source: p.source().to_owned(),
        })
        .collect();
    // The person's data, a table per collection: each row its values in the policy's
    // order.
    let tables: Vec<minijinja::Value> = data
        .systems
        .iter()
        .flat_map(|s| {
            s.collections.iter().map(move |c| {
                let rows: Vec<Vec<Option<String>>> = c
                    .rows
                    .iter()
                    .map(|r| {
                        c.columns
                            .iter()
                            .map(|k| r.get(k).and_then(|v| v.value.clone()))
                            .collect()
                    })
                    .collect();
                minijinja::context! {
                    system => s.name,
                    collection => c.collection,
                    columns => c.columns,
                    rows => rows,
                }
            })
        })
        .collect();
    let controller = policy.controller.as_ref();
    templates()?.get_template("access.html")?.render(minijinja::context! {
        kind => data.kind,
        generated_at => data.generated_at,
        controller => controller.map(|c| c.name.clone()),
        contact => controller.map(|c| c.contact_email.to_string()),
        authority => controller.and_then(|c| c.supervisory_authority.as_ref()).map(|a| (a.name.clone(), a.url.clone())),
        purposes => purposes,
        tables => tables,
    })
}

/// The page template, compiled once.
fn templates() -> Result<&'static Environment<'static>, minijinja::Error> {
    static ENV: std::sync::OnceLock<Result<Environment<'static>, String>> =
        std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.add_template("access.html", include_str!("../../templates/access.html"))
            .map_err(|e| e.to_string())?;
        Ok(env)
    })
    .as_ref()
    .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::TemplateNotFound, e.clone()))
}

/// The systems of the policy that hold any data, by id (for callers listing sources).
pub fn system_names(policy: &Policy) -> Vec<(&str, &System)> {
    policy.systems.iter().map(|s| (s.id.as_str(), s)).collect()
}

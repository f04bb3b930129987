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
    pub category: String,
    pub category_name: String,
    pub purposes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CollectionData {
    pub collection: String,
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
            let fields: Vec<&crate::policy::Field> = c
                .fields
                .iter()
                .filter(|fl| !fl.categories.is_empty())
                .filter(|fl| {
                    kind == AccessKind::Access
                        || policy
                            .field_purposes(system, c, fl)
                            .iter()
                            .any(|p| policy.purpose(p.as_str()).is_some_and(portable))
                })
                .collect();
            if fields.is_empty() || f.rows.is_empty() {
                continue;
            }
            let rows: Vec<BTreeMap<String, Value>> = f
                .rows
                .iter()
                .map(|row| {
                    fields
                        .iter()
                        .map(|fl| {
                            let cat = fl.categories[0].to_string();
                            (
                                fl.name.to_string(),
                                Value {
                                    value: row.get(fl.name.as_str()).cloned().flatten(),
                                    category_name: policy.taxonomy.name(&cat).to_owned(),
                                    category: cat,
                                    purposes: policy
                                        .field_purposes(system, c, fl)
                                        .iter()
                                        .map(|p| p.to_string())
                                        .collect(),
                                },
                            )
                        })
                        .collect()
                })
                .collect();
            csvs.push((
                format!("{}.{}.csv", system.id.as_str(), c.name.as_str()),
                to_csv(&fields, &rows),
            ));
            out.push(CollectionData {
                collection: c.name.to_string(),
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

fn to_csv(fields: &[&crate::policy::Field], rows: &[BTreeMap<String, Value>]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(fields.iter().map(|f| f.name.as_str()));
    for r in rows {
        let _ = w.write_record(fields.iter().map(|f| {
            r.get(f.name.as_str())
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
    let counts: Vec<(String, String, usize)> = data
        .systems
        .iter()
        .flat_map(|s| {
            s.collections
                .iter()
                .map(move |c| (s.name.clone(), c.collection.clone(), c.rows.len()))
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
        counts => counts,
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

//! Erasure decisions (Art. 17): for every row found, which fields are erased (and how),
//! which are kept (why, under which article, until when), and which rows go. Pure: the
//! rows, the policy and the time in; actions and the report out.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::policy::{
    Collection, ErasureMode, EventBinding, LegalBasis, Masking, Policy, System, parse_timestamp,
};
use crate::sources::db::{Action, CollectionActions, Found, MaskValue, Row, RowAction};
use crate::sources::schema::Schema;

/// What was (or, in a dry run, would be) kept of one field, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub field: String,
    /// `Art. 17(3)(b)` (legal obligation), `Art. 17(3)(e)` (legal claims: a hold) or
    /// `Art. 18(1)` (the person's own restriction of processing).
    pub article: String,
    /// The purpose whose legal obligation keeps it, or the hold.
    pub because: String,
    pub reason: String,
    /// The latest date until which a value of this field is kept; None while the
    /// retention has not started (its event has not happened) or the hold is open-ended.
    pub until: Option<String>,
    pub rows: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CollectionReport {
    pub collection: String,
    pub rows_found: usize,
    pub rows_deleted: usize,
    pub rows_masked: usize,
    /// Masked values per field.
    pub fields_masked: BTreeMap<String, usize>,
    pub kept: Vec<Kept>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemReport {
    pub system: String,
    pub collections: Vec<CollectionReport>,
}

/// Why one field of one row is kept.
#[derive(Debug, Clone)]
struct Exemption {
    article: &'static str,
    because: String,
    reason: String,
    until: Option<DateTime<Utc>>,
}

/// Values for the `hash` and `random_string` strategies.
pub trait Masker {
    /// A keyed hash of the value: equal values stay equal, so joins still work.
    fn hash(&self, value: &str) -> String;
    /// An unlinkable value for one cell, stable for that cell (`seed` names it), so that
    /// running the same erasure again writes the same value and changes nothing.
    fn random(&self, seed: &str) -> String;
}

/// Children before parents: a collection comes after every collection referencing it.
pub fn child_first(system: &System) -> Vec<String> {
    let names: Vec<String> = system
        .collections
        .iter()
        .map(|c| c.name.to_string())
        .collect();
    let referrers = |name: &str| -> BTreeSet<String> {
        system
            .collections
            .iter()
            .filter(|c| {
                c.name.as_str() != name
                    && c.fields.iter().any(|f| {
                        f.references
                            .as_ref()
                            .is_some_and(|r| r.collection.as_str() == name)
                    })
            })
            .map(|c| c.name.to_string())
            .collect()
    };
    let mut order: Vec<String> = Vec::new();
    let mut left = names.clone();
    while !left.is_empty() {
        let ready: Vec<String> = left
            .iter()
            .filter(|n| {
                referrers(n)
                    .iter()
                    .all(|r| order.contains(r) || !left.contains(r))
            })
            .cloned()
            .collect();
        // A cycle: take the rest in declaration order.
        let next = if ready.is_empty() {
            left.clone()
        } else {
            ready
        };
        for n in next {
            left.retain(|x| *x != n);
            order.push(n);
        }
    }
    order
}

/// The time of `event` for `row` of collection `c`, as the policy binds it.
fn event_time(
    system: &System,
    c: &Collection,
    event: &str,
    row: &Row,
    found: &BTreeMap<String, Found>,
) -> Option<DateTime<Utc>> {
    let text = |r: &Row, col: &str| r.get(col).cloned().flatten();
    match &**c.events.get(event)? {
        EventBinding::Column(col) => parse_timestamp(&text(row, col.as_str())?),
        EventBinding::Referenced(r) => {
            let (fk, target) = c.reference_to(r.collection.as_str())?;
            let value = text(row, fk.name.as_str())?;
            let parent = found
                .get(r.collection.as_str())?
                .rows
                .iter()
                .find(|p| text(p, target.field.as_str()).as_deref() == Some(value.as_str()))?;
            parse_timestamp(&text(parent, r.field.as_str())?)
        }
        EventBinding::LatestOf(r) => {
            let child = system.collections.iter().find(|x| x.name == r.collection)?;
            let (fk, target) = child.reference_to(c.name.as_str())?;
            let key = text(row, target.field.as_str())?;
            found
                .get(r.collection.as_str())?
                .rows
                .iter()
                .filter(|ch| text(ch, fk.name.as_str()).as_deref() == Some(key.as_str()))
                .filter_map(|ch| parse_timestamp(&text(ch, r.field.as_str())?))
                .max()
        }
    }
}

/// A restriction (Art. 18) keeps everything until it is lifted.
fn restricted(request: &str) -> Exemption {
    Exemption {
        article: "Art. 18(1)",
        because: format!("restriction {request}"),
        reason: "the data subject restricted processing; nothing is erased until the restriction is lifted".to_owned(),
        until: None,
    }
}

/// Why a field of a row may not be erased yet, if it may not.
fn exemption(
    policy: &Policy,
    system: &System,
    c: &Collection,
    field: &crate::policy::Field,
    row: &Row,
    found: &BTreeMap<String, Found>,
    now: DateTime<Utc>,
) -> Option<Exemption> {
    let mut best: Option<Exemption> = None;
    let mut consider = |e: Exemption| {
        let later = match (&best, e.until) {
            (None, _) => true,
            (Some(b), None) => b.until.is_some(),
            (Some(b), Some(u)) => b.until.is_some_and(|bu| u > bu),
        };
        if later {
            best = Some(e);
        }
    };
    for p in Policy::field_purposes(system, c, field) {
        let Some(purpose) = policy.purpose(p.as_str()) else {
            continue;
        };
        let Some(r) = &purpose.retention else {
            continue;
        };
        if r.basis != Some(LegalBasis::LegalObligation) {
            continue;
        }
        let until = event_time(system, c, &r.from, row, found).and_then(|t| r.keep_for.after(t));
        // A retention whose event has not happened (NULL) has not started: keep.
        if until.is_none_or(|u| u > now) {
            consider(Exemption {
                article: "Art. 17(3)(b)",
                because: purpose.id.to_string(),
                reason: r
                    .note
                    .clone()
                    .unwrap_or_else(|| format!("kept {} for a legal obligation", r.describe())),
                until,
            });
        }
    }
    let here = format!("{}.{}", system.id.as_str(), c.name.as_str());
    for h in &policy.holds {
        if h.collections.iter().any(|x| x.as_str() == here)
            && h.until.is_none_or(|u| u.end_of_day() > now)
        {
            consider(Exemption {
                article: "Art. 17(3)(e)",
                because: format!("hold {}", h.id.as_str()),
                reason: h.reason.clone(),
                until: h.until.map(|u| u.end_of_day()),
            });
        }
    }
    best
}

/// The value that erases `value` of column `field` by its masking strategy.
fn mask_value(
    masking: Option<&Masking>,
    value: &str,
    seed: &str,
    column: Option<&crate::sources::schema::ColumnInfo>,
    masker: &dyn Masker,
) -> Option<MaskValue> {
    let fit = |s: String| match column.and_then(|c| c.max_len) {
        Some(n) if n > 0 && s.chars().count() > n as usize => s.chars().take(n as usize).collect(),
        _ => s,
    };
    let v = match masking {
        Some(Masking::NullRewrite) => MaskValue::Null,
        Some(Masking::Hash) => {
            // A value that is already a digest of this length was hashed by an earlier run.
            let len = column
                .and_then(|c| c.max_len)
                .map_or(64, |n| (n.max(0) as usize).min(64));
            if value.len() == len && value.chars().all(|ch| matches!(ch, '0'..='9' | 'a'..='f')) {
                return None;
            }
            MaskValue::Text(fit(masker.hash(value)))
        }
        Some(Masking::RandomString) => MaskValue::Text(fit(masker.random(seed))),
        Some(Masking::Fixed(s)) => MaskValue::Text(fit(s.clone())),
        // No strategy (or delete_row on a kept row): NULL where allowed, else a neutral value.
        Some(Masking::DeleteRow) | None => match column {
            Some(c) if !c.nullable && c.is_numeric() => MaskValue::Text("0".into()),
            Some(c) if !c.nullable && c.is_text() => MaskValue::Text(fit("[erased]".into())),
            Some(c) if !c.nullable => MaskValue::Text("1970-01-01 00:00:00".into()),
            _ => MaskValue::Null,
        },
    };
    // Already erased to this value by an earlier run: nothing to write.
    match mask_text(&v) {
        Some(new) if same_value(value, &new) => None,
        _ => Some(v),
    }
}

/// Equal as the database stores them: `0` and `0.00`, or two spellings of one time.
fn same_value(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    if let (Ok(x), Ok(y)) = (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        return x == y;
    }
    matches!((parse_timestamp(a), parse_timestamp(b)), (Some(x), Some(y)) if x == y)
}

/// Key values that rows outside the person's own still reference, by `(collection,
/// column)`: such rows also relate to other people and are neither deleted nor masked.
pub type Shared = BTreeMap<(String, String), BTreeSet<String>>;

/// Whether a field is a key: a primary key, a reference, or the target of one. Keys are
/// never masked: other rows find theirs through them.
pub fn is_key(system: &System, c: &Collection, f: &crate::policy::Field) -> bool {
    f.primary_key
        || f.references.is_some()
        || system.collections.iter().any(|o| {
            o.fields.iter().any(|of| {
                of.references.as_ref().is_some_and(|r| {
                    r.collection.as_str() == c.name.as_str() && r.field.as_str() == f.name.as_str()
                })
            })
        })
}

/// A row other people's rows still reference is kept for the DPO to review.
fn shared_row() -> Exemption {
    Exemption {
        article: "Art. 17",
        because: "shared record".to_owned(),
        reason: "also relates to other people: their records still refer to it, so it is kept for our data protection officer to review".to_owned(),
        until: None,
    }
}

/// Decides the erasure of everything found in one system; with a `restriction` (the
/// request that placed it), everything is kept.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    policy: &Policy,
    system: &System,
    schema: &Schema,
    keys: &BTreeMap<String, Vec<String>>,
    found: &BTreeMap<String, Found>,
    now: DateTime<Utc>,
    masker: &dyn Masker,
    restriction: Option<&str>,
    shared: &Shared,
) -> (Vec<CollectionActions>, SystemReport) {
    // Parent key values that kept child rows still point at: those parents must stay.
    let mut pinned: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut actions = Vec::new();
    let mut reports = Vec::new();
    for name in child_first(system) {
        let Some(c) = system.collections.iter().find(|c| c.name.as_str() == name) else {
            continue;
        };
        let Some(rows) = found.get(&name) else {
            continue;
        };
        let key = keys.get(&name).cloned().unwrap_or_default();
        let mut report = CollectionReport {
            collection: name.clone(),
            rows_found: rows.rows.len(),
            ..Default::default()
        };
        let mut kept: BTreeMap<(String, String, String), Kept> = BTreeMap::new();
        let mut row_actions = Vec::new();
        // Personal data outside the keys: a collection without any is read, never changed.
        let personal: Vec<&crate::policy::Field> = c
            .fields
            .iter()
            .filter(|f| !f.categories.is_empty() && !is_key(system, c, f))
            .collect();
        if personal.is_empty() {
            actions.push(CollectionActions {
                collection: name.clone(),
                rows: Vec::new(),
            });
            reports.push(report);
            continue;
        }
        for row in &rows.rows {
            let mut masks = Vec::new();
            let mut any_kept = false;
            let is_shared = shared.iter().any(|((coll, col), vals)| {
                *coll == name
                    && row
                        .get(col)
                        .cloned()
                        .flatten()
                        .is_some_and(|v| vals.contains(&v))
            });
            for f in personal.iter().copied() {
                let Some(value) = row.get(f.name.as_str()).cloned().flatten() else {
                    continue;
                };
                match restriction
                    .map(restricted)
                    .or_else(|| is_shared.then(shared_row))
                    .or_else(|| exemption(policy, system, c, f, row, found, now))
                {
                    Some(e) => {
                        any_kept = true;
                        let until = e.until.map(|u| u.format("%Y-%m-%d").to_string());
                        let entry = kept
                            .entry((f.name.to_string(), e.article.to_owned(), e.because.clone()))
                            .or_insert(Kept {
                                field: f.name.to_string(),
                                article: e.article.to_owned(),
                                because: e.because,
                                reason: e.reason,
                                until: until.clone(),
                                rows: 0,
                            });
                        entry.rows += 1;
                        if entry.until.is_some() && (until.is_none() || until > entry.until) {
                            entry.until = until;
                        }
                    }
                    None => {
                        let seed = format!(
                            "{}.{}.{}:{:?}",
                            system.id.as_str(),
                            name,
                            f.name.as_str(),
                            key.iter().map(|k| row.get(k)).collect::<Vec<_>>()
                        );
                        if let Some(v) = mask_value(
                            f.masking.as_ref(),
                            &value,
                            &seed,
                            schema.column(&name, f.name.as_str()),
                            masker,
                        ) {
                            masks.push((f.name.to_string(), v));
                        }
                    }
                }
            }
            let pinned_here = pinned.iter().any(|((coll, col), vals)| {
                *coll == name
                    && row
                        .get(col)
                        .cloned()
                        .flatten()
                        .is_some_and(|v| vals.contains(&v))
            });
            let delete = c.erasure() == ErasureMode::DeleteRow
                && !any_kept
                && !pinned_here
                && !is_shared
                && !key.is_empty();
            let key_values: Vec<(String, String)> = key
                .iter()
                .filter_map(|k| Some((k.clone(), row.get(k).cloned().flatten()?)))
                .collect();
            if delete {
                report.rows_deleted += 1;
                row_actions.push(RowAction {
                    key: key_values,
                    action: Action::Delete,
                });
                continue;
            }
            // The row stays: the parents it references must stay too.
            for f in &c.fields {
                if let (Some(r), Some(v)) =
                    (&f.references, row.get(f.name.as_str()).cloned().flatten())
                {
                    pinned
                        .entry((r.collection.to_string(), r.field.to_string()))
                        .or_default()
                        .insert(v);
                }
            }
            if !masks.is_empty() && !is_shared && key_values.len() == key.len() && !key.is_empty() {
                report.rows_masked += 1;
                for (field, _) in &masks {
                    *report.fields_masked.entry(field.clone()).or_default() += 1;
                }
                row_actions.push(RowAction {
                    key: key_values,
                    action: Action::Mask(masks),
                });
            }
        }
        report.kept = kept.into_values().collect();
        actions.push(CollectionActions {
            collection: name.clone(),
            rows: row_actions,
        });
        reports.push(report);
    }
    // Report in the plan's natural order (declaration order).
    reports.sort_by_key(|r| {
        system
            .collections
            .iter()
            .position(|c| c.name.as_str() == r.collection)
    });
    (
        actions,
        SystemReport {
            system: system.id.to_string(),
            collections: reports,
        },
    )
}

fn mask_text(v: &MaskValue) -> Option<String> {
    match v {
        MaskValue::Null => None,
        MaskValue::Text(t) => Some(t.clone()),
    }
}

//! Erasure decisions (Art. 17): for every row found, which fields are erased (and how),
//! which are kept (why, under which article, until when), and which rows go. Pure: the
//! rows, the policy and the time in; actions and the report out.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::plan::{SystemPlan, Via};
use crate::identity::Identity;
use crate::policy::{
    Collection, Direction, ErasureMode, EventBinding, LegalBasis, Masking, Policy, System,
    parse_timestamp,
};
use crate::sources::db::{Action, CollectionActions, Found, MaskValue, Row, RowAction};
use crate::sources::matching;
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
    /// `(collection, key values)` of the person's rows left in place because a legal
    /// obligation or a hold kept part of them: retention treats them as erased, so they go
    /// on the date reported.
    #[serde(skip)]
    pub left_in_place: Vec<(String, Vec<String>)>,
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

/// Whether and when the event a retention runs from happened for one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Happened {
    At(DateTime<Utc>),
    /// Not yet (a NULL column: the account is still open), or not known here.
    NotYet,
    /// The event is the latest of the row's records (`max(orders.created_at)`) and it has
    /// none: the purpose holds no record for this row.
    NoRecord,
}

/// The time of `event` for `row` of collection `c`, as the policy binds it.
fn event_time(
    system: &System,
    c: &Collection,
    event: &str,
    row: &Row,
    found: &BTreeMap<String, Found>,
) -> Happened {
    let text = |r: &Row, col: &str| r.get(col).cloned().flatten();
    let at = |t: Option<DateTime<Utc>>| t.map_or(Happened::NotYet, Happened::At);
    let Some(binding) = c.events.get(event) else {
        return Happened::NotYet;
    };
    match &**binding {
        EventBinding::Column(col) => at(text(row, col.as_str()).and_then(|v| parse_timestamp(&v))),
        EventBinding::Referenced(r) => at((|| {
            let (fk, target) = c.reference_to(r.collection.as_str())?;
            let value = text(row, fk.name.as_str())?;
            let parent = found
                .get(r.collection.as_str())?
                .rows
                .iter()
                .find(|p| text(p, target.field.as_str()).as_deref() == Some(value.as_str()))?;
            parse_timestamp(&text(parent, r.field.as_str())?)
        })()),
        EventBinding::LatestOf(r) => {
            let Some((fk, key, children)) = (|| {
                let child = system.collections.iter().find(|x| x.name == r.collection)?;
                let (fk, target) = child.reference_to(c.name.as_str())?;
                let key = text(row, target.field.as_str())?;
                // Not searched (unreachable from the person): not known here.
                let children = found.get(r.collection.as_str())?;
                Some((fk, key, children))
            })() else {
                return Happened::NotYet;
            };
            let mine: Vec<&Row> = children
                .rows
                .iter()
                .filter(|ch| text(ch, fk.name.as_str()).as_deref() == Some(key.as_str()))
                .collect();
            if mine.is_empty() {
                return Happened::NoRecord;
            }
            // A record whose event is NULL (or names no time) is not yet due, and keeps
            // the row as it keeps itself.
            at(mine
                .iter()
                .map(|ch| parse_timestamp(&text(ch, r.field.as_str())?))
                .collect::<Option<Vec<_>>>()
                .and_then(|times| times.into_iter().max()))
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
    for p in policy.field_purposes(system, c, field) {
        let Some(purpose) = policy.purpose(p.as_str()) else {
            continue;
        };
        let Some(r) = &purpose.retention else {
            continue;
        };
        if r.basis != Some(LegalBasis::LegalObligation) {
            continue;
        }
        let until = match event_time(system, c, &r.from, row, found) {
            // The latest of no records: the obligation covers nothing of this row.
            Happened::NoRecord => continue,
            // A retention whose event has not happened (NULL) has not started: keep.
            Happened::NotYet => None,
            Happened::At(t) => r.keep_for.after(t),
        };
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
        // On a UNIQUE column a value of its own per row that reveals nothing.
        Some(Masking::DeleteRow) | None => match column {
            Some(c) if !c.nullable && c.unique && c.is_text() => {
                MaskValue::Text(fit(masker.random(seed)))
            }
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

/// Whether `stored` is one of the request's identities of `kind`, by the rule the
/// lookup used.
fn is_requested(identities: &[Identity], kind: &str, stored: &str) -> bool {
    identities
        .iter()
        .filter(|i| i.kind() == kind)
        .any(|i| match kind {
            "email" => matching::matches_folded(stored, &matching::fold(i.value())),
            _ => i.variants().iter().any(|v| matching::same_key(stored, v)),
        })
}

/// Adds to `shared` the rows found for the person that are someone else's as well, so
/// that their erasure leaves them be. A row is someone else's when it holds another
/// person's identity of a kind the request names; when it was reached along a `from`
/// edge but refers to a row that is not the person's (that row's owner reaches it too);
/// when a row outside the person's refers to it along an edge followed `to` (`reached`:
/// that row's owner reaches it too); and when it is reached along any followed edge from
/// a row that is someone else's.
pub fn also_others(
    plan: &SystemPlan,
    found: &BTreeMap<String, Found>,
    keys: &BTreeMap<String, Vec<String>>,
    identities: &[Identity],
    reached: &Shared,
    shared: &mut Shared,
) {
    let value = |row: &Row, field: &str| row.get(field).cloned().flatten();
    // The key values of the person's rows, by (collection, field).
    let mut theirs: BTreeMap<(&str, &str), BTreeSet<String>> = BTreeMap::new();
    for step in &plan.steps {
        for v in &step.via {
            if let Via::Reference {
                from_collection,
                from_field,
                direction: Direction::From,
                ..
            } = v
            {
                theirs
                    .entry((from_collection.as_str(), from_field.as_str()))
                    .or_insert_with(|| {
                        found
                            .get(from_collection)
                            .into_iter()
                            .flat_map(|f| &f.rows)
                            .filter_map(|r| key_of(r, from_field))
                            .collect()
                    });
            }
        }
    }
    let mut others: BTreeSet<(&str, usize)> = BTreeSet::new();
    for step in &plan.steps {
        let Some(f) = found.get(&step.collection) else {
            continue;
        };
        for (i, row) in f.rows.iter().enumerate() {
            let by_edge = step.via.iter().any(|v| match v {
                Via::Identity { field, kind } => {
                    value(row, field).is_some_and(|s| !is_requested(identities, kind, &s))
                }
                Via::Reference {
                    field,
                    from_collection,
                    from_field,
                    direction: Direction::From,
                    ..
                } => key_of(row, field).is_some_and(|k| {
                    !theirs
                        .get(&(from_collection.as_str(), from_field.as_str()))
                        .is_some_and(|t| t.contains(&k))
                }),
                Via::Reference { .. } => false,
            });
            let referred = reached.iter().any(|((c, col), vals)| {
                *c == step.collection && value(row, col).is_some_and(|v| vals.contains(&v))
            });
            if by_edge || referred {
                others.insert((step.collection.as_str(), i));
            }
        }
    }
    // Whatever is reached from someone else's row is theirs too.
    loop {
        let mut more = Vec::new();
        for step in &plan.steps {
            let Some(f) = found.get(&step.collection) else {
                continue;
            };
            for v in &step.via {
                let Via::Reference {
                    field,
                    from_collection,
                    from_field,
                    ..
                } = v
                else {
                    continue;
                };
                let Some(p) = found.get(from_collection) else {
                    continue;
                };
                let vals: BTreeSet<String> = others
                    .iter()
                    .filter(|(c, _)| *c == from_collection.as_str())
                    .filter_map(|(_, i)| key_of(&p.rows[*i], from_field))
                    .collect();
                if vals.is_empty() {
                    continue;
                }
                for (i, row) in f.rows.iter().enumerate() {
                    let at = (step.collection.as_str(), i);
                    if !others.contains(&at)
                        && key_of(row, field).is_some_and(|k| vals.contains(&k))
                    {
                        more.push(at);
                    }
                }
            }
        }
        if more.is_empty() {
            break;
        }
        others.extend(more);
    }
    for (c, i) in others {
        let row = &found[c].rows[i];
        for k in keys.get(c).into_iter().flatten() {
            if let Some(v) = value(row, k) {
                shared
                    .entry((c.to_owned(), k.clone()))
                    .or_default()
                    .insert(v);
            }
        }
    }
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

/// What one found row becomes, before the rows that must stay are settled.
struct Decided<'a> {
    /// Index of the collection in the system's declaration.
    collection: usize,
    row: &'a Row,
    key: Vec<(String, String)>,
    masks: Vec<(String, MaskValue)>,
    /// Deleted unless a row that stays still refers to it.
    delete: bool,
    /// Its personal fields may be overwritten (it is the person's alone and has a key).
    maskable: bool,
}

/// A key value as compared across columns: `7` and `7.0` are one key.
fn key_form(v: &str) -> String {
    let t = v.trim();
    if let Ok(n) = t.parse::<i128>() {
        return n.to_string();
    }
    match t.parse::<f64>() {
        Ok(f) if f.fract() == 0.0 && f.abs() < 1e30 => format!("{}", f as i128),
        _ => v.to_owned(),
    }
}

/// The rows a row refers to: `(collection, field, key)` per reference it holds.
fn refers_to<'r>(
    c: &'r Collection,
    row: &'r Row,
) -> impl Iterator<Item = (&'r str, &'r str, String)> + 'r {
    c.fields.iter().filter_map(move |f| {
        let r = f.references.as_ref()?;
        let v = row.get(f.name.as_str())?.as_deref()?;
        Some((r.collection.as_str(), r.field.as_str(), key_form(v)))
    })
}

/// The value of `field` in `row`, as a key.
fn key_of(row: &Row, field: &str) -> Option<String> {
    row.get(field)?.as_deref().map(key_form)
}

/// Settles which rows go: a row that a staying row refers to stays (its personal fields
/// masked), and rows that refer to each other in a cycle stay too (no order of deletes
/// would keep every reference resolving). Returns the deletes in waves: each wave's rows
/// are referred to by no row left after it.
fn settle(system: &System, decided: &mut [Decided<'_>]) -> Vec<Vec<usize>> {
    loop {
        // Every key a staying row refers to.
        let mut pinned: BTreeSet<(&str, &str, String)> = BTreeSet::new();
        for d in decided.iter().filter(|d| !d.delete) {
            pinned.extend(refers_to(&system.collections[d.collection], d.row));
        }
        let mut changed = false;
        for d in decided.iter_mut().filter(|d| d.delete) {
            let c = &system.collections[d.collection];
            let is_pinned = c.fields.iter().any(|f| {
                key_of(d.row, f.name.as_str())
                    .is_some_and(|v| pinned.contains(&(c.name.as_str(), f.name.as_str(), v)))
            });
            if is_pinned {
                d.delete = false;
                changed = true;
            }
        }
        if changed {
            continue;
        }
        // Deletes in waves, children first (Kahn's order over the rows themselves).
        let going: Vec<usize> = (0..decided.len()).filter(|&i| decided[i].delete).collect();
        let mut by_key: BTreeMap<(&str, &str, String), Vec<usize>> = BTreeMap::new();
        for &i in &going {
            let c = &system.collections[decided[i].collection];
            for f in &c.fields {
                if let Some(v) = key_of(decided[i].row, f.name.as_str()) {
                    by_key
                        .entry((c.name.as_str(), f.name.as_str(), v))
                        .or_default()
                        .push(i);
                }
            }
        }
        // parents[i]: the going rows row i refers to. A row referring to itself is a
        // cycle of its own: MariaDB refuses to delete it.
        let mut parents: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        let mut children: BTreeMap<usize, usize> = going.iter().map(|&i| (i, 0)).collect();
        for &i in &going {
            let c = &system.collections[decided[i].collection];
            for target in refers_to(c, decided[i].row) {
                for &p in by_key.get(&target).into_iter().flatten() {
                    if parents.entry(i).or_default().insert(p) {
                        *children.entry(p).or_default() += 1;
                    }
                }
            }
        }
        let mut waves = Vec::new();
        let mut ready: Vec<usize> = going.iter().copied().filter(|i| children[i] == 0).collect();
        let mut done = 0;
        while !ready.is_empty() {
            let mut next = Vec::new();
            for &i in &ready {
                for &p in parents.get(&i).into_iter().flatten() {
                    let n = children.get_mut(&p).expect("a going row");
                    *n -= 1;
                    if *n == 0 {
                        next.push(p);
                    }
                }
            }
            done += ready.len();
            waves.push(std::mem::replace(&mut ready, next));
        }
        if done == going.len() {
            return waves;
        }
        // A cycle: its rows stay, and whatever they refer to with them.
        for (&i, &n) in &children {
            if n > 0 {
                decided[i].delete = false;
            }
        }
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
    let mut decided: Vec<Decided> = Vec::new();
    let mut reports: Vec<CollectionReport> = Vec::new();
    let mut left_in_place = Vec::new();
    for (ci, c) in system.collections.iter().enumerate() {
        let name = c.name.to_string();
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
        // Personal data outside the keys: a collection without any is read, never changed.
        let personal: Vec<&crate::policy::Field> = c
            .fields
            .iter()
            .filter(|f| !f.categories.is_empty() && !system.is_key(c, f))
            .collect();
        for row in &rows.rows {
            let key_values: Vec<(String, String)> = key
                .iter()
                .filter_map(|k| Some((k.clone(), row.get(k).cloned().flatten()?)))
                .collect();
            let whole_key = !key.is_empty() && key_values.len() == key.len();
            if personal.is_empty() {
                decided.push(Decided {
                    collection: ci,
                    row,
                    key: key_values,
                    masks: Vec::new(),
                    delete: false,
                    maskable: false,
                });
                continue;
            }
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
            if any_kept && restriction.is_none() && !is_shared && whole_key {
                left_in_place.push((
                    name.clone(),
                    key_values.iter().map(|(_, v)| v.clone()).collect(),
                ));
            }
            decided.push(Decided {
                collection: ci,
                row,
                key: key_values,
                masks,
                delete: c.erasure() == ErasureMode::DeleteRow
                    && !any_kept
                    && !is_shared
                    && whole_key,
                maskable: !is_shared && whole_key,
            });
        }
        report.kept = kept.into_values().collect();
        reports.push(report);
    }

    let waves = settle(system, &mut decided);
    let report_of = |reports: &mut Vec<CollectionReport>, ci: usize| -> usize {
        let name = system.collections[ci].name.as_str();
        reports
            .iter()
            .position(|r| r.collection == name)
            .expect("a report per collection with rows")
    };
    // Masks first (they touch no key), then the deletes wave by wave.
    let mut actions: Vec<CollectionActions> = Vec::new();
    // `from`: where the current wave's actions begin. Rows of two waves never share a
    // statement: MariaDB checks a foreign key row by row, so a parent deleted in the
    // same statement as its child may go first and be refused.
    let push = |actions: &mut Vec<CollectionActions>, from: usize, ci: usize, ra: RowAction| {
        let name = system.collections[ci].name.as_str();
        let len = actions.len();
        match actions.last_mut() {
            Some(last) if len > from && last.collection == name => last.rows.push(ra),
            _ => actions.push(CollectionActions {
                collection: name.to_owned(),
                rows: vec![ra],
            }),
        }
    };
    let mut masked: Vec<usize> = (0..decided.len())
        .filter(|&i| !decided[i].delete && decided[i].maskable && !decided[i].masks.is_empty())
        .collect();
    masked.sort_by_key(|&i| decided[i].collection);
    for i in masked {
        let d = &decided[i];
        let r = report_of(&mut reports, d.collection);
        reports[r].rows_masked += 1;
        for (field, _) in &d.masks {
            *reports[r].fields_masked.entry(field.clone()).or_default() += 1;
        }
        push(
            &mut actions,
            0,
            d.collection,
            RowAction {
                key: d.key.clone(),
                action: Action::Mask(d.masks.clone()),
            },
        );
    }
    for mut wave in waves {
        wave.sort_by_key(|&i| decided[i].collection);
        let from = actions.len();
        for i in wave {
            let d = &decided[i];
            let r = report_of(&mut reports, d.collection);
            reports[r].rows_deleted += 1;
            push(
                &mut actions,
                from,
                d.collection,
                RowAction {
                    key: d.key.clone(),
                    action: Action::Delete,
                },
            );
        }
    }
    (
        actions,
        SystemReport {
            system: system.id.to_string(),
            collections: reports,
            left_in_place,
        },
    )
}

fn mask_text(v: &MaskValue) -> Option<String> {
    match v {
        MaskValue::Null => None,
        MaskValue::Text(t) => Some(t.clone()),
    }
}

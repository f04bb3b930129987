//! Retention enforcement (Art. 5(1)(e)): from the policy, when each collection's rows or
//! fields are due, and running the deletions in bounded batches. The rules are pure; the
//! SQL lives in `sources::retention`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::{Actor, AuditLog, NewEntry};
use crate::policy::{
    Collection, ErasureMode, EventBinding, LegalBasis, Policy, RetentionPeriod, System,
    humanize_event,
};
use crate::sources::SourceError;
use crate::sources::db::Sources;
use crate::sources::retention as sql;

/// One purpose's rule for one field: due `keep_for` after `event`.
#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    pub purpose: String,
    pub keep_for: RetentionPeriod,
    pub event: String,
    /// Where the event's time is read; None when the collection does not bind it, which
    /// makes the field never due here.
    pub binding: Option<EventBinding>,
    /// The purpose keeps its data for a legal obligation: an erasure does not end it.
    pub obligation: bool,
}

/// A field is due when every purpose it serves is past its deadline (the latest wins).
#[derive(Debug, Clone, Serialize)]
pub struct FieldRule {
    pub field: String,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CollectionRule {
    pub system: String,
    pub collection: String,
    /// `delete_row`: rows go when every mapped field is due; `keep_row`: due fields are masked.
    pub mode: ErasureMode,
    pub fields: Vec<FieldRule>,
    /// Collections whose rows reference this one (itself included): a row they still
    /// reference stays.
    pub children: Vec<(String, String, String)>,
    /// An active hold stops everything here.
    pub held_by: Option<String>,
    /// Primary keys of rows whose person restricted processing (Art. 18): left alone.
    #[serde(skip)]
    pub restricted_keys: Vec<Vec<String>>,
    /// Primary keys of rows whose person had them erased (Art. 17) while a legal
    /// obligation or a hold kept something: only the obligations still count for them, so
    /// they go on the date the erasure named.
    #[serde(skip)]
    pub erased_keys: Vec<Vec<String>>,
}

impl CollectionRule {
    /// The rule as a DPO reads it.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .fields
            .iter()
            .map(|f| {
                let conds: Vec<String> = f
                    .conditions
                    .iter()
                    .map(|c| match &c.binding {
                        Some(b) => format!(
                            "{} after {} ({b}) for {}",
                            c.keep_for.describe(),
                            humanize_event(&c.event),
                            c.purpose
                        ),
                        None => format!("never here: `{}` is not bound for {}", c.event, c.purpose),
                    })
                    .collect();
                format!("{}: {}", f.field, conds.join(" and "))
            })
            .collect();
        let what = match self.mode {
            ErasureMode::DeleteRow => "rows deleted when every field is due",
            ErasureMode::KeepRow => "due fields masked, rows kept",
        };
        format!("{what}; {}", parts.join("; "))
    }
}

/// The retention rules of every collection with mapped fields, in the order a run applies
/// them: per system, a collection after every collection whose rows reference it, so that
/// rows deleted as children release their parents in the same run (collections that
/// reference each other in a cycle keep the policy's order).
pub fn rules(policy: &Policy, now: DateTime<Utc>) -> Vec<CollectionRule> {
    let mut out = unordered(policy, now);
    let mut ordered = Vec::with_capacity(out.len());
    while !out.is_empty() {
        // The first rule that no remaining rule of its system references; in a cycle, the
        // first remaining one.
        let next = out
            .iter()
            .position(|r| {
                !out.iter().any(|o| {
                    o.system == r.system
                        && o.collection != r.collection
                        && r.children
                            .iter()
                            .any(|(child, _, _)| *child == o.collection)
                })
            })
            .unwrap_or(0);
        ordered.push(out.remove(next));
    }
    ordered
}

fn unordered(policy: &Policy, now: DateTime<Utc>) -> Vec<CollectionRule> {
    let mut out = Vec::new();
    for s in &policy.systems {
        for c in &s.collections {
            let fields: Vec<FieldRule> = c
                .fields
                .iter()
                .filter(|f| !f.categories.is_empty())
                .map(|f| FieldRule {
                    field: f.name.to_string(),
                    conditions: policy
                        .field_purposes(s, c, f)
                        .iter()
                        .filter_map(|p| policy.purpose(p.as_str()))
                        .filter_map(|p| {
                            let r = p.retention.as_ref()?;
                            Some(Condition {
                                purpose: p.id.to_string(),
                                keep_for: *r.keep_for,
                                event: r.from.to_string(),
                                binding: c.events.get(r.from.as_str()).map(|b| (**b).clone()),
                                obligation: r.basis == Some(LegalBasis::LegalObligation),
                            })
                        })
                        .collect(),
                })
                .collect();
            if fields.is_empty() {
                continue;
            }
            out.push(CollectionRule {
                system: s.id.to_string(),
                collection: c.name.to_string(),
                mode: c.erasure(),
                children: children(s, c),
                held_by: held(policy, s, c, now),
                restricted_keys: Vec::new(),
                erased_keys: Vec::new(),
                fields,
            });
        }
    }
    out
}

/// `(child collection, its referencing field, the referenced field here)`.
fn children(s: &System, c: &Collection) -> Vec<(String, String, String)> {
    s.collections
        .iter()
        .flat_map(|x| {
            x.fields.iter().filter_map(move |f| {
                let r = f.references.as_ref()?;
                (r.collection == *c.name)
                    .then(|| (x.name.to_string(), f.name.to_string(), r.field.to_string()))
            })
        })
        .collect()
}

fn held(policy: &Policy, s: &System, c: &Collection, now: DateTime<Utc>) -> Option<String> {
    let here = format!("{}.{}", s.id.as_str(), c.name.as_str());
    policy
        .holds
        .iter()
        .find(|h| {
            h.collections.iter().any(|x| x.as_str() == here)
                && h.until.is_none_or(|u| u.end_of_day() > now)
        })
        .map(|h| h.id.to_string())
}

/// Rows by `(system, collection)`, each as its primary key's values in the key's column
/// order (several for a composite key).
pub type Restricted = std::collections::BTreeMap<(String, String), Vec<Vec<String>>>;

/// The rows of the people with a restriction in force.
pub async fn restricted(
    policy: &Policy,
    sources: &Sources,
    identities: &[crate::identity::Identity],
) -> Result<Restricted, RetentionError> {
    if identities.is_empty() {
        return Ok(Restricted::new());
    }
    let found = crate::dsr::found_keys(policy, sources, identities)
        .await
        .map_err(|e| match e {
            crate::dsr::DsrError::Source(s) => RetentionError::Source(s),
            crate::dsr::DsrError::Audit(a) => RetentionError::Audit(a),
            other => RetentionError::Restrictions(other.to_string()),
        })?;
    Ok(found
        .into_iter()
        .filter_map(|(at, rows)| {
            // A row whose key is not whole cannot be named. A row of a collection without
            // a key is listed with no values, which names no row and keeps them all.
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .filter_map(|k| k.into_iter().collect::<Option<Vec<String>>>())
                .collect();
            (!rows.is_empty()).then_some((at, rows))
        })
        .collect())
}

/// The rows of everyone whose restriction is in force in `audit`'s store.
pub async fn restricted_in(
    policy: &Policy,
    sources: &Sources,
    audit: &crate::audit::AuditLog,
) -> Result<Restricted, RetentionError> {
    let ids: Vec<_> = crate::dsr::restrictions(audit)
        .await
        .map_err(|e| RetentionError::Restrictions(e.to_string()))?
        .into_iter()
        .map(|r| r.identity)
        .collect();
    restricted(policy, sources, &ids).await
}

/// The rows whose people's own requests change what retention does with them.
#[derive(Debug, Clone, Default)]
pub struct Requested {
    /// Restricted processing (Art. 18): left alone until the restriction is lifted.
    pub restricted: Restricted,
    /// Erased (Art. 17) while a legal obligation or a hold kept something: due as soon as
    /// the obligations are, whatever the purposes the person ended would keep.
    pub erased: Restricted,
}

/// The rows of `audit`'s store's requests: restrictions in force and erasures that kept
/// something.
pub async fn requested_in(
    policy: &Policy,
    sources: &Sources,
    audit: &crate::audit::AuditLog,
) -> Result<Requested, RetentionError> {
    let mut erased = Restricted::new();
    for (system, collection, key) in audit.store().erased_rows().await? {
        erased.entry((system, collection)).or_default().push(key);
    }
    Ok(Requested {
        restricted: restricted_in(policy, sources, audit).await?,
        erased,
    })
}

/// The rules, with the restricted and erased rows of each collection attached.
fn rules_with(policy: &Policy, now: DateTime<Utc>, requested: &Requested) -> Vec<CollectionRule> {
    let mut rules = rules(policy, now);
    for r in &mut rules {
        let here = (r.system.clone(), r.collection.clone());
        if let Some(keys) = requested.restricted.get(&here) {
            r.restricted_keys = keys.clone();
        }
        if let Some(keys) = requested.erased.get(&here) {
            r.erased_keys = keys.clone();
        }
    }
    rules
}

/// What is due in one collection now.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Due {
    pub system: String,
    pub collection: String,
    pub rule: String,
    pub held_by: Option<String>,
    /// Rows left alone because their person restricted processing (Art. 18).
    pub restricted_rows: usize,
    /// Rows erased on request (Art. 17) and kept for an obligation: due when it ends.
    pub erased_rows: usize,
    /// Rows are deleted here (`delete_row`).
    pub deletes: bool,
    /// Rows to delete (`delete_row`).
    pub rows: u64,
    /// Values to mask per field (`keep_row`).
    pub fields: Vec<(String, u64)>,
    /// How a run read the table: by `pages`, `rowid`, the `index` named, or `key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub walked_by: Option<String>,
}

/// Counts what is due, changing nothing.
pub async fn plan(
    policy: &Policy,
    sources: &Sources,
    now: DateTime<Utc>,
    requested: &Requested,
) -> Result<Vec<Due>, SourceError> {
    let mut out = Vec::new();
    let rules = rules_with(policy, now, requested);
    let mut going = sql::Going::new();
    for (i, rule) in rules.iter().enumerate() {
        let Some(system) = policy.system(&rule.system) else {
            continue;
        };
        let db = sources.get(system).await?;
        let (rows, fields) = if rule.held_by.is_some() {
            (0, Vec::new())
        } else {
            sql::count_due(&db, system, rule, &rules[..i], &mut going, now).await?
        };
        out.push(Due {
            system: rule.system.clone(),
            collection: rule.collection.clone(),
            rule: rule.describe(),
            held_by: rule.held_by.clone(),
            restricted_rows: rule.restricted_keys.len(),
            erased_rows: rule.erased_keys.len(),
            deletes: rule.mode == ErasureMode::DeleteRow,
            rows,
            fields,
            walked_by: None,
        });
    }
    Ok(out)
}

/// How a run went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    pub rows_deleted: u64,
    pub values_masked: u64,
    /// Batches that changed something, each one transaction and one audit entry.
    pub batches: u64,
    /// The longest single transaction, in milliseconds.
    pub longest_batch_ms: u64,
    /// False when `max_duration` stopped the run; the next run resumes.
    pub complete: bool,
    pub collections: Vec<Due>,
}

#[derive(Default)]
pub struct RunOptions {
    pub batch_size: u32,
    pub max_duration: Option<std::time::Duration>,
    /// Stop after this many batches (tests of resumption).
    pub max_batches: Option<u64>,
    /// Told the rows of each finished batch (a progress bar).
    pub progress: Option<std::sync::Arc<dyn Fn(u64) + Send + Sync>>,
    /// Rows of people's own requests (see [`Requested`]).
    pub requested: Requested,
}

/// Batches run at once where the walk allows it (PostgreSQL's page walk): one executes
/// while another commits.
const PARALLEL_BATCHES: usize = 3;

/// Deletes and masks what is due, in batches of bounded size, one audit entry per batch.
/// A stopped run leaves only finished batches behind; the next run resumes.
pub async fn run(
    policy: &Policy,
    sources: &Sources,
    audit: &AuditLog,
    now: DateTime<Utc>,
    options: &RunOptions,
) -> Result<RunReport, RetentionError> {
    let started = std::time::Instant::now();
    let mut report = RunReport {
        complete: true,
        ..Default::default()
    };
    let out_of_time = |batches: u64| {
        options.max_duration.is_some_and(|d| started.elapsed() >= d)
            || options.max_batches.is_some_and(|m| batches >= m)
    };
    'rules: for rule in rules_with(policy, now, &options.requested) {
        let Some(system) = policy.system(&rule.system) else {
            continue;
        };
        let mut due = Due {
            system: rule.system.clone(),
            collection: rule.collection.clone(),
            rule: rule.describe(),
            held_by: rule.held_by.clone(),
            restricted_rows: rule.restricted_keys.len(),
            erased_rows: rule.erased_keys.len(),
            deletes: rule.mode == ErasureMode::DeleteRow,
            rows: 0,
            fields: Vec::new(),
            walked_by: None,
        };
        if rule.held_by.is_some() {
            report.collections.push(due);
            continue;
        }
        let db = sources.get(system).await?;
        let mut cursors = sql::Cursors::new();
        // The audit entries of batches are written while the next batches run: each
        // follows the batch it records, and every one is written before the run returns.
        let mut pending: Vec<NewEntry> = Vec::new();
        loop {
            if out_of_time(report.batches) {
                for e in pending.drain(..) {
                    audit.append(e).await?;
                }
                report.complete = false;
                due.walked_by = cursors.walked_by();
                report.collections.push(due);
                break 'rules;
            }
            // Never more at once than the batches left to a run with a limit.
            let width = options.max_batches.map_or(PARALLEL_BATCHES, |m| {
                usize::try_from(m - report.batches)
                    .map_or(PARALLEL_BATCHES, |left| left.min(PARALLEL_BATCHES))
            });
            let record = std::mem::take(&mut pending);
            let (batches, recorded) = tokio::join!(
                sql::run_batches(
                    &db,
                    system,
                    &rule,
                    now,
                    options.batch_size,
                    width,
                    &mut cursors
                ),
                async {
                    for e in record {
                        audit.append(e).await?;
                    }
                    Ok::<_, crate::audit::AuditError>(())
                }
            );
            recorded?;
            let batches = batches?;
            if !batches.is_empty() {
                crate::fault::point("retention");
            }
            if batches.is_empty() {
                break;
            }
            let mut failed = None;
            for batch in batches {
                let batch = match batch {
                    Ok(b) => b,
                    Err(e) => {
                        failed.get_or_insert(e);
                        continue;
                    }
                };
                report.longest_batch_ms =
                    report.longest_batch_ms.max(batch.took.as_millis() as u64);
                if batch.rows == 0 {
                    // A stretch of the table with nothing due: no change, nothing to record.
                    continue;
                }
                report.batches += 1;
                if let Some(p) = &options.progress {
                    p(batch.rows);
                }
                let action = match batch.field {
                    None => {
                        report.rows_deleted += batch.rows;
                        due.rows += batch.rows;
                        "retention.batch_deleted"
                    }
                    Some(ref f) => {
                        report.values_masked += batch.rows;
                        match due.fields.iter_mut().find(|(x, _)| x == f) {
                            Some((_, n)) => *n += batch.rows,
                            None => due.fields.push((f.clone(), batch.rows)),
                        }
                        "retention.batch_masked"
                    }
                };
                pending.push(NewEntry::new(Actor::System, action).summary(serde_json::json!({
                    "system": rule.system, "collection": rule.collection, "field": batch.field, "rows": batch.rows,
                })));
            }
            if let Some(e) = failed {
                // What committed beside the failed batch is recorded before the error.
                for e in pending.drain(..) {
                    audit.append(e).await?;
                }
                return Err(e.into());
            }
        }
        for e in pending.drain(..) {
            audit.append(e).await?;
        }
        due.walked_by = cursors.walked_by();
        report.collections.push(due);
        // Erased rows now gone need no more attention.
        let gone = sql::erased_gone(&db, system, &rule).await?;
        if !gone.is_empty() {
            audit
                .store()
                .forget_erased_rows(&rule.system, &rule.collection, &gone)
                .await?;
        }
    }
    Ok(report)
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("finding the rows of restricted people: {0}")]
    Restrictions(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

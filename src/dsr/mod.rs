//! Data-subject requests across the company's databases: find every row of a person
//! (following references both ways), hand it over (Art. 15, 20) or erase it (Art. 17),
//! keeping with its reason what the law requires to keep. The CLI and the request
//! service call these functions; they return typed results.

pub mod erase;
pub mod package;
pub mod plan;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use erase::{CollectionReport, Kept, SystemReport};
pub use plan::{Plan, Via};

use crate::audit::{Actor, AuditError, AuditLog, NewEntry, SubjectId};
use crate::identity::Identity;
use crate::policy::{Direction, Policy};
use crate::sources::SourceError;
use crate::sources::db::{Found, Lookup, SourceDb, Sources};

#[derive(Debug, thiserror::Error)]
pub enum DsrError {
    #[error("no identity given: use e.g. --identity email=alice@example.com")]
    NoIdentity,
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("collections with personal data cannot be reached from the identities given: {0}")]
    Unreachable(String),
}

/// What a request needs to run.
pub struct Context<'a> {
    pub policy: &'a Policy,
    pub audit: &'a AuditLog,
    /// The systems' databases, opened once and shared.
    pub sources: &'a Sources,
    /// Who asked: the CLI operator, an admin, or the subject through the service.
    pub actor: Actor,
    pub request_id: Option<String>,
    /// Fail instead of warn when a collection with personal data is unreachable.
    pub strict: bool,
    /// The person's restriction of processing (Art. 18) in force, by request id: an
    /// erasure then keeps everything, saying why.
    pub restriction: Option<String>,
}

/// What a search reads from.
struct Scope<'a> {
    policy: &'a Policy,
    sources: &'a Sources,
    strict: bool,
}

/// Everything found in one system, still connected.
struct Searched {
    db: SourceDb,
    found: BTreeMap<String, Found>,
    keys: BTreeMap<String, Vec<String>>,
}

fn kinds(identities: &[Identity]) -> Vec<&str> {
    let mut k: Vec<&str> = identities.iter().map(|i| i.kind()).collect();
    k.sort();
    k.dedup();
    k
}

/// The traversal plan for these identities (reads no personal data).
pub fn plan_for(policy: &Policy, identities: &[Identity]) -> Plan {
    plan::plan(policy, &kinds(identities))
}

/// Runs the plan: connects to every system, checks its schema and reads the person's rows.
async fn search(
    ctx: &Context<'_>,
    identities: &[Identity],
) -> Result<(Plan, Vec<Searched>), DsrError> {
    search_in(ctx.policy, ctx.sources, ctx.strict, identities).await
}

/// The primary-key values of these people's rows, by `(system, collection)`: what
/// retention leaves alone while they restrict processing (Art. 18).
pub async fn row_keys(
    policy: &Policy,
    sources: &Sources,
    identities: &[Identity],
) -> Result<BTreeMap<(String, String), Vec<String>>, DsrError> {
    let mut out = BTreeMap::new();
    if identities.is_empty() {
        return Ok(out);
    }
    let (_, searched) = search_in(policy, sources, false, identities).await?;
    for s in searched {
        for (collection, key) in &s.keys {
            let (Some(f), [k]) = (s.found.get(collection), key.as_slice()) else {
                continue;
            };
            let values: Vec<String> = f
                .rows
                .iter()
                .filter_map(|r| r.get(k).cloned().flatten())
                .collect();
            if !values.is_empty() {
                out.insert((s.db.system.clone(), collection.clone()), values);
            }
        }
    }
    Ok(out)
}

/// The primary key of every row found for these people, by `(system, collection)`, in
/// the key's column order (one value per column of a composite key).
pub async fn found_keys(
    policy: &Policy,
    sources: &Sources,
    identities: &[Identity],
) -> Result<BTreeMap<(String, String), Vec<Vec<Option<String>>>>, DsrError> {
    let (_, searched) = search_in(policy, sources, false, identities).await?;
    let mut out = BTreeMap::new();
    for s in searched {
        for (collection, key) in &s.keys {
            let Some(f) = s.found.get(collection) else {
                continue;
            };
            let mut rows: Vec<Vec<Option<String>>> = f
                .rows
                .iter()
                .map(|r| key.iter().map(|k| r.get(k).cloned().flatten()).collect())
                .collect();
            rows.sort();
            if !rows.is_empty() {
                out.insert((s.db.system.clone(), collection.clone()), rows);
            }
        }
    }
    Ok(out)
}

async fn search_in(
    policy: &Policy,
    sources: &Sources,
    strict: bool,
    identities: &[Identity],
) -> Result<(Plan, Vec<Searched>), DsrError> {
    if identities.is_empty() {
        return Err(DsrError::NoIdentity);
    }
    let ctx = Scope {
        policy,
        sources,
        strict,
    };
    let plan = plan_for(ctx.policy, identities);
    let unreachable: Vec<String> = plan
        .unreachable()
        .map(|(s, c)| format!("{s}.{c}"))
        .collect();
    if !unreachable.is_empty() {
        if ctx.strict {
            return Err(DsrError::Unreachable(unreachable.join(", ")));
        }
        tracing::warn!(collections = %unreachable.join(", "), "collections with personal data are not reachable from the identities given");
    }
    let mut out = Vec::new();
    for sp in &plan.systems {
        if sp.steps.is_empty() {
            continue;
        }
        let Some(system) = ctx.policy.system(&sp.system) else {
            continue;
        };
        let db = ctx.sources.get(system).await?;
        let mut found: BTreeMap<String, Found> = BTreeMap::new();
        let mut keys = BTreeMap::new();
        // Steps in plan order; a step is read again when a collection it is reached from
        // gained rows after it was read (a later collection leading back to it, a cycle),
        // until nothing grows: every path is followed.
        let mut dirty: Vec<bool> = vec![true; sp.steps.len()];
        // Each read either finds more rows than before or clears a mark, so this ends.
        while let Some(i) = dirty.iter().position(|d| *d) {
            dirty[i] = false;
            let step = &sp.steps[i];
            let key = db.primary_key(system, &step.collection);
            let lookups: Vec<Lookup> = step
                .via
                .iter()
                .map(|v| match v {
                    // E-mail addresses match by the one rule of `sources::matching`.
                    Via::Identity { field, kind } if kind == "email" => Lookup::Folded {
                        field: field.clone(),
                        values: identities
                            .iter()
                            .filter(|i| i.kind() == kind)
                            .map(|i| crate::sources::matching::fold(i.value()))
                            .collect(),
                    },
                    Via::Identity { field, kind } => Lookup::Values {
                        field: field.clone(),
                        values: identities
                            .iter()
                            .filter(|i| i.kind() == kind)
                            .flat_map(|i| i.variants())
                            .collect(),
                    },
                    Via::Reference {
                        field,
                        from_collection,
                        from_field,
                        ..
                    } => Lookup::FromRows {
                        field: field.clone(),
                        from_collection: from_collection.clone(),
                        from_field: from_field.clone(),
                    },
                })
                .collect();
            let mut read = step.read.clone();
            for k in key
                .iter()
                .map(String::as_str)
                .chain(lookups.iter().map(Lookup::field))
            {
                if !read.iter().any(|r| r == k) {
                    read.push(k.to_owned());
                }
            }
            let rows = db
                .fetch(&step.collection, &read, &key, &lookups, &found)
                .await?;
            let grew = found
                .get(&step.collection)
                .is_none_or(|f| rows.rows.len() > f.rows.len());
            keys.insert(step.collection.clone(), key);
            found.insert(step.collection.clone(), rows);
            if grew {
                for (j, other) in sp.steps.iter().enumerate() {
                    let depends = other.via.iter().any(|v| {
                        matches!(v, Via::Reference { from_collection, .. } if *from_collection == step.collection)
                    });
                    // Read again, whether its turn came already or not.
                    if depends {
                        dirty[j] = true;
                    }
                }
            }
        }
        out.push(Searched { db, found, keys });
    }
    Ok((plan, out))
}

/// Access (Art. 15) or portability (Art. 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AccessKind {
    Access,
    Portability,
}

/// Finds the person's data and builds the package, without recording anything.
pub async fn collect(
    ctx: &Context<'_>,
    identities: &[Identity],
    kind: AccessKind,
    now: DateTime<Utc>,
) -> Result<package::Package, DsrError> {
    let (_, searched) = search(ctx, identities).await?;
    let systems: Vec<_> = searched
        .into_iter()
        .map(|s| (s.db.system.clone(), s.found))
        .collect();
    Ok(package::build(ctx.policy, &systems, kind, now))
}

/// Finds the person's data, builds the package and records the access in the audit log.
pub async fn access(
    ctx: &Context<'_>,
    identities: &[Identity],
    kind: AccessKind,
    now: DateTime<Utc>,
) -> Result<package::Package, DsrError> {
    let package = collect(ctx, identities, kind, now).await?;
    let subject = ctx.audit.subject_for(&identities[0]).await?;
    let entry = access_entry(ctx, identities, &subject, kind, &package.row_counts());
    ctx.audit.append(entry).await?;
    Ok(package)
}

/// The audit entry of an access or portability package built for `subject`: the rows
/// per collection in clear (`rows`), the identities sealed under the subject's key. A
/// caller that records the request's outcome appends it in the same commit.
pub fn access_entry(
    ctx: &Context<'_>,
    identities: &[Identity],
    subject: &SubjectId,
    kind: AccessKind,
    rows: &BTreeMap<String, usize>,
) -> NewEntry {
    let mut entry = NewEntry::new(
        ctx.actor.clone(),
        if kind == AccessKind::Access {
            "dsr.access.executed"
        } else {
            "dsr.portability.executed"
        },
    )
    .subject(subject)
    .summary(serde_json::json!({ "rows": rows }))
    .payload(identity_payload(identities));
    if let Some(r) = &ctx.request_id {
        entry = entry.request(r);
    }
    entry
}

/// The outcome of an erasure, per system and collection.
#[derive(Debug, Clone, Serialize)]
pub struct ErasureReport {
    pub dry_run: bool,
    pub executed_at: String,
    pub systems: Vec<SystemReport>,
}

impl ErasureReport {
    pub fn kept(&self) -> impl Iterator<Item = (&str, &Kept)> {
        self.systems.iter().flat_map(|s| {
            s.collections
                .iter()
                .flat_map(|c| c.kept.iter().map(move |k| (c.collection.as_str(), k)))
        })
    }
}

struct AuditMasker<'a>(&'a AuditLog);

impl erase::Masker for AuditMasker<'_> {
    fn hash(&self, value: &str) -> String {
        self.0.mask_hash(value)
    }

    fn random(&self, seed: &str) -> String {
        self.0.mask_hash(&format!("random-string:{seed}"))[..16].to_owned()
    }
}

/// Erases the person's data (Art. 17). One transaction per system; running it again
/// completes an interrupted run and otherwise changes nothing. With `dry_run` nothing is
/// written and the report says exactly what would happen.
pub async fn erase(
    ctx: &Context<'_>,
    identities: &[Identity],
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<ErasureReport, DsrError> {
    let (plan, searched) = search(ctx, identities).await?;
    // The person's audit subject, if earlier requests created one; it is shredded at the
    // end. Without one, the entries carry counts only and no identity at all.
    let subject = if dry_run {
        None
    } else {
        ctx.audit.find_subject(&identities[0]).await?
    };
    let masker = AuditMasker(ctx.audit);
    let mut reports = Vec::new();
    // Each system's entry, with the rows it left in place for an obligation, is written
    // in one commit once the next system starts; the last one in the commit that shreds
    // the person's key. Should the process stop between a system's writes and that
    // commit, the resumed erasure finds the rows left in place again and records them.
    let mut pending: Option<Recorded> = None;
    for s in searched {
        if let Some(p) = pending.take() {
            p.commit(ctx, None).await?;
        }
        let Some(system) = ctx.policy.system(&s.db.system) else {
            continue;
        };
        for (collection, key) in &s.keys {
            let has_rows = s.found.get(collection).is_some_and(|f| !f.rows.is_empty());
            if key.is_empty() && has_rows {
                return Err(SourceError::NoPrimaryKey {
                    system: s.db.system.clone(),
                    table: collection.clone(),
                }
                .into());
            }
        }
        let (mut shared, reached) = shared_keys(system, &s).await?;
        if let Some(sp) = plan.systems.iter().find(|p| p.system == s.db.system) {
            erase::also_others(sp, &s.found, &s.keys, identities, &reached, &mut shared);
        }
        let (actions, report) = erase::decide(
            ctx.policy,
            system,
            &s.db.schema,
            &s.keys,
            &s.found,
            now,
            &masker,
            ctx.restriction.as_deref(),
            &shared,
        );
        if !dry_run {
            let left: Vec<(String, String, Vec<String>)> = report
                .left_in_place
                .iter()
                .map(|(c, k)| (report.system.clone(), c.clone(), k.clone()))
                .collect();
            s.db.apply(&actions, fault_hook).await?;
            let mut entry = NewEntry::new(ctx.actor.clone(), "erasure.executed")
                .summary(serde_json::json!({
                    "system": report.system,
                    "collections": report.collections.iter().map(|c| serde_json::json!({
                        "collection": c.collection, "found": c.rows_found, "deleted": c.rows_deleted,
                        "masked": c.rows_masked, "kept_fields": c.kept.len(),
                    })).collect::<Vec<_>>(),
                }));
            if let Some(sub) = &subject {
                entry = entry.subject(sub).payload(identity_payload(identities));
            }
            if let Some(r) = &ctx.request_id {
                entry = entry.request(r);
            }
            pending = Some(Recorded { entry, left, now });
        }
        reports.push(report);
    }
    // The person's audit payloads go with their data; the clear counts stay. Under a
    // restriction in force their data stays, and so does their key: it also seals the
    // restriction itself, and the request the person is told through when it is lifted.
    let shred = subject.as_ref().filter(|_| ctx.restriction.is_none());
    match (pending, shred) {
        (Some(p), shred) => p.commit(ctx, shred).await?,
        (None, Some(sub)) => ctx.audit.shred_after(sub, ctx.actor.clone(), None).await?,
        (None, None) => {}
    }
    Ok(ErasureReport {
        dry_run,
        executed_at: crate::store::timestamp(now),
        systems: reports,
    })
}

/// What one system's erasure wrote, to be recorded in the store.
struct Recorded {
    entry: NewEntry,
    /// `(system, collection, key)` of the rows left in place for an obligation: they go
    /// when it ends.
    left: Vec<(String, String, Vec<String>)>,
    now: DateTime<Utc>,
}

impl Recorded {
    /// One commit: the rows left in place, the entry and, with `shred`, the shredding of
    /// the person's key.
    async fn commit(self, ctx: &Context<'_>, shred: Option<&SubjectId>) -> Result<(), DsrError> {
        let mut tx = ctx.audit.store().begin().await.map_err(AuditError::from)?;
        let request = ctx.request_id.as_deref();
        crate::store::Store::record_erased_rows_in(&mut tx, &self.left, request, self.now).await?;
        match shred {
            Some(sub) => {
                ctx.audit
                    .shred_after_in(&mut tx, sub, ctx.actor.clone(), Some(self.entry))
                    .await?
            }
            None => {
                ctx.audit
                    .append_in(&mut tx, std::slice::from_ref(&self.entry))
                    .await?;
            }
        }
        tx.commit().await.map_err(AuditError::from)?;
        Ok(())
    }
}

/// The key values of the person's rows that rows outside the person's own still
/// reference, through every reference the policy declares (followed or not): those rows
/// also relate to other people. Second, those referenced along a reference followed `to`:
/// the referencing row's owner reaches them as well.
async fn shared_keys(
    system: &crate::policy::System,
    s: &Searched,
) -> Result<(erase::Shared, erase::Shared), DsrError> {
    let mut shared = erase::Shared::new();
    let mut reached = erase::Shared::new();
    for c in &system.collections {
        for f in &c.fields {
            let Some(r) = &f.references else {
                continue;
            };
            let (parent, parent_field) = (r.collection.as_str(), r.field.as_str());
            let Some(parents) = s.found.get(parent) else {
                continue;
            };
            let mut values: Vec<String> = parents
                .rows
                .iter()
                .filter_map(|row| row.get(parent_field).cloned().flatten())
                .collect();
            values.sort();
            values.dedup();
            if values.is_empty() {
                continue;
            }
            let child = c.name.as_str();
            let key = s.db.primary_key(system, child);
            // Counted, not read, and each count stops once it passes the person's own
            // rows: a value is someone else's too when more rows refer to it than the
            // person's own rows do. Without a key no row can be told from another: every
            // referrer counts as someone else's.
            let own_rows: Vec<&crate::sources::db::Row> = s
                .found
                .get(child)
                .map(|fd| fd.rows.iter().collect())
                .unwrap_or_default();
            let own: Vec<(String, u64)> = values
                .into_iter()
                .map(|v| {
                    let mine = if key.is_empty() {
                        0
                    } else {
                        own_rows
                            .iter()
                            .filter(|row| {
                                row.get(f.name.as_str())
                                    .cloned()
                                    .flatten()
                                    .is_some_and(|x| crate::sources::matching::same_key(&x, &v))
                            })
                            .map(|row| {
                                key.iter()
                                    .map(|k| row.get(k).cloned().flatten())
                                    .collect::<Vec<_>>()
                            })
                            .collect::<std::collections::BTreeSet<_>>()
                            .len() as u64
                    };
                    (v, mine)
                })
                .collect();
            let entry = (parent.to_owned(), parent_field.to_owned());
            for v in s.db.referred_beyond(child, f.name.as_str(), &own).await? {
                if matches!(f.follows(), Direction::To | Direction::Both) {
                    reached.entry(entry.clone()).or_default().insert(v.clone());
                }
                shared.entry(entry.clone()).or_default().insert(v);
            }
        }
    }
    Ok((shared, reached))
}

/// The identities of a request, for a payload sealed under the subject's key.
fn identity_payload(identities: &[Identity]) -> serde_json::Value {
    let ids: Vec<String> = identities
        .iter()
        .map(|i| format!("{}={}", i.kind(), i.value()))
        .collect();
    serde_json::json!({ "identities": ids })
}

/// After each collection's writes of an erasure: a crash-recovery test may stop here.
fn fault_hook(system: &str, collection: &str) {
    crate::fault::point(&format!("{system}.{collection}"));
}

/// What a restriction's sealed identity is bound to.
pub fn restriction_label(request_id: &str) -> String {
    format!("restriction:{request_id}")
}

/// Every restriction of processing (Art. 18) in force, oldest first, with its identity
/// opened under the subject's key. A restriction whose person's key was shredded names
/// nobody any more and is skipped.
pub async fn restrictions(audit: &AuditLog) -> Result<Vec<crate::store::Restriction>, DsrError> {
    let stored = audit.store().restrictions_stored().await?;
    let mut out = Vec::new();
    for r in stored {
        let text = match (&r.sealed, &r.sealed_by) {
            (Some(sealed), Some(subject)) => {
                let label = restriction_label(&r.request_id);
                let Some(plain) = audit.open_for_subject(subject, &label, sealed).await? else {
                    continue;
                };
                serde_json::from_slice::<serde_json::Value>(&plain)
                    .ok()
                    .and_then(|v| v["identity"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            }
            _ => format!("{}={}", r.identity_kind, r.identity_value),
        };
        // Stored from a parsed identity, so it parses again.
        if let Ok(identity) = Identity::parse(&text) {
            out.push(crate::store::Restriction {
                request_id: r.request_id,
                identity,
            });
        }
    }
    Ok(out)
}

/// The restriction in force for any of these identities, by request id.
pub async fn restriction_for(
    audit: &AuditLog,
    identities: &[Identity],
) -> Result<Option<String>, DsrError> {
    Ok(restrictions(audit)
        .await?
        .into_iter()
        .find(|r| {
            identities
                .iter()
                .any(|i| i.kind() == r.identity.kind() && i.value() == r.identity.value())
        })
        .map(|r| r.request_id))
}

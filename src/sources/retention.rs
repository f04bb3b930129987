//! Retention SQL: the "is due" predicate of a collection, built from its rule, counted or
//! executed in batches (select a bounded set of keys, then delete or mask exactly those,
//! in one short transaction). Deleted rows are gone and masked values no longer match,
//! so a stopped run resumes by running again.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::SourceError;
use super::db::SourceDb;
use super::sql::Dialect;
use crate::policy::{ErasureMode, EventBinding, Identifier, Masking, System};
use crate::retention::{CollectionRule, Condition};

/// A predicate with its bound values, in order of appearance.
struct Pred {
    sql: String,
    binds: Vec<String>,
}

struct Builder<'a> {
    db: &'a SourceDb,
    system: &'a System,
    now: DateTime<Utc>,
    binds: Vec<String>,
}

fn id(s: &str) -> Result<Identifier, SourceError> {
    Identifier::parse(s).map_err(SourceError::Identifier)
}

impl Builder<'_> {
    fn d(&self) -> Dialect {
        self.db.dialect
    }

    /// A column as a comparable time.
    fn ts(&self, alias: &str, col: &Identifier) -> String {
        let c = format!("{alias}.{}", self.d().quote(col));
        match self.d() {
            Dialect::Sqlite => format!("datetime({c})"),
            _ => c,
        }
    }

    /// A bound cutoff, as a time comparable with a column of `table.col`.
    fn cutoff(&mut self, at: DateTime<Utc>, table: &str, col: &str) -> String {
        let d = self.d();
        let text = match d {
            Dialect::Postgres => at.to_rfc3339(),
            _ => at.format("%Y-%m-%d %H:%M:%S").to_string(),
        };
        self.binds.push(text);
        let n = self.binds.len();
        match d {
            Dialect::Sqlite => format!("datetime(?{n})"),
            Dialect::MySql => "?".to_owned(),
            Dialect::Postgres => {
                let t = self
                    .db
                    .schema
                    .column(table, col)
                    .map_or("timestamptz", |c| c.sql_type.as_str());
                d.typed_param(n, t)
            }
        }
    }

    fn condition(&mut self, table: &str, c: &Condition) -> Result<String, SourceError> {
        let Some(binding) = &c.binding else {
            return Ok("1 = 0".into());
        };
        let Some(at) = c.keep_for.before(self.now) else {
            return Ok("1 = 0".into());
        };
        let d = self.d();
        let q = move |s: &str| id(s).map(|i| d.quote(&i));
        let collection = self
            .system
            .collections
            .iter()
            .find(|x| x.name.as_str() == table);
        Ok(match binding {
            EventBinding::Column(col) => {
                let left = self.ts("t", col);
                format!("{left} <= {}", self.cutoff(at, table, col.as_str()))
            }
            EventBinding::Referenced(r) => {
                // This collection's key to the parent, and the parent's event.
                let Some((fk, to)) = collection.and_then(|c| c.reference_to(r.collection.as_str()))
                else {
                    return Ok("1 = 0".into());
                };
                let (fk, target) = (fk.name.to_string(), to.field.to_string());
                let left = self.ts("p", &r.field);
                let cut = self.cutoff(at, r.collection.as_str(), r.field.as_str());
                format!(
                    "EXISTS (SELECT 1 FROM {} p WHERE p.{} = t.{} AND {left} <= {cut})",
                    q(r.collection.as_str())?,
                    q(&target)?,
                    q(&fk)?
                )
            }
            EventBinding::LatestOf(r) => {
                // The children's key to this collection, and the latest child event.
                let child = self
                    .system
                    .collections
                    .iter()
                    .find(|x| x.name == r.collection);
                let Some((fk, to)) = child.and_then(|c| c.reference_to(table)) else {
                    return Ok("1 = 0".into());
                };
                let (fk, target) = (fk.name.to_string(), to.field.to_string());
                let left = self.ts("c", &r.field);
                let cut = self.cutoff(at, r.collection.as_str(), r.field.as_str());
                format!(
                    "(SELECT MAX({left}) FROM {} c WHERE c.{} = t.{}) <= {cut}",
                    q(r.collection.as_str())?,
                    q(&fk)?,
                    q(&target)?
                )
            }
        })
    }

    /// Every condition of a field holds (a field with no rule is never due).
    fn field_due(&mut self, rule: &CollectionRule, field: &str) -> Result<String, SourceError> {
        let Some(f) = rule.fields.iter().find(|f| f.field == field) else {
            return Ok("1 = 0".into());
        };
        if f.conditions.is_empty() {
            return Ok("1 = 0".into());
        }
        let parts = f
            .conditions
            .iter()
            .map(|c| self.condition(&rule.collection, c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(format!("({})", parts.join(" AND ")))
    }

    fn row_due(&mut self, rule: &CollectionRule) -> Result<String, SourceError> {
        let mut parts = Vec::new();
        // Every field due is every condition of every field holding; fields serving the
        // same purpose share their condition, which is tested once.
        let mut seen: Vec<(&str, &str, String)> = Vec::new();
        for f in &rule.fields {
            if f.conditions.is_empty() {
                return Ok("1 = 0".into());
            }
            for c in &f.conditions {
                let key = (c.purpose.as_str(), c.event.as_str(), c.keep_for.describe());
                if seen.contains(&key) {
                    continue;
                }
                seen.push(key);
                parts.push(self.condition(&rule.collection, c)?);
            }
        }
        // A row still referenced by rows that stay is kept.
        for (child, fk, target) in &rule.children {
            let d = self.d();
            let q = move |s: &str| id(s).map(|i| d.quote(&i));
            parts.push(format!(
                "NOT EXISTS (SELECT 1 FROM {} k WHERE k.{} = t.{})",
                q(child)?,
                q(fk)?,
                q(target)?
            ));
        }
        parts.push(self.unrestricted(rule)?);
        Ok(parts.join(" AND "))
    }

    /// Leaves out the rows of people who restricted processing (Art. 18).
    fn unrestricted(&mut self, rule: &CollectionRule) -> Result<String, SourceError> {
        if rule.restricted_keys.is_empty() {
            return Ok("1 = 1".into());
        }
        let key = self.db.primary_key(self.system, &rule.collection);
        let [key] = key.as_slice() else {
            // Without a single key the rows cannot be told apart: keep them all.
            return Ok("1 = 0".into());
        };
        let key_type = self
            .db
            .schema
            .column(&rule.collection, key)
            .map_or("text".to_owned(), |c| c.sql_type.clone());
        let mut params = Vec::new();
        for k in &rule.restricted_keys {
            self.binds.push(k.clone());
            params.push(self.d().typed_param(self.binds.len(), &key_type));
        }
        Ok(format!(
            "t.{} NOT IN ({})",
            self.d().quote(&id(key)?),
            params.join(", ")
        ))
    }

    fn finish(self, sql: String) -> Pred {
        Pred {
            sql,
            binds: self.binds,
        }
    }
}

/// The value that erases a kept row's field, and the predicate "not erased yet".
fn mask_for(db: &SourceDb, system: &System, table: &str, field: &str) -> (Option<String>, bool) {
    let col = db.schema.column(table, field);
    let masking = system
        .collections
        .iter()
        .find(|c| c.name.as_str() == table)
        .and_then(|c| c.fields.iter().find(|f| f.name.as_str() == field))
        .and_then(|f| f.masking.clone());
    let nullable = col.is_none_or(|c| c.nullable);
    let value = match masking {
        Some(Masking::Fixed(s)) => Some(s),
        _ if nullable => None,
        _ if col.is_some_and(|c| c.is_numeric()) => Some("0".into()),
        _ if col.is_some_and(|c| c.is_text()) => Some("[erased]".into()),
        _ => Some("1970-01-01 00:00:00".into()),
    };
    (value, nullable)
}

async fn query_count(db: &SourceDb, p: &Pred, table: &Identifier) -> Result<u64, SourceError> {
    let sql = format!(
        "SELECT COUNT(*) FROM {} t WHERE {}",
        db.dialect.quote(table),
        p.sql
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in &p.binds {
        q = q.bind(b.clone());
    }
    let row = q
        .fetch_one(db.pool())
        .await
        .map_err(|e| SourceError::Query {
            system: db.system.clone(),
            what: format!("counting due rows of `{table}`"),
            source: e,
        })?;
    let n: i64 = row.try_get(0).map_err(|e| SourceError::Query {
        system: db.system.clone(),
        what: "reading a count".into(),
        source: e,
    })?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The "not yet masked" predicate of a field, appended to `b`.
fn not_masked(b: &mut Builder, table: &str, field: &Identifier, value: &Option<String>) -> String {
    let d = b.d();
    match value {
        None => format!("t.{} IS NOT NULL", d.quote(field)),
        Some(v) => {
            b.binds.push(v.clone());
            let n = b.binds.len();
            let t =
                b.db.schema
                    .column(table, field.as_str())
                    .map_or("text", |c| c.sql_type.as_str())
                    .to_owned();
            format!("t.{} <> {}", d.quote(field), d.typed_param(n, &t))
        }
    }
}

/// Rows due for deletion, or values due for masking per field.
pub async fn count_due(
    db: &SourceDb,
    system: &System,
    rule: &CollectionRule,
    now: DateTime<Utc>,
) -> Result<(u64, Vec<(String, u64)>), SourceError> {
    let table = id(&rule.collection)?;
    match rule.mode {
        ErasureMode::DeleteRow => {
            let mut b = Builder {
                db,
                system,
                now,
                binds: Vec::new(),
            };
            let sql = b.row_due(rule)?;
            Ok((query_count(db, &b.finish(sql), &table).await?, Vec::new()))
        }
        ErasureMode::KeepRow => {
            let mut fields = Vec::new();
            for f in &rule.fields {
                let fid = id(&f.field)?;
                let (value, _) = mask_for(db, system, &rule.collection, &f.field);
                let mut b = Builder {
                    db,
                    system,
                    now,
                    binds: Vec::new(),
                };
                let due = b.field_due(rule, &f.field)?;
                let nm = not_masked(&mut b, &rule.collection, &fid, &value);
                let free = b.unrestricted(rule)?;
                let n = query_count(db, &b.finish(format!("{due} AND {nm} AND {free}")), &table)
                    .await?;
                fields.push((f.field.clone(), n));
            }
            Ok((0, fields))
        }
    }
}

/// One finished batch: rows deleted, or values of `field` masked.
pub struct Batch {
    pub field: Option<String>,
    pub rows: u64,
}

/// Where each target (whole rows, or one field) has got to: the last key handled.
pub type Cursors = std::collections::BTreeMap<Option<String>, String>;

/// Deletes (or masks) at most `limit` due rows in one transaction; None when nothing is
/// due. Batches walk the primary key upwards (`cursors`), so no batch rescans the rows an
/// earlier one removed: pick the next `limit` due keys after the cursor, then act on the
/// due rows in that key range.
pub async fn run_batch(
    db: &SourceDb,
    system: &System,
    rule: &CollectionRule,
    now: DateTime<Utc>,
    limit: u32,
    cursors: &mut Cursors,
) -> Result<Option<Batch>, SourceError> {
    let table = id(&rule.collection)?;
    let key = db.primary_key(system, &rule.collection);
    let [key] = key.as_slice() else {
        return Err(SourceError::NoPrimaryKey {
            system: system.id.to_string(),
            table: rule.collection.clone(),
        });
    };
    let key_id = id(key)?;
    let key_type = db
        .schema
        .column(&rule.collection, key)
        .map_or("text".to_owned(), |c| c.sql_type.clone());
    let d = db.dialect;
    let (tq, kq) = (d.quote(&table), d.quote(&key_id));
    let q_err = |what: String| {
        move |e| SourceError::Query {
            system: system.id.to_string(),
            what,
            source: e,
        }
    };
    // Each field of a kept row is a batch of its own; deletions take whole rows.
    let targets: Vec<Option<&str>> = match rule.mode {
        ErasureMode::DeleteRow => vec![None],
        ErasureMode::KeepRow => rule.fields.iter().map(|f| Some(f.field.as_str())).collect(),
    };
    for target in targets {
        let cursor_key = target.map(str::to_owned);
        let mut b = Builder {
            db,
            system,
            now,
            binds: Vec::new(),
        };
        let (pred, mask) = match target {
            None => (b.row_due(rule)?, None),
            Some(f) => {
                let fid = id(f)?;
                let (value, _) = mask_for(db, system, &rule.collection, f);
                let due = b.field_due(rule, f)?;
                let nm = not_masked(&mut b, &rule.collection, &fid, &value);
                let free = b.unrestricted(rule)?;
                (format!("{due} AND {nm} AND {free}"), Some((fid, value)))
            }
        };
        let mut range = pred.clone();
        if let Some(c) = cursors.get(&cursor_key) {
            b.binds.push(c.clone());
            range = format!(
                "{range} AND t.{kq} > {}",
                d.typed_param(b.binds.len(), &key_type)
            );
        }
        let pred = b.finish(range);
        if d == Dialect::Postgres {
            // One statement: pick the next due rows by key, act on them by their
            // physical address, and return the last key and the count.
            let mut binds = pred.binds.clone();
            let act = match &mask {
                None => format!("DELETE FROM {tq} WHERE ctid = ANY(ARRAY(SELECT c FROM picked))"),
                Some((fid, value)) => {
                    let set = match value {
                        None => "NULL".to_owned(),
                        Some(v) => {
                            binds.push(v.clone());
                            let t = db
                                .schema
                                .column(&rule.collection, fid.as_str())
                                .map_or("text".to_owned(), |c| c.sql_type.clone());
                            d.typed_param(binds.len(), &t)
                        }
                    };
                    format!(
                        "UPDATE {tq} SET {} = {set} WHERE ctid = ANY(ARRAY(SELECT c FROM picked))",
                        d.quote(fid)
                    )
                }
            };
            let sql = format!(
                "WITH picked AS (SELECT t.ctid AS c, t.{kq} AS k FROM {tq} t WHERE {} ORDER BY t.{kq} LIMIT {limit}), \
                 acted AS ({act} RETURNING 1) \
                 SELECT CAST((SELECT MAX(k) FROM picked) AS TEXT), (SELECT COUNT(*) FROM acted)",
                pred.sql
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for v in binds {
                q = q.bind(v);
            }
            let row = q
                .fetch_one(db.pool())
                .await
                .map_err(q_err(format!("retention in `{}`", rule.collection)))?;
            let last: Option<String> = row.try_get(0).map_err(q_err("reading a key".into()))?;
            let n: i64 = row.try_get(1).map_err(q_err("reading a count".into()))?;
            let Some(last) = last else { continue };
            cursors.insert(cursor_key, last);
            return Ok(Some(Batch {
                field: target.map(str::to_owned),
                rows: u64::try_from(n).unwrap_or(0),
            }));
        }
        // 1. The last key of the next batch.
        let text = |e: &str| match d {
            Dialect::MySql => format!("CAST({e} AS CHAR)"),
            _ => format!("CAST({e} AS TEXT)"),
        };
        let pick = format!(
            "SELECT {}, COUNT(*) FROM (SELECT t.{kq} AS k FROM {tq} t WHERE {} ORDER BY t.{kq} LIMIT {limit}) picked",
            text("MAX(k)"),
            pred.sql
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(pick));
        for v in &pred.binds {
            q = q.bind(v.clone());
        }
        let row = q.fetch_one(db.pool()).await.map_err(q_err(format!(
            "selecting due rows of `{}`",
            rule.collection
        )))?;
        let last: Option<String> = row.try_get(0).map_err(q_err("reading a key".into()))?;
        let Some(last) = last else { continue };
        // 2. Act on the due rows up to it, in one transaction.
        let mut binds = pred.binds.clone();
        binds.push(last.clone());
        let upto = format!(
            "{} AND t.{kq} <= {}",
            pred.sql,
            d.typed_param(binds.len(), &key_type)
        );
        let sql = match &mask {
            None => match d {
                Dialect::MySql => format!("DELETE t FROM {tq} t WHERE {upto}"),
                _ => format!("DELETE FROM {tq} AS t WHERE {upto}"),
            },
            Some((fid, value)) => {
                let set = match value {
                    None => "NULL".to_owned(),
                    // MySQL's placeholders are positional: the SET value comes first.
                    Some(v) if d == Dialect::MySql => {
                        binds.insert(0, v.clone());
                        "?".to_owned()
                    }
                    Some(v) => {
                        binds.push(v.clone());
                        let t = db
                            .schema
                            .column(&rule.collection, fid.as_str())
                            .map_or("text".to_owned(), |c| c.sql_type.clone());
                        d.typed_param(binds.len(), &t)
                    }
                };
                match d {
                    Dialect::MySql => {
                        format!("UPDATE {tq} t SET t.{} = {set} WHERE {upto}", d.quote(fid))
                    }
                    _ => format!("UPDATE {tq} AS t SET {} = {set} WHERE {upto}", d.quote(fid)),
                }
            }
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for v in binds {
            q = q.bind(v);
        }
        let n = q
            .execute(db.pool())
            .await
            .map_err(q_err(format!("retention in `{}`", rule.collection)))?
            .rows_affected();
        cursors.insert(cursor_key, last);
        return Ok(Some(Batch {
            field: target.map(str::to_owned),
            rows: n,
        }));
    }
    Ok(None)
}

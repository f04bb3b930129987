//! Retention SQL: the "is due" predicate of a collection, built from its rule, counted or
//! executed in batches: each batch deletes or masks the due rows of the next stretch of the
//! table (pages, rowids or keys) in one short transaction. Deleted rows are
//! gone and masked values no longer match, so a stopped run resumes by running again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use sqlx::Row;

use super::SourceError;
use super::db::SourceDb;
use super::sql::Dialect;
use crate::policy::{ErasureMode, EventBinding, Identifier, Masking, System};
use crate::retention::{CollectionRule, Condition};

mod index;
use index::{EventIndex, IndexAt};

/// Unix times below this (1973-03-03 in seconds) are not read as times: such small numbers
/// are more likely codes, or dates written as digits (20260511), than moments of 1970.
const UNIX_MIN: i64 = 100_000_000;
/// Unix times from this on are in milliseconds (in seconds it would be the year 5138).
const UNIX_MS: i64 = 100_000_000_000;

/// The Julian day of 0001-01-01: SQLite numbers from here to [`UNIX_MIN`] are Julian days.
const JULIAN_MIN: f64 = 1_721_425.5;

/// How an event column's values name a time.
#[derive(Clone, Copy, Debug, PartialEq)]
enum TimeKind {
    /// SQLite, whatever the column's declared type: text in any format its date functions
    /// read, a number from year 1 on as a Julian day (as `julianday()` writes it) or from
    /// 1973 on as a Unix time in seconds or milliseconds; 0 and other small numbers
    /// (often "not yet") name no time.
    Sqlite,
    /// A SQLite column of text affinity, which holds text (any format SQLite reads), blobs
    /// and NULL only.
    SqliteText,
    /// A number column elsewhere: a Unix time in seconds or milliseconds.
    Unix,
    /// A text column elsewhere: ISO 8601 (`T` or a space between date and time) read as
    /// UTC, compared as text with the cutoff written the same way.
    Text,
    /// A date or time column.
    Native,
}

impl TimeKind {
    /// The time in `e`, as seconds since 1970 (SQLite, Unix), as text in one form (Text)
    /// or as it is (Native); NULL when the value names no time.
    fn instant(self, e: &str) -> String {
        match self {
            Self::Sqlite => format!(
                "CASE WHEN typeof({e}) IN ('text', 'blob') THEN unixepoch({e}) \
                 WHEN {e} >= {UNIX_MS} THEN {e} / 1000 WHEN {e} >= {UNIX_MIN} THEN {e} \
                 WHEN {e} >= {JULIAN_MIN} THEN unixepoch({e}) END"
            ),
            Self::SqliteText => format!("unixepoch({e})"),
            Self::Unix => format!(
                "CASE WHEN {e} >= {UNIX_MS} THEN {e} / 1000 WHEN {e} >= {UNIX_MIN} THEN {e} END"
            ),
            Self::Text => format!("REPLACE({e}, 'T', ' ')"),
            Self::Native => e.to_owned(),
        }
    }
}

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
    /// The rules that a run applies before this collection's (a plan): a row that only
    /// their going rows reference counts as free, as it will be when its turn comes.
    /// Empty in a run itself, where those rows are already gone.
    earlier: &'a [CollectionRule],
    /// Subquery aliases handed out so far.
    aliases: usize,
    /// Referencing collections whose staying rows the caller works out itself (a plan,
    /// row by row): `row_due` leaves them out.
    skip: Vec<String>,
}

fn id(s: &str) -> Result<Identifier, SourceError> {
    Identifier::parse(s).map_err(SourceError::Identifier)
}

impl<'a> Builder<'a> {
    fn new(
        db: &'a SourceDb,
        system: &'a System,
        now: DateTime<Utc>,
        earlier: &'a [CollectionRule],
    ) -> Self {
        Self {
            db,
            system,
            now,
            binds: Vec::new(),
            earlier,
            aliases: 0,
            skip: Vec::new(),
        }
    }

    fn d(&self) -> Dialect {
        self.db.dialect
    }

    /// A fresh alias for a subquery's table.
    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("q{}", self.aliases)
    }

    /// How the values of `table.col` are read as times.
    fn kind(&self, table: &str, col: &str) -> TimeKind {
        let info = self.db.schema.column(table, col);
        match self.d() {
            // A column of text affinity turns every number written to it into text.
            Dialect::Sqlite if info.is_some_and(|c| c.has_text_affinity()) => TimeKind::SqliteText,
            Dialect::Sqlite => TimeKind::Sqlite,
            _ if info.is_some_and(|c| c.holds_unix_time()) => TimeKind::Unix,
            _ if info.is_some_and(|c| c.is_text()) => TimeKind::Text,
            _ => TimeKind::Native,
        }
    }

    /// The cutoff as a constant comparable with `kind`'s times: seconds since 1970; on
    /// PostgreSQL a constant of the column's type, so that it is parsed once per statement
    /// (not for every row compared) and the planner can estimate what is due; bound on
    /// MySQL.
    fn cutoff(&mut self, kind: TimeKind, at: DateTime<Utc>, table: &str, col: &str) -> String {
        match (kind, self.d()) {
            (TimeKind::Sqlite | TimeKind::SqliteText | TimeKind::Unix, _) => {
                at.timestamp().to_string()
            }
            (TimeKind::Text | TimeKind::Native, Dialect::Postgres) => {
                let t = self
                    .db
                    .schema
                    .column(table, col)
                    .map_or("timestamptz", |c| c.sql_type.as_str());
                let cut = match kind {
                    TimeKind::Text => at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    _ => at.to_rfc3339(),
                };
                self.d().typed_literal(&cut, t)
            }
            (TimeKind::Text | TimeKind::Native, _) => {
                self.binds.push(at.format("%Y-%m-%d %H:%M:%S").to_string());
                "?".to_owned()
            }
        }
    }

    /// `at` or before it, for the time in `e` (a column of `table.col`).
    fn due(&mut self, e: &str, at: DateTime<Utc>, table: &str, col: &str) -> String {
        let kind = self.kind(table, col);
        let cut = self.cutoff(kind, at, table, col);
        match kind {
            // Two ranges of the column itself, so that an index on it serves.
            TimeKind::Unix => {
                let ms = at.timestamp().saturating_mul(1000);
                format!("({e} >= {UNIX_MIN} AND {e} <= {cut} OR {e} >= {UNIX_MS} AND {e} <= {ms})")
            }
            _ => format!("{} <= {cut}", kind.instant(e)),
        }
    }

    /// Whether condition `c` holds for the row `t` of `table`.
    fn condition(&mut self, table: &str, t: &str, c: &Condition) -> Result<String, SourceError> {
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
                self.due(&format!("{t}.{}", d.quote(col)), at, table, col.as_str())
            }
            EventBinding::Referenced(r) => {
                // This collection's key to the parent, and the parent's event.
                let Some((fk, to)) = collection.and_then(|c| c.reference_to(r.collection.as_str()))
                else {
                    return Ok("1 = 0".into());
                };
                let (fk, target) = (fk.name.to_string(), to.field.to_string());
                let p = self.alias();
                let e = format!("{p}.{}", d.quote(&r.field));
                let due = self.due(&e, at, r.collection.as_str(), r.field.as_str());
                format!(
                    "EXISTS (SELECT 1 FROM {} {p} WHERE {p}.{} = {t}.{} AND {due})",
                    q(r.collection.as_str())?,
                    q(&target)?,
                    q(&fk)?
                )
            }
            EventBinding::LatestOf(r) => {
                // Due when no referencing record is not: the latest of no records holds
                // nothing here (the purpose has no record for this row), while a record
                // whose event is NULL, or names no time, is not yet due and keeps it.
                let child = self
                    .system
                    .collections
                    .iter()
                    .find(|x| x.name == r.collection);
                let Some((fk, to)) = child.and_then(|c| c.reference_to(table)) else {
                    return Ok("1 = 0".into());
                };
                let (fk, target) = (fk.name.to_string(), to.field.to_string());
                let c = self.alias();
                let e = format!("{c}.{}", d.quote(&r.field));
                let due = self.due(&e, at, r.collection.as_str(), r.field.as_str());
                format!(
                    "NOT EXISTS (SELECT 1 FROM {} {c} WHERE {c}.{} = {t}.{} AND ({due}) IS NOT TRUE)",
                    q(r.collection.as_str())?,
                    q(&fk)?,
                    q(&target)?
                )
            }
        })
    }

    /// Every one of `conds` holds (`never`: a field with no rule, never due); for a row
    /// its person had erased while an obligation kept it, every obligation among them.
    fn all_due(
        &mut self,
        rule: &CollectionRule,
        t: &str,
        conds: &[&Condition],
        never: bool,
    ) -> Result<String, SourceError> {
        let mut all = Vec::new();
        if never {
            all.push("1 = 0".to_owned());
        } else {
            for c in conds {
                all.push(self.condition(&rule.collection, t, c)?);
            }
        }
        let all = if all.is_empty() {
            "1 = 0".to_owned()
        } else {
            all.join(" AND ")
        };
        if rule.erased_keys.is_empty() {
            return Ok(format!("({all})"));
        }
        let Some(erased) = self.key_in(rule, &rule.erased_keys, t)? else {
            return Ok(format!("({all})"));
        };
        let mut kept = vec![erased];
        for c in conds.iter().filter(|c| c.obligation) {
            kept.push(self.condition(&rule.collection, t, c)?);
        }
        Ok(format!("(({all}) OR ({}))", kept.join(" AND ")))
    }

    /// Every condition of a field holds (a field with no rule is never due).
    fn field_due(
        &mut self,
        rule: &CollectionRule,
        t: &str,
        field: &str,
    ) -> Result<String, SourceError> {
        let Some(f) = rule.fields.iter().find(|f| f.field == field) else {
            return Ok("1 = 0".into());
        };
        let conds: Vec<&Condition> = f.conditions.iter().collect();
        self.all_due(rule, t, &conds, conds.is_empty())
    }

    /// The row `t` goes: every field due, no row that stays refers to it, not restricted.
    fn row_due(&mut self, rule: &CollectionRule, t: &str) -> Result<String, SourceError> {
        // Every field due is every condition of every field holding; fields serving the
        // same purpose share their condition, which is tested once.
        let mut conds: Vec<&Condition> = Vec::new();
        let mut never = false;
        for f in &rule.fields {
            never |= f.conditions.is_empty();
            for c in &f.conditions {
                let key =
                    |c: &Condition| (c.purpose.clone(), c.event.clone(), c.keep_for.describe());
                if !conds.iter().any(|x| key(x) == key(c)) {
                    conds.push(c);
                }
            }
        }
        let mut parts = vec![self.all_due(rule, t, &conds, never)?];
        // A row still referenced by rows that stay is kept. In a plan, rows of collections
        // a run handles before this one stay only when they do not go themselves.
        for (child, fk, target) in &rule.children {
            if self.skip.contains(child) {
                continue;
            }
            let d = self.d();
            let q = move |s: &str| id(s).map(|i| d.quote(&i));
            let k = self.alias();
            // MySQL and MariaDB refuse a DELETE whose subquery reads the table deleted
            // from, unless through a derived table (which they materialize).
            let from = if d == Dialect::MySql && *child == rule.collection {
                format!("(SELECT {} FROM {}) {k}", q(fk)?, q(child)?)
            } else {
                format!("{} {k}", q(child)?)
            };
            let head = format!(
                "NOT EXISTS (SELECT 1 FROM {from} WHERE {k}.{} = {t}.{}",
                q(fk)?,
                q(target)?
            );
            let earlier = self.earlier;
            let before = earlier
                .iter()
                .position(|r| r.system == rule.system && r.collection == *child);
            parts.push(match before {
                Some(at)
                    if earlier[at].mode == ErasureMode::DeleteRow
                        && earlier[at].held_by.is_none() =>
                {
                    self.earlier = &earlier[..at];
                    let goes = self.row_due(&earlier[at], &k);
                    self.earlier = earlier;
                    format!("{head} AND ({}) IS NOT TRUE)", goes?)
                }
                _ => format!("{head})"),
            });
        }
        parts.push(self.unrestricted(rule, t)?);
        Ok(parts.join(" AND "))
    }

    /// Leaves out the rows of people who restricted processing (Art. 18).
    fn unrestricted(&mut self, rule: &CollectionRule, t: &str) -> Result<String, SourceError> {
        if rule.restricted_keys.is_empty() {
            return Ok("1 = 1".into());
        }
        Ok(match self.key_in(rule, &rule.restricted_keys, t)? {
            Some(listed) => format!("NOT ({listed})"),
            // Without a single key the rows cannot be told apart: keep them all.
            None => "1 = 0".into(),
        })
    }

    /// Row `t`'s key is one of `keys` (each the values of the key's columns, in order);
    /// None where the collection has no primary key to name rows by.
    fn key_in(
        &mut self,
        rule: &CollectionRule,
        keys: &[Vec<String>],
        t: &str,
    ) -> Result<Option<String>, SourceError> {
        let key = self.db.primary_key(self.system, &rule.collection);
        if key.is_empty() {
            return Ok(None);
        }
        let d = self.d();
        let cols: Vec<(String, String)> = key_columns(self.db, &rule.collection, &key)?
            .into_iter()
            .map(|(q, sql_type)| (format!("{t}.{q}"), sql_type))
            .collect();
        // Each row's key as bound parameters, one per column.
        let mut rows: Vec<Vec<String>> = Vec::new();
        for values in keys.iter().filter(|v| v.len() == cols.len()) {
            let mut params = Vec::new();
            for ((_, sql_type), v) in cols.iter().zip(values) {
                self.binds.push(v.clone());
                params.push(d.typed_param(self.binds.len(), sql_type));
            }
            rows.push(params);
        }
        if rows.is_empty() {
            return Ok(Some("1 = 0".into()));
        }
        Ok(Some(match cols.as_slice() {
            // One column: a list, which an index on the key serves.
            [(col, _)] => format!("{col} IN ({})", rows.concat().join(", ")),
            _ => {
                let any: Vec<String> = rows
                    .iter()
                    .map(|params| {
                        let all: Vec<String> = cols
                            .iter()
                            .zip(params)
                            .map(|((col, _), p)| format!("{col} = {p}"))
                            .collect();
                        format!("({})", all.join(" AND "))
                    })
                    .collect();
                format!("({})", any.join(" OR "))
            }
        }))
    }

    fn finish(self, sql: String) -> Pred {
        Pred {
            sql,
            binds: self.binds,
        }
    }
}

/// What erases a field of a row that stays.
#[derive(Clone, Debug)]
enum MaskTo {
    Null,
    Value(String),
    /// `erased-` and the row's key: a UNIQUE column that may not be NULL needs a value of
    /// its own per row, and the key reveals nothing the row does not already hold.
    RowKey(Vec<Identifier>),
}

impl MaskTo {
    /// The erased value of row `t` as SQL, its bound value pushed to `binds` (typed as
    /// `sql_type`).
    fn sql(&self, d: Dialect, t: &str, binds: &mut Vec<String>, sql_type: &str) -> String {
        match self {
            Self::Null => "NULL".to_owned(),
            Self::Value(v) => {
                binds.push(v.clone());
                d.typed_param(binds.len(), sql_type)
            }
            Self::RowKey(keys) => {
                let parts: Vec<String> = keys
                    .iter()
                    .map(|k| match d {
                        Dialect::MySql => format!("CAST({t}.{} AS CHAR)", d.quote(k)),
                        _ => format!("CAST({t}.{} AS TEXT)", d.quote(k)),
                    })
                    .collect();
                match d {
                    Dialect::MySql => format!("CONCAT('erased-', {})", parts.join(", '-', ")),
                    _ => format!("('erased-' || {})", parts.join(" || '-' || ")),
                }
            }
        }
    }
}

/// The value that erases a kept row's field.
fn mask_for(db: &SourceDb, system: &System, table: &str, field: &str) -> MaskTo {
    let col = db.schema.column(table, field);
    let masking = system
        .collections
        .iter()
        .find(|c| c.name.as_str() == table)
        .and_then(|c| c.fields.iter().find(|f| f.name.as_str() == field))
        .and_then(|f| f.masking.clone());
    let nullable = col.is_none_or(|c| c.nullable);
    let keys: Vec<Identifier> = db
        .primary_key(system, table)
        .iter()
        .filter_map(|k| Identifier::parse(k).ok())
        .collect();
    match masking {
        Some(Masking::Fixed(s)) => MaskTo::Value(s),
        _ if nullable => MaskTo::Null,
        _ if col.is_some_and(|c| c.is_numeric()) => MaskTo::Value("0".into()),
        _ if col.is_some_and(|c| c.is_text() && c.unique) && !keys.is_empty() => {
            MaskTo::RowKey(keys)
        }
        _ if col.is_some_and(|c| c.is_text()) => MaskTo::Value("[erased]".into()),
        _ => MaskTo::Value("1970-01-01 00:00:00".into()),
    }
}

/// Whether `field` of `table` is a key: a primary key, a reference or a column that a
/// reference points at. Keys are never masked.
fn is_key(system: &System, table: &str, field: &str) -> bool {
    system
        .collections
        .iter()
        .find(|c| c.name.as_str() == table)
        .and_then(|c| {
            let f = c.fields.iter().find(|f| f.name.as_str() == field)?;
            Some(system.is_key(c, f))
        })
        .unwrap_or(false)
}

/// The fields a run masks in the rows of `rule` that stay: in `keep_row` collections the
/// due fields, in `delete_row` collections the due fields of rows a kept row still
/// references (or not yet due as a whole); never a key.
fn mask_targets<'r>(system: &System, rule: &'r CollectionRule) -> Vec<&'r str> {
    if rule.mode == ErasureMode::DeleteRow && rule.children.is_empty() {
        // Where every field is due by the same conditions and no row can pin another,
        // a row with a due field is wholly due and goes: nothing is left to mask.
        let conditions = |f: &crate::retention::FieldRule| {
            let mut c: Vec<(String, String, String)> = f
                .conditions
                .iter()
                .map(|c| (c.purpose.clone(), c.event.clone(), c.keep_for.describe()))
                .collect();
            c.sort();
            c
        };
        let mut all = rule.fields.iter().map(conditions);
        if let Some(first) = all.next()
            && all.all(|c| c == first)
        {
            return Vec::new();
        }
    }
    rule.fields
        .iter()
        .map(|f| f.field.as_str())
        .filter(|f| !is_key(system, &rule.collection, f))
        .collect()
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
            cause: e,
        })?;
    let n: i64 = row.try_get(0).map_err(|e| SourceError::Query {
        system: db.system.clone(),
        what: "reading a count".into(),
        cause: e,
    })?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The "not yet masked" predicate of a field of row `t`, appended to `b`.
fn not_masked(b: &mut Builder, table: &str, t: &str, field: &Identifier, value: &MaskTo) -> String {
    let d = b.d();
    match value {
        MaskTo::Null => format!("{t}.{} IS NOT NULL", d.quote(field)),
        _ => {
            let sql_type =
                b.db.schema
                    .column(table, field.as_str())
                    .map_or("text", |c| c.sql_type.as_str())
                    .to_owned();
            let erased = value.sql(d, t, &mut b.binds, &sql_type);
            format!("{t}.{} <> {erased}", d.quote(field))
        }
    }
}

/// The predicate of a field's masking in row `t`: due, not masked yet, not restricted.
fn mask_due(
    b: &mut Builder,
    rule: &CollectionRule,
    t: &str,
    field: &str,
) -> Result<(String, Act), SourceError> {
    let fid = id(field)?;
    let value = mask_for(b.db, b.system, &rule.collection, field);
    let due = b.field_due(rule, t, field)?;
    let nm = not_masked(b, &rule.collection, t, &fid, &value);
    let free = b.unrestricted(rule, t)?;
    Ok((format!("{due} AND {nm} AND {free}"), Act::Mask(fid, value)))
}

/// The keys of the rows a run deletes, by `(system, collection)`, for the collections a
/// plan works out row by row: those whose rows refer to each other, and those such rows
/// refer to.
pub type Going = BTreeMap<(String, String), BTreeSet<String>>;

fn going_key(rule: &CollectionRule, collection: &str) -> (String, String) {
    (rule.system.clone(), collection.to_owned())
}

/// Rows due for deletion, and values due for masking per field, as a run that applies
/// `earlier` (the rules before this one, in a run's order) first would find them. Where
/// rows of this collection, or of a collection before it in `going`, refer to each other,
/// the rows are followed one by one and this collection's going rows added to `going`.
pub async fn count_due(
    db: &SourceDb,
    system: &System,
    rule: &CollectionRule,
    earlier: &[CollectionRule],
    going: &mut Going,
    now: DateTime<Utc>,
) -> Result<(u64, Vec<(String, u64)>), SourceError> {
    let table = id(&rule.collection)?;
    let t = "t";
    let mut fields = Vec::new();
    let row_by_row = self_refs(rule).next().is_some()
        || rule
            .children
            .iter()
            .any(|(c, _, _)| going.contains_key(&going_key(rule, c)));
    match rule.mode {
        ErasureMode::DeleteRow if row_by_row => {
            // A row a row of its own collection refers to goes once that row has gone:
            // the run repeats until nothing more goes; a row that such rows refer to goes
            // once they have. Both are counted here row by row.
            let gone = going_row_by_row(db, system, rule, earlier, going, now).await?;
            for f in mask_targets(system, rule) {
                let mut b = Builder::new(db, system, now, earlier);
                let (pred, _) = mask_due(&mut b, rule, t, f)?;
                let keys = select_keys(db, system, rule, &b.finish(pred)).await?;
                let n = keys.iter().filter(|k| !gone.contains(*k)).count();
                fields.push((f.to_owned(), n as u64));
            }
            let n = gone.len() as u64;
            going.insert(going_key(rule, &rule.collection), gone);
            Ok((n, fields))
        }
        ErasureMode::DeleteRow => {
            let mut b = Builder::new(db, system, now, earlier);
            let sql = b.row_due(rule, t)?;
            let rows = query_count(db, &b.finish(sql), &table).await?;
            for f in mask_targets(system, rule) {
                let mut b = Builder::new(db, system, now, earlier);
                let (pred, _) = mask_due(&mut b, rule, t, f)?;
                let goes = b.row_due(rule, t)?;
                let sql = format!("{pred} AND ({goes}) IS NOT TRUE");
                fields.push((f.to_owned(), query_count(db, &b.finish(sql), &table).await?));
            }
            Ok((rows, fields))
        }
        ErasureMode::KeepRow => {
            for f in mask_targets(system, rule) {
                let mut b = Builder::new(db, system, now, earlier);
                let (pred, _) = mask_due(&mut b, rule, t, f)?;
                fields.push((
                    f.to_owned(),
                    query_count(db, &b.finish(pred), &table).await?,
                ));
            }
            Ok((0, fields))
        }
    }
}

/// The references of a collection's rows to rows of the same collection:
/// `(referencing field, referenced field)`.
fn self_refs(rule: &CollectionRule) -> impl Iterator<Item = (&str, &str)> {
    rule.children
        .iter()
        .filter(|(child, _, _)| *child == rule.collection)
        .map(|(_, fk, target)| (fk.as_str(), target.as_str()))
}

/// `e` as text.
fn as_text(d: Dialect, e: &str) -> String {
    match d {
        Dialect::MySql => format!("CAST({e} AS CHAR)"),
        _ => format!("CAST({e} AS TEXT)"),
    }
}

/// The row's key columns (the primary key), or every column a reference points at.
fn identity_columns(db: &SourceDb, system: &System, rule: &CollectionRule) -> Vec<String> {
    let key = db.primary_key(system, &rule.collection);
    if !key.is_empty() {
        return key;
    }
    self_refs(rule)
        .map(|(_, target)| target.to_owned())
        .collect()
}

/// The keys (as one text each) of the rows of `rule`'s collection matching `pred`.
async fn select_keys(
    db: &SourceDb,
    system: &System,
    rule: &CollectionRule,
    pred: &Pred,
) -> Result<std::collections::BTreeSet<String>, SourceError> {
    let d = db.dialect;
    let cols = identity_columns(db, system, rule)
        .iter()
        .map(|c| Ok(as_text(d, &format!("t.{}", d.quote(&id(c)?)))))
        .collect::<Result<Vec<_>, SourceError>>()?;
    let rows = fetch_rows(db, rule, &cols, pred).await?;
    Ok(rows.into_iter().map(|r| r.join("\u{1f}")).collect())
}

/// Columns `cols` (text expressions over `t`) of the rows matching `pred`, NULL as "".
/// The key columns of `table`, quoted, each with its SQL type.
fn key_columns(
    db: &SourceDb,
    table: &str,
    key: &[String],
) -> Result<Vec<(String, String)>, SourceError> {
    key.iter()
        .map(|k| {
            let sql_type = db
                .schema
                .column(table, k)
                .map_or("text".to_owned(), |c| c.sql_type.clone());
            Ok((db.dialect.quote(&id(k)?), sql_type))
        })
        .collect()
}

/// The keys among `rule.erased_keys` whose rows are gone: nothing more is left to do
/// for them.
pub async fn erased_gone(
    db: &SourceDb,
    system: &System,
    rule: &CollectionRule,
) -> Result<Vec<Vec<String>>, SourceError> {
    if rule.erased_keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut b = Builder::new(db, system, Utc::now(), &[]);
    let Some(listed) = b.key_in(rule, &rule.erased_keys, "t")? else {
        return Ok(Vec::new());
    };
    let cols = db
        .primary_key(system, &rule.collection)
        .iter()
        .map(|k| {
            Ok(as_text(
                db.dialect,
                &format!("t.{}", db.dialect.quote(&id(k)?)),
            ))
        })
        .collect::<Result<Vec<_>, SourceError>>()?;
    let present: std::collections::BTreeSet<Vec<String>> =
        fetch_rows(db, rule, &cols, &b.finish(listed))
            .await?
            .into_iter()
            .collect();
    Ok(rule
        .erased_keys
        .iter()
        .filter(|k| !present.contains(*k))
        .cloned()
        .collect())
}

async fn fetch_rows(
    db: &SourceDb,
    rule: &CollectionRule,
    cols: &[String],
    pred: &Pred,
) -> Result<Vec<Vec<String>>, SourceError> {
    let sql = format!(
        "SELECT {} FROM {} t WHERE {}",
        cols.join(", "),
        db.dialect.quote(&id(&rule.collection)?),
        pred.sql
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in &pred.binds {
        q = q.bind(b.clone());
    }
    let rows = q
        .fetch_all(db.pool())
        .await
        .map_err(|e| SourceError::Query {
            system: db.system.clone(),
            what: format!("reading due rows of `{}`", rule.collection),
            cause: e,
        })?;
    rows.iter()
        .map(|r| {
            (0..cols.len())
                .map(|i| {
                    r.try_get::<Option<String>, _>(i)
                        .map(Option::unwrap_or_default)
                        .map_err(|e| SourceError::Query {
                            system: db.system.clone(),
                            what: "reading a key".into(),
                            cause: e,
                        })
                })
                .collect()
        })
        .collect()
}

/// The keys of the rows of `rule`'s collection that a run deletes, followed row by row:
/// due ones that no staying row refers to, repeatedly (children first), so a chain of due
/// rows of the collection goes whole and a cycle stays; a row that rows of a collection in
/// `going` refer to goes only if all of those go.
async fn going_row_by_row(
    db: &SourceDb,
    system: &System,
    rule: &CollectionRule,
    earlier: &[CollectionRule],
    going: &Going,
    now: DateTime<Utc>,
) -> Result<BTreeSet<String>, SourceError> {
    let d = db.dialect;
    let edges: Vec<(String, String)> = self_refs(rule)
        .map(|(fk, target)| (fk.to_owned(), target.to_owned()))
        .collect();
    // Referencing collections followed row by row, with the column they refer to here.
    let followed: Vec<(&CollectionRule, &str, &str)> = rule
        .children
        .iter()
        .filter(|(c, _, _)| *c != rule.collection && going.contains_key(&going_key(rule, c)))
        .filter_map(|(c, fk, target)| {
            let child = earlier
                .iter()
                .find(|r| r.system == rule.system && r.collection == *c)?;
            Some((child, fk.as_str(), target.as_str()))
        })
        .collect();
    // Due by everything but the references of its own rows and of the followed ones.
    let mut own = rule.clone();
    own.children
        .retain(|(child, _, _)| *child != rule.collection);
    let skip: Vec<String> = followed
        .iter()
        .map(|(c, _, _)| c.collection.clone())
        .collect();
    let col = |c: &str| -> Result<String, SourceError> {
        Ok(as_text(d, &format!("t.{}", d.quote(&id(c)?))))
    };
    let key_cols = identity_columns(db, system, rule);
    let mut cols = Vec::new();
    for c in &key_cols {
        cols.push(col(c)?);
    }
    for (fk, target) in &edges {
        cols.push(col(target)?);
        cols.push(col(fk)?);
    }
    for (_, _, target) in &followed {
        cols.push(col(target)?);
    }
    let mut b = Builder::new(db, system, now, earlier);
    b.skip = skip.clone();
    let sql = b.row_due(&own, "t")?;
    let due = fetch_rows(db, rule, &cols, &b.finish(sql)).await?;
    // The values staying rows of its own refer to, per reference.
    let mut pinned: Vec<BTreeSet<String>> = Vec::new();
    for (fk, _) in &edges {
        let mut b = Builder::new(db, system, now, earlier);
        b.skip = skip.clone();
        let goes = b.row_due(&own, "t")?;
        let fkc = format!("t.{}", d.quote(&id(fk)?));
        let sql = format!("{fkc} IS NOT NULL AND ({goes}) IS NOT TRUE");
        let rows = fetch_rows(db, rule, &[as_text(d, &fkc)], &b.finish(sql)).await?;
        pinned.push(
            rows.into_iter()
                .filter_map(|r| r.into_iter().next())
                .collect(),
        );
    }
    // The values staying rows of each followed collection refer to.
    let mut held: Vec<BTreeSet<String>> = Vec::new();
    for (child, fk, _) in &followed {
        let gone = &going[&going_key(rule, &child.collection)];
        let child_keys = identity_columns(db, system, child);
        let mut ccols = Vec::new();
        for c in &child_keys {
            ccols.push(col(c)?);
        }
        ccols.push(col(fk)?);
        let fkc = format!("t.{}", d.quote(&id(fk)?));
        let pred = Pred {
            sql: format!("{fkc} IS NOT NULL"),
            binds: Vec::new(),
        };
        let rows = fetch_rows(db, child, &ccols, &pred).await?;
        let k = child_keys.len();
        held.push(
            rows.into_iter()
                .filter(|r| !gone.contains(&r[..k].join("\u{1f}")))
                .map(|r| r[k].clone())
                .collect(),
        );
    }
    let n = key_cols.len();
    let f0 = n + 2 * edges.len();
    let mut by_target: Vec<BTreeMap<&str, Vec<usize>>> = vec![BTreeMap::new(); edges.len()];
    for (i, row) in due.iter().enumerate() {
        for (e, map) in by_target.iter_mut().enumerate() {
            let target = row[n + 2 * e].as_str();
            if !target.is_empty() {
                map.entry(target).or_default().push(i);
            }
        }
    }
    let mut blocked = vec![false; due.len()];
    let mut referrers = vec![0usize; due.len()];
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); due.len()];
    for (i, row) in due.iter().enumerate() {
        for (f, values) in held.iter().enumerate() {
            if values.contains(&row[f0 + f]) {
                blocked[i] = true;
            }
        }
        for e in 0..edges.len() {
            if pinned[e].contains(&row[n + 2 * e]) {
                blocked[i] = true;
            }
            let fk = row[n + 2 * e + 1].as_str();
            for &p in by_target[e].get(fk).into_iter().flatten() {
                parents[i].push(p);
                referrers[p] += 1;
            }
        }
    }
    let mut ready: Vec<usize> = (0..due.len())
        .filter(|&i| referrers[i] == 0 && !blocked[i])
        .collect();
    let mut gone = BTreeSet::new();
    while let Some(i) = ready.pop() {
        gone.insert(due[i][..n].join("\u{1f}"));
        for &p in &parents[i] {
            referrers[p] -= 1;
            if referrers[p] == 0 && !blocked[p] {
                ready.push(p);
            }
        }
    }
    Ok(gone)
}

/// One finished batch: rows deleted, or values of `field` masked.
pub struct Batch {
    pub field: Option<String>,
    pub rows: u64,
    /// How long its transaction took.
    pub took: Duration,
}

/// How batches walk a table: in its physical order where the database offers one, so each
/// batch reads the next stretch of the table once, as a plain `DELETE` would.
#[derive(Clone, Debug, PartialEq)]
enum Walk {
    /// PostgreSQL 14 or later, an ordinary table: ranges of pages (a TID range scan). The
    /// table's rows and rows per page, as its statistics estimate them (rows 0: unknown).
    Pages { rows: f64, rows_per_page: f64 },
    /// A SQLite table with a rowid (reached by this name): ranges of rowids.
    Rowid(&'static str),
    /// A SQLite table with a rowid and an index on the event column that decides what is
    /// due, where the due rows are few or lie in the index's order: stretches of the index.
    Index(&'static str, EventIndex),
    /// Anything else: ranges of the primary key.
    Key,
}

/// Where one target (whole rows, or one field) has got to.
#[derive(Clone, Debug, Default)]
struct Position {
    /// The last key or rowid handled, or the next page to read.
    after: Option<String>,
    /// Rows (rowid walk) or pages (page walk) the next batch spans.
    span: u64,
    /// The table's length in pages, as last read (page walk).
    pages: u64,
    /// Where the page walk ends when it knows that no due row lies beyond.
    end: Option<u64>,
    /// Where the index walk got to.
    index: IndexAt,
    /// Rows acted on since the walk began.
    acted: u64,
    /// The walk reached the end of the table.
    finished: bool,
}

/// Progress of a run through one collection: how it walks, and how far each target got.
#[derive(Default)]
pub struct Cursors {
    walk: Option<Walk>,
    at: std::collections::BTreeMap<Option<String>, Position>,
}

impl Cursors {
    pub fn new() -> Self {
        Self::default()
    }

    /// How the table was read: `pages`, `rowid`, `index <name>` or `key`.
    pub fn walked_by(&self) -> Option<String> {
        Some(match self.walk.as_ref()? {
            Walk::Pages { .. } => "pages".to_owned(),
            Walk::Rowid(_) => "rowid".to_owned(),
            Walk::Index(_, ix) => format!("index {}", ix.name()),
            Walk::Key => "key".to_owned(),
        })
    }
}

/// A batch spans at most this many times the batch size (rows scanned, by estimate on
/// PostgreSQL), so a run through rows that are mostly not due still moves quickly while no
/// transaction grows far past the size asked for.
const MAX_SPAN: u64 = 4;

/// The span of the next batch: aimed at `limit` rows acted on, at most doubling or halving
/// from one batch to the next, and within `1..=max`.
fn next_span(span: u64, acted: u64, limit: u64, max: u64) -> u64 {
    let aim = match acted {
        0 => span.saturating_mul(2),
        n => span.saturating_mul(limit) / n,
    };
    aim.clamp(span / 2, span.saturating_mul(2))
        .clamp(1, max.max(1))
}

async fn find_walk(
    db: &SourceDb,
    table: &Identifier,
    rule: &CollectionRule,
    now: DateTime<Utc>,
    limit: u64,
) -> Walk {
    let tq = db.dialect.quote(table);
    match db.dialect {
        Dialect::Postgres => {
            let q = sqlx::query(
                "SELECT CAST(c.relkind AS TEXT), CAST(c.reltuples AS FLOAT8), CAST(c.relpages AS FLOAT8), \
                 CAST(current_setting('server_version_num') AS INTEGER) \
                 FROM pg_class c WHERE c.oid = CAST($1 AS regclass)",
            )
            .bind(tq);
            let Ok(row) = q.fetch_one(db.pool()).await else {
                return Walk::Key;
            };
            let kind: String = row.try_get(0).unwrap_or_default();
            let (tuples, pages): (f64, f64) = (
                row.try_get(1).unwrap_or(-1.0),
                row.try_get(2).unwrap_or(0.0),
            );
            let version: i32 = row.try_get(3).unwrap_or(0);
            // TID range scans came with PostgreSQL 14; partitions each have their own pages.
            if kind != "r" || version < 140_000 {
                return Walk::Key;
            }
            // Without statistics, assume the most rows a page can hold (8 KiB pages).
            if tuples > 0.0 && pages > 0.0 {
                Walk::Pages {
                    rows: tuples,
                    rows_per_page: (tuples / pages).max(1.0),
                }
            } else {
                Walk::Pages {
                    rows: 0.0,
                    rows_per_page: 291.0,
                }
            }
        }
        Dialect::Sqlite => {
            // The rowid answers to three names; a column of the same name hides it, and a
            // WITHOUT ROWID table has none.
            let columns = db.schema.tables.get(table.as_str());
            for alias in ["rowid", "_rowid_", "oid"] {
                if columns.is_some_and(|cs| cs.iter().any(|c| c.name.eq_ignore_ascii_case(alias))) {
                    continue;
                }
                let probe = format!("SELECT {alias} FROM {tq} LIMIT 0");
                if sqlx::query(sqlx::AssertSqlSafe(probe))
                    .fetch_optional(db.pool())
                    .await
                    .is_err()
                {
                    return Walk::Key;
                }
                return match index::choose(db, table, alias, rule, now, limit).await {
                    Some(ix) => Walk::Index(alias, ix),
                    None => Walk::Rowid(alias),
                };
            }
            Walk::Key
        }
        Dialect::MySql => Walk::Key,
    }
}

/// What the planner's estimate told a page walk.
enum Narrowed {
    /// Read the whole table.
    Whole,
    /// Nothing is due.
    Nothing,
    /// Due rows lie on these pages and between them only.
    Pages(u64, u64),
}

/// The row estimate of a plan's first line (`... (cost=0.00..1.00 rows=42 width=4)`).
fn estimated_rows(line: &str) -> Option<f64> {
    let at = line.find(" rows=")? + " rows=".len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()?
        .parse()
        .ok()
}

/// What a batch does to the rows it selects.
enum Act {
    Delete,
    /// Set a field to its erased value.
    Mask(Identifier, MaskTo),
}

/// The statement acting on the rows of `t` matching `pred`, with `binds` to bind.
fn act_sql(
    db: &SourceDb,
    table: &Identifier,
    act: &Act,
    pred: &str,
    binds: &mut Vec<String>,
) -> String {
    let d = db.dialect;
    let tq = d.quote(table);
    match act {
        Act::Delete => match d {
            Dialect::MySql => format!("DELETE t FROM {tq} t WHERE {pred}"),
            _ => format!("DELETE FROM {tq} AS t WHERE {pred}"),
        },
        Act::Mask(fid, value) => {
            let set = match value {
                // MySQL's placeholders are positional: the SET value comes first.
                MaskTo::Value(v) if d == Dialect::MySql => {
                    binds.insert(0, v.clone());
                    "?".to_owned()
                }
                _ => {
                    let t = db
                        .schema
                        .column(table.as_str(), fid.as_str())
                        .map_or("text".to_owned(), |c| c.sql_type.clone());
                    value.sql(d, "t", binds, &t)
                }
            };
            match d {
                Dialect::MySql => {
                    format!("UPDATE {tq} t SET t.{} = {set} WHERE {pred}", d.quote(fid))
                }
                _ => format!("UPDATE {tq} AS t SET {} = {set} WHERE {pred}", d.quote(fid)),
            }
        }
    }
}

/// Deletes (or masks) the due rows of the next stretches of the table, each in one
/// transaction; empty when the walk has reached the end. A stretch holds about `limit` due
/// rows (at most `MAX_SPAN` times `limit` rows on SQLite and, by the table's statistics, on
/// PostgreSQL), so batches never rescan the rows an earlier one removed or passed.
///
/// A page walk runs up to `width` neighbouring stretches at once, each on its own
/// connection: the database executes one while it commits another. Every batch is waited
/// for, so each one that committed is returned, next to any that failed.
pub async fn run_batches(
    db: &SourceDb,
    system: &System,
    rule: &CollectionRule,
    now: DateTime<Utc>,
    limit: u32,
    width: usize,
    cursors: &mut Cursors,
) -> Result<Vec<Result<Batch, SourceError>>, SourceError> {
    let table = id(&rule.collection)?;
    let walk = match &cursors.walk {
        Some(w) => w.clone(),
        None => {
            let w = find_walk(db, &table, rule, now, u64::from(limit.max(1))).await;
            cursors.walk.insert(w).clone()
        }
    };
    // Deletions take whole rows, first; then each field of the rows that stay is a
    // batch of its own.
    let mut targets: Vec<Option<&str>> = Vec::new();
    if rule.mode == ErasureMode::DeleteRow {
        targets.push(None);
    }
    targets.extend(mask_targets(system, rule).into_iter().map(Some));
    let repeats = self_refs(rule).next().is_some();
    for target in targets {
        let mut b = Builder::new(db, system, now, &[]);
        let (pred, act) = match target {
            None => (b.row_due(rule, "t")?, Act::Delete),
            Some(f) => mask_due(&mut b, rule, "t", f)?,
        };
        let pred = b.finish(pred);
        // An index walk finds the rows the deciding event makes due; a field may be due
        // by other events, so masks walk the rowids.
        let walk = match (&walk, target) {
            (Walk::Index(alias, _), Some(_)) => Walk::Rowid(alias),
            (w, _) => w.clone(),
        };
        let position = cursors.at.entry(target.map(str::to_owned)).or_default();
        if target.is_none() && repeats && position.finished && position.acted > 0 {
            // Rows whose referrers in the same collection went in this walk go in the next.
            *position = Position::default();
        }
        let stretch = Stretch {
            db,
            system,
            rule,
            table: &table,
            pred: &pred,
            act: &act,
            limit: u64::from(limit.max(1)),
        };
        let batch = |(rows, took)| Batch {
            field: target.map(str::to_owned),
            rows,
            took,
        };
        let acted = match walk {
            Walk::Pages {
                rows,
                rows_per_page,
            } => {
                let mut ranges = Vec::new();
                while ranges.len() < width.max(1) {
                    match stretch.next_pages(rows, rows_per_page, position).await? {
                        Some(r) => ranges.push(r),
                        None => break,
                    }
                }
                let done = join_all(ranges.iter().map(|&r| stretch.act_on_pages(r))).await;
                if !ranges.is_empty() {
                    let acted: u64 = done.iter().flatten().map(|(n, _)| n).sum();
                    let max = stretch.pages_for(rows_per_page, stretch.limit * MAX_SPAN);
                    position.span = next_span(
                        position.span,
                        acted / ranges.len() as u64,
                        stretch.limit,
                        max,
                    );
                }
                done.into_iter().map(|r| r.map(batch)).collect()
            }
            Walk::Rowid(alias) => Vec::from_iter(
                stretch
                    .by_rowid(alias, position)
                    .await?
                    .map(|a| Ok(batch(a))),
            ),
            Walk::Index(alias, ref ix) => Vec::from_iter(
                stretch
                    .by_index(alias, ix, position)
                    .await?
                    .map(|a| Ok(batch(a))),
            ),
            Walk::Key => Vec::from_iter(stretch.by_key(position).await?.map(|a| Ok(batch(a)))),
        };
        if acted.is_empty() {
            position.finished = true;
            if target.is_none() && repeats && position.acted > 0 {
                return Ok(vec![Ok(Batch {
                    field: None,
                    rows: 0,
                    took: Duration::ZERO,
                })]);
            }
            continue;
        }
        position.acted += acted.iter().flatten().map(|b| b.rows).sum::<u64>();
        return Ok(acted);
    }
    Ok(Vec::new())
}

/// One batch's statement parts.
struct Stretch<'a> {
    db: &'a SourceDb,
    system: &'a System,
    rule: &'a CollectionRule,
    table: &'a Identifier,
    pred: &'a Pred,
    act: &'a Act,
    limit: u64,
}

impl Stretch<'_> {
    fn error(&self, what: String) -> impl FnOnce(sqlx::Error) -> SourceError + use<'_> {
        move |e| SourceError::Query {
            system: self.system.id.to_string(),
            what,
            cause: e,
        }
    }

    /// The error of a statement finding where the next batch ends.
    fn walking(&self) -> impl FnOnce(sqlx::Error) -> SourceError + use<'_> {
        self.error(format!("walking `{}`", self.rule.collection))
    }

    /// Acts on the due rows within `range` (a condition on `binds`, which follow the
    /// predicate's), returning how many there were.
    async fn act_within(
        &self,
        range: &str,
        mut binds: Vec<String>,
    ) -> Result<(u64, Duration), SourceError> {
        let pred = format!("{} AND {range}", self.pred.sql);
        let sql = act_sql(self.db, self.table, self.act, &pred, &mut binds);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for v in binds {
            q = q.bind(v);
        }
        let t = Instant::now();
        let n = q
            .execute(self.db.pool())
            .await
            .map_err(self.error(format!("retention in `{}`", self.rule.collection)))?
            .rows_affected();
        Ok((n, t.elapsed()))
    }

    /// `head` (a statement up to its `WHERE`) followed by the predicate, its values bound.
    fn with_pred(
        &self,
        head: &str,
    ) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(format!("{head} {}", self.pred.sql)));
        for v in &self.pred.binds {
            q = q.bind(v.clone());
        }
        q
    }

    /// The predicate's values with `value` added, and its placeholder typed as `sql_type`.
    fn bind(&self, binds: &mut Vec<String>, value: String, sql_type: &str) -> String {
        binds.push(value);
        self.db.dialect.typed_param(binds.len(), sql_type)
    }

    /// PostgreSQL: pages holding about `rows` rows of the table.
    fn pages_for(&self, rows_per_page: f64, rows: u64) -> u64 {
        ((rows as f64 / rows_per_page).ceil() as u64).max(1)
    }

    /// PostgreSQL: claims the next `span` pages for a batch; None at the end of the walk.
    async fn next_pages(
        &self,
        rows: f64,
        rows_per_page: f64,
        at: &mut Position,
    ) -> Result<Option<(u64, u64)>, SourceError> {
        if at.span == 0 {
            at.span = self.pages_for(rows_per_page, self.limit);
            match self.due_pages(rows).await? {
                Narrowed::Whole => {}
                Narrowed::Nothing => {
                    at.end = Some(0);
                    return Ok(None);
                }
                Narrowed::Pages(first, last) => {
                    at.after = Some(first.to_string());
                    at.end = Some(last + 1);
                }
            }
        }
        let from: u64 = at
            .after
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if at.end.is_some_and(|end| from >= end) {
            return Ok(None);
        }
        if from >= at.pages {
            // Read the table's length again: it may have grown since.
            let sql = "SELECT CAST(pg_relation_size(CAST($1 AS regclass)) / \
                       CAST(current_setting('block_size') AS BIGINT) AS BIGINT)";
            let pages: i64 = sqlx::query_scalar(sql)
                .bind(self.db.dialect.quote(self.table))
                .fetch_one(self.db.pool())
                .await
                .map_err(self.error("reading the table's size".into()))?;
            at.pages = u64::try_from(pages).unwrap_or(0);
            if from >= at.pages {
                return Ok(None);
            }
        }
        let to = (from + at.span).min(at.end.unwrap_or(u64::MAX));
        at.after = Some(to.to_string());
        Ok(Some((from, to)))
    }

    /// PostgreSQL: acts on the due rows of pages `from..to`, read by a TID range scan.
    async fn act_on_pages(&self, (from, to): (u64, u64)) -> Result<(u64, Duration), SourceError> {
        let mut binds = self.pred.binds.clone();
        let lo = self.bind(&mut binds, format!("({from},0)"), "tid");
        let hi = self.bind(&mut binds, format!("({to},0)"), "tid");
        self.act_within(&format!("t.ctid >= {lo} AND t.ctid < {hi}"), binds)
            .await
    }

    /// PostgreSQL: when the planner expects few due rows (a nightly run, where an index on
    /// the event finds them), the first and last page holding one, so the walk reads only
    /// that stretch; when it expects many, the whole table is read anyway.
    async fn due_pages(&self, table_rows: f64) -> Result<Narrowed, SourceError> {
        if table_rows <= 0.0 {
            return Ok(Narrowed::Whole);
        }
        let tq = self.db.dialect.quote(self.table);
        let plan = self
            .with_pred(&format!("EXPLAIN SELECT 1 FROM {tq} AS t WHERE"))
            .fetch_all(self.db.pool())
            .await
            .map_err(self.error(format!("planning retention in `{}`", self.rule.collection)))?;
        let expected = plan
            .first()
            .and_then(|l| l.try_get::<String, _>(0).ok())
            .and_then(|l| estimated_rows(&l));
        if expected.is_none_or(|n| n > table_rows / 10.0) {
            return Ok(Narrowed::Whole);
        }
        let row = self
            .with_pred(&format!(
                "SELECT CAST(MIN(t.ctid) AS TEXT), CAST(MAX(t.ctid) AS TEXT) FROM {tq} AS t WHERE"
            ))
            .fetch_one(self.db.pool())
            .await
            .map_err(self.error(format!("finding due rows of `{}`", self.rule.collection)))?;
        let page = |i: usize| -> Option<u64> {
            let tid: Option<String> = row.try_get(i).ok()?;
            tid?.trim_start_matches('(').split(',').next()?.parse().ok()
        };
        Ok(match (page(0), page(1)) {
            (Some(first), Some(last)) => Narrowed::Pages(first, last),
            _ => Narrowed::Nothing,
        })
    }

    /// SQLite: the next `span` rows by rowid, the bound found without testing them.
    async fn by_rowid(
        &self,
        alias: &str,
        at: &mut Position,
    ) -> Result<Option<(u64, Duration)>, SourceError> {
        let tq = self.db.dialect.quote(self.table);
        if at.span == 0 {
            at.span = self.limit;
        }
        // Rowids may be negative: the first stretch starts at the smallest there can be.
        let (after, from) = match at.after.as_deref().and_then(|p| p.parse::<i64>().ok()) {
            Some(r) => (">", r),
            None => (">=", i64::MIN),
        };
        let pick = format!(
            "SELECT COALESCE((SELECT {alias} FROM {tq} WHERE {alias} {after} ?1 ORDER BY {alias} LIMIT 1 OFFSET ?2), \
             (SELECT MAX({alias}) FROM {tq} WHERE {alias} {after} ?1))"
        );
        let to: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(pick))
            .bind(from)
            .bind(i64::try_from(at.span - 1).unwrap_or(i64::MAX))
            .fetch_one(self.db.pool())
            .await
            .map_err(self.walking())?;
        let Some(to) = to else {
            return Ok(None);
        };
        let mut binds = self.pred.binds.clone();
        let lo = self.bind(&mut binds, from.to_string(), "");
        let hi = self.bind(&mut binds, to.to_string(), "");
        let range = format!(
            "t.{alias} {after} CAST({lo} AS INTEGER) AND t.{alias} <= CAST({hi} AS INTEGER)"
        );
        let (n, took) = self.act_within(&range, binds).await?;
        at.after = Some(to.to_string());
        at.span = next_span(at.span, n, self.limit, self.limit * MAX_SPAN);
        Ok(Some((n, took)))
    }

    /// Any database: the next `limit` due rows by primary key (a composite key compared as
    /// a row value), picked first, then acted on by key range.
    async fn by_key(&self, at: &mut Position) -> Result<Option<(u64, Duration)>, SourceError> {
        let d = self.db.dialect;
        let key = self.db.primary_key(self.system, &self.rule.collection);
        if key.is_empty() {
            return Err(SourceError::NoPrimaryKey {
                system: self.system.id.to_string(),
                table: self.rule.collection.clone(),
            });
        }
        let cols = key_columns(self.db, &self.rule.collection, &key)?;
        let tuple = {
            let parts: Vec<String> = cols.iter().map(|(q, _)| format!("t.{q}")).collect();
            match parts.as_slice() {
                [one] => one.clone(),
                _ => format!("({})", parts.join(", ")),
            }
        };
        // The key as bound parameters: one value, or a row value for a composite key.
        let bound = |binds: &mut Vec<String>, values: &[String]| -> String {
            let params: Vec<String> = cols
                .iter()
                .zip(values)
                .map(|((_, sql_type), v)| self.bind(binds, v.clone(), sql_type))
                .collect();
            match params.as_slice() {
                [one] => one.clone(),
                _ => format!("({})", params.join(", ")),
            }
        };
        // The position holds a single key as it is, a composite one as a JSON array.
        let after: Option<Vec<String>> = at.after.as_deref().map(|a| {
            if cols.len() == 1 {
                vec![a.to_owned()]
            } else {
                serde_json::from_str(a).unwrap_or_default()
            }
        });
        let tq = d.quote(self.table);
        let mut binds = self.pred.binds.clone();
        let mut pred = self.pred.sql.clone();
        if let Some(c) = &after {
            pred = format!("{pred} AND {tuple} > {}", bound(&mut binds, c));
        }
        // 1. The last key of the next batch.
        let text = |e: &str| match d {
            Dialect::MySql => format!("CAST({e} AS CHAR)"),
            _ => format!("CAST({e} AS TEXT)"),
        };
        let inner: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, (q, _))| format!("t.{q} AS k{i}"))
            .collect();
        let order: Vec<String> = cols.iter().map(|(q, _)| format!("t.{q}")).collect();
        let outer: Vec<String> = (0..cols.len()).map(|i| text(&format!("k{i}"))).collect();
        let last_first: Vec<String> = (0..cols.len()).map(|i| format!("k{i} DESC")).collect();
        let pick = format!(
            "SELECT {} FROM (SELECT {} FROM {tq} t WHERE {pred} ORDER BY {} LIMIT {}) picked ORDER BY {} LIMIT 1",
            outer.join(", "),
            inner.join(", "),
            order.join(", "),
            self.limit,
            last_first.join(", "),
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(pick));
        for v in &binds {
            q = q.bind(v.clone());
        }
        let row = q
            .fetch_optional(self.db.pool())
            .await
            .map_err(self.error(format!("selecting due rows of `{}`", self.rule.collection)))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let last = (0..cols.len())
            .map(|i| row.try_get::<String, _>(i))
            .collect::<Result<Vec<String>, _>>()
            .map_err(self.error("reading a key".into()))?;
        // 2. Act on the due rows up to it, in one transaction.
        let mut binds = self.pred.binds.clone();
        let mut range = Vec::new();
        if let Some(c) = &after {
            range.push(format!("{tuple} > {}", bound(&mut binds, c)));
        }
        range.push(format!("{tuple} <= {}", bound(&mut binds, &last)));
        let acted = self.act_within(&range.join(" AND "), binds).await?;
        at.after = Some(if cols.len() == 1 {
            last.into_iter().next().unwrap_or_default()
        } else {
            serde_json::to_string(&last).unwrap_or_default()
        });
        Ok(Some(acted))
    }
}

#[cfg(test)]
mod tests {
    use super::{estimated_rows, next_span};

    #[test]
    fn plan_estimates_are_read_from_the_first_line() {
        let line = "Bitmap Heap Scan on page_views t  (cost=5551.67..19129.26 rows=497967 width=4)";
        assert_eq!(estimated_rows(line), Some(497_967.0));
        assert_eq!(
            estimated_rows("Result  (cost=0.00..0.01 rows=1 width=4)"),
            Some(1.0)
        );
        assert_eq!(estimated_rows("Seq Scan on t"), None);
    }

    #[test]
    fn spans_aim_at_the_batch_size_within_bounds() {
        // Half of the rows due: the span doubles, once.
        assert_eq!(next_span(100, 50, 100, 400), 200);
        assert_eq!(next_span(200, 100, 100, 400), 200);
        // Nothing due: it doubles up to the cap, never past it.
        assert_eq!(next_span(300, 0, 100, 400), 400);
        assert_eq!(next_span(400, 0, 100, 400), 400);
        // Denser than expected: it halves at most.
        assert_eq!(next_span(400, 400, 100, 400), 200);
        assert_eq!(next_span(400, 4000, 100, 400), 200);
        // Never empty.
        assert_eq!(next_span(1, 10, 1, 4), 1);
        assert_eq!(next_span(1, 0, 1, 0), 1);
    }
}

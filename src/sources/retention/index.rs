//! SQLite: walking the index on the event column that decides what is due. A row is due
//! when `unixepoch(column)` is at or before the cutoff; every text SQLite reads as such a
//! time sorts before the cutoff's date plus two days, except text in formats that sort
//! elsewhere (a Julian day written as text, say). So the walk reads the index from its
//! start to that date, then passes over the stretches of text proven to hold no due value
//! (see [`next_range`]) and walks every other stretch as well: each entry the rowid walk
//! would find due, the index walk finds too.
//!
//! Where the due rows are many and lie scattered over the table, deleting them in the
//! index's order would write most pages of the table in every batch; such a table is
//! walked by rowid instead.

use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Utc};
use sqlx::Row;

use super::{MAX_SPAN, Position, SourceDb, SourceError, Stretch, next_span};
use crate::policy::{ErasureMode, EventBinding, Identifier};
use crate::retention::CollectionRule;

/// The index a walk follows, and where the due values end in it.
#[derive(Clone, Debug, PartialEq)]
pub struct EventIndex {
    /// The index, quoted.
    name: String,
    /// Its first column (the event), quoted.
    column: String,
    /// The cutoff's date plus two days (`YYYY-MM-DD`): no text before it is proven not due;
    /// any text from it up to the end of its year is.
    upper: String,
}

impl EventIndex {
    /// The index's name, as SQL quotes it.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// An index entry's value as stored, with its storage class: the walk's cursor.
#[derive(Clone, Debug)]
enum Stored {
    Int(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl Stored {
    /// Equal as SQLite compares them (an integer equals the real of the same value).
    fn same(&self, other: &Stored) -> bool {
        match (self, other) {
            (Stored::Int(a), Stored::Int(b)) => a == b,
            (Stored::Real(a), Stored::Real(b)) => a == b,
            (Stored::Int(a), Stored::Real(b)) | (Stored::Real(b), Stored::Int(a)) => {
                *a as f64 == *b && *b as i64 == *a
            }
            (Stored::Text(a), Stored::Text(b)) | (Stored::Blob(a), Stored::Blob(b)) => a == b,
            _ => false,
        }
    }
}

/// A value bound to a statement after the predicate's own.
#[derive(Clone, Debug)]
enum Arg {
    Text(String),
    Int(i64),
    Stored(Stored),
}

/// How far the index walk got.
#[derive(Clone, Debug, Default)]
pub struct IndexAt {
    started: bool,
    done: bool,
    /// The stretch being walked: from `lo` (inclusive; None: the index's start) to `hi`
    /// (exclusive; None: its end).
    lo: Option<String>,
    hi: Option<String>,
    /// The last entry handled within it: its value and rowid.
    after: Option<(Stored, i64)>,
    /// The stretch has been handled to its end.
    exhausted: bool,
}

/// The index to walk for `rule`, if there is one and walking it pays: an index (not
/// partial) whose first column, ascending with the binary collation, is the event of a
/// condition every due row meets, the one with the earliest cutoff; used when the rows
/// before its cutoff are few or lie in the index's order.
pub async fn choose(
    db: &SourceDb,
    table: &Identifier,
    alias: &str,
    rule: &CollectionRule,
    now: DateTime<Utc>,
    limit: u64,
) -> Option<EventIndex> {
    if rule.mode != ErasureMode::DeleteRow {
        return None;
    }
    let mut best: Option<(DateTime<Utc>, EventIndex)> = None;
    // A row its person had erased is due by its obligations alone: only those are met by
    // every due row.
    let met_by_all = |c: &&crate::retention::Condition| rule.erased_keys.is_empty() || c.obligation;
    for c in rule
        .fields
        .iter()
        .flat_map(|f| &f.conditions)
        .filter(met_by_all)
    {
        let (Some(EventBinding::Column(col)), Some(at)) = (&c.binding, c.keep_for.before(now))
        else {
            continue;
        };
        if best.as_ref().is_some_and(|(b, _)| *b <= at) {
            continue;
        }
        let Some(upper) = at
            .checked_add_days(chrono::Days::new(2))
            .filter(|u| (1000..=9998).contains(&u.year()))
        else {
            continue;
        };
        let found: Option<String> = sqlx::query_scalar(
            "SELECT il.name FROM pragma_index_list(?1) AS il \
             JOIN pragma_index_xinfo(il.name) AS ix ON ix.seqno = 0 \
             WHERE il.partial = 0 AND ix.name = ?2 COLLATE NOCASE AND ix.coll = 'BINARY' AND ix.desc = 0 \
             ORDER BY il.name LIMIT 1",
        )
        .bind(table.as_str())
        .bind(col.as_str())
        .fetch_optional(db.pool())
        .await
        .ok()
        .flatten();
        if let Some(name) = found {
            let ix = EventIndex {
                name: format!("\"{}\"", name.replace('"', "\"\"")),
                column: db.dialect.quote(col),
                upper: upper.format("%Y-%m-%d").to_string(),
            };
            best = Some((at, ix));
        }
    }
    let (_, ix) = best?;
    pays(db, table, alias, &ix, limit).await.then_some(ix)
}

/// Whether the index serves the walk, and the rows before its bound lie in its order (the
/// first batch's rows within four times as many rowids) or are a tenth of the table or
/// fewer.
async fn pays(db: &SourceDb, table: &Identifier, alias: &str, ix: &EventIndex, limit: u64) -> bool {
    let tq = db.dialect.quote(table);
    let (name, col) = (&ix.name, &ix.column);
    // The index serves only when it orders values as the column compares them (a column
    // declared with another collation does not): a range of it, in its order.
    let plan = format!(
        "EXPLAIN QUERY PLAN SELECT t.{alias} FROM {tq} AS t INDEXED BY {name} \
         WHERE t.{col} < ?1 ORDER BY t.{col}, t.{alias}"
    );
    let Ok(steps) = sqlx::query(sqlx::AssertSqlSafe(plan))
        .bind(&ix.upper)
        .fetch_all(db.pool())
        .await
    else {
        return false;
    };
    let steps: Vec<String> = steps
        .iter()
        .filter_map(|r| r.try_get::<String, _>(3).ok())
        .collect();
    if !steps.iter().any(|s| s.starts_with("SEARCH"))
        || steps.iter().any(|s| s.contains("TEMP B-TREE"))
    {
        return false;
    }
    let first = format!(
        "SELECT MIN(r), MAX(r), COUNT(*) FROM (SELECT t.{alias} AS r FROM {tq} AS t INDEXED BY {name} \
         WHERE t.{col} < ?1 ORDER BY t.{col}, t.{alias} LIMIT ?2)"
    );
    let Ok(row) = sqlx::query(sqlx::AssertSqlSafe(first))
        .bind(&ix.upper)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_one(db.pool())
        .await
    else {
        return false;
    };
    let (lo, hi, n): (Option<i64>, Option<i64>, i64) = (
        row.try_get(0).ok().flatten(),
        row.try_get(1).ok().flatten(),
        row.try_get(2).unwrap_or(0),
    );
    let (Some(lo), Some(hi)) = (lo, hi) else {
        // Nothing before the bound: the walk only looks past it.
        return true;
    };
    if (hi as i128 - lo as i128 + 1) <= 4 * i128::from(n) {
        return true;
    }
    let size = format!("SELECT MAX({alias}) - MIN({alias}) + 1 FROM {tq}");
    let rows: i64 = match sqlx::query_scalar::<_, Option<i64>>(sqlx::AssertSqlSafe(size))
        .fetch_one(db.pool())
        .await
    {
        Ok(Some(r)) => r,
        _ => return false,
    };
    let tenth = rows / 10 + 1;
    let count = format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM {tq} AS t INDEXED BY {name} WHERE t.{col} < ?1 LIMIT ?2)"
    );
    let before: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count))
        .bind(&ix.upper)
        .bind(tenth)
        .fetch_one(db.pool())
        .await
        .unwrap_or(i64::MAX);
    before < tenth
}

/// The smallest `YYYY-` string sorting after every string that starts with `prefix` (the
/// first bytes of a value, at most five); None when there is none.
fn next_year(prefix: &[u8]) -> Option<String> {
    let digits = prefix
        .iter()
        .take(4)
        .take_while(|b| b.is_ascii_digit())
        .count();
    let after = prefix.get(digits).copied();
    let number = |d: &[u8]| std::str::from_utf8(d).ok()?.parse::<u32>().ok();
    if digits == 4 {
        let year = number(&prefix[..4])?;
        return match after {
            // "2027" or "2027 ...": before "2027-".
            None => Some(format!("{year:04}-")),
            Some(b) if b < b'-' => Some(format!("{year:04}-")),
            _ if year < 9999 => Some(format!("{:04}-", year + 1)),
            _ => None,
        };
    }
    match after {
        // "9x", "20", "2+": the first year starting with these digits, zero-padded.
        None => Some(format!(
            "{:0<4}-",
            std::str::from_utf8(&prefix[..digits]).ok()?
        )),
        Some(b) if b < b'0' => Some(format!(
            "{:0<4}-",
            std::str::from_utf8(&prefix[..digits]).ok()?
        )),
        // "20x": the first year after every year starting with "20".
        _ if digits > 0 => {
            let next = number(&prefix[..digits])? + 1;
            let next = next.to_string();
            (next.len() == digits).then(|| format!("{next:0<4}-"))
        }
        _ => None,
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

impl Stretch<'_> {
    /// A statement with `args` bound after the predicate's values (when `with_pred`).
    fn index_query(
        &self,
        sql: String,
        with_pred: bool,
        args: &[Arg],
    ) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if with_pred {
            for v in &self.pred.binds {
                q = q.bind(v.clone());
            }
        }
        for a in args {
            q = match a.clone() {
                Arg::Text(s) => q.bind(s),
                Arg::Int(i) => q.bind(i),
                Arg::Stored(Stored::Int(i)) => q.bind(i),
                Arg::Stored(Stored::Real(r)) => q.bind(r),
                Arg::Stored(Stored::Text(b) | Stored::Blob(b)) => q.bind(b),
            };
        }
        q
    }

    /// The placeholder of the `n`-th argument after `skip` values: text held as bytes is
    /// bound as a blob and read back as the text it was.
    fn placeholder(skip: usize, args: &mut Vec<Arg>, a: Arg) -> String {
        let text = matches!(a, Arg::Stored(Stored::Text(_)));
        args.push(a);
        let n = skip + args.len();
        if text {
            format!("CAST(?{n} AS TEXT)")
        } else {
            format!("?{n}")
        }
    }

    /// The condition "within `lo..hi`" on the event column.
    fn within(skip: usize, col: &str, at: &IndexAt, args: &mut Vec<Arg>) -> String {
        let mut parts = Vec::new();
        if let Some(lo) = &at.lo {
            let p = Self::placeholder(skip, args, Arg::Text(lo.clone()));
            parts.push(format!("t.{col} >= {p}"));
        }
        if let Some(hi) = &at.hi {
            let p = Self::placeholder(skip, args, Arg::Text(hi.clone()));
            parts.push(format!("t.{col} < {p}"));
        }
        if parts.is_empty() {
            parts.push(format!("t.{col} IS NOT NULL"));
        }
        parts.join(" AND ")
    }

    /// The entry `offset` places into `cond` in the index's order, with its value.
    async fn entry_at(
        &self,
        alias: &str,
        ix: &EventIndex,
        cond: &str,
        args: &[Arg],
        offset: u64,
    ) -> Result<Option<(Stored, i64)>, SourceError> {
        let tq = self.db.dialect.quote(self.table);
        let (name, c) = (&ix.name, &ix.column);
        let sql = format!(
            "SELECT t.{alias}, typeof(t.{c}), \
             CASE WHEN typeof(t.{c}) = 'integer' THEN t.{c} END, \
             CASE WHEN typeof(t.{c}) = 'real' THEN t.{c} END, \
             CASE WHEN typeof(t.{c}) IN ('text', 'blob') THEN CAST(t.{c} AS BLOB) END \
             FROM {tq} AS t INDEXED BY {name} WHERE {cond} ORDER BY t.{c}, t.{alias} LIMIT 1 OFFSET {offset}"
        );
        let row = self
            .index_query(sql, false, args)
            .fetch_optional(self.db.pool())
            .await
            .map_err(self.walking())?;
        let Some(row) = row else {
            return Ok(None);
        };
        let read = || self.error("reading an index entry".into());
        let rowid: i64 = row.try_get(0).map_err(read())?;
        let kind: String = row.try_get(1).map_err(read())?;
        let value = match kind.as_str() {
            "integer" => row.try_get::<Option<i64>, _>(2).map(|v| v.map(Stored::Int)),
            "real" => row
                .try_get::<Option<f64>, _>(3)
                .map(|v| v.map(Stored::Real)),
            "text" => row
                .try_get::<Option<Vec<u8>>, _>(4)
                .map(|v| v.map(Stored::Text)),
            _ => row
                .try_get::<Option<Vec<u8>>, _>(4)
                .map(|v| v.map(Stored::Blob)),
        }
        .map_err(read())?;
        Ok(value.map(|v| (v, rowid)))
    }

    /// Deletes the due rows of the next stretch of the index, in one transaction; None at
    /// the end of the walk.
    pub(super) async fn by_index(
        &self,
        alias: &str,
        ix: &EventIndex,
        pos: &mut Position,
    ) -> Result<Option<(u64, Duration)>, SourceError> {
        if !pos.index.started {
            pos.index = IndexAt {
                started: true,
                hi: Some(ix.upper.clone()),
                ..IndexAt::default()
            };
            pos.span = self.limit;
        }
        loop {
            if pos.index.done {
                return Ok(None);
            }
            if let Some(acted) = self.index_batch(alias, ix, pos).await? {
                return Ok(Some(acted));
            }
            // This stretch is finished: on to the next one that may hold a due value.
            let from = match pos.index.hi.take() {
                // Text from the bound to the end of its year is proven not due.
                Some(hi) if pos.index.lo.is_none() => format!("{}-\u{10FFFF}", &hi[..4]),
                Some(hi) => hi,
                None => {
                    pos.index.done = true;
                    return Ok(None);
                }
            };
            match self.next_range(ix, from).await? {
                Some((lo, hi)) => {
                    pos.index.lo = Some(lo);
                    pos.index.hi = hi;
                    pos.index.after = None;
                    pos.index.exhausted = false;
                }
                None => pos.index.done = true,
            }
        }
    }

    /// From `from` on, the next stretch of the index that may hold a due value. Text that
    /// starts with a four-digit year and `-` is not due when the year is later than the
    /// cutoff's: SQLite either reads it as a time in that year (at the earliest its first
    /// day less the largest offset, 14:59 hours) or not as a time at all. Such stretches
    /// are skipped; any other value begins a stretch that is walked, up to the next year.
    async fn next_range(
        &self,
        ix: &EventIndex,
        mut from: String,
    ) -> Result<Option<(String, Option<String>)>, SourceError> {
        let tq = self.db.dialect.quote(self.table);
        let (name, c) = (&ix.name, &ix.column);
        let sql = format!(
            "SELECT typeof(t.{c}), hex(substr(CAST(t.{c} AS BLOB), 1, 5)) FROM {tq} AS t INDEXED BY {name} \
             WHERE t.{c} >= ?1 ORDER BY t.{c} LIMIT 1"
        );
        loop {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(from.clone())
                .fetch_optional(self.db.pool())
                .await
                .map_err(self.walking())?;
            let Some(row) = row else {
                return Ok(None);
            };
            let read = || self.error("reading an index entry".into());
            let kind: String = row.try_get(0).map_err(read())?;
            let prefix = unhex(&row.try_get::<String, _>(1).map_err(read())?);
            if kind != "text" {
                // Blobs sort after all text: walk them all.
                return Ok(Some((from, None)));
            }
            if prefix.len() == 5 && prefix[..4].iter().all(u8::is_ascii_digit) && prefix[4] == b'-'
            {
                let year = String::from_utf8_lossy(&prefix[..4]);
                let skip = format!("{year}-\u{10FFFF}");
                if skip > from {
                    from = skip;
                    continue;
                }
            }
            let to = next_year(&prefix);
            return Ok(Some((from, to)));
        }
    }

    /// One batch within the current stretch: the next `span` entries from the cursor.
    /// None when the stretch has no entries left.
    async fn index_batch(
        &self,
        alias: &str,
        ix: &EventIndex,
        pos: &mut Position,
    ) -> Result<Option<(u64, Duration)>, SourceError> {
        if pos.index.exhausted {
            return Ok(None);
        }
        let c = &ix.column;
        let span = pos.span.max(1);
        let at = &pos.index;
        // The entry ending the window, found from the cursor: first within its value's
        // rows, then past them.
        let mut args = Vec::new();
        let last = match &at.after {
            None => {
                let cond = Self::within(0, c, at, &mut args);
                self.entry_at(alias, ix, &cond, &args, span - 1).await?
            }
            Some((cv, cr)) => {
                let v = Self::placeholder(0, &mut args, Arg::Stored(cv.clone()));
                let r = Self::placeholder(0, &mut args, Arg::Int(*cr));
                let tie = format!("t.{c} = {v} AND t.{alias} > {r}");
                match self.entry_at(alias, ix, &tie, &args, span - 1).await? {
                    Some(e) => Some(e),
                    None => {
                        let tq = self.db.dialect.quote(self.table);
                        let count = format!(
                            "SELECT COUNT(*) FROM {tq} AS t INDEXED BY {} WHERE {tie}",
                            ix.name
                        );
                        let m: i64 = self
                            .index_query(count, false, &args)
                            .fetch_one(self.db.pool())
                            .await
                            .map_err(self.walking())?
                            .try_get(0)
                            .map_err(self.error("reading a count".into()))?;
                        let mut args = Vec::new();
                        let v = Self::placeholder(0, &mut args, Arg::Stored(cv.clone()));
                        let mut cond = format!("t.{c} > {v}");
                        if let Some(hi) = &at.hi {
                            let h = Self::placeholder(0, &mut args, Arg::Text(hi.clone()));
                            cond.push_str(&format!(" AND t.{c} < {h}"));
                        }
                        let rest = span.saturating_sub(1 + u64::try_from(m).unwrap_or(0));
                        self.entry_at(alias, ix, &cond, &args, rest).await?
                    }
                }
            }
        };
        // The window as index ranges, each deleted by its own statement.
        let skip = self.pred.binds.len();
        let mut ranges: Vec<(String, Vec<Arg>)> = Vec::new();
        let mut range = |f: &dyn Fn(&mut Vec<Arg>) -> String| {
            let mut args = Vec::new();
            let cond = f(&mut args);
            ranges.push((cond, args));
        };
        let ph = |args: &mut Vec<Arg>, a: Arg| Self::placeholder(skip, args, a);
        match (&at.after, &last) {
            (None, None) => range(&|args| Self::within(skip, c, at, args)),
            (None, Some((lv, lr))) => {
                range(&|args| {
                    let mut cond = String::new();
                    if let Some(lo) = &at.lo {
                        let p = ph(args, Arg::Text(lo.clone()));
                        cond.push_str(&format!("t.{c} >= {p} AND "));
                    }
                    let l = ph(args, Arg::Stored(lv.clone()));
                    cond.push_str(&format!("t.{c} < {l}"));
                    cond
                });
                range(&|args| {
                    let l = ph(args, Arg::Stored(lv.clone()));
                    let r = ph(args, Arg::Int(*lr));
                    format!("t.{c} = {l} AND t.{alias} <= {r}")
                });
            }
            (Some((cv, cr)), Some((lv, lr))) if cv.same(lv) => range(&|args| {
                let v = ph(args, Arg::Stored(cv.clone()));
                let from = ph(args, Arg::Int(*cr));
                let to = ph(args, Arg::Int(*lr));
                format!("t.{c} = {v} AND t.{alias} > {from} AND t.{alias} <= {to}")
            }),
            (Some((cv, cr)), last) => {
                range(&|args| {
                    let v = ph(args, Arg::Stored(cv.clone()));
                    let r = ph(args, Arg::Int(*cr));
                    format!("t.{c} = {v} AND t.{alias} > {r}")
                });
                range(&|args| {
                    let v = ph(args, Arg::Stored(cv.clone()));
                    let mut cond = format!("t.{c} > {v}");
                    let end = match last {
                        Some((lv, _)) => Some(ph(args, Arg::Stored(lv.clone()))),
                        None => at.hi.clone().map(|h| ph(args, Arg::Text(h))),
                    };
                    if let Some(e) = end {
                        cond.push_str(&format!(" AND t.{c} < {e}"));
                    }
                    cond
                });
                if let Some((lv, lr)) = last {
                    range(&|args| {
                        let l = ph(args, Arg::Stored(lv.clone()));
                        let r = ph(args, Arg::Int(*lr));
                        format!("t.{c} = {l} AND t.{alias} <= {r}")
                    });
                }
            }
        }
        let tq = self.db.dialect.quote(self.table);
        let what = format!("retention in `{}`", self.rule.collection);
        let t = Instant::now();
        let mut tx = self
            .db
            .pool()
            .begin()
            .await
            .map_err(self.error(what.clone()))?;
        let mut n = 0;
        for (cond, args) in &ranges {
            let sql = format!(
                "DELETE FROM {tq} AS t INDEXED BY {} WHERE ({}) AND {cond}",
                ix.name, self.pred.sql
            );
            n += self
                .index_query(sql, true, args)
                .execute(&mut *tx)
                .await
                .map_err(self.error(what.clone()))?
                .rows_affected();
        }
        tx.commit().await.map_err(self.error(what))?;
        let took = t.elapsed();
        let at = &mut pos.index;
        at.exhausted = last.is_none();
        at.after = last;
        pos.span = next_span(pos.span, n, self.limit, self.limit * MAX_SPAN);
        Ok(Some((n, took)))
    }
}

#[cfg(test)]
mod tests {
    use super::next_year;

    #[test]
    fn the_next_year_sorts_after_every_value_with_the_prefix() {
        let cases: [(&[u8], Option<&str>); 10] = [
            (b"2027-", Some("2028-")),
            (b"2027", Some("2027-")),
            (b"2027 ", Some("2027-")),
            (b"20270", Some("2028-")),
            (b"9999x", None),
            (b"24600", Some("2461-")),
            (b"9", Some("9000-")),
            (b"20a", Some("2100-")),
            (b"99a", None),
            (b"now", None),
        ];
        for (prefix, want) in cases {
            let got = next_year(prefix);
            assert_eq!(got.as_deref(), want, "{}", String::from_utf8_lossy(prefix));
            if let Some(y) = got {
                // The value sorts before it; a prefix of five bytes may go on.
                assert!(prefix < y.as_bytes(), "{y}");
                if prefix.len() < 5 {
                    continue;
                }
                let mut longer = prefix.to_vec();
                longer.extend_from_slice("\u{10FFFF}".as_bytes());
                assert!(longer.as_slice() < y.as_bytes(), "{y}");
            }
        }
    }
}

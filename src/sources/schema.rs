//! The live schema of a company database, and the check that it matches the policy.

use std::collections::BTreeMap;

use sqlx::{AnyConnection, Row};

use super::SourceError;
use super::sql::Dialect;
use crate::policy::{Collection, EventBinding, Field, Masking, System};

#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    pub sql_type: String,
    pub nullable: bool,
    pub max_len: Option<i64>,
    pub primary_key: bool,
    /// The column compares text case-blind by its collation (MySQL/MariaDB `*_ci`).
    pub case_blind: bool,
    /// The column is part of a unique index or constraint: two rows cannot be given the
    /// same mask.
    pub unique: bool,
}

impl ColumnInfo {
    pub fn is_text(&self) -> bool {
        let t = self.sql_type.to_ascii_lowercase();
        t.is_empty()
            || ["char", "text", "clob", "string"]
                .iter()
                .any(|k| t.contains(k))
    }

    /// A number type that can hold a Unix time (not an interval, a point or money).
    pub fn holds_unix_time(&self) -> bool {
        let t = self.sql_type.to_ascii_lowercase();
        self.is_numeric() && !["interval", "point", "money"].iter().any(|k| t.contains(k))
    }

    /// A type whose values can name a point in time: a date or timestamp, a number (a
    /// Unix time) or text.
    pub fn holds_time(&self) -> bool {
        let t = self.sql_type.to_ascii_lowercase();
        let clock = t.starts_with("time") && !t.starts_with("timestamp");
        self.holds_unix_time()
            || self.is_text()
            || (!clock && ["date", "timestamp"].iter().any(|k| t.contains(k)))
    }

    /// SQLite's text affinity: a declared type naming CHAR, CLOB or TEXT, and not INT.
    pub fn has_text_affinity(&self) -> bool {
        let t = self.sql_type.to_ascii_lowercase();
        !t.contains("int") && ["char", "clob", "text"].iter().any(|k| t.contains(k))
    }

    pub fn is_numeric(&self) -> bool {
        let t = self.sql_type.to_ascii_lowercase();
        [
            "int", "numeric", "decimal", "real", "double", "float", "serial", "money",
        ]
        .iter()
        .any(|k| t.contains(k))
    }
}

/// Columns by table, for the tables a system's collections name.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub tables: BTreeMap<String, Vec<ColumnInfo>>,
}

impl Schema {
    pub fn column(&self, table: &str, column: &str) -> Option<&ColumnInfo> {
        self.tables.get(table)?.iter().find(|c| c.name == column)
    }

    /// The primary key columns of a table, as the database declares them.
    pub fn primary_key(&self, table: &str) -> Vec<&ColumnInfo> {
        self.tables
            .get(table)
            .map(|cols| cols.iter().filter(|c| c.primary_key).collect())
            .unwrap_or_default()
    }
}

async fn table_columns(
    conn: &mut AnyConnection,
    d: Dialect,
    table: &str,
) -> Result<Vec<ColumnInfo>, sqlx::Error> {
    let sql = match d {
        Dialect::Sqlite => {
            "SELECT p.name, p.type, CAST(p.\"notnull\" AS INTEGER), CAST(NULL AS INTEGER), CAST(p.pk AS INTEGER), 0, \
                    CAST(EXISTS (SELECT 1 FROM pragma_index_list(?1) il JOIN pragma_index_info(il.name) ii \
                                 WHERE il.\"unique\" = 1 AND ii.name = p.name) AS INTEGER) \
             FROM pragma_table_info(?1) p ORDER BY p.cid"
        }
        Dialect::Postgres => {
            "SELECT c.column_name::text, \
                    CASE WHEN c.data_type IN ('USER-DEFINED', 'ARRAY') THEN c.udt_name::text ELSE c.data_type::text END, \
                    CAST(CASE WHEN c.is_nullable = 'NO' THEN 1 ELSE 0 END AS BIGINT), \
                    CAST(c.character_maximum_length AS BIGINT), \
                    CAST(CASE WHEN EXISTS ( \
                        SELECT 1 FROM information_schema.table_constraints tc \
                        JOIN information_schema.key_column_usage k \
                          ON tc.constraint_name = k.constraint_name AND tc.table_schema = k.table_schema AND tc.table_name = k.table_name \
                        WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = c.table_schema \
                          AND tc.table_name = c.table_name AND k.column_name = c.column_name) THEN 1 ELSE 0 END AS BIGINT), \
                    CAST(0 AS BIGINT), \
                    CAST(CASE WHEN EXISTS ( \
                        SELECT 1 FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid \
                        JOIN pg_namespace n ON n.oid = t.relnamespace \
                        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(i.indkey) \
                        WHERE i.indisunique AND n.nspname = c.table_schema AND t.relname = c.table_name \
                          AND a.attname = c.column_name) THEN 1 ELSE 0 END AS BIGINT) \
             FROM information_schema.columns c \
             WHERE c.table_schema = current_schema() AND c.table_name = $1 ORDER BY c.ordinal_position"
        }
        Dialect::MySql => {
            "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR), \
                    CAST(CASE WHEN is_nullable = 'NO' THEN 1 ELSE 0 END AS SIGNED), \
                    CAST(character_maximum_length AS SIGNED), \
                    CAST(CASE WHEN column_key = 'PRI' THEN 1 ELSE 0 END AS SIGNED), \
                    CAST(CASE WHEN collation_name LIKE '%\\_ci' THEN 1 ELSE 0 END AS SIGNED), \
                    CAST(CASE WHEN EXISTS (SELECT 1 FROM information_schema.statistics s \
                        WHERE s.table_schema = c.table_schema AND s.table_name = c.table_name \
                          AND s.column_name = c.column_name AND s.non_unique = 0) THEN 1 ELSE 0 END AS SIGNED) \
             FROM information_schema.columns c WHERE c.table_schema = DATABASE() AND c.table_name = ? ORDER BY c.ordinal_position"
        }
    };
    let rows = sqlx::query(sql).bind(table).fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| {
            let not_null: i64 = r.try_get(2)?;
            let pk: i64 = r.try_get(4)?;
            Ok(ColumnInfo {
                name: r.try_get(0)?,
                sql_type: r.try_get::<Option<String>, _>(1)?.unwrap_or_default(),
                // SQLite reports NOT NULL only when declared; a primary key may still be NULL there.
                nullable: not_null == 0,
                max_len: r.try_get(3)?,
                primary_key: pk > 0,
                case_blind: r.try_get::<i64, _>(5)? != 0,
                unique: r.try_get::<i64, _>(6)? != 0,
            })
        })
        .collect()
}

/// Reads the tables the system names and checks every table, column, reference, event
/// column and masking against them. Any mismatch fails with every problem named; nothing
/// has been read from or written to the data.
pub async fn check(
    conn: &mut AnyConnection,
    d: Dialect,
    system: &System,
) -> Result<Schema, SourceError> {
    let mut schema = Schema::default();
    let mut problems = Vec::new();
    for c in &system.collections {
        let cols = table_columns(conn, d, c.name.as_str())
            .await
            .map_err(|e| SourceError::query(system, "reading the schema", e))?;
        if cols.is_empty() {
            problems.push(format!("table `{}` does not exist", c.name.as_str()));
            continue;
        }
        schema.tables.insert(c.name.to_string(), cols);
    }
    for c in &system.collections {
        if schema.tables.contains_key(c.name.as_str()) {
            check_collection(&schema, d, system, c, &mut problems);
        }
    }
    if problems.is_empty() {
        Ok(schema)
    } else {
        Err(SourceError::Schema {
            system: system.id.to_string(),
            problems,
        })
    }
}

/// Why the column cannot hold what erasing the field would write into it, if it cannot.
/// Checked before anything is read or written, so that no erasure fails halfway on a
/// constraint.
fn mask_misfit(system: &System, c: &Collection, f: &Field, col: &ColumnInfo) -> Option<String> {
    // Keys are never masked (`lethe check` warns on a masking written on one).
    if system.is_key(c, f) || f.categories.is_empty() {
        return None;
    }
    match &f.masking {
        Some(Masking::NullRewrite) if !col.nullable => Some(
            "is NOT NULL, so `masking: null_rewrite` cannot erase it; use `hash` or `random_string` (or `fixed` where it is not UNIQUE)".to_owned(),
        ),
        Some(Masking::Hash | Masking::RandomString) if !col.is_text() => Some(format!(
            "has type {}, but hash and random_string masking write text; use `null_rewrite` or `fixed`",
            col.sql_type
        )),
        Some(Masking::Fixed(_)) if col.unique => Some(
            "is UNIQUE: one fixed value for every erased row would collide; use `random_string` or `hash` (or `null_rewrite` if it may be NULL)".to_owned(),
        ),
        Some(Masking::Fixed(v)) if col.is_numeric() && v.trim().parse::<f64>().is_err() => Some(format!(
            "has type {}, but `fixed: {v:?}` is not a number; write a number",
            col.sql_type
        )),
        // The default mask: NULL, else a neutral value, else (UNIQUE) a random text per row.
        Some(Masking::DeleteRow) | None if !col.nullable && col.unique && !col.is_text() => Some(format!(
            "is NOT NULL and UNIQUE of type {}: no value erases it in every row without colliding; give it a `masking` that fits (`fixed` cannot), allow NULL, or let the row be deleted",
            col.sql_type
        )),
        _ => None,
    }
}

fn check_collection(
    schema: &Schema,
    d: Dialect,
    system: &System,
    c: &Collection,
    problems: &mut Vec<String>,
) {
    let table = c.name.as_str();
    let missing = |col: &str, what: &str, problems: &mut Vec<String>| {
        if schema.column(table, col).is_none() {
            problems.push(format!("table `{table}` has no column `{col}` ({what})"));
        }
    };
    for f in &c.fields {
        missing(f.name.as_str(), "a field of the policy", problems);
        if let Some(r) = &f.references
            && schema.tables.contains_key(r.collection.as_str())
            && schema
                .column(r.collection.as_str(), r.field.as_str())
                .is_none()
        {
            problems.push(format!(
                "`{table}.{}` references `{}`, which does not exist",
                f.name.as_str(),
                **r
            ));
        }
        let Some(col) = schema.column(table, f.name.as_str()) else {
            continue;
        };
        if let Some(problem) = mask_misfit(system, c, f, col) {
            problems.push(format!(
                "{}: `{table}.{}` {problem}",
                system.location(f.name.span()),
                col.name
            ));
        }
    }
    for (event, binding) in &c.events {
        if let EventBinding::Column(col) = &**binding {
            missing(col.as_str(), &format!("the `{event}` event"), problems);
        }
        // SQLite keeps any value in any column; elsewhere the type says what is there.
        let (from, col) = match &**binding {
            EventBinding::Column(col) => (table, col.as_str()),
            EventBinding::Referenced(r) | EventBinding::LatestOf(r) => {
                (r.collection.as_str(), r.field.as_str())
            }
        };
        if let Some(info) = schema.column(from, col)
            && d != Dialect::Sqlite
            && !info.holds_time()
        {
            problems.push(format!(
                "the `{event}` event of `{table}` reads `{from}.{col}`, of type {}, which names no point in time (use a date or timestamp, a Unix time in seconds or milliseconds, or text)",
                info.sql_type
            ));
        }
        if let EventBinding::Referenced(r) | EventBinding::LatestOf(r) = &**binding
            && schema.tables.contains_key(r.collection.as_str())
            && schema
                .column(r.collection.as_str(), r.field.as_str())
                .is_none()
        {
            problems.push(format!(
                "the `{event}` event of `{table}` reads `{r}`, which does not exist"
            ));
        }
    }
}

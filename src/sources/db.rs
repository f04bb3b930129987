//! Reading a person's rows from a company database and applying erasure actions to them.

use std::collections::BTreeMap;

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection, Row as _};

use super::schema::{self, Schema};
use super::sql::{self, Col, Dialect, SetTo};
use super::{SourceError, matching, resolve_url};
use crate::policy::{Identifier, Policy, System};

/// One row: column → value as text (None for NULL).
pub type Row = BTreeMap<String, Option<String>>;

/// The rows found in one collection.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub collection: String,
    pub rows: Vec<Row>,
}

/// How rows are found, as the traversal plan says (see `dsr::plan`). Whatever the
/// column's collation, a row counts only when its value matches by the rule in
/// [`super::matching`] (identities) or is the same key (everything else).
#[derive(Debug, Clone)]
pub enum Lookup {
    /// `field` is one of `values`.
    Values { field: String, values: Vec<String> },
    /// `field` is one of `values` after [`super::matching::fold`] (values given folded).
    Folded { field: String, values: Vec<String> },
    /// `field IN (from_collection.from_field of the rows found so far)`.
    FromRows {
        field: String,
        from_collection: String,
        from_field: String,
    },
}

impl Lookup {
    pub fn field(&self) -> &str {
        match self {
            Self::Values { field, .. }
            | Self::Folded { field, .. }
            | Self::FromRows { field, .. } => field,
        }
    }
}

/// What to do to one row, by its primary key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    Delete,
    Mask(Vec<(String, MaskValue)>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MaskValue {
    Null,
    Text(String),
}

#[derive(Debug, Clone)]
pub struct RowAction {
    pub key: Vec<(String, String)>,
    pub action: Action,
}

/// The actions on one collection, applied in order.
#[derive(Debug, Clone)]
pub struct CollectionActions {
    pub collection: String,
    pub rows: Vec<RowAction>,
}

/// Values per IN list: well under every backend's parameter limit.
const IN_CHUNK: usize = 500;

/// A connection pool to one system's database whose schema matched the policy. Cheap to
/// clone; see [`Sources`] to keep one per system across requests.
#[derive(Clone)]
pub struct SourceDb {
    pub system: String,
    pub dialect: Dialect,
    pub schema: Schema,
    pool: AnyPool,
}

impl SourceDb {
    /// Connects to the system's database and checks its schema against the policy.
    pub async fn open(system: &System) -> Result<Self, SourceError> {
        let url =
            resolve_url(system).ok_or_else(|| SourceError::NoConnection(system.id.to_string()))?;
        let dialect = Dialect::from_url(&url.url)
            .ok_or_else(|| SourceError::Unsupported(system.id.to_string()))?;
        sqlx::any::install_default_drivers();
        let connect_error = |e| SourceError::Connect {
            system: system.id.to_string(),
            url: crate::redact::redact_url(&url.url),
            source: e,
        };
        let options = AnyConnectOptions::from_str(&url.url).map_err(connect_error)?;
        // One direct attempt first, so a server that is down fails at once.
        AnyConnection::connect_with(&options)
            .await
            .map_err(connect_error)?
            .close()
            .await
            .ok();
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                        // In rollback-journal mode each commit creates the journal file,
                        // syncs its directory and deletes it again; PERSIST keeps the file
                        // and zeroes its header instead, with the same guarantees. The
                        // setting is this connection's own; a WAL database stays as it is.
                        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                            .fetch_one(&mut *conn)
                            .await?;
                        if mode.eq_ignore_ascii_case("delete") {
                            sqlx::query("PRAGMA journal_mode = PERSIST")
                                .execute(&mut *conn)
                                .await?;
                            // A kept journal larger than this is cut back after a commit.
                            sqlx::query("PRAGMA journal_size_limit = 67108864")
                                .execute(&mut *conn)
                                .await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        let mut conn = pool.acquire().await.map_err(connect_error)?;
        let schema = schema::check(&mut conn, dialect, system).await?;
        drop(conn);
        Ok(Self {
            system: system.id.to_string(),
            dialect,
            schema,
            pool,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The primary key of a collection: declared in the policy, else in the database.
    pub fn primary_key(&self, policy_system: &System, collection: &str) -> Vec<String> {
        let declared: Vec<String> = policy_system
            .collections
            .iter()
            .find(|c| c.name.as_str() == collection)
            .map(|c| {
                c.fields
                    .iter()
                    .filter(|f| f.primary_key)
                    .map(|f| f.name.to_string())
                    .collect()
            })
            .unwrap_or_default();
        if !declared.is_empty() {
            return declared;
        }
        self.schema
            .primary_key(collection)
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    fn col<'a>(&'a self, table: &str, name: &'a Identifier) -> Col<'a> {
        Col {
            name,
            sql_type: self
                .schema
                .column(table, name.as_str())
                .map_or("text", |c| c.sql_type.as_str()),
        }
    }

    /// Reads the rows of `collection` found by `lookups`, columns `read`, merged and
    /// deduplicated by `key` (or by the whole row).
    pub async fn fetch(
        &self,
        collection: &str,
        read: &[String],
        key: &[String],
        lookups: &[Lookup],
        found: &BTreeMap<String, Found>,
    ) -> Result<Found, SourceError> {
        let table = ident(collection)?;
        let cols: Vec<Identifier> = read.iter().map(|c| ident(c)).collect::<Result<_, _>>()?;
        let col_refs: Vec<&Identifier> = cols.iter().collect();
        let mut out = Found {
            collection: collection.to_owned(),
            rows: Vec::new(),
        };
        let mut conn = self.pool.acquire().await.map_err(|e| SourceError::Query {
            system: self.system.clone(),
            what: "connecting".into(),
            cause: e,
        })?;
        let mut seen = std::collections::BTreeSet::new();
        for lookup in lookups {
            let field = ident(lookup.field())?;
            let Some(at) = read.iter().position(|c| c == field.as_str()) else {
                return Err(SourceError::Schema {
                    system: self.system.clone(),
                    problems: vec![format!("`{collection}.{field}` is looked up but not read")],
                });
            };
            // The statements to run, each with its parameters, and the rule a returned
            // row's value must pass.
            let mut statements: Vec<(String, Vec<String>)> = Vec::new();
            let accept: Box<dyn Fn(&str) -> bool + Send + Sync> = match lookup {
                Lookup::Folded { values, .. } => {
                    // MySQL/MariaDB compare a case-blind column case-blind as it is, by its index.
                    let case_blind = self
                        .schema
                        .column(collection, field.as_str())
                        .is_some_and(|c| c.case_blind && self.dialect == Dialect::MySql);
                    let mut spellings = Vec::new();
                    for v in values {
                        match matching::variants(v) {
                            Some(vs) => spellings.extend(vs),
                            None => statements.push((
                                sql::select_like_lower(self.dialect, &table, &col_refs, &field),
                                vec![matching::like_pattern(v)],
                            )),
                        }
                    }
                    spellings.sort();
                    spellings.dedup();
                    for chunk in spellings.chunks(IN_CHUNK) {
                        statements.push((
                            sql::select_in(
                                self.dialect,
                                &table,
                                &col_refs,
                                &self.col(collection, &field),
                                chunk.len(),
                                !case_blind,
                            ),
                            chunk.to_vec(),
                        ));
                    }
                    let values = values.clone();
                    Box::new(move |stored: &str| {
                        values.iter().any(|v| matching::matches_folded(stored, v))
                    })
                }
                Lookup::Values { .. } | Lookup::FromRows { .. } => {
                    let values: Vec<String> = match lookup {
                        Lookup::Values { values, .. } => values.clone(),
                        Lookup::FromRows {
                            from_collection,
                            from_field,
                            ..
                        } => {
                            let mut v: Vec<String> = found
                                .get(from_collection)
                                .map(|f| {
                                    f.rows
                                        .iter()
                                        .filter_map(|r| r.get(from_field).cloned().flatten())
                                        .collect()
                                })
                                .unwrap_or_default();
                            v.sort();
                            v.dedup();
                            v
                        }
                        Lookup::Folded { .. } => Vec::new(),
                    };
                    for chunk in values.chunks(IN_CHUNK) {
                        statements.push((
                            sql::select_in(
                                self.dialect,
                                &table,
                                &col_refs,
                                &self.col(collection, &field),
                                chunk.len(),
                                false,
                            ),
                            chunk.to_vec(),
                        ));
                    }
                    let values: std::collections::BTreeSet<String> = values.into_iter().collect();
                    Box::new(move |stored: &str| {
                        values.contains(stored)
                            || values.iter().any(|v| matching::same_key(stored, v))
                    })
                }
            };
            for (sql, params) in statements {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for v in params {
                    q = q.bind(v);
                }
                let rows = q
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| SourceError::Query {
                        system: self.system.clone(),
                        what: format!("reading `{collection}`"),
                        cause: e,
                    })?;
                for r in rows {
                    let mut row = Row::new();
                    for (i, c) in read.iter().enumerate() {
                        let v: Option<String> = r.try_get(i).map_err(|e| SourceError::Query {
                            system: self.system.clone(),
                            what: format!("decoding `{collection}.{c}`"),
                            cause: e,
                        })?;
                        row.insert(c.clone(), v);
                    }
                    // The database's collation may have matched more than the rule does.
                    if !row
                        .get(&read[at])
                        .cloned()
                        .flatten()
                        .is_some_and(|v| accept(&v))
                    {
                        continue;
                    }
                    let identity: Vec<Option<String>> = if key.is_empty() {
                        row.values().cloned().collect()
                    } else {
                        key.iter().map(|k| row.get(k).cloned().flatten()).collect()
                    };
                    if seen.insert(identity) {
                        out.rows.push(row);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Whether more rows of `collection` hold each value in `field` than `own[value]`
    /// (the rows of it that are the person's): the values also referred to by rows of
    /// other people. Each value's rows are counted only up to one more than its own, on
    /// the index: a product that a million order lines refer to costs a few index entries.
    pub async fn referred_beyond(
        &self,
        collection: &str,
        field: &str,
        own: &[(String, u64)],
    ) -> Result<Vec<String>, SourceError> {
        const PER_STATEMENT: usize = 100;
        let table = ident(collection)?;
        let column = ident(field)?;
        let mut out = Vec::new();
        let mut conn = self.pool.acquire().await.map_err(|e| SourceError::Query {
            system: self.system.clone(),
            what: "connecting".into(),
            cause: e,
        })?;
        for chunk in own.chunks(PER_STATEMENT) {
            let caps: Vec<u64> = chunk.iter().map(|(_, n)| n + 1).collect();
            let statement =
                sql::count_up_to(self.dialect, &table, &self.col(collection, &column), &caps);
            let mut q = sqlx::query(sqlx::AssertSqlSafe(statement));
            for (v, _) in chunk {
                q = q.bind(v.clone());
            }
            let rows = q
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| SourceError::Query {
                    system: self.system.clone(),
                    what: format!("counting `{collection}.{field}`"),
                    cause: e,
                })?;
            for r in rows {
                let counted = |e| SourceError::Query {
                    system: self.system.clone(),
                    what: format!("counting `{collection}.{field}`"),
                    cause: e,
                };
                let (i, n): (i64, i64) = (
                    r.try_get(0).map_err(counted)?,
                    r.try_get(1).map_err(counted)?,
                );
                if let Some((v, mine)) = usize::try_from(i).ok().and_then(|i| chunk.get(i))
                    && u64::try_from(n).unwrap_or(0) > *mine
                {
                    out.push(v.clone());
                }
            }
        }
        Ok(out)
    }

    /// Applies the actions in one transaction. `after_collection` runs after each
    /// collection, before the commit (a fault-injection point for tests).
    pub async fn apply(
        &self,
        actions: &[CollectionActions],
        mut after_collection: impl FnMut(&str, &str),
    ) -> Result<(), SourceError> {
        let system = self.system.clone();
        let d = self.dialect;
        let schema = self.schema.clone();
        let mut tx = self.pool.begin().await.map_err(|e| SourceError::Query {
            system: system.clone(),
            what: "starting a transaction".into(),
            cause: e,
        })?;
        for ca in actions {
            let table = ident(&ca.collection)?;
            let sql_type = |c: &str| {
                schema
                    .column(&ca.collection, c)
                    .map_or("text".to_owned(), |c| c.sql_type.clone())
            };
            // Rows with a one-column key and the same action go in one statement per
            // chunk; the others one by one.
            let mut groups: Vec<(&Action, &str, Vec<String>)> = Vec::new();
            let mut index: std::collections::HashMap<(&Action, &str), usize> =
                std::collections::HashMap::new();
            let mut single_rows: Vec<&RowAction> = Vec::new();
            for ra in &ca.rows {
                match ra.key.as_slice() {
                    [(k, v)] => {
                        let at = *index.entry((&ra.action, k.as_str())).or_insert_with(|| {
                            groups.push((&ra.action, k.as_str(), Vec::new()));
                            groups.len() - 1
                        });
                        groups[at].2.push(v.clone());
                    }
                    _ => single_rows.push(ra),
                }
            }
            for (action, key, values) in &groups {
                let key_id = ident(key)?;
                let key_type = sql_type(key);
                let key_col = Col {
                    name: &key_id,
                    sql_type: &key_type,
                };
                let (set_ids, set_types, set_values) = mask_parts(action, &sql_type)?;
                let set: Vec<(Col, SetTo)> = set_columns(&set_ids, &set_types, action);
                for chunk in values.chunks(IN_CHUNK) {
                    let sql = match action {
                        Action::Delete => sql::delete_in(d, &table, &key_col, chunk.len()),
                        Action::Mask(_) => sql::update_in(d, &table, &set, &key_col, chunk.len()),
                    };
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for v in set_values.iter().chain(chunk.iter()) {
                        q = q.bind(v.clone());
                    }
                    q.execute(&mut *tx).await.map_err(|e| SourceError::Query {
                        system: system.clone(),
                        what: format!("erasing in `{}`", ca.collection),
                        cause: e,
                    })?;
                }
            }
            for ra in single_rows {
                let key_ids: Vec<Identifier> = ra
                    .key
                    .iter()
                    .map(|(k, _)| ident(k))
                    .collect::<Result<_, _>>()?;
                let key_types: Vec<String> = ra.key.iter().map(|(k, _)| sql_type(k)).collect();
                let key_cols: Vec<Col> = key_ids
                    .iter()
                    .zip(&key_types)
                    .map(|(name, t)| Col { name, sql_type: t })
                    .collect();
                let (set_ids, set_types, values) = mask_parts(&ra.action, &sql_type)?;
                let set = set_columns(&set_ids, &set_types, &ra.action);
                let sql = match &ra.action {
                    Action::Delete => sql::delete_row(d, &table, &key_cols),
                    Action::Mask(_) => sql::update_row(d, &table, &set, &key_cols),
                };
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for v in values
                    .into_iter()
                    .chain(ra.key.iter().map(|(_, v)| v.clone()))
                {
                    q = q.bind(v);
                }
                q.execute(&mut *tx).await.map_err(|e| SourceError::Query {
                    system: system.clone(),
                    what: format!("erasing in `{}`", ca.collection),
                    cause: e,
                })?;
            }
            after_collection(&system, &ca.collection);
        }
        tx.commit().await.map_err(|e| SourceError::Query {
            system,
            what: "committing".into(),
            cause: e,
        })?;
        Ok(())
    }
}

/// The columns a mask writes, their types, and the bound values (NULLs are not bound).
type MaskParts = (Vec<Identifier>, Vec<String>, Vec<String>);

fn mask_parts(
    action: &Action,
    sql_type: &dyn Fn(&str) -> String,
) -> Result<MaskParts, SourceError> {
    let Action::Mask(fields) = action else {
        return Ok((Vec::new(), Vec::new(), Vec::new()));
    };
    let ids = fields
        .iter()
        .map(|(f, _)| ident(f))
        .collect::<Result<_, _>>()?;
    let types = fields.iter().map(|(f, _)| sql_type(f)).collect();
    let values = fields
        .iter()
        .filter_map(|(_, v)| match v {
            MaskValue::Text(t) => Some(t.clone()),
            MaskValue::Null => None,
        })
        .collect();
    Ok((ids, types, values))
}

fn set_columns<'a>(
    ids: &'a [Identifier],
    types: &'a [String],
    action: &Action,
) -> Vec<(Col<'a>, SetTo)> {
    let Action::Mask(fields) = action else {
        return Vec::new();
    };
    ids.iter()
        .zip(types)
        .zip(fields)
        .map(|((name, t), (_, v))| {
            (
                Col { name, sql_type: t },
                match v {
                    MaskValue::Null => SetTo::Null,
                    MaskValue::Text(_) => SetTo::Value,
                },
            )
        })
        .collect()
}

fn ident(s: &str) -> Result<Identifier, SourceError> {
    Identifier::parse(s).map_err(SourceError::Identifier)
}

/// The open databases of a policy's systems, each opened (and its schema checked) once,
/// then shared by every request.
#[derive(Default)]
pub struct Sources {
    open: tokio::sync::Mutex<BTreeMap<String, SourceDb>>,
}

/// Every system of the policy that has a connection, checked against its live schema
/// now (the check an erasure runs first): one line per system at fault, naming tables and
/// columns, never a value. Systems without a connection are not checked.
pub async fn live_problems(policy: &crate::policy::Policy) -> Vec<String> {
    let mut problems = Vec::new();
    for system in &policy.systems {
        if resolve_url(system).is_none() {
            continue;
        }
        match SourceDb::open(system).await {
            Ok(db) => db.close().await,
            Err(e) => problems.push(e.to_string()),
        }
    }
    problems
}

impl Sources {
    pub async fn get(&self, system: &System) -> Result<SourceDb, SourceError> {
        let mut open = self.open.lock().await;
        if let Some(db) = open.get(system.id.as_str()) {
            return Ok(db.clone());
        }
        let db = SourceDb::open(system).await?;
        open.insert(system.id.to_string(), db.clone());
        Ok(db)
    }

    pub async fn close(&self) {
        for db in self.open.lock().await.values() {
            db.close().await;
        }
    }
}

/// The systems of a policy by id, for callers that open them.
pub fn system<'a>(policy: &'a Policy, id: &str) -> Option<&'a System> {
    policy.system(id)
}

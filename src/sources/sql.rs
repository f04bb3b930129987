//! The one place that writes SQL for the company's databases. Identifiers come only from
//! the validated policy (and were checked against the live schema); they are quoted per
//! dialect here. Values are always bound parameters. Values travel as text: they are read
//! with a cast to text, and bound as text with a cast to the column's type where the
//! dialect needs one (PostgreSQL), so any column type works and indexes stay usable.

use crate::policy::Identifier;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Self::Postgres)
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Some(Self::MySql)
        } else {
            None
        }
    }

    /// A quoted identifier. Identifiers are validated (`[A-Za-z_][A-Za-z0-9_$]*`), so
    /// they never contain a quote; doubling is kept as a second line of defence.
    pub fn quote(self, id: &Identifier) -> String {
        match self {
            Self::MySql => format!("`{}`", id.as_str().replace('`', "``")),
            _ => format!("\"{}\"", id.as_str().replace('"', "\"\"")),
        }
    }

    /// The n-th placeholder (1-based).
    pub fn param(self, n: usize) -> String {
        match self {
            Self::Postgres => format!("${n}"),
            Self::Sqlite => format!("?{n}"),
            Self::MySql => "?".to_owned(),
        }
    }

    /// A column read as text (NULL stays NULL).
    pub fn as_text(self, col: &Identifier) -> String {
        match self {
            Self::MySql => format!("CAST({} AS CHAR)", self.quote(col)),
            _ => format!("CAST({} AS TEXT)", self.quote(col)),
        }
    }

    /// A value of lethe's own making (a time it formatted) written into a statement as a
    /// constant of `sql_type`: parsed once, and seen by the planner's estimates.
    pub fn typed_literal(self, value: &str, sql_type: &str) -> String {
        let value = value.replace('\'', "''");
        match self {
            Self::Postgres => format!("CAST('{value}' AS {})", pg_type(sql_type)),
            _ => format!("'{value}'"),
        }
    }

    /// A text parameter compared with or stored into a column of `sql_type`.
    pub fn typed_param(self, n: usize, sql_type: &str) -> String {
        match self {
            Self::Postgres => format!("CAST(${n} AS {})", pg_type(sql_type)),
            _ => self.param(n),
        }
    }
}

/// A PostgreSQL type name safe to splice into a CAST: letters, digits, spaces and `_`
/// only (as information_schema reports them), else `text`.
fn pg_type(t: &str) -> &str {
    if !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '_')
    {
        t
    } else {
        "text"
    }
}

/// A column with what the statements need to know of it.
#[derive(Debug, Clone)]
pub struct Col<'a> {
    pub name: &'a Identifier,
    pub sql_type: &'a str,
}

/// `SELECT <cols as text> FROM t WHERE key IN (p1..pn)`; with `lower` the key is
/// compared as `LOWER(key)` (identities; index it as `lower(column)`).
pub fn select_in(
    d: Dialect,
    table: &Identifier,
    cols: &[&Identifier],
    key: &Col,
    n: usize,
    lower: bool,
) -> String {
    let list: Vec<String> = cols.iter().map(|c| d.as_text(c)).collect();
    let params: Vec<String> = (1..=n).map(|i| d.typed_param(i, key.sql_type)).collect();
    let column = if lower {
        format!("LOWER({})", d.quote(key.name))
    } else {
        d.quote(key.name)
    };
    format!(
        "SELECT {} FROM {} WHERE {column} IN ({})",
        list.join(", "),
        d.quote(table),
        params.join(", ")
    )
}

/// For each i, how many rows hold the i-th parameter in `key`, counted up to `caps[i]`
/// only: `SELECT 0, (SELECT COUNT(*) FROM (SELECT 1 FROM t WHERE key = p1 LIMIT c1) AS x)
/// UNION ALL ...`. Each count stops at its cap, on the index, however many rows there are.
pub fn count_up_to(d: Dialect, table: &Identifier, key: &Col, caps: &[u64]) -> String {
    caps.iter()
        .enumerate()
        .map(|(i, cap)| {
            // The position comes back as a 64-bit integer on every dialect.
            let n = match d {
                Dialect::Postgres => format!("CAST({i} AS BIGINT)"),
                _ => i.to_string(),
            };
            format!(
                "SELECT {n}, (SELECT COUNT(*) FROM (SELECT 1 FROM {} WHERE {} = {} LIMIT {cap}) AS x)",
                d.quote(table),
                d.quote(key.name),
                d.typed_param(i + 1, key.sql_type)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// `SELECT <cols as text> FROM t WHERE LOWER(key) LIKE p1 ESCAPE '!'`.
pub fn select_like_lower(
    d: Dialect,
    table: &Identifier,
    cols: &[&Identifier],
    key: &Identifier,
) -> String {
    let list: Vec<String> = cols.iter().map(|c| d.as_text(c)).collect();
    format!(
        "SELECT {} FROM {} WHERE LOWER({}) LIKE {} ESCAPE '!'",
        list.join(", "),
        d.quote(table),
        d.quote(key),
        d.param(1)
    )
}

/// `DELETE FROM t WHERE (pk1, pk2) = (...)`, one row by its primary key.
pub fn delete_row(d: Dialect, table: &Identifier, pk: &[Col]) -> String {
    format!(
        "DELETE FROM {} WHERE {}",
        d.quote(table),
        pk_condition(d, pk, 1)
    )
}

/// `DELETE FROM t WHERE key IN (p1..pn)`.
pub fn delete_in(d: Dialect, table: &Identifier, key: &Col, n: usize) -> String {
    let params: Vec<String> = (1..=n).map(|i| d.typed_param(i, key.sql_type)).collect();
    format!(
        "DELETE FROM {} WHERE {} IN ({})",
        d.quote(table),
        d.quote(key.name),
        params.join(", ")
    )
}

/// `UPDATE t SET .. WHERE key IN (..)`; parameters: the `Value` columns, then the keys.
pub fn update_in(
    d: Dialect,
    table: &Identifier,
    set: &[(Col, SetTo)],
    key: &Col,
    n: usize,
) -> String {
    let (assignments, used) = assignments(d, set);
    let params: Vec<String> = (1..=n)
        .map(|i| d.typed_param(used + i, key.sql_type))
        .collect();
    format!(
        "UPDATE {} SET {} WHERE {} IN ({})",
        d.quote(table),
        assignments,
        d.quote(key.name),
        params.join(", ")
    )
}

fn assignments(d: Dialect, set: &[(Col, SetTo)]) -> (String, usize) {
    let mut n = 0;
    let list: Vec<String> = set
        .iter()
        .map(|(c, to)| match to {
            SetTo::Null => format!("{} = NULL", d.quote(c.name)),
            SetTo::Value => {
                n += 1;
                format!("{} = {}", d.quote(c.name), d.typed_param(n, c.sql_type))
            }
        })
        .collect();
    (list.join(", "), n)
}

/// What an UPDATE writes into one column.
#[derive(Debug, Clone)]
pub enum SetTo {
    Null,
    /// A bound text value, cast to the column's type where needed.
    Value,
}

/// `UPDATE t SET c1 = .., c2 = .. WHERE pk = ..`; parameters: the `Value` columns in
/// order, then the primary key values.
pub fn update_row(d: Dialect, table: &Identifier, set: &[(Col, SetTo)], pk: &[Col]) -> String {
    let (assignments, used) = assignments(d, set);
    format!(
        "UPDATE {} SET {} WHERE {}",
        d.quote(table),
        assignments,
        pk_condition(d, pk, used + 1)
    )
}

fn pk_condition(d: Dialect, pk: &[Col], first: usize) -> String {
    pk.iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "{} = {}",
                d.quote(c.name),
                d.typed_param(first + i, c.sql_type)
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Identifier {
        Identifier::parse(s).unwrap()
    }

    #[test]
    fn statements_quote_identifiers_and_bind_values() {
        let (t, email, uid) = (id("users"), id("email"), id("id"));
        let key = Col {
            name: &email,
            sql_type: "character varying",
        };
        assert_eq!(
            select_in(Dialect::Postgres, &t, &[&uid, &email], &key, 2, false),
            "SELECT CAST(\"id\" AS TEXT), CAST(\"email\" AS TEXT) FROM \"users\" WHERE \"email\" IN (CAST($1 AS character varying), CAST($2 AS character varying))"
        );
        assert_eq!(
            select_in(Dialect::MySql, &t, &[&email], &key, 1, true),
            "SELECT CAST(`email` AS CHAR) FROM `users` WHERE LOWER(`email`) IN (?)"
        );
        let pk = [Col {
            name: &uid,
            sql_type: "integer",
        }];
        assert_eq!(
            delete_row(Dialect::Sqlite, &t, &pk),
            "DELETE FROM \"users\" WHERE \"id\" = ?1"
        );
        let set = [
            (
                Col {
                    name: &email,
                    sql_type: "text",
                },
                SetTo::Value,
            ),
            (
                Col {
                    name: &id("name"),
                    sql_type: "text",
                },
                SetTo::Null,
            ),
        ];
        assert_eq!(
            update_row(Dialect::Postgres, &t, &set, &pk),
            "UPDATE \"users\" SET \"email\" = CAST($1 AS text), \"name\" = NULL WHERE \"id\" = CAST($2 AS integer)"
        );
    }

    #[test]
    fn odd_type_names_never_reach_the_sql() {
        assert_eq!(pg_type("integer); DROP TABLE x; --"), "text");
        assert_eq!(
            pg_type("timestamp with time zone"),
            "timestamp with time zone"
        );
    }
}

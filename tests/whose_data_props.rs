//! Whose data, as a property: on random schemas (2–6 tables, random references with random
//! directions, shared parents, self-references, cycles) and random rows for three people,
//! a small reference model written here says which rows are whose. Access for a person
//! returns exactly their rows; erasing them leaves every row that is not theirs alone byte
//! for byte, every reference resolving, and a second erasure changes nothing. On SQLite
//! always, on PostgreSQL and MariaDB (fewer cases) when their URL variables are set.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{TimeZone, Utc};
use common::appdb::{AppDb, Backend};
use lethe::audit::{Actor, AuditLog, Identity};
use lethe::dsr::{self, Context};
use lethe::policy::Policy;
use lethe::sources::db::Sources;
use lethe::sources::sql::Dialect;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const PEOPLE: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Unwritten,
    From,
    To,
    Both,
}

impl Dir {
    fn follows_from(self) -> bool {
        matches!(self, Dir::Unwritten | Dir::From | Dir::Both)
    }
    fn follows_to(self) -> bool {
        matches!(self, Dir::To | Dir::Both)
    }
    fn key(self) -> Option<&'static str> {
        match self {
            Dir::Unwritten => None,
            Dir::From => Some("from"),
            Dir::To => Some("to"),
            Dir::Both => Some("both"),
        }
    }
}

#[derive(Debug, Clone)]
struct Table {
    /// Has an `email` identity column: its rows are people's own records.
    people: bool,
    /// `data` holds personal data (otherwise it is a plain column).
    personal: bool,
    /// `erasure: keep_row` (mask) instead of deleting rows.
    keep_row: bool,
    /// References `r0`, `r1`…: (target table, direction).
    refs: Vec<(usize, Dir)>,
}

#[derive(Debug, Clone)]
struct Row {
    /// Whose e-mail (index into the people), written in upper or lower case.
    email: Option<(usize, bool)>,
    /// Row index in the referenced table, per reference.
    refs: Vec<Option<usize>>,
}

#[derive(Debug, Clone)]
struct World {
    tables: Vec<Table>,
    rows: Vec<Vec<Row>>,
}

fn dir() -> impl Strategy<Value = Dir> {
    prop_oneof![
        3 => Just(Dir::Unwritten),
        1 => Just(Dir::From),
        2 => Just(Dir::To),
        1 => Just(Dir::Both),
    ]
}

fn world() -> impl Strategy<Value = World> {
    (2usize..=6)
        .prop_flat_map(|n| {
            let table = (
                any::<bool>(),
                any::<bool>(),
                prop::bool::weighted(0.25),
                prop::collection::vec((0..n, dir()), 0..=2),
            )
                .prop_map(|(people, personal, keep_row, refs)| Table {
                    people,
                    personal,
                    keep_row,
                    refs,
                });
            (
                prop::collection::vec(table, n),
                prop::collection::vec(1usize..=5, n),
            )
        })
        .prop_flat_map(|(mut tables, sizes)| {
            // A policy names at least one identity field.
            tables[0].people = true;
            let rows: Vec<_> = tables
                .iter()
                .zip(&sizes)
                .map(|(t, &size)| {
                    let email = if t.people {
                        prop::option::weighted(0.85, (0..PEOPLE, any::<bool>())).boxed()
                    } else {
                        Just(None).boxed()
                    };
                    let refs: Vec<_> = t
                        .refs
                        .iter()
                        .map(|&(to, _)| prop::option::weighted(0.7, 0..sizes[to]))
                        .collect();
                    prop::collection::vec(
                        (email, refs).prop_map(|(email, refs)| Row { email, refs }),
                        size,
                    )
                })
                .collect();
            (Just(tables), rows)
        })
        .prop_map(|(tables, rows)| World { tables, rows })
}

fn email(person: usize, upper: bool) -> String {
    let e = format!("person{person}@example.com");
    if upper { e.to_uppercase() } else { e }
}

/// A row: (table, row index).
type At = (usize, usize);

impl World {
    fn reference(&self, at: At, k: usize) -> Option<At> {
        let target = self.tables[at.0].refs[k].0;
        self.rows[at.0][at.1].refs[k].map(|r| (target, r))
    }

    /// Every row as a (table, row) pair.
    fn all(&self) -> impl Iterator<Item = At> + '_ {
        self.rows
            .iter()
            .enumerate()
            .flat_map(|(t, rs)| (0..rs.len()).map(move |r| (t, r)))
    }

    /// The reference model of the documented rule: a person's rows are those holding their
    /// address, then, to a fixpoint, the rows referencing one of theirs (`from`, followed
    /// unwritten only from another collection into one without people), and the rows one
    /// of theirs references (`to`, only when written).
    fn mine(&self, person: usize) -> BTreeSet<At> {
        let mut mine: BTreeSet<At> = self
            .all()
            .filter(|&(t, r)| matches!(self.rows[t][r].email, Some((p, _)) if p == person))
            .collect();
        loop {
            let mut more = Vec::new();
            for at in self.all() {
                let table = &self.tables[at.0];
                for (k, &(target, d)) in table.refs.iter().enumerate() {
                    let Some(parent) = self.reference(at, k) else {
                        continue;
                    };
                    let blocked = d == Dir::Unwritten && (target == at.0 || table.people);
                    if d.follows_from() && !blocked && mine.contains(&parent) {
                        more.push(at);
                    }
                    if d.follows_to() && mine.contains(&at) {
                        more.push(parent);
                    }
                }
            }
            let before = mine.len();
            mine.extend(more);
            if mine.len() == before {
                return mine;
            }
        }
    }

    /// Whether erasing `person` can remove everything of theirs: nothing of theirs is
    /// anyone else's, no row outside theirs references one of theirs, and none of theirs
    /// was reached from a row outside theirs.
    fn theirs_alone(&self, person: usize, mine: &BTreeSet<At>) -> bool {
        let others: BTreeSet<At> = (0..PEOPLE)
            .filter(|&p| p != person)
            .flat_map(|p| self.mine(p))
            .collect();
        if !mine.is_disjoint(&others) {
            return false;
        }
        self.all().all(|at| {
            self.tables[at.0].refs.iter().enumerate().all(|(k, _)| {
                let Some(parent) = self.reference(at, k) else {
                    return true;
                };
                // Outside → in: the row referenced would be pinned.
                let pinned = !mine.contains(&at) && mine.contains(&parent);
                // In → outside along an edge the traversal follows down.
                let (target, d) = self.tables[at.0].refs[k];
                let blocked = d == Dir::Unwritten && (target == at.0 || self.tables[at.0].people);
                let reached_from_outside =
                    mine.contains(&at) && !mine.contains(&parent) && d.follows_from() && !blocked;
                !pinned && !reached_from_outside
            })
        })
    }

    fn policy_yaml(&self, url: &str) -> String {
        let mut out = String::from(
            "controller:
  name: Property Test Ltd.
  address: 1 Test street, Vienna, Austria
  contact_email: privacy@props.example
  supervisory_authority: { name: Austrian Data Protection Authority, url: https://dsb.gv.at }
purposes:
  - id: service
    name: Service
    legal_basis: contract
    subjects: [customer]
    categories: [user.name, user.contact.email]
    recipients: [hosting]
    retention: { keep_for: 3y, from: account_closed }
processors:
  - { id: hosting, name: Cloud Hosting SA, service: Hosting, country: AT, agreement: hosting-dpa }
agreements:
  - { id: hosting-dpa, counterparty: hosting, we_are: controller, art28_clauses: [a, b, c, d, e, f, g, h] }
systems:
  - id: app
    name: Random application
",
        );
        out.push_str(&format!(
            "    connection: {{ url_env: LETHE_TEST_NEVER_SET_APP_URL, default: \"{url}\" }}\n    collections:\n"
        ));
        for (i, t) in self.tables.iter().enumerate() {
            out.push_str(&format!(
                "      - name: t{i}\n        purposes: [service]\n"
            ));
            if t.keep_row {
                out.push_str("        erasure: keep_row\n");
            }
            out.push_str("        fields:\n          - { name: id, primary_key: true }\n");
            if t.people {
                out.push_str("          - { name: email, categories: [user.contact.email], identity: email }\n");
            }
            if t.personal {
                out.push_str("          - { name: data, categories: [user.name] }\n");
            } else {
                out.push_str("          - { name: data }\n");
            }
            for (k, (to, d)) in t.refs.iter().enumerate() {
                match d.key() {
                    Some(d) => out.push_str(&format!(
                        "          - {{ name: r{k}, references: t{to}.id, direction: {d} }}\n"
                    )),
                    None => out.push_str(&format!(
                        "          - {{ name: r{k}, references: t{to}.id }}\n"
                    )),
                }
            }
        }
        out
    }

    /// Row ids are `1000 * table + row + 1`, so that no two tables share an id.
    fn id(at: At) -> i64 {
        (1000 * at.0 + at.1 + 1) as i64
    }

    fn columns(&self, t: usize) -> Vec<String> {
        let mut cols = vec!["id".to_owned()];
        if self.tables[t].people {
            cols.push("email".to_owned());
        }
        cols.push("data".to_owned());
        cols.extend((0..self.tables[t].refs.len()).map(|k| format!("r{k}")));
        cols
    }

    async fn create(&self, db: &AppDb) {
        let sqlite = db.dialect == Dialect::Sqlite;
        for (i, t) in self.tables.iter().enumerate() {
            let mut cols = vec!["id INTEGER PRIMARY KEY".to_owned()];
            if t.people {
                cols.push("email VARCHAR(100) NULL".to_owned());
            }
            cols.push("data VARCHAR(100) NULL".to_owned());
            for (k, (to, _)) in t.refs.iter().enumerate() {
                // SQLite takes references to tables created later; the others get them
                // once every table exists.
                cols.push(if sqlite {
                    format!("r{k} INTEGER NULL REFERENCES t{to}(id)")
                } else {
                    format!("r{k} INTEGER NULL")
                });
            }
            db.exec(&format!("CREATE TABLE t{i} ({})", cols.join(", ")))
                .await;
        }
        if !sqlite {
            for (i, t) in self.tables.iter().enumerate() {
                for (k, (to, _)) in t.refs.iter().enumerate() {
                    db.exec(&format!(
                        "ALTER TABLE t{i} ADD CONSTRAINT fk_t{i}_r{k} FOREIGN KEY (r{k}) REFERENCES t{to}(id)"
                    ))
                    .await;
                }
            }
        }
        // Rows first, references once every row exists (they may form cycles).
        for (i, rows) in self.rows.iter().enumerate() {
            for (r, row) in rows.iter().enumerate() {
                let mut values = vec![Self::id((i, r)).to_string()];
                if self.tables[i].people {
                    values.push(match row.email {
                        Some((p, upper)) => format!("'{}'", email(p, upper)),
                        None => "NULL".to_owned(),
                    });
                }
                values.push(format!("'data of t{i} row {r}'"));
                values.extend(row.refs.iter().map(|_| "NULL".to_owned()));
                db.exec(&format!("INSERT INTO t{i} VALUES ({})", values.join(", ")))
                    .await;
            }
        }
        for at in self.all().collect::<Vec<_>>() {
            for k in 0..self.tables[at.0].refs.len() {
                if let Some(parent) = self.reference(at, k) {
                    db.exec(&format!(
                        "UPDATE t{} SET r{k} = {} WHERE id = {}",
                        at.0,
                        Self::id(parent),
                        Self::id(at)
                    ))
                    .await;
                }
            }
        }
    }

    /// Every row of every table as text, by (table, id).
    async fn snapshot(&self, db: &AppDb) -> BTreeMap<(usize, i64), Vec<Option<String>>> {
        let mut out = BTreeMap::new();
        for t in 0..self.tables.len() {
            let cols = self.columns(t);
            let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
            for row in db.rows(&format!("t{t}"), &cols, "1 = 1").await {
                let id: i64 = row[0].as_deref().unwrap().parse().unwrap();
                out.insert((t, id), row);
            }
        }
        out
    }

    /// Every reference that is set names a row that exists.
    fn dangling(&self, snapshot: &BTreeMap<(usize, i64), Vec<Option<String>>>) -> Vec<String> {
        let mut out = Vec::new();
        for ((t, id), row) in snapshot {
            let first_ref = if self.tables[*t].people { 3 } else { 2 };
            for (k, (to, _)) in self.tables[*t].refs.iter().enumerate() {
                if let Some(v) = &row[first_ref + k] {
                    let v: i64 = v.parse().unwrap();
                    if !snapshot.contains_key(&(*to, v)) {
                        out.push(format!("t{t} {id} r{k} -> t{to} {v}"));
                    }
                }
            }
        }
        out
    }
}

fn identity(person: usize) -> Vec<Identity> {
    vec![Identity::parse(&format!("email={}", email(person, false))).unwrap()]
}

async fn audit(db: &AppDb) -> AuditLog {
    common::audit_log(db.dir.path()).await
}

/// One case: build the world in a fresh database and check access and erasure of person 0.
async fn check(backend: Backend, world: World) -> Result<(), TestCaseError> {
    let Some(db) = common::appdb::app_db(backend, "whose_data_props").await else {
        return Ok(());
    };
    world.create(&db).await;
    let dir = db.dir.path().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("policy.yaml"), world.policy_yaml(&db.url)).unwrap();
    let checked = Policy::load(&dir).unwrap();
    let errors: Vec<String> = checked.errors().map(|d| d.to_string()).collect();
    prop_assert!(errors.is_empty(), "{errors:#?}");
    let policy = checked.policy;
    let sources = Sources::default();

    // Access: exactly each person's rows.
    for person in 0..PEOPLE {
        let expected: BTreeMap<String, Vec<i64>> =
            world
                .mine(person)
                .into_iter()
                .fold(BTreeMap::new(), |mut m, at| {
                    m.entry(format!("t{}", at.0))
                        .or_insert_with(Vec::new)
                        .push(World::id(at));
                    m
                });
        let found: BTreeMap<String, Vec<i64>> = dsr::row_keys(&policy, &sources, &identity(person))
            .await
            .unwrap()
            .into_iter()
            .map(|((_, c), keys)| {
                let mut k: Vec<i64> = keys.iter().map(|v| v.parse().unwrap()).collect();
                k.sort();
                (c, k)
            })
            .collect();
        prop_assert_eq!(found, expected, "access for person {}", person);
    }

    // Erasure of person 0.
    let log = audit(&db).await;
    let ctx = Context {
        policy: &policy,
        audit: &log,
        sources: &sources,
        actor: Actor::Cli,
        request_id: None,
        strict: false,
        restriction: None,
    };
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    let mine = world.mine(0);
    let others: BTreeSet<At> = (1..PEOPLE).flat_map(|p| world.mine(p)).collect();
    let before = world.snapshot(&db).await;
    dsr::erase(&ctx, &identity(0), false, now).await.unwrap();
    let after = world.snapshot(&db).await;

    for at in world.all() {
        let key = (at.0, World::id(at));
        let (was, is) = (&before[&key], after.get(&key));
        if !mine.contains(&at) || others.contains(&at) {
            // Not theirs alone: byte for byte as it was.
            prop_assert_eq!(
                Some(was),
                is,
                "t{} row {} is not only person 0's",
                at.0,
                at.1
            );
        } else if let Some(is) = is {
            // Theirs, kept: keys and references untouched.
            let first_ref = if world.tables[at.0].people { 3 } else { 2 };
            prop_assert_eq!(&was[0], &is[0]);
            prop_assert_eq!(
                &was[first_ref..],
                &is[first_ref..],
                "t{} row {}",
                at.0,
                at.1
            );
        }
    }
    let dangling = world.dangling(&after);
    prop_assert!(dangling.is_empty(), "{dangling:?}");

    // Where everything of theirs is theirs alone, nothing of it remains: each row holding
    // personal data is gone or has its personal values erased.
    if world.theirs_alone(0, &mine) {
        for &at in &mine {
            let t = &world.tables[at.0];
            let Some(is) = after.get(&(at.0, World::id(at))) else {
                continue;
            };
            let was = &before[&(at.0, World::id(at))];
            if t.people && was[1].is_some() {
                prop_assert_ne!(&was[1], &is[1], "t{} row {}: e-mail kept", at.0, at.1);
            }
            let data = if t.people { 2 } else { 1 };
            if t.personal {
                prop_assert_ne!(&was[data], &is[data], "t{} row {}: data kept", at.0, at.1);
            }
        }
        prop_assert!(
            dsr::row_keys(&policy, &sources, &identity(0))
                .await
                .unwrap()
                .is_empty()
        );
    }

    // A second erasure changes nothing.
    dsr::erase(&ctx, &identity(0), false, now).await.unwrap();
    prop_assert_eq!(world.snapshot(&db).await, after);
    Ok(())
}

fn run(backend: Backend, cases: u32) {
    let env = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(("PostgreSQL", "LETHE_TEST_POSTGRES_URL")),
        Backend::MySql => Some(("MariaDB", "LETHE_TEST_MYSQL_URL")),
    };
    if let Some((what, var)) = env
        && std::env::var(var).is_err()
    {
        common::skipped("whose_data_props", what, var);
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // `PROPTEST_CASES` runs more (or fewer) cases.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&world(), |w| rt.block_on(check(backend, w)))
        .unwrap();
}

#[test]
fn sqlite() {
    run(Backend::Sqlite, 64);
}

#[test]
fn postgres() {
    run(Backend::Postgres, 16);
}

#[test]
fn mariadb() {
    run(Backend::MySql, 16);
}

/// A chain three rows deep inside one table, all the person's, each row referring to the
/// one before it: deleted children first, one statement per level (MariaDB checks a
/// foreign key row by row, and deletes a statement's rows in key order).
fn self_chain() -> World {
    let row = |parent: Option<usize>| Row {
        email: Some((0, false)),
        refs: vec![parent],
    };
    World {
        tables: vec![Table {
            people: true,
            personal: true,
            keep_row: false,
            refs: vec![(0, Dir::Unwritten)],
        }],
        rows: vec![vec![row(None), row(Some(0)), row(Some(1)), row(Some(2))]],
    }
}

fn run_one(backend: Backend, world: World) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(check(backend, world)).unwrap();
}

#[test]
fn self_chain_sqlite() {
    run_one(Backend::Sqlite, self_chain());
}

#[test]
fn self_chain_postgres() {
    if std::env::var("LETHE_TEST_POSTGRES_URL").is_err() {
        return common::skipped("whose_data_props", "PostgreSQL", "LETHE_TEST_POSTGRES_URL");
    }
    run_one(Backend::Postgres, self_chain());
}

#[test]
fn self_chain_mariadb() {
    if std::env::var("LETHE_TEST_MYSQL_URL").is_err() {
        return common::skipped("whose_data_props", "MariaDB", "LETHE_TEST_MYSQL_URL");
    }
    run_one(Backend::MySql, self_chain());
}

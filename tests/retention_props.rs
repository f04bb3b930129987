//! Retention, as a property: on random schemas (2–4 tables, each referring to an earlier
//! table or to itself, some also to rows of their own (replies), `delete_row` or `keep_row`, a nullable personal column and sometimes
//! a UNIQUE NOT NULL one) and random rows with random event dates (some NULL), a small
//! reference model written here says what one run leaves. Each table serves an obligation
//! (its period after `at`) and a contract (until `closed`); a row is due when both are
//! past, or when its person had it erased (only the obligation counts then), and never
//! while its person's restriction is in force. A due row of a `delete_row` table goes when
//! no row left refers to it (repeatedly, so chains go whole and cycles stay); every due
//! row that stays has its personal values erased; nothing else changes. The plan counts exactly
//! what the run does, and a second run changes nothing. On SQLite always, on PostgreSQL
//! and MariaDB (fewer cases) when their URL variables are set.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::appdb::{AppDb, Backend};
use lethe::policy::Policy;
use lethe::retention::{self, RunOptions};
use lethe::sources::db::Sources;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[derive(Debug, Clone)]
struct Table {
    /// `erasure: keep_row` (mask) instead of deleting rows.
    keep_row: bool,
    /// A UNIQUE NOT NULL personal column `code`.
    unique: bool,
    /// Days the table's purpose keeps a row after its event.
    keep_days: i64,
    /// The table `r` refers to: an earlier one or itself.
    refers_to: Option<usize>,
    /// A second reference `s`, to a row of the same table (a reply to a comment).
    replies: bool,
}

#[derive(Debug, Clone)]
struct Row {
    /// Days before now of the event; None: not yet (NULL).
    days_ago: Option<i64>,
    /// Days before now the contract ended; None: still running (NULL).
    closed_ago: Option<i64>,
    /// The person's own request on this row.
    request: Request,
    /// Row index in the referenced table.
    parent: Option<usize>,
    /// Row index, in the same table, of the row `s` refers to.
    reply_to: Option<usize>,
}

#[derive(Debug, Clone)]
struct World {
    tables: Vec<Table>,
    rows: Vec<Vec<Row>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Request {
    None,
    /// Restricted processing (Art. 18): left alone.
    Restricted,
    /// Erased while the obligation kept it: only the obligation counts.
    Erased,
}

type At = (usize, usize);

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn world() -> impl Strategy<Value = World> {
    (2usize..=4)
        .prop_flat_map(|n| {
            let tables: Vec<_> = (0..n)
                .map(|i| {
                    (
                        prop::bool::weighted(0.3),
                        any::<bool>(),
                        prop_oneof![Just(10i64), Just(30), Just(60)],
                        prop::option::weighted(0.8, 0..=i),
                        prop::bool::weighted(0.3),
                    )
                        .prop_map(
                            |(keep_row, unique, keep_days, refers_to, replies)| Table {
                                keep_row,
                                unique,
                                keep_days,
                                refers_to,
                                replies,
                            },
                        )
                })
                .collect();
            (tables, prop::collection::vec(1usize..=6, n))
        })
        .prop_flat_map(|(tables, sizes)| {
            let rows: Vec<_> = tables
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let parent = match t.refers_to {
                        Some(to) => prop::option::weighted(0.75, 0..sizes[to]).boxed(),
                        None => Just(None).boxed(),
                    };
                    let reply_to = if t.replies {
                        prop::option::weighted(0.5, 0..sizes[i]).boxed()
                    } else {
                        Just(None).boxed()
                    };
                    let request = prop_oneof![
                        6 => Just(Request::None),
                        1 => Just(Request::Restricted),
                        2 => Just(Request::Erased),
                    ];
                    let row = (
                        prop::option::weighted(0.85, 0i64..90),
                        prop::option::weighted(0.6, 0i64..20),
                        request,
                        parent,
                        reply_to,
                    )
                        .prop_map(
                            |(days_ago, closed_ago, request, parent, reply_to)| Row {
                                days_ago,
                                closed_ago,
                                request,
                                parent,
                                reply_to,
                            },
                        );
                    prop::collection::vec(row, sizes[i])
                })
                .collect();
            (Just(tables), rows).prop_map(|(tables, rows)| World { tables, rows })
        })
}

impl World {
    fn id(at: At) -> i64 {
        (1000 * at.0 + at.1 + 1) as i64
    }

    fn all(&self) -> impl Iterator<Item = At> + '_ {
        self.rows
            .iter()
            .enumerate()
            .flat_map(|(t, rows)| (0..rows.len()).map(move |r| (t, r)))
    }

    fn row(&self, at: At) -> &Row {
        &self.rows[at.0][at.1]
    }

    fn parent(&self, at: At) -> Option<At> {
        Some((self.tables[at.0].refers_to?, self.row(at).parent?))
    }

    fn replied(&self, at: At) -> Option<At> {
        self.tables[at.0]
            .replies
            .then_some(())
            .and(self.row(at).reply_to)
            .map(|r| (at.0, r))
    }

    fn due(&self, at: At) -> bool {
        let row = self.row(at);
        let obligation = row
            .days_ago
            .is_some_and(|d| d >= self.tables[at.0].keep_days);
        match row.request {
            Request::Restricted => false,
            Request::Erased => obligation,
            Request::None => obligation && row.closed_ago.is_some(),
        }
    }

    /// The keys of the rows with `request`, as retention is told them.
    fn requested(&self, request: Request) -> retention::Restricted {
        let mut out = retention::Restricted::new();
        for at in self.all().filter(|&a| self.row(a).request == request) {
            out.entry(("app".to_owned(), format!("t{}", at.0)))
                .or_default()
                .push(vec![Self::id(at).to_string()]);
        }
        out
    }

    /// The model: the rows one run deletes.
    fn deleted(&self) -> BTreeSet<At> {
        let mut gone = BTreeSet::new();
        loop {
            let left: Vec<At> = self.all().filter(|a| !gone.contains(a)).collect();
            let referred: BTreeSet<At> = left
                .iter()
                .flat_map(|&a| [self.parent(a), self.replied(a)])
                .flatten()
                .collect();
            let next: Vec<At> = left
                .iter()
                .copied()
                .filter(|&a| !self.tables[a.0].keep_row && self.due(a) && !referred.contains(&a))
                .collect();
            if next.is_empty() {
                return gone;
            }
            gone.extend(next);
        }
    }

    fn columns(&self, t: usize) -> Vec<String> {
        let mut c = vec!["id".to_owned(), "data".to_owned()];
        if self.tables[t].unique {
            c.push("code".to_owned());
        }
        if self.tables[t].refers_to.is_some() {
            c.push("r".to_owned());
        }
        if self.tables[t].replies {
            c.push("s".to_owned());
        }
        c
    }

    /// The model: every table's rows after one run, as the snapshot reads them.
    fn expected(&self) -> Snapshot {
        let gone = self.deleted();
        let mut out = Snapshot::new();
        for at in self.all() {
            if gone.contains(&at) {
                continue;
            }
            let id = Self::id(at);
            let mut row = self.values(at);
            if self.due(at) {
                row[1] = None;
                if self.tables[at.0].unique {
                    row[2] = Some(format!("erased-{id}"));
                }
            }
            out.insert((at.0, id), row);
        }
        out
    }

    fn values(&self, at: At) -> Vec<Option<String>> {
        let id = Self::id(at);
        let mut v = vec![Some(id.to_string()), Some(format!("name {id}"))];
        if self.tables[at.0].unique {
            v.push(Some(format!("code-{id}")));
        }
        if self.tables[at.0].refers_to.is_some() {
            v.push(self.parent(at).map(|p| Self::id(p).to_string()));
        }
        if self.tables[at.0].replies {
            v.push(self.replied(at).map(|p| Self::id(p).to_string()));
        }
        v
    }

    async fn create(&self, db: &AppDb, backend: Backend) {
        let time = match backend {
            Backend::MySql => "DATETIME",
            _ => "TIMESTAMP",
        };
        for (i, t) in self.tables.iter().enumerate() {
            let mut cols = vec![
                "id INTEGER PRIMARY KEY".to_owned(),
                "data VARCHAR(60) NULL".to_owned(),
            ];
            if t.unique {
                cols.push("code VARCHAR(60) NOT NULL UNIQUE".to_owned());
            }
            if t.refers_to.is_some() {
                cols.push("r INTEGER NULL".to_owned());
            }
            if t.replies {
                cols.push("s INTEGER NULL".to_owned());
            }
            cols.push(format!("at {time} NULL"));
            cols.push(format!("closed {time} NULL"));
            if let Some(to) = t.refers_to {
                cols.push(format!("FOREIGN KEY (r) REFERENCES t{to} (id)"));
            }
            if t.replies {
                cols.push(format!("FOREIGN KEY (s) REFERENCES t{i} (id)"));
            }
            db.exec(&format!("CREATE TABLE t{i} ({})", cols.join(", ")))
                .await;
        }
        // Rows first, references once every row exists (they may form cycles).
        for at in self.all().collect::<Vec<_>>() {
            let mut v: Vec<String> = self.values(at)[..self.columns(at.0).len()]
                .iter()
                .map(|x| x.as_ref().map_or("NULL".to_owned(), |s| format!("'{s}'")))
                .collect();
            let refs = usize::from(self.tables[at.0].refers_to.is_some())
                + usize::from(self.tables[at.0].replies);
            let len = v.len();
            for x in &mut v[len - refs..] {
                *x = "NULL".to_owned();
            }
            let when = |days: Option<i64>| {
                days.map_or("NULL".to_owned(), |d| {
                    format!(
                        "'{}'",
                        (now() - Duration::days(d)).format("%Y-%m-%d %H:%M:%S")
                    )
                })
            };
            v.push(when(self.row(at).days_ago));
            v.push(when(self.row(at).closed_ago));
            db.exec(&format!("INSERT INTO t{} VALUES ({})", at.0, v.join(", ")))
                .await;
        }
        for at in self.all().collect::<Vec<_>>() {
            for (col, p) in [("r", self.parent(at)), ("s", self.replied(at))] {
                if let Some(p) = p {
                    db.exec(&format!(
                        "UPDATE t{} SET {col} = {} WHERE id = {}",
                        at.0,
                        Self::id(p),
                        Self::id(at)
                    ))
                    .await;
                }
            }
        }
    }

    fn policy_yaml(&self, url: &str) -> String {
        let mut out = String::from(
            "controller:
  name: Property Test Ltd.
  address: 1 Test street, Vienna, Austria
  contact_email: privacy@props.example
  supervisory_authority: { name: Austrian Data Protection Authority, url: https://dsb.gv.at }
purposes:
",
        );
        for (i, t) in self.tables.iter().enumerate() {
            out.push_str(&format!(
                "  - id: p{i}
    name: Purpose {i}
    legal_basis: contract
    subjects: [customer]
    categories: [user.name, user.unique_id]
    recipients: []
    retention: {{ keep_for: {}d, from: happened, basis: legal_obligation }}
  - id: q{i}
    name: Contract {i}
    legal_basis: contract
    subjects: [customer]
    categories: [user.name, user.unique_id]
    recipients: []
    retention: {{ keep_for: 0d, from: closed }}
",
                t.keep_days
            ));
        }
        out.push_str(&format!(
            "systems:
  - id: app
    name: Random application
    connection: {{ url_env: LETHE_TEST_NEVER_SET_APP_URL, default: \"{url}\" }}
    collections:
"
        ));
        for (i, t) in self.tables.iter().enumerate() {
            out.push_str(&format!(
                "      - name: t{i}\n        purposes: [p{i}, q{i}]\n        events: {{ happened: at, closed: closed }}\n"
            ));
            if t.keep_row {
                out.push_str("        erasure: keep_row\n");
            }
            out.push_str("        fields:\n          - { name: id, primary_key: true }\n");
            // The first table's rows are people's own records.
            let identity = if i == 0 { ", identity: name" } else { "" };
            out.push_str(&format!(
                "          - {{ name: data, categories: [user.name]{identity} }}\n"
            ));
            if t.unique {
                out.push_str("          - { name: code, categories: [user.unique_id] }\n");
            }
            if let Some(to) = t.refers_to {
                out.push_str(&format!(
                    "          - {{ name: r, references: t{to}.id }}\n"
                ));
            }
            if t.replies {
                out.push_str(&format!("          - {{ name: s, references: t{i}.id }}\n"));
            }
        }
        out
    }

    async fn snapshot(&self, db: &AppDb) -> Snapshot {
        let mut out = Snapshot::new();
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
}

type Snapshot = BTreeMap<(usize, i64), Vec<Option<String>>>;

/// Rows deleted and values masked per table.
fn counts(due: &[retention::Due]) -> BTreeMap<String, (u64, u64)> {
    due.iter()
        .map(|d| {
            (
                d.collection.clone(),
                (d.rows, d.fields.iter().map(|(_, n)| n).sum()),
            )
        })
        .collect()
}

async fn check(backend: Backend, world: World) -> Result<(), TestCaseError> {
    let Some(db) = common::appdb::app_db(backend, "retention_props").await else {
        return Ok(());
    };
    world.create(&db, backend).await;
    let dir = db.dir.path().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("policy.yaml"), world.policy_yaml(&db.url)).unwrap();
    let checked = Policy::load(&dir).unwrap();
    let errors: Vec<String> = checked.errors().map(|d| d.to_string()).collect();
    prop_assert!(errors.is_empty(), "{errors:#?}");
    let policy = checked.policy;
    let sources = Sources::default();
    let log = common::audit_log(db.dir.path()).await;
    let requested = retention::Requested {
        restricted: world.requested(Request::Restricted),
        erased: world.requested(Request::Erased),
    };
    let none = requested.clone();
    let options = RunOptions {
        batch_size: 2,
        max_duration: None,
        max_batches: None,
        progress: None,
        requested,
    };

    let planned = retention::plan(&policy, &sources, now(), &none)
        .await
        .unwrap();
    let report = retention::run(&policy, &sources, &log, now(), &options)
        .await
        .unwrap();
    let after = world.snapshot(&db).await;
    prop_assert_eq!(&after, &world.expected(), "the run against the model");
    prop_assert_eq!(counts(&planned), counts(&report.collections), "plan = run");

    let planned = retention::plan(&policy, &sources, now(), &none)
        .await
        .unwrap();
    prop_assert!(counts(&planned).values().all(|&(r, v)| r == 0 && v == 0));
    let again = retention::run(&policy, &sources, &log, now(), &options)
        .await
        .unwrap();
    prop_assert_eq!((again.rows_deleted, again.values_masked), (0, 0));
    prop_assert_eq!(world.snapshot(&db).await, after);
    sources.close().await;
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
        common::skipped("retention_props", what, var);
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

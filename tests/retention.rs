//! Retention enforcement with an injected clock, on SQLite always and on PostgreSQL and
//! MariaDB when their URL variables are set.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::appdb::{AppDb, Backend};
use lethe::audit::{AuditLog, KeySource};
use lethe::jobs::{self, JobContext};
use lethe::policy::Policy;
use lethe::retention::{self, RunOptions};
use lethe::sources::db::Sources;
use lethe::store::Store;
use secrecy::SecretString;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// People and rows on both sides of every deadline, relative to `now()`.
async fn seeded(backend: Backend, test: &str) -> Option<AppDb> {
    let db = common::appdb::app_db(backend, test).await?;
    let n = now();
    let day = Duration::days(1);
    let users = [
        // id, created, closed
        (1, n - day * 400, None),              // open account
        (2, n - day * 400, Some(n - day * 2)), // closed two days ago
        (3, n - day * 400, Some(n + day * 2)), // closing in two days
        (4, n - day * 365 * 9, Some(n - day * 365 * 8 - day)), // created 9 years ago, closed long ago
    ];
    for (id, created, closed) in users {
        let closed = closed.map_or("NULL".to_owned(), |c| format!("'{}'", ts(c)));
        db.exec(&format!(
            "INSERT INTO users VALUES ({id}, 'user{id}@example.org', 'User {id}', '{}', {closed})",
            ts(created)
        ))
        .await;
    }
    let invoices = [
        (10, 1, n - day * (365 * 8 + 3)), // 8 calendar years (2,922 days) and a day ago: masked
        (11, 1, n - day * (365 * 8 + 1)), // a day short of 8 calendar years: kept
        (12, 4, n - day * 365 * 9),
    ];
    for (id, user, issued) in invoices {
        db.exec(&format!(
            "INSERT INTO invoices VALUES ({id}, {user}, 'User {user}', 42.00, '{}')",
            ts(issued)
        ))
        .await;
    }
    let views = [
        (20, 1, n - day * 90 - Duration::seconds(1)), // just past 90 days
        (21, 1, n - day * 90 + Duration::hours(1)),   // just inside
        (22, 2, n - day * 200),
        (23, 3, n - day * 10),
    ];
    for (id, user, at) in views {
        db.exec(&format!(
            "INSERT INTO page_views VALUES ({id}, {user}, '192.0.2.{id}', '/p{id}', '{}')",
            ts(at)
        ))
        .await;
    }
    for (id, user) in [(30, 1), (31, 2), (32, 3), (33, 2)] {
        db.exec(&format!(
            "INSERT INTO comments VALUES ({id}, {user}, 'comment {id}', '{}')",
            ts(n - day * 30)
        ))
        .await;
    }
    Some(db)
}

fn policy(db: &AppDb, edit: impl Fn(String) -> String) -> Policy {
    let dir = db.policy_dir("dsr", edit);
    let checked = Policy::load(&dir).unwrap();
    let errors: Vec<String> = checked.errors().map(|d| d.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    checked.policy
}

async fn audit(db: &AppDb) -> AuditLog {
    common::audit_log(db.dir.path()).await
}

fn options(batch: u32) -> RunOptions {
    RunOptions {
        batch_size: batch,
        max_duration: None,
        max_batches: None,
        progress: None,
        requested: Default::default(),
    }
}

macro_rules! all_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(
                    super::Backend::Sqlite,
                    concat!(stringify!($name), "_sqlite"),
                )
                .await;
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(super::Backend::Postgres, stringify!($name)).await;
            }
            #[tokio::test]
            async fn mariadb() {
                super::$name(super::Backend::MySql, stringify!($name)).await;
            }
        }
    };
}

async fn deadlines_holds_and_dry_runs(backend: Backend, test: &str) {
    let Some(db) = seeded(backend, test).await else {
        return;
    };
    let policy = policy(&db, |t| t);
    let log = audit(&db).await;
    let sources = Sources::default();

    let planned = retention::plan(&policy, &sources, now(), &Default::default())
        .await
        .unwrap();
    let before = db.everything().await;
    assert_eq!(db.everything().await, before, "planning wrote");
    let report = retention::run(&policy, &sources, &log, now(), &options(2))
        .await
        .unwrap();
    assert!(report.complete);
    // The dry run predicted exactly what the run did.
    for (p, r) in planned.iter().zip(&report.collections) {
        assert_eq!(
            (&p.collection, p.rows),
            (&r.collection, r.rows),
            "{p:?} vs {r:?}"
        );
        let predicted: Vec<(String, u64)> =
            p.fields.iter().filter(|(_, n)| *n > 0).cloned().collect();
        assert_eq!(predicted, r.fields, "{}", p.collection);
    }

    // Page views: just past 90 days gone, just inside kept.
    let views: Vec<String> = db
        .rows("page_views", &["id"], "1 = 1")
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert_eq!(views, ["21", "23"]);
    // Comments go when the account's closing has passed; open and future closings stay.
    let comments: Vec<String> = db
        .rows("comments", &["id"], "1 = 1")
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert_eq!(comments, ["30", "32"]);
    // Invoices are kept; the fields past 8 years are masked.
    let inv = db
        .rows("invoices", &["id", "billing_name", "amount"], "1 = 1")
        .await;
    assert_eq!(inv[0][1].as_deref(), Some("erased"));
    assert_eq!(
        inv[0][2].as_deref().map(|a| a.parse::<f64>().unwrap()),
        Some(0.0)
    );
    assert_eq!(inv[1][1].as_deref(), Some("User 1"));
    // Users: user 4 is past 8 years after creation and closed, but invoice 12 still
    // references it, so the row stays.
    assert_eq!(db.count("users", "1 = 1").await, 4);
    assert!(report.longest_batch_ms < 10_000);

    // Nothing more is due: a second run changes nothing.
    let after = db.everything().await;
    let again = retention::run(&policy, &sources, &log, now(), &options(2))
        .await
        .unwrap();
    assert_eq!((again.rows_deleted, again.values_masked), (0, 0));
    assert_eq!(db.everything().await, after);
    // One audit entry per batch, with counts only.
    let entries = log.entries(&Default::default()).await.unwrap();
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.header.action.starts_with("retention.batch"))
            .count() as u64,
        report.batches
    );
    assert!(!entries.iter().any(|e| e.header.summary.contains("192.0.2")));
}
all_backends!(deadlines_holds_and_dry_runs);

async fn holds_and_the_longest_rule(backend: Backend, test: &str) {
    let Some(db) = seeded(backend, test).await else {
        return;
    };
    // page_views also serve billing (8 years): the longer rule wins; comments are held.
    let policy = policy(&db, |t| {
        let t = t.replace(
            "          - { name: path, categories: [user.behavior.browsing_history] }",
            "          - { name: path, categories: [user.behavior.browsing_history], purposes: [analytics, billing] }",
        );
        format!(
            "{t}holds:\n  - {{ id: case-9, reason: pending litigation, collections: [app.comments] }}\n"
        )
    });
    let log = audit(&db).await;
    let sources = Sources::default();
    let report = retention::run(&policy, &sources, &log, now(), &options(100))
        .await
        .unwrap();
    assert_eq!(
        db.count("page_views", "1 = 1").await,
        4,
        "a 90-day view was deleted although it serves an 8-year purpose"
    );
    assert_eq!(db.count("comments", "1 = 1").await, 4);
    let comments = report
        .collections
        .iter()
        .find(|c| c.collection == "comments")
        .unwrap();
    assert_eq!(comments.held_by.as_deref(), Some("case-9"));
}
all_backends!(holds_and_the_longest_rule);

/// A person who restricted processing (Art. 18) keeps every row, due or not; the others
/// are handled as usual, and the plan says what was left alone.
async fn a_restriction_keeps_the_persons_rows(backend: Backend, test: &str) {
    let Some(db) = seeded(backend, test).await else {
        return;
    };
    let policy = policy(&db, |t| t);
    let log = audit(&db).await;
    let sources = Sources::default();
    let who = [lethe::audit::Identity::parse("email=User2@Example.org").unwrap()];
    let restricted = retention::restricted(&policy, &sources, &who)
        .await
        .unwrap();
    let restricted = retention::Requested {
        restricted,
        ..Default::default()
    };
    let planned = retention::plan(&policy, &sources, now(), &restricted)
        .await
        .unwrap();
    let mut opts = options(1);
    opts.requested = restricted;
    let report = retention::run(&policy, &sources, &log, now(), &opts)
        .await
        .unwrap();
    for (p, r) in planned.iter().zip(&report.collections) {
        assert_eq!(
            (p.rows, p.restricted_rows),
            (r.rows, r.restricted_rows),
            "{}",
            p.collection
        );
    }
    let ids = |table: &'static str| {
        let db = &db;
        async move {
            db.rows(table, &["id"], "1 = 1")
                .await
                .into_iter()
                .map(|r| r[0].clone().unwrap())
                .collect::<Vec<_>>()
        }
    };
    // User 2's view (200 days old) and comments (account closed) stay; user 1's old view goes.
    assert_eq!(ids("page_views").await, ["21", "22", "23"]);
    assert_eq!(ids("comments").await, ["30", "31", "32", "33"]);
    let views = report
        .collections
        .iter()
        .find(|c| c.collection == "page_views")
        .unwrap();
    assert_eq!(views.restricted_rows, 1);
    assert_eq!(report.rows_deleted, 1);
    // Once the restriction is lifted, the next run catches up.
    let after = retention::run(&policy, &sources, &log, now(), &options(1))
        .await
        .unwrap();
    assert_eq!(after.rows_deleted, 3);
    assert_eq!(ids("comments").await, ["30", "32"]);
}
all_backends!(a_restriction_keeps_the_persons_rows);

/// A run stopped after one batch, then resumed, ends with the same database as an
/// uninterrupted run.
async fn a_stopped_run_resumes_to_the_same_result(backend: Backend, test: &str) {
    let (Some(a), Some(b)) = (
        seeded(backend, &format!("{test}_a")).await,
        seeded(backend, &format!("{test}_b")).await,
    ) else {
        return;
    };
    // Indexed on the event: on SQLite the page views are walked along the index.
    for db in [&a, &b] {
        db.exec("CREATE INDEX page_views_viewed_at ON page_views (viewed_at)")
            .await;
    }
    let (pa, pb) = (policy(&a, |t| t), policy(&b, |t| t));
    let (la, lb) = (audit(&a).await, audit(&b).await);
    let (sa, sb) = (Sources::default(), Sources::default());
    let stopped = retention::run(
        &pa,
        &sa,
        &la,
        now(),
        &RunOptions {
            batch_size: 1,
            max_duration: None,
            max_batches: Some(1),
            progress: None,
            requested: Default::default(),
        },
    )
    .await
    .unwrap();
    assert!(!stopped.complete);
    assert_eq!(stopped.batches, 1);
    let resumed = retention::run(&pa, &sa, &la, now(), &options(1))
        .await
        .unwrap();
    assert!(resumed.complete);
    if matches!(backend, Backend::Sqlite) {
        let views = resumed
            .collections
            .iter()
            .find(|c| c.collection == "page_views")
            .unwrap();
        assert_eq!(
            views.walked_by.as_deref(),
            Some("index \"page_views_viewed_at\"")
        );
    }
    let whole = retention::run(&pb, &sb, &lb, now(), &options(1))
        .await
        .unwrap();
    assert_eq!(
        stopped.rows_deleted + resumed.rows_deleted,
        whole.rows_deleted
    );
    assert_eq!(a.everything().await, b.everything().await);
}
all_backends!(a_stopped_run_resumes_to_the_same_result);

/// The ids left in `table`, in numeric order.
async fn ids_left(db: &AppDb, table: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = db
        .rows(table, &["id"], "1 = 1")
        .await
        .into_iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

/// Page views with 700 rows, ids with gaps and below zero, every third past its 90 days
/// (`visit_due`); and one more due at the smallest key there can be.
/// Page views 89 and 91 days before `now`: seed them against the clock of whatever deletes
/// them (`now()` for the library, the real clock for the `lethe` binary).
fn visits(backend: Backend, now: DateTime<Utc>) -> (String, String) {
    let ts_type = match backend {
        Backend::Sqlite => "TEXT",
        Backend::Postgres => "TIMESTAMPTZ",
        Backend::MySql => "DATETIME",
    };
    let columns =
        format!("id BIGINT PRIMARY KEY, ip_address VARCHAR(64) NULL, viewed_at {ts_type} NOT NULL");
    let values = (1..=700i64)
        .map(|n| {
            let age = if visit_due(n) { 91 } else { 89 };
            format!(
                "({}, '192.0.2.{}', '{}')",
                visit_id(n),
                n % 250,
                ts(now - Duration::days(age))
            )
        })
        .chain([format!(
            "({}, NULL, '{}')",
            i64::MIN,
            ts(now - Duration::days(91))
        )])
        .collect::<Vec<_>>()
        .join(", ");
    (columns, values)
}

fn visit_due(n: i64) -> bool {
    n % 3 == 0
}

fn visit_id(n: i64) -> i64 {
    n * 7 - 2100
}

/// The ids of the visits that are not due.
fn visits_kept() -> Vec<i64> {
    (1..=700i64)
        .filter(|n| !visit_due(*n))
        .map(visit_id)
        .collect()
}

/// A policy keeping the page views of each of `tables` for 90 days.
fn visits_policy(db: &AppDb, tables: &[&str]) -> Policy {
    let collections: String = tables
        .iter()
        .map(|name| format!(
            "      - name: {name}\n        purposes: [analytics]\n        events: {{ collected: viewed_at }}\n        fields:\n          - {{ name: id, primary_key: true }}\n          - {{ name: ip_address, categories: [user.device.ip_address], identity: ip }}\n"
        ))
        .collect();
    let dir = db.dir.path().join("visits");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("policy.yaml"),
        format!(
            "controller: {{ name: Walk Ltd., address: Vienna, contact_email: privacy@walk.example }}\n\
             purposes:\n  - {{ id: analytics, name: Analytics, legal_basis: consent, subjects: [visitor], categories: [user.device.ip_address], retention: {{ keep_for: 90d, from: collected }} }}\n\
             systems:\n  - id: app\n    name: App\n    connection: {{ url_env: LETHE_TEST_NEVER_SET, default: \"{}\" }}\n    collections:\n{collections}",
            db.url
        ),
    )
    .unwrap();
    let checked = Policy::load(&dir).unwrap();
    let errors: Vec<String> = checked.errors().map(|d| d.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    checked.policy
}

/// The rows of each `retention.batch_deleted` entry, in order.
async fn batch_sizes(log: &AuditLog) -> Vec<u64> {
    let entries = log.entries(&Default::default()).await.unwrap();
    entries
        .iter()
        .filter(|e| e.header.action == "retention.batch_deleted")
        .map(|e| {
            let s: serde_json::Value = serde_json::from_str(&e.header.summary).unwrap();
            s["rows"].as_u64().unwrap()
        })
        .collect()
}

/// Every way of walking a table (pages on PostgreSQL; on SQLite rowids, or the index on
/// the event where the due rows lie in its order; the primary key where none of these is
/// there: a WITHOUT ROWID or partitioned table, MariaDB) deletes exactly the due rows, in
/// batches near the size asked for.
async fn every_walk_deletes_exactly_the_due_rows(backend: Backend, test: &str) {
    let Some(db) = common::appdb::app_db(backend, test).await else {
        return;
    };
    let (columns, values) = visits(backend, now());
    let mut tables = vec![("visits", format!("CREATE TABLE visits ({columns})"))];
    match backend {
        Backend::Sqlite => {
            tables.push((
                "visits_keyed",
                format!("CREATE TABLE visits_keyed ({columns}) WITHOUT ROWID"),
            ));
            // The key is the rowid itself.
            tables.push((
                "visits_alias",
                format!("CREATE TABLE visits_alias ({})", columns.replace("BIGINT", "INTEGER")),
            ));
            // A column named rowid hides the rowid.
            tables.push((
                "visits_rowid",
                format!("CREATE TABLE visits_rowid ({columns}, \"rowid\" INTEGER NULL)"),
            ));
            // Indexed on the event, the due rows in the index's order: the index is walked.
            tables.push((
                "visits_indexed",
                format!(
                    "CREATE TABLE visits_indexed ({columns}); \
                     CREATE INDEX visits_indexed_at ON visits_indexed (viewed_at)"
                ),
            ));
            // Indexed too, but a third of the rows due and scattered over the index.
            tables.push((
                "visits_scattered",
                format!(
                    "CREATE TABLE visits_scattered ({columns}); \
                     CREATE INDEX visits_scattered_at ON visits_scattered (viewed_at)"
                ),
            ));
        }
        Backend::Postgres => tables.push((
            "visits_parts",
            format!(
                "CREATE TABLE visits_parts ({columns}) PARTITION BY RANGE (id); \
                 CREATE TABLE visits_parts_a PARTITION OF visits_parts FOR VALUES FROM (MINVALUE) TO (0); \
                 CREATE TABLE visits_parts_b PARTITION OF visits_parts FOR VALUES FROM (0) TO (MAXVALUE)"
            ),
        )),
        Backend::MySql => {}
    }
    for (name, ddl) in &tables {
        db.exec(ddl).await;
        db.exec(&format!(
            "INSERT INTO {name} (id, ip_address, viewed_at) VALUES {values}"
        ))
        .await;
    }
    if matches!(backend, Backend::Sqlite) {
        // The same value everywhere: a walk along this column would stop after one batch.
        db.exec("UPDATE visits_rowid SET \"rowid\" = 1").await;
        // Runs of rows sharing a time, later for later rows: batches begin and end
        // within a run and between runs.
        db.exec("UPDATE visits_indexed SET viewed_at = datetime(viewed_at, '+' || (rowid / 30) || ' seconds')")
            .await;
        // Times by a hash of the row: neighbours in the index lie far apart in the table.
        db.exec("UPDATE visits_scattered SET viewed_at = datetime(viewed_at, '+' || ((rowid * 337) % 701) || ' seconds')")
            .await;
    }
    let names: Vec<&str> = tables.iter().map(|(name, _)| *name).collect();
    let policy = visits_policy(&db, &names);
    let log = audit(&db).await;
    let sources = Sources::default();
    let report = retention::run(&policy, &sources, &log, now(), &options(10))
        .await
        .unwrap();
    for name in &names {
        assert_eq!(ids_left(&db, name).await, visits_kept(), "{name}");
        let walk = match (backend, *name) {
            (_, "visits_keyed" | "visits_parts") | (Backend::MySql, _) => "key",
            (Backend::Postgres, _) => "pages",
            (_, "visits_indexed") => "index \"visits_indexed_at\"",
            _ => "rowid",
        };
        let walked = report.collections.iter().find(|c| c.collection == *name);
        assert_eq!(walked.unwrap().walked_by.as_deref(), Some(walk), "{name}");
    }
    assert_eq!(report.rows_deleted, 234 * tables.len() as u64);
    // Batches hold at most four times the batch size (by rows read); on PostgreSQL a
    // batch reads whole pages, at least one.
    let sizes = batch_sizes(&log).await;
    assert_eq!(sizes.iter().sum::<u64>(), report.rows_deleted);
    assert_eq!(sizes.len() as u64, report.batches);
    let most = if matches!(backend, Backend::Postgres) {
        291
    } else {
        40
    };
    assert!(sizes.iter().all(|n| (1..=most).contains(n)), "{sizes:?}");
    assert!(sizes.len() >= 234 * tables.len() / 40, "{sizes:?}");
}
all_backends!(every_walk_deletes_exactly_the_due_rows);

/// A batch the database refuses (here a trigger raising an error for one due row) ends
/// the run with an error; every batch that did commit, the one beside it on PostgreSQL
/// included, is in the audit log, and a run after the cause is gone finishes the work.
async fn a_refused_batch_leaves_every_committed_one_recorded(backend: Backend, test: &str) {
    let Some(db) = common::appdb::app_db(backend, test).await else {
        return;
    };
    let (columns, values) = visits(backend, now());
    db.exec(&format!("CREATE TABLE visits ({columns})")).await;
    db.exec(&format!(
        "INSERT INTO visits (id, ip_address, viewed_at) VALUES {values}"
    ))
    .await;
    let refused = visit_id(351);
    assert!(visit_due(351));
    db.exec(&match backend {
        Backend::Sqlite => format!(
            "CREATE TRIGGER refuse BEFORE DELETE ON visits WHEN OLD.id = {refused} \
             BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ),
        Backend::Postgres => format!(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$BEGIN RAISE EXCEPTION 'refused'; END$$; \
             CREATE TRIGGER refuse BEFORE DELETE ON visits FOR EACH ROW \
             WHEN (OLD.id = {refused}) EXECUTE FUNCTION refuse()"
        ),
        Backend::MySql => format!(
            "CREATE TRIGGER refuse BEFORE DELETE ON visits FOR EACH ROW BEGIN \
             IF OLD.id = {refused} THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused'; \
             END IF; END"
        ),
    })
    .await;
    let policy = visits_policy(&db, &["visits"]);
    let log = audit(&db).await;
    let sources = Sources::default();
    let err = retention::run(&policy, &sources, &log, now(), &options(10))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`visits`"), "{err}");
    let left = ids_left(&db, "visits").await;
    assert!(left.contains(&refused));
    let deleted = 701 - left.len() as u64;
    assert!(deleted > 0);
    assert_eq!(batch_sizes(&log).await.iter().sum::<u64>(), deleted);

    db.exec(match backend {
        Backend::Postgres => "DROP TRIGGER refuse ON visits",
        _ => "DROP TRIGGER refuse",
    })
    .await;
    let report = retention::run(&policy, &sources, &log, now(), &options(10))
        .await
        .unwrap();
    assert_eq!(report.rows_deleted + deleted, 234);
    assert_eq!(ids_left(&db, "visits").await, visits_kept());
    assert_eq!(batch_sizes(&log).await.iter().sum::<u64>(), 234);
}
all_backends!(a_refused_batch_leaves_every_committed_one_recorded);

/// SQLite keeps times as text in whatever format the application wrote, or as numbers:
/// a row is due by the instant its value names (time zone offsets applied, to the second),
/// not by how its text sorts; a value that names no time is never due. The same holds when
/// the walk follows an index on the time: values whose text sorts after the cutoff, a
/// Julian day or a blob, are found as well.
#[tokio::test]
async fn sqlite_times_are_compared_as_instants_in_any_format() {
    let db = common::appdb::app_db(Backend::Sqlite, "time_formats")
        .await
        .unwrap();
    // The cutoff is 90 days before now(): 2026-08-29 12:00:00 UTC.
    let stamps: [(i64, &str, bool); 19] = [
        (1, "'2026-08-28 10:00:00'", true),
        (2, "'2026-08-29T11:59:59Z'", true),
        (3, "'2026-08-29T12:00:01Z'", false),
        (4, "'2026-08-29 13:30:00+02:00'", true),
        (5, "'2026-08-29 10:30:00-02:00'", false),
        (6, "'2026-08-29'", true),
        (7, "'2026-08-29 12:00:00.900'", true),
        (8, "2461281.5", true),
        (9, "'2461281.5'", true),
        (10, "'not a time'", false),
        (11, "NULL", false),
        // A day after the cutoff by its text, before it by its offset.
        (12, "'2026-08-30 02:00:00+14:30'", true),
        (13, "'2026-08-31 00:00:00+14:59'", false),
        // 2023-02-24 as a Julian day in text, sorting after every date of this century.
        (14, "'2460000.5'", true),
        (15, "'2027-01-01'", false),
        // 2026-01-01 as a blob, sorting after all text.
        (16, "X'323032362D30312D3031'", true),
        (18, "'9999-12-31'", false),
        (19, "'20260101'", false),
        (20, "2461281", true),
    ];
    let due = stamps.iter().filter(|(_, _, due)| *due).count() as u64;
    assert_eq!(due, 11);
    let kept: Vec<i64> = stamps
        .iter()
        .filter(|(_, _, due)| !due)
        .map(|(id, _, _)| *id)
        .chain(100..300)
        .collect();
    // Declared DATETIME, the column has numeric affinity: numbers in text are stored as
    // numbers, which sort before all text.
    for (table, kind, walk) in [
        ("stamps", "TEXT", "rowid"),
        ("stamps_indexed", "TEXT", "index \"stamps_indexed_at\""),
        ("stamps_numeric", "DATETIME", "index \"stamps_numeric_at\""),
        // Compared case-blind, the column's index in binary order cannot serve.
        ("stamps_nocase", "TEXT COLLATE NOCASE", "rowid"),
    ] {
        db.exec(&format!(
            "CREATE TABLE {table} (id INTEGER PRIMARY KEY, ip_address TEXT, viewed_at {kind} NULL)"
        ))
        .await;
        for (id, at, _) in stamps {
            db.exec(&format!(
                "INSERT INTO {table} VALUES ({id}, '192.0.2.1', {at})"
            ))
            .await;
        }
        // Later views, none due: on the indexed table the due rows are a few of many.
        db.exec(&format!(
            "INSERT INTO {table} WITH RECURSIVE s(n) AS (SELECT 100 UNION ALL SELECT n + 1 FROM s WHERE n < 299) \
             SELECT n, '192.0.2.2', '2026-11-20 10:00:00' FROM s"
        ))
        .await;
        if table != "stamps" {
            db.exec(&format!(
                "CREATE INDEX {table}_at ON {table} (viewed_at COLLATE BINARY)"
            ))
            .await;
        }
        let policy = visits_policy(&db, &[table]);
        let sources = Sources::default();
        let plan = retention::plan(&policy, &sources, now(), &Default::default())
            .await
            .unwrap();
        assert_eq!(plan[0].rows, due, "{table}");
        let log = audit(&db).await;
        let report = retention::run(&policy, &sources, &log, now(), &options(2))
            .await
            .unwrap();
        assert_eq!(report.rows_deleted, due, "{table}");
        assert_eq!(ids_left(&db, table).await, kept, "{table}");
        assert_eq!(report.collections[0].walked_by.as_deref(), Some(walk));
        sources.close().await;
    }
}

/// Rows `(id, SQL literal of the event, due?)` in a new table `table` whose event column
/// has type `kind` (indexed): `retention plan` counts the due ones, and a run deletes
/// exactly those.
async fn due_by_value(db: &AppDb, table: &str, kind: &str, rows: &[(i64, String, bool)]) {
    db.exec(&format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, ip_address VARCHAR(64) NULL, viewed_at {kind} NULL)"
    ))
    .await;
    db.exec(&format!(
        "CREATE INDEX {table}_viewed_at ON {table} (viewed_at)"
    ))
    .await;
    let values: Vec<String> = rows
        .iter()
        .map(|(id, at, _)| format!("({id}, '192.0.2.1', {at})"))
        .collect();
    db.exec(&format!("INSERT INTO {table} VALUES {}", values.join(", ")))
        .await;
    let due = rows.iter().filter(|(_, _, due)| *due).count() as u64;
    let policy = visits_policy(db, &[table]);
    let sources = Sources::default();
    let plan = retention::plan(&policy, &sources, now(), &Default::default())
        .await
        .unwrap();
    assert_eq!(plan[0].rows, due);
    let log = audit(db).await;
    let report = retention::run(&policy, &sources, &log, now(), &options(2))
        .await
        .unwrap();
    assert_eq!(report.rows_deleted, due);
    let kept: Vec<i64> = rows
        .iter()
        .filter(|(_, _, due)| !due)
        .map(|(id, _, _)| *id)
        .collect();
    assert_eq!(ids_left(db, table).await, kept);
}

/// An event kept as a number is a Unix time, in seconds or, from 10^11 on, in
/// milliseconds; a number too small to be a time since 1973 (0, a date written as digits)
/// is never due, nor is NULL.
async fn unix_times_in_number_columns_are_read_as_seconds_or_milliseconds(
    backend: Backend,
    test: &str,
) {
    let Some(db) = common::appdb::app_db(backend, test).await else {
        return;
    };
    let cutoff = (now() - Duration::days(90)).timestamp();
    let clicks = [
        (1, (cutoff - 3600).to_string(), true),
        (2, cutoff.to_string(), true),
        (3, (cutoff + 3600).to_string(), false),
        (4, ((cutoff - 1) * 1000 + 999).to_string(), true),
        (5, ((cutoff + 1) * 1000).to_string(), false),
        (6, "0".into(), false),
        (7, "20260511".into(), false),
        (8, "NULL".into(), false),
        (9, (cutoff - 86_400 * 365).to_string(), true),
    ];
    due_by_value(&db, "clicks", "BIGINT", &clicks).await;
}
all_backends!(unix_times_in_number_columns_are_read_as_seconds_or_milliseconds);

/// An event kept as text in ISO 8601 form is read as UTC, with `T` or a space between date
/// and time: on the cutoff's own day the hour decides, whichever separator was written.
async fn iso_text_times_are_read_with_either_separator(backend: Backend, test: &str) {
    let Some(db) = common::appdb::app_db(backend, test).await else {
        return;
    };
    // The cutoff is 2026-08-29 12:00:00 UTC.
    let notes = [
        (1, "2026-08-29 11:00:00", true),
        (2, "2026-08-29 13:00:00", false),
        (3, "2026-08-29T11:00:00", true),
        (4, "2026-08-29T13:00:00Z", false),
        (5, "2026-08-28", true),
        (6, "2026-08-29", true),
        (7, "not a time", false),
        (8, "2026-08-29T12:00:00", true),
        (9, "2026-08-30", false),
    ]
    .map(|(id, at, due)| (id, format!("'{at}'"), due));
    due_by_value(&db, "notes", "VARCHAR(40)", &notes).await;
}
all_backends!(iso_text_times_are_read_with_either_separator);

/// An event column whose type names no time (JSON, a blob) is a schema error naming it, before
/// anything is read or deleted. SQLite, where any column holds any value, reads it as it
/// reads text.
async fn an_event_column_that_holds_no_time_is_refused(backend: Backend, test: &str) {
    let Some(db) = common::appdb::app_db(backend, test).await else {
        return;
    };
    // MariaDB's JSON is text: a blob there.
    let kind = match backend {
        Backend::MySql => "BLOB",
        _ => "JSON",
    };
    db.exec(&format!("CREATE TABLE clicks (id BIGINT PRIMARY KEY, ip_address VARCHAR(64) NULL, viewed_at {kind} NULL)"))
        .await;
    db.exec("INSERT INTO clicks VALUES (1, '192.0.2.1', '{\"at\": \"2020-01-01\"}')")
        .await;
    let policy = visits_policy(&db, &["clicks"]);
    let sources = Sources::default();
    let log = audit(&db).await;
    let run = retention::run(&policy, &sources, &log, now(), &options(2)).await;
    if matches!(backend, Backend::Sqlite) {
        assert_eq!(run.unwrap().rows_deleted, 0);
    } else {
        let err = run.unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "the `collected` event of `clicks` reads `clicks.viewed_at`, of type {}",
                kind.to_lowercase()
            )),
            "{err}"
        );
    }
    assert_eq!(ids_left(&db, "clicks").await, vec![1]);
}
all_backends!(an_event_column_that_holds_no_time_is_refused);

/// `lethe retention run` says what it deleted and how it read each table.
#[tokio::test]
async fn the_cli_run_says_how_each_table_was_read() {
    let db = common::appdb::app_db(Backend::Sqlite, "cli_walks")
        .await
        .unwrap();
    // The binary reads the real clock, so the rows are seeded against it.
    let (columns, values) = visits(Backend::Sqlite, Utc::now());
    for name in ["visits", "visits_indexed"] {
        db.exec(&format!("CREATE TABLE {name} ({columns})")).await;
        db.exec(&format!(
            "INSERT INTO {name} (id, ip_address, viewed_at) VALUES {values}"
        ))
        .await;
    }
    db.exec("CREATE INDEX visits_indexed_at ON visits_indexed (viewed_at)")
        .await;
    visits_policy(&db, &["visits", "visits_indexed"]);
    let store = format!(
        "sqlite://{}?mode=rwc",
        db.dir.path().join("lethe.db").display()
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["retention", "run", "--batch-size", "50", "--policies"])
        .arg(db.dir.path().join("visits"))
        .args(["--database", &store])
        .current_dir(db.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("app.visits: 234 row(s)"), "{text}");
    assert!(text.contains("    read by rowid\n"), "{text}");
    assert!(text.contains("app.visits_indexed: 234 row(s)"), "{text}");
    assert!(
        text.contains("    read by index \"visits_indexed_at\"\n"),
        "{text}"
    );
    assert!(text.contains("468 row(s) deleted"), "{text}");
    assert_eq!(ids_left(&db, "visits_indexed").await, visits_kept());
}

/// A nightly run: few rows due, at the start of the table, in its middle and on its last
/// page. On PostgreSQL the planner expects few, so the walk reads only the pages from the
/// first due row to the last; every due row goes, and nothing else.
async fn a_run_with_few_due_rows_finds_each_of_them(backend: Backend, test: &str) {
    let Some(db) = common::appdb::app_db(backend, test).await else {
        return;
    };
    let due = |n: i64| n <= 40 || n == 2500 || n == 4990;
    let values = (1..=5000i64)
        .map(|n| {
            let age = if due(n) { 91 } else { 30 };
            format!(
                "({n}, {}, '192.0.2.{}', '/p', '{}')",
                if n % 2 == 0 { "1" } else { "NULL" },
                n % 250,
                ts(now() - Duration::days(age))
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    db.exec("INSERT INTO users VALUES (1, 'a@example.org', 'A', '2026-01-01 00:00:00', NULL)")
        .await;
    db.exec(&format!("INSERT INTO page_views VALUES {values}"))
        .await;
    db.exec("CREATE INDEX page_views_viewed_at ON page_views (viewed_at)")
        .await;
    db.exec(match backend {
        Backend::Sqlite => "ANALYZE",
        Backend::Postgres => "ANALYZE page_views",
        Backend::MySql => "ANALYZE TABLE page_views",
    })
    .await;
    let policy = policy(&db, |t| t);
    let log = audit(&db).await;
    let sources = Sources::default();
    let report = retention::run(&policy, &sources, &log, now(), &options(5000))
        .await
        .unwrap();
    assert_eq!(report.rows_deleted, 42);
    assert_eq!(
        ids_left(&db, "page_views").await,
        (1..=5000).filter(|n| !due(*n)).collect::<Vec<_>>()
    );
}
all_backends!(a_run_with_few_due_rows_finds_each_of_them);

/// lethe's own SQLite connections keep the rollback journal file between commits; the
/// database's journal mode, as other programs see it, is what it was, WAL included.
#[tokio::test]
async fn the_journal_mode_of_a_sqlite_database_is_left_as_it_was() {
    for mode in ["delete", "wal"] {
        let db = seeded(Backend::Sqlite, "journal_mode").await.unwrap();
        db.exec(&format!("PRAGMA journal_mode = {mode}")).await;
        let policy = policy(&db, |t| t);
        let log = audit(&db).await;
        let sources = Sources::default();
        let report = retention::run(&policy, &sources, &log, now(), &options(1))
            .await
            .unwrap();
        assert!(report.rows_deleted > 0);
        sources.close().await;
        let mut c = db.conn().await;
        let now_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(now_mode, mode);
    }
}

/// Two schedulers (separate pools, as two instances would have) firing the same tick:
/// the job runs once.
async fn two_schedulers_run_a_tick_once(store_url: SecretString, db: AppDb) {
    let policy = Arc::new(policy(&db, |t| t));
    let keys = KeySource {
        master: None,
        signing: None,
        dir: db.dir.path().join(".lethe"),
    };
    let mut contexts = Vec::new();
    for i in 0..2 {
        let store = Store::open(&store_url).await.unwrap();
        let audit = AuditLog::open(store.clone(), &keys).await.unwrap();
        let outbox_key = audit.outbox_key();
        contexts.push(JobContext {
            policy: policy.clone(),
            store,
            audit,
            sources: Arc::new(Sources::default()),
            keys: keys.clone(),
            holder: format!("instance-{i}"),
            progress: None,
            mailer: Arc::new(
                lethe::notify::Mailer::from_config(
                    &lethe::config::Config::default(),
                    None,
                    db.dir.path().join("outbox"),
                )
                .unwrap()
                .with_outbox_key(outbox_key),
            ),
        });
    }
    let (specs, diags) = lethe::policy::jobs::load_jobs(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs"),
    );
    assert!(diags.is_empty(), "{diags:?}");
    let spec = specs
        .iter()
        .find(|s| s.name.as_str() == "nightly-retention")
        .unwrap();
    let tick = jobs::tick(spec, now());
    let (a, b) = tokio::join!(
        jobs::run(&contexts[0], spec, Some(&tick), now()),
        jobs::run(&contexts[1], spec, Some(&tick), now())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let ran: Vec<_> = [&a, &b]
        .into_iter()
        .filter(|o| o.run_id.is_some())
        .collect();
    assert_eq!(ran.len(), 1, "{a:?} {b:?}");
    assert_eq!(ran[0].status, "completed");
    let other = if a.run_id.is_some() { &b } else { &a };
    assert_eq!(other.status, "claimed by another instance");
    let history = contexts[0].store.job_runs(10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].summary["rows_deleted"], 4);
}

#[tokio::test]
async fn two_schedulers_on_one_sqlite_store_run_once() {
    let db = seeded(Backend::Sqlite, "two_schedulers_sqlite")
        .await
        .unwrap();
    let (url, _dir) = common::sqlite_store();
    two_schedulers_run_a_tick_once(url, db).await;
}

#[tokio::test]
async fn two_schedulers_on_one_postgres_store_run_once() {
    let Some(url) = common::postgres_store("two_schedulers_on_one_postgres_store_run_once").await
    else {
        return;
    };
    let db = seeded(Backend::Sqlite, "two_schedulers_pg").await.unwrap();
    two_schedulers_run_a_tick_once(url, db).await;
}

#[test]
fn a_bad_job_file_is_a_check_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jobs.yaml"),
        "jobs:\n  - name: nightly\n    kind: retention\n    schedule: \"0 30 2 * *\"\n  - name: other\n    kind: backup\n    schedule: \"0 0 1 * * *\"\n  - name: third\n    kind: retention\n    schedule: \"0 0 1 * * *\"\n    options: { batch: 10 }\n  - name: purge\n    kind: package_purge\n    schedule: \"0 0 1 * * *\"\n    options: { keep_requests: 3 years }\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args([
            "check",
            "--policies",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
            "--jobs",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("jobs.yaml:4:15: error: jobs[nightly].schedule"),
        "{text}"
    );
    assert!(text.contains("jobs.yaml:6:11: error: jobs"), "{text}");
    assert!(text.contains("jobs.yaml:11:16: error: jobs"), "{text}");
    assert!(text.contains("unknown key `batch`"), "{text}");
    assert!(
        text.contains("jobs.yaml:15:31: error: jobs[purge].options.keep_requests"),
        "{text}"
    );
}

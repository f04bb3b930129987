//! Access, portability and erasure across a demo-like application database, on SQLite
//! always and on PostgreSQL and MariaDB when their URL variables are set. Alice makes the
//! requests; Bob must stay untouched byte for byte.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use chrono::{TimeZone, Utc};
use lethe::audit::{Actor, AuditLog, Identity};
use lethe::dsr::{self, AccessKind, Context};
use lethe::policy::Policy;
use lethe::sources::db::Sources;

use common::appdb::{AppDb, Backend};

async fn app_db(backend: Backend, test: &str) -> Option<AppDb> {
    let db = common::appdb::app_db(backend, test).await?;
    for sql in [
        "INSERT INTO users VALUES (1, 'Alice@Example.com', 'Alice Example', '2024-01-10 09:00:00', NULL), (2, 'bob@example.com', 'Bob Example', '2023-05-05 12:00:00', NULL)",
        "INSERT INTO invoices VALUES (10, 1, 'Alice Example', 120.50, '2015-01-01 10:00:00'), (11, 1, 'Alice Example', 99.00, '2025-03-01 10:00:00'), (12, 2, 'Bob Example', 15.00, '2025-06-01 10:00:00')",
        "INSERT INTO page_views VALUES (20, 1, '192.0.2.1', '/pricing', '2026-10-01 10:00:00'), (21, 1, '192.0.2.1', '/docs', '2026-10-02 10:00:00'), (22, 1, '192.0.2.7', '/', '2026-10-03 10:00:00'), (23, 2, '198.51.100.9', '/', '2026-10-04 10:00:00')",
        "INSERT INTO comments VALUES (30, 1, 'Alice likes dark mode', '2025-01-01 10:00:00'), (31, 1, 'Alice wants CSV export', '2025-02-01 10:00:00'), (32, 2, 'Bob reports a bug', '2025-03-01 10:00:00')",
    ] {
        db.exec(sql).await;
    }
    Some(db)
}

/// Everything about Bob, to compare before and after.
async fn bob(db: &AppDb) -> Vec<Vec<Vec<Option<String>>>> {
    vec![
        db.rows(
            "users",
            &["id", "email", "full_name", "created_at", "closed_at"],
            "id = 2",
        )
        .await,
        db.rows(
            "invoices",
            &["id", "user_id", "billing_name", "amount", "issued_at"],
            "user_id = 2",
        )
        .await,
        db.rows(
            "page_views",
            &["id", "user_id", "ip_address", "path", "viewed_at"],
            "user_id = 2",
        )
        .await,
        db.rows(
            "comments",
            &["id", "user_id", "body", "created_at"],
            "user_id = 2",
        )
        .await,
    ]
}

fn load(dir: &Path) -> Policy {
    let checked = Policy::load(dir).unwrap();
    let errors: Vec<String> = checked.errors().map(|d| d.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    checked.policy
}

async fn audit(db: &AppDb) -> AuditLog {
    common::audit_log(db.dir.path()).await
}

fn alice() -> Vec<Identity> {
    vec![Identity::parse("email=alice@example.com").unwrap()]
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

macro_rules! all_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                if let Some(db) = super::app_db(super::Backend::Sqlite, stringify!($name)).await {
                    super::$name(db).await;
                }
            }
            #[tokio::test]
            async fn postgres() {
                if let Some(db) = super::app_db(super::Backend::Postgres, stringify!($name)).await {
                    super::$name(db).await;
                }
            }
            #[tokio::test]
            async fn mariadb() {
                if let Some(db) = super::app_db(super::Backend::MySql, stringify!($name)).await {
                    super::$name(db).await;
                }
            }
        }
    };
}

/// What `lethe dsr` runs with: strict, no request, no restriction.
fn cli<'a>(policy: &'a Policy, log: &'a AuditLog, sources: &'a Sources) -> Context<'a> {
    Context {
        policy,
        audit: log,
        sources,
        actor: Actor::Cli,
        request_id: None,
        strict: true,
        restriction: None,
    }
}

fn unzip(bytes: &[u8]) -> BTreeMap<String, String> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            (f.name().to_owned(), s)
        })
        .collect()
}

async fn access_package_holds_every_row_of_alice_and_none_of_bob(db: AppDb) {
    let policy = load(&db.policy_dir("dsr", |t| t));
    let log = audit(&db).await;
    let sources = Sources::default();
    let ctx = cli(&policy, &log, &sources);
    let package = dsr::access(&ctx, &alice(), AccessKind::Access, now())
        .await
        .unwrap();
    let files = unzip(&package.to_zip().unwrap());
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "app.comments.csv",
            "app.invoices.csv",
            "app.page_views.csv",
            "app.users.csv",
            "data.json",
            "index.html"
        ]
    );

    let data: serde_json::Value = serde_json::from_str(&files["data.json"]).unwrap();
    let collections = data["systems"][0]["collections"].as_array().unwrap();
    let get = |name: &str| {
        collections
            .iter()
            .find(|c| c["collection"] == name)
            .unwrap()["rows"]
            .as_array()
            .unwrap()
            .clone()
    };
    let users = get("users");
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["email"]["value"], "Alice@Example.com");
    assert_eq!(users[0]["email"]["category"], "user.contact.email");
    assert_eq!(users[0]["email"]["category_name"], "Email address");
    assert_eq!(users[0]["full_name"]["value"], "Alice Example");
    assert_eq!(
        users[0]["full_name"]["purposes"],
        serde_json::json!(["billing"])
    );
    assert_eq!(
        users[0]["email"]["categories"],
        serde_json::json!([{ "key": "user.contact.email", "name": "Email address" }])
    );
    // Art. 15(3) asks for a copy of the data: identifiers and the times of events are
    // part of it, without a category.
    assert!(users[0]["id"]["value"].is_string(), "{}", users[0]);
    assert_eq!(users[0]["id"]["category"], "");
    assert_eq!(users[0]["id"]["categories"], serde_json::json!([]));
    assert!(
        users[0]["created_at"]["value"]
            .as_str()
            .is_some_and(|t| t.len() >= 10),
        "{}",
        users[0]
    );
    assert!(users[0].get("closed_at").is_some(), "{}", users[0]);
    let invoices = get("invoices");
    assert_eq!(invoices.len(), 2);
    let amounts: Vec<f64> = invoices
        .iter()
        .map(|r| r["amount"]["value"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(amounts, [120.5, 99.0]);
    assert_eq!(invoices[0]["amount"]["category"], "user.financial");
    assert!(
        invoices.iter().all(|i| i["issued_at"]["value"]
            .as_str()
            .is_some_and(|t| t.len() >= 10)),
        "when each invoice was issued: {invoices:?}"
    );
    let views = get("page_views");
    let paths: Vec<&str> = views
        .iter()
        .map(|r| r["path"]["value"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/pricing", "/docs", "/"]);
    assert_eq!(views[2]["ip_address"]["value"], "192.0.2.7");
    let comments = get("comments");
    let bodies: Vec<&str> = comments
        .iter()
        .map(|r| r["body"]["value"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["Alice likes dark mode", "Alice wants CSV export"]);

    let everything: String = files.values().cloned().collect();
    for bob in [
        "bob@example.com",
        "Bob Example",
        "198.51.100.9",
        "Bob reports a bug",
    ] {
        assert!(
            !everything.contains(bob),
            "{bob} leaked into Alice's package"
        );
    }
    let csv: Vec<Vec<String>> = files["app.comments.csv"]
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    assert_eq!(csv[0], ["id", "user_id", "body", "created_at"]);
    let bodies: Vec<&str> = csv[1..].iter().map(|r| r[2].as_str()).collect();
    assert_eq!(bodies, ["Alice likes dark mode", "Alice wants CSV export"]);
    assert!(
        csv[1..]
            .iter()
            .all(|r| !r[0].is_empty() && r[3].len() >= 10),
        "{csv:?}"
    );

    let html = &files["index.html"];
    // The page shows Alice's data itself, a table per collection.
    for value in [
        "Alice@Example.com",
        "Alice Example",
        "Alice likes dark mode",
        "&#x2f;pricing",
        "192.0.2.7",
        "<th scope=\"col\">issued_at</th>",
    ] {
        assert!(html.contains(value), "index.html lacks {value}");
    }
    assert!(!html.contains("hold no personal data"));
    for text in [
        "Registration and billing",
        "Visitors and cookies",
        "Content",
        "Performance of a contract (Art. 6(1)(b))",
        "Consent (Art. 6(1)(a))",
        "Cloud Hosting SA (Luxembourg); transfer to the United States: Standard Contractual Clauses",
        "Bookkeeping GmbH (Austria)",
        "8 years after collection, where the law requires it",
        "90 days after collection",
        "until the account is closed",
        "Rectification (Art. 16)",
        "Erasure (Art. 17)",
        "Restriction (Art. 18)",
        "Portability (Art. 20)",
        "Objection (Art. 21)",
        "Austrian Data Protection Authority",
    ] {
        assert!(html.contains(text), "index.html lacks {text}");
    }

    // Portability: only what Alice provided under consent or contract, in JSON.
    let portable = dsr::access(&ctx, &alice(), AccessKind::Portability, now())
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&portable.data_json()).unwrap();
    assert_eq!(v["kind"], "portability");
    assert_eq!(v["systems"][0]["collections"].as_array().unwrap().len(), 4);

    // Someone the company holds nothing on is told so, not shown empty tables.
    let nobody = [lethe::audit::Identity::parse("email=nobody@example.net").unwrap()];
    let empty = dsr::access(&ctx, &nobody, AccessKind::Access, now())
        .await
        .unwrap();
    let files = unzip(&empty.to_zip().unwrap());
    let html = &files["index.html"];
    assert!(html.contains("hold no personal data about you"), "{html}");
    assert!(!html.contains("<table>") && !html.contains("Why we process it"));
    assert!(empty.row_counts().values().all(|n| *n == 0));
}
all_backends!(access_package_holds_every_row_of_alice_and_none_of_bob);

async fn erasure_keeps_what_the_law_requires_and_nothing_else(db: AppDb) {
    let policy = load(&db.policy_dir("dsr", |t| t));
    let log = audit(&db).await;
    let sources = Sources::default();
    let ctx = Context {
        policy: &policy,
        audit: &log,
        sources: &sources,
        actor: Actor::Cli,
        request_id: Some("req-7".into()),
        strict: true,
        restriction: None,
    };
    let bob_before = bob(&db).await;
    let before = db.everything().await;

    let dry = dsr::erase(&ctx, &alice(), true, now()).await.unwrap();
    assert_eq!(db.everything().await, before, "a dry run wrote");

    let report = dsr::erase(&ctx, &alice(), false, now()).await.unwrap();
    assert!(!report.dry_run);
    // The dry run predicted exactly this.
    assert_eq!(
        serde_json::to_value(&dry.systems).unwrap(),
        serde_json::to_value(&report.systems).unwrap()
    );

    assert_eq!(db.count("page_views", "user_id = 1").await, 0);
    assert_eq!(db.count("comments", "user_id = 1").await, 0);
    // The 2015 invoice is past its 8 years: masked; the 2025 one is kept as it was.
    let invoices = db
        .rows("invoices", &["id", "billing_name", "amount"], "user_id = 1")
        .await;
    assert_eq!(invoices[0][0].as_deref(), Some("10"));
    assert_eq!(invoices[0][1].as_deref(), Some("erased"));
    assert_eq!(
        invoices[0][2].as_deref().map(|a| a.parse::<f64>().unwrap()),
        Some(0.0)
    );
    assert_eq!(invoices[1][1].as_deref(), Some("Alice Example"));
    assert_eq!(
        invoices[1][2].as_deref().map(|a| a.parse::<f64>().unwrap()),
        Some(99.0)
    );
    // Alice's account stays: billing keeps it 8 years from its creation.
    assert_eq!(
        db.rows("users", &["email"], "id = 1").await[0][0].as_deref(),
        Some("Alice@Example.com")
    );
    assert_eq!(bob(&db).await, bob_before, "Bob changed");

    let app = &report.systems[0];
    let c = |name: &str| {
        app.collections
            .iter()
            .find(|c| c.collection == name)
            .unwrap()
    };
    assert_eq!(
        (c("page_views").rows_deleted, c("comments").rows_deleted),
        (3, 2)
    );
    assert_eq!(c("invoices").rows_masked, 1);
    let kept = c("invoices")
        .kept
        .iter()
        .find(|k| k.field == "billing_name")
        .unwrap();
    assert_eq!(kept.article, "Art. 17(3)(b)");
    assert_eq!(kept.because, "billing");
    assert_eq!(kept.until.as_deref(), Some("2033-03-01"));
    assert_eq!(kept.rows, 1);
    assert_eq!(kept.reason, "Accounting law keeps invoices for 8 years");
    let kept_email = c("users").kept.iter().find(|k| k.field == "email").unwrap();
    assert_eq!(kept_email.until.as_deref(), Some("2032-01-10"));

    // Running it again changes nothing.
    let after = db.everything().await;
    let again = dsr::erase(&ctx, &alice(), false, now()).await.unwrap();
    assert_eq!(db.everything().await, after);
    assert_eq!(
        again.systems[0]
            .collections
            .iter()
            .map(|c| c.rows_deleted + c.rows_masked)
            .sum::<usize>(),
        0
    );

    // The audit log has counts in clear and no identity: Alice had no audit subject yet.
    let entries = log.entries(&Default::default()).await.unwrap();
    let e = entries
        .iter()
        .find(|e| e.header.action == "erasure.executed")
        .unwrap();
    assert_eq!(e.header.request_id.as_deref(), Some("req-7"));
    assert!(e.header.summary.contains("\"deleted\":3"));
    assert_eq!(
        e.payload,
        lethe::audit::Payload::Clear(serde_json::Value::Null)
    );
    for entry in &entries {
        let text = serde_json::to_string(entry).unwrap().to_lowercase();
        assert!(!text.contains("alice"), "{text}");
    }
    // After an access request the person has a subject: its payloads are shredded.
    dsr::access(&ctx, &alice(), AccessKind::Access, now())
        .await
        .unwrap();
    dsr::erase(&ctx, &alice(), false, now()).await.unwrap();
    let entries = log.entries(&Default::default()).await.unwrap();
    let access = entries
        .iter()
        .find(|e| e.header.action == "dsr.access.executed")
        .unwrap();
    assert_eq!(access.payload, lethe::audit::Payload::Shredded);
    assert!(
        entries
            .iter()
            .any(|e| e.header.action == "subject.shredded")
    );
    assert!(log.verify().await.unwrap().ok());
}
all_backends!(erasure_keeps_what_the_law_requires_and_nothing_else);

async fn a_hold_blocks_erasure(db: AppDb) {
    let dir = db.policy_dir("dsr", |t| {
        format!("{t}holds:\n  - {{ id: case-1, reason: pending litigation, collections: [app.comments], until: 2099-12-31 }}\n")
    });
    let policy = load(&dir);
    let log = audit(&db).await;
    let sources = Sources::default();
    let ctx = cli(&policy, &log, &sources);
    let report = dsr::erase(&ctx, &alice(), false, now()).await.unwrap();
    assert_eq!(db.count("comments", "user_id = 1").await, 2);
    assert_eq!(db.count("page_views", "user_id = 1").await, 0);
    let comments = report.systems[0]
        .collections
        .iter()
        .find(|c| c.collection == "comments")
        .unwrap();
    assert_eq!(comments.kept[0].article, "Art. 17(3)(e)");
    assert_eq!(comments.kept[0].because, "hold case-1");
    assert_eq!(comments.kept[0].until.as_deref(), Some("2100-01-01"));
}
all_backends!(a_hold_blocks_erasure);

async fn a_policy_naming_a_missing_column_fails_before_any_write(db: AppDb) {
    let dir = db.policy_dir("dsr", |t| t.replace("          - { name: body, categories: [user.content.comment] }", "          - { name: body, categories: [user.content.comment] }\n          - { name: nickname, categories: [user.name] }"));
    let policy = load(&dir);
    let log = audit(&db).await;
    let sources = Sources::default();
    let ctx = cli(&policy, &log, &sources);
    let before = db.everything().await;
    let err = dsr::erase(&ctx, &alice(), false, now())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("system `app` does not match the policy"),
        "{err}"
    );
    assert!(
        err.contains("table `comments` has no column `nickname`"),
        "{err}"
    );
    assert!(!err.contains("alice"), "{err}");
    assert_eq!(db.everything().await, before);
}
all_backends!(a_policy_naming_a_missing_column_fails_before_any_write);

/// The process dies between two collections; the next run completes the erasure.
async fn an_interrupted_erasure_completes_on_the_next_run(db: AppDb) {
    let dir = db.policy_dir("dsr", |t| t);
    let store = format!(
        "sqlite://{}?mode=rwc",
        db.dir.path().join("lethe.db").display()
    );
    let run = |fault: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lethe"));
        cmd.args([
            "dsr",
            "erase",
            "--identity",
            "email=alice@example.com",
            "--policies",
            dir.to_str().unwrap(),
            "--database",
            &store,
        ])
        .current_dir(db.dir.path())
        .env_remove("LETHE_FAULT_INJECT");
        if let Some(f) = fault {
            cmd.env("LETHE_FAULT_INJECT", f);
        }
        cmd.output().unwrap()
    };
    let before = db.everything().await;
    let out = run(Some("exit-after:app.page_views"));
    assert_eq!(
        out.status.code(),
        Some(86),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        db.everything().await,
        before,
        "the interrupted transaction was not rolled back"
    );
    let out = run(None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("kept billing_name in 1 row(s): Art. 17(3)(b)"),
        "{text}"
    );
    // Art. 19: the command says plainly that it told no recipient, and whom to tell.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Art. 19: no recipient was told"), "{err}");
    assert!(err.contains("Cloud Hosting SA (hosting): for "), "{err}");
    assert_eq!(db.count("page_views", "user_id = 1").await, 0);
    assert_eq!(db.count("comments", "user_id = 1").await, 0);
    assert_eq!(db.count("page_views", "user_id = 2").await, 1);
}
all_backends!(an_interrupted_erasure_completes_on_the_next_run);

/// The same company mapped in Fides format gives the same package and the same erasure.
async fn a_fides_manifest_gives_the_same_results(db: AppDb) {
    let native = load(&db.policy_dir("dsr", |t| t));
    let fides = load(&db.policy_dir("dsr-fides", |t| t));
    let log = audit(&db).await;
    // Separate caches: each policy checks the database schema for itself.
    let (native_sources, fides_sources) = (Sources::default(), Sources::default());
    let a = dsr::access(
        &cli(&native, &log, &native_sources),
        &alice(),
        AccessKind::Access,
        now(),
    )
    .await
    .unwrap();
    let b = dsr::access(
        &cli(&fides, &log, &fides_sources),
        &alice(),
        AccessKind::Access,
        now(),
    )
    .await
    .unwrap();
    // The same values; the columns may come in another order (a Fides dataset declares
    // its time columns as fields, the native policy names them as events).
    let same = |d: &lethe::dsr::package::Data| {
        let mut v = serde_json::to_value(d).unwrap();
        for c in v["systems"][0]["collections"].as_array_mut().unwrap() {
            c["columns"]
                .as_array_mut()
                .unwrap()
                .sort_by_key(|x| x.to_string());
        }
        v
    };
    assert_eq!(same(&a.data), same(&b.data));
    let a = dsr::erase(&cli(&native, &log, &native_sources), &alice(), true, now())
        .await
        .unwrap();
    let b = dsr::erase(&cli(&fides, &log, &fides_sources), &alice(), true, now())
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&a.systems).unwrap(),
        serde_json::to_value(&b.systems).unwrap()
    );
    assert_eq!(
        a.systems[0]
            .collections
            .iter()
            .map(|c| c.rows_deleted)
            .sum::<usize>(),
        5
    );
}
all_backends!(a_fides_manifest_gives_the_same_results);

/// A value the database refuses (an address where the key is a number) is not repeated
/// in the error lethe reports: the database quotes it, lethe leaves it out.
async fn a_refused_value_stays_out_of_the_error(db: AppDb) {
    let policy = load(&db.policy_dir("dsr", |t| {
        t.replacen(
            "- { name: id, primary_key: true }",
            "- { name: id, primary_key: true, identity: account }",
            1,
        )
    }));
    let log = audit(&db).await;
    let sources = Sources::default();
    let ctx = cli(&policy, &log, &sources);
    let who = [Identity::parse("account=alice.private@example.com").unwrap()];
    let result = dsr::access(&ctx, &who, AccessKind::Access, now()).await;
    match (db.dialect, result) {
        (_, Err(e)) => {
            let plain = e.to_string();
            let shown = format!("{plain} / {:#}", anyhow::Error::new(e));
            assert!(shown.contains("reading `users`"), "{shown}");
            assert!(!shown.contains("alice.private"), "{shown}");
        }
        // SQLite and MariaDB compare the text with the number and find nothing.
        (lethe::sources::sql::Dialect::Postgres, Ok(_)) => {
            panic!("PostgreSQL took an address for an integer")
        }
        (_, Ok(_)) => {}
    }
}
all_backends!(a_refused_value_stays_out_of_the_error);

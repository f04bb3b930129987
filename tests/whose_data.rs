//! Whose data: a person's package and erasure hold their rows and no one else's, on a
//! schema whose rows several people share (`tests/fixtures/whose`), on SQLite always and
//! on PostgreSQL and MariaDB when their URL variables are set.

mod common;

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use common::appdb::{AppDb, Backend};
use lethe::audit::{Actor, AuditLog, Identity};
use lethe::dsr::{self, Context};
use lethe::policy::Policy;
use lethe::sources::db::Sources;
use lethe::sources::sql::Dialect;

macro_rules! all_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                if let Some(db) = super::seeded(super::Backend::Sqlite, stringify!($name)).await {
                    super::$name(db).await;
                }
            }
            #[tokio::test]
            async fn postgres() {
                if let Some(db) = super::seeded(super::Backend::Postgres, stringify!($name)).await {
                    super::$name(db).await;
                }
            }
            #[tokio::test]
            async fn mariadb() {
                if let Some(db) = super::seeded(super::Backend::MySql, stringify!($name)).await {
                    super::$name(db).await;
                }
            }
        }
    };
}

const TABLES: &[(&str, &[&str])] = &[
    ("orgs", &["id", "name"]),
    ("employees", &["id", "email", "name"]),
    ("addresses", &["id", "street"]),
    (
        "customers",
        &[
            "id",
            "email",
            "name",
            "org_id",
            "rep_id",
            "address_id",
            "referred_by",
        ],
    ),
    ("tickets", &["id", "customer_id", "org_id", "body"]),
    (
        "orders",
        &["id", "customer_id", "product_id", "ship_to", "note"],
    ),
    ("products", &["id", "name"]),
    ("people", &["id", "email"]),
];

/// The schema and its rows. Alice (1) and Bob (2) share an organisation, a support
/// employee and an address (Bob's home, where Alice's order went); Dan (4) was referred
/// by Carol (3); `people` holds addresses that differ only in accents, case or a space.
async fn seeded(backend: Backend, test: &str) -> Option<AppDb> {
    let db = common::appdb::app_db(backend, test).await?;
    // Compared case- and accent-blind on MariaDB, byte by byte on PostgreSQL.
    let (general, unicode) = match db.dialect {
        Dialect::MySql => (
            " CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
            " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        ),
        Dialect::Postgres => (" COLLATE \"C\"", " COLLATE \"C\""),
        Dialect::Sqlite => ("", ""),
    };
    for sql in [
        "CREATE TABLE orgs (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL)".to_owned(),
        format!("CREATE TABLE employees (id INTEGER PRIMARY KEY, email VARCHAR(100){general} NOT NULL, name VARCHAR(100) NOT NULL)"),
        "CREATE TABLE addresses (id INTEGER PRIMARY KEY, street VARCHAR(100) NOT NULL)".to_owned(),
        "CREATE TABLE products (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL)".to_owned(),
        format!("CREATE TABLE customers (id INTEGER PRIMARY KEY, email VARCHAR(100){general} NOT NULL UNIQUE, name VARCHAR(100) NOT NULL, \
         org_id INTEGER NOT NULL REFERENCES orgs(id), rep_id INTEGER NOT NULL REFERENCES employees(id), \
         address_id INTEGER NULL REFERENCES addresses(id), referred_by INTEGER NULL REFERENCES customers(id))"),
        "CREATE TABLE tickets (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), org_id INTEGER NOT NULL REFERENCES orgs(id), body VARCHAR(200) NOT NULL)".to_owned(),
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), product_id INTEGER NOT NULL REFERENCES products(id), ship_to INTEGER NOT NULL REFERENCES addresses(id), note VARCHAR(100) NULL)".to_owned(),
        format!("CREATE TABLE people (id INTEGER PRIMARY KEY, email VARCHAR(100){unicode} NOT NULL)"),
        "INSERT INTO orgs VALUES (1, 'Acme')".to_owned(),
        "INSERT INTO employees VALUES (1, 'erin@example.com', 'Erin Employee')".to_owned(),
        "INSERT INTO addresses VALUES (1, 'Alice Street 1'), (2, 'Bob Lane 2'), (3, 'Carol Road 3')".to_owned(),
        "INSERT INTO products VALUES (1, 'Cookie'), (2, 'Cake')".to_owned(),
        "INSERT INTO customers VALUES (1, 'alice@example.com', 'Alice', 1, 1, 1, NULL), (2, 'bob@example.com', 'Bob', 1, 1, 2, NULL), \
         (3, 'carol@example.com', 'Carol', 1, 1, 3, NULL), (4, 'dan@example.com', 'Dan', 1, 1, NULL, 3)".to_owned(),
        "INSERT INTO tickets VALUES (10, 1, 1, 'Alice asks'), (11, 2, 1, 'Bob asks'), (12, 3, 1, 'Carol asks')".to_owned(),
        "INSERT INTO orders VALUES (20, 1, 1, 2, 'for Bob'), (21, 2, 1, 2, NULL), (22, 3, 2, 3, NULL)".to_owned(),
        "INSERT INTO people VALUES (1, 'jose@x.org'), (2, 'José@x.org'), (3, 'JOSÉ@X.ORG'), (4, 'jose@x.org '), \
         (5, 'Éva@x.org'), (6, 'éva@x.org'), (7, 'eva@x.org'), (8, 'straße@x.de'), (9, 'strasse@x.de'), (10, 'Alice@Example.com')".to_owned(),
    ] {
        db.exec(&sql).await;
    }
    Some(db)
}

fn policy(db: &AppDb) -> Policy {
    let dir = db.policy_dir("whose", |t| t);
    let checked = Policy::load(&dir).unwrap();
    let errors: Vec<String> = checked.errors().map(|d| d.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // `lethe check` says which references can lead to other people's rows.
    let warnings: Vec<String> = checked.warnings().map(|d| d.to_string()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("fields[ship_to].direction")
                && w.contains("also referenced by customers.address_id")),
        "{warnings:#?}"
    );
    checked.policy
}

async fn audit(db: &AppDb) -> AuditLog {
    common::audit_log(db.dir.path()).await
}

fn email(e: &str) -> Vec<Identity> {
    vec![Identity::parse(&format!("email={e}")).unwrap()]
}

/// The primary keys of the rows found for `who`, by collection.
async fn found(policy: &Policy, who: &str) -> BTreeMap<String, Vec<i64>> {
    let sources = Sources::default();
    dsr::row_keys(policy, &sources, &email(who))
        .await
        .unwrap()
        .into_iter()
        .map(|((_, c), keys)| {
            let mut k: Vec<i64> = keys.iter().map(|v| v.parse().unwrap()).collect();
            k.sort();
            (c, k)
        })
        .collect()
}

fn expect(rows: &[(&str, &[i64])]) -> BTreeMap<String, Vec<i64>> {
    rows.iter()
        .map(|(c, k)| (c.to_string(), k.to_vec()))
        .collect()
}

/// Every row of every table, as text.
async fn snapshot(db: &AppDb) -> BTreeMap<&'static str, Vec<Vec<Option<String>>>> {
    let mut out = BTreeMap::new();
    for (t, cols) in TABLES {
        out.insert(*t, db.rows(t, cols, "1 = 1").await);
    }
    out
}

/// Every reference still resolves to a row.
async fn references_resolve(db: &AppDb) {
    for (child, col, parent) in [
        ("customers", "org_id", "orgs"),
        ("customers", "rep_id", "employees"),
        ("customers", "address_id", "addresses"),
        ("customers", "referred_by", "customers"),
        ("tickets", "customer_id", "customers"),
        ("tickets", "org_id", "orgs"),
        ("orders", "customer_id", "customers"),
        ("orders", "product_id", "products"),
        ("orders", "ship_to", "addresses"),
    ] {
        let dangling = db
            .count(
                child,
                &format!("{col} IS NOT NULL AND {col} NOT IN (SELECT id FROM {parent})"),
            )
            .await;
        assert_eq!(dangling, 0, "{child}.{col} -> {parent}");
    }
}

async fn a_persons_rows_are_theirs_alone(db: AppDb) {
    let policy = policy(&db);
    // Alice: her customer row, ticket and order, her address and the one her order went
    // to, the product she ordered. Not the organisation, the employee, Bob's ticket or
    // Bob's order, though she shares the organisation, the employee and an address.
    assert_eq!(
        found(&policy, "alice@example.com").await,
        expect(&[
            ("addresses", &[1, 2]),
            ("customers", &[1]),
            ("orders", &[20]),
            ("people", &[10]),
            ("products", &[1]),
            ("tickets", &[10]),
        ])
    );
    // The employee's own request finds the employee, not the customers they serve.
    assert_eq!(
        found(&policy, "erin@example.com").await,
        expect(&[("employees", &[1])])
    );
    // Carol's request does not reach Dan, whom she referred.
    let carol = found(&policy, "carol@example.com").await;
    assert_eq!(carol["customers"], [3]);
}
all_backends!(a_persons_rows_are_theirs_alone);

async fn identities_match_by_case_alone(db: AppDb) {
    let policy = policy(&db);
    let people = |m: BTreeMap<String, Vec<i64>>| m.get("people").cloned().unwrap_or_default();
    assert_eq!(people(found(&policy, "josé@x.org").await), [2, 3]);
    assert_eq!(people(found(&policy, "jose@x.org").await), [1]);
    assert_eq!(people(found(&policy, "ÉVA@x.org").await), [5, 6]);
    assert_eq!(people(found(&policy, "eva@x.org").await), [7]);
    assert_eq!(people(found(&policy, "strasse@x.de").await), [9]);
    assert_eq!(people(found(&policy, "STRAßE@x.de").await), [8]);
    // Accent- and case-blind collations (MariaDB) and `C` (PostgreSQL) alike.
    assert_eq!(
        found(&policy, "ALICE@example.COM").await["customers"],
        [1],
        "the customers' column is utf8mb4_general_ci on MariaDB, C on PostgreSQL"
    );
    assert!(found(&policy, "alicé@example.com").await.is_empty());
}
all_backends!(identities_match_by_case_alone);

async fn an_erasure_harms_no_one_else(db: AppDb) {
    let policy = policy(&db);
    let log = audit(&db).await;
    let sources = Sources::default();
    let ctx = Context {
        policy: &policy,
        audit: &log,
        sources: &sources,
        actor: Actor::Cli,
        request_id: None,
        strict: true,
        restriction: None,
    };
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    let before = snapshot(&db).await;
    let report = dsr::erase(&ctx, &email("alice@example.com"), false, now)
        .await
        .unwrap();
    let after = snapshot(&db).await;
    // Alice's own rows are gone.
    assert_eq!(db.count("customers", "id = 1").await, 0);
    assert_eq!(db.count("tickets", "id = 10").await, 0);
    assert_eq!(db.count("orders", "id = 20").await, 0);
    assert_eq!(db.count("addresses", "id = 1").await, 0);
    assert_eq!(db.count("people", "id = 10").await, 0);
    // Everything else is byte for byte as it was: the shared address (Bob's home), the
    // catalogue, the organisation, the employee, every row of Bob, Carol and Dan.
    for (t, rows) in &before {
        let others = |rs: &Vec<Vec<Option<String>>>| -> Vec<Vec<Option<String>>> {
            rs.iter()
                .filter(|r| {
                    let id = r[0].as_deref().unwrap();
                    !matches!(
                        (*t, id),
                        ("customers", "1")
                            | ("tickets", "10")
                            | ("orders", "20")
                            | ("addresses", "1")
                            | ("people", "10")
                    )
                })
                .cloned()
                .collect()
        };
        assert_eq!(others(rows), after[t], "{t}");
    }
    let kept: Vec<_> = report.kept().collect();
    assert!(
        kept.iter()
            .any(|(c, k)| *c == "addresses" && k.because == "shared record"),
        "{kept:?}"
    );
    references_resolve(&db).await;
    // A second erasure changes nothing.
    dsr::erase(&ctx, &email("alice@example.com"), false, now)
        .await
        .unwrap();
    assert_eq!(snapshot(&db).await, after);

    // Carol is referred to by Dan: her customer row stays, unmasked, for the DPO; her
    // ticket and order go, her address (hers alone) goes only once nothing points at it.
    let report = dsr::erase(&ctx, &email("carol@example.com"), false, now)
        .await
        .unwrap();
    assert_eq!(
        db.rows("customers", &["id", "email", "name"], "id = 3")
            .await,
        before["customers"]
            .iter()
            .filter(|r| r[0].as_deref() == Some("3"))
            .map(|r| r[..3].to_vec())
            .collect::<Vec<_>>()
    );
    assert_eq!(db.count("tickets", "id = 12").await, 0);
    assert_eq!(db.count("orders", "id = 22").await, 0);
    assert_eq!(db.count("addresses", "id = 3").await, 1);
    assert!(
        report
            .kept()
            .any(|(c, k)| c == "customers" && k.because == "shared record")
    );
    // The catalogue row Carol's order named stays: it holds no personal data.
    assert_eq!(db.count("products", "id = 2").await, 1);
    references_resolve(&db).await;
}
all_backends!(an_erasure_harms_no_one_else);

//! Masks that always fit: erasing rows that stay (`keep_row`) never fails on a UNIQUE NOT
//! NULL column, and a masking the column cannot hold is refused before anything is
//! written, naming the policy's file and line. On SQLite always, on PostgreSQL and
//! MariaDB when their URL variables are set.

mod common;

use std::collections::BTreeSet;

use chrono::{TimeZone, Utc};
use common::appdb::{AppDb, Backend};
use lethe::audit::{Actor, Identity};
use lethe::dsr::{self, Context, DsrError};
use lethe::policy::Policy;
use lethe::sources::db::Sources;

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

const PEOPLE: usize = 1000;

async fn seeded(backend: Backend, test: &str) -> Option<AppDb> {
    let db = common::appdb::app_db(backend, test).await?;
    db.exec(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, email VARCHAR(100) NOT NULL UNIQUE, \
         name VARCHAR(100) NOT NULL, phone VARCHAR(30) NULL, points INTEGER NOT NULL UNIQUE, \
         age INTEGER NULL)",
    )
    .await;
    let rows: Vec<String> = (1..=PEOPLE)
        .map(|i| format!("({i}, 'member{i}@example.com', 'Member {i}', '+43 1 {i}', {i}, 40)"))
        .collect();
    db.exec(&format!("INSERT INTO accounts VALUES {}", rows.join(", ")))
        .await;
    Some(db)
}

/// The default fields of `accounts`; a test replaces one line.
const FIELDS: &str = "          - { name: id, primary_key: true }
          - { name: email, categories: [user.contact.email], identity: email }
          - { name: name, categories: [user.name] }
          - { name: phone, categories: [user.contact.phone_number] }
          - { name: points }
          - { name: age, categories: [user.demographic.age_range] }
";

/// A policy for `accounts` with these field lines, and the directory it is in.
fn policy(db: &AppDb, fields: &str) -> (Policy, std::path::PathBuf) {
    let dir = db
        .dir
        .path()
        .join(format!("policies-{}", common::appdb::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "controller:
  name: Members Ltd.
  address: 1 Test street, Vienna, Austria
  contact_email: privacy@members.example
  supervisory_authority: {{ name: Austrian Data Protection Authority, url: https://dsb.gv.at }}
purposes:
  - id: membership
    name: Membership
    legal_basis: contract
    subjects: [customer]
    categories: [user.name, user.contact.email, user.contact.phone_number, user.unique_id, user.demographic.age_range]
    recipients: []
    retention: {{ keep_for: 1y, from: account_closed }}
systems:
  - id: app
    name: Members
    connection: {{ url_env: LETHE_TEST_NEVER_SET_APP_URL, default: \"{url}\" }}
    collections:
      - name: accounts
        purposes: [membership]
        erasure: keep_row
        fields:
{fields}",
        url = db.url
    );
    std::fs::write(dir.join("policy.yaml"), text).unwrap();
    let checked = Policy::load(&dir).unwrap();
    let errors: Vec<String> = checked.errors().map(|d| d.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    (checked.policy, dir)
}

fn email(i: usize) -> Vec<Identity> {
    vec![Identity::parse(&format!("email=member{i}@example.com")).unwrap()]
}

async fn erase(db: &AppDb, policy: &Policy, sources: &Sources, who: usize) -> Result<(), DsrError> {
    let log = db.audit().await;
    let ctx = Context {
        policy,
        audit: &log,
        sources,
        actor: Actor::Cli,
        request_id: None,
        strict: true,
        restriction: None,
    };
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    dsr::erase(&ctx, &email(who), false, now).await.map(|_| ())
}

async fn a_thousand_erasures_on_unique_columns_all_succeed(db: AppDb) {
    let (policy, _) = policy(&db, FIELDS);
    let sources = Sources::default();
    for i in 1..=PEOPLE {
        erase(&db, &policy, &sources, i)
            .await
            .unwrap_or_else(|e| panic!("erasure {i}: {e}"));
    }
    let rows = db
        .rows(
            "accounts",
            &["id", "email", "name", "phone", "points"],
            "1 = 1",
        )
        .await;
    assert_eq!(rows.len(), PEOPLE);
    // Every e-mail erased to a value of its own that says nothing of the person.
    let emails: BTreeSet<String> = rows.iter().map(|r| r[1].clone().unwrap()).collect();
    assert_eq!(emails.len(), PEOPLE);
    assert!(
        emails
            .iter()
            .all(|e| !e.contains("member") && !e.contains('@'))
    );
    assert!(
        rows.iter()
            .all(|r| r[2].as_deref() == Some("[erased]") && r[3].is_none())
    );
    // A second round changes nothing.
    erase(&db, &policy, &sources, 7).await.unwrap();
    assert_eq!(
        db.rows(
            "accounts",
            &["id", "email", "name", "phone", "points"],
            "1 = 1"
        )
        .await,
        rows
    );
}
all_backends!(a_thousand_erasures_on_unique_columns_all_succeed);

async fn impossible_masks_are_refused_before_any_write(db: AppDb) {
    let before = db
        .rows(
            "accounts",
            &["id", "email", "name", "phone", "points", "age"],
            "1 = 1",
        )
        .await;
    for (from, to, says) in [
        (
            "identity: email }",
            "identity: email, masking: { fixed: gone } }",
            "is UNIQUE",
        ),
        (
            "{ name: points }",
            "{ name: points, categories: [user.unique_id] }",
            "NOT NULL and UNIQUE",
        ),
        (
            "[user.demographic.age_range] }",
            "[user.demographic.age_range], masking: { fixed: old } }",
            "is not a number",
        ),
    ] {
        let fields = FIELDS.replace(from, to);
        assert_ne!(fields, FIELDS);
        let (policy, dir) = policy(&db, &fields);
        let line = fields.lines().position(|l| l.contains(to)).unwrap() + 23;
        let err = erase(&db, &policy, &Sources::default(), 1)
            .await
            .unwrap_err()
            .to_string();
        let at = format!("{}:{line}:", dir.join("policy.yaml").display());
        assert!(
            err.contains(&at) && err.contains(says),
            "{at} {says}: {err}"
        );
        assert!(!err.contains("member1@"), "{err}");
    }
    assert_eq!(
        db.rows(
            "accounts",
            &["id", "email", "name", "phone", "points", "age"],
            "1 = 1"
        )
        .await,
        before
    );
}
all_backends!(impossible_masks_are_refused_before_any_write);

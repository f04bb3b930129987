//! The erasure decision alone (`dsr::erase::decide`), without a database: what a legal
//! obligation keeps of one person's rows, read from the law's side. Art. 17(3)(b) lets a
//! controller keep data only as far as processing is necessary for compliance with a legal
//! obligation: an obligation to keep a customer's orders keeps nothing of a member who
//! never ordered.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use lethe::dsr::erase::{self, Masker};
use lethe::policy::Policy;
use lethe::sources::db::{Found, Row};
use lethe::sources::schema::Schema;

struct Plain;

impl Masker for Plain {
    fn hash(&self, value: &str) -> String {
        format!("h({value})")
    }
    fn random(&self, seed: &str) -> String {
        format!("r({seed})")
    }
}

const POLICY: &str = "controller:
  name: Shop Ltd.
  address: 1 Test street, Vienna, Austria
  contact_email: privacy@shop.example
  supervisory_authority: { name: Austrian Data Protection Authority, url: https://dsb.gv.at }
purposes:
  - id: orders
    name: Orders and their bookkeeping
    legal_basis: contract
    subjects: [customer]
    categories: [user.name, user.contact.email]
    recipients: []
    retention: { keep_for: 6y, from: last_order, basis: legal_obligation, note: Commercial law keeps order records for 6 years }
systems:
  - id: shop
    name: Shop
    connection: { url_env: LETHE_TEST_NEVER_SET_APP_URL, default: \"sqlite://unused.db\" }
    collections:
      - name: accounts
        purposes: [orders]
        events: { last_order: max(orders.created_at) }
        fields:
          - { name: id, primary_key: true }
          - { name: email, categories: [user.contact.email], identity: email }
          - { name: name, categories: [user.name] }
      - name: orders
        purposes: [orders]
        events: { last_order: created_at }
        fields:
          - { name: id, primary_key: true }
          - { name: account_id, references: accounts.id }
          - { name: created_at }
          - { name: billing_name, categories: [user.name] }
";

fn row(cells: &[(&str, Option<&str>)]) -> Row {
    cells
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_owned)))
        .collect()
}

fn account(id: &str) -> Row {
    row(&[
        ("id", Some(id)),
        ("email", Some("someone@example.com")),
        ("name", Some("Someone")),
    ])
}

fn order(id: &str, account: &str, created_at: Option<&str>) -> Row {
    row(&[
        ("id", Some(id)),
        ("account_id", Some(account)),
        ("created_at", created_at),
        ("billing_name", Some("Someone")),
    ])
}

/// The report of erasing these rows (as if found for one person) on 2026-11-27.
fn decide(accounts: Vec<Row>, orders: Vec<Row>) -> erase::SystemReport {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    let checked = Policy::load(dir.path()).unwrap();
    let errors: Vec<String> = checked.errors().map(|d| d.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let policy = checked.policy;
    let found: BTreeMap<String, Found> = [("accounts", accounts), ("orders", orders)]
        .into_iter()
        .map(|(c, rows)| {
            (
                c.to_owned(),
                Found {
                    collection: c.to_owned(),
                    rows,
                },
            )
        })
        .collect();
    let keys: BTreeMap<String, Vec<String>> = [
        ("accounts".to_owned(), vec!["id".to_owned()]),
        ("orders".to_owned(), vec!["id".to_owned()]),
    ]
    .into();
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    erase::decide(
        &policy,
        policy.system("shop").unwrap(),
        &Schema::default(),
        &keys,
        &found,
        now,
        &Plain,
        None,
        &erase::Shared::new(),
    )
    .1
}

#[test]
fn an_obligation_over_records_keeps_only_those_who_have_them() {
    // Account 1 ordered on 2024-01-01; account 2 never ordered.
    let report = decide(
        vec![account("1"), account("2")],
        vec![order("10", "1", Some("2024-01-01T00:00:00Z"))],
    );
    let accounts = &report.collections[0];
    assert_eq!(accounts.collection, "accounts");
    // The member who never ordered is erased: no Art. 17(3)(b) claim on their row.
    assert_eq!(accounts.rows_deleted, 1, "{accounts:#?}");
    // The customer keeps e-mail and name until six years after the last order.
    for field in ["email", "name"] {
        let kept: Vec<_> = accounts.kept.iter().filter(|k| k.field == field).collect();
        assert_eq!(kept.len(), 1, "{kept:#?}");
        assert_eq!(kept[0].article, "Art. 17(3)(b)");
        assert_eq!(kept[0].rows, 1);
        assert_eq!(kept[0].until.as_deref(), Some("2030-01-01"));
    }
    // The order itself is kept as long.
    let orders = &report.collections[1];
    assert_eq!(orders.rows_deleted, 0);
    assert_eq!(orders.kept[0].until.as_deref(), Some("2030-01-01"));
}

#[test]
fn a_record_whose_event_has_not_happened_keeps_its_parent() {
    // An order without a date yet: the obligation has not started, so it has not ended.
    let report = decide(vec![account("3")], vec![order("11", "3", None)]);
    let accounts = &report.collections[0];
    assert_eq!(accounts.rows_deleted, 0);
    let email: Vec<_> = accounts
        .kept
        .iter()
        .filter(|k| k.field == "email")
        .collect();
    assert_eq!(email.len(), 1);
    assert_eq!(email[0].until, None);
}

#[test]
fn rows_kept_for_an_obligation_are_left_for_retention_to_finish() {
    // Account 1 keeps what the obligation covers, with its order; account 2 goes whole;
    // the undated order 11 keeps account 3 (not yet started, still recorded).
    let report = decide(
        vec![account("1"), account("2"), account("3")],
        vec![
            order("10", "1", Some("2024-01-01T00:00:00Z")),
            order("11", "3", None),
            // An order past its six years: erased now, nothing left for later.
            order("12", "1", Some("2019-01-01T00:00:00Z")),
        ],
    );
    let left: Vec<(String, Vec<String>)> = report.left_in_place.clone();
    let named = |c: &str, k: &str| (c.to_owned(), vec![k.to_owned()]);
    assert_eq!(
        left,
        [
            named("accounts", "1"),
            named("accounts", "3"),
            named("orders", "10"),
            named("orders", "11"),
        ]
    );
}

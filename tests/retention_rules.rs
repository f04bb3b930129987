//! The retention rules alone (`retention::rules`), without a database: which purposes
//! each field serves and when it is due, read from the policy as Art. 5(1)(e) and
//! Art. 17(3)(b) read it, and the order a run takes.

use chrono::{TimeZone, Utc};
use lethe::policy::{ErasureMode, Policy};
use lethe::retention::{self, CollectionRule};

const POLICY: &str = "controller:
  name: Shop Ltd.
  address: 1 Test street, Vienna, Austria
  contact_email: privacy@shop.example
  supervisory_authority: { name: Austrian Data Protection Authority, url: https://dsb.gv.at }
purposes:
  - id: account
    name: Customer account
    legal_basis: contract
    subjects: [customer]
    categories: [user.contact.email, user.name]
    recipients: []
    retention: { keep_for: 0d, from: account_closed }
  - id: bookkeeping
    name: Bookkeeping
    legal_basis: legal_obligation
    subjects: [customer]
    categories: [user.name, user.financial]
    recipients: []
    retention: { keep_for: 6y, from: last_order, basis: legal_obligation }
holds:
  - { id: audit-2026, reason: Tax audit, collections: [shop.order_lines], until: 2026-12-31 }
systems:
  - id: shop
    name: Shop
    connection: { url_env: LETHE_TEST_NEVER_SET_APP_URL, default: \"sqlite://unused.db\" }
    collections:
      - name: accounts
        purposes: [account, bookkeeping]
        events: { account_closed: closed_at, last_order: max(orders.created_at) }
        fields:
          - { name: id, primary_key: true }
          - { name: email, categories: [user.contact.email], identity: email }
          - { name: name, categories: [user.name] }
      - name: orders
        purposes: [bookkeeping]
        erasure: keep_row
        events: { last_order: created_at }
        fields:
          - { name: id, primary_key: true }
          - { name: account_id, references: accounts.id }
          - { name: total, categories: [user.financial] }
      - name: order_lines
        purposes: [bookkeeping]
        fields:
          - { name: id, primary_key: true }
          - { name: order_id, references: orders.id }
          - { name: item, categories: [user.financial] }
";

fn rules(day: u32) -> Vec<CollectionRule> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    let checked = Policy::load(dir.path()).unwrap();
    let errors: Vec<String> = checked.errors().map(|d| d.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let now = Utc.with_ymd_and_hms(2026, 12, day, 12, 0, 0).unwrap();
    retention::rules(&checked.policy, now)
}

fn rule<'r>(rules: &'r [CollectionRule], name: &str) -> &'r CollectionRule {
    rules.iter().find(|r| r.collection == name).unwrap()
}

/// `(purpose, event, obligation)` of each condition of `field`.
fn conditions(rule: &CollectionRule, field: &str) -> Vec<(String, String, bool)> {
    rule.fields
        .iter()
        .find(|f| f.field == field)
        .unwrap()
        .conditions
        .iter()
        .map(|c| (c.purpose.clone(), c.event.clone(), c.obligation))
        .collect()
}

#[test]
fn a_run_takes_the_referencing_collections_first() {
    // Lines before their orders before their accounts, whatever the policy's order: a
    // child deleted in a run releases its parent in the same run.
    let order: Vec<String> = rules(1).into_iter().map(|r| r.collection).collect();
    assert_eq!(order, ["order_lines", "orders", "accounts"]);
}

#[test]
fn a_field_serves_only_the_purposes_that_declare_its_category() {
    let rules = rules(1);
    let accounts = rule(&rules, "accounts");
    // The bookkeeping obligation covers names and amounts, not the e-mail beside them.
    assert_eq!(
        conditions(accounts, "email"),
        [("account".to_owned(), "account_closed".to_owned(), false)]
    );
    assert_eq!(
        conditions(accounts, "name"),
        [
            ("account".to_owned(), "account_closed".to_owned(), false),
            ("bookkeeping".to_owned(), "last_order".to_owned(), true)
        ]
    );
    // Keys are no personal data of their own: no rule.
    assert!(accounts.fields.iter().all(|f| f.field != "id"));
}

#[test]
fn an_event_the_collection_does_not_bind_is_never_due_there() {
    let rules = rules(1);
    let lines = rule(&rules, "order_lines");
    let item = &lines.fields[0].conditions[0];
    assert_eq!(item.event, "last_order");
    assert!(item.binding.is_none());
    assert!(
        lines.describe().contains("never here"),
        "{}",
        lines.describe()
    );
}

#[test]
fn referencing_collections_are_the_children_that_pin_a_row() {
    let rules = rules(1);
    assert_eq!(
        rule(&rules, "accounts").children,
        [(
            "orders".to_owned(),
            "account_id".to_owned(),
            "id".to_owned()
        )]
    );
    assert_eq!(rule(&rules, "orders").mode, ErasureMode::KeepRow);
    assert!(rule(&rules, "order_lines").children.is_empty());
}

#[test]
fn a_hold_stops_its_collection_through_its_last_day_only() {
    // Until 2026-12-31 inclusive (Art. 17(3)(e)); from 2027 on the rules apply again.
    assert_eq!(
        rule(&rules(31), "order_lines").held_by.as_deref(),
        Some("audit-2026")
    );
    assert_eq!(rule(&rules(1), "orders").held_by, None);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    let policy = Policy::load(dir.path()).unwrap().policy;
    let next_year = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 1).unwrap();
    let after = retention::rules(&policy, next_year);
    assert_eq!(rule(&after, "order_lines").held_by, None);
}

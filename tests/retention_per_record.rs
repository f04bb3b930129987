//! What to keep, per record: a shop whose accounts are kept while open and whose orders are
//! kept 6 years under bookkeeping law (Art. 17(3)(b), Art. 5(1)(e)). Closed accounts whose
//! orders expired go in one run with their orders and order lines; closed accounts that
//! kept orders still reference lose their e-mail (UNIQUE NOT NULL) and phone and keep the
//! name bookkeeping needs; an order with no date yet keeps its account; a plan counts
//! exactly what the run does, and a second run changes nothing. The date an erasure says a
//! value is kept until is the date retention removes it. On SQLite always, on PostgreSQL
//! and MariaDB when their URL variables are set.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use common::appdb::{AppDb, Backend};
use lethe::audit::{Actor, Identity};
use lethe::dsr::{self, Context};
use lethe::policy::Policy;
use lethe::retention::{self, Due, RunOptions};
use lethe::sources::db::Sources;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn years(n: i64) -> Duration {
    Duration::days(365 * n + n / 4 + 1)
}

macro_rules! all_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                if let Some(db) = super::shop(super::Backend::Sqlite, stringify!($name)).await {
                    super::$name(db).await;
                }
            }
            #[tokio::test]
            async fn postgres() {
                if let Some(db) = super::shop(super::Backend::Postgres, stringify!($name)).await {
                    super::$name(db).await;
                }
            }
            #[tokio::test]
            async fn mariadb() {
                if let Some(db) = super::shop(super::Backend::MySql, stringify!($name)).await {
                    super::$name(db).await;
                }
            }
        }
    };
}

/// The column type for a time: MariaDB's TIMESTAMP may update itself, DATETIME never does.
fn time_type(db: &AppDb) -> &'static str {
    if db.url.starts_with("mysql") {
        "DATETIME"
    } else {
        "TIMESTAMP"
    }
}

/// The shop's tables, empty.
async fn shop(backend: Backend, test: &str) -> Option<AppDb> {
    let db = common::appdb::app_db(backend, test).await?;
    // MariaDB's TIMESTAMP may update itself; DATETIME never does.
    let time = match backend {
        Backend::MySql => "DATETIME",
        _ => "TIMESTAMP",
    };
    db.exec(&format!(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, email VARCHAR(100) NOT NULL UNIQUE, \
         phone VARCHAR(30) NULL, name VARCHAR(100) NULL, closed_at {time} NULL)"
    ))
    .await;
    db.exec(&format!(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL, \
         buyer VARCHAR(100) NULL, total INTEGER NULL, created_at {time} NULL, \
         FOREIGN KEY (account_id) REFERENCES accounts (id))"
    ))
    .await;
    db.exec(
        "CREATE TABLE order_lines (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL, \
         item VARCHAR(100) NULL, FOREIGN KEY (order_id) REFERENCES orders (id))",
    )
    .await;
    Some(db)
}

fn policy(db: &AppDb) -> Policy {
    load(db, &policy_text(db))
}

/// `text` as a policy of its own, which must check without errors.
fn load(db: &AppDb, text: &str) -> Policy {
    let dir = db
        .dir
        .path()
        .join(format!("policies-{}", common::appdb::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("policy.yaml"), text).unwrap();
    let checked = Policy::load(&dir).unwrap();
    let errors: Vec<String> = checked.errors().map(|d| d.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    checked.policy
}

/// `lethe dsr erase` for `email` at `at`.
async fn erase(
    policy: &Policy,
    log: &lethe::audit::AuditLog,
    sources: &Sources,
    email: &str,
    at: DateTime<Utc>,
) -> dsr::ErasureReport {
    let ctx = Context {
        policy,
        audit: log,
        sources,
        actor: Actor::Cli,
        request_id: None,
        strict: false,
        restriction: None,
    };
    let who = vec![Identity::parse(&format!("email={email}")).unwrap()];
    dsr::erase(&ctx, &who, false, at).await.unwrap()
}

/// The shop's policy, as YAML.
fn policy_text(db: &AppDb) -> String {
    format!(
        "controller:
  name: Shop Ltd.
  address: 1 Test street, Vienna, Austria
  contact_email: privacy@shop.example
  supervisory_authority: {{ name: Austrian Data Protection Authority, url: https://dsb.gv.at }}
purposes:
  - id: account
    name: Customer account
    legal_basis: contract
    subjects: [customer]
    categories: [user.contact.email, user.contact.phone_number, user.name]
    recipients: []
    retention: {{ keep_for: 0d, from: account_closed }}
  - id: bookkeeping
    name: Bookkeeping
    legal_basis: legal_obligation
    subjects: [customer]
    categories: [user.name, user.financial]
    recipients: []
    retention:
      keep_for: 6y
      from: last_order
      basis: legal_obligation
      note: Bookkeeping law keeps orders and the buyer's name for 6 years after the order
systems:
  - id: shop
    name: Shop
    connection: {{ url_env: LETHE_TEST_NEVER_SET_APP_URL, default: \"{url}\" }}
    collections:
      - name: accounts
        purposes: [account, bookkeeping]
        events: {{ account_closed: closed_at, last_order: max(orders.created_at) }}
        fields:
          - {{ name: id, primary_key: true }}
          - {{ name: email, categories: [user.contact.email], identity: email }}
          - {{ name: phone, categories: [user.contact.phone_number] }}
          - {{ name: name, categories: [user.name] }}
      - name: orders
        purposes: [bookkeeping]
        events: {{ last_order: created_at }}
        fields:
          - {{ name: id, primary_key: true }}
          - {{ name: account_id, references: accounts.id }}
          - {{ name: buyer, categories: [user.name] }}
          - {{ name: total, categories: [user.financial] }}
      - name: order_lines
        purposes: [bookkeeping]
        events: {{ last_order: orders.created_at }}
        fields:
          - {{ name: id, primary_key: true }}
          - {{ name: order_id, references: orders.id }}
          - {{ name: item, categories: [user.financial] }}
",
        url = db.url
    )
}

async fn account(db: &AppDb, id: i64, closed: Option<DateTime<Utc>>) {
    let closed = closed.map_or("NULL".to_owned(), |c| format!("'{}'", ts(c)));
    db.exec(&format!(
        "INSERT INTO accounts VALUES ({id}, 'person{id}@example.com', '+43 1 {id}', 'Person {id}', {closed})"
    ))
    .await;
}

async fn order(db: &AppDb, id: i64, account: i64, created: Option<DateTime<Utc>>, lines: &[i64]) {
    let created = created.map_or("NULL".to_owned(), |c| format!("'{}'", ts(c)));
    db.exec(&format!(
        "INSERT INTO orders VALUES ({id}, {account}, 'Person {account}', 100, {created})"
    ))
    .await;
    for line in lines {
        db.exec(&format!(
            "INSERT INTO order_lines VALUES ({line}, {id}, 'item {line}')"
        ))
        .await;
    }
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

/// What a plan or a run says per collection: rows deleted, values masked per field.
fn counts(due: &[Due]) -> BTreeMap<String, (u64, BTreeMap<String, u64>)> {
    due.iter()
        .map(|d| {
            (
                d.collection.clone(),
                (d.rows, d.fields.iter().cloned().collect()),
            )
        })
        .collect()
}

fn ids(rows: &[Vec<Option<String>>]) -> Vec<i64> {
    let mut v: Vec<i64> = rows
        .iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect();
    v.sort();
    v
}

async fn one_run_reaches_the_end_state(db: AppDb) {
    let n = now();
    let ago = |d: Duration| Some(n - d);
    // Closed two years ago, every order expired: all of it goes.
    account(&db, 1, ago(years(2))).await;
    order(&db, 10, 1, ago(years(7)), &[100, 101]).await;
    order(&db, 11, 1, ago(years(7)), &[102]).await;
    // Closed a year ago, orders within the six years: pinned by them.
    account(&db, 2, ago(years(1))).await;
    order(&db, 12, 2, ago(years(2)), &[103]).await;
    account(&db, 3, ago(years(1))).await;
    order(&db, 13, 3, ago(years(3)), &[]).await;
    // Closed ten days ago, never ordered: no record keeps anything.
    account(&db, 4, ago(Duration::days(10))).await;
    // Open, with an expired order: the order goes, the account stays as it is.
    account(&db, 5, None).await;
    order(&db, 14, 5, ago(years(7)), &[104]).await;
    // Closed, with an order not dated yet: not yet due, it keeps its account.
    account(&db, 6, ago(years(1))).await;
    order(&db, 15, 6, None, &[]).await;
    // Closed, one expired and one kept order: the expired one goes.
    account(&db, 7, ago(years(1))).await;
    order(&db, 16, 7, ago(years(7)), &[105]).await;
    order(&db, 17, 7, ago(years(1)), &[]).await;

    let policy = policy(&db);
    let sources = Sources::default();
    let none = Default::default();
    let planned = retention::plan(&policy, &sources, n, &none).await.unwrap();
    let expected: BTreeMap<String, (u64, BTreeMap<String, u64>)> = [
        (
            "accounts",
            2,
            &[("email", 4), ("phone", 4), ("name", 0)][..],
        ),
        ("orders", 4, &[("buyer", 0), ("total", 0)][..]),
        ("order_lines", 5, &[][..]),
    ]
    .into_iter()
    .map(|(c, rows, fields)| {
        (
            c.to_owned(),
            (
                rows,
                fields.iter().map(|(f, k)| ((*f).to_owned(), *k)).collect(),
            ),
        )
    })
    .collect();
    assert_eq!(counts(&planned), expected, "the plan");

    let log = db.audit().await;
    let report = retention::run(&policy, &sources, &log, n, &options(2))
        .await
        .unwrap();
    assert!(report.complete);
    // A run reports the fields it masked; the plan lists every field, due or not.
    let mut ran = counts(&report.collections);
    for (c, (_, fields)) in &expected {
        let (_, got) = ran.get_mut(c).unwrap();
        for f in fields.keys() {
            got.entry(f.clone()).or_insert(0);
        }
    }
    assert_eq!(ran, expected, "the run does what the plan said");
    assert_eq!(report.rows_deleted, 11);
    assert_eq!(report.values_masked, 8);

    let accounts = db
        .rows(
            "accounts",
            &["id", "email", "phone", "name", "closed_at"],
            "1 = 1",
        )
        .await;
    assert_eq!(ids(&accounts), vec![2, 3, 5, 6, 7]);
    for row in &accounts {
        let id = row[0].as_deref().unwrap();
        if id == "5" {
            assert_eq!(row[1].as_deref(), Some("person5@example.com"));
            assert_eq!(row[2].as_deref(), Some("+43 1 5"));
        } else {
            // A value of its own per row (the column is UNIQUE), revealing nothing.
            assert_eq!(row[1].as_deref(), Some(format!("erased-{id}").as_str()));
            assert_eq!(row[2], None);
        }
        // The name bookkeeping needs stays.
        assert_eq!(row[3].as_deref(), Some(format!("Person {id}").as_str()));
    }
    assert_eq!(
        ids(&db.rows("orders", &["id"], "1 = 1").await),
        vec![12, 13, 15, 17]
    );
    assert_eq!(
        ids(&db.rows("order_lines", &["id"], "1 = 1").await),
        vec![103]
    );

    // Nothing is left to do: the plan counts nothing and a second run changes nothing.
    let before = db.everything().await;
    let planned = retention::plan(&policy, &sources, n, &none).await.unwrap();
    for d in &planned {
        assert_eq!(d.rows, 0, "{d:?}");
        assert!(d.fields.iter().all(|(_, k)| *k == 0), "{d:?}");
    }
    let again = retention::run(&policy, &sources, &log, n, &options(2))
        .await
        .unwrap();
    assert_eq!((again.rows_deleted, again.values_masked), (0, 0));
    assert_eq!(db.everything().await, before);
    sources.close().await;
}
all_backends!(one_run_reaches_the_end_state);

/// The end of `day`: what a plan `--as-of` that day counts.
fn end_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(23, 59, 59).unwrap().and_utc()
}

async fn kept_until_is_when_retention_removes_it(db: AppDb) {
    let n = now();
    // Closed a year ago; the last order two years ago keeps it four more years.
    account(&db, 1, Some(n - years(1))).await;
    order(&db, 10, 1, Some(n - years(3) - Duration::hours(5)), &[100]).await;
    order(&db, 11, 1, Some(n - years(2) - Duration::hours(5)), &[101]).await;
    let policy = policy(&db);
    let sources = Sources::default();
    let log = db.audit().await;
    let report = erase(&policy, &log, &sources, "person1@example.com", n).await;
    let mut until: BTreeMap<(String, String), NaiveDate> = BTreeMap::new();
    for (_, kept) in report.kept() {
        assert_eq!(kept.article, "Art. 17(3)(b)", "{kept:?}");
        let day = NaiveDate::parse_from_str(kept.until.as_deref().unwrap(), "%Y-%m-%d").unwrap();
        until.insert((kept.field.clone(), kept.because.clone()), day);
    }
    // The name in the account and the orders with their lines, each until six years
    // after the last order (bookkeeping law).
    let six_years_on = (n - years(2) - Duration::hours(5))
        .checked_add_months(chrono::Months::new(72))
        .unwrap()
        .date_naive();
    assert_eq!(until.len(), 4, "{until:?}");
    assert!(
        until.values().all(|d| *d == six_years_on),
        "{until:?} vs {six_years_on}"
    );
    let latest = *until.values().max().unwrap();
    // The day before the latest date, something is still kept; on it, nothing is.
    let none = Default::default();
    let day_before = retention::plan(&policy, &sources, end_of(latest - Duration::days(1)), &none)
        .await
        .unwrap();
    let accounts = day_before
        .iter()
        .find(|d| d.collection == "accounts")
        .unwrap();
    assert_eq!(accounts.rows, 0, "{day_before:?}");
    let on_the_day = retention::plan(&policy, &sources, end_of(latest), &none)
        .await
        .unwrap();
    assert_eq!(
        counts(&on_the_day)
            .into_iter()
            .map(|(c, (rows, _))| (c, rows))
            .collect::<BTreeMap<_, _>>(),
        [("accounts", 1), ("orders", 2), ("order_lines", 2)]
            .into_iter()
            .map(|(c, k)| (c.to_owned(), k))
            .collect(),
        "on the day the erasure named, retention removes what it kept"
    );
    let ran = retention::run(&policy, &sources, &log, end_of(latest), &options(100))
        .await
        .unwrap();
    assert_eq!(ran.rows_deleted, 5);
    assert_eq!(db.count("accounts", "1 = 1").await, 0);
    sources.close().await;
}
all_backends!(kept_until_is_when_retention_removes_it);

/// An account still open when its person asked for erasure: the name is kept for the
/// bookkeeping law until six years after the last order, and the account's own purpose
/// ended with the erasure. On the date the erasure named, retention removes it, though the
/// account was never closed.
async fn an_open_account_erased_goes_on_the_date_named(db: AppDb) {
    let n = now();
    account(&db, 2, None).await;
    let ordered = n - years(2) - Duration::hours(5);
    order(&db, 20, 2, Some(ordered), &[200]).await;
    // Another open account, not erased: it stays whatever the date.
    account(&db, 3, None).await;
    order(&db, 30, 3, Some(ordered), &[300]).await;
    let policy = policy(&db);
    let sources = Sources::default();
    let log = db.audit().await;
    let report = erase(&policy, &log, &sources, "person2@example.com", n).await;
    let six_years_on = ordered
        .checked_add_months(chrono::Months::new(72))
        .unwrap()
        .date_naive();
    let kept: Vec<(String, String, Option<String>)> = report
        .kept()
        .map(|(c, k)| (c.to_owned(), k.field.clone(), k.until.clone()))
        .collect();
    let day = six_years_on.format("%Y-%m-%d").to_string();
    assert!(
        kept.contains(&("accounts".to_owned(), "name".to_owned(), Some(day.clone()))),
        "{kept:?}"
    );
    assert!(
        kept.iter()
            .all(|(_, _, until)| until.as_deref() == Some(day.as_str())),
        "{kept:?}"
    );
    // The e-mail and phone served the account alone: erased now.
    let left = db
        .rows("accounts", &["email", "phone", "name"], "id = 2")
        .await;
    assert_ne!(left[0][0].as_deref(), Some("person2@example.com"));
    assert_eq!(left[0][1], None);
    assert_eq!(left[0][2].as_deref(), Some("Person 2"));

    let requested = retention::requested_in(&policy, &sources, &log)
        .await
        .unwrap();
    let rows = |due: &[Due]| -> BTreeMap<String, u64> {
        due.iter().map(|d| (d.collection.clone(), d.rows)).collect()
    };
    let expect = |a: u64, o: u64, l: u64| -> BTreeMap<String, u64> {
        [("accounts", a), ("orders", o), ("order_lines", l)]
            .into_iter()
            .map(|(c, k)| (c.to_owned(), k))
            .collect()
    };
    let day_before = retention::plan(
        &policy,
        &sources,
        end_of(six_years_on - Duration::days(1)),
        &requested,
    )
    .await
    .unwrap();
    assert_eq!(rows(&day_before), expect(0, 0, 0));
    let on_the_day = retention::plan(&policy, &sources, end_of(six_years_on), &requested)
        .await
        .unwrap();
    // Account 3 was not erased and is open: its orders go, the account stays.
    assert_eq!(rows(&on_the_day), expect(1, 2, 2), "{on_the_day:?}");
    // Without the erasure's record the open account would be kept for ever.
    let unrecorded = retention::plan(&policy, &sources, end_of(six_years_on), &Default::default())
        .await
        .unwrap();
    assert_eq!(rows(&unrecorded), expect(0, 2, 2));

    let mut opts = options(100);
    opts.requested = requested;
    let ran = retention::run(&policy, &sources, &log, end_of(six_years_on), &opts)
        .await
        .unwrap();
    assert_eq!(ran.rows_deleted, 5);
    assert_eq!(ids(&db.rows("accounts", &["id"], "1 = 1").await), vec![3]);
    // The record of the erased row is forgotten once the row is gone.
    let after = retention::requested_in(&policy, &sources, &log)
        .await
        .unwrap();
    assert!(after.erased.is_empty(), "{:?}", after.erased);
    sources.close().await;
}
all_backends!(an_open_account_erased_goes_on_the_date_named);

/// Club memberships keyed by `(account_id, club)`, kept while the member is in the club
/// and, under a register obligation, 3 years after joining: the rows of a collection with
/// a composite key are named one by one, for a restriction and for an erasure.
fn club_policy(db: &AppDb) -> Policy {
    let text = format!(
        "controller:
  name: Club Ltd.
  address: 1 Test street, Vienna, Austria
  contact_email: privacy@club.example
  supervisory_authority: {{ name: Austrian Data Protection Authority, url: https://dsb.gv.at }}
purposes:
  - id: clubs
    name: Club life
    legal_basis: contract
    subjects: [customer]
    categories: [user.contact.email, user.name]
    recipients: []
    retention: {{ keep_for: 0d, from: left }}
  - id: register
    name: Register of members
    legal_basis: legal_obligation
    subjects: [customer]
    categories: [user.name]
    recipients: []
    retention: {{ keep_for: 3y, from: joined, basis: legal_obligation }}
systems:
  - id: shop
    name: Shop
    connection: {{ url_env: LETHE_TEST_NEVER_SET_APP_URL, default: \"{url}\" }}
    collections:
      - name: accounts
        purposes: [clubs]
        events: {{ left: closed_at }}
        fields:
          - {{ name: id, primary_key: true }}
          - {{ name: email, categories: [user.contact.email], identity: email }}
      - name: memberships
        purposes: [clubs, register]
        events: {{ joined: joined_at, left: left_at }}
        fields:
          - {{ name: account_id, primary_key: true, references: accounts.id }}
          - {{ name: club, primary_key: true }}
          - {{ name: nickname, categories: [user.name] }}
",
        url = db.url
    );
    load(db, &text)
}

async fn composite_keys_name_single_rows(db: AppDb) {
    let n = now();
    let time = time_type(&db);
    db.exec(&format!(
        "CREATE TABLE memberships (id INTEGER NOT NULL, account_id INTEGER NOT NULL, \
         club VARCHAR(20) NOT NULL, nickname VARCHAR(50) NULL, joined_at {time} NULL, \
         left_at {time} NULL, PRIMARY KEY (account_id, club), \
         FOREIGN KEY (account_id) REFERENCES accounts (id))"
    ))
    .await;
    for id in 1..=3 {
        account(&db, id, None).await;
    }
    // Person 1 restricts processing, person 2 asks for erasure, person 3 asks nothing.
    // (person, club, joined years ago, left years ago)
    let rows = [
        (1, "chess", 4, Some(2)),
        (1, "go", 2, None),
        (2, "chess", 2, None),
        (2, "go", 4, None),
        (3, "chess", 4, Some(1)),
        (3, "go", 2, None),
    ];
    for (i, (id, club, joined, left)) in rows.into_iter().enumerate() {
        let left = left.map_or("NULL".to_owned(), |y| format!("'{}'", ts(n - years(y))));
        db.exec(&format!(
            "INSERT INTO memberships VALUES ({i}, {id}, '{club}', 'nick{id}{club}', '{}', {left})",
            ts(n - years(joined))
        ))
        .await;
    }
    let policy = club_policy(&db);
    let sources = Sources::default();
    let log = db.audit().await;
    let report = erase(&policy, &log, &sources, "person2@example.com", n).await;
    let kept: Vec<(String, String, usize)> = report
        .kept()
        .map(|(c, k)| (c.to_owned(), k.field.clone(), k.rows))
        .collect();
    assert_eq!(kept, [("memberships".to_owned(), "nickname".to_owned(), 1)]);
    // The go membership is past the register's 3 years and went; the chess one stays
    // for the register.
    let left = db.rows("memberships", &["club"], "account_id = 2").await;
    assert_eq!(left, vec![vec![Some("chess".to_owned())]]);

    let mut requested = retention::requested_in(&policy, &sources, &log)
        .await
        .unwrap();
    assert_eq!(
        requested
            .erased
            .get(&("shop".to_owned(), "memberships".to_owned())),
        Some(&vec![vec!["2".to_owned(), "chess".to_owned()]])
    );
    requested.restricted = retention::restricted(
        &policy,
        &sources,
        &[Identity::parse("email=person1@example.com").unwrap()],
    )
    .await
    .unwrap();
    let memberships = |due: &[Due]| {
        due.iter()
            .find(|d| d.collection == "memberships")
            .map(|d| (d.rows, d.restricted_rows, d.erased_rows))
            .unwrap()
    };
    // Now only person 3's chess row (left a year ago, joined 4 years ago) is due; person
    // 1's chess row would be, but is restricted.
    let planned = retention::plan(&policy, &sources, n, &requested)
        .await
        .unwrap();
    assert_eq!(memberships(&planned), (1, 2, 1));
    // When the register's 3 years have passed for person 2's chess row, it goes though
    // its member never left: the erasure ended the club's own purpose. Person 1's and
    // person 3's current memberships stay.
    let later = n + years(1) + Duration::days(1);
    let planned = retention::plan(&policy, &sources, later, &requested)
        .await
        .unwrap();
    assert_eq!(memberships(&planned), (2, 2, 1));
    let unrecorded = retention::plan(&policy, &sources, later, &Default::default())
        .await
        .unwrap();
    assert_eq!(
        memberships(&unrecorded),
        (2, 0, 0),
        "person 1's chess row and person 3's"
    );
    let mut opts = options(100);
    opts.requested = requested;
    let ran = retention::run(&policy, &sources, &log, later, &opts)
        .await
        .unwrap();
    assert_eq!(ran.rows_deleted, 2);
    let mut left: Vec<(i64, String)> = db
        .rows("memberships", &["account_id", "club"], "1 = 1")
        .await
        .into_iter()
        .map(|r| {
            (
                r[0].as_deref().unwrap().parse().unwrap(),
                r[1].clone().unwrap(),
            )
        })
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            (1, "chess".to_owned()),
            (1, "go".to_owned()),
            (3, "go".to_owned())
        ]
    );
    let after = retention::requested_in(&policy, &sources, &log)
        .await
        .unwrap();
    assert!(after.erased.is_empty(), "{:?}", after.erased);
    sources.close().await;
}
all_backends!(composite_keys_name_single_rows);

/// A collection without a primary key cannot name a restricted person's rows: while the
/// restriction is in force, none of its rows is counted due (nor removed).
async fn a_keyless_collection_keeps_everything_under_a_restriction(db: AppDb) {
    let n = now();
    let time = time_type(&db);
    db.exec(&format!(
        "CREATE TABLE visits (account_id INTEGER NOT NULL, spot VARCHAR(50) NULL, \
         seen_at {time} NULL, FOREIGN KEY (account_id) REFERENCES accounts (id))"
    ))
    .await;
    for id in 1..=2 {
        account(&db, id, Some(n - years(1))).await;
        db.exec(&format!(
            "INSERT INTO visits VALUES ({id}, 'spot {id}', '{}')",
            ts(n - years(1))
        ))
        .await;
    }
    let text = policy_text(&db).replace(
        "      - name: orders\n",
        "      - name: visits
        purposes: [account]
        events: { account_closed: accounts.closed_at }
        fields:
          - { name: account_id, references: accounts.id }
          - { name: spot, categories: [user.contact.phone_number] }
      - name: orders\n",
    );
    let policy = load(&db, &text);
    let sources = Sources::default();
    let visits = |due: &[Due]| {
        due.iter()
            .find(|d| d.collection == "visits")
            .map(|d| (d.rows, d.restricted_rows))
            .unwrap()
    };
    let plain = retention::plan(&policy, &sources, n, &Default::default())
        .await
        .unwrap();
    assert_eq!(visits(&plain), (2, 0));
    let requested = retention::Requested {
        restricted: retention::restricted(
            &policy,
            &sources,
            &[Identity::parse("email=person1@example.com").unwrap()],
        )
        .await
        .unwrap(),
        ..Default::default()
    };
    let planned = retention::plan(&policy, &sources, n, &requested)
        .await
        .unwrap();
    assert_eq!(visits(&planned), (0, 1));
    sources.close().await;
}
all_backends!(a_keyless_collection_keeps_everything_under_a_restriction);

/// Replies to comments: a comment goes once its replies have, and the account once its
/// comments have; a plan counts that chain as the run does.
async fn a_chain_of_replies_releases_its_account(db: AppDb) {
    let n = now();
    let time = time_type(&db);
    db.exec(&format!(
        "CREATE TABLE posts (id INTEGER PRIMARY KEY, account_id INTEGER NULL, \
         reply_to INTEGER NULL, body VARCHAR(100) NULL, written_at {time} NULL, \
         FOREIGN KEY (account_id) REFERENCES accounts (id), \
         FOREIGN KEY (reply_to) REFERENCES posts (id))"
    ))
    .await;
    // Account 1 closed, its comment 10 answered by 11, answered by 12: all due.
    // Account 2 closed, its comment 20 answered by 21, which is recent: 20 and 2 stay.
    account(&db, 1, Some(n - years(2))).await;
    account(&db, 2, Some(n - years(2))).await;
    for (id, acc, reply, days) in [
        (10, 1, None, 400),
        (11, 1, Some(10), 300),
        (12, 1, Some(11), 200),
        (20, 2, None, 400),
        (21, 2, Some(20), 5),
    ] {
        let reply = reply.map_or("NULL".to_owned(), |r: i64| r.to_string());
        db.exec(&format!(
            "INSERT INTO posts VALUES ({id}, {acc}, {reply}, 'text {id}', '{}')",
            ts(n - Duration::days(days))
        ))
        .await;
    }
    let text = policy_text(&db)
        .replace(
            "  - id: bookkeeping\n",
            "  - id: forum
    name: Forum
    legal_basis: contract
    subjects: [customer]
    categories: [user.content]
    recipients: []
    retention: { keep_for: 90d, from: written }
  - id: bookkeeping\n",
        )
        .replace(
            "      - name: orders\n",
            "      - name: posts
        purposes: [forum]
        events: { written: written_at }
        fields:
          - { name: id, primary_key: true }
          - { name: account_id, references: accounts.id }
          - { name: reply_to, references: posts.id }
          - { name: body, categories: [user.content] }
      - name: orders\n",
        );
    let policy = load(&db, &text);
    let sources = Sources::default();
    let none = Default::default();
    let planned = retention::plan(&policy, &sources, n, &none).await.unwrap();
    let rows = |due: &[Due]| -> BTreeMap<String, u64> {
        due.iter().map(|d| (d.collection.clone(), d.rows)).collect()
    };
    let log = db.audit().await;
    let ran = retention::run(&policy, &sources, &log, n, &options(1))
        .await
        .unwrap();
    assert_eq!(rows(&planned), rows(&ran.collections), "plan = run");
    assert_eq!(ids(&db.rows("accounts", &["id"], "1 = 1").await), vec![2]);
    assert_eq!(ids(&db.rows("posts", &["id"], "1 = 1").await), vec![20, 21]);
    sources.close().await;
}
all_backends!(a_chain_of_replies_releases_its_account);

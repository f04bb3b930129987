//! Fides' own sample shop (`tests/fixtures/fides-sample`, copied from the ethyca-fides
//! package) on PostgreSQL: for each of its customers lethe finds the rows Fides'
//! traversal returns, and erasing one customer leaves the others' rows, the catalogue
//! and the shared addresses as they were.
//!
//! Fides' rules, as its dataset states them: a reference with `direction: from` is
//! followed from the referenced row to the rows referencing it (a customer's orders,
//! cards, logins; an order's items), `direction: to` from the referencing row to the one
//! it names (a customer's address, an order's shipping address, an item's product).

mod common;

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use lethe::audit::{Actor, Identity};
use lethe::dsr::{self, Context};
use lethe::policy::Policy;
use lethe::sources::db::Sources;
use sqlx::{Connection, Row};

type Found = BTreeMap<String, Vec<Vec<Option<String>>>>;

struct Shop {
    url: String,
    dir: tempfile::TempDir,
    policy: Policy,
}

async fn shop() -> Option<Shop> {
    let url = common::postgres_database("fides_sample").await?;
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fides-sample");
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let sql = std::fs::read_to_string(fixture.join("postgres_sample.sql")).unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    common::appdb::copy_dir(&fixture, &policies);
    let p = policies.join("policy.yaml");
    let text = std::fs::read_to_string(&p).unwrap().replace("@URL@", &url);
    std::fs::write(&p, text).unwrap();
    let checked = Policy::load(&policies).unwrap();
    let errors: Vec<String> = checked.errors().map(|d| d.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    Some(Shop {
        url,
        dir,
        policy: checked.policy,
    })
}

fn email(e: &str) -> Vec<Identity> {
    vec![Identity::parse(&format!("email={e}")).unwrap()]
}

/// The primary keys found for `who`, by collection.
async fn found(shop: &Shop, who: &str) -> Found {
    dsr::found_keys(&shop.policy, &Sources::default(), &email(who))
        .await
        .unwrap()
        .into_iter()
        .map(|((_, c), rows)| (c, rows))
        .collect()
}

/// Keys written as in the sample's SQL; a composite key as its columns in order.
fn expect(rows: &[(&str, &[&[&str]])]) -> Found {
    rows.iter()
        .map(|(c, keys)| {
            let mut keys: Vec<Vec<Option<String>>> = keys
                .iter()
                .map(|k| k.iter().map(|v| Some(v.to_string())).collect())
                .collect();
            keys.sort();
            (c.to_string(), keys)
        })
        .collect()
}

/// The time column of `visit`'s key, as lethe reads it back.
fn visit_time(found: &Found) -> String {
    found["visit"][0][1].clone().unwrap()
}

fn customer_1(visit: &str) -> Found {
    expect(&[
        ("address", &[&["1"], &["2"]]),
        ("customer", &[&["1"]]),
        ("login", &[&["1"], &["2"], &["3"], &["4"], &["5"], &["6"]]),
        (
            "order_item",
            &[
                &["ord_aaa-aaa", "1"],
                &["ord_ccc-ccc", "1"],
                &["ord_ccc-ccc", "2"],
                &["ord_ddd-ddd", "1"],
            ],
        ),
        (
            "orders",
            &[&["ord_aaa-aaa"], &["ord_ccc-ccc"], &["ord_ddd-ddd"]],
        ),
        ("payment_card", &[&["pay_aaa-aaa"]]),
        ("product", &[&["1"], &["2"]]),
        ("service_request", &[&["ser_aaa-aaa"]]),
        ("visit", &[&["customer-1@example.com", visit]]),
    ])
}

fn customer_2(visit: &str) -> Found {
    expect(&[
        ("address", &[&["1"], &["2"]]),
        ("customer", &[&["2"]]),
        ("login", &[&["7"]]),
        ("order_item", &[&["ord_bbb-bbb", "1"]]),
        ("orders", &[&["ord_bbb-bbb"]]),
        ("payment_card", &[&["pay_bbb-bbb"]]),
        ("product", &[&["1"]]),
        ("service_request", &[&["ser_bbb-bbb"]]),
        ("visit", &[&["customer-2@example.com", visit]]),
    ])
}

fn jane() -> Found {
    expect(&[
        ("address", &[&["4"]]),
        ("customer", &[&["3"]]),
        ("login", &[&["8"]]),
        ("orders", &[&["ord_ddd-eee"]]),
        ("payment_card", &[&["pay_ccc-ccc"]]),
    ])
}

#[tokio::test]
async fn each_customer_gets_the_rows_fides_returns() {
    let Some(shop) = shop().await else {
        return;
    };
    let one = found(&shop, "customer-1@example.com").await;
    assert_eq!(one, customer_1(&visit_time(&one)));
    let two = found(&shop, "customer-2@example.com").await;
    assert_eq!(two, customer_2(&visit_time(&two)));
    assert_eq!(found(&shop, "jane@example.com").await, jane());
    // An employee's request follows `service_request.employee_id` (`direction: from`) to
    // the requests they handled, as Fides does; `lethe check` warns about that edge.
    assert_eq!(
        found(&shop, "employee-1@example.com").await,
        expect(&[
            ("address", &[&["3"]]),
            ("employee", &[&["1"]]),
            (
                "service_request",
                &[&["ser_aaa-aaa"], &["ser_bbb-bbb"], &["ser_ccc-ccc"]]
            ),
        ])
    );
    // An address spelled in another case is the same person (Fides compares as given;
    // lethe folds case the same way on every backend).
    assert_eq!(found(&shop, "Customer-1@Example.com").await, one);
}

/// Every row of the sample's tables, as text.
async fn everything(url: &str) -> BTreeMap<String, Vec<String>> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let mut out = BTreeMap::new();
    for t in [
        "address",
        "customer",
        "employee",
        "login",
        "order_item",
        "orders",
        "payment_card",
        "product",
        "report",
        "service_request",
        "visit",
    ] {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM public.{t} t ORDER BY t::text"
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        out.insert(
            t.to_owned(),
            rows.iter().map(|r| r.get::<String, _>(0)).collect(),
        );
    }
    conn.close().await.unwrap();
    out
}

#[tokio::test]
async fn erasing_one_customer_leaves_everyone_else_as_they_were() {
    let Some(shop) = shop().await else {
        return;
    };
    let log = common::audit_log(shop.dir.path()).await;
    let sources = Sources::default();
    let ctx = Context {
        policy: &shop.policy,
        audit: &log,
        sources: &sources,
        actor: Actor::Cli,
        request_id: None,
        strict: false,
        restriction: None,
    };
    let two_before = found(&shop, "customer-2@example.com").await;
    let jane_before = found(&shop, "jane@example.com").await;
    let before = everything(&shop.url).await;
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    let report = dsr::erase(&ctx, &email("customer-1@example.com"), false, now)
        .await
        .unwrap();
    let after = everything(&shop.url).await;

    // The catalogue holds no personal data: untouched. The addresses customer 1 shares
    // with customer 2 (their home, where customer 1's order went; customer 1's home, where
    // customer 2's order went and their card bills) stay as they were.
    assert_eq!(after["product"], before["product"]);
    assert_eq!(after["address"], before["address"]);
    // Customer 1's own rows are gone. Their service request stays, reported as shared:
    // the dataset makes it employee 1's data too (`employee_id`, `direction: from`), and
    // it names a second address (`alt_email`) that may be someone else's.
    let one = found(&shop, "customer-1@example.com").await;
    assert_eq!(one, expect(&[("service_request", &[&["ser_aaa-aaa"]])]));
    assert!(
        report
            .kept()
            .any(|(c, k)| c == "service_request" && k.because == "shared record"),
        "{:?}",
        report.kept().collect::<Vec<_>>()
    );
    assert_eq!(after["service_request"], before["service_request"]);
    assert_eq!(after["login"].len(), 2);
    assert_eq!(after["payment_card"].len(), 2);
    // `order_item` holds no personal data and `orders` keys only (its one category is on
    // `customer_id`, a reference): read, never changed.
    assert_eq!(after["order_item"], before["order_item"]);
    // The orders still name customer 1, whose row therefore stays, its personal data
    // erased.
    assert_eq!(after["orders"], before["orders"]);
    let customer = |all: &BTreeMap<String, Vec<String>>| all["customer"].clone();
    assert_eq!(customer(&after).len(), 3);
    assert!(
        !customer(&after)
            .iter()
            .any(|r| r.contains("customer-1@example.com") || r.contains("John Customer")),
        "{:?}",
        customer(&after)
    );
    // Everyone else's rows are found as before.
    assert_eq!(found(&shop, "customer-2@example.com").await, two_before);
    assert_eq!(found(&shop, "jane@example.com").await, jane_before);
    for t in ["employee", "report"] {
        assert_eq!(after[t], before[t], "{t}");
    }
    // Every reference of the sample still resolves.
    let mut conn = sqlx::PgConnection::connect(&shop.url).await.unwrap();
    for (child, col, parent) in [
        ("customer", "address_id", "address"),
        ("employee", "address_id", "address"),
        ("login", "customer_id", "customer"),
        ("orders", "customer_id", "customer"),
        ("orders", "shipping_address_id", "address"),
        ("order_item", "product_id", "product"),
        ("payment_card", "customer_id", "customer"),
        ("payment_card", "billing_address_id", "address"),
        ("service_request", "employee_id", "employee"),
    ] {
        let dangling: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM public.{child} c WHERE c.{col} IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM public.{parent} p WHERE p.id = c.{col})"
        )))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(dangling, 0, "{child}.{col}");
    }
    conn.close().await.unwrap();
    // A second erasure changes nothing.
    dsr::erase(&ctx, &email("customer-1@example.com"), false, now)
        .await
        .unwrap();
    assert_eq!(everything(&shop.url).await, after);
}

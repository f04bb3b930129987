//! The engine's store on SQLite and PostgreSQL: migrations and the policy-load record.

mod common;

use chrono::{TimeZone, Utc};
use lethe::store::{Backend, Store};
use secrecy::SecretString;

async fn migrations_and_policy_loads(url: SecretString, backend: Backend) {
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.backend(), backend);
    // Migrating again is a no-op.
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    let t1 = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
    let t2 = Utc.with_ymd_and_hms(2026, 11, 2, 8, 0, 0).unwrap();
    let a = store
        .record_policy_load("aaa", 6, "serve", t1)
        .await
        .unwrap();
    let b = store
        .record_policy_load("bbb", 7, "check", t2)
        .await
        .unwrap();
    assert!(b > a);
    let loads = store.policy_loads(10).await.unwrap();
    assert_eq!(loads.len(), 2);
    assert_eq!(loads[0].policy_hash, "bbb");
    assert_eq!(loads[0].file_count, 7);
    assert_eq!(loads[0].loaded_at, "2026-11-02T08:00:00.000000Z");
    assert_eq!(loads[1].loaded_by, "serve");
    store.close().await;
    // A second connection sees the same data: it was really written.
    let again = Store::open(&url).await.unwrap();
    assert_eq!(again.policy_loads(1).await.unwrap()[0].policy_hash, "bbb");
    again.close().await;
}

#[tokio::test]
async fn sqlite_store_migrates_and_records_policy_loads() {
    let (url, _dir) = common::sqlite_store();
    migrations_and_policy_loads(url, Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_store_migrates_and_records_policy_loads() {
    let Some(url) =
        common::postgres_store("postgres_store_migrates_and_records_policy_loads").await
    else {
        return;
    };
    migrations_and_policy_loads(url, Backend::Postgres).await;
}

#[tokio::test]
async fn unsupported_and_unreachable_stores_are_clear_errors() {
    let err = Store::open(&SecretString::from("mysql://root@localhost/x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unsupported store URL"), "{err}");
    let err = Store::open(&SecretString::from(
        "postgres://lethe:hunter2@127.0.0.1:1/none",
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
}

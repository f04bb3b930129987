//! The store itself holds requests to the states and moves of `requests::Status`: on
//! SQLite and PostgreSQL, every pair of statuses is tried against the table in Rust.

mod common;

use lethe::requests::Status;
use lethe::store::Store;
use secrecy::SecretString;

async fn every_move_is_held_to_the_table(url: &SecretString) {
    let store = Store::open(url).await.unwrap();
    store.migrate().await.unwrap();
    let insert = |id: String, status: &str| {
        sqlx::query(
            "INSERT INTO dsr_requests (id, kind, status, identity_kind, identity_value, identity_lookup, token_hash, received_at, due_at, updated_at) \
             VALUES ($1, 'access', $2, 'email', '', 'l', 'h', '2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z', '2026-01-01T00:00:00Z')",
        )
        .bind(id)
        .bind(status.to_owned())
        .execute(store.pool())
    };
    assert!(
        insert("not-a-status".into(), "done").await.is_err(),
        "a status outside the table"
    );
    let mut n = 0;
    for from in Status::ALL {
        for to in Status::ALL {
            n += 1;
            let id = format!("r{n}");
            insert(id.clone(), from.key()).await.unwrap();
            let moved = sqlx::query("UPDATE dsr_requests SET status = $1 WHERE id = $2")
                .bind(to.key())
                .bind(&id)
                .execute(store.pool())
                .await;
            assert_eq!(
                moved.is_ok(),
                from == to || from.can_go(to),
                "{from} -> {to}: {moved:?}"
            );
            let now: String = sqlx::query_scalar("SELECT status FROM dsr_requests WHERE id = $1")
                .bind(&id)
                .fetch_one(store.pool())
                .await
                .unwrap();
            let expected = if moved.is_ok() { to } else { from };
            assert_eq!(now, expected.key(), "a refused move changes nothing");
        }
    }
}

#[tokio::test]
async fn sqlite_holds_requests_to_their_states() {
    let (url, _dir) = common::sqlite_store();
    every_move_is_held_to_the_table(&url).await;
}

#[tokio::test]
async fn postgres_holds_requests_to_their_states() {
    let Some(url) = common::postgres_store("request_states").await else {
        return;
    };
    every_move_is_held_to_the_table(&url).await;
}

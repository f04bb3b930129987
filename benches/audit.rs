//! Audit log throughput against its raw baselines, in the same run and database:
//! appends (one by one and batched, 512-byte payloads) against a plain INSERT of the same
//! bytes; verification (MB/s) against bare SHA-256 over the same bytes.
//!
//! `cargo bench --bench audit` (SQLite); PostgreSQL too when LETHE_TEST_POSTGRES_URL is set.

use std::time::Instant;

use lethe::audit::{Actor, AuditLog, KeySource, NewEntry};
use lethe::store::Store;
use secrecy::SecretString;
use serde_json::json;
use sqlx::Connection;

const ONE_BY_ONE: usize = 2_000;
const BATCHES: usize = 100;
const BATCH: usize = 100;

fn payload(i: usize) -> serde_json::Value {
    // {"d":"..."} serialises to exactly 512 bytes.
    let mut d = format!("{i:08}");
    d.push_str(&"x".repeat(512 - 8 - 8));
    json!({ "d": d })
}

fn entry(i: usize) -> NewEntry {
    NewEntry::new(Actor::System, "bench.event")
        .summary(json!({ "i": i }))
        .payload(payload(i))
}

async fn run(label: &str, url: SecretString) {
    let keydir = tempfile::tempdir().unwrap();
    let store = Store::open(&url).await.unwrap();
    let keys = KeySource {
        master: None,
        signing: None,
        dir: keydir.path().to_path_buf(),
    };
    let log = AuditLog::open(store.clone(), &keys).await.unwrap();
    let pool = store.pool();
    let blob = if store.backend() == lethe::store::Backend::Postgres {
        "BYTEA"
    } else {
        "BLOB"
    };
    // The baseline table has the audit table's shape and indexes: the hand-written INSERT
    // a developer would use to log the same row, in clear and without a chain.
    let ddl = format!(
        "CREATE TABLE bench_raw (seq BIGINT PRIMARY KEY, recorded_at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, \
         request_id TEXT, subject_id TEXT, summary TEXT NOT NULL, key_id TEXT NOT NULL, key_version BIGINT NOT NULL, data {blob} NOT NULL, mac {blob} NOT NULL)"
    );
    sqlx::query(sqlx::AssertSqlSafe(ddl))
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("CREATE INDEX bench_raw_subject ON bench_raw (subject_id)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("CREATE INDEX bench_raw_request ON bench_raw (request_id)")
        .execute(pool)
        .await
        .unwrap();
    let bytes: Vec<Vec<u8>> = (0..ONE_BY_ONE.max(BATCHES * BATCH))
        .map(|i| serde_json::to_vec(&payload(i)).unwrap())
        .collect();
    assert_eq!(bytes[0].len(), 512);

    // One by one: each its own transaction.
    let t = Instant::now();
    for (i, b) in bytes.iter().take(ONE_BY_ONE).enumerate() {
        sqlx::query(
            "INSERT INTO bench_raw (seq, recorded_at, actor, action, request_id, subject_id, summary, key_id, key_version, data, mac) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(i as i64)
        .bind("2026-11-27T00:00:00.000000Z")
        .bind("system")
        .bind("bench.event")
        .bind(None::<String>)
        .bind(None::<String>)
        .bind(format!("{{\"i\":{i}}}"))
        .bind("system")
        .bind(1i64)
        .bind(b.clone())
        .bind(vec![0u8; 32])
        .execute(pool)
        .await
        .unwrap();
    }
    let raw_one = ONE_BY_ONE as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..ONE_BY_ONE {
        log.append(entry(i)).await.unwrap();
    }
    let audit_one = ONE_BY_ONE as f64 / t.elapsed().as_secs_f64();

    // Batched: BATCH rows per transaction.
    sqlx::query("DELETE FROM bench_raw")
        .execute(pool)
        .await
        .unwrap();
    let t = Instant::now();
    for b in 0..BATCHES {
        let mut tx = pool.begin().await.unwrap();
        let mut sql = String::from(
            "INSERT INTO bench_raw (seq, recorded_at, actor, action, request_id, subject_id, summary, key_id, key_version, data, mac) VALUES ",
        );
        for j in 0..BATCH {
            let p = j * 11;
            if j > 0 {
                sql.push(',');
            }
            let cols: Vec<String> = (1..=11).map(|c| format!("${}", p + c)).collect();
            sql.push_str(&format!("({})", cols.join(",")));
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for j in 0..BATCH {
            let i = b * BATCH + j;
            q = q
                .bind(i as i64)
                .bind("2026-11-27T00:00:00.000000Z")
                .bind("system")
                .bind("bench.event")
                .bind(None::<String>)
                .bind(None::<String>)
                .bind(format!("{{\"i\":{i}}}"))
                .bind("system")
                .bind(1i64)
                .bind(bytes[i].clone())
                .bind(vec![0u8; 32]);
        }
        q.execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    let raw_batch = (BATCHES * BATCH) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for b in 0..BATCHES {
        let entries: Vec<NewEntry> = (0..BATCH).map(|j| entry(b * BATCH + j)).collect();
        log.append_batch(&entries).await.unwrap();
    }
    let audit_batch = (BATCHES * BATCH) as f64 / t.elapsed().as_secs_f64();

    // Verification against bare SHA-256 over the same bytes (headers + ciphertexts).
    let t = Instant::now();
    let report = log.verify().await.unwrap();
    let verify_s = t.elapsed().as_secs_f64();
    assert!(report.ok());
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT ciphertext FROM audit_entries ORDER BY seq")
        .fetch_all(pool)
        .await
        .unwrap();
    let mut blobs: Vec<Vec<u8>> = rows.into_iter().map(|r| r.0).collect();
    let header_bytes = report.bytes as usize - blobs.iter().map(Vec::len).sum::<usize>();
    blobs.push(vec![7u8; header_bytes]);
    let t = Instant::now();
    let mut acc = 0u8;
    for b in &blobs {
        acc ^= lethe::crypto::sha256(&[b])[0];
    }
    let sha_s = t.elapsed().as_secs_f64();
    std::hint::black_box(acc);
    let mb = report.bytes as f64 / 1e6;

    // The bare crypto of one entry: seal the payload, hash the leaf, MAC it.
    let key = lethe::crypto::SecretKey::generate().unwrap();
    let (aead, mac) = (key.aead().unwrap(), key.hmac());
    let header = vec![1u8; 120];
    let t = Instant::now();
    for b in bytes.iter().take(ONE_BY_ONE) {
        let ct = aead.seal(b, &header).unwrap();
        let leaf = lethe::audit::merkle::leaf_hash(&[&header, &ct]);
        std::hint::black_box(lethe::crypto::hmac_sha256(&mac, &leaf));
    }
    let crypto_us = t.elapsed().as_secs_f64() * 1e6 / ONE_BY_ONE as f64;

    println!("== {label} ==");
    println!("bare crypto per entry: {crypto_us:.2} µs");
    println!(
        "append one-by-one: audit {audit_one:>9.0} entries/s   raw INSERT {raw_one:>9.0} rows/s   raw/audit time ratio {:.2}x",
        raw_one / audit_one
    );
    println!(
        "append batched {BATCH}: audit {audit_batch:>9.0} entries/s   raw INSERT {raw_batch:>9.0} rows/s   raw/audit time ratio {:.2}x",
        raw_batch / audit_batch
    );
    println!(
        "verify {} entries ({mb:.1} MB): audit {:.1} MB/s   bare SHA-256 {:.1} MB/s   ratio {:.2}x",
        report.entries,
        mb / verify_s,
        mb / sha_s,
        verify_s / sha_s
    );
    store.close().await;
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    run("SQLite", SecretString::from(url)).await;
    match std::env::var("LETHE_TEST_POSTGRES_URL") {
        Ok(base) => {
            let name = format!("lethe_bench_{}", std::process::id());
            let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .unwrap();
            let mut u = url::Url::parse(&base).unwrap();
            u.set_path(&format!("/{name}"));
            run("PostgreSQL", SecretString::from(u.to_string())).await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .ok();
        }
        Err(_) => println!("(PostgreSQL skipped: set LETHE_TEST_POSTGRES_URL)"),
    }
}

//! Retention throughput: `lethe retention run` (the library call) against a hand-written
//! `DELETE ... WHERE viewed_at < cutoff` on an identical copy, in the same run: rows/s of
//! each, their ratio, and the longest single transaction.
//!
//! Page-view rows (default 1,000,000; `LETHE_BENCH_ROWS`), indexed on `viewed_at`; half of
//! them due, every other row, or with `LETHE_BENCH_DUE_PERCENT=N` the oldest N% (a nightly
//! run). With `LETHE_BENCH_PINNED=1` every other due row is referenced by a row of `pins`
//! that stays: lethe masks those (NULL, `[erased]`) and deletes the rest, against a
//! hand-written `DELETE ... AND NOT EXISTS (pin)` and `UPDATE ... SET` in one transaction.
//! SQLite always; PostgreSQL when LETHE_TEST_POSTGRES_URL is set.
//! `cargo bench --bench retention`

use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use lethe::audit::{AuditLog, KeySource};
use lethe::policy::Policy;
use lethe::retention::{self, RunOptions};
use lethe::sources::db::Sources;
use lethe::store::Store;
use secrecy::SecretString;
use sqlx::{AnyConnection, Connection};

const POLICY: &str = r#"
controller: { name: Bench Ltd., address: Vienna, contact_email: privacy@bench.example }
purposes:
  - { id: analytics, name: Analytics, legal_basis: consent, subjects: [visitor], categories: [user.device.ip_address, user.behavior.browsing_history], retention: { keep_for: 90d, from: collected } }
systems:
  - id: app
    name: App
    connection: { url_env: LETHE_BENCH_NEVER_SET, default: "@URL@" }
    collections:
      - name: page_views
        purposes: [analytics]
        events: { collected: viewed_at }
        fields:
          - { name: id, primary_key: true }
          - { name: ip_address, categories: [user.device.ip_address], identity: ip }
          - { name: path, categories: [user.behavior.browsing_history] }
"#;

/// With `LETHE_BENCH_PINNED`: rows that reference page views and stay.
const PINS: &str = r#"      - name: pins
        fields:
          - { name: id, primary_key: true }
          - { name: view_id, references: page_views.id }
"#;

fn pinned() -> bool {
    std::env::var("LETHE_BENCH_PINNED").is_ok_and(|v| v == "1")
}

/// Which rows are due: every other one (None), or the first `percent` of them.
fn due_rows() -> Option<u64> {
    std::env::var("LETHE_BENCH_DUE_PERCENT")
        .ok()
        .and_then(|v| v.parse().ok())
}

async fn seed(url: &str, pg: bool, rows: u64) {
    let mut c = AnyConnection::connect(url).await.unwrap();
    let ts = if pg { "TIMESTAMPTZ" } else { "TEXT" };
    let ddl = format!(
        "CREATE TABLE page_views (id BIGINT PRIMARY KEY, ip_address VARCHAR(64), path VARCHAR(255) NOT NULL, viewed_at {ts} NOT NULL)"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(&mut c)
        .await
        .unwrap();
    // Due rows are 200 days old, the others 10 days.
    let due = match due_rows() {
        None => "s.n % 2 = 1".to_owned(),
        Some(p) => format!("s.n <= {}", rows * p / 100),
    };
    let series = if pg {
        format!("generate_series(1, {rows}) AS s(n)")
    } else {
        format!(
            "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {rows}) SELECT n FROM s) AS s"
        )
    };
    let insert = format!(
        "INSERT INTO page_views SELECT s.n, '192.0.2.1', '/docs', CAST(CASE WHEN {due} THEN '2026-05-11 10:00:00' ELSE '2026-11-17 10:00:00' END AS {ts}) FROM {series}"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(insert))
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::raw_sql("CREATE INDEX page_views_viewed_at ON page_views (viewed_at)")
        .execute(&mut c)
        .await
        .unwrap();
    if pinned() {
        // Every other due row (n % 4 = 1 of the odd ones) is referenced by a pin.
        let pins = format!(
            "CREATE TABLE pins (id BIGINT PRIMARY KEY, view_id BIGINT NOT NULL REFERENCES page_views (id)); \
             INSERT INTO pins SELECT s.n, s.n FROM {series} WHERE s.n % 4 = 1; \
             CREATE INDEX pins_view_id ON pins (view_id)"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(pins))
            .execute(&mut c)
            .await
            .unwrap();
    }
    if pg {
        // No background vacuum of one copy while the other is being measured.
        sqlx::raw_sql("ALTER TABLE page_views SET (autovacuum_enabled = false)")
            .execute(&mut c)
            .await
            .unwrap();
    }
    // Settled as a table in use is: statistics read, hint bits set (VACUUM on PostgreSQL).
    let settle = if pg {
        "VACUUM ANALYZE page_views"
    } else {
        "ANALYZE"
    };
    sqlx::raw_sql(settle).execute(&mut c).await.unwrap();
    c.close().await.unwrap();
}

/// One round: both copies seeded alike, then each one's deletion timed.
struct Round {
    ours: f64,
    raw: f64,
    rows: u64,
    batches: u64,
    longest_ms: u64,
    raw_ms: f64,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.ours / self.raw
    }
}

/// Hand-written: one DELETE in one transaction (pinned: a DELETE of the rows no pin
/// references and an UPDATE of the others). Rows deleted, rows masked and seconds.
async fn raw_delete(url: &str, pg: bool, now: chrono::DateTime<Utc>) -> (u64, u64, f64) {
    let mut c = AnyConnection::connect(url).await.unwrap();
    let cutoff = (now - Duration::days(90))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    if pinned() {
        let param = if pg { "CAST($1 AS TIMESTAMPTZ)" } else { "?1" };
        let delete = format!(
            "DELETE FROM page_views WHERE viewed_at < {param} \
             AND NOT EXISTS (SELECT 1 FROM pins WHERE pins.view_id = page_views.id)"
        );
        let update = format!(
            "UPDATE page_views SET ip_address = NULL, path = '[erased]' \
             WHERE viewed_at < {param} AND (ip_address IS NOT NULL OR path <> '[erased]')"
        );
        let t = Instant::now();
        let mut tx = c.begin().await.unwrap();
        let deleted = sqlx::query(sqlx::AssertSqlSafe(delete))
            .bind(cutoff.clone())
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
        let masked = sqlx::query(sqlx::AssertSqlSafe(update))
            .bind(cutoff)
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
        tx.commit().await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        c.close().await.unwrap();
        return (deleted, masked, secs);
    }
    let sql = if pg {
        "DELETE FROM page_views WHERE viewed_at < CAST($1 AS TIMESTAMPTZ)"
    } else {
        "DELETE FROM page_views WHERE viewed_at < ?1"
    };
    let t = Instant::now();
    let rows = sqlx::query(sql)
        .bind(cutoff)
        .execute(&mut c)
        .await
        .unwrap()
        .rows_affected();
    let secs = t.elapsed().as_secs_f64();
    c.close().await.unwrap();
    (rows, 0, secs)
}

/// `lethe retention run` on the copy at `url`: its report and seconds.
async fn lethe_run(url: &str, now: chrono::DateTime<Utc>) -> (retention::RunReport, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut policy = POLICY.replace("@URL@", url);
    if pinned() {
        policy.push_str(PINS);
    }
    std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
    let policy = Policy::load(dir.path()).unwrap().into_valid().unwrap();
    let store = SecretString::from(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("lethe.db").display()
    ));
    let keys = KeySource {
        master: None,
        signing: None,
        dir: dir.path().join(".lethe"),
    };
    let audit = AuditLog::open(Store::open(&store).await.unwrap(), &keys)
        .await
        .unwrap();
    let sources = Sources::default();
    let batch: u32 = std::env::var("LETHE_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let options = RunOptions {
        batch_size: batch,
        ..Default::default()
    };
    let t = Instant::now();
    let report = retention::run(&policy, &sources, &audit, now, &options)
        .await
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    sources.close().await;
    (report, secs)
}

/// Seeds both copies, then deletes from each; which goes first alternates by round, so
/// neither always finds the other's pages in the cache.
async fn round(lethe_url: &str, raw_url: &str, pg: bool, rows: u64, lethe_first: bool) -> Round {
    seed(lethe_url, pg, rows).await;
    seed(raw_url, pg, rows).await;
    if pg {
        // The seeding's writes are flushed now, not by a checkpoint during either run.
        let mut c = AnyConnection::connect(raw_url).await.unwrap();
        sqlx::raw_sql("CHECKPOINT").execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    let ((report, ours_s), (raw_rows, raw_masked, raw_s)) = if lethe_first {
        let ours = lethe_run(lethe_url, now).await;
        (ours, raw_delete(raw_url, pg, now).await)
    } else {
        let raw = raw_delete(raw_url, pg, now).await;
        (lethe_run(lethe_url, now).await, raw)
    };
    assert_eq!(report.rows_deleted, raw_rows);
    // Two values (ip_address, path) per masked row.
    assert_eq!(report.values_masked, 2 * raw_masked);
    let touched = raw_rows + raw_masked;
    Round {
        ours: touched as f64 / ours_s,
        raw: touched as f64 / raw_s,
        rows: touched,
        batches: report.batches,
        longest_ms: report.longest_batch_ms,
        raw_ms: raw_s * 1e3,
    }
}

/// Fresh copies for each round: SQLite files, or PostgreSQL databases.
struct Copies {
    dir: tempfile::TempDir,
    pg: Option<(sqlx::PgConnection, String)>,
    made: Vec<String>,
}

impl Copies {
    async fn pair(&mut self, round: usize) -> (String, String) {
        let mut urls = Vec::new();
        for side in ["a", "b"] {
            let name = format!("lethe_bench_ret_{side}{round}_{}", std::process::id());
            urls.push(match &mut self.pg {
                None => format!(
                    "sqlite://{}?mode=rwc",
                    self.dir.path().join(format!("{name}.db")).display()
                ),
                Some((c, base)) => {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                        .execute(&mut *c)
                        .await
                        .unwrap();
                    self.made.push(name.clone());
                    let mut u = url::Url::parse(base).unwrap();
                    u.set_path(&format!("/{name}"));
                    u.to_string()
                }
            });
        }
        (urls.remove(0), urls.remove(0))
    }

    async fn drop_all(&mut self) {
        if let Some((c, _)) = &mut self.pg {
            for name in self.made.drain(..) {
                let sql = format!("DROP DATABASE {name} WITH (FORCE)");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *c)
                    .await
                    .ok();
            }
        }
    }
}

async fn bench(label: &str, mut copies: Copies, rows: u64, rounds: usize) {
    let pg = copies.pg.is_some();
    let mut due = match due_rows() {
        None => "half due".to_owned(),
        Some(p) => format!("the oldest {p}% due"),
    };
    if pinned() {
        due.push_str(", half of them pinned (masked)");
    }
    println!("== {label}: {rows} page views, {due}, {rounds} round(s) ==");
    let mut ratios = Vec::new();
    for i in 0..rounds {
        let (ours, raw) = copies.pair(i).await;
        let r = round(&ours, &raw, pg, rows, i % 2 == 1).await;
        copies.drop_all().await;
        println!(
            "  round {}: lethe {:.0} rows/s ({} batches, longest transaction {} ms); \
             hand-written {:.0} rows/s (one transaction of {:.0} ms); ratio {:.2}",
            i + 1,
            r.ours,
            r.batches,
            r.longest_ms,
            r.raw,
            r.raw_ms,
            r.ratio()
        );
        assert!(r.rows > 0);
        ratios.push(r.ratio());
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "  ratio (lethe rows/s ÷ hand-written rows/s), median of {rounds}: {:.2} (range {:.2}–{:.2})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}

#[tokio::main]
async fn main() {
    sqlx::any::install_default_drivers();
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rows = var("LETHE_BENCH_ROWS", 1_000_000);
    // The machine's noise (other processes, the disk) moves single runs; rounds are cheap
    // at a million rows.
    let rounds = var("LETHE_BENCH_ROUNDS", if rows > 1_000_000 { 1 } else { 5 }).max(1) as usize;
    let sqlite = Copies {
        dir: tempfile::tempdir().unwrap(),
        pg: None,
        made: Vec::new(),
    };
    bench("SQLite", sqlite, rows, rounds).await;
    if let Ok(base) = std::env::var("LETHE_TEST_POSTGRES_URL") {
        let c = sqlx::PgConnection::connect(&base).await.unwrap();
        let postgres = Copies {
            dir: tempfile::tempdir().unwrap(),
            pg: Some((c, base)),
            made: Vec::new(),
        };
        bench("PostgreSQL", postgres, rows, rounds).await;
    } else {
        println!("(PostgreSQL skipped: set LETHE_TEST_POSTGRES_URL)");
    }
}

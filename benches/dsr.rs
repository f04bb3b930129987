//! Requests against a large application database, next to the hand-written SQL a
//! developer would write for one person, in the same run and database.
//!
//! People (default 100,000; `LETHE_BENCH_PEOPLE`), each with 1 user row, 10 invoices
//! (5 past their 8 years), 50 page views and 5 comments, with the indexes the policy
//! implies. Access: p50/p99 per request over 200 random people. Erasure: rows/s over
//! 200 other people. SQLite always; PostgreSQL when LETHE_TEST_POSTGRES_URL is set.
//!
//! `cargo bench --bench dsr`

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use lethe::audit::{Actor, AuditLog, Identity, KeySource};
use lethe::dsr::{self, AccessKind, Context};
use lethe::policy::Policy;
use lethe::sources::db::Sources;
use lethe::store::Store;
use secrecy::SecretString;
use sqlx::{AnyConnection, Connection};

const SAMPLE: usize = 200;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

async fn exec(conn: &mut AnyConnection, sql: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(conn)
        .await
        .unwrap();
}

async fn seed(url: &str, pg: bool, people: u64) {
    let mut c = AnyConnection::connect(url).await.unwrap();
    let ts = if pg { "TIMESTAMPTZ" } else { "TEXT" };
    for sql in [
        format!(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email VARCHAR(255) NOT NULL, full_name VARCHAR(255) NOT NULL, created_at {ts} NOT NULL, closed_at {ts} NULL)"
        ),
        format!(
            "CREATE TABLE invoices (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id), billing_name VARCHAR(255) NOT NULL, amount NUMERIC(10,2) NOT NULL, issued_at {ts} NOT NULL)"
        ),
        format!(
            "CREATE TABLE page_views (id INTEGER PRIMARY KEY, user_id INTEGER NULL REFERENCES users(id), ip_address VARCHAR(64) NULL, path VARCHAR(255) NOT NULL, viewed_at {ts} NOT NULL)"
        ),
        format!(
            "CREATE TABLE comments (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id), body TEXT NOT NULL, created_at {ts} NOT NULL)"
        ),
    ] {
        exec(&mut c, sql).await;
    }
    let series = |n: u64, alias: &str| {
        if pg {
            format!("generate_series(1, {n}) AS {alias}(n)")
        } else {
            format!(
                "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) SELECT n FROM s) AS {alias}"
            )
        }
    };
    let cat = |a: &str, b: &str| format!("{a} || {b}");
    let t0 = Instant::now();
    exec(
        &mut c,
        format!(
            "INSERT INTO users SELECT u.n, {}, {}, '2024-01-01 00:00:00', NULL FROM {}",
            cat(&cat("'person'", "u.n"), "'@example.org'"),
            cat("'Person '", "u.n"),
            series(people, "u")
        ),
    )
    .await;
    exec(&mut c, format!("INSERT INTO invoices SELECT u.n * 10 + k.n, u.n, {}, 10 + k.n, CAST(CASE WHEN k.n <= 5 THEN '2015-01-01 00:00:00' ELSE '2025-01-01 00:00:00' END AS {ts}) FROM {}, {}", cat("'Person '", "u.n"), series(people, "u"), series(10, "k"))).await;
    exec(&mut c, format!("INSERT INTO page_views SELECT u.n * 50 + k.n, u.n, '192.0.2.1', '/docs', '2026-10-01 10:00:00' FROM {}, {}", series(people, "u"), series(50, "k"))).await;
    exec(&mut c, format!("INSERT INTO comments SELECT u.n * 5 + k.n, u.n, 'A comment', '2025-01-01 00:00:00' FROM {}, {}", series(people, "u"), series(5, "k"))).await;
    for sql in [
        "CREATE INDEX users_email ON users (LOWER(email))",
        "CREATE INDEX invoices_user ON invoices (user_id)",
        "CREATE INDEX page_views_user ON page_views (user_id)",
        "CREATE INDEX comments_user ON comments (user_id)",
    ] {
        exec(&mut c, sql.to_owned()).await;
    }
    exec(&mut c, "ANALYZE".into()).await;
    c.close().await.unwrap();
    println!(
        "  seeded {} rows in {:.1} s",
        people * 66,
        t0.elapsed().as_secs_f64()
    );
}

fn percentile(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

/// The SELECTs a developer would write for one person's access request.
async fn hand_access(c: &mut AnyConnection, pg: bool, email: &str) -> usize {
    let p = |n: usize| if pg { format!("${n}") } else { format!("?{n}") };
    let cast = |col: &str| format!("CAST({col} AS TEXT)");
    let users = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {}, {}, {} FROM users WHERE LOWER(email) = {}",
        cast("id"),
        cast("email"),
        cast("full_name"),
        p(1)
    )))
    .bind(email.to_owned())
    .fetch_all(&mut *c)
    .await
    .unwrap();
    let id: String = sqlx::Row::get(&users[0], 0);
    let id_param = if pg {
        "CAST($1 AS INTEGER)".to_owned()
    } else {
        "?1".to_owned()
    };
    let mut n = users.len();
    for (table, cols) in [
        ("invoices", "billing_name, amount"),
        ("page_views", "ip_address, path"),
        ("comments", "body"),
    ] {
        let list: Vec<String> = cols.split(", ").map(cast).collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM {table} WHERE user_id = {id_param}",
            list.join(", ")
        )))
        .bind(id.clone())
        .fetch_all(&mut *c)
        .await
        .unwrap();
        n += rows.len();
    }
    n
}

/// The statements a developer would write to erase one person as the policy says: find
/// the person by the request's e-mail address, then delete and mask in one transaction.
async fn hand_erase(c: &mut AnyConnection, pg: bool, email: &str) -> u64 {
    let found = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(id AS TEXT) FROM users WHERE LOWER(email) = {}",
        if pg { "$1" } else { "?1" }
    )))
    .bind(email.to_owned())
    .fetch_one(&mut *c)
    .await
    .unwrap();
    let id: String = sqlx::Row::get(&found, 0);
    let p = if pg { "CAST($1 AS INTEGER)" } else { "?1" };
    let mut tx = c.begin().await.unwrap();
    let mut n = 0;
    for sql in [
        format!("DELETE FROM page_views WHERE user_id = {p}"),
        format!("DELETE FROM comments WHERE user_id = {p}"),
        format!(
            "UPDATE invoices SET billing_name = 'erased', amount = 0 WHERE user_id = {p} AND issued_at < '2018-11-27'"
        ),
    ] {
        n += sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.clone())
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
    }
    tx.commit().await.unwrap();
    n
}

async fn run(label: &str, url: String, pg: bool, people: u64) {
    println!("== {label}: {people} people ==");
    seed(&url, pg, people).await;
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dsr/policy.yaml");
    std::fs::write(
        dir.path().join("policy.yaml"),
        std::fs::read_to_string(src).unwrap().replace("@URL@", &url),
    )
    .unwrap();
    let policy: Policy = Policy::load(dir.path()).unwrap().into_valid().unwrap();
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
    let ctx = Context {
        policy: &policy,
        audit: &audit,
        sources: &sources,
        actor: Actor::Cli,
        request_id: None,
        strict: true,
        restriction: None,
    };
    let mut rng = Rng(0x5eed);
    let mut conn = AnyConnection::connect(&url).await.unwrap();

    // Warm both paths once.
    let warm = Identity::parse("email=person1@example.org").unwrap();
    dsr::access(
        &ctx,
        std::slice::from_ref(&warm),
        AccessKind::Access,
        Utc::now(),
    )
    .await
    .unwrap();
    hand_access(&mut conn, pg, "person1@example.org").await;

    let picks: Vec<u64> = (0..SAMPLE).map(|_| 2 + rng.below(people / 2)).collect();
    let (mut ours, mut raw, mut data_only) = (Vec::new(), Vec::new(), Vec::new());
    for id in &picks {
        let email = format!("person{id}@example.org");
        let t = Instant::now();
        let n = hand_access(&mut conn, pg, &email).await;
        raw.push(t.elapsed());
        assert_eq!(n, 66);
        let identity = Identity::parse(&format!("email={email}")).unwrap();
        let t = Instant::now();
        let package = dsr::collect(
            &ctx,
            std::slice::from_ref(&identity),
            AccessKind::Access,
            Utc::now(),
        )
        .await
        .unwrap();
        data_only.push(t.elapsed());
        assert_eq!(package.row_counts().values().sum::<usize>(), 66);
        let t = Instant::now();
        let package = dsr::access(&ctx, &[identity], AccessKind::Access, Utc::now())
            .await
            .unwrap();
        ours.push(t.elapsed());
        assert_eq!(package.row_counts().values().sum::<usize>(), 66);
    }
    let (o50, o99, r50, r99) = (
        percentile(&mut ours, 0.5),
        percentile(&mut ours, 0.99),
        percentile(&mut raw, 0.5),
        percentile(&mut raw, 0.99),
    );
    let (d50, d99) = (
        percentile(&mut data_only, 0.5),
        percentile(&mut data_only, 0.99),
    );
    println!(
        "  access, finding the rows and building the package: p50 {d50:.2} ms p99 {d99:.2} ms | hand-written SELECTs p50 {r50:.2} ms p99 {r99:.2} ms | ratio p50 {:.2}x p99 {:.2}x",
        d50 / r50,
        d99 / r99
    );
    println!(
        "  access with its audit entry (one more store commit): p50 {o50:.2} ms p99 {o99:.2} ms | ratio p50 {:.2}x",
        o50 / r50
    );

    // Erasure on two disjoint sets of people from the other half.
    let ours_ids: Vec<u64> = (0..SAMPLE as u64).map(|i| people / 2 + 1 + i * 2).collect();
    let raw_ids: Vec<u64> = ours_ids.iter().map(|i| i + 1).collect();
    let t = Instant::now();
    let mut raw_rows = 0;
    for id in &raw_ids {
        raw_rows += hand_erase(&mut conn, pg, &format!("person{id}@example.org")).await;
    }
    let raw_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut our_rows = 0;
    for id in &ours_ids {
        let identity = Identity::parse(&format!("email=person{id}@example.org")).unwrap();
        let report = dsr::erase(&ctx, &[identity], false, Utc::now())
            .await
            .unwrap();
        our_rows += report
            .systems
            .iter()
            .flat_map(|s| &s.collections)
            .map(|c| (c.rows_deleted + c.rows_masked) as u64)
            .sum::<u64>();
    }
    let our_s = t.elapsed().as_secs_f64();
    assert_eq!(our_rows, raw_rows);
    println!(
        "  erasure: lethe {:.0} rows/s ({:.2} ms/person) | hand-written {:.0} rows/s ({:.2} ms/person) | ratio {:.2}x",
        our_rows as f64 / our_s,
        our_s * 1e3 / SAMPLE as f64,
        raw_rows as f64 / raw_s,
        raw_s * 1e3 / SAMPLE as f64,
        (raw_rows as f64 / raw_s) / (our_rows as f64 / our_s)
    );
    conn.close().await.unwrap();
    sources.close().await;
}

#[tokio::main]
async fn main() {
    sqlx::any::install_default_drivers();
    let people: u64 = std::env::var("LETHE_BENCH_PEOPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    run(
        "SQLite",
        format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display()),
        false,
        people,
    )
    .await;
    match std::env::var("LETHE_TEST_POSTGRES_URL") {
        Ok(base) => {
            let name = format!("lethe_bench_dsr_{}", std::process::id());
            let mut c = sqlx::PgConnection::connect(&base).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut c)
                .await
                .unwrap();
            let mut u = url::Url::parse(&base).unwrap();
            u.set_path(&format!("/{name}"));
            run("PostgreSQL", u.to_string(), true, people).await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {name} WITH (FORCE)"
            )))
            .execute(&mut c)
            .await
            .ok();
        }
        Err(_) => println!("(PostgreSQL skipped: set LETHE_TEST_POSTGRES_URL)"),
    }
}

//! The demo application database: the schema of the demo policy's `app` system, filled
//! with synthetic people so that requests and retention have something real to work on.
//! Created only for a system using its SQLite `default` URL whose database is empty.

use std::str::FromStr;

use chrono::{Duration, Utc};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

use crate::policy::Policy;
use crate::store::timestamp;

use super::resolve_url;

const SCHEMA: &str = "
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    full_name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    closed_at TEXT
);
CREATE TABLE invoices (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    billing_name TEXT NOT NULL,
    billing_email TEXT NOT NULL,
    amount NUMERIC NOT NULL,
    issued_at TEXT NOT NULL
);
CREATE INDEX invoices_user_id ON invoices (user_id);
CREATE TABLE page_views (
    id INTEGER PRIMARY KEY,
    user_id INTEGER REFERENCES users(id),
    ip_address TEXT,
    user_agent TEXT,
    path TEXT NOT NULL,
    viewed_at TEXT NOT NULL
);
CREATE INDEX page_views_user_id ON page_views (user_id);
CREATE INDEX page_views_viewed_at ON page_views (viewed_at);
CREATE TABLE comments (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX comments_user_id ON comments (user_id);
";

const DEMO_COLLECTIONS: [&str; 4] = ["users", "invoices", "page_views", "comments"];
const FIRST: [&str; 12] = [
    "Anna",
    "Bence",
    "Csilla",
    "Dániel",
    "Eszter",
    "Ferenc",
    "Gabriella",
    "Hugo",
    "Ilona",
    "János",
    "Kata",
    "László",
];
const LAST: [&str; 10] = [
    "Kovács", "Nagy", "Tóth", "Szabó", "Horváth", "Varga", "Kiss", "Molnár", "Németh", "Farkas",
];
const PATHS: [&str; 6] = [
    "/",
    "/pricing",
    "/docs",
    "/login",
    "/dashboard",
    "/settings",
];
const AGENTS: [&str; 3] = [
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0",
];

/// A small deterministic generator: the demo data is the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Creates and fills the demo database for each system that uses its SQLite default and
/// maps the demo collections, when that database has no tables yet. Returns how many
/// people were created.
pub async fn ensure(policy: &Policy, people: u32) -> anyhow::Result<u32> {
    let mut created = 0;
    for system in &policy.systems {
        let names: Vec<&str> = system.collections.iter().map(|c| c.name.as_str()).collect();
        if !DEMO_COLLECTIONS.iter().all(|c| names.contains(c)) {
            continue;
        }
        let Some(url) = resolve_url(system) else {
            continue;
        };
        if !url.is_default || !url.url.starts_with("sqlite:") {
            continue;
        }
        let options = SqliteConnectOptions::from_str(&url.url)?.create_if_missing(true);
        let mut conn = SqliteConnection::connect_with(&options).await?;
        let tables: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
                .fetch_one(&mut conn)
                .await?;
        if tables == 0 {
            seed(&mut conn, people).await?;
            tracing::info!(system = %system.id.as_str(), people, "created the demo application database");
            created += people;
        }
        conn.close().await?;
    }
    Ok(created)
}

/// Writes the demo schema and `people` synthetic people with their invoices, page views
/// and comments, spread over the last ten years so retention has rows on both sides of
/// every deadline.
pub async fn seed(conn: &mut SqliteConnection, people: u32) -> anyhow::Result<()> {
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
    let now = Utc::now();
    let mut rng = Rng(0x5eed_1e7e_2026_0001);
    for id in 1..=i64::from(people) {
        let first = FIRST[rng.below(FIRST.len() as u64) as usize];
        let last = LAST[rng.below(LAST.len() as u64) as usize];
        let email = format!("person{id}@example.org");
        let name = format!("{first} {last}");
        let created = now - Duration::days(rng.below(3650) as i64 + 30);
        let closed = (rng.below(5) == 0)
            .then(|| created + Duration::days(rng.below((now - created).num_days() as u64) as i64));
        sqlx::query("INSERT INTO users (id, email, full_name, created_at, closed_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(&email)
            .bind(&name)
            .bind(timestamp(created))
            .bind(closed.map(timestamp))
            .execute(&mut *tx)
            .await?;
        let span = (now - created).num_days().max(1) as u64;
        for _ in 0..rng.below(6) {
            let issued = created + Duration::days(rng.below(span) as i64);
            let amount = format!("{}.{:02}", 9 + rng.below(200), rng.below(100));
            sqlx::query("INSERT INTO invoices (user_id, billing_name, billing_email, amount, issued_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(id)
                .bind(&name)
                .bind(&email)
                .bind(amount)
                .bind(timestamp(issued))
                .execute(&mut *tx)
                .await?;
        }
        for _ in 0..rng.below(12) {
            let viewed = now
                - Duration::days(rng.below(180) as i64)
                - Duration::minutes(rng.below(1440) as i64);
            let ip = format!("192.0.2.{}", 1 + rng.below(254));
            sqlx::query("INSERT INTO page_views (user_id, ip_address, user_agent, path, viewed_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(id)
                .bind(ip)
                .bind(AGENTS[rng.below(AGENTS.len() as u64) as usize])
                .bind(PATHS[rng.below(PATHS.len() as u64) as usize])
                .bind(timestamp(viewed))
                .execute(&mut *tx)
                .await?;
        }
        for n in 0..rng.below(4) {
            let at = created + Duration::days(rng.below(span) as i64);
            sqlx::query("INSERT INTO comments (user_id, body, created_at) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(format!(
                    "Comment {n} by {first}: the export to PDF should keep the page numbers."
                ))
                .bind(timestamp(at))
                .execute(&mut *tx)
                .await?;
        }
    }
    // Visitors without an account.
    for _ in 0..people {
        let viewed = now - Duration::days(rng.below(180) as i64);
        sqlx::query("INSERT INTO page_views (user_id, ip_address, user_agent, path, viewed_at) VALUES (NULL, $1, $2, $3, $4)")
            .bind(format!("198.51.100.{}", 1 + rng.below(254)))
            .bind(AGENTS[rng.below(AGENTS.len() as u64) as usize])
            .bind(PATHS[rng.below(PATHS.len() as u64) as usize])
            .bind(timestamp(viewed))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

//! Crashes, for real: `lethe serve` is killed with `kill -9` while it runs an access, an
//! erasure, a mail send and a retention batch (held there by `LETHE_FAULT_INJECT`), and
//! started again. The restarted instance takes over at once what the killed one held:
//! everything completes within seconds, nothing is sent or stored twice, a repeated step
//! is marked in the audit log, and `lethe audit verify` passes. On PostgreSQL a second
//! instance, running beside the killed one, takes over its work.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A fresh directory holding the demo policies and `jobs`, as a checkout has them.
fn checkout(jobs: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, policies.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    std::fs::write(dir.path().join("jobs/jobs.yaml"), jobs).unwrap();
    dir
}

/// An HTTP client that gives up on a server that stopped answering (a stalled one).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One scenario at a time: each starts and kills servers against timers of seconds.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Jobs that never fire during a test.
const QUIET: &str = "jobs:\n  - name: retention\n    kind: retention\n    schedule: \"0 0 0 1 1 *\"\n    options: { batch_size: 5 }\n";

/// A running `lethe serve` and what it has logged so far.
struct Server {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    address: String,
}

impl Server {
    fn start(dir: &Path, store: &str, fault: Option<&str>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lethe"));
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--log-format", "json"])
            .current_dir(dir)
            .env_remove("APP_DATABASE_URL")
            .env_remove("LETHE_SMTP_URL")
            .env("LETHE_DATABASE", store)
            .env("LETHE_RATE_LIMIT", "0")
            .env("RUST_LOG", "info")
            .env_remove("LETHE_FAULT_INJECT")
            .stderr(Stdio::piped());
        if let Some(f) = fault {
            cmd.env("LETHE_FAULT_INJECT", f);
        }
        let mut child = cmd.spawn().unwrap();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut server = Server {
            child,
            log,
            address: String::new(),
        };
        let line = server.wait_for("lethe is serving", 60);
        let v: Value = serde_json::from_str(&line).unwrap();
        server.address = v["fields"]["address"].as_str().unwrap().to_owned();
        server
    }

    /// The first log line holding `needle`, waiting up to `secs` for it.
    fn wait_for(&self, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in the log: {:#?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `kill -9`: no chance to clean up.
    fn kill9(mut self) {
        let status = Command::new("kill")
            .args(["-9", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = self.child.wait();
    }

    fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The outbox's messages about request `id` that hold `needle`, decoded enough to read.
fn mails(dir: &Path, id: &str, needle: &str) -> Vec<String> {
    std::fs::read_dir(dir.join("outbox"))
        .into_iter()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .map(|t| {
            t.replace("=\r\n", "")
                .replace("=\n", "")
                .replace("=3D", "=")
        })
        .filter(|t| t.contains(id) && t.contains(needle))
        .collect()
}

/// Submits a request and confirms it with the e-mailed code: its id and token.
async fn submitted(dir: &Path, base: &str, kind: &str, email: &str) -> (String, String) {
    let http = client();
    let created: Value = http
        .post(format!("{base}/v1/requests"))
        .json(&json!({ "type": kind, "identity": { "email": email } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    let mail = mails(dir, &id, "verification code is ")
        .pop()
        .expect("a code e-mail");
    let i = mail.find("verification code is ").unwrap() + 21;
    let code: String = mail[i..].chars().take(11).collect();
    let r = http
        .post(format!("{base}/v1/requests/{id}/verify"))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    (id, token)
}

/// Waits for request `id` to reach a final status, and returns it.
async fn finished(base: &str, id: &str, token: &str, secs: u64) -> String {
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v: Value = http
            .get(format!("{base}/v1/requests/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let status = v["status"].as_str().unwrap_or_default().to_owned();
        if ["completed", "partially_completed", "failed"].contains(&status.as_str()) {
            return status;
        }
        assert!(Instant::now() < deadline, "still {status}: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `lethe audit verify` on the directory's store passes.
fn audit_verifies(dir: &Path, store: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["audit", "verify"])
        .current_dir(dir)
        .env("LETHE_DATABASE", store)
        .env_remove("LETHE_FAULT_INJECT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The audit entries of request `id`, as `lethe audit show` prints them.
fn audit_entries(dir: &Path, store: &str, id: &str) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["audit", "show", "--request", id, "--format", "json"])
        .current_dir(dir)
        .env("LETHE_DATABASE", store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The summaries of the entries recording `action`, in order.
fn summaries(entries: &[Value], action: &str) -> Vec<Value> {
    entries
        .iter()
        .filter(|e| e["action"] == action)
        .map(|e| serde_json::from_str(e["summary"].as_str().unwrap_or("{}")).unwrap())
        .collect()
}

fn sqlite_store(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("lethe.db").display())
}

async fn store_count(store: &str, sql: &str, id: &str) -> i64 {
    let store = lethe::store::Store::open(&secrecy::SecretString::from(store.to_owned()))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    store.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_killed_midway_completes_at_once_after_a_restart() {
    let dir = checkout(QUIET);
    access_killed_midway(&sqlite_store(dir.path()), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_killed_midway_completes_at_once_after_a_restart_on_postgres() {
    let Some(url) = postgres("crash_access").await else {
        return;
    };
    let dir = checkout(QUIET);
    access_killed_midway(&url, dir.path()).await;
}

/// A fresh PostgreSQL store's URL, or None (skipped, with a note).
async fn postgres(test: &str) -> Option<String> {
    use secrecy::ExposeSecret;
    Some(
        common::postgres_store(test)
            .await?
            .expose_secret()
            .to_owned(),
    )
}

async fn access_killed_midway(store: &str, dir: &Path) {
    let _one = ONE_AT_A_TIME.lock().await;
    let store = store.to_owned();
    let first = Server::start(dir, &store, Some("stall-at:access"));
    let (id, token) = submitted(dir, &first.base(), "access", "person3@example.org").await;
    first.wait_for("stalled at access", 30);
    first.kill9();

    let started = Instant::now();
    let second = Server::start(dir, &store, None);
    let took = second.wait_for("took over the claims", 10);
    assert!(took.contains("\"requests\":1"), "{took}");
    assert_eq!(finished(&second.base(), &id, &token, 15).await, "completed");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // One package, one completion e-mail.
    assert_eq!(
        store_count(
            &store,
            "SELECT count(*) FROM request_packages WHERE request_id = $1",
            &id
        )
        .await,
        1
    );
    let sent = mails(dir, &id, "/download?secret=");
    assert_eq!(sent.len(), 1);
    // Without public_url the link is absolute, to the address lethe listens on.
    let port = second.base().rsplit(':').next().unwrap().to_owned();
    assert!(
        sent[0].contains(&format!(
            "http://localhost:{port}/portal/requests/{id}/download?secret="
        )),
        "{}",
        sent[0]
    );
    assert!(
        second
            .wait_for("public_url is not set", 1)
            .contains("localhost")
    );
    second.stop();
    // An access records its start with its outcome, so the attempt that was stopped
    // left no entry; the attempt that completed it says whose it took over.
    let entries = audit_entries(dir, &store, &id);
    let runs = summaries(&entries, "request.in_progress");
    assert_eq!(runs.len(), 1, "{entries:#?}");
    assert!(
        runs[0]["resumed_after_stop_of"].is_string(),
        "{:#?}",
        runs[0]
    );
    assert_eq!(summaries(&entries, "dsr.access.executed").len(), 1);
    audit_verifies(dir, &store);
}

/// Rows of the demo application database matching `sql`.
async fn app_count(dir: &Path, sql: &str) -> i64 {
    use sqlx::Connection;
    let url = format!("sqlite://{}", dir.join("demo-app.db").display());
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut c)
        .await
        .unwrap()
}

/// An erasure killed between two collections' writes: the restarted instance completes
/// it, erasing nothing twice and telling each processor once.
async fn erasure_killed_midway(store: &str, dir: &Path) {
    let _one = ONE_AT_A_TIME.lock().await;
    let first = Server::start(dir, store, Some("stall-at:app.page_views"));
    let (id, token) = submitted(dir, &first.base(), "erasure", "person3@example.org").await;
    first.wait_for("stalled at app.page_views", 30);
    first.kill9();
    // A system's writes are one transaction: the killed one left nothing half done.
    assert!(app_count(dir, "SELECT count(*) FROM page_views WHERE user_id = 3").await > 0);

    let second = Server::start(dir, store, None);
    let took = second.wait_for("took over the claims", 10);
    assert!(took.contains("\"requests\":1"), "{took}");
    assert_eq!(
        finished(&second.base(), &id, &token, 15).await,
        "partially_completed"
    );
    for table in ["page_views", "comments"] {
        let sql = format!("SELECT count(*) FROM {table} WHERE user_id = 3");
        assert_eq!(app_count(dir, &sql).await, 0, "{table}");
    }
    // The hosting processor is told once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while mails(dir, &id, "aws-privacy@example.net").is_empty() {
        assert!(Instant::now() < deadline, "no Art. 19 notice");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(mails(dir, &id, "aws-privacy@example.net").len(), 1);
    second.stop();
    let entries = audit_entries(dir, store, &id);
    assert_eq!(
        summaries(&entries, "erasure.executed").len(),
        1,
        "{entries:#?}"
    );
    let runs = summaries(&entries, "request.in_progress");
    assert_eq!(runs.len(), 2);
    assert!(runs[1]["resumed_after_stop_of"].is_string());
    audit_verifies(dir, store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_killed_midway_completes_after_a_restart() {
    let dir = checkout(QUIET);
    let store = sqlite_store(dir.path());
    erasure_killed_midway(&store, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_killed_midway_completes_after_a_restart_on_postgres() {
    let Some(url) = postgres("crash_erasure").await else {
        return;
    };
    let dir = checkout(QUIET);
    erasure_killed_midway(&url, dir.path()).await;
}

/// A completion e-mail killed before it was sent: sent once, after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_killed_before_sending_is_sent_once_after_a_restart() {
    let dir = checkout(QUIET);
    mail_killed_before_sending(&sqlite_store(dir.path()), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_killed_before_sending_is_sent_once_after_a_restart_on_postgres() {
    let Some(url) = postgres("crash_mail").await else {
        return;
    };
    let dir = checkout(QUIET);
    mail_killed_before_sending(&url, dir.path()).await;
}

async fn mail_killed_before_sending(store: &str, dir: &Path) {
    let _one = ONE_AT_A_TIME.lock().await;
    let store = store.to_owned();
    let first = Server::start(dir, &store, Some("stall-at:mail:request_completed"));
    let (id, token) = submitted(dir, &first.base(), "access", "person4@example.org").await;
    first.wait_for("stalled at mail:request_completed", 30);
    assert_eq!(finished(&first.base(), &id, &token, 5).await, "completed");
    assert!(mails(dir, &id, "/download?secret=").is_empty());
    first.kill9();

    let second = Server::start(dir, &store, None);
    let took = second.wait_for("took over the claims", 10);
    assert!(took.contains("\"mail\":1"), "{took}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while mails(dir, &id, "/download?secret=").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the completion e-mail was not sent"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(mails(dir, &id, "/download?secret=").len(), 1);
    second.stop();
    audit_verifies(dir, &store);
}

/// A scheduled retention run killed after a batch: the restarted instance runs it again
/// at once, and it finishes what was due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_run_killed_after_a_batch_is_resumed_at_a_restart() {
    let dir = checkout(&QUIET.replace("0 0 0 1 1 *", "* * * * * *"));
    retention_killed_after_a_batch(&sqlite_store(dir.path()), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_run_killed_after_a_batch_is_resumed_at_a_restart_on_postgres() {
    let Some(url) = postgres("crash_retention").await else {
        return;
    };
    let dir = checkout(&QUIET.replace("0 0 0 1 1 *", "* * * * * *"));
    retention_killed_after_a_batch(&url, dir.path()).await;
}

async fn retention_killed_after_a_batch(store: &str, dir: &Path) {
    let _one = ONE_AT_A_TIME.lock().await;
    let store = store.to_owned();
    let first = Server::start(dir, &store, Some("stall-at:retention"));
    first.wait_for("stalled at retention", 30);
    first.kill9();
    let due = app_count(
        dir,
        "SELECT count(*) FROM page_views WHERE viewed_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-90 days')",
    )
    .await;
    assert!(due > 0, "the first batch took everything");

    // Started again with a schedule that does not fire: only the resumption runs.
    std::fs::write(dir.join("jobs/jobs.yaml"), QUIET).unwrap();
    let second = Server::start(dir, &store, None);
    let took = second.wait_for("took over the claims", 10);
    assert!(!took.contains("\"job_runs\":0"), "{took}");
    second.wait_for("resumed an interrupted job", 60);
    assert_eq!(
        app_count(
            dir,
            "SELECT count(*) FROM page_views WHERE viewed_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-90 days')",
        )
        .await,
        0
    );
    second.stop();
    let runs: Vec<(String, Option<String>, String)> = {
        let s = lethe::store::Store::open(&secrecy::SecretString::from(store.clone()))
            .await
            .unwrap();
        let r = sqlx::query_as("SELECT job, tick, status FROM job_runs ORDER BY id")
            .fetch_all(s.pool())
            .await
            .unwrap();
        s.close().await;
        r
    };
    assert!(
        runs.iter().any(|(_, _, st)| st == "interrupted"),
        "{runs:?}"
    );
    assert!(
        runs.iter().any(
            |(_, tick, st)| tick.as_deref().is_some_and(|t| t.starts_with("resume:"))
                && st != "failed"
                && st != "running"
        ),
        "{runs:?}"
    );
    assert!(!runs.iter().any(|(_, _, st)| st == "running"), "{runs:?}");
    audit_verifies(dir, &store);
}

/// Two instances on one PostgreSQL store: the one left running takes over the erasure of
/// the one killed, within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_takes_over_from_a_killed_one_on_postgres() {
    let Some(store) = postgres("crash_two_instances").await else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = checkout(QUIET);
    let first = Server::start(dir.path(), &store, Some("stall-at:app.page_views"));
    let (id, token) = submitted(dir.path(), &first.base(), "erasure", "person5@example.org").await;
    first.wait_for("stalled at app.page_views", 30);
    let second = Server::start(dir.path(), &store, None);
    first.kill9();
    let killed = Instant::now();
    second.wait_for("took over the claims of a stopped instance", 15);
    assert_eq!(finished(&second.base(), &id, &token, 20).await, "completed");
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "{:?}",
        killed.elapsed()
    );
    second.stop();
    audit_verifies(dir.path(), &store);
}

/// Requests run side by side: with one erasure hung in the middle, an access request made
/// after it still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_request_does_not_hold_up_the_next() {
    let dir = checkout(QUIET);
    let _one = ONE_AT_A_TIME.lock().await;
    let store = sqlite_store(dir.path());
    let server = Server::start(dir.path(), &store, Some("stall-at:app.page_views"));
    let _ = submitted(dir.path(), &server.base(), "erasure", "person3@example.org").await;
    server.wait_for("stalled at app.page_views", 30);
    let (id, token) = submitted(dir.path(), &server.base(), "access", "person4@example.org").await;
    assert_eq!(finished(&server.base(), &id, &token, 15).await, "completed");
    server.kill9();
}

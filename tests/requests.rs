//! The request API against the real server on port 0, with the verification code read
//! from the e-mail actually sent: over SMTP when LETHE_TEST_SMTP is set (CI), else from
//! the `.eml` outbox.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lethe::audit::{AuditLog, KeySource};
use lethe::config::Config;
use lethe::http::Application;
use lethe::notify::Mailer;
use lethe::policy::Policy;
use lethe::store::Store;
use secrecy::SecretString;
use serde_json::{Value, json};

struct Server {
    base: String,
    store: Store,
    audit: AuditLog,
    mailer: Arc<Mailer>,
    policy: Arc<Policy>,
    app_db: PathBuf,
    /// Where the sent mail can be read.
    mail_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dirs: Vec<tempfile::TempDir>,
}

async fn start() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let (url, dir) = common::sqlite_store();
    let store = Store::open(&url).await.unwrap();
    let keys = KeySource {
        master: None,
        signing: None,
        dir: tmp.path().join(".lethe"),
    };
    let audit = AuditLog::open(store.clone(), &keys).await.unwrap();
    let policy = Arc::new(demo(tmp.path()).await);
    let (mailer, mail_dir) = match (
        std::env::var("LETHE_TEST_SMTP"),
        std::env::var("LETHE_TEST_SMTP_MAILDIR"),
    ) {
        (Ok(smtp), Ok(maildir)) => {
            let config = Config {
                smtp_url: Some(SecretString::from(smtp)),
                ..Config::default()
            };
            (
                Mailer::from_config(
                    &config,
                    Some("privacy@example.com"),
                    tmp.path().join("unused"),
                )
                .unwrap(),
                Path::new(&maildir).join("new"),
            )
        }
        _ => {
            common::skipped(
                "requests (reading mail from SMTP; using the .eml outbox)",
                "SMTP",
                "LETHE_TEST_SMTP",
            );
            let outbox = tmp.path().join("outbox");
            (
                Mailer::from_config(
                    &Config::default(),
                    Some("privacy@example.com"),
                    outbox.clone(),
                )
                .unwrap(),
                outbox,
            )
        }
    };
    let mailer = Arc::new(mailer);
    let app = Application::build("127.0.0.1:0", store.clone(), policy.clone())
        .await
        .unwrap()
        .with_audit(audit.clone(), keys)
        .with_mailer(mailer.clone());
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let app_db = tmp.path().join("app.db");
    Server {
        base,
        store,
        audit,
        mailer,
        policy,
        app_db,
        mail_dir,
        stop: Some(stop),
        _dirs: vec![tmp, dir],
    }
}

/// The demo policies, with the application database in `dir` filled with synthetic people.
async fn demo(dir: &Path) -> Policy {
    use sqlx::Connection;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dst = dir.join("policies");
    std::fs::create_dir_all(&dst).unwrap();
    let app = format!("sqlite://{}?mode=rwc", dir.join("app.db").display());
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("sqlite://demo-app.db?mode=rwc", &app);
        std::fs::write(dst.join(p.file_name().unwrap()), text).unwrap();
    }
    let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&app)
        .unwrap()
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    lethe::sources::demo::seed(&mut conn, 20).await.unwrap();
    conn.close().await.unwrap();
    Policy::load(&dst).unwrap().into_valid().unwrap()
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Server {
    /// The verification code of request `id`, from the mail that was sent.
    async fn code(&self, id: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            for e in std::fs::read_dir(&self.mail_dir).into_iter().flatten() {
                let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
                if !text.contains(id) {
                    continue;
                }
                if let Some(i) = text.find("verification code is ") {
                    let digits: String = text[i + 21..].chars().take(6).collect();
                    if digits.len() == 6 && digits.chars().all(|c| c.is_ascii_digit()) {
                        return digits;
                    }
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no mail for {id} in {}",
                self.mail_dir.display()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Runs the request worker once, as `lethe serve` does in the background.
    async fn execute(&self) -> Option<String> {
        let svc = lethe::requests::Service {
            store: &self.store,
            audit: &self.audit,
            mailer: &self.mailer,
            settings: lethe::requests::Settings::from_policy(&self.policy),
        };
        svc.execute_next(
            &self.policy,
            &lethe::sources::db::Sources::default(),
            "test",
            chrono::Utc::now(),
        )
        .await
        .unwrap()
    }

    async fn app_count(&self, sql: &'static str) -> i64 {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", self.app_db.display()))
            .await
            .unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
    }

    /// Submits and verifies a request; returns its id and token.
    async fn verified(&self, kind: &str, email: &str) -> (String, String) {
        let (status, created) = post(
            &format!("{}/v1/requests", self.base),
            json!({ "type": kind, "identity": { "email": email } }).to_string(),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let code = self.code(&id).await;
        let (status, v) = post(
            &format!("{}/v1/requests/{id}/verify", self.base),
            json!({ "code": code }).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        (id, created["token"].as_str().unwrap().to_owned())
    }

    async fn requests(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM dsr_requests")
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }
}

async fn post(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn unique_email() -> String {
    format!(
        "subject-{}@example.org",
        lethe::crypto::random_hex(4).unwrap()
    )
}

#[tokio::test]
async fn submit_verify_and_read_the_status() {
    let s = start().await;
    let email = unique_email();
    let (status, created) = post(
        &format!("{}/v1/requests", s.base),
        json!({ "type": "access", "identity": { "email": email }, "details": "all of it" })
            .to_string(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "identity_pending");
    let id = created["id"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    let received = chrono::Utc::now();
    let due = lethe::requests::due_date(received);
    assert_eq!(
        &created["due_at"].as_str().unwrap()[..10],
        due.format("%Y-%m-%d").to_string()
    );

    // The same request again returns the first, without its token.
    let (status, again) = post(
        &format!("{}/v1/requests", s.base),
        json!({ "type": "access", "identity": { "email": email.to_uppercase() } }).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], id.as_str());
    assert!(again.get("token").is_none());
    assert_eq!(again["existing"], true);

    let metrics = reqwest::get(format!("{}/metrics", s.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("lethe_requests{type=\"access\",status=\"identity_pending\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("lethe_audit_entries "), "{metrics}");
    let code = s.code(&id).await;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let (status, err) = post(
        &format!("{}/v1/requests/{id}/verify", s.base),
        json!({ "code": wrong }).to_string(),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(err["error"]["code"], "wrong_code");
    let (status, verified) = post(
        &format!("{}/v1/requests/{id}/verify", s.base),
        json!({ "code": code }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["status"], "verified");

    let http = reqwest::Client::new();
    let by_header: Value = http
        .get(format!("{}/v1/requests/{id}", s.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_header["status"], "verified");
    assert_eq!(by_header["type"], "access");
    let r = http
        .get(format!("{}/v1/requests/{id}?token={token}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Without the token, with a wrong one, or with another request's: 401.
    assert_eq!(
        http.get(format!("{}/v1/requests/{id}", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.get(format!("{}/v1/requests/{id}", s.base))
            .bearer_auth("0".repeat(64))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let (_, other) = post(
        &format!("{}/v1/requests", s.base),
        json!({ "type": "erasure", "identity": { "email": unique_email() } }).to_string(),
    )
    .await;
    let r = http
        .get(format!(
            "{}/v1/requests/{}",
            s.base,
            other["id"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn bad_input_gets_the_right_error_and_changes_nothing() {
    let s = start().await;
    let url = format!("{}/v1/requests", s.base);
    let before = s.requests().await;
    for (body, status, code) in [
        ("{\"type\": \"access\", ".to_owned(), 400, "malformed_json"),
        ("{\"type\": \"access\", \"identity\": {\"email\": \"a@example.org\"},}".to_owned(), 400, "malformed_json"),
        (json!({ "type": "delete_everything", "identity": { "email": "a@example.org" } }).to_string(), 422, "unknown_type"),
        (json!({ "type": "access", "identity": { "email": "not-an-address" } }).to_string(), 422, "invalid_identity"),
        (json!({ "type": "access" }).to_string(), 422, "invalid_field"),
        (json!({ "type": "access", "identity": { "email": "a@example.org" }, "details": "x".repeat(5000) }).to_string(), 422, "details_too_long"),
        (format!("{{\"type\": \"access\", \"identity\": {{\"email\": \"a@example.org\"}}, \"details\": \"{}\"}}", "x".repeat(1024 * 1024)), 413, "body_too_large"),
    ] {
        let (got, err) = post(&url, body.clone()).await;
        assert_eq!(got, status, "{}: {err}", &body[..body.len().min(60)]);
        assert_eq!(err["error"]["code"], code, "{err}");
    }
    // A wrong-typed field is refused without echoing what was sent.
    let (got, err) = post(
        &url,
        json!({ "type": "access", "identity": "secret-person@example.org" }).to_string(),
    )
    .await;
    assert_eq!(got, 422);
    assert!(!err.to_string().contains("secret-person"), "{err}");
    assert_eq!(
        s.requests().await,
        before,
        "a rejected body changed the store"
    );

    // Six wrong codes: the request then needs a new code, even for the right one.
    let (_, created) = post(
        &url,
        json!({ "type": "erasure", "identity": { "email": unique_email() } }).to_string(),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let code = s.code(&id).await;
    let wrong = if code == "999999" { "999998" } else { "999999" };
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (st, _) = post(
            &format!("{}/v1/requests/{id}/verify", s.base),
            json!({ "code": wrong }).to_string(),
        )
        .await;
        statuses.push(st);
    }
    assert_eq!(statuses, [422, 422, 422, 422, 429, 429]);
    let (st, err) = post(
        &format!("{}/v1/requests/{id}/verify", s.base),
        json!({ "code": code }).to_string(),
    )
    .await;
    assert_eq!(st, 429, "{err}");
    let status: String = sqlx::query_scalar("SELECT status FROM dsr_requests WHERE id = $1")
        .bind(&id)
        .fetch_one(s.store.pool())
        .await
        .unwrap();
    assert_eq!(status, "identity_pending");
}

#[tokio::test]
async fn a_verified_access_request_yields_a_package_and_an_erasure_erases() {
    let s = start().await;
    let http = reqwest::Client::new();
    let (id, token) = s.verified("access", "person5@example.org").await;
    // Not ready before the worker ran.
    assert_eq!(
        http.get(format!("{}/v1/requests/{id}/package", s.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(s.execute().await.as_deref(), Some(id.as_str()));
    assert_eq!(s.execute().await, None, "a request ran twice");
    let status: Value = http
        .get(format!("{}/v1/requests/{id}", s.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "completed");
    let r = http
        .get(format!("{}/v1/requests/{id}/package", s.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    let zip = r.bytes().await.unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip.to_vec())).unwrap();
    let mut data = String::new();
    std::io::Read::read_to_string(&mut archive.by_name("data.json").unwrap(), &mut data).unwrap();
    assert!(data.contains("person5@example.org"), "{data}");
    assert!(!data.contains("person6@example.org"));
    // Another request's token does not open this package; nor does none.
    assert_eq!(
        http.get(format!("{}/v1/requests/{id}/package", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // The package is stored sealed, not in clear.
    let sealed: Vec<u8> =
        sqlx::query_scalar("SELECT sealed FROM request_packages WHERE request_id = $1")
            .bind(&id)
            .fetch_one(s.store.pool())
            .await
            .unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("person5@example.org"));

    assert!(
        s.app_count("SELECT count(*) FROM page_views WHERE user_id = 5")
            .await
            + s.app_count("SELECT count(*) FROM comments WHERE user_id = 5")
                .await
            > 0,
        "the demo person has no data to erase"
    );
    let (eid, etoken) = s.verified("erasure", "person5@example.org").await;
    assert_eq!(s.execute().await.as_deref(), Some(eid.as_str()));
    let status: Value = http
        .get(format!("{}/v1/requests/{eid}", s.base))
        .bearer_auth(&etoken)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The account is kept for billing (8 years): partially completed.
    assert_eq!(status["status"], "partially_completed");
    assert_eq!(
        s.app_count("SELECT count(*) FROM page_views WHERE user_id = 5")
            .await,
        0
    );
    assert_eq!(
        s.app_count("SELECT count(*) FROM comments WHERE user_id = 5")
            .await,
        0
    );
    assert!(
        s.app_count("SELECT count(*) FROM page_views WHERE user_id = 6")
            .await
            + s.app_count("SELECT count(*) FROM users WHERE id = 6").await
            > 0
    );
    let actions: Vec<String> = s
        .audit
        .entries(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.header.action)
        .collect();
    for a in [
        "request.submitted",
        "request.verified",
        "dsr.access.executed",
        "request.completed",
        "erasure.executed",
        "request.partially_completed",
        "subject.shredded",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
}

#[tokio::test]
async fn the_dpo_extends_once_and_rejects_an_auditor_only_reads() {
    let s = start().await;
    let (_, dpo) = s
        .store
        .create_admin_token(lethe::store::Role::Dpo)
        .await
        .unwrap();
    let (_, auditor) = s
        .store
        .create_admin_token(lethe::store::Role::Auditor)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let (_, created) = post(
        &format!("{}/v1/requests", s.base),
        json!({ "type": "access", "identity": { "email": unique_email() } }).to_string(),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let due = created["due_at"].as_str().unwrap().to_owned();

    let list: Value = http
        .get(format!("{}/v1/admin/requests?due_within=40d", s.base))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id.as_str()),
        "{list}"
    );
    let none: Value = http
        .get(format!("{}/v1/admin/requests?due_within=7d", s.base))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !none
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id.as_str())
    );
    assert_eq!(
        http.get(format!("{}/v1/admin/requests?due_within=soon", s.base))
            .bearer_auth(&auditor)
            .send()
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        http.get(format!("{}/v1/admin/requests", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let extend = json!({ "months": 2, "reason": "the request covers many systems" });
    let r = http
        .post(format!("{}/v1/admin/requests/{id}/extend", s.base))
        .bearer_auth(&auditor)
        .json(&extend)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "an auditor cannot act");
    let r = http
        .post(format!("{}/v1/admin/requests/{id}/extend", s.base))
        .bearer_auth(&dpo)
        .json(&extend)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let expected = lethe::policy::RetentionPeriod::new(0, 2, 0)
        .after(lethe::policy::parse_timestamp(&due).unwrap())
        .unwrap();
    assert_eq!(v["extended"], true);
    assert!(v["due_at"].as_str().unwrap() > due.as_str());
    assert_eq!(
        &v["due_at"].as_str().unwrap()[..10],
        expected.format("%Y-%m-%d").to_string()
    );
    let r = http
        .post(format!("{}/v1/admin/requests/{id}/extend", s.base))
        .bearer_auth(&dpo)
        .json(&extend)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "a second extension");

    let r = http
        .post(format!("{}/v1/admin/requests/{id}/reject", s.base))
        .bearer_auth(&dpo)
        .json(&json!({ "reason": "manifestly unfounded" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // The subject was told the reason and the right to complain.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let told = std::fs::read_dir(&s.mail_dir)
            .into_iter()
            .flatten()
            .any(|e| {
                let m = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
                m.contains(&id) && m.contains("manifestly unfounded") && m.contains("NAIH")
            });
        if told {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no rejection mail");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let actions: Vec<String> = s
        .audit
        .entries(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.header.actor.starts_with("admin:"))
        .map(|e| e.header.action)
        .collect();
    assert_eq!(actions, ["admin.extended", "admin.rejected"]);
}

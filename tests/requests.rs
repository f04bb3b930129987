//! The request API against the real server on port 0, with the verification code read
//! from the e-mail actually sent: over SMTP when LETHE_TEST_SMTP is set (CI), else from
//! the `.eml` outbox.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lethe::audit::{AuditLog, KeySource};
use lethe::config::Config;
use lethe::notify::Mailer;
use lethe::policy::Policy;
use lethe::store::Store;
use secrecy::SecretString;
use serde_json::{Value, json};

/// The service as `lethe serve` builds it, on the demo policies and a demo application
/// database of its own.
struct Server {
    app: common::TestApp,
    app_db: PathBuf,
    /// Where the sent mail can be read.
    mail_dir: PathBuf,
    webhooks: Arc<lethe::notify::webhook::Delivery>,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Server {
    type Target = common::TestApp;
    fn deref(&self) -> &common::TestApp {
        &self.app
    }
}

/// What a test server differs in.
#[derive(Default)]
struct Options {
    /// Types that wait for the DPO's approval.
    approval: Vec<lethe::requests::Kind>,
    /// Requests per minute per client IP on the public routes (0: none).
    rate_limit: u32,
    /// A webhook added to the hosting processor's erasure notice (beside its e-mail).
    webhook: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed (`trusted_proxies`).
    trusted_proxies: &'static str,
    /// Run the request worker and webhook delivery in the background, as `lethe serve`
    /// does; otherwise the test drives them.
    background: bool,
    /// Add a direct-marketing purpose (`newsletter`) to the demo policy.
    marketing: bool,
    /// A processor whose `erasure_notice` is taken out of the demo policy.
    no_notice_for: Option<&'static str>,
    /// How often the background worker looks for work nobody announced.
    worker_poll: Option<std::time::Duration>,
    /// How often the background webhook sender looks for webhooks nobody announced.
    webhook_poll: Option<std::time::Duration>,
}

/// A direct-marketing purpose, appended to the demo's purposes.
const NEWSLETTER: &str = "
  - id: newsletter
    name: Newsletter and offers
    legal_basis: legitimate_interests
    legitimate_interest: Telling customers about our own similar products
    direct_marketing: true
    subjects: [customer]
    categories: [user.contact.email]
    retention:
      keep_for: 2y
      from: collected
";

/// The test configuration of webhooks: plain http and the loopback address allowed,
/// named here (nothing allows them by default).
fn local_webhooks() -> lethe::config::WebhookConfig {
    lethe::config::WebhookConfig {
        allow_http_hosts: vec!["127.0.0.1".into()],
        allow_addresses: vec!["127.0.0.1".into()],
        ..Default::default()
    }
}

async fn start() -> Server {
    start_with(Options::default()).await
}

async fn start_with(options: Options) -> Server {
    let tmp = tempfile::tempdir().unwrap();
    demo(tmp.path(), &options).await;
    let mut config = common::testapp::config(tmp.path());
    let mail_dir = common::testapp::use_smtp(&mut config, "requests");
    config.approval = options
        .approval
        .iter()
        .map(|k| k.key())
        .collect::<Vec<_>>()
        .join(",");
    config.rate_limit = options.rate_limit;
    config.trusted_proxies = options.trusted_proxies.to_owned();
    config.webhooks = local_webhooks();
    let app = common::TestApp::start(
        &config,
        lethe::app::Options {
            run_requests: options.background,
            manual_webhooks: !options.background,
            // A test that moves the clock runs no lease: its own would look lapsed.
            jobs: options.background,
            worker_poll: options.worker_poll.unwrap_or(lethe::http::worker::POLL),
            webhook_poll: options.webhook_poll.unwrap_or(lethe::notify::webhook::POLL),
            ..Default::default()
        },
    )
    .await;
    let webhooks = app.webhooks.clone().unwrap();
    Server {
        app,
        app_db: tmp.path().join("app.db"),
        mail_dir,
        webhooks,
        _dir: tmp,
    }
}

/// The demo policies as `options` changes them, with the application database in `dir`
/// filled with synthetic people.
async fn demo(dir: &Path, options: &Options) -> Policy {
    let app = common::testapp::demo_app_db(dir, 20).await;
    common::testapp::demo_policies(dir, &app, |name, mut text| {
        if let Some(w) = &options.webhook {
            text = text.replace(
                "erasure_notice: { email: aws-privacy@example.net }",
                &format!("erasure_notice: {{ email: aws-privacy@example.net, webhook: \"{w}\" }}"),
            );
        }
        if let Some(start) = options
            .no_notice_for
            .and_then(|id| text.find(&format!("- id: {id}\n")))
        {
            // The processor's block, without its erasure_notice line.
            let rest = &text[start..];
            let block = rest[1..].find("- id:").map_or(rest.len(), |n| n + 1);
            if let Some(at) = rest[..block].find("    erasure_notice:") {
                let end = start + at + rest[at..].find('\n').map_or(rest.len() - at, |n| n + 1);
                text.replace_range(start + at..end, "");
            }
        }
        if options.marketing && name == "purposes.yaml" {
            text.push_str(NEWSLETTER);
        }
        text
    });
    Policy::load(&dir.join("policies"))
        .unwrap()
        .into_valid()
        .unwrap()
}

impl Server {
    /// A client posting forms as a browser does from the portal's own pages (with their
    /// `Origin`), not following redirects.
    fn browser(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::ORIGIN, self.base.parse().unwrap());
        reqwest::Client::builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// The verification code of request `id`, from the mail that was sent.
    async fn code(&self, id: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            for e in std::fs::read_dir(&self.mail_dir).into_iter().flatten() {
                let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
                if !text.contains(id) {
                    continue;
                }
                if let Some(code) = shown_code(&text) {
                    return code;
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
        self.execute_at(chrono::Utc::now()).await
    }

    async fn execute_at(&self, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
        self.service()
            .execute_next(
                &self.policy,
                &lethe::sources::db::Sources::default(),
                "test",
                now,
            )
            .await
            .unwrap()
    }

    /// Delivers the webhooks due at `now`, as the delivery task of `lethe serve` does.
    async fn deliver_webhooks(&self, now: chrono::DateTime<chrono::Utc>) -> usize {
        lethe::notify::webhook::deliver_due_at(&self.store, &self.webhooks, now)
            .await
            .unwrap()
            .delivered
    }

    /// The mail texts that mention `needle`.
    fn mails_with(&self, needle: &str) -> Vec<String> {
        std::fs::read_dir(&self.mail_dir)
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .filter(|t| t.contains(needle))
            .collect()
    }

    /// The secret of the download link in request `id`'s completion e-mail.
    async fn download_secret(&self, id: &str) -> String {
        let start = format!("/portal/requests/{id}/download?secret=");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            for text in self.mails_with(id) {
                let text = unqp(&text);
                if let Some(i) = text.find(&start) {
                    return text[i + start.len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                        .collect();
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no completion mail with a download link for {id}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    async fn status_of(&self, id: &str, token: &str) -> String {
        let v: Value = reqwest::Client::new()
            .get(format!("{}/v1/requests/{id}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["status"].as_str().unwrap_or_default().to_owned()
    }

    async fn token(&self, role: lethe::store::Role) -> String {
        self.store.create_admin_token(role).await.unwrap().1
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

/// The text of a message as sent: quoted-printable soft breaks and `=3D` undone.
fn unqp(raw: &str) -> String {
    raw.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

/// The code of a verification e-mail as the person reads it: two groups of five digits.
fn shown_code(mail: &str) -> Option<String> {
    let i = mail.find("verification code is ")? + 21;
    let code: String = mail[i..].chars().take(11).collect();
    let digits = code.chars().filter(char::is_ascii_digit).count();
    (digits == 10 && code.as_bytes().get(5) == Some(&b' ')).then_some(code)
}

/// The code and the link's secret of a verification e-mail.
fn code_and_link(mail: &str) -> Option<(String, String)> {
    let text = unqp(mail);
    let code = shown_code(&text)?;
    let j = text.find("/confirm?secret=")? + 16;
    let secret: String = text[j..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    Some((code, secret))
}

/// The request service alone on a fresh store at `url`, mailing `.eml` files.
struct Bare {
    url: SecretString,
    store: Store,
    audit: AuditLog,
    mailer: Arc<Mailer>,
    outbox: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Bare {
    async fn open(url: &SecretString) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (store, audit, _) = common::store_and_audit(url, tmp.path()).await;
        let outbox = tmp.path().join("outbox");
        let mailer = Arc::new(common::file_mailer(&outbox).with_outbox_key(audit.outbox_key()));
        Self {
            url: url.clone(),
            store,
            audit,
            mailer,
            outbox,
            _tmp: tmp,
        }
    }

    fn service(&self) -> lethe::requests::Service<'_> {
        lethe::requests::Service {
            store: &self.store,
            audit: &self.audit,
            mailer: &self.mailer,
            settings: lethe::requests::Settings::default(),
        }
    }

    /// The code and link secret e-mailed for request `id` (its only message).
    fn code_and_link(&self, id: &str) -> (String, String) {
        std::fs::read_dir(&self.outbox)
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .filter(|t| t.contains(id))
            .find_map(|t| code_and_link(&t))
            .unwrap_or_else(|| panic!("no verification mail for {id}"))
    }

    /// Subject keys, and subjects in the audit log's index.
    async fn subjects(&self) -> (i64, i64) {
        (
            self.scalar("SELECT count(*) FROM audit_keys WHERE kind = 'subject'")
                .await,
            self.scalar("SELECT count(*) FROM audit_subjects").await,
        )
    }

    async fn scalar(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }
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

    // The same request again is a request of its own, with its own token: the answer
    // does not tell that one was open.
    let (status, again) = post(
        &format!("{}/v1/requests", s.base),
        json!({ "type": "access", "identity": { "email": email.to_uppercase() } }).to_string(),
    )
    .await;
    assert_eq!(status, 201);
    assert_ne!(again["id"], id.as_str());
    assert!(again["token"].is_string());
    assert!(again.get("existing").is_none());
    // The metrics need an auditor's token.
    let metrics = format!("{}/metrics", s.base);
    let r = reqwest::get(&metrics).await.unwrap();
    assert_eq!(r.status(), 401);
    let (_, auditor) = s
        .store
        .create_admin_token(lethe::store::Role::Auditor)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let metrics = http
        .get(&metrics)
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("lethe_requests{type=\"access\",status=\"identity_pending\"} 2"),
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
    // Nothing before the worker ran: no package, no secret.
    assert_eq!(
        http.get(format!("{}/v1/requests/{id}/package", s.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        401
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
    // The request's token does not open the package: the completion e-mail's secret does.
    let r = http
        .get(format!("{}/v1/requests/{id}/package", s.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let secret = s.download_secret(&id).await;
    let r = http
        .get(format!("{}/v1/requests/{id}/package", s.base))
        .bearer_auth(&secret)
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
    // No secret opens nothing.
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
    // Never invoiced: the accounting law keeps nothing of this person, everything goes.
    assert_eq!(
        s.app_count("SELECT count(*) FROM invoices WHERE user_id = 5")
            .await,
        0,
        "the demo person was invoiced"
    );
    assert_eq!(status["status"], "completed");
    assert_eq!(
        s.app_count("SELECT count(*) FROM users WHERE id = 5").await,
        0
    );
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
    let token = created["token"].as_str().unwrap().to_owned();

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
    // The person reads the DPO's reasons on the status page, not only in the mail.
    assert_eq!(
        s.service()
            .status(&id, &token)
            .await
            .unwrap()
            .note
            .as_deref(),
        Some("the request covers many systems")
    );

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
    assert_eq!(
        s.service()
            .status(&id, &token)
            .await
            .unwrap()
            .note
            .as_deref(),
        Some("manifestly unfounded")
    );
    let page = reqwest::Client::new()
        .get(format!("{}/portal/requests/{id}", s.base))
        .header("cookie", format!("lethe_request={token}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("From our data protection officer") && page.contains("manifestly unfounded"),
        "{page}"
    );
}

/// Art. 12(3): "The controller shall inform the data subject of any such extension within
/// one month of receipt of the request". One day before the first deadline the DPO may still
/// extend; a day after it, the extension is refused, the deadline stays, and no mail goes out.
#[tokio::test]
async fn an_extension_after_the_first_month_is_refused() {
    let s = start().await;
    let (_, dpo) = s
        .store
        .create_admin_token(lethe::store::Role::Dpo)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let now = chrono::Utc::now();
    let mut ids = Vec::new();
    for received in [
        now - chrono::Duration::days(45),
        now.checked_sub_months(chrono::Months::new(1)).unwrap() + chrono::Duration::days(1),
    ] {
        let (_, created) = post(
            &format!("{}/v1/requests", s.base),
            json!({ "type": "access", "identity": { "email": unique_email() } }).to_string(),
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        let stamp = lethe::store::timestamp(received);
        let due = lethe::store::timestamp(lethe::requests::due_date(received));
        sqlx::query("UPDATE dsr_requests SET received_at = $1, due_at = $2 WHERE id = $3")
            .bind(&stamp)
            .bind(&due)
            .bind(&id)
            .execute(s.store.pool())
            .await
            .unwrap();
        ids.push((id, due));
    }
    let extend = json!({ "months": 1, "reason": "the request covers many systems" });
    let (late, late_due) = &ids[0];
    let r = http
        .post(format!("{}/v1/admin/requests/{late}/extend", s.base))
        .bearer_auth(&dpo)
        .json(&extend)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "extension_too_late", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Art. 12(3)"),
        "{v}"
    );
    let (due_at, extended): (String, Option<String>) =
        sqlx::query_as("SELECT due_at, extended_at FROM dsr_requests WHERE id = $1")
            .bind(late)
            .fetch_one(s.store.pool())
            .await
            .unwrap();
    assert_eq!((&due_at, extended), (late_due, None), "nothing changed");

    let (in_time, _) = &ids[1];
    let r = http
        .post(format!("{}/v1/admin/requests/{in_time}/extend", s.base))
        .bearer_auth(&dpo)
        .json(&extend)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Only the extension in time was mailed.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let mailed = |id: &str| {
        std::fs::read_dir(&s.mail_dir)
            .into_iter()
            .flatten()
            .filter(|e| {
                let m = std::fs::read_to_string(e.as_ref().unwrap().path()).unwrap_or_default();
                m.contains(id) && m.contains("more time needed")
            })
            .count()
    };
    assert_eq!(mailed(late), 0);
    assert_eq!(mailed(in_time), 1);
}

/// A webhook receiver: records each POST (headers, body); answers 500 to the first
/// `fail_first`, then 200.
/// What a receiver got: each POST's headers and body.
type Received = Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

struct Receiver {
    url: String,
    got: Received,
}

async fn receiver(fail_first: usize) -> Receiver {
    use axum::http::{HeaderMap, StatusCode};
    let got: Received = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: axum::body::Bytes| {
        let seen = seen.clone();
        async move {
            let mut g = seen.lock().unwrap();
            g.push((headers, body.to_vec()));
            if g.len() <= fail_first {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, got }
}

impl Receiver {
    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    fn last(&self) -> (axum::http::HeaderMap, Vec<u8>) {
        self.got.lock().unwrap().last().cloned().unwrap()
    }
}

/// A receiver that takes 30 s to answer; counts the POSTs that reached it.
async fn slow_receiver() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            axum::http::StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

impl Server {
    /// Waits up to `secs` for request `id` to reach one of `statuses`; how long it took.
    async fn until(
        &self,
        id: &str,
        token: &str,
        statuses: &[&str],
        secs: u64,
    ) -> std::time::Duration {
        let started = std::time::Instant::now();
        loop {
            let status = self.status_of(id, token).await;
            if statuses.contains(&status.as_str()) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(secs),
                "{id} still {status} after {secs} s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// The tester's case: a processor endpoint that answers after 30 s. Its erasure notice
/// is in flight while the next person's access request runs and completes at once.
#[tokio::test]
async fn a_slow_processor_endpoint_never_holds_up_the_next_request() {
    let (hook, hits) = slow_receiver().await;
    let s = start_with(Options {
        webhook: Some(format!("{hook}/privacy/erasure")),
        background: true,
        ..Options::default()
    })
    .await;
    let (erasure, token) = s.verified("erasure", "person3@example.org").await;
    s.until(&erasure, &token, &["partially_completed", "completed"], 20)
        .await;
    // The notice is being delivered: the receiver holds the connection open.
    let started = std::time::Instant::now();
    while hits.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (access, token) = s.verified("access", "person2@example.org").await;
    let took = s.until(&access, &token, &["completed"], 60).await;
    eprintln!("access request completed {took:?} after its verification, beside a 30 s webhook");
    // The worker runs every 2 s; a webhook attempt would take its whole 10 s timeout.
    assert!(
        took < std::time::Duration::from_secs(5),
        "the access request waited {took:?}"
    );
}

async fn app_rows(s: &Server, email: &str) -> i64 {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", s.app_db.display()))
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM comments c JOIN users u ON u.id = c.user_id WHERE u.email = $1) \
         + (SELECT count(*) FROM page_views p JOIN users u ON u.id = p.user_id WHERE u.email = $1) \
         + (SELECT count(*) FROM users WHERE email = $1)",
    )
    .bind(email)
    .fetch_one(&mut c)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_erasure_notifies_each_processor_by_its_channel_until_acknowledged() {
    let hook = receiver(1).await;
    let s = start_with(Options {
        webhook: Some(format!("{}/privacy/erasure", hook.url)),
        no_notice_for: Some("google-analytics"),
        ..Options::default()
    })
    .await;
    let email = "person3@example.org";
    let (id, token) = s.verified("erasure", email).await;
    let now = chrono::Utc::now();
    assert_eq!(s.execute_at(now).await.as_deref(), Some(id.as_str()));
    assert_eq!(s.status_of(&id, &token).await, "partially_completed");
    // The subject reads what is kept, why and until when.
    let view: Value = reqwest::Client::new()
        .get(format!("{}/v1/requests/{id}", s.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kept = view["kept"].as_array().unwrap();
    assert!(
        kept.iter().any(|k| k["article"] == "Art. 17(3)(b)"
            && k["collection"] == "invoices"
            && k["until"].as_str().is_some_and(|u| u.len() == 10)),
        "{view}"
    );
    let page = reqwest::Client::new()
        .get(format!("{}/portal/requests/{id}", s.base))
        .header("cookie", format!("lethe_request={token}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("What we keep, and why") && page.contains("Art. 17(3)(b) GDPR"));
    // The first POST is refused: nothing acknowledged, retried only after the back-off.
    assert_eq!(s.deliver_webhooks(now).await, 0);
    assert_eq!(hook.count(), 1);
    assert_eq!(s.deliver_webhooks(now).await, 0);
    assert_eq!(hook.count(), 1, "retried before its time");
    assert_eq!(
        s.deliver_webhooks(now + chrono::Duration::seconds(31))
            .await,
        1
    );
    assert_eq!(hook.count(), 2);
    // Acknowledged once: never sent again.
    assert_eq!(
        s.deliver_webhooks(now + chrono::Duration::hours(7)).await,
        0
    );
    assert_eq!(hook.count(), 2);
    let (headers, body) = hook.last();
    let ts = headers["x-lethe-timestamp"].to_str().unwrap().to_owned();
    let sig = headers["x-lethe-signature"].to_str().unwrap().to_owned();
    let secret = s.audit.webhook_secret("aws").await.unwrap().to_hex();
    assert!(lethe::notify::webhook::verify_hmac(
        &secret, &ts, &body, &sig
    ));
    assert!(!lethe::notify::webhook::verify_hmac(
        &secret,
        &ts,
        &[body.as_slice(), b" "].concat(),
        &sig
    ));
    let notice: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(notice["type"], "erasure_notice");
    assert_eq!(notice["processor"], "aws");
    assert_eq!(notice["request_id"], id.as_str());
    assert_eq!(notice["identities"][0]["value"], email);
    // What the recipient received and was erased, not the whole person: the page views
    // (analytics); the billing data it hosts only where billing data was erased.
    let purposes = notice["erased"]["purposes"].as_array().unwrap();
    assert!(
        purposes.contains(&json!("Visitors and cookies")),
        "{notice}"
    );
    let categories = notice["erased"]["categories"].as_array().unwrap();
    assert!(
        categories.contains(&json!("user.device.ip_address")),
        "{notice}"
    );
    // Delivered notices no longer hold the person's identity.
    let left: Option<String> = sqlx::query_scalar(
        "SELECT body FROM webhook_outbox WHERE request_id = $1 AND kind = 'erasure_notice'",
    )
    .bind(&id)
    .fetch_one(s.store.pool())
    .await
    .unwrap();
    assert_eq!(left, None);
    // The hosting processor also got the notice by e-mail. The billing recipients are
    // told only when billing data was erased: invoices past the accounting law's 8 years
    // (the account itself is kept while a younger invoice is).
    let expired = s
        .app_count(
            "SELECT count(*) FROM invoices WHERE user_id = 3 AND datetime(issued_at) < datetime('now', '-8 years')",
        )
        .await;
    let kept = s
        .app_count(
            "SELECT count(*) FROM invoices WHERE user_id = 3 AND datetime(issued_at) >= datetime('now', '-8 years')",
        )
        .await;
    assert!(kept > 0, "the demo person has no invoice the law keeps");
    let mails = s.mails_with("Art. 19");
    assert!(
        mails
            .iter()
            .any(|m| m.contains("aws-privacy@example.net") && m.contains(&id) && m.contains(email)),
        "no erasure notice by e-mail"
    );
    for to in ["legal@proton.example.net", "office@accounting.example.net"] {
        assert_eq!(
            mails.iter().any(|m| m.contains(to) && m.contains(&id)),
            expired > 0,
            "{to}: told of {expired} expired invoice(s)"
        );
    }
    let full = s.service().full(&id).await.unwrap();
    let told = full.result.unwrap()["processors_notified"].clone();
    let expected = if expired > 0 {
        json!(["accountant", "aws", "payments", "protonmail"])
    } else {
        json!(["aws"])
    };
    assert_eq!(told, expected);
    // The e-mail notice names what was erased.
    let aws = mails
        .iter()
        .map(|m| unqp(m))
        .find(|m| m.contains("aws-privacy@example.net") && m.contains(&id))
        .unwrap();
    assert!(
        aws.contains("for Visitors and cookies") && aws.contains("IP address"),
        "{aws}"
    );
    assert!(aws.contains("is not part of this notice"), "{aws}");
    // A recipient with no channel (the analytics provider) is a task for the DPO, with
    // what to tell it; the person reads who was told.
    let result = s.service().full(&id).await.unwrap().result.unwrap();
    let by_hand: Vec<&str> = result["to_tell_by_hand"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["processor"].as_str().unwrap())
        .collect();
    assert_eq!(by_hand, ["google-analytics"]);
    assert!(
        s.mails_with(&id)
            .iter()
            .map(|m| unqp(m))
            .any(|m| m.contains("dpo@example.com")
                && m.contains("by hand")
                && m.contains("Google Ireland Limited")
                && m.contains("IP address")),
        "the DPO was not given the analytics provider to tell"
    );
    let view = s.service().status(&id, &token).await.unwrap();
    assert!(
        view.told.iter().any(|t| t.contains("Amazon Web Services")),
        "{view:?}"
    );
    assert!(!view.told.iter().any(|t| t.contains("Google")), "{view:?}");
    // What was kept, why and until when: the same lines in the e-mail as on the page.
    assert!(!view.kept.is_empty());
    let done: Vec<String> = s
        .mails_with(&id)
        .iter()
        .map(|m| unqp(m))
        .filter(|m| m.contains("except what we must keep"))
        .collect();
    assert_eq!(done.len(), 1);
    for k in &view.kept {
        let line = format!(
            "- {} ({}, {} record(s)): {} ({} GDPR)",
            k.field, k.collection, k.rows, k.reason, k.article
        );
        assert!(done[0].contains(&line), "{line} not in {}", done[0]);
    }
}

#[tokio::test]
async fn a_restriction_holds_the_person_until_the_dpo_lifts_it() {
    let s = start().await;
    let (dpo, auditor) = (
        s.token(lethe::store::Role::Dpo).await,
        s.token(lethe::store::Role::Auditor).await,
    );
    let http = reqwest::Client::new();
    let email = "person4@example.org";
    let before = app_rows(&s, email).await;
    assert!(before > 1);
    let (rid, rtoken) = s.verified("restriction", email).await;
    // A task for the DPO, not for the worker.
    assert_eq!(s.status_of(&rid, &rtoken).await, "in_progress");
    assert_eq!(s.execute().await, None);
    assert!(
        s.mails_with(&rid)
            .iter()
            .any(|m| m.contains("needs you") && m.contains("Art. 18")),
        "the DPO was not told"
    );
    let full: Value = http
        .get(format!("{}/v1/admin/requests/{rid}", s.base))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(full["restriction_in_force"], true);
    assert_eq!(full["identity"], format!("email={email}"));
    // An erasure meanwhile erases nothing and claims no exemption: it waits for the DPO,
    // and the person and the DPO are told why.
    let (eid, etoken) = s.verified("erasure", email).await;
    assert_eq!(s.execute().await.as_deref(), Some(eid.as_str()));
    assert_eq!(s.status_of(&eid, &etoken).await, "awaiting_approval");
    assert_eq!(
        app_rows(&s, email).await,
        before,
        "a restricted person's data was erased"
    );
    assert_eq!(s.execute().await, None, "a held erasure does not run again");
    let result = s.service().full(&eid).await.unwrap().result.unwrap();
    assert_eq!(result["waiting_for"], "restriction", "{result}");
    assert_eq!(result["restriction"], rid.as_str(), "{result}");
    let view = s.service().status(&eid, &etoken).await.unwrap();
    assert!(view.held.is_some_and(|h| h.contains("Art. 18")), "{view:?}");
    let told: Vec<String> = s
        .mails_with(&eid)
        .iter()
        .map(|m| unqp(m))
        .filter(|m| m.contains("waits: you asked us to restrict"))
        .collect();
    assert_eq!(
        told.len(),
        1,
        "the person was not told why the erasure waits"
    );
    assert!(!told[0].contains("We erased"), "{}", told[0]);
    assert!(
        s.mails_with(&eid)
            .iter()
            .map(|m| unqp(m))
            .any(|m| m.contains("needs you") && m.contains("Art. 18(3)")),
        "the DPO was not told"
    );
    // Lifting needs a DPO and a note; the person is told.
    let lift = |token: String, body: Value| {
        http.post(format!("{}/v1/admin/requests/{rid}/lift", s.base))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    assert_eq!(
        lift(auditor.clone(), json!({ "note": "x" }))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        lift(dpo.clone(), json!({ "note": " " }))
            .await
            .unwrap()
            .status(),
        422
    );
    let lifted = lift(
        dpo.clone(),
        json!({ "note": "the accuracy of your address is confirmed" }),
    )
    .await
    .unwrap();
    assert_eq!(lifted.status(), 200);
    let lifted: Value = lifted.json().await.unwrap();
    assert_eq!(lifted["restriction_in_force"], false);
    assert!(
        s.mails_with(&rid)
            .iter()
            .any(|m| m.contains("restriction lifted") || m.contains("is lifted")),
        "the person was not told before the lifting"
    );
    assert!(lethe::dsr::restrictions(&s.audit).await.unwrap().is_empty());
    // Told first (Art. 18(3)): the message went out before the restriction ended.
    let (sent, lifted): (String, String) = sqlx::query_as(
        "SELECT m.sent_at, r.lifted_at FROM subject_restrictions r JOIN mail_outbox m ON m.id = r.lift_mail_id WHERE r.request_id = $1",
    )
    .bind(&rid)
    .fetch_one(s.store.pool())
    .await
    .unwrap();
    assert!(sent <= lifted, "sent {sent}, lifted {lifted}");
    // The erasure that waited is back in the queue.
    assert_eq!(s.status_of(&eid, &etoken).await, "verified");
    // Lifting twice finds nothing to lift.
    assert_eq!(
        lift(dpo.clone(), json!({ "note": "again" }))
            .await
            .unwrap()
            .status(),
        404
    );
    // The DPO completes the task with a note.
    let done = http
        .post(format!("{}/v1/admin/requests/{rid}/complete", s.base))
        .bearer_auth(&dpo)
        .json(&json!({ "note": "restriction applied from receipt until the check ended" }))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    assert_eq!(s.status_of(&rid, &rtoken).await, "completed");
    // The erasure that waited runs now.
    assert_eq!(s.execute().await.as_deref(), Some(eid.as_str()));
    assert!(matches!(
        s.status_of(&eid, &etoken).await.as_str(),
        "completed" | "partially_completed"
    ));
    assert!(
        app_rows(&s, email).await < before,
        "the erasure did not run"
    );
    // An access request is no task.
    let (aid, _) = s.verified("access", email).await;
    let not_task = http
        .post(format!("{}/v1/admin/requests/{aid}/complete", s.base))
        .bearer_auth(&dpo)
        .json(&json!({ "note": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(not_task.status(), 409);
}

/// Art. 21(3): "Where the data subject objects to processing for direct marketing
/// purposes, the personal data shall no longer be processed for such purposes." No
/// balancing, no DPO decision: the objection is carried out when the worker runs it, the
/// person is on the suppression list (once, however often they object), every
/// direct-marketing purpose is listed as stopped, and the DPO is told.
#[tokio::test]
async fn an_objection_to_direct_marketing_takes_effect_at_once() {
    let s = start_with(Options {
        marketing: true,
        ..Options::default()
    })
    .await;
    let dpo = s.token(lethe::store::Role::Dpo).await;
    let auditor = s.token(lethe::store::Role::Auditor).await;
    let http = reqwest::Client::new();
    let email = "person6@example.org";
    let (id, token) = s.verified("marketing_objection", email).await;
    // No task for the DPO: the worker carries it out.
    assert_eq!(s.status_of(&id, &token).await, "verified");
    assert_eq!(s.execute().await.as_deref(), Some(id.as_str()));
    assert_eq!(s.status_of(&id, &token).await, "completed");
    let view = s.service().status(&id, &token).await.unwrap();
    assert_eq!(view.stopped, Some(vec!["Newsletter and offers".to_owned()]));
    // The person is told, in words; the DPO is told, for information.
    let told: Vec<String> = s.mails_with(&id).iter().map(|m| unqp(m)).collect();
    assert!(
        told.iter().any(
            |m| m.contains("no longer use your data for direct marketing")
                && m.contains("Art. 21(3)")
        ),
        "{told:?}"
    );
    assert!(
        told.iter()
            .any(|m| m.contains("dpo@") && m.contains("Newsletter and offers")),
        "the DPO was not told: {told:?}"
    );
    // A second objection adds nobody twice.
    let (again, _) = s.verified("marketing_objection", email).await;
    assert_eq!(s.execute().await.as_deref(), Some(again.as_str()));
    let list = |token: String| {
        http.get(format!("{}/v1/admin/suppression", s.base))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(list(auditor).await.unwrap().status(), 403);
    let got: Value = list(dpo.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(got.as_array().unwrap().len(), 1, "once on the list: {got}");
    assert_eq!(got[0]["value"], email);
    assert_eq!(got[0]["request_id"], id.as_str());
    // The list is sealed at rest: the address is nowhere in clear in the store.
    let clear: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM suppression WHERE CAST(sealed AS TEXT) LIKE '%person6%' OR lookup LIKE '%person6%'",
    )
    .fetch_one(s.store.pool())
    .await
    .unwrap();
    assert_eq!(clear, 0);
    // It outlives the person's erasure: the objection is still honoured.
    let (eid, _) = s.verified("erasure", email).await;
    assert_eq!(s.execute().await.as_deref(), Some(eid.as_str()));
    let after = lethe::requests::suppression_list(&s.store, &s.audit)
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].value, email);
}

#[tokio::test]
async fn a_type_needing_approval_waits_for_the_dpo() {
    let s = start_with(Options {
        approval: vec![lethe::requests::Kind::Erasure],
        ..Options::default()
    })
    .await;
    let (dpo, auditor) = (
        s.token(lethe::store::Role::Dpo).await,
        s.token(lethe::store::Role::Auditor).await,
    );
    let http = reqwest::Client::new();
    let email = "person8@example.org";
    let (id, token) = s.verified("erasure", email).await;
    assert_eq!(s.status_of(&id, &token).await, "awaiting_approval");
    assert_eq!(s.execute().await, None, "ran without approval");
    let approve = |t: String| {
        http.post(format!("{}/v1/admin/requests/{id}/approve", s.base))
            .bearer_auth(t)
            .send()
    };
    assert_eq!(approve(auditor).await.unwrap().status(), 403);
    assert_eq!(approve("lt_nope_x".into()).await.unwrap().status(), 401);
    assert_eq!(approve(dpo.clone()).await.unwrap().status(), 200);
    assert_eq!(s.status_of(&id, &token).await, "verified");
    let again = approve(dpo).await.unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(s.execute().await.as_deref(), Some(id.as_str()));
    assert_eq!(s.status_of(&id, &token).await, "partially_completed");
    // Access needs no approval here.
    let (aid, atoken) = s.verified("access", email).await;
    assert_eq!(s.status_of(&aid, &atoken).await, "verified");
}

#[tokio::test]
async fn a_failing_request_is_retried_with_back_off_then_marked_failed() {
    use sqlx::Connection;
    let s = start().await;
    let email = "person9@example.org";
    let (id, token) = s.verified("access", email).await;
    // The application database loses a table the policy maps: every execution fails.
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", s.app_db.display()))
        .await
        .unwrap();
    sqlx::query("DROP TABLE comments")
        .execute(&mut c)
        .await
        .unwrap();
    let mut now = chrono::Utc::now();
    for attempt in 1..=lethe::requests::MAX_EXECUTIONS {
        assert_eq!(
            s.execute_at(now).await.as_deref(),
            Some(id.as_str()),
            "attempt {attempt}"
        );
        if attempt < lethe::requests::MAX_EXECUTIONS {
            assert_eq!(s.status_of(&id, &token).await, "verified");
            // Not again before the back-off has passed.
            assert_eq!(s.execute_at(now).await, None);
            now += lethe::notify::webhook::backoff(attempt - 1) + chrono::Duration::seconds(1);
        }
    }
    assert_eq!(s.status_of(&id, &token).await, "failed");
    assert_eq!(s.execute_at(now + chrono::Duration::days(1)).await, None);
    let full = s.service().full(&id).await.unwrap();
    assert_eq!(full.attempts, lethe::requests::MAX_EXECUTIONS);
    // The subject is told once, at the end, without any cause from inside.
    let told = s.mails_with(&format!("{id}: delayed"));
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(!told[0].contains("comments"), "{}", told[0]);

    // A failed request stays on the DPO's list until they act; a retry runs it afresh.
    let open = s.service().list_open(None, now).await.unwrap();
    assert!(
        open.iter().any(|r| r.id == id && r.status == "failed"),
        "{open:?}"
    );
    let svc = s.service();
    let dpo = || lethe::audit::Actor::Admin("dpo".into());
    svc.retry(&id, dpo(), now).await.unwrap();
    assert_eq!(s.status_of(&id, &token).await, "verified");
    assert_eq!(svc.full(&id).await.unwrap().attempts, 0);
    assert!(matches!(
        svc.retry(&id, dpo(), now).await,
        Err(lethe::requests::RequestError::WrongState { .. })
    ));
    assert_eq!(s.execute_at(now).await.as_deref(), Some(id.as_str()));
}

/// The Ed25519 key in a PEM public key (SubjectPublicKeyInfo: the key is the last 32 bytes).
fn pem_key(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    der[der.len() - 32..].to_vec()
}

fn signed_by(key: &[u8], headers: &reqwest::header::HeaderMap, body: &[u8]) -> bool {
    use base64::Engine;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(headers["x-opendsr-signature"].to_str().unwrap())
        .unwrap();
    lethe::crypto::ed25519_verify(key, body, &sig)
}

#[tokio::test]
async fn opendsr_requests_follow_the_specification() {
    let hook = receiver(0).await;
    let s = start().await;
    let dpo = s.token(lethe::store::Role::Dpo).await;
    let http = reqwest::Client::new();
    let url = format!("{}/opendsr/v1/requests", s.base);

    let discovery: Value = http
        .get(format!("{}/opendsr/v1/discovery", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        discovery["supported_subject_request_types"],
        json!(["access", "portability", "erasure"])
    );
    assert_eq!(
        discovery["supported_identities"][0]["identity_type"],
        "email"
    );
    let pem = http
        .get(format!("{}/opendsr/v1/public-key", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let key = pem_key(&pem);

    // The example of the specification's README, with our callback receiver.
    let external = "a7551968-d5d6-44b2-9831-815ac9017798";
    let example = format!(
        r#"{{
 "subject_request_id":"{external}",
 "regulation": "gdpr",
 "subject_request_type":"erasure",
 "submitted_time":"2018-10-02T15:00:00Z",
 "subject_identities":[
   {{
      "identity_type":"email",
      "identity_value":"johndoe@example.com",
      "identity_format":"raw"
   }}
 ],
 "api_version":"2.0",
 "status_callback_urls":[
   "{}/opendsr/callbacks"
 ]
}}"#,
        hook.url
    );
    let send = |body: String, token: Option<&str>| {
        let mut r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    // Without a token: 401 in the specification's error format, nothing stored.
    let r = send(example.clone(), None).await.unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], 401);
    assert_eq!(s.requests().await, 0);

    let r = send(example.clone(), Some(&dpo)).await.unwrap();
    assert_eq!(r.status(), 201);
    let headers = r.headers().clone();
    let body = r.bytes().await.unwrap();
    assert!(
        signed_by(&key, &headers, &body),
        "the response signature does not verify"
    );
    let created: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(created["subject_request_id"], external);
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(created["encoded_request"].as_str().unwrap())
            .unwrap(),
        example.as_bytes()
    );
    // One month from the person's request, not from its arrival here.
    assert_eq!(
        &created["expected_completion_time"].as_str().unwrap()[..10],
        "2018-11-02"
    );
    // The same request again is the same request.
    assert_eq!(
        send(example.clone(), Some(&dpo)).await.unwrap().status(),
        201
    );
    assert_eq!(s.requests().await, 1);

    // Malformed: a trailing comma; a missing regulation; both 400 in the spec's format.
    let trailing = example.replacen("\"api_version\":\"2.0\",", "\"api_version\":\"2.0\",,", 1);
    let no_regulation = example.replacen("\"regulation\": \"gdpr\",", "", 1);
    for (bad, what) in [
        (trailing, "not valid JSON"),
        (no_regulation, "regulation field is required"),
        (
            example.replace("erasure", "deletion"),
            "subject_request_type",
        ),
        (example.replace(external, "not-a-uuid"), "UUID"),
        (
            example.replace("\"2018-10-02T15:00:00Z\"", "\"yesterday\""),
            "RFC 3339",
        ),
    ] {
        let r = send(bad, Some(&dpo)).await.unwrap();
        assert_eq!(r.status(), 400);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], 400, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(what),
            "{e}"
        );
        assert_eq!(e["error"]["errors"][0]["domain"], "Validation", "{e}");
    }
    assert_eq!(s.requests().await, 1);
    // Callback URLs lethe will not call: 422, nothing stored.
    for (bad, what) in [
        ("ftp://example.com/cb", "only https"),
        ("http://callbacks.example.com/cb", "only https"),
        ("https://169.254.169.254/latest/meta-data", "cloud metadata"),
        ("https://10.1.2.3/cb", "a private address"),
        ("https://[::1]/cb", "a loopback address"),
    ] {
        let body = example
            .replace(external, "0d9e6c2a-5b1f-4c3e-8a7d-6f5e4d3c2b1a")
            .replace(&format!("{}/opendsr/callbacks", hook.url), bad);
        let r = send(body, Some(&dpo)).await.unwrap();
        assert_eq!(r.status(), 422, "{bad}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], 422, "{e}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("status_callback_urls[0]: ") && message.contains(what),
            "{e}"
        );
    }
    assert_eq!(s.requests().await, 1);

    let status = |id: &str| http.get(format!("{url}/{id}")).bearer_auth(&dpo).send();
    let r = status(external).await.unwrap();
    let headers = r.headers().clone();
    let body = r.bytes().await.unwrap();
    assert!(signed_by(&key, &headers, &body));
    let st: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(st["request_status"], "pending");
    assert_eq!(
        status("00000000-0000-4000-8000-000000000000")
            .await
            .unwrap()
            .status(),
        404
    );

    // The status callback arrives, signed.
    assert_eq!(s.deliver_webhooks(chrono::Utc::now()).await, 1);
    let (h, b) = hook.last();
    let cb: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(cb["subject_request_id"], external);
    assert_eq!(cb["request_status"], "pending");
    let sig = base64::engine::general_purpose::STANDARD
        .decode(h["x-opendsr-signature"].to_str().unwrap())
        .unwrap();
    assert!(lethe::crypto::ed25519_verify(&key, &b, &sig));

    // Cancelled while pending: 202, then the status says so, and the callback follows.
    let r = http
        .delete(format!("{url}/{external}"))
        .bearer_auth(&dpo)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let st: Value = status(external).await.unwrap().json().await.unwrap();
    assert_eq!(st["request_status"], "cancelled");
    assert_eq!(s.execute().await, None, "a cancelled request ran");
    assert_eq!(s.deliver_webhooks(chrono::Utc::now()).await, 1);
    let cb: Value = serde_json::from_slice(&hook.last().1).unwrap();
    assert_eq!(cb["request_status"], "cancelled");
    // Too late to cancel twice.
    let r = http
        .delete(format!("{url}/{external}"))
        .bearer_auth(&dpo)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // An access request runs and ends `completed` with a count.
    let access = example
        .replace(external, "3f0e4b0c-1d2e-4f5a-9b8c-7d6e5f4a3b2c")
        .replace("erasure", "access")
        .replace("johndoe@example.com", "person2@example.org");
    assert_eq!(send(access, Some(&dpo)).await.unwrap().status(), 201);
    assert!(s.execute().await.is_some());
    let st: Value = status("3f0e4b0c-1d2e-4f5a-9b8c-7d6e5f4a3b2c")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["request_status"], "completed");
    assert!(st["results_count"].as_u64().unwrap() > 0, "{st}");
}

/// The request id and token a portal answer gives the browser, in its cookie (checked to
/// be HttpOnly, SameSite=Strict and bound to the request's pages).
fn portal_cookie(r: &reqwest::Response) -> (String, String) {
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; HttpOnly"), "{cookie}");
    assert!(cookie.contains("; SameSite=Strict"), "{cookie}");
    let token = between(cookie, "lethe_request=", ';').to_owned();
    let id = between(cookie, "Path=/portal/requests/", ';').to_owned();
    (id, token)
}

/// The text between `start` and `end` in a page.
fn between<'a>(html: &'a str, start: &str, end: char) -> &'a str {
    let i = html
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in {html}"))
        + start.len();
    let rest = &html[i..];
    &rest[..rest.find(end).unwrap()]
}

#[tokio::test]
async fn the_portal_works_without_javascript() {
    let s = start().await;
    let http = s.browser();
    let home = http.get(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(home.status(), 200);
    assert!(
        home.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = home.text().await.unwrap();
    assert!(!html.contains("<script"));
    assert!(html.contains("<label for=\"email\">"));
    for t in [
        "access",
        "portability",
        "erasure",
        "rectification",
        "restriction",
        "objection",
    ] {
        assert!(
            html.contains(&format!("<label for=\"type-{t}\"")),
            "no label for {t}"
        );
    }
    // An invalid address: the form again, with the error announced and the choice kept.
    let r = http
        .post(format!("{}/portal/requests", s.base))
        .form(&[("type", "access"), ("email", "not-an-address")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(html.contains("role=\"alert\""));
    assert!(html.contains("value=\"access\" style=\"width:auto\" checked"));
    assert_eq!(s.requests().await, 0);

    let r = http
        .post(format!("{}/portal/requests", s.base))
        .form(&[
            ("type", "access"),
            ("email", "person6@example.org"),
            ("details", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (id, token) = portal_cookie(&r);
    let cookie = format!("lethe_request={token}");
    let html = r.text().await.unwrap();
    assert!(html.contains(&format!("/portal/requests/{id}\"")), "{html}");
    assert!(!html.contains(&token), "the token is in the page: {html}");
    let verify = format!("{}/portal/requests/{id}/verify", s.base);
    let r = http
        .post(&verify)
        .header("cookie", &cookie)
        .form(&[("code", "000000x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("attempt(s) left"));
    // A browser without the request's token is turned away before any code is tried.
    for other in ["lethe_request=0000", "other=1"] {
        let r = http
            .post(&verify)
            .header("cookie", other)
            .form(&[("code", "123456")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let code = s.code(&id).await;
    let r = http
        .post(&verify)
        .header("cookie", &cookie)
        .form(&[("code", code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, format!("/portal/requests/{id}"));
    let r = http
        .get(format!("{}{location}", s.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    let page = r.text().await.unwrap();
    assert!(
        page.contains("confirmed; we are preparing the answer"),
        "{page}"
    );
    assert!(page.contains("Withdraw this request"));
    assert_eq!(s.execute().await.as_deref(), Some(id.as_str()));
    let page = http
        .get(format!("{}{location}", s.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(">completed<"), "{page}");
    assert!(!page.contains("token"), "{page}");
    // The page points to the e-mail's link; its cookie downloads nothing.
    assert!(page.contains("with the link in the e-mail"), "{page}");
    assert!(!page.contains("/package"), "{page}");
    for (method, route) in [
        (reqwest::Method::GET, "package"),
        (reqwest::Method::GET, "download"),
        (reqwest::Method::POST, "download"),
    ] {
        let r = http
            .request(
                method.clone(),
                format!("{}/portal/requests/{id}/{route}", s.base),
            )
            .header("cookie", &cookie)
            .form(&[("secret", "")])
            .send()
            .await
            .unwrap();
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            !ct.starts_with("application/zip"),
            "{method} {route} with the cookie: {ct}"
        );
    }
    let secret = s.download_secret(&id).await;
    let zip = http
        .post(format!("{}/portal/requests/{id}/download", s.base))
        .form(&[("secret", secret.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(zip.status(), 200);
    assert_eq!(zip.headers()["content-type"], "application/zip");
    // Another token opens nothing.
    let r = http
        .get(format!("{}/portal/requests/{id}", s.base))
        .header("cookie", "lethe_request=0000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("does not hold this request")
    );
    // A link of an earlier version, with the token in the address: the token moves to
    // the cookie and the browser to the address without it.
    let r = http
        .get(format!("{}/portal/requests/{id}?token={token}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        format!("/portal/requests/{id}").as_str()
    );
    assert_eq!(portal_cookie(&r), (id.clone(), token.clone()));

    // A second request is withdrawn from its page.
    let r = http
        .post(format!("{}/portal/requests", s.base))
        .form(&[("type", "erasure"), ("email", "person6@example.org")])
        .send()
        .await
        .unwrap();
    let (id2, token2) = portal_cookie(&r);
    let r = http
        .post(format!("{}/portal/requests/{id2}/cancel", s.base))
        .header("cookie", format!("lethe_request={token2}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(s.status_of(&id2, &token2).await, "cancelled");
}

/// A form on another site cannot post into a person's portal session: every portal POST
/// must come from the portal's own origin (Origin, else Referer), or gets 403 and a page
/// saying why, changing nothing.
#[tokio::test]
async fn portal_forms_are_accepted_only_from_the_portals_own_pages() {
    let s = start().await;
    let home = reqwest::get(format!("{}/", s.base)).await.unwrap();
    assert_eq!(home.headers()["referrer-policy"], "same-origin");
    let form = [("type", "access"), ("email", "person7@example.org")];
    let submit = format!("{}/portal/requests", s.base);
    let plain = reqwest::Client::new();
    let forbidden = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 403);
        let page = r.text().await.unwrap();
        assert!(page.contains("not sent from this site"), "{page}");
    };
    let hostile = plain
        .post(&submit)
        .header("origin", "https://evil.example.net")
        .form(&form);
    forbidden(hostile.send().await.unwrap()).await;
    // An origin only looking like ours, another port, nothing at all, or an opaque one.
    let port = s.base.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    for origin in [
        format!("{}.evil.example.net", s.base),
        format!("http://127.0.0.1:{}", port + 1),
        "null".to_owned(),
    ] {
        let r = plain.post(&submit).header("origin", origin).form(&form);
        forbidden(r.send().await.unwrap()).await;
    }
    forbidden(plain.post(&submit).form(&form).send().await.unwrap()).await;
    let r = plain
        .post(&submit)
        .header("referer", "https://evil.example.net/form.html")
        .form(&form);
    forbidden(r.send().await.unwrap()).await;
    assert_eq!(s.requests().await, 0);
    // Every portal form is guarded, not just the first.
    for path in ["r_x/verify", "r_x/confirm", "r_x/cancel", "r_x/code"] {
        let r = plain
            .post(format!("{submit}/{path}"))
            .header("origin", "https://evil.example.net")
            .form(&[("token", "t"), ("code", "1"), ("secret", "s")]);
        forbidden(r.send().await.unwrap()).await;
    }
    // From the portal's own page: the Origin, or a Referer on this site.
    let r = s.browser().post(&submit).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let r = plain
        .post(&submit)
        .header("referer", format!("{}/", s.base))
        .form(&form);
    assert_eq!(r.send().await.unwrap().status(), 201);
    assert_eq!(s.requests().await, 2);
}

#[tokio::test]
async fn public_routes_are_limited_per_address() {
    let s = start_with(Options {
        rate_limit: 3,
        ..Options::default()
    })
    .await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let r = http
            .get(format!("{}/v1/requests/r_x?token=y", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = http
        .post(format!("{}/v1/requests", s.base))
        .json(&json!({ "type": "access", "identity": { "email": unique_email() } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "rate_limited");
    assert_eq!(s.requests().await, 0);
    // Operations routes are not limited.
    for _ in 0..5 {
        let r = http
            .get(format!("{}/healthz", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Nor is OpenDSR, which a controller system calls with its token for every request
    // it hands over and every status it polls, from one address.
    let dpo = s.token(lethe::store::Role::Dpo).await;
    for n in 0..5 {
        let r = http
            .post(format!("{}/opendsr/v1/requests", s.base))
            .bearer_auth(&dpo)
            .json(&json!({
                "subject_request_id": format!("00000000-0000-4000-8000-{n:012}"),
                "regulation": "gdpr",
                "subject_request_type": "access",
                "submitted_time": "2026-12-01T10:00:00Z",
                "api_version": "2.0",
                "subject_identities": [{ "identity_type": "email", "identity_value": unique_email(), "identity_format": "raw" }],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
}

/// Behind a trusted proxy each client is limited by the address the proxy forwards; a
/// client talking directly cannot escape its limit by making up `X-Forwarded-For`; IPv6
/// clients in one /64 share a limit.
#[tokio::test]
async fn the_limit_follows_the_client_behind_a_trusted_proxy_only() {
    let status = async |base: &str, forwarded: &str| {
        let r = reqwest::Client::new()
            .get(format!("{base}/v1/requests/r_x?token=y"))
            .header("x-forwarded-for", forwarded)
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    };
    // Direct: every made-up hop is the same client, 127.0.0.1.
    let direct = start_with(Options {
        rate_limit: 2,
        ..Options::default()
    })
    .await;
    assert_eq!(status(&direct.base, "203.0.113.1").await, 401);
    assert_eq!(status(&direct.base, "203.0.113.2").await, 401);
    assert_eq!(status(&direct.base, "203.0.113.3").await, 429);
    // Behind lethe's trusted proxy (the tests' 127.0.0.1).
    let proxied = start_with(Options {
        rate_limit: 2,
        trusted_proxies: "127.0.0.0/8",
        ..Options::default()
    })
    .await;
    let b = &proxied.base;
    for _ in 0..2 {
        assert_eq!(status(b, "6.6.6.6, 203.0.113.1").await, 401);
    }
    assert_eq!(status(b, "7.7.7.7, 203.0.113.1").await, 429);
    assert_eq!(status(b, "203.0.113.2").await, 401);
    assert_eq!(status(b, "2001:db8:1:2::1").await, 401);
    assert_eq!(status(b, "2001:db8:1:2:ffff::2").await, 401);
    assert_eq!(status(b, "2001:db8:1:2:abcd::3").await, 429);
    assert_eq!(status(b, "2001:db8:1:3::1").await, 401);
}

/// The router, walked path by path and method by method, serves exactly the operations
/// `/openapi.json` describes: nothing served is left out of the document, nothing
/// documented is missing from the router.
#[tokio::test]
async fn the_router_serves_exactly_what_openapi_describes() {
    let s = start().await;
    let dpo = s.token(lethe::store::Role::Dpo).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let doc: Value = http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    // Errors have a schema, the one the server answers with; pages are HTML.
    assert_eq!(
        doc["paths"]["/v1/requests"]["post"]["responses"]["422"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/Error"
    );
    assert_eq!(
        doc["components"]["schemas"]["Error"]["properties"]["error"]["$ref"],
        "#/components/schemas/ErrorDetail"
    );
    assert_eq!(
        doc["components"]["schemas"]["ErrorDetail"]["required"],
        json!(["code", "message"])
    );
    assert!(
        doc["paths"]["/portal/requests"]["post"]["responses"]["422"]["content"]["text/html"]
            .is_object()
    );
    let documented = doc["paths"].as_object().unwrap();
    let served_paths = lethe::http::paths();
    assert!(served_paths.len() >= 30, "{served_paths:?}");
    let operations: usize = documented
        .values()
        .map(|ops| ops.as_object().unwrap().len())
        .sum();
    assert!(operations >= 30, "{operations} operations");
    for path in documented.keys() {
        assert!(
            served_paths.contains(path),
            "{path} is documented but the router has no such path"
        );
    }
    let mut undocumented = Vec::new();
    let mut missing = Vec::new();
    for path in &served_paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            let url = format!("{}{}", s.base, path.replace("{id}", "r_unknown"));
            // From the portal's own origin: the portal's origin check lets the request
            // reach the method's routing.
            let r = http
                .request(method.to_uppercase().parse().unwrap(), &url)
                .bearer_auth(&dpo)
                .header("origin", &s.base)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            // The fallback's answer: 404 with the error code `no_route`.
            let served = status != 405 && !(status == 404 && body.contains("\"no_route\""));
            let described = documented
                .get(path)
                .is_some_and(|ops| ops.get(method).is_some());
            match (served, described) {
                (true, false) => undocumented.push(format!("{method} {path}")),
                (false, true) => missing.push(format!("{method} {path}")),
                _ => {}
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "served but not in /openapi.json: {undocumented:?}"
    );
    assert!(missing.is_empty(), "documented but not served: {missing:?}");
    // Anything else is the fallback's 404, in the error format.
    let r = http
        .get(format!("{}/v1/nothing", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("\"no_route\""));
}

/// The schema `/openapi.json` gives for `method path` answering `status`, in a root that
/// carries the document's components so that its references resolve.
fn documented_schema(doc: &Value, method: &str, path: &str, status: u16) -> Value {
    let response = &doc["paths"][path][method]["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path} answered {status}, which /openapi.json does not list"
    );
    let schema = response["content"]["application/json"]["schema"].clone();
    assert!(
        schema.is_object(),
        "{method} {path} answered JSON with {status}; /openapi.json gives it no JSON schema"
    );
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
        "components": doc["components"],
    })
}

/// Reads `r`'s JSON body and asserts that it matches what `/openapi.json` documents for
/// `method path` at its status; the body.
async fn conforms(doc: &Value, method: &str, path: &str, r: reqwest::Response) -> Value {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    let root = documented_schema(doc, method, path, status);
    let validator = jsonschema::validator_for(&root).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&body)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: the answer does not match /openapi.json: {errors:?}\n{body:#}"
    );
    body
}

/// Every JSON answer, success or error, matches the schema `/openapi.json` gives its route
/// and status: requests made, confirmed, read and withdrawn; the DPO's actions and views;
/// OpenDSR's hand-over, status and withdrawal. A schema that says less than the answer
/// (a missing field with `additionalProperties: false`, a wrong type, a state outside the
/// enum) fails here.
#[tokio::test]
async fn every_json_answer_matches_the_schema_openapi_gives_it() {
    use lethe::requests::Kind;
    let s = start_with(Options {
        approval: vec![Kind::Erasure],
        ..Options::default()
    })
    .await;
    let dpo = s.token(lethe::store::Role::Dpo).await;
    let base = s.base.clone();
    let http = reqwest::Client::new();
    let doc: Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Every success but "no content" and a redirect says what it carries.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (code, response) in op["responses"].as_object().unwrap() {
                if code.starts_with('2') && code != "204" {
                    let content = response["content"].as_object();
                    assert!(
                        content.is_some_and(
                            |c| !c.is_empty() && c.values().all(|m| m["schema"].is_object())
                        ),
                        "{method} {path} {code} has no schema"
                    );
                }
            }
        }
    }
    let get = |path: &str| http.get(format!("{base}{path}")).bearer_auth(&dpo).send();
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&dpo)
            .json(&body)
            .send()
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut check = async |method: &str, path: &str, r: reqwest::Response| {
        seen.insert(format!("{method} {path}"));
        conforms(&doc, method, path, r).await
    };
    check("get", "/healthz", get("/healthz").await.unwrap()).await;
    check("get", "/readyz", get("/readyz").await.unwrap()).await;

    // A person's access: made, refused a wrong code, confirmed, run, read.
    let submit = |kind: &str, email: &str| {
        http.post(format!("{base}/v1/requests"))
            .json(&json!({ "type": kind, "identity": { "email": email } }))
            .send()
    };
    let made = check(
        "post",
        "/v1/requests",
        submit("access", "person1@example.org").await.unwrap(),
    )
    .await;
    let (id, token) = (
        made["id"].as_str().unwrap().to_owned(),
        made["token"].as_str().unwrap().to_owned(),
    );
    check(
        "post",
        "/v1/requests",
        submit("nonsense", "person1@example.org").await.unwrap(),
    )
    .await;
    let code = s.code(&id).await;
    let wrong = if code == "0000000000" {
        "1111111111"
    } else {
        "0000000000"
    };
    let verify = |id: &str, code: &str| {
        http.post(format!("{base}/v1/requests/{id}/verify"))
            .json(&json!({ "code": code }))
            .send()
    };
    check(
        "post",
        "/v1/requests/{id}/verify",
        verify(&id, wrong).await.unwrap(),
    )
    .await;
    check(
        "post",
        "/v1/requests/{id}/verify",
        verify(&id, &code).await.unwrap(),
    )
    .await;
    s.execute().await.expect("the access runs");
    let mine = |id: &str, token: &str| {
        http.get(format!("{base}/v1/requests/{id}"))
            .bearer_auth(token)
            .send()
    };
    let done = check("get", "/v1/requests/{id}", mine(&id, &token).await.unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    check(
        "get",
        "/v1/requests/{id}",
        mine(&id, "wrong-token").await.unwrap(),
    )
    .await;
    // Too late to withdraw a completed one; a new one is withdrawn; a new code too soon.
    let withdraw = |id: &str, token: &str| {
        http.delete(format!("{base}/v1/requests/{id}"))
            .bearer_auth(token)
            .send()
    };
    check(
        "delete",
        "/v1/requests/{id}",
        withdraw(&id, &token).await.unwrap(),
    )
    .await;
    let other = check(
        "post",
        "/v1/requests",
        submit("portability", "person2@example.org").await.unwrap(),
    )
    .await;
    let (oid, otoken) = (
        other["id"].as_str().unwrap(),
        other["token"].as_str().unwrap(),
    );
    let resend = http
        .post(format!("{base}/v1/requests/{oid}/code"))
        .bearer_auth(otoken)
        .send()
        .await
        .unwrap();
    check("post", "/v1/requests/{id}/code", resend).await;
    let cancelled = check(
        "delete",
        "/v1/requests/{id}",
        withdraw(oid, otoken).await.unwrap(),
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled");

    // The DPO: an erasure waiting for approval, approved and run; another extended and
    // rejected; a rectification completed.
    let svc = s.service();
    let now = chrono::Utc::now();
    let identity = |email: &str| lethe::audit::Identity::parse(&format!("email={email}")).unwrap();
    let confirmed = async |kind: Kind, email: &str| {
        let made = svc.submit(kind, &identity(email), None, now).await.unwrap();
        let code = s.code(&made.id).await;
        svc.verify(&made.id, &code, now).await.unwrap();
        made.id
    };
    let erasure = confirmed(Kind::Erasure, "person3@example.org").await;
    let listed = check(
        "get",
        "/v1/admin/requests",
        get("/v1/admin/requests").await.unwrap(),
    )
    .await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == erasure.as_str())
    );
    check(
        "get",
        "/v1/admin/requests/{id}",
        get(&format!("/v1/admin/requests/{erasure}")).await.unwrap(),
    )
    .await;
    check(
        "get",
        "/v1/admin/requests/{id}",
        get("/v1/admin/requests/r_unknown").await.unwrap(),
    )
    .await;
    check(
        "post",
        "/v1/admin/requests/{id}/approve",
        post(&format!("/v1/admin/requests/{erasure}/approve"), json!({}))
            .await
            .unwrap(),
    )
    .await;
    s.execute().await.expect("the erasure runs");
    let erased = check(
        "get",
        "/v1/admin/requests/{id}",
        get(&format!("/v1/admin/requests/{erasure}")).await.unwrap(),
    )
    .await;
    assert!(erased["result"].is_object(), "{erased}");
    check(
        "post",
        "/v1/admin/requests/{id}/retry",
        post(&format!("/v1/admin/requests/{erasure}/retry"), json!({}))
            .await
            .unwrap(),
    )
    .await;
    let slow = confirmed(Kind::Erasure, "person4@example.org").await;
    let extend = |body: Value| post(&format!("/v1/admin/requests/{slow}/extend"), body);
    check(
        "post",
        "/v1/admin/requests/{id}/extend",
        extend(json!({ "months": 7, "reason": "many systems" }))
            .await
            .unwrap(),
    )
    .await;
    let extended = check(
        "post",
        "/v1/admin/requests/{id}/extend",
        extend(json!({ "months": 2, "reason": "many systems" }))
            .await
            .unwrap(),
    )
    .await;
    assert!(extended["extended"].as_bool().unwrap());
    check(
        "post",
        "/v1/admin/requests/{id}/reject",
        post(&format!("/v1/admin/requests/{slow}/reject"), json!({}))
            .await
            .unwrap(),
    )
    .await;
    let task = confirmed(Kind::Rectification, "person5@example.org").await;
    s.execute().await;
    check(
        "post",
        "/v1/admin/requests/{id}/complete",
        post(
            &format!("/v1/admin/requests/{task}/complete"),
            json!({ "note": "Your address is corrected." }),
        )
        .await
        .unwrap(),
    )
    .await;
    check(
        "post",
        "/v1/admin/requests/{id}/lift",
        post(
            &format!("/v1/admin/requests/{task}/lift"),
            json!({ "note": "nothing" }),
        )
        .await
        .unwrap(),
    )
    .await;
    for path in [
        "/v1/admin/mail/dead",
        "/v1/admin/webhooks/failed",
        "/v1/admin/suppression",
        "/v1/admin/audit/verify",
        "/v1/admin/register",
        "/v1/admin/retention/plan",
        "/v1/admin/vendors/matrix",
        "/v1/admin/vendors/obligations",
        "/v1/admin/vendors/check",
    ] {
        check("get", path, get(path).await.unwrap()).await;
    }
    check(
        "post",
        "/v1/admin/audit/checkpoint",
        post("/v1/admin/audit/checkpoint", json!({})).await.unwrap(),
    )
    .await;
    check(
        "get",
        "/v1/admin/audit/checkpoint",
        get("/v1/admin/audit/checkpoint").await.unwrap(),
    )
    .await;
    check(
        "post",
        "/v1/admin/mail/dead/{id}/requeue",
        post("/v1/admin/mail/dead/999999/requeue", json!({}))
            .await
            .unwrap(),
    )
    .await;
    // Without a token: the error format.
    let anonymous = http
        .get(format!("{base}/v1/admin/register"))
        .send()
        .await
        .unwrap();
    check("get", "/v1/admin/register", anonymous).await;

    // OpenDSR: discovery, a hand-over, a bad one, its status and its withdrawal.
    check(
        "get",
        "/opendsr/v1/discovery",
        get("/opendsr/v1/discovery").await.unwrap(),
    )
    .await;
    let handed = json!({
        "subject_request_id": "00000000-0000-4000-8000-00000000a001",
        "regulation": "gdpr",
        "subject_request_type": "access",
        "submitted_time": "2026-12-01T10:00:00Z",
        "api_version": "2.0",
        "subject_identities": [{ "identity_type": "email", "identity_value": "person6@example.org", "identity_format": "raw" }],
    });
    check(
        "post",
        "/opendsr/v1/requests",
        post("/opendsr/v1/requests", handed).await.unwrap(),
    )
    .await;
    check(
        "post",
        "/opendsr/v1/requests",
        post("/opendsr/v1/requests", json!({ "regulation": "gdpr" }))
            .await
            .unwrap(),
    )
    .await;
    let external = "/opendsr/v1/requests/00000000-0000-4000-8000-00000000a001";
    check(
        "get",
        "/opendsr/v1/requests/{id}",
        get(external).await.unwrap(),
    )
    .await;
    let cancel = http
        .delete(format!("{base}{external}"))
        .bearer_auth(&dpo)
        .send();
    check("delete", "/opendsr/v1/requests/{id}", cancel.await.unwrap()).await;
    let again = http
        .delete(format!("{base}{external}"))
        .bearer_auth(&dpo)
        .send();
    check("delete", "/opendsr/v1/requests/{id}", again.await.unwrap()).await;
    s.execute().await;
    check(
        "get",
        "/opendsr/v1/requests/{id}",
        get(external).await.unwrap(),
    )
    .await;

    // Every route that answers JSON was called at least once.
    let json_routes: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .iter()
                .filter(|(_, op)| {
                    op["responses"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .any(|(code, r)| {
                            code.starts_with('2')
                                && r["content"]["application/json"]["schema"].is_object()
                        })
                })
                // The description itself, the packages (a file, its secret mailed) and the
                // workspace's downloads (tests/workspace.rs reads them).
                .filter(|_| {
                    path.as_str() != "/openapi.json"
                        && !path.ends_with("/package")
                        && !path.ends_with("/download")
                        && !path.starts_with("/admin/")
                })
                .map(move |(method, _)| format!("{method} {path}"))
        })
        .collect();
    let uncalled: Vec<&String> = json_routes.iter().filter(|r| !seen.contains(*r)).collect();
    assert!(
        uncalled.is_empty(),
        "not checked against their schema: {uncalled:?}"
    );
}

#[tokio::test]
async fn a_new_code_replaces_the_old_one_within_limits() {
    let s = start().await;
    let svc = s.service();
    let identity = lethe::audit::Identity::parse(&format!("email={}", unique_email())).unwrap();
    let t0 = chrono::Utc::now();
    let created = svc
        .submit(lethe::requests::Kind::Access, &identity, None, t0)
        .await
        .unwrap();
    let (id, token) = (created.id.clone(), created.token.clone());
    let first = s.code(&id).await;
    // Over HTTP, at once: too soon.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/requests/{id}/code", s.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "resend_too_soon");
    // Without the token: nothing is sent.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/requests/{id}/code", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Five wrong codes use up the first one.
    for _ in 0..5 {
        let wrong = if first == "000000" {
            "111111"
        } else {
            "000000"
        };
        assert!(svc.verify(&id, wrong, t0).await.is_err());
    }
    assert!(matches!(
        svc.verify(&id, &first, t0).await,
        Err(lethe::requests::RequestError::TooManyAttempts)
    ));
    // A minute later a new code and link come; the old link no longer works. The five
    // wrong codes used up the person's code checks for the day: the new link confirms.
    let t1 = t0 + chrono::Duration::seconds(61);
    svc.resend_code(&id, &token, t1).await.unwrap();
    let mails = s.mails_with(&id);
    let sent: Vec<(String, String)> = mails.iter().filter_map(|m| code_and_link(m)).collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let (old_link, (second, new_link)) = match sent[0].0 == first {
        true => (sent[0].1.clone(), sent[1].clone()),
        false => (sent[1].1.clone(), sent[0].clone()),
    };
    assert_ne!(old_link, new_link);
    assert!(matches!(
        svc.verify(&id, &second, t1).await,
        Err(lethe::requests::RequestError::UseTheLink)
    ));
    assert!(matches!(
        svc.verify_link(&id, &old_link, t1).await,
        Err(lethe::requests::RequestError::Unauthorized)
    ));
    assert_eq!(
        svc.verify_link(&id, &new_link, t1).await.unwrap().status,
        "verified"
    );
    // Codes per request are limited, whatever the address's daily mails allow: a day apart.
    let day = chrono::Duration::hours(lethe::requests::CODE_CHECK_WINDOW_HOURS);
    let mut t = t0 + day;
    let other = svc
        .submit(lethe::requests::Kind::Erasure, &identity, None, t)
        .await
        .unwrap();
    let otoken = other.token;
    for _ in 1..lethe::requests::MAX_CODES {
        t += day;
        svc.resend_code(&other.id, &otoken, t).await.unwrap();
    }
    assert_eq!(
        s.mails_with(&other.id).len() as i64,
        lethe::requests::MAX_CODES
    );
    assert!(matches!(
        svc.resend_code(&other.id, &otoken, t + day).await,
        Err(lethe::requests::RequestError::NoMoreCodes)
    ));
}

/// 50 wrong codes at once: each is counted before it is compared, so only the cap is
/// checked and the right code after them is refused. Withdrawing and asking again gives
/// no fresh guesses for the same person: only the link verifies then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_are_capped_per_request_and_per_person() {
    let (url, _dir) = common::sqlite_store();
    guesses_are_capped(&url).await;
    if let Some(url) =
        common::postgres_store("concurrent_guesses_are_capped_per_request_and_per_person").await
    {
        guesses_are_capped(&url).await;
    }
}

async fn guesses_are_capped(url: &SecretString) {
    use lethe::requests::{Kind, MAX_ATTEMPTS, MAX_CODE_CHECKS, RequestError, Service};
    let b = Bare::open(url).await;
    let identity = lethe::audit::Identity::parse(&format!("email={}", unique_email())).unwrap();
    let now = chrono::Utc::now();
    let created = b
        .service()
        .submit(Kind::Erasure, &identity, None, now)
        .await
        .unwrap();
    let id = created.id.clone();
    let (code, _) = b.code_and_link(&id);
    let right: u64 = code.replace(' ', "").parse().unwrap();
    let mut guesses = Vec::new();
    for n in 1..=50 {
        let wrong = format!("{:010}", (right + n) % 10_000_000_000);
        let (store, audit, mailer, id) = (
            b.store.clone(),
            b.audit.clone(),
            b.mailer.clone(),
            id.clone(),
        );
        guesses.push(tokio::spawn(async move {
            let svc = Service {
                store: &store,
                audit: &audit,
                mailer: &mailer,
                settings: Default::default(),
            };
            svc.verify(&id, &wrong, now).await
        }));
    }
    let mut wrong_answers = 0;
    for g in guesses {
        match g.await.unwrap() {
            Err(RequestError::WrongCode { .. }) => wrong_answers += 1,
            Err(RequestError::TooManyAttempts | RequestError::UseTheLink) => {}
            other => panic!("{other:?}"),
        }
    }
    // The fifth check answers "too many" itself: four say "wrong, try again".
    assert_eq!(wrong_answers, MAX_ATTEMPTS - 1);
    assert_eq!(
        b.scalar("SELECT code_attempts FROM dsr_requests").await,
        MAX_ATTEMPTS
    );
    // The person's counters: code checks at the cap, one verification mail.
    assert_eq!(
        b.scalar("SELECT MAX(checks) FROM code_checks").await,
        MAX_CODE_CHECKS
    );
    assert!(matches!(
        b.service().verify(&id, &code, now).await,
        Err(RequestError::TooManyAttempts)
    ));
    // Withdraw, ask again: the new request's right code is refused too, for a day.
    b.service()
        .withdraw(&id, &created.token, now)
        .await
        .unwrap();
    let again = b
        .service()
        .submit(Kind::Erasure, &identity, None, now)
        .await
        .unwrap();
    let (code, link) = b.code_and_link(&again.id);
    assert!(matches!(
        b.service().verify(&again.id, &code, now).await,
        Err(RequestError::UseTheLink)
    ));
    // The person's link still confirms, on its own.
    assert!(matches!(
        b.service()
            .verify_link(&again.id, &"0".repeat(48), now)
            .await,
        Err(RequestError::Unauthorized)
    ));
    let v = b
        .service()
        .verify_link(&again.id, &link, now)
        .await
        .unwrap();
    assert_eq!(v.status, "verified");
    // A day later the person's codes are checked again.
    let later = now
        + chrono::Duration::hours(lethe::requests::CODE_CHECK_WINDOW_HOURS)
        + chrono::Duration::seconds(1);
    let third = b
        .service()
        .submit(Kind::Access, &identity, None, later)
        .await
        .unwrap();
    let (code, _) = b.code_and_link(&third.id);
    let v = b.service().verify(&third.id, &code, later).await.unwrap();
    assert_eq!(v.status, "verified");
}

/// Ten submissions at once for one address: each is answered alike, but only the
/// address's daily verification mails are queued; new codes count too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_gets_a_few_verification_mails_a_day_however_many_submissions() {
    let (url, _dir) = common::sqlite_store();
    mails_are_capped(&url).await;
    if let Some(url) = common::postgres_store("verification_mails_are_capped").await {
        mails_are_capped(&url).await;
    }
}

async fn mails_are_capped(url: &SecretString) {
    use lethe::requests::{Kind, Service, VERIFICATION_MAILS_PER_DAY};
    let b = Bare::open(url).await;
    let email = unique_email();
    let identity = lethe::audit::Identity::parse(&format!("email={email}")).unwrap();
    let now = chrono::Utc::now();
    let mut submissions = Vec::new();
    for _ in 0..10 {
        let (store, audit, mailer, identity) = (
            b.store.clone(),
            b.audit.clone(),
            b.mailer.clone(),
            identity.clone(),
        );
        submissions.push(tokio::spawn(async move {
            let svc = Service {
                store: &store,
                audit: &audit,
                mailer: &mailer,
                settings: Default::default(),
            };
            svc.submit(Kind::Access, &identity, None, now).await
        }));
    }
    let mut answers = Vec::new();
    for s in submissions {
        answers.push(s.await.unwrap().unwrap());
    }
    assert!(
        answers
            .iter()
            .all(|a| a.status == "identity_pending" && a.token.len() == 64)
    );
    let mails = async || -> i64 {
        // Recipients rest sealed: every message in this store is counted.
        sqlx::query_scalar("SELECT COUNT(*) FROM mail_outbox")
            .fetch_one(b.store.pool())
            .await
            .unwrap()
    };
    assert_eq!(mails().await, VERIFICATION_MAILS_PER_DAY);
    assert_eq!(b.scalar("SELECT COUNT(*) FROM dsr_requests").await, 10);
    // A new code is a mail too: answered alike, nothing sent.
    let later = now + chrono::Duration::minutes(2);
    let first = &answers[0];
    let v = b
        .service()
        .resend_code(&first.id, &first.token, later)
        .await
        .unwrap();
    assert_eq!(v.status, "identity_pending");
    assert_eq!(mails().await, VERIFICATION_MAILS_PER_DAY);
    // Another address is not held back, and a day later this one is mailed again.
    let other = lethe::audit::Identity::parse(&format!("email={}", unique_email())).unwrap();
    b.service()
        .submit(Kind::Access, &other, None, now)
        .await
        .unwrap();
    assert_eq!(
        b.scalar("SELECT COUNT(*) FROM mail_outbox").await,
        VERIFICATION_MAILS_PER_DAY + 1
    );
    let tomorrow = now + chrono::Duration::hours(lethe::requests::CODE_CHECK_WINDOW_HOURS);
    b.service()
        .submit(Kind::Access, &identity, None, tomorrow)
        .await
        .unwrap();
    // The other address's mail and tomorrow's.
    assert_eq!(mails().await, VERIFICATION_MAILS_PER_DAY + 2);
}

/// Two `lethe serve` instances on one PostgreSQL store, each with its own pool and worker:
/// every queued request is executed exactly once.
/// What an on-call person reads in /metrics: the law's deadlines, failed requests, and
/// each job's last success.
#[tokio::test]
async fn metrics_show_deadlines_failures_and_jobs() {
    let s = start().await;
    let auditor = s.token(lethe::store::Role::Auditor).await;
    let now = chrono::Utc::now();
    let stamp = |d: chrono::Duration| lethe::store::timestamp(now + d);
    let mut ids = Vec::new();
    for email in [
        "late@example.org",
        "soon@example.org",
        "failed@example.org",
        "later@example.org",
    ] {
        let (_, created) = post(
            &format!("{}/v1/requests", s.base),
            json!({ "type": "access", "identity": { "email": email } }).to_string(),
        )
        .await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let set_due = |id: String, due: String| {
        let pool = s.store.pool().clone();
        async move {
            sqlx::query("UPDATE dsr_requests SET due_at = $1 WHERE id = $2")
                .bind(due)
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    set_due(ids[0].clone(), stamp(-chrono::Duration::days(2))).await;
    set_due(ids[1].clone(), stamp(chrono::Duration::days(3))).await;
    set_due(ids[2].clone(), stamp(chrono::Duration::days(20))).await;
    set_due(ids[3].clone(), stamp(chrono::Duration::days(20))).await;
    for status in ["verified", "in_progress", "failed"] {
        sqlx::query("UPDATE dsr_requests SET status = $1 WHERE id = $2")
            .bind(status)
            .bind(&ids[2])
            .execute(s.store.pool())
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO job_runs (job, kind, tick, holder, started_at, finished_at, status, summary) \
         VALUES ('nightly-retention', 'retention', 't1', 'h', '2026-11-01T02:00:00.000000Z', '2026-11-01T02:00:30.000000Z', 'completed', '{\"rows_deleted\": 120, \"values_masked\": 7}'), \
                ('nightly-retention', 'retention', 't2', 'h', '2026-11-02T02:00:00.000000Z', '2026-11-02T02:00:04.500000Z', 'completed', '{\"rows_deleted\": 3, \"values_masked\": 0}'), \
                ('nightly-retention', 'retention', 't3', 'h', '2026-11-03T02:00:00.000000Z', NULL, 'failed', '{}')",
    )
    .execute(s.store.pool())
    .await
    .unwrap();
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", s.base))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let last_success = chrono::DateTime::parse_from_rfc3339("2026-11-02T02:00:04.5Z")
        .unwrap()
        .timestamp_millis() as f64
        / 1000.0;
    for line in [
        "lethe_requests_overdue 1\n".to_owned(),
        "lethe_requests_due_within_7_days 2\n".to_owned(),
        "lethe_requests_failed 1\n".to_owned(),
        format!(
            "lethe_job_last_success_timestamp_seconds{{job=\"nightly-retention\"}} {last_success}\n"
        ),
        "lethe_job_last_success_duration_seconds{job=\"nightly-retention\"} 4.5\n".to_owned(),
        "lethe_retention_rows_deleted_total 123\n".to_owned(),
        "lethe_retention_values_masked_total 7\n".to_owned(),
        "# HELP lethe_requests_overdue ".to_owned(),
    ] {
        assert!(metrics.contains(&line), "no {line:?} in\n{metrics}");
    }
}

/// Work starts the moment it exists: with the fallback poll set to ten minutes, a
/// request verified while the worker is idle completes within seconds.
#[tokio::test]
async fn a_verified_request_wakes_the_idle_worker() {
    let s = start_with(Options {
        background: true,
        worker_poll: Some(std::time::Duration::from_secs(600)),
        ..Options::default()
    })
    .await;
    // The worker has looked once, found nothing, and sleeps.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (id, token) = s.verified("access", "person2@example.org").await;
    s.until(&id, &token, &["completed"], 10).await;
    // And again: each announcement wakes it.
    let (id, token) = s.verified("erasure", "person5@example.org").await;
    s.until(&id, &token, &["completed", "partially_completed"], 10)
        .await;
}

/// An erasure's notice to a processor leaves as soon as the request has run, not at the
/// webhook sender's next look (ten minutes here).
#[tokio::test]
async fn an_erasure_notice_leaves_as_soon_as_the_request_has_run() {
    let hook = receiver(0).await;
    let s = start_with(Options {
        background: true,
        webhook: Some(format!("{}/privacy/erasure", hook.url)),
        worker_poll: Some(std::time::Duration::from_secs(600)),
        webhook_poll: Some(std::time::Duration::from_secs(600)),
        ..Options::default()
    })
    .await;
    // The sender has looked once, found nothing, and sleeps.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (id, token) = s.verified("erasure", "person3@example.org").await;
    s.until(&id, &token, &["completed", "partially_completed"], 10)
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while hook.count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the notice waited for the sender's next look"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(String::from_utf8_lossy(&hook.last().1).contains("Art. 19"));
}

/// Between instances on one PostgreSQL store: an instance that only takes requests (no
/// worker) announces them, and the other's worker, polling every ten minutes, runs them
/// at once.
#[tokio::test]
async fn an_instance_wakes_the_others_worker_on_postgres() {
    let Some(url) = common::postgres_store("wakes_the_other").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    demo(tmp.path(), &Options::default()).await;
    let mut config = common::testapp::config(tmp.path());
    config.database = url;
    let outbox = config.outbox.clone();
    let mut instances = Vec::new();
    for run_requests in [false, true] {
        let options = lethe::app::Options {
            run_requests,
            worker_poll: std::time::Duration::from_secs(600),
            ..Default::default()
        };
        instances.push(common::TestApp::start(&config, options).await);
    }
    let bases: Vec<String> = instances.iter().map(|i| i.base.clone()).collect();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let svc = instances[0].service();
    // Submitted and confirmed through the instance without a worker.
    let (status, created) = post(
        &format!("{}/v1/requests", bases[0]),
        json!({ "type": "access", "identity": { "email": "person2@example.org" } }).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    let code = loop {
        let found = std::fs::read_dir(&outbox)
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .filter(|m| m.contains(&id))
            .find_map(|m| shown_code(&m));
        if let Some(c) = found {
            break c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let (status, v) = post(
        &format!("{}/v1/requests/{id}/verify", bases[0]),
        json!({ "code": code }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v = svc.status(&id, &token).await.unwrap();
        if v.status == "completed" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other instance's worker was not woken: {}",
            v.status
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_instances_on_one_postgres_execute_each_request_once() {
    let Some(url) = common::postgres_store("two_instances_execute_each_request_once").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let policy = demo(tmp.path(), &Options::default()).await;
    let keys = KeySource {
        master: None,
        signing: None,
        dir: tmp.path().join(".lethe"),
    };
    let mailer = Mailer::from_config(
        &Config::default(),
        Some("privacy@example.com"),
        tmp.path().join("outbox"),
    )
    .unwrap();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let store = Store::open(&url).await.unwrap();
        let audit = AuditLog::open(store.clone(), &keys).await.unwrap();
        instances.push((store, audit));
    }
    let mailer = mailer.with_outbox_key(instances[0].1.outbox_key());
    let settings = lethe::requests::Settings::from_policy(&policy);
    let svc = |i: usize| lethe::requests::Service {
        store: &instances[i].0,
        audit: &instances[i].1,
        mailer: &mailer,
        settings: settings.clone(),
    };
    let now = chrono::Utc::now();
    let mut ids = Vec::new();
    for n in 0..12 {
        let identity =
            lethe::audit::Identity::parse(&format!("email=person{n}@example.org")).unwrap();
        let (id, _) = svc(0)
            .submit_trusted(
                lethe::requests::Kind::Access,
                &identity,
                &format!("00000000-0000-4000-8000-{n:012}"),
                &[],
                now,
                "controller",
                now,
            )
            .await
            .unwrap();
        ids.push(id);
    }
    let worker = |i: usize, name: &'static str| {
        let s = svc(i);
        let policy = &policy;
        async move {
            let sources = lethe::sources::db::Sources::default();
            let mut ran = Vec::new();
            while let Some(id) = s.execute_next(policy, &sources, name, now).await.unwrap() {
                ran.push(id);
            }
            ran
        }
    };
    let (a, b) = tokio::join!(worker(0, "instance-a"), worker(1, "instance-b"));
    let mut all: Vec<String> = a.iter().chain(&b).cloned().collect();
    all.sort();
    ids.sort();
    assert_eq!(
        all,
        ids,
        "a request ran twice or not at all (a: {}, b: {})",
        a.len(),
        b.len()
    );
    // Each skipped what the other was claiming and took the next one.
    assert!(
        !a.is_empty() && !b.is_empty(),
        "one instance did all the work"
    );
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dsr_requests WHERE status = 'completed'")
            .fetch_one(instances[0].0.pool())
            .await
            .unwrap();
    assert_eq!(completed, 12);
    let report = instances[0].1.verify().await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

#[tokio::test]
async fn an_auditor_reads_the_register_and_the_retention_plan() {
    let s = start().await;
    let auditor = s.token(lethe::store::Role::Auditor).await;
    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut r = http.get(format!("{}{path}", s.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(get("/v1/admin/register", None).await.unwrap().status(), 401);
    let register: Value = get("/v1/admin/register", Some(&auditor))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(register.as_array().unwrap().len(), s.policy.purposes.len());
    assert!(register.to_string().contains("Registration and billing"));
    // A restriction in force is counted apart in the plan.
    let (_, _) = s.verified("restriction", "person1@example.org").await;
    let plan: Value = get("/v1/admin/retention/plan", Some(&auditor))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let views = plan
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["collection"] == "page_views")
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(
        views["rule"].as_str().unwrap().contains("90 days"),
        "{views}"
    );
    assert!(views["restricted_rows"].as_u64().unwrap() > 0, "{views}");
}

/// The person reads the mail on another device: the link's page confirms with one button,
/// without the token; the API takes the secret too. A fetch of the link alone (a mail
/// scanner) confirms nothing.
#[tokio::test]
async fn the_link_in_the_mail_confirms_by_itself() {
    let s = start().await;
    let http = s.browser();
    let (status, created) = post(
        &format!("{}/v1/requests", s.base),
        json!({ "type": "access", "identity": { "email": unique_email() } }).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    s.code(&id).await;
    let (_, secret) = s
        .mails_with(&id)
        .iter()
        .find_map(|m| code_and_link(m))
        .unwrap();
    assert!(secret.len() * 4 >= 128, "{secret}");
    let page = http
        .get(format!(
            "{}/portal/requests/{id}/confirm?secret={secret}",
            s.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Confirm my request"));
    assert_eq!(
        s.status_of(&id, created["token"].as_str().unwrap()).await,
        "identity_pending"
    );
    let wrong = http
        .post(format!("{}/portal/requests/{id}/confirm", s.base))
        .form(&[("secret", "0".repeat(secret.len()))])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = http
        .post(format!("{}/portal/requests/{id}/confirm", s.base))
        .form(&[("secret", secret.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("is confirmed"));
    assert_eq!(
        s.status_of(&id, created["token"].as_str().unwrap()).await,
        "verified"
    );
    // Over the API, the secret of another request's link opens nothing.
    let (_, other) = post(
        &format!("{}/v1/requests", s.base),
        json!({ "type": "erasure", "identity": { "email": unique_email() } }).to_string(),
    )
    .await;
    let other_id = other["id"].as_str().unwrap();
    s.code(other_id).await;
    let (status, e) = post(
        &format!("{}/v1/requests/{other_id}/verify", s.base),
        json!({ "secret": secret }).to_string(),
    )
    .await;
    assert_eq!(status, 401, "{e}");
    let (_, other_secret) = s
        .mails_with(other_id)
        .iter()
        .find_map(|m| code_and_link(m))
        .unwrap();
    let (status, v) = post(
        &format!("{}/v1/requests/{other_id}/verify", s.base),
        json!({ "secret": other_secret }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "verified");
}

/// A stranger asks first for someone else's address: the person's own request still gets
/// its own token and code, and the answers (API and portal) are the same whether or not
/// anything was open for the address, so they tell nobody what exists.
#[tokio::test]
async fn a_stranger_cannot_block_a_person_nor_learn_what_is_open() {
    let s = start().await;
    let victim = unique_email();
    let submit = |email: String| {
        let url = format!("{}/v1/requests", s.base);
        async move {
            post(
                &url,
                json!({ "type": "access", "identity": { "email": email } }).to_string(),
            )
            .await
        }
    };
    let shape = |(status, v): &(u16, Value)| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        (*status, keys, v["status"].clone())
    };
    let fresh = submit(unique_email()).await;
    let strangers = submit(victim.clone()).await;
    let persons = submit(victim.to_uppercase()).await;
    assert_eq!(shape(&fresh), shape(&strangers));
    assert_eq!(shape(&fresh), shape(&persons));
    assert_eq!(persons.0, 201, "{}", persons.1);
    let id = persons.1["id"].as_str().unwrap().to_owned();
    assert_ne!(id, strangers.1["id"].as_str().unwrap());
    // The person's own code, in a mail of its own, confirms the person's request.
    let code = s.code(&id).await;
    let (status, v) = post(
        &format!("{}/v1/requests/{id}/verify", s.base),
        json!({ "code": code }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        s.status_of(&id, persons.1["token"].as_str().unwrap()).await,
        "verified"
    );
    // With a verified request open, the answer is still the same.
    let after = submit(victim.clone()).await;
    assert_eq!(shape(&fresh), shape(&after));

    // The portal: the page after submitting reads the same, token and id aside, and a
    // refresh (the form sent again) lands on a working page of its own.
    let http = s.browser();
    let portal = |email: String| {
        let http = http.clone();
        let url = format!("{}/portal/requests", s.base);
        async move {
            let r = http
                .post(url)
                .form(&[("type", "erasure"), ("email", email.as_str())])
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let (id, token) = portal_cookie(&r);
            let html = r.text().await.unwrap();
            let same = html.replace(&id, "ID");
            (status, same, id, token)
        }
    };
    // Another address: the first one had its verification mails for the day.
    let victim = unique_email();
    let fresh = portal(unique_email()).await;
    let strangers = portal(victim.clone()).await;
    let persons = portal(victim.clone()).await;
    let refreshed = portal(victim.clone()).await;
    assert_eq!(fresh.0, 201);
    for other in [&strangers, &persons, &refreshed] {
        assert_eq!((fresh.0, &fresh.1), (other.0, &other.1));
    }
    for page in [&persons, &refreshed] {
        assert_eq!(s.status_of(&page.2, &page.3).await, "identity_pending");
        s.code(&page.2).await;
    }
}

/// An address the intake's e-mail rule accepts but the mail transport cannot write to is
/// refused at intake (422 on the API, the form again on the portal): it never reaches the
/// outbox.
#[tokio::test]
async fn an_address_the_mail_transport_refuses_is_refused_at_intake() {
    let s = start().await;
    let (status, e) = post(
        &format!("{}/v1/requests", s.base),
        json!({ "type": "access", "identity": { "email": "poison,1@example.com" } }).to_string(),
    )
    .await;
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["error"]["code"], "invalid_identity");
    let r = s
        .browser()
        .post(format!("{}/portal/requests", s.base))
        .form(&[("type", "erasure"), ("email", "poison,1@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(html.contains("role=\"alert\""), "{html}");
    assert!(
        html.contains("We cannot send e-mail to this address"),
        "{html}"
    );
    assert_eq!(s.requests().await, 0);
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM mail_outbox")
        .fetch_one(s.store.pool())
        .await
        .unwrap();
    assert_eq!(unsent, 0);
}

/// Every value of every column of every table of the store, as text, a row a line:
/// SQLite's `quote()` (blobs as `X'..'` hex), PostgreSQL's row text (bytea as `\x..`
/// hex), line breaks as `\n`.
async fn dump_store(store: &Store) -> String {
    let sqlite = store.backend() == lethe::store::Backend::Sqlite;
    let strings = async |sql: String| -> Vec<String> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(store.pool())
            .await
            .unwrap()
    };
    let tables = strings(if sqlite {
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'".into()
    } else {
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'".into()
    })
    .await;
    let mut out = String::new();
    for t in tables {
        let row = if sqlite {
            strings(format!("SELECT name FROM pragma_table_info('{t}')"))
                .await
                .iter()
                .map(|c| format!("replace(quote(\"{c}\"), char(10), '\\n')"))
                .collect::<Vec<_>>()
                .join(" || '|' || ")
        } else {
            "replace(CAST(x AS TEXT), chr(10), '\\n')".to_owned()
        };
        for r in strings(format!("SELECT {row} FROM \"{t}\" AS x")).await {
            out.push_str(&format!("{t}: {r}\n"));
        }
    }
    out
}

/// Where `needle` shows in a dump: as text, lowercased, or as the hex of its bytes.
fn shows(dump: &str, needle: &str) -> Vec<String> {
    let forms = [
        needle.to_owned(),
        needle.to_lowercase(),
        hex_of(needle),
        hex_of(&needle.to_lowercase()),
    ];
    dump.lines()
        .filter(|l| {
            let lower = l.to_lowercase();
            forms.iter().any(|f| lower.contains(&f.to_lowercase()))
        })
        .map(|l| l.chars().take(160).collect())
        .collect()
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// After a person's erasure has run and their key is shredded, nothing in lethe's store
/// reads as their address or their details: not the requests, not the restrictions, not
/// the outbox, not the audit log; and while a verification e-mail waits in the outbox,
/// neither its code nor its link's secret is there in clear.
#[tokio::test]
async fn after_an_erasure_nothing_in_the_store_reads_as_the_person() {
    let (url, _dir) = common::sqlite_store();
    erased_person_leaves_no_trace(&url).await;
    if let Some(url) = common::postgres_store("erased_person_leaves_no_trace").await {
        erased_person_leaves_no_trace(&url).await;
    }
}

async fn erased_person_leaves_no_trace(url: &SecretString) {
    use lethe::requests::{Kind, Service};
    let b = Bare::open(url).await;
    let tmp = tempfile::tempdir().unwrap();
    let policy = demo(tmp.path(), &Options::default()).await;
    let settings = lethe::requests::Settings::from_policy(&policy);
    // A transport that is down: the code e-mail waits in the outbox.
    let down = Mailer::from_config(
        &Config {
            smtp_url: Some(SecretString::from("smtp://127.0.0.1:9?tls=none".to_owned())),
            ..Config::default()
        },
        Some("privacy@example.com"),
        tmp.path().join("unused"),
    )
    .unwrap()
    .with_outbox_key(b.audit.outbox_key());
    let queueing = Service {
        store: &b.store,
        audit: &b.audit,
        mailer: &down,
        settings: settings.clone(),
    };
    let svc = Service {
        store: &b.store,
        audit: &b.audit,
        mailer: &b.mailer,
        settings: settings.clone(),
    };
    let address = format!(
        "Erase.Me.{}@Example.org",
        lethe::crypto::random_hex(4).unwrap()
    );
    let details = format!("please write to {address} only");
    let identity = lethe::audit::Identity::parse(&format!("email={address}")).unwrap();
    let now = chrono::Utc::now();
    let created = queueing
        .submit(Kind::Erasure, &identity, Some(&details), now)
        .await
        .unwrap();
    // Unverified: no audit subject and no subject key yet.
    assert_eq!(
        b.subjects().await,
        (0, 0),
        "an unverified request made a subject"
    );
    let queued = dump_store(&b.store).await;
    // Now the mail goes out, and its code and link become known.
    lethe::notify::deliver_pending(&b.store, &b.mailer)
        .await
        .unwrap();
    let (code, link) = b.code_and_link(&created.id);
    // The code as the message shows it (six digits alone could match a random blob).
    for secret in [format!("is {code}"), format!(">{code}<"), link.clone()] {
        let hits: Vec<String> = queued
            .lines()
            .filter(|l| l.starts_with("mail_outbox:") && l.contains(secret.as_str()))
            .map(str::to_owned)
            .collect();
        assert!(hits.is_empty(), "{secret} in the outbox: {hits:?}");
    }
    assert!(
        shows(&queued, &address).is_empty(),
        "{:?}",
        shows(&queued, &address)
    );
    // Verified: now the person is an audit subject, and the request is sealed under
    // their key.
    svc.verify_link(&created.id, &link, now).await.unwrap();
    assert_eq!(b.subjects().await, (1, 1));
    assert_eq!(
        svc.full(&created.id).await.unwrap().identity,
        format!("email={}", address.to_lowercase())
    );
    // Readable to the service, yet not in clear anywhere in the store.
    let verified = dump_store(&b.store).await;
    for needle in [address.as_str(), details.as_str()] {
        let hits = shows(&verified, needle);
        assert!(hits.is_empty(), "{needle} in clear: {hits:?}");
    }
    let sources = lethe::sources::db::Sources::default();
    let ran = svc
        .execute_next(&policy, &sources, "test", now)
        .await
        .unwrap();
    assert_eq!(ran.as_deref(), Some(created.id.as_str()));
    sources.close().await;
    lethe::notify::deliver_pending(&b.store, &b.mailer)
        .await
        .unwrap();
    let full = svc.full(&created.id).await.unwrap();
    assert_eq!(full.status, "completed");
    assert_eq!(full.identity, "(erased)");
    assert_eq!(full.details, None);
    let after = dump_store(&b.store).await;
    for needle in [address.as_str(), details.as_str(), "Erase.Me"] {
        let hits = shows(&after, needle);
        assert!(hits.is_empty(), "{needle} still in the store: {hits:?}");
    }
}

/// A request nobody confirms leaves no subject key, and the purge takes its own key
/// with it.
#[tokio::test]
async fn an_unverified_request_leaves_no_key_behind() {
    let (url, _dir) = common::sqlite_store();
    let b = Bare::open(&url).await;
    let identity = lethe::audit::Identity::parse(&format!("email={}", unique_email())).unwrap();
    let now = chrono::Utc::now();
    b.service()
        .submit(lethe::requests::Kind::Access, &identity, Some("hello"), now)
        .await
        .unwrap();
    assert_eq!(
        b.subjects().await,
        (0, 0),
        "an unverified request made a subject"
    );
    assert_eq!(
        b.scalar("SELECT count(*) FROM dsr_requests WHERE own_key IS NOT NULL AND identity_value = '' AND details IS NULL")
            .await,
        1
    );
    assert!(
        b.audit.find_subject(&identity).await.unwrap().is_none(),
        "an unverified request made the person a subject"
    );
    let later = now + chrono::Duration::days(lethe::requests::TRANSIENT_DAYS + 1);
    let purged = lethe::requests::purge(
        &b.store,
        &b.audit,
        lethe::policy::RetentionPeriod::new(3, 0, 0),
        later,
    )
    .await
    .unwrap();
    assert_eq!(purged.abandoned_requests, 1);
    assert_eq!(b.scalar("SELECT count(*) FROM dsr_requests").await, 0);
    assert_eq!(b.subjects().await, (0, 0));
}

/// The completion e-mail's link opens the package with a secret of its own: its page
/// only shows a button (a mail scanner's GET takes nothing), the button posts the secret
/// from the portal's own page, and the API takes the secret as its bearer token. The
/// request's token opens nothing; the secret rests only as a hash and ends with the package.
#[tokio::test]
async fn a_completion_link_opens_the_package_with_its_own_secret_only() {
    let s = start().await;
    let http = reqwest::Client::new();
    let (id, token) = s.verified("access", "person7@example.org").await;
    assert_eq!(s.execute().await.as_deref(), Some(id.as_str()));
    let secret = s.download_secret(&id).await;
    assert_eq!(secret.len(), 32, "192 bits in base64url: {secret}");
    assert!(
        secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    let link = format!("{}/portal/requests/{id}/download?secret={secret}", s.base);
    // The page of the link: a button, no download.
    let r = http.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    let page = r.text().await.unwrap();
    assert!(page.contains(&format!(
        "<form method=\"post\" action=\"/portal/requests/{id}/download\">"
    )));
    assert!(page.contains(&format!("value=\"{secret}\"")));
    assert!(!page.contains("person7"), "{page}");
    // The button posts the secret from the portal's page; from nowhere, it is refused.
    let r = http
        .post(format!("{}/portal/requests/{id}/download", s.base))
        .form(&[("secret", secret.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a post naming no origin");
    let browser = s.browser();
    let wrong = browser
        .post(format!("{}/portal/requests/{id}/download", s.base))
        .form(&[("secret", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401, "the request token as the secret");
    let zip = browser
        .post(format!("{}/portal/requests/{id}/download", s.base))
        .form(&[("secret", secret.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(zip.status(), 200);
    assert_eq!(zip.headers()["content-type"], "application/zip");
    assert_eq!(
        zip.headers()["content-disposition"],
        format!("attachment; filename=\"{id}.zip\"").as_str()
    );
    let bytes = zip.bytes().await.unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut data = String::new();
    std::io::Read::read_to_string(&mut archive.by_name("data.json").unwrap(), &mut data).unwrap();
    assert!(data.contains("person7@example.org"));
    // The API: the secret as bearer; not the token, not in the query, not the old route.
    let api = format!("{}/v1/requests/{id}/package", s.base);
    let get = |auth: Option<&str>, url: String| {
        let mut r = http.get(url);
        if let Some(a) = auth {
            r = r.bearer_auth(a);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get(Some(&secret), api.clone()).await, 200);
    assert_eq!(get(Some(&token), api.clone()).await, 401);
    assert_eq!(get(None, api.clone()).await, 401);
    assert_eq!(get(None, format!("{api}?token={token}")).await, 401);
    assert_eq!(get(None, format!("{api}?secret={secret}")).await, 401);
    assert_eq!(
        get(
            Some(&secret),
            format!("{}/v1/requests/r_other/package", s.base)
        )
        .await,
        401
    );
    let r = http
        .get(format!("{}/portal/requests/{id}/package", s.base))
        .header("cookie", format!("lethe_request={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the old cookie download route");
    // Stored as a hash only.
    let dump = dump_store(&s.store).await;
    let hits: Vec<&str> = dump.lines().filter(|l| l.contains(&secret)).collect();
    assert!(hits.is_empty(), "the secret in the store: {hits:?}");
    // It ends with the package.
    sqlx::query("UPDATE request_packages SET expires_at = '2000-01-01T00:00:00.000000Z' WHERE request_id = $1")
        .bind(&id)
        .execute(s.store.pool())
        .await
        .unwrap();
    assert_eq!(get(Some(&secret), api.clone()).await, 410);
    let r = browser
        .post(format!("{}/portal/requests/{id}/download", s.base))
        .form(&[("secret", secret.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
}

/// The same on each store: the secret opens the package, the token does not, and only
/// a hash of it is kept, ending with the package.
#[tokio::test]
async fn download_secrets_are_kept_as_hashes_on_every_store() {
    let (url, _dir) = common::sqlite_store();
    download_secret_on(&url).await;
    if let Some(url) = common::postgres_store("download_secrets_are_kept_as_hashes").await {
        download_secret_on(&url).await;
    }
}

async fn download_secret_on(url: &SecretString) {
    use lethe::requests::{Kind, RequestError, Service};
    let b = Bare::open(url).await;
    let tmp = tempfile::tempdir().unwrap();
    let policy = demo(tmp.path(), &Options::default()).await;
    let svc = Service {
        store: &b.store,
        audit: &b.audit,
        mailer: &b.mailer,
        settings: lethe::requests::Settings::from_policy(&policy),
    };
    let identity = lethe::audit::Identity::parse("email=person9@example.org").unwrap();
    let now = chrono::Utc::now();
    let created = svc
        .submit(Kind::Portability, &identity, None, now)
        .await
        .unwrap();
    let (_, link) = b.code_and_link(&created.id);
    svc.verify_link(&created.id, &link, now).await.unwrap();
    let sources = lethe::sources::db::Sources::default();
    svc.execute_next(&policy, &sources, "test", now)
        .await
        .unwrap();
    sources.close().await;
    lethe::notify::deliver_pending(&b.store, &b.mailer)
        .await
        .unwrap();
    let start = format!("/portal/requests/{}/download?secret=", created.id);
    let secret: String = std::fs::read_dir(&b.outbox)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .map(|t| unqp(&t))
        .find_map(|t| {
            let i = t.find(&start)? + start.len();
            Some(
                t[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .collect(),
            )
        })
        .expect("no completion mail with a download link");
    let d = svc.package(&created.id, &secret, now).await.unwrap();
    assert_eq!(d.content_type, "application/json");
    assert!(String::from_utf8_lossy(&d.bytes).contains("person9@example.org"));
    assert!(matches!(
        svc.package(&created.id, &created.token, now).await,
        Err(RequestError::Unauthorized)
    ));
    let stored: String =
        sqlx::query_scalar("SELECT secret_hash FROM request_packages WHERE request_id = $1")
            .bind(&created.id)
            .fetch_one(b.store.pool())
            .await
            .unwrap();
    assert_eq!(stored.len(), 64);
    assert!(!dump_store(&b.store).await.contains(&secret));
    let later = now + chrono::Duration::days(lethe::requests::PACKAGE_DAYS + 1);
    assert!(matches!(
        svc.package(&created.id, &secret, later).await,
        Err(RequestError::Expired)
    ));
}

/// The JSON API reads JSON only: a write with a body of any other type (what a form on
/// another site can send without asking) is refused with 415 before anything happens.
#[tokio::test]
async fn the_api_refuses_writes_whose_body_is_not_json() {
    let s = start().await;
    let http = reqwest::Client::new();
    let body = json!({ "type": "access", "identity": { "email": unique_email() } }).to_string();
    let before = s.requests().await;
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("text/json"),
        None,
    ] {
        let mut r = http
            .post(format!("{}/v1/requests", s.base))
            .body(body.clone());
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 415, "{ct:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unsupported_media_type", "{ct:?}");
    }
    assert_eq!(
        s.requests().await,
        before,
        "a body that is not JSON made a request"
    );
    let r = http
        .post(format!("{}/v1/requests", s.base))
        .header("content-type", "application/json; charset=utf-8")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let (id, token) = (
        created["id"].as_str().unwrap(),
        created["token"].as_str().unwrap(),
    );
    // Admin actions and OpenDSR alike; a write without a body is not concerned.
    let dpo = s.token(lethe::store::Role::Dpo).await;
    let r = http
        .post(format!("{}/v1/admin/requests/{id}/reject", s.base))
        .bearer_auth(&dpo)
        .header("content-type", "text/plain")
        .body(json!({ "reason": "no" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = http
        .post(format!("{}/opendsr/v1/requests", s.base))
        .bearer_auth(&dpo)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], 415);
    assert_eq!(v["error"]["errors"][0]["reason"], "UnsupportedMediaType");
    let r = http
        .delete(format!("{}/v1/requests/{id}", s.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a withdrawal has no body");
}

/// The DPO's reasons rest sealed with the request's identity and details; a reason an
/// earlier version kept in clear is sealed when the server starts, once, and still reads.
#[tokio::test]
async fn the_dpos_reasons_rest_sealed() {
    let (url, _dir) = common::sqlite_store();
    reasons_sealed_on(&url).await;
    if let Some(url) = common::postgres_store("the_dpos_reasons_rest_sealed").await {
        reasons_sealed_on(&url).await;
    }
}

async fn reasons_sealed_on(url: &SecretString) {
    use lethe::audit::Actor;
    use lethe::requests::Kind;
    let b = Bare::open(url).await;
    let svc = b.service();
    let now = chrono::Utc::now();
    let submit = async |kind| {
        let identity = lethe::audit::Identity::parse(&format!("email={}", unique_email())).unwrap();
        svc.submit(kind, &identity, Some("details"), now)
            .await
            .unwrap()
            .id
    };
    // Verified: under the subject's key. Unverified: under the request's own key.
    let verified = submit(Kind::Erasure).await;
    let (_, link) = b.code_and_link(&verified);
    svc.verify_link(&verified, &link, now).await.unwrap();
    svc.extend(
        &verified,
        1,
        "the archive of Jane Roe is on tape",
        Actor::Cli,
        now,
    )
    .await
    .unwrap();
    let pending = submit(Kind::Access).await;
    svc.reject(&pending, "Kim Doe asked twice", None, Actor::Cli, now)
        .await
        .unwrap();
    assert_eq!(
        svc.full(&verified).await.unwrap().reason.as_deref(),
        Some("the archive of Jane Roe is on tape")
    );
    assert_eq!(
        svc.full(&pending).await.unwrap().reason.as_deref(),
        Some("Kim Doe asked twice")
    );
    assert_eq!(
        svc.full(&verified).await.unwrap().details.as_deref(),
        Some("details")
    );
    let dump = dump_store(&b.store).await;
    for needle in ["Jane Roe", "Kim Doe"] {
        assert!(
            shows(&dump, needle).is_empty(),
            "{needle} in clear: {:?}",
            shows(&dump, needle)
        );
    }
    // The old way: the reason in its clear column.
    let old = submit(Kind::Erasure).await;
    let (_, link) = b.code_and_link(&old);
    svc.verify_link(&old, &link, now).await.unwrap();
    sqlx::query("UPDATE dsr_requests SET reason = 'Lee Poe sent no proof' WHERE id = $1")
        .bind(&old)
        .execute(b.store.pool())
        .await
        .unwrap();
    assert_eq!(
        svc.full(&old).await.unwrap().reason.as_deref(),
        Some("Lee Poe sent no proof")
    );
    serve_once(&b).await;
    let sealed = dump_store(&b.store).await;
    assert!(
        shows(&sealed, "Lee Poe").is_empty(),
        "{:?}",
        shows(&sealed, "Lee Poe")
    );
    assert_eq!(
        svc.full(&old).await.unwrap().reason.as_deref(),
        Some("Lee Poe sent no proof")
    );
    assert_eq!(
        svc.full(&old).await.unwrap().details.as_deref(),
        Some("details")
    );
    let row = async || -> Vec<u8> {
        sqlx::query_scalar("SELECT sealed FROM dsr_requests WHERE id = $1")
            .bind(&old)
            .fetch_one(b.store.pool())
            .await
            .unwrap()
    };
    let once = row().await;
    serve_once(&b).await;
    assert_eq!(row().await, once, "sealing again changed the request");
}

/// Starts the server on `b`'s store, as `lethe serve` does, and stops it once it answers.
async fn serve_once(b: &Bare) {
    let dir = b._tmp.path();
    let app_db = format!("sqlite://{}?mode=rwc", dir.join("app.db").display());
    common::testapp::demo_policies(dir, &app_db, |_, t| t);
    let mut config = common::testapp::config(dir);
    config.database = b.url.clone();
    let app = common::TestApp::start(
        &config,
        lethe::app::Options {
            run_requests: false,
            live_checks: None,
            ..Default::default()
        },
    )
    .await;
    let base = app.base.clone();
    // What was left in clear is sealed before the server answers anything.
    reqwest::get(format!("{base}/healthz")).await.unwrap();
    app.stop().await;
}

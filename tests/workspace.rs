//! The DPO workspace (`/admin`) through the real server: sign-in and sessions, the form
//! token, roles, the queue and a request's page, and every action, each checked against
//! what the store and the audit log then hold.

mod common;

use lethe::requests::Kind;
use lethe::store::Role;

struct Workspace {
    app: common::TestApp,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// The demo policies, erasures waiting for the DPO's approval; no background worker, no
/// jobs; a SQLite store.
async fn start() -> Workspace {
    start_on(None).await
}

/// [`start`] with the store at `database`.
async fn start_on(database: Option<secrecy::SecretString>) -> Workspace {
    let dir = tempfile::tempdir().unwrap();
    let app_db = common::testapp::demo_app_db(dir.path(), 5).await;
    common::testapp::demo_policies(dir.path(), &app_db, |_, t| t);
    let mut config = common::testapp::config(dir.path());
    if let Some(url) = database {
        config.database = url;
    }
    config.approval = "erasure".into();
    // The test reads each state an action leaves: nothing runs the requests meanwhile.
    let options = lethe::app::Options {
        run_requests: false,
        jobs: false,
        ..Default::default()
    };
    let app = common::TestApp::start(&config, options).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Workspace {
        app,
        http,
        _dir: dir,
    }
}

/// A signed-in browser: its cookie and the form token of its pages.
struct Browser {
    cookie: String,
    csrf: String,
    token_id: String,
}

/// The value of `name="csrf"` in a page.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("the page has a form token");
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

impl Workspace {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.base)
    }

    /// A form posted from the workspace's own pages.
    fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(self.url(path))
            .header("origin", &self.app.base)
            .form(form);
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut r = self.http.get(self.url(path));
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send().await.unwrap()
    }

    /// Signs in with a new token of `role`.
    async fn sign_in(&self, role: Role) -> Browser {
        let (token_id, token) = self.app.store.create_admin_token(role).await.unwrap();
        let r = self
            .post("/admin/login", None, &[("token", &token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/admin");
        let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        let cookie = set.split(';').next().unwrap().to_owned();
        let page = self
            .get("/admin", Some(&cookie))
            .await
            .text()
            .await
            .unwrap();
        Browser {
            csrf: csrf_of(&page),
            cookie,
            token_id,
        }
    }

    /// A request handed over by a controller system (no code), for `email`.
    async fn request(&self, kind: Kind, email: &str) -> String {
        let identity = lethe::audit::Identity::parse(&format!("email={email}")).unwrap();
        let now = chrono::Utc::now();
        let external = format!(
            "00000000-0000-4000-8000-{}",
            lethe::crypto::random_hex(6).unwrap()
        );
        let (id, _) = self
            .app
            .service()
            .submit_trusted(kind, &identity, &external, &[], now, "test", now)
            .await
            .unwrap();
        id
    }

    async fn status(&self, id: &str) -> String {
        self.app.service().full(id).await.unwrap().status
    }

    /// `(actor, action)` of the audit entries of request `id`, or of every entry.
    async fn entries(&self, id: Option<&str>) -> Vec<(String, String)> {
        let filter = lethe::audit::Filter {
            request_id: id.map(str::to_owned),
            ..Default::default()
        };
        self.app
            .audit
            .entries(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.header.actor, e.header.action))
            .collect()
    }
}

#[tokio::test]
async fn signing_in_opens_a_session_that_signing_out_ends() {
    let w = start().await;
    // Without a session: to the sign-in page, whatever page.
    for path in ["/admin", "/admin/requests", "/admin/requests/r_x"] {
        let r = w.get(path, None).await;
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()["location"], "/admin/login");
    }
    let form = w.get("/admin/login", None).await.text().await.unwrap();
    assert!(form.contains("<label for=\"token\">"), "{form}");
    assert!(form.contains("name=\"token\""));
    // A wrong token, and a revoked one: no session.
    let (revoked_id, revoked) = w.app.store.create_admin_token(Role::Dpo).await.unwrap();
    w.app
        .store
        .revoke_admin_token(&revoked_id, chrono::Utc::now())
        .await
        .unwrap();
    for bad in ["lt_nothing_here", revoked.as_str(), ""] {
        let r = w
            .post("/admin/login", None, &[("token", bad)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{bad}");
        assert!(r.headers().get("set-cookie").is_none());
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("does not open the workspace")
        );
    }
    // From another site: refused before the token is read.
    let (_, token) = w.app.store.create_admin_token(Role::Dpo).await.unwrap();
    let r = w
        .http
        .post(w.url("/admin/login"))
        .header("origin", "https://evil.example.net")
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none());

    let r = w
        .post("/admin/login", None, &[("token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(set.contains(attr), "{set}");
    }
    // Served over http (no https public_url): not Secure, or the browser would drop it.
    assert!(!set.contains("Secure"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let secret = cookie.split_once('=').unwrap().1.to_owned();
    assert!(secret.len() >= 40, "{secret}");
    // The store keeps a hash of the session's secret, never the secret.
    let kept: Vec<String> = sqlx::query_scalar("SELECT secret_hash FROM admin_sessions")
        .fetch_all(w.app.store.pool())
        .await
        .unwrap();
    assert_eq!(kept.len(), 1);
    assert_ne!(kept[0], secret);
    assert!(!kept[0].contains(&secret));

    let page = w.get("/admin", Some(&cookie)).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let page = page.text().await.unwrap();
    assert!(page.contains("<h1>Overview</h1>"), "{page}");
    let csrf = csrf_of(&page);
    // Signing out needs the session's own form token.
    let r = w
        .post("/admin/logout", Some(&cookie), &[("csrf", "0")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(w.get("/admin", Some(&cookie)).await.status(), 200);
    let r = w
        .post("/admin/logout", Some(&cookie), &[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/admin/login");
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // The old cookie opens nothing any more.
    let r = w.get("/admin", Some(&cookie)).await;
    assert_eq!(r.status(), 303);
    let actions: Vec<String> = w.entries(None).await.into_iter().map(|(_, a)| a).collect();
    assert!(
        actions.contains(&"admin.signed_in".to_owned()),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"admin.signed_out".to_owned()),
        "{actions:?}"
    );
}

#[tokio::test]
async fn a_session_ends_after_thirty_idle_minutes_and_with_its_token() {
    let w = start().await;
    let b = w.sign_in(Role::Dpo).await;
    assert_eq!(w.get("/admin", Some(&b.cookie)).await.status(), 200);
    // 29 minutes without a page: still open.
    let set_seen = async |minutes: i64| {
        let then = chrono::Utc::now() - chrono::Duration::minutes(minutes);
        sqlx::query("UPDATE admin_sessions SET last_seen_at = $1")
            .bind(lethe::store::timestamp(then))
            .execute(w.app.store.pool())
            .await
            .unwrap();
    };
    set_seen(29).await;
    assert_eq!(w.get("/admin", Some(&b.cookie)).await.status(), 200);
    // The page counted as use: 29 more minutes would not end it either.
    let seen: String = sqlx::query_scalar("SELECT last_seen_at FROM admin_sessions")
        .fetch_one(w.app.store.pool())
        .await
        .unwrap();
    assert!(seen > lethe::store::timestamp(chrono::Utc::now() - chrono::Duration::minutes(1)));
    set_seen(31).await;
    let r = w.get("/admin", Some(&b.cookie)).await;
    assert_eq!(r.status(), 303);
    // A fresh session ends when its token is revoked.
    let c = w.sign_in(Role::Dpo).await;
    assert_eq!(
        w.get("/admin/requests", Some(&c.cookie)).await.status(),
        200
    );
    w.app
        .store
        .revoke_admin_token(&c.token_id, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(
        w.get("/admin/requests", Some(&c.cookie)).await.status(),
        303
    );
}

#[tokio::test]
async fn the_queue_filters_pages_and_marks_what_is_late() {
    queue_filters_pages_and_marks(start().await).await;
}

#[tokio::test]
async fn the_queue_filters_pages_and_marks_what_is_late_on_postgres() {
    if let Some(url) = common::postgres_store("the_queue_on_postgres").await {
        queue_filters_pages_and_marks(start_on(Some(url)).await).await;
    }
}

async fn queue_filters_pages_and_marks(w: Workspace) {
    let b = w.sign_in(Role::Auditor).await;
    let mut access = Vec::new();
    for i in 0..52 {
        access.push(
            w.request(Kind::Access, &format!("queue{i}@example.org"))
                .await,
        );
    }
    let erasure = w.request(Kind::Erasure, "person1@example.org").await;
    // One access overdue; one failed.
    // Due a month ago, whatever the clock says.
    let late = chrono::Utc::now() - chrono::Duration::days(30);
    sqlx::query("UPDATE dsr_requests SET due_at = $2 WHERE id = $1")
        .bind(&access[3])
        .bind(lethe::store::timestamp(late))
        .execute(w.app.store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE dsr_requests SET status = 'in_progress' WHERE id = $1")
        .bind(&access[4])
        .execute(w.app.store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE dsr_requests SET status = 'failed' WHERE id = $1")
        .bind(&access[4])
        .execute(w.app.store.pool())
        .await
        .unwrap();
    let page = |q: &str| {
        let w = &w;
        let cookie = b.cookie.clone();
        let q = q.to_owned();
        async move {
            let r = w.get(&format!("/admin/requests{q}"), Some(&cookie)).await;
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, first) = page("").await;
    assert_eq!(status, 200);
    assert!(first.contains("53 requests"), "{first}");
    assert!(first.contains("page 1 of 2"));
    // Soonest due first: the overdue one opens the list, marked.
    let rows: Vec<&str> = first
        .split("<tr><td><a href=\"/admin/requests/")
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 50);
    assert!(rows[0].starts_with(&access[3]), "{}", rows[0]);
    assert!(rows[0].contains("class=\"mark\">overdue"));
    assert!(first.contains(&format!("{}\">{}", access[4], access[4])));
    let failed_row = rows.iter().find(|r| r.starts_with(&access[4])).unwrap();
    assert!(failed_row.contains("class=\"mark\">failed"), "{failed_row}");
    let (_, second) = page("?page=2").await;
    assert_eq!(
        second.split("<tr><td><a href=\"/admin/requests/").count() - 1,
        3
    );
    let (_, erasures) = page("?type=erasure").await;
    assert!(erasures.contains("1 request,"), "{erasures}");
    assert!(erasures.contains(&erasure));
    let (_, failed) = page("?status=failed").await;
    assert!(failed.contains("1 request,") && failed.contains(&access[4]));
    let due_by = format!(
        "?due_by={}",
        (late + chrono::Duration::days(1)).date_naive()
    );
    let (_, due) = page(&due_by).await;
    assert!(
        due.contains("1 request,") && due.contains(&access[3]),
        "{due}"
    );
    for bad in [
        "?status=lost",
        "?type=gossip",
        "?due_by=tomorrow",
        "?page=0",
        "?page=x",
    ] {
        let (status, text) = page(bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(text.contains("Those filters do not work"), "{bad}: {text}");
    }
    // The overview counts them.
    let overview = w.get("/admin", Some(&b.cookie)).await.text().await.unwrap();
    assert!(
        overview.contains("<strong>1</strong> overdue"),
        "{overview}"
    );
    assert!(overview.contains("<strong>1</strong> failed"));
    assert!(overview.contains("<strong>1</strong> waiting for approval"));
}

#[tokio::test]
async fn a_dpo_acts_from_a_requests_page_and_an_auditor_cannot() {
    let w = start().await;
    let dpo = w.sign_in(Role::Dpo).await;
    let auditor = w.sign_in(Role::Auditor).await;
    let id = w.request(Kind::Erasure, "person2@example.org").await;
    assert_eq!(w.status(&id).await, "awaiting_approval");
    let path = format!("/admin/requests/{id}");

    // The auditor reads everything (the person, the timeline) and is offered nothing.
    let seen = w
        .get(&path, Some(&auditor.cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(seen.contains("person2@example.org"), "{seen}");
    assert!(seen.contains("request.submitted"));
    assert!(seen.contains("change nothing"));
    assert!(!seen.contains(&format!("action=\"{path}/approve\"")));
    let r = w
        .post(
            &format!("{path}/approve"),
            Some(&auditor.cookie),
            &[("csrf", &auditor.csrf)],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(w.status(&id).await, "awaiting_approval");

    // The DPO is offered what the state allows.
    let page = w.get(&path, Some(&dpo.cookie)).await.text().await.unwrap();
    for action in ["approve", "extend", "reject"] {
        assert!(
            page.contains(&format!("action=\"{path}/{action}\"")),
            "{action}"
        );
    }
    for action in ["retry", "complete", "lift"] {
        assert!(
            !page.contains(&format!("action=\"{path}/{action}\"")),
            "{action}"
        );
    }
    // Without the form token, or with another session's: refused, nothing changes.
    for csrf in ["", auditor.csrf.as_str()] {
        let r = w
            .post(
                &format!("{path}/approve"),
                Some(&dpo.cookie),
                &[("csrf", csrf)],
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{csrf}");
    }
    // From another site: refused.
    let r = w
        .http
        .post(w.url(&format!("{path}/approve")))
        .header("origin", "https://evil.example.net")
        .header("cookie", &dpo.cookie)
        .form(&[("csrf", dpo.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(w.status(&id).await, "awaiting_approval");

    // An extension needs 1 or 2 months and a reason.
    for form in [
        vec![("months", "1"), ("reason", " ")],
        vec![("months", "3"), ("reason", "many systems")],
        vec![("months", "x"), ("reason", "many systems")],
    ] {
        let mut f = form.clone();
        f.push(("csrf", &dpo.csrf));
        let r = w
            .post(&format!("{path}/extend"), Some(&dpo.cookie), &f)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{form:?}");
    }
    let r = w
        .post(
            &format!("{path}/extend"),
            Some(&dpo.cookie),
            &[
                ("csrf", &dpo.csrf),
                ("months", "2"),
                ("reason", "We hold data in many systems."),
            ],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        format!("{path}?done=extend").as_str()
    );
    let full = w.app.service().full(&id).await.unwrap();
    assert!(full.extended_at.is_some());
    // Once only: the second is refused with the reason, and the page no longer offers it.
    let again = w
        .post(
            &format!("{path}/extend"),
            Some(&dpo.cookie),
            &[("csrf", &dpo.csrf), ("months", "1"), ("reason", "again")],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let page = w
        .get(&format!("{path}?done=extend"), Some(&dpo.cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("The deadline is extended"), "{page}");
    assert!(!page.contains(&format!("action=\"{path}/extend\"")));

    let r = w
        .post(
            &format!("{path}/approve"),
            Some(&dpo.cookie),
            &[("csrf", &dpo.csrf)],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(w.status(&id).await, "verified");

    // A task: completed with a note, which the person reads.
    let task = w.request(Kind::Rectification, "person3@example.org").await;
    assert_eq!(w.status(&task).await, "in_progress");
    let tpath = format!("/admin/requests/{task}");
    let page = w.get(&tpath, Some(&dpo.cookie)).await.text().await.unwrap();
    assert!(
        page.contains(&format!("action=\"{tpath}/complete\"")),
        "{page}"
    );
    let r = w
        .post(
            &format!("{tpath}/complete"),
            Some(&dpo.cookie),
            &[("csrf", &dpo.csrf), ("note", "")],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = w
        .post(
            &format!("{tpath}/complete"),
            Some(&dpo.cookie),
            &[("csrf", &dpo.csrf), ("note", "Your address is corrected.")],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(w.status(&task).await, "completed");
    assert_eq!(
        w.app.service().full(&task).await.unwrap().reason.as_deref(),
        Some("Your address is corrected.")
    );

    // A rejection, with its reason; then nothing more is offered.
    let other = w.request(Kind::Erasure, "person4@example.org").await;
    let opath = format!("/admin/requests/{other}");
    let r = w
        .post(
            &format!("{opath}/reject"),
            Some(&dpo.cookie),
            &[("csrf", &dpo.csrf), ("reason", "The account is not yours.")],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(w.status(&other).await, "rejected");
    let page = w.get(&opath, Some(&dpo.cookie)).await.text().await.unwrap();
    assert!(page.contains("Nothing to do in this state."), "{page}");

    // Every action is audited under the DPO's token.
    let who = format!("admin:{}", dpo.token_id);
    let done: Vec<(String, String)> = [
        w.entries(Some(&id)).await,
        w.entries(Some(&task)).await,
        w.entries(Some(&other)).await,
    ]
    .concat();
    for action in [
        "admin.extended",
        "admin.approved",
        "admin.completed",
        "admin.rejected",
    ] {
        assert!(
            done.iter().any(|(a, x)| *a == who && x == action),
            "{action} by {who}: {done:?}"
        );
    }
    // An unknown request.
    let r = w.get("/admin/requests/r_nothing", Some(&dpo.cookie)).await;
    assert_eq!(r.status(), 404);
    let r = w
        .post(
            "/admin/requests/r_nothing/approve",
            Some(&dpo.cookie),
            &[("csrf", &dpo.csrf)],
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
}

#[tokio::test]
async fn the_register_vendors_retention_and_audit_pages_show_what_the_policy_and_store_hold() {
    let w = start().await;
    let b = w.sign_in(Role::Auditor).await;
    let policy = &w.app.policy;
    // The register: every purpose, with its downloads.
    let page = w
        .get("/admin/register", Some(&b.cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Record of processing activities"), "{page}");
    for p in &policy.purposes {
        assert!(
            page.contains(&format!("<code>{}</code>", p.id.as_str())),
            "{}",
            p.id.as_str()
        );
    }
    let csv = w.get("/admin/register.csv", Some(&b.cookie)).await;
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        csv.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("register.csv")
    );
    let csv = csv.text().await.unwrap();
    assert_eq!(
        csv.as_bytes(),
        lethe::register::to_csv(&lethe::register::rows(policy))
            .unwrap()
            .as_slice()
    );
    let json: Vec<serde_json::Value> = w
        .get("/admin/register.json", Some(&b.cookie))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json.len(), policy.purposes.len());
    // Without a session, no download.
    assert_eq!(w.get("/admin/register.csv", None).await.status(), 303);
    // The data map: drawn, and the transfers out of the EEA named in words.
    let map = w
        .get("/admin/register/map", Some(&b.cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(map.contains("<svg ") && map.contains("</svg>"), "{map}");
    let (nodes, flows) = lethe::register::map::build(policy);
    assert_eq!(map.matches("<rect ").count(), nodes.len());
    for n in nodes.iter().filter(|n| n.leaves_eea) {
        assert!(
            map.contains(&format!(
                "<li><span class=\"mark\">{}</span></li>",
                minijinja_escape(&n.label)
            )),
            "{}",
            n.label
        );
    }
    let as_text = &map[map.find("The same links as text").unwrap()..];
    assert_eq!(as_text.matches("<li>").count(), flows.len());

    // Vendors: the same findings and obligations as `lethe vendors check`.
    let page = w
        .get("/admin/vendors", Some(&b.cookie))
        .await
        .text()
        .await
        .unwrap();
    let today = chrono::Utc::now().date_naive();
    let findings = lethe::vendors::check(policy, today);
    if findings.is_empty() {
        assert!(page.contains("No findings"), "{page}");
    }
    for f in &findings {
        let shown = minijinja_escape(&f.message);
        assert!(page.contains(&shown), "{} not in the page", f.message);
    }
    // Each gap of the matrix sits where a finding names the agreement and the measure.
    let gaps = findings
        .iter()
        .filter(|f| f.agreement.is_some() && f.parameter.is_some())
        .count();
    let matrix = &page[page.find("Controls × agreements").unwrap()..];
    let marked = matrix.matches("<span class=\"mark\">gap</span>").count();
    assert!(marked > 0 && marked <= gaps, "{marked} of {gaps}");
    let obligations = lethe::vendors::obligations(policy);
    assert!(!obligations.is_empty());
    for o in &obligations {
        assert!(page.contains(&minijinja_escape(&o.label)), "{}", o.label);
    }

    // Retention: the plan over the demo database, and no run yet.
    let page = w
        .get("/admin/retention", Some(&b.cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("What is due now"), "{page}");
    assert!(!page.contains("could not be made"), "{page}");
    assert!(page.contains("No retention run yet."));

    // The audit log verifies; its export is every entry, and is itself audited.
    let page = w
        .get("/admin/audit", Some(&b.cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("The log verifies"), "{page}");
    let before = w.entries(None).await.len();
    let export = w.get("/admin/audit/export.jsonl", Some(&b.cookie)).await;
    assert_eq!(export.status(), 200);
    let lines = export.text().await.unwrap().lines().count();
    assert_eq!(lines, before);
    let after = w.entries(None).await;
    assert_eq!(
        after.last().unwrap(),
        &(
            format!("admin:{}", b.token_id),
            "admin.audit_exported".to_owned()
        )
    );
}

/// What minijinja's HTML escaping makes of `text`.
fn minijinja_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('/', "&#x2f;")
}

#[tokio::test]
async fn a_dpo_creates_and_revokes_tokens_and_an_auditor_cannot() {
    let w = start().await;
    let auditor = w.sign_in(Role::Auditor).await;
    assert_eq!(
        w.get("/admin/tokens", Some(&auditor.cookie)).await.status(),
        403
    );
    let r = w
        .post(
            "/admin/tokens",
            Some(&auditor.cookie),
            &[("csrf", &auditor.csrf), ("role", "dpo")],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let dpo = w.sign_in(Role::Dpo).await;
    let page = w
        .get("/admin/tokens", Some(&dpo.cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("<code>{}</code>", auditor.token_id)),
        "{page}"
    );
    for (form, why) in [
        (vec![("role", "root"), ("expires", "90d")], "Choose a role"),
        (
            vec![("role", "auditor"), ("expires", "forever")],
            "is not a lifetime",
        ),
        (
            vec![("role", "auditor"), ("expires", "0d")],
            "is not a lifetime",
        ),
    ] {
        let mut f = form.clone();
        f.push(("csrf", &dpo.csrf));
        let r = w
            .post("/admin/tokens", Some(&dpo.cookie), &f)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{form:?}");
        assert!(r.text().await.unwrap().contains(why), "{form:?}");
    }
    let r = w
        .post(
            "/admin/tokens",
            Some(&dpo.cookie),
            &[
                ("csrf", &dpo.csrf),
                ("role", "auditor"),
                ("label", "grafana"),
                ("expires", "12h"),
            ],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let page = r.text().await.unwrap();
    let at = page.find("<p><code>lt_").expect("the new token is shown");
    let token = page[at + "<p><code>".len()..]
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    // It works, as an auditor's, with its label and its end.
    let (new_id, role) = w.app.store.admin_token(&token).await.unwrap().unwrap();
    assert_eq!(role, Role::Auditor);
    let listed = w.app.store.admin_tokens().await.unwrap();
    let t = listed.iter().find(|t| t.id == new_id).unwrap();
    assert_eq!(t.label.as_deref(), Some("grafana"));
    assert!(t.expires_at.is_some());
    // Shown once: the list page holds its id, never its secret.
    let page = w
        .get("/admin/tokens", Some(&dpo.cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(&new_id) && !page.contains(&token));
    // Revoked, it opens nothing; a second revocation finds nothing in force.
    let revoke = format!("/admin/tokens/{new_id}/revoke");
    let r = w
        .post(&revoke, Some(&dpo.cookie), &[("csrf", &dpo.csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(w.app.store.admin_token(&token).await.unwrap().is_none());
    let r = w
        .post(&revoke, Some(&dpo.cookie), &[("csrf", &dpo.csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let who = format!("admin:{}", dpo.token_id);
    let done = w.entries(None).await;
    for action in ["admin.token_created", "admin.token_revoked"] {
        assert!(
            done.iter().any(|(a, x)| *a == who && x == action),
            "{action}: {done:?}"
        );
    }
}

#[tokio::test]
async fn the_jobs_page_shows_each_declared_job_with_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let app_db = common::testapp::demo_app_db(dir.path(), 3).await;
    common::testapp::demo_policies(dir.path(), &app_db, |_, t| t);
    let config = common::testapp::config(dir.path());
    std::fs::create_dir_all(&config.jobs).unwrap();
    std::fs::write(
        config.jobs.join("jobs.yaml"),
        "jobs:\n  - name: nightly-retention\n    kind: retention\n    schedule: \"0 30 2 * * *\"\n  - name: checkpoint\n    kind: audit_checkpoint\n    schedule: \"0 0 3 * * *\"\n",
    )
    .unwrap();
    let options = lethe::app::Options {
        run_requests: false,
        jobs: false,
        ..Default::default()
    };
    let app = common::TestApp::start(&config, options).await;
    let now = chrono::Utc::now();
    let run = app
        .store
        .start_run("nightly-retention", "retention", None, "test", now)
        .await
        .unwrap()
        .unwrap();
    app.store
        .finish_run(run, "completed", &serde_json::json!({ "deleted": 3 }), now)
        .await
        .unwrap();
    let failed = app
        .store
        .start_run("checkpoint", "audit_checkpoint", None, "test", now)
        .await
        .unwrap()
        .unwrap();
    app.store
        .finish_run(failed, "failed", &serde_json::json!({}), now)
        .await
        .unwrap();
    let w = Workspace {
        app,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        _dir: dir,
    };
    let b = w.sign_in(Role::Auditor).await;
    let page = w
        .get("/admin/jobs", Some(&b.cookie))
        .await
        .text()
        .await
        .unwrap();
    for needle in [
        "<td>nightly-retention</td><td>retention</td><td><code>0 30 2 * * *</code></td>",
        "<td>checkpoint</td><td>audit_checkpoint</td>",
        "<span class=\"mark\">failed</span>",
        "{&quot;deleted&quot;: 3}",
    ] {
        assert!(page.contains(needle), "{needle} not in {page}");
    }
    // The next run of the nightly job: 02:30 UTC, today or tomorrow.
    let next = if now.time() < chrono::NaiveTime::from_hms_opt(2, 30, 0).unwrap() {
        now.date_naive()
    } else {
        now.date_naive().succ_opt().unwrap()
    };
    assert!(page.contains(&format!("<td>{next} 02:30</td>")), "{page}");
    // The checkpoint job never succeeded.
    assert!(page.contains("<td>never</td>"), "{page}");
}

/// Found by an attack on the workspace: two extensions posted at once (a double click,
/// two tabs) both went through, with two e-mails naming two deadlines; a handful of
/// actions at once each held a connection while waiting for a second, and stalled.
#[tokio::test]
async fn actions_posted_at_the_same_moment_are_each_done_once_and_none_stalls() {
    let w = start().await;
    let dpo = w.sign_in(Role::Dpo).await;
    let id = w.request(Kind::Access, "person1@example.org").await;
    let path = format!("/admin/requests/{id}/extend");
    let extend = |months: &'static str| {
        w.post(
            &path,
            Some(&dpo.cookie),
            &[
                ("csrf", &dpo.csrf),
                ("months", months),
                ("reason", "Many systems."),
            ],
        )
        .send()
    };
    let (a, b) = tokio::join!(extend("1"), extend("2"));
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [303, 409]);
    let entries = w.entries(Some(&id)).await;
    assert_eq!(
        entries
            .iter()
            .filter(|(_, a)| a == "admin.extended")
            .count(),
        1,
        "{entries:?}"
    );
    let mails: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE kind = 'extension'")
            .fetch_one(w.app.store.pool())
            .await
            .unwrap();
    assert_eq!(mails, 1);

    // More actions at once than the store has connections: each is done, none waits long.
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(
            w.request(Kind::Erasure, &format!("person{}@example.org", 10 + i))
                .await,
        );
    }
    let started = std::time::Instant::now();
    let rejects = ids.iter().map(|id| {
        w.post(
            &format!("/admin/requests/{id}/reject"),
            Some(&dpo.cookie),
            &[("csrf", &dpo.csrf), ("reason", "Not yours.")],
        )
        .send()
    });
    for r in futures_util::future::join_all(rejects).await {
        assert_eq!(r.unwrap().status(), 303);
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    for id in &ids {
        assert_eq!(w.status(id).await, "rejected");
    }
    // An ended request says so: 409, not "no such request".
    let again = w
        .post(
            &format!("/admin/requests/{}/reject", ids[0]),
            Some(&dpo.cookie),
            &[("csrf", &dpo.csrf), ("reason", "Again.")],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
}

#[tokio::test]
async fn odd_filters_and_control_characters_get_a_page_saying_why() {
    let w = start().await;
    let dpo = w.sign_in(Role::Dpo).await;
    for q in ["?status=completed&status=all", "?page=2&page=3"] {
        let r = w
            .get(&format!("/admin/requests{q}"), Some(&dpo.cookie))
            .await;
        assert_eq!(r.status(), 400, "{q}");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("Those filters do not work")
        );
    }
    let id = w.request(Kind::Erasure, "person2@example.org").await;
    for reason in ["no\u{0}pe", "\u{202E}evil", "bell\u{7}"] {
        let r = w
            .post(
                &format!("/admin/requests/{id}/reject"),
                Some(&dpo.cookie),
                &[("csrf", &dpo.csrf), ("reason", reason)],
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{reason:?}");
    }
    assert_eq!(w.status(&id).await, "awaiting_approval");
    // Line breaks in a reason are fine.
    let r = w
        .post(
            &format!("/admin/requests/{id}/reject"),
            Some(&dpo.cookie),
            &[
                ("csrf", &dpo.csrf),
                ("reason", "First line.\r\nSecond line."),
            ],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = w
        .post(
            "/admin/tokens",
            Some(&dpo.cookie),
            &[
                ("csrf", &dpo.csrf),
                ("role", "auditor"),
                ("label", "a\r\nX-Injected: 1"),
                ("expires", "1d"),
            ],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // A page asked with a method it does not take: a page saying so.
    for path in ["/admin/logout", &format!("/admin/requests/{id}/approve")] {
        let r = w.get(path, Some(&dpo.cookie)).await;
        assert_eq!(r.status(), 405, "{path}");
        assert!(r.text().await.unwrap().contains("Not like this"), "{path}");
    }
    // The JSON admin API refuses the same characters.
    let (_, token) = w.app.store.create_admin_token(Role::Dpo).await.unwrap();
    let other = w.request(Kind::Erasure, "person3@example.org").await;
    let r = w
        .http
        .post(w.url(&format!("/v1/admin/requests/{other}/reject")))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "reason": "no\u{0}pe" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(w.status(&other).await, "awaiting_approval");
    // A duplicated `done` shows the page without the note.
    let r = w
        .get(
            &format!("/admin/requests/{id}?done=extend&done=approve"),
            Some(&dpo.cookie),
        )
        .await;
    assert_eq!(r.status(), 200);
}

/// The two actions the other tests do not reach: running a failed request again, and
/// lifting a restriction (Art. 18(3)), the person told first.
#[tokio::test]
async fn a_dpo_runs_a_failed_request_again_and_lifts_a_restriction() {
    let w = start().await;
    let dpo = w.sign_in(Role::Dpo).await;
    let failed = w.request(Kind::Access, "person1@example.org").await;
    for status in ["in_progress", "failed"] {
        sqlx::query("UPDATE dsr_requests SET status = $2 WHERE id = $1")
            .bind(&failed)
            .bind(status)
            .execute(w.app.store.pool())
            .await
            .unwrap();
    }
    let path = format!("/admin/requests/{failed}");
    let page = w.get(&path, Some(&dpo.cookie)).await.text().await.unwrap();
    assert!(page.contains(&format!("action=\"{path}/retry\"")), "{page}");
    assert!(page.contains(&format!("action=\"{path}/complete\"")));
    let r = w
        .post(
            &format!("{path}/retry"),
            Some(&dpo.cookie),
            &[("csrf", &dpo.csrf)],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(w.status(&failed).await, "verified");

    let restriction = w.request(Kind::Restriction, "person2@example.org").await;
    let path = format!("/admin/requests/{restriction}");
    let page = w.get(&path, Some(&dpo.cookie)).await.text().await.unwrap();
    assert!(page.contains("in force"), "{page}");
    assert!(page.contains(&format!("action=\"{path}/lift\"")));
    let r = w
        .post(
            &format!("{path}/lift"),
            Some(&dpo.cookie),
            &[
                ("csrf", &dpo.csrf),
                ("note", "The accuracy is now verified."),
            ],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let announced: Option<String> = sqlx::query_scalar(
        "SELECT lift_announced_at FROM subject_restrictions WHERE request_id = $1",
    )
    .bind(&restriction)
    .fetch_one(w.app.store.pool())
    .await
    .unwrap();
    assert!(announced.is_some());
    // Lifting again: nothing left to lift.
    let again = w
        .post(
            &format!("{path}/lift"),
            Some(&dpo.cookie),
            &[("csrf", &dpo.csrf), ("note", "Again.")],
        )
        .send()
        .await
        .unwrap();
    assert!(again.status().is_client_error());
    let who = format!("admin:{}", dpo.token_id);
    let done = [
        w.entries(Some(&failed)).await,
        w.entries(Some(&restriction)).await,
    ]
    .concat();
    assert!(
        done.iter().any(|(a, x)| *a == who && x == "admin.retried"),
        "{done:?}"
    );
    assert!(
        done.iter()
            .any(|(a, x)| *a == who && x == "restriction.lift_announced"),
        "{done:?}"
    );
}

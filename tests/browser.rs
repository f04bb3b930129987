//! The portal in a real browser: Debian's chromium, driven through chromedriver over the
//! WebDriver protocol, against the real server on port 0, with the code and the download
//! link read from the mail actually sent (over SMTP when `LETHE_TEST_SMTP` is set, else
//! from the `.eml` outbox). Runs when `LETHE_TEST_CHROMEDRIVER` names chromedriver
//! (`/usr/bin/chromedriver`; `.ci/run` installs it).

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver, started for one test and stopped with it.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

/// One browser session.
struct Browser<'d> {
    driver: &'d Driver,
    session: String,
    downloads: PathBuf,
}

impl Driver {
    /// chromedriver from `LETHE_TEST_CHROMEDRIVER`, or None (with a note) when unset.
    async fn start(test: &str) -> Option<Self> {
        let Ok(path) = std::env::var("LETHE_TEST_CHROMEDRIVER") else {
            // Past the harness's capture, so the note shows when the test "passes".
            common::skipped(
                test,
                "a browser (apt-get install chromium chromium-driver)",
                "LETHE_TEST_CHROMEDRIVER=/usr/bin/chromedriver",
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // In a process group of its own, so that the browsers it starts go with it even
        // when a test fails before closing its session.
        let child = Command::new(&path)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {path}: {e}"));
        let driver = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return Some(driver);
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "WebDriver {path}: {status} {v}");
        v["value"].clone()
    }

    /// A headless chromium that saves downloads into `downloads`.
    async fn browser(&self, downloads: &Path) -> Browser<'_> {
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            },
        } } });
        let v = self
            .call(reqwest::Method::POST, "/session", Some(caps))
            .await;
        let session = v["sessionId"].as_str().unwrap().to_owned();
        let b = Browser {
            driver: self,
            session,
            downloads: downloads.to_path_buf(),
        };
        // Headless chromium saves downloads only when told where.
        b.call(
            reqwest::Method::POST,
            "/chromium/send_command",
            json!({ "cmd": "Browser.setDownloadBehavior", "params": {
                "behavior": "allow", "downloadPath": downloads.display().to_string() } }),
        )
        .await;
        b
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every browser it started.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser<'_> {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let body = (method != reqwest::Method::GET).then_some(body);
        self.driver
            .call(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            json!({}),
        )
        .await;
    }

    async fn type_in(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// The page's source once it contains `needle` (forms navigate asynchronously).
    async fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let page = self.source().await;
            if page.contains(needle) {
                return page;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on {}: {page}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The files fully downloaded so far.
    fn downloaded(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.downloads)
            .into_iter()
            .flatten()
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| {
                !p.extension()
                    .is_some_and(|x| x == "crdownload" || x == "tmp")
            })
            .collect()
    }

    /// The page as the browser shows it at `width` × `height`, saved as a PNG to `path`.
    async fn screenshot(&self, width: u32, height: u32, path: &Path) {
        use base64::Engine;
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            json!({ "width": width, "height": height }),
        )
        .await;
        let png = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    async fn quit(self) {
        self.driver
            .call(
                reqwest::Method::DELETE,
                &format!("/session/{}", self.session),
                None,
            )
            .await;
    }
}

struct Server {
    app: common::TestApp,
    mail_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Server {
    type Target = common::TestApp;
    fn deref(&self) -> &common::TestApp {
        &self.app
    }
}

/// The service as `lethe serve` builds it: the demo policy over an application database
/// of synthetic people, the request worker in the background.
async fn serve() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let app_db = common::testapp::demo_app_db(tmp.path(), 20).await;
    common::testapp::demo_policies(tmp.path(), &app_db, |_, t| t);
    let mut config = common::testapp::config(tmp.path());
    let mail_dir = common::testapp::use_smtp(&mut config, "browser");
    let app = common::TestApp::start(&config, lethe::app::Options::default()).await;
    Server {
        app,
        mail_dir,
        _dir: tmp,
    }
}

impl Server {
    /// The text of the mail about request `id` that contains `needle`, decoded from
    /// quoted-printable.
    async fn mail(&self, id: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for e in std::fs::read_dir(&self.mail_dir).into_iter().flatten() {
                let raw = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
                let text = raw
                    .replace("=\r\n", "")
                    .replace("=\n", "")
                    .replace("=3D", "=");
                if text.contains(id) && text.contains(needle) {
                    return text;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no mail for {id} with {needle:?} in {}",
                self.mail_dir.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn requests(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM dsr_requests")
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }
}

/// `text` from `start` (excluded) up to the first character that cannot be part of a URL.
fn after<'a>(text: &'a str, start: &str) -> &'a str {
    let i = text
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in {text}"))
        + start.len();
    let rest = &text[i..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == '<')
        .unwrap_or(rest.len());
    &rest[..end]
}

/// A person makes an access request in the portal, confirms it with the code from the
/// e-mail, follows the completion e-mail's link and presses download: the zip lands in
/// the browser's download folder, and opening the link alone downloads nothing.
#[tokio::test]
async fn a_person_requests_confirms_and_downloads_their_data_in_a_browser() {
    let Some(driver) = Driver::start("a_person_requests_confirms_and_downloads").await else {
        return;
    };
    let s = serve().await;
    let downloads = tempfile::tempdir().unwrap();
    let b = driver.browser(downloads.path()).await;

    b.go(&format!("{}/", s.base)).await;
    b.wait_for("Make a request about your personal data").await;
    b.click("#type-access").await;
    b.type_in("#email", "person3@example.org").await;
    b.click("form[action='/portal/requests'] button[type=submit]")
        .await;
    let page = b.wait_for("The code from the e-mail").await;
    let id = after(&page, "<code>").split('<').next().unwrap().to_owned();
    assert!(id.starts_with("r_"), "{id}");

    let mail = s.mail(&id, "verification code is").await;
    let i = mail.find("verification code is ").unwrap() + 21;
    let code: String = mail[i..].chars().take(11).collect();
    b.type_in("#code", &code).await;
    b.click(&format!(
        "form[action='/portal/requests/{id}/verify'] button[type=submit]"
    ))
    .await;
    b.wait_for("Your access request").await;

    // The worker runs the request; the completion e-mail carries the download link.
    let done = s.mail(&id, "/download?secret=").await;
    let link = format!("/portal/requests/{id}/download?secret=")
        + after(&done, &format!("/portal/requests/{id}/download?secret="));
    let secret = link.rsplit('=').next().unwrap();
    assert_eq!(secret.len(), 32, "192 bits in base64url: {link}");
    // Opening the link (as a mail scanner would) shows a button and downloads nothing.
    b.go(&format!("{}{link}", s.base)).await;
    b.wait_for("Download my data").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(b.downloaded().is_empty(), "{:?}", b.downloaded());
    b.click(&format!(
        "form[action='/portal/requests/{id}/download'] button[type=submit]"
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let file = loop {
        if let Some(f) = b.downloaded().into_iter().next() {
            break f;
        }
        assert!(Instant::now() < deadline, "nothing was downloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        file.file_name().unwrap().to_string_lossy(),
        format!("{id}.zip")
    );
    let bytes = std::fs::read(&file).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut data = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("data.json").unwrap(), &mut data).unwrap();
    assert!(data.contains("person3@example.org"), "{data}");
    b.quit().await;
}

/// A page on another origin posts a portal form and, with the text/plain trick, a JSON
/// body to the API: the portal answers 403, the API 415, and no request is made.
#[tokio::test]
async fn a_page_on_another_origin_cannot_post_into_the_portal_or_the_api() {
    let Some(driver) = Driver::start("a_page_on_another_origin_cannot_post").await else {
        return;
    };
    let s = serve().await;
    // The other site: another port is another origin.
    let target = s.base.clone();
    let page = format!(
        r#"<!doctype html><title>elsewhere</title>
<form id="portal" method="post" action="{target}/portal/requests">
<input name="type" value="erasure"><input name="email" value="victim@example.org">
<button id="portal-go" type="submit">go</button></form>
<form id="api" method="post" action="{target}/v1/requests" enctype="text/plain">
<input name='{{"type":"erasure","identity":{{"email":"victim@example.org"}},"details":"' value='"}}'>
<button id="api-go" type="submit">go</button></form>"#
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let downloads = tempfile::tempdir().unwrap();
    let b = driver.browser(downloads.path()).await;
    let before = s.requests().await;

    b.go(&format!("{elsewhere}/")).await;
    b.wait_for("elsewhere").await;
    b.click("#portal-go").await;
    let refused = b.wait_for("not sent from this site's own page").await;
    assert!(b.url().await.starts_with(&target), "{}", b.url().await);
    assert!(!refused.contains("The code from the e-mail"), "{refused}");
    assert_eq!(
        s.requests().await,
        before,
        "a cross-site form made a request"
    );

    b.go(&format!("{elsewhere}/")).await;
    b.wait_for("elsewhere").await;
    b.click("#api-go").await;
    let answer = b.wait_for("unsupported_media_type").await;
    assert!(answer.contains("application/json"), "{answer}");
    assert_eq!(
        s.requests().await,
        before,
        "a cross-site text/plain post made a request"
    );
    b.quit().await;
}

/// Where the workspace's screenshots are kept for a reviewer: `target/tmp/screenshots`.
fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
}

/// A DPO signs in to the workspace with a token, finds a task in the queue, extends its
/// deadline with a reason, downloads the register as CSV and signs out; each page is
/// saved at 1280 and 390 px wide.
#[tokio::test]
async fn a_dpo_works_the_queue_extends_a_request_and_downloads_the_register_in_a_browser() {
    let Some(driver) = Driver::start("a_dpo_works_the_queue_in_a_browser").await else {
        return;
    };
    let s = serve().await;
    let (_, token) = s
        .store
        .create_admin_token(lethe::store::Role::Dpo)
        .await
        .unwrap();
    let identity = lethe::audit::Identity::parse("email=person7@example.org").unwrap();
    let now = chrono::Utc::now();
    let (task, _) = s
        .service()
        .submit_trusted(
            lethe::requests::Kind::Rectification,
            &identity,
            "00000000-0000-4000-8000-00000000b001",
            &[],
            now,
            "test",
            now,
        )
        .await
        .unwrap();
    let downloads = tempfile::tempdir().unwrap();
    let b = driver.browser(downloads.path()).await;
    let shots = screenshots();
    let shoot = async |name: &str| {
        for (w, h) in [(1280, 900), (390, 844)] {
            b.screenshot(w, h, &shots.join(format!("workspace-{name}-{w}.png")))
                .await;
        }
    };

    // Not signed in: the sign-in page.
    b.go(&format!("{}/admin", s.base)).await;
    b.wait_for("Sign in to the workspace").await;
    assert!(b.url().await.ends_with("/admin/login"));
    shoot("sign-in").await;
    b.type_in("#token", &token).await;
    b.click("main button[type=submit]").await;
    let overview = b.wait_for("<h1>Overview</h1>").await;
    assert!(overview.contains("tasks to carry out"), "{overview}");
    shoot("overview").await;

    // The queue, then the task's page.
    b.go(&format!("{}/admin/requests", s.base)).await;
    b.wait_for(&task).await;
    shoot("requests").await;
    b.click(&format!("a[href='/admin/requests/{task}']")).await;
    let page = b.wait_for("Extend the deadline").await;
    assert!(page.contains("person7@example.org"), "{page}");
    b.click("#months option[value='2']").await;
    b.type_in(
        "#extend-reason",
        "We are checking the correction with our shop system.",
    )
    .await;
    b.click("form[action$='/extend'] button").await;
    let done = b.wait_for("The deadline is extended").await;
    assert!(done.contains("(extended on"), "{done}");
    shoot("request").await;
    let full = s.service().full(&task).await.unwrap();
    assert!(full.extended_at.is_some());
    assert_eq!(
        full.reason.as_deref(),
        Some("We are checking the correction with our shop system.")
    );

    // The register, downloaded as CSV: the file is the register's CSV.
    b.go(&format!("{}/admin/register", s.base)).await;
    b.wait_for("Record of processing activities").await;
    shoot("register").await;
    b.go(&format!("{}/admin/register/map", s.base)).await;
    b.wait_for("Transfers out of the EEA").await;
    shoot("map").await;
    b.go(&format!("{}/admin/register", s.base)).await;
    b.wait_for("Record of processing activities").await;
    b.click("a[href='/admin/register.csv']").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let csv = loop {
        if let Some(p) = b
            .downloaded()
            .into_iter()
            .find(|p| p.ends_with("register.csv"))
        {
            break std::fs::read(p).unwrap();
        }
        assert!(Instant::now() < deadline, "no register.csv downloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        csv,
        lethe::register::to_csv(&lethe::register::rows(&s.policy)).unwrap()
    );

    // Signing out ends the session: the workspace asks to sign in again.
    b.click("form[action='/admin/logout'] button").await;
    b.wait_for("Sign in to the workspace").await;
    b.go(&format!("{}/admin/requests", s.base)).await;
    b.wait_for("Sign in to the workspace").await;
    assert!(b.url().await.ends_with("/admin/login"));
    b.quit().await;
}

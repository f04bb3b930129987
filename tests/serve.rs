//! `lethe serve` answers /healthz, /readyz and /privacy on SQLite and PostgreSQL: the
//! real server on port 0, spoken to over HTTP.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use lethe::store::Store;
use secrecy::SecretString;

async fn health_ready_privacy(url: SecretString, backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let app = common::TestApp::demo(dir.path(), Some(&url)).await;
    let (base, store, policy) = (app.base.clone(), app.store.clone(), app.policy.clone());
    let http = reqwest::Client::new();

    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["status"], "ok");

    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ready["backend"], backend);
    assert_eq!(ready["policy_hash"], policy.hash.as_str());

    let r = http.get(format!("{base}/privacy")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let html = r.text().await.unwrap();
    for text in [
        "Registration and billing",
        "Visitors and cookies",
        "Content",
        "8 years",
        "90 days",
        "until the account is closed",
        "privacy@example.com",
    ] {
        assert!(html.contains(text), "{text} missing from /privacy");
    }

    let r = http
        .get(format!("{base}/no/such/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "no_route"
    );

    // Once the store is gone the service is no longer ready, but still alive.
    store.close().await;
    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "unavailable"
    );
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The store is closed: stopping cannot free this instance's claims.
    drop(app);
}

#[tokio::test]
async fn serves_health_readiness_and_the_notice_on_sqlite() {
    let (url, _dir) = common::sqlite_store();
    health_ready_privacy(url, "sqlite").await;
}

#[tokio::test]
async fn serves_health_readiness_and_the_notice_on_postgres() {
    let Some(url) =
        common::postgres_store("serves_health_readiness_and_the_notice_on_postgres").await
    else {
        return;
    };
    health_ready_privacy(url, "postgres").await;
}

/// A fresh directory holding the demo policies, as a checkout has them.
fn checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, policies.join(p.file_name().unwrap())).unwrap();
    }
    dir
}

/// The binary, as an operator runs it on a fresh checkout: it creates its store and the
/// demo application database, serves, and stops cleanly on SIGTERM.
#[test]
fn the_binary_serves_on_a_fresh_directory_and_stops_on_sigterm() {
    let dir = checkout();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["serve", "--bind", "127.0.0.1:0", "--log-format", "json"])
        .current_dir(dir.path())
        .env_remove("APP_DATABASE_URL")
        .env_remove("LETHE_DATABASE")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut address = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["fields"]["message"] == "lethe is serving" {
            address = v["fields"]["address"].as_str().map(str::to_owned);
            break;
        }
    }
    let address = address.expect("the server announced its address");
    let body = reqwest::blocking_get(&format!("http://{address}/readyz"));
    assert!(body.contains("\"ready\""), "{body}");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
    assert!(dir.path().join("lethe.db").exists());
    let demo = dir.path().join("demo-app.db");
    let people: i64 = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}", demo.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    });
    assert_eq!(
        people, 200,
        "the demo application database holds synthetic people"
    );

    // The policy load went through the audit log.
    let actions: Vec<String> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let url = SecretString::from(format!(
            "sqlite://{}",
            dir.path().join("lethe.db").display()
        ));
        let keys = lethe::audit::KeySource {
            master: None,
            signing: None,
            dir: dir.path().join(".lethe"),
        };
        let log = lethe::audit::AuditLog::open(Store::open(&url).await.unwrap(), &keys)
            .await
            .unwrap();
        assert!(log.verify().await.unwrap().ok());
        log.entries(&Default::default())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.header.action)
            .collect()
    });
    assert_eq!(actions, ["policy.loaded"]);
}

#[tokio::test]
async fn the_admin_audit_routes_verify_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let app = common::TestApp::demo(dir.path(), None).await;
    let (store, audit) = (app.store.clone(), app.audit.clone());
    for i in 0..3 {
        audit
            .append(
                lethe::audit::NewEntry::new(lethe::audit::Actor::System, "test.event")
                    .summary(serde_json::json!({ "n": i })),
            )
            .await
            .unwrap();
    }
    let (_, auditor) = store
        .create_admin_token(lethe::store::Role::Auditor)
        .await
        .unwrap();
    let base = format!("{}/v1/admin/audit", app.base);
    let plain = reqwest::Client::new();
    // Without a token, or with a made-up one: 401.
    assert_eq!(
        plain
            .get(format!("{base}/verify"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        plain
            .get(format!("{base}/verify"))
            .bearer_auth("lt_000000000000_00")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {auditor}").parse().unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(auth)
        .build()
        .unwrap();
    assert_eq!(
        http.get(format!("{base}/checkpoint"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let report: serde_json::Value = http
        .get(format!("{base}/verify"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The start's `policy.loaded` and the three.
    assert_eq!(report["entries"], 4);
    assert_eq!(report["problems"].as_array().unwrap().len(), 0);
    let r = http
        .post(format!("{base}/checkpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cp: serde_json::Value = r.json().await.unwrap();
    assert_eq!(cp["tree_size"], 4);
    assert_eq!(cp["root_hash"], report["root_hash"]);
    let latest: serde_json::Value = http
        .get(format!("{base}/checkpoint"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(latest, cp);
    app.stop().await;
}

mod reqwest {
    pub use ::reqwest::*;

    /// One GET from a synchronous test.
    pub fn blocking_get(url: &str) -> String {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async { ::reqwest::get(url).await.unwrap().text().await.unwrap() })
    }

    /// One GET from a synchronous test: the status and the body.
    pub fn blocking_status(url: &str) -> (u16, String) {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let r = ::reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    }
}

/// The binary under a umask that would let anyone read what it creates: the store, its
/// WAL files, the key files and the `.eml` outbox are its owner's alone. With the log at
/// debug, no request token, link secret or address reaches the log, whether the token
/// came in a header or, from an old client, in the query.
#[cfg(unix)]
#[test]
fn the_binary_keeps_its_files_private_and_secrets_out_of_its_log() {
    use std::os::unix::fs::PermissionsExt;
    let dir = checkout();
    /// Stops the server however the test ends.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Command::new("sh")
        .args([
            "-c",
            "umask 000 && exec \"$0\" serve --bind 127.0.0.1:0 --log-format json",
            env!("CARGO_BIN_EXE_lethe"),
        ])
        .current_dir(dir.path())
        .env_remove("APP_DATABASE_URL")
        .env_remove("LETHE_DATABASE")
        .env_remove("LETHE_SMTP_URL")
        .env("LETHE_RATE_LIMIT", "0")
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut child = Running(child);
    let mut log = Vec::new();
    let mut address = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        log.push(line);
        if v["fields"]["message"] == "lethe is serving" {
            address = v["fields"]["address"].as_str().map(str::to_owned);
            break;
        }
    }
    let address = address.expect("the server announced its address");
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let email = "Private.Person@example.org";
    let (id, token, portal) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let http = ::reqwest::Client::new();
        let created: serde_json::Value = http
            .post(format!("http://{address}/v1/requests"))
            .json(&serde_json::json!({ "type": "access", "identity": { "email": email } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["id"].as_str().unwrap().to_owned();
        let token = created["token"].as_str().unwrap().to_owned();
        // A client of an earlier version, with the token in the query: still served.
        let r = http
            .get(format!("http://{address}/v1/requests/{id}?token={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = http
            .get(format!("http://{address}/v1/requests/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // The e-mail's link, with a (wrong) secret of its own.
        let secret = "5ec12e75ec12e75ec12e75ec12e75ec12e75ec12e75ec12e";
        let r = http
            .get(format!(
                "http://{address}/portal/requests/{id}/confirm?secret={secret}"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // The portal: the token rides in a cookie, never in an address.
        let r = ::reqwest::Client::builder()
            .redirect(::reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(format!("http://{address}/portal/requests"))
            .header("origin", format!("http://{address}"))
            .form(&[("type", "access"), ("email", email), ("details", "")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.contains("HttpOnly"), "{cookie}");
        assert!(cookie.contains("SameSite=Strict"), "{cookie}");
        let html = r.text().await.unwrap();
        assert!(!html.contains("token="), "{html}");
        let portal_token = cookie
            .split(';')
            .next()
            .and_then(|c| c.split_once('='))
            .map(|(_, v)| v.to_owned())
            .unwrap();
        // Confirmed with the e-mailed code, run by the worker, downloaded with the
        // completion e-mail's link: its secret is in no log line either.
        let outbox = dir.path().join("outbox");
        let mail_with = |needle: &str| {
            std::fs::read_dir(&outbox)
                .into_iter()
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .map(|t| {
                    t.replace("=\r\n", "")
                        .replace("=\n", "")
                        .replace("=3D", "=")
                })
                .find(|t| t.contains(&id) && t.contains(needle))
        };
        let code_mail = mail_with("verification code is ").expect("no code e-mail");
        let i = code_mail.find("verification code is ").unwrap() + 21;
        let code: String = code_mail[i..].chars().take(11).collect();
        let r = http
            .post(format!("http://{address}/v1/requests/{id}/verify"))
            .json(&serde_json::json!({ "code": code }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let start = format!("/portal/requests/{id}/download?secret=");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let done = loop {
            if let Some(m) = mail_with(&start) {
                break m;
            }
            assert!(std::time::Instant::now() < deadline, "no completion e-mail");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        let j = done.find(&start).unwrap() + start.len();
        let download: String = done[j..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let r = http
            .get(format!("http://{address}{start}{download}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = http
            .post(format!("http://{address}/portal/requests/{id}/download"))
            .header("origin", format!("http://{address}"))
            .form(&[("secret", download.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = http
            .get(format!("http://{address}/v1/requests/{id}/package"))
            .bearer_auth(&download)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        (id, token, vec![secret.to_owned(), portal_token, download])
    });
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // While it serves, with the WAL files open.
    let mut private = vec![
        dir.path().join("lethe.db"),
        dir.path().join("lethe.db-wal"),
        dir.path().join("lethe.db-shm"),
        dir.path().join(".lethe/master.key"),
        dir.path().join(".lethe/signing.key"),
    ];
    let mails: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // Two codes, one completion.
    assert_eq!(mails.len(), 3, "{mails:?}");
    private.extend(mails);
    let wider: Vec<String> = private
        .iter()
        .filter(|p| mode(p) != 0o600)
        .map(|p| format!("{} is {:o}", p.display(), mode(p)))
        .collect();
    assert!(wider.is_empty(), "{wider:?}");
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(child.0.wait().unwrap().success());
    log.extend(rest.join().unwrap());
    let log = log.join("\n");
    assert!(
        log.contains(&format!("/v1/requests/{id}")),
        "the log names the paths"
    );
    for secret in [token.as_str(), email, &email.to_lowercase()]
        .into_iter()
        .chain(portal.iter().map(String::as_str))
    {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

/// The log as a file receives it: no colour codes, none of the scheduler's or the
/// drivers' chatter at INFO, and a start line with a URL one can open.
#[test]
fn the_log_written_to_a_file_is_plain_and_quiet() {
    let dir = checkout();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, jobs.join(p.file_name().unwrap())).unwrap();
    }
    let log = dir.path().join("lethe.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("APP_DATABASE_URL")
        .env_remove("LETHE_DATABASE")
        .env_remove("RUST_LOG")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("lethe is serving") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // A moment for the scheduler to say whatever it says at start.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let text = std::fs::read_to_string(&log).unwrap_or(text);
    let _ = child.kill();
    let _ = child.wait();
    assert!(!text.contains('\u{1b}'), "colour codes in a file:\n{text}");
    assert!(
        text.lines()
            .filter(|l| l.contains(" INFO "))
            .all(|l| l.contains(" INFO lethe")),
        "INFO lines from other crates:\n{text}"
    );
    let start = text
        .lines()
        .find(|l| l.contains("lethe is serving"))
        .unwrap();
    assert!(start.contains("url=http://localhost:"), "{start}");
}

/// Ready means ready: a policy naming a column the database does not have passes the
/// static check, fails `lethe check --live` naming table and column, and `serve`'s
/// /readyz answers 503 with the same, while /healthz stays 200.
#[test]
fn a_schema_that_does_not_match_the_policy_is_not_ready() {
    let dir = checkout();
    // The demo database is made by a first start; then the policy drifts from it.
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("APP_DATABASE_URL")
            .env_remove("LETHE_DATABASE")
            .output()
            .unwrap()
    };
    let start = |dir: &Path| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(["serve", "--bind", "127.0.0.1:0", "--log-format", "json"])
            .current_dir(dir)
            .env_remove("APP_DATABASE_URL")
            .env_remove("LETHE_DATABASE")
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let address = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(&l).ok()?;
                (v["fields"]["message"] == "lethe is serving")
                    .then(|| v["fields"]["address"].as_str().map(str::to_owned))
                    .flatten()
            })
            .expect("the server announced its address");
        // The log keeps being read: a closed pipe would end the server.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        (child, address)
    };
    let (mut first, address) = start(dir.path());
    let ready = reqwest::blocking_get(&format!("http://{address}/readyz"));
    assert!(ready.contains("\"ready\""), "{ready}");
    let _ = first.kill();
    let _ = first.wait();
    let live = run(&["check", "--live"]);
    assert!(
        live.status.success(),
        "{}",
        String::from_utf8_lossy(&live.stdout)
    );

    let systems = dir.path().join("policies/systems.yaml");
    let text = std::fs::read_to_string(&systems).unwrap();
    std::fs::write(
        &systems,
        text.replace("name: full_name", "name: display_name"),
    )
    .unwrap();
    let fixed = run(&["check"]);
    assert!(fixed.status.success(), "the static check cannot know");
    let live = run(&["check", "--live"]);
    let out = String::from_utf8_lossy(&live.stdout);
    assert_eq!(live.status.code(), Some(1), "{out}");
    assert!(
        out.contains("live: ") && out.contains("display_name"),
        "{out}"
    );

    let (mut child, address) = start(dir.path());
    let (status, body) = reqwest::blocking_status(&format!("http://{address}/readyz"));
    let health = reqwest::blocking_get(&format!("http://{address}/healthz"));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "not_ready");
    let problems = v["problems"].to_string();
    assert!(
        problems.contains("users") && problems.contains("display_name"),
        "{v}"
    );
    assert!(health.contains("ok"), "{health}");
}

//! `lethe admin token create|list|revoke` as an operator runs them, against the real
//! server: a revoked or expired token is refused at once; on SQLite and PostgreSQL.

mod common;

use std::path::Path;
use std::process::Command;

use lethe::store::{Role, TokenLifetime};
use secrecy::{ExposeSecret, SecretString};

fn lethe(dir: &Path, db: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .args(["--database", db])
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn tokens_are_listed_without_secrets_and_end_when_revoked_or_expired() {
    let (url, _dir) = common::sqlite_store();
    tokens_end(&url).await;
    if let Some(url) = common::postgres_store("admin_tokens_end").await {
        tokens_end(&url).await;
    }
}

async fn tokens_end(url: &SecretString) {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, db) = (tmp.path(), url.expose_secret());
    let app = common::TestApp::demo(dir, Some(url)).await;
    let store = app.store.clone();
    let register = format!("{}/v1/admin/register", app.base);
    let http = reqwest::Client::new();
    let status = async |token: &str| {
        let r = http.get(&register).bearer_auth(token).send().await.unwrap();
        r.status().as_u16()
    };

    // Created with a label and a lifetime; printed once, on stdout alone.
    let args = ["admin", "token", "create", "--role", "auditor"];
    let (code, token, err) = lethe(
        dir,
        db,
        &[&args[..], &["--label", "ci-scraper", "--expires", "12h"]].concat(),
    );
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("lt_"), "{token}");
    assert!(err.contains("expires "), "{err}");
    let id = token.split('_').nth(1).unwrap().to_owned();
    let (code, forever, err) = lethe(dir, db, &[&args[..], &["--expires", "never"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("never expires"), "{err}");
    let (code, default, _) = lethe(dir, db, &args);
    assert_eq!(code, 0);
    for bad in ["5m", "0d", "never-ever", "3651d"] {
        let (code, out, err) = lethe(dir, db, &[&args[..], &["--expires", bad]].concat());
        assert_eq!(code, 2, "{bad}: {out}");
        assert!(err.contains("lifetime") || err.contains("3650d"), "{err}");
    }
    assert_eq!(status(&token).await, 200);

    // Listed: id, role, label, dates, last use; never a secret.
    let (code, list, err) = lethe(dir, db, &["admin", "token", "list", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    let ours = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert_eq!(ours["role"], "auditor");
    assert_eq!(ours["label"], "ci-scraper");
    assert!(ours["last_used_at"].is_string(), "{ours}");
    let created =
        chrono::DateTime::parse_from_rfc3339(ours["created_at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(ours["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires - created, chrono::Duration::hours(12));
    let (_, text, _) = lethe(dir, db, &["admin", "token", "list"]);
    for secret in [&token, forever.trim(), default.trim()] {
        let tail = secret.rsplit('_').next().unwrap();
        assert!(!list.contains(tail) && !text.contains(tail), "{text}");
    }
    assert!(
        text.contains("ci-scraper") && text.contains("never"),
        "{text}"
    );
    // 90 days unless told otherwise.
    let newest = &listed[0];
    let d = |k: &str| chrono::DateTime::parse_from_rfc3339(newest[k].as_str().unwrap()).unwrap();
    assert_eq!(
        d("expires_at") - d("created_at"),
        chrono::Duration::days(90)
    );

    // Revoked: refused from the next request on; revoking again is an error.
    let (code, _, err) = lethe(dir, db, &["admin", "token", "revoke", &id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(status(&token).await, 401);
    let (code, _, err) = lethe(dir, db, &["admin", "token", "revoke", &id]);
    assert_eq!(code, 2);
    assert!(err.contains("no token"), "{err}");
    let (_, text, _) = lethe(dir, db, &["admin", "token", "list"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&id) && l.ends_with("revoked")),
        "{text}"
    );

    // Expired: a token made two hours ago for one hour is refused; one for three is not.
    let ago = chrono::Utc::now() - chrono::Duration::hours(2);
    for (hours, expect) in [(1, 401), (3, 200)] {
        let lifetime = TokenLifetime::For(chrono::Duration::hours(hours));
        let (_, t) = store
            .create_admin_token_with(Role::Auditor, None, lifetime, ago)
            .await
            .unwrap();
        assert_eq!(status(&t).await, expect, "{hours} h");
    }
    app.stop().await;
}

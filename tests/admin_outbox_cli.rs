//! `lethe admin outbox dead|requeue` and `lethe admin webhooks failed|requeue` as the DPO
//! runs them, on SQLite and on PostgreSQL when LETHE_TEST_POSTGRES_URL is set.

mod common;

use std::path::Path;
use std::process::Command;

use lethe::notify::Mail;
use lethe::notify::webhook::{self, Kind, Signing, Webhook};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

fn lethe(dir: &Path, db: &SecretString, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .args(["--database", db.expose_secret()])
        .current_dir(dir)
        .env_remove("LETHE_MASTER_KEY")
        .env_remove("LETHE_MASTER_KEY_FILE")
        .env_remove("LETHE_SMTP_URL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_dpo_lists_and_requeues_dead_letters_and_failed_webhooks() {
    let (url, _dir) = common::sqlite_store();
    dead_and_failed(&url).await;
    if let Some(url) = common::postgres_store("the_dpo_lists_and_requeues").await {
        dead_and_failed(&url).await;
    }
}

async fn dead_and_failed(url: &SecretString) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (store, audit, _) = common::store_and_audit(url, dir).await;
    let outbox = dir.join("sent");
    let mailer = common::file_mailer(&outbox).with_outbox_key(audit.outbox_key());
    let now = chrono::Utc::now();
    let mut tx = store.begin().await.unwrap();
    let mail_id = lethe::notify::enqueue_in(
        &mut tx,
        &mailer,
        &Mail {
            kind: "request_completed".into(),
            to: "typo@example.invalid".into(),
            subject: "Your request r_1: completed".into(),
            text: "Dear Pat Quill, your data is ready".into(),
            html: "<p>Dear Pat Quill</p>".into(),
        },
    )
    .await
    .unwrap();
    webhook::enqueue_in(
        &mut tx,
        &audit.outbox_key(),
        &Webhook {
            kind: Kind::ErasureNotice,
            request_id: Some("r_2".into()),
            target: "aws".into(),
            url: "https://hooks.example.net/erase?key=s3cret".into(),
            body: json!({ "identities": [{ "type": "email", "value": "pat.quill@example.org" }] }),
            signing: Signing::Hmac,
        },
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let t = lethe::store::timestamp(now);
    sqlx::query("UPDATE mail_outbox SET dead_at = $1, attempts = 3, last_error = '550 no such user' WHERE id = $2")
        .bind(&t)
        .bind(mail_id)
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE webhook_outbox SET failed_at = $1, attempts = 9, last_status = '503'")
        .bind(&t)
        .execute(store.pool())
        .await
        .unwrap();
    let hook_id: i64 = sqlx::query_scalar("SELECT id FROM webhook_outbox")
        .fetch_one(store.pool())
        .await
        .unwrap();

    // The lists: what the DPO acts on, never a subject line or a body.
    let (code, out, err) = lethe(dir, url, &["admin", "outbox", "dead"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("typo@example.invalid"), "{out}");
    assert!(out.contains("550 no such user"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with(&mail_id.to_string())),
        "{out}"
    );
    for secret in ["Pat Quill", "Your request r_1"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret}: {out}"
        );
    }
    let (code, out, _) = lethe(dir, url, &["admin", "outbox", "dead", "--format", "json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["id"], mail_id);
    assert_eq!(v[0]["recipient"], "typo@example.invalid");
    assert!(v[0].get("subject").is_none(), "{v}");
    let (code, out, err) = lethe(dir, url, &["admin", "webhooks", "failed"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("https://hooks.example.net/erase"), "{out}");
    assert!(out.contains("r_2") && out.contains("503"), "{out}");
    for secret in ["s3cret", "pat.quill"] {
        assert!(!out.contains(secret), "{secret}: {out}");
    }
    let (_, help, _) = lethe(dir, url, &["admin", "outbox", "dead", "--help"]);
    assert!(help.contains("recipient's address is shown"), "{help}");

    // Unknown ids and bad addresses: a clear error, exit 2, nothing changed.
    for args in [
        vec!["admin", "outbox", "requeue", "999999"],
        vec!["admin", "outbox", "requeue", "abc"],
        vec!["admin", "webhooks", "requeue", "999999"],
        vec!["admin", "webhooks", "requeue", "0"],
    ] {
        let (code, _, err) = lethe(dir, url, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("error: no "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let id = mail_id.to_string();
    let (code, _, err) = lethe(
        dir,
        url,
        &["admin", "outbox", "requeue", &id, "--to", "not an address"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--to is not an address"), "{err}");
    let dead: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE dead_at IS NOT NULL")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(dead, 1);

    // Re-sealed to the new address, and sent from there.
    let (code, _, err) = lethe(
        dir,
        url,
        &["admin", "outbox", "requeue", &id, "--to", "pat@example.org"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = lethe(dir, url, &["admin", "outbox", "dead"]);
    assert_eq!(code, 0);
    assert!(!out.contains("typo@example.invalid"), "{out}");
    let clear: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mail_outbox WHERE recipient <> '' OR sealed IS NULL",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(clear, 0, "the new address went into a clear column");
    assert_eq!(
        lethe::notify::deliver_pending(&store, &mailer)
            .await
            .unwrap(),
        1
    );
    let sent: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(sent[0].contains("To: pat@example.org"), "{}", sent[0]);
    let (code, _, err) = lethe(dir, url, &["admin", "outbox", "requeue", &id]);
    assert_eq!(code, 2, "a sent message is no dead letter: {err}");

    let hook = hook_id.to_string();
    let (code, _, err) = lethe(dir, url, &["admin", "webhooks", "requeue", &hook]);
    assert_eq!(code, 0, "{err}");
    let failed: Option<String> =
        sqlx::query_scalar("SELECT failed_at FROM webhook_outbox WHERE id = $1")
            .bind(hook_id)
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(failed, None);
    let (code, _, _) = lethe(dir, url, &["admin", "webhooks", "requeue", &hook]);
    assert_eq!(code, 2, "requeued twice");
    // Both were audited as the operator's.
    let (code, out, err) = lethe(dir, url, &["audit", "show", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("mail.requeued") && out.contains("webhook.requeued"),
        "{out}"
    );
    store.close().await;
}

/// `lethe suppression export` gives the list to the systems that send marketing: the
/// address and its SHA-256 (lower case), one row per person.
#[tokio::test]
async fn the_suppression_list_exports_as_csv_and_json() {
    let (url, _dir) = common::sqlite_store();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (store, audit, _) = common::store_and_audit(&url, dir).await;
    let now = chrono::Utc::now();
    let mut tx = store.begin().await.unwrap();
    for (who, id) in [
        ("Pat.Quill@example.org", "r_1"),
        ("pat.quill@example.org", "r_2"),
        ("lee@example.net", "r_3"),
    ] {
        let identity = lethe::audit::Identity::parse(&format!("email={who}")).unwrap();
        lethe::requests::suppress_in(&mut tx, &audit, &identity, id, now)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    store.close().await;
    let (code, csv, err) = lethe(dir, &url, &["suppression", "export", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "identity_kind,value,sha256,added_at,request_id");
    // The same address in another case is the same person: listed once.
    assert_eq!(lines.len(), 3, "{csv}");
    let pat = lines.iter().find(|l| l.contains("r_1")).unwrap();
    let sha = hex::encode(lethe::crypto::sha256(&[b"pat.quill@example.org"]));
    assert!(
        pat.starts_with("email,pat.quill@example.org,") && pat.contains(&sha),
        "{pat}"
    );
    let (code, json, _) = lethe(dir, &url, &["suppression", "export", "--format", "json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
}

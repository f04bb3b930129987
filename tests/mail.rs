//! E-mail through the store outbox: to `.eml` files without SMTP, and to a real SMTP
//! server when LETHE_TEST_SMTP (and LETHE_TEST_SMTP_MAILDIR, where it stores mail) are set.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use lethe::audit::{AuditLog, KeySource};
use lethe::config::Config;
use lethe::jobs::{self, JobContext};
use lethe::notify::Mailer;
use lethe::policy::Policy;
use lethe::sources::db::Sources;
use lethe::store::Store;
use secrecy::SecretString;

async fn context(dir: &Path, mailer: Mailer) -> JobContext {
    let policy = Arc::new(
        Policy::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
            .unwrap()
            .into_valid()
            .unwrap(),
    );
    let url = SecretString::from(format!(
        "sqlite://{}?mode=rwc",
        dir.join("lethe.db").display()
    ));
    let store = Store::open(&url).await.unwrap();
    let keys = KeySource {
        master: None,
        signing: None,
        dir: dir.join(".lethe"),
    };
    let audit = AuditLog::open(store.clone(), &keys).await.unwrap();
    let mailer = Arc::new(mailer.with_outbox_key(audit.outbox_key()));
    JobContext {
        policy,
        store,
        audit,
        sources: Arc::new(Sources::default()),
        keys,
        holder: "test".into(),
        progress: None,
        mailer,
    }
}

fn reviews_job() -> lethe::policy::jobs::JobSpec {
    let (specs, _) =
        lethe::policy::jobs::load_jobs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs"));
    specs
        .into_iter()
        .find(|s| s.name.as_str() == "vendor-reviews")
        .unwrap()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn the_review_digest_reaches_the_dpo_through_the_outbox_once() {
    let tmp = tempfile::tempdir().unwrap();
    let outbox = tmp.path().join("outbox");
    let ctx = context(
        tmp.path(),
        Mailer::from_config(
            &Config::default(),
            Some("privacy@example.com"),
            outbox.clone(),
        )
        .unwrap(),
    )
    .await;
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap();
    let outcome = jobs::run(&ctx, &reviews_job(), None, now).await.unwrap();
    assert_eq!(outcome.summary["mailed_to_dpo"], true);
    assert_eq!(
        outcome.summary["due_within_30_days"][0],
        "initech-dpa: review on 2026-12-15"
    );
    let mails = files(&outbox);
    assert_eq!(mails.len(), 1);
    let eml = std::fs::read_to_string(&mails[0]).unwrap();
    assert!(eml.contains("To: dpo@example.com"), "{eml}");
    assert!(eml.contains("From: privacy@example.com"), "{eml}");
    assert!(
        eml.contains("Subject: 1 agreement review(s) due within 30 days"),
        "{eml}"
    );
    assert!(
        eml.contains("initech-dpa (Initech Kft.): review due on 2026-12-15"),
        "{eml}"
    );
    assert!(eml.contains("text/html"), "{eml}");
    // Delivering again sends nothing twice.
    assert_eq!(
        lethe::notify::deliver_pending(&ctx.store, &ctx.mailer)
            .await
            .unwrap(),
        0
    );
    assert_eq!(files(&outbox).len(), 1);
    // A month earlier nothing is due and nothing is sent.
    let quiet = jobs::run(
        &ctx,
        &reviews_job(),
        None,
        Utc.with_ymd_and_hms(2026, 10, 1, 8, 0, 0).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(quiet.summary["mailed_to_dpo"], false);
    assert_eq!(files(&outbox).len(), 1);
}

#[tokio::test]
async fn the_review_digest_arrives_over_smtp() {
    let (Ok(smtp), Ok(maildir)) = (
        std::env::var("LETHE_TEST_SMTP"),
        std::env::var("LETHE_TEST_SMTP_MAILDIR"),
    ) else {
        common::skipped(
            "the_review_digest_arrives_over_smtp",
            "SMTP",
            "LETHE_TEST_SMTP",
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        smtp_url: Some(SecretString::from(smtp)),
        ..Config::default()
    };
    let ctx = context(
        tmp.path(),
        Mailer::from_config(
            &config,
            Some("privacy@example.com"),
            tmp.path().join("unused"),
        )
        .unwrap(),
    )
    .await;
    let marker = format!("run-{}", lethe::crypto::random_hex(6).unwrap());
    // The digest names the agreement; the marker finds this run's message among others.
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap();
    let outcome = jobs::run(&ctx, &reviews_job(), None, now).await.unwrap();
    assert_eq!(outcome.summary["mailed_to_dpo"], true);
    let sent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE sent_at IS NOT NULL")
            .fetch_one(ctx.store.pool())
            .await
            .unwrap();
    assert_eq!(
        sent, 1,
        "the message was not accepted by the SMTP server ({marker})"
    );
    let new = Path::new(&maildir).join("new");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let found = files(&new).into_iter().any(|p| {
            let m = std::fs::read_to_string(&p).unwrap_or_default();
            m.contains("initech-dpa (Initech Kft.)") && m.contains("To: dpo@example.com")
        });
        if found {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no message in {}",
            new.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[test]
fn smtp_settings_are_checked_and_never_print_the_password() {
    let bad = Config {
        smtp_url: Some(SecretString::from(
            "smtp://me:s3cret@mail.example.net:587?tls=maybe",
        )),
        ..Config::default()
    };
    let err = Mailer::from_config(&bad, None, PathBuf::from("outbox"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tls must be starttls, tls or none"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    let other = Config {
        smtp_url: Some(SecretString::from("http://mail.example.net")),
        ..Config::default()
    };
    assert!(Mailer::from_config(&other, None, PathBuf::from("outbox")).is_err());
    let ok = Config {
        smtp_url: Some(SecretString::from("smtp://127.0.0.1:2525?tls=none")),
        ..Config::default()
    };
    assert_eq!(
        Mailer::from_config(&ok, None, PathBuf::from("outbox"))
            .unwrap()
            .describe(),
        "SMTP"
    );
}

#[tokio::test]
async fn the_deadline_digest_lists_due_and_overdue_requests_and_purge_removes_old_packages() {
    let tmp = tempfile::tempdir().unwrap();
    let outbox = tmp.path().join("outbox");
    let ctx = context(
        tmp.path(),
        Mailer::from_config(
            &Config::default(),
            Some("privacy@example.com"),
            outbox.clone(),
        )
        .unwrap(),
    )
    .await;
    let (specs, _) =
        lethe::policy::jobs::load_jobs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs"));
    let deadlines = specs
        .iter()
        .find(|s| s.name.as_str() == "dsr-deadlines")
        .unwrap();
    let purge = specs
        .iter()
        .find(|s| s.name.as_str() == "package-purge")
        .unwrap();
    let received = Utc.with_ymd_and_hms(2026, 10, 1, 9, 0, 0).unwrap();
    let svc = lethe::requests::Service {
        store: &ctx.store,
        audit: &ctx.audit,
        mailer: &ctx.mailer,
        settings: lethe::requests::Settings::from_policy(&ctx.policy),
    };
    let identity = lethe::audit::Identity::parse("email=late@example.org").unwrap();
    let r = svc
        .submit(lethe::requests::Kind::Access, &identity, None, received)
        .await
        .unwrap();
    assert_eq!(&r.due_at[..10], "2026-11-01");
    // Nothing due a week before: no digest.
    let quiet = jobs::run(
        &ctx,
        deadlines,
        None,
        Utc.with_ymd_and_hms(2026, 10, 20, 7, 0, 0).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(quiet.summary["mailed_to_dpo"], false);
    // A failed request, due in a month, is in the digest all the same: it waits for the DPO.
    let failed = svc
        .submit(
            lethe::requests::Kind::Access,
            &lethe::audit::Identity::parse("email=failed@example.org").unwrap(),
            None,
            Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap(),
        )
        .await
        .unwrap();
    for status in ["verified", "in_progress", "failed"] {
        sqlx::query("UPDATE dsr_requests SET status = $1 WHERE id = $2")
            .bind(status)
            .bind(&failed.id)
            .execute(ctx.store.pool())
            .await
            .unwrap();
    }
    let late = jobs::run(
        &ctx,
        deadlines,
        None,
        Utc.with_ymd_and_hms(2026, 11, 3, 7, 0, 0).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            late.summary["due_within_7_days"].as_u64(),
            late.summary["overdue"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(late.summary["failed"], 1);
    let digest = files(&outbox)
        .into_iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .find(|m| m.contains("dpo@example.com") && m.contains(&r.id))
        .expect("a digest to the DPO");
    assert!(digest.contains("OVERDUE"), "{digest}");
    assert!(digest.contains(&failed.id), "{digest}");

    sqlx::query("INSERT INTO request_packages (request_id, content_type, sealed, created_at, expires_at) VALUES ('r_old', 'application/zip', $1, '2026-01-01T00:00:00.000000Z', '2026-01-08T00:00:00.000000Z'), ('r_new', 'application/zip', $1, '2026-11-01T00:00:00.000000Z', '2026-11-08T00:00:00.000000Z')")
        .bind(vec![1u8, 2, 3])
        .execute(ctx.store.pool())
        .await
        .unwrap();
    let out = jobs::run(
        &ctx,
        purge,
        None,
        Utc.with_ymd_and_hms(2026, 11, 3, 0, 0, 0).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(out.summary["packages_deleted"], 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT request_id FROM request_packages")
        .fetch_all(ctx.store.pool())
        .await
        .unwrap();
    assert_eq!(left, ["r_new"]);
}

#[tokio::test]
async fn a_message_committed_before_a_crash_is_sent_once_after_the_restart() {
    let tmp = tempfile::tempdir().unwrap();
    // The first process cannot reach its mail server: the state change and its message
    // are committed, the send fails, as when the process dies right after the commit.
    let down = Config {
        smtp_url: Some(SecretString::from("smtp://127.0.0.1:1?tls=none")),
        ..Config::default()
    };
    let ctx = context(
        tmp.path(),
        Mailer::from_config(&down, Some("privacy@example.com"), tmp.path().join("x")).unwrap(),
    )
    .await;
    let svc = lethe::requests::Service {
        store: &ctx.store,
        audit: &ctx.audit,
        mailer: &ctx.mailer,
        settings: lethe::requests::Settings::from_policy(&ctx.policy),
    };
    let identity = lethe::audit::Identity::parse("email=crash@example.org").unwrap();
    let r = svc
        .submit(lethe::requests::Kind::Access, &identity, None, Utc::now())
        .await
        .unwrap();
    let unsent: Vec<(i64, i64)> =
        sqlx::query_as("SELECT id, attempts FROM mail_outbox WHERE sent_at IS NULL")
            .fetch_all(ctx.store.pool())
            .await
            .unwrap();
    assert_eq!(unsent.len(), 1);
    assert_eq!(unsent[0].1, 1, "the failed attempt is recorded");
    let status: String = sqlx::query_scalar("SELECT status FROM dsr_requests WHERE id = $1")
        .bind(&r.id)
        .fetch_one(ctx.store.pool())
        .await
        .unwrap();
    assert_eq!(status, "identity_pending");

    // The restarted process (two senders at once, as two instances would) sends it once.
    let outbox = tmp.path().join("outbox");
    let up = Mailer::from_config(
        &Config::default(),
        Some("privacy@example.com"),
        outbox.clone(),
    )
    .unwrap()
    .with_outbox_key(ctx.audit.outbox_key());
    let (a, b) = tokio::join!(
        lethe::notify::deliver_pending(&ctx.store, &up),
        lethe::notify::deliver_pending(&ctx.store, &up)
    );
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    assert_eq!(
        lethe::notify::deliver_pending(&ctx.store, &up)
            .await
            .unwrap(),
        0
    );
    let sent = files(&outbox);
    assert_eq!(sent.len(), 1);
    let text = std::fs::read_to_string(&sent[0]).unwrap();
    assert!(text.contains(&r.id) && text.contains("verification code"));

    // A sender that died holding a claim: the message waits while the claim is fresh,
    // and goes out once the claim has lapsed.
    let mut tx = ctx.store.pool().begin().await.unwrap();
    lethe::notify::enqueue_in(
        &mut tx,
        &up,
        &lethe::notify::Mail {
            kind: "test".into(),
            to: "dpo@example.com".into(),
            subject: "claimed".into(),
            text: "claimed".into(),
            html: "<p>claimed</p>".into(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let claim = |age: i64| {
        sqlx::query("UPDATE mail_outbox SET claimed_at = $1 WHERE sent_at IS NULL")
            .bind(lethe::store::timestamp(
                Utc::now() - chrono::Duration::minutes(age),
            ))
            .execute(ctx.store.pool())
    };
    claim(1).await.unwrap();
    assert_eq!(
        lethe::notify::deliver_pending(&ctx.store, &up)
            .await
            .unwrap(),
        0
    );
    claim(10).await.unwrap();
    assert_eq!(
        lethe::notify::deliver_pending(&ctx.store, &up)
            .await
            .unwrap(),
        1
    );
    assert_eq!(files(&outbox).len(), 2);
}

#[tokio::test]
async fn lethes_own_data_is_kept_only_as_long_as_needed() {
    let tmp = tempfile::tempdir().unwrap();
    let outbox = tmp.path().join("outbox");
    let ctx = context(
        tmp.path(),
        Mailer::from_config(&Config::default(), Some("privacy@example.com"), outbox).unwrap(),
    )
    .await;
    let svc = lethe::requests::Service {
        store: &ctx.store,
        audit: &ctx.audit,
        mailer: &ctx.mailer,
        settings: lethe::requests::Settings::from_policy(&ctx.policy),
    };
    let at = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap();
    let submit = |email: &'static str, kind, when| {
        let svc = &svc;
        async move {
            let identity = lethe::audit::Identity::parse(&format!("email={email}")).unwrap();
            svc.submit(kind, &identity, None, when).await.unwrap().id
        }
    };
    use lethe::requests::Kind;
    let finish = |id: String, when: chrono::DateTime<Utc>| {
        let pool = ctx.store.pool().clone();
        async move {
            // The moves the store allows, one by one.
            for status in ["verified", "in_progress", "completed"] {
                sqlx::query("UPDATE dsr_requests SET status = $1, updated_at = $2 WHERE id = $3")
                    .bind(status)
                    .bind(lethe::store::timestamp(when))
                    .bind(&id)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        }
    };
    let old = submit("old@example.org", Kind::Access, at(2023, 1, 10)).await;
    finish(old.clone(), at(2023, 11, 1)).await;
    let recent = submit("recent@example.org", Kind::Access, at(2026, 10, 1)).await;
    finish(recent.clone(), at(2026, 10, 2)).await;
    let restricted = submit("held@example.org", Kind::Restriction, at(2022, 1, 10)).await;
    finish(restricted.clone(), at(2022, 2, 1)).await;
    sqlx::query("INSERT INTO subject_restrictions (request_id, identity_kind, identity_value, placed_at) VALUES ($1, 'email', 'held@example.org', '2022-01-10T12:00:00.000000Z')")
        .bind(&restricted)
        .execute(ctx.store.pool())
        .await
        .unwrap();
    let abandoned = submit("never@example.org", Kind::Erasure, at(2026, 9, 1)).await;
    let pending = submit(
        "pending@example.org",
        Kind::Erasure,
        at(2026, 11, 27) - chrono::Duration::hours(1),
    )
    .await;
    // Mails go out at the real time: pin them to the job's clock, the old one long sent,
    // the others a week before the run.
    sqlx::query(
        "UPDATE mail_outbox SET sent_at = '2026-11-20T00:00:00.000000Z' WHERE sent_at IS NOT NULL",
    )
    .execute(ctx.store.pool())
    .await
    .unwrap();
    // The first message, to old@example.org (its recipient is sealed, then dropped).
    sqlx::query("UPDATE mail_outbox SET sent_at = '2026-09-01T00:00:00.000000Z' WHERE id = (SELECT MIN(id) FROM mail_outbox)")
        .execute(ctx.store.pool())
        .await
        .unwrap();

    // Code checks counted for two people: one window ended, one still running.
    for (key, start) in [
        ("old", at(2026, 11, 25)),
        ("running", at(2026, 11, 26) + chrono::Duration::hours(12)),
    ] {
        sqlx::query(
            "INSERT INTO code_checks (identity_key, window_start, checks) VALUES ($1, $2, 5)",
        )
        .bind(key)
        .bind(lethe::store::timestamp(start))
        .execute(ctx.store.pool())
        .await
        .unwrap();
    }
    let (specs, _) =
        lethe::policy::jobs::load_jobs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs"));
    let purge = specs
        .iter()
        .find(|s| s.name.as_str() == "package-purge")
        .unwrap();
    let out = jobs::run(&ctx, purge, None, at(2026, 11, 27))
        .await
        .unwrap();
    let p = &out.summary["purged"];
    assert_eq!(p["requests"], 1, "{p}");
    assert_eq!(p["abandoned_requests"], 1, "{p}");
    assert_eq!(p["mails"], 1, "{p}");
    // The ended window, and the verification-mail counts of the four submissions whose
    // day is over; the pending one's still runs.
    assert_eq!(p["code_check_windows"], 1 + 4, "{p}");
    let running: Vec<String> =
        sqlx::query_scalar("SELECT identity_key FROM code_checks ORDER BY window_start")
            .fetch_all(ctx.store.pool())
            .await
            .unwrap();
    assert_eq!(running.len(), 2, "{running:?}");
    assert_eq!(running[0], "running");
    let mut left: Vec<String> = sqlx::query_scalar("SELECT id FROM dsr_requests")
        .fetch_all(ctx.store.pool())
        .await
        .unwrap();
    left.sort();
    let mut want = vec![recent, restricted, pending.clone()];
    want.sort();
    assert_eq!(left, want, "old {old}, abandoned {abandoned}");
    // The pending request's code expired an hour and 45 minutes ago: it is gone.
    let code: Option<String> =
        sqlx::query_scalar("SELECT code_hash FROM dsr_requests WHERE id = $1")
            .bind(&pending)
            .fetch_one(ctx.store.pool())
            .await
            .unwrap();
    assert_eq!(code, None);
    let entries = ctx.audit.entries(&Default::default()).await.unwrap();
    assert!(entries.iter().any(|e| e.header.action == "store.purged"));
}

/// Addresses the transport refuses, queued ahead of everything else: every later message
/// still goes out at once, and the refused ones are retired as dead letters after a few
/// tries, which the DPO sees in `/metrics` and the admin API.
#[tokio::test]
async fn refused_messages_never_hold_the_queue_and_end_as_dead_letters() {
    use lethe::notify::{Mail, deliver_pending_at, enqueue_in};
    let tmp = tempfile::tempdir().unwrap();
    let outbox = tmp.path().join("outbox");
    let ctx = context(
        tmp.path(),
        Mailer::from_config(
            &Config::default(),
            Some("privacy@example.com"),
            outbox.clone(),
        )
        .unwrap(),
    )
    .await;
    let mail = |to: String, subject: &str| Mail {
        kind: "test".into(),
        to,
        subject: subject.into(),
        text: subject.into(),
        html: format!("<p>{subject}</p>"),
    };
    let queue = async |mails: Vec<Mail>| {
        let mut tx = ctx.store.pool().begin().await.unwrap();
        for m in &mails {
            enqueue_in(&mut tx, &ctx.mailer, m).await.unwrap();
        }
        tx.commit().await.unwrap();
    };
    // More refused messages than a sender claims at once, then a notice to a processor.
    let poison = 25;
    queue(
        (0..poison)
            .map(|n| mail(format!("poison,{n}@example.com"), "poison"))
            .chain([mail("aws-privacy@example.net".into(), "Art. 19 notice")])
            .collect(),
    )
    .await;
    let now = Utc::now();
    let (store, mailer) = (&ctx.store, &ctx.mailer);
    assert_eq!(deliver_pending_at(store, mailer, now).await.unwrap(), 1);
    let sent = files(&outbox);
    assert_eq!(sent.len(), 1);
    assert!(
        std::fs::read_to_string(&sent[0])
            .unwrap()
            .contains("Art. 19 notice")
    );
    // Later messages keep flowing while the refused ones wait their turn.
    queue(vec![mail("person@example.org".into(), "completed")]).await;
    assert_eq!(deliver_pending_at(store, mailer, now).await.unwrap(), 1);
    // Tries two and three, once each wait is over: the refused ones are retired.
    for later in [10, 60] {
        let t = now + chrono::Duration::minutes(later);
        assert_eq!(deliver_pending_at(store, mailer, t).await.unwrap(), 0);
    }
    let dead = lethe::notify::dead_letters(store, mailer).await.unwrap();
    assert_eq!(dead.len(), poison);
    assert!(
        dead.iter()
            .all(|d| d.attempts == lethe::notify::MAX_REFUSALS
                && d.last_error.as_deref() == Some("the recipient is not an e-mail address"))
    );
    // A dead letter is never tried again.
    let t = now + chrono::Duration::days(1);
    assert_eq!(deliver_pending_at(store, mailer, t).await.unwrap(), 0);
    let attempts: i64 = sqlx::query_scalar("SELECT MAX(attempts) FROM mail_outbox")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, lethe::notify::MAX_REFUSALS);

    // The DPO sees them: a count in /metrics, the list in the admin API.
    // The recipients are sealed in the store: the server opens them with its mailer.
    let app = common::TestApp::demo(tmp.path(), None).await;
    let base = app.base.clone();
    let (_, token) = store
        .create_admin_token(lethe::store::Role::Auditor)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let metrics = http
        .get(format!("{base}/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("lethe_mail_dead {poison}\n")),
        "{metrics}"
    );
    assert!(metrics.contains("lethe_mail_unsent 0\n"), "{metrics}");
    let url = format!("{base}/v1/admin/mail/dead");
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let listed: serde_json::Value = http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), poison);
    assert_eq!(listed[0]["kind"], "test");
    assert!(
        listed[0]["recipient"]
            .as_str()
            .is_some_and(|r| r.starts_with("poison,")),
        "{listed}"
    );

    // The DPO fixed an address: that letter goes back in the queue, to the new address,
    // and is sent by the next round; the others stay dead.
    let first = listed[0]["id"].as_i64().unwrap();
    let requeue = format!("{base}/v1/admin/mail/dead/{first}/requeue");
    let fixed = serde_json::json!({ "recipient": "fixed@example.com" });
    let r = http.post(&requeue).bearer_auth(&token).json(&fixed).send();
    assert_eq!(r.await.unwrap().status(), 403);
    let (_, dpo) = store
        .create_admin_token(lethe::store::Role::Dpo)
        .await
        .unwrap();
    let bad = serde_json::json!({ "recipient": "poison,again@example.com" });
    let r = http.post(&requeue).bearer_auth(&dpo).json(&bad).send();
    assert_eq!(r.await.unwrap().status(), 422);
    let sent_ones = format!("{base}/v1/admin/mail/dead/999999/requeue");
    let r = http.post(&sent_ones).bearer_auth(&dpo).send();
    assert_eq!(r.await.unwrap().status(), 404);
    let r = http.post(&requeue).bearer_auth(&dpo).json(&fixed).send();
    assert_eq!(r.await.unwrap().status(), 200);
    // Once only: it is no longer a dead letter.
    let r = http.post(&requeue).bearer_auth(&dpo).json(&fixed).send();
    assert_eq!(r.await.unwrap().status(), 404);
    assert_eq!(
        lethe::notify::dead_letters(store, mailer)
            .await
            .unwrap()
            .len(),
        poison - 1
    );
    // Sent by the server right away, or by the next round.
    deliver_pending_at(store, mailer, t).await.unwrap();
    let to_fixed = || {
        files(&outbox).iter().any(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .contains("To: fixed@example.com")
        })
    };
    for _ in 0..50 {
        if to_fixed() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(to_fixed());
    let entries = ctx.audit.entries(&Default::default()).await.unwrap();
    assert!(entries.iter().any(|e| e.header.action == "mail.requeued"));
    app.stop().await;
}

/// A mail server on 127.0.0.1 that refuses (550) recipients containing "refused", defers
/// (451) those containing "later", and accepts the rest; returns its URL and the accepted
/// messages.
async fn picky_smtp() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = accepted.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let (read, mut write) = conn.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 picky ready\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    // Like real servers, the refusals quote the address.
                    let to = line.split_once(':').map_or("", |(_, a)| a).to_owned();
                    let answer = if upper.starts_with("RCPT") && line.contains("refused") {
                        format!("550 {to} no such mailbox")
                    } else if upper.starts_with("RCPT") && line.contains("later") {
                        format!("451 {to} try again later")
                    } else if upper.starts_with("DATA") {
                        write.write_all(b"354 go on\r\n").await.unwrap();
                        let mut message = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            message.push_str(&l);
                            message.push('\n');
                        }
                        kept.lock().unwrap().push(message);
                        "250 queued".to_owned()
                    } else if upper.starts_with("QUIT") {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        "250 ok".to_owned()
                    };
                    if write
                        .write_all(format!("{answer}\r\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (format!("smtp://127.0.0.1:{port}?tls=none"), accepted)
}

/// Over SMTP: a 5xx for a recipient is final, so those messages are retired after a few
/// tries; a 4xx waits and is tried again; neither holds the messages behind them.
#[tokio::test]
async fn smtp_refusals_are_retired_and_deferrals_wait_without_holding_the_queue() {
    use lethe::notify::{Mail, deliver_pending_at, enqueue_in};
    let tmp = tempfile::tempdir().unwrap();
    let (smtp, accepted) = picky_smtp().await;
    let config = Config {
        smtp_url: Some(SecretString::from(smtp)),
        ..Config::default()
    };
    let ctx = context(
        tmp.path(),
        Mailer::from_config(&config, Some("privacy@example.com"), tmp.path().join("x")).unwrap(),
    )
    .await;
    let mail = |to: String, subject: &str| Mail {
        kind: "test".into(),
        to,
        subject: subject.into(),
        text: subject.into(),
        html: format!("<p>{subject}</p>"),
    };
    let mut tx = ctx.store.pool().begin().await.unwrap();
    for m in (0..25)
        .map(|n| mail(format!("refused-{n}@example.com"), "refused"))
        .chain([
            mail("later@example.com".into(), "deferred"),
            mail("processor@example.net".into(), "Art. 19 notice"),
        ])
    {
        enqueue_in(&mut tx, &ctx.mailer, &m).await.unwrap();
    }
    tx.commit().await.unwrap();
    let (store, mailer) = (&ctx.store, &ctx.mailer);
    let now = Utc::now();
    assert_eq!(deliver_pending_at(store, mailer, now).await.unwrap(), 1);
    assert_eq!(accepted.lock().unwrap().len(), 1);
    assert!(accepted.lock().unwrap()[0].contains("Art. 19 notice"));
    for later in [10, 60, 180] {
        let t = now + chrono::Duration::minutes(later);
        assert_eq!(deliver_pending_at(store, mailer, t).await.unwrap(), 0);
    }
    let dead = lethe::notify::dead_letters(store, mailer).await.unwrap();
    assert_eq!(dead.len(), 25);
    assert!(dead.iter().all(|d| d.recipient.starts_with("refused-")));
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("550")
    );
    // The deferred one is still waiting for its next try, not retired.
    let waiting: Vec<i64> = sqlx::query_scalar(
        "SELECT attempts FROM mail_outbox WHERE sent_at IS NULL AND dead_at IS NULL",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(waiting, [4]);
    // Its address is in no error the server gave, as stored.
    let errors: Vec<Option<String>> = sqlx::query_scalar("SELECT last_error FROM mail_outbox")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert!(
        errors.iter().flatten().all(|e| !e.contains("@example.com")),
        "{errors:?}"
    );
}

//! Webhook delivery against real receivers on 127.0.0.1 (allowed explicitly, as a test
//! configuration must), on SQLite and on PostgreSQL when LETHE_TEST_POSTGRES_URL is set:
//! slow receivers, redirects, giving up, re-queueing, and each processor's own secret.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use lethe::audit::{AuditLog, KeySource};
use lethe::config::WebhookConfig;
use lethe::notify::webhook::{self, Delivery, Kind, Signing, Webhook};
use lethe::store::Store;
use secrecy::SecretString;
use serde_json::{Value, json};

/// The test configuration: plain http and the loopback address allowed, named here.
fn local(timeout: u64, concurrency: usize, give_up_hours: u64) -> WebhookConfig {
    WebhookConfig {
        allow_http_hosts: vec!["127.0.0.1".into()],
        allow_addresses: vec!["127.0.0.1".into()],
        connect_timeout_seconds: timeout,
        timeout_seconds: timeout,
        concurrency,
        give_up_hours,
    }
}

struct Env {
    app: common::TestApp,
    url: SecretString,
    delivery: Arc<Delivery>,
    dir: tempfile::TempDir,
}

impl std::ops::Deref for Env {
    type Target = common::TestApp;
    fn deref(&self) -> &common::TestApp {
        &self.app
    }
}

/// The service on the store at `url` with keys and demo policies in `dir`, delivering
/// webhooks only when told.
async fn serve(url: &SecretString, dir: &Path, config: WebhookConfig) -> common::TestApp {
    let app_db = format!("sqlite://{}?mode=rwc", dir.join("app.db").display());
    common::testapp::demo_policies(dir, &app_db, |_, t| t);
    let mut c = common::testapp::config(dir);
    c.database = url.clone();
    c.webhooks = config;
    let options = lethe::app::Options {
        run_requests: false,
        manual_webhooks: true,
        live_checks: None,
        // The tests move the clock: this process's own lease would look lapsed.
        jobs: false,
        ..Default::default()
    };
    common::TestApp::start(&c, options).await
}

/// The real server over the store at `url`, delivering webhooks only when told.
async fn env(url: &SecretString, config: WebhookConfig) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(url, dir.path(), config).await;
    let delivery = app.webhooks.clone().unwrap();
    Env {
        app,
        url: url.clone(),
        delivery,
        dir,
    }
}

/// Each store the tests run on: SQLite always, PostgreSQL when configured.
async fn stores(test: &str) -> Vec<(SecretString, Option<tempfile::TempDir>)> {
    let (sqlite, dir) = common::sqlite_store();
    let mut out = vec![(sqlite, Some(dir))];
    if let Some(pg) = common::postgres_store(test).await {
        out.push((pg, None));
    }
    out
}

/// What a receiver got: each POST's headers, body and arrival time.
type Got = Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>, Instant)>>>;

struct Receiver {
    url: String,
    got: Got,
    /// The status it answers; 0: sleeps 30 s first, then 200.
    status: Arc<AtomicU16>,
}

/// A receiver on 127.0.0.1 answering `status` (a 3xx points at `location`).
async fn receiver(status: u16, location: Option<String>) -> Receiver {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    let got: Got = Arc::default();
    let status = Arc::new(AtomicU16::new(status));
    let (seen, answer) = (got.clone(), status.clone());
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: axum::body::Bytes| {
        let (seen, answer, location) = (seen.clone(), answer.clone(), location.clone());
        async move {
            seen.lock()
                .unwrap()
                .push((headers, body.to_vec(), Instant::now()));
            let code = answer.load(Ordering::SeqCst);
            if code == 0 {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return StatusCode::OK.into_response();
            }
            let code = StatusCode::from_u16(code).unwrap();
            match &location {
                Some(l) => (code, [(header::LOCATION, l.clone())]).into_response(),
                None => code.into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, got, status }
}

impl Receiver {
    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

async fn enqueue(e: &Env, target: &str, url: &str, now: chrono::DateTime<chrono::Utc>) {
    let mut tx = e.store.begin().await.unwrap();
    webhook::enqueue_in(
        &mut tx,
        &e.audit.outbox_key(),
        &Webhook {
            kind: Kind::ErasureNotice,
            request_id: Some("r_test".into()),
            target: target.into(),
            url: url.into(),
            body: json!({ "type": "erasure_notice", "processor": target }),
            signing: Signing::Hmac,
        },
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn status_of(store: &Store, url: &str) -> (Option<String>, Option<String>, Option<String>) {
    use sqlx::Row;
    let r = sqlx::query(
        "SELECT last_status, delivered_at, failed_at FROM webhook_outbox WHERE url = $1",
    )
    .bind(url)
    .fetch_one(store.pool())
    .await
    .unwrap();
    (
        r.try_get(0).unwrap(),
        r.try_get(1).unwrap(),
        r.try_get(2).unwrap(),
    )
}

#[tokio::test]
async fn a_slow_receiver_holds_one_slot_while_the_others_are_delivered() {
    for (url, _guard) in stores("webhooks_slow").await {
        let e = env(&url, local(1, 2, 72)).await;
        let slow = receiver(0, None).await;
        let fast = receiver(200, None).await;
        let now = chrono::Utc::now();
        let slow_url = format!("{}/slow", slow.url);
        enqueue(&e, "aws", &slow_url, now).await;
        for i in 0..3 {
            enqueue(&e, "stripe", &format!("{}/fast/{i}", fast.url), now).await;
        }
        let started = Instant::now();
        let round = webhook::deliver_due(&e.store, &e.delivery).await.unwrap();
        let took = started.elapsed();
        assert_eq!((round.delivered, round.retried), (3, 1), "{round:?}");
        // The attempt to the slow receiver ended at the 1 s timeout, not after its 30 s,
        // and the others arrived while it was waiting.
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(slow.count(), 1);
        let got = fast.got.lock().unwrap().clone();
        assert_eq!(got.len(), 3);
        assert!(
            got.iter()
                .all(|(_, _, at)| at.duration_since(started) < Duration::from_millis(900)),
            "the fast receivers waited for the slow one"
        );
        let (last, delivered, failed) = status_of(&e.store, &slow_url).await;
        assert_eq!(last.as_deref(), Some("timeout"));
        assert_eq!((delivered, failed), (None, None), "a timeout is retried");
    }
}

#[tokio::test]
async fn redirects_are_never_followed() {
    for (url, _guard) in stores("webhooks_redirect").await {
        let e = env(&url, local(5, 4, 72)).await;
        let elsewhere = receiver(200, None).await;
        let mut hooks = Vec::new();
        for code in [302, 307, 308] {
            let r = receiver(code, Some(format!("{}/stolen", elsewhere.url))).await;
            let u = format!("{}/hook", r.url);
            enqueue(&e, "aws", &u, chrono::Utc::now()).await;
            hooks.push((code, r, u));
        }
        let round = webhook::deliver_due(&e.store, &e.delivery).await.unwrap();
        assert_eq!((round.delivered, round.retried), (0, 3), "{round:?}");
        assert_eq!(elsewhere.count(), 0, "a redirect was followed");
        for (code, r, u) in hooks {
            assert_eq!(r.count(), 1);
            let (last, delivered, _) = status_of(&e.store, &u).await;
            assert!(
                last.as_deref()
                    .is_some_and(|s| s.starts_with(&code.to_string())),
                "{last:?}"
            );
            assert_eq!(delivered, None);
        }
    }
}

#[tokio::test]
async fn a_refused_url_fails_at_once_without_a_connection() {
    for (url, _guard) in stores("webhooks_refused").await {
        // Loopback reachable over http, but not the metadata address nor plain http
        // to other hosts.
        let e = env(&url, local(5, 4, 72)).await;
        let now = chrono::Utc::now();
        for u in [
            "https://169.254.169.254/latest/meta-data",
            "http://hooks.example.com/x",
            "https://[::ffff:10.0.0.1]/x",
        ] {
            enqueue(&e, "aws", u, now).await;
        }
        let round = webhook::deliver_due(&e.store, &e.delivery).await.unwrap();
        assert_eq!(round.failed, 3, "{round:?}");
        let (last, _, failed) =
            status_of(&e.store, "https://169.254.169.254/latest/meta-data").await;
        assert!(last.unwrap().contains("cloud metadata"));
        assert!(failed.is_some());
        let (last, _, _) = status_of(&e.store, "http://hooks.example.com/x").await;
        assert!(last.unwrap().contains("only https"));
    }
}

#[tokio::test]
async fn retries_end_failed_the_dpo_sees_it_and_requeues_it() {
    for (url, _guard) in stores("webhooks_give_up").await {
        let e = env(&url, local(5, 4, 1)).await;
        let hook = receiver(500, None).await;
        let t0 = chrono::Utc::now();
        // The query may hold a token of the receiver's: it is never listed.
        let target = format!("{}/hook?token=s3cret", hook.url);
        enqueue(&e, "aws", &target, t0).await;
        let at = |secs: i64| t0 + chrono::Duration::seconds(secs);
        let round = |now| webhook::deliver_due_at(&e.store, &e.delivery, now);
        assert_eq!(round(at(0)).await.unwrap().retried, 1);
        assert_eq!(
            round(at(10)).await.unwrap(),
            Default::default(),
            "too early"
        );
        assert_eq!(round(at(31)).await.unwrap().retried, 1);
        assert_eq!(round(at(3500)).await.unwrap().retried, 1);
        // The last try falls on the deadline; then it is given up.
        assert_eq!(round(at(3599)).await.unwrap(), Default::default());
        assert_eq!(round(at(3600)).await.unwrap().failed, 1);
        assert_eq!(round(at(7 * 3600)).await.unwrap(), Default::default());
        assert_eq!(hook.count(), 4);
        // Every attempt carried the same idempotency key.
        let keys: Vec<String> = hook
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|(h, _, _)| h["idempotency-key"].to_str().unwrap().to_owned())
            .collect();
        assert!(keys.iter().all(|k| k == &keys[0] && k.starts_with("wh_")));

        let http = reqwest::Client::new();
        let auditor = e
            .store
            .create_admin_token(lethe::store::Role::Auditor)
            .await
            .unwrap()
            .1;
        let metrics = |http: reqwest::Client| {
            let url = format!("{}/metrics", e.base);
            let token = auditor.clone();
            async move {
                let r = http.get(url).bearer_auth(token).send().await.unwrap();
                r.text().await.unwrap()
            }
        };
        let m = metrics(http.clone()).await;
        assert!(m.contains("lethe_webhooks_failed 1\n"), "{m}");
        assert!(m.contains("lethe_webhooks_undelivered 0\n"), "{m}");
        let list_url = format!("{}/v1/admin/webhooks/failed", e.base);
        assert_eq!(http.get(&list_url).send().await.unwrap().status(), 401);
        let dpo = e
            .store
            .create_admin_token(lethe::store::Role::Dpo)
            .await
            .unwrap()
            .1;
        let listed: Value = http
            .get(&list_url)
            .bearer_auth(&auditor)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let failed = listed.as_array().unwrap();
        assert_eq!(failed.len(), 1, "{listed}");
        assert_eq!(failed[0]["kind"], "erasure_notice");
        assert_eq!(failed[0]["target"], "aws");
        assert_eq!(failed[0]["attempts"], 4);
        assert_eq!(failed[0]["last_status"], "500");
        assert_eq!(failed[0]["url"], format!("{}/hook", hook.url));
        assert!(!listed.to_string().contains("s3cret"));
        let id = failed[0]["id"].as_i64().unwrap();

        // Re-queueing needs a DPO token and a failed webhook.
        let requeue = |id: String, token: String| {
            let url = format!("{}/v1/admin/webhooks/{id}/requeue", e.base);
            let http = http.clone();
            async move {
                http.post(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        };
        assert_eq!(requeue(id.to_string(), auditor.clone()).await, 403);
        assert_eq!(requeue("999999".into(), dpo.clone()).await, 404);
        assert_eq!(requeue("x".into(), dpo.clone()).await, 404);
        hook.status.store(200, Ordering::SeqCst);
        assert_eq!(requeue(id.to_string(), dpo.clone()).await, 204);
        assert_eq!(requeue(id.to_string(), dpo.clone()).await, 404, "twice");
        let m = metrics(http.clone()).await;
        assert!(m.contains("lethe_webhooks_failed 0\n"), "{m}");
        assert!(m.contains("lethe_webhooks_undelivered 1\n"), "{m}");
        assert_eq!(
            webhook::deliver_due(&e.store, &e.delivery)
                .await
                .unwrap()
                .delivered,
            1
        );
        assert_eq!(hook.count(), 5);
        let actions: Vec<String> = e
            .audit
            .entries(&Default::default())
            .await
            .unwrap()
            .into_iter()
            .map(|x| x.header.action)
            .collect();
        assert!(actions.contains(&"webhook.requeued".to_owned()));
    }
}

#[tokio::test]
async fn each_processor_signs_with_its_own_secret_that_no_mask_equals() {
    for (url, _guard) in stores("webhooks_secrets").await {
        let e = env(&url, local(5, 4, 72)).await;
        let aws = e.audit.webhook_secret("aws").await.unwrap();
        let stripe = e.audit.webhook_secret("stripe").await.unwrap();
        assert_ne!(aws.to_hex(), stripe.to_hex());
        assert_eq!(aws.version, 1);
        // Asked again: the same secret.
        assert_eq!(
            e.audit.webhook_secret("aws").await.unwrap().to_hex(),
            aws.to_hex()
        );
        // No string masks to a secret: not the old derivation label, not the key names.
        for s in [
            "lethe webhook signing v1",
            "aws",
            "stripe",
            "webhook:aws",
            "webhook:aws:v1",
            "",
        ] {
            let mask = e.audit.mask_hash(s);
            assert_ne!(mask, aws.to_hex(), "{s}");
            assert_ne!(mask, stripe.to_hex(), "{s}");
        }

        // Rotation: a new secret signs from now on, and it is kept.
        let hook = receiver(200, None).await;
        let u = format!("{}/hook", hook.url);
        enqueue(&e, "aws", &u, chrono::Utc::now()).await;
        webhook::deliver_due(&e.store, &e.delivery).await.unwrap();
        let rotated = e.audit.rotate_webhook_secret("aws").await.unwrap();
        assert_eq!(rotated.version, 2);
        assert_ne!(rotated.to_hex(), aws.to_hex());
        enqueue(&e, "aws", &u, chrono::Utc::now()).await;
        webhook::deliver_due(&e.store, &e.delivery).await.unwrap();
        let got = hook.got.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        let verifies = |i: usize, secret: &str| {
            let (h, body, _) = &got[i];
            webhook::verify_hmac(
                secret,
                h["x-lethe-timestamp"].to_str().unwrap(),
                body,
                h["x-lethe-signature"].to_str().unwrap(),
            )
        };
        assert!(verifies(0, &aws.to_hex()) && !verifies(0, &rotated.to_hex()));
        assert!(verifies(1, &rotated.to_hex()) && !verifies(1, &aws.to_hex()));
        assert_ne!(got[0].0["x-lethe-signature"], got[1].0["x-lethe-signature"]);
        let reopened = AuditLog::open(
            e.store.clone(),
            &KeySource {
                master: None,
                signing: None,
                dir: e.dir.path().join(".lethe"),
            },
        )
        .await
        .unwrap();
        let again = reopened.webhook_secret("aws").await.unwrap();
        assert_eq!((again.version, again.to_hex()), (2, rotated.to_hex()));
        assert_eq!(
            reopened.webhook_secret("stripe").await.unwrap().to_hex(),
            stripe.to_hex(),
            "rotating one processor's secret changed another's"
        );
    }
}

#[tokio::test]
async fn a_webhook_claimed_by_a_sender_that_died_is_sent_once_later() {
    for (url, _guard) in stores("webhooks_crash").await {
        let e = env(&url, local(5, 4, 72)).await;
        let hook = receiver(200, None).await;
        let now = chrono::Utc::now();
        let u = format!("{}/hook", hook.url);
        enqueue(&e, "aws", &u, now).await;
        // A sender claimed it and died before recording anything.
        sqlx::query("UPDATE webhook_outbox SET claimed_at = $1")
            .bind(lethe::store::timestamp(now))
            .execute(e.store.pool())
            .await
            .unwrap();
        let at = |secs: i64| now + chrono::Duration::seconds(secs);
        let round = |now| webhook::deliver_due_at(&e.store, &e.delivery, now);
        // While its claim holds nobody else sends it; after it lapses, one sender does.
        assert_eq!(round(at(30)).await.unwrap(), Default::default());
        assert_eq!(hook.count(), 0);
        let (a, b) = tokio::join!(round(at(120)), round(at(120)));
        assert_eq!(a.unwrap().delivered + b.unwrap().delivered, 1);
        assert_eq!(round(at(3600)).await.unwrap(), Default::default());
        assert_eq!(hook.count(), 1);
        assert!(status_of(&e.store, &u).await.1.is_some());
    }
}

/// A webhook outbox row: body in clear, sealed body, delivery id.
type OutboxRow = (Option<String>, Option<Vec<u8>>, Option<String>);

/// A webhook body (an erasure notice names the person) rests sealed in the outbox and is
/// opened only to send; a body an earlier version queued in clear is sealed when the
/// server starts, once, and is still delivered with the delivery id it had.
#[tokio::test]
async fn webhook_bodies_rest_sealed_and_clear_ones_are_sealed_at_start() {
    for (url, _dir) in stores("webhook_bodies_rest_sealed").await {
        let r = receiver(200, None).await;
        let e = env(&url, local(5, 4, 72)).await;
        let now = chrono::Utc::now();
        let mut tx = e.store.begin().await.unwrap();
        webhook::enqueue_in(
            &mut tx,
            &e.audit.outbox_key(),
            &Webhook {
                kind: Kind::ErasureNotice,
                request_id: Some("r_sealed".into()),
                target: "aws".into(),
                url: format!("{}/new", r.url),
                body: json!({ "identities": [{ "type": "email", "value": "sealed.person@example.org" }] }),
                signing: Signing::Hmac,
            },
            now,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        // The old way: the body in clear, no delivery id.
        sqlx::query(
            "INSERT INTO webhook_outbox (kind, request_id, target, url, body, signing, next_attempt_at, created_at) VALUES ('erasure_notice', 'r_clear', 'aws', $1, $2, 'hmac', $3, $3)",
        )
        .bind(format!("{}/old", r.url))
        .bind(r#"{"identities":[{"type":"email","value":"clear.person@example.org"}]}"#)
        .bind(lethe::store::timestamp(now))
        .execute(e.store.pool())
        .await
        .unwrap();
        let clear_id: i64 =
            sqlx::query_scalar("SELECT id FROM webhook_outbox WHERE request_id = 'r_clear'")
                .fetch_one(e.store.pool())
                .await
                .unwrap();
        let rows = async |store: &Store| -> Vec<OutboxRow> {
            use sqlx::Row;
            sqlx::query("SELECT body, sealed, delivery_id FROM webhook_outbox ORDER BY id")
                .fetch_all(store.pool())
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.try_get(0).unwrap(),
                        r.try_get(1).unwrap(),
                        r.try_get(2).unwrap(),
                    )
                })
                .collect()
        };
        let before = rows(&e.store).await;
        assert_eq!(before[0].0, None, "a new body in clear");
        assert!(!String::from_utf8_lossy(before[0].1.as_ref().unwrap()).contains("sealed.person"));
        assert!(before[1].0.as_deref().unwrap().contains("clear.person"));
        // A server starting on this store seals what was left in clear, once.
        restart(&e).await;
        let sealed = rows(&e.store).await;
        assert_eq!(sealed[0], before[0], "a sealed body was touched");
        assert_eq!(sealed[1].0, None, "the old body is still in clear");
        assert!(!String::from_utf8_lossy(sealed[1].1.as_ref().unwrap()).contains("clear.person"));
        assert_eq!(sealed[1].2, Some(format!("wh_{clear_id}")));
        restart(&e).await;
        assert_eq!(
            rows(&e.store).await,
            sealed,
            "sealing again changed something"
        );
        // Both are delivered, opened only to send.
        let round = webhook::deliver_due_at(&e.store, &e.delivery, now)
            .await
            .unwrap();
        assert_eq!(round.delivered, 2);
        let got = r.got.lock().unwrap().clone();
        let bodies: Vec<String> = got
            .iter()
            .map(|(_, b, _)| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert!(
            bodies
                .iter()
                .any(|b| b.contains("sealed.person@example.org")),
            "{bodies:?}"
        );
        let old = got
            .iter()
            .find(|(_, b, _)| String::from_utf8_lossy(b).contains("clear.person@example.org"))
            .expect("the old webhook was not delivered");
        assert_eq!(old.0["idempotency-key"], format!("wh_{clear_id}").as_str());
        for (body, sealed, _) in rows(&e.store).await {
            assert_eq!((body, sealed), (None, None), "a delivered body was kept");
        }
    }
}

/// Starts another server on `e`'s store and keys, waits until it answers, and stops it.
async fn restart(e: &Env) {
    let app = serve(&e.url, e.dir.path(), local(5, 4, 72)).await;
    // Sealing runs before the server answers anything.
    reqwest::get(format!("{}/healthz", app.base)).await.unwrap();
    app.stop().await;
}

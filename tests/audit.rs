//! The audit log on SQLite and PostgreSQL: tamper evidence, crypto-shredding, key
//! rotation, concurrent appenders and consistency proofs.

mod common;

use lethe::audit::{
    Actor, AuditError, AuditLog, Checkpoint, Identity, KeySource, MasterKey, NewEntry, Payload,
    keys,
};
use lethe::crypto::Signer;
use lethe::store::Store;
use secrecy::SecretString;
use serde_json::json;

struct Fixture {
    url: SecretString,
    keys: KeySource,
    _dirs: Vec<tempfile::TempDir>,
}

async fn fixture(test: &str, postgres: bool) -> Option<Fixture> {
    let keydir = tempfile::tempdir().unwrap();
    let keys = KeySource {
        master: None,
        signing: None,
        dir: keydir.path().join(".lethe"),
    };
    if postgres {
        let url = common::postgres_store(test).await?;
        Some(Fixture {
            url,
            keys,
            _dirs: vec![keydir],
        })
    } else {
        let (url, dir) = common::sqlite_store();
        Some(Fixture {
            url,
            keys,
            _dirs: vec![keydir, dir],
        })
    }
}

impl Fixture {
    async fn open(&self) -> AuditLog {
        let store = Store::open(&self.url).await.unwrap();
        AuditLog::open(store, &self.keys).await.unwrap()
    }

    fn signer(&self) -> Signer {
        keys::load_or_create_signer(&self.keys).unwrap()
    }
}

fn entry(i: usize) -> NewEntry {
    NewEntry::new(Actor::System, "test.event")
        .summary(json!({ "n": i }))
        .payload(json!({ "note": format!("payload {i}") }))
}

async fn exec(log: &AuditLog, sql: &'static str) {
    sqlx::query(sql).execute(log.store().pool()).await.unwrap();
}

async fn fill(log: &AuditLog, n: usize) {
    for i in 0..n {
        log.append(entry(i)).await.unwrap();
    }
}

macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                if let Some(f) = super::fixture(stringify!($name), false).await {
                    super::$body(f).await;
                }
            }
            #[tokio::test]
            async fn postgres() {
                if let Some(f) = super::fixture(stringify!($name), true).await {
                    super::$body(f).await;
                }
            }
        }
    };
}

async fn appends_verify_and_read_back(f: Fixture) {
    let log = f.open().await;
    fill(&log, 5).await;
    let first = log
        .append_batch(&(5..12).map(entry).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(first, 5);
    let report = log.verify().await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.entries, 12);
    let entries = log.entries(&Default::default()).await.unwrap();
    assert_eq!(entries.len(), 12);
    assert_eq!(entries[7].header.seq, 7);
    assert_eq!(entries[7].header.summary, "{\"n\":7}");
    assert_eq!(
        entries[7].payload,
        Payload::Clear(json!({ "note": "payload 7" }))
    );
    // The personal payload is not stored in clear.
    let raw: Vec<u8> = sqlx::query_scalar("SELECT ciphertext FROM audit_entries WHERE seq = 7")
        .fetch_one(log.store().pool())
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("payload 7"));
}
both_backends!(appends, appends_verify_and_read_back);

/// Each kind of tampering is found at the right entry.
async fn tampering_is_found_at_the_right_seq(f: Fixture) {
    let cases: [(&str, &[&'static str], u64); 4] = [
        (
            "changed",
            &["UPDATE audit_entries SET summary = '{\"n\":99}' WHERE seq = 5"],
            5,
        ),
        ("removed", &["DELETE FROM audit_entries WHERE seq = 3"], 3),
        (
            "reordered",
            &[
                "UPDATE audit_entries SET seq = -1 WHERE seq = 4",
                "UPDATE audit_entries SET seq = 4 WHERE seq = 6",
                "UPDATE audit_entries SET seq = 6 WHERE seq = -1",
            ],
            4,
        ),
        (
            "inserted",
            &[
                "UPDATE audit_entries SET seq = seq + 100 WHERE seq >= 7",
                "UPDATE audit_entries SET seq = seq - 99 WHERE seq >= 100",
                "INSERT INTO audit_entries (seq, recorded_at, actor, action, request_id, subject_id, summary, key_id, key_version, ciphertext, mac) \
                 SELECT 7, recorded_at, actor, action, request_id, subject_id, summary, key_id, key_version, ciphertext, mac FROM audit_entries WHERE seq = 2",
                "UPDATE audit_head SET next_seq = next_seq + 1",
            ],
            7,
        ),
    ];
    for (what, statements, bad) in cases {
        // A fresh log for each case, in the same database.
        exec_all(
            &f,
            &[
                "DELETE FROM audit_entries",
                "DELETE FROM audit_checkpoints",
                "UPDATE audit_head SET next_seq = 0",
            ],
        )
        .await;
        let log = f.open().await;
        fill(&log, 10).await;
        assert!(log.verify().await.unwrap().ok());
        for s in statements {
            exec(&log, s).await;
        }
        let report = log.verify().await.unwrap();
        assert_eq!(
            report.first_bad_seq(),
            Some(bad),
            "{what}: {:?}",
            report.problems
        );
        // No checkpoint is signed over a bad log.
        assert!(
            matches!(
                log.checkpoint(&f.signer()).await,
                Err(AuditError::DoesNotVerify(_))
            ),
            "{what}"
        );
    }
}
both_backends!(tampering, tampering_is_found_at_the_right_seq);

async fn exec_all(f: &Fixture, statements: &[&'static str]) {
    let log = f.open().await;
    for s in statements {
        exec(&log, s).await;
    }
}

/// Truncation and rewritten checkpoints are caught through the signed tree heads.
async fn checkpoints_catch_truncation_and_forgery(f: Fixture) {
    let log = f.open().await;
    fill(&log, 8).await;
    let cp = log.checkpoint(&f.signer()).await.unwrap();
    assert_eq!(cp.tree_size, 8);
    assert!(cp.signature_valid());
    fill(&log, 2).await;
    let report = log.verify().await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.checkpoints_checked, 1);

    // Removing the tail and resetting the counter hides from the entries themselves...
    exec(&log, "DELETE FROM audit_entries WHERE seq >= 6").await;
    exec(&log, "UPDATE audit_head SET next_seq = 6").await;
    let report = log.verify().await.unwrap();
    // ...but not from the checkpoint at size 8.
    assert_eq!(report.first_bad_seq(), Some(6), "{:?}", report.problems);

    exec(
        &log,
        "UPDATE audit_checkpoints SET root_hash = '00' || substr(root_hash, 3)",
    )
    .await;
    let report = log.verify().await.unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.message.contains("invalid signature")),
        "{:?}",
        report.problems
    );
}
both_backends!(checkpoints, checkpoints_catch_truncation_and_forgery);

async fn shredding_destroys_payloads_but_not_the_log(f: Fixture) {
    let log = f.open().await;
    let alice = Identity::parse("email=Alice@Example.com").unwrap();
    let bob = Identity::parse("email=bob@example.com").unwrap();
    let sa = log.subject_for(&alice).await.unwrap();
    let sb = log.subject_for(&bob).await.unwrap();
    assert_ne!(sa, sb);
    assert_eq!(
        log.subject_for(&Identity::parse("email=alice@example.com").unwrap())
            .await
            .unwrap(),
        sa
    );
    assert!(!sa.as_str().contains("alice"));
    for (s, who) in [(&sa, "alice@example.com"), (&sb, "bob@example.com")] {
        log.append(
            NewEntry::new(Actor::Subject, "request.submitted")
                .subject(s)
                .request("r1")
                .payload(json!({ "email": who })),
        )
        .await
        .unwrap();
    }
    log.shred(&sa, Actor::System).await.unwrap();

    let entries = log.entries(&Default::default()).await.unwrap();
    let alice_entry = entries
        .iter()
        .find(|e| e.header.subject_id.as_deref() == Some(sa.as_str()))
        .unwrap();
    assert_eq!(alice_entry.payload, Payload::Shredded);
    let bob_entry = entries
        .iter()
        .find(|e| e.header.subject_id.as_deref() == Some(sb.as_str()))
        .unwrap();
    assert_eq!(
        bob_entry.payload,
        Payload::Clear(json!({ "email": "bob@example.com" }))
    );
    assert!(
        entries
            .iter()
            .any(|e| e.header.action == "subject.shredded")
    );
    assert!(log.verify().await.unwrap().ok());

    // The shredded id can never be written under again; the person gets a new id.
    let err = log
        .append(NewEntry::new(Actor::System, "x").subject(&sa))
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Shredded(_)), "{err}");
    assert_eq!(log.find_subject(&alice).await.unwrap(), None);
    let again = log.subject_for(&alice).await.unwrap();
    assert_ne!(again, sa);
    // Another process (a fresh key cache) sees the same.
    let other = f.open().await;
    let entries = other.entries(&Default::default()).await.unwrap();
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.payload == Payload::Shredded)
            .count(),
        1
    );
}
both_backends!(shredding, shredding_destroys_payloads_but_not_the_log);

async fn rotation_rewraps_keys_and_wrong_keys_change_nothing(f: Fixture) {
    let log = f.open().await;
    let s = log
        .subject_for(&Identity::parse("email=carol@example.com").unwrap())
        .await
        .unwrap();
    log.append(
        NewEntry::new(Actor::Subject, "request.submitted")
            .subject(&s)
            .payload(json!({ "email": "carol@example.com" })),
    )
    .await
    .unwrap();
    fill(&log, 3).await;
    let before = log.verify().await.unwrap();

    let new = MasterKey::generate().unwrap();
    let new_hex = new.to_hex();
    assert_eq!(log.rotate_master(&new).await.unwrap(), 7); // system, mac, index, masking, packages, outbox, carol

    // The old key is now the wrong one: a clear error, nothing written.
    let store = Store::open(&f.url).await.unwrap();
    let count = |store: Store| async move {
        let e: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_entries")
            .fetch_one(store.pool())
            .await
            .unwrap();
        let k: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_keys")
            .fetch_one(store.pool())
            .await
            .unwrap();
        (e, k)
    };
    let rows_before = count(store.clone()).await;
    let err = AuditLog::open(store.clone(), &f.keys).await.err().unwrap();
    assert!(err.to_string().contains("wrong master key"), "{err}");
    let random = KeySource {
        master: Some(SecretString::from(MasterKey::generate().unwrap().to_hex())),
        ..f.keys.clone()
    };
    assert!(AuditLog::open(store.clone(), &random).await.is_err());
    assert_eq!(count(store.clone()).await, rows_before);

    // With the new key everything decrypts and verifies; entries were not touched.
    let rotated = KeySource {
        master: Some(SecretString::from(new_hex)),
        ..f.keys.clone()
    };
    let log = AuditLog::open(store, &rotated).await.unwrap();
    let after = log.verify().await.unwrap();
    assert!(after.ok(), "{:?}", after.problems);
    assert_eq!(after.entries, before.entries + 1); // + keys.rotated
    let entries = log.entries(&Default::default()).await.unwrap();
    assert_eq!(
        entries[0].payload,
        Payload::Clear(json!({ "email": "carol@example.com" }))
    );
    assert_eq!(entries.last().unwrap().header.action, "keys.rotated");
}
both_backends!(
    rotation,
    rotation_rewraps_keys_and_wrong_keys_change_nothing
);

/// Eight appenders with their own connection pools (as separate processes would have)
/// append 1,000 entries each: one tree, no gaps, no forks.
async fn concurrent_appenders_make_one_tree(f: Fixture) {
    let first = f.open().await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let log = f.open().await;
        tasks.push(tokio::spawn(async move {
            for i in 0..1000 {
                log.append(NewEntry::new(Actor::System, "load").summary(json!({ "w": w, "i": i })))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = first.verify().await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.entries, 8000);
    let max: i64 = sqlx::query_scalar("SELECT max(seq) FROM audit_entries")
        .fetch_one(first.store().pool())
        .await
        .unwrap();
    assert_eq!(max, 7999);
}
both_backends!(concurrency, concurrent_appenders_make_one_tree);

async fn consistency_proofs_track_an_old_checkpoint(f: Fixture) {
    let log = f.open().await;
    let signer = f.signer();
    fill(&log, 10).await;
    let old: Checkpoint = log.checkpoint(&signer).await.unwrap();
    for extra in [1usize, 5, 17] {
        fill(&log, extra).await;
        let r = log
            .consistency(&old, Some(&signer.public_key()))
            .await
            .unwrap();
        assert!(r.consistent, "{:?}", r.problems);
        assert!(!r.proof.is_empty());
    }
    // A forged old checkpoint (different root, re-signed by someone else) is refused.
    let mut forged = old.clone();
    forged.root_hash = "11".repeat(32);
    let r = log
        .consistency(&forged, Some(&signer.public_key()))
        .await
        .unwrap();
    assert!(!r.consistent);
}
both_backends!(consistency, consistency_proofs_track_an_old_checkpoint);

/// The bytes of the SQLite store's files and of the key directory, for comparison.
fn snapshot(dir: &std::path::Path, keydir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for d in [dir, keydir] {
        let Ok(entries) = std::fs::read_dir(d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_file() {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A wrong or missing master key is found before anything is written: the store and the
/// key directory stay byte for byte as they were, and the error names the fix.
#[tokio::test]
async fn a_wrong_or_lost_master_key_is_refused_before_anything_is_written() {
    let (url, dir) = common::sqlite_store();
    let keydir = tempfile::tempdir().unwrap();
    let keys = KeySource {
        master: None,
        signing: None,
        dir: keydir.path().join(".lethe"),
    };
    let key_file = keydir.path().join(".lethe/master.key");
    {
        let store = Store::open(&url).await.unwrap();
        let log = AuditLog::open(store.clone(), &keys).await.unwrap();
        log.append(entry(1)).await.unwrap();
        store.close().await;
    }
    // The right key opens it.
    {
        let store = Store::open(&url).await.unwrap();
        AuditLog::open(store.clone(), &keys).await.unwrap();
        store.close().await;
    }
    let right = std::fs::read_to_string(&key_file).unwrap();
    let before = snapshot(dir.path(), &keydir.path().join(".lethe"));

    // Another key in the key file.
    std::fs::write(&key_file, MasterKey::generate().unwrap().to_hex()).unwrap();
    let swapped = snapshot(dir.path(), &keydir.path().join(".lethe"));
    let store = Store::open(&url).await.unwrap();
    let err = AuditLog::open(store.clone(), &keys).await.err().unwrap();
    store.close().await;
    assert!(err.to_string().contains("wrong master key"), "{err}");
    assert_eq!(snapshot(dir.path(), &keydir.path().join(".lethe")), swapped);

    // Another key configured.
    std::fs::write(&key_file, &right).unwrap();
    let other = KeySource {
        master: Some(SecretString::from(MasterKey::generate().unwrap().to_hex())),
        ..keys.clone()
    };
    let store = Store::open(&url).await.unwrap();
    assert!(AuditLog::open(store.clone(), &other).await.is_err());
    store.close().await;
    assert_eq!(snapshot(dir.path(), &keydir.path().join(".lethe")), before);

    // The key file lost: refused, and no new key file written in its place.
    std::fs::remove_file(&key_file).unwrap();
    let lost = snapshot(dir.path(), &keydir.path().join(".lethe"));
    let store = Store::open(&url).await.unwrap();
    let err = AuditLog::open(store.clone(), &keys).await.err().unwrap();
    store.close().await;
    let text = err.to_string();
    assert!(text.contains("LETHE_MASTER_KEY_FILE"), "{text}");
    assert!(text.contains("No new key was written"), "{text}");
    assert!(!key_file.exists(), "a new master key was written");
    assert_eq!(snapshot(dir.path(), &keydir.path().join(".lethe")), lost);

    // Put back, it opens again, with everything readable.
    std::fs::write(&key_file, &right).unwrap();
    let store = Store::open(&url).await.unwrap();
    let log = AuditLog::open(store, &keys).await.unwrap();
    assert!(log.verify().await.unwrap().ok());
}

/// What is sealed under a subject's key reads as gone in every process once the subject
/// is shredded in one of them, even where the key was in memory.
#[tokio::test]
async fn a_subject_shredded_elsewhere_opens_nothing_here() {
    let f = fixture("a_subject_shredded_elsewhere_opens_nothing_here", false)
        .await
        .unwrap();
    let (here, there) = (f.open().await, f.open().await);
    let person = here
        .subject_for(&Identity::parse("email=erin@example.com").unwrap())
        .await
        .unwrap();
    let mut tx = here.store().begin().await.unwrap();
    let sealed = here
        .seal_for_subject(&mut tx, &person, "r_1", b"erin@example.com")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let open = |log: &AuditLog| {
        let (log, sealed, person) = (log.clone(), sealed.clone(), person.clone());
        async move {
            log.open_for_subject(person.as_str(), "r_1", &sealed)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        open(&there).await.as_deref(),
        Some(&b"erin@example.com"[..])
    );
    here.shred(&person, Actor::System).await.unwrap();
    assert_eq!(open(&here).await, None);
    assert_eq!(open(&there).await, None, "read under a key held in memory");
}

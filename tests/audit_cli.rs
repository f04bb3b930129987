//! `lethe audit ...` and `lethe keys rotate` as an operator runs them.

use std::path::Path;
use std::process::Command;

use lethe::audit::{Actor, AuditLog, Identity, KeySource, NewEntry};
use lethe::store::Store;
use secrecy::SecretString;
use serde_json::json;

fn lethe(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let db = format!("sqlite://{}?mode=rwc", dir.join("lethe.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .args(["--database", &db])
        .current_dir(dir)
        .env_remove("LETHE_MASTER_KEY")
        .env_remove("LETHE_MASTER_KEY_FILE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn open(dir: &Path) -> AuditLog {
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
    AuditLog::open(store, &keys).await.unwrap()
}

#[tokio::test]
async fn verify_checkpoint_consistency_show_export_and_rotate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = open(dir).await;
    let dana = log
        .subject_for(&Identity::parse("email=dana@example.com").unwrap())
        .await
        .unwrap();
    log.append(
        NewEntry::new(Actor::Subject, "request.submitted")
            .subject(&dana)
            .request("req-1")
            .payload(json!({ "email": "dana@example.com" })),
    )
    .await
    .unwrap();
    for i in 0..4 {
        log.append(NewEntry::new(Actor::System, "test.event").summary(json!({ "n": i })))
            .await
            .unwrap();
    }
    log.store().close().await;

    let (code, out, err) = lethe(dir, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("5 entries") && out.contains("OK"), "{out}");
    // Not on a terminal: no bar, one summary line for the stage.
    let stage: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("verifying the audit log: "))
        .collect();
    assert_eq!(stage.len(), 1, "{err}");
    assert!(
        stage[0].starts_with("verifying the audit log: 5 entries in "),
        "{err}"
    );
    assert!(!err.contains('\u{1b}') && !err.contains('\r'), "{err}");

    let (code, out, err) = lethe(dir, &["audit", "checkpoint"]);
    assert_eq!(code, 0, "{err}");
    let cp: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cp["tree_size"], 5);
    let old = dir.join("old.json");
    std::fs::write(&old, &out).unwrap();

    let (code, out, _) = lethe(
        dir,
        &["audit", "show", "--subject", "email=DANA@example.com"],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("request.submitted")
            && out.contains("dana@example.com")
            && out.contains("req-1"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1);

    let (code, out, _) = lethe(dir, &["audit", "export", "--format", "jsonl"]);
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[1]["action"], "test.event");

    // Shredding, then more entries: the old checkpoint is still a prefix.
    let log = open(dir).await;
    log.shred(&dana, Actor::System).await.unwrap();
    log.store().close().await;
    let (_, out, _) = lethe(dir, &["audit", "show"]);
    assert!(
        out.contains("<shredded>") && !out.contains("dana@example.com"),
        "{out}"
    );
    let (code, out, err) = lethe(
        dir,
        &["audit", "consistency", "--from", old.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["consistent"],
        true
    );

    // Rotation keeps everything readable and verifiable.
    let (code, _, err) = lethe(dir, &["keys", "rotate"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("rotated 6 key(s)"), "{err}"); // system, mac, index, masking, packages, outbox: dana was shredded
    assert!(err.contains("re-wrapping keys: 6 keys in "), "{err}");
    assert!(!dir.join(".lethe/master.key.next").exists());
    let (code, out, _) = lethe(dir, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");

    // Tampering: exit 1 naming the entry.
    let log = open(dir).await;
    sqlx::query("UPDATE audit_entries SET action = 'nothing.happened' WHERE seq = 2")
        .execute(log.store().pool())
        .await
        .unwrap();
    log.store().close().await;
    let (code, out, _) = lethe(dir, &["audit", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BAD seq 2"), "{out}");
    let (code, out, _) = lethe(
        dir,
        &["audit", "consistency", "--from", old.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{out}");
}

#[tokio::test]
async fn a_wrong_master_key_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    open(dir).await.store().close().await;
    let db = format!("sqlite://{}?mode=rwc", dir.join("lethe.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["audit", "verify", "--database", &db])
        .current_dir(dir)
        .env("LETHE_MASTER_KEY", "11".repeat(32))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wrong master key") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!err.contains(&"11".repeat(32)), "the key leaked: {err}");
    let (code, _, err) = lethe(dir, &["audit", "show", "--subject", "dana@example.com"]);
    assert_eq!(code, 2);
    assert!(err.contains("kind=value"), "{err}");
}

#[test]
fn each_processor_has_a_webhook_secret_of_its_own_that_rotates() {
    let tmp = tempfile::tempdir().unwrap();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let policies = policies.to_str().unwrap();
    let secret = |processor: &str, rotate: bool| {
        let mut args = vec![
            "admin",
            "webhook-secret",
            "--processor",
            processor,
            "--policies",
            policies,
        ];
        if rotate {
            args.push("--rotate");
        }
        lethe(tmp.path(), &args)
    };
    let (code, aws, err) = secret("aws", false);
    assert_eq!(code, 0, "{err}");
    let aws = aws.trim().to_owned();
    assert!(aws.len() == 64 && aws.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(err.contains("v1"), "{err}");
    assert_eq!(secret("aws", false).1.trim(), aws);
    let payments = secret("payments", false).1.trim().to_owned();
    assert_eq!(payments.len(), 64);
    assert_ne!(payments, aws);
    let (code, rotated, err) = secret("aws", true);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("v2"), "{err}");
    let rotated = rotated.trim().to_owned();
    assert_ne!(rotated, aws);
    assert_eq!(secret("aws", false).1.trim(), rotated, "not kept");
    assert_eq!(secret("payments", false).1.trim(), payments);
    let (code, out, err) = secret("nobody", false);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("no processor `nobody`"), "{err}");
    // The old form, without a processor, is a usage error.
    let (code, _, _) = lethe(tmp.path(), &["admin", "webhook-secret"]);
    assert_eq!(code, 2);
}

//! Retention of lethe's own store.

use super::*;

/// What [`purge`] removed from lethe's own store.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Purged {
    pub packages: u64,
    pub expired_codes: u64,
    /// Per-person counts of code checks whose window has ended.
    pub code_check_windows: u64,
    pub requests: u64,
    pub abandoned_requests: u64,
    pub mails: u64,
    pub webhooks: u64,
}

/// Days an unconfirmed request, or a sent message, is kept.
pub const TRANSIENT_DAYS: i64 = 30;

/// Retention of lethe's own data: packages past their download period, verification
/// codes and links past expiry, per-person counts of code checks past their window, finished requests `keep_requests` after they ended (3 years by
/// default: what a DPO needs to show how requests were answered), requests never
/// confirmed and sent messages after [`TRANSIENT_DAYS`], delivered webhooks likewise.
/// Restrictions still in force keep their request. One audit entry with the counts.
pub async fn purge(
    store: &Store,
    audit: &AuditLog,
    keep_requests: RetentionPeriod,
    now: DateTime<Utc>,
) -> Result<Purged, RequestError> {
    let now_s = timestamp(now);
    let old = timestamp(keep_requests.before(now).unwrap_or(now));
    let transient = timestamp(now - chrono::Duration::days(TRANSIENT_DAYS));
    let mut tx = store.begin().await?;
    let mut run = async |sql: &str, at: &str| -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(at.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected())
    };
    // A failed request is not finished: it waits for the DPO.
    let finished = format!(
        "{} AND updated_at < $1 AND id NOT IN (SELECT request_id FROM subject_restrictions WHERE lifted_at IS NULL)",
        Status::sql_in("status", Status::ALL.into_iter().filter(|s| s.is_final()))
    );
    let abandoned = "status = 'identity_pending' AND updated_at < $1";
    let mut p = Purged {
        packages: run("DELETE FROM request_packages WHERE expires_at < $1", &now_s).await?,
        expired_codes: run(
            "UPDATE dsr_requests SET code_hash = NULL WHERE code_hash IS NOT NULL AND code_expires_at < $1",
            &now_s,
        )
        .await?,
        code_check_windows: run(
            "DELETE FROM code_checks WHERE window_start <= $1",
            &timestamp(now - chrono::Duration::hours(super::CODE_CHECK_WINDOW_HOURS)),
        )
        .await?,
        ..Purged::default()
    };
    p.expired_codes += run(
        "UPDATE dsr_requests SET link_hash = NULL WHERE link_hash IS NOT NULL AND link_expires_at < $1",
        &now_s,
    )
    .await?;
    for (cond, at) in [(finished.as_str(), &old), (abandoned, &transient)] {
        for child in [
            "DELETE FROM request_packages WHERE request_id IN (SELECT id FROM dsr_requests WHERE {c})",
            "DELETE FROM subject_restrictions WHERE request_id IN (SELECT id FROM dsr_requests WHERE {c})",
            "DELETE FROM webhook_outbox WHERE request_id IN (SELECT id FROM dsr_requests WHERE {c})",
        ] {
            run(&child.replace("{c}", cond), at).await?;
        }
        let n = run(&format!("DELETE FROM dsr_requests WHERE {cond}"), at).await?;
        if cond == finished {
            p.requests = n;
        } else {
            p.abandoned_requests = n;
        }
    }
    p.mails = run(
        "DELETE FROM mail_outbox WHERE sent_at IS NOT NULL AND sent_at < $1",
        &transient,
    )
    .await?;
    p.webhooks = run(
        "DELETE FROM webhook_outbox WHERE delivered_at IS NOT NULL AND delivered_at < $1",
        &transient,
    )
    .await?;
    audit
        .append_in(
            &mut tx,
            &[NewEntry::new(Actor::System, "store.purged")
                .summary(serde_json::to_value(&p).unwrap_or_default())],
        )
        .await?;
    tx.commit().await?;
    Ok(p)
}

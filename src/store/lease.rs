//! Claims as leases. Every process that works from the store is an instance with an id of
//! its own; a request, a message, a webhook or a job run it claims carries that id. The
//! claim holds while the instance sends a heartbeat (every [`HEARTBEAT`]): it lapses
//! [`LEASE_SECONDS`] after the last one, or at once when the instance is known to be gone
//! (it stopped cleanly, or it ran on this host and its process no longer exists), so a
//! restarted `lethe serve` takes over what its predecessor was doing right away.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError, timestamp};

/// How long an instance's claims hold after its last heartbeat.
pub const LEASE_SECONDS: i64 = 30;
/// How often a serving instance renews its lease.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// A claim that may be taken over: nobody holds it, its holder is gone or silent, or (a
/// holder that is not an instance: a claim made by an older version, a CLI run) it is
/// older than the cutoff bound at `${at}`. `{by}` and `{claimed}` name the columns; `${lease}`
/// is bound to the lease cutoff ([`lease_cutoff`]).
pub fn lapsed(by: &str, claimed: &str, lease: usize, at: usize) -> String {
    format!(
        "({by} IS NULL AND ({claimed} IS NULL OR {claimed} < ${at}) \
         OR {by} IN (SELECT id FROM instances WHERE stopped_at IS NOT NULL OR heartbeat_at < ${lease}) \
         OR {by} NOT IN (SELECT id FROM instances) AND {claimed} < ${at})"
    )
}

/// The heartbeat older than which an instance's claims lapse.
pub fn lease_cutoff(now: DateTime<Utc>) -> String {
    timestamp(now - chrono::Duration::seconds(LEASE_SECONDS))
}

/// This process as an instance.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub host: String,
    pub pid: i64,
    /// When the process started, as the kernel counts it (boot id and clock ticks): a pid
    /// reused by another process does not pass for this one.
    pub process_start: String,
}

/// This process, the same for the life of the process.
pub fn this() -> &'static Instance {
    static THIS: OnceLock<Instance> = OnceLock::new();
    THIS.get_or_init(|| {
        let pid = std::process::id();
        let host = hostname();
        let suffix = crate::crypto::random_hex(6).unwrap_or_else(|_| "0".repeat(12));
        Instance {
            id: format!("{host}:{pid}:{suffix}"),
            host,
            pid: i64::from(pid),
            process_start: process_start(pid).unwrap_or_default(),
        }
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Boot id and start time of process `pid` (Linux); None where the system does not say.
fn process_start(pid: u32) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: fields are counted after its `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    let start = after.split_whitespace().nth(19)?;
    Some(format!("{}:{start}", boot.trim()))
}

/// Whether an instance of this host is known to be gone: its process has ended (or its
/// pid now belongs to another process). Unknown (no `/proc`): not known to be gone.
fn gone_here(pid: i64, started: &str) -> bool {
    if started.is_empty() {
        return false;
    }
    match u32::try_from(pid).ok().and_then(process_start) {
        Some(now) => now != started,
        None => std::path::Path::new("/proc/self/stat").exists(),
    }
}

/// Claims held by instances found gone, per kind of work.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TakenOver {
    pub requests: u64,
    pub mail: u64,
    pub webhooks: u64,
    /// Job runs left running, now `interrupted`: `(run id, job name)`.
    pub job_runs: Vec<(i64, String)>,
}

impl TakenOver {
    pub fn total(&self) -> u64 {
        self.requests + self.mail + self.webhooks + self.job_runs.len() as u64
    }
}

impl Store {
    /// Records `me` as serving (again).
    pub async fn register_instance(
        &self,
        me: &Instance,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO instances (id, host, pid, process_start, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = $5, stopped_at = NULL",
        )
        .bind(&me.id)
        .bind(&me.host)
        .bind(me.pid)
        .bind(&me.process_start)
        .bind(timestamp(now))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Renews `me`'s lease.
    pub async fn heartbeat(&self, me: &Instance, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET heartbeat_at = $1 WHERE id = $2")
            .bind(timestamp(now))
            .bind(&me.id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Ends `me`'s lease at once (a clean stop): whatever it still holds is free.
    pub async fn stop_instance(&self, me: &Instance, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET stopped_at = $1 WHERE id = $2")
            .bind(timestamp(now))
            .bind(&me.id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Marks as stopped the instances known to be gone (on this host, their process has
    /// ended) or silent for longer than the lease, and counts the claims they held, which
    /// are free from now on. Job runs they left running are marked `interrupted`.
    pub async fn reap_instances(
        &self,
        me: &Instance,
        now: DateTime<Utc>,
    ) -> Result<TakenOver, StoreError> {
        let rows = sqlx::query(
            "SELECT id, host, pid, process_start, heartbeat_at FROM instances WHERE stopped_at IS NULL AND id <> $1",
        )
        .bind(&me.id)
        .fetch_all(self.pool())
        .await?;
        let cutoff = lease_cutoff(now);
        let mut gone = Vec::new();
        for r in rows {
            let (id, host, pid, started, beat): (String, String, i64, String, String) = (
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
            );
            if beat < cutoff || host == me.host && gone_here(pid, &started) {
                gone.push(id);
            }
        }
        let mut taken = TakenOver::default();
        for id in &gone {
            let count = |sql: &'static str| async move {
                let n: i64 = sqlx::query_scalar(sql)
                    .bind(id)
                    .fetch_one(self.pool())
                    .await?;
                Ok::<u64, StoreError>(n.max(0) as u64)
            };
            taken.requests += count("SELECT count(*) FROM dsr_requests WHERE claimed_by = $1 AND status = 'in_progress'").await?;
            taken.mail += count("SELECT count(*) FROM mail_outbox WHERE claimed_by = $1 AND sent_at IS NULL AND dead_at IS NULL").await?;
            taken.webhooks += count("SELECT count(*) FROM webhook_outbox WHERE claimed_by = $1 AND delivered_at IS NULL AND failed_at IS NULL").await?;
            let runs: Vec<(i64, String)> = sqlx::query_as(
                "SELECT id, job FROM job_runs WHERE holder = $1 AND status = 'running' ORDER BY id",
            )
            .bind(id)
            .fetch_all(self.pool())
            .await?;
            taken.job_runs.extend(runs);
            let mut tx = self.pool().begin().await?;
            sqlx::query(
                "UPDATE instances SET stopped_at = $1 WHERE id = $2 AND stopped_at IS NULL",
            )
            .bind(timestamp(now))
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE job_runs SET status = 'interrupted', finished_at = $1 WHERE holder = $2 AND status = 'running'")
                .bind(timestamp(now))
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = this();
        assert!(!gone_here(me.pid, &me.process_start), "{me:?}");
        assert!(gone_here(me.pid, "not-a-boot:1"));
        // Not known here: never taken for gone.
        assert!(!gone_here(me.pid, ""));
    }

    #[test]
    fn an_instance_id_is_new_for_every_process_and_names_its_host() {
        assert!(
            this()
                .id
                .starts_with(&format!("{}:{}:", this().host, std::process::id()))
        );
        assert_eq!(this().id, this().id);
    }
}

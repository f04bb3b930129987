//! The one way a request changes status: [`Service::move_in`] checks the move against
//! [`Status::TRANSITIONS`] and the status the request is in now, writes the new status
//! with the columns that change with it, appends the audit entries, queues the mail to
//! the person and the controller systems' callbacks, all in the caller's transaction.
//! The store checks the same table on every write (migration 0020).
//!
//! Only the worker's claim (`execute_next`) writes a status elsewhere: it picks and
//! takes the next request in one statement so that two workers never take the same one.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::status::{self, Status};
use super::{RequestError, Service};
use crate::audit::NewEntry;
use crate::notify::{self, Mail};
use crate::store::timestamp;

/// A change of status and what comes with it.
pub(super) struct Move<'a> {
    pub id: &'a str,
    /// The states the caller acts from; a request in any other is `WrongState`.
    pub from: &'a [Status],
    pub to: Status,
    /// What the caller does, for the error (`approve`, `retry`, ...).
    pub action: &'a str,
    /// Written to the audit log in the same transaction.
    pub entries: Vec<NewEntry>,
    /// The message to the person.
    pub mail: Option<Mail>,
    /// The message is queued already claimed by this process, which sends it right after
    /// the commit (`notify::deliver_claimed`): one write fewer than a
    /// claim by the next delivery round. Should the process stop first, the claim lapses
    /// and any sender takes the message over.
    pub send_mail_now: bool,
    /// Tell the controller systems that asked for callbacks (OpenDSR), when the status
    /// changes.
    pub callbacks: bool,
    /// Columns that change with the status.
    pub set: Set,
}

/// Columns written with the status; `None` leaves a column as it is.
#[derive(Default)]
pub(super) struct Set {
    pub result: Option<Option<String>>,
    pub attempts: Option<i64>,
    pub next_attempt_at: Option<Option<String>>,
    /// The worker that held it lets go.
    pub release_claim: bool,
    /// The verification code and link stop working.
    pub clear_codes: bool,
}

impl<'a> Move<'a> {
    pub fn new(id: &'a str, from: &'a [Status], to: Status, action: &'a str) -> Self {
        Self {
            id,
            from,
            to,
            action,
            entries: Vec::new(),
            mail: None,
            send_mail_now: false,
            callbacks: true,
            set: Set::default(),
        }
    }
}

impl Service<'_> {
    /// Performs `m` inside `tx`; the outbox id of the message it queued claimed by this
    /// process (`send_mail_now`), if any. A request that is
    /// not in one of `m.from`, or may not go to `m.to` from where it is, is refused with
    /// `WrongState` and nothing is written. Staying in the same status (a task handed
    /// back to the DPO) is no move: allowed, and no callback is sent.
    pub(super) async fn move_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        m: Move<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, RequestError> {
        let wrong = |status: &str| RequestError::WrongState {
            status: status.to_owned(),
            action: m.action.to_owned(),
        };
        let row = sqlx::query("SELECT status FROM dsr_requests WHERE id = $1")
            .bind(m.id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(RequestError::NotFound)?;
        let was: String = row.try_get(0)?;
        let current = status::stored(&was);
        if !m.from.contains(&current) || !(current == m.to || current.can_go(m.to)) {
            return Err(wrong(&was));
        }
        let flag = |b: bool| i64::from(b);
        let s = &m.set;
        let changed = sqlx::query(
            "UPDATE dsr_requests SET status = $1, updated_at = $2, \
             result = CASE WHEN $3 = 1 THEN $4 ELSE result END, \
             attempts = CASE WHEN $5 = 1 THEN $6 ELSE attempts END, \
             next_attempt_at = CASE WHEN $7 = 1 THEN $8 ELSE next_attempt_at END, \
             claimed_by = CASE WHEN $9 = 1 THEN NULL ELSE claimed_by END, \
             code_hash = CASE WHEN $10 = 1 THEN NULL ELSE code_hash END, \
             code_expires_at = CASE WHEN $10 = 1 THEN NULL ELSE code_expires_at END, \
             link_hash = CASE WHEN $10 = 1 THEN NULL ELSE link_hash END, \
             link_expires_at = CASE WHEN $10 = 1 THEN NULL ELSE link_expires_at END \
             WHERE id = $11 AND status = $12",
        )
        .bind(m.to.key())
        .bind(timestamp(now))
        .bind(flag(s.result.is_some()))
        .bind(s.result.clone().flatten())
        .bind(flag(s.attempts.is_some()))
        .bind(s.attempts.unwrap_or(0))
        .bind(flag(s.next_attempt_at.is_some()))
        .bind(s.next_attempt_at.clone().flatten())
        .bind(flag(s.release_claim))
        .bind(flag(s.clear_codes))
        .bind(m.id)
        .bind(&was)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            // Moved meanwhile by someone else: nothing of this one is kept.
            return Err(wrong(&was));
        }
        if !m.entries.is_empty() {
            self.audit.append_in(&mut *tx, &m.entries).await?;
        }
        let mut claimed = None;
        if let Some(mail) = &m.mail {
            if m.send_mail_now {
                claimed = Some(notify::enqueue_claimed_in(&mut *tx, self.mailer, mail).await?);
            } else {
                notify::enqueue_in(&mut *tx, self.mailer, mail).await?;
            }
        }
        if m.callbacks && m.to != current {
            self.callbacks_in(&mut *tx, m.id, m.to.key(), now).await?;
        }
        Ok(claimed)
    }
}

#[cfg(test)]
mod tests {
    /// Every status write in the request code is this module's, or the worker's claim.
    #[test]
    fn only_the_transition_and_the_claim_write_a_status() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut writers = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    let n = text.matches("UPDATE dsr_requests SET status").count();
                    if n > 0 {
                        let name = p.file_name().unwrap().to_string_lossy().into_owned();
                        writers.push((name, n));
                    }
                }
            }
        }
        writers.sort();
        assert_eq!(
            writers,
            [
                ("execute.rs".to_owned(), 1),
                ("transition.rs".to_owned(), 2)
            ]
        );
    }
}

//! The states of a request and the moves between them: one table, checked in Rust before
//! each change and by the store itself (migration 0020) on every write.

use std::fmt;

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Handed over by a controller system; its identity is being sealed.
    Received,
    /// Waiting for the person to confirm with the code or link from the e-mail.
    IdentityPending,
    /// Confirmed, queued for execution (or for a retry at `next_attempt_at`).
    Verified,
    /// Confirmed, waiting for the DPO to approve it.
    AwaitingApproval,
    /// Being executed, or a task in the DPO's hands.
    InProgress,
    Completed,
    /// Completed, with data kept under an exemption the person is told of.
    PartiallyCompleted,
    /// Refused by the DPO with reasons (Art. 12(4)/(5)).
    Rejected,
    /// Execution failed for good: open until the DPO retries, rejects or completes it.
    Failed,
    /// Withdrawn by the person or the controller system.
    Cancelled,
}

use Status::*;

impl Status {
    pub const ALL: [Status; 10] = [
        Received,
        IdentityPending,
        Verified,
        AwaitingApproval,
        InProgress,
        Completed,
        PartiallyCompleted,
        Rejected,
        Failed,
        Cancelled,
    ];

    /// The moves a request may make; anything else is refused, here and by the store.
    pub const TRANSITIONS: &'static [(Status, &'static [Status])] = &[
        (
            Received,
            &[
                IdentityPending,
                Verified,
                AwaitingApproval,
                InProgress,
                Rejected,
                Cancelled,
            ],
        ),
        (
            IdentityPending,
            &[Verified, AwaitingApproval, InProgress, Rejected, Cancelled],
        ),
        (Verified, &[InProgress, Failed, Rejected, Cancelled]),
        (AwaitingApproval, &[Verified, Rejected, Cancelled]),
        (
            InProgress,
            &[
                Verified,
                AwaitingApproval,
                Completed,
                PartiallyCompleted,
                Failed,
                Rejected,
            ],
        ),
        (Failed, &[Verified, Completed, Rejected]),
        (Completed, &[]),
        (PartiallyCompleted, &[]),
        (Rejected, &[]),
        (Cancelled, &[]),
    ];

    pub const fn key(self) -> &'static str {
        match self {
            Received => "received",
            IdentityPending => "identity_pending",
            Verified => "verified",
            AwaitingApproval => "awaiting_approval",
            InProgress => "in_progress",
            Completed => "completed",
            PartiallyCompleted => "partially_completed",
            Rejected => "rejected",
            Failed => "failed",
            Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.key() == s)
    }

    /// Whether a request may go from `self` to `to`.
    pub fn can_go(self, to: Status) -> bool {
        Self::TRANSITIONS
            .iter()
            .any(|(from, tos)| *from == self && tos.contains(&to))
    }

    /// Ended for good: nothing more happens to the request.
    pub fn is_final(self) -> bool {
        matches!(self, Completed | PartiallyCompleted | Rejected | Cancelled)
    }

    /// The status in words, for the person and the subject of a mail.
    pub const fn words(self) -> &'static str {
        match self {
            Received | Verified => "confirmed; we are preparing the answer",
            IdentityPending => "waiting for the code from the e-mail",
            AwaitingApproval => "confirmed; waiting for our data protection officer",
            InProgress => "in progress",
            Completed => "completed",
            PartiallyCompleted => "completed, with some data kept as the law requires",
            Rejected => "refused, for the reasons we sent you",
            Failed => "delayed; we are working on it and will write to you",
            Cancelled => "withdrawn",
        }
    }

    /// The OpenDSR 2.0 `request_status` (`pending`, `in_progress`, `completed`,
    /// `cancelled`). A failed request is still open (the DPO acts on it): `in_progress`,
    /// never `completed`; a refused one is `cancelled`. `lethe_status` says which.
    pub const fn opendsr(self) -> &'static str {
        match self {
            Received | IdentityPending | Verified | AwaitingApproval => "pending",
            InProgress | Failed => "in_progress",
            Completed | PartiallyCompleted => "completed",
            Rejected | Cancelled => "cancelled",
        }
    }

    /// `status IN ('a', 'b')` for these statuses, for SQL built from constants only.
    pub fn sql_in(column: &str, statuses: impl IntoIterator<Item = Status>) -> String {
        let list: Vec<String> = statuses
            .into_iter()
            .map(|s| format!("'{}'", s.key()))
            .collect();
        format!("{column} IN ({})", list.join(", "))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A status read from the store that is not one of [`Status::ALL`] (the store refuses to
/// write one since migration 0020).
pub fn stored(s: &str) -> Status {
    Status::parse(s).unwrap_or(Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_one_row_and_final_ones_go_nowhere() {
        for s in Status::ALL {
            let rows = Status::TRANSITIONS.iter().filter(|(f, _)| *f == s).count();
            assert_eq!(rows, 1, "{s}");
            assert_eq!(Status::parse(s.key()), Some(s));
            assert_eq!(
                s.is_final(),
                Status::ALL.iter().all(|t| !s.can_go(*t)),
                "{s}"
            );
        }
    }

    #[test]
    fn a_failed_request_waits_for_the_dpo_and_never_reads_as_completed() {
        assert!(!Failed.is_final());
        assert!(Failed.can_go(Verified) && Failed.can_go(Rejected) && Failed.can_go(Completed));
        assert_ne!(Failed.opendsr(), "completed");
        assert_ne!(Rejected.opendsr(), "completed");
        assert!(!Cancelled.can_go(Verified));
    }
}

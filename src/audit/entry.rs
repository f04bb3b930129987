//! One audit entry: its clear header, its canonical byte form (the AEAD's additional
//! data and the Merkle leaf's first part), and the identities entries are filed under.

use serde::{Deserialize, Serialize};

pub use crate::identity::Identity;

use super::merkle::{Hash, leaf_hash};

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    System,
    /// The operator at the command line.
    Cli,
    /// An admin API call, by token id.
    Admin(String),
    /// The data subject, through the request service.
    Subject,
}

impl Actor {
    pub fn as_string(&self) -> String {
        match self {
            Self::System => "system".into(),
            Self::Cli => "cli".into(),
            Self::Admin(id) => format!("admin:{id}"),
            Self::Subject => "subject".into(),
        }
    }
}

/// An entry to append. `summary` is in clear and must hold no personal data (counts,
/// tables, hashes); `payload` is personal and sealed under the subject's key.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub actor: Actor,
    pub action: String,
    pub request_id: Option<String>,
    pub subject: Option<SubjectId>,
    pub summary: serde_json::Value,
    pub payload: serde_json::Value,
}

impl NewEntry {
    pub fn new(actor: Actor, action: &str) -> Self {
        Self {
            actor,
            action: action.to_owned(),
            request_id: None,
            subject: None,
            summary: serde_json::json!({}),
            payload: serde_json::Value::Null,
        }
    }

    pub fn summary(mut self, summary: serde_json::Value) -> Self {
        self.summary = summary;
        self
    }

    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.payload = payload;
        self
    }

    pub fn request(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_owned());
        self
    }

    pub fn subject(mut self, subject: &SubjectId) -> Self {
        self.subject = Some(subject.clone());
        self
    }
}

/// A random pseudonymous subject id: never an e-mail nor a hash of one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubjectId(pub(crate) String);

impl SubjectId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SubjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The clear part of a stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    pub seq: u64,
    pub recorded_at: String,
    pub actor: String,
    pub action: String,
    pub request_id: Option<String>,
    pub subject_id: Option<String>,
    /// The summary JSON exactly as stored.
    pub summary: String,
    pub key_id: String,
    pub key_version: u32,
}

const DOMAIN: &[u8] = b"lethe-audit-v1";

impl Header {
    /// Length-prefixed fields in fixed order: unambiguous, so two different headers never
    /// share an encoding.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.summary.len());
        out.extend_from_slice(DOMAIN);
        out.extend_from_slice(&self.seq.to_be_bytes());
        let mut put = |s: Option<&str>| match s {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        };
        put(Some(&self.recorded_at));
        put(Some(&self.actor));
        put(Some(&self.action));
        put(self.request_id.as_deref());
        put(self.subject_id.as_deref());
        put(Some(&self.summary));
        put(Some(&self.key_id));
        out.extend_from_slice(&self.key_version.to_be_bytes());
        out
    }

    /// SHA-256(0x00 ‖ canonical header ‖ ciphertext).
    pub fn leaf(&self, ciphertext: &[u8]) -> Hash {
        leaf_hash(&[&self.canonical(), ciphertext])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            seq: 7,
            recorded_at: "2026-11-27T10:00:00.000000Z".into(),
            actor: "system".into(),
            action: "policy.loaded".into(),
            request_id: None,
            subject_id: Some("s1".into()),
            summary: "{}".into(),
            key_id: "s1".into(),
            key_version: 1,
        }
    }

    #[test]
    fn every_field_changes_the_encoding() {
        let base = header().canonical();
        let mut h = header();
        h.seq = 8;
        assert_ne!(h.canonical(), base);
        let mut h = header();
        h.request_id = Some(String::new());
        assert_ne!(h.canonical(), base);
        // Moving bytes between adjacent fields is not a collision.
        let mut a = header();
        a.actor = "systempolicy".into();
        a.action = ".loaded".into();
        let mut b = header();
        b.actor = "system".into();
        b.action = "policy.loaded".into();
        assert_ne!(a.canonical(), b.canonical());
    }
}

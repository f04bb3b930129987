//! Verification, checkpoints and consistency proofs.

use chrono::Utc;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::merkle::{self, Builder, Hash};
use super::{AuditError, AuditLog, Header};
use crate::crypto::{self, Signer};
use crate::store::timestamp;

pub const LOG_ID: &str = "lethe-audit-v1";

/// Something wrong with the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Problem {
    /// The first entry concerned, when one can be named.
    pub seq: Option<u64>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct VerifyReport {
    pub entries: u64,
    pub root_hash: String,
    pub checkpoints_checked: usize,
    /// Bytes of headers and ciphertexts hashed.
    pub bytes: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The first bad `seq`, if any entry is bad.
    pub fn first_bad_seq(&self) -> Option<u64> {
        self.problems.iter().filter_map(|p| p.seq).min()
    }
}

/// A signed tree head. An auditor keeps these outside lethe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub log: String,
    pub tree_size: u64,
    pub root_hash: String,
    pub timestamp: String,
    pub public_key: String,
    pub signature: String,
}

impl Checkpoint {
    fn message(log: &str, size: u64, root: &str, ts: &str) -> Vec<u8> {
        format!("{log}\n{size}\n{root}\n{ts}\n").into_bytes()
    }

    pub fn signature_valid(&self) -> bool {
        let (Ok(pk), Ok(sig)) = (hex::decode(&self.public_key), hex::decode(&self.signature))
        else {
            return false;
        };
        crypto::ed25519_verify(
            &pk,
            &Self::message(&self.log, self.tree_size, &self.root_hash, &self.timestamp),
            &sig,
        )
    }

    fn root(&self) -> Option<Hash> {
        hex::decode(&self.root_hash).ok()?.try_into().ok()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsistencyReport {
    pub old_size: u64,
    pub new_size: u64,
    pub old_root: String,
    pub new_root: String,
    pub proof: Vec<String>,
    pub consistent: bool,
    pub problems: Vec<String>,
}

pub(super) fn decode_row(row: &AnyRow) -> Result<(Header, Vec<u8>), sqlx::Error> {
    let seq: i64 = row.try_get(0)?;
    let version: i64 = row.try_get(8)?;
    Ok((
        Header {
            seq: u64::try_from(seq).unwrap_or(u64::MAX),
            recorded_at: row.try_get(1)?,
            actor: row.try_get(2)?,
            action: row.try_get(3)?,
            request_id: row.try_get(4)?,
            subject_id: row.try_get(5)?,
            summary: row.try_get(6)?,
            key_id: row.try_get(7)?,
            key_version: u32::try_from(version).unwrap_or(u32::MAX),
        },
        row.try_get(9)?,
    ))
}

impl AuditLog {
    /// Reads the whole log in order, recomputing every leaf and checking its MAC; calls
    /// `leaf` with each good leaf. Stops collecting leaves at the first bad entry.
    async fn scan(
        &self,
        mut leaf: impl FnMut(Hash),
    ) -> Result<(u64, u64, Vec<Problem>), AuditError> {
        let mut rows = sqlx::query(
            "SELECT seq, recorded_at, actor, action, request_id, subject_id, summary, key_id, key_version, ciphertext, mac \
             FROM audit_entries ORDER BY seq",
        )
        .fetch(self.store.pool());
        let mut expected = 0u64;
        let mut bytes = 0u64;
        let mut problems = Vec::new();
        while let Some(row) = rows.try_next().await? {
            let (header, ciphertext) = decode_row(&row)?;
            let mac: Vec<u8> = row.try_get(10)?;
            if !problems.is_empty() {
                expected += 1;
                continue;
            }
            if header.seq != expected {
                problems.push(Problem {
                    seq: Some(expected),
                    message: format!(
                        "entry {expected} is missing (the next stored entry is {})",
                        header.seq
                    ),
                });
                continue;
            }
            let canonical = header.canonical();
            bytes += (canonical.len() + ciphertext.len()) as u64;
            let h = merkle::leaf_hash(&[&canonical, &ciphertext]);
            if !crypto::hmac_verify(self.mac_key(), &h, &mac) {
                problems.push(Problem {
                    seq: Some(expected),
                    message: format!("entry {expected} does not match its authentication code: it was changed, reordered or inserted"),
                });
                continue;
            }
            leaf(h);
            expected += 1;
        }
        Ok((expected, bytes, problems))
    }

    /// Recomputes everything: every entry's leaf and MAC, the sequence, the head counter,
    /// and every stored checkpoint's signature and tree head.
    pub async fn verify(&self) -> Result<VerifyReport, AuditError> {
        self.verify_with(&|_| {}).await
    }

    /// [`Self::verify`], calling `tick(1)` for each entry checked (a progress bar).
    pub async fn verify_with(
        &self,
        tick: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<VerifyReport, AuditError> {
        let checkpoints = self.checkpoints().await?;
        let mut sizes: Vec<u64> = checkpoints.iter().map(|c| c.tree_size).collect();
        sizes.sort_unstable();
        let mut builder = Builder::default();
        let mut roots_at: Vec<(u64, Hash)> = Vec::new();
        if sizes.first() == Some(&0) {
            roots_at.push((0, merkle::empty_root()));
        }
        let (count, bytes, mut problems) = self
            .scan(|h| {
                tick(1);
                builder.push(h);
                if sizes.binary_search(&builder.size()).is_ok() {
                    roots_at.push((builder.size(), builder.root()));
                }
            })
            .await?;
        let head: i64 = sqlx::query_scalar("SELECT next_seq FROM audit_head WHERE id = 1")
            .fetch_one(self.store.pool())
            .await?;
        let head = u64::try_from(head).unwrap_or(0);
        if problems.is_empty() && head != count {
            problems.push(Problem {
                seq: Some(count.min(head)),
                message: format!("the log holds {count} entries but {head} were appended: entries from {} on are missing", count.min(head)),
            });
        }
        for c in &checkpoints {
            if !c.signature_valid() {
                problems.push(Problem {
                    seq: None,
                    message: format!(
                        "checkpoint at size {} has an invalid signature",
                        c.tree_size
                    ),
                });
                continue;
            }
            match roots_at.iter().find(|(s, _)| *s == c.tree_size) {
                Some((_, root)) if Some(*root) == c.root() => {}
                Some(_) => problems.push(Problem {
                    seq: None,
                    message: format!("checkpoint at size {} no longer matches the log: its history was rewritten", c.tree_size),
                }),
                None => problems.push(Problem {
                    seq: Some(count),
                    message: format!("checkpoint at size {} is beyond the {count} verifiable entries: entries were removed", c.tree_size),
                }),
            }
        }
        Ok(VerifyReport {
            entries: count,
            root_hash: hex::encode(builder.root()),
            checkpoints_checked: checkpoints.len(),
            bytes,
            problems,
        })
    }

    /// Stored checkpoints, oldest first.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError> {
        let rows = sqlx::query("SELECT tree_size, root_hash, signed_at, public_key, signature FROM audit_checkpoints ORDER BY id")
            .fetch_all(self.store.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let size: i64 = r.try_get(0)?;
                Ok(Checkpoint {
                    log: LOG_ID.to_owned(),
                    tree_size: u64::try_from(size).unwrap_or(0),
                    root_hash: r.try_get(1)?,
                    timestamp: r.try_get(2)?,
                    public_key: r.try_get(3)?,
                    signature: r.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(AuditError::from)
    }

    /// Verifies the log, then signs and stores its current tree head.
    pub async fn checkpoint(&self, signer: &Signer) -> Result<Checkpoint, AuditError> {
        let report = self.verify().await?;
        if let Some(p) = report.problems.first() {
            return Err(AuditError::DoesNotVerify(p.message.clone()));
        }
        let ts = timestamp(Utc::now());
        let signature = signer.sign(&Checkpoint::message(
            LOG_ID,
            report.entries,
            &report.root_hash,
            &ts,
        ));
        let cp = Checkpoint {
            log: LOG_ID.to_owned(),
            tree_size: report.entries,
            root_hash: report.root_hash,
            timestamp: ts,
            public_key: hex::encode(signer.public_key()),
            signature: hex::encode(signature),
        };
        sqlx::query("INSERT INTO audit_checkpoints (tree_size, root_hash, signed_at, public_key, signature) VALUES ($1, $2, $3, $4, $5)")
            .bind(i64::try_from(cp.tree_size).unwrap_or(i64::MAX))
            .bind(&cp.root_hash)
            .bind(&cp.timestamp)
            .bind(&cp.public_key)
            .bind(&cp.signature)
            .execute(self.store.pool())
            .await?;
        Ok(cp)
    }

    /// Proves (RFC 6962) that the current log extends `old`, a checkpoint kept elsewhere.
    pub async fn consistency(
        &self,
        old: &Checkpoint,
        trusted_key: Option<&[u8]>,
    ) -> Result<ConsistencyReport, AuditError> {
        let mut leaves = Vec::new();
        let (count, _, scan_problems) = self.scan(|h| leaves.push(h)).await?;
        let mut problems: Vec<String> = scan_problems.into_iter().map(|p| p.message).collect();
        if !old.signature_valid() {
            problems.push("the old checkpoint's signature is invalid".into());
        }
        if let Some(pk) = trusted_key
            && hex::decode(&old.public_key).ok().as_deref() != Some(pk)
        {
            problems.push("the old checkpoint was signed by another key than this log's".into());
        }
        let new_root = merkle::root(&leaves);
        let old_size = old.tree_size;
        let (proof, consistent) = match (old.root(), usize::try_from(old_size)) {
            (Some(old_root), Ok(m)) if old_size <= count => {
                let proof = merkle::consistency_proof(m, &leaves);
                let ok = merkle::verify_consistency(old_size, count, &old_root, &new_root, &proof);
                (proof, ok)
            }
            (None, _) => {
                problems.push("the old checkpoint's root hash is not 32 hex bytes".into());
                (Vec::new(), false)
            }
            _ => {
                problems.push(format!(
                    "the log has {count} entries, fewer than the {old_size} of the old checkpoint"
                ));
                (Vec::new(), false)
            }
        };
        if !consistent && problems.is_empty() {
            problems.push(
                "the log does not extend the old checkpoint: its history was rewritten".into(),
            );
        }
        Ok(ConsistencyReport {
            old_size,
            new_size: count,
            old_root: old.root_hash.clone(),
            new_root: hex::encode(new_root),
            proof: proof.iter().map(hex::encode).collect(),
            consistent: consistent && problems.is_empty(),
            problems,
        })
    }
}

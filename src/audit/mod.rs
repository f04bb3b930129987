//! The encrypted, tamper-evident audit log. Every state-changing operation of lethe is
//! appended here. Each entry's personal payload is sealed (AES-256-GCM) under a random
//! key of its data subject, with the clear header as additional data; erasing the subject
//! destroys the key ("crypto-shredding") while the log keeps verifying, because the
//! Merkle leaves hash the ciphertext, not the plaintext.
//!
//! Tamper evidence has two layers: each leaf carries an HMAC under a key the database does
//! not hold in clear, so `verify` names the first changed, removed, reordered or inserted
//! entry; and signed checkpoints (RFC 6962 tree heads, Ed25519) let an auditor who keeps
//! them outside lethe prove that the log only ever grew.

mod entry;
pub mod keys;
pub mod merkle;
mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use sqlx::{AnyConnection, Row};

pub use entry::{Actor, Header, Identity, NewEntry, SubjectId};
pub use keys::{KeyError, KeySource, MasterKey};
pub use verify::{Checkpoint, ConsistencyReport, Problem, VerifyReport};

use crate::crypto::{self, CryptoError, SealingKey, SecretKey};
use crate::store::{Store, timestamp};

/// Key version of every data key; bumped when a key is replaced.
const KEY_VERSION: u32 = 1;
const SYSTEM_KEY: &str = "system";
const MAC_KEY: &str = "mac";
const INDEX_KEY: &str = "index";
/// Keys the `hash` masking strategy, so masked values cannot be reversed by guessing.
const MASKING_KEY: &str = "masking";
/// Seals stored access packages.
const PACKAGE_KEY: &str = "packages";
/// Seals queued e-mails (recipient, subject and bodies) in the outbox.
const OUTBOX_KEY: &str = "outbox";
/// Rows per multi-row INSERT (11 parameters each, well under SQLite's limit).
const INSERT_CHUNK: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("audit store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("the subject {0} was shredded: nothing more can be recorded under it")]
    Shredded(String),
    #[error("unknown subject {0}")]
    UnknownSubject(String),
    #[error("the audit log does not verify ({0}); no checkpoint was written")]
    DoesNotVerify(String),
    #[error("serialising an entry: {0}")]
    Json(#[from] serde_json::Error),
}

/// The payload of a stored entry as a reader gets it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "state", content = "data", rename_all = "lowercase")]
pub enum Payload {
    Clear(serde_json::Value),
    /// The subject's key was destroyed: the payload can never be read again.
    Shredded,
}

/// A stored entry with its payload opened where still possible.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    #[serde(flatten)]
    pub header: Header,
    pub payload: Payload,
}

/// Which entries to read.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub subject: Option<SubjectId>,
    pub request_id: Option<String>,
    /// RFC 3339 time; entries recorded at or after it.
    pub since: Option<String>,
}

struct KeyRing {
    master: MasterKey,
    system: SealingKey,
    mac: ring::hmac::Key,
    index: ring::hmac::Key,
    masking: ring::hmac::Key,
    packages: SealingKey,
    outbox: Arc<SealingKey>,
    subjects: Mutex<HashMap<String, Arc<SealingKey>>>,
}

/// A processor's webhook signing secret and its version (1, then one more per rotation).
pub struct WebhookSecret {
    pub key: SecretKey,
    pub version: i64,
}

impl WebhookSecret {
    /// The secret as the receiver configures it: 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.expose())
    }

    pub fn hmac(&self) -> ring::hmac::Key {
        self.key.hmac()
    }
}

/// The `audit_keys.kind` of a processor's webhook secrets.
fn webhook_kind(processor: &str) -> String {
    format!("webhook:{processor}")
}

/// The audit log over a store. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    store: Store,
    keys: Arc<KeyRing>,
}

impl AuditLog {
    /// Loads the master key and the log's own keys, creating them on first use. A master
    /// key that does not match the store's is refused before anything is written.
    pub async fn open(store: Store, source: &KeySource) -> Result<Self, AuditError> {
        // The store names the master key its keys are wrapped under: a missing or wrong
        // key is found here, before anything is written (store or key file).
        let stored: Option<String> =
            sqlx::query_scalar("SELECT master_key_id FROM audit_keys WHERE key_id = $1")
                .bind(SYSTEM_KEY)
                .fetch_optional(store.pool())
                .await?;
        let master = keys::MasterKey::load_or_create_for(source, stored.as_deref())?;
        let master = finish_interrupted_rotation(&store, master).await?;
        let system = ensure_key(&store, &master, SYSTEM_KEY).await?;
        let mac = ensure_key(&store, &master, MAC_KEY).await?;
        let index = ensure_key(&store, &master, INDEX_KEY).await?;
        let masking = ensure_key(&store, &master, MASKING_KEY).await?;
        let packages = ensure_key(&store, &master, PACKAGE_KEY).await?;
        let outbox = ensure_key(&store, &master, OUTBOX_KEY).await?;
        Ok(Self {
            keys: Arc::new(KeyRing {
                system: system.aead()?,
                mac: mac.hmac(),
                index: index.hmac(),
                masking: masking.hmac(),
                packages: packages.aead()?,
                outbox: Arc::new(outbox.aead()?),
                master,
                subjects: Mutex::new(HashMap::new()),
            }),
            store,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn master_key_id(&self) -> String {
        self.keys.master.id()
    }

    fn lookup(&self, identity: &Identity) -> Vec<u8> {
        crypto::hmac_sha256(&self.keys.index, identity.canonical().as_bytes()).to_vec()
    }

    /// The subject id of a person, if the log knows one (and it was not shredded).
    pub async fn find_subject(&self, identity: &Identity) -> Result<Option<SubjectId>, AuditError> {
        let row = sqlx::query("SELECT subject_id FROM audit_subjects WHERE lookup = $1")
            .bind(self.lookup(identity))
            .fetch_optional(self.store.pool())
            .await?;
        Ok(row
            .map(|r| r.try_get::<String, _>(0))
            .transpose()?
            .map(SubjectId))
    }

    /// The subject id of a person, created with a fresh random key on first use.
    pub async fn subject_for(&self, identity: &Identity) -> Result<SubjectId, AuditError> {
        if let Some(s) = self.find_subject(identity).await? {
            return Ok(s);
        }
        let mut tx = self.store.begin().await?;
        let s = self.subject_in(&mut tx, identity).await?;
        tx.commit().await?;
        Ok(s)
    }

    /// [`AuditLog::subject_for`] inside the caller's transaction: the subject and its key
    /// exist exactly when what the transaction records about the person does.
    pub async fn subject_in(
        &self,
        conn: &mut AnyConnection,
        identity: &Identity,
    ) -> Result<SubjectId, AuditError> {
        let lookup = self.lookup(identity);
        let existing: Option<String> =
            sqlx::query_scalar("SELECT subject_id FROM audit_subjects WHERE lookup = $1")
                .bind(&lookup)
                .fetch_optional(&mut *conn)
                .await?;
        if let Some(s) = existing {
            return Ok(SubjectId(s));
        }
        let id = format!("s_{}", crypto::random_hex(16)?);
        let key = SecretKey::generate()?;
        let wrapped = self.keys.master.wrap(&key, &id)?;
        let now = timestamp(Utc::now());
        let inserted = sqlx::query(
            "INSERT INTO audit_subjects (lookup, subject_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (lookup) DO NOTHING",
        )
        .bind(&lookup)
        .bind(&id)
        .bind(&now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted == 0 {
            // Another process created the subject first: use theirs.
            let theirs: String =
                sqlx::query_scalar("SELECT subject_id FROM audit_subjects WHERE lookup = $1")
                    .bind(&lookup)
                    .fetch_optional(&mut *conn)
                    .await?
                    .ok_or_else(|| AuditError::UnknownSubject("(concurrently shredded)".into()))?;
            return Ok(SubjectId(theirs));
        }
        sqlx::query(
            "INSERT INTO audit_keys (key_id, kind, version, wrapped, master_key_id, created_at) \
             VALUES ($1, 'subject', $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(i64::from(KEY_VERSION))
        .bind(wrapped)
        .bind(self.keys.master.id())
        .bind(&now)
        .execute(&mut *conn)
        .await?;
        self.cache(&id, key.aead()?);
        Ok(SubjectId(id))
    }

    fn cache(&self, id: &str, key: SealingKey) -> Arc<SealingKey> {
        let key = Arc::new(key);
        if let Ok(mut m) = self.keys.subjects.lock() {
            m.insert(id.to_owned(), key.clone());
        }
        key
    }

    fn cached(&self, id: &str) -> Option<Arc<SealingKey>> {
        self.keys
            .subjects
            .lock()
            .ok()
            .and_then(|m| m.get(id).cloned())
    }

    /// The subject's key for writing, checked against shredding inside the caller's
    /// transaction so that no process writes under a destroyed key.
    async fn subject_key(
        &self,
        conn: &mut AnyConnection,
        subject: &SubjectId,
    ) -> Result<Arc<SealingKey>, AuditError> {
        let row =
            sqlx::query("SELECT wrapped FROM audit_keys WHERE key_id = $1 AND kind = 'subject'")
                .bind(subject.as_str())
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| AuditError::UnknownSubject(subject.to_string()))?;
        let wrapped: Option<Vec<u8>> = row.try_get(0)?;
        let Some(wrapped) = wrapped else {
            if let Ok(mut m) = self.keys.subjects.lock() {
                m.remove(subject.as_str());
            }
            return Err(AuditError::Shredded(subject.to_string()));
        };
        if let Some(k) = self.cached(subject.as_str()) {
            return Ok(k);
        }
        let key = self.keys.master.unwrap(&wrapped, subject.as_str())?;
        Ok(self.cache(subject.as_str(), key.aead()?))
    }

    /// Appends one entry in its own transaction; returns its `seq`.
    pub async fn append(&self, entry: NewEntry) -> Result<u64, AuditError> {
        let mut tx = self.store.begin().await?;
        let seq = self
            .append_in(&mut tx, std::slice::from_ref(&entry))
            .await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Appends entries in one transaction; returns the first `seq`.
    pub async fn append_batch(&self, entries: &[NewEntry]) -> Result<u64, AuditError> {
        let mut tx = self.store.begin().await?;
        let seq = self.append_in(&mut tx, entries).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Appends entries inside the caller's transaction, so the entries commit with the
    /// change they record or not at all. Call it before other writes of the transaction
    /// on SQLite, so the transaction takes the write lock first.
    pub async fn append_in(
        &self,
        conn: &mut AnyConnection,
        entries: &[NewEntry],
    ) -> Result<u64, AuditError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let n = i64::try_from(entries.len()).unwrap_or(i64::MAX);
        // The row lock on the head serialises appenders across processes.
        let next: i64 = sqlx::query_scalar(
            "UPDATE audit_head SET next_seq = next_seq + $1 WHERE id = 1 RETURNING next_seq",
        )
        .bind(n)
        .fetch_one(&mut *conn)
        .await?;
        let first = u64::try_from(next - n).unwrap_or(0);
        let now = timestamp(Utc::now());
        let mut rows = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let (key_id, subject_key) = match &e.subject {
                None => (SYSTEM_KEY.to_owned(), None),
                Some(s) => (s.to_string(), Some(self.subject_key(conn, s).await?)),
            };
            let header = Header {
                seq: first + i as u64,
                recorded_at: now.clone(),
                actor: e.actor.as_string(),
                action: e.action.clone(),
                request_id: e.request_id.clone(),
                subject_id: e.subject.as_ref().map(|s| s.to_string()),
                summary: serde_json::to_string(&e.summary)?,
                key_id,
                key_version: KEY_VERSION,
            };
            let aad = header.canonical();
            let plain = serde_json::to_vec(&e.payload)?;
            let ciphertext = match &subject_key {
                Some(k) => k.seal(&plain, &aad)?,
                None => self.keys.system.seal(&plain, &aad)?,
            };
            let leaf = merkle::leaf_hash(&[&aad, &ciphertext]);
            let mac = crypto::hmac_sha256(&self.keys.mac, &leaf);
            rows.push((header, ciphertext, mac));
        }
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<_> = rows.by_ref().take(INSERT_CHUNK).collect();
            let mut q = sqlx::query(sqlx::AssertSqlSafe(insert_sql(chunk.len())));
            for (h, ct, mac) in chunk {
                q = q
                    .bind(i64::try_from(h.seq).unwrap_or(i64::MAX))
                    .bind(h.recorded_at)
                    .bind(h.actor)
                    .bind(h.action)
                    .bind(h.request_id)
                    .bind(h.subject_id)
                    .bind(h.summary)
                    .bind(h.key_id)
                    .bind(i64::from(h.key_version))
                    .bind(ct)
                    .bind(mac.to_vec());
            }
            q.execute(&mut *conn).await?;
        }
        Ok(first)
    }

    /// Destroys the subject's key and its index rows, leaving a tombstone, and records
    /// that it did. Entries under the subject stay and still verify; their payloads are
    /// gone for good.
    pub async fn shred(&self, subject: &SubjectId, actor: Actor) -> Result<(), AuditError> {
        self.shred_after(subject, actor, None).await
    }

    /// Appends `before` (what was done with the person's data, written with their key
    /// still in place) and shreds the subject's key, in one transaction: one commit.
    pub async fn shred_after(
        &self,
        subject: &SubjectId,
        actor: Actor,
        before: Option<NewEntry>,
    ) -> Result<(), AuditError> {
        let mut tx = self.store.begin().await?;
        self.shred_after_in(&mut tx, subject, actor, before).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`AuditLog::shred_after`] inside the caller's transaction; an unknown subject is
    /// an error and the caller's transaction should be dropped.
    pub async fn shred_after_in(
        &self,
        conn: &mut AnyConnection,
        subject: &SubjectId,
        actor: Actor,
        before: Option<NewEntry>,
    ) -> Result<(), AuditError> {
        let entry = NewEntry::new(actor, "subject.shredded")
            .summary(serde_json::json!({ "subject_id": subject.as_str() }));
        let entries: Vec<NewEntry> = before.into_iter().chain([entry]).collect();
        self.append_in(&mut *conn, &entries).await?;
        let n = sqlx::query("UPDATE audit_keys SET wrapped = NULL, shredded_at = $1 WHERE key_id = $2 AND kind = 'subject'")
            .bind(timestamp(Utc::now()))
            .bind(subject.as_str())
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(AuditError::UnknownSubject(subject.to_string()));
        }
        sqlx::query("DELETE FROM audit_subjects WHERE subject_id = $1")
            .bind(subject.as_str())
            .execute(&mut *conn)
            .await?;
        // Dropped from the cache now: should the commit fail, it is read again.
        if let Ok(mut m) = self.keys.subjects.lock() {
            m.remove(subject.as_str());
        }
        Ok(())
    }

    /// Entries matching `filter`, in order, with payloads opened where the key still exists.
    pub async fn entries(&self, filter: &Filter) -> Result<Vec<Entry>, AuditError> {
        let rows = sqlx::query(
            "SELECT seq, recorded_at, actor, action, request_id, subject_id, summary, key_id, key_version, ciphertext \
             FROM audit_entries \
             WHERE (CAST($1 AS TEXT) IS NULL OR subject_id = $1) \
               AND (CAST($2 AS TEXT) IS NULL OR request_id = $2) \
               AND (CAST($3 AS TEXT) IS NULL OR recorded_at >= $3) \
             ORDER BY seq",
        )
        .bind(filter.subject.as_ref().map(|s| s.to_string()))
        .bind(filter.request_id.clone())
        .bind(filter.since.clone())
        .fetch_all(self.store.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (header, ciphertext) = verify::decode_row(&row)?;
            let payload = self.open_payload(&header, &ciphertext).await?;
            out.push(Entry { header, payload });
        }
        Ok(out)
    }

    async fn open_payload(&self, h: &Header, ciphertext: &[u8]) -> Result<Payload, AuditError> {
        let aad = h.canonical();
        let plain = if h.key_id == SYSTEM_KEY {
            self.keys.system.open(ciphertext, &aad)?
        } else {
            let Some(key) = self.reading_key(&h.key_id).await? else {
                return Ok(Payload::Shredded);
            };
            key.open(ciphertext, &aad)?
        };
        Ok(Payload::Clear(serde_json::from_slice(&plain)?))
    }

    /// The data key `key_id` for reading, or None once it was shredded (or never existed).
    async fn reading_key(&self, key_id: &str) -> Result<Option<Arc<SealingKey>>, AuditError> {
        if let Some(k) = self.cached(key_id) {
            return Ok(Some(k));
        }
        let mut conn = self.store.pool().acquire().await?;
        self.reading_key_in(&mut conn, key_id).await
    }

    /// [`AuditLog::reading_key`] on the caller's connection (inside its transaction: no
    /// second connection is taken from the pool while the caller holds one).
    async fn reading_key_in(
        &self,
        conn: &mut AnyConnection,
        key_id: &str,
    ) -> Result<Option<Arc<SealingKey>>, AuditError> {
        if let Some(k) = self.cached(key_id) {
            return Ok(Some(k));
        }
        let row = sqlx::query("SELECT wrapped FROM audit_keys WHERE key_id = $1")
            .bind(key_id)
            .fetch_optional(&mut *conn)
            .await?;
        let wrapped: Option<Vec<u8>> = match row {
            Some(r) => r.try_get(0)?,
            None => None,
        };
        let Some(wrapped) = wrapped else {
            return Ok(None);
        };
        let key = self.keys.master.unwrap(&wrapped, key_id)?;
        Ok(Some(self.cache(key_id, key.aead()?)))
    }

    /// Seals a record about a person (what a request says of them) under the subject's
    /// key, inside the caller's transaction, so that shredding the subject makes it
    /// unreadable too; `label` (the record's id) is bound to it. Refused once shredded.
    pub async fn seal_for_subject(
        &self,
        conn: &mut AnyConnection,
        subject: &SubjectId,
        label: &str,
        plain: &[u8],
    ) -> Result<Vec<u8>, AuditError> {
        let key = self.subject_key(conn, subject).await?;
        Ok(key.seal(plain, label.as_bytes())?)
    }

    /// Opens what [`AuditLog::seal_for_subject`] sealed; None once the subject was
    /// shredded, by this process or another one (the store is asked each time).
    pub async fn open_for_subject(
        &self,
        subject: &str,
        label: &str,
        sealed: &[u8],
    ) -> Result<Option<Vec<u8>>, AuditError> {
        let mut conn = self.store.pool().acquire().await?;
        self.open_for_subject_in(&mut conn, subject, label, sealed)
            .await
    }

    /// [`AuditLog::open_for_subject`] on the caller's connection: a caller inside a
    /// transaction takes no second connection from the pool (with as many callers as
    /// connections, each waiting for a second one, none would go on).
    pub async fn open_for_subject_in(
        &self,
        conn: &mut AnyConnection,
        subject: &str,
        label: &str,
        sealed: &[u8],
    ) -> Result<Option<Vec<u8>>, AuditError> {
        let live: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM audit_keys WHERE key_id = $1 AND kind = 'subject' AND wrapped IS NOT NULL",
        )
        .bind(subject)
        .fetch_optional(&mut *conn)
        .await?;
        if live.is_none() {
            if let Ok(mut m) = self.keys.subjects.lock() {
                m.remove(subject);
            }
            return Ok(None);
        }
        match self.reading_key_in(conn, subject).await? {
            Some(key) => Ok(Some(key.open(sealed, label.as_bytes())?)),
            None => Ok(None),
        }
    }

    /// A fresh key of a record's own, for what is kept about a person before they are
    /// known (an unverified request): `plain` sealed under it, and the key wrapped under
    /// the master key, to be stored beside it. Deleting the wrapped key destroys the record.
    pub fn seal_with_own_key(
        &self,
        label: &str,
        plain: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), AuditError> {
        let key = SecretKey::generate()?;
        let wrapped = self.keys.master.wrap(&key, &own_key_id(label))?;
        let sealed = key.aead()?.seal(plain, label.as_bytes())?;
        Ok((sealed, wrapped))
    }

    /// Opens what [`AuditLog::seal_with_own_key`] sealed.
    pub fn open_with_own_key(
        &self,
        label: &str,
        wrapped: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, AuditError> {
        let key = self.keys.master.unwrap(wrapped, &own_key_id(label))?;
        Ok(key.aead()?.open(sealed, label.as_bytes())?)
    }

    /// The key queued e-mails are sealed under (see `notify`).
    pub fn outbox_key(&self) -> Arc<SealingKey> {
        self.keys.outbox.clone()
    }

    /// The keyed hash a person is looked up by (never their identity in clear).
    pub fn identity_lookup(&self, identity: &Identity) -> Vec<u8> {
        self.lookup(identity)
    }

    /// Re-wraps every live data key under `new` in one transaction. Entries are not
    /// touched. The log must be reopened with the new key afterwards.
    pub async fn rotate_master(&self, new: &MasterKey) -> Result<usize, AuditError> {
        self.rotate_master_with(new, &|_| {}).await
    }

    /// [`Self::rotate_master`], calling `tick(1)` for each key re-wrapped.
    pub async fn rotate_master_with(
        &self,
        new: &MasterKey,
        tick: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<usize, AuditError> {
        let mut tx = self.store.begin().await?;
        let rows = sqlx::query(
            "SELECT key_id, wrapped FROM audit_keys WHERE wrapped IS NOT NULL ORDER BY key_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let key_id: String = row.try_get(0)?;
            let wrapped: Vec<u8> = row.try_get(1)?;
            let key = self.keys.master.unwrap(&wrapped, &key_id)?;
            sqlx::query("UPDATE audit_keys SET wrapped = $1, master_key_id = $2 WHERE key_id = $3")
                .bind(new.wrap(&key, &key_id)?)
                .bind(new.id())
                .bind(&key_id)
                .execute(&mut *tx)
                .await?;
            tick(1);
        }
        let entry = NewEntry::new(Actor::Cli, "keys.rotated")
            .summary(serde_json::json!({ "keys": rows.len(), "from": self.keys.master.id(), "to": new.id() }));
        // Recorded under the system key, which is re-wrapped but unchanged.
        self.append_in(&mut tx, &[entry]).await?;
        tx.commit().await?;
        Ok(rows.len())
    }

    /// HMAC-SHA-256 of a value under the server's masking key, hex: the `hash` masking.
    pub fn mask_hash(&self, value: &str) -> String {
        hex::encode(crypto::hmac_sha256(&self.keys.masking, value.as_bytes()))
    }

    /// The secret erasure-notice webhooks to `processor` are signed with (HMAC-SHA-256):
    /// a random key of that processor's own, created on first use and kept wrapped under
    /// the master key beside the log's keys; `lethe admin webhook-secret` shows it to the
    /// receiver. Independent of the masking key and of every other processor's.
    pub async fn webhook_secret(&self, processor: &str) -> Result<WebhookSecret, AuditError> {
        for _ in 0..2 {
            if let Some(s) = self.current_webhook_secret(processor).await? {
                return Ok(s);
            }
            self.insert_webhook_secret(processor, 1).await?;
        }
        Err(AuditError::UnknownSubject(webhook_kind(processor)))
    }

    /// Replaces the secret of `processor` with a new random one, which signs from now on;
    /// the previous one no longer does.
    pub async fn rotate_webhook_secret(
        &self,
        processor: &str,
    ) -> Result<WebhookSecret, AuditError> {
        let version = self
            .current_webhook_secret(processor)
            .await?
            .map_or(1, |s| s.version + 1);
        self.insert_webhook_secret(processor, version).await?;
        let entry = NewEntry::new(Actor::Cli, "webhook_secret.rotated")
            .summary(serde_json::json!({ "processor": processor, "version": version }));
        let mut tx = self.store.begin().await?;
        self.append_in(&mut tx, &[entry]).await?;
        tx.commit().await?;
        self.webhook_secret(processor).await
    }

    async fn current_webhook_secret(
        &self,
        processor: &str,
    ) -> Result<Option<WebhookSecret>, AuditError> {
        let row = sqlx::query(
            "SELECT key_id, wrapped, version FROM audit_keys WHERE kind = $1 AND wrapped IS NOT NULL ORDER BY version DESC LIMIT 1",
        )
        .bind(webhook_kind(processor))
        .fetch_optional(self.store.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let key_id: String = row.try_get(0)?;
        let wrapped: Vec<u8> = row.try_get(1)?;
        Ok(Some(WebhookSecret {
            key: self.keys.master.unwrap(&wrapped, &key_id)?,
            version: row.try_get(2)?,
        }))
    }

    async fn insert_webhook_secret(&self, processor: &str, version: i64) -> Result<(), AuditError> {
        let kind = webhook_kind(processor);
        let key_id = format!("{kind}:v{version}");
        let key = SecretKey::generate()?;
        sqlx::query(
            "INSERT INTO audit_keys (key_id, kind, version, wrapped, master_key_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(&key_id)
        .bind(&kind)
        .bind(version)
        .bind(self.keys.master.wrap(&key, &key_id)?)
        .bind(self.keys.master.id())
        .bind(timestamp(Utc::now()))
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// Seals a stored package; `label` (the request id) is bound to it.
    pub fn seal_package(&self, label: &str, bytes: &[u8]) -> Result<Vec<u8>, AuditError> {
        Ok(self.keys.packages.seal(bytes, label.as_bytes())?)
    }

    pub fn open_package(&self, label: &str, sealed: &[u8]) -> Result<Vec<u8>, AuditError> {
        Ok(self.keys.packages.open(sealed, label.as_bytes())?)
    }

    pub(crate) fn mac_key(&self) -> &ring::hmac::Key {
        &self.keys.mac
    }
}

/// The id a record's own key is wrapped under: never a data key's id.
fn own_key_id(label: &str) -> String {
    format!("record:{label}")
}

/// `INSERT INTO audit_entries ... VALUES (...), (...)` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO audit_entries (seq, recorded_at, actor, action, request_id, subject_id, summary, key_id, key_version, ciphertext, mac) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 1..=11 {
            if c > 1 {
                sql.push(',');
            }
            sql.push_str(&format!("${}", i * 11 + c));
        }
        sql.push(')');
    }
    sql
}

/// The log's own key `key_id`: unwrapped if it exists, else created.
async fn ensure_key(
    store: &Store,
    master: &MasterKey,
    key_id: &str,
) -> Result<SecretKey, AuditError> {
    for _ in 0..2 {
        let row = sqlx::query("SELECT wrapped, master_key_id FROM audit_keys WHERE key_id = $1")
            .bind(key_id)
            .fetch_optional(store.pool())
            .await?;
        if let Some(row) = row {
            let wrapped: Vec<u8> = row.try_get(0)?;
            let expected: String = row.try_get(1)?;
            if expected != master.id() {
                return Err(KeyError::WrongMaster {
                    expected,
                    actual: master.id(),
                }
                .into());
            }
            return Ok(master.unwrap(&wrapped, key_id)?);
        }
        let key = SecretKey::generate()?;
        sqlx::query(
            "INSERT INTO audit_keys (key_id, kind, version, wrapped, master_key_id, created_at) \
             VALUES ($1, $1, $2, $3, $4, $5) ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(key_id)
        .bind(i64::from(KEY_VERSION))
        .bind(master.wrap(&key, key_id)?)
        .bind(master.id())
        .bind(timestamp(Utc::now()))
        .execute(store.pool())
        .await?;
    }
    Err(AuditError::UnknownSubject(key_id.to_owned()))
}

/// A rotation writes the new key to `master.key.next`, commits, then renames it over
/// `master.key`. If the process stopped before the rename, the store already uses the
/// new key: finish the rename now.
async fn finish_interrupted_rotation(
    store: &Store,
    master: MasterKey,
) -> Result<MasterKey, AuditError> {
    let Some(file) = master.file.clone() else {
        return Ok(master);
    };
    let next = file.with_extension("key.next");
    if !next.exists() {
        return Ok(master);
    }
    let stored: Option<String> =
        sqlx::query_scalar("SELECT master_key_id FROM audit_keys WHERE key_id = $1")
            .bind(SYSTEM_KEY)
            .fetch_optional(store.pool())
            .await?;
    let text = std::fs::read_to_string(&next).map_err(|source| KeyError::File {
        path: next.clone(),
        source,
    })?;
    let mut candidate = MasterKey::parse(&text)?;
    if stored.as_deref() == Some(candidate.id().as_str()) {
        std::fs::rename(&next, &file).map_err(|source| KeyError::File {
            path: file.clone(),
            source,
        })?;
        tracing::warn!(path = %file.display(), "finished an interrupted master key rotation");
        candidate.file = Some(file);
        return Ok(candidate);
    }
    // The rotation never committed: the old key is still the right one.
    std::fs::remove_file(&next).map_err(|source| KeyError::File { path: next, source })?;
    Ok(master)
}

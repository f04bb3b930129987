//! The request lifecycle (Art. 12): intake and deadlines (here); identity verification
//! by an e-mailed link or code (`verify`); execution by the worker (`execute`); what the DPO does
//! (`admin`); requests from controller systems over OpenDSR (`opendsr`); retention of
//! lethe's own records (`purge`). Each state change, its audit entry and its e-mail are
//! written in one transaction, so a crash neither loses nor duplicates a message.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::audit::{Actor, AuditError, AuditLog, NewEntry, SubjectId};
use crate::identity::Identity;
use crate::notify::{self, Mail, Mailer};
use crate::policy::RetentionPeriod;
use crate::store::{Store, timestamp};

/// How long a verification code is valid.
pub const CODE_TTL_MINUTES: i64 = 15;
/// Wrong codes allowed before a new code is needed.
pub const MAX_ATTEMPTS: i64 = 5;
/// Digits in a verification code, shown to the person as two groups of five.
pub const CODE_DIGITS: u32 = 10;
/// Codes checked per person, all their requests together, in [`CODE_CHECK_WINDOW_HOURS`];
/// after that, until the window ends, only the link in the e-mail verifies.
///
/// The arithmetic ([`guessing_chance_per_year`]): one check of a ten-digit code succeeds
/// with probability 10⁻¹⁰. However many client addresses and requests an attacker uses, a
/// person's codes are checked at most 5 times a day, 5 × 366 = 1,830 times a year, so the
/// chance of confirming a request in someone else's name by code is at most
/// 1,830 × 10⁻¹⁰ ≈ 1.8 × 10⁻⁷ a year, below one in a million. (A six-digit code under the
/// same cap would give 1.8 × 10⁻³.) The link's 192-bit secret is out of reach of guessing
/// at any rate.
pub const MAX_CODE_CHECKS: i64 = 5;
/// The window [`MAX_CODE_CHECKS`] counts over.
pub const CODE_CHECK_WINDOW_HOURS: i64 = 24;
/// Verification e-mails sent to one address (all its requests, new codes included) in
/// [`CODE_CHECK_WINDOW_HOURS`], unless configured otherwise
/// ([`Settings::verification_mails`]): beyond them a submission is answered alike but
/// mails nothing, so nobody can flood an address through the form.
pub use crate::config::VERIFICATION_MAILS_PER_DAY;
/// How long the link in a verification e-mail confirms the request.
pub const LINK_TTL_HOURS: i64 = 72;
/// Random bytes in the link's secret (192 bits).
const LINK_SECRET_BYTES: usize = 24;
/// Codes sent for one request, the first included.
pub const MAX_CODES: i64 = 5;
/// The shortest wait between two codes for one request.
pub const RESEND_SECONDS: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Access,
    Portability,
    Erasure,
    Rectification,
    Restriction,
    Objection,
    /// An objection to direct marketing (Art. 21(2)): absolute, carried out at once.
    MarketingObjection,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Self::Access,
        Self::Portability,
        Self::Erasure,
        Self::Rectification,
        Self::Restriction,
        Self::Objection,
        Self::MarketingObjection,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Portability => "portability",
            Self::Erasure => "erasure",
            Self::Rectification => "rectification",
            Self::Restriction => "restriction",
            Self::Objection => "objection",
            Self::MarketingObjection => "marketing_objection",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.key() == s)
    }
}

/// The schema of a request's `type`: one of the kinds, as the API spells them.
pub fn kind_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "enum": Kind::ALL.map(Kind::key) })
}

/// The schema of a request's `status`: one of the states, as the API spells them.
pub fn status_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "enum": Status::ALL.map(Status::key) })
}

/// The deadline of Art. 12(3): one month after receipt, on the same day of the month, or
/// on the month's last day when that day does not exist (31 January → 28/29 February).
pub fn due_date(received: DateTime<Utc>) -> DateTime<Utc> {
    RetentionPeriod::new(0, 1, 0)
        .after(received)
        .unwrap_or(received)
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no such request")]
    NotFound,
    #[error("the e-mail address cannot receive mail")]
    Undeliverable,
    #[error("the token does not open this request")]
    Unauthorized,
    #[error("the code is wrong; {remaining} attempt(s) left")]
    WrongCode { remaining: i64 },
    #[error("the code has expired; ask for a new one")]
    Expired,
    #[error("too many wrong codes; ask for a new one")]
    TooManyAttempts,
    #[error("too many codes were tried for this person today; confirm with the link in the e-mail")]
    UseTheLink,
    #[error("the request is not waiting for a code")]
    NotPending,
    #[error("no more codes can be sent for this request; make a new request")]
    NoMoreCodes,
    #[error("a code was sent less than a minute ago; wait {0} s")]
    ResendTooSoon(i64),
    #[error("the deadline was already extended once")]
    AlreadyExtended,
    /// Art. 12(3) GDPR: the person must be told of an extension within one month of
    /// receipt of the request.
    #[error(
        "an extension must be sent within one month of receipt (Art. 12(3) GDPR); this request was received on {received}, so the last day was {last_day}"
    )]
    ExtensionTooLate { received: String, last_day: String },
    #[error("the request is {status}: it cannot be {action} now")]
    WrongState { status: String, action: String },
    #[error("the request is not a task for the DPO")]
    NotATask,
    #[error("the person's data in this request was erased")]
    Erased,
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Mail(#[from] notify::MailError),
}

/// What the submitter gets back.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Submitted {
    pub id: String,
    #[schemars(schema_with = "status_schema")]
    pub status: String,
    pub due_at: String,
    /// The secret that opens the request.
    pub token: String,
}

/// A request as its subject may see it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct View {
    pub id: String,
    #[serde(rename = "type")]
    #[schemars(schema_with = "kind_schema")]
    pub kind: String,
    #[schemars(schema_with = "status_schema")]
    pub status: String,
    pub received_at: String,
    pub due_at: String,
    /// After an erasure: what was kept, under which article, why and until when.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<KeptView>,
    /// An access or portability request that found nothing: we hold no data about them.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub nothing_found: bool,
    /// An erasure waiting for the person's own restriction to be lifted: why, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<&'static str>,
    /// After an objection to direct marketing: the purposes stopped for them, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Vec<String>>,
    /// After an erasure: the recipients told of it (Art. 19), by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub told: Vec<String>,
    /// What the DPO wrote to the person (an extension's or a rejection's reasons, what a
    /// task's completion did); for the holder of the token only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A request's recorded result (JSON, or NULL before it ran), parsed once.
fn result_of(result: Option<&str>) -> serde_json::Value {
    result
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default()
}

/// The recipients an erasure told (Art. 19), by name.
fn told(result: &serde_json::Value) -> Vec<String> {
    result["told"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

/// The purposes an objection to direct marketing stopped, by name.
fn stopped(result: &serde_json::Value) -> Option<Vec<String>> {
    let list = result.get("stopped")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// Why a request waits.
fn held(result: &serde_json::Value) -> Option<&'static str> {
    (result["waiting_for"].as_str() == Some("restriction")).then_some(execute::HELD)
}

/// Whether an access found nothing.
fn nothing_found(result: &serde_json::Value) -> bool {
    result["nothing_found"].as_bool().unwrap_or(false)
}

/// One kept field of an erasure, as the subject reads it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KeptView {
    pub collection: String,
    pub field: String,
    pub article: String,
    pub reason: String,
    pub until: Option<String>,
    pub rows: u64,
}

/// The kept fields recorded in an erasure's result.
fn kept_of(result: &serde_json::Value) -> Vec<KeptView> {
    let mut out = Vec::new();
    for sys in result["systems"].as_array().into_iter().flatten() {
        for c in sys["collections"].as_array().into_iter().flatten() {
            for k in c["kept"].as_array().into_iter().flatten() {
                out.push(KeptView {
                    collection: c["collection"].as_str().unwrap_or_default().to_owned(),
                    field: k["field"].as_str().unwrap_or_default().to_owned(),
                    article: k["article"].as_str().unwrap_or_default().to_owned(),
                    reason: k["reason"].as_str().unwrap_or_default().to_owned(),
                    until: k["until"].as_str().map(str::to_owned),
                    rows: k["rows"].as_u64().unwrap_or(0),
                });
            }
        }
    }
    out
}

fn sha256_hex(s: &str) -> String {
    hex::encode(crate::crypto::sha256(&[s.as_bytes()]))
}

/// Equal in constant time (for hex digests of equal length).
fn same(a: &str, b: &str) -> bool {
    crate::crypto::constant_time_eq(a.as_bytes(), b.as_bytes())
}

/// The highest chance, in a year, that an online attacker confirms one person's request
/// by guessing codes, from any number of client addresses: the checks the person's daily
/// cap lets through in a leap year, each with one chance in 10^[`CODE_DIGITS`].
pub fn guessing_chance_per_year() -> f64 {
    let checks_a_year = MAX_CODE_CHECKS * 366 * 24 / CODE_CHECK_WINDOW_HOURS;
    checks_a_year as f64 / 10f64.powi(CODE_DIGITS as i32)
}

/// A code of [`CODE_DIGITS`] digits from the system random generator, every code equally
/// likely (draws above the last whole multiple of the code space are drawn again).
fn new_code() -> Result<String, RequestError> {
    let space = 10u64.pow(CODE_DIGITS);
    let fair = u64::MAX - u64::MAX % space;
    loop {
        let mut b = [0u8; 8];
        crate::crypto::fill_random(&mut b).map_err(AuditError::from)?;
        let n = u64::from_be_bytes(b);
        if n < fair {
            return Ok(format!(
                "{:0width$}",
                n % space,
                width = CODE_DIGITS as usize
            ));
        }
    }
}

/// A code as the person reads it: two groups of five digits.
fn shown_code(code: &str) -> String {
    let (a, b) = code.split_at(code.len() / 2);
    format!("{a} {b}")
}

/// A code as the person typed it, as it is compared: spaces and dashes left out.
fn typed_code(input: &str) -> String {
    input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect()
}

/// How the service treats requests, from the configuration and the policy.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The controller's name, as the subject reads it.
    pub controller: String,
    /// Types that wait for the DPO's approval once the identity is verified.
    pub approval: Vec<Kind>,
    /// Where the service is reached from outside (`https://privacy.example.com`), for the
    /// links in e-mails.
    pub public_url: Option<String>,
    /// Without `public_url`: the address lethe listens on, for links only (see
    /// [`link_base`]); forms are still checked against the address they were sent to.
    pub listen_url: Option<String>,
    /// Who is told of manual tasks and approvals: the DPO, else the controller's contact.
    pub dpo_email: Option<String>,
    /// The supervisory authority named in rejections.
    pub authority: Option<String>,
    /// Days an access package can be downloaded.
    pub package_days: i64,
    /// Verification e-mails one address receives in a day, all its requests together.
    pub verification_mails: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            controller: String::new(),
            approval: Vec::new(),
            public_url: None,
            listen_url: None,
            dpo_email: None,
            authority: None,
            package_days: PACKAGE_DAYS,
            verification_mails: VERIFICATION_MAILS_PER_DAY,
        }
    }
}

impl Settings {
    pub fn from_policy(policy: &crate::policy::Policy) -> Self {
        let c = policy.controller.as_ref();
        Self {
            controller: c.map(|c| c.name.clone()).unwrap_or_default(),
            dpo_email: c.map(|c| {
                c.dpo
                    .as_ref()
                    .map_or_else(|| c.contact_email.to_string(), |d| d.email.to_string())
            }),
            authority: c
                .and_then(|c| c.supervisory_authority.as_ref())
                .map(|a| a.name.clone()),
            ..Self::default()
        }
    }

    /// How the request service treats requests, from the configuration and the policy.
    pub fn from_config(
        config: &crate::config::Config,
        policy: &crate::policy::Policy,
    ) -> anyhow::Result<Self> {
        let mut approval = Vec::new();
        for k in config
            .approval
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            match Kind::parse(k) {
                Some(kind) if !is_manual(kind) => approval.push(kind),
                _ => anyhow::bail!(
                    "configuration error: approval: `{k}` is not one of access, portability, erasure"
                ),
            }
        }
        if let Some(u) = &config.public_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            anyhow::bail!("configuration error: public_url must be an http(s) URL");
        }
        if !(1..=90).contains(&config.package_days) {
            anyhow::bail!("configuration error: package_days must be 1 to 90");
        }
        if !(1..=20).contains(&config.verification_mails) {
            anyhow::bail!("configuration error: verification_mails must be 1 to 20");
        }
        Ok(Self {
            approval,
            public_url: config.public_url.clone(),
            package_days: config.package_days,
            verification_mails: config.verification_mails,
            ..Self::from_policy(policy)
        })
    }

    /// A link to `path` on this service.
    pub fn link(&self, path: &str) -> String {
        match self.public_url.as_ref().or(self.listen_url.as_ref()) {
            Some(u) => format!("{}{path}", u.trim_end_matches('/')),
            None => path.to_owned(),
        }
    }
}

/// The base of links when no `public_url` is set: the address lethe listens on, named
/// `localhost` when it is a loopback or the unspecified address.
pub fn link_base(addr: std::net::SocketAddr) -> String {
    let ip = addr.ip();
    if ip.is_loopback() || ip.is_unspecified() {
        format!("http://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

/// Types a person on the DPO's team handles; the service routes them as tasks.
pub fn is_manual(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Rectification | Kind::Restriction | Kind::Objection
    )
}

pub struct Service<'a> {
    pub store: &'a Store,
    pub audit: &'a AuditLog,
    pub mailer: &'a Mailer,
    pub settings: Settings,
}

impl Service<'_> {
    /// Records a request and e-mails its verification link and code. Every submission is
    /// a new request with its own token and e-mail, whatever is open for the address: an
    /// unverified request made by someone else never stands in the person's way, and the
    /// answer never tells whether anything exists for an address. A duplicate of an open
    /// request, once verified, runs beside it.
    pub async fn submit(
        &self,
        kind: Kind,
        identity: &Identity,
        details: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Submitted, RequestError> {
        // Checked with the transport's own parser: an address accepted here can be sent to.
        if identity.kind() == "email" && notify::recipient(identity.value()).is_none() {
            return Err(RequestError::Undeliverable);
        }
        let lookup = personal::lookup(self.audit, identity);
        let id = format!(
            "r_{}",
            crate::crypto::random_hex(12).map_err(AuditError::from)?
        );
        let token = crate::crypto::random_hex(32).map_err(AuditError::from)?;
        let secrets = self.new_secrets(&id)?;
        let due = timestamp(due_date(now));
        // Nobody is verified yet: no audit subject, the identity and details sealed under
        // a key of the request's own, and the audit entry says nothing of the person.
        let (sealed, own_key) = self.seal_own(&id, &Personal::new(identity, details))?;
        let mut tx = self.store.begin().await?;
        // Over the address's daily mails the request is made all the same, and answered
        // alike, but nothing is sent: the person uses the link of an earlier e-mail.
        let mailed = self
            .take_verification_mail(&mut tx, (identity.kind(), identity.value()), now)
            .await?;
        let entry = NewEntry::new(Actor::Subject, "request.submitted")
            .request(&id)
            .summary(serde_json::json!({ "type": kind.key(), "due_at": due, "mailed": mailed }));
        self.audit.append_in(&mut tx, &[entry]).await?;
        sqlx::query(
            "INSERT INTO dsr_requests (id, kind, status, identity_kind, identity_value, identity_lookup, sealed, own_key, token_hash, code_hash, code_expires_at, link_hash, link_expires_at, codes_sent, received_at, due_at, updated_at) \
             VALUES ($1, $2, 'identity_pending', $3, '', $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $13, $12)",
        )
        .bind(&id)
        .bind(kind.key())
        .bind(identity.kind())
        .bind(&lookup)
        .bind(sealed)
        .bind(own_key)
        .bind(sha256_hex(&token))
        .bind(&secrets.code_hash)
        .bind(timestamp(now + chrono::Duration::minutes(CODE_TTL_MINUTES)))
        .bind(&secrets.link_hash)
        .bind(timestamp(now + chrono::Duration::hours(LINK_TTL_HOURS)))
        .bind(timestamp(now))
        .bind(&due)
        .execute(&mut *tx)
        .await?;
        if !mailed {
            tx.commit().await?;
            tracing::info!(request = %id, "verification mail withheld: the address had its mails for the day");
        } else {
            let mail = self.code_mail(identity.value(), &id, &secrets, &due[..10]);
            let mail_id = notify::enqueue_claimed_in(&mut tx, self.mailer, &mail).await?;
            tx.commit().await?;
            // Delivery failures are retried by the next delivery; the request stands.
            if let Err(e) = notify::deliver_claimed(self.store, self.mailer, mail_id, &mail).await {
                tracing::warn!(error = %e, "mail delivery deferred");
            }
        }
        Ok(Submitted {
            id,
            status: "identity_pending".into(),
            due_at: due,
            token,
        })
    }

    /// What follows a verified identity: the person becomes an audit subject, the
    /// request's personal part is sealed under their key, a restriction is placed, the DPO
    /// is told of a task or an approval; returns the next status. The caller moves the
    /// request to it.
    #[allow(clippy::too_many_arguments)]
    async fn accept_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        id: &str,
        kind: Kind,
        person: &Personal,
        due: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<Status, RequestError> {
        let identity = person.identity()?;
        let subject = self.audit.subject_in(&mut *tx, &identity).await?;
        let sealed = self.seal_for(&mut *tx, id, &subject, person).await?;
        sqlx::query("UPDATE dsr_requests SET sealed = $1, sealed_by = $2, own_key = NULL, identity_value = '', details = NULL WHERE id = $3")
            .bind(sealed)
            .bind(subject.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let next = if is_manual(kind) {
            Status::InProgress
        } else if self.settings.approval.contains(&kind) {
            Status::AwaitingApproval
        } else {
            Status::Verified
        };
        self.audit
            .append_in(
                &mut *tx,
                &[NewEntry::new(actor, "request.verified")
                    .request(id)
                    .subject(&subject)
                    .summary(serde_json::json!({ "type": kind.key(), "next": next.key() }))
                    .payload(serde_json::json!({ "identity": person.identity, "details": person.details }))],
            )
            .await?;
        if kind == Kind::Restriction {
            let sealed = self
                .seal_for(&mut *tx, &restriction_label(id), &subject, person)
                .await?;
            sqlx::query("INSERT INTO subject_restrictions (request_id, identity_kind, identity_value, sealed, sealed_by, placed_at) VALUES ($1, $2, '', $3, $4, $5)")
                .bind(id)
                .bind(identity.kind())
                .bind(sealed)
                .bind(subject.as_str())
                .bind(timestamp(now))
                .execute(&mut *tx)
                .await?;
            self.audit
                .append_in(
                    &mut *tx,
                    &[NewEntry::new(Actor::System, "restriction.placed").request(id)],
                )
                .await?;
        }
        let task = match (kind, next) {
            (Kind::Restriction, _) => Some(
                "restriction of processing (Art. 18): retention and erasure now skip this person; decide whether to keep the restriction, then complete the request, and lift the restriction when its ground ends (the person is told)",
            ),
            (Kind::Rectification, _) => Some(
                "rectification (Art. 16): correct the data as the person asks, then complete the request",
            ),
            (Kind::Objection, _) => Some(
                "objection (Art. 21): stop the processing objected to unless there are compelling legitimate grounds, then complete the request",
            ),
            (_, Status::AwaitingApproval) => {
                Some("approval: approve the request to run it, or reject it with a reason")
            }
            _ => None,
        };
        if let (Some(task), Some(dpo)) = (task, &self.settings.dpo_email) {
            let link = self.settings.link(&format!("/v1/admin/requests/{id}"));
            let text = format!(
                "The {} request {id} (verified) needs you: {task}.\n\nDue by {} (Art. 12(3) GDPR). The request, with the person's details: {link}\n",
                kind.key(),
                &due[..due.len().min(10)]
            );
            let html = format!(
                "<p>The {} request <code>{id}</code> (verified) needs you: {}.</p><p>Due by {} (Art. 12(3) GDPR). The request, with the person's details: <code>{}</code></p>",
                kind.key(),
                notify::html_escape(task),
                &due[..due.len().min(10)],
                notify::html_escape(&link)
            );
            notify::enqueue_in(
                &mut *tx,
                self.mailer,
                &Mail {
                    kind: format!(
                        "dpo_{}",
                        if next == Status::AwaitingApproval {
                            "approval"
                        } else {
                            "task"
                        }
                    ),
                    to: dpo.clone(),
                    subject: format!("Request {id} ({}) needs you", kind.key()),
                    text,
                    html,
                },
            )
            .await?;
        }
        Ok(next)
    }

    /// Delivers queued mail now; a failure is retried by the next delivery.
    async fn deliver(&self) {
        if let Err(e) = notify::deliver_pending(self.store, self.mailer).await {
            tracing::warn!(error = %e, "mail delivery deferred");
        }
    }

    async fn view(&self, id: &str) -> Result<View, RequestError> {
        let r = sqlx::query(
            "SELECT id, kind, status, received_at, due_at, result FROM dsr_requests WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?
        .ok_or(RequestError::NotFound)?;
        view_of(&r)
    }

    /// The request, for the holder of its token.
    pub async fn status(&self, id: &str, token: &str) -> Result<View, RequestError> {
        let r = sqlx::query(
            "SELECT id, kind, status, received_at, due_at, result, token_hash FROM dsr_requests WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?;
        // Unknown ids and wrong tokens answer alike: nobody learns which requests exist.
        let Some(r) = r else {
            return Err(RequestError::Unauthorized);
        };
        let hash: String = r.try_get(6)?;
        if !same(&hash, &sha256_hex(token)) {
            return Err(RequestError::Unauthorized);
        }
        let mut v = view_of(&r)?;
        // Sealed with the person's identity: gone with it after an erasure.
        v.note = self.personal_of(id).await.ok().and_then(|p| p.reason);
        Ok(v)
    }
}

/// The view of a row that starts `id, kind, status, received_at, due_at, result`; its
/// result parsed once.
fn view_of(r: &sqlx::any::AnyRow) -> Result<View, RequestError> {
    let result = result_of(r.try_get::<Option<String>, _>(5)?.as_deref());
    Ok(View {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        status: r.try_get(2)?,
        received_at: r.try_get(3)?,
        due_at: r.try_get(4)?,
        kept: kept_of(&result),
        nothing_found: nothing_found(&result),
        held: held(&result),
        stopped: stopped(&result),
        told: told(&result),
        note: None,
    })
}

mod admin;
mod execute;
mod opendsr;
mod personal;
mod purge;
mod status;
mod transition;
mod verify;

use crate::dsr::restriction_label;
use personal::Personal;

pub use admin::{AdminView, DUE_SOON_DAYS, Full, Listing, PAGE_SIZE, QueueCounts, StatusFilter};
pub use execute::{
    Download, MAX_EXECUTIONS, Notice, PACKAGE_DAYS, Suppressed, erasure_notices, suppress_in,
    suppression_list,
};
pub use opendsr::{OPENDSR_API_VERSION, opendsr_status};
pub use purge::{Purged, TRANSIENT_DAYS, purge};
pub use status::Status;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_deadline_is_the_same_day_next_month_or_its_last_day() {
        let at = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 9, 30, 0).unwrap();
        assert_eq!(due_date(at(2027, 1, 31)), at(2027, 2, 28));
        assert_eq!(due_date(at(2028, 1, 31)), at(2028, 2, 29));
        assert_eq!(due_date(at(2026, 3, 15)), at(2026, 4, 15));
        assert_eq!(due_date(at(2026, 12, 31)), at(2027, 1, 31));
        assert_eq!(due_date(at(2026, 5, 31)), at(2026, 6, 30));
    }

    /// The README's arithmetic, from the constants the service uses: a shorter code, a
    /// higher cap or a shorter window fails here.
    #[test]
    fn a_code_is_guessed_with_less_than_one_chance_in_a_million_a_year() {
        assert_eq!(CODE_DIGITS, 10);
        assert_eq!(MAX_CODE_CHECKS, 5);
        assert_eq!(CODE_CHECK_WINDOW_HOURS, 24);
        let p = guessing_chance_per_year();
        assert!((p - 1.83e-7).abs() < 1e-9, "{p}");
        assert!(p < 1e-6);
    }

    #[test]
    fn deadlines_run_on_the_utc_calendar() {
        use chrono::FixedOffset;
        // 00:30 in Vienna on 1 February is still 31 January in UTC: the date we promise
        // is 28 February, a day before the local calendar's 1 March; for the EU, at or
        // east of UTC, the promised date is never later than the local one.
        let vienna = FixedOffset::east_opt(3600).unwrap();
        let received = vienna.with_ymd_and_hms(2027, 2, 1, 0, 30, 0).unwrap();
        assert_eq!(
            due_date(received.with_timezone(&Utc)),
            Utc.with_ymd_and_hms(2027, 2, 28, 23, 30, 0).unwrap()
        );
        // An extension by two months runs from the first deadline.
        let due = due_date(Utc.with_ymd_and_hms(2027, 1, 31, 9, 0, 0).unwrap());
        assert_eq!(
            RetentionPeriod::new(0, 2, 0).after(due),
            Some(Utc.with_ymd_and_hms(2027, 4, 28, 9, 0, 0).unwrap())
        );
    }

    #[test]
    fn codes_are_ten_digits_and_compared_in_full() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let c = new_code().unwrap();
            assert_eq!(c.len(), 10);
            assert!(c.chars().all(|ch| ch.is_ascii_digit()));
            seen.extend(c.chars());
        }
        // The alphabet is all ten digits.
        assert_eq!(seen.len(), 10);
        assert_eq!(shown_code("0123456789"), "01234 56789");
        for typed in [
            "0123456789",
            "01234 56789",
            " 01234-56789\n",
            "012 345 6789",
        ] {
            assert_eq!(typed_code(typed), "0123456789");
        }
        assert!(same("abcd", "abcd"));
        assert!(!same("abcd", "abce"));
        assert!(!same("abc", "abcd"));
    }
}

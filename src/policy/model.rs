//! The policy model: what the YAML files under `policies/` declare, as typed values.
//! Values that other parts of the policy refer to keep their source span, so every
//! problem found later can still name `file:line:column`.

use std::collections::BTreeMap;
use std::fmt;

use marked_yaml::Spanned;
use serde::{Deserialize, Serialize};

use super::types::{
    AgreementSide, CategoryKey, CountryCode, Date, Direction, Email, ErasureMode, Id, Identifier,
    LegalBasis, ProcessorRole, RetentionPeriod, SpecialCategoryCondition, TransferSafeguard,
};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Controller {
    pub name: String,
    pub address: String,
    pub contact_email: Email,
    #[serde(default)]
    pub website: Option<String>,
    #[serde(default)]
    pub dpo: Option<Dpo>,
    #[serde(default)]
    pub representative: Option<String>,
    #[serde(default)]
    pub supervisory_authority: Option<Authority>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Dpo {
    pub name: String,
    pub email: Email,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Authority {
    pub name: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
}

/// A custom data category extending the built-in taxonomy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomCategory {
    pub id: Spanned<CategoryKey>,
    #[serde(default)]
    pub parent: Option<Spanned<CategoryKey>>,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Overrides the special-category flag inherited from the parent.
    #[serde(default)]
    pub special: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Purpose {
    pub id: Spanned<Id>,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub legal_basis: Spanned<LegalBasis>,
    /// For `legitimate_interests`: the interest pursued (Art. 13(1)(d)).
    #[serde(default)]
    pub legitimate_interest: Option<String>,
    #[serde(default)]
    pub special_category_condition: Option<SpecialCategoryCondition>,
    #[serde(default)]
    pub subjects: Vec<Spanned<Id>>,
    #[serde(default)]
    pub categories: Vec<Spanned<CategoryKey>>,
    #[serde(default)]
    pub recipients: Vec<Spanned<Id>>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub retention: Option<Retention>,
    /// Direct marketing: an objection to it (Art. 21(2)) takes effect at once, with no
    /// balancing of grounds (Art. 21(3)).
    #[serde(default)]
    pub direct_marketing: bool,
}

impl Purpose {
    pub const DEFAULT_SOURCE: &'static str = "the data subject";

    pub fn source(&self) -> &str {
        self.source.as_deref().unwrap_or(Self::DEFAULT_SOURCE)
    }

    /// Whether the purpose declares `category`, itself or a category above it
    /// (`user.contact` declares `user.contact.email`).
    pub fn declares(&self, category: &str) -> bool {
        self.categories.iter().any(|pc| {
            category == pc.as_str()
                || category
                    .strip_prefix(pc.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    /// Whether the purpose declares one of `categories`.
    pub fn declares_any(&self, categories: &[Spanned<CategoryKey>]) -> bool {
        categories.iter().any(|c| self.declares(c.as_str()))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub keep_for: Spanned<RetentionPeriod>,
    /// The event the period runs from; bound per collection under `events`.
    #[serde(default = "Retention::default_event")]
    pub from: Spanned<String>,
    /// Why the data is kept: `legal_obligation` exempts it from erasure until it expires.
    #[serde(default)]
    pub basis: Option<LegalBasis>,
    #[serde(default)]
    pub note: Option<String>,
}

impl Retention {
    pub const DEFAULT_EVENT: &'static str = "collected";

    fn default_event() -> Spanned<String> {
        Spanned::new(
            marked_yaml::Span::new_blank(),
            Self::DEFAULT_EVENT.to_owned(),
        )
    }

    /// The rule as a person reads it: "8 years after collection", "until the account is closed".
    pub fn describe(&self) -> String {
        let event = humanize_event(&self.from);
        if self.keep_for.is_zero() {
            format!("until {event}")
        } else {
            format!("{} after {event}", self.keep_for.describe())
        }
    }
}

/// "collected" → "collection", "account_closed" → "the account is closed".
pub fn humanize_event(event: &str) -> String {
    match event {
        "collected" => "collection".to_owned(),
        "account_closed" => "the account is closed".to_owned(),
        "contract_ended" => "the contract ends".to_owned(),
        "consent_withdrawn" => "consent is withdrawn".to_owned(),
        "last_activity" => "the last activity".to_owned(),
        "invoiced" => "invoicing".to_owned(),
        other => other.replace('_', " "),
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Processor {
    pub id: Spanned<Id>,
    pub name: String,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default = "Processor::default_role")]
    pub role: ProcessorRole,
    pub country: Spanned<CountryCode>,
    #[serde(default)]
    pub transfers: Vec<Transfer>,
    #[serde(default)]
    pub agreement: Option<Spanned<Id>>,
    #[serde(default)]
    pub erasure_notice: Option<ErasureNotice>,
}

impl Processor {
    fn default_role() -> ProcessorRole {
        ProcessorRole::Processor
    }

    /// Every country outside the EEA the data reaches through this recipient, with the
    /// safeguard declared for it (None when none is declared).
    pub fn third_countries(&self) -> Vec<(&CountryCode, Option<TransferSafeguard>)> {
        let mut out = Vec::new();
        if !self.country.in_eea() {
            let declared = self
                .transfers
                .iter()
                .find(|t| *t.country == *self.country)
                .and_then(|t| t.safeguard);
            out.push((&*self.country, declared));
        }
        for t in &self.transfers {
            if !t.country.in_eea() && *t.country != *self.country {
                out.push((&*t.country, t.safeguard));
            }
        }
        out
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    pub country: Spanned<CountryCode>,
    #[serde(default)]
    pub safeguard: Option<TransferSafeguard>,
}

/// How a recipient is told about an erasure (Art. 19).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureNotice {
    #[serde(default)]
    pub email: Option<Email>,
    #[serde(default)]
    pub webhook: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    pub id: Spanned<Id>,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub connection: Option<Connection>,
    /// Default purposes of every collection in the system.
    #[serde(default)]
    pub purposes: Vec<Spanned<Id>>,
    /// A Fides dataset manifest, relative to the file that declares the system.
    #[serde(default)]
    pub fides_dataset: Option<Spanned<String>>,
    #[serde(default)]
    pub collections: Vec<Collection>,
    /// The files read, by the source number spans carry (set by the loader), so that
    /// checks made later against the database can say where the policy said something.
    #[serde(skip)]
    pub sources: Vec<std::path::PathBuf>,
}

impl System {
    /// Where a span of this system's declaration is: `file:line:column`.
    pub fn location(&self, span: &marked_yaml::Span) -> crate::policy::Location {
        crate::policy::Location::of(&self.sources, span)
    }

    /// Whether a field is a key: a primary key, a reference, or the target of one. Keys
    /// are never masked: other rows find theirs through them.
    pub fn is_key(&self, c: &Collection, f: &Field) -> bool {
        f.primary_key
            || f.references.is_some()
            || self.collections.iter().any(|o| {
                o.fields.iter().any(|of| {
                    of.references.as_ref().is_some_and(|r| {
                        r.collection.as_str() == c.name.as_str()
                            && r.field.as_str() == f.name.as_str()
                    })
                })
            })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// The environment variable holding the database URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// The URL used when the variable is unset (never a secret: it is in the policy).
    #[serde(default)]
    pub default: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Collection {
    pub name: Spanned<Identifier>,
    #[serde(default)]
    pub description: Option<String>,
    /// Default purposes of every field; when empty, the system's.
    #[serde(default)]
    pub purposes: Vec<Spanned<Id>>,
    /// Retention events bound to columns: `{ collected: created_at }`.
    #[serde(default)]
    pub events: BTreeMap<String, Spanned<EventBinding>>,
    #[serde(default)]
    pub erasure: Option<ErasureMode>,
    #[serde(default)]
    pub fields: Vec<Field>,
}

impl Collection {
    pub fn erasure(&self) -> ErasureMode {
        self.erasure.unwrap_or(ErasureMode::DeleteRow)
    }

    /// The field of this collection that references `collection`, with its target.
    pub fn reference_to(&self, collection: &str) -> Option<(&Field, &FieldRef)> {
        self.fields.iter().find_map(|f| {
            let r = f.references.as_ref()?;
            (r.collection.as_str() == collection).then_some((f, &**r))
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: Spanned<Identifier>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub categories: Vec<Spanned<CategoryKey>>,
    /// Overrides the collection's purposes for this field.
    #[serde(default)]
    pub purposes: Vec<Spanned<Id>>,
    /// This field identifies a person: `email`, `phone`, `user_id`, ...
    #[serde(default)]
    pub identity: Option<Spanned<Id>>,
    #[serde(default)]
    pub primary_key: bool,
    #[serde(default)]
    pub references: Option<Spanned<FieldRef>>,
    /// Which way `references` is followed; `from` when not written. A reference into a
    /// collection with identity fields of its own (other data subjects) is followed only
    /// when its direction is written out.
    #[serde(default)]
    pub direction: Option<Spanned<Direction>>,
    #[serde(default)]
    pub masking: Option<Masking>,
}

impl Field {
    /// The direction this field's reference is followed in (`from` by default).
    pub fn follows(&self) -> Direction {
        self.direction
            .as_deref()
            .copied()
            .unwrap_or(Direction::From)
    }
}

/// `collection.field` within the same system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FieldRef {
    pub collection: Identifier,
    pub field: Identifier,
}

impl FieldRef {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (c, f) = s
            .split_once('.')
            .ok_or_else(|| format!("`{s}` is not a reference: write `collection.field`"))?;
        Ok(Self {
            collection: Identifier::parse(c)?,
            field: Identifier::parse(f)?,
        })
    }
}

impl TryFrom<String> for FieldRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<FieldRef> for String {
    fn from(r: FieldRef) -> String {
        r.to_string()
    }
}

impl fmt::Display for FieldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.collection, self.field)
    }
}

/// Where a retention event's time is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum EventBinding {
    /// A column of the collection itself: `created_at`.
    Column(Identifier),
    /// A column of a collection this one references: `users.closed_at`.
    Referenced(FieldRef),
    /// The latest value among the rows referencing this one: `max(invoices.issued_at)`.
    LatestOf(FieldRef),
}

impl EventBinding {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(inner) = s.strip_prefix("max(").and_then(|r| r.strip_suffix(')')) {
            return FieldRef::parse(inner.trim()).map(Self::LatestOf);
        }
        if s.contains('.') {
            return FieldRef::parse(s).map(Self::Referenced);
        }
        Identifier::parse(s).map(Self::Column).map_err(|_| {
            format!("`{s}` is not an event binding: write `column`, `collection.column` or `max(collection.column)`")
        })
    }
}

impl TryFrom<String> for EventBinding {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<EventBinding> for String {
    fn from(e: EventBinding) -> String {
        e.to_string()
    }
}

impl fmt::Display for EventBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Column(c) => write!(f, "{c}"),
            Self::Referenced(r) => write!(f, "{r}"),
            Self::LatestOf(r) => write!(f, "max({r})"),
        }
    }
}

/// How one field is erased when its row is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MaskingRepr", into = "MaskingRepr")]
pub enum Masking {
    DeleteRow,
    NullRewrite,
    /// HMAC-SHA-256 under a server key: joins still work, the value is gone.
    Hash,
    RandomString,
    Fixed(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum MaskingRepr {
    Name(String),
    Fixed { fixed: String },
}

impl TryFrom<MaskingRepr> for Masking {
    type Error = String;
    fn try_from(r: MaskingRepr) -> Result<Self, String> {
        match r {
            MaskingRepr::Fixed { fixed } => Ok(Self::Fixed(fixed)),
            MaskingRepr::Name(n) => match n.as_str() {
                "delete_row" => Ok(Self::DeleteRow),
                "null_rewrite" => Ok(Self::NullRewrite),
                "hash" => Ok(Self::Hash),
                "random_string" => Ok(Self::RandomString),
                _ => Err(format!(
                    "`{n}` is not a masking strategy: use delete_row, null_rewrite, hash, random_string or {{ fixed: \"...\" }}"
                )),
            },
        }
    }
}

impl From<Masking> for MaskingRepr {
    fn from(m: Masking) -> Self {
        match m {
            Masking::DeleteRow => Self::Name("delete_row".into()),
            Masking::NullRewrite => Self::Name("null_rewrite".into()),
            Masking::Hash => Self::Name("hash".into()),
            Masking::RandomString => Self::Name("random_string".into()),
            Masking::Fixed(fixed) => Self::Fixed { fixed },
        }
    }
}

/// A legal hold (Art. 17(3)(e)): nothing under it is erased until it ends.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    pub id: Spanned<Id>,
    pub reason: String,
    /// `system.collection` names.
    pub collections: Vec<Spanned<String>>,
    #[serde(default)]
    pub until: Option<Date>,
}

/// A control parameter value as written: a scalar or a list of scalars.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Scalar(String),
    List(Vec<String>),
}

impl ParamValue {
    /// The scalar, if this is one.
    pub fn as_scalar(&self) -> Option<&str> {
        match self {
            Self::Scalar(s) => Some(s),
            Self::List(_) => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scalar(s) => f.write_str(s),
            Self::List(l) => f.write_str(&l.join(", ")),
        }
    }
}

pub type Measures = BTreeMap<String, Spanned<ParamValue>>;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Agreement {
    pub id: Spanned<Id>,
    /// A processor id, or the name of a customer.
    pub counterparty: Spanned<String>,
    pub we_are: AgreementSide,
    #[serde(default)]
    pub signed: Option<Date>,
    #[serde(default)]
    pub review_by: Option<Date>,
    #[serde(default)]
    pub expires: Option<Date>,
    #[serde(default)]
    pub scc_module: Option<String>,
    #[serde(default)]
    pub transfer_safeguard: Option<TransferSafeguard>,
    #[serde(default)]
    pub art28_clauses: Vec<Spanned<String>>,
    #[serde(default)]
    pub purposes: Vec<Spanned<Id>>,
    #[serde(default)]
    pub document: Option<String>,
    #[serde(default)]
    pub requires: Measures,
    #[serde(default)]
    pub promises: Measures,
}

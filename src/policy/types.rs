//! Newtypes for every policy value that has rules. Each is built only through `parse`
//! (or serde's `try_from`), so a value of the type is valid by construction.

use std::fmt;

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Defines a string newtype deserialised through `TryFrom<String>`.
macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// The id of a purpose, processor, system, hold, agreement or subject category.
    Id
);

impl Id {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "`{s}` is not a valid id: use letters, digits, `_`, `-` and `.` (at most 64)"
            ))
        }
    }
}

string_newtype!(
    /// A data category key in the fideslang dotted form, e.g. `user.contact.email`.
    CategoryKey
);

impl CategoryKey {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 200
            && s.split('.').all(|seg| {
                !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "`{s}` is not a category key: use dotted lower-case segments like `user.contact.email`"
            ))
        }
    }

    /// The parent key (`user.contact` for `user.contact.email`), if any.
    pub fn parent(&self) -> Option<&str> {
        self.0.rsplit_once('.').map(|(p, _)| p)
    }
}

string_newtype!(
    /// A SQL identifier (table or column name) as written in the policy. It is checked
    /// against the live schema before use and always quoted by the SQL builder.
    Identifier
);

impl Identifier {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "`{s}` is not a SQL identifier: start with a letter or `_`, then letters, digits, `_` (at most 63)"
            ))
        }
    }
}

string_newtype!(
    /// An e-mail address (syntax only; deliverability is proved by verification mail).
    Email
);

impl Email {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || "not a valid e-mail address".to_owned();
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
        let domain_ok = domain.contains('.')
            && domain.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if local.is_empty() || local.len() > 64 || local.contains('@') || !domain_ok {
            return Err(bad());
        }
        Ok(Self(s.to_owned()))
    }
}

/// ISO 3166-1 alpha-2 codes.
const ISO_3166_ALPHA2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// Member states of the European Economic Area (EU 27 plus Iceland, Liechtenstein, Norway).
const EEA: &str =
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE IS LI NO";

/// Countries with an adequacy decision of the European Commission under Art. 45 GDPR.
/// The United States is adequate only for organisations certified under the
/// EU-US Data Privacy Framework, which is the `dpf` safeguard, so it is not listed here.
const ADEQUATE: &str = "AD AR CA FO GG IL IM JP JE NZ KR CH GB UY";

string_newtype!(
    /// An ISO 3166-1 alpha-2 country code.
    CountryCode
);

impl CountryCode {
    pub fn parse(s: &str) -> Result<Self, String> {
        let up = s.to_ascii_uppercase();
        if up.len() == 2 && ISO_3166_ALPHA2.split(' ').any(|c| c == up) {
            Ok(Self(up))
        } else {
            Err(format!(
                "`{s}` is not an ISO 3166-1 alpha-2 country code (e.g. DE, IE, US)"
            ))
        }
    }

    /// Inside the EEA, personal data moves freely (no Chapter V transfer).
    pub fn in_eea(&self) -> bool {
        EEA.split(' ').any(|c| c == self.0)
    }

    /// Covered by an adequacy decision (Art. 45).
    pub fn has_adequacy_decision(&self) -> bool {
        ADEQUATE.split(' ').any(|c| c == self.0)
    }
}

/// Defines a closed vocabulary: a unit enum with snake_case names, a label and a parse.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $key:literal => $label:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn key(self) -> &'static str {
                match self { $($name::$variant => $key),+ }
            }

            /// The human wording used in the notice and the register.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }

            pub fn parse(s: &str) -> Result<Self, String> {
                match s {
                    $($key => Ok($name::$variant),)+
                    _ => Err(format!(
                        "`{}` is not one of: {}",
                        s,
                        [$($key),+].join(", ")
                    )),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                Self::parse(&value)
            }
        }

        impl From<$name> for &'static str {
            fn from(value: $name) -> &'static str {
                value.key()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.key())
            }
        }
    };
}

vocabulary!(
    /// The lawful basis of processing, Art. 6(1)(a)-(f).
    LegalBasis {
        Consent = "consent" => "Consent (Art. 6(1)(a))",
        Contract = "contract" => "Performance of a contract (Art. 6(1)(b))",
        LegalObligation = "legal_obligation" => "Legal obligation (Art. 6(1)(c))",
        VitalInterests = "vital_interests" => "Vital interests (Art. 6(1)(d))",
        PublicTask = "public_task" => "Public task (Art. 6(1)(e))",
        LegitimateInterests = "legitimate_interests" => "Legitimate interests (Art. 6(1)(f))",
    }
);

vocabulary!(
    /// The condition that lifts the ban on special categories, Art. 9(2)(a)-(j).
    SpecialCategoryCondition {
        ExplicitConsent = "explicit_consent" => "Explicit consent (Art. 9(2)(a))",
        Employment = "employment_social_security" => "Employment and social security law (Art. 9(2)(b))",
        VitalInterests = "vital_interests" => "Vital interests (Art. 9(2)(c))",
        NotForProfit = "not_for_profit_body" => "Not-for-profit body (Art. 9(2)(d))",
        MadePublic = "manifestly_made_public" => "Manifestly made public (Art. 9(2)(e))",
        LegalClaims = "legal_claims" => "Legal claims (Art. 9(2)(f))",
        SubstantialPublicInterest = "substantial_public_interest" => "Substantial public interest (Art. 9(2)(g))",
        HealthCare = "health_care" => "Preventive or occupational medicine, health care (Art. 9(2)(h))",
        PublicHealth = "public_health" => "Public health (Art. 9(2)(i))",
        Research = "archiving_research_statistics" => "Archiving, research or statistics (Art. 9(2)(j))",
    }
);

vocabulary!(
    /// The safeguard for a transfer to a third country (GDPR Chapter V).
    TransferSafeguard {
        Scc = "scc" => "Standard Contractual Clauses (Art. 46(2)(c))",
        Adequacy = "adequacy" => "Adequacy decision (Art. 45)",
        Dpf = "dpf" => "EU-US Data Privacy Framework (Art. 45)",
        Bcr = "bcr" => "Binding Corporate Rules (Art. 47)",
        Derogation = "derogation" => "Derogation for a specific situation (Art. 49)",
    }
);

vocabulary!(
    /// What a recipient is to us.
    ProcessorRole {
        Processor = "processor" => "Processor",
        SubProcessor = "sub_processor" => "Sub-processor",
        IndependentController = "independent_controller" => "Independent controller",
    }
);

vocabulary!(
    /// How rows of a collection are erased.
    ErasureMode {
        DeleteRow = "delete_row" => "delete the row",
        KeepRow = "keep_row" => "keep the row, mask the personal fields",
    }
);

vocabulary!(
    /// Which way a reference is followed when looking for a person's rows. `from`: the
    /// referencing rows belong to whoever owns the referenced row (a person's invoices);
    /// `to`: the referenced row belongs to whoever owns the referencing row (a customer's
    /// address); `both`. The words are Fides' (`fides_meta.references[].direction`).
    Direction {
        From = "from" => "from the referenced row to the rows referencing it",
        To = "to" => "from the referencing row to the row it references",
        Both = "both" => "both ways",
    }
);

vocabulary!(
    /// Our side of an agreement.
    AgreementSide {
        Processor = "processor" => "We process the counterparty's data",
        Controller = "controller" => "The counterparty processes our data",
    }
);

/// A retention period: `90d`, `12w`, `6mo`, `8y`, or ISO 8601 (`P90D`, `P1Y6M`, `P2W`).
/// `0d` means "at the event".
///
/// ```
/// use lethe::policy::RetentionPeriod;
///
/// assert_eq!(RetentionPeriod::parse("8y").unwrap().describe(), "8 years");
/// assert_eq!(RetentionPeriod::parse("P1Y6M").unwrap().describe(), "1 year and 6 months");
/// assert!(RetentionPeriod::parse("8 years").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RetentionPeriod {
    years: u32,
    months: u32,
    days: u32,
}

impl RetentionPeriod {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad =
            || format!("`{s}` is not a duration: write 90d, 12w, 6mo, 8y or ISO 8601 such as P90D");
        let t = s.trim();
        let period = if let Some(iso) = t.strip_prefix('P').or_else(|| t.strip_prefix('p')) {
            Self::parse_iso(iso).ok_or_else(bad)?
        } else {
            let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            let (num, unit) = t.split_at(split);
            let n: u32 = num.parse().map_err(|_| bad())?;
            match unit {
                "d" => Self::new(0, 0, n),
                "w" => Self::new(0, 0, n.checked_mul(7).ok_or_else(bad)?),
                "mo" => Self::new(0, n, 0),
                "y" => Self::new(n, 0, 0),
                _ => return Err(bad()),
            }
        };
        // Keep deadlines inside chrono's calendar: a thousand years is plenty for a policy.
        if period.years > 1000 || period.months > 12_000 || period.days > 400_000 {
            return Err(format!("`{s}` is longer than 1000 years"));
        }
        Ok(period)
    }

    fn parse_iso(s: &str) -> Option<Self> {
        let (mut years, mut months, mut days) = (0u32, 0u32, 0u32);
        let mut num = String::new();
        let mut seen = false;
        for c in s.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: u32 = num.parse().ok()?;
            num.clear();
            seen = true;
            match c.to_ascii_uppercase() {
                'Y' => years = years.checked_add(n)?,
                'M' => months = months.checked_add(n)?,
                'W' => days = days.checked_add(n.checked_mul(7)?)?,
                'D' => days = days.checked_add(n)?,
                _ => return None,
            }
        }
        (seen && num.is_empty()).then_some(Self::new(years, months, days))
    }

    pub const fn new(years: u32, months: u32, days: u32) -> Self {
        Self {
            years,
            months,
            days,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.years == 0 && self.months == 0 && self.days == 0
    }

    /// The deadline for data whose retention starts at `start`. Months and years end on
    /// the same day of the month, or the month's last day when that day does not exist.
    pub fn after(&self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        start
            .checked_add_months(Months::new(
                self.years.checked_mul(12)?.checked_add(self.months)?,
            ))?
            .checked_add_days(Days::new(u64::from(self.days)))
    }

    /// The latest start whose deadline has passed at `end`: data from before it is due.
    pub fn before(&self, end: DateTime<Utc>) -> Option<DateTime<Utc>> {
        end.checked_sub_months(Months::new(
            self.years.checked_mul(12)?.checked_add(self.months)?,
        ))?
        .checked_sub_days(Days::new(u64::from(self.days)))
    }

    /// Human wording: "8 years", "90 days", "1 year and 6 months".
    pub fn describe(&self) -> String {
        let unit = |n: u32, one: &str, many: &str| match n {
            0 => None,
            1 => Some(format!("1 {one}")),
            n => Some(format!("{n} {many}")),
        };
        let parts: Vec<String> = [
            unit(self.years, "year", "years"),
            unit(self.months, "month", "months"),
            unit(self.days, "day", "days"),
        ]
        .into_iter()
        .flatten()
        .collect();
        match parts.len() {
            0 => "0 days".to_owned(),
            1 => parts[0].clone(),
            _ => {
                let (last, rest) = parts.split_last().unwrap_or((&parts[0], &[]));
                format!("{} and {last}", rest.join(", "))
            }
        }
    }
}

impl TryFrom<String> for RetentionPeriod {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<RetentionPeriod> for String {
    fn from(p: RetentionPeriod) -> String {
        if p.is_zero() {
            return "0d".to_owned();
        }
        let mut s = "P".to_owned();
        for (n, u) in [(p.years, 'Y'), (p.months, 'M'), (p.days, 'D')] {
            if n > 0 {
                s.push_str(&format!("{n}{u}"));
            }
        }
        s
    }
}

/// A calendar date written `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Date(NaiveDate);

impl Date {
    pub fn parse(s: &str) -> Result<Self, String> {
        NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map(Self)
            .map_err(|_| format!("`{s}` is not a date: write YYYY-MM-DD"))
    }

    pub fn naive(&self) -> NaiveDate {
        self.0
    }

    /// The end of this day, UTC: a hold `until: 2027-12-31` still holds on that day.
    pub fn end_of_day(&self) -> DateTime<Utc> {
        let next = self.0.succ_opt().unwrap_or(self.0);
        next.and_hms_opt(0, 0, 0)
            .map(|d| d.and_utc())
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    pub fn year(&self) -> i32 {
        self.0.year()
    }
}

impl TryFrom<String> for Date {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<Date> for String {
    fn from(d: Date) -> String {
        d.0.format("%Y-%m-%d").to_string()
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

/// Reads a point in time as databases write it: RFC 3339, `YYYY-MM-DD HH:MM:SS[.f][+zz]`
/// (taken as UTC without an offset), a bare date, or a Unix time: in seconds from 10^8
/// (1973) on, in milliseconds from 10^11 on. Smaller numbers (0 for "not yet", a date
/// written as digits) name no time, as retention reads them.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    let n: f64 = s.parse().ok()?;
    if n >= 1e11 {
        DateTime::from_timestamp_millis(n as i64)
    } else if n >= 1e8 {
        DateTime::from_timestamp(n as i64, 0)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_in_every_database_dialect() {
        let t = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
        for s in [
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:00:00.000000Z",
            "2026-03-01 10:00:00",
            "2026-03-01 10:00:00+00",
            "2026-03-01 11:00:00+01:00",
            "2026-03-01 10:00:00.000",
            "1772359200",
        ] {
            assert_eq!(parse_timestamp(s), Some(t), "{s}");
        }
        assert_eq!(
            parse_timestamp("2026-03-01"),
            Some(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap())
        );
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp("1772359200000"), Some(t));
        assert_eq!(parse_timestamp("1772359200.0"), Some(t));
        for not_a_time in ["0", "20260301", "-5", "NaN"] {
            assert_eq!(parse_timestamp(not_a_time), None, "{not_a_time}");
        }
    }

    #[test]
    fn durations_in_both_notations() {
        assert_eq!(
            RetentionPeriod::parse("90d"),
            Ok(RetentionPeriod::new(0, 0, 90))
        );
        assert_eq!(
            RetentionPeriod::parse("12w"),
            Ok(RetentionPeriod::new(0, 0, 84))
        );
        assert_eq!(
            RetentionPeriod::parse("6mo"),
            Ok(RetentionPeriod::new(0, 6, 0))
        );
        assert_eq!(
            RetentionPeriod::parse("8y"),
            Ok(RetentionPeriod::new(8, 0, 0))
        );
        assert_eq!(
            RetentionPeriod::parse("P90D"),
            Ok(RetentionPeriod::new(0, 0, 90))
        );
        assert_eq!(
            RetentionPeriod::parse("P1Y6M"),
            Ok(RetentionPeriod::new(1, 6, 0))
        );
        assert_eq!(
            RetentionPeriod::parse("P2W"),
            Ok(RetentionPeriod::new(0, 0, 14))
        );
        assert!(RetentionPeriod::parse("0d").unwrap().is_zero());
        for bad in [
            "",
            "90",
            "d",
            "8 years",
            "P",
            "P5X",
            "-3d",
            "99999999999d",
            "5000y",
            "P1Y2",
        ] {
            assert!(RetentionPeriod::parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(RetentionPeriod::parse("8y").unwrap().describe(), "8 years");
        assert_eq!(RetentionPeriod::parse("90d").unwrap().describe(), "90 days");
        assert_eq!(
            RetentionPeriod::parse("P1Y1D").unwrap().describe(),
            "1 year and 1 day"
        );
        assert_eq!(String::from(RetentionPeriod::parse("6mo").unwrap()), "P6M");
    }

    #[test]
    fn month_arithmetic_clamps_to_the_last_day() {
        let jan31 = Utc.with_ymd_and_hms(2027, 1, 31, 12, 0, 0).unwrap();
        let one_month = RetentionPeriod::parse("1mo").unwrap();
        assert_eq!(
            one_month.after(jan31).unwrap(),
            Utc.with_ymd_and_hms(2027, 2, 28, 12, 0, 0).unwrap()
        );
        let leap = Utc.with_ymd_and_hms(2028, 2, 29, 0, 0, 0).unwrap();
        assert_eq!(
            RetentionPeriod::parse("1y").unwrap().after(leap).unwrap(),
            Utc.with_ymd_and_hms(2029, 2, 28, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn countries_know_the_eea_and_adequacy() {
        let de = CountryCode::parse("de").unwrap();
        assert_eq!(de.as_str(), "DE");
        assert!(de.in_eea());
        let us = CountryCode::parse("US").unwrap();
        assert!(!us.in_eea() && !us.has_adequacy_decision());
        assert!(CountryCode::parse("CH").unwrap().has_adequacy_decision());
        assert!(CountryCode::parse("XX").is_err());
        assert!(CountryCode::parse("USA").is_err());
    }

    #[test]
    fn identifiers_and_emails() {
        assert!(Identifier::parse("page_views").is_ok());
        for bad in ["", "1abc", "users;drop", "a b", "\"x\"", "users.id"] {
            assert!(Identifier::parse(bad).is_err(), "{bad}");
        }
        assert!(Email::parse("privacy@example.com").is_ok());
        for bad in ["", "a", "a@b", "@b.com", "a @b.com", "a@-b.com", "a@b..com"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert!(CategoryKey::parse("user.contact.email").is_ok());
        assert!(CategoryKey::parse("User.Email").is_err());
        assert!(CategoryKey::parse("user..x").is_err());
        assert_eq!(LegalBasis::parse("contract"), Ok(LegalBasis::Contract));
        assert!(LegalBasis::parse("because").is_err());
    }
}

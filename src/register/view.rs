//! Wording shared by the notice, the register and (later) the access package: the same
//! policy rule always reads the same way wherever it is shown.

use crate::policy::{CountryCode, Policy, Processor, Purpose};

/// "8 years after collection, where the law requires it".
pub fn retention_text(purpose: &Purpose) -> String {
    match &purpose.retention {
        None => "not stated".to_owned(),
        Some(r) => {
            let mut s = r.describe();
            if r.basis == Some(crate::policy::LegalBasis::LegalObligation) {
                s.push_str(", where the law requires it");
            }
            s
        }
    }
}

/// `(name, key)` of each category a purpose declares, by their human names.
pub fn category_names<'a>(policy: &'a Policy, purpose: &'a Purpose) -> Vec<(&'a str, &'a str)> {
    purpose
        .categories
        .iter()
        .map(|c| (policy.taxonomy.name(c.as_str()), c.as_str()))
        .collect()
}

/// One line per third country a recipient sends data to: "United States: Standard
/// Contractual Clauses (Art. 46(2)(c))".
pub fn transfers_of(p: &Processor) -> Vec<String> {
    p.third_countries()
        .into_iter()
        .map(|(country, safeguard)| {
            let how = match safeguard {
                Some(s) => s.label(),
                None if country.has_adequacy_decision() => "Adequacy decision (Art. 45)",
                None => "no safeguard declared",
            };
            format!("{}: {how}", country_name(country))
        })
        .collect()
}

/// The recipients of a purpose that exist in the policy.
pub fn recipients<'a>(policy: &'a Policy, purpose: &'a Purpose) -> Vec<&'a Processor> {
    purpose
        .recipients
        .iter()
        .filter_map(|r| policy.processor(r.as_str()))
        .collect()
}

const COUNTRY_NAMES: &[(&str, &str)] = &[
    ("AT", "Austria"),
    ("BE", "Belgium"),
    ("BG", "Bulgaria"),
    ("HR", "Croatia"),
    ("CY", "Cyprus"),
    ("CZ", "Czechia"),
    ("DK", "Denmark"),
    ("EE", "Estonia"),
    ("FI", "Finland"),
    ("FR", "France"),
    ("DE", "Germany"),
    ("GR", "Greece"),
    ("HU", "Hungary"),
    ("IE", "Ireland"),
    ("IT", "Italy"),
    ("LV", "Latvia"),
    ("LT", "Lithuania"),
    ("LU", "Luxembourg"),
    ("MT", "Malta"),
    ("NL", "the Netherlands"),
    ("PL", "Poland"),
    ("PT", "Portugal"),
    ("RO", "Romania"),
    ("SK", "Slovakia"),
    ("SI", "Slovenia"),
    ("ES", "Spain"),
    ("SE", "Sweden"),
    ("IS", "Iceland"),
    ("LI", "Liechtenstein"),
    ("NO", "Norway"),
    ("CH", "Switzerland"),
    ("GB", "the United Kingdom"),
    ("US", "the United States"),
    ("CA", "Canada"),
    ("JP", "Japan"),
    ("KR", "South Korea"),
    ("IL", "Israel"),
    ("NZ", "New Zealand"),
    ("AR", "Argentina"),
    ("UY", "Uruguay"),
    ("AD", "Andorra"),
    ("FO", "the Faroe Islands"),
    ("GG", "Guernsey"),
    ("IM", "the Isle of Man"),
    ("JE", "Jersey"),
    ("IN", "India"),
    ("AU", "Australia"),
    ("SG", "Singapore"),
    ("BR", "Brazil"),
    ("CN", "China"),
    ("UA", "Ukraine"),
    ("RS", "Serbia"),
    ("TR", "Türkiye"),
    ("PH", "the Philippines"),
    ("ZA", "South Africa"),
    ("MX", "Mexico"),
    ("AE", "the United Arab Emirates"),
    ("HK", "Hong Kong"),
];

/// The English name of a country, or its code when the table does not know it.
pub fn country_name(code: &CountryCode) -> String {
    COUNTRY_NAMES
        .iter()
        .find(|(c, _)| *c == code.as_str())
        .map_or_else(|| code.to_string(), |(_, n)| (*n).to_owned())
}

/// Descriptions of all our measures, in key order.
pub fn measures_text(policy: &Policy) -> Vec<String> {
    policy
        .measures
        .iter()
        .map(|(k, v)| {
            match policy
                .catalogue
                .get(k)
                .and_then(|p| Some((p, p.parse(v.as_scalar()?).ok()?)))
            {
                Some((p, value)) => p.state(&value),
                None => format!("{}: {}", k.replace('_', " "), **v),
            }
        })
        .collect()
}

//! The built-in data category taxonomy. Keys follow fideslang (`user.contact.email`), so
//! Fides dataset manifests and lethe policies speak the same vocabulary. Policies extend
//! it with `categories:`; a custom category inherits "special" from its parent.

use std::collections::BTreeMap;

use super::types::CategoryKey;

/// One category as the notice and the register show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CategoryInfo {
    pub key: CategoryKey,
    pub name: String,
    /// A special category of Art. 9(1) (or criminal data, Art. 10): needs a 9(2) condition.
    pub special: bool,
    /// Not personal data at all (`system.*`): allowed in Fides manifests, never mapped.
    pub personal: bool,
}

/// `(key, human name, special)`; `!` marks special categories (Art. 9 / Art. 10).
const BUILT_IN: &[(&str, &str)] = &[
    ("user", "User data"),
    ("user.account", "Account details"),
    ("user.account.settings", "Account settings"),
    ("user.account.username", "Username"),
    ("user.authorization", "Authorization data"),
    ("user.authorization.credentials", "Credentials"),
    ("user.authorization.passwords", "Passwords"),
    ("user.authorization.biometric", "!Biometric credentials"),
    ("user.behavior", "Behavioural data"),
    ("user.behavior.browsing_history", "Browsing history"),
    ("user.behavior.media_consumption", "Media consumption"),
    ("user.behavior.purchase_history", "Purchase history"),
    ("user.behavior.search_history", "Search history"),
    ("user.biometric", "!Biometric data"),
    ("user.biometric.fingerprint", "!Fingerprint"),
    ("user.biometric.retinal", "!Retinal scan"),
    ("user.biometric.voice", "!Voice recording"),
    ("user.biometric.health", "!Biometric health data"),
    ("user.childrens", "Children's data"),
    ("user.contact", "Contact details"),
    ("user.contact.address", "Postal address"),
    ("user.contact.address.city", "City"),
    ("user.contact.address.country", "Country"),
    ("user.contact.address.postal_code", "Postal code"),
    ("user.contact.address.state", "State or region"),
    ("user.contact.address.street", "Street address"),
    ("user.contact.email", "Email address"),
    ("user.contact.fax_number", "Fax number"),
    ("user.contact.phone_number", "Phone number"),
    ("user.contact.url", "Web address"),
    ("user.content", "Content you provide"),
    ("user.content.private", "Private content"),
    ("user.content.public", "Public content"),
    ("user.content.self_image", "Photos of you"),
    ("user.criminal_history", "!Criminal history"),
    ("user.demographic", "Demographic data"),
    ("user.demographic.age_range", "Age range"),
    ("user.demographic.date_of_birth", "Date of birth"),
    ("user.demographic.gender", "Gender"),
    ("user.demographic.language", "Language"),
    ("user.demographic.marital_status", "Marital status"),
    ("user.demographic.political_opinion", "!Political opinions"),
    ("user.demographic.profile", "Profile data"),
    (
        "user.demographic.race_ethnicity",
        "!Racial or ethnic origin",
    ),
    (
        "user.demographic.religious_belief",
        "!Religious or philosophical beliefs",
    ),
    (
        "user.demographic.sexual_orientation",
        "!Sex life or sexual orientation",
    ),
    ("user.device", "Device data"),
    ("user.device.cookie", "Cookies"),
    ("user.device.cookie_id", "Cookie identifiers"),
    ("user.device.device_id", "Device identifiers"),
    ("user.device.ip_address", "IP address"),
    ("user.device.telemetry", "Device telemetry"),
    ("user.financial", "Billing and payment information"),
    ("user.financial.bank_account", "Bank account details"),
    ("user.financial.credit_card", "Payment card details"),
    ("user.government_id", "Government identifiers"),
    ("user.government_id.birth_certificate", "Birth certificate"),
    (
        "user.government_id.drivers_license_number",
        "Driving licence number",
    ),
    ("user.government_id.immigration", "Immigration documents"),
    (
        "user.government_id.national_identification_number",
        "National identification number",
    ),
    ("user.government_id.passport_number", "Passport number"),
    (
        "user.government_id.vehicle_registration",
        "Vehicle registration",
    ),
    ("user.health_and_medical", "!Health data"),
    ("user.health_and_medical.genetic", "!Genetic data"),
    (
        "user.health_and_medical.insurance_beneficiary_id",
        "!Health insurance identifier",
    ),
    (
        "user.health_and_medical.record_id",
        "!Medical record identifier",
    ),
    ("user.job_title", "Job title"),
    ("user.location", "Location data"),
    ("user.location.imprecise", "Approximate location"),
    ("user.location.precise", "Precise location"),
    ("user.name", "Name"),
    ("user.name.first", "First name"),
    ("user.name.last", "Last name"),
    ("user.privacy_preferences", "Privacy preferences"),
    ("user.sensor", "Sensor data"),
    ("user.social", "Social media data"),
    ("user.union_membership", "!Trade union membership"),
    ("user.unique_id", "Unique identifiers"),
    ("user.unique_id.pseudonymous", "Pseudonymous identifiers"),
    ("user.workplace", "Workplace"),
    ("system", "#System data"),
    ("system.authentication", "#Authentication data of systems"),
    ("system.operations", "#Operational data"),
];

/// The taxonomy in force: built-ins plus the policy's custom categories.
#[derive(Debug, Clone, Default)]
pub struct Taxonomy {
    entries: BTreeMap<String, CategoryInfo>,
}

impl Taxonomy {
    pub fn built_in() -> Self {
        let mut entries = BTreeMap::new();
        for (key, label) in BUILT_IN {
            let (special, personal, name) = match (label.strip_prefix('!'), label.strip_prefix('#'))
            {
                (Some(n), _) => (true, true, n),
                (_, Some(n)) => (false, false, n),
                _ => (false, true, *label),
            };
            if let Ok(key) = CategoryKey::parse(key) {
                entries.insert(
                    key.to_string(),
                    CategoryInfo {
                        key,
                        name: name.to_owned(),
                        special,
                        personal,
                    },
                );
            }
        }
        Self { entries }
    }

    /// Adds a custom category; it inherits `special` and `personal` from its parent.
    pub fn extend(&mut self, key: CategoryKey, name: String, special: Option<bool>) {
        let parent = key.parent().and_then(|p| self.entries.get(p));
        let inherited_special = parent.is_some_and(|p| p.special);
        let personal = parent.is_none_or(|p| p.personal);
        self.entries.insert(
            key.to_string(),
            CategoryInfo {
                key,
                name,
                special: special.unwrap_or(inherited_special),
                personal,
            },
        );
    }

    pub fn get(&self, key: &str) -> Option<&CategoryInfo> {
        self.entries.get(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The human name, or the key itself for an unknown one.
    pub fn name<'a>(&'a self, key: &'a str) -> &'a str {
        self.entries.get(key).map_or(key, |c| c.name.as_str())
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_cover_the_user_tree_and_flag_special_categories() {
        let t = Taxonomy::built_in();
        for key in [
            "user.contact.email",
            "user.name",
            "user.financial",
            "user.device.ip_address",
            "user.location.precise",
            "user.behavior.browsing_history",
            "user.content",
            "user.demographic.date_of_birth",
            "user.government_id.passport_number",
        ] {
            let c = t.get(key).unwrap();
            assert!(!c.special && c.personal, "{key}");
        }
        for key in [
            "user.health_and_medical",
            "user.biometric.fingerprint",
            "user.demographic.race_ethnicity",
            "user.union_membership",
        ] {
            assert!(t.get(key).unwrap().special, "{key}");
        }
        assert!(!t.get("system.operations").unwrap().personal);
        assert_eq!(t.name("user.contact.email"), "Email address");
    }

    #[test]
    fn custom_categories_inherit_from_their_parent() {
        let mut t = Taxonomy::built_in();
        t.extend(
            CategoryKey::parse("user.health_and_medical.allergies").unwrap(),
            "Allergies".into(),
            None,
        );
        t.extend(
            CategoryKey::parse("user.content.comment").unwrap(),
            "Comments".into(),
            None,
        );
        assert!(t.get("user.health_and_medical.allergies").unwrap().special);
        assert!(!t.get("user.content.comment").unwrap().special);
        assert_eq!(t.name("user.content.comment"), "Comments");
    }
}

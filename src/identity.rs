//! Who a request or a lookup is about: an identity such as `email=alice@example.com`.
//! At the bottom of the layers: the policy, the store, the sources and the audit log all
//! name people by it.

/// How a person is looked up: `email=alice@example.com`, `user_id=42`.
///
/// ```
/// use lethe::audit::Identity;
///
/// let id = Identity::parse("email=Alice@Example.com").unwrap();
/// assert_eq!((id.kind(), id.value()), ("email", "alice@example.com"));
/// // Personal data never reaches a log line through Debug.
/// assert_eq!(format!("{id:?}"), "Identity(email=<redacted>)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    kind: String,
    value: String,
    /// As given, for matching stored values that kept their case.
    original: String,
}

impl Identity {
    /// Parses `kind=value`; e-mail addresses are compared case-insensitively.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, value) = s.split_once('=').ok_or_else(|| {
            "an identity is written kind=value, e.g. email=alice@example.com".to_owned()
        })?;
        let kind = kind.trim().to_ascii_lowercase();
        let value = value.trim();
        if kind.is_empty()
            || value.is_empty()
            || !kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err("an identity is written kind=value, e.g. email=alice@example.com".into());
        }
        let original = value.to_owned();
        let value = if kind == "email" {
            crate::policy::Email::parse(value)
                .map_err(|_| "the e-mail address is not valid".to_owned())?;
            value.to_lowercase()
        } else {
            value.to_owned()
        };
        Ok(Self {
            kind,
            value,
            original,
        })
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// The values to look for in a database: the normalised one and the one as given.
    pub fn variants(&self) -> Vec<String> {
        let mut v = vec![self.value.clone()];
        if self.original != self.value {
            v.push(self.original.clone());
        }
        v
    }

    /// The normalised form the subject index is keyed on.
    pub(crate) fn canonical(&self) -> String {
        format!("{}={}", self.kind, self.value)
    }
}

/// Identities are personal data: their Debug output shows the kind only.
impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({}=<redacted>)", self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_normalise_and_never_print() {
        let a = Identity::parse("email= Alice@Example.COM ").unwrap();
        assert_eq!(a.canonical(), "email=alice@example.com");
        assert_eq!(format!("{a:?}"), "Identity(email=<redacted>)");
        assert!(Identity::parse("alice@example.com").is_err());
        assert!(Identity::parse("email=not-an-address").is_err());
        assert_eq!(Identity::parse("user_id=42").unwrap().value(), "42");
    }
}

//! Printing what may hold a secret: at the bottom of the layers, for the store, the
//! sources and the mailer alike.

/// A URL fit to print: the password of its user part and the value of every query
/// parameter that carries a secret (`password`, `sslpassword`, `pass`, `pwd`, `secret`,
/// `token`, `key`... in any case, percent-encoded or not) replaced by `***`. Anything
/// that does not parse as a URL prints as a fixed text, never as itself.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut u) = url::Url::parse(raw) else {
        return "<unparsable URL>".to_owned();
    };
    if u.password().is_some() {
        // Only a URL that cannot have a password fails here, and it has none.
        let _ = u.set_password(Some("***"));
    }
    let Some(query) = u.query() else {
        return u.to_string();
    };
    let secret = |name: &str| {
        let n = name.to_ascii_lowercase();
        [
            "pass",
            "pwd",
            "secret",
            "token",
            "key",
            "credential",
            "auth",
        ]
        .iter()
        .any(|w| n.contains(w))
    };
    if !url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| secret(&k)) {
        return u.to_string();
    }
    // Rewritten pair by pair, so that names and the other values print as given.
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| {
            let (name, _) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded: String = url::form_urlencoded::parse(name.as_bytes())
                .map(|(k, _)| k.into_owned())
                .collect();
            if secret(&decoded) {
                format!("{name}=***")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    u.set_query(Some(&redacted.join("&")));
    u.to_string()
}

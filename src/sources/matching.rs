//! How a stored value is matched against an identity a request gives. Pure.
//!
//! The rule, the same on every database and collation: two e-mail addresses are the same
//! when their Unicode lowercase mappings (`str::to_lowercase`, no locale) are equal, and
//! only then. Nothing else is folded: accents, trailing spaces and Unicode normalisation
//! forms all count, so `josé@` never matches `jose@` and `a@x ` never matches `a@x`.
//!
//! A database is asked for a superset of the matching rows, in a form its index can
//! serve (`lower(column) IN (...)`; on MySQL/MariaDB, a case-blind column compared as it
//! is), and every row it returns is checked against the rule before it counts. `lower()`
//! folds only ASCII letters on SQLite and under PostgreSQL's `C` collation, so the values
//! asked for spell each non-ASCII letter in every case that lowercases to it; an address
//! with more such letters than [`MAX_VARIANTS`] allows is asked for with `LIKE`, each
//! non-ASCII letter a wildcard.

/// The largest number of spellings one address is asked for with.
pub const MAX_VARIANTS: usize = 64;

/// The folded form two matching values share.
pub fn fold(value: &str) -> String {
    value.to_lowercase()
}

/// Whether a stored value matches an identity already folded with [`fold`].
pub fn matches_folded(stored: &str, folded: &str) -> bool {
    fold(stored) == folded
}

/// Whether two key values read as text are the same key: equal text, or the same number
/// written differently (`7` and `7.0` from columns of different types).
pub fn same_key(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.trim().parse::<i128>(), b.trim().parse::<i128>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => matches!((a.trim().parse::<f64>(), b.trim().parse::<f64>()), (Ok(x), Ok(y)) if x == y),
    }
}

/// Every character whose lowercase mapping is exactly `c`, `c` included.
fn spellings(c: char) -> Vec<char> {
    let mut out = vec![c];
    if c.is_ascii() {
        // SQL's lower() folds ASCII itself.
        return out;
    }
    for u in c.to_uppercase().chain(titlecase_candidates(c)) {
        let mut l = u.to_lowercase();
        if l.next() == Some(c) && l.next().is_none() && !out.contains(&u) {
            out.push(u);
        }
    }
    out
}

/// Letters whose uppercase is not the only other spelling: ǅ (titlecase) and ẞ (capital
/// sharp s, whose lowercase is ß while ß uppercases to "SS").
fn titlecase_candidates(c: char) -> impl Iterator<Item = char> {
    const EXTRA: &[(char, char)] = &[('ß', 'ẞ'), ('ǆ', 'ǅ'), ('ǉ', 'ǈ'), ('ǌ', 'ǋ'), ('ǳ', 'ǲ')];
    EXTRA.iter().filter(move |(l, _)| *l == c).map(|(_, u)| *u)
}

/// The spellings to ask the database for, after its `lower()`: `None` when there would be
/// more than [`MAX_VARIANTS`] (use [`like_pattern`] then).
pub fn variants(folded: &str) -> Option<Vec<String>> {
    let mut out = vec![String::new()];
    for c in folded.chars() {
        let options = spellings(c);
        if out.len() * options.len() > MAX_VARIANTS {
            return None;
        }
        out = out
            .iter()
            .flat_map(|prefix| {
                options.iter().map(move |o| {
                    let mut s = prefix.clone();
                    s.push(*o);
                    s
                })
            })
            .collect();
    }
    Some(out)
}

/// A `LIKE` pattern (escape character `!`) matching every spelling: ASCII as it is,
/// each non-ASCII character any one character.
pub fn like_pattern(folded: &str) -> String {
    let mut p = String::with_capacity(folded.len());
    for c in folded.chars() {
        match c {
            '!' | '%' | '_' => {
                p.push('!');
                p.push(c);
            }
            c if c.is_ascii() => p.push(c),
            _ => p.push('_'),
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_case_is_folded() {
        assert!(matches_folded("Éva@Example.COM", &fold("éva@example.com")));
        assert!(matches_folded("STRASSE@x.de", &fold("strasse@x.de")));
        assert!(!matches_folded("jose@x.org", &fold("josé@x.org")));
        assert!(!matches_folded("jose@x.org ", &fold("jose@x.org")));
        assert!(!matches_folded("strasse@x.de", &fold("straße@x.de")));
        // Composed and decomposed é differ.
        assert!(!matches_folded(
            "jose\u{301}@x.org",
            &fold("jos\u{e9}@x.org")
        ));
    }

    #[test]
    fn variants_spell_every_case_of_non_ascii_letters() {
        let v = variants(&fold("ÉvA@x")).unwrap();
        assert_eq!(v, ["éva@x", "Éva@x"]);
        let v = variants("ß@x").unwrap();
        assert!(v.contains(&"ẞ@x".to_owned()), "{v:?}");
        // Each variant folds back to the address.
        for s in variants(&fold("Ünïcödé@x")).unwrap() {
            assert_eq!(fold(&s), fold("Ünïcödé@x"));
        }
        assert_eq!(variants(&"é".repeat(7)), None);
        assert_eq!(like_pattern("a_b%é!@x"), "a!_b!%_!!@x");
    }

    #[test]
    fn keys_compare_as_text_or_numbers() {
        assert!(same_key("7", "7"));
        assert!(same_key("7", "7.0"));
        assert!(!same_key("7", "07x"));
        assert!(!same_key("abc", "ABC"));
        assert!(!same_key("abc", "abc "));
    }
}

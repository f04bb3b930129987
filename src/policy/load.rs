//! Reading `policies/**/*.yaml` into the model. Each file is parsed into a tree that keeps
//! positions; each list item is deserialised on its own, so one broken item yields one
//! diagnostic and the others are still checked.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use marked_yaml::{LoadError, LoaderOptions, Node, Span, Spanned};
use serde::de::DeserializeOwned;

use super::diagnostic::{Diagnostics, closest};
use super::model::{Controller, Measures};
use super::types::Id;
use super::{Policy, fides};

pub const TOP_LEVEL_KEYS: &[&str] = &[
    "controller",
    "categories",
    "subjects",
    "purposes",
    "processors",
    "systems",
    "holds",
    "measures",
    "agreements",
    "controls",
];

/// Files larger than this are refused: a policy is text written by people.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Deeper nesting than this is no policy and would only strain the parser.
const MAX_NESTING: usize = 64;

/// What the loader gathers before validation.
#[derive(Default)]
pub struct Raw {
    pub policy: Policy,
    /// Ids of items that failed to parse: references to them are not reported again.
    pub broken_ids: BTreeSet<String>,
}

/// Every `.yaml`/`.yml` file under `dir`, sorted, skipping hidden entries.
pub fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The ids a file names (`id: x`, `- id: x`, `{ id: x, ... }`), read as plain text: for a
/// file that does not parse, what it meant to declare.
pub fn ids_in(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut ids = BTreeSet::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("id:") {
            let before = rest[..at].chars().last();
            rest = &rest[at + 3..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `legal_id:`, not `id:`
            }
            let id: String = rest
                .trim_start()
                .trim_start_matches(['"', '\''])
                .chars()
                .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
                .collect();
            if !id.is_empty() {
                ids.insert(id);
            }
        }
    }
    ids
}

/// Reads and parses one file; problems become diagnostics, `None` means nothing usable.
pub fn parse_file(path: &Path, diags: &mut Diagnostics) -> Option<(usize, Node, String)> {
    let source = diags.add_file(path);
    let here = Span::new_start(marked_yaml::Marker::new(source, 0, 1, 1));
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > MAX_FILE_BYTES {
        diags
            .error(
                &here,
                "file",
                format!("file is larger than {MAX_FILE_BYTES} bytes"),
            )
            .hint("split the policy into several files");
        return None;
    }
    let text = match std::fs::read(path).map(String::from_utf8) {
        Ok(Ok(text)) => text,
        Ok(Err(_)) => {
            diags.error(&here, "file", "file is not valid UTF-8");
            return None;
        }
        Err(e) => {
            diags.error(&here, "file", format!("cannot read file: {e}"));
            return None;
        }
    };
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
    {
        return None; // an empty file declares nothing
    }
    if let Some(at) = too_deep(&text) {
        let span = Span::new_start(marked_yaml::Marker::new(source, 0, at, 1));
        diags.error(
            &span,
            "file",
            format!("nesting deeper than {MAX_NESTING} levels"),
        );
        return None;
    }
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .toplevel_mapping();
    match marked_yaml::parse_yaml_with_options(source, &text, options) {
        Ok(mut node) => {
            strip_nulls(&mut node);
            Some((source, node, text))
        }
        Err(e) => {
            report_load_error(source, &e, diags);
            None
        }
    }
}

/// The line where flow brackets nest deeper than [`MAX_NESTING`], if they do.
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        if indent / 2 > MAX_NESTING {
            return Some(n + 1);
        }
        for c in line.chars() {
            match c {
                '[' | '{' => depth += 1,
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > MAX_NESTING {
                return Some(n + 1);
            }
        }
    }
    None
}

fn report_load_error(source: usize, e: &LoadError, diags: &mut Diagnostics) {
    let (marker, message, hint) = match e {
        LoadError::TopLevelMustBeMapping(m) => (
            Some(*m),
            "the file must be a mapping of top-level keys".to_owned(),
            Some(format!("top-level keys are: {}", TOP_LEVEL_KEYS.join(", "))),
        ),
        LoadError::TopLevelMustBeSequence(m) => {
            (Some(*m), "unexpected top-level sequence".into(), None)
        }
        LoadError::UnexpectedAnchor(m) => (
            Some(*m),
            "YAML anchors and aliases are not supported".into(),
            Some("write the value out in full".to_owned()),
        ),
        LoadError::MappingKeyMustBeScalar(m) => {
            (Some(*m), "mapping keys must be plain values".into(), None)
        }
        LoadError::UnexpectedTag(m) => (
            Some(*m),
            "YAML tags (`!tag`) are not supported".into(),
            None,
        ),
        LoadError::ScanError(m, err) => (
            Some(*m),
            format!("YAML syntax error: {}", scan_message(err)),
            None,
        ),
        LoadError::DuplicateKey(inner) => {
            let first = inner
                .prev_key
                .span()
                .start()
                .map_or_else(String::new, |m| format!(" (first at line {})", m.line()));
            (
                inner.key.span().start().copied(),
                format!("duplicate key `{}`{first}", inner.key.as_str()),
                Some("a key may appear once per mapping".to_owned()),
            )
        }
    };
    let marker = marker.unwrap_or_else(|| marked_yaml::Marker::new(source, 0, 1, 1));
    let span = Span::new_start(marker);
    let d = diags.error(&span, "yaml", message);
    if let Some(h) = hint {
        d.hint(h);
    }
}

fn scan_message(err: &impl std::fmt::Display) -> String {
    // The scanner's own text ends with its position, which we already report.
    let s = err.to_string();
    match s.find(" at byte ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// YAML `null`, `~` and empty values mean "not given": drop them so defaults apply.
fn strip_nulls(node: &mut Node) {
    match node {
        Node::Mapping(map) => {
            let nulls: Vec<_> = map
                .iter()
                .filter(|(_, v)| v.as_scalar().is_some_and(is_null))
                .map(|(k, _)| k.clone())
                .collect();
            for k in nulls {
                map.remove(&k);
            }
            for (_, v) in map.iter_mut() {
                strip_nulls(v);
            }
        }
        Node::Sequence(seq) => seq.iter_mut().for_each(strip_nulls),
        Node::Scalar(_) => {}
    }
}

fn is_null(s: &marked_yaml::types::MarkedScalarNode) -> bool {
    s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

/// Deserialises `node`, reporting every failure under `key` at the right position.
///
/// serde stops at the first error, so after each error the offending entry is removed
/// from a copy and decoding is tried again: one item with three mistakes yields three
/// diagnostics. An item that needed more than unknown keys removed is still rejected.
pub fn decode<T: DeserializeOwned>(node: &Node, key: &str, diags: &mut Diagnostics) -> Option<T> {
    let mut work = node.clone();
    let mut removed: Vec<String> = Vec::new();
    let mut only_unknown_keys = true;
    for _ in 0..32 {
        let e = match marked_yaml::from_node::<T>(&work) {
            Ok(v) if only_unknown_keys => return Some(v),
            Ok(_) => return None,
            Err(e) => e,
        };
        if let marked_yaml::Error::Other(msg, _) = &*e
            && let Some(field) = msg
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'))
            && removed.iter().any(|r| r == field)
        {
            return None; // we removed that key ourselves: its error is already reported
        }
        let path = e.path().map(str::to_owned);
        let target = path.as_deref().and_then(|p| resolve(&work, p));
        let span = match (&*e, target) {
            (marked_yaml::Error::UnknownFieldError(..), _) | (_, None) => {
                e.start_mark().map(Span::new_start).unwrap_or(*work.span())
            }
            (_, Some(n)) => *n.span(),
        };
        let (message, hint) = describe_decode_error(&e);
        let d = diags.error(&span, key, message);
        if let Some(h) = hint {
            d.hint(h);
        }
        only_unknown_keys &= matches!(&*e, marked_yaml::Error::UnknownFieldError(..));
        let field = match &*e {
            marked_yaml::Error::UnknownFieldError(f, _, _) => {
                // The path points at the map holding the unknown key.
                match path {
                    Some(p) if p == *f || p.ends_with(&format!(".{f}")) => Some(p),
                    Some(p) if !p.is_empty() => Some(format!("{p}.{f}")),
                    _ => Some(f.clone()),
                }
            }
            _ => path,
        };
        match field {
            Some(p) if remove(&mut work, &p) => {
                removed.push(p.rsplit('.').next().unwrap_or(&p).to_owned());
            }
            _ => return None,
        }
    }
    None
}

/// Splits `a.b[2].c` into map keys and sequence indexes.
fn segments(path: &str) -> Vec<Result<&str, usize>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(Ok(&rest[..i]));
            }
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                if let Ok(n) = rest[1..end].parse() {
                    out.push(Err(n));
                }
                rest = &rest[end + 1..];
            }
        } else if !rest.is_empty() {
            out.push(Ok(rest));
        }
    }
    out
}

/// The node at `path`, or the deepest one reached when the path leaves the tree early.
fn resolve<'a>(node: &'a Node, path: &str) -> Option<&'a Node> {
    let mut at = node;
    for seg in segments(path) {
        let next = match seg {
            Ok(k) => at.as_mapping().and_then(|m| m.get_node(k)),
            Err(i) => at.as_sequence().and_then(|s| s.get_node(i)),
        };
        match next {
            Some(n) => at = n,
            None => break,
        }
    }
    Some(at)
}

/// Removes the entry at `path`; false when there is nothing to remove.
fn remove(node: &mut Node, path: &str) -> bool {
    let segs = segments(path);
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut at = node;
    for seg in parents {
        let next = match seg {
            Ok(k) => at.as_mapping_mut().and_then(|m| m.get_mut(*k)),
            Err(i) => at.as_sequence_mut().and_then(|s| s.get_mut(*i)),
        };
        match next {
            Some(n) => at = n,
            None => return false,
        }
    }
    match last {
        Ok(k) => at.as_mapping_mut().is_some_and(|m| m.remove(*k).is_some()),
        Err(i) => match at.as_sequence_mut() {
            Some(s) if *i < s.len() => {
                s.remove(*i);
                true
            }
            _ => false,
        },
    }
}

fn describe_decode_error(e: &marked_yaml::FromNodeError) -> (String, Option<String>) {
    match &**e {
        marked_yaml::Error::UnknownFieldError(field, expected, _) => (
            format!("unknown key `{field}`"),
            Some(match closest(field, expected.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("expected one of: {}", expected.join(", ")),
            }),
        ),
        marked_yaml::Error::NotBoolean(_) => ("expected true or false".into(), None),
        other => {
            let text = other.to_string();
            // serde's wording for a missing key reads well once the backticks are ours.
            (text.replace("missing field", "missing required key"), None)
        }
    }
}

/// The `id` scalar of a list item, read without deserialising the item.
fn item_id(node: &Node) -> Option<String> {
    node.as_mapping()?
        .get_scalar("id")
        .map(|s| s.as_str().to_owned())
}

/// Merges one parsed file into `raw`.
pub fn merge_file(path: &Path, root: &Node, raw: &mut Raw, diags: &mut Diagnostics) {
    let Some(map) = root.as_mapping() else {
        return;
    };
    if map.get_node("dataset").is_some() {
        return; // a Fides manifest: read when a system names it
    }
    for (key, value) in map.iter() {
        let k = key.as_str();
        match k {
            "controller" => {
                if let Some(c) = decode::<Controller>(value, "controller", diags) {
                    if raw.policy.controller.is_some() {
                        diags
                            .error(key.span(), "controller", "controller is declared twice")
                            .hint("declare the controller in one file");
                    } else {
                        raw.policy.controller = Some(c);
                    }
                }
            }
            "subjects" => {
                if let Some(subjects) = decode::<Vec<Spanned<Id>>>(value, "subjects", diags) {
                    raw.policy.subjects.extend(subjects);
                }
            }
            "measures" => {
                if let Some(m) = decode::<Measures>(value, "measures", diags) {
                    merge_measures(m, value, &mut raw.policy.measures, diags);
                }
            }
            "categories" => decode_items(
                value,
                k,
                diags,
                &mut raw.broken_ids,
                &mut raw.policy.categories,
            ),
            "purposes" => decode_items(
                value,
                k,
                diags,
                &mut raw.broken_ids,
                &mut raw.policy.purposes,
            ),
            "processors" => decode_items(
                value,
                k,
                diags,
                &mut raw.broken_ids,
                &mut raw.policy.processors,
            ),
            "holds" => decode_items(value, k, diags, &mut raw.broken_ids, &mut raw.policy.holds),
            "controls" => decode_items(
                value,
                k,
                diags,
                &mut raw.broken_ids,
                &mut raw.policy.controls,
            ),
            "agreements" => decode_items(
                value,
                k,
                diags,
                &mut raw.broken_ids,
                &mut raw.policy.agreements,
            ),
            "systems" => {
                let start = raw.policy.systems.len();
                decode_items(
                    value,
                    k,
                    diags,
                    &mut raw.broken_ids,
                    &mut raw.policy.systems,
                );
                let base = path.parent().unwrap_or(Path::new("."));
                for system in &mut raw.policy.systems[start..] {
                    fides::import_into(system, base, diags);
                }
            }
            other => {
                diags
                    .error(
                        key.span(),
                        other,
                        format!("unknown top-level key `{other}`"),
                    )
                    .suggest(other, TOP_LEVEL_KEYS.iter().copied());
            }
        }
    }
}

fn decode_items<T: DeserializeOwned>(
    value: &Node,
    key: &str,
    diags: &mut Diagnostics,
    broken: &mut BTreeSet<String>,
    out: &mut Vec<T>,
) {
    let Some(seq) = value.as_sequence() else {
        diags
            .error(value.span(), key, format!("`{key}` must be a list"))
            .hint(format!("write each entry as `- id: ...` under `{key}:`"));
        return;
    };
    for item in seq.iter() {
        let id = item_id(item);
        let path = match &id {
            Some(id) => format!("{key}[{id}]"),
            None => key.to_owned(),
        };
        match decode::<T>(item, &path, diags) {
            Some(v) => out.push(v),
            None => {
                if let Some(id) = id {
                    broken.insert(id);
                }
            }
        }
    }
}

fn merge_measures(new: Measures, node: &Node, into: &mut Measures, diags: &mut Diagnostics) {
    for (k, v) in new {
        let span = node
            .as_mapping()
            .and_then(|m| {
                m.keys()
                    .find(|key| key.as_str() == k)
                    .map(|key| *key.span())
            })
            .unwrap_or(*v.span());
        match into.entry(k) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(v);
            }
            std::collections::btree_map::Entry::Occupied(slot) => {
                diags
                    .error(
                        &span,
                        format!("measures.{}", slot.key()),
                        "measure declared in two files",
                    )
                    .hint("declare each measure once");
            }
        }
    }
}

/// Content hash of the policy set: SHA-256 over each file's relative path and bytes.
pub fn hash_files(dir: &Path, files: &[(PathBuf, String)]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (path, text) in files {
        let rel = path.strip_prefix(dir).unwrap_or(path);
        ctx.update(rel.to_string_lossy().as_bytes());
        ctx.update(&[0]);
        ctx.update(&(text.len() as u64).to_be_bytes());
        ctx.update(text.as_bytes());
    }
    hex::encode(ctx.finish().as_ref())
}

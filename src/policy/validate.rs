//! The rules `lethe check` enforces across the merged policy set. Every rule reports with
//! the position of the value it is about; nothing here stops at the first problem.

use std::collections::{BTreeMap, BTreeSet};

use marked_yaml::{Span, Spanned};

use super::diagnostic::Diagnostics;
use super::model::*;
use super::types::{Direction, Id, TransferSafeguard};
use super::{BUILT_IN_SUBJECTS, Policy, Taxonomy};

/// Art. 28(3) points (a)-(h).
const ART28_CLAUSES: &[&str] = &["a", "b", "c", "d", "e", "f", "g", "h"];

struct Known {
    purposes: BTreeSet<String>,
    processors: BTreeSet<String>,
    subjects: BTreeSet<String>,
    agreements: BTreeSet<String>,
    /// Ids whose definition failed to parse: not reported again as unknown.
    broken: BTreeSet<String>,
}

impl Known {
    fn is_known(set: &BTreeSet<String>, broken: &BTreeSet<String>, id: &str) -> bool {
        set.contains(id) || broken.contains(id)
    }
}

pub fn validate(policy: &mut Policy, broken: &BTreeSet<String>, d: &mut Diagnostics) {
    if policy.controller.is_none() {
        let span = Span::new_start(marked_yaml::Marker::new(0, 0, 1, 1));
        d.error(&span, "controller", "no controller is declared")
            .hint("add `controller: { name, address, contact_email }` to one policy file");
    }
    policy.taxonomy = build_taxonomy(&policy.categories, d);
    duplicates("purposes", policy.purposes.iter().map(|p| &p.id), d);
    duplicates("processors", policy.processors.iter().map(|p| &p.id), d);
    duplicates("systems", policy.systems.iter().map(|s| &s.id), d);
    duplicates("holds", policy.holds.iter().map(|h| &h.id), d);
    duplicates("agreements", policy.agreements.iter().map(|a| &a.id), d);
    duplicates("subjects", policy.subjects.iter(), d);

    let ids = |it: &mut dyn Iterator<Item = &Spanned<Id>>| it.map(|i| i.to_string()).collect();
    let mut subjects: BTreeSet<String> = ids(&mut policy.subjects.iter());
    subjects.extend(BUILT_IN_SUBJECTS.iter().map(|s| s.to_string()));
    let known = Known {
        purposes: ids(&mut policy.purposes.iter().map(|p| &p.id)),
        processors: ids(&mut policy.processors.iter().map(|p| &p.id)),
        agreements: ids(&mut policy.agreements.iter().map(|a| &a.id)),
        subjects,
        broken: broken.clone(),
    };
    for purpose in &policy.purposes {
        check_purpose(purpose, policy, &known, d);
    }
    for processor in &policy.processors {
        check_processor(processor, policy, &known, d);
    }
    for system in &policy.systems {
        check_system(system, policy, &known, d);
    }
    for hold in &policy.holds {
        check_hold(hold, policy, d);
    }
    policy.catalogue = build_catalogue(&policy.controls, d);
    check_measures(&policy.catalogue, &policy.measures, "measures", d);
    for agreement in &policy.agreements {
        check_agreement(agreement, &known, d);
        let key = format!("agreements[{}]", *agreement.id);
        check_measures(
            &policy.catalogue,
            &agreement.requires,
            &format!("{key}.requires"),
            d,
        );
        check_measures(
            &policy.catalogue,
            &agreement.promises,
            &format!("{key}.promises"),
            d,
        );
        if agreement.we_are == super::types::AgreementSide::Processor
            && !agreement.promises.is_empty()
        {
            d.warning(agreement.id.span(), &key, "`promises` on an agreement where we are the processor: what the customer demands of us goes under `requires`");
        }
        if agreement.we_are == super::types::AgreementSide::Controller
            && !agreement.requires.is_empty()
        {
            d.warning(agreement.id.span(), &key, "`requires` on an agreement where we are the controller: what the processor commits to goes under `promises`");
        }
    }
}

fn build_catalogue(
    custom: &[super::controls::CustomControl],
    d: &mut Diagnostics,
) -> super::controls::Catalogue {
    use super::controls::{Catalogue, FAMILIES, Kind, Parameter};
    let mut cat = Catalogue::default();
    for c in custom {
        let key = format!("controls[{}]", *c.id);
        if cat.get(c.id.as_str()).is_some() {
            d.error(
                c.id.span(),
                &key,
                format!("`{}` is already a control parameter", *c.id),
            );
            continue;
        }
        if !FAMILIES.iter().any(|(f, _)| *f == c.family.as_str()) {
            d.error(
                c.family.span(),
                format!("{key}.family"),
                format!("unknown control family `{}`", *c.family),
            )
            .suggest(c.family.as_str(), FAMILIES.iter().map(|(f, _)| *f));
            continue;
        }
        let kind = match (c.kind.as_str(), c.stricter) {
            ("number", Some(stricter)) => Kind::Number {
                stricter,
                unit: c.unit.clone().unwrap_or_default(),
            },
            ("number", None) => {
                d.error(
                    c.kind.span(),
                    format!("{key}.stricter"),
                    "a number parameter needs `stricter: lower` or `stricter: higher`",
                );
                continue;
            }
            ("bool", _) => Kind::Bool,
            ("version", _) => Kind::Version,
            ("enum", _) if c.levels.len() >= 2 => Kind::Enum {
                levels: c.levels.clone(),
            },
            ("enum", _) => {
                d.error(
                    c.kind.span(),
                    format!("{key}.levels"),
                    "an enum parameter needs at least two `levels`, weakest first",
                );
                continue;
            }
            (other, _) => {
                d.error(
                    c.kind.span(),
                    format!("{key}.type"),
                    format!("unknown parameter type `{other}`"),
                )
                .hint("use number, bool, version or enum");
                continue;
            }
        };
        cat.add(Parameter {
            key: c.id.to_string(),
            family: c.family.to_string(),
            kind,
            label: c.name.clone(),
        });
    }
    cat
}

/// Every parameter is known to the catalogue and its value has the parameter's type.
fn check_measures(
    cat: &super::controls::Catalogue,
    measures: &Measures,
    key: &str,
    d: &mut Diagnostics,
) {
    for (name, value) in measures {
        let Some(param) = cat.get(name) else {
            d.error(
                value.span(),
                format!("{key}.{name}"),
                format!("unknown control parameter `{name}`"),
            )
            .suggest(name, cat.keys())
            .hint
            .get_or_insert_with(|| {
                "declare it under `controls:` with its family, type and strictness".to_owned()
            });
            continue;
        };
        let Some(raw) = value.as_scalar() else {
            d.error(
                value.span(),
                format!("{key}.{name}"),
                "a control parameter takes one value, not a list",
            );
            continue;
        };
        if let Err(e) = param.parse(raw) {
            d.error(value.span(), format!("{key}.{name}"), e);
        }
    }
}

fn build_taxonomy(custom: &[CustomCategory], d: &mut Diagnostics) -> Taxonomy {
    let mut taxonomy = Taxonomy::built_in();
    let built_in = taxonomy.clone();
    let mut seen: BTreeMap<String, Span> = BTreeMap::new();
    // Parents before children, so inheritance sees the parent.
    let mut sorted: Vec<&CustomCategory> = custom.iter().collect();
    sorted.sort_by_key(|c| c.id.as_str().matches('.').count());
    for c in &sorted {
        let key = format!("categories[{}]", *c.id);
        if built_in.contains(c.id.as_str()) {
            d.error(
                c.id.span(),
                key,
                format!("`{}` is a built-in category", *c.id),
            )
            .hint("choose a new key below it, e.g. `user.content.comment`");
            continue;
        }
        if let Some(first) = seen.get(c.id.as_str()) {
            let at = d.location(first);
            d.error(
                c.id.span(),
                key,
                format!("category `{}` is declared twice", *c.id),
            )
            .hint(format!("first declared at {at}"));
            continue;
        }
        seen.insert(c.id.to_string(), *c.id.span());
        taxonomy.extend((*c.id).clone(), c.name.clone(), c.special);
    }
    for c in &sorted {
        let key = format!("categories[{}]", *c.id);
        let (parent, span) = match &c.parent {
            Some(p) => (Some(p.as_str()), *p.span()),
            None => (c.id.parent(), *c.id.span()),
        };
        if let Some(parent) = parent {
            if !taxonomy.contains(parent) {
                d.error(
                    &span,
                    key,
                    format!("parent category `{parent}` does not exist"),
                )
                .suggest(parent, taxonomy.keys());
            } else if c.parent.is_some() && c.id.parent() != Some(parent) {
                d.error(
                    &span,
                    key,
                    format!("`{}` is not below its parent `{parent}`", *c.id),
                )
                .hint(format!(
                    "name it `{parent}.{}`",
                    c.id.as_str().rsplit('.').next().unwrap_or("")
                ));
            }
        }
    }
    taxonomy
}

fn duplicates<'a>(kind: &str, ids: impl Iterator<Item = &'a Spanned<Id>>, d: &mut Diagnostics) {
    let mut seen: BTreeMap<&str, &Span> = BTreeMap::new();
    for id in ids {
        if let Some(first) = seen.get(id.as_str()) {
            let at = d.location(first);
            d.error(
                id.span(),
                format!("{kind}[{}]", **id),
                format!("duplicate id `{}`", **id),
            )
            .hint(format!(
                "ids are unique across all files; first declared at {at}"
            ));
        } else {
            seen.insert(id.as_str(), id.span());
        }
    }
}

fn reference(
    set: &BTreeSet<String>,
    known: &Known,
    id: &Spanned<Id>,
    key: &str,
    what: &str,
    d: &mut Diagnostics,
) -> bool {
    if Known::is_known(set, &known.broken, id.as_str()) {
        return true;
    }
    d.error(id.span(), key, format!("unknown {what} `{}`", **id))
        .suggest(id.as_str(), set.iter().map(String::as_str));
    false
}

fn check_category(
    policy: &Policy,
    cat: &Spanned<super::types::CategoryKey>,
    key: &str,
    d: &mut Diagnostics,
) {
    if !policy.taxonomy.contains(cat.as_str()) {
        d.error(
            cat.span(),
            key,
            format!("unknown data category `{}`", **cat),
        )
        .suggest(cat.as_str(), policy.taxonomy.keys())
        .hint
        .get_or_insert_with(|| {
            "declare it under `categories:` or use a built-in key such as `user.contact.email`"
                .to_owned()
        });
    }
}

fn check_purpose(p: &Purpose, policy: &Policy, known: &Known, d: &mut Diagnostics) {
    let key = format!("purposes[{}]", *p.id);
    for s in &p.subjects {
        reference(
            &known.subjects,
            known,
            s,
            &format!("{key}.subjects"),
            "data-subject category",
            d,
        );
    }
    if p.subjects.is_empty() {
        d.warning(p.id.span(), &key, "no data subjects are named")
            .hint("list them under `subjects:` (the register needs them, Art. 30(1)(c))");
    }
    if p.categories.is_empty() {
        d.warning(p.id.span(), &key, "no personal-data categories are named")
            .hint("list them under `categories:` (Art. 30(1)(c))");
    }
    let mut special = None;
    for c in &p.categories {
        check_category(policy, c, &format!("{key}.categories"), d);
        if policy.taxonomy.get(c.as_str()).is_some_and(|i| i.special) {
            special.get_or_insert(c);
        }
    }
    if let (Some(c), None) = (special, p.special_category_condition) {
        d.error(c.span(), format!("{key}.special_category_condition"), format!("`{}` is a special category (Art. 9(1)) but no Art. 9(2) condition is given", **c))
            .hint("add `special_category_condition:` e.g. explicit_consent, employment_social_security, health_care");
    }
    for r in &p.recipients {
        if !reference(
            &known.processors,
            known,
            r,
            &format!("{key}.recipients"),
            "processor",
            d,
        ) {
            continue;
        }
        if let Some(proc) = policy.processor(r.as_str())
            && proc.role != super::types::ProcessorRole::IndependentController
            && proc.agreement.is_none()
            && !policy
                .agreements
                .iter()
                .any(|a| a.counterparty.as_str() == proc.id.as_str())
        {
            d.warning(
                r.span(),
                format!("{key}.recipients"),
                format!("processor `{}` has no agreement (Art. 28(3))", **r),
            )
            .hint("add an agreement and name it with `agreement:` on the processor");
        }
    }
    if *p.legal_basis == super::types::LegalBasis::LegitimateInterests
        && p.legitimate_interest.is_none()
    {
        d.warning(
            p.legal_basis.span(),
            format!("{key}.legal_basis"),
            "legitimate interests are the basis but the interest is not stated",
        )
        .hint("add `legitimate_interest:` (the notice must name it, Art. 13(1)(d))");
    }
    match &p.retention {
        None => {
            d.error(
                p.id.span(),
                format!("{key}.retention"),
                "the purpose has no retention rule",
            )
            .hint("add `retention: { keep_for: 90d, from: collected }` (Art. 5(1)(e), 13(2)(a))");
        }
        Some(r) => {
            let bound = policy
                .systems
                .iter()
                .flat_map(|s| s.collections.iter())
                .any(|c| c.events.contains_key(r.from.as_str()));
            if !bound && !policy.systems.is_empty() {
                let span = if r.from.span().start().is_some() {
                    *r.from.span()
                } else {
                    *r.keep_for.span()
                };
                d.warning(
                    &span,
                    format!("{key}.retention.from"),
                    format!("no collection binds the event `{}`", *r.from),
                )
                .hint(format!(
                    "bind it under a collection's `events:`, e.g. `events: {{ {}: created_at }}`",
                    *r.from
                ));
            }
        }
    }
}

fn check_processor(p: &Processor, policy: &Policy, known: &Known, d: &mut Diagnostics) {
    let key = format!("processors[{}]", *p.id);
    for (country, safeguard) in p.third_countries() {
        let span = p
            .transfers
            .iter()
            .find(|t| &*t.country == country)
            .map_or(*p.country.span(), |t| *t.country.span());
        match safeguard {
            None if country.has_adequacy_decision() => {}
            None => {
                d.error(&span, format!("{key}.transfers"), format!("transfer to {country}, a third country, without a safeguard"))
                    .hint(format!("add `transfers: [{{ country: {country}, safeguard: scc }}]` (scc, dpf, bcr, derogation; Art. 44-49)"));
            }
            Some(TransferSafeguard::Adequacy) if !country.has_adequacy_decision() => {
                d.error(
                    &span,
                    format!("{key}.transfers"),
                    format!("{country} has no adequacy decision"),
                )
                .hint("use scc, bcr, dpf (United States) or derogation");
            }
            Some(TransferSafeguard::Dpf) if country.as_str() != "US" => {
                d.error(
                    &span,
                    format!("{key}.transfers"),
                    "the Data Privacy Framework covers only transfers to the United States",
                );
            }
            Some(_) => {}
        }
    }
    if let Some(a) = &p.agreement {
        reference(
            &known.agreements,
            known,
            a,
            &format!("{key}.agreement"),
            "agreement",
            d,
        );
    }
    if let Some(n) = &p.erasure_notice {
        if n.email.is_none() && n.webhook.is_none() {
            d.error(
                p.id.span(),
                format!("{key}.erasure_notice"),
                "erasure_notice names no channel",
            )
            .hint("give `email:` or `webhook:`, or leave erasure_notice out");
        }
        if let Some(w) = &n.webhook
            && !(w.starts_with("https://") || w.starts_with("http://"))
        {
            d.error(
                p.id.span(),
                format!("{key}.erasure_notice.webhook"),
                "the webhook must be an http(s) URL",
            );
        }
    }
    let used = policy
        .purposes
        .iter()
        .any(|pu| pu.recipients.iter().any(|r| r.as_str() == p.id.as_str()));
    if !used {
        // While something failed to load, who uses what cannot be told.
        if known.broken.is_empty() {
            d.warning(
                p.id.span(),
                &key,
                "no purpose names this processor as a recipient",
            );
        }
    } else if p.erasure_notice.is_none() {
        d.warning(
            p.id.span(),
            format!("{key}.erasure_notice"),
            "this processor receives personal data but has no erasure_notice: after each erasure the DPO gets a task to tell it by hand (Art. 19)",
        )
        .hint("add `erasure_notice: { email: privacy@... }` or `{ webhook: https://... }`");
    }
}

fn check_system(s: &System, policy: &Policy, known: &Known, d: &mut Diagnostics) {
    let key = format!("systems[{}]", *s.id);
    for p in &s.purposes {
        reference(
            &known.purposes,
            known,
            p,
            &format!("{key}.purposes"),
            "purpose",
            d,
        );
    }
    match &s.connection {
        None => {
            d.warning(
                s.id.span(),
                &key,
                "no connection is declared: requests and retention cannot reach this system",
            )
            .hint("add `connection: { url_env: APP_DATABASE_URL }`");
        }
        Some(c) => {
            if let Some(env) = &c.url_env
                && (env.is_empty()
                    || !env
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_'))
            {
                d.error(
                    s.id.span(),
                    format!("{key}.connection.url_env"),
                    format!("`{env}` is not an environment variable name"),
                );
            }
            if let Some(url) = &c.default
                && !["sqlite:", "postgres:", "postgresql:", "mysql:", "mariadb:"]
                    .iter()
                    .any(|p| url.starts_with(p))
            {
                d.error(
                    s.id.span(),
                    format!("{key}.connection.default"),
                    "the default URL must start with sqlite:, postgres: or mysql:",
                );
            }
            if c.url_env.is_none() && c.default.is_none() {
                d.error(
                    s.id.span(),
                    format!("{key}.connection"),
                    "the connection names neither `url_env` nor `default`",
                );
            }
        }
    }
    let mut names: BTreeMap<&str, &Span> = BTreeMap::new();
    for c in &s.collections {
        if let Some(first) = names.get(c.name.as_str()) {
            let at = d.location(first);
            d.error(
                c.name.span(),
                format!("{key}.collections"),
                format!("collection `{}` is declared twice", *c.name),
            )
            .hint(format!("first declared at {at}"));
        }
        names.insert(c.name.as_str(), c.name.span());
        check_collection(s, c, policy, known, d);
    }
    let mapped = s
        .collections
        .iter()
        .any(|c| c.fields.iter().any(|f| !f.categories.is_empty()));
    let identity = s
        .collections
        .iter()
        .any(|c| c.fields.iter().any(|f| f.identity.is_some()));
    if mapped && !identity {
        d.error(
            s.id.span(),
            &key,
            "the system holds personal data but declares no identity field",
        )
        .hint("mark the column that identifies a person, e.g. `{ name: email, identity: email }`");
    }
}

fn check_collection(
    s: &System,
    c: &Collection,
    policy: &Policy,
    known: &Known,
    d: &mut Diagnostics,
) {
    let key = format!("systems[{}].collections[{}]", *s.id, *c.name);
    for p in &c.purposes {
        reference(
            &known.purposes,
            known,
            p,
            &format!("{key}.purposes"),
            "purpose",
            d,
        );
    }
    let mut fields: BTreeMap<&str, &Span> = BTreeMap::new();
    let mut served: BTreeSet<&str> = BTreeSet::new();
    for f in &c.fields {
        let fkey = format!("{key}.fields[{}]", *f.name);
        if let Some(first) = fields.get(f.name.as_str()) {
            let at = d.location(first);
            d.error(
                f.name.span(),
                &fkey,
                format!("field `{}` is declared twice", *f.name),
            )
            .hint(format!("first declared at {at}"));
        }
        fields.insert(f.name.as_str(), f.name.span());
        for p in &f.purposes {
            reference(
                &known.purposes,
                known,
                p,
                &format!("{fkey}.purposes"),
                "purpose",
                d,
            );
        }
        for cat in &f.categories {
            check_category(policy, cat, &format!("{fkey}.categories"), d);
        }
        if let Some(r) = &f.references {
            check_field_ref(s, r, &format!("{fkey}.references"), d);
            check_direction(s, c, f, r, &fkey, d);
        }
        if f.masking.is_some() && s.is_key(c, f) {
            d.warning(
                f.name.span(),
                format!("{fkey}.masking"),
                "the field is a key (a primary key, a reference or referenced): keys are never masked, other rows find theirs through them, so this masking is never applied",
            )
            .hint("remove `masking` from the key");
        }
        if f.categories.is_empty() {
            continue;
        }
        let purposes = policy.field_purposes(s, c, f);
        if purposes.is_empty() {
            d.error(
                f.name.span(),
                &fkey,
                "the field holds personal data but serves no purpose",
            )
            .hint("add `purposes:` to the field, its collection or its system");
        }
        for p in purposes {
            served.insert(p.as_str());
            let Some(purpose) = policy.purpose(p.as_str()) else {
                continue;
            };
            for cat in &f.categories {
                let declared = purpose.declares(cat.as_str());
                if !declared && policy.taxonomy.contains(cat.as_str()) {
                    d.warning(cat.span(), format!("{fkey}.categories"), format!("purpose `{}` does not declare the category `{}`, so the notice and the register omit it here", purpose.id.as_str(), **cat))
                        .hint(format!("add `{}` to the purpose's categories", **cat));
                }
            }
        }
    }
    for (event, binding) in &c.events {
        let ekey = format!("{key}.events.{event}");
        match &**binding {
            EventBinding::Column(_) => {}
            EventBinding::Referenced(r) => {
                let refs = c.fields.iter().any(|f| {
                    f.references
                        .as_ref()
                        .is_some_and(|fr| fr.collection == r.collection)
                });
                if find_collection(s, r.collection.as_str()).is_none() {
                    d.error(
                        binding.span(),
                        ekey,
                        format!(
                            "collection `{}` does not exist in system `{}`",
                            r.collection, *s.id
                        ),
                    )
                    .suggest(
                        r.collection.as_str(),
                        s.collections.iter().map(|c| c.name.as_str()),
                    );
                } else if !refs {
                    d.error(
                        binding.span(),
                        ekey,
                        format!(
                            "`{}` does not reference `{}`, so `{r}` cannot be reached",
                            *c.name, r.collection
                        ),
                    )
                    .hint(format!(
                        "add a field with `references: {}.<key>`",
                        r.collection
                    ));
                }
            }
            EventBinding::LatestOf(r) => {
                match find_collection(s, r.collection.as_str()) {
                    None => {
                        d.error(
                            binding.span(),
                            ekey,
                            format!(
                                "collection `{}` does not exist in system `{}`",
                                r.collection, *s.id
                            ),
                        )
                        .suggest(
                            r.collection.as_str(),
                            s.collections.iter().map(|c| c.name.as_str()),
                        );
                    }
                    Some(other) => {
                        let refs = other.fields.iter().any(|f| {
                            f.references
                                .as_ref()
                                .is_some_and(|fr| fr.collection == *c.name)
                        });
                        if !refs {
                            d.error(binding.span(), ekey, format!("`{}` does not reference `{}`, so `max({r})` has no rows to read", r.collection, *c.name));
                        }
                    }
                }
            }
        }
    }
    for p in served {
        let Some(purpose) = policy.purpose(p) else {
            continue;
        };
        let Some(r) = &purpose.retention else {
            continue;
        };
        if !c.events.contains_key(r.from.as_str()) {
            d.warning(c.name.span(), format!("{key}.events"), format!("serves `{p}`, whose retention runs from `{}`, but binds no `{}` event: lethe cannot enforce that rule here (requests still work)", *r.from, *r.from))
                .hint(format!("add `events: {{ {}: <column> }}`", *r.from));
        }
    }
}

fn find_collection<'a>(s: &'a System, name: &str) -> Option<&'a Collection> {
    s.collections.iter().find(|c| c.name.as_str() == name)
}

/// Warns on every reference that can lead a person's request to other people's rows.
fn check_direction(
    s: &System,
    c: &Collection,
    f: &Field,
    r: &Spanned<FieldRef>,
    fkey: &str,
    d: &mut Diagnostics,
) {
    let Some(d_span) = f.direction.as_ref().map(|x| *x.span()) else {
        return;
    };
    let follows = f.follows();
    let people = c.fields.iter().any(|x| x.identity.is_some());
    if matches!(follows, Direction::From | Direction::Both)
        && (people || c.name.as_str() == r.collection.as_str())
    {
        d.warning(
            &d_span,
            format!("{fkey}.direction"),
            format!(
                "followed from `{}` to the `{}` rows referencing it, which are other people's own records: a person's request reaches everyone whose `{}` points at their row",
                r.collection, *c.name, *f.name
            ),
        )
        .hint("leave `direction` out (or write `to`) unless those rows are the person's data");
    }
    if matches!(follows, Direction::To | Direction::Both) {
        let others: Vec<String> = s
            .collections
            .iter()
            .flat_map(|o| o.fields.iter().map(move |of| (o, of)))
            .filter(|(o, of)| {
                !(o.name == c.name && of.name == f.name)
                    && of
                        .references
                        .as_ref()
                        .is_some_and(|x| x.collection == r.collection)
            })
            .map(|(o, of)| format!("{}.{}", *o.name, *of.name))
            .collect();
        if !others.is_empty() {
            d.warning(
                &d_span,
                format!("{fkey}.direction"),
                format!(
                    "the `{}` row reached through `{}` may be other people's too (it is also referenced by {}): a request shows it, and an erasure keeps it while others reference it",
                    r.collection,
                    *f.name,
                    others.join(", ")
                ),
            )
            .hint("fine for a row the person shares, such as an address; check that no reference leads on from it to other people's rows");
        }
    }
}

fn check_field_ref(s: &System, r: &Spanned<FieldRef>, key: &str, d: &mut Diagnostics) {
    match find_collection(s, r.collection.as_str()) {
        None => {
            d.error(
                r.span(),
                key,
                format!(
                    "collection `{}` does not exist in system `{}`",
                    r.collection, *s.id
                ),
            )
            .suggest(
                r.collection.as_str(),
                s.collections.iter().map(|c| c.name.as_str()),
            );
        }
        Some(target) if !target.fields.iter().any(|f| *f.name == r.field) => {
            d.error(
                r.span(),
                key,
                format!(
                    "collection `{}` declares no field `{}`",
                    r.collection, r.field
                ),
            )
            .suggest(
                r.field.as_str(),
                target.fields.iter().map(|f| f.name.as_str()),
            )
            .hint
            .get_or_insert_with(|| {
                format!(
                    "declare `{}` in `{}` (e.g. `{{ name: {}, primary_key: true }}`)",
                    r.field, r.collection, r.field
                )
            });
        }
        Some(_) => {}
    }
}

fn check_hold(h: &Hold, policy: &Policy, d: &mut Diagnostics) {
    let key = format!("holds[{}]", *h.id);
    for c in &h.collections {
        let found = c.split_once('.').and_then(|(sys, col)| {
            policy
                .system(sys)
                .map(|s| (s, find_collection(s, col).is_some()))
        });
        match found {
            Some((_, true)) => {}
            Some((s, false)) => {
                d.error(
                    c.span(),
                    format!("{key}.collections"),
                    format!(
                        "system `{}` has no collection `{}`",
                        *s.id,
                        c.split_once('.').map_or("", |x| x.1)
                    ),
                );
            }
            None => {
                d.error(
                    c.span(),
                    format!("{key}.collections"),
                    format!("`{}` does not name a collection", **c),
                )
                .hint("write `system.collection`, e.g. `app.invoices`");
            }
        }
    }
}

fn check_agreement(a: &Agreement, known: &Known, d: &mut Diagnostics) {
    let key = format!("agreements[{}]", *a.id);
    for p in &a.purposes {
        reference(
            &known.purposes,
            known,
            p,
            &format!("{key}.purposes"),
            "purpose",
            d,
        );
    }
    for c in &a.art28_clauses {
        if !ART28_CLAUSES.contains(&c.as_str()) {
            d.error(
                c.span(),
                format!("{key}.art28_clauses"),
                format!("`{}` is not a point of Art. 28(3)", **c),
            )
            .hint("use the letters a to h");
        }
    }
    if let (Some(signed), Some(review)) = (a.signed, a.review_by)
        && review < signed
    {
        d.error(
            a.id.span(),
            format!("{key}.review_by"),
            "the review date is before the signing date",
        );
    }
}

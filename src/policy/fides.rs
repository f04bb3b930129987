//! Fides dataset manifests as systems. A system may name a manifest with `fides_dataset:`;
//! its collections and fields (with `data_categories` and `fides_meta` identity, primary
//! key and references) become the system's collections, and the system's own
//! `collections:` entries add lethe settings (purposes, events, erasure, masking) by name.

use std::path::Path;

use marked_yaml::Spanned;
use serde::Deserialize;

use super::diagnostic::Diagnostics;
use super::load::{decode, parse_file};
use super::model::{Collection, Field, FieldRef, System};
use super::types::{CategoryKey, Direction, Id, Identifier};

#[derive(Deserialize)]
struct Manifest {
    dataset: Vec<Dataset>,
}

#[derive(Deserialize)]
struct Dataset {
    fides_key: Spanned<String>,
    #[serde(default)]
    collections: Vec<FidesCollection>,
}

#[derive(Deserialize)]
struct FidesCollection {
    name: Spanned<Identifier>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    fields: Vec<FidesField>,
}

#[derive(Deserialize)]
struct FidesField {
    name: Spanned<Identifier>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    data_categories: Vec<Spanned<CategoryKey>>,
    #[serde(default)]
    fides_meta: Option<FidesMeta>,
    /// Nested fields of document stores; SQL systems have none.
    #[serde(default)]
    fields: Option<marked_yaml::Spanned<Vec<serde::de::IgnoredAny>>>,
}

#[derive(Deserialize)]
struct FidesMeta {
    #[serde(default)]
    identity: Option<Spanned<Id>>,
    #[serde(default)]
    primary_key: Option<bool>,
    #[serde(default)]
    references: Vec<FidesReference>,
}

#[derive(Deserialize)]
struct FidesReference {
    #[serde(default)]
    dataset: Option<String>,
    field: Spanned<String>,
    #[serde(default)]
    direction: Option<String>,
}

/// Replaces `system.collections` by the manifest's, overlaid with the system's own entries.
pub fn import_into(system: &mut System, base: &Path, diags: &mut Diagnostics) {
    let Some(rel) = system.fides_dataset.clone() else {
        return;
    };
    let key = format!("systems[{}].fides_dataset", *system.id);
    let path = base.join(&*rel);
    if !path.is_file() {
        diags
            .error(
                rel.span(),
                &key,
                format!("Fides dataset `{}` not found", path.display()),
            )
            .hint("the path is relative to the file that declares the system");
        return;
    }
    let Some((_, node, _)) = parse_file(&path, diags) else {
        return;
    };
    let Some(manifest) = decode::<Manifest>(&node, "dataset", diags) else {
        return;
    };
    let Some(dataset) = manifest.dataset.into_iter().next() else {
        diags.error(
            node.span(),
            "dataset",
            "the Fides manifest declares no dataset",
        );
        return;
    };
    let mut collections = Vec::new();
    for fc in dataset.collections {
        let mut fields = Vec::new();
        for ff in fc.fields {
            if let Some(nested) = &ff.fields {
                diags
                    .warning(
                        nested.span(),
                        format!("dataset.{}.{}", *fc.name, *ff.name),
                        "nested Fides fields are not supported on SQL systems and are ignored",
                    )
                    .hint("map the columns of a SQL table as flat fields");
            }
            let meta = ff.fides_meta.unwrap_or(FidesMeta {
                identity: None,
                primary_key: None,
                references: Vec::new(),
            });
            let mut references = None;
            let mut field_direction = None;
            for r in meta.references {
                let here = format!("dataset.{}.{}", *fc.name, *ff.name);
                if r.dataset
                    .as_deref()
                    .is_some_and(|d| d != *dataset.fides_key)
                {
                    diags
                        .error(
                            r.field.span(),
                            here,
                            "references to another dataset are not supported",
                        )
                        .hint("references must stay within one system");
                    continue;
                }
                let target = match FieldRef::parse(&r.field) {
                    Ok(t) => t,
                    Err(e) => {
                        diags.error(r.field.span(), here, e);
                        continue;
                    }
                };
                let direction = match r.direction.as_deref() {
                    Some(d) => match Direction::parse(d) {
                        Ok(d) => Some(Spanned::new(*r.field.span(), d)),
                        Err(e) => {
                            diags
                                .error(
                                    r.field.span(),
                                    here,
                                    format!("unknown reference direction: {e}"),
                                )
                                .hint("use `from` or `to`");
                            continue;
                        }
                    },
                    None => {
                        diags
                            .warning(
                                r.field.span(),
                                here,
                                "a reference without a direction is followed only from the referenced rows to the referencing ones",
                            )
                            .hint("write `direction: from` for that, or `direction: to` where the referenced row is the person's data (Fides would follow it both ways)");
                        None
                    }
                };
                references = Some(Spanned::new(*r.field.span(), target));
                field_direction = direction;
            }
            // `system.*` categories are not personal data: they are not mapped.
            let categories = ff
                .data_categories
                .into_iter()
                .filter(|c| !c.as_str().starts_with("system"))
                .collect();
            fields.push(Field {
                name: ff.name,
                description: ff.description,
                categories,
                purposes: Vec::new(),
                identity: meta.identity,
                primary_key: meta.primary_key.unwrap_or(false),
                references,
                direction: field_direction,
                masking: None,
            });
        }
        collections.push(Collection {
            name: fc.name,
            description: fc.description,
            purposes: Vec::new(),
            events: Default::default(),
            erasure: None,
            fields,
        });
    }
    // A reference declared on a primary key (`customer.id` -> `login.customer_id`,
    // `direction: to`) is the other field's reference, followed the other way: the model
    // keeps references on the referencing column, as the database does.
    let mut moved = Vec::new();
    for c in &mut collections {
        for f in &mut c.fields {
            if f.primary_key
                && let Some(r) = f.references.take()
            {
                let direction = f.direction.take().map(|d| {
                    let flipped = match *d {
                        Direction::From => Direction::To,
                        Direction::To => Direction::From,
                        Direction::Both => Direction::Both,
                    };
                    Spanned::new(*d.span(), flipped)
                });
                let this = FieldRef {
                    collection: (*c.name).clone(),
                    field: (*f.name).clone(),
                };
                moved.push((Spanned::new(*r.span(), this), (*r).clone(), direction));
            }
        }
    }
    for (source, target, direction) in moved {
        let field = collections
            .iter_mut()
            .find(|c| *c.name == target.collection)
            .and_then(|c| c.fields.iter_mut().find(|f| *f.name == target.field));
        match field {
            Some(f) => {
                f.references = Some(source);
                f.direction = direction;
            }
            None => {
                diags.error(
                    source.span(),
                    format!("dataset.{}", *source),
                    format!("reference to `{target}`, which the dataset does not declare"),
                );
            }
        }
    }
    for overlay in std::mem::take(&mut system.collections) {
        let Some(base) = collections.iter_mut().find(|c| *c.name == *overlay.name) else {
            diags
                .error(
                    overlay.name.span(),
                    format!("systems[{}].collections", *system.id),
                    format!("collection `{}` is not in the Fides dataset", *overlay.name),
                )
                .suggest(
                    overlay.name.as_str(),
                    collections.iter().map(|c| c.name.as_str()),
                );
            continue;
        };
        overlay_collection(base, overlay);
    }
    system.collections = collections;
}

fn overlay_collection(base: &mut Collection, overlay: Collection) {
    if !overlay.purposes.is_empty() {
        base.purposes = overlay.purposes;
    }
    base.events.extend(overlay.events);
    if overlay.erasure.is_some() {
        base.erasure = overlay.erasure;
    }
    if overlay.description.is_some() {
        base.description = overlay.description;
    }
    for f in overlay.fields {
        match base.fields.iter_mut().find(|b| *b.name == *f.name) {
            Some(b) => {
                if !f.categories.is_empty() {
                    b.categories = f.categories;
                }
                if !f.purposes.is_empty() {
                    b.purposes = f.purposes;
                }
                if f.identity.is_some() {
                    b.identity = f.identity;
                }
                if f.references.is_some() {
                    b.references = f.references;
                }
                if f.direction.is_some() {
                    b.direction = f.direction;
                }
                if f.masking.is_some() {
                    b.masking = f.masking;
                }
                b.primary_key |= f.primary_key;
            }
            None => base.fields.push(f),
        }
    }
}

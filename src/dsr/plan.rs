//! The traversal plan: from the identities a request gives, which collections are read,
//! in what order, through which keys. Pure: no database is touched.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::policy::{Collection, EventBinding, Policy, System};

/// How the rows of a collection are found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Via {
    /// `field` holds an identity of this kind given by the request.
    Identity { field: String, kind: String },
    /// `field` matches `from_collection.from_field` of rows already found.
    Reference {
        field: String,
        from_collection: String,
        from_field: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub collection: String,
    pub via: Vec<Via>,
    /// Columns read: keys, events and mapped fields.
    pub read: Vec<String>,
    /// Mapped fields (personal data), with their purposes.
    pub mapped: Vec<(String, Vec<String>)>,
    pub erasure: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SystemPlan {
    pub system: String,
    pub name: String,
    pub steps: Vec<Step>,
    /// Collections with personal data that no identity or reference reaches.
    pub unreachable: Vec<String>,
    /// Reference cycles, as `a -> b -> a`.
    pub cycles: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub identity_kinds: Vec<String>,
    pub systems: Vec<SystemPlan>,
}

impl Plan {
    pub fn unreachable(&self) -> impl Iterator<Item = (&str, &str)> {
        self.systems.iter().flat_map(|s| {
            s.unreachable
                .iter()
                .map(move |c| (s.system.as_str(), c.as_str()))
        })
    }
}

/// Plans the traversal of every system for identities of `kinds` (e.g. `["email"]`).
pub fn plan(policy: &Policy, kinds: &[&str]) -> Plan {
    Plan {
        identity_kinds: kinds.iter().map(|k| k.to_string()).collect(),
        systems: policy
            .systems
            .iter()
            .map(|s| plan_system(s, kinds))
            .collect(),
    }
}

/// One end of a reference: `(collection, field)`.
type End = (String, String);

/// Undirected reference edges: `(collection, field) <-> (collection, field)`.
fn edges(system: &System) -> Vec<(End, End)> {
    let mut out = Vec::new();
    for c in &system.collections {
        for f in &c.fields {
            if let Some(r) = &f.references {
                out.push((
                    (c.name.to_string(), f.name.to_string()),
                    (r.collection.to_string(), r.field.to_string()),
                ));
            }
        }
    }
    out
}

fn plan_system(system: &System, kinds: &[&str]) -> SystemPlan {
    let edges = edges(system);
    let mut order: Vec<String> = Vec::new();
    let mut vias: BTreeMap<String, Vec<Via>> = BTreeMap::new();
    let mut queue = VecDeque::new();
    for c in &system.collections {
        for f in &c.fields {
            if let Some(kind) = &f.identity
                && kinds.contains(&kind.as_str())
            {
                vias.entry(c.name.to_string())
                    .or_default()
                    .push(Via::Identity {
                        field: f.name.to_string(),
                        kind: kind.to_string(),
                    });
            }
        }
        if vias.contains_key(c.name.as_str()) && !order.contains(&c.name.to_string()) {
            order.push(c.name.to_string());
            queue.push_back(c.name.to_string());
        }
    }
    while let Some(current) = queue.pop_front() {
        let current_pos = order.iter().position(|o| *o == current).unwrap_or(0);
        for ((a, af), (b, bf)) in &edges {
            // Both directions: a references b, so rows of b are found from a and vice versa.
            for (here, here_field, there, there_field) in [(a, af, b, bf), (b, bf, a, af)] {
                if *here != current || *there == current {
                    continue;
                }
                // Only collections read after this one can use its rows.
                if order
                    .iter()
                    .position(|o| o == there)
                    .is_some_and(|p| p < current_pos)
                {
                    continue;
                }
                let via = Via::Reference {
                    field: there_field.clone(),
                    from_collection: current.clone(),
                    from_field: here_field.clone(),
                };
                let list = vias.entry(there.clone()).or_default();
                if !list.contains(&via) {
                    list.push(via);
                }
                if !order.contains(there) {
                    order.push(there.clone());
                    queue.push_back(there.clone());
                }
            }
        }
    }
    let steps = order
        .iter()
        .filter_map(|name| system.collections.iter().find(|c| c.name.as_str() == name))
        .map(|c| Step {
            collection: c.name.to_string(),
            via: vias.remove(c.name.as_str()).unwrap_or_default(),
            read: read_columns(system, c),
            mapped: c
                .fields
                .iter()
                .filter(|f| !f.categories.is_empty())
                .map(|f| {
                    (
                        f.name.to_string(),
                        Policy::field_purposes(system, c, f)
                            .iter()
                            .map(|p| p.to_string())
                            .collect(),
                    )
                })
                .collect(),
            erasure: c.erasure().key().to_owned(),
        })
        .collect();
    let unreachable = system
        .collections
        .iter()
        .filter(|c| {
            c.fields.iter().any(|f| !f.categories.is_empty())
                && !order.contains(&c.name.to_string())
        })
        .map(|c| c.name.to_string())
        .collect();
    SystemPlan {
        system: system.id.to_string(),
        name: system.name.clone(),
        steps,
        unreachable,
        cycles: cycles(&edges),
    }
}

/// Every column a step reads: primary keys, reference keys (both ends), event columns and
/// mapped fields, each once, in declaration order.
fn read_columns(system: &System, c: &Collection) -> Vec<String> {
    let mut cols: Vec<String> = Vec::new();
    let mut add = |s: &str| {
        if !cols.iter().any(|x| x == s) {
            cols.push(s.to_owned());
        }
    };
    for f in &c.fields {
        add(f.name.as_str());
    }
    for other in &system.collections {
        for f in &other.fields {
            if let Some(r) = &f.references
                && r.collection == *c.name
            {
                add(r.field.as_str());
            }
        }
    }
    for binding in c.events.values() {
        if let EventBinding::Column(col) = &**binding {
            add(col.as_str());
        }
    }
    cols
}

/// Reference cycles between collections (a table referencing itself included).
fn cycles(edges: &[(End, End)]) -> Vec<String> {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for ((a, _), (b, _)) in edges {
        graph.entry(a).or_default().push(b);
    }
    let mut found = Vec::new();
    for start in graph.keys() {
        let mut stack = vec![(*start, vec![*start])];
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(node).into_iter().flatten() {
                if next == start {
                    let mut p = path.clone();
                    p.push(start);
                    // Report each cycle once, from its smallest member.
                    if path.iter().all(|n| n >= start) {
                        found.push(p.join(" -> "));
                    }
                } else if !path.contains(next) && path.len() < 16 {
                    let mut p = path.clone();
                    p.push(next);
                    stack.push((next, p));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn demo() -> Policy {
        Policy::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
            .unwrap()
            .into_valid()
            .unwrap()
    }

    #[test]
    fn the_demo_is_reached_from_the_email_through_users() {
        let plan = plan(&demo(), &["email"]);
        let app = &plan.systems[0];
        let order: Vec<&str> = app.steps.iter().map(|s| s.collection.as_str()).collect();
        assert_eq!(order, ["users", "invoices", "page_views", "comments"]);
        assert_eq!(
            app.steps[0].via,
            [Via::Identity {
                field: "email".into(),
                kind: "email".into()
            }]
        );
        assert_eq!(
            app.steps[3].via,
            [Via::Reference {
                field: "user_id".into(),
                from_collection: "users".into(),
                from_field: "id".into()
            }]
        );
        assert!(app.steps[1].read.contains(&"issued_at".to_owned()));
        assert!(app.unreachable.is_empty() && app.cycles.is_empty());
    }

    #[test]
    fn an_unknown_identity_kind_reaches_nothing() {
        let plan = plan(&demo(), &["phone"]);
        assert!(plan.systems[0].steps.is_empty());
        assert_eq!(plan.unreachable().count(), 4);
    }
}

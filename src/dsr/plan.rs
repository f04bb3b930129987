//! The traversal plan: from the identities a request gives, which collections are read,
//! in what order, through which keys. Pure: no database is touched.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::policy::{Collection, Direction, EventBinding, Policy, System};

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
        /// `from`: these rows reference the person's rows (their invoices); `to`: the
        /// person's rows reference these (their address).
        direction: Direction,
        /// Why the edge is followed, in words.
        why: String,
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

/// A reference the traversal does not follow, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub from_collection: String,
    pub from_field: String,
    pub collection: String,
    pub field: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SystemPlan {
    pub system: String,
    pub name: String,
    pub steps: Vec<Step>,
    /// Collections with personal data that no identity or reference reaches.
    pub unreachable: Vec<String>,
    /// Collections reached through a row the person's rows reference (`direction: to`):
    /// such a row may be referenced by other people's rows as well, and an erasure keeps
    /// it while they do.
    pub shared: Vec<String>,
    /// References that are not followed.
    pub skipped: Vec<Skipped>,
    /// Cycles among the references followed, as `a -> b -> a`.
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
            .map(|s| plan_system(policy, s, kinds))
            .collect(),
    }
}

/// Whether rows of `c` are other data subjects' own records (it has identity fields).
pub fn holds_people(c: &Collection) -> bool {
    c.fields.iter().any(|f| f.identity.is_some())
}

/// One way of following a reference: rows of `to` are found from rows of `from`.
#[derive(Debug, Clone)]
struct Edge {
    from: String,
    from_field: String,
    to: String,
    to_field: String,
    direction: Direction,
    why: String,
}

/// Every reference of the system, each way it is followed, and those it is not.
fn edges(system: &System) -> (Vec<Edge>, Vec<Skipped>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for c in &system.collections {
        for f in &c.fields {
            let Some(r) = &f.references else {
                continue;
            };
            let Some(target) = system
                .collections
                .iter()
                .find(|t| t.name.as_str() == r.collection.as_str())
            else {
                continue;
            };
            let written = f.direction.is_some();
            let follows = f.follows();
            let (here, field, there, there_field) = (
                c.name.to_string(),
                f.name.to_string(),
                r.collection.to_string(),
                r.field.to_string(),
            );
            // From the referenced row down to the rows referencing it.
            if matches!(follows, Direction::From | Direction::Both) {
                let blocked = if written {
                    None
                } else if here == there {
                    Some(
                        "a reference within one collection links rows of different people; write `direction: from` to follow it",
                    )
                } else if holds_people(c) {
                    Some(
                        "the referencing collection holds other people (it has identity fields); write `direction: from` to follow it",
                    )
                } else {
                    None
                };
                match blocked {
                    None => out.push(Edge {
                        from: there.clone(),
                        from_field: there_field.clone(),
                        to: here.clone(),
                        to_field: field.clone(),
                        direction: Direction::From,
                        why: format!("rows of `{here}` whose `{field}` references one of the person's `{there}` rows are the person's"),
                    }),
                    Some(why) => skipped.push(Skipped {
                        from_collection: there.clone(),
                        from_field: there_field.clone(),
                        collection: here.clone(),
                        field: field.clone(),
                        why: why.to_owned(),
                    }),
                }
            }
            // From the referencing row up to the row it references: only when written.
            if matches!(follows, Direction::To | Direction::Both) {
                out.push(Edge {
                    from: here.clone(),
                    from_field: field.clone(),
                    to: there.clone(),
                    to_field: there_field.clone(),
                    direction: Direction::To,
                    why: format!(
                        "the `{there}` row that one of the person's `{here}` rows references by `{field}` is the person's (`direction: {}`)",
                        follows.key()
                    ),
                });
            } else if !holds_people(target) && here != there {
                skipped.push(Skipped {
                    from_collection: here.clone(),
                    from_field: field.clone(),
                    collection: there.clone(),
                    field: there_field.clone(),
                    why: format!("the `{there}` row may be other people's as well; write `direction: to` (or `both`) where it is the person's data"),
                });
            }
        }
    }
    (out, skipped)
}

fn plan_system(policy: &Policy, system: &System, kinds: &[&str]) -> SystemPlan {
    let (edges, skipped) = edges(system);
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
    // Breadth first along the edges followed; every edge into a collection is one of its
    // ways in, whichever collection is read first (the search repeats a step when rows
    // it depends on grow).
    let mut shared: Vec<String> = Vec::new();
    while let Some(current) = queue.pop_front() {
        for e in edges.iter().filter(|e| e.from == current) {
            let via = Via::Reference {
                field: e.to_field.clone(),
                from_collection: e.from.clone(),
                from_field: e.from_field.clone(),
                direction: e.direction,
                why: e.why.clone(),
            };
            let list = vias.entry(e.to.clone()).or_default();
            if !list.contains(&via) {
                list.push(via);
            }
            if e.direction == Direction::To && !shared.contains(&e.to) {
                shared.push(e.to.clone());
            }
            if !order.contains(&e.to) {
                order.push(e.to.clone());
                queue.push_back(e.to.clone());
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
                        policy
                            .field_purposes(system, c, f)
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
    let followed: Vec<(&str, &str)> = edges
        .iter()
        .filter(|e| order.contains(&e.from))
        .map(|e| (e.from.as_str(), e.to.as_str()))
        .collect();
    SystemPlan {
        system: system.id.to_string(),
        name: system.name.clone(),
        steps,
        unreachable,
        shared,
        skipped,
        cycles: cycles(&followed),
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

/// Cycles among the edges followed (a collection reaching itself included).
fn cycles(edges: &[(&str, &str)]) -> Vec<String> {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
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
                from_field: "id".into(),
                direction: Direction::From,
                why: "rows of `comments` whose `user_id` references one of the person's `users` rows are the person's".into(),
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

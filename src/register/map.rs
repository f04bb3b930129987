//! The data map: where personal data is held and where it goes, drawn from the policy as
//! an SVG in five columns (systems → collections → categories → purposes → recipients,
//! with each recipient's countries), the recipients that take data out of the EEA
//! marked. The same flows are listed as [`Flow`]s for a text alternative.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::policy::Policy;

/// One node of the map.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    pub column: usize,
    pub key: String,
    pub label: String,
    /// A recipient that takes data out of the EEA.
    pub leaves_eea: bool,
}

/// One link between nodes of adjacent columns, by key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Flow {
    pub from: String,
    pub to: String,
}

/// The columns' headings.
pub const COLUMNS: [&str; 5] = [
    "Systems",
    "Collections",
    "Categories",
    "Purposes",
    "Recipients",
];

/// A category `field` is covered by a purpose's `declared` one: the same, or below it.
fn covers(declared: &str, field: &str) -> bool {
    field == declared
        || field
            .strip_prefix(declared)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// The map's nodes and flows.
pub fn build(policy: &Policy) -> (Vec<Node>, Vec<Flow>) {
    let mut nodes = Vec::new();
    let mut flows = BTreeSet::new();
    let mut categories = BTreeSet::new();
    for s in &policy.systems {
        let skey = format!("system:{}", s.id.as_str());
        nodes.push(Node {
            column: 0,
            key: skey.clone(),
            label: s.name.clone(),
            leaves_eea: false,
        });
        for c in &s.collections {
            let ckey = format!("collection:{}.{}", s.id.as_str(), c.name.as_str());
            nodes.push(Node {
                column: 1,
                key: ckey.clone(),
                label: format!("{}.{}", s.id.as_str(), c.name.as_str()),
                leaves_eea: false,
            });
            flows.insert(Flow {
                from: skey.clone(),
                to: ckey.clone(),
            });
            for f in &c.fields {
                for cat in &f.categories {
                    categories.insert(cat.as_str().to_owned());
                    flows.insert(Flow {
                        from: ckey.clone(),
                        to: format!("category:{}", cat.as_str()),
                    });
                }
            }
        }
    }
    nodes.extend(categories.iter().map(|c| Node {
        column: 2,
        key: format!("category:{c}"),
        label: c.clone(),
        leaves_eea: false,
    }));
    let mut recipients = BTreeSet::new();
    for p in &policy.purposes {
        let pkey = format!("purpose:{}", p.id.as_str());
        nodes.push(Node {
            column: 3,
            key: pkey.clone(),
            label: p.name.clone(),
            leaves_eea: false,
        });
        for c in &categories {
            if p.categories.iter().any(|d| covers(d.as_str(), c)) {
                flows.insert(Flow {
                    from: format!("category:{c}"),
                    to: pkey.clone(),
                });
            }
        }
        for r in &p.recipients {
            recipients.insert(r.as_str().to_owned());
            flows.insert(Flow {
                from: pkey.clone(),
                to: format!("recipient:{}", r.as_str()),
            });
        }
    }
    for r in &recipients {
        let (label, leaves_eea) = match policy.processor(r) {
            Some(p) => {
                // In the register's words: the country and how the transfer is lawful.
                let to = super::view::transfers_of(p);
                let mut label = format!("{} ({})", p.name, p.country.as_str());
                if !to.is_empty() {
                    let _ = write!(label, " → outside the EEA: {}", to.join("; "));
                }
                (label, !to.is_empty())
            }
            None => (r.clone(), false),
        };
        nodes.push(Node {
            column: 4,
            key: format!("recipient:{r}"),
            label,
            leaves_eea,
        });
    }
    (nodes, flows.into_iter().collect())
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLUMN_WIDTH: usize = 230;
const GAP: usize = 40;
const ROW: usize = 34;
const NODE_HEIGHT: usize = 26;
const TOP: usize = 44;
/// Characters a node's box shows; the whole label is its tooltip.
const SHOWN: usize = 30;

/// The map as an SVG document.
pub fn svg(policy: &Policy) -> String {
    let (nodes, flows) = build(policy);
    let mut row = [0usize; 5];
    let mut at = std::collections::HashMap::new();
    for n in &nodes {
        at.insert(n.key.as_str(), (n.column, row[n.column]));
        row[n.column] += 1;
    }
    let rows = row.iter().copied().max().unwrap_or(0).max(1);
    let width = 5 * COLUMN_WIDTH + 4 * GAP + 20;
    let height = TOP + rows * ROW + 20;
    let x = |column: usize| 10 + column * (COLUMN_WIDTH + GAP);
    let y = |r: usize| TOP + r * ROW;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-labelledby="map-title map-desc" font-family="system-ui, sans-serif" font-size="13">
<title id="map-title">Where personal data is held and where it goes</title>
<desc id="map-desc">Systems hold collections, whose fields hold categories of personal data; purposes use categories; recipients receive the data of purposes. Recipients outside the EEA are drawn in red. The list below the map gives the same links as text.</desc>
"##
    );
    for (i, heading) in COLUMNS.iter().enumerate() {
        let _ = writeln!(
            out,
            r##"<text x="{}" y="24" font-weight="700" font-size="15">{heading}</text>"##,
            x(i)
        );
    }
    for f in &flows {
        let (Some(&(c1, r1)), Some(&(c2, r2))) = (at.get(f.from.as_str()), at.get(f.to.as_str()))
        else {
            continue;
        };
        let (x1, y1) = (x(c1) + COLUMN_WIDTH, y(r1) + NODE_HEIGHT / 2);
        let (x2, y2) = (x(c2), y(r2) + NODE_HEIGHT / 2);
        let mid = (x1 + x2) / 2;
        let _ = writeln!(
            out,
            r##"<path d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" fill="none" stroke="#8a8a8a" stroke-width="1"/>"##
        );
    }
    for n in &nodes {
        let (c, r) = at[n.key.as_str()];
        let (stroke, fill) = if n.leaves_eea {
            ("#b00020", "#fdecee")
        } else {
            ("#555555", "#ffffff")
        };
        let shown: String = if n.label.chars().count() > SHOWN {
            n.label.chars().take(SHOWN - 1).chain(['…']).collect()
        } else {
            n.label.clone()
        };
        let _ = writeln!(
            out,
            r##"<g><title>{}</title><rect x="{}" y="{}" width="{COLUMN_WIDTH}" height="{NODE_HEIGHT}" rx="4" fill="{fill}" stroke="{stroke}" stroke-width="{}"/><text x="{}" y="{}">{}</text></g>"##,
            xml(&n.label),
            x(c),
            y(r),
            if n.leaves_eea { 2 } else { 1 },
            x(c) + 6,
            y(r) + 17,
            xml(&shown)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Policy {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        Policy::load(&dir).unwrap().into_valid().unwrap()
    }

    /// Art. 30(1)(e): the map marks exactly the recipients whose data reaches a country
    /// outside the EEA, through their seat or a declared transfer.
    #[test]
    fn exactly_the_recipients_outside_the_eea_are_marked() {
        let policy = demo();
        let (nodes, _) = build(&policy);
        let recipients: Vec<&Node> = nodes.iter().filter(|n| n.column == 4).collect();
        assert!(!recipients.is_empty());
        let mut marked = 0;
        for n in &recipients {
            let id = n.key.strip_prefix("recipient:").unwrap();
            let p = policy.processor(id).unwrap();
            let outside = !p.country.in_eea() || p.transfers.iter().any(|t| !t.country.in_eea());
            assert_eq!(n.leaves_eea, outside, "{}", n.label);
            assert_eq!(n.label.contains("outside the EEA"), outside, "{}", n.label);
            // In the register's words, so that the map and the register never disagree.
            for t in super::super::view::transfers_of(p) {
                assert!(n.label.contains(&t), "{t} not in {}", n.label);
            }
            marked += usize::from(outside);
        }
        // The demo sends data to the United States (hosting) and keeps some in the EEA.
        assert!(marked > 0 && marked < recipients.len(), "{marked}");
    }

    /// Every link the policy declares is drawn, and nothing else: a collection to each
    /// category of its fields, a category to each purpose declaring it (or a category
    /// above it), a purpose to each of its recipients.
    #[test]
    fn the_links_are_those_the_policy_declares() {
        let policy = demo();
        let (nodes, flows) = build(&policy);
        let mut expected = BTreeSet::new();
        let mut cats = BTreeSet::new();
        for s in &policy.systems {
            for c in &s.collections {
                let ckey = format!("collection:{}.{}", s.id.as_str(), c.name.as_str());
                expected.insert((format!("system:{}", s.id.as_str()), ckey.clone()));
                for f in &c.fields {
                    for cat in &f.categories {
                        cats.insert(cat.as_str().to_owned());
                        expected.insert((ckey.clone(), format!("category:{}", cat.as_str())));
                    }
                }
            }
        }
        for p in &policy.purposes {
            for c in &cats {
                let declared = p.categories.iter().any(|d| {
                    let d = d.as_str();
                    c == d || c.starts_with(&format!("{d}."))
                });
                if declared {
                    expected.insert((
                        format!("category:{c}"),
                        format!("purpose:{}", p.id.as_str()),
                    ));
                }
            }
            for r in &p.recipients {
                expected.insert((
                    format!("purpose:{}", p.id.as_str()),
                    format!("recipient:{}", r.as_str()),
                ));
            }
        }
        let drawn: BTreeSet<(String, String)> = flows
            .iter()
            .map(|f| (f.from.clone(), f.to.clone()))
            .collect();
        assert_eq!(drawn, expected);
        // Each end of each link is a node, in the next column.
        for f in &flows {
            let col = |k: &str| nodes.iter().find(|n| n.key == k).unwrap().column;
            assert_eq!(col(&f.from) + 1, col(&f.to), "{f:?}");
        }
        assert!(!covers("user.contact", "user.contactless"));
        assert!(covers("user.contact", "user.contact.email"));
    }

    #[test]
    fn the_svg_draws_every_node_and_link_with_text_escaped() {
        let mut policy = demo();
        policy.purposes[0].name = "Billing & <invoices>".into();
        let (nodes, flows) = build(&policy);
        let svg = svg(&policy);
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect ").count(), nodes.len());
        assert_eq!(svg.matches("<path ").count(), flows.len());
        assert!(svg.contains("Billing &amp; &lt;invoices&gt;"));
        assert!(!svg.contains("<invoices>"));
        assert!(svg.contains("stroke=\"#b00020\""));
    }
}

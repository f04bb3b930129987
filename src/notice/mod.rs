//! The public privacy notice (Art. 13/14), rendered from the policy in Markdown or HTML
//! with the sections of the overview: per purpose the personal data, the third parties
//! and the retention; then the rights and the contact.

use minijinja::{AutoEscape, Environment};
use serde::Serialize;

use crate::policy::{LegalBasis, Policy};
use crate::register::view;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Md,
    Html,
}

#[derive(Serialize)]
struct NoticeView {
    title: String,
    controller: Option<ControllerView>,
    purposes: Vec<PurposeView>,
    rights: Vec<Right>,
    measures: Vec<String>,
    portal: &'static str,
}

#[derive(Serialize)]
struct ControllerView {
    name: String,
    address: String,
    email: String,
    website: Option<String>,
    dpo: Option<(String, String)>,
    authority: Option<(String, Option<String>)>,
}

#[derive(Serialize)]
struct PurposeView {
    id: String,
    name: String,
    description: Option<String>,
    legal_basis: String,
    personal_data: Vec<String>,
    third_parties: Vec<ThirdParty>,
    retention: String,
    retention_note: Option<String>,
    source: String,
}

#[derive(Serialize)]
struct ThirdParty {
    name: String,
    service: Option<String>,
    country: String,
    transfers: Vec<String>,
}

#[derive(Serialize)]
struct Right {
    title: &'static str,
    article: &'static str,
    text: &'static str,
}

const RIGHTS: &[Right] = &[
    Right {
        title: "Access",
        article: "Art. 15",
        text: "You may ask whether we process your personal data and receive a copy of it with the details of the processing.",
    },
    Right {
        title: "Rectification",
        article: "Art. 16",
        text: "You may have inaccurate data corrected and incomplete data completed.",
    },
    Right {
        title: "Erasure",
        article: "Art. 17",
        text: "You may have your data erased unless the law requires us to keep it; we then tell you what we keep, why and until when.",
    },
    Right {
        title: "Restriction",
        article: "Art. 18",
        text: "You may ask us to keep your data but stop using it while a question about it is settled.",
    },
    Right {
        title: "Data portability",
        article: "Art. 20",
        text: "You may receive the data you gave us under consent or contract in a machine-readable format.",
    },
    Right {
        title: "Objection",
        article: "Art. 21",
        text: "You may object to processing based on legitimate interests or used for direct marketing.",
    },
];

const WITHDRAW: Right = Right {
    title: "Withdrawing consent",
    article: "Art. 7(3)",
    text: "Where we rely on your consent you may withdraw it at any time; this does not affect processing before the withdrawal.",
};

/// Art. 21(4): the right to object to direct marketing is brought to the person's
/// attention explicitly, apart from any other information.
const MARKETING: Right = Right {
    title: "Objection to direct marketing",
    article: "Art. 21(2) and (3)",
    text: "You may object at any time to the use of your data for direct marketing; we then stop it at once, with no exception, and keep your address only so that no marketing reaches you again. Choose \"Stop all direct marketing to me\" on our request page.",
};

const COMPLAINT: Right = Right {
    title: "Complaint",
    article: "Art. 77",
    text: "You may lodge a complaint with a supervisory authority, in particular in the country where you live or work.",
};

fn build(policy: &Policy) -> NoticeView {
    let controller = policy.controller.as_ref().map(|c| ControllerView {
        name: c.name.clone(),
        address: c.address.clone(),
        email: c.contact_email.to_string(),
        website: c.website.clone(),
        dpo: c
            .dpo
            .as_ref()
            .map(|d| (d.name.clone(), d.email.to_string())),
        authority: c
            .supervisory_authority
            .as_ref()
            .map(|a| (a.name.clone(), a.url.clone())),
    });
    let purposes = policy
        .purposes
        .iter()
        .map(|p| {
            let mut legal_basis = p.legal_basis.label().to_owned();
            if let Some(i) = &p.legitimate_interest {
                legal_basis = format!("{legal_basis}: {i}");
            }
            if let Some(c) = p.special_category_condition {
                legal_basis = format!("{legal_basis}; for special categories: {}", c.label());
            }
            PurposeView {
                id: p.id.to_string(),
                name: p.name.clone(),
                description: p.description.clone(),
                legal_basis,
                personal_data: view::category_names(policy, p)
                    .into_iter()
                    .map(|(n, _)| n.to_owned())
                    .collect(),
                third_parties: view::recipients(policy, p)
                    .into_iter()
                    .map(|r| ThirdParty {
                        name: r.name.clone(),
                        service: r.service.clone(),
                        country: view::country_name(&r.country),
                        transfers: view::transfers_of(r),
                    })
                    .collect(),
                retention: view::retention_text(p),
                retention_note: p.retention.as_ref().and_then(|r| r.note.clone()),
                source: p.source().to_owned(),
            }
        })
        .collect();
    let mut rights: Vec<Right> = RIGHTS.iter().map(copy_right).collect();
    if policy
        .purposes
        .iter()
        .any(|p| *p.legal_basis == LegalBasis::Consent)
    {
        rights.push(copy_right(&WITHDRAW));
    }
    if policy.purposes.iter().any(|p| p.direct_marketing) {
        rights.push(copy_right(&MARKETING));
    }
    rights.push(copy_right(&COMPLAINT));
    let title = match &policy.controller {
        Some(c) => format!("Overview of {}'s personal data handling", c.name),
        None => "Overview of our personal data handling".to_owned(),
    };
    NoticeView {
        title,
        controller,
        purposes,
        rights,
        measures: view::measures_text(policy),
        portal: "/",
    }
}

fn copy_right(r: &Right) -> Right {
    Right {
        title: r.title,
        article: r.article,
        text: r.text,
    }
}

/// Renders the notice. Template errors are bugs of lethe, reported as errors, not panics.
pub fn render(policy: &Policy, format: Format) -> anyhow::Result<String> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.add_template("notice.md", include_str!("../../templates/notice.md"))?;
    env.add_template("notice.html", include_str!("../../templates/notice.html"))?;
    let name = match format {
        Format::Md => "notice.md",
        Format::Html => "notice.html",
    };
    Ok(env.get_template(name)?.render(build(policy))?)
}

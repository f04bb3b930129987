//! The privacy notice and the Art. 30 register, as a DPO or a visitor reads them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn lethe(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .output()
        .expect("run lethe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The text of the section that starts at `heading`, up to the next `## `.
fn section<'a>(md: &'a str, heading: &str) -> &'a str {
    let start = md
        .find(heading)
        .unwrap_or_else(|| panic!("no section {heading}:\n{md}"));
    let rest = &md[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

#[test]
fn the_notice_shows_each_purpose_with_its_data_recipients_and_retention() {
    let (code, md, err) = lethe(&["notice", "--policies", demo().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(md.starts_with("# Overview of Example Software Ltd.'s personal data handling"));

    let billing = section(&md, "## Registration and billing");
    assert!(billing.contains("*To provision you the service*"));
    assert!(
        billing.contains("**Personal data:** Name, Email address, Billing and payment information")
    );
    assert!(billing.contains("Amazon Web Services EMEA SARL"));
    assert!(billing.contains("Proton AG"));
    assert!(billing.contains("Stripe Payments Europe"));
    assert!(billing.contains("Example Accounting Kft."));
    assert!(billing.contains("**Retention:** 8 years after invoicing, where the law requires it"));
    assert!(billing.contains("Performance of a contract (Art. 6(1)(b))"));
    assert!(billing.contains("to the United States: Standard Contractual Clauses"));

    let visitors = section(&md, "## Visitors and cookies");
    assert!(visitors.contains("IP address, Browser information, Webpage usage information"));
    assert!(visitors.contains("Google Ireland Limited"));
    assert!(visitors.contains("**Retention:** 90 days after collection"));
    assert!(visitors.contains("Consent (Art. 6(1)(a))"));

    let content = section(&md, "## Content");
    assert!(content.contains("Free text within comments and descriptions"));
    assert!(content.contains("**Retention:** until the account is closed"));

    let rights = section(&md, "## Rights and questions");
    for r in [
        "Access (Art. 15)",
        "Erasure (Art. 17)",
        "Data portability (Art. 20)",
        "Complaint (Art. 77)",
        "Withdrawing consent",
    ] {
        assert!(rights.contains(r), "{r} missing");
    }
    assert!(rights.contains("(NAIH)"));

    let contact = section(&md, "## Contact information");
    assert!(contact.contains("H-1221 Budapest"));
    assert!(contact.contains("privacy@example.com"));
    assert!(contact.contains("Data protection officer: Jane Doe"));
}

#[test]
fn the_html_notice_escapes_what_the_policy_says() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(demo()).unwrap() {
        let p = entry.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let text = text.replace(
            "name: Content",
            "name: \"Content <script>alert(1)</script>\"",
        );
        std::fs::write(dir.path().join(p.file_name().unwrap()), text).unwrap();
    }
    let (code, html, err) = lethe(&[
        "notice",
        "--format",
        "html",
        "--policies",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(html.contains("<h2 id=\"h-billing\">Registration and billing</h2>"));
    assert!(
        html.contains("Content &lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>"));
}

#[test]
fn the_register_csv_parses_back_with_one_row_per_purpose() {
    let out = tempfile::NamedTempFile::new().unwrap();
    let (code, _, err) = lethe(&[
        "register",
        "export",
        "--format",
        "csv",
        "--policies",
        demo().to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let mut r = csv::Reader::from_path(out.path()).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        header.join(","),
        "purpose_id,purpose,legal_basis,data_subjects,data_categories,recipients,transfers,retention,security_measures,source,systems,controller,controller_contact,dpo"
    );
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    let col = |row: &csv::StringRecord, name: &str| {
        row[header.iter().position(|h| h == name).unwrap()].to_owned()
    };
    let billing = rows.iter().find(|r| &r[0] == "billing").unwrap();
    assert_eq!(
        col(billing, "purpose"),
        "Registration and billing: To provision you the service"
    );
    assert_eq!(
        col(billing, "legal_basis"),
        "Performance of a contract (Art. 6(1)(b))"
    );
    assert_eq!(col(billing, "data_subjects"), "Customers");
    assert!(col(billing, "data_categories").contains("Email address (user.contact.email)"));
    assert!(
        col(billing, "recipients")
            .contains("Amazon Web Services EMEA SARL (processor, Luxembourg)")
    );
    assert!(col(billing, "transfers").contains("the United States: Standard Contractual Clauses (Art. 46(2)(c)) (via Amazon Web Services EMEA SARL)"));
    assert!(
        col(billing, "retention")
            .starts_with("8 years after invoicing, where the law requires it (Accounting law")
    );
    assert!(col(billing, "security_measures").contains("TLS 1.2 or higher"));
    assert_eq!(col(billing, "source"), "the data subject");
    assert_eq!(col(billing, "systems"), "Customer application database");
    assert_eq!(col(billing, "controller"), "Example Software Ltd.");
    assert!(col(billing, "controller_contact").ends_with("privacy@example.com"));
    assert_eq!(col(billing, "dpo"), "Jane Doe <dpo@example.com>");
    let analytics = rows.iter().find(|r| &r[0] == "analytics").unwrap();
    assert_eq!(col(analytics, "retention"), "90 days after collection");
    let content = rows.iter().find(|r| &r[0] == "content").unwrap();
    assert_eq!(col(content, "retention"), "until the account is closed");
}

#[test]
fn the_register_json_has_the_same_rows() {
    let (code, json, err) = lethe(&[
        "register",
        "export",
        "--format",
        "json",
        "--policies",
        demo().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["purpose_id"], "analytics");
    assert_eq!(rows[1]["recipients"].as_array().unwrap().len(), 2);
}

#[test]
fn outputs_refuse_an_invalid_policy() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check/unknown-processor");
    let (code, out, err) = lethe(&["notice", "--policies", dir.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("unknown processor `hostin`"), "{err}");
    assert!(err.contains("run `lethe check`"), "{err}");
}

#[test]
fn bad_arguments_are_usage_errors() {
    let (code, _, err) = lethe(&["register", "export", "--format", "xlsx"]);
    assert_eq!(code, 2);
    assert!(err.contains("xlsx"), "{err}");
}

/// Art. 21(4): where data is used for direct marketing, the notice brings the right to
/// object to it to the reader's attention, on its own; where none is, it says nothing of it.
#[test]
fn the_notice_names_the_right_to_stop_direct_marketing_only_where_there_is_any() {
    let (code, md, err) = lethe(&["notice", "--policies", demo().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!md.contains("Objection to direct marketing"), "{md}");
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("policies");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(demo()).unwrap() {
        let p = e.unwrap().path();
        let mut text = std::fs::read_to_string(&p).unwrap();
        if p.ends_with("purposes.yaml") {
            text.push_str(
                "\n  - id: newsletter\n    name: Newsletter\n    legal_basis: legitimate_interests\n    legitimate_interest: Offers of our own similar products\n    direct_marketing: true\n    subjects: [customer]\n    categories: [user.contact.email]\n    retention: { keep_for: 2y, from: collected }\n",
            );
        }
        std::fs::write(dst.join(p.file_name().unwrap()), text).unwrap();
    }
    let (code, md, err) = lethe(&["notice", "--policies", dst.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(md.contains("Objection to direct marketing"), "{md}");
    assert!(md.contains("Art. 21(2) and (3)"), "{md}");
}

//! Vendor agreements and TOMs: obligations, the check and its exit code, flow-down, and
//! the matrix, on a small fixture and on the demo policies.

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::NaiveDate;
use lethe::policy::Policy;
use lethe::vendors::{self, FindingKind};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vendors")
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
}

/// The fixture with `from` replaced by `to`, in a temporary directory.
fn variant(from: &str, to: &str) -> tempfile::TempDir {
    let text = std::fs::read_to_string(fixture().join("policy.yaml")).unwrap();
    assert!(text.contains(from), "{from}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), text.replacen(from, to, 1)).unwrap();
    dir
}

fn load(dir: &Path) -> Policy {
    Policy::load(dir).unwrap().into_valid().unwrap()
}

fn lethe(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn obligations_pick_the_strictest_and_name_every_source() {
    let obligations = vendors::obligations(&load(&fixture()));
    let breach = obligations
        .iter()
        .find(|o| o.parameter == "breach_notice_hours")
        .unwrap();
    assert_eq!(breach.strictest, "≤ 24 hours");
    assert_eq!(breach.imposed_by, ["cust-b", "cust-c"]);
    assert_eq!(breach.all.len(), 3);
    assert_eq!(
        breach.all[0],
        ("cust-a".to_owned(), "≤ 48 hours".to_owned())
    );
    assert!(breach.met);
    let tls = obligations
        .iter()
        .find(|o| o.parameter == "tls_min_version")
        .unwrap();
    assert_eq!(
        (tls.strictest.as_str(), tls.imposed_by.as_slice()),
        ("≥ 1.3", ["cust-b".to_owned()].as_slice())
    );
    // Promises of processors are not obligations on us.
    assert_eq!(obligations.len(), 3);
}

#[test]
fn one_weaker_measure_flips_the_check_and_says_exactly_what() {
    let ok = fixture();
    assert!(vendors::check(&load(&ok), today()).is_empty());
    let (code, _) = lethe(&[
        "vendors",
        "check",
        "--policies",
        ok.to_str().unwrap(),
        "--as-of",
        "2026-11-27",
    ]);
    assert_eq!(code, 0);

    let weaker = variant(
        "  breach_notice_hours: 24\n  tls_min_version",
        "  breach_notice_hours: 48\n  tls_min_version",
    );
    let findings = vendors::check(&load(weaker.path()), today());
    let fails: Vec<_> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::MeasureFails)
        .collect();
    assert_eq!(fails.len(), 2, "{findings:#?}"); // cust-b and cust-c demand 24 h
    let f = fails
        .iter()
        .find(|f| f.agreement.as_deref() == Some("cust-b"))
        .unwrap();
    assert_eq!(f.parameter.as_deref(), Some("breach_notice_hours"));
    assert_eq!(f.required.as_deref(), Some("≤ 24 hours"));
    assert_eq!(f.actual.as_deref(), Some("48"));
    assert_eq!(
        f.message,
        "cust-b requires breach_notice_hours ≤ 24 hours; our measures say 48"
    );
    let (code, out) = lethe(&[
        "vendors",
        "check",
        "--policies",
        weaker.path().to_str().unwrap(),
        "--as-of",
        "2026-11-27",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("cust-b requires breach_notice_hours ≤ 24 hours; our measures say 48"),
        "{out}"
    );
}

#[test]
fn a_weaker_sub_processor_is_a_flow_down_gap() {
    // The hosting provider, recipient of the content that the customers' DPAs cover,
    // promises 72 hours where we promised 24.
    let dir = variant(
        "promises: { breach_notice_hours: 24, tls_min_version",
        "promises: { breach_notice_hours: 72, tls_min_version",
    );
    let findings = vendors::check(&load(dir.path()), today());
    let gaps: Vec<_> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::FlowDown)
        .collect();
    assert_eq!(gaps.len(), 3, "{findings:#?}"); // cust-a (48), cust-b (24), cust-c (24)
    let g = gaps
        .iter()
        .find(|f| f.agreement.as_deref() == Some("cust-b"))
        .unwrap();
    assert_eq!(g.actual.as_deref(), Some("72"));
    assert!(
        g.message
            .contains("sub-processor hosting (hosting-dpa) promises 72 (Art. 28(4))"),
        "{}",
        g.message
    );
    // The analytics processor promises 96 hours but receives no customer data: no gap.
    assert!(!findings.iter().any(|f| f.message.contains("stats")));
}

#[test]
fn clauses_reviews_and_missing_agreements_are_found() {
    let dir = variant(
        "    we_are: processor\n    review_by: 2030-01-01\n    art28_clauses: [a, b, c, d, e, f, g, h]",
        "    we_are: processor\n    review_by: 2026-01-01\n    art28_clauses: [a, b, c, e, f, h]",
    );
    let findings = vendors::check(&load(dir.path()), today());
    let kinds: Vec<FindingKind> = findings.iter().map(|f| f.kind).collect();
    assert!(kinds.contains(&FindingKind::ReviewOverdue), "{findings:#?}");
    let clause = findings
        .iter()
        .find(|f| f.kind == FindingKind::MissingClause)
        .unwrap();
    assert_eq!(clause.required.as_deref(), Some("d, g"));
    let dir = variant(
        "  - { id: stats, name: Stats GmbH, country: AT, agreement: stats-dpa }",
        "  - { id: stats, name: Stats GmbH, country: AT }",
    );
    let text = std::fs::read_to_string(dir.path().join("policy.yaml")).unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        text.replace("counterparty: stats", "counterparty: Someone else"),
    )
    .unwrap();
    let findings = vendors::check(&load(dir.path()), today());
    assert!(
        findings
            .iter()
            .any(|f| f.kind == FindingKind::NoAgreement && f.message.contains("stats")),
        "{findings:#?}"
    );
}

#[test]
fn the_matrix_csv_parses_back() {
    let (code, csv) = lethe(&[
        "vendors",
        "matrix",
        "--format",
        "csv",
        "--policies",
        fixture().to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let headers: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        headers,
        [
            "family",
            "parameter",
            "measures",
            "cust-a",
            "cust-b",
            "cust-c",
            "hosting-dpa",
            "stats-dpa"
        ]
    );
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    let breach = rows
        .iter()
        .find(|r| &r[1] == "breach_notice_hours")
        .unwrap();
    assert_eq!(&breach[0], "incident_management");
    assert_eq!(&breach[2], "≤ 24 hours");
    assert_eq!(&breach[3], "≤ 48 hours");
    assert_eq!(&breach[7], "≤ 96 hours");
    let mfa = rows.iter().find(|r| &r[1] == "mfa_required").unwrap();
    assert_eq!((&mfa[3], &mfa[4]), ("", "required"));
    // Rows follow the Annex II order of the families.
    let order: Vec<&str> = rows.iter().map(|r| r.get(1).unwrap()).collect();
    assert_eq!(
        order,
        ["mfa_required", "tls_min_version", "breach_notice_hours"]
    );
    for format in ["md", "html", "json"] {
        let (code, out) = lethe(&[
            "vendors",
            "matrix",
            "--format",
            format,
            "--policies",
            fixture().to_str().unwrap(),
        ]);
        assert_eq!(code, 0);
        assert!(out.contains("breach_notice_hours"), "{format}");
    }
}

#[test]
fn the_demo_finds_real_explainable_gaps() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let findings = vendors::check(&load(&demo), today());
    let has = |kind: FindingKind, text: &str| {
        findings
            .iter()
            .any(|f| f.kind == kind && f.message.contains(text))
    };
    assert!(has(
        FindingKind::MeasureFails,
        "acme-dpa requires breach_notice_hours ≤ 24 hours; our measures say 48"
    ));
    assert!(has(
        FindingKind::MeasureFails,
        "acme-dpa requires tls_min_version ≥ 1.3; our measures say 1.2"
    ));
    assert!(has(
        FindingKind::FlowDown,
        "sub-processor aws (aws-dpa) promises 72"
    ));
    assert!(has(FindingKind::MissingClause, "accountant-dpa"));
    assert!(has(FindingKind::ReviewOverdue, "proton-dpa"));
    let (code, _) = lethe(&["vendors", "check", "--policies", demo.to_str().unwrap()]);
    assert_eq!(code, 1);
}

#[test]
fn reviews_due_within_thirty_days_are_listed_soonest_first() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let due = vendors::reviews_due(&load(&demo), today(), 30);
    assert_eq!(
        due,
        [(
            "initech-dpa".to_owned(),
            "review",
            NaiveDate::from_ymd_opt(2026, 12, 15).unwrap()
        )]
    );
    assert!(vendors::reviews_due(&load(&demo), today(), 10).is_empty());
}

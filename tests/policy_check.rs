//! `lethe check` on the demo policies and on every broken fixture under
//! `tests/fixtures/check/`: each fixture's `expect.txt` lists the diagnostics it must
//! produce as `severity file:line[:column] message-fragment`.

use std::path::{Path, PathBuf};
use std::process::Command;

use lethe::policy::{Diagnostic, Policy, Severity};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check")
}

fn lethe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .env_remove("LETHE_POLICIES")
        .output()
        .expect("run lethe")
}

struct Expected {
    severity: Severity,
    file: String,
    line: usize,
    column: Option<usize>,
    fragment: String,
}

fn parse_expect(text: &str) -> Vec<Expected> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (sev, rest) = l.split_once(' ').unwrap();
            let (loc, fragment) = rest.split_once(' ').unwrap();
            let mut parts = loc.split(':');
            Expected {
                severity: if sev == "error" {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                file: parts.next().unwrap().to_owned(),
                line: parts.next().unwrap().parse().unwrap(),
                column: parts.next().map(|c| c.parse().unwrap()),
                fragment: fragment.to_owned(),
            }
        })
        .collect()
}

fn matches(d: &Diagnostic, e: &Expected) -> bool {
    d.severity == e.severity
        && d.location
            .file
            .file_name()
            .is_some_and(|f| f.to_string_lossy() == e.file)
        && d.location.line == e.line
        && e.column.is_none_or(|c| c == d.location.column)
        && d.message.contains(&e.fragment)
}

#[test]
fn the_demo_policies_pass_without_findings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let checked = Policy::load(&dir).unwrap();
    let shown: Vec<String> = checked.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(shown.is_empty(), "{shown:#?}");
    assert_eq!(checked.policy.purposes.len(), 3);
    let out = lethe(&["check", "--policies", dir.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 error(s), 0 warning(s)"));
}

#[test]
fn the_minimal_fixture_is_valid() {
    let checked = Policy::load(&fixtures().join("valid-minimal")).unwrap();
    let shown: Vec<String> = checked.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(shown.is_empty(), "{shown:#?}");
}

#[test]
fn every_broken_fixture_reports_its_error_at_its_line() {
    let mut count = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(expect) = std::fs::read_to_string(dir.join("expect.txt")) else {
            continue;
        };
        count += 1;
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let checked = Policy::load(&dir).unwrap();
        let expected = parse_expect(&expect);
        for e in &expected {
            if checked.diagnostics.iter().any(|d| matches(d, e)) {
                continue;
            }
            failures.push(format!(
                "{name}: expected {:?} {}:{}:{:?} `{}`, got:\n{}",
                e.severity,
                e.file,
                e.line,
                e.column,
                e.fragment,
                checked
                    .diagnostics
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        if !failures.is_empty() {
            continue;
        }
        // The command line says the same, and exits 1 exactly when there are errors.
        let out = lethe(&["check", "--policies", dir.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let has_errors = expected.iter().any(|e| e.severity == Severity::Error);
        assert_eq!(
            out.status.code(),
            Some(if has_errors { 1 } else { 0 }),
            "{name}: {stdout}"
        );
        for e in &expected {
            assert!(
                stdout.contains(&format!("{}:{}:", e.file, e.line)),
                "{name}: {stdout}"
            );
            assert!(stdout.contains(&e.fragment), "{name}: {stdout}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(count >= 20, "only {count} fixtures found");
}

#[test]
fn all_errors_are_reported_at_once() {
    let checked = Policy::load(&fixtures().join("many-errors-at-once")).unwrap();
    assert_eq!(checked.errors().count(), 5, "{:#?}", checked.diagnostics);
}

#[test]
fn hints_name_the_likely_fix() {
    let checked = Policy::load(&fixtures().join("unknown-processor")).unwrap();
    let d = checked.errors().next().unwrap();
    assert_eq!(d.key, "purposes[billing].recipients");
    assert_eq!(d.hint.as_deref(), Some("did you mean `hosting`?"));
    let checked = Policy::load(&fixtures().join("unknown-top-level-key")).unwrap();
    let d = checked.errors().next().unwrap();
    assert_eq!(d.hint.as_deref(), Some("did you mean `purposes`?"));
}

#[test]
fn check_json_lists_the_diagnostics() {
    let dir = fixtures().join("unknown-subject");
    let out = lethe(&[
        "check",
        "--format",
        "json",
        "--policies",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"], 1);
    assert_eq!(v["diagnostics"][0]["location"]["line"], 9);
    assert_eq!(v["diagnostics"][0]["severity"], "error");
}

#[test]
fn a_missing_policy_directory_is_a_usage_error() {
    let out = lethe(&["check", "--policies", "/nonexistent/lethe-policies"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the policy directory"));
}

/// The demo policies with the hosting processor's erasure notice going to `webhook`.
fn with_webhook(dir: &Path, webhook: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dst = dir.join("policies");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap().replace(
            "erasure_notice: { email: aws-privacy@example.net }",
            &format!("erasure_notice: {{ webhook: \"{webhook}\" }}"),
        );
        std::fs::write(dst.join(p.file_name().unwrap()), text).unwrap();
    }
    dst
}

#[test]
fn a_webhook_lethe_would_not_call_is_an_error_unless_the_configuration_allows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("lethe.toml");
    std::fs::write(&config, "").unwrap();
    let check = |policies: &Path| {
        lethe(&[
            "check",
            "--policies",
            policies.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
    };
    for (url, why) in [
        ("http://hooks.example.com/erasure", "only https"),
        ("https://10.0.0.5/erasure", "a private address"),
        (
            "https://169.254.169.254/erasure",
            "a cloud metadata address",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let policies = with_webhook(dir.path(), url);
        let out = check(&policies);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{url}: {text}");
        assert!(
            text.contains("processors[aws].erasure_notice.webhook") && text.contains(why),
            "{url}: {text}"
        );
    }
    // Allowed by name and network in the configuration: no finding.
    std::fs::write(
        &config,
        "[webhooks]\nallow_http_hosts = [\"10.0.0.5\"]\nallow_addresses = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    let policies = with_webhook(tmp.path(), "http://10.0.0.5/erasure");
    let out = check(&policies);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A configuration naming something that is no address is refused.
    std::fs::write(&config, "[webhooks]\nallow_addresses = [\"ten\"]\n").unwrap();
    let out = check(&policies);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("webhooks.allow_addresses"));
}

/// The demo policy with one text edit applied to one file.
fn demo_with(dir: &Path, file: &str, from: &str, to: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dst = dir.join("policies");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let mut text = std::fs::read_to_string(&p).unwrap();
        if p.ends_with(file) {
            assert!(text.contains(from), "{from} not in {file}");
            text = text.replacen(from, to, 1);
        }
        std::fs::write(dst.join(p.file_name().unwrap()), text).unwrap();
    }
    dst
}

/// Errors do not cascade: an indentation slip in one file is one error, not one more in
/// every file that names what it declares; a purpose with a bad value still counts as
/// declared, so nothing it uses is called unused.
#[test]
fn one_mistake_is_one_error() {
    let tmp = tempfile::tempdir().unwrap();
    let slipped = demo_with(
        tmp.path(),
        "processors.yaml",
        "\n    name: Amazon Web Services",
        "\n   name: Amazon Web Services",
    );
    let checked = Policy::load(&slipped).unwrap();
    let all: Vec<String> = checked.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(all.len(), 1, "{all:#?}");
    assert!(all[0].contains("processors.yaml"), "{all:#?}");

    let tmp = tempfile::tempdir().unwrap();
    let bad_value = demo_with(
        tmp.path(),
        "purposes.yaml",
        "keep_for: 90d",
        "keep_for: ninety days",
    );
    let checked = Policy::load(&bad_value).unwrap();
    let all: Vec<String> = checked.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(all.len(), 1, "{all:#?}");
    assert!(
        all[0].contains("purposes.yaml") && all[0].contains("ninety days"),
        "{all:#?}"
    );
}

//! 500 agreements × 60 control parameters: load and validate the policy, then compute
//! the obligations and the check; wall time of each and the process's peak memory.
//! Baseline in the same run: reading and parsing the same YAML without validation.
//!
//! `cargo bench --bench vendors`

use std::fmt::Write;
use std::time::Instant;

use lethe::policy::Policy;

const AGREEMENTS: usize = 500;
const PARAMS: usize = 60;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let builtin_numbers = [
        ("breach_notice_hours", 24, 96),
        ("backup_interval_hours", 6, 48),
        ("pentest_interval_months", 3, 24),
        ("log_retention_days", 90, 730),
        ("access_review_interval_days", 30, 365),
        ("patch_critical_within_days", 1, 30),
        ("rto_hours", 1, 48),
        ("rpo_hours", 1, 24),
        ("vuln_scan_interval_days", 1, 30),
        ("erasure_within_days", 7, 60),
    ];
    let mut params: Vec<(String, u32, u32)> = builtin_numbers
        .iter()
        .map(|(k, a, b)| (k.to_string(), *a, *b))
        .collect();
    let mut yaml = String::from(
        "controller: { name: Bench Ltd., address: Vienna, contact_email: privacy@bench.example }\n\
         purposes:\n  - { id: content, name: Content, legal_basis: contract, subjects: [customer], categories: [user.name], recipients: [p0, p1, p2, p3, p4, p5, p6, p7, p8, p9], retention: { keep_for: 1y } }\n\
         processors:\n",
    );
    for i in 0..10 {
        writeln!(
            yaml,
            "  - {{ id: p{i}, name: Processor {i}, country: DE, agreement: down-{i} }}"
        )
        .unwrap();
    }
    yaml.push_str("controls:\n");
    for i in params.len()..PARAMS {
        writeln!(yaml, "  - {{ id: custom_{i}, family: testing, type: number, stricter: lower, unit: days, name: custom control {i} }}").unwrap();
        params.push((format!("custom_{i}"), 1, 100));
    }
    yaml.push_str("measures:\n");
    for (k, lo, hi) in &params {
        writeln!(yaml, "  {k}: {}", (lo + hi) / 2).unwrap();
    }
    yaml.push_str("agreements:\n");
    let mut seed = 42u64;
    let mut rnd = |n: u32| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % u64::from(n.max(1))) as u32
    };
    for a in 0..AGREEMENTS {
        let (id, side, key) = if a < 10 {
            (format!("down-{a}"), "controller", "promises")
        } else {
            (format!("cust-{a}"), "processor", "requires")
        };
        writeln!(yaml, "  - id: {id}\n    counterparty: {}\n    we_are: {side}\n    art28_clauses: [a, b, c, d, e, f, g, h]\n    {key}:", if a < 10 { format!("p{a}") } else { format!("Customer {a}") }).unwrap();
        for (k, lo, hi) in &params {
            writeln!(yaml, "      {k}: {}", lo + rnd(hi - lo + 1)).unwrap();
        }
    }
    std::fs::write(dir.path().join("policy.yaml"), &yaml).unwrap();
    println!(
        "policy: {AGREEMENTS} agreements × {PARAMS} parameters, {:.1} MB of YAML",
        yaml.len() as f64 / 1e6
    );

    let t = Instant::now();
    let node = marked_yaml::parse_yaml(0, &yaml).unwrap();
    let baseline = t.elapsed();
    std::hint::black_box(node);

    let t = Instant::now();
    let checked = Policy::load(dir.path()).unwrap();
    let load = t.elapsed();
    assert_eq!(checked.errors().count(), 0, "{:?}", checked.errors().next());
    let policy = checked.into_valid().unwrap();

    let t = Instant::now();
    let obligations = lethe::vendors::obligations(&policy);
    let ob = t.elapsed();
    let t = Instant::now();
    let findings = lethe::vendors::check(&policy, chrono::Utc::now().date_naive());
    let ch = t.elapsed();
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned())
        })
        .unwrap_or_else(|| "?".into());
    println!(
        "bare YAML parse (baseline): {:>8.1} ms",
        baseline.as_secs_f64() * 1e3
    );
    println!(
        "load + validate policy:     {:>8.1} ms   ({:.2}x the bare parse)",
        load.as_secs_f64() * 1e3,
        load.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "obligations ({} rows):      {:>8.1} ms",
        obligations.len(),
        ob.as_secs_f64() * 1e3
    );
    println!(
        "check ({} findings):     {:>8.1} ms",
        findings.len(),
        ch.as_secs_f64() * 1e3
    );
    println!("peak memory (VmHWM):        {peak} kB");
}

//! The loader never panics, whatever is in the policy files: random text, random YAML
//! and mutations of the real demo policies.

use std::path::Path;

use lethe::policy::Policy;
use proptest::prelude::*;

fn demo_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Loads a policy made of `files`; returns whether it had errors (it must not panic).
fn load(files: &[(String, String)]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    match Policy::load(dir.path()) {
        Ok(checked) => checked.errors().count() > 0,
        Err(_) => true,
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    Insert(usize, String),
    FlipChar(usize, char),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let token = prop_oneof![
        Just("- ".to_owned()),
        Just(": ".to_owned()),
        Just("{ ".to_owned()),
        Just("[".to_owned()),
        Just("null".to_owned()),
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("!!str ".to_owned()),
        Just("\t".to_owned()),
        Just("\"".to_owned()),
        Just("keep_for: -1d".to_owned()),
        Just("country: ZZ".to_owned()),
        Just("? ".to_owned()),
        Just("|\n".to_owned()),
        "[a-z_.]{0,12}",
        any::<String>(),
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), token).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (any::<usize>(), any::<char>()).prop_map(|(i, c)| Mutation::FlipChar(i, c)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let chars: Vec<char> = text.chars().collect();
    let n = lines.len().max(1);
    match m {
        Mutation::DeleteLine(i) if !lines.is_empty() => {
            lines.remove(i % n);
        }
        Mutation::DuplicateLine(i) if !lines.is_empty() => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        Mutation::Insert(i, t) => {
            let at = i % (chars.len() + 1);
            let mut s: String = chars[..at].iter().collect();
            s.push_str(t);
            s.extend(&chars[at..]);
            return s;
        }
        Mutation::FlipChar(i, c) if !chars.is_empty() => {
            let mut c2 = chars.clone();
            c2[i % chars.len()] = *c;
            return c2.into_iter().collect();
        }
        Mutation::Truncate(i) => return chars[..i % (chars.len() + 1)].iter().collect(),
        _ => {}
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_demo_policies_never_panic(file in 0usize..7, muts in prop::collection::vec(mutation(), 1..6)) {
        let mut files = demo_files();
        let i = file % files.len();
        for m in &muts {
            files[i].1 = apply(&files[i].1, m);
        }
        load(&files);
    }

    #[test]
    fn random_text_never_panics(text in any::<String>()) {
        load(&[("random.yaml".to_owned(), text)]);
    }

    #[test]
    fn random_yaml_shapes_never_panic(text in "([a-z_]{1,10}: (\\[|\\{|-|[a-z0-9_.]{0,8}|\\n  )){0,30}") {
        load(&[("shapes.yaml".to_owned(), text)]);
    }
}

#[test]
fn pathological_inputs_are_errors_not_crashes() {
    for text in [
        "[".repeat(100_000),
        "{a: ".repeat(50_000),
        format!("purposes:\n{}", "  ".repeat(10_000) + "- x"),
        "a: &x 1\nb: *x\n".to_owned(),
        "b: *undefined\n".to_owned(),
        "--- !!binary\n".to_owned(),
        "\u{feff}controller: {}\n".to_owned(),
        "purposes: [[[[]]]]\n".to_owned(),
        "purposes:\n  - id: [a]\n".to_owned(),
        "purposes:\n  - 12\n".to_owned(),
    ] {
        assert!(load(&[("p.yaml".to_owned(), text)]), "expected an error");
    }
}

#[test]
fn the_unmutated_demo_has_no_errors() {
    assert!(!load(&demo_files()));
}

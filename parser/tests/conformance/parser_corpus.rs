//! `buildkit-parser/` (AST dumps compared byte for byte, negative cases) and
//! `buildkit-parser-extra/` (line numbers, warnings, heredocs, words, JSON, directives, misc).

use std::fs;

use forge_parser::ast::{self, json::ArrayResult};
use serde_json::Value;

use crate::common::{corpus_root, report};

fn load_json(rel: &str) -> Value {
    let path = corpus_root().join(rel);
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn read_text(rel: &str) -> String {
    let path = corpus_root().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn buildkit_parser_results() {
    let dir = corpus_root().join("buildkit-parser");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .expect("buildkit-parser dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Dockerfile").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let (mut passed, mut failures) = (0, Vec::new());
    for name in &names {
        let source = fs::read_to_string(dir.join(name).join("Dockerfile")).expect("Dockerfile");
        let want = fs::read_to_string(dir.join(name).join("result")).expect("result");
        match ast::parse(&source) {
            Ok(tree) if tree.dump() == want => passed += 1,
            Ok(tree) => failures.push(format!(
                "{name}: dump differs\n--- got\n{}--- want\n{want}",
                tree.dump()
            )),
            Err(e) => failures.push(format!("{name}: parse error {e}")),
        }
    }
    assert_eq!(names.len(), 33, "expected 33 positive cases");
    report("buildkit-parser", passed, names.len(), &failures);
}

#[test]
fn buildkit_parser_negative() {
    let dir = corpus_root().join("buildkit-parser/testfiles-negative");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .expect("negative dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let expected_messages = [
        ("empty_dockerfile", "file with no instructions"),
        ("only_comments", "file with no instructions"),
        ("env_no_value", "ENV must have two arguments"),
        (
            "shykes-nested-json",
            "arrays must be comprised of strings only",
        ),
    ];
    let (mut passed, mut failures) = (0, Vec::new());
    for name in &names {
        let source = fs::read_to_string(dir.join(name).join("Dockerfile")).expect("Dockerfile");
        match ast::parse(&source) {
            Ok(tree) => failures.push(format!("{name}: parsed but must fail:\n{}", tree.dump())),
            Err(e) => {
                let want = expected_messages
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, m)| *m);
                match want {
                    Some(m) if !e.diagnostic.message.contains(m) => failures.push(format!(
                        "{name}: error {:?} lacks {m:?}",
                        e.diagnostic.message
                    )),
                    _ => passed += 1,
                }
            }
        }
    }
    assert_eq!(names.len(), 4, "expected 4 negative cases");
    report("buildkit-parser-negative", passed, names.len(), &failures);
}

#[test]
fn extra_line_numbers() {
    let source = read_text("buildkit-parser-extra/line-numbers/Dockerfile");
    let exp = load_json("buildkit-parser-extra/line-numbers/expected.json");
    let tree = ast::parse(&source).expect("parses");
    let (mut passed, mut failures, mut total) = (0, Vec::new(), 0);
    let want_root = (
        exp["root"]["start_line"].as_u64().unwrap() as usize,
        exp["root"]["end_line"].as_u64().unwrap() as usize,
    );
    total += 1;
    if (tree.span.line, tree.span.end_line) == want_root {
        passed += 1;
    } else {
        failures.push(format!(
            "root: got {:?}, want {want_root:?}",
            (tree.span.line, tree.span.end_line)
        ));
    }
    total += 1;
    if tree.children.len() as u64 == exp["instruction_count"].as_u64().unwrap() {
        passed += 1;
    } else {
        failures.push(format!("instruction count {}", tree.children.len()));
    }
    for (i, want) in exp["instructions"].as_array().unwrap().iter().enumerate() {
        total += 1;
        let want = (
            want["start_line"].as_u64().unwrap() as usize,
            want["end_line"].as_u64().unwrap() as usize,
        );
        let got = tree.children.get(i).map(|n| (n.span.line, n.span.end_line));
        if got == Some(want) {
            passed += 1;
        } else {
            failures.push(format!("instruction {i}: got {got:?}, want {want:?}"));
        }
    }
    report(
        "buildkit-parser-extra/line-numbers",
        passed,
        total,
        &failures,
    );
}

#[test]
fn extra_empty_continuation_warnings() {
    let source = read_text("buildkit-parser-extra/empty-continuation-warnings/Dockerfile");
    let exp = load_json("buildkit-parser-extra/empty-continuation-warnings/expected.json");
    let tree = ast::parse(&source).expect("parses");
    let (mut passed, mut failures, mut total) = (0, Vec::new(), 1);
    let count = exp["warning_count"].as_u64().unwrap() as usize;
    if tree.warnings.len() == count {
        passed += 1;
    } else {
        failures.push(format!(
            "warning count {} != {count}: {:?}",
            tree.warnings.len(),
            tree.warnings
        ));
    }
    for (i, needles) in exp["warnings_contain"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        for needle in strs(needles) {
            total += 1;
            match tree.warnings.get(i) {
                Some(w) if w.message.contains(&needle) => passed += 1,
                other => failures.push(format!("warning {i} {other:?} lacks {needle:?}")),
            }
        }
    }
    total += 1;
    let detail = exp["first_warning_detail_contains"].as_str().unwrap();
    match tree.warnings.first().and_then(|w| w.help.as_deref()) {
        Some(h) if h.contains(detail) => passed += 1,
        other => failures.push(format!("first warning detail {other:?} lacks {detail:?}")),
    }
    report(
        "buildkit-parser-extra/empty-continuation-warnings",
        passed,
        total,
        &failures,
    );
}

/// name, content, expand, chomp, file descriptor
type HeredocFields = (String, String, bool, bool, u64);

fn check_heredoc_cases(corpus: &str, dir: &str) {
    let source = read_text(&format!("{dir}/Dockerfile"));
    let exp = load_json(&format!("{dir}/expected.json"));
    let tree = ast::parse(&source).expect("parses");
    let (mut passed, mut failures) = (0, Vec::new());
    let cases = exp["cases"].as_array().unwrap();
    for case in cases {
        let idx = case["instruction_index"].as_u64().unwrap() as usize;
        let want: Vec<HeredocFields> = case["heredocs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["name"].as_str().unwrap().to_string(),
                    h["content"].as_str().unwrap().to_string(),
                    h["expand"].as_bool().unwrap(),
                    h["chomp"].as_bool().unwrap(),
                    h["file_descriptor"].as_u64().unwrap(),
                )
            })
            .collect();
        let got: Option<Vec<HeredocFields>> = tree.children.get(idx).map(|n| {
            n.heredocs
                .iter()
                .map(|h| {
                    (
                        h.name.clone(),
                        h.content.clone(),
                        h.expand,
                        h.chomp,
                        h.file_descriptor as u64,
                    )
                })
                .collect()
        });
        if got.as_ref() == Some(&want) {
            passed += 1;
        } else {
            failures.push(format!("instruction {idx}: got {got:?}, want {want:?}"));
        }
    }
    report(corpus, passed, cases.len(), &failures);
}

#[test]
fn extra_heredoc_extract() {
    check_heredoc_cases(
        "buildkit-parser-extra/heredoc-extract",
        "buildkit-parser-extra/heredoc-extract",
    );
}

#[test]
fn extra_heredoc_json_form() {
    check_heredoc_cases(
        "buildkit-parser-extra/heredoc-json-form",
        "buildkit-parser-extra/heredoc-json-form",
    );
}

#[test]
fn extra_heredoc_words() {
    let exp = load_json("buildkit-parser-extra/heredoc-words.json");
    let (mut passed, mut failures, mut total) = (0, Vec::new(), 0);
    let single = &exp["single_word"];
    for w in strs(&single["valid_name_is_EOF"]) {
        total += 1;
        match ast::parse_heredoc_word(&w) {
            Ok(Some(h)) if h.name == "EOF" => passed += 1,
            other => failures.push(format!("{w:?}: {other:?}, want name EOF")),
        }
    }
    for w in strs(&single["invalid_error"]) {
        total += 1;
        match ast::parse_heredoc_word(&w) {
            Err(_) => passed += 1,
            other => failures.push(format!("{w:?}: {other:?}, want error")),
        }
    }
    for w in strs(&single["not_a_heredoc"]) {
        total += 1;
        match ast::parse_heredoc_word(&w) {
            Ok(None) => passed += 1,
            other => failures.push(format!("{w:?}: {other:?}, want no heredoc")),
        }
    }
    for case in exp["from_line"]["cases"].as_array().unwrap() {
        total += 1;
        let line = case["line"].as_str().unwrap();
        let want = strs(&case["heredoc_names"]);
        match ast::heredocs_from_line(line) {
            Ok(docs) if docs.iter().map(|d| d.name.clone()).collect::<Vec<_>>() == want => {
                passed += 1
            }
            other => failures.push(format!("{line:?}: {other:?}, want {want:?}")),
        }
    }
    // Chomp is applied when the body is used; the typed layer does it for COPY/ADD.
    total += 1;
    let input = exp["chomp"]["input"].as_str().unwrap();
    let want = exp["chomp"]["expect"].as_str().unwrap();
    let got = forge_parser::strip_leading_tabs(input);
    if got == want {
        passed += 1;
    } else {
        failures.push(format!("chomp: got {got:?}, want {want:?}"));
    }
    report(
        "buildkit-parser-extra/heredoc-words",
        passed,
        total,
        &failures,
    );
}

#[test]
fn extra_parse_words() {
    let exp = load_json("buildkit-parser-extra/parse-words.json");
    let cases = exp["cases"].as_array().unwrap();
    let (mut passed, mut failures) = (0, Vec::new());
    for case in cases {
        let input = case["input"].as_str().unwrap();
        let want = strs(&case["expect"]);
        let got = ast::parse_words(input, '\\');
        if got == want {
            passed += 1;
        } else {
            failures.push(format!("{input:?}: got {got:?}, want {want:?}"));
        }
    }
    report(
        "buildkit-parser-extra/parse-words",
        passed,
        cases.len(),
        &failures,
    );
}

#[test]
fn extra_json_arrays() {
    let exp = load_json("buildkit-parser-extra/json-arrays.json");
    let (mut passed, mut failures, mut total) = (0, Vec::new(), 0);
    for case in exp["valid"].as_array().unwrap() {
        total += 1;
        let input = case["input"].as_str().unwrap();
        let want = strs(&case["expect"]);
        match ast::json::string_array(input) {
            ArrayResult::Strings(got) if got == want => passed += 1,
            other => failures.push(format!("{input:?}: {other:?}, want {want:?}")),
        }
    }
    for input in strs(&exp["invalid_not_strings"]) {
        total += 1;
        // Both the JSON reader and the whole parser must reject it (no shell-form fallback).
        let whole = ast::parse(&format!("CMD {input}\n"));
        match (ast::json::string_array(&input), whole) {
            (ArrayResult::NotStrings, Err(e)) if e.diagnostic.message == ast::NOT_STRING_ARRAY => {
                passed += 1
            }
            (r, w) => failures.push(format!("{input:?}: {r:?} / {w:?}")),
        }
    }
    report(
        "buildkit-parser-extra/json-arrays",
        passed,
        total,
        &failures,
    );
}

#[test]
fn extra_directives() {
    let exp = load_json("buildkit-parser-extra/directives.json");
    let (mut passed, mut failures, mut total) = (0, Vec::new(), 0);
    for case in exp["parse_all"].as_array().unwrap() {
        total += 1;
        let input = case["input"].as_str().unwrap();
        let want: Vec<(String, String)> = case["expect"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["name"].as_str().unwrap().to_string(),
                    d["value"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        match ast::parse_directives(input) {
            Ok(got)
                if got
                    .iter()
                    .map(|d| (d.name.clone(), d.value.clone()))
                    .collect::<Vec<_>>()
                    == want =>
            {
                passed += 1
            }
            other => failures.push(format!("{input:?}: {other:?}, want {want:?}")),
        }
    }
    for (group, name) in [
        ("detect_syntax", "syntax"),
        ("parse_directive_check", "check"),
    ] {
        for case in exp[group].as_array().unwrap() {
            total += 1;
            let mut input = case["input"].as_str().unwrap().to_string();
            if case.get("input_hex_prefix").and_then(Value::as_str) == Some("efbbbf") {
                input.insert(0, '\u{feff}');
            }
            let got = ast::detect_directive(&input, name);
            let found = case["found"].as_bool().unwrap();
            let mut ok = got.is_some() == found;
            if let (Some(g), true) = (&got, found) {
                if let Some(r) = case.get("ref").and_then(Value::as_str) {
                    ok &= g.reference == r;
                }
                if let Some(c) = case.get("cmdline").and_then(Value::as_str) {
                    ok &= g.cmdline == c;
                }
                if let Some(l) = case.get("line").and_then(Value::as_u64) {
                    ok &= g.line as u64 == l;
                }
            }
            if ok {
                passed += 1;
            } else {
                failures.push(format!("{group} {input:?}: got {got:?}"));
            }
        }
    }
    report("buildkit-parser-extra/directives", passed, total, &failures);
}

#[test]
fn extra_misc() {
    let exp = load_json("buildkit-parser-extra/misc.json");
    let (mut passed, mut failures, mut total) = (0, Vec::new(), 1);
    let long = format!("\n\t\tFROM image\n\t\tLABEL test={}\n", "a".repeat(65536));
    let want = exp["long_line"]["error_equals"].as_str().unwrap();
    match ast::parse(&long) {
        Err(e) if e.diagnostic.message == want => passed += 1,
        other => failures.push(format!("long line: {:?}", other.map(|t| t.dump()))),
    }
    for case in exp["name_val"].as_array().unwrap() {
        total += 1;
        let src = format!(
            "{} {}\n",
            case["instruction"].as_str().unwrap(),
            case["args"].as_str().unwrap()
        );
        let result = ast::parse(&src);
        let ok = match (case.get("expect").and_then(Value::as_str), &result) {
            (Some("error"), Err(e)) => {
                e.diagnostic.message == case["error_equals"].as_str().unwrap()
            }
            (None, Ok(tree)) => tree.children[0].args == strs(&case["expect_nodes"]),
            _ => false,
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!("{src:?}: {:?}", result.map(|t| t.dump())));
        }
    }
    report("buildkit-parser-extra/misc", passed, total, &failures);
}

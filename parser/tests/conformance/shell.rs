//! BuildKit's shell-lexer corpora (`shell-lexer/`, README section 6).

use std::collections::BTreeSet;

use forge_parser::shell::Lexer;
use serde_json::Value;

use crate::common::{corpus_root, report};

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `envVarTest`: one word per line, `A` and `U` lines (Linux), in a fixed environment.
#[test]
fn env_var_test() {
    let text = std::fs::read_to_string(corpus_root().join("shell-lexer/envVarTest")).unwrap();
    let env = pairs(&[
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]);
    let lex = Lexer::new('\\');
    let (mut passed, mut total, mut failures) = (0, 0, Vec::new());
    for (n, line) in text.split('\n').enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').map(str::trim).collect();
        assert_eq!(fields.len(), 3, "envVarTest line {}: bad format", n + 1);
        match fields[0] {
            "A" | "U" => {}
            "W" => continue,
            other => panic!("envVarTest line {}: unknown platform {other:?}", n + 1),
        }
        total += 1;
        let (input, expected) = (fields[1], fields[2]);
        let got = lex.process_word(input, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(v), e) => e != "error" && v == e,
            _ => false,
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!(
                "line {}: {input:?}: expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    assert_eq!(total, 228, "envVarTest should hold 226 A + 2 U lines");
    report("shell-lexer/envVarTest", passed, total, &failures);
}

/// `wordsTest`: expansion plus word splitting, with ENV lines accumulating.
#[test]
fn words_test() {
    let text = std::fs::read_to_string(corpus_root().join("shell-lexer/wordsTest")).unwrap();
    let lex = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let (mut passed, mut total, mut failures) = (0, 0, Vec::new());
    for (n, line) in text.split('\n').enumerate() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let rest = rest.trim_start_matches(' ');
            let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 2, "wordsTest line {}: bad format", n + 1);
        let input = parts[0].trim();
        let expected: Vec<String> = parts[1]
            .trim_start_matches(' ')
            .split(',')
            .map(String::from)
            .collect();
        total += 1;
        let got = lex
            .process_words(input, &env)
            .unwrap_or_else(|_| vec!["error".to_string()]);
        if got == expected {
            passed += 1;
        } else {
            failures.push(format!(
                "line {}: {input:?}: expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    assert_eq!(total, 24);
    report("shell-lexer/wordsTest", passed, total, &failures);
}

fn env_of(case: &Value) -> Vec<(String, String)> {
    case["env"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The three JSON files: single-word expansion with per-case environments; for
/// process-with-matches also the matched/unmatched name sets; for mandatory-env-vars the
/// error text.
#[test]
fn json_cases() {
    let lex = Lexer::new('\\');
    for file in [
        "process-with-matches.json",
        "mandatory-env-vars.json",
        "platform-release-name.json",
    ] {
        let path = corpus_root().join("shell-lexer").join(file);
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = doc["cases"].as_array().unwrap();
        let (mut passed, mut failures) = (0, Vec::new());
        for (i, case) in cases.iter().enumerate() {
            let input = case["input"].as_str().unwrap();
            let expect = case["expect"].as_str().unwrap();
            let env = env_of(case);
            let got = lex.process_word_with_matches(input, &env);
            let problem = match (&got, expect) {
                (Err(e), "error") => match case["error_contains"].as_str() {
                    Some(needle) if !e.message.contains(needle) => {
                        Some(format!("error {:?} lacks {needle:?}", e.message))
                    }
                    _ => None,
                },
                (Err(e), _) => Some(format!("unexpected error {:?}", e.message)),
                (Ok(x), "error") => Some(format!("expected an error, got {:?}", x.value)),
                (Ok(x), want) if x.value != want => {
                    Some(format!("expected {want:?}, got {:?}", x.value))
                }
                (Ok(x), _) => {
                    if case.get("matches").is_some()
                        && (x.matched != names(&case["matches"])
                            || x.unmatched != names(&case["unmatched"]))
                    {
                        Some(format!(
                            "sets differ: matched {:?}, unmatched {:?}",
                            x.matched, x.unmatched
                        ))
                    } else {
                        None
                    }
                }
            };
            match problem {
                None => passed += 1,
                Some(p) => failures.push(format!("{file} case {i} {input:?}: {p}")),
            }
        }
        report(
            &format!("shell-lexer/{file}"),
            passed,
            cases.len(),
            &failures,
        );
    }
}

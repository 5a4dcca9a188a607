//! `buildkit-dockerfile2llb/` (README section 7): whole-Dockerfile planning checks that
//! forge makes in `resolve` (stages, targets, `--from` references, cycles, COPY of URLs) and
//! the image-env helpers.
//!
//! `expose-ports.json` and `healthcheck-history.json` are about turning instruction payloads
//! into image config and history text; they are checked by the instruction layer's runner
//! and the solver, not here.

use std::collections::BTreeMap;

use forge_parser::resolve::{add_env, parse_key_value, resolve, BuildOptions, StageBase};
use forge_parser::{parse_dockerfile, InstructionKind};
use serde_json::Value;

use crate::common::{corpus_root, report};

fn json(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(corpus_root().join(rel)).unwrap()).unwrap()
}

/// The image-config labels of the target stage: LABELs along its `FROM` chain, each expanded
/// with the stage's ARG/ENV scope (bases here are `scratch`, which has no labels).
fn target_labels(
    df: &forge_parser::Dockerfile,
    build: &forge_parser::resolve::ResolvedBuild,
) -> Result<BTreeMap<String, String>, String> {
    let mut chain = vec![build.target];
    while let StageBase::Stage(b) = build.stages[*chain.last().unwrap()].base {
        chain.push(b);
    }
    chain.reverse();
    let mut scope = build.scope_for_image(&[]);
    let mut labels = BTreeMap::new();
    for s in chain {
        for ins in &df.stages[s].instructions {
            scope.apply(&ins.kind).map_err(|e| e.to_string())?;
            if let InstructionKind::Label(kvs) = &ins.kind {
                for kv in kvs {
                    let k = scope
                        .lexer()
                        .process_word(&kv.key, &scope)
                        .map_err(|e| e.to_string())?;
                    let v = scope
                        .lexer()
                        .process_word(&kv.value, &scope)
                        .map_err(|e| e.to_string())?;
                    labels.insert(k, v);
                }
            }
        }
        scope = scope.child();
    }
    Ok(labels)
}

#[test]
fn cases() {
    let doc = json("buildkit-dockerfile2llb/cases.json");
    let cases = doc["cases"].as_array().unwrap();
    let (mut passed, mut failures) = (0, Vec::new());
    for (i, case) in cases.iter().enumerate() {
        let dockerfile = case["dockerfile"].as_str().unwrap();
        let opts = BuildOptions {
            target: case["target"].as_str().map(String::from),
            ..BuildOptions::default()
        };
        let outcome: Result<(), String> = parse_dockerfile(dockerfile)
            .map_err(|e| e.to_string())
            .and_then(|df| {
                let build = resolve(&df, &opts).map_err(|e| e.to_string())?;
                if let Some(want) = case["check"]["image_config_labels"].as_object() {
                    let want: BTreeMap<String, String> = want
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                        .collect();
                    let got = target_labels(&df, &build)?;
                    if got != want {
                        return Err(format!("labels {got:?}, expected {want:?}"));
                    }
                }
                Ok(())
            });
        let problem = match (case["expect"].as_str().unwrap(), &outcome) {
            ("accept", Ok(())) => None,
            ("accept", Err(e)) => Some(format!("rejected: {e}")),
            ("reject", Ok(())) => Some("accepted".to_string()),
            ("reject", Err(e)) => match case["error_equals"].as_str() {
                Some(want) if e != want => Some(format!("error {e:?}, expected {want:?}")),
                _ => None,
            },
            (other, _) => Some(format!("unknown expectation {other}")),
        };
        match problem {
            None => passed += 1,
            Some(p) => failures.push(format!("case {i} {dockerfile:?}: {p}")),
        }
    }
    report(
        "buildkit-dockerfile2llb/cases.json",
        passed,
        cases.len(),
        &failures,
    );
}

#[test]
fn env_helpers() {
    let doc = json("buildkit-dockerfile2llb/env-helpers.json");
    let (mut passed, mut total, mut failures) = (0, 0, Vec::new());
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    for case in doc["add_env"]["cases"].as_array().unwrap() {
        total += 1;
        let mut env = strings(&case["env"]);
        add_env(
            &mut env,
            case["key"].as_str().unwrap(),
            case["value"].as_str().unwrap(),
        );
        if env == strings(&case["expect"]) {
            passed += 1;
        } else {
            failures.push(format!("add_env {case}: got {env:?}"));
        }
    }
    for case in doc["parse_key_value"]["cases"].as_array().unwrap() {
        total += 1;
        let got = parse_key_value(case["input"].as_str().unwrap());
        if got
            == (
                case["key"].as_str().unwrap(),
                case["value"].as_str().unwrap(),
            )
        {
            passed += 1;
        } else {
            failures.push(format!("parse_key_value {case}: got {got:?}"));
        }
    }
    report(
        "buildkit-dockerfile2llb/env-helpers.json",
        passed,
        total,
        &failures,
    );
}

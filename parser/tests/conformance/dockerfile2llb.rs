//! `buildkit-dockerfile2llb/` (README section 7): whole-Dockerfile planning checks that
//! forge makes in `resolve` (stages, targets, `--from` references, cycles, COPY of URLs) and
//! the image-env helpers.
//! `expose-ports.json` uses the instruction layer's port-spec parser
//! (`convert::values::exposed_ports`), `healthcheck-history.json` the history text
//! `resolve::healthcheck_history` builds from a typed HEALTHCHECK.

use std::collections::BTreeMap;

use forge_parser::convert::values::{exposed_ports, parse_go_duration};
use forge_parser::resolve::{
    add_env, healthcheck_history, parse_key_value, resolve, BuildOptions, StageBase,
};
use forge_parser::{parse_dockerfile, Healthcheck, InstructionKind};
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

#[test]
fn expose_ports() {
    let doc = json("buildkit-dockerfile2llb/expose-ports.json");
    let (mut passed, mut total, mut failures) = (0, 0, Vec::new());
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let mut check = |specs: Vec<String>, case: &Value| {
        total += 1;
        let got: Result<Vec<String>, String> =
            specs.iter().try_fold(Vec::new(), |mut acc, spec| {
                acc.extend(exposed_ports(spec)?);
                Ok(acc)
            });
        let ok = match (&got, &case["expect"]) {
            (Err(e), Value::String(s)) if s == "error" => {
                case["error_equals"].as_str().is_none_or(|want| e == want)
            }
            (Ok(ports), want @ Value::Array(_)) => *ports == strings(want),
            _ => false,
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!(
                "{specs:?}: got {got:?}, expected {}",
                case["expect"]
            ));
        }
    };
    for case in doc["single"]["cases"].as_array().unwrap() {
        check(vec![case["spec"].as_str().unwrap().to_string()], case);
    }
    for case in doc["multiple"]["cases"].as_array().unwrap() {
        check(strings(&case["specs"]), case);
    }
    report(
        "buildkit-dockerfile2llb/expose-ports.json",
        passed,
        total,
        &failures,
    );
}

#[test]
fn healthcheck_history_text() {
    let doc = json("buildkit-dockerfile2llb/healthcheck-history.json");
    let input = &doc["input"];
    let duration = |k: &str| Some(parse_go_duration(input[k].as_str().unwrap()).unwrap());
    let health = Healthcheck::Check {
        test: input["test"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect(),
        interval: duration("interval"),
        timeout: duration("timeout"),
        start_period: duration("start_period"),
        start_interval: duration("start_interval"),
        retries: input["retries"].as_i64(),
    };
    let got = healthcheck_history(&health);
    let want = doc["expect_created_by"].as_str().unwrap();
    let failures = if got == want {
        vec![]
    } else {
        vec![format!("got {got:?}, expected {want:?}")]
    };
    report(
        "buildkit-dockerfile2llb/healthcheck-history.json",
        usize::from(failures.is_empty()),
        1,
        &failures,
    );
}

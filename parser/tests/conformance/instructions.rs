//! `buildkit-instructions/`: typed conversion of single instructions (errors, heredocs, flags,
//! exec vs shell form).

use std::fs;

use forge_parser::ast;
use forge_parser::convert::{self, flags::FlagSet, flags::FlagValue, Command};
use forge_parser::{CmdForm, Healthcheck, InstructionKind};
use serde_json::Value;

use crate::common::{corpus_root, report};

fn load(name: &str) -> Value {
    let path = corpus_root().join("buildkit-instructions").join(name);
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
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

/// Parses `src` and converts its first instruction, as upstream's tests do.
fn first(src: &str) -> Result<Command, String> {
    let tree = ast::parse(src).map_err(|e| format!("AST: {}", e.diagnostic.message))?;
    let node = tree.children.first().ok_or("no node")?;
    convert::convert_node(node).map_err(|e| e.diagnostic.message)
}

fn first_kind(src: &str) -> Result<InstructionKind, String> {
    match first(src)? {
        Command::Instruction(i) => Ok(i.kind),
        Command::From(f) => Err(format!("got FROM {f:?}")),
    }
}

#[test]
fn instructions_cases() {
    let exp = load("cases.json");
    let (mut passed, mut failures, mut total) = (0, Vec::new(), 0);
    let all: Vec<&Value> = exp["reject_cases"]
        .as_array()
        .unwrap()
        .iter()
        .chain(exp["accept_cases"].as_array().unwrap())
        .collect();
    for case in all {
        total += 1;
        let src = case["dockerfile"].as_str().unwrap();
        let ok = match case["expect"].as_str().unwrap() {
            "reject" => match first(src) {
                Err(msg) => {
                    if let Some(want) = case.get("error_equals").and_then(Value::as_str) {
                        msg == want
                    } else {
                        msg.contains(case["error_contains"].as_str().unwrap())
                    }
                }
                Ok(c) => {
                    failures.push(format!("{src:?}: accepted as {c:?}"));
                    continue;
                }
            },
            _ => check_accept(src, case.get("check")),
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!("{src:?}: got {:?}", first(src)));
        }
    }
    report("buildkit-instructions/cases", passed, total, &failures);
}

fn check_accept(src: &str, check: Option<&Value>) -> bool {
    let Some(check) = check else {
        return first(src).is_ok();
    };
    if let Some(used) = check.get("flags_used") {
        let tree = ast::parse(src).unwrap();
        let names: Vec<String> = tree.children[0]
            .flags
            .iter()
            .map(|f| {
                f.trim_start_matches("--")
                    .split('=')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let run_ok = matches!(first_kind(src), Ok(InstructionKind::Run(r)) if r.mounts.len() == 1);
        return run_ok && names == strs(used);
    }
    if let Some(test) = check.get("health_test") {
        return matches!(first_kind(src), Ok(InstructionKind::Healthcheck(Healthcheck::Check { test: t, .. })) if t == strs(test));
    }
    if let Some(doc) = check.get("stage0_doc_comment") {
        let Ok(df) = forge_parser::parse_dockerfile(src) else {
            return false;
        };
        let doc_of = |d: &Option<String>| d.clone().unwrap_or_default();
        let mut ok = doc_of(&df.stages[0].doc) == doc.as_str().unwrap();
        let globals: Vec<(String, String)> = df
            .meta_args
            .iter()
            .flat_map(|a| a.args.iter())
            .map(|a| (a.name.clone(), doc_of(&a.doc)))
            .collect();
        let want_globals: Vec<(String, String)> = check["global_args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["key"].as_str().unwrap().to_string(),
                    a["doc_comment"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        ok &= globals == want_globals;
        for (i, cmd) in check["stage0_commands"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let want: Vec<(String, String)> = cmd["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        a["key"].as_str().unwrap().to_string(),
                        a["doc_comment"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            ok &= match df.stages[0].instructions.get(i).map(|i| &i.kind) {
                Some(InstructionKind::Arg(args)) => {
                    args.iter()
                        .map(|a| (a.name.clone(), doc_of(&a.doc)))
                        .collect::<Vec<_>>()
                        == want
                }
                _ => false,
            };
        }
        return ok;
    }
    false
}

#[test]
fn instructions_copy_heredoc() {
    let exp = load("copy-heredoc.json");
    let cases = exp["cases"].as_array().unwrap();
    let (mut passed, mut failures) = (0, Vec::new());
    for case in cases {
        let src = case["dockerfile"].as_str().unwrap();
        let want_contents: Vec<(String, String, bool)> = case["source_contents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["path"].as_str().unwrap().into(),
                    c["data"].as_str().unwrap().into(),
                    c["expand"].as_bool().unwrap(),
                )
            })
            .collect();
        match first_kind(src) {
            Ok(InstructionKind::Copy(c))
                if c.common.dest == case["dest_path"].as_str().unwrap()
                    && c.common.sources == strs(&case["source_paths"])
                    && c.common
                        .heredocs
                        .iter()
                        .map(|h| (h.name.clone(), h.content.clone(), h.expand))
                        .collect::<Vec<_>>()
                        == want_contents =>
            {
                passed += 1
            }
            other => failures.push(format!("{src:?}: {other:?}")),
        }
    }
    report(
        "buildkit-instructions/copy-heredoc",
        passed,
        cases.len(),
        &failures,
    );
}

#[test]
fn instructions_run_heredoc() {
    let exp = load("run-heredoc.json");
    let cases = exp["cases"].as_array().unwrap();
    let (mut passed, mut failures) = (0, Vec::new());
    for case in cases {
        let src = case["dockerfile"].as_str().unwrap();
        let want_files: Vec<(String, String, bool)> = case["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap().into(),
                    f["data"].as_str().unwrap().into(),
                    f["chomp"].as_bool().unwrap(),
                )
            })
            .collect();
        let want_cmd = strs(&case["cmd_line"]);
        let shell = case["prepend_shell"].as_bool().unwrap();
        match first_kind(src) {
            Ok(InstructionKind::Run(r)) => {
                let (is_shell, cmd) = match &r.command {
                    CmdForm::Shell(s) => (true, vec![s.clone()]),
                    CmdForm::Exec(v) => (false, v.clone()),
                };
                let files: Vec<(String, String, bool)> = r
                    .heredocs
                    .iter()
                    .map(|h| (h.name.clone(), h.content.clone(), h.chomp))
                    .collect();
                if is_shell == shell && cmd == want_cmd && files == want_files {
                    passed += 1;
                } else {
                    failures.push(format!(
                        "{src:?}: shell={is_shell} cmd={cmd:?} files={files:?}"
                    ));
                }
            }
            other => failures.push(format!("{src:?}: {other:?}")),
        }
    }
    report(
        "buildkit-instructions/run-heredoc",
        passed,
        cases.len(),
        &failures,
    );
}

#[test]
fn instructions_bflags() {
    let exp = load("bflags.json");
    let cases = exp["cases"].as_array().unwrap();
    let (mut passed, mut failures) = (0, Vec::new());
    for (i, case) in cases.iter().enumerate() {
        let mut set = FlagSet::new();
        for d in case["declared"].as_array().unwrap() {
            let name = d["name"].as_str().unwrap();
            match d["type"].as_str().unwrap() {
                "string" => set.add_string(name, d["default"].as_str().unwrap()),
                "bool" => set.add_bool(name, d["default"].as_bool().unwrap()),
                other => panic!("unknown flag type {other}"),
            };
        }
        let result = set.parse(&strs(&case["args"]));
        let ok = match (case["expect"].as_str().unwrap(), &result) {
            ("error", Err(_)) => true,
            ("ok", Ok(())) => {
                let mut ok = true;
                if let Some(values) = case.get("values").and_then(Value::as_object) {
                    for (k, v) in values {
                        ok &= match (set.value(k), v) {
                            (Some(FlagValue::String(s)), Value::String(w)) => s == w,
                            (Some(FlagValue::Bool(b)), Value::Bool(w)) => b == w,
                            _ => false,
                        };
                    }
                }
                if let Some(used) = case.get("used") {
                    let mut got = set.used().to_vec();
                    got.sort();
                    let mut want = strs(used);
                    want.sort();
                    ok &= got == want;
                }
                ok
            }
            _ => false,
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!("case {i} ({:?}): {result:?}", case["args"]));
        }
    }
    report(
        "buildkit-instructions/bflags",
        passed,
        cases.len(),
        &failures,
    );
}

#[test]
fn instructions_json_args() {
    let exp = load("json-args.json");
    let cases = exp["cases"].as_array().unwrap();
    let (mut passed, mut failures) = (0, Vec::new());
    for case in cases {
        let args = strs(&case["args"]);
        let got = convert::handle_json_args(&args, case["json"].as_bool().unwrap());
        if got == strs(&case["expect"]) {
            passed += 1;
        } else {
            failures.push(format!("{case}: got {got:?}"));
        }
    }
    // The same distinction end to end: exec form keeps the list, shell form one string.
    let end_to_end = [
        ("CMD [\"a b\"]", CmdForm::Exec(vec!["a b".into()])),
        ("CMD a  b", CmdForm::Shell("a  b".into())),
    ];
    for (src, want) in &end_to_end {
        match first_kind(src) {
            Ok(InstructionKind::Cmd(c)) if &c.form == want => passed += 1,
            other => failures.push(format!("{src:?}: {other:?}")),
        }
    }
    report(
        "buildkit-instructions/json-args",
        passed,
        cases.len() + end_to_end.len(),
        &failures,
    );
}

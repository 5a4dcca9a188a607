//! `.dockerignore` corpora (`dockerignore/`, README section 8): patternmatcher's table,
//! ignore-file reading, fsutil's filtered walks, and BuildKit's context scenarios as far as
//! they can be decided at the pattern layer.

use std::fs;
use std::path::Path;

use forge_parser::dockerignore::{
    ignore_file_candidates, read_patterns, Filter, MatchInfo, PatternMatcher,
};
use serde_json::Value;

use crate::common::{corpus_root, report};

fn json(rel: &str) -> Value {
    serde_json::from_str(&fs::read_to_string(corpus_root().join(rel)).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The walk form, as upstream's TestMatches drives it: results for each parent prefix of the
/// path are carried down, then the path itself is decided from its parent's results.
fn walk_form(pm: &PatternMatcher, path: &str) -> Result<bool, String> {
    let mut info = MatchInfo::default();
    let parent = match path.rfind('/') {
        Some(i) => forge_parser::dockerignore::clean_path(&path[..=i]),
        None => ".".to_string(),
    };
    if parent != "." {
        let dirs: Vec<&str> = parent.split('/').collect();
        for i in 0..dirs.len() {
            info = pm
                .matches_using_parent_results(&dirs[..=i].join("/"), &info)
                .map_err(|e| e.to_string())?
                .1;
        }
    }
    pm.matches_using_parent_results(path, &info)
        .map(|r| r.0)
        .map_err(|e| e.to_string())
}

#[test]
fn cases_tsv() {
    let text = fs::read_to_string(corpus_root().join("dockerignore/cases.tsv")).unwrap();
    let (mut passed, mut total, mut failures) = (0, 0, Vec::new());
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 7, "bad row {line:?}");
        let (id, api, patterns, path, expected) = (cols[0], cols[1], cols[3], cols[4], cols[5]);
        let patterns: Vec<String> = serde_json::from_str(patterns).unwrap();
        total += 1;
        let got: Result<bool, String> = PatternMatcher::new(&patterns)
            .map_err(|e| e.to_string())
            .and_then(|pm| {
                let main = match api {
                    "MatchesOrParentMatches" => pm.matches_or_parent_matches(path),
                    "Matches" => pm.matches(path),
                    other => panic!("row {id}: unknown api {other}"),
                }
                .map_err(|e| e.to_string())?;
                if api == "MatchesOrParentMatches" {
                    let walked = walk_form(&pm, path)?;
                    if walked != main {
                        return Err(format!("walk form gave {walked}, direct form {main}"));
                    }
                }
                Ok(main)
            });
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(b), "true") => *b,
            (Ok(b), "false") => !*b,
            _ => false,
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!(
                "row {id} {api} {patterns:?} {path:?}: expected {expected}, got {got:?}"
            ));
        }
    }
    assert_eq!(total, 138);
    report("dockerignore/cases.tsv", passed, total, &failures);
}

#[test]
fn readall() {
    let content =
        fs::read_to_string(corpus_root().join("dockerignore/readall/dockerignore")).unwrap();
    let expected = strings(&json("dockerignore/readall/expected.json")["expected_patterns"]);
    let got = read_patterns(&content);
    let failures = if got == expected {
        vec![]
    } else {
        vec![format!("expected {expected:?}, got {got:?}")]
    };
    // Reading nothing gives nothing.
    assert!(read_patterns("").is_empty());
    report(
        "dockerignore/readall",
        usize::from(failures.is_empty()),
        1,
        &failures,
    );
}

/// A depth-first walk of `root`, names in byte order, yielding `(relative path, is_dir)`.
fn walk_tree(root: &Path, rel: &str, out: &mut Vec<(String, bool)>) {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut names: Vec<(Vec<u8>, bool)> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_encoded_bytes(),
                e.file_type().unwrap().is_dir(),
            )
        })
        .collect();
    names.sort();
    for (name, is_dir) in names {
        let name = String::from_utf8(name).unwrap();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        out.push((path.clone(), is_dir));
        if is_dir {
            walk_tree(root, &path, out);
        }
    }
}

/// Applies filters in order (the first wraps the tree, the next wraps the first, …) to a walk
/// of `root`, returning the emitted `"<file|dir> <path>"` lines. A directory a filter prunes is
/// not shown to the next filter, and nothing below it is visited.
fn filtered_walk(root: &Path, filters: &[Filter]) -> Result<Vec<String>, String> {
    let mut entries = Vec::new();
    walk_tree(root, "", &mut entries);
    let mut walks: Vec<_> = filters.iter().map(|f| f.walk()).collect();
    // Directories pruned by filter i: everything below them is dropped at stage i.
    let mut pruned: Vec<Vec<String>> = vec![Vec::new(); filters.len()];
    let mut out = Vec::new();
    for (path, is_dir) in entries {
        // Entries flowing into stage 0 are the raw tree; each stage's output feeds the next.
        let mut stream = vec![(path, is_dir)];
        for (stage, walk) in walks.iter_mut().enumerate() {
            let mut next = Vec::new();
            for (p, d) in stream {
                if pruned[stage]
                    .iter()
                    .any(|dir| p.starts_with(&format!("{dir}/")))
                {
                    continue;
                }
                let v = walk.visit(&p, d).map_err(|e| e.to_string())?;
                if d && !v.descend {
                    pruned[stage].push(p.clone());
                }
                for parent in v.emit_parents {
                    next.push((parent, true));
                }
                if v.emit {
                    next.push((p, d));
                }
            }
            stream = next;
        }
        for (p, d) in stream {
            out.push(format!("{} {p}", if d { "dir" } else { "file" }));
        }
    }
    Ok(out)
}

fn build_tree(tree: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in tree.as_array().unwrap() {
        let path = dir.path().join(entry["path"].as_str().unwrap());
        match entry["type"].as_str().unwrap() {
            "dir" => fs::create_dir_all(&path).unwrap(),
            "file" => {
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, b"").unwrap();
            }
            other => panic!("unknown entry type {other}"),
        }
    }
    dir
}

fn filter_of(spec: &Value) -> Result<Filter, String> {
    Filter::new(
        &strings(&spec["include_patterns"]),
        &strings(&spec["exclude_patterns"]),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn walk_scenarios() {
    let doc = json("dockerignore/walk-scenarios.json");
    let (mut passed, mut total, mut failures) = (0, 0, Vec::new());
    for scenario in doc["scenarios"].as_array().unwrap() {
        let name = scenario["name"].as_str().unwrap();
        let tree = build_tree(&scenario["tree"]);
        for (i, case) in scenario["cases"].as_array().unwrap().iter().enumerate() {
            total += 1;
            let label = format!("{name} case {i}");
            let filters: Result<Vec<Filter>, String> = match case.get("stacked_filters") {
                Some(stack) => stack.as_array().unwrap().iter().map(filter_of).collect(),
                None => filter_of(case).map(|f| vec![f]),
            };
            let mut problems = Vec::new();
            match (filters, case.get("expect").and_then(Value::as_str)) {
                (Err(_), Some(e)) if e.starts_with("error") => {}
                (Err(e), _) => problems.push(format!("filter failed: {e}")),
                (Ok(_), Some(e)) if e.starts_with("error") => {
                    problems.push("filter should fail".to_string())
                }
                (Ok(filters), _) => {
                    if let Some(expect) = case.get("expect_walk") {
                        match filtered_walk(tree.path(), &filters) {
                            Ok(got) if got == strings(expect) => {}
                            Ok(got) => problems
                                .push(format!("walk: expected {:?}, got {got:?}", strings(expect))),
                            Err(e) => problems.push(format!("walk failed: {e}")),
                        }
                    }
                    // Opening through the filtered view: visible and present on disk.
                    let f = &filters[0];
                    for p in strings(&case["open_ok"]) {
                        if !(f.allows(&p) == Ok(true) && tree.path().join(&p).exists()) {
                            problems.push(format!("open {p} should succeed"));
                        }
                    }
                    for p in strings(&case["open_not_exist"]) {
                        if f.allows(&p) != Ok(false) {
                            problems.push(format!("open {p} should report not-exist"));
                        }
                    }
                }
            }
            if problems.is_empty() {
                passed += 1;
            } else {
                failures.push(format!("{label}: {}", problems.join("; ")));
            }
        }
    }
    report("dockerignore/walk-scenarios.json", passed, total, &failures);
}

/// BuildKit's end-to-end `.dockerignore` scenarios, decided at this layer: which ignore file
/// is used, whether it compiles, and which context files a `COPY . .` would receive (the
/// filtered walk of the context). Left to end-to-end tests: actually building the image and
/// checking the copied files and the upstream `RUN [ -f foo ]` checks inside the container.
#[test]
fn buildkit_context_scenarios() {
    let doc = json("dockerignore/buildkit-context-scenarios.json");
    let (mut passed, mut total, mut failures) = (0, 0, Vec::new());
    for sc in doc["scenarios"].as_array().unwrap() {
        let name = sc["name"].as_str().unwrap();
        let ctx = tempfile::tempdir().unwrap();
        for f in strings(&sc["context_files"]) {
            fs::write(ctx.path().join(&f), b"x").unwrap();
        }
        if let Some(d) = sc["dockerfile"].as_str() {
            fs::write(ctx.path().join("Dockerfile"), d).unwrap();
        }
        if let Some(ig) = sc["dockerignore"].as_str() {
            fs::write(ctx.path().join(".dockerignore"), ig).unwrap();
        }
        let builds: Vec<Value> = match sc.get("builds") {
            Some(b) => b.as_array().unwrap().clone(),
            None => vec![sc.clone()],
        };
        for b in &builds {
            if let (Some(file), Some(content)) =
                (b["ignore_file_used"].as_str(), b["ignore_content"].as_str())
            {
                fs::write(ctx.path().join(file), content).unwrap();
            }
        }
        // A context `.dockerignore` that the Dockerfile-specific files must win over.
        if sc.get("builds").is_some() {
            fs::write(ctx.path().join(".dockerignore"), "*\n").unwrap();
        }
        for b in &builds {
            total += 1;
            let dockerfile = ctx
                .path()
                .join(b["dockerfile_name"].as_str().unwrap_or("Dockerfile"));
            let mut problems = Vec::new();
            let chosen = ignore_file_candidates(ctx.path(), &dockerfile)
                .into_iter()
                .find(|p| p.exists());
            if let Some(want) = b["ignore_file_used"].as_str() {
                if chosen.as_deref() != Some(ctx.path().join(want).as_path()) {
                    problems.push(format!("ignore file: expected {want}, chose {chosen:?}"));
                }
            }
            let patterns = chosen
                .map(|p| read_patterns(&fs::read_to_string(p).unwrap()))
                .unwrap_or_default();
            match Filter::excluding(&patterns) {
                Err(e) => {
                    if !b["expect"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("build fails"))
                    {
                        problems.push(format!("unexpected pattern error {e}"));
                    }
                }
                Ok(_)
                    if b["expect"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("build fails")) =>
                {
                    problems.push("ignore file should be rejected".to_string());
                }
                Ok(filter) => {
                    let walked = filtered_walk(ctx.path(), &[filter]).unwrap();
                    let present = |f: &str| walked.iter().any(|w| w == &format!("file {f}"));
                    for key in ["expect_present_after_COPY_dot", "expect_present"] {
                        for f in strings(&b[key]) {
                            if !present(&f) {
                                problems.push(format!("{f} should be in the context"));
                            }
                        }
                    }
                    for key in ["expect_absent_after_COPY_dot", "expect_absent"] {
                        for f in strings(&b[key]) {
                            if present(&f) {
                                problems.push(format!("{f} should be excluded"));
                            }
                        }
                    }
                }
            }
            if problems.is_empty() {
                passed += 1;
            } else {
                failures.push(format!("{name}: {}", problems.join("; ")));
            }
        }
    }
    report(
        "dockerignore/buildkit-context-scenarios.json",
        passed,
        total,
        &failures,
    );
}

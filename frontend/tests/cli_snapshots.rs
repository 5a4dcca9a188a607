//! Snapshots of what users read: `--help` of every command, plain progress output, and the
//! messages and exit codes of the main failure classes. Digests, temporary paths and timings
//! are filtered. Update with `INSTA_UPDATE=always` (or `cargo insta review`) and commit the
//! `.snap` files; CI runs with the committed snapshots (`INSTA_UPDATE=no`) and fails on a diff.

mod common;
use common::*;
use std::path::Path;

const COMMANDS: &[&str] = &[
    "build", "images", "inspect", "tag", "rmi", "pull", "push", "save", "load", "import", "run",
    "prune", "check", "login", "logout", "lint", "version",
];

/// insta settings that hide what changes from run to run.
fn settings(paths: &[(&Path, &str)]) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_prepend_module_to_snapshot(false);
    // Longest paths first, so a store inside a scratch dir is not half-replaced.
    let mut paths: Vec<(String, &str)> = paths
        .iter()
        .map(|(p, n)| (p.display().to_string(), *n))
        .collect();
    paths.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    for (p, name) in paths {
        s.add_filter(&regex::escape(&p), name);
    }
    s.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[DIGEST]");
    s.add_filter(r"\b[0-9a-f]{12}\b", "[SHORTID]");
    s.add_filter(r"DONE \d+\.\ds", "DONE [TIME]");
    s.add_filter(r"(?m)^(#\d+) \d+\.\d{3} ", "$1 [TIME] ");
    s.add_filter(r"/tmp/[A-Za-z0-9._/-]+", "[TMP]");
    s
}

fn render(o: &Out) -> String {
    let mut s = format!("exit code: {}\n", o.code);
    if !o.stdout.is_empty() {
        s.push_str("--- stdout\n");
        s.push_str(&o.stdout);
    }
    if !o.stderr.is_empty() {
        s.push_str("--- stderr\n");
        s.push_str(&o.stderr);
    }
    s
}

#[test]
fn help_of_every_command() {
    let f = Forge::new();
    let top = f.ok(&["--help"]);
    settings(&[]).bind(|| insta::assert_snapshot!("help", top.stdout));
    for cmd in COMMANDS {
        let o = f.ok(&[cmd, "--help"]);
        assert!(
            o.stdout.contains("Usage: forge"),
            "{cmd} --help: {}",
            o.stdout
        );
        // The top-level help lists the command.
        assert!(
            top.stdout.contains(&format!("  {cmd} ")),
            "forge --help does not list {cmd}"
        );
        settings(&[]).bind(|| insta::assert_snapshot!(format!("help_{cmd}"), o.stdout));
    }
}

#[test]
fn build_help_keeps_the_contract_flags() {
    // The issue fixes these names: scripts call them.
    let o = Forge::new().ok(&["build", "--help"]);
    for flag in [
        "--tag",
        "--file",
        "--build-arg",
        "--target",
        "--no-cache",
        "--no-cache-filter",
        "--pull",
        "--label",
        "--platform",
        "--network",
        "--secret",
        "--ssh",
        "--build-context",
        "--progress",
        "--quiet",
        "--iidfile",
        "--metadata-file",
        "--output",
        "--push",
        "--cache-from",
        "--cache-to",
        "--explain",
        "--allow",
    ] {
        assert!(o.stdout.contains(flag), "forge build --help lacks {flag}");
    }
}

#[test]
fn plain_progress_of_a_small_build() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[
        ("Dockerfile", "FROM busybox:local\nCOPY a.txt /a.txt\nRUN echo hello from run && cat /a.txt\nENV DONE=1\nWORKDIR /app\n"),
        ("a.txt", "content of a\n"),
    ]);
    let root = f.root();
    let paths = [(ctx.path(), "[CTX]"), (root.as_path(), "[ROOT]")];
    let b = f.build(ctx.path(), &["-t", "snap:1"]);
    assert_eq!(
        b.progress.ran(),
        [
            "COPY a.txt /a.txt",
            "RUN echo hello from run && cat /a.txt",
            "WORKDIR /app"
        ]
    );
    settings(&paths).bind(|| insta::assert_snapshot!("progress_cold", b.out.stderr));
    let b = f.build(ctx.path(), &["-t", "snap:1"]);
    assert!(b.progress.ran().is_empty());
    settings(&paths).bind(|| insta::assert_snapshot!("progress_cached", b.out.stderr));
    // -q prints only the image id on stdout, nothing on stderr.
    let o = f.ok(&["build", "-q", ctx.path().to_str().unwrap()]);
    assert_eq!(o.stdout.trim(), f.inspect("snap:1")["Id"].as_str().unwrap());
    assert_eq!(o.stderr, "");
}

/// Runs a failing build and snapshots its exit code and stderr.
fn failing(name: &str, files: &[(&str, &str)], args: &[&str], code: i32, must_contain: &[&str]) {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(files);
    let root = f.root();
    let b = f.try_build(ctx.path(), args);
    assert_eq!(
        b.out.code, code,
        "{name}: wrong exit code\n{}",
        b.out.stderr
    );
    for m in must_contain {
        assert!(
            b.out.stderr.contains(m),
            "{name}: stderr lacks {m:?}:\n{}",
            b.out.stderr
        );
    }
    settings(&[(ctx.path(), "[CTX]"), (root.as_path(), "[ROOT]")])
        .bind(|| insta::assert_snapshot!(format!("error_{name}"), render(&b.out)));
}

#[test]
fn error_unknown_instruction_suggests() {
    failing(
        "unknown_instruction",
        &[("Dockerfile", "FROM busybox:local\nRUNN echo hi\n")],
        &[],
        1,
        &["RUNN", "did you mean", "RUN"],
    );
}

#[test]
fn error_missing_copy_source() {
    failing(
        "missing_copy_source",
        &[
            (
                "Dockerfile",
                "FROM busybox:local\nCOPY present.txt /p.txt\nCOPY absent.txt /a.txt\n",
            ),
            ("present.txt", "p\n"),
        ],
        &[],
        1,
        &["absent.txt", ":3"],
    );
}

#[test]
fn error_copy_source_excluded_by_dockerignore() {
    failing(
        "dockerignore_excluded",
        &[
            ("Dockerfile", "FROM busybox:local\nCOPY secret.env /app/\n"),
            ("secret.env", "x=1\n"),
            (".dockerignore", "*.env\n"),
        ],
        &[],
        1,
        &["secret.env", ".dockerignore"],
    );
}

#[test]
fn error_failing_run() {
    failing(
        "failing_run",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN echo about to fail && echo on stderr >&2 && exit 42\n",
        )],
        &[],
        1,
        &[
            "RUN echo about to fail",
            ":2",
            "42",
            "about to fail",
            "on stderr",
        ],
    );
}

#[test]
fn error_unknown_target_suggests() {
    failing(
        "unknown_target",
        &[(
            "Dockerfile",
            "FROM busybox:local AS build\nRUN true\nFROM build AS release\n",
        )],
        &["--target", "buidl"],
        2,
        &["buidl", "build"],
    );
}

#[test]
fn error_bad_output_spec_is_usage() {
    failing(
        "bad_output",
        &[("Dockerfile", "FROM busybox:local\n")],
        &["-o", "type=bogus,dest=x"],
        2,
        &["bogus"],
    );
}

#[test]
fn error_missing_dockerfile_is_usage() {
    failing(
        "missing_dockerfile",
        &[("README", "no Dockerfile here\n")],
        &[],
        2,
        &["Dockerfile"],
    );
}

#[test]
fn error_unknown_flag_is_usage() {
    let f = Forge::new();
    let o = f.run(&["build", "--no-such-flag", "."]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    let o = f.run(&["frobnicate"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
}

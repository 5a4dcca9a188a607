//! Cache rules, end to end: what a rebuild reruns, and what it must not.

mod common;
use common::*;

const DOCKERFILE: &str = r#"FROM busybox:local
RUN echo base > /base.txt
COPY early.txt /early.txt
ARG A=one
RUN echo "a=$A" > /a.txt
COPY late.txt /late.txt
RUN cat /late.txt > /late-copy.txt
"#;

const RUN_BASE: &str = "RUN echo base > /base.txt";
const COPY_EARLY: &str = "COPY early.txt /early.txt";
const RUN_ARG: &str = "RUN echo \"a=$A\" > /a.txt";
const COPY_LATE: &str = "COPY late.txt /late.txt";
const RUN_LATE: &str = "RUN cat /late.txt > /late-copy.txt";
const ALL: [&str; 5] = [RUN_BASE, COPY_EARLY, RUN_ARG, COPY_LATE, RUN_LATE];

fn setup() -> Option<(Forge, TempDir)> {
    let f = Forge::with_base()?;
    let ctx = context(&[
        ("Dockerfile", DOCKERFILE),
        ("early.txt", "early\n"),
        ("late.txt", "late v1\n"),
        ("ignored.txt", "ignored v1\n"),
        (".dockerignore", "ignored.txt\n"),
    ]);
    Some((f, ctx))
}

/// The first build runs every step; returns its manifest digest.
fn first_build(f: &Forge, ctx: &TempDir) -> String {
    let b = f.build(ctx.path(), &["-t", "cache:1"]);
    assert_eq!(
        b.progress.ran(),
        ALL,
        "a cold build runs every step\n{}",
        b.out.stderr
    );
    assert!(
        b.progress.cached().is_empty(),
        "nothing can be cached in a new store\n{}",
        b.out.stderr
    );
    b.digest()
}

fn read_rootfs_file(f: &Forge, ctx: &TempDir, args: &[&str], path: &str) -> String {
    let (_, dir) = build_rootfs(f, ctx.path(), args);
    read(&dir, path)
}

#[test]
fn unchanged_rebuild_reruns_nothing_and_gives_the_same_digest() {
    let Some((f, ctx)) = setup() else { return };
    let d1 = first_build(&f, &ctx);
    let b = f.build(ctx.path(), &["-t", "cache:1"]);
    assert!(
        b.progress.ran().is_empty(),
        "an unchanged rebuild ran {:?}\n{}",
        b.progress.ran(),
        b.out.stderr
    );
    assert_eq!(b.progress.cached(), ALL);
    let s = b.progress.summary.clone().unwrap();
    assert_eq!(
        (s.ran, s.cached),
        (0, 5),
        "summary line disagrees with the steps"
    );
    assert_eq!(
        b.digest(),
        d1,
        "a fully cached rebuild must give the same image digest"
    );
    assert_eq!(
        f.inspect("cache:1")["ManifestDigest"],
        serde_json::json!(d1)
    );
}

#[test]
fn mtime_only_change_reruns_nothing() {
    let Some((f, ctx)) = setup() else { return };
    let d1 = first_build(&f, &ctx);
    for name in ["early.txt", "late.txt", "Dockerfile"] {
        set_mtime(&ctx.path().join(name), 1_000_000_000);
    }
    let b = f.build(ctx.path(), &["-t", "cache:1"]);
    assert!(
        b.progress.ran().is_empty(),
        "an mtime-only change reran {:?}\n{}",
        b.progress.ran(),
        b.out.stderr
    );
    assert_eq!(b.digest(), d1);
}

#[test]
fn content_change_with_the_same_size_and_mtime_is_seen() {
    // The stat cache trusts a remembered hash only while size, mtime, ctime and inode all
    // match: rewriting a file in place and putting its mtime back must still rerun the copy.
    let Some((f, ctx)) = setup() else { return };
    let late = ctx.path().join("late.txt");
    set_mtime(&late, 1_000_000_000);
    first_build(&f, &ctx);
    write_files(ctx.path(), &[("late.txt", "late v9\n")]);
    set_mtime(&late, 1_000_000_000);
    let b = f.build(ctx.path(), &["-t", "cache:1"]);
    assert_eq!(b.progress.ran(), [COPY_LATE, RUN_LATE], "\n{}", b.out.stderr);
    assert_eq!(read_rootfs_file(&f, &ctx, &[], "late-copy.txt"), "late v9\n");
    // And the hash now remembered is the new one: an unchanged rebuild reruns nothing.
    let b = f.build(ctx.path(), &["-t", "cache:1"]);
    assert!(b.progress.ran().is_empty(), "{:?}\n{}", b.progress.ran(), b.out.stderr);
}

#[test]
fn change_to_dockerignored_file_reruns_nothing() {
    let Some((f, ctx)) = setup() else { return };
    let d1 = first_build(&f, &ctx);
    write_files(
        ctx.path(),
        &[("ignored.txt", "ignored v2, longer than before\n")],
    );
    let b = f.build(ctx.path(), &["-t", "cache:1"]);
    assert!(
        b.progress.ran().is_empty(),
        "a change to an ignored file reran {:?}\n{}",
        b.progress.ran(),
        b.out.stderr
    );
    assert_eq!(b.digest(), d1);
}

#[test]
fn change_to_late_copy_source_reruns_only_the_steps_after_it() {
    let Some((f, ctx)) = setup() else { return };
    first_build(&f, &ctx);
    write_files(ctx.path(), &[("late.txt", "late v2\n")]);
    let b = f.build(ctx.path(), &["-t", "cache:1"]);
    assert_eq!(
        b.progress.ran(),
        [COPY_LATE, RUN_LATE],
        "\n{}",
        b.out.stderr
    );
    assert_eq!(b.progress.cached(), [RUN_BASE, COPY_EARLY, RUN_ARG]);
    // The rerun really used the new content.
    assert_eq!(
        read_rootfs_file(&f, &ctx, &[], "late-copy.txt"),
        "late v2\n"
    );
}

#[test]
fn no_cache_reruns_everything() {
    let Some((f, ctx)) = setup() else { return };
    first_build(&f, &ctx);
    let b = f.build(ctx.path(), &["--no-cache", "-t", "cache:1"]);
    assert_eq!(b.progress.ran(), ALL, "\n{}", b.out.stderr);
    assert!(b.progress.cached().is_empty());
}

#[test]
fn changed_build_arg_reruns_from_its_first_use() {
    let Some((f, ctx)) = setup() else { return };
    first_build(&f, &ctx);
    let b = f.build(ctx.path(), &["--build-arg", "A=two", "-t", "cache:1"]);
    assert_eq!(
        b.progress.ran(),
        [RUN_ARG, COPY_LATE, RUN_LATE],
        "\n{}",
        b.out.stderr
    );
    assert_eq!(b.progress.cached(), [RUN_BASE, COPY_EARLY]);
    assert_eq!(
        read_rootfs_file(&f, &ctx, &["--build-arg", "A=two"], "a.txt"),
        "a=two\n"
    );
    // Back to the default value: everything is cached again.
    let b = f.build(ctx.path(), &["-t", "cache:1"]);
    assert!(b.progress.ran().is_empty(), "{:?}", b.progress.ran());
}

#[test]
fn explain_names_the_changed_file_and_the_changed_arg() {
    let Some((f, ctx)) = setup() else { return };
    first_build(&f, &ctx);
    write_files(ctx.path(), &[("late.txt", "late v3\n")]);
    let b = f.build(ctx.path(), &["--explain", "--build-arg", "A=three"]);
    let arg_step = b.progress.step(RUN_ARG);
    assert!(arg_step.ran());
    let why = arg_step.explain.join(" | ");
    assert!(
        why.contains('A') && why.contains("three"),
        "--explain for the ARG step does not name A or its new value: {why:?}"
    );
    let copy = b.progress.step(COPY_LATE);
    let why = copy.explain.join(" | ");
    assert!(
        why.contains("late.txt"),
        "--explain for the COPY does not name late.txt: {why:?}\n{}",
        b.out.stderr
    );
    // Only the changed file is named, not the unchanged early one.
    assert!(!why.contains("early.txt"), "{why:?}");
    // Without --explain, no reasons are printed.
    write_files(ctx.path(), &[("late.txt", "late v4\n")]);
    let b = f.build(ctx.path(), &["--build-arg", "A=three"]);
    assert!(
        b.progress.steps.iter().all(|s| s.explain.is_empty()),
        "{}",
        b.out.stderr
    );
}

#[test]
fn explain_names_a_changed_file_when_only_content_changed() {
    let Some((f, ctx)) = setup() else { return };
    first_build(&f, &ctx);
    write_files(ctx.path(), &[("early.txt", "early v2\n")]);
    let b = f.build(ctx.path(), &["--explain"]);
    let why = b.progress.step(COPY_EARLY).explain.join(" | ");
    assert!(why.contains("early.txt"), "{why:?}\n{}", b.out.stderr);
    // The next step missed only because its parent changed.
    let why = b.progress.step(RUN_ARG).explain.join(" | ");
    assert!(!why.is_empty() && !why.contains("early.txt"), "{why:?}");
}

#[test]
fn no_cache_filter_reruns_only_that_stage() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:local AS one\nRUN echo one > /one\n\nFROM busybox:local AS two\nRUN echo two > /two\n\nFROM busybox:local\nCOPY --from=one /one /one\nCOPY --from=two /two /two\n",
    )]);
    let b = f.build(ctx.path(), &[] as &[&str]);
    assert!(b.progress.step("RUN echo one").ran() && b.progress.step("RUN echo two").ran());
    let b = f.build(ctx.path(), &["--no-cache-filter", "one"]);
    assert!(
        b.progress.step("RUN echo one").ran(),
        "--no-cache-filter one did not rerun stage one\n{}",
        b.out.stderr
    );
    assert!(
        b.progress.step("RUN echo two").cached,
        "--no-cache-filter one reran stage two\n{}",
        b.out.stderr
    );
    assert!(
        b.progress.step("COPY --from=two").cached,
        "{}",
        b.out.stderr
    );
}

#[test]
fn source_date_epoch_gives_the_same_digest_in_two_stores() {
    let Some(f1) = Forge::with_base() else { return };
    let Some(f2) = Forge::with_base() else { return };
    let ctx = context(&[
        ("Dockerfile", "FROM busybox:local\nCOPY a.txt /a.txt\nRUN echo ran > /ran.txt && mkdir -p /d && touch /d/f\nENV X=1\nCMD [\"cat\", \"/a.txt\"]\n"),
        ("a.txt", "a\n"),
    ]);
    let env = [("SOURCE_DATE_EPOCH", "1700000000")];
    let d1 = f1.build_env(ctx.path(), &["-t", "r:1"], &env).digest();
    // A different context mtime after the epoch is clamped, so it must not matter either
    // (an older one is kept, as BuildKit does, and would change the digest).
    set_mtime(&ctx.path().join("a.txt"), 1_750_000_000);
    std::thread::sleep(std::time::Duration::from_millis(1100)); // RUN-created files get a later wall-clock mtime
    let d2 = f2.build_env(ctx.path(), &["-t", "r:1"], &env).digest();
    assert_eq!(d1, d2, "SOURCE_DATE_EPOCH builds in two stores differ");
    let cfg = &f1.inspect("r:1")["Config"];
    assert_eq!(
        cfg["created"],
        serde_json::json!("2023-11-14T22:13:20Z"),
        "config created is not clamped: {cfg}"
    );
    // Without SOURCE_DATE_EPOCH, a fresh store's build is not expected to match; with a
    // different epoch the digest must change (the epoch really is used).
    let f3 = Forge::with_base().unwrap();
    let d3 = f3
        .build_env(
            ctx.path(),
            &["-t", "r:1"],
            &[("SOURCE_DATE_EPOCH", "1600000000")],
        )
        .digest();
    assert_ne!(d1, d3);
}

#[test]
fn comments_and_metadata_before_a_run_do_not_invalidate_it() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox:local\nLABEL version=1\nEXPOSE 80\nRUN echo work > /work.txt\nCOPY a.txt /a.txt\n",
        ),
        ("a.txt", "a\n"),
    ]);
    f.build(ctx.path(), &[] as &[&str]);
    // A comment, blank lines, and changed LABEL/EXPOSE values: no filesystem step reruns,
    // as in BuildKit (metadata is not part of a RUN's definition).
    write_files(
        ctx.path(),
        &[(
            "Dockerfile",
            "# a new comment\n\nFROM busybox:local\nLABEL version=2\nEXPOSE 8080\n\nRUN echo work > /work.txt\nCOPY a.txt /a.txt\n",
        )],
    );
    let b = f.build(ctx.path(), &["-t", "meta:2"]);
    assert!(
        b.progress.ran().is_empty(),
        "{:?}\n{}",
        b.progress.ran(),
        b.out.stderr
    );
    let cfg = &f.inspect("meta:2")["Config"]["config"];
    assert_eq!(
        cfg["Labels"]["version"], "2",
        "the new label is not in the config: {cfg}"
    );
    assert!(cfg["ExposedPorts"].get("8080/tcp").is_some(), "{cfg}");
    // An ENV change is different: the RUN sees it, so it reruns.
    write_files(
        ctx.path(),
        &[(
            "Dockerfile",
            "FROM busybox:local\nENV MODE=x\nRUN echo work > /work.txt\nCOPY a.txt /a.txt\n",
        )],
    );
    let b = f.build(ctx.path(), &[] as &[&str]);
    assert_eq!(
        b.progress.ran(),
        ["RUN echo work > /work.txt", "COPY a.txt /a.txt"]
    );
}

#[test]
fn dockerignore_change_that_excludes_a_copied_file_reruns_the_copy() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox:local\nCOPY . /ctx/\nRUN ls /ctx > /listing.txt\n",
        ),
        ("keep.txt", "k\n"),
        ("drop.txt", "d\n"),
    ]);
    f.build(ctx.path(), &[] as &[&str]);
    write_files(ctx.path(), &[(".dockerignore", "drop.txt\n")]);
    let dest = f.scratch("rootfs");
    let b = f.build(
        ctx.path(),
        &["-o", &format!("type=local,dest={}", dest.display())],
    );
    assert_eq!(
        b.progress.ran(),
        ["COPY . /ctx/", "RUN ls /ctx > /listing.txt"],
        "{}",
        b.out.stderr
    );
    let listing = std::fs::read_to_string(dest.join("listing.txt")).unwrap();
    assert!(
        !listing.contains("drop.txt") && listing.contains("keep.txt"),
        "{listing}"
    );
}

#[test]
fn identical_work_in_two_stages_runs_once() {
    let Some(f) = Forge::with_base() else { return };
    let stage = |n: &str| {
        format!("FROM busybox:local AS {n}\nRUN head -c 16 /dev/urandom | od -An -tx1 > /random.txt\n\n")
    };
    let df = format!(
        "{}{}FROM busybox:local\nCOPY --from=one /random.txt /one.txt\nCOPY --from=two /random.txt /two.txt\n",
        stage("one"),
        stage("two")
    );
    let ctx = context(&[("Dockerfile", &df)]);
    let dest = f.scratch("rootfs");
    let b = f.build(
        ctx.path(),
        &["-o", &format!("type=local,dest={}", dest.display())],
    );
    let runs: Vec<&Step> = b
        .progress
        .steps
        .iter()
        .filter(|s| s.instruction().starts_with("RUN "))
        .collect();
    assert_eq!(runs.len(), 2, "{}", b.out.stderr);
    assert_eq!(
        runs.iter().filter(|s| s.ran()).count(),
        1,
        "the same RUN ran twice:\n{}",
        b.out.stderr
    );
    let one = std::fs::read_to_string(dest.join("one.txt")).unwrap();
    assert_eq!(one, std::fs::read_to_string(dest.join("two.txt")).unwrap());
    assert!(one.trim().len() >= 32, "{one:?}");
}

//! Multi-stage builds: reachability, --target, COPY --from, named build contexts, ONBUILD,
//! and stages running in parallel.

mod common;
use common::*;

const STAGES: &str = r#"FROM busybox:local AS broken
RUN exit 1

FROM busybox:local AS good
RUN echo good > /good.txt

FROM good AS final
RUN echo final > /final.txt
"#;

#[test]
fn unused_failing_stage_does_not_run() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[("Dockerfile", STAGES)]);
    let (b, fs) = build_rootfs(&f, ctx.path(), &[]);
    assert!(
        !b.progress.has_step("exit 1"),
        "the unreachable stage appeared in the progress:\n{}",
        b.out.stderr
    );
    assert_eq!(
        b.progress.ran(),
        ["RUN echo good > /good.txt", "RUN echo final > /final.txt"]
    );
    assert_eq!(read(&fs, "good.txt"), "good\n");
    assert_eq!(read(&fs, "final.txt"), "final\n");
    // The stage really would fail: targeting it does.
    let b = f.try_build(ctx.path(), &["--target", "broken"]);
    assert_eq!(b.out.code, 1, "{}", b.out.stderr);
}

#[test]
fn target_selects_a_stage() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[("Dockerfile", STAGES)]);
    let (b, fs) = build_rootfs(&f, ctx.path(), &["--target", "good", "-t", "good:1"]);
    assert_eq!(
        b.progress.ran(),
        ["RUN echo good > /good.txt"],
        "\n{}",
        b.out.stderr
    );
    assert_eq!(read(&fs, "good.txt"), "good\n");
    assert!(
        !fs.join("final.txt").exists(),
        "--target good built the final stage"
    );
    assert_eq!(
        f.inspect("good:1")["ManifestDigest"].as_str().unwrap(),
        b.digest()
    );
    // Case-insensitive, as in BuildKit.
    let b = f.build(ctx.path(), &["--target", "GOOD"]);
    assert!(
        b.progress.ran().is_empty(),
        "same stage, should be cached: {:?}",
        b.progress.ran()
    );
}

#[test]
fn copy_from_by_name_index_and_image() {
    let Some(f) = Forge::with_base() else { return };
    // An image that exists only in the store.
    let lib = context(&[(
        "Dockerfile",
        "FROM busybox:local\nRUN mkdir /lib-data && echo 'from lib image' > /lib-data/x.txt\n",
    )]);
    f.build(lib.path(), &["-t", "e2e-lib:1"]);
    let ctx = context(&[(
        "Dockerfile",
        r#"FROM busybox:local AS first
RUN echo by-index > /idx.txt

FROM busybox:local AS named
RUN echo by-name > /name.txt

FROM scratch
COPY --from=0 /idx.txt /out/idx.txt
COPY --from=named /name.txt /out/name.txt
COPY --from=e2e-lib:1 /lib-data /out/lib
COPY --from=busybox:local /bin/busybox /bin/busybox
"#,
    )]);
    let (_, fs) = build_rootfs(&f, ctx.path(), &[]);
    assert_eq!(read(&fs, "out/idx.txt"), "by-index\n");
    assert_eq!(read(&fs, "out/name.txt"), "by-name\n");
    assert_eq!(read(&fs, "out/lib/x.txt"), "from lib image\n");
    assert_eq!(
        std::fs::read(fs.join("bin/busybox")).unwrap(),
        std::fs::read(BUSYBOX).unwrap()
    );
    assert!(
        !fs.join("etc/passwd").exists(),
        "FROM scratch got the base's files"
    );
}

#[test]
fn copy_from_unknown_stage_or_image_fails_with_its_name() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:local\nCOPY --from=nosuchimage-e2e:1 /x /x\n",
    )]);
    let b = f.try_build(ctx.path(), &[] as &[&str]);
    assert_ne!(b.out.code, 0);
    assert!(b.out.stderr.contains("nosuchimage-e2e"), "{}", b.out.stderr);
}

#[test]
fn build_context_directory() {
    let Some(f) = Forge::with_base() else { return };
    let extra = context(&[("data/one.txt", "one\n"), ("data/two.txt", "two\n")]);
    let ctx = context(&[("Dockerfile", "FROM busybox:local\nCOPY --from=extra data/ /extra/\nRUN cat /extra/one.txt /extra/two.txt > /both.txt\n")]);
    let (_, fs) = build_rootfs(
        &f,
        ctx.path(),
        &[
            "--build-context",
            &format!("extra={}", extra.path().display()),
        ],
    );
    assert_eq!(read(&fs, "both.txt"), "one\ntwo\n");
    // A change in the named context invalidates the COPY from it.
    write_files(extra.path(), &[("data/two.txt", "TWO\n")]);
    let (b, fs) = build_rootfs(
        &f,
        ctx.path(),
        &[
            "--build-context",
            &format!("extra={}", extra.path().display()),
        ],
    );
    assert_eq!(
        b.progress.ran(),
        [
            "COPY --from=extra data/ /extra/",
            "RUN cat /extra/one.txt /extra/two.txt > /both.txt"
        ]
    );
    assert_eq!(read(&fs, "both.txt"), "one\nTWO\n");
}

#[test]
fn build_context_docker_image_overrides_a_base_name() {
    let Some(f) = Forge::with_base() else { return };
    let lib = context(&[(
        "Dockerfile",
        "FROM busybox:local\nRUN echo lib > /lib.txt\n",
    )]);
    f.build(lib.path(), &["-t", "e2e-lib:2"]);
    let ctx = context(&[("Dockerfile", "FROM mybase\nRUN cat /lib.txt > /seen.txt\n")]);
    let (_, fs) = build_rootfs(
        &f,
        ctx.path(),
        &["--build-context", "mybase=docker-image://e2e-lib:2"],
    );
    assert_eq!(read(&fs, "seen.txt"), "lib\n");
}

#[test]
fn build_context_oci_layout_in_an_empty_store() {
    let Some(tar) = base_tar() else { return };
    let f = Forge::new(); // nothing loaded: the base comes only from the layout
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo from-layout > /x.txt\n",
    )]);
    let (_, fs) = build_rootfs(
        &f,
        ctx.path(),
        &[
            "--build-context",
            &format!("busybox=oci-layout://{}", tar.display()),
        ],
    );
    assert_eq!(read(&fs, "x.txt"), "from-layout\n");
    assert!(fs.join("bin/busybox").is_file());
    // With an explicit tag from the layout.
    let (_, fs) = build_rootfs(
        &f,
        ctx.path(),
        &[
            "--build-context",
            &format!("busybox=oci-layout://{}:local", tar.display()),
        ],
    );
    assert_eq!(read(&fs, "x.txt"), "from-layout\n");
    // A tag the layout does not have is a usage error.
    let b = f.try_build(
        ctx.path(),
        &[
            "--build-context",
            &format!("busybox=oci-layout://{}:nosuchtag", tar.display()),
        ],
    );
    assert_eq!(b.out.code, 2, "{}", b.out.stderr);
    assert!(b.out.stderr.contains("nosuchtag"), "{}", b.out.stderr);
}

#[test]
fn onbuild_triggers_run_in_the_child() {
    let Some(f) = Forge::with_base() else { return };
    let parent = context(&[(
        "Dockerfile",
        "FROM busybox:local\nONBUILD COPY trigger.txt /trigger.txt\nONBUILD RUN echo triggered > /onbuild.txt\nRUN echo parent > /parent.txt\n",
    )]);
    let (_, pfs) = build_rootfs(&f, parent.path(), &["-t", "e2e-parent:1"]);
    assert!(
        !pfs.join("onbuild.txt").exists(),
        "ONBUILD ran in the parent itself"
    );
    let pcfg = &f.inspect("e2e-parent:1")["Config"]["config"];
    assert_eq!(
        pcfg["OnBuild"].as_array().map(|a| a.len()),
        Some(2),
        "the parent's config lost its triggers: {pcfg}"
    );

    let child = context(&[
        (
            "Dockerfile",
            "FROM e2e-parent:1\nRUN cat /onbuild.txt /trigger.txt > /child.txt\n",
        ),
        ("trigger.txt", "child context\n"),
    ]);
    let (_, cfs) = build_rootfs(&f, child.path(), &["-t", "e2e-child:1"]);
    assert_eq!(read(&cfs, "child.txt"), "triggered\nchild context\n");
    assert_eq!(read(&cfs, "parent.txt"), "parent\n");
    let ccfg = &f.inspect("e2e-child:1")["Config"]["config"];
    assert!(
        ccfg.get("OnBuild")
            .map(|v| v.is_null() || v.as_array().map(|a| a.is_empty()).unwrap_or(false))
            .unwrap_or(true),
        "triggers must not be inherited by the grandchild: {ccfg}"
    );
}

#[test]
fn independent_stages_run_in_parallel() {
    let Some(f) = Forge::with_base() else { return };
    let stage = |n: &str| {
        // Each command differs: identical RUNs share one cache key and would run only once.
        format!("FROM busybox:local AS {n}\nRUN echo {n} > /name && read up rest < /proc/uptime && echo $up > /start && sleep 2 && read up rest < /proc/uptime && echo $up > /end\n\n")
    };
    let df = format!(
        "{}{}{}FROM busybox:local\nCOPY --from=a /start /a.start\nCOPY --from=a /end /a.end\nCOPY --from=b /start /b.start\nCOPY --from=b /end /b.end\nCOPY --from=c /start /c.start\nCOPY --from=c /end /c.end\n",
        stage("a"),
        stage("b"),
        stage("c")
    );
    let ctx = context(&[("Dockerfile", &df)]);
    let (b, fs) = build_rootfs(&f, ctx.path(), &[]);
    assert_eq!(
        b.progress
            .ran()
            .iter()
            .filter(|r| r.starts_with("RUN "))
            .count(),
        3,
        "{}",
        b.out.stderr
    );
    let num = |p: &str| {
        read(&fs, p)
            .trim()
            .parse::<f64>()
            .unwrap_or_else(|e| panic!("{p}: {e}"))
    };
    let intervals: Vec<(f64, f64)> = ["a", "b", "c"]
        .iter()
        .map(|s| (num(&format!("{s}.start")), num(&format!("{s}.end"))))
        .collect();
    for (s, e) in &intervals {
        assert!(
            e - s >= 1.9,
            "an interval is shorter than its sleep: {intervals:?}"
        );
    }
    // The most intervals running at one instant: at some start, count those covering it.
    let max_overlap = intervals
        .iter()
        .map(|(t, _)| intervals.iter().filter(|(s, e)| s <= t && t < e).count())
        .max()
        .unwrap();
    // forge bounds concurrent RUNs by the number of cores (issue 6), so on a 2-core machine at
    // most two of the three can overlap; with three or more cores all three must.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let expected = cores.min(3);
    assert_eq!(
        max_overlap, expected,
        "RUNs of independent stages did not overlap as much as {cores} cores allow: {intervals:?}"
    );
}
